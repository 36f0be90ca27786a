//! Signing keys for the demo, the tests and the benchmarks: generated fresh
//! with aws-lc-rs, published as a JWKS, used to mint tokens. Not used on the
//! request path.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    EcdsaKeyPair, EcdsaSigningAlgorithm, Ed25519KeyPair, KeyPair, RsaEncoding,
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING,
    ECDSA_P521_SHA512_FIXED_SIGNING, RSA_PKCS1_SHA256, RSA_PKCS1_SHA384, RSA_PKCS1_SHA512,
    RSA_PSS_SHA256, RSA_PSS_SHA384, RSA_PSS_SHA512,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use crate::jwks::Algorithm;

/// A private key with its public JWK.
pub struct SigningKey {
    pub kid: String,
    pub alg: Algorithm,
    pair: Pair,
    jwk: Value,
}

enum Pair {
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
    Rsa(RsaKeyPair, &'static dyn RsaEncoding),
}

impl SigningKey {
    /// A fresh key for an asymmetric `alg` (RS*, PS*, ES*, EdDSA, Ed25519).
    ///
    /// # Panics
    /// On an HMAC algorithm: a test kit, never on the request path.
    pub fn generate(alg: Algorithm, kid: &str) -> Self {
        let rng = SystemRandom::new();
        let ec = |signing: &'static EcdsaSigningAlgorithm, crv: &str| {
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
            (Pair::Ec(pair), jwk)
        };
        let rsa = |encoding: &'static dyn RsaEncoding| {
            let pair = RsaKeyPair::generate(KeySize::Rsa2048).expect("RSA key generation");
            let public = pair.public_key();
            let jwk = json!({
                "kty": "RSA", "use": "sig",
                "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
                "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
            });
            (Pair::Rsa(pair, encoding), jwk)
        };
        let (pair, jwk) = match alg {
            Algorithm::ES256 => ec(&ECDSA_P256_SHA256_FIXED_SIGNING, "P-256"),
            Algorithm::ES384 => ec(&ECDSA_P384_SHA384_FIXED_SIGNING, "P-384"),
            Algorithm::ES512 => ec(&ECDSA_P521_SHA512_FIXED_SIGNING, "P-521"),
            Algorithm::EdDSA | Algorithm::Ed25519 => {
                let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("Ed25519 key generation");
                let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("own Ed25519 key");
                let jwk = json!({
                    "kty": "OKP", "crv": "Ed25519", "use": "sig",
                    "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
                });
                (Pair::Ed(pair), jwk)
            }
            Algorithm::RS256 => rsa(&RSA_PKCS1_SHA256),
            Algorithm::RS384 => rsa(&RSA_PKCS1_SHA384),
            Algorithm::RS512 => rsa(&RSA_PKCS1_SHA512),
            Algorithm::PS256 => rsa(&RSA_PSS_SHA256),
            Algorithm::PS384 => rsa(&RSA_PSS_SHA384),
            Algorithm::PS512 => rsa(&RSA_PSS_SHA512),
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                panic!("SigningKey is for asymmetric algorithms, not {alg}")
            }
        };
        let mut jwk = jwk;
        jwk["kid"] = json!(kid);
        jwk["alg"] = json!(alg.name());
        Self {
            kid: kid.to_string(),
            alg,
            pair,
            jwk,
        }
    }

    /// The public JWK.
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// A token with the header `{"alg", "kid", "typ": "JWT"}` over `claims`.
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": self.alg.name(), "typ": "JWT", "kid": self.kid});
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
        let rng = SystemRandom::new();
        let sig = match &self.pair {
            Pair::Ec(pair) => pair
                .sign(&rng, message.as_bytes())
                .expect("signing")
                .as_ref()
                .to_vec(),
            Pair::Ed(pair) => pair.sign(message.as_bytes()).as_ref().to_vec(),
            Pair::Rsa(pair, encoding) => {
                let mut sig = vec![0; pair.public_modulus_len()];
                pair.sign(*encoding, &rng, message.as_bytes(), &mut sig)
                    .expect("signing");
                sig
            }
        };
        format!("{message}.{}", URL_SAFE_NO_PAD.encode(sig))
    }
}

/// A JWKS document holding the public keys of `keys`.
pub fn jwks<'a>(keys: impl IntoIterator<Item = &'a SigningKey>) -> Value {
    json!({ "keys": keys.into_iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
}
