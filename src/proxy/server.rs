//! The listener: HTTP/1.1 and HTTP/2 (h2c, or h2 over TLS by ALPN), bounded
//! connections and headers, a header-read timeout, and graceful shutdown
//! that lets in-flight requests finish.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use super::pipeline::{self, Peer};
use crate::app::App;
use crate::config::Limits;

/// One request's handling, as hyper's service future.
type RequestFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Result<hyper::Response<crate::proxy::Body>, Infallible>>
            + Send,
    >,
>;

/// hyper's default HTTP/1 header count limit.
const HYPER_MAX_HEADERS: usize = 100;

/// An HTTP connection builder with claimgate's limits (SECURITY.md rule 18).
/// hyper's header-read timeout only works with a timer set, so both
/// protocols get one.
pub fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes);
    // hyper's own limit is 100 headers, parsed into arrays on the stack;
    // a limit set explicitly makes it fill a vector of that many per
    // request, so it is set only when it differs.
    if limits.max_headers != HYPER_MAX_HEADERS {
        b.http1().max_headers(limits.max_headers);
    }
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_bytes as u32)
        .max_pending_accept_reset_streams(Some(50))
        .max_local_error_reset_streams(Some(256));
    b
}

/// Which front door a listener serves.
#[derive(Clone)]
pub enum Door {
    /// The reverse proxy: decide, then forward upstream.
    Proxy,
    /// Forward-auth: decide and answer the gateway.
    ForwardAuth(Arc<crate::config::ForwardAuthConfig>),
}

/// Serves `listener` until `shutdown` turns true (`slots`: the connection
/// cap, shared with the other shards), then stops accepting and
/// waits up to the grace period for in-flight requests.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    door: Door,
    tls: Option<TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
    slots: Arc<Semaphore>,
) {
    let limits = app.limits.clone();
    let builder = http_builder(&limits);
    // Plaintext connections are served by a builder for the one protocol
    // their first bytes show, peeked here under the header-read timeout:
    // hyper-util's own detection waits for them without a limit, so a
    // client that connected and sent nothing held a connection slot for
    // good.
    let (h1, h2) = (
        Arc::new(builder.clone().http1_only()),
        Arc::new(builder.clone().http2_only()),
    );
    let graceful = GracefulShutdown::new();
    loop {
        // Connection cap: wait for a free slot before accepting, so excess
        // clients queue in the kernel's backlog instead of costing memory.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stopped(&mut shutdown) => break,
        };
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        let _ = stream.set_nodelay(true);
        let peer = Peer {
            addr,
            tls: tls.is_some(),
        };
        let (app, door) = (app.clone(), door.clone());
        let svc = service_fn(move |req| {
            let (app, door) = (app.clone(), door.clone());
            // Boxed: hyper keeps a slot of the service future's size for
            // every connection, idle ones too (~2.6 KB unboxed); boxed, the
            // slot is a pointer and the request's state lives only while
            // the request does.
            let fut: RequestFuture = Box::pin(async move {
                let resp = match &door {
                    Door::Proxy => pipeline::handle(&app, req, peer).await,
                    Door::ForwardAuth(config) => {
                        super::forward_auth::handle(&app, config, req, peer).await
                    }
                };
                Ok::<_, Infallible>(resp)
            });
            fut
        });
        match &tls {
            None => {
                let watcher = graceful.watcher();
                let (h1, h2) = (h1.clone(), h2.clone());
                let timeout = limits.header_read_timeout;
                tokio::spawn(async move {
                    // The protocol, from the first bytes (peeked, not
                    // read); a client silent past the header-read timeout
                    // is closed (rule 18).
                    let Ok(Some(h2c)) = tokio::time::timeout(timeout, is_h2c(&stream)).await else {
                        return;
                    };
                    let builder = if h2c { &h2 } else { &h1 };
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    let _ = watcher.watch(conn).await;
                    drop(permit);
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let builder = builder.clone();
                let watcher = graceful.watcher();
                let timeout = limits.header_read_timeout;
                tokio::spawn(async move {
                    let Ok(Ok(tls_stream)) =
                        tokio::time::timeout(timeout, acceptor.accept(stream)).await
                    else {
                        return;
                    };
                    // hyper-util waits for the first bytes without a
                    // limit; a silent client is closed at the timeout.
                    let io = FirstRead::new(tls_stream, timeout);
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
                    let _ = watcher.watch(conn).await;
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(limits.shutdown_grace) => tracing::warn!("grace period over; closing remaining connections"),
    }
}

/// HTTP/2's connection preface (RFC 9113 §3.4): a plaintext connection
/// opening with it speaks h2c with prior knowledge.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether `stream` opens with the HTTP/2 preface, from its first bytes
/// peeked (left for hyper to read). `None`: the client closed or failed
/// first. The preface comes in one segment in practice; a client that
/// sends a part of it waits here for the rest.
async fn is_h2c(stream: &TcpStream) -> Option<bool> {
    let mut first = [0u8; 24];
    loop {
        let n = stream.peek(&mut first).await.ok()?;
        if n == 0 {
            return None;
        }
        if first[..n] != H2_PREFACE[..n] {
            return Some(false);
        }
        if n == H2_PREFACE.len() {
            return Some(true);
        }
        // Peeked data keeps the socket readable: wait a little instead.
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// A stream whose first read fails with `TimedOut` once `deadline` has
/// passed without a byte; from the first byte on, the stream itself.
struct FirstRead<S> {
    inner: S,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> FirstRead<S> {
    fn new(inner: S, within: std::time::Duration) -> Self {
        Self {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(within))),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstRead<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        let Some(deadline) = self.deadline.as_mut() else {
            return read;
        };
        match read {
            Poll::Ready(Ok(())) if buf.filled().len() == before => read,
            Poll::Ready(_) => {
                self.deadline = None;
                read
            }
            Poll::Pending => match deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(std::io::ErrorKind::TimedOut.into())),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstRead<S> {
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

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Resolves once `shutdown` turns true (or its sender is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // Drop the borrow guard at once: holding it across an await is not Send.
    let _ = shutdown.wait_for(|s| *s).await.map(|_| ());
}
