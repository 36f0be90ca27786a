//! The IdP misbehaving: slow, garbage, a 10 MiB body, down for longer than
//! `max_stale`; and `Cache-Control: max-age` setting the refresh period.
//! Valid tokens keep passing on the last good keys, the metrics show the
//! failures, claimgate stays up.

mod common;

use std::time::Duration;

use common::{Builder, Stack};
use http::StatusCode;
use serde_json::json;

fn policy(refresh: &str) -> String {
    common::POLICY.replace("    refresh_interval: 1s\n", refresh)
}

fn failures(s: &Stack) -> u64 {
    s.running()
        .app
        .metrics
        .jwks_fetches
        .with_label_values(&["test", "failure"])
        .get()
}

async fn wait_for_failures(s: &Stack, n: u64) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while failures(s) < n {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("failed JWKS loads");
}

#[tokio::test]
async fn a_broken_idp_never_takes_valid_tokens_down() {
    let s = Builder::new().start().await;
    let token = s.token(json!({}));
    // Each token is new, so none is served from the verified-token cache.
    let fresh = |n: u32| s.token(json!({"n": n}));
    assert_eq!(s.get_with_token("/me", &token).await.status, StatusCode::OK);

    let garbage: [(&str, StatusCode, String); 4] = [
        ("garbage", StatusCode::OK, "{not json".into()),
        ("no keys", StatusCode::OK, r#"{"keys": "nope"}"#.into()),
        (
            "10 MiB",
            StatusCode::OK,
            format!(r#"{{"keys": [], "pad": "{}"}}"#, "x".repeat(10 << 20)),
        ),
        ("500", StatusCode::INTERNAL_SERVER_ERROR, "oops".into()),
    ];
    for (i, (what, status, body)) in garbage.iter().enumerate() {
        let before = failures(&s);
        s.idp.set_raw(*status, body);
        wait_for_failures(&s, before + 1).await;
        let resp = s.get_with_token("/me", &fresh(i as u32)).await;
        assert_eq!(resp.status, StatusCode::OK, "{what}: {}", resp.body);
    }
    let metrics = s.admin("GET", "/metrics").await.body;
    assert!(
        metrics.contains(r#"claimgate_jwks_keys{issuer="test"} 1"#),
        "{metrics}"
    );
    assert!(s.admin("GET", "/readyz").await.status == StatusCode::OK);
}

#[tokio::test]
async fn a_slow_idp_times_out_and_the_last_keys_serve() {
    let s = Builder::new().start().await;
    let before = failures(&s);
    s.idp.set_delay(Duration::from_secs(30));
    // The fetcher gives up after 5 s.
    wait_for_failures(&s, before + 1).await;
    let resp = s.get_with_token("/me", &s.token(json!({"n": 1}))).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
}

#[tokio::test]
async fn keys_older_than_max_stale_are_dropped_until_the_idp_returns() {
    let s = Builder::new()
        .policy(&policy(
            "    refresh_interval: 1s\n    refresh_max: 1s\n    max_stale: 2s\n",
        ))
        .start()
        .await;
    assert_eq!(
        s.get_with_token("/me", &s.token(json!({}))).await.status,
        StatusCode::OK
    );
    s.idp.set_raw(StatusCode::SERVICE_UNAVAILABLE, "down");
    // Within the staleness bound the last keys serve...
    let resp = s.get_with_token("/me", &s.token(json!({"n": 1}))).await;
    assert_eq!(resp.status, StatusCode::OK);
    // ...past it they are dropped: 503, and nothing reaches the upstream.
    let token = s.token(json!({"n": 2}));
    let dropped = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let before = s.upstream.count();
            let resp = s.get_with_token("/me", &token).await;
            if resp.status == StatusCode::SERVICE_UNAVAILABLE {
                assert_eq!(resp.reason(), "keys_unavailable");
                assert_eq!(s.upstream.count(), before);
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(dropped.is_ok(), "stale keys were never dropped");
    let metrics = s.admin("GET", "/metrics").await.body;
    assert!(
        metrics.contains(r#"claimgate_jwks_keys{issuer="test"} 0"#),
        "{metrics}"
    );

    // The IdP is back: keys return without a restart.
    s.idp.set(&claimgate::testkit::keys::jwks([&s.key]));
    tokio::time::timeout(Duration::from_secs(15), async {
        while s.get_with_token("/me", &token).await.status != StatusCode::OK {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("keys came back");
}

#[tokio::test]
async fn cache_control_max_age_sets_the_refresh_period_within_bounds() {
    // Without the header: refresh_interval, one hour.
    let s = Builder::new()
        .policy(&policy("    refresh_interval: 1h\n    refresh_min: 1s\n"))
        .start()
        .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(s.idp.fetches(), 1, "no header: the configured hour");

    // max-age=1 (within [1s, 1h]): about one fetch a second.
    let s = Builder::new()
        .policy(&policy("    refresh_interval: 1h\n    refresh_min: 1s\n"))
        .start_with(|idp| idp.set_cache_control(Some("public, max-age=1")))
        .await;
    s.wait_for_fetches(3).await;

    // max-age=0 is held to refresh_min (2 s here): not a fetch per request.
    let s = Builder::new()
        .policy(&policy("    refresh_interval: 1h\n    refresh_min: 2s\n"))
        .start_with(|idp| idp.set_cache_control(Some("no-cache")))
        .await;
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let n = s.idp.fetches();
    assert!((2..=3).contains(&n), "{n} fetches in 3 s with a 2 s floor");
}

const DISCOVERY: &str = r#"
issuers:
  test:
    discovery: ${IDP_ORIGIN}
    audience: [api]
    allow_http: true
upstreams:
  app: ${UPSTREAM}
routes:
  - name: me
    match: { path: /me }
    upstream: app
"#;

#[tokio::test]
async fn oidc_discovery_finds_the_jwks_uri() {
    let s = Builder::new()
        .policy(DISCOVERY)
        .start_with(|idp| {
            idp.set_discovery(&json!({"issuer": idp.origin(), "jwks_uri": idp.url()}));
        })
        .await;
    let token = s.token(json!({"iss": s.idp.origin()}));
    assert_eq!(s.get_with_token("/me", &token).await.status, StatusCode::OK);
    // The issuer is the discovery URL: a token of another `iss` is unknown.
    let other = s.token(json!({}));
    assert_eq!(
        s.get_with_token("/me", &other).await.reason(),
        "unknown_issuer"
    );
}

#[tokio::test]
async fn a_discovery_document_naming_another_issuer_is_refused() {
    let s = Builder::new()
        .policy(DISCOVERY)
        .no_wait()
        .start_with(|idp| {
            idp.set_discovery(&json!({"issuer": "https://evil.example", "jwks_uri": idp.url()}));
        })
        .await;
    wait_for_failures(&s, 1).await;
    let token = s.token(json!({"iss": s.idp.origin()}));
    let resp = s.get_with_token("/me", &token).await;
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.reason(), "keys_unavailable");
    assert_eq!(s.upstream.count(), 0);
    assert_eq!(s.idp.fetches(), 0, "the JWKS was never fetched");
    assert_eq!(
        s.admin("GET", "/readyz").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

/// The discovered `jwks_uri` goes through the same fetcher rules as a
/// configured one (https, or http with `allow_http`; nothing else).
#[tokio::test]
async fn a_discovered_jwks_uri_of_another_scheme_is_refused() {
    let s = Builder::new()
        .policy(DISCOVERY)
        .no_wait()
        .start_with(|idp| {
            idp.set_discovery(&json!({"issuer": idp.origin(), "jwks_uri": "ftp://x/jwks"}));
        })
        .await;
    wait_for_failures(&s, 1).await;
    assert_eq!(s.idp.fetches(), 0);
}

/// Conditional refreshes (RFC 9110 §13.1): the IdP's `ETag` goes back as
/// `If-None-Match`, a 304 keeps the keys (no churn: cached tokens stay hits)
/// and counts as a success with `result="not_modified"`.
#[tokio::test]
async fn a_304_keeps_the_keys_and_is_counted() {
    let s = Builder::new().start_with(|idp| idp.set_etags(true)).await;
    let token = s.token(json!({}));
    assert_eq!(s.get_with_token("/me", &token).await.status, StatusCode::OK);
    let hits = |s: &Stack| {
        s.running()
            .app
            .metrics
            .token_cache_lookups
            .with_label_values(&["hit"])
            .get()
    };
    let before = hits(&s);
    // refresh_interval is 1 s (±10 %): wait for two conditional refreshes.
    tokio::time::timeout(Duration::from_secs(10), async {
        while s.idp.not_modified() < 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("conditional refreshes");
    let metrics = &s.running().app.metrics;
    assert!(
        metrics
            .jwks_fetches
            .with_label_values(&["test", "not_modified"])
            .get()
            >= 2
    );
    assert_eq!(failures(&s), 0);
    // The cached token is still a hit: the key set was not replaced.
    assert_eq!(s.get_with_token("/me", &token).await.status, StatusCode::OK);
    assert_eq!(hits(&s), before + 1);
    // The staleness clock was reset by the 304s.
    let keys = s.admin("GET", "/admin/keys").await.json();
    assert!(keys["issuers"][0]["age_seconds"].as_u64().unwrap() <= 2);
    // A changed document is fetched whole again.
    let rotated =
        claimgate::testkit::keys::SigningKey::generate(claimgate::jwks::Algorithm::ES256, "k2");
    s.idp
        .set(&claimgate::testkit::keys::jwks([&s.key, &rotated]));
    let fetched = metrics
        .jwks_fetches
        .with_label_values(&["test", "success"])
        .get();
    tokio::time::timeout(Duration::from_secs(10), async {
        while metrics
            .jwks_fetches
            .with_label_values(&["test", "success"])
            .get()
            == fetched
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a full fetch after the change");
    let resp = s
        .get_with_token("/me", &rotated.sign(&common::claims(json!({}))))
        .await;
    assert_eq!(resp.status, StatusCode::OK);
}

/// After a hard rotation (a compromised key removed at the IdP) the operator
/// makes claimgate drop the old key now: its tokens, cached ones included,
/// are refused as soon as the call returns, with nothing upstream.
#[tokio::test]
async fn an_operator_reload_drops_a_removed_key_at_once() {
    let s = Builder::new()
        .policy(&policy("    refresh_interval: 1h\n"))
        .start()
        .await;
    let old = s.token(json!({}));
    assert_eq!(s.get_with_token("/me", &old).await.status, StatusCode::OK);
    let new_key =
        claimgate::testkit::keys::SigningKey::generate(claimgate::jwks::Algorithm::ES256, "k2");
    s.idp.set(&claimgate::testkit::keys::jwks([&new_key]));
    // Without the call, the cached token would pass until the next refresh.
    assert_eq!(s.get_with_token("/me", &old).await.status, StatusCode::OK);

    let resp = s.admin("POST", "/admin/keys/reload?issuer=test").await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
    let change = &resp.json()["issuers"][0];
    assert_eq!(change["issuer"], "test");
    assert_eq!(change["added"], json!(["k2"]));
    assert_eq!(change["removed"], json!(["k1"]));
    assert_eq!(change["keys"], 1);

    let before = s.upstream.count();
    let resp = s.get_with_token("/me", &old).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp.reason(), "unknown_key");
    assert_eq!(s.upstream.count(), before);
    let fresh = new_key.sign(&common::claims(json!({})));
    assert_eq!(s.get_with_token("/me", &fresh).await.status, StatusCode::OK);

    // An unknown issuer name is a 404 and loads nothing.
    let fetches = s.idp.fetches();
    let resp = s.admin("POST", "/admin/keys/reload?issuer=nope").await;
    assert_eq!(resp.status, StatusCode::NOT_FOUND);
    assert_eq!(s.idp.fetches(), fetches);
}

/// A JWKS endpoint nobody listens on: the error names the cause, not
/// hyper's `client error (Connect)`.
#[tokio::test]
async fn a_refused_connection_is_named_as_such() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let s = Builder::new()
        .policy(&common::POLICY.replace("${JWKS_URI}", &format!("http://{closed}/jwks.json")))
        .no_wait()
        .start()
        .await;
    wait_for_failures(&s, 1).await;
    let keys = s.admin("GET", "/admin/keys").await.json();
    let why = keys["issuers"][0]["last_error"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert_eq!(why, "fetch failed: connection refused");
    let ready = s.admin("GET", "/readyz").await;
    assert!(ready.body.contains("issuer(s) test"), "{}", ready.body);
}
