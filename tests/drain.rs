//! The `claimgate run` process: SIGTERM drains (unready at once, serving for
//! the drain delay, in-flight requests finish, exit 0), and the JSON access
//! log has one line per request with route, decision and status, never the
//! token.

mod common;

use std::process::Stdio;
use std::time::Duration;

use claimgate::jwks::Algorithm;
use claimgate::testkit::keys::{jwks, SigningKey};
use claimgate::testkit::servers::{EchoServer, JwksServer};
use http::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let loopback = ([127, 0, 0, 1], 0).into();
    let upstream = EchoServer::start(loopback).await.unwrap();
    let key = SigningKey::generate(Algorithm::ES256, "k1");
    let idp = JwksServer::start(loopback, &jwks([&key])).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/policy.yaml"), common::POLICY).unwrap();
    std::fs::write(
        dir.path().join("claimgate.yaml"),
        "listen: 127.0.0.1:0\n\
         admin_listen: 127.0.0.1:0\n\
         policies: policies\n\
         log_format: json\n\
         limits: { drain_delay: 1500ms, shutdown_grace: 10s }\n\
         reload: { watch: false, poll_interval: 0s }\n",
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_claimgate"))
        .args(["run", "--config"])
        .arg(dir.path().join("claimgate.yaml"))
        .env("UPSTREAM", upstream.url())
        .env("JWKS_URI", idp.url())
        .env("CLAIMGATE_LOG", "info")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start claimgate");
    let pid = child.id().expect("pid");

    // Every stderr line, as it comes.
    let (tx, mut lines) = mpsc::unbounded_channel::<String>();
    let stderr = child.stderr.take().unwrap();
    let reader = tokio::spawn(async move {
        let mut r = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = r.next_line().await {
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    let serving = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.recv().await {
            log.push(line.clone());
            let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if v["fields"]["message"] == "claimgate serving" {
                return v;
            }
        }
        panic!("claimgate exited: {log:?}");
    })
    .await
    .expect("claimgate did not start");
    let addr: std::net::SocketAddr = serving["fields"]["listen"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let admin: std::net::SocketAddr = serving["fields"]["admin"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let get = |addr, path: &'static str, token: Option<String>| {
        let client = client.clone();
        async move {
            let headers: Vec<(&str, String)> = token
                .map(|t| vec![("authorization", format!("Bearer {t}"))])
                .unwrap_or_default();
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            common::send(&client, addr, "GET", path, &headers).await
        }
    };
    tokio::time::timeout(Duration::from_secs(10), async {
        while get(admin, "/readyz", None).await.status != StatusCode::OK {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("ready");

    // SIGHUP reloads; a broken file is refused with its file and line in
    // the log, and the old policy keeps serving.
    let policy_file = dir.path().join("policies/policy.yaml");
    std::fs::write(
        &policy_file,
        common::POLICY.replace(
            "upstream: app\n    public: true",
            "upstream: gone\n    public: true",
        ),
    )
    .unwrap();
    signal("-HUP", pid);
    let reloads = |result: &'static str| {
        let get = &get;
        async move {
            let body = get(admin, "/metrics", None).await.body;
            let line = format!("claimgate_config_reloads_total{{result=\"{result}\"}} ");
            body.lines()
                .find_map(|l| l.strip_prefix(&line))
                .map_or(0, |n| n.parse::<u64>().unwrap())
        }
    };
    wait_until("the failed SIGHUP reload", || async {
        reloads("failure").await == 1
    })
    .await;
    assert_eq!(get(addr, "/healthz", None).await.status, StatusCode::OK);
    // A refusal, for its access line.
    assert_eq!(
        get(addr, "/me", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    std::fs::write(&policy_file, common::POLICY).unwrap();
    signal("-HUP", pid);
    wait_until("the SIGHUP reload", || async {
        reloads("success").await == 2
    })
    .await;
    while let Ok(line) = lines.try_recv() {
        log.push(line);
    }
    let refusal = log
        .iter()
        .find(|l| l.contains("policy reload refused"))
        .unwrap_or_else(|| panic!("no refusal logged: {log:#?}"));
    assert!(
        refusal.contains(&format!("{}:", policy_file.display())),
        "{refusal}"
    );
    assert!(refusal.contains("`gone`"), "{refusal}");

    let token = key.sign(&common::claims(json!({})));
    let before = upstream.count();
    let slow = tokio::spawn(get(addr, "/slow/2500", Some(token.clone())));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        upstream.count(),
        before,
        "the slow request is still upstream"
    );

    signal("-TERM", pid);
    // Unready at once...
    tokio::time::timeout(Duration::from_secs(1), async {
        while get(admin, "/readyz", None).await.status != StatusCode::SERVICE_UNAVAILABLE {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("/readyz turns 503 on SIGTERM");
    // ...while still serving new requests for the drain delay.
    let during = get(addr, "/me", Some(token.clone())).await;
    assert_eq!(during.status, StatusCode::OK, "{}", during.body);

    // The in-flight request finishes, then the process exits 0.
    let slow = slow.await.unwrap();
    assert_eq!(slow.status, StatusCode::OK, "{}", slow.body);
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("claimgate exits after the drain")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    reader.await.unwrap();
    while let Ok(line) = lines.try_recv() {
        log.push(line);
    }

    // The access log: JSON, one line per proxied request, no token.
    let access: Vec<Value> = log
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "claimgate::access")
        .collect();
    let slow_line = access
        .iter()
        .find(|v| v["fields"]["route"] == "slow")
        .unwrap_or_else(|| panic!("no access line for /slow: {log:#?}"));
    assert_eq!(slow_line["fields"]["decision"], "allowed");
    assert_eq!(slow_line["fields"]["status"], 200);
    assert_eq!(slow_line["fields"]["issuer"], "test");
    assert!(slow_line["fields"]["latency_us"].as_u64() >= Some(2_500_000));
    // Who asked for what, and what the upstream said — never the query.
    let f = &slow_line["fields"];
    assert_eq!(f["door"], "proxy");
    assert_eq!(f["method"], "GET");
    assert_eq!(f["path"], "/slow/2500");
    assert_eq!(f["client"], "127.0.0.1");
    assert_eq!(f["upstream_status"], 200);
    assert!(f["bytes"].as_u64() > Some(0), "{f}");
    let id = f["request_id"].as_str().unwrap();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    // No colour codes in a log that is not a terminal.
    assert!(
        !log.iter().any(|l| l.contains('\u{1b}')),
        "ANSI codes in the log"
    );
    assert!(access.iter().any(|v| v["fields"]["route"] == "any-user"));
    // The refused request's line: its reason, no upstream status, the size
    // of the JSON refusal.
    let refused = access
        .iter()
        .map(|v| &v["fields"])
        .find(|f| f["status"] == 401)
        .unwrap_or_else(|| panic!("no 401 access line: {log:#?}"));
    assert_eq!(refused["decision"], "unauthenticated");
    assert_eq!(refused["reason"], "missing_token");
    assert_eq!(refused["path"], "/me");
    assert!(refused.get("upstream_status").is_none(), "{refused}");
    assert!(refused["bytes"].as_u64() > Some(20), "{refused}");
    let all = log.join("\n");
    assert!(!all.contains(&token), "a token reached the log");
    assert!(!all.contains(token.split('.').nth(2).unwrap()));
}

fn signal(which: &str, pid: u32) {
    let kill = std::process::Command::new("kill")
        .args([which, &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
}

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
