//! The metrics as Prometheus itself sees them: `promtool check metrics` on
//! the exposition after real traffic, and a real Prometheus server scraping
//! the admin listener. Both binaries come from Debian's `prometheus`
//! package, which `scripts/test.sh` installs; `PROMETHEUS` and `PROMTOOL`
//! may name other ones.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Stack;
use http::StatusCode;
use serde_json::{json, Value};

/// The path of `name` (or of the binary `$env` names); a clear failure when
/// it is missing, never a silent pass.
fn binary(name: &str, env: &str) -> String {
    if let Ok(path) = std::env::var(env) {
        return path;
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    match found {
        Some(p) => p.display().to_string(),
        None => panic!(
            "`{name}` is not installed: run the tests with `bash scripts/test.sh`, \
             which installs Debian's prometheus package, or set {env}"
        ),
    }
}

/// Traffic that touches every kind of metric: allowed, denied, refused
/// tokens, public routes, cache hits and misses.
async fn traffic(stack: &Stack) {
    let gold = stack.gold_token();
    for _ in 0..3 {
        assert_eq!(
            stack.get_with_token("/orders/1", &gold).await.status,
            StatusCode::OK
        );
    }
    let free = stack.token(json!({"scope": "order", "subscription_level": "free"}));
    assert_eq!(
        stack.get_with_token("/orders/1", &free).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        stack.get_with_token("/me", "not.a.token").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(stack.get("/me", &[]).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(stack.get("/healthz", &[]).await.status, StatusCode::OK);
    assert_eq!(
        stack.get("/nowhere", &[]).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn promtool_accepts_the_exposition() {
    let promtool = binary("promtool", "PROMTOOL");
    let stack = common::stack().await;
    traffic(&stack).await;
    let metrics = stack.admin("GET", "/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert_eq!(
        metrics.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    // Every family is there once traffic touched it.
    for family in [
        "claimgate_requests_total",
        "claimgate_auth_failures_total",
        "claimgate_upstream_responses_total",
        "claimgate_request_duration_seconds_bucket",
        "claimgate_upstream_duration_seconds_bucket",
        "claimgate_jwks_fetches_total",
        "claimgate_jwks_keys",
        "claimgate_jwks_last_success_timestamp_seconds",
        "claimgate_token_cache_lookups_total",
        "claimgate_config_reloads_total",
        "claimgate_config_generation",
    ] {
        assert!(metrics.body.contains(family), "{family} missing");
    }
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool: {said}");
    assert!(said.trim().is_empty(), "promtool lint: {said}");
}

/// A Prometheus server on loopback, killed on drop.
struct Prometheus {
    child: std::process::Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(target: SocketAddr) -> Self {
        let bin = binary("prometheus", "PROMETHEUS");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("prometheus.yml"),
            format!(
                "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
                 scrape_configs:\n  \
                   - job_name: claimgate\n    \
                     static_configs: [ {{ targets: [\"{target}\"] }} ]\n"
            ),
        )
        .unwrap();
        // A free port: bind, note, release.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap();
        let child = Command::new(bin)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        Self {
            child,
            addr,
            _dir: dir,
        }
    }

    /// The single value of an instant query, if it has one yet.
    async fn query(&self, stack: &Stack, promql: &str) -> Option<f64> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let path = format!("/api/v1/query?query={encoded}");
        let resp = stack.client_get(self.addr, &path).await?;
        let v: Value = serde_json::from_str(&resp).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// Waits (30 s at most) until `promql` is at least `want`.
    async fn wait_for(&self, stack: &Stack, promql: &str, want: f64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.query(stack, promql).await;
            if got.is_some_and(|g| g >= want) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "Prometheus: `{promql}` is {got:?}, wanted {want}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test]
async fn a_real_prometheus_scrapes_claimgate() {
    let stack = common::stack().await;
    let prometheus = Prometheus::start(stack.running().admin_addr);
    prometheus
        .wait_for(&stack, r#"up{job="claimgate"}"#, 1.0)
        .await;

    let token = stack.token(json!({}));
    for _ in 0..5 {
        assert_eq!(
            stack.get_with_token("/me", &token).await.status,
            StatusCode::OK
        );
    }
    let allowed = r#"sum(claimgate_requests_total{route="any-user",decision="allowed"})"#;
    prometheus.wait_for(&stack, allowed, 5.0).await;
    // The counters move with the traffic.
    for _ in 0..5 {
        assert_eq!(
            stack.get_with_token("/me", &token).await.status,
            StatusCode::OK
        );
    }
    prometheus.wait_for(&stack, allowed, 10.0).await;
    prometheus
        .wait_for(&stack, r#"claimgate_jwks_keys{issuer="test"}"#, 1.0)
        .await;
}

/// Before any request or failure, every route's and issuer's failure series
/// already reads 0 (so `rate()` alerts see 0, not "no data"), with the
/// build's version and the process metrics.
#[tokio::test]
async fn failure_series_start_at_zero_with_build_and_process_metrics() {
    let s = common::stack().await;
    let m = s.admin("GET", "/metrics").await.body;
    for line in [
        r#"claimgate_upstream_errors_total{kind="timeout",route="orders"} 0"#,
        r#"claimgate_upstream_errors_total{kind="unavailable",route="slow"} 0"#,
        r#"claimgate_requests_total{decision="denied",route="orders"} 0"#,
        r#"claimgate_upstream_responses_total{class="5xx",route="any-user"} 0"#,
        r#"claimgate_jwks_fetches_total{issuer="test",result="failure"} 0"#,
        r#"claimgate_auth_failures_total{issuer="test",reason="bad_signature"} 0"#,
        r#"claimgate_config_reloads_total{result="failure"} 0"#,
        concat!(
            r#"claimgate_build_info{version=""#,
            env!("CARGO_PKG_VERSION"),
            r#""} 1"#
        ),
    ] {
        assert!(m.lines().any(|l| l == line), "missing `{line}`:\n{m}");
    }
    for name in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
    ] {
        assert!(m.contains(&format!("\n{name} ")), "no {name}");
    }
}

/// `deploy/observability/`: the alert rules pass `promtool check rules` and
/// their unit tests (`promtool test rules`: each alert fires on its failure
/// and not on a healthy series), and every claimgate metric the rules and
/// the Grafana dashboard name is one claimgate registers (a renamed metric
/// would leave an alert silent); those a plain stack has after some traffic
/// are also in its exposition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rules_and_dashboard_use_real_metrics_and_pass_promtool() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/observability");
    let promtool = binary("promtool", "PROMTOOL");
    for args in [
        vec!["check", "rules", "alerts.yaml"],
        vec!["test", "rules", "alerts.test.yaml"],
    ] {
        let out = Command::new(&promtool)
            .args(&args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rules = std::fs::read_to_string(format!("{dir}/alerts.yaml")).unwrap();
    let dashboard = std::fs::read_to_string(format!("{dir}/dashboard.json")).unwrap();
    let parsed: Value = serde_json::from_str(&dashboard).expect("dashboard.json is JSON");
    assert!(parsed["panels"].as_array().is_some_and(|p| p.len() >= 10));

    let stack = common::stack().await;
    traffic(&stack).await;
    let exposed = stack.admin("GET", "/metrics").await.body;
    let registered =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/metrics.rs")).unwrap();
    let names = |text: &str| -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        let mut rest = text;
        while let Some(i) = rest.find("claimgate_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            out.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
        out
    };
    let exposed_names = names(&exposed);
    let registered_names = names(&registered);
    let mut checked = 0;
    for name in names(&rules).into_iter().chain(names(&dashboard)) {
        let family = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        assert!(
            registered_names.contains(family),
            "`{name}` in deploy/observability is not a claimgate metric"
        );
        if [
            "requests_total",
            "jwks_fetches_total",
            "request_duration_seconds_bucket",
        ]
        .iter()
        .any(|n| name.ends_with(n))
        {
            assert!(exposed_names.contains(&name), "`{name}` is not exposed");
            checked += 1;
        }
    }
    assert!(checked >= 3);
}

/// An upstream's 5xx is an allowed request (`requests_total`) and counted by
/// status class in `upstream_responses_total`; a refusal is not.
#[tokio::test]
async fn upstream_answers_are_counted_by_status_class() {
    let (broken, _task) =
        claimgate::testkit::servers::serve(([127, 0, 0, 1], 0).into(), |_req| async {
            http::Response::builder()
                .status(503)
                .body(http_body_util::Full::new(bytes::Bytes::from("down")))
                .unwrap()
        })
        .await
        .unwrap();
    let s = common::Builder::new()
        .var("BROKEN", &format!("http://{broken}"))
        .policy(
            "upstreams:\n  app: ${UPSTREAM}\n  broken: ${BROKEN}\nroutes:\n\
             \x20 - name: ok\n    match: { path: /ok }\n    upstream: app\n    public: true\n\
             \x20 - name: down\n    match: { path: /down }\n    upstream: broken\n    public: true\n",
        )
        .start()
        .await;
    assert_eq!(s.get("/ok", &[]).await.status, StatusCode::OK);
    for _ in 0..2 {
        assert_eq!(
            s.get("/down", &[]).await.status,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    let m = s.admin("GET", "/metrics").await.body;
    for line in [
        r#"claimgate_upstream_responses_total{class="2xx",route="ok"} 1"#,
        r#"claimgate_upstream_responses_total{class="5xx",route="ok"} 0"#,
        r#"claimgate_upstream_responses_total{class="5xx",route="down"} 2"#,
        r#"claimgate_requests_total{decision="public",route="down"} 2"#,
        r#"claimgate_upstream_errors_total{kind="unavailable",route="down"} 0"#,
    ] {
        assert!(m.lines().any(|l| l == line), "{line} missing:\n{m}");
    }
    assert!(!m.contains("claimgate_policy_denials_total"));
}
