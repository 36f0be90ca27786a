//! The proxy listener over real TLS (rustls), HTTP/2 chosen by ALPN.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use claimgate::config::TlsFiles;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[tokio::test]
async fn serves_h2_and_http1_over_tls() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let s = common::Builder::new()
        .tls(TlsFiles {
            cert: cert_path,
            key: key_path,
        })
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
