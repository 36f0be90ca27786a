//! CORS per route: claimgate answers preflights itself (no token, nothing
//! forwarded) and adds the allow headers to real responses, refusals
//! included, so that a browser can read a 401 or a 429.

use std::time::Duration;

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderValue, Method};

/// A route's `cors:`.
#[derive(Debug, Clone)]
pub struct Cors {
    /// Exact origins (`https://app.example.com`); `*` allows any.
    pub origins: Vec<String>,
    pub methods: Vec<Method>,
    /// Request headers a page may send, lowercase.
    pub headers: Vec<String>,
    pub expose: Vec<String>,
    pub credentials: bool,
    pub max_age: Option<Duration>,
}

impl Cors {
    fn allows(&self, origin: &str) -> bool {
        self.origins.iter().any(|o| o == "*" || o == origin)
    }

    /// The request's `Origin`, if this route allows it.
    pub fn origin<'a>(&self, headers: &'a HeaderMap) -> Option<&'a HeaderValue> {
        let origin = headers.get(ORIGIN)?;
        self.allows(origin.to_str().ok()?).then_some(origin)
    }

    /// The headers of a real response to an allowed origin. The origin is
    /// echoed (never `*`, so credentials work), with `Vary: Origin`.
    pub fn response_headers(&self, origin: &HeaderValue, out: &mut HeaderMap) {
        out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        out.append(VARY, HeaderValue::from_static("origin"));
        if self.credentials {
            out.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if !self.expose.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&self.expose.join(", ")) {
                out.insert(ACCESS_CONTROL_EXPOSE_HEADERS, v);
            }
        }
    }

    /// A preflight's answer headers, or `None` when the origin, method or
    /// a requested header is not allowed.
    pub fn preflight(&self, request: &HeaderMap) -> Option<HeaderMap> {
        let origin = self.origin(request)?;
        let method = request.get(ACCESS_CONTROL_REQUEST_METHOD)?.to_str().ok()?;
        let method = Method::from_bytes(method.as_bytes()).ok()?;
        if !self.methods.contains(&method) {
            return None;
        }
        let asked: Vec<String> = request
            .get_all(ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        if asked.iter().any(|h| !self.headers.contains(h)) {
            return None;
        }
        let mut out = HeaderMap::new();
        self.response_headers(origin, &mut out);
        let methods: Vec<&str> = self.methods.iter().map(Method::as_str).collect();
        out.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_str(&methods.join(", ")).ok()?,
        );
        if !asked.is_empty() {
            out.insert(
                ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_str(&asked.join(", ")).ok()?,
            );
        }
        if let Some(age) = self.max_age {
            out.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from(age.as_secs()));
        }
        out.append(
            VARY,
            HeaderValue::from_static(
                "access-control-request-method, access-control-request-headers",
            ),
        );
        Some(out)
    }
}

/// Whether `headers` with `method` are a CORS preflight.
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(ORIGIN)
        && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
}

/// The method a preflight asks about.
pub fn requested_method(headers: &HeaderMap) -> Option<Method> {
    let m = headers.get(ACCESS_CONTROL_REQUEST_METHOD)?.to_str().ok()?;
    Method::from_bytes(m.as_bytes()).ok()
}
