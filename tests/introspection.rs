//! Opaque tokens (SECURITY.md rule 22): RFC 7662 introspection and RFC 9701
//! JWT answers against a real OpenID provider (npm `oidc-provider` with its
//! introspection, jwtIntrospection and revocation features), the phantom
//! token against a scripted endpoint, and a broken or flooded endpoint.
//! Every refusal asserts the status and that the upstream got nothing.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::idp::{OidcProvider, AUDIENCE};
use common::{Builder, Stack};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::json;

/// An issuer `op` that introspects opaque tokens at the provider, with
/// `extra` lines in its `introspection:` block.
fn op_policy(secret: &std::path::Path, extra: &str) -> String {
    format!(
        r#"
issuers:
  op:
    profile: rfc9068
    issuer: ${{OP_ISSUER}}
    discovery: ${{OP_ISSUER}}
    allow_http: true
    audience: ["{AUDIENCE}"]
    introspection:
      client_id: claimgate-test
      client_secret: {{ file: {secret} }}
{extra}
upstreams:
  app: ${{UPSTREAM}}
routes:
  - name: orders
    match: {{ path: "/orders/**" }}
    upstream: app
    allow: {{ scope: "orders:read" }}
    forward:
      X-Client-Id: "{{{{ $.client_id }}}}"
      X-Scope: "{{{{ $.scope }}}}"
"#,
        secret = secret.display()
    )
}

async fn op_stack(op: &OidcProvider, extra: &str) -> (Stack, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("client-secret");
    std::fs::write(&secret, "test-secret\n").unwrap();
    let s = Builder::new()
        .policy(&op_policy(&secret, extra))
        .var("OP_ISSUER", &op.issuer)
        .start()
        .await;
    (s, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opaque_token_is_introspected_and_a_revocation_takes_effect_within_cache_ttl() {
    let op = OidcProvider::start_with("ES256", "opaque");
    let (s, _dir) = op_stack(&op, "      cache_ttl: 1s\n").await;
    let token = op.token().await;
    assert!(!token.contains('.'), "opaque: {token}");
    let r = s.get_with_token("/orders/1", &token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let seen = s.upstream.last().unwrap().headers;
    assert_eq!(seen["x-client-id"], "claimgate-test");
    assert_eq!(seen["x-scope"], "orders:read");
    assert!(
        seen.get("authorization").is_none(),
        "the credential stays here"
    );

    // Cached: a second request does not call the provider again.
    let m = &s.running().app.metrics;
    let calls = || {
        m.introspection_calls
            .with_label_values(&["op", "active"])
            .get()
    };
    assert_eq!(calls(), 1);
    assert_eq!(
        s.get_with_token("/orders/1", &token).await.status,
        StatusCode::OK
    );
    assert_eq!(calls(), 1);

    // Revoked at the provider: refused within cache_ttl, nothing upstream.
    op.revoke(&token).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = s.upstream.count();
    let r = s.get_with_token("/orders/1", &token).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.reason(), "token_inactive");
    assert_eq!(s.upstream.count(), before);
    // A random opaque token is inactive too.
    let r = s
        .get_with_token("/orders/1", "not-a-token-the-provider-knows")
        .await;
    assert_eq!(r.reason(), "token_inactive");
    assert_eq!(s.upstream.count(), before);
}

/// RFC 9701: the answer is a JWT signed with the provider's keys, for this
/// client; its `token_introspection` member is the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_introspection_response_is_verified() {
    let op = OidcProvider::start_with("ES256", "opaque");
    let (s, _dir) = op_stack(&op, "      response: jwt\n").await;
    let r = s.get_with_token("/orders/1", &op.token().await).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        s.upstream.last().unwrap().headers["x-client-id"],
        "claimgate-test"
    );
}

/// A scripted endpoint: every POST answers `status`, `content_type`, `body`
/// after `delay`; it counts the calls.
async fn scripted(
    status: u16,
    content_type: &'static str,
    body: impl Fn() -> String + Send + Sync + 'static,
    delay: Duration,
) -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let (c, body) = (calls.clone(), Arc::new(body));
    let (addr, task) = claimgate::testkit::servers::serve(
        ([127, 0, 0, 1], 0).into(),
        move |_req: Request<Incoming>| {
            let (c, body) = (c.clone(), body.clone());
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                Response::builder()
                    .status(status)
                    .header("content-type", content_type)
                    .body(Full::new(Bytes::from(body())))
                    .unwrap()
            }
        },
    )
    .await
    .unwrap();
    (format!("http://{addr}/introspect"), calls, task)
}

