//! Plain-HTTP/1.1 upstream connections driven in the request's own task.
//!
//! hyper-util's pooled client gives each connection a task of its own and
//! feeds it requests through a channel: per request, a pool checkout (three
//! SipHash lookups of the pool key), a wakeup of the connection task and one
//! back, and some twenty moves of its large futures. Here a shard keeps its
//! idle connections in a thread-local list and the request's task polls the
//! connection itself: while waiting for the response head, then from the
//! response body ([`Driven`]) until the body's end, when the connection
//! goes back to the list.
//!
//! Used for the common case only: `http://`, HTTP/1.1, the default
//! transport, no upgrade, on a shard's thread. TLS, HTTP/2 and upgrades keep
//! the pooled client.
//!
//! An upstream closes a keep-alive connection when its own idle timeout
//! fires (Node 5 s, nginx 75 s); a request written just as it does finds
//! the connection closed with no answer. Such a request is sent once more,
//! on another connection, when that is safe and the race possible: an
//! idempotent method without a body, on a connection that had been idle
//! for a sweep period or more (nginx's `proxy_next_upstream error` does the
//! same for idempotent requests). Copying the request head for it is paid
//! only then, not on a busy connection.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http::{Request, Response, Uri};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::UpstreamBody;
use crate::snapshot::Transport;

/// How long an idle connection may wait in the list (as the pooled
/// client's `pool_idle_timeout`), give or take the sweep's period.
const IDLE_FOR: Duration = Duration::from_secs(90);
/// Idle connections kept per upstream address and shard; more are closed.
const IDLE_MAX: usize = 512;

type Io = TokioIo<TcpStream>;

/// One HTTP/1.1 connection: the request side and the connection future that
/// does the I/O when polled.
struct Conn {
    send: SendRequest<Outgoing>,
    conn: Connection<Io, Outgoing>,
}

/// A request body as sent: the client's, or none (which a replay can
/// send again).
enum Outgoing {
    Stream(UpstreamBody),
    Empty,
}

impl http_body::Body for Outgoing {
    type Data = Bytes;
    type Error = <UpstreamBody as http_body::Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Outgoing::Stream(b) => Pin::new(b).poll_frame(cx),
            Outgoing::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Outgoing::Stream(b) => b.is_end_stream(),
            Outgoing::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Outgoing::Stream(b) => b.size_hint(),
            Outgoing::Empty => SizeHint::with_exact(0),
        }
    }
}

impl Conn {
    /// Polls an idle connection once (`cx`: a no-op waker): false when the
    /// upstream has closed it.
    fn is_open(&mut self, cx: &mut Context<'_>) -> bool {
        Pin::new(&mut self.conn).poll(cx).is_pending()
    }
}

/// Boxed where it is kept and moved: the connection's state is some 700
/// bytes.
struct Idle {
    conn: Box<Conn>,
    /// The sweep count when it was checked in: ages are counted in sweeps,
    /// so that a check-in (every response) reads no clock.
    since: u64,
    /// Idle for [`SWEEP_EVERY`] or more, as the last sweep found: the
    /// upstream's idle timeout may be about to close it.
    aged: bool,
}

