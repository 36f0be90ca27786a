//! Small real servers on loopback: an echo upstream that counts and records
//! what reached it, and a JWKS server whose document can be changed. The
//! demo runs them; the integration tests and benchmarks build on them.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;

/// Serves `handler` (HTTP/1.1 and h2c) on `addr` until the task is aborted:
/// also for the tests' scripted servers.
pub async fn serve<F, Fut>(
    addr: SocketAddr,
    handler: F,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)>
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok((addr, task))
}

/// What the echo upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// An upstream that answers every request with a JSON echo of it, counts the
/// requests and keeps the last one. A request whose path starts with
/// `/slow/<ms>` is answered after that many milliseconds.
pub struct EchoServer {
    pub addr: SocketAddr,
    count: Arc<AtomicUsize>,
    last: Arc<Mutex<Option<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl EchoServer {
    pub async fn start(addr: SocketAddr) -> std::io::Result<Self> {
        let count = Arc::new(AtomicUsize::new(0));
        let last = Arc::new(Mutex::new(None));
        let (c, l) = (count.clone(), last.clone());
        let (addr, task) = serve(addr, move |req: Request<Incoming>| {
            let (c, l) = (c.clone(), l.clone());
            async move {
                let (parts, body) = req.into_parts();
                let body = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let path = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_default();
                if let Some(ms) = path
                    .strip_prefix("/slow/")
                    .and_then(|r| r.split(['/', '?']).next())
                    .and_then(|n| n.parse().ok())
                {
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                }
                let mut headers = Map::new();
                for (k, v) in &parts.headers {
                    headers.insert(
                        k.to_string(),
                        Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
                    );
                }
                let echo = json!({
                    "method": parts.method.as_str(),
                    "path": path,
                    "headers": headers,
                    "body_bytes": body.len(),
                });
                *l.lock().unwrap_or_else(|p| p.into_inner()) = Some(Seen {
                    method: parts.method.to_string(),
                    path_and_query: path,
                    headers: parts.headers,
                    body,
                });
                c.fetch_add(1, Ordering::SeqCst);
                Response::builder()
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(
                        serde_json::to_vec_pretty(&echo).unwrap_or_default(),
                    )))
                    .unwrap_or_default()
            }
        })
        .await?;
        Ok(Self {
            addr,
            count,
            last,
            task,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received so far.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// The last request received.
    pub fn last(&self) -> Option<Seen> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the JWKS server answers.
#[derive(Debug, Clone)]
struct Served {
    status: StatusCode,
    body: Bytes,
    cache_control: Option<String>,
    delay: std::time::Duration,
    /// Send an `ETag` and answer a matching `If-None-Match` with 304.
    etags: bool,
}

/// A JWKS endpoint at `/jwks.json` whose document, status, `Cache-Control`
/// and speed can be changed, counting its fetches.
pub struct JwksServer {
    pub addr: SocketAddr,
    doc: Arc<Mutex<Served>>,
    /// The OIDC discovery document, when set.
    discovery: Arc<Mutex<Option<Value>>>,
    fetches: Arc<AtomicUsize>,
    not_modified: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    pub async fn start(addr: SocketAddr, jwks: &Value) -> std::io::Result<Self> {
        let doc = Arc::new(Mutex::new(Served {
            status: StatusCode::OK,
            body: Bytes::from(jwks.to_string()),
            cache_control: None,
            delay: std::time::Duration::ZERO,
            etags: false,
        }));
        let fetches = Arc::new(AtomicUsize::new(0));
        let not_modified = Arc::new(AtomicUsize::new(0));
        let discovery: Arc<Mutex<Option<Value>>> = Arc::new(Mutex::new(None));
        let (d, f, nm, disc) = (
            doc.clone(),
            fetches.clone(),
            not_modified.clone(),
            discovery.clone(),
        );
        let (addr, task) = serve(addr, move |req: Request<Incoming>| {
            let (d, f, nm, disc) = (d.clone(), f.clone(), nm.clone(), disc.clone());
            async move {
                if req.uri().path() == "/.well-known/openid-configuration" {
                    let doc = disc.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    if let Some(doc) = doc {
                        return Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(doc.to_string())))
                            .unwrap_or_default();
                    }
                }
                if req.uri().path() != "/jwks.json" {
                    return Response::builder()
                        .status(404)
                        .body(Full::default())
                        .unwrap_or_default();
                }
                f.fetch_add(1, Ordering::SeqCst);
                let served = d.lock().unwrap_or_else(|p| p.into_inner()).clone();
                tokio::time::sleep(served.delay).await;
                let mut resp = Response::builder()
                    .status(served.status)
                    .header("content-type", "application/jwk-set+json");
                if let Some(cc) = &served.cache_control {
                    resp = resp.header("cache-control", cc.as_str());
                }
                if served.etags {
                    let digest =
                        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &served.body);
                    let etag = format!("\"{}\"", URL_SAFE_NO_PAD.encode(&digest.as_ref()[..12]));
                    let asked = req.headers().get("if-none-match");
                    if asked.is_some_and(|v| v.as_bytes() == etag.as_bytes()) {
                        nm.fetch_add(1, Ordering::SeqCst);
                        return resp
                            .status(StatusCode::NOT_MODIFIED)
                            .header("etag", etag)
                            .body(Full::default())
                            .unwrap_or_default();
                    }
                    resp = resp.header("etag", etag);
                }
                resp.body(Full::new(served.body)).unwrap_or_default()
            }
        })
        .await?;
        Ok(Self {
            addr,
            doc,
            discovery,
            fetches,
            not_modified,
            task,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    /// The server's origin, `http://127.0.0.1:PORT`: an issuer URL for
    /// discovery.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves this OIDC discovery document from now on.
    pub fn set_discovery(&self, doc: &Value) {
        *self.discovery.lock().unwrap_or_else(|p| p.into_inner()) = Some(doc.clone());
    }

    fn served(&self) -> std::sync::MutexGuard<'_, Served> {
        self.doc.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serves `jwks` from now on.
    pub fn set(&self, jwks: &Value) {
        self.set_raw(StatusCode::OK, &jwks.to_string());
    }

    /// Serves `status` with `body` from now on (to play a broken IdP).
    pub fn set_raw(&self, status: StatusCode, body: &str) {
        let mut s = self.served();
        s.status = status;
        s.body = Bytes::from(body.to_string());
    }

    /// Sends this `Cache-Control` value from now on (`None`: no header).
    pub fn set_cache_control(&self, value: Option<&str>) {
        self.served().cache_control = value.map(str::to_string);
    }

    /// Answers after `delay` from now on (to play a slow IdP).
    pub fn set_delay(&self, delay: std::time::Duration) {
        self.served().delay = delay;
    }

    /// Sends an `ETag` (a digest of the body) from now on, and answers a
    /// request whose `If-None-Match` matches it with `304 Not Modified`.
    pub fn set_etags(&self, on: bool) {
        self.served().etags = on;
    }

    /// Every GET of the JWKS, 304s included.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// The GETs answered `304 Not Modified`.
    pub fn not_modified(&self) -> usize {
        self.not_modified.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
