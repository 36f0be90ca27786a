//! Quotas by claim: plan-aware rate limits on one node and, through a real
//! `redis-server` on loopback, across two claimgate instances; 429s with
//! their headers and nothing upstream; Redis stopped and back (rule 24).

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Builder, Stack};
use serde_json::json;

const LIMITED: &str = r#"
issuers:
  test:
    issuer: https://issuer.test
    audience: [api]
    jwks_uri: ${JWKS_URI}
    allow_http: true
upstreams:
  app: ${UPSTREAM}
routes:
  - name: api
    match: { path: "/api/**" }
    upstream: app
    rate_limits:
      - name: per-user
        key: "{{ $.sub }}"
        by: $.subscription_level
        limits: { free: 10/s, gold: 50/s, platinum: unlimited }
        default: 5/s
        headers: true
  - name: tenants
    match: { path: "/t/{tenant}/**" }
    upstream: app
    rate_limits:
      - name: per-tenant
        key: "{{ {tenant} }}"
        key_from_request: true
        default: 20/s
  - name: per-ip
    match: { path: "/ip/**" }
    upstream: app
    rate_limits:
      - name: per-client
        key: "{{ {client} }}"
        key_from_request: true
        default: 10/s
"#;

/// Sends requests from `clients` tasks for `secs`, each with its token
/// (round robin), and counts the statuses.
async fn hammer(
    stacks: &[&Stack],
    path: &str,
    tokens: &[String],
    clients: usize,
    secs: f64,
) -> (usize, usize, usize, f64) {
    let ok = Arc::new(AtomicUsize::new(0));
    let limited = Arc::new(AtomicUsize::new(0));
    let other = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let addr: SocketAddr = stacks[c % stacks.len()].addr();
        let token = tokens[c % tokens.len()].clone();
        let (ok, limited, other) = (ok.clone(), limited.clone(), other.clone());
        let path = path.to_string();
        tasks.push(tokio::spawn(async move {
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http();
            let auth = format!("Bearer {token}");
            while Instant::now() < deadline {
                let r =
                    common::send(&client, addr, "GET", &path, &[("authorization", &auth)]).await;
                match r.status.as_u16() {
                    200 => ok.fetch_add(1, Ordering::Relaxed),
                    429 => limited.fetch_add(1, Ordering::Relaxed),
                    _ => other.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    (
        ok.load(Ordering::Relaxed),
        limited.load(Ordering::Relaxed),
        other.load(Ordering::Relaxed),
        elapsed,
    )
}

/// GCRA admits a burst of `count`, then `count` per period: over `secs`
/// from the first request, `count + rate × secs` (the last partial
/// interval may or may not have come due).
fn expected(count: f64, per_sec: f64, secs: f64) -> f64 {
    count + per_sec * secs
}

fn within(got: usize, want: f64, tolerance: f64) -> bool {
    (got as f64 - want).abs() <= want * tolerance + 1.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_limit_holds_and_plans_and_tenants_are_independent() {
    let s = Builder::new().policy(LIMITED).start().await;
    let gold = s.token(json!({"sub": "g", "subscription_level": "gold"}));
    let free = s.token(json!({"sub": "f", "subscription_level": "free"}));
    let before = s.upstream.count();
    // Gold and free users at once, each with several connections.
    let one = [&s];
    let (g, f) = tokio::join!(
        hammer(&one, "/api/x", std::slice::from_ref(&gold), 4, 3.0),
        hammer(&one, "/api/x", std::slice::from_ref(&free), 4, 3.0),
    );
    assert_eq!(g.2 + f.2, 0, "only 200 and 429");
    assert!(g.1 > 0 && f.1 > 0, "both were limited");
    let want_gold = expected(50.0, 50.0, g.3);
    let want_free = expected(10.0, 10.0, f.3);
    assert!(
        within(g.0, want_gold, 0.01),
        "gold: {} allowed, want {want_gold:.1}",
        g.0
    );
    assert!(
        within(f.0, want_free, 0.01),
        "free: {} allowed, want {want_free:.1}",
        f.0
    );
    // Nothing refused reached the upstream.
    assert_eq!(s.upstream.count() - before, g.0 + f.0);

    // A 429 carries Retry-After and the IETF headers; an allowed response
    // the remaining budget (the route asks for it).
    let fresh = s.token(json!({"sub": "new", "subscription_level": "free"}));
    let r = s.get_with_token("/api/x", &fresh).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["ratelimit"], "\"per-user\";r=9;t=0");
    let mut r = r;
    for _ in 0..30 {
        r = s.get_with_token("/api/x", &fresh).await;
        if r.status == 429 {
            break;
        }
    }
    assert_eq!(r.status, 429);
    assert_eq!(r.reason(), "rate_limited");
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=1).contains(&retry), "{retry}");
    assert_eq!(r.headers["ratelimit-policy"], "\"per-user\";q=10;w=1");
    assert!(r.headers["ratelimit"]
        .to_str()
        .unwrap()
        .starts_with("\"per-user\";r=0;t="));

    // No plan claim: the default; `unlimited` is unlimited.
    let none = s.token(json!({"sub": "n"}));
    let (ok, limited, _, secs) = hammer(&[&s], "/api/x", &[none], 2, 1.0).await;
    assert!(within(ok, expected(5.0, 5.0, secs), 0.01), "default: {ok}");
    assert!(limited > 0);
    let plat = s.token(json!({"sub": "p", "subscription_level": "platinum"}));
    let (ok, limited, _, _) = hammer(&[&s], "/api/x", &[plat], 2, 0.5).await;
    assert!(
        ok > 100 && limited == 0,
        "platinum: {ok} ok, {limited} limited"
    );

    // Per tenant, whoever calls: two tenants do not share.
    let users: Vec<String> = (0..3)
        .map(|i| s.token(json!({"sub": format!("u{i}")})))
        .collect();
    let (a, b) = tokio::join!(
        hammer(&one, "/t/acme/x", &users, 3, 2.0),
        hammer(&one, "/t/globex/x", &users, 3, 2.0),
    );
    assert!(within(a.0, expected(20.0, 20.0, a.3), 0.01), "acme {}", a.0);
    assert!(
        within(b.0, expected(20.0, 20.0, b.3), 0.01),
        "globex {}",
        b.0
    );

    // Per client address: different users from one address share it.
    let (ok, limited, _, secs) = hammer(&one, "/ip/x", &users, 3, 1.0).await;
    assert!(
        within(ok, expected(10.0, 10.0, secs), 0.01),
        "per client {ok}"
    );
    assert!(limited > 0);

    let metrics = s.admin("GET", "/metrics").await.body;
    assert!(metrics.contains(
        r#"claimgate_rate_limit_decisions_total{limit="per-user",plan="gold",result="limited",route="api"}"#
    ));
    assert!(metrics.contains(r#"claimgate_requests_total{decision="rate_limited",route="api"}"#));
}

/// Rule 24: a key read from the request needs the route to say so.
#[tokio::test]
async fn rule_24_a_key_from_the_request_needs_key_from_request() {
    let policy = LIMITED.replace("        key_from_request: true\n", "");
    let err = common::compile_error(&policy);
    assert!(err.contains("rate limit `per-tenant`"), "{err}");
    assert!(err.contains("key_from_request: true"), "{err}");
    // And a Redis limit must say what happens when Redis fails.
    let policy = LIMITED.replace(
        "        default: 20/s\n",
        "        default: 20/s\n        store: redis\n",
    );
    let err = common::compile_error(&policy);
    assert!(err.contains("on_store_error"), "{err}");
}

// === the fleet: two instances, one redis-server ===

struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/install-deps.sh installs it)");
        // Owned at once, so that a failed start is still killed and reaped.
        let redis = Redis { child, port };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return redis;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not start on {port}");
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn fleet_policy() -> &'static str {
    r#"
issuers:
  test:
    issuer: https://issuer.test
    audience: [api]
    jwks_uri: ${JWKS_URI}
    allow_http: true
upstreams:
  app: ${UPSTREAM}
routes:
  - name: deny
    match: { path: "/deny" }
    upstream: app
    rate_limits:
      - { name: shared, key: "{{ $.sub }}", default: 40/s, store: redis, on_store_error: deny }
  - name: allow
    match: { path: "/allow" }
    upstream: app
    rate_limits:
      - { name: shared, key: "{{ $.sub }}", default: 40/s, store: redis, on_store_error: allow }
  - name: local
    match: { path: "/local" }
    upstream: app
    rate_limits:
      - { name: shared, key: "{{ $.sub }}", default: 40/s, store: redis, on_store_error: local }
"#
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_limit_through_redis_and_follow_the_failure_modes() {
    let port = free_port();
    let mut redis = Redis::start(port);
    let redis_limits = |l: &mut claimgate::config::Limits| {
        l.redis = Some(claimgate::quota::RedisSettings {
            url: format!("redis://127.0.0.1:{port}/0"),
            password: None,
            timeout: Duration::from_millis(200),
            prefix: format!("test{port}:"),
        });
    };
    let a = Builder::new()
        .policy(fleet_policy())
        .limits(redis_limits)
        .start()
        .await;
    // The second instance trusts the first's keys and sends to its upstream.
    let b = Builder::new()
        .policy(fleet_policy())
        .limits(redis_limits)
        .var("JWKS_URI", &a.idp.url())
        .var("UPSTREAM", &a.upstream.url())
        .start()
        .await;
    let token = a.token(json!({"sub": "fleet-user"}));
    let before = a.upstream.count();
    let (ok, limited, other, secs) =
        hammer(&[&a, &b], "/deny", std::slice::from_ref(&token), 6, 3.0).await;
    assert_eq!(other, 0);
    assert!(limited > 0);
    let want = expected(40.0, 40.0, secs);
    assert!(
        within(ok, want, 0.01),
        "combined: {ok} allowed, want {want:.1}"
    );
    assert_eq!(
        a.upstream.count() - before,
        ok,
        "nothing refused went upstream"
    );

    // Redis stops: each limit follows its declared mode.
    redis.stop();
    let fresh = a.token(json!({"sub": "during-outage"}));
    let before = a.upstream.count();
    let r = a.get_with_token("/deny", &fresh).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.reason(), "rate_limit_unavailable");
    assert_eq!(a.upstream.count(), before, "deny: nothing upstream");
    let (ok, limited, other, _) =
        hammer(&[&a], "/allow", std::slice::from_ref(&fresh), 2, 1.0).await;
    assert!(
        ok > 60 && limited == 0 && other == 0,
        "allow: {ok} ok {limited} limited {other} other"
    );
    let (ok, limited, _, secs) =
        hammer(&[&a], "/local", std::slice::from_ref(&fresh), 2, 1.0).await;
    assert!(limited > 0, "local: limited on this node");
    assert!(within(ok, expected(40.0, 40.0, secs), 0.05), "local: {ok}");
    let metrics = a.admin("GET", "/metrics").await.body;
    for mode in ["deny", "allow", "local"] {
        assert!(
            metrics.contains(&format!(
                r#"claimgate_rate_limit_store_errors_total{{limit="shared",on_store_error="{mode}",route="{mode}"}}"#
            )),
            "{mode}"
        );
    }

    // Redis back on the same port: shared limiting again, on both.
    let _redis = Redis::start(redis.port);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let again = a.token(json!({"sub": "after-outage"}));
    let (ok, limited, other, secs) =
        hammer(&[&a, &b], "/deny", std::slice::from_ref(&again), 4, 2.0).await;
    assert_eq!(other, 0, "no 503 once Redis is back");
    assert!(limited > 0);
    assert!(
        within(ok, expected(40.0, 40.0, secs), 0.01),
        "recovered: {ok}"
    );
}

/// The forward-auth door counts a check as the proxy counts a request, and
/// its allowed answer carries the route's `RateLimit` headers for the
/// gateway to pass on; a limited check is the proxy's 429.
#[tokio::test]
async fn forward_auth_answers_carry_the_rate_limit_headers() {
    let s = Builder::new()
        .policy(LIMITED)
        .forward_auth(&["127.0.0.0/8"], "")
        .start()
        .await;
    let token = s.token(json!({"sub": "fa", "subscription_level": "free"}));
    let auth = format!("Bearer {token}");
    let headers = [
        ("authorization", auth.as_str()),
        ("x-original-method", "GET"),
        ("x-original-uri", "/api/x"),
    ];
    let ask = || s.check("GET", "/auth", &headers);
    let r = ask().await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.headers["ratelimit"], "\"per-user\";r=9;t=0");
    assert_eq!(r.headers["ratelimit-policy"], "\"per-user\";q=10;w=1");
    let mut last = r;
    for _ in 0..30 {
        last = ask().await;
        if last.status != 200 {
            break;
        }
    }
    assert_eq!(last.status, 429, "{}", last.body);
    assert_eq!(last.reason(), "rate_limited");
    assert_eq!(s.upstream.count(), 0);
}
