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
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use super::pipeline::{self, Peer};
use crate::app::App;
use crate::config::Limits;

/// One request's handling, as hyper's service future.
type RequestFuture =
    Pin<Box<dyn Future<Output = Result<hyper::Response<crate::proxy::Body>, Infallible>> + Send>>;

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
                let io = Detecting::new(stream, limits.header_read_timeout);
                let conn = graceful.watch(
                    builder
                        .serve_connection_with_upgrades(TokioIo::new(io), svc)
                        .into_owned(),
                );
                tokio::spawn(async move {
                    let _ = conn.await;
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
                    let io = Detecting::new(tls_stream, timeout);
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

/// HTTP/2's connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A connection's stream while hyper-util tells HTTP/1 from HTTP/2 by its
/// first bytes, which it waits for without a limit: a client that
/// connected and sent nothing, or a part of the HTTP/2 preface, held a
/// connection slot for good (rule 18). Until the bytes read stop matching
/// the preface (an HTTP/1 request: at its first or second byte) or the
/// whole preface has come, a read past `within` fails with `TimedOut`;
/// from then on it is the stream itself, and hyper's own header-read
/// timeout applies.
struct Detecting<S> {
    inner: S,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// How much of the preface has come.
    matched: usize,
}

impl<S> Detecting<S> {
    fn new(inner: S, within: std::time::Duration) -> Self {
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
