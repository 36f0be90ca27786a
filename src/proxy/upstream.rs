//! The `upstream` stage: one pooled client for every upstream, bodies
//! streamed both ways, a deadline on the response head.

use std::time::Duration;

use http::{Request, Response};
use http_body_util::Limited;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::reject::Rejection;

/// A request body on its way upstream, cut off past `limits.max_body_bytes`.
pub type UpstreamBody = Limited<Incoming>;

#[derive(Clone)]
pub struct UpstreamClient {
    client: Client<HttpsConnector<HttpConnector>, UpstreamBody>,
    response_timeout: Duration,
}

impl UpstreamClient {
    pub fn new(connect_timeout: Duration, response_timeout: Duration) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(https);
        Self {
            client,
            response_timeout,
        }
    }

    /// Sends `req` and waits for the response head. A connect failure is a
    /// 502, a connect or response timeout a 504.
    pub async fn send(&self, req: Request<UpstreamBody>) -> Result<Response<Incoming>, Rejection> {
        match tokio::time::timeout(self.response_timeout, self.client.request(req)).await {
            Err(_) => Err(Rejection::UpstreamTimeout),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, source = ?std::error::Error::source(&e), "upstream request failed");
                if is_timeout(&e) {
                    Err(Rejection::UpstreamTimeout)
                } else {
                    Err(Rejection::UpstreamUnavailable)
                }
            }
        }
    }
}

fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        if err.to_string().contains("timed out") {
            return true;
        }
        cur = err.source();
    }
    false
}
