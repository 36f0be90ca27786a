//! The proxy listener over real TLS (rustls), HTTP/2 chosen by ALPN.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use claimgate::config::TlsFiles;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A stack serving TLS with a fresh self-signed pair for `localhost` (in
/// the returned directory), `limits` applied, and a client configuration
/// trusting that certificate alone.
async fn tls_stack(
    limits: impl FnOnce(&mut claimgate::config::Limits),
) -> (common::Stack, rustls::ClientConfig, tempfile::TempDir) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let s = common::Builder::new()
        .tls(TlsFiles {
            cert: cert_path,
            key: key_path,
            reload_interval: std::time::Duration::ZERO,
        })
        .limits(limits)
        .start()
        .await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    (s, config, dir)
}

#[tokio::test]
async fn serves_h2_and_http1_over_tls() {
    let (s, config, _dir) = tls_stack(|_| {}).await;
    let url = format!("https://localhost:{}/orders/7", s.addr().port());
    let token = s.gold_token();
    for (http2, want) in [(true, Version::HTTP_2), (false, Version::HTTP_11)] {
        let b = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config.clone())
            .https_only();
        let https = if http2 {
            b.enable_http2().build()
        } else {
            b.enable_http1().build()
        };
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
        let req = Request::get(&url)
            .header("authorization", format!("Bearer {token}"))
            .body(Empty::new())
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.version(), want);
        let _ = resp.into_body().collect().await;
        let seen = s.upstream.last().unwrap();
        assert_eq!(seen.headers["x-forwarded-proto"], "https");
        assert_eq!(seen.headers["x-user-id"], "user-1");
    }
    // Without a token, over TLS too: refused, nothing upstream beyond the two above.
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .build();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let resp = client
        .request(Request::get(&url).body(Empty::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(s.upstream.count(), 2);
}

/// An HTTPS JWKS endpoint whose certificate is signed by a private CA.
/// Returns its port and the CA's PEM.
async fn private_ca_jwks(jwks: serde_json::Value) -> (u16, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let key_der = rustls_pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key_der)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let body = Bytes::from(jwks.to_string());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, body) = (acceptor.clone(), body.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |_req| {
                    let body = body.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .header("content-type", "application/json")
                                .body(http_body_util::Full::new(body))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (port, ca_cert.pem())
}

#[tokio::test]
async fn jwks_behind_a_private_ca_needs_its_ca_file() {
    let key =
        claimgate::testkit::keys::SigningKey::generate(claimgate::jwks::Algorithm::ES256, "k1");
    let (port, ca_pem) = private_ca_jwks(claimgate::testkit::keys::jwks([&key])).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca_pem).unwrap();
    let policy = |ca: &str| {
        format!(
            "issuers:\n  test:\n    issuer: https://issuer.test\n    audience: [api]\n    jwks_uri: https://localhost:{port}/jwks.json\n{ca}\
             upstreams:\n  app: ${{UPSTREAM}}\nroutes:\n  - name: me\n    match: {{ path: /me }}\n    upstream: app\n"
        )
    };
    let token = key.sign(&common::claims(serde_json::json!({})));

    let trusted = common::Builder::new()
        .policy(&policy(&format!("    ca_file: {}\n", ca_path.display())))
        .start()
        .await;
    let resp = trusted.get_with_token("/me", &token).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);

    // Without the CA file the certificate is not trusted: no keys, 503.
    let untrusted = common::Builder::new()
        .policy(&policy(""))
        .no_wait()
        .start()
        .await;
    let failed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            let n = untrusted
                .running()
                .app
                .metrics
                .jwks_fetches
                .with_label_values(&["test", "failure"])
                .get();
            if n > 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(failed.is_ok(), "the untrusted certificate was accepted");
    // The error says why, for the operator (`/admin/keys`).
    let keys = untrusted.admin("GET", "/admin/keys").await.json();
    let why = keys["issuers"][0]["last_error"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(why.contains("TLS: invalid peer certificate"), "{why}");
    let resp = untrusted.get_with_token("/me", &token).await;
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(untrusted.upstream.count(), 0);
}

/// A company CA installed in the system trust store is trusted without a
/// `ca_file` (`SSL_CERT_FILE` names the store, as for OpenSSL). Run as the
/// `claimgate explain` process: the store is read once per process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_behind_a_ca_in_the_system_store_needs_no_ca_file() {
    let key =
        claimgate::testkit::keys::SigningKey::generate(claimgate::jwks::Algorithm::ES256, "k1");
    let (port, ca_pem) = private_ca_jwks(claimgate::testkit::keys::jwks([&key])).await;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("system-store.pem");
    std::fs::write(&store, ca_pem).unwrap();
    // A store without the CA: the control.
    let other = dir.path().join("other-store.pem");
    let unrelated = rcgen::generate_simple_self_signed(vec!["elsewhere".to_string()]).unwrap();
    std::fs::write(&other, unrelated.cert.pem()).unwrap();
    std::fs::create_dir(dir.path().join("p")).unwrap();
    std::fs::write(
        dir.path().join("p/policy.yaml"),
        format!(
            "issuers:\n  test:\n    issuer: https://issuer.test\n    audience: [api]\n    jwks_uri: https://localhost:{port}/jwks.json\n\
             upstreams:\n  app: http://127.0.0.1:1\nroutes:\n  - name: me\n    match: {{ path: /me }}\n    upstream: app\n"
        ),
    )
    .unwrap();
    let config = dir.path().join("claimgate.yaml");
    std::fs::write(&config, "policies: p\n").unwrap();
    let token = key.sign(&common::claims(serde_json::json!({})));
    let explain = |store: std::path::PathBuf| {
        let (config, token) = (config.clone(), token.clone());
        async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_claimgate"))
                .args(["explain", "--request", "GET /me", "--config"])
                .arg(&config)
                .args(["--token", &token])
                .env("SSL_CERT_FILE", store)
                .env_remove("SSL_CERT_DIR")
                .output()
                .await
                .unwrap();
            String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
        }
    };
    let out = explain(store).await;
    assert!(out.contains("token     verified"), "{out}");
    assert!(out.contains("allowed: forwarded"), "{out}");
    let out = explain(other).await;
    assert!(out.contains("invalid peer certificate"), "{out}");
    assert!(!out.contains("token     verified"), "{out}");
    assert!(!out.contains("allowed"), "{out}");
}