thread_local! {
    /// This shard's idle connections by upstream `host:port`, newest last.
    static IDLE: RefCell<crate::FastMap<Box<str>, Vec<Idle>>> = RefCell::default();
    /// How many sweeps this shard has done.
    static SWEEPS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How often a shard sweeps its idle connections ([`sweep_idle`]).
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// [`IDLE_FOR`] in sweeps.
const IDLE_PERIODS: u64 = IDLE_FOR.as_secs() / SWEEP_EVERY.as_secs();

/// Closes this thread's idle connections (a shard's, before its runtime
/// stops).
pub fn close_idle() {
    let _ = IDLE.try_with(|idle| idle.borrow_mut().clear());
}

/// Closes this thread's idle connections that the upstream has closed or
/// that have waited longer than the idle limit. Nothing else polls an idle
/// connection, so without this an upstream that gets no more requests would
/// keep its connections (half-closed ones included) for good.
pub fn sweep_idle() {
    let _ = IDLE.try_with(|idle| {
        let now = SWEEPS.with(|s| {
            s.set(s.get() + 1);
            s.get()
        });
        let mut cx = Context::from_waker(std::task::Waker::noop());
        idle.borrow_mut().retain(|_, list| {
            list.retain_mut(|i| {
                // Checked in before the previous sweep: idle for a whole
                // period at least (between 1 and 2 periods).
                let periods = now - i.since;
                i.aged = periods >= 2;
                periods <= IDLE_PERIODS && i.conn.is_open(&mut cx)
            });
            !list.is_empty()
        });
    });
}

/// The newest live idle connection to `authority`, and whether it is aged.
/// A connection is live if polling it once finds it neither closed by the
/// upstream nor busy.
fn checkout(authority: &str) -> Option<(Box<Conn>, bool)> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.get_mut(authority)?;
        // Age is the sweep's business (`sweep_idle`); closed or busy is
        // checked here, at the moment of reuse.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        while let Some(Idle { mut conn, aged, .. }) = list.pop() {
            if conn.is_open(&mut cx) && conn.send.is_ready() {
                return Some((conn, aged));
            }
        }
        None
    })
}

fn checkin(authority: &str, conn: Box<Conn>) {
    let _ = IDLE.try_with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = match idle.get_mut(authority) {
            Some(list) => list,
            None => idle.entry(authority.into()).or_default(),
        };
        if list.len() < IDLE_MAX {
            list.push(Idle {
                conn,
                since: SWEEPS.with(std::cell::Cell::get),
                aged: false,
            });
        }
    });
}

/// Whether `req` over `transport` can take this path.
pub fn applies(transport: &Transport, req: &Request<UpstreamBody>) -> bool {
    *transport == Transport::default()
        && crate::proxy::shards::current().is_some()
        && req.uri().scheme() == Some(&http::uri::Scheme::HTTP)
        && req.method() != http::Method::CONNECT
        && !req.headers().contains_key(http::header::UPGRADE)
}

/// A failure of [`send`]: before anything reached an upstream (connect) or
/// after.
pub enum Failed {
    Connect(std::io::Error),
    ConnectTimeout,
    Request(hyper::Error),
}

/// Sends `req` (absolute URI, `http://`) on an idle connection to its
/// authority or a new one, and waits for the response head. A request
/// that a reused connection refused before sending anything (closed by the
/// upstream meanwhile) is sent again on a new connection, as the pooled
/// client does; so is, once, one a reused aged connection lost (see the
/// module's notes).
pub async fn send(
    req: Request<UpstreamBody>,
    connect_timeout: Duration,
) -> Result<Response<Driven>, Failed> {
    let mut req = req.map(|body| {
        if body.is_end_stream() {
            Outgoing::Empty
        } else {
            Outgoing::Stream(body)
        }
    });
    let uri = std::mem::take(req.uri_mut());
    let authority = uri.authority().map_or("", |a| a.as_str());
    if !req.headers().contains_key(http::header::HOST) {
        if let Ok(v) = http::HeaderValue::from_str(authority) {
            req.headers_mut().insert(http::header::HOST, v);
        }
    }
    *req.uri_mut() = origin_form(&uri);
    let mut replayed = false;
    loop {
        let (mut conn, reused, aged) = match checkout(authority) {
            Some((c, aged)) => (c, true, aged),
            // Host and port parsed out of the authority only here: each
            // is a scan of it, and most requests reuse a connection.
            None => {
                let (host, port) = (uri.host().unwrap_or(""), uri.port_u16().unwrap_or(80));
                (connect(host, port, connect_timeout).await?, false, false)
            }
        };
        let replay = if aged && !replayed {
            replayable(&req)
        } else {
            None
        };
        let response = conn.send.try_send_request(req);
        match drive(&mut conn.conn, response).await {
            Ok(resp) => {
                return Ok(resp.map(|body| Driven {
                    body,
                    conn: Some(conn),
                    upstream: uri,
                    ended: false,
                }))
            }
            Err(mut e) => match (e.take_message(), replay) {
                (Some(again), _) if reused => req = again,
                (None, Some(again)) if lost(e.error()) => {
                    tracing::debug!(upstream = %uri, "an idle upstream connection closed under a request; sending it again");
                    replayed = true;
                    req = again;
                }
                _ => return Err(Failed::Request(e.into_error())),
            },
        }
    }
}

