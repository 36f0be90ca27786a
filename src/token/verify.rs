//! Token verification: a compact JWS in, trusted claims out.
//!
//! The order matters. Cheap structural checks run before any decoding
//! (rule 2), the header before the payload, the issuer and its key before the
//! signature, and the claims are checked on the one value parsed here: policy
//! and header templates read that same value (rule 7).

use std::sync::Arc;

use crate::jwks::Algorithm;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

pub use crate::claims::Claims;

use super::error::TokenError;
use super::issuer::{Issuer, Issuers};
use super::json::parse_strict;

/// Header parameters that point key selection at attacker-controlled
/// material, or demand semantics we do not implement (RFC 8725 §3.10, rule 3).
const REFUSED_HEADERS: [&str; 5] = ["crit", "jku", "jwk", "x5u", "x5c"];

/// A token that passed every check.
#[derive(Clone)]
pub struct Verified {
    pub issuer: Arc<Issuer>,
    pub claims: Arc<Claims>,
    /// `exp`, for the verified-token cache.
    pub exp: f64,
    /// Which key verified the token (`VerifyKey::fingerprint`).
    pub key_fingerprint: u64,
}

/// A token that failed, with its issuer once known (for the metric label).
#[derive(Debug)]
pub struct Refused {
    pub issuer: Option<Arc<Issuer>>,
    pub error: TokenError,
    /// The token's `kid`, when the issuer has no such key.
    pub kid: Option<String>,
}

fn refuse(error: TokenError) -> Refused {
    Refused {
        issuer: None,
        error,
        kid: None,
    }
}

/// A token whose signature verified with a key of the issuer its `iss`
/// names: its header and payload, parsed once.
struct Signed {
    issuer: Arc<Issuer>,
    header: Map<String, Value>,
    payload: Map<String, Value>,
    key_fingerprint: u64,
}