/// The leaf certificate the server presents on a new TLS connection.
async fn served_cert(port: u16) -> Vec<u8> {
    #[derive(Debug)]
    struct AnyCert;
    impl rustls::client::danger::ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &rustls_pki_types::CertificateDer<'_>,
            _: &[rustls_pki_types::CertificateDer<'_>],
            _: &rustls_pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls_pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls_pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls_pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::aws_lc_rs::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AnyCert))
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// A rotated pair on disk is served on the next connection without a
/// restart; a broken pair is refused and counted, the last good one serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let write = |c: &rcgen::CertifiedKey<rcgen::KeyPair>| {
        // As a Secret mount swaps: both files replaced by renames.
        let (tc, tk) = (dir.path().join(".c"), dir.path().join(".k"));
        std::fs::write(&tc, c.cert.pem()).unwrap();
        std::fs::write(&tk, c.signing_key.serialize_pem()).unwrap();
        std::fs::rename(&tk, &key_path).unwrap();
        std::fs::rename(&tc, &cert_path).unwrap();
    };
    let first = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    write(&first);
    let s = common::Builder::new()
        .tls(TlsFiles {
            cert: cert_path.clone(),
            key: key_path.clone(),
            reload_interval: std::time::Duration::from_millis(100),
        })
        .start()
        .await;
    let port = s.addr().port();
    assert_eq!(served_cert(port).await, first.cert.der().to_vec());

    let second = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    write(&second);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while served_cert(port).await != second.cert.der().to_vec() {
        assert!(
            std::time::Instant::now() < deadline,
            "the new certificate was not served"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // A broken certificate and a key of another pair: both refused.
    std::fs::write(&cert_path, "not a certificate").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(served_cert(port).await, second.cert.der().to_vec());
    std::fs::write(&cert_path, first.cert.pem()).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(
        served_cert(port).await,
        second.cert.der().to_vec(),
        "mismatched pair"
    );
    let metrics = s.admin("GET", "/metrics").await.body;
    assert!(
        metrics.contains(r#"claimgate_tls_reloads_total{result="success"} 1"#),
        "{metrics}"
    );
    // Two failures at least (a tick between the two renames may add one).
    let failures: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"claimgate_tls_reloads_total{result="failure"} "#))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(failures >= 2, "{metrics}");
}

/// The HTTP/2 frame types in `bytes` for `alpn` h2; for HTTP/1.1, any
/// byte at all counts as a response (type 0x1).
fn frame_types(alpn: &[u8], mut bytes: &[u8]) -> Vec<u8> {
    if alpn != b"h2" {
        return if bytes.is_empty() { vec![] } else { vec![0x1] };
    }
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        types.push(bytes[3]);
        bytes = &bytes[(9 + len).min(bytes.len())..];
    }
    types
}

/// Rule 18 over TLS: a client that completes the handshake and then sends
/// nothing, half a request head, or a part of the HTTP/2 preface, is closed
/// once `limits.header_read_timeout` has passed.
#[tokio::test]
async fn a_silent_tls_client_is_closed_at_the_header_read_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (s, config, _dir) =
        tls_stack(|l| l.header_read_timeout = std::time::Duration::from_millis(300)).await;
    // HTTP/1.1 (no ALPN): nothing, half a request head; h2 by ALPN:
    // nothing, half the preface.
    let cases: [(&[u8], &[u8]); 4] = [
        (b"", b""),
        (b"", b"GET / HTTP/1.1\r\nhost: x\r\n"),
        (b"h2", b""),
        (b"h2", b"PRI * HTTP/2.0\r\n"),
    ];
    for (alpn, sent) in cases {
        let mut config = config.clone();
        if !alpn.is_empty() {
            config.alpn_protocols = vec![alpn.to_vec()];
        }
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let case = format!("{} {sent:?}", String::from_utf8_lossy(alpn));
        let started = std::time::Instant::now();
        let tcp = tokio::net::TcpStream::connect(s.addr()).await.unwrap();
        let mut tls = connector
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .expect("the handshake completes");
        tls.write_all(sent).await.unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tls.read_to_end(&mut rest),
        )
        .await;
        let waited = started.elapsed();
        assert!(read.is_ok(), "{case}: still open after 5 s");
        assert!(
            waited >= std::time::Duration::from_millis(250),
            "{case}: closed after {waited:?}, before the timeout"
        );
        // An HTTP/2 server opens with its SETTINGS frame; what matters is
        // that no response (HEADERS or DATA) came.
        assert!(
            frame_types(alpn, &rest)
                .iter()
                .all(|t| ![0x0, 0x1].contains(t)),
            "{case}: answered {}",
            String::from_utf8_lossy(&rest)
        );
    }
    assert_eq!(s.upstream.count(), 0);
}
