//! One accepted connection: which HTTP it speaks, and serving it with
//! claimgate's limits until it closes or shutdown asks it to finish.
//!
//! The protocol is chosen before hyper sees a byte: by ALPN over TLS, by
//! peeking for HTTP/2's preface on plaintext (h2c by prior knowledge).
//! hyper-util's auto builder did this by reading the first 24 bytes and
//! handing them back to hyper as a first read of their own; hyper's read
//! buffer then grew from 8 to 16 KB on the next read, on every HTTP/1
//! connection, idle or not (8.4 KB per connection measured with
//! `benches/memory.sh`).

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::server::conn::{http1, http2};
use hyper::service::HttpService;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::server::{stopped, Stopping};
use crate::config::Limits;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// hyper's default HTTP/1 header count limit.
const HYPER_MAX_HEADERS: usize = 100;

/// How long a closing HTTP/1 connection may drain what its client is still
/// sending (nginx's `lingering_timeout` default).
const LINGER_FOR: Duration = Duration::from_secs(5);

/// HTTP/2's connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http1,
    Http2,
}

impl Version {
    /// By the protocol ALPN chose: h2, or HTTP/1.1 for anything else
    /// (HTTP/2 over TLS needs ALPN, as with nginx).
    pub fn of_alpn(alpn: Option<&[u8]>) -> Self {
        match alpn {
            Some(b"h2") => Version::Http2,
            _ => Version::Http1,
        }
    }