/// The structural checks, the issuer by `iss`, the key, the signature: all
/// of verification but the claims.
fn signed(
    token: &str,
    issuers: &Issuers,
    accepted: Option<&[String]>,
    max_bytes: usize,
) -> Result<Signed, Refused> {
    // Rule 2: size and charset before any decoding.
    if token.len() > max_bytes {
        return Err(refuse(TokenError::TooLarge { max: max_bytes }));
    }
    let mut dots = 0;
    for b in token.bytes() {
        match b {
            b'.' => dots += 1,
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => {}
            _ => return Err(refuse(TokenError::Malformed("not base64url"))),
        }
    }
    if dots != 2 {
        return Err(refuse(TokenError::Malformed("not three parts")));
    }
    let mut parts = token.splitn(3, '.');
    let (h64, p64, s64) = match (parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(s)) if !h.is_empty() && !p.is_empty() && !s.is_empty() => (h, p, s),
        _ => return Err(refuse(TokenError::Malformed("empty part"))),
    };

    let header = decode_object(h64).map_err(|_| refuse(TokenError::Malformed("header")))?;
    for name in REFUSED_HEADERS {
        if header.contains_key(name) {
            return Err(refuse(TokenError::UnsupportedHeader(name)));
        }
    }
    let alg = match header.get("alg") {
        Some(Value::String(a)) => a,
        _ => return Err(refuse(TokenError::Malformed("no alg"))),
    };
    let alg: Algorithm = alg
        .parse()
        .ok()
        .filter(|a| {
            // HMAC only where the issuer (checked below) has a configured
            // secret: a JWKS issuer's algorithms are asymmetric only.
            crate::jwks::keys::ASYMMETRIC.contains(a) || crate::jwks::keys::HMAC.contains(a)
        })
        .ok_or_else(|| {
            refuse(TokenError::AlgorithmNotAllowed(
                alg.chars().take(16).collect(),
            ))
        })?;
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.as_str()),
        Some(_) => return Err(refuse(TokenError::Malformed("kid is not a string"))),
    };

    let payload = decode_object(p64).map_err(|_| refuse(TokenError::Malformed("payload")))?;
    // Rule 5: `iss` must be a string equal to the issuer the key belongs to.
    // The issuer is chosen by `iss` and only its keys are tried.
    let issuer = match payload.get("iss") {
        Some(Value::String(iss)) => issuers
            .by_iss(iss)
            .ok_or_else(|| refuse(TokenError::UnknownIssuer))?,
        Some(_) => return Err(refuse(TokenError::InvalidClaim("iss"))),
        None => return Err(refuse(TokenError::MissingClaim("iss"))),
    };
    let fail = |error| Refused {
        issuer: Some(issuer.clone()),
        error,
        kid: None,
    };
    if let Some(names) = accepted {
        if !names.iter().any(|n| *n == issuer.name) {
            return Err(fail(TokenError::IssuerNotAccepted(issuer.name.clone())));
        }
    }
    if !issuer.algorithms.contains(&alg) {
        return Err(fail(TokenError::AlgorithmNotAllowed(format!("{alg:?}"))));
    }
    let keys = issuer
        .keys
        .current()
        .ok_or_else(|| fail(TokenError::KeysUnavailable))?;
    let message = &token.as_bytes()[..h64.len() + 1 + p64.len()];
    let mut tried = false;
    let mut good = None;
    for key in keys.select(kid, alg) {
        tried = true;
        if key.verify(alg, message, s64) {
            good = Some(key.fingerprint);
            break;
        }
    }
    if !tried {
        // A key the token names (or, without a usable kid, every key) that
        // does not allow `alg` is an algorithm fault, not a rotation: no
        // refresh would change it.
        if keys.refuses(kid, alg) {
            return Err(fail(TokenError::AlgorithmNotAllowed(format!("{alg:?}"))));
        }
        return Err(Refused {
            kid: kid.map(str::to_string),
            ..fail(TokenError::UnknownKey)
        });
    }
    let key_fingerprint = good.ok_or_else(|| fail(TokenError::BadSignature))?;
    Ok(Signed {
        issuer: issuer.clone(),
        header,
        payload,
        key_fingerprint,
    })
}

/// Verifies `token` against `issuers` at Unix time `now`.
///
/// `accepted` restricts which issuers (by name) the route takes. Every
/// failure is a `Refused`; nothing here panics on client input.
pub fn verify(
    token: &str,
    issuers: &Issuers,
    accepted: Option<&[String]>,
    max_bytes: usize,
    now: u64,
) -> Result<Verified, Refused> {
    let Signed {
        issuer,
        header,
        mut payload,
        key_fingerprint,
    } = signed(token, issuers, accepted, max_bytes)?;
    let issuer = &issuer;
    let fail = |error| Refused {
        issuer: Some(issuer.clone()),
        error,
        kid: None,
    };

    // The profile's token kind: RFC 9068 `typ`, Descope `drn`.
    if let Some(want) = issuer.profile.required_typ() {
        let typ = header.get("typ").and_then(Value::as_str).unwrap_or("");
        let typ = typ.to_ascii_lowercase();
        if typ.strip_prefix("application/").unwrap_or(&typ) != want {
            return Err(fail(TokenError::WrongType("typ")));
        }
    }
    for (name, want) in issuer.profile.required_claims() {
        if payload.get(*name).and_then(Value::as_str) != Some(*want) {
            return Err(fail(TokenError::WrongType(name)));
        }
    }
    let exp = check_claims(&payload, issuer, now).map_err(fail)?;
    // Rule 8: claims a client could have set.
    issuer.strip_untrusted(&mut payload).map_err(fail)?;
    Ok(Verified {
        issuer: issuer.clone(),
        claims: Arc::new(Claims::from_object(payload)),
        exp,
        key_fingerprint,
    })
}

