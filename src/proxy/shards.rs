//! One runtime per core for the request doors: each shard is a thread with a
//! current-thread tokio runtime and its own `SO_REUSEPORT` listener on the
//! same address, and keeps a request on its core from accept to the
//! upstream's answer (with its own upstream connection pool, see
//! [`current`]). The kernel spreads new connections over the listeners.
//!
//! Why: on the work-stealing runtime a proxied request crossed threads twice
//! (the request task and the pooled client's connection task, fed through a
//! channel), and those wakeups were the largest item in the load profile.
//! Background work (key refreshes, reloads, the admin server) stays on the
//! main runtime. A shard batches its log lines (`crate::logging`).

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::server::{self, Door};
use crate::app::App;

thread_local! {
    static SHARD: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The shard this thread serves, if it is a shard's thread.
pub fn current() -> Option<usize> {
    SHARD.with(Cell::get)
}

/// How many shards `workers` asks for: 0 means one per core.
pub fn count(workers: usize) -> usize {
    if workers > 0 {
        return workers;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A listening socket on `addr` with `SO_REUSEPORT`, so that every shard can
/// bind the same address.
fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// The listeners of `shards` shards on `addr` (port 0: the first one's port
/// for all), bound now so that errors and the real address come back at once.
pub fn listeners(addr: SocketAddr, shards: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let first = bind(addr)?;
    let local = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..shards.max(1) {
        all.push(bind(local)?);
    }
    Ok(all)
}

/// Serves `door` on `listeners`, one shard thread each, until `shutdown`;
/// the handle resolves when every shard has drained. The connection cap is
/// shared by all shards.
pub fn serve(
    name: &str,
    listeners: Vec<std::net::TcpListener>,
    app: Arc<App>,
    door: Door,
    tls: Option<TlsAcceptor>,
    shutdown: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, String> {
    let slots = Arc::new(Semaphore::new(app.limits.max_connections));
    let mut done = Vec::with_capacity(listeners.len());
    for (i, listener) in listeners.into_iter().enumerate() {
        let name = name.to_string();
        let (tx, rx) = oneshot::channel::<()>();
        done.push(rx);
        let (app, door, tls, shutdown, slots) = (
            app.clone(),
            door.clone(),
            tls.clone(),
            shutdown.clone(),
            slots.clone(),
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a {name} runtime: {e}"))?;
        std::thread::Builder::new()
            .name(format!("{name}-{i}"))
            .spawn({
                let name = name.clone();
                move || {
                    SHARD.with(|s| s.set(Some(i)));
                    crate::logging::batch_this_thread();
                    runtime.block_on(async move {
                        tokio::spawn(super::deadlines::drive());
                        tokio::spawn(async {
                            let mut tick = tokio::time::interval(crate::logging::FLUSH_EVERY);
                            loop {
                                tick.tick().await;
                                crate::logging::flush();
                            }
                        });
                        tokio::spawn(async {
                            let mut tick = tokio::time::interval(super::upstream::SWEEP_EVERY);
                            loop {
                                tick.tick().await;
                                super::upstream::sweep_idle();
                            }
                        });
                        match TcpListener::from_std(listener) {
                            Ok(l) => server::serve(l, app, door, tls, shutdown, slots).await,
                            Err(e) => tracing::error!("{name} shard {i}: {e}"),
                        }
                    });
                    // Its idle upstream connections belong to the runtime.
                    runtime.block_on(async { super::upstream::close_idle() });
                    crate::logging::stop_batching();
                    let _ = tx.send(());
                }
            })
            .map_err(|e| format!("cannot start a {name} thread: {e}"))?;
    }
    Ok(tokio::spawn(async move {
        for rx in done {
            let _ = rx.await;
        }
    }))
}
