//! Request values: what of the request (a path parameter, a header, the
//! host, the method) a rule or a header template may read. Request text is
//! only ever compared or used as a map key, never spliced into a JSONPath.

use http::{HeaderMap, HeaderName, Method};

/// A value of the request a rule may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestValue {
    /// A `{param}` of the route's path template (by position).
    Param {
        index: usize,
        name: String,
    },
    /// A request header; absent when missing, repeated or not text. Headers
    /// claimgate owns were removed before any rule runs.
    Header(HeaderName),
    /// The host the route matched on: lowercase, without port.
    Host,
    Method,
    /// The client's address: the peer, or behind `trusted_proxies` the
    /// nearest untrusted address of `X-Forwarded-For` (reverse proxy only).
    Client,
}

impl RequestValue {
    /// Reads `{name}` (a path parameter of `params`), `{header:Name}`,
    /// `{host}` or `{method}`. `Ok(None)` for any other text (a literal);
    /// an error for braces naming nothing.
    pub fn parse(text: &str, params: &[String]) -> Result<Option<Self>, String> {
        let Some(inner) = text.strip_prefix('{').and_then(|t| t.strip_suffix('}')) else {
            return Ok(None);
        };
        if let Some(index) = params.iter().position(|p| p == inner) {
            return Ok(Some(RequestValue::Param {
                index,
                name: inner.to_string(),
            }));
        }
        match inner {
            "host" => return Ok(Some(RequestValue::Host)),
            "method" => return Ok(Some(RequestValue::Method)),
            "client" => return Ok(Some(RequestValue::Client)),
            _ => {}
        }
        if let Some(name) = inner.strip_prefix("header:") {
            return HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes())
                .map(|h| Some(RequestValue::Header(h)))
                .map_err(|_| format!("`{text}`: `{name}` is not a header name"));
        }
        let known = if params.is_empty() {
            "the route has no path parameters".to_string()
        } else {
            format!("the route's path parameters are {}", params.join(", "))
        };
        Err(format!(
            "`{text}` names no request value ({known}; also {{host}}, {{method}}, {{client}}, {{header:Name}})"
        ))
    }

    /// The value in `req`, if it has one.
    pub fn get<'a>(&self, req: &'a RequestFacts<'a>) -> Option<&'a str> {
        match self {
            RequestValue::Param { index, .. } => req.params.get(*index).map(|(_, v)| v.as_str()),
            RequestValue::Header(name) => {
                let mut values = req.headers.get_all(name).iter();
                match (values.next(), values.next()) {
                    (Some(v), None) => v.to_str().ok(),
                    _ => None,
                }
            }
            RequestValue::Host => Some(req.host),
            RequestValue::Method => Some(req.method.as_str()),
            RequestValue::Client => req.client,
        }
    }
}

impl std::fmt::Display for RequestValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestValue::Param { name, .. } => write!(f, "{{{name}}}"),
            RequestValue::Header(h) => write!(f, "{{header:{h}}}"),
            RequestValue::Host => f.write_str("{host}"),
            RequestValue::Method => f.write_str("{method}"),
            RequestValue::Client => f.write_str("{client}"),
        }
    }
}

/// The request as rules see it.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub method: &'a Method,
    pub host: &'a str,
    /// The route's path parameters, in template order.
    pub params: &'a [(&'a str, String)],
    pub headers: &'a HeaderMap,
    /// The client's address as text, when the door knows it.
    pub client: Option<&'a str>,
}
