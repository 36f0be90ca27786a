//! Finding the one token of a request (SECURITY.md rule 1).

use http::header::{AUTHORIZATION, COOKIE, SEC_WEBSOCKET_PROTOCOL};
use http::{HeaderMap, HeaderName, HeaderValue};
use thiserror::Error;

/// Where a token may come from. Each issuer lists its own (`token_from`);
/// `bearer` when it does not.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TokenSource {
    /// `Authorization: Bearer <token>` (RFC 6750 §2.1).
    Bearer,
    /// A cookie, e.g. Descope's `DS`.
    Cookie(String),
    /// A header's whole value, after an optional prefix.
    Header { name: HeaderName, prefix: String },
    /// A query parameter (RFC 6750 §2.3); off unless configured, since URLs
    /// end up in logs.
    Query(String),
    /// An entry of `Sec-WebSocket-Protocol` starting with this prefix, the
    /// token after it (browsers cannot set `Authorization` on a WebSocket;
    /// Kubernetes' convention is `base64url.bearer.authorization.k8s.io.`).
    /// The entry is removed before the upgrade goes upstream.
    WebSocketProtocol(String),
}

impl TokenSource {
    /// Parses `bearer`, `cookie:NAME`, `header:NAME`, `header:NAME:PREFIX`
    /// or `query:NAME`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || {
            format!("token source `{text}`: write bearer, cookie:NAME, header:NAME[:PREFIX], query:NAME or websocket_protocol:PREFIX")
        };
        if text == "bearer" {
            return Ok(TokenSource::Bearer);
        }
        let (kind, rest) = text.split_once(':').ok_or_else(bad)?;
        if rest.is_empty() {
            return Err(bad());
        }
        match kind {
            "cookie" => Ok(TokenSource::Cookie(rest.to_string())),
            "query" => Ok(TokenSource::Query(rest.to_string())),
            "websocket_protocol" => Ok(TokenSource::WebSocketProtocol(rest.to_string())),
            "header" => {
                let (name, prefix) = rest.split_once(':').unwrap_or((rest, ""));
                let name = HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes())
                    .map_err(|_| bad())?;
                if name == AUTHORIZATION && prefix.is_empty() {
                    return Err(format!(
                        "token source `{text}`: use `bearer` for Authorization: Bearer"
                    ));
                }
                Ok(TokenSource::Header {
                    name,
                    prefix: prefix.to_string(),
                })
            }
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Bearer => f.write_str("bearer"),
            TokenSource::Cookie(n) => write!(f, "cookie:{n}"),
            TokenSource::Header { name, prefix } if prefix.is_empty() => write!(f, "header:{name}"),
            TokenSource::Header { name, prefix } => write!(f, "header:{name}:{prefix}"),
            TokenSource::Query(n) => write!(f, "query:{n}"),
            TokenSource::WebSocketProtocol(p) => write!(f, "websocket_protocol:{p}"),
        }
    }
}

/// The entries of every `Sec-WebSocket-Protocol` header.
fn protocols(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
}

/// The one token of a request, looked for in every source of `sources`.
/// Two tokens (from two sources, or twice in one) are refused: claimgate and
/// the upstream must never disagree about who is calling. Returns the token
/// and the index of its source.
pub fn find<'a>(
    headers: &'a HeaderMap,
    query: Option<&'a str>,
    sources: &[TokenSource],
) -> Result<Option<(&'a str, usize)>, ExtractError> {
    let mut found = None;
    for (i, source) in sources.iter().enumerate() {
        let token = match source {
            TokenSource::Bearer => bearer(headers)?,
            TokenSource::Cookie(name) => cookie(headers, name)?,
            TokenSource::Header { name, prefix } => {
                let mut values = headers.get_all(name).iter();
                match (values.next(), values.next()) {
                    (None, _) => None,
                    (Some(_), Some(_)) => return Err(ExtractError::MultipleTokens),
                    (Some(v), None) => {
                        let v = v.to_str().map_err(|_| ExtractError::MalformedCredential)?;
                        match v.strip_prefix(prefix.as_str()) {
                            Some(t) if !t.trim().is_empty() => Some(t.trim()),
                            // Another scheme in a shared header is not ours.
                            _ => None,
                        }
                    }
                }
            }
            TokenSource::Query(name) => query_param(query, name)?,
            TokenSource::WebSocketProtocol(prefix) => {
                let mut tokens = protocols(headers).filter_map(|p| p.strip_prefix(prefix.as_str()));
                match (tokens.next(), tokens.next()) {
                    (Some(_), Some(_)) => return Err(ExtractError::MultipleTokens),
                    (t, _) => t.filter(|t| !t.is_empty()),
                }
            }
        };
        if let Some(t) = token {
            if found.is_some() {
                return Err(ExtractError::MultipleTokens);
            }
            found = Some((t, i));
        }
    }
    Ok(found)
}

