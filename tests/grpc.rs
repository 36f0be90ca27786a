//! A refused gRPC call through the reverse proxy is refused in gRPC's
//! terms (HTTP 200, `grpc-status`, `grpc-message` with the reason code), so
//! a real client (grpcio) reports UNAUTHENTICATED or PERMISSION_DENIED, as
//! with Envoy's jwt_authn; nothing reaches the upstream.

mod common;

use common::Builder;
use serde_json::{json, Value};

const POLICY: &str = r#"
issuers:
  test:
    issuer: https://issuer.test
    audience: [api]
    jwks_uri: ${JWKS_URI}
    allow_http: true
upstreams:
  app: ${UPSTREAM}
routes:
  - name: echo
    match: { path: "/echo.Echo/{method}", methods: [POST] }
    upstream: app
    allow: { claim: $.role, equals: caller }
"#;

fn call(addr: std::net::SocketAddr, token: Option<&str>) -> Value {
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/grpc_call.py"
    ))
    .arg(addr.to_string())
    .arg("/echo.Echo/Say");
    if let Some(t) = token {
        cmd.arg(t);
    }
    let out = cmd
        .output()
        .expect("python3: run the tests with `bash scripts/test.sh`");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("client output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_grpc_calls_get_grpc_statuses_and_reach_nothing() {
    let s = Builder::new().policy(POLICY).start().await;
    let addr = s.addr();
    let before = s.upstream.count();
    let out = tokio::task::spawn_blocking(move || call(addr, None))
        .await
        .unwrap();
    assert_eq!(
        out,
        json!({"code": "UNAUTHENTICATED", "details": "missing_token"})
    );
    let guest = s.token(json!({"role": "guest"}));
    let out = tokio::task::spawn_blocking(move || call(addr, Some(&guest)))
        .await
        .unwrap();
    assert_eq!(
        out,
        json!({"code": "PERMISSION_DENIED", "details": "policy_denied"})
    );
    let out = tokio::task::spawn_blocking(move || call(addr, Some("not.a.token")))
        .await
        .unwrap();
    assert_eq!(out["code"], "UNAUTHENTICATED");
    assert_eq!(s.upstream.count(), before, "nothing upstream");
}
