//! The `upstream` stage: pooled clients for every upstream, one pool per
//! shard (so a request and its upstream connection share a thread), bodies
//! streamed both ways, a deadline on the response head.

use std::sync::OnceLock;
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

type Pooled = Client<HttpsConnector<HttpConnector>, UpstreamBody>;

pub struct UpstreamClient {
    /// For threads that are not shards (tests, tools) and shards past the
    /// core count.
    shared: Pooled,
    /// One pool per shard, made on the shard's first request: its
    /// connection tasks then run on the shard's own runtime.
    per_shard: Box<[OnceLock<Pooled>]>,
    connect_timeout: Duration,
    response_timeout: Duration,
}

impl UpstreamClient {
    pub fn new(connect_timeout: Duration, response_timeout: Duration) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            shared: Self::pooled(connect_timeout),
            per_shard: (0..cores).map(|_| OnceLock::new()).collect(),
            connect_timeout,
            response_timeout,
        }
    }

    fn pooled(connect_timeout: Duration) -> Pooled {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(https)
    }

    /// This thread's pool: its shard's, or the shared one.
    fn client(&self) -> &Pooled {
        match super::shards::current().and_then(|i| self.per_shard.get(i)) {
            Some(cell) => cell.get_or_init(|| Self::pooled(self.connect_timeout)),
            None => &self.shared,
        }
    }

    /// Sends `req` and waits for the response head. A connect failure is a
    /// 502, a connect or response timeout a 504.
    pub async fn send(&self, req: Request<UpstreamBody>) -> Result<Response<Incoming>, Rejection> {
        match tokio::time::timeout(self.response_timeout, self.client().request(req)).await {
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