/// The value of cookie `name` across every `Cookie` header (RFC 6265 §5.4).
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ExtractError> {
    let mut found = None;
    for h in headers.get_all(COOKIE) {
        let h = h.to_str().map_err(|_| ExtractError::MalformedCredential)?;
        for pair in h.split(';') {
            if let Some((k, v)) = pair.trim().split_once('=') {
                if k == name && !v.is_empty() {
                    if found.is_some() {
                        return Err(ExtractError::MultipleTokens);
                    }
                    found = Some(v.trim_matches('"'));
                }
            }
        }
    }
    Ok(found)
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Result<Option<&'a str>, ExtractError> {
    let mut found = None;
    for pair in query.unwrap_or("").split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == name && !v.is_empty() {
            if found.is_some() {
                return Err(ExtractError::MultipleTokens);
            }
            found = Some(v);
        }
    }
    Ok(found)
}

/// Removes the credential from where it was found, so that the upstream
/// does not receive it (unless the route passes it on).
pub fn strip(headers: &mut HeaderMap, query: Option<&str>, source: &TokenSource) -> Option<String> {
    match source {
        TokenSource::Bearer => {
            headers.remove(AUTHORIZATION);
        }
        TokenSource::Header { name, .. } => {
            headers.remove(name);
        }
        TokenSource::Cookie(name) => {
            let kept: Vec<String> = headers
                .get_all(COOKIE)
                .iter()
                .filter_map(|h| h.to_str().ok())
                .flat_map(|h| h.split(';'))
                .map(str::trim)
                .filter(|p| !p.is_empty() && p.split_once('=').map(|(k, _)| k) != Some(name))
                .map(str::to_string)
                .collect();
            headers.remove(COOKIE);
            if !kept.is_empty() {
                if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
                    headers.insert(COOKIE, v);
                }
            }
        }
        TokenSource::WebSocketProtocol(prefix) => {
            let kept: Vec<&str> = protocols(headers)
                .filter(|p| !p.starts_with(prefix.as_str()))
                .collect();
            let kept = kept.join(", ");
            headers.remove(SEC_WEBSOCKET_PROTOCOL);
            if let (false, Ok(v)) = (kept.is_empty(), HeaderValue::from_str(&kept)) {
                headers.insert(SEC_WEBSOCKET_PROTOCOL, v);
            }
        }
        TokenSource::Query(name) => {
            let kept: Vec<&str> = query
                .unwrap_or("")
                .split('&')
                .filter(|p| !p.is_empty() && p.split('=').next() != Some(name.as_str()))
                .collect();
            return Some(kept.join("&"));
        }
    }
    None
}

/// A request whose credentials cannot be read one way only: a 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ExtractError {
    #[error("more than one token in the request")]
    MultipleTokens,
    #[error("the Authorization header is not a valid Bearer credential")]
    MalformedAuthorization,
    #[error("a credential header or cookie is not text")]
    MalformedCredential,
}

impl ExtractError {
    pub fn reason(&self) -> &'static str {
        match self {
            ExtractError::MultipleTokens => "multiple_tokens",
            ExtractError::MalformedAuthorization => "malformed_authorization",
            ExtractError::MalformedCredential => "malformed_credential",
        }
    }
}

