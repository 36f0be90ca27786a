//! Fetching a JWKS over HTTP(S) (SECURITY.md rule 9): HTTPS unless plain
//! http is explicitly allowed, no redirects, connect and total timeouts, a
//! body cap, and only JSON content types.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::keys::JwksError;

/// Largest JWKS body read.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A shared HTTPS client for key fetches.
#[derive(Clone)]
pub struct Fetcher {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    total_timeout: Duration,
    /// Set when the fetcher could not be built as configured: every fetch
    /// fails with this.
    broken: Option<String>,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const TOTAL_TIMEOUT: Duration = Duration::from_secs(5);

impl Default for Fetcher {
    fn default() -> Self {
        Self::new(CONNECT_TIMEOUT, TOTAL_TIMEOUT)
    }
}

impl Fetcher {
    /// A fetcher trusting the Mozilla roots and the system store
    /// ([`crate::trust`]).
    pub fn new(connect_timeout: Duration, total_timeout: Duration) -> Self {
        Self::with_roots(connect_timeout, total_timeout, crate::trust::roots())
    }

    /// A fetcher trusting those roots plus every certificate of the
    /// PEM file at `path` (an IdP behind a private CA).
    pub fn with_ca_file(path: &std::path::Path) -> Result<Self, String> {
        let mut roots = crate::trust::roots();
        for cert in ca_certificates(path)? {
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(Self::with_roots(CONNECT_TIMEOUT, TOTAL_TIMEOUT, roots))
    }

    /// A fetcher whose every fetch fails with `why`.
    pub fn broken(why: String) -> Self {
        Self {
            broken: Some(why),
            ..Self::default()
        }
    }

    fn with_roots(
        connect_timeout: Duration,
        total_timeout: Duration,
        roots: rustls::RootCertStore,
    ) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("the aws-lc-rs provider supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(https);
        Self {
            client,
            total_timeout,
            broken: None,
        }
    }

    /// GETs `url` and returns its body and `Cache-Control` lifetime.
    /// `allow_http` permits plain http.
    pub async fn get(&self, url: &str, allow_http: bool) -> Result<Fetched, JwksError> {
        match self.get_if(url, allow_http, None).await? {
            Fetch::Body(f) => Ok(f),
            // Only an answer to a conditional request.
            Fetch::NotModified { .. } => Err(JwksError::Fetch("unexpected 304".into())),
        }
    }

    /// GETs `url`, conditionally when `since` holds the validators of an
    /// earlier answer from the same URL (RFC 9110 §13.1): a `304 Not
    /// Modified` then means the document is unchanged.
    pub async fn get_if(
        &self,
        url: &str,
        allow_http: bool,
        since: Option<&Validators>,
    ) -> Result<Fetch, JwksError> {
        if let Some(why) = &self.broken {
            return Err(JwksError::Fetch(why.clone()));
        }
        let uri: Uri = url
            .parse()
            .map_err(|_| JwksError::Fetch("not a URL".into()))?;
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if allow_http => {}
            _ => return Err(JwksError::Fetch("only https is allowed".into())),
        }
        let mut req =
            Request::get(uri).header(header::ACCEPT, "application/jwk-set+json, application/json");
        if let Some(v) = since.filter(|v| v.url == url) {
            if let Some(etag) = &v.etag {
                req = req.header(header::IF_NONE_MATCH, etag.clone());
            }
            if let Some(date) = &v.last_modified {
                req = req.header(header::IF_MODIFIED_SINCE, date.clone());
            }
        }
        let req = req
            .body(Empty::new())
            .map_err(|e| JwksError::Fetch(e.to_string()))?;
        let fetch = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| JwksError::Fetch(cause(&e)))?;
            let status = resp.status();
            if status == StatusCode::NOT_MODIFIED && since.is_some() {
                return Ok(Fetch::NotModified {
                    max_age: max_age(resp.headers()),
                });
            }
            if status.is_redirection() {
                return Err(JwksError::Fetch(format!("redirect ({status}) refused")));
            }
            if status != StatusCode::OK {
                return Err(JwksError::Fetch(format!("status {status}")));
            }
            let ct = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let mime = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if mime != "application/json" && mime != "application/jwk-set+json" {
                return Err(JwksError::Fetch(format!("content type {ct:?} is not JSON")));
            }
            let max_age = max_age(resp.headers());
            let validator = |name| resp.headers().get(name).cloned();
            let validators = Validators {
                url: url.to_string(),
                etag: validator(header::ETAG),
                last_modified: validator(header::LAST_MODIFIED),
            };
            let body = Limited::new(resp.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .map_err(|e| JwksError::Fetch(format!("body: {e}")))?;
            Ok(Fetch::Body(Fetched {
                body,
                max_age,
                validators,
            }))
        };
        tokio::time::timeout(self.total_timeout, fetch)
            .await
            .map_err(|_| JwksError::Fetch("timed out".into()))?
    }
}