/// The default test issuer, introspecting at `endpoint`.
fn scripted_policy(endpoint: &str, secret: &std::path::Path, extra: &str) -> String {
    common::POLICY.replace(
        "    refresh_interval: 1s\n",
        &format!(
            "    refresh_interval: 1s\n    introspection:\n      endpoint: {endpoint}\n      client_id: api\n      client_secret: {{ file: {} }}\n{extra}",
            secret.display()
        ),
    )
}

async fn scripted_stack(endpoint: &str, extra: &str) -> (Stack, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret").unwrap();
    let s = Builder::new()
        .policy(&scripted_policy(endpoint, &secret, extra))
        .start()
        .await;
    (s, dir)
}

/// Curity's phantom token: the endpoint answers `application/jwt` with the
/// token's JWT, verified like a bearer JWT; its claims reach the policy and
/// the headers.
#[tokio::test]
async fn a_phantom_token_brings_its_jwt_claims() {
    let key_holder = Builder::new().start().await;
    let jwt = key_holder.gold_token();
    let (endpoint, calls, _task) =
        scripted(200, "application/jwt", move || jwt.clone(), Duration::ZERO).await;
    // The same key signs: this stack publishes the holder's key too.
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret").unwrap();
    let s = Builder::new()
        .with_keys(vec![])
        .policy(&scripted_policy(
            &endpoint,
            &secret,
            "      response: phantom\n",
        ))
        .start_with(|idp| idp.set(&claimgate::testkit::keys::jwks([&key_holder.key])))
        .await;
    let r = s
        .get_with_token("/orders/7", "opaque-reference-token")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let seen = s.upstream.last().unwrap().headers;
    assert_eq!(seen["x-user-id"], "user-1");
    assert_eq!(seen["x-name"], "Ada L");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A tampered RFC 9701 answer (payload changed after signing) is refused.
#[tokio::test]
async fn a_tampered_jwt_introspection_response_is_refused() {
    let holder = Builder::new().start().await;
    let good = holder.key.sign(&json!({
        "iss": common::ISS, "aud": "api", "iat": 1,
        "token_introspection": {"active": true, "aud": "api", "sub": "u", "scope": "order"}
    }));
    let (head, rest) = good.split_once('.').unwrap();
    let (_, sig) = rest.split_once('.').unwrap();
    let forged_payload = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        json!({"iss": common::ISS, "aud": "api", "iat": 1,
               "token_introspection": {"active": true, "aud": "api", "sub": "u",
                                       "user_role": "admin"}})
        .to_string(),
    );
    let tampered = format!("{head}.{forged_payload}.{sig}");
    let (endpoint, _calls, _task) = scripted(
        200,
        "application/token-introspection+jwt",
        move || tampered.clone(),
        Duration::ZERO,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret").unwrap();
    let s = Builder::new()
        .policy(&scripted_policy(
            &endpoint,
            &secret,
            "      response: jwt\n",
        ))
        .start_with(|idp| idp.set(&claimgate::testkit::keys::jwks([&holder.key])))
        .await;
    let r = s.get_with_token("/orders/7", "opaque").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.reason(), "bad_signature");
    assert_eq!(s.upstream.count(), 0);
}

/// Down, slow, garbage, a 500, a 10 MiB body: 503, nothing upstream, and
/// claimgate stays up (a JWT still passes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_endpoint_fails_closed() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/introspect", l.local_addr().unwrap())
    };
    let cases: Vec<(&str, String, Option<tokio::task::JoinHandle<()>>)> = vec![
        ("down", closed, None),
        {
            let (e, _, t) = scripted(
                200,
                "application/json",
                || "{}".into(),
                Duration::from_secs(7),
            )
            .await;
            ("slow", e, Some(t))
        },
        {
            let (e, _, t) =
                scripted(200, "application/json", || "<html>".into(), Duration::ZERO).await;
            ("garbage", e, Some(t))
        },
        {
            let (e, _, t) = scripted(500, "application/json", || "{}".into(), Duration::ZERO).await;
            ("500", e, Some(t))
        },
        {
            let big = format!(r#"{{"active": true, "pad": "{}"}}"#, "x".repeat(10 << 20));
            let (e, _, t) =
                scripted(200, "application/json", move || big.clone(), Duration::ZERO).await;
            ("10 MiB", e, Some(t))
        },
    ];
    for (what, endpoint, _task) in cases {
        let (s, _dir) = scripted_stack(&endpoint, "").await;
        let r = s.get_with_token("/orders/7", "opaque-token").await;
        assert_eq!(
            r.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{what}: {}",
            r.body
        );
        assert_eq!(r.reason(), "introspection_unavailable", "{what}");
        assert_eq!(s.upstream.count(), 0, "{what}");
        assert_eq!(
            s.get_with_token("/orders/7", &s.gold_token()).await.status,
            StatusCode::OK,
            "{what}: claimgate stays up"
        );
    }
}

