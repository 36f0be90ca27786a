//! Live operations: reloads from a directory watch (ConfigMap symlink swaps
//! included), the poll backstop, 100 reloads under load, `/admin/config`, and
//! the verified-token cache across reloads.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use claimgate::config::ReloadSettings;
use common::{Builder, Stack};
use http::StatusCode;
use serde_json::{json, Value};

/// A policy whose every allowed response says which version it is, twice:
/// once from the file-wide `forward` and once from the route's, so that a
/// response mixing two versions would show.
fn versioned(version: &str) -> String {
    format!(
        r#"
issuers:
  test:
    issuer: https://issuer.test
    audience: [api]
    jwks_uri: ${{JWKS_URI}}
    allow_http: true

upstreams:
  app: ${{UPSTREAM}}

forward:
  X-Policy-File: "{version}"

routes:
  - name: version
    match: {{ path: /version }}
    upstream: app
    forward:
      X-Policy-Route: "{version}"
  - name: gated
    match: {{ path: /gated }}
    upstream: app
    allow:
      claim: $.grant
      equals: "{version}"
"#
    )
}

const BROKEN: &str = "routes:\n  - name: x\n    match: { path: /x }\n    upstream: nowhere\n";

/// The version a `/version` response was served under; panics on a mixed or
/// failed response.
fn version_of(resp: &common::Resp) -> String {
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
    let headers = &resp.json()["headers"];
    let file = headers["x-policy-file"].as_str().unwrap_or("?");
    let route = headers["x-policy-route"].as_str().unwrap_or("?");
    assert_eq!(file, route, "a response mixed two policies: {}", resp.body);
    file.to_string()
}

/// Polls `/version` until it answers `want` (10 s at most).
async fn wait_for_version(stack: &Stack, token: &str, want: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = version_of(&stack.get_with_token("/version", token).await);
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "policy {want} never took effect (still {got})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn reloads(stack: &Stack, result: &str) -> u64 {
    stack
        .running()
        .app
        .metrics
        .config_reloads
        .with_label_values(&[result])
        .get()
}

fn watch_only() -> ReloadSettings {
    ReloadSettings {
        watch: true,
        debounce: Duration::from_millis(50),
        poll_interval: Duration::ZERO,
    }
}

#[tokio::test]
async fn configmap_symlink_swap_is_seen_by_the_watch() {
    // No poll: only the directory watch can notice.
    let stack = Builder::new()
        .policy(&versioned("a"))
        .configmap()
        .reload(watch_only())
        .start()
        .await;
    let token = stack.token(json!({}));
    assert_eq!(
        version_of(&stack.get_with_token("/version", &token).await),
        "a"
    );

    stack.configmap_update(&versioned("b"));
    wait_for_version(&stack, &token, "b").await;
    assert_eq!(stack.running().app.snapshot().generation, 2);
    assert_eq!(
        reloads(&stack, "success"),
        2,
        "the first load and one reload"
    );

    // A second swap works too: the watch is on the directory, not on a file
    // that the first swap replaced.
    stack.configmap_update(&versioned("c"));
    wait_for_version(&stack, &token, "c").await;
}

#[tokio::test]
async fn watch_sees_a_plain_file_edit() {
    let stack = Builder::new()
        .policy(&versioned("a"))
        .reload(watch_only())
        .start()
        .await;
    let token = stack.token(json!({}));
    stack.write_policy(&versioned("b"));
    wait_for_version(&stack, &token, "b").await;
}

#[tokio::test]
async fn poll_alone_notices_a_change() {
    let stack = Builder::new()
        .policy(&versioned("a"))
        .reload(ReloadSettings {
            watch: false,
            debounce: Duration::from_millis(50),
            poll_interval: Duration::from_millis(100),
        })
        .start()
        .await;
    let token = stack.token(json!({}));
    stack.write_policy(&versioned("b"));
    wait_for_version(&stack, &token, "b").await;
    // Polls of unchanged files are not reloads.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(reloads(&stack, "success"), 2);
}

#[tokio::test]
async fn broken_file_from_the_watch_keeps_the_old_policy_and_is_reported_once() {
    let stack = Builder::new()
        .policy(&versioned("a"))
        .configmap()
        .reload(ReloadSettings {
            watch: true,
            debounce: Duration::from_millis(50),
            poll_interval: Duration::from_millis(100),
        })
        .start()
        .await;
    let token = stack.token(json!({}));
    stack.configmap_update(BROKEN);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while reloads(&stack, "failure") == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no failed reload");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Several polls later: the same broken content is not retried.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(reloads(&stack, "failure"), 1);
    assert_eq!(
        version_of(&stack.get_with_token("/version", &token).await),
        "a"
    );
    let config = stack.admin("GET", "/admin/config").await.json();
    assert_eq!(config["generation"], 1);
    assert!(config["last_failed_reload"]["errors"].as_u64() > Some(0));

    // Fixing the file clears the failure.
    stack.configmap_update(&versioned("b"));
    wait_for_version(&stack, &token, "b").await;
    let config = stack.admin("GET", "/admin/config").await.json();
    assert_eq!(config["last_failed_reload"], Value::Null);
}

