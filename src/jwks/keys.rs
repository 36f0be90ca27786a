//! Turning a JWKS document into verification keys (SECURITY.md rule 10).
//!
//! A key that breaks a rule is skipped with a reason, not fatal to the set:
//! one odd key at the IdP must not take every other key down with it.

use std::collections::HashMap;
use std::sync::Arc;

use aws_lc_rs::signature::ParsedPublicKey;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;
use thiserror::Error;

use super::Algorithm;

/// Most keys accepted in one JWKS.
pub const MAX_KEYS: usize = 100;
/// Smallest RSA modulus accepted (RFC 7518 §3.3 requires 2048 bits).
pub const MIN_RSA_BITS: usize = 2048;

/// The HMAC algorithms: only ever with a configured secret, never from a
/// JWKS, and never on an issuer that also has public keys (rule 10).
pub const HMAC: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

/// Every asymmetric algorithm claimgate verifies.
pub const ASYMMETRIC: [Algorithm; 11] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::ES512,
    Algorithm::EdDSA,
    Algorithm::Ed25519,
];

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum JwksError {
    #[error("JWKS is not a JSON object with a `keys` array")]
    NotAJwks,
    #[error("JWKS has {0} keys, more than {MAX_KEYS}")]
    TooManyKeys(usize),
    #[error("JWKS has no usable key ({0} skipped)")]
    NoUsableKey(usize),
    #[error("fetch failed: {0}")]
    Fetch(String),
}

/// One key that may verify tokens, with the algorithms it may verify.
pub struct VerifyKey {
    pub kid: Option<String>,
    /// The JWK `kty` (`oct` for a configured secret).
    pub kty: &'static str,
    /// The algorithms this key may verify: its type's, narrowed by its own
    /// `alg` and by the issuer's allow-list (rule 3).
    pub algorithms: Vec<Algorithm>,
    /// How signatures are checked: public keys parsed once per algorithm
    /// (parsing on every call costs an RSA or EC verification a good part
    /// of its time), or a shared secret.
    check: Check,
    /// The key material, to tell a rotated key from the same key.
    pub material: String,
    /// A hash of `material`: how a cached token names the key that
    /// verified it.
    pub fingerprint: u64,
}

enum Check {
    Public(Vec<(Algorithm, ParsedPublicKey)>),
    Secret(Vec<u8>),
}

/// The keys of one issuer at one moment. Immutable; a refresh builds a new one.
#[derive(Default)]
pub struct KeySet {
    keys: Vec<Arc<VerifyKey>>,
    by_kid: crate::FastMap<String, Arc<VerifyKey>>,
    fingerprints: crate::FastSet<u64>,
    /// A shared-secret set: its one key verifies whatever `kid` a token
    /// names (HMAC tokens often name none, or an opaque one).
    any_kid: bool,
    /// Why keys were skipped, for logs.
    pub skipped: Vec<String>,
}

impl KeySet {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys a token's `kid` points at: the one it names (none if it
    /// names none), or every key when there is no `kid` or the set is a
    /// shared secret. `kid` is only ever a map key (rule 4).
    fn candidates(&self, kid: Option<&str>) -> &[Arc<VerifyKey>] {
        match kid.filter(|_| !self.any_kid) {
            Some(k) => self.by_kid.get(k).map_or(&[], std::slice::from_ref),
            None => &self.keys,
        }
    }

    /// The keys a token's header selects that allow its `alg`.
    pub fn select<'a>(
        &'a self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> impl Iterator<Item = &'a Arc<VerifyKey>> + 'a {
        self.candidates(kid)
            .iter()
            .filter(move |k| k.algorithms.contains(&alg))
    }

    /// Whether the keys a token selects exist but none allows `alg`: an
    /// algorithm fault, which no key refresh would change.
    pub fn refuses(&self, kid: Option<&str>, alg: Algorithm) -> bool {
        let keys = self.candidates(kid);
        !keys.is_empty() && keys.iter().all(|k| !k.algorithms.contains(&alg))
    }

    pub fn keys(&self) -> &[Arc<VerifyKey>] {
        &self.keys
    }

    /// Whether a token naming `kid` (`""` for none) has a key to try here.
    pub fn knows_kid(&self, kid: &str) -> bool {
        if self.any_kid || kid.is_empty() {
            return !self.keys.is_empty();
        }
        self.by_kid.contains_key(kid)
    }

    /// Whether the key with this fingerprint is still in the set.
    pub fn contains(&self, fingerprint: u64) -> bool {
        self.fingerprints.contains(&fingerprint)
    }
}

