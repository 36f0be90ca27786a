//! The Hasura profile of a route: Hasura's session variables from the
//! verified claims, with Hasura's own role selection, sent as `X-Hasura-*`
//! headers (and, for `webhook: hasura` routes, as the auth-webhook answer).
//!
//! Session variables come from the namespace claim
//! (`https://hasura.io/jwt/claims` by default) or from a claims map of
//! JSONPaths, as in Hasura's `claims_map`. The role is the one the client
//! asked for in its `X-Hasura-Role` header when it is among
//! `x-hasura-allowed-roles`, else `x-hasura-default-role`; a role asked for
//! and not allowed is a 403, as in Hasura's JWT mode.

use std::borrow::Cow;

use http::{HeaderName, HeaderValue};
use serde_json::Value;
use thiserror::Error;

use crate::claims::{ClaimPath, Found};

const ROLE: &str = "x-hasura-role";
const ALLOWED: &str = "x-hasura-allowed-roles";
const DEFAULT: &str = "x-hasura-default-role";
/// The header of Hasura's admin secret.
pub const ADMIN_SECRET: &str = "x-hasura-admin-secret";

/// Where a route's session variables come from.
#[derive(Debug, Clone)]
pub enum SessionSource {
    /// Every `x-hasura-*` member of the object at this path.
    Namespace(ClaimPath),
    /// Each variable (lowercase `x-hasura-...`) from its own path.
    Map(Vec<(String, ClaimPath)>),
}

/// A secret header value: never printed, never in `explain`.
#[derive(Clone)]
pub struct Secret(pub HeaderValue);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("(secret)")
    }
}

#[derive(Debug, Clone)]
pub struct Hasura {
    pub source: SessionSource,
    /// How the namespace claim holds the variables, as Hasura's
    /// `claims_format` says.
    pub format: ClaimsFormat,
    pub admin_secret: Option<Secret>,
}

/// Hasura's `claims_format`: the namespace claim is a JSON object, or a
/// string holding one (`stringified_json`, for IdPs that only allow string
/// custom claims).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClaimsFormat {
    #[default]
    Json,
    StringifiedJson,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HasuraError {
    #[error("the token has no x-hasura-allowed-roles")]
    NoAllowedRoles,
    #[error("the requested role is not among x-hasura-allowed-roles")]
    RoleNotAllowed,
    #[error("no role was requested and the default role is missing or not allowed")]
    NoDefaultRole,
    #[error("X-Hasura-Role is repeated or not text")]
    BadRoleHeader,
    #[error("session variable {0} cannot be a header value")]
    BadValue(String),
}

impl HasuraError {
    pub fn reason(&self) -> &'static str {
        match self {
            HasuraError::NoAllowedRoles => "hasura_no_allowed_roles",
            HasuraError::RoleNotAllowed => "hasura_role_not_allowed",
            HasuraError::NoDefaultRole => "hasura_no_default_role",
            HasuraError::BadRoleHeader => "hasura_bad_role_header",
            HasuraError::BadValue(_) => "unrenderable_claim",
        }
    }

    /// Whose fault: the request's (400) or the policy's answer (403).
    pub fn is_bad_request(&self) -> bool {
        matches!(self, HasuraError::BadRoleHeader | HasuraError::BadValue(_))
    }
}

/// Takes the client's `X-Hasura-Role` out of `headers` (it is a request, not
/// a fact: the role is decided here). One value at most.
pub fn take_requested_role(headers: &mut http::HeaderMap) -> Result<Option<String>, HasuraError> {
    let values: Vec<HeaderValue> = headers.get_all(ROLE).iter().cloned().collect();
    headers.remove(ROLE);
    match values.as_slice() {
        [] => Ok(None),
        [one] => one
            .to_str()
            .map(|s| Some(s.trim().to_string()))
            .map_err(|_| HasuraError::BadRoleHeader),
        _ => Err(HasuraError::BadRoleHeader),
    }
}