/// The claims of a token this issuer verified before (a verified-token
/// cache hit, keyed by the token's SHA-256): its payload parsed again and
/// its untrusted claims removed, as [`verify`] did. `None` if the token is
/// not a JWS with such a payload, which a hit's token always is.
pub(crate) fn claims_again(token: &str, issuer: &Issuer) -> Option<Claims> {
    let p64 = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(p64).ok()?;
    // These bytes passed the strict parse (no duplicate member) when the
    // token was verified: serde_json's own parser reads the same value
    // from them, faster.
    let mut payload: Map<String, Value> = serde_json::from_slice(&bytes).ok()?;
    issuer.strip_untrusted(&mut payload).ok()?;
    Some(Claims::from_object(payload))
}

fn decode_object(part: &str) -> Result<Map<String, Value>, ()> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| ())?;
    match parse_strict(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(()),
    }
}

/// Rule 5: `exp`, `aud` and `sub` required (`sub` a non-blank string of at
/// most `max_sub_bytes`), `nbf` and `iat` checked, all with the issuer's
/// leeway. Returns `exp`.
fn check_claims(claims: &Map<String, Value>, issuer: &Issuer, now: u64) -> Result<f64, TokenError> {
    let now = now as f64;
    let leeway = issuer.leeway as f64;
    let time = |name: &'static str| match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_f64().map(Some).ok_or(TokenError::InvalidClaim(name)),
        Some(_) => Err(TokenError::InvalidClaim(name)),
    };
    let exp = time("exp")?.ok_or(TokenError::MissingClaim("exp"))?;
    if now >= exp + leeway {
        return Err(TokenError::Expired);
    }
    if let Some(nbf) = time("nbf")? {
        if now + leeway < nbf {
            return Err(TokenError::NotYetValid);
        }
    }
    let iat = time("iat")?;
    if let Some(iat) = iat {
        if iat > now + leeway {
            return Err(TokenError::IssuedInFuture);
        }
    }
    if let Some(max) = issuer.max_lifetime {
        let iat = iat.ok_or(TokenError::MissingClaim("iat"))?;
        if exp - iat > max as f64 {
            return Err(TokenError::LifetimeTooLong);
        }
    }
    let audience_ok = match claims.get("aud") {
        None => return Err(TokenError::MissingClaim("aud")),
        Some(Value::String(a)) => issuer.audiences.iter().any(|x| x == a),
        Some(Value::Array(list)) => {
            let mut any = false;
            for a in list {
                let a = a.as_str().ok_or(TokenError::InvalidClaim("aud"))?;
                any |= issuer.audiences.iter().any(|x| x == a);
            }
            any
        }
        Some(_) => return Err(TokenError::InvalidClaim("aud")),
    };
    if !audience_ok {
        return Err(TokenError::WrongAudience);
    }
    check_identity(claims, issuer).map(|()| exp)
}

/// Rule 5: a signed token (or an introspection answer naming a `sub`) with
/// an empty or unbounded identity never reaches an upstream that keys on it:
/// `sub` is a string with a non-blank character and at most the issuer's
/// `max_sub_length` bytes.
pub(crate) fn check_identity(
    claims: &Map<String, Value>,
    issuer: &Issuer,
) -> Result<(), TokenError> {
    match claims.get("sub") {
        Some(Value::String(sub))
            if sub.len() <= issuer.max_sub_bytes && sub.chars().any(|c| !c.is_whitespace()) =>
        {
            Ok(())
        }
        Some(_) => Err(TokenError::InvalidClaim("sub")),
        None => Err(TokenError::MissingClaim("sub")),
    }
}

/// A JWT signed by one of `issuer`'s keys and naming it in `iss` (an RFC
/// 9701 introspection answer): its payload, with no claim checks.
pub(crate) fn verify_signed(
    token: &str,
    issuer: &Arc<Issuer>,
) -> Result<Map<String, Value>, TokenError> {
    let only = Issuers::single(issuer.clone());
    signed(token, &only, None, 64 * 1024)
        .map(|s| s.payload)
        .map_err(|r| r.error)
}
