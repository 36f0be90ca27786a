//! The listener: HTTP/1.1 and HTTP/2 (h2c, or h2 over TLS by ALPN), bounded
//! connections and headers, a header-read timeout, and graceful shutdown
//! that lets in-flight requests finish.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use hyper::service::service_fn;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use super::conn::{Builders, Linger, Version};
use super::pipeline::{self, Peer};
use crate::app::App;

/// One request's handling, as hyper's service future.
type RequestFuture =
    Pin<Box<dyn Future<Output = Result<hyper::Response<crate::proxy::Body>, Infallible>> + Send>>;

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
    let builders = Arc::new(Builders::new(&limits));
    // Every connection task holds a sender; `recv` answers `None` when the
    // last one has finished.
    let (live, mut drained) = mpsc::channel::<()>(1);
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
        let linger = Linger::default();
        let noted = linger.clone();
        let svc = service_fn(move |req| {
            noted.note(&req);
            let app = app.clone();
            // Boxed: hyper keeps a slot of the service future's size for
            // every connection, idle ones too; boxed, the slot is a pointer
            // and the request's state lives only while the request does.
            // One box per door: the proxy's future is boxed as `handle`
            // made it, not moved into a wrapper sized for both doors (each
            // move of a future copies its whole size).
            let fut: RequestFuture = match &door {
                Door::Proxy => Box::pin(pipeline::handle(app, req, peer)),
                Door::ForwardAuth(config) => {
                    let config = config.clone();
                    Box::pin(async move {
                        let resp = super::forward_auth::handle(&app, &config, req, peer).await;
                        Ok::<_, Infallible>(resp)
                    })
                }
            };
            fut
        });
        let (builders, tls, mut shutdown, live) = (
            builders.clone(),
            tls.clone(),
            shutdown.clone(),
            live.clone(),
        );
        let within = limits.header_read_timeout;
        // Until hyper has it, a shutdown closes the connection at once.
        tokio::spawn(async move {
            match tls {
                None => {
                    if let Some(version) = Version::sniff(&stream, within, &mut shutdown).await {
                        builders.serve(stream, version, svc, shutdown, linger).await;
                    }
                }
                // Boxed: the TLS state (~5 KB) would otherwise size every
                // connection's task, plaintext ones included (~1 KB).
                Some(acceptor) => Box::pin(async move {
                    let accepted = tokio::select! {
                        r = tokio::time::timeout(within, acceptor.accept(stream)) => r.ok().and_then(Result::ok),
                        _ = stopped(&mut shutdown) => None,
                    };
                    if let Some(stream) = accepted {
                        let version = Version::of_alpn(stream.get_ref().1.alpn_protocol());
                        builders.serve(stream, version, svc, shutdown, linger).await;
                    }
                })
                .await,
            }
            drop((permit, live));
        });
    }
    drop((listener, live));
    tokio::select! {
        _ = drained.recv() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(limits.shutdown_grace) => tracing::warn!("grace period over; closing remaining connections"),
    }
}

/// Resolves once `shutdown` turns true (or its sender is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // Drop the borrow guard at once: holding it across an await is not Send.
    let _ = shutdown.wait_for(|s| *s).await.map(|_| ());
}

/// [`stopped`] for a connection, which polls it with every poll of the
/// connection (three or so per request). The watch's own future takes
/// its waiter list's lock on every poll; this one polls it only when the
/// watch has woken it, and is otherwise a flag read.
pub struct Stopping {
    inner: Pin<Box<dyn Future<Output = ()> + Send>>,
    flag: Arc<Flag>,
    /// `flag` as a waker, made once.
    waker: std::task::Waker,
    /// The task's waker as last given to `flag`.
    task: Option<std::task::Waker>,
}

struct Flag {
    woken: AtomicBool,
    task: Mutex<Option<std::task::Waker>>,
}

impl std::task::Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        if let Some(task) = self.task.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            task.wake_by_ref();
        }
    }
}

impl Stopping {
    pub fn new(mut shutdown: watch::Receiver<bool>) -> Self {
        let flag = Arc::new(Flag {
            // Polled at the first poll, to register with the watch.
            woken: AtomicBool::new(true),
            task: Mutex::new(None),
        });
        Stopping {
            inner: Box::pin(async move { stopped(&mut shutdown).await }),
            waker: std::task::Waker::from(flag.clone()),
            flag,
            task: None,
        }
    }
}

impl Future for Stopping {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if !this.task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
            let task = cx.waker().clone();
            *this.flag.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task.clone());
            this.task = Some(task);
        }
        if this.flag.woken.load(Ordering::Acquire) && this.flag.woken.swap(false, Ordering::AcqRel)
        {
            return this
                .inner
                .as_mut()
                .poll(&mut Context::from_waker(&this.waker));
        }
        Poll::Pending
    }
}
