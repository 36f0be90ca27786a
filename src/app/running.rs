//! Starting a loaded [`App`]: binding its listeners, serving, and stopping.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::App;
use crate::config::ProcessConfig;
use crate::proxy::{server, shards};

/// A started claimgate: its bound addresses and a handle to stop it.
pub struct Running {
    pub app: Arc<App>,
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The forward-auth listener's address, when configured.
    pub forward_auth_addr: Option<SocketAddr>,
    /// The ext_authz gRPC listener's address, when configured.
    pub ext_authz_addr: Option<SocketAddr>,
    ext_authz: Option<tokio::task::JoinHandle<()>>,
    shutdown: watch::Sender<bool>,
    proxy: tokio::task::JoinHandle<()>,
    forward_auth: Option<tokio::task::JoinHandle<()>>,
    admin: tokio::task::JoinHandle<()>,
    watcher: Option<tokio::task::JoinHandle<()>>,
    /// Re-reads the server certificate (`tls.reload_interval`).
    tls_watch: Option<tokio::task::JoinHandle<()>>,
}

/// Binds the proxy and admin listeners of `config` and starts serving.
pub async fn start(config: &ProcessConfig, app: Arc<App>) -> Result<Running, String> {
    let mut tls_watch = None;
    let tls = match &config.tls {
        Some(files) => {
            let cert = crate::proxy::tls::ServerCert::load(files)?;
            tls_watch = cert.clone().watch(app.metrics.clone());
            Some(crate::proxy::tls::acceptor(cert)?)
        }
        None => None,
    };
    let shards = shards::count(config.workers);
    let listeners = shards::listeners(config.listen, shards)
        .map_err(|e| listen_error(config.listen, "listen", &e))?;
    let admin_listener = TcpListener::bind(config.admin_listen)
        .await
        .map_err(|e| listen_error(config.admin_listen, "admin_listen", &e))?;
    let addr = listeners[0].local_addr().map_err(|e| e.to_string())?;
    let admin_addr = admin_listener.local_addr().map_err(|e| e.to_string())?;
    let (shutdown, rx) = watch::channel(false);
    let proxy = shards::serve(
        "proxy",
        listeners,
        app.clone(),
        server::Door::Proxy,
        tls.clone(),
        rx.clone(),
    )?;
    let mut forward_auth_addr = None;
    let mut forward_auth = None;
    if let Some(fa) = &config.forward_auth {
        let ls = shards::listeners(fa.listen, shards)
            .map_err(|e| listen_error(fa.listen, "forward_auth.listen", &e))?;
        forward_auth_addr = Some(ls[0].local_addr().map_err(|e| e.to_string())?);
        let door = server::Door::ForwardAuth(Arc::new(fa.clone()));
        forward_auth = Some(shards::serve(
            "forward-auth",
            ls,
            app.clone(),
            door,
            tls.clone(),
            rx.clone(),
        )?);
    }
    let admin = tokio::spawn(crate::admin::serve(admin_listener, app.clone(), rx.clone()));
    let auto_reload = config.reload.watch || !config.reload.poll_interval.is_zero();
    let watcher = match &app.policy_dir {
        Some(dir) if auto_reload => Some(crate::policy_watch::spawn(
            app.clone(),
            dir.clone(),
            config.reload.clone(),
        )),
        _ => None,
    };
    let mut ext_authz_addr = None;
    let mut ext_authz = None;
    if let Some(ea) = &config.ext_authz {
        let l = TcpListener::bind(ea.listen)
            .await
            .map_err(|e| listen_error(ea.listen, "ext_authz.listen", &e))?;
        ext_authz_addr = Some(l.local_addr().map_err(|e| e.to_string())?);
        ext_authz = Some(tokio::spawn(crate::proxy::ext_authz::serve(
            l,
            app.clone(),
            Arc::new(ea.clone()),
            rx.clone(),
        )));
    }
    Ok(Running {
        app,
        addr,
        admin_addr,
        ext_authz_addr,
        ext_authz,
        forward_auth_addr,
        shutdown,
        proxy,
        forward_auth,
        admin,
        watcher,
        tls_watch,
    })
}

impl Running {
    /// Drains: `/readyz` turns 503, claimgate keeps serving for `delay` (so
    /// load balancers notice), then stops accepting and waits for in-flight
    /// requests up to the grace period.
    pub async fn shutdown(self, delay: Duration) {
        for w in [&self.watcher, &self.tls_watch].into_iter().flatten() {
            w.abort();
        }
        self.app.start_draining();
        tokio::time::sleep(delay).await;
        let _ = self.shutdown.send(true);
        let _ = self.proxy.await;
        for door in [self.forward_auth, self.ext_authz].into_iter().flatten() {
            let _ = door.await;
        }
        let _ = self.admin.await;
    }
}

/// Why a listener could not be opened, and what to change: the process
/// file's key for it.
fn listen_error(addr: SocketAddr, key: &str, e: &std::io::Error) -> String {
    let hint = match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            ": another process listens there; stop it, or set `{key}:` in the process file to a free address"
        ),
        std::io::ErrorKind::PermissionDenied => format!(
            ": ports under 1024 need privileges; set `{key}:` to a port above 1023 (e.g. 8080)"
        ),
        std::io::ErrorKind::AddrNotAvailable => format!(
            ": no interface of this host has that address; set `{key}:` to 0.0.0.0 or one of its addresses"
        ),
        _ => String::new(),
    };
    format!("cannot listen on {addr} (`{key}`): {e}{hint}")
}