impl Hasura {
    /// The session headers for `claims`: `X-Hasura-Role` chosen as Hasura
    /// does, then every other session variable (arrays as Postgres array
    /// literals, Hasura's format), then the admin secret if configured.
    pub fn session(
        &self,
        claims: &Value,
        requested: Option<&str>,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, HasuraError> {
        let vars = self.variables(claims);
        let get = |name: &str| {
            vars.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_ref())
        };
        let allowed: Vec<&str> = match get(ALLOWED) {
            Some(Value::Array(roles)) => roles.iter().filter_map(Value::as_str).collect(),
            Some(Value::String(s)) => postgres_list(s),
            _ => return Err(HasuraError::NoAllowedRoles),
        };
        if allowed.is_empty() {
            return Err(HasuraError::NoAllowedRoles);
        }
        let role = match requested {
            Some(r) if allowed.contains(&r) => r.to_string(),
            Some(_) => return Err(HasuraError::RoleNotAllowed),
            None => match get(DEFAULT).and_then(Value::as_str) {
                Some(d) if allowed.contains(&d) => d.to_string(),
                _ => return Err(HasuraError::NoDefaultRole),
            },
        };
        let header = |name: &str, text: &str| {
            let value = HeaderValue::from_str(text)
                .ok()
                .filter(|_| !text.bytes().any(|b| b < 0x20 || b == 0x7f))
                .ok_or_else(|| HasuraError::BadValue(name.to_string()))?;
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| HasuraError::BadValue(name.into()))?;
            Ok::<_, HasuraError>((name, value))
        };
        let mut out = vec![header(ROLE, &role)?];
        for (name, value) in &vars {
            if [ROLE, ALLOWED, DEFAULT, ADMIN_SECRET].contains(&name.as_str()) {
                continue;
            }
            out.push(header(name, &session_text(value))?);
        }
        if let Some(secret) = &self.admin_secret {
            out.push((HeaderName::from_static(ADMIN_SECRET), secret.0.clone()));
        }
        Ok(out)
    }

    /// The `x-hasura-*` variables, lowercase names.
    fn variables<'a>(&self, claims: &'a Value) -> Vec<(String, Cow<'a, Value>)> {
        match &self.source {
            SessionSource::Namespace(path) => match (path.find(claims), self.format) {
                (Found::One(Value::Object(map)), ClaimsFormat::Json) => session_members(map)
                    .map(|(k, v)| (k, Cow::Borrowed(v)))
                    .collect(),
                // The same strict parse as the token's own JSON: duplicate
                // names refuse rather than pick one (rule 7).
                (Found::One(Value::String(text)), ClaimsFormat::StringifiedJson) => {
                    match crate::token::json::parse_strict(text.as_bytes()) {
                        Ok(Value::Object(map)) => session_members(&map)
                            .map(|(k, v)| (k, Cow::Owned(v.clone())))
                            .collect(),
                        _ => Vec::new(),
                    }
                }
                _ => Vec::new(),
            },
            SessionSource::Map(entries) => entries
                .iter()
                .filter_map(|(name, path)| match path.find(claims) {
                    Found::One(v) => Some((name.clone(), Cow::Borrowed(v))),
                    _ => None,
                })
                .collect(),
        }
    }
}

/// The `x-hasura-*` members of a namespace object, lowercase, nulls left out.
fn session_members(map: &serde_json::Map<String, Value>) -> impl Iterator<Item = (String, &Value)> {
    map.iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .filter(|(k, v)| k.starts_with("x-hasura-") && !v.is_null())
}

/// A session variable as Hasura reads it: strings as they are, arrays as a
/// Postgres array literal, anything else as JSON text.
fn session_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(_) => {
            let mut out = String::new();
            super::template::postgres_array(&mut out, v);
            out
        }
        other => other.to_string(),
    }
}

/// `{a,b}` (how Hasura writes an array in a string claim) as items.
fn postgres_list(s: &str) -> Vec<&str> {
    s.trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .split(',')
        .map(|r| r.trim().trim_matches('"'))
        .filter(|r| !r.is_empty())
        .collect()
}

#[cfg(test)]
mod tests;
