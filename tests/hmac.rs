//! HS256/384/512 only from a configured secret (SECURITY.md rule 10): an
//! HMAC issuer takes HMAC tokens signed with its secret and nothing else;
//! no other issuer ever takes an HMAC token; the secret never shows.

mod common;

use std::time::Duration;

use common::Builder;
use http::StatusCode;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

const SECRET: &str = "an-hmac-secret-of-at-least-32-bytes-0123456789";

fn policy(secret_file: &std::path::Path) -> String {
    format!(
        r#"
issuers:
  test:
    issuer: https://issuer.test
    audience: [api]
    jwks_uri: ${{JWKS_URI}}
    allow_http: true
  internal:
    issuer: https://internal.test
    audience: [api]
    hmac_secret: {{ file: {} }}
    algorithms: [HS256, HS512]
    refresh_interval: 1s
upstreams:
  app: ${{UPSTREAM}}
forward:
  X-User-Id: "{{{{ $.sub }}}}"
routes:
  - name: me
    match: {{ path: /me }}
    upstream: app
"#,
        secret_file.display()
    )
}

fn hs(alg: Algorithm, secret: &[u8], iss: &str) -> String {
    let claims = common::claims(json!({"iss": iss, "sub": "svc"}));
    encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

#[tokio::test]
async fn hmac_tokens_only_with_the_configured_secret() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let s = Builder::new().policy(&policy(&secret_file)).start().await;

    let ok = s
        .get_with_token(
            "/me",
            &hs(Algorithm::HS256, SECRET.as_bytes(), "https://internal.test"),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(s.upstream.last().unwrap().headers["x-user-id"], "svc");

    let refused = |token: String, reason: &'static str| {
        let s = &s;
        async move {
            let before = s.upstream.count();
            let resp = s.get_with_token("/me", &token).await;
            assert_eq!(
                resp.status,
                StatusCode::UNAUTHORIZED,
                "{reason}: {}",
                resp.body
            );
            assert_eq!(resp.reason(), reason);
            assert_eq!(
                s.upstream.count(),
                before,
                "the upstream received something"
            );
        }
    };
    // The wrong secret.
    refused(
        hs(
            Algorithm::HS256,
            b"another-secret-of-at-least-32-bytes-xxxxx",
            "https://internal.test",
        ),
        "bad_signature",
    )
    .await;
    // An algorithm the issuer does not list (HS384; the secret is long enough).
    refused(
        hs(Algorithm::HS384, SECRET.as_bytes(), "https://internal.test"),
        "algorithm_not_allowed",
    )
    .await;
    // HS512 needs a 64-byte secret: this one is 46, so no key allows it.
    refused(
        hs(Algorithm::HS512, SECRET.as_bytes(), "https://internal.test"),
        "algorithm_not_allowed",
    )
    .await;
    // An asymmetric token naming the HMAC issuer.
    refused(
        s.token(json!({"iss": "https://internal.test"})),
        "algorithm_not_allowed",
    )
    .await;
    // The classic confusion: an HMAC token for the JWKS issuer, keyed with
    // its public key, or with the HMAC issuer's secret.
    let public = s.key.jwk().to_string();
    refused(
        hs(Algorithm::HS256, public.as_bytes(), "https://issuer.test"),
        "algorithm_not_allowed",
    )
    .await;
    refused(
        hs(Algorithm::HS256, SECRET.as_bytes(), "https://issuer.test"),
        "algorithm_not_allowed",
    )
    .await;

    // The secret shows nowhere.
    for path in ["/admin/config", "/metrics"] {
        let body = s.admin("GET", path).await.body;
        assert!(!body.contains(SECRET), "{path} shows the secret");
    }

    // A rotated secret file is read on the next refresh.
    let rotated = "a-rotated-hmac-secret-of-at-least-32-bytes-98765";
    std::fs::write(&secret_file, rotated).unwrap();
    let new_token = hs(
        Algorithm::HS256,
        rotated.as_bytes(),
        "https://internal.test",
    );
    tokio::time::timeout(Duration::from_secs(10), async {
        while s.get_with_token("/me", &new_token).await.status != StatusCode::OK {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the rotated secret was never read");
    refused(
        hs(Algorithm::HS256, SECRET.as_bytes(), "https://internal.test"),
        "bad_signature",
    )
    .await;
}

#[test]
fn hmac_configuration_mistakes_are_load_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("p")).unwrap();
    std::fs::write(dir.path().join("claimgate.yaml"), "policies: p\n").unwrap();
    std::fs::write(
        dir.path().join("p/policy.yaml"),
        "issuers:\n  a:\n    issuer: https://a\n    audience: x\n    hmac_secret: { env: A_SECRET }\n    algorithms: [RS256]\n\
         \x20 b:\n    issuer: https://b\n    audience: x\n    jwks_uri: https://b/jwks\n    hmac_secret: { env: B_SECRET }\n\
         \x20 c:\n    issuer: https://c\n    audience: x\n    jwks_uri: https://c/jwks\n    algorithms: [HS256]\n\
         upstreams: { u: \"http://127.0.0.1:1\" }\nroutes:\n  - name: r\n    match: { path: /r }\n    upstream: u\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_claimgate"))
        .args(["validate", "--config"])
        .arg(dir.path().join("claimgate.yaml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("`RS256` does not go with hmac_secret"),
        "{err}"
    );
    assert!(
        err.contains("never mixes HMAC and asymmetric keys"),
        "{err}"
    );
    assert!(err.contains("HS* need hmac_secret"), "{err}");
}