/// The bearer token of `headers`, if any.
///
/// RFC 6750 §2.1: the scheme is case-insensitive and one space separates it
/// from the token. Two `Authorization` headers are refused rather than
/// choosing one, so that claimgate and the upstream can never disagree about
/// who is calling. Another scheme (`Basic ...`) counts as no token.
pub fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ExtractError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ExtractError::MultipleTokens);
    }
    // What `HeaderValue::to_str` accepts (visible ASCII, space, tab), tested
    // with no early exit so that it runs 32 bytes at a time: to_str's
    // byte-by-byte loop was ~4 instructions per byte of the token.
    let bytes = value.as_bytes();
    let visible = bytes.iter().fold(true, |ok, &b| {
        ok & ((b' '..0x7f).contains(&b) || b == b'\t')
    });
    let value = std::str::from_utf8(bytes)
        .ok()
        .filter(|_| visible)
        .ok_or(ExtractError::MalformedAuthorization)?;
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let token = rest.trim_matches(' ');
    if token.is_empty() || memchr::memchr(b' ', token.as_bytes()).is_some() {
        return Err(ExtractError::MalformedAuthorization);
    }
    Ok(Some(token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn reads_bearer_in_any_case() {
        for v in [
            "Bearer a.b.c",
            "bearer a.b.c",
            "BEARER a.b.c",
            "Bearer  a.b.c",
        ] {
            assert_eq!(bearer(&headers(&[v])), Ok(Some("a.b.c")), "{v}");
        }
    }

    #[test]
    fn table() {
        type Case<'a> = (&'a [&'a str], Result<Option<&'a str>, ExtractError>);
        let cases: &[Case] = &[
            (&[], Ok(None)),
            (&["Basic dXNlcjpwdw=="], Ok(None)),
            (&["Bearer"], Err(ExtractError::MalformedAuthorization)),
            (&["Bearer "], Err(ExtractError::MalformedAuthorization)),
            (&["Bearer a b"], Err(ExtractError::MalformedAuthorization)),
            (
                &["Bearer a.b.c", "Bearer d.e.f"],
                Err(ExtractError::MultipleTokens),
            ),
            (
                &["Bearer a.b.c", "Basic x"],
                Err(ExtractError::MultipleTokens),
            ),
        ];
        for (values, want) in cases {
            assert_eq!(&bearer(&headers(values)), want, "{values:?}");
        }
    }

    /// The reading by `HeaderValue::to_str`, as `bearer` did it before its
    /// one-pass check.
    fn by_to_str(value: &HeaderValue) -> Result<Option<&str>, ExtractError> {
        let value = value
            .to_str()
            .map_err(|_| ExtractError::MalformedAuthorization)?;
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Ok(None);
        }
        let token = rest.trim_matches(' ');
        if token.is_empty() || token.contains(' ') {
            return Err(ExtractError::MalformedAuthorization);
        }
        Ok(Some(token))
    }

    proptest::proptest! {
        /// Any value a header can hold (tab, space, visible ASCII, obs-text
        /// bytes), short or longer than a SIMD block, reads as to_str read it.
        #[test]
        fn reads_as_to_str_did(
            scheme in proptest::sample::select(vec!["Bearer ", "bearer  ", "Basic ", "Bearer", ""]),
            body in proptest::collection::vec(
                proptest::sample::select(vec![b'a', b'Z', b'0', b'.', b'-', b'_', b'~']),
                0..200,
            ),
            odd in proptest::option::of((
                proptest::sample::select(vec![b' ', b'\t', 0x7f, 0x80, 0xe9, 0x00]),
                0usize..200,
            )),
        ) {
            let mut bytes = scheme.as_bytes().to_vec();
            bytes.extend(&body);
            if let Some((byte, at)) = odd {
                bytes.insert(at.min(bytes.len()), byte);
            }
            if let Ok(v) = HeaderValue::from_bytes(&bytes) {
                let mut h = HeaderMap::new();
                h.insert(AUTHORIZATION, v.clone());
                proptest::prop_assert_eq!(bearer(&h), by_to_str(&v));
            }
        }
    }
}
