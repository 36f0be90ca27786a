//! The `upstream` stage: pooled clients for every upstream, one pool per
//! shard (so a request and its upstream connection share a thread), bodies
//! streamed both ways, a deadline on the response head. Plain HTTP/1.1
//! upstreams take [`in_task`]: connections driven in the request's task.

mod in_task;

pub use in_task::{close_idle, sweep_idle, SWEEP_EVERY};

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tokio::time::Instant;

use http::{Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::reject::Rejection;
use crate::snapshot::{Protocol, Transport};

/// A request body on its way upstream, cut off past `limits.max_body_bytes`.
pub type UpstreamBody = Limited<Incoming>;

type Pooled = Client<HttpsConnector<HttpConnector>, UpstreamBody>;

/// The pools of one thread: the plain HTTP/1.1 one (most upstreams), and
/// one per other transport, made on first use.
#[derive(Default)]
struct Pools {
    default: OnceLock<Pooled>,
    other: Mutex<HashMap<Transport, std::sync::Arc<Pooled>>>,
}

/// A pool borrowed (the common one) or cloned out of its lock.
enum Handle<'a> {
    Ref(&'a Pooled),
    Owned(std::sync::Arc<Pooled>),
}

impl std::ops::Deref for Handle<'_> {
    type Target = Pooled;
    fn deref(&self) -> &Pooled {
        match self {
            Handle::Ref(p) => p,
            Handle::Owned(p) => p,
        }
    }
}

pub struct UpstreamClient {
    /// For threads that are not shards (tests, tools) and shards past the
    /// core count.
    shared: Pools,
    /// One set per shard, made on the shard's first requests: their
    /// connection tasks then run on the shard's own runtime.
    per_shard: Box<[Pools]>,
    connect_timeout: Duration,
    response_timeout: Duration,
}

impl UpstreamClient {
    pub fn new(connect_timeout: Duration, response_timeout: Duration) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            shared: Pools::default(),
            per_shard: (0..cores).map(|_| Pools::default()).collect(),
            connect_timeout,
            response_timeout,
        }
    }

    /// A pool for `transport`: TLS with the Mozilla roots plus the
    /// transport's CA file and client certificate, ALPN and HTTP version by
    /// its protocol.
    fn pooled(&self, transport: &Transport) -> Result<Pooled, String> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(self.connect_timeout));
        let tls = tls_config(transport)?;
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        let https = match transport.protocol {
            Protocol::Http1 => builder.enable_http1().wrap_connector(http),
            Protocol::H2c | Protocol::H2 => builder.enable_http2().wrap_connector(http),
            Protocol::Auto => builder.enable_all_versions().wrap_connector(http),
        };
        let mut client = Client::builder(TokioExecutor::new());
        client
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90));
        if transport.protocol.is_h2() {
            client.http2_only(true);
        }
        Ok(client.build(https))
    }

    /// This thread's pool for `transport`.
    fn client(&self, transport: &Transport) -> Result<Handle<'_>, Rejection> {
        let pools = super::shards::current()
            .and_then(|i| self.per_shard.get(i))
            .unwrap_or(&self.shared);
        let made = |t: &Transport| {
            self.pooled(t).map_err(|e| {
                tracing::error!("upstream TLS settings: {e}");
                Rejection::UpstreamUnavailable
            })
        };
        if *transport == Transport::default() {
            if let Some(c) = pools.default.get() {
                return Ok(Handle::Ref(c));
            }
            let c = made(transport)?;
            return Ok(Handle::Ref(pools.default.get_or_init(|| c)));
        }
        let mut other = pools.other.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = other.get(transport) {
            return Ok(Handle::Owned(c.clone()));
        }
        let c = std::sync::Arc::new(made(transport)?);
        other.insert(transport.clone(), c.clone());
        Ok(Handle::Owned(c))
    }

    /// Sends `req` over `transport` and waits for the response head, until
    /// the response timeout (from `sent`, when the caller handed it over:
    /// its clock read, not one more) or the request's `deadline`, whichever
    /// comes first: one timer for both. A connect failure is a 502; a connect or
    /// response timeout a 504 (`UpstreamTimeout`), the request's deadline
    /// too (`RequestTimeout`).
    pub async fn send(
        &self,
        transport: &Transport,
        req: Request<UpstreamBody>,
        sent: Instant,
        deadline: Instant,
    ) -> Result<Response<super::Body>, Rejection> {
        let own = sent + self.response_timeout;
        let (by, late) = if own < deadline {
            (own, Rejection::UpstreamTimeout)
        } else {
            (deadline, Rejection::RequestTimeout)
        };
        if in_task::applies(transport, &req) {
            // Boxed where it is made: the callers' futures then hold a
            // pointer, not its ~1.6 KB, and each of their moves copies less.
            let sent = Box::pin(in_task::send(req, self.connect_timeout));
            // On the shard's own timers (`deadlines`), as the pooled
            // path's: set on every request, almost never fired.
            return match super::deadlines::timeout_at(by.into_std(), sent).await {
                None => Err(late),
                Some(Err(in_task::Failed::ConnectTimeout)) => Err(Rejection::UpstreamTimeout),
                Some(Ok(resp)) => Ok(resp.map(BodyExt::boxed)),
                Some(Err(in_task::Failed::Connect(e))) => {
                    tracing::warn!(error = %e, "upstream connect failed");
                    Err(Rejection::UpstreamUnavailable)
                }
                Some(Err(in_task::Failed::Request(e))) => Err(failed(&e)),
            };
        }
        let resp = Box::pin(self.send_pooled(transport, req, by, late)).await?;
        Ok(resp.map(BodyExt::boxed))
    }

    /// [`send`](Self::send) through hyper-util's pooled client.
    async fn send_pooled(
        &self,
        transport: &Transport,
        mut req: Request<UpstreamBody>,
        by: Instant,
        late: Rejection,
    ) -> Result<Response<Incoming>, Rejection> {
        let client = self.client(transport)?;
        *req.version_mut() = if transport.protocol.is_h2() {
            http::Version::HTTP_2
        } else {
            // The client's version is not the upstream's; with `auto` the
            // pool takes h2 when ALPN chose it.
            http::Version::HTTP_11
        };
        match super::deadlines::timeout_at(by.into_std(), client.request(req)).await {
            None => Err(late),
            Some(Ok(resp)) => Ok(resp),
            Some(Err(e)) => Err(failed(&e)),
        }
    }
}

/// The rejection for a failed upstream request, logged: a timeout is a 504,
/// anything else a 502.
fn failed(e: &(dyn std::error::Error + 'static)) -> Rejection {
    tracing::warn!(error = %e, source = ?e.source(), "upstream request failed");
    if is_timeout(e) {
        Rejection::UpstreamTimeout
    } else {
        Rejection::UpstreamUnavailable
    }
}

/// rustls for an upstream: the Mozilla and system roots, the transport's CA file, and
/// its client certificate when set. Files are read when the pool is made.
fn tls_config(transport: &Transport) -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = crate::trust::roots();
    if let Some(path) = &transport.ca_file {
        let certs =
            CertificateDer::pem_file_iter(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for c in certs {
            let c = c.map_err(|e| format!("{}: {e}", path.display()))?;
            roots
                .add(c)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots);
    match &transport.client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("{}: {e}", cert.display()))?;
            let key =
                PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate: {e}"))
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
