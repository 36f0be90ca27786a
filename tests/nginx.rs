//! A real nginx (Debian's `nginx-light`, installed by
//! `scripts/install-deps.sh`) in front of the echo upstream, asking
//! claimgate's forward-auth door with `auth_request`, configured as
//! `deploy/gateways/nginx.conf` documents: allowed requests reach the
//! upstream with claimgate's headers and not the client's spoofed copies;
//! refused ones get claimgate's status and challenge, and the upstream gets
//! nothing.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Builder, Stack};
use http::StatusCode;
use serde_json::json;

const NGINX: &str = "/usr/sbin/nginx";

/// nginx on a loopback port, stopped on drop.
struct Nginx {
    addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The gateway configuration of `deploy/gateways/nginx.conf` with its
/// placeholders filled.
fn config(dir: &std::path::Path, listen: SocketAddr, s: &Stack) -> String {
    let template = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/gateways/nginx.conf"
    ))
    .unwrap();
    let upstream = s.upstream.url().trim_start_matches("http://").to_string();
    let auth = s.running().forward_auth_addr.unwrap().to_string();
    let body = template
        .replace("listen 80;", &format!("listen {listen};"))
        .replace("server app:8080;", &format!("server {upstream};"))
        .replace("server claimgate:8081;", &format!("server {auth};"));
    // The process around the server block: in the foreground, every path in
    // the test's own directory.
    let d = dir.display();
    format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\nevents {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         {body}\n}}\n"
    )
}

fn start(s: &Stack) -> Nginx {
    assert!(
        std::path::Path::new(NGINX).exists(),
        "nginx is not installed: run the tests with `bash scripts/test.sh`"
    );
    let dir = tempfile::tempdir().unwrap();
    // A free port for nginx's fixed `listen`.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, config(dir.path(), addr, s)).unwrap();
    let child = Command::new(NGINX)
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(dir.path().join("error.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx starts");
    let nginx = Nginx {
        addr,
        child,
        _dir: dir,
    };
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nginx did not listen: {}",
            std::fs::read_to_string(nginx._dir.path().join("error.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    nginx
}

async fn via(n: &Nginx, path: &str, headers: &[(&str, &str)]) -> common::Resp {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    common::send(&client, n.addr, "GET", path, headers).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_asks_claimgate() {
    let s = Builder::new()
        .forward_auth(&["127.0.0.0/8"], "")
        .start()
        .await;
    let nginx = start(&s);
    let gold = format!("Bearer {}", s.gold_token());

    // Allowed: the upstream sees claimgate's headers, not the client's.
    let r = via(
        &nginx,
        "/orders/7?x=1",
        &[
            ("authorization", &gold),
            ("x-user-id", "spoofed"),
            ("x-region", "spoofed"),
            ("X_User_Id", "spoofed"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let seen = s.upstream.last().unwrap();
    assert_eq!(seen.headers["x-user-id"], "user-1");
    assert_eq!(seen.headers["x-region"], "global");
    assert_eq!(seen.headers["x-name"], "Ada L");
    assert!(seen.headers.get("x_user_id").is_none());
    assert_eq!(s.upstream.count(), 1);

    // Refused: claimgate's status and challenge; nothing upstream.
    let free = format!(
        "Bearer {}",
        s.token(json!({"scope": "order", "subscription_level": "free"}))
    );
    let cases = [
        (
            vec![],
            StatusCode::UNAUTHORIZED,
            r#"Bearer realm="claimgate""#,
        ),
        (
            vec![("authorization", "Bearer not.a.token")],
            StatusCode::UNAUTHORIZED,
            r#"Bearer realm="claimgate", error="invalid_token""#,
        ),
        (
            vec![("authorization", free.as_str())],
            StatusCode::FORBIDDEN,
            r#"Bearer realm="claimgate", error="insufficient_scope""#,
        ),
    ];
    for (headers, status, challenge) in cases {
        let r = via(&nginx, "/orders/7", &headers).await;
        assert_eq!(r.status, status, "{headers:?}");
        assert_eq!(r.www_authenticate(), Some(challenge), "{headers:?}");
    }
    assert_eq!(
        s.upstream.count(),
        1,
        "a refused request reached the upstream"
    );

    // The decision is on the path nginx received, not on a client's
    // X-Original-URI (nginx sets it from $request_uri).
    let r = via(
        &nginx,
        "/orders/7",
        &[("authorization", &free), ("x-original-uri", "/healthz")],
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(s.upstream.count(), 1);

    // A public route passes without a token.
    assert_eq!(via(&nginx, "/healthz", &[]).await.status, StatusCode::OK);
    assert_eq!(s.upstream.count(), 2);
}

/// Rule 21 with a real client reaching the forward-auth listener directly:
/// forged `X-Original-URI` from a non-gateway peer is refused.
#[tokio::test]
async fn a_direct_call_with_a_forged_original_uri_is_refused() {
    // Gateways: nginx's address block only; the test client is 127.0.0.1.
    let s = Builder::new()
        .forward_auth(&["127.0.0.2/32"], "")
        .start()
        .await;
    let free = format!(
        "Bearer {}",
        s.token(json!({"scope": "order", "subscription_level": "free"}))
    );
    let r = s
        .check(
            "GET",
            "/auth",
            &[("authorization", &free), ("x-original-uri", "/healthz")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.reason(), "untrusted_gateway");
    assert_eq!(s.upstream.count(), 0);
}
