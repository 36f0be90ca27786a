//! Key rotation against a real OpenID Certified provider (npm
//! `oidc-provider`), configured through discovery, tokens from its token
//! endpoint, its signing key swapped live (SECURITY.md rule 11).
//!
//! - A rotation 1 s, 5 s or 29 s after a scheduled refresh: the first token
//!   signed with the new key passes, with exactly one extra JWKS fetch, and a
//!   background client sending valid tokens every 100 ms loses none.
//! - A flood of random kids (10,000 tokens over 60 s) costs at most
//!   `60 / cooldown + 1` kid-miss fetches, and a rotation in the middle of it
//!   passes within one cooldown.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use claimgate::jwks::Algorithm;
use claimgate::testkit::keys::SigningKey;
use common::idp::{OidcProvider, AUDIENCE};
use common::{Builder, Stack};
use http::StatusCode;
use serde_json::json;

/// claimgate in front of the provider: RFC 9068 access tokens, keys found
/// through discovery, the scheduled refresh far away unless `refresh` says.
fn policy(refresh: &str, cooldown: &str) -> String {
    format!(
        r#"
issuers:
  op:
    profile: rfc9068
    issuer: ${{OP_ISSUER}}
    discovery: ${{OP_ISSUER}}
    allow_http: true
    audience: ["{AUDIENCE}"]
    refresh_interval: {refresh}
    unknown_kid_cooldown: {cooldown}

upstreams:
  app: ${{UPSTREAM}}

routes:
  - name: orders
    match: {{ path: "/orders/**" }}
    upstream: app
    allow: {{ scope: "orders:read" }}
    forward:
      X-Client-Id: "{{{{ $.client_id }}}}"
"#
    )
}

async fn start(op: &OidcProvider, refresh: &str, cooldown: &str) -> Stack {
    Builder::new()
        .policy(&policy(refresh, cooldown))
        .var("OP_ISSUER", &op.issuer)
        .start()
        .await
}