    /// By a plaintext connection's first bytes, peeked (left for hyper):
    /// HTTP/2 if they are the whole preface, HTTP/1 from the first byte
    /// that differs. `None` when the client closed or sent nothing but part
    /// of the preface within `within` (rule 18: no slot is held for good),
    /// or when `shutdown` came first (the connection closes at once).
    pub async fn sniff(
        stream: &TcpStream,
        within: Duration,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<Self> {
        let sniff = async {
            let mut buf = [0u8; 24];
            loop {
                let n = stream.peek(&mut buf).await.ok()?;
                if n == 0 {
                    return None;
                }
                if buf[..n] != H2_PREFACE[..n] {
                    return Some(Version::Http1);
                }
                if n == H2_PREFACE.len() {
                    return Some(Version::Http2);
                }
                // Part of the preface: the socket stays readable with the
                // same bytes, so wait a little before peeking again.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        };
        tokio::select! {
            v = tokio::time::timeout(within, sniff) => v.ok().flatten(),
            _ = stopped(shutdown) => None,
        }
    }
}

/// The HTTP/1.1 and HTTP/2 connection builders with claimgate's limits
/// (SECURITY.md rule 18). hyper's header-read timeout only works with a
/// timer set, so both get one.
pub struct Builders {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
    header_read_timeout: Duration,
}

impl Builders {
    pub fn new(limits: &Limits) -> Self {
        let mut h1 = http1::Builder::new();
        // The shard's own timers: a header-read timer per request, nearly
        // always cancelled (`deadlines`).
        h1.timer(super::deadlines::ShardTimer)
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_bytes);
        // hyper's own limit is 100 headers, parsed into arrays on the
        // stack; a limit set explicitly makes it fill a vector of that many
        // per request, so it is set only when it differs.
        if limits.max_headers != HYPER_MAX_HEADERS {
            h1.max_headers(limits.max_headers);
        }
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(limits.max_concurrent_streams)
            .max_header_list_size(limits.max_header_bytes as u32)
            .max_pending_accept_reset_streams(Some(50))
            .max_local_error_reset_streams(Some(256));
        Self {
            h1,
            h2,
            header_read_timeout: limits.header_read_timeout,
        }
    }

    /// Serves `io` as `version` with `svc` (HTTP/1.1 with upgrades) until it
    /// closes. When `shutdown` turns true, the requests in flight finish and
    /// the connection closes. `linger`, which the service keeps up to date,
    /// says whether an HTTP/1 close drains first ([`Lingering`]).
    pub async fn serve<I, S, B>(
        &self,
        io: I,
        version: Version,
        svc: S,
        shutdown: watch::Receiver<bool>,
        linger: Linger,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: HttpService<Incoming, ResBody = B> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        match version {
            Version::Http1 => {
                let mut conn = pin!(self
                    .h1
                    .serve_connection(TokioIo::new(Lingering::new(io, linger)), svc)
                    .with_upgrades());
                tokio::select! {
                    biased;
                    _ = conn.as_mut() => return,
                    _ = Stopping::new(shutdown) => {}
                }
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
            Version::Http2 => {
                // Until its preface has come, an HTTP/2 connection is
                // bounded by the header-read timeout too.
                let io = Detecting::new(io, self.header_read_timeout);
                // Boxed: inline, its state would size every connection's
                // task, HTTP/1 ones included.
                let mut conn = Box::pin(self.h2.serve_connection(TokioIo::new(io), svc));
                tokio::select! {
                    biased;
                    _ = conn.as_mut() => return,
                    _ = Stopping::new(shutdown) => {}
                }
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
    }
}

/// The writes of a stream wrapper (`self.inner`) that pass through
/// unchanged: all but `poll_shutdown`.
macro_rules! writes_through {
    () => {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
        }

        fn is_write_vectored(&self) -> bool {
            self.inner.is_write_vectored()
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
    };
}

/// An HTTP/2 connection's stream until its preface has come: a read past
/// `within` before that fails with `TimedOut`, so that a client that sends
/// nothing, or part of the preface, does not hold a connection slot for
/// good (rule 18). hyper's HTTP/2 server has no such limit of its own.
struct Detecting<S> {
    inner: S,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// How much of the preface has come.
    matched: usize,
}

impl<S> Detecting<S> {
    fn new(inner: S, within: Duration) -> Self {
        Self {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(within))),
            matched: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Detecting<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        let this = &mut *self;
        let Some(deadline) = this.deadline.as_mut() else {
            return read;
        };
        match read {
            Poll::Ready(Ok(())) => {
                let got = &buf.filled()[before..];
                let rest = &H2_PREFACE[this.matched..];
                let n = got.len().min(rest.len());
                if got[..n] != rest[..n] || n == rest.len() {
                    this.deadline = None;
                } else {
                    this.matched += n;
                }
                read
            }
            Poll::Ready(Err(_)) => read,
            Poll::Pending => match deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(std::io::ErrorKind::TimedOut.into())),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Detecting<S> {
    writes_through!();

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Whether a connection's last request came with a body: its close then
/// drains ([`Lingering`]). Set by the service as each request comes.
#[derive(Clone, Default)]
pub struct Linger(Arc<AtomicBool>);

impl Linger {
    /// Notes the request being served: a body (a length over 0, or
    /// chunked) may be left unread if claimgate answers first.
    pub fn note<B: Body>(&self, req: &http::Request<B>) {
        self.0.store(!req.body().is_end_stream(), Ordering::Relaxed);
    }

    fn wanted(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// An HTTP/1 connection's stream that closes the way nginx's
/// `lingering_close` does. When claimgate answers before it has read the
/// whole request body (413 for a declared length over the limit, an error
/// while the body streams), hyper closes the connection with the rest of
/// the body unread. Closing a socket with unread data sends a reset: the
/// client's next write fails, and a client that sends its whole body before
/// reading never sees the 413. So, when the last request had a body, what
/// the client is still sending after the write side is shut (FIN sent) is
/// read and discarded until it stops (end of stream), fails, or
/// [`LINGER_FOR`] has passed; only then does the socket close. Otherwise,
/// or when the client closed first, the socket closes at once.
pub struct Lingering<S> {
    inner: S,
    linger: Linger,
    /// Set once the write side is shut.
    until: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> Lingering<S> {
    pub fn new(inner: S, linger: Linger) -> Self {
        Self {
            inner,
            linger,
            until: None,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Lingering<S> {
    /// Reads and discards until the client's end of stream, an error, or
    /// the deadline; `Pending` while the client may still send.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(until) = self.until.as_mut() else {
            return Poll::Ready(());
        };
        let mut scratch = [0u8; 4096];
        // At most 64 KiB per turn: a client sending fast must not hold the
        // shard's thread for the whole linger time.
        for _ in 0..16 {
            if until.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {}
                // End of stream, or an error: nothing more to lose.
                Poll::Ready(_) => return Poll::Ready(()),
                // Woken by the next data or the deadline.
                Poll::Pending => return Poll::Pending,
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Lingering<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Lingering<S> {
    writes_through!();

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.until.is_none() {
            std::task::ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
            if !this.linger.wanted() {
                return Poll::Ready(Ok(()));
            }
            this.until = Some(Box::pin(tokio::time::sleep(LINGER_FOR)));
        }
        std::task::ready!(this.poll_drain(cx));
        Poll::Ready(Ok(()))
    }
}
