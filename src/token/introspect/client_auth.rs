//! How claimgate authenticates at the endpoint: form encoding for the
//! client-secret methods, and `private_key_jwt` assertions.

use base64::Engine;
use serde_json::Value;

/// A client assertion (RFC 7523 §3): `iss` and `sub` the client, `aud` the
/// endpoint, a fresh `jti`, one minute of life; signed ES256 (P-256), RS256
/// or EdDSA by the PKCS#8 key in `pem`.
pub fn client_assertion(
    pem: &[u8],
    client_id: &str,
    kid: Option<&str>,
    audience: &str,
) -> Result<String, String> {
    use aws_lc_rs::signature::{self, KeyPair};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem)
        .map_err(|e| format!("private key: not a PKCS#8 PEM key: {e}"))?;
    let der = der.secret_pkcs8_der();
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let mut jti = [0u8; 16];
    aws_lc_rs::rand::fill(&mut jti).map_err(|_| "no randomness")?;
    let now = crate::jwks::unix_now();
    let claims = serde_json::json!({
        "iss": client_id, "sub": client_id, "aud": audience,
        "jti": URL_SAFE_NO_PAD.encode(jti), "iat": now, "exp": now + 60,
    });
    type Signer<'a> = &'a dyn Fn(&[u8]) -> Result<Vec<u8>, String>;
    let sign = |alg: &str, f: Signer| {
        let mut header = serde_json::json!({"alg": alg, "typ": "JWT"});
        if let Some(kid) = kid {
            header["kid"] = Value::from(kid);
        }
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = f(message.as_bytes())?;
        Ok(format!("{message}.{}", URL_SAFE_NO_PAD.encode(sig)))
    };
    if let Ok(pair) =
        signature::EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der)
    {
        return sign("ES256", &|m| {
            pair.sign(&rng, m)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| "signing failed".to_string())
        });
    }
    if let Ok(pair) = signature::RsaKeyPair::from_pkcs8(der) {
        return sign("RS256", &|m| {
            let mut sig = vec![0; pair.public_modulus_len()];
            pair.sign(&signature::RSA_PKCS1_SHA256, &rng, m, &mut sig)
                .map(|()| sig)
                .map_err(|_| "signing failed".to_string())
        });
    }
    if let Ok(pair) = signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
        let _ = pair.public_key();
        return sign("EdDSA", &|m| Ok(pair.sign(m).as_ref().to_vec()));
    }
    Err("private key: neither P-256, RSA nor Ed25519".into())
}

/// `application/x-www-form-urlencoded` of one value.
pub(super) fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