/// 10,000 random opaque tokens from 8 clients: calls to the endpoint stay
/// under the rate cap (bursts of one second's worth), the rest get 503
/// `introspection_busy` at once, and a valid token cached before the flood
/// still passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_random_opaque_tokens_stays_under_the_cap() {
    let (endpoint, calls, _task) = scripted(
        200,
        "application/json",
        || {
            json!({"active": true, "aud": "api", "sub": "svc", "scope": "order",
                  "subscription_level": "gold", "exp": claimgate::jwks::unix_now() + 600})
            .to_string()
        },
        Duration::from_millis(5),
    )
    .await;
    let (s, _dir) = scripted_stack(
        &endpoint,
        "      max_per_second: 20\n      max_in_flight: 4\n      cache_ttl: 60s\n",
    )
    .await;
    let valid = "the-valid-opaque-token";
    assert_eq!(
        s.get_with_token("/orders/7", valid).await.status,
        StatusCode::OK
    );
    let started = std::time::Instant::now();
    let addr = s.addr();
    let mut clients = Vec::new();
    for c in 0..8 {
        clients.push(tokio::spawn(async move {
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http();
            let mut busy = 0;
            for i in 0..1250 {
                let auth = format!("Bearer random-{c}-{i}");
                let r = common::send(
                    &client,
                    addr,
                    "GET",
                    "/orders/7",
                    &[("authorization", &auth)],
                )
                .await;
                busy += usize::from(r.reason() == "introspection_busy");
            }
            busy
        }));
    }
    let mut busy = 0;
    for c in clients {
        busy += c.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let made = calls.load(Ordering::SeqCst);
    let cap = (20.0 * (elapsed + 1.0)).ceil() as usize + 1;
    assert!(made <= cap, "{made} calls in {elapsed:.1} s, cap {cap}");
    assert!(busy >= 10_000 - made, "{busy} busy answers");
    // The valid token, cached, still passes during and after.
    assert_eq!(
        s.get_with_token("/orders/7", valid).await.status,
        StatusCode::OK
    );
    let throttled = s
        .running()
        .app
        .metrics
        .introspection_calls
        .with_label_values(&["test", "throttled"])
        .get();
    assert!(throttled > 0);
    println!("flood: {made} calls in {elapsed:.1} s, {busy} busy");
}

/// A P-256 key: its PKCS#8 PEM and its public JWK (`kid` = `kid`).
fn p256(kid: &str) -> (String, serde_json::Value) {
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use base64::Engine;
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    );
    let point = pair.public_key().as_ref();
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let jwk = json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                     "x": url.encode(&point[1..33]), "y": url.encode(&point[33..])});
    (pem, jwk)
}

/// `private_key_jwt` (RFC 7523): claimgate authenticates at the provider's
/// introspection endpoint with an assertion signed by its own key; a key
/// the provider does not know fails closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_key_jwt_authenticates_claimgate_at_the_endpoint() {
    let (pem, jwk) = p256("pk1");
    let op = OidcProvider::start_env("ES256", "opaque", &[("IDP_CLIENT_JWK", &jwk.to_string())]);
    let token = op.token().await;
    for (key, want) in [
        (pem, StatusCode::OK),
        (p256("pk1").0, StatusCode::SERVICE_UNAVAILABLE),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("client-key.pem");
        std::fs::write(&file, key).unwrap();
        let policy = op_policy(&file, "").replace(
            "      client_id: claimgate-test\n      client_secret: { file:",
            "      client_id: claimgate-pkjwt\n      auth: private_key_jwt\n      key_id: pk1\n      private_key: { file:",
        );
        assert!(policy.contains("private_key_jwt"));
        let s = Builder::new()
            .policy(&policy)
            .var("OP_ISSUER", &op.issuer)
            .start()
            .await;
        let r = s.get_with_token("/orders/1", &token).await;
        assert_eq!(r.status, want, "{}", r.body);
        if want == StatusCode::OK {
            assert_eq!(
                s.upstream.last().unwrap().headers["x-client-id"],
                "claimgate-test"
            );
        } else {
            assert_eq!(r.reason(), "introspection_unavailable");
            assert_eq!(s.upstream.count(), 0);
        }
    }
}