/// Parses a JWKS, keeping keys that follow rule 10 and allow one of
/// `allowed`.
pub fn parse(bytes: &[u8], allowed: &[Algorithm]) -> Result<KeySet, JwksError> {
    let doc: Value = serde_json::from_slice(bytes).map_err(|_| JwksError::NotAJwks)?;
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or(JwksError::NotAJwks)?;
    if keys.len() > MAX_KEYS {
        return Err(JwksError::TooManyKeys(keys.len()));
    }
    let mut set = KeySet::default();
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut conflicted: Vec<String> = Vec::new();
    for (i, jwk) in keys.iter().enumerate() {
        match key(jwk, allowed) {
            Ok(k) => {
                if let Some(kid) = &k.kid {
                    match seen.get(kid) {
                        Some(m) if *m != k.material => conflicted.push(kid.clone()),
                        Some(_) => continue,
                        None => {
                            seen.insert(kid.clone(), k.material.clone());
                        }
                    }
                }
                set.keys.push(Arc::new(k));
            }
            Err(why) => set.skipped.push(format!("key {i}: {why}")),
        }
    }
    // A kid naming two different keys cannot be trusted either way: drop both.
    if !conflicted.is_empty() {
        set.keys
            .retain(|k| !k.kid.as_ref().is_some_and(|kid| conflicted.contains(kid)));
        for kid in conflicted {
            set.skipped
                .push(format!("kid {kid:?}: names two different keys"));
        }
    }
    for k in &set.keys {
        set.fingerprints.insert(k.fingerprint);
        if let Some(kid) = &k.kid {
            set.by_kid.insert(kid.clone(), k.clone());
        }
    }
    if set.keys.is_empty() {
        return Err(JwksError::NoUsableKey(set.skipped.len()));
    }
    Ok(set)
}

/// The key set of a shared secret: one key for the HMAC algorithms of
/// `allowed` its length permits (RFC 7518 §3.2: at least the hash size).
pub fn secret(secret: &[u8], allowed: &[Algorithm]) -> Result<KeySet, JwksError> {
    let algorithms: Vec<Algorithm> = HMAC
        .into_iter()
        .filter(|alg| {
            allowed.contains(alg) && alg.hmac().is_some_and(|(_, min)| secret.len() >= min)
        })
        .collect();
    if algorithms.is_empty() {
        return Err(JwksError::Fetch(format!(
            "the secret has {} bytes: HS256 needs 32, HS384 48, HS512 64",
            secret.len()
        )));
    }
    // The key's identity without its value: a digest of the secret.
    let material = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    let fingerprint = fingerprint(&material);
    let key = VerifyKey {
        kid: None,
        kty: "oct",
        algorithms,
        check: Check::Secret(secret.to_vec()),
        material,
        fingerprint,
    };
    let mut set = KeySet {
        any_kid: true,
        ..KeySet::default()
    };
    set.fingerprints.insert(fingerprint);
    set.keys.push(Arc::new(key));
    Ok(set)
}

impl VerifyKey {
    /// The pre-parsed public key for `alg` (benchmarks compare with it).
    pub fn parsed(&self, alg: Algorithm) -> Option<&ParsedPublicKey> {
        match &self.check {
            Check::Public(keys) => keys.iter().find(|(a, _)| *a == alg).map(|(_, k)| k),
            Check::Secret(_) => None,
        }
    }

    /// Whether `signature` (base64url, as in the token) signs `message`
    /// under `alg`. False for an algorithm this key does not allow.
    pub fn verify(&self, alg: Algorithm, message: &[u8], signature: &str) -> bool {
        let Ok(sig) = URL_SAFE_NO_PAD.decode(signature) else {
            return false;
        };
        match &self.check {
            Check::Public(_) => self
                .parsed(alg)
                .is_some_and(|key| key.verify_sig(message, &sig).is_ok()),
            // Constant-time comparison inside `hmac::verify`.
            Check::Secret(secret) => match alg.hmac() {
                Some((h, _)) if self.algorithms.contains(&alg) => {
                    aws_lc_rs::hmac::verify(&aws_lc_rs::hmac::Key::new(h, secret), message, &sig)
                        .is_ok()
                }
                _ => false,
            },
        }
    }
}

/// DER `RSAPublicKey` (RFC 8017 §A.1.1) of a modulus and exponent.
fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    fn len(n: usize, out: &mut Vec<u8>) {
        match n {
            0..=127 => out.push(n as u8),
            128..=255 => out.extend([0x81, n as u8]),
            _ => out.extend([0x82, (n >> 8) as u8, n as u8]),
        }
    }
    fn integer(bytes: &[u8], out: &mut Vec<u8>) {
        let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
        let bytes = &bytes[start..];
        let pad = bytes.first().is_none_or(|b| b & 0x80 != 0);
        out.push(0x02);
        len(bytes.len() + usize::from(pad), out);
        if pad {
            out.push(0);
        }
        out.extend_from_slice(bytes);
    }
    let mut body = Vec::with_capacity(n.len() + e.len() + 16);
    integer(n, &mut body);
    integer(e, &mut body);
    let mut out = vec![0x30];
    len(body.len(), &mut out);
    out.extend(body);
    out
}