#[tokio::test]
async fn admin_config_reports_generation_hash_and_time_without_secrets() {
    let stack = Builder::new().policy(&versioned("a")).start().await;
    let before = stack.admin("GET", "/admin/config").await;
    assert_eq!(before.status, StatusCode::OK);
    let before = before.json();
    assert_eq!(before["generation"], 1);
    assert_eq!(before["routes"], 2);
    assert_eq!(before["issuers"][0]["name"], "test");
    assert_eq!(before["issuers"][0]["keys_loaded"], true);
    assert_eq!(before["issuers"][0]["keys"], 1);
    let hash = before["sha256"].as_str().unwrap().to_string();
    assert_eq!(hash.len(), 64);
    let loaded_at = before["loaded_at"].as_str().unwrap();
    assert!(
        humantime::parse_rfc3339(loaded_at).is_ok(),
        "not RFC 3339: {loaded_at}"
    );

    // Unchanged files, forced reload: a new generation, the same hash.
    assert_eq!(
        stack.admin("POST", "/admin/reload").await.status,
        StatusCode::OK
    );
    let same = stack.admin("GET", "/admin/config").await.json();
    assert_eq!(same["generation"], 2);
    assert_eq!(same["sha256"], hash.as_str());

    stack.write_policy(&versioned("b"));
    assert_eq!(
        stack.admin("POST", "/admin/reload").await.status,
        StatusCode::OK
    );
    let after = stack.admin("GET", "/admin/config").await;
    assert_eq!(after.json()["generation"], 3);
    assert_ne!(after.json()["sha256"], hash.as_str());
    // Neither the policy text nor the IdP's address is shown.
    assert!(!after.body.contains("X-Policy"), "{}", after.body);
    assert!(!after.body.contains(&stack.idp.url()), "{}", after.body);
}

#[tokio::test]
async fn cached_tokens_survive_a_reload_that_keeps_their_issuer() {
    let stack = Builder::new().policy(&versioned("a")).start().await;
    let token = stack.token(json!({}));
    let lookups = |result: &str| {
        stack
            .running()
            .app
            .metrics
            .token_cache_lookups
            .with_label_values(&[result])
            .get()
    };
    stack.get_with_token("/version", &token).await;
    assert_eq!((lookups("hit"), lookups("miss")), (0, 1));

    // Routes changed, the issuer did not: the cached verification stays.
    stack.write_policy(&versioned("b"));
    assert_eq!(
        stack.admin("POST", "/admin/reload").await.status,
        StatusCode::OK
    );
    assert_eq!(
        version_of(&stack.get_with_token("/version", &token).await),
        "b"
    );
    assert_eq!((lookups("hit"), lookups("miss")), (1, 1));

    // The issuer changed (a second audience): entries of the old one go.
    stack.write_policy(&versioned("b").replace("audience: [api]", "audience: [api, other]"));
    assert_eq!(
        stack.admin("POST", "/admin/reload").await.status,
        StatusCode::OK
    );
    stack.get_with_token("/version", &token).await;
    assert_eq!((lookups("hit"), lookups("miss")), (1, 2));
    assert_eq!(stack.running().app.token_cache.len(), 1);
}

/// 100 reloads alternating two valid policies and a broken one, while
/// clients send requests without pause: no request fails, and every response
/// is wholly one policy's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_reloads_under_load_never_fail_or_mix_a_request() {
    let stack = Arc::new(Builder::new().policy(&versioned("a")).start().await);
    let stop = Arc::new(AtomicBool::new(false));
    let seen_a = Arc::new(AtomicUsize::new(0));
    let seen_b = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stack, stop) = (stack.clone(), stop.clone());
        let (seen_a, seen_b) = (seen_a.clone(), seen_b.clone());
        clients.push(tokio::spawn(async move {
            // The token's grant names a version: /gated lets it through
            // under that version's policy only.
            let grant_a = stack.token(json!({"grant": "a"}));
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let v = version_of(&stack.get_with_token("/version", &grant_a).await);
                match v.as_str() {
                    "a" => seen_a.fetch_add(1, Ordering::Relaxed),
                    "b" => seen_b.fetch_add(1, Ordering::Relaxed),
                    other => panic!("unknown version {other}"),
                };
                let gated = stack.get_with_token("/gated", &grant_a).await;
                assert!(
                    gated.status == StatusCode::OK || gated.status == StatusCode::FORBIDDEN,
                    "{} {}",
                    gated.status,
                    gated.body
                );
                if gated.status == StatusCode::OK {
                    let file = &gated.json()["headers"]["x-policy-file"];
                    assert_eq!(file, "a", "allowed under b: {}", gated.body);
                }
                n += 1;
            }
            n
        }));
    }
    let mut expected_generation = 1;
    for i in 0..100 {
        let (text, valid) = match i % 3 {
            0 => (versioned("b"), true),
            1 => (BROKEN.to_string(), false),
            _ => (versioned("a"), true),
        };
        stack.write_policy(&text);
        let resp = stack.admin("POST", "/admin/reload").await;
        if valid {
            expected_generation += 1;
            assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
        } else {
            assert_eq!(resp.status, StatusCode::UNPROCESSABLE_ENTITY);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        total += c.await.expect("a client saw a failed or mixed response");
    }
    assert_eq!(
        stack.running().app.snapshot().generation,
        expected_generation
    );
    assert_eq!(reloads(&stack, "failure"), 33);
    let (a, b) = (
        seen_a.load(Ordering::Relaxed),
        seen_b.load(Ordering::Relaxed),
    );
    assert!(total >= 100, "too few requests to mean anything: {total}");
    assert!(a > 0 && b > 0, "both policies served: a={a} b={b}");
}
