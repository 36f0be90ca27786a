//! Tokens minted by an independent JOSE implementation — PyJWT with the
//! `cryptography` backend, not the Rust `jsonwebtoken` crate — verify for
//! every supported algorithm, their keys served as a JWKS over HTTP.
//! `scripts/install-deps.sh` installs PyJWT from PyPI.

mod common;

use common::Builder;
use http::StatusCode;
use serde_json::{json, Value};

fn pyjwt(claims: &Value) -> Value {
    common::python_json("pyjwt_tokens.py", &[claims.to_string()])
}

#[tokio::test]
async fn pyjwt_tokens_verify_for_every_algorithm() {
    let claims = common::claims(json!({"sub": "from-pyjwt", "scope": "order"}));
    let minted = pyjwt(&claims);
    let jwks = minted["jwks"].clone();
    let s = Builder::new().start_with(|idp| idp.set(&jwks)).await;
    let tokens = minted["tokens"].as_array().unwrap();
    let algs: Vec<&str> = tokens.iter().map(|t| t["alg"].as_str().unwrap()).collect();
    assert_eq!(
        algs,
        [
            "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
            "EdDSA", "Ed25519"
        ]
    );
    for t in tokens {
        let (alg, token) = (t["alg"].as_str().unwrap(), t["token"].as_str().unwrap());
        let resp = s.get_with_token("/me", token).await;
        assert_eq!(resp.status, StatusCode::OK, "{alg}: {}", resp.body);
        assert_eq!(
            s.upstream.last().unwrap().headers["x-user-id"],
            "from-pyjwt"
        );

        // The same token with one signature byte changed fails.
        let (head, sig) = token.rsplit_once('.').unwrap();
        let mut sig: Vec<u8> = sig.bytes().collect();
        sig[4] = if sig[4] == b'A' { b'B' } else { b'A' };
        let forged = format!("{head}.{}", String::from_utf8(sig).unwrap());
        let before = s.upstream.count();
        let resp = s.get_with_token("/me", &forged).await;
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{alg} forged");
        assert_eq!(resp.reason(), "bad_signature", "{alg} forged");
        assert_eq!(s.upstream.count(), before);
    }
}
