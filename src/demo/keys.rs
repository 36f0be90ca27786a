//! Signing keys for the demo, the tests and the benchmarks: generated fresh
//! with aws-lc-rs, published as a JWKS, used to mint tokens. Not used on the
//! request path.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
    ECDSA_P384_SHA384_FIXED_SIGNING,
};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};

/// A private key with its public JWK.
pub struct SigningKey {
    pub kid: String,
    pub alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

impl SigningKey {
    /// A fresh key for `alg` (RS*, PS*, ES256, ES384 or EdDSA).
    pub fn generate(alg: Algorithm, kid: &str) -> Self {
        let rng = SystemRandom::new();
        let (encoding, jwk) = match alg {
            Algorithm::ES256 | Algorithm::ES384 => {
                let (signing, crv) = if alg == Algorithm::ES256 {
                    (&ECDSA_P256_SHA256_FIXED_SIGNING, "P-256")
                } else {
                    (&ECDSA_P384_SHA384_FIXED_SIGNING, "P-384")
                };
                let pkcs8 = EcdsaKeyPair::generate_pkcs8(signing, &rng).expect("EC key generation");
                let pair = EcdsaKeyPair::from_pkcs8(signing, pkcs8.as_ref()).expect("own EC key");
                // Uncompressed point: 0x04 || x || y.
                let point = pair.public_key().as_ref();
                let n = (point.len() - 1) / 2;
                let jwk = json!({
                    "kty": "EC", "crv": crv, "use": "sig",
                    "x": URL_SAFE_NO_PAD.encode(&point[1..1 + n]),
                    "y": URL_SAFE_NO_PAD.encode(&point[1 + n..]),
                });
                (EncodingKey::from_ec_der(pkcs8.as_ref()), jwk)
            }
            Algorithm::EdDSA => {
                let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("Ed25519 key generation");
                let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("own Ed25519 key");
                let jwk = json!({
                    "kty": "OKP", "crv": "Ed25519", "use": "sig",
                    "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
                });
                (EncodingKey::from_ed_der(pkcs8.as_ref()), jwk)
            }
            _ => {
                let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                    .expect("RSA key generation");
                let pkcs8: aws_lc_rs::encoding::Pkcs8V1Der = pair.as_der().expect("RSA PKCS#8");
                let pem = format!(
                    "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                    STANDARD.encode(pkcs8.as_ref())
                );
                let public = pair.public_key();
                let jwk = json!({
                    "kty": "RSA", "use": "sig",
                    "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
                    "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
                });
                (
                    EncodingKey::from_rsa_pem(pem.as_bytes()).expect("own RSA key"),
                    jwk,
                )
            }
        };
        let mut jwk = jwk;
        jwk["kid"] = json!(kid);
        jwk["alg"] = json!(format!("{alg:?}"));
        Self {
            kid: kid.to_string(),
            alg,
            encoding,
            jwk,
        }
    }

    /// The public JWK.
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// A token with the header `{"alg", "kid", "typ": "JWT"}` over `claims`.
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": format!("{:?}", self.alg), "typ": "JWT", "kid": self.kid});
        self.sign_raw(&header.to_string(), &claims.to_string())
    }

    /// A token over exactly these header and payload texts, signed with this
    /// key's algorithm: for tests of hostile headers and duplicate members.
    pub fn sign_raw(&self, header: &str, payload: &str) -> String {
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &self.encoding, self.alg)
            .expect("signing");
        format!("{message}.{sig}")
    }
}

/// A JWKS document holding the public keys of `keys`.
pub fn jwks<'a>(keys: impl IntoIterator<Item = &'a SigningKey>) -> Value {
    json!({ "keys": keys.into_iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
}