fn fingerprint(material: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    material.hash(&mut h);
    h.finish()
}

fn key(jwk: &Value, allowed: &[Algorithm]) -> Result<VerifyKey, String> {
    let s = |name: &str| jwk.get(name).and_then(Value::as_str);
    match jwk.get("use") {
        None => {}
        Some(v) if v == "sig" => {}
        Some(_) => return Err("`use` is not `sig`".into()),
    }
    let kty = s("kty").ok_or("no `kty`")?;
    let b64 = |v: &str, what: &str| {
        URL_SAFE_NO_PAD
            .decode(v)
            .map_err(|_| format!("`{what}` is not base64url"))
    };
    // The key's algorithms, its identity, and its public bytes as aws-lc-rs
    // parses them.
    let (kty, family, material, public): (&'static str, Vec<Algorithm>, String, Vec<u8>) = match kty
    {
        "RSA" => {
            let (n, e) = (s("n").ok_or("no `n`")?, s("e").ok_or("no `e`")?);
            let bits = rsa_bits(n).ok_or("`n` is not base64url")?;
            if bits < MIN_RSA_BITS {
                return Err(format!("RSA key of {bits} bits, under {MIN_RSA_BITS}"));
            }
            let der = rsa_public_key_der(&b64(n, "n")?, &b64(e, "e")?);
            ("RSA", ASYMMETRIC[..6].to_vec(), format!("RSA:{n}:{e}"), der)
        }
        "EC" => {
            let (x, y) = (s("x").ok_or("no `x`")?, s("y").ok_or("no `y`")?);
            let (alg, width) = match s("crv") {
                Some("P-256") => (Algorithm::ES256, 32),
                Some("P-384") => (Algorithm::ES384, 48),
                Some("P-521") => (Algorithm::ES512, 66),
                other => return Err(format!("unsupported EC curve {other:?}")),
            };
            let (xb, yb) = (b64(x, "x")?, b64(y, "y")?);
            if xb.len() != width || yb.len() != width {
                return Err(format!("EC coordinates are not {width} bytes"));
            }
            // SEC 1 uncompressed point.
            let point = [&[0x04][..], &xb, &yb].concat();
            ("EC", vec![alg], format!("EC:{x}:{y}"), point)
        }
        "OKP" => {
            if s("crv") != Some("Ed25519") {
                return Err("unsupported OKP curve".into());
            }
            let x = s("x").ok_or("no `x`")?;
            // RFC 9864 §2.2: `Ed25519` names this key's algorithm fully;
            // `EdDSA` is the older polymorphic name for the same signature.
            (
                "OKP",
                vec![Algorithm::EdDSA, Algorithm::Ed25519],
                format!("OKP:{x}"),
                b64(x, "x")?,
            )
        }
        // Never a shared secret from a JWKS: that is the RS→HS confusion door.
        "oct" => return Err("symmetric (`oct`) keys are never taken from a JWKS".into()),
        other => return Err(format!("unsupported kty {other:?}")),
    };
    let mut algorithms = family;
    if let Some(alg) = jwk.get("alg") {
        let named: Algorithm = alg
            .as_str()
            .and_then(|a| a.parse().ok())
            .ok_or("`alg` is not a known algorithm")?;
        if !algorithms.contains(&named) {
            return Err(format!("`alg` {named:?} does not fit kty {kty}"));
        }
        algorithms = vec![named];
    }
    algorithms.retain(|a| allowed.contains(a));
    if algorithms.is_empty() {
        return Err("none of its algorithms is allowed for this issuer".into());
    }
    let kid = match jwk.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err("`kid` is not a string".into()),
    };
    let mut parsed = Vec::with_capacity(algorithms.len());
    for alg in &algorithms {
        let v = alg.verification().ok_or("not an asymmetric algorithm")?;
        let p = ParsedPublicKey::new(v, &public)
            .map_err(|e| format!("not a valid {kty} public key: {e}"))?;
        parsed.push((*alg, p));
    }
    let fingerprint = fingerprint(&material);
    Ok(VerifyKey {
        kid,
        kty,
        algorithms,
        check: Check::Public(parsed),
        material,
        fingerprint,
    })
}

fn rsa_bits(n: &str) -> Option<usize> {
    let bytes = URL_SAFE_NO_PAD.decode(n).ok()?;
    let first = bytes.iter().position(|b| *b != 0)?;
    let lead = bytes[first].leading_zeros() as usize;
    Some((bytes.len() - first) * 8 - lead)
}

#[cfg(test)]
mod tests;
