//! gRPC through the reverse proxy with a real server and client (grpcio):
//! unary, server-streaming and bidi calls over h2c and over TLS to the
//! upstream (a private CA, mTLS), trailers intact, the claim headers sent and
//! the token not. A refused call is refused in gRPC's terms (HTTP 200,
//! `grpc-status`, `grpc-message` with the reason code), so the client
//! reports UNAUTHENTICATED or PERMISSION_DENIED, as with Envoy's jwt_authn;
//! nothing reaches the upstream.

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
    let mut args = vec![addr.to_string(), "/echo.Echo/Say".to_string()];
    args.extend(token.map(str::to_string));
    common::python_json("grpc_call.py", &args)
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

struct Server(std::process::Child, u16);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn grpc_server(args: &[&str]) -> Server {
    use std::io::BufRead;
    let mut child = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/interop/grpc_echo.py"
        ))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3: run the tests with `bash scripts/test.sh`");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().parse().unwrap_or_else(|_| {
        let _ = child.kill();
        panic!("the grpcio server did not start: {line:?}")
    });
    Server(child, port)
}

fn all_calls(addr: std::net::SocketAddr, token: &str) -> Value {
    common::python_json("grpc_call.py", &[&addr.to_string(), "all", token])
}

fn upstream_policy(upstream: &str) -> String {
    format!(
        r#"
issuers:
  test:
    issuer: https://issuer.test
    audience: [api]
    jwks_uri: ${{JWKS_URI}}
    allow_http: true
upstreams:
  grpc: {upstream}
routes:
  - name: echo
    match: {{ path: "/echo.Echo/{{method}}", methods: [POST] }}
    upstream: grpc
    forward:
      X-User-Id: "{{{{ $.sub }}}}"
"#
    )
}

fn check_calls(out: &Value) {
    assert_eq!(out["unary"], "hello", "{out}");
    assert_eq!(out["trailers"]["x-trailer"], "kept", "{out}");
    assert_eq!(
        out["trailers"]["seen-user"], "user-1",
        "the claim header went upstream"
    );
    assert_eq!(out["trailers"]["seen-auth"], "no", "the token did not");
    assert_eq!(out["stream"], json!(["1000", "1001", "1002"]));
    assert_eq!(out["bidi"], json!(["cba", "fed", "ihg"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_pass_over_h2c_with_trailers_and_streams() {
    let server = grpc_server(&[]);
    let policy = upstream_policy(&format!(
        "{{ url: \"http://127.0.0.1:{}\", protocol: h2c }}",
        server.1
    ));
    let s = Builder::new().policy(&policy).start().await;
    let token = s.token(json!({}));
    let addr = s.addr();
    let out = tokio::task::spawn_blocking(move || all_calls(addr, &token))
        .await
        .unwrap();
    check_calls(&out);
}

/// A private CA for a gRPC server on TLS, with a client certificate for
/// claimgate: the files, in `dir`.
fn private_ca(dir: &std::path::Path) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct names: OpenSSL (grpcio) takes a leaf named like its issuer
    // for a self-signed certificate.
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "claimgate test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    for (name, san) in [("server", "localhost"), ("client", "claimgate")] {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![san.to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, san);
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_pass_over_tls_with_a_private_ca_and_mtls() {
    let dir = tempfile::tempdir().unwrap();
    private_ca(dir.path());
    let p = |f: &str| dir.path().join(f).display().to_string();
    // The server asks for a client certificate from the same CA.
    let server = grpc_server(&[&p("server.pem"), &p("server.key"), &p("ca.pem")]);
    let upstream = format!(
        "{{ url: \"https://localhost:{}\", protocol: auto, ca_file: \"{}\", client_cert: \"{}\", client_key: \"{}\" }}",
        server.1,
        p("ca.pem"),
        p("client.pem"),
        p("client.key")
    );
    let s = Builder::new()
        .policy(&upstream_policy(&upstream))
        .start()
        .await;
    let token = s.token(json!({}));
    let addr = s.addr();
    let out = tokio::task::spawn_blocking(move || all_calls(addr, &token))
        .await
        .unwrap();
    check_calls(&out);

    // Without the CA file the server's certificate is not trusted: the call
    // fails as UNAVAILABLE (502 upstream_unavailable in gRPC terms).
    let untrusted = format!(
        "{{ url: \"https://localhost:{}\", protocol: h2 }}",
        server.1
    );
    let s = Builder::new()
        .policy(&upstream_policy(&untrusted))
        .start()
        .await;
    let token = s.token(json!({}));
    let addr = s.addr();
    let out = tokio::task::spawn_blocking(move || call(addr, Some(&token)))
        .await
        .unwrap();
    assert_eq!(
        out,
        json!({"code": "UNAVAILABLE", "details": "upstream_unavailable"})
    );
}
