//! What an introspection answer must say before its members become claims.

use serde_json::{Map, Value};

use crate::claims::Claims;
use crate::token::error::TokenError;
use crate::token::issuer::Issuer;
use crate::token::verify::check_identity;

/// RFC 7662 §2.2 and the JWT rules that apply (SECURITY.md rules 5, 8, 22):
/// `active` must be `true`; `exp` and `nbf` hold; `iss`, if given, is the
/// issuer's; `aud` names one of the issuer's audiences; `sub`, if given, is
/// a non-blank bounded string; untrusted claims removed (or refused).
pub fn checked(
    mut answer: Map<String, Value>,
    issuer: &Issuer,
    now: u64,
) -> Result<Claims, TokenError> {
    match answer.remove("active") {
        Some(Value::Bool(true)) => {}
        _ => return Err(TokenError::Inactive),
    }
    let time = |name: &'static str| match answer.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_f64().map(Some).ok_or(TokenError::InvalidClaim(name)),
        Some(_) => Err(TokenError::InvalidClaim(name)),
    };
    let (now_f, leeway) = (now as f64, issuer.leeway as f64);
    if time("exp")?.is_some_and(|exp| now_f >= exp + leeway) {
        return Err(TokenError::Expired);
    }
    if time("nbf")?.is_some_and(|nbf| now_f + leeway < nbf) {
        return Err(TokenError::NotYetValid);
    }
    match answer.get("iss") {
        None => {}
        Some(Value::String(iss)) if *iss == issuer.iss => {}
        Some(_) => return Err(TokenError::UnknownIssuer),
    }
    let aud_ok = match answer.get("aud") {
        Some(Value::String(a)) => issuer.audiences.contains(a),
        Some(Value::Array(l)) => l.iter().any(|a| {
            a.as_str()
                .is_some_and(|a| issuer.audiences.iter().any(|x| x == a))
        }),
        _ => false,
    };
    if !aud_ok {
        return Err(TokenError::WrongAudience);
    }
    if answer.contains_key("sub") {
        check_identity(&answer, issuer)?;
    }
    issuer.strip_untrusted(&mut answer)?;
    Ok(Claims::from_object(answer))
}