/// What an operator can act on, from a failed request: a refused
/// connection, a DNS failure, a TLS failure (with rustls's reason), a
/// timeout — instead of hyper's `client error (Connect)` for all of them.
pub(crate) fn cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut last = e.to_string();
    while let Some(err) = cur {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return format!("TLS: {tls}");
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            // rustls reports through an io::Error wrapping its own error.
            if let Some(tls) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return format!("TLS: {tls}");
            }
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return "connection refused".into(),
                std::io::ErrorKind::TimedOut => return "connect timed out".into(),
                std::io::ErrorKind::ConnectionReset => return "connection reset".into(),
                _ => {}
            }
        }
        let text = err.to_string();
        if text.contains("dns error") || text.contains("failed to lookup address") {
            return format!("DNS lookup failed: {text}");
        }
        // rustls's reasons, when its error arrives as text only.
        if text.contains("peer certificate") || text.contains("handshake") {
            return format!("TLS: {text}");
        }
        last = text;
        cur = err.source();
    }
    format!("request failed: {last}")
}

/// The certificates of a PEM file; an error when it holds none.
pub fn ca_certificates(
    path: &std::path::Path,
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, String> {
    use rustls_pki_types::pem::PemObject;
    let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// What a (conditional) GET brought.
#[derive(Debug)]
pub enum Fetch {
    Body(Fetched),
    /// `304 Not Modified`: the document named by the validators still holds.
    NotModified {
        max_age: Option<Duration>,
    },
}

/// A fetched document.
#[derive(Debug)]
pub struct Fetched {
    pub body: Bytes,
    /// What `Cache-Control` allows: `max-age`, or zero for `no-cache` /
    /// `no-store`; `None` without the header.
    pub max_age: Option<Duration>,
    /// How to ask for it again only if it changed.
    pub validators: Validators,
}

/// An answer's `ETag` and `Last-Modified`, and the URL they belong to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    pub url: String,
    pub etag: Option<http::HeaderValue>,
    pub last_modified: Option<http::HeaderValue>,
}

impl Validators {
    /// Whether a conditional request can be made at all.
    pub fn any(&self) -> bool {
        self.etag.is_some() || self.last_modified.is_some()
    }
}

/// The lifetime `Cache-Control` gives a response (RFC 9111 §5.2.2).
fn max_age(headers: &http::HeaderMap) -> Option<Duration> {
    let mut age = None;
    for value in headers.get_all(header::CACHE_CONTROL) {
        for directive in value.to_str().ok()?.split(',') {
            let d = directive.trim().to_ascii_lowercase();
            if d == "no-cache" || d == "no-store" {
                return Some(Duration::ZERO);
            }
            if let Some(n) = d.strip_prefix("max-age=") {
                age = n
                    .trim_matches('"')
                    .parse::<u64>()
                    .ok()
                    .map(Duration::from_secs);
            }
        }
    }
    age
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_lifetimes() {
        let cases: &[(&[&str], Option<u64>)] = &[
            (&[], None),
            (&["public, max-age=300"], Some(300)),
            (&["max-age=\"60\", must-revalidate"], Some(60)),
            (&["no-cache"], Some(0)),
            (&["max-age=300", "no-store"], Some(0)),
            (&["max-age=abc"], None),
            (&["private"], None),
        ];
        for (values, want) in cases {
            let mut h = http::HeaderMap::new();
            for v in *values {
                h.append(header::CACHE_CONTROL, v.parse().unwrap());
            }
            assert_eq!(max_age(&h), want.map(Duration::from_secs), "{values:?}");
        }
    }
}