/// A copy of `req` to send again if its connection is lost: an idempotent
/// method (RFC 9110 §9.2.2) and no body.
fn replayable(req: &Request<Outgoing>) -> Option<Request<Outgoing>> {
    let idempotent = matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    );
    if !idempotent || !matches!(req.body(), Outgoing::Empty) {
        return None;
    }
    let mut copy = Request::new(Outgoing::Empty);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

/// Whether a request failed because its connection closed under it (no
/// answer, or a reset) rather than on something the upstream answered.
fn lost(e: &hyper::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    if e.is_incomplete_message() {
        return true;
    }
    let io = std::error::Error::source(e).and_then(|s| s.downcast_ref::<std::io::Error>());
    io.is_some_and(|io| matches!(io.kind(), BrokenPipe | ConnectionAborted | ConnectionReset))
}

/// `/path?query` of `uri` ("/" when empty), as the pooled client sends it.
fn origin_form(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(p) if p.as_str() != "/" => Uri::from(p.clone()),
        _ => Uri::from_static("/"),
    }
}

async fn connect(host: &str, port: u16, timeout: Duration) -> Result<Box<Conn>, Failed> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let stream = match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
        Err(_) => return Err(Failed::ConnectTimeout),
        Ok(Err(e)) => return Err(Failed::Connect(e)),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    let (send, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(Failed::Request)?;
    Ok(Box::new(Conn { send, conn }))
}

/// Polls the connection and `response` together until the response head
/// has come (or the connection failed, which fails `response` too).
async fn drive<F: Future>(conn: &mut Connection<Io, Outgoing>, response: F) -> F::Output {
    let mut response = std::pin::pin!(response);
    let mut open = true;
    std::future::poll_fn(|cx| {
        if open && Pin::new(&mut *conn).poll(cx).is_ready() {
            open = false;
        }
        response.as_mut().poll(cx)
    })
    .await
}

/// An upstream response body that drives its connection: the connection is
/// polled when the body has nothing yet, and goes back to the idle list
/// when the body has been read to its end. A body dropped before its end
/// closes it.
pub struct Driven {
    body: Incoming,
    conn: Option<Box<Conn>>,
    /// The request's absolute URI: its authority is the connection's key.
    upstream: Uri,
    ended: bool,
}

impl http_body::Body for Driven {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        // The body first: polling it tells the connection that the body is
        // wanted, and the connection decodes no body before that. Polled
        // the other way round, every response would wait one more turn of
        // the runtime (a wakeup of this same task) for its first chunk.
        let mut frame = Pin::new(&mut this.body).poll_frame(cx);
        if frame.is_pending() {
            if let Some(c) = &mut this.conn {
                if Pin::new(&mut c.conn).poll(cx).is_ready() {
                    this.conn = None;
                }
                frame = Pin::new(&mut this.body).poll_frame(cx);
            }
        }
        if let Poll::Ready(None) = frame {
            this.ended = true;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Driven {
    fn drop(&mut self) {
        if self.ended || self.body.is_end_stream() {
            if let Some(conn) = self.conn.take() {
                let authority = self.upstream.authority().map_or("", |a| a.as_str());
                checkin(authority, conn);
            }
        }
    }
}
