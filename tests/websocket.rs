//! WebSocket through the reverse proxy, with a real server and client
//! (PyPI `websockets`, tests/interop/ws.py): echo both ways with a large, a
//! fragmented and a binary message; the route's claim headers on the
//! upgrade request; no token → 401 before any upgrade, nothing upstream;
//! the token's expiry closes the connection with a 1008 close frame
//! (SECURITY.md rule 23); the token as a subprotocol entry, for browsers.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::Builder;
use serde_json::{json, Value};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/ws.py");

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ws_server() -> Server {
    let mut child = Command::new("python3")
        .args([SCRIPT, "serve"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 with websockets: run the tests with `bash scripts/test.sh`");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().parse().unwrap_or_else(|_| {
        let _ = child.kill();
        panic!("the websockets server did not start (run `bash scripts/test.sh`): {line:?}")
    });
    Server { child, port }
}

fn client(args: &[&str]) -> Value {
    common::python_json("ws.py", args)
}

fn policy(ws_port: u16) -> String {
    format!(
        r#"
issuers:
  test:
    issuer: https://issuer.test
    audience: [api]
    jwks_uri: ${{JWKS_URI}}
    allow_http: true
    leeway: 0s
    token_from: [bearer, "websocket_protocol:bearer."]
upstreams:
  ws: http://127.0.0.1:{ws_port}
  app: ${{UPSTREAM}}
routes:
  - name: live
    match: {{ path: "/live" }}
    upstream: ws
    allow: {{ claim: $.role, equals: viewer }}
    forward:
      X-Hasura-User-Id: "{{{{ $.sub }}}}"
      X-Hasura-Role: "{{{{ $.role }}}}"
  - name: long-lived
    match: {{ path: "/long" }}
    upstream: ws
    websocket_outlives_token: true
  - name: counted
    match: {{ path: "/counted" }}
    upstream: app
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_headers_refusal_and_expiry() {
    let server = ws_server();
    let s = Builder::new().policy(&policy(server.port)).start().await;
    let base = format!("ws://{}", s.addr());
    let token = s.token(json!({"sub": "ada", "role": "viewer"}));

    // Echo both ways: 4 MiB, 20 fragments, binary; the session headers
    // went with the upgrade request, and the client's token did not.
    let out = tokio::task::spawn_blocking({
        let (url, token) = (format!("{base}/live"), token.clone());
        move || client(&["echo", &url, &token])
    })
    .await
    .unwrap();
    assert_eq!(out["large_ok"], true, "{out}");
    assert_eq!(out["fragmented_ok"], true, "{out}");
    assert_eq!(out["binary_ok"], true, "{out}");
    let headers = &out["headers"];
    assert_eq!(headers["x-hasura-user-id"], "ada", "{headers}");
    assert_eq!(headers["x-hasura-role"], "viewer");
    assert!(headers.get("authorization").is_none(), "{headers}");
    assert_eq!(headers["upgrade"], "websocket");

    // A browser's way: the token as a subprotocol entry, removed before
    // the upgrade goes upstream; the real subprotocol is negotiated.
    let out = tokio::task::spawn_blocking({
        let (url, token) = (format!("{base}/live"), token.clone());
        move || client(&["proto", &url, &token])
    })
    .await
    .unwrap();
    assert_eq!(out["subprotocol"], "chat", "{out}");
    assert_eq!(out["headers"]["sec-websocket-protocol"], "chat", "{out}");
    assert_eq!(out["headers"]["x-hasura-user-id"], "ada");

    // No token: a 401 before any upgrade; the upstream sees nothing. (The
    // refusal is checked against the HTTP echo upstream, which counts.)
    let out = tokio::task::spawn_blocking({
        let url = format!("{base}/live");
        move || client(&["noauth", &url])
    })
    .await
    .unwrap();
    assert_eq!(out["status"], 401, "{out}");
    assert!(out["body"].as_str().unwrap().contains("missing_token"));
    let other = s.token(json!({"sub": "eve", "role": "guest"}));
    let r = s
        .send(
            "GET",
            "/live",
            &[
                ("authorization", &format!("Bearer {other}")),
                ("connection", "Upgrade"),
                ("upgrade", "websocket"),
                ("sec-websocket-version", "13"),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ],
        )
        .await;
    assert_eq!(r.status, 403, "a denied upgrade is an ordinary 403");
    let before = s.upstream.count();
    let r = s
        .send(
            "GET",
            "/counted",
            &[("connection", "Upgrade"), ("upgrade", "websocket")],
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(s.upstream.count(), before, "nothing upstream");

    // Rule 23: a token with 3 s left; the connection ends at its expiry.
    let now = claimgate::jwks::unix_now();
    let short = s.key.sign(&common::claims(
        json!({"sub": "ada", "role": "viewer", "exp": now + 3}),
    ));
    let out = tokio::task::spawn_blocking({
        let (url, t) = (format!("{base}/live"), short.clone());
        move || client(&["held", &url, &t, "8"])
    })
    .await
    .unwrap();
    assert_eq!(out["ended"], "closed", "{out}");
    assert_eq!(out["code"], 1008, "a close frame, policy violation: {out}");
    assert_eq!(out["reason"], "token expired");
    let after = out["after"].as_f64().unwrap();
    assert!((1.5..5.0).contains(&after), "closed after {after} s");
    // A route that says so keeps it open past the token's expiry.
    let now = claimgate::jwks::unix_now();
    let short = s
        .key
        .sign(&common::claims(json!({"sub": "ada", "exp": now + 2})));
    let out = tokio::task::spawn_blocking({
        let (url, t) = (format!("{base}/long"), short);
        move || client(&["held", &url, &t, "4"])
    })
    .await
    .unwrap();
    assert_eq!(out["ended"], "still_open", "{out}");

    let metrics = s.admin("GET", "/metrics").await.body;
    assert!(
        metrics.contains(
            r#"claimgate_upgraded_connections_closed_total{reason="token_expired",route="live"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(r#"claimgate_upgraded_connections{route="live"} 0"#));
}
