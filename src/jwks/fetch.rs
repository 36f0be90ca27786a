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
}

impl Default for Fetcher {
    fn default() -> Self {
        Self::new(Duration::from_secs(2), Duration::from_secs(5))
    }
}

impl Fetcher {
    pub fn new(connect_timeout: Duration, total_timeout: Duration) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(https);
        Self {
            client,
            total_timeout,
        }
    }

    /// GETs `url` and returns its body. `allow_http` permits plain http.
    pub async fn get(&self, url: &str, allow_http: bool) -> Result<Bytes, JwksError> {
        let uri: Uri = url
            .parse()
            .map_err(|_| JwksError::Fetch("not a URL".into()))?;
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if allow_http => {}
            _ => return Err(JwksError::Fetch("only https is allowed".into())),
        }
        let req = Request::get(uri)
            .header(header::ACCEPT, "application/jwk-set+json, application/json")
            .body(Empty::new())
            .map_err(|e| JwksError::Fetch(e.to_string()))?;
        let fetch = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| JwksError::Fetch(format!("request failed: {e}")))?;
            let status = resp.status();
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
            Limited::new(resp.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .map_err(|e| JwksError::Fetch(format!("body: {e}")))
        };
        tokio::time::timeout(self.total_timeout, fetch)
            .await
            .map_err(|_| JwksError::Fetch("timed out".into()))?
    }
}