/// Sends a freshly minted token every 100 ms until stopped; counts the
/// requests and the ones that did not pass.
struct Background {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Background {
    fn start(op: Arc<OidcProvider>, addr: std::net::SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (st, se, fa) = (stop.clone(), sent.clone(), failed.clone());
        let task = tokio::spawn(async move {
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http();
            while !st.load(Ordering::SeqCst) {
                let auth = format!("Bearer {}", op.token().await);
                let r = common::send(
                    &client,
                    addr,
                    "GET",
                    "/orders/1",
                    &[("authorization", &auth)],
                )
                .await;
                se.fetch_add(1, Ordering::SeqCst);
                if r.status != StatusCode::OK {
                    fa.fetch_add(1, Ordering::SeqCst);
                    // Said, so that a failure names what was lost.
                    eprintln!("background request refused: {} {}", r.status, r.body);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self {
            stop,
            sent,
            failed,
            task,
        }
    }

    async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        (
            self.sent.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }
}

/// The provider rotates `after` the scheduled refresh (claimgate's first
/// load); the default 30 s cooldown.
async fn rotation_after(after: Duration) {
    let op = Arc::new(OidcProvider::start("ES256"));
    let s = start(&op, "1h", "30s").await;
    let loaded = Instant::now();
    assert_eq!(op.jwks_fetches().await, 1);
    let first = op.token().await;
    assert_eq!(
        s.get_with_token("/orders/1", &first).await.status,
        StatusCode::OK
    );
    let background = Background::start(op.clone(), s.addr());

    tokio::time::sleep(after.saturating_sub(loaded.elapsed())).await;
    op.rotate("soft").await;
    let token = op.token().await;
    let before = s.upstream.count();
    let r = s.get_with_token("/orders/1", &token).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "first new-key token, {after:?}: {}",
        r.body
    );
    // It reached the upstream (the background client may have, too: no
    // exact count).
    assert!(s.upstream.count() > before);
    assert_eq!(
        s.upstream.last().unwrap().headers["x-client-id"],
        "claimgate-test"
    );
    assert_eq!(op.jwks_fetches().await, 2, "exactly one extra fetch");

    tokio::time::sleep(Duration::from_secs(1)).await;
    let (sent, failed) = background.finish().await;
    assert!(sent >= (after.as_millis() / 200) as usize, "{sent} sent");
    assert_eq!(
        failed, 0,
        "valid requests lost around a rotation at {after:?}"
    );
    assert_eq!(op.jwks_fetches().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_1s_after_a_scheduled_refresh_loses_nothing() {
    rotation_after(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_5s_after_a_scheduled_refresh_loses_nothing() {
    rotation_after(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_29s_after_a_scheduled_refresh_loses_nothing() {
    rotation_after(Duration::from_secs(29)).await;
}

/// A hard rotation (the old key gone at the provider): the new key's first
/// token still passes at once; the old key's cached tokens die with the
/// next load that no longer lists it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_rotation_is_followed_by_an_operator_reload() {
    let op = OidcProvider::start("RS256");
    let s = start(&op, "1h", "30s").await;
    let old = op.token().await;
    assert_eq!(
        s.get_with_token("/orders/1", &old).await.status,
        StatusCode::OK
    );
    op.rotate("hard").await;
    let new = op.token().await;
    assert_eq!(
        s.get_with_token("/orders/1", &new).await.status,
        StatusCode::OK
    );
    // The kid-miss load above already dropped the old key.
    let before = s.upstream.count();
    let r = s.get_with_token("/orders/1", &old).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(s.upstream.count(), before);
    // The operator's reload reports nothing left to change.
    let change = s.admin("POST", "/admin/keys/reload").await.json();
    assert_eq!(change["issuers"][0]["removed"], json!([]));
    assert_eq!(change["issuers"][0]["keys"], 1);
}

/// The provider's Ed25519 key is published with RFC 9864's name `Ed25519`,
/// and signs with it: its tokens verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_providers_ed25519_tokens_verify() {
    let op = OidcProvider::start("Ed25519");
    let s = start(&op, "1h", "30s").await;
    let token = op.token().await;
    let header = token.split('.').next().unwrap();
    use base64::Engine;
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    assert!(String::from_utf8_lossy(&header).contains(r#""alg":"Ed25519""#));
    let r = s.get_with_token("/orders/1", &token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // ES512 (P-521) too, after a live switch of algorithm.
    let op = OidcProvider::start("ES512");
    let s = start(&op, "1h", "30s").await;
    let r = s.get_with_token("/orders/1", &op.token().await).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

/// 10,000 tokens with random kids over 60 s, from 4 clients; a real rotation
/// 25 s in. Kid-miss fetches stay within `60 / cooldown + 1`, and the new
/// key's tokens pass within one cooldown of the rotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_random_kid_flood_is_bounded_and_a_rotation_inside_it_recovers() {
    const COOLDOWN: u64 = 10;
    const FLOOD: Duration = Duration::from_secs(60);
    const TOKENS: usize = 10_000;
    let op = Arc::new(OidcProvider::start("ES256"));
    let s = start(&op, "1h", &format!("{COOLDOWN}s")).await;
    assert_eq!(op.jwks_fetches().await, 1);
    let forger = SigningKey::generate(Algorithm::ES256, "forger");
    let now = claimgate::jwks::unix_now();
    let payload = json!({"iss": op.issuer, "aud": AUDIENCE, "sub": "x", "scope": "orders:read",
                         "exp": now + 600, "iat": now})
    .to_string();
    let started = Instant::now();
    let addr = s.addr();
    let mut clients = Vec::new();
    for c in 0..4 {
        let tokens: Vec<String> = (0..TOKENS / 4)
            .map(|i| {
                let header =
                    json!({"alg": "ES256", "typ": "at+jwt", "kid": format!("rand-{c}-{i}")});
                forger.sign_raw(&header.to_string(), &payload)
            })
            .collect();
        clients.push(tokio::spawn(async move {
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http();
            let pace = FLOOD / tokens.len() as u32;
            let mut refused = 0;
            for (i, t) in tokens.iter().enumerate() {
                let due = started + pace * i as u32;
                tokio::time::sleep_until(due.into()).await;
                let auth = format!("Bearer {t}");
                let r = common::send(
                    &client,
                    addr,
                    "GET",
                    "/orders/1",
                    &[("authorization", &auth)],
                )
                .await;
                refused += usize::from(r.status == StatusCode::UNAUTHORIZED);
            }
            refused
        }));
    }

    tokio::time::sleep(Duration::from_secs(25)).await;
    op.rotate("soft").await;
    let rotated = Instant::now();
    let recovered = loop {
        let r = s.get_with_token("/orders/1", &op.token().await).await;
        if r.status == StatusCode::OK {
            break rotated.elapsed();
        }
        assert!(
            rotated.elapsed() < Duration::from_secs(COOLDOWN + 2),
            "not recovered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // One cooldown, plus the client's own 100 ms polling and token minting
    // (both slow on a loaded 2-core machine).
    assert!(
        recovered <= Duration::from_secs(COOLDOWN + 1),
        "{recovered:?}"
    );

    let mut refused = 0;
    for c in clients {
        refused += c.await.unwrap();
    }
    assert_eq!(refused, TOKENS, "every forged token refused");
    let elapsed = started.elapsed().as_secs();
    let kid_miss_fetches = op.jwks_fetches().await - 1;
    let bound = elapsed / COOLDOWN + 1;
    assert!(
        kid_miss_fetches <= bound,
        "{kid_miss_fetches} kid-miss fetches in {elapsed} s, bound {bound}"
    );
    // And the flood did reach the unknown-kid path: loads happened.
    assert!(kid_miss_fetches >= 2, "{kid_miss_fetches}");
    println!("flood: {kid_miss_fetches} kid-miss fetches in {elapsed} s; rotation recovered in {recovered:?}");
}
