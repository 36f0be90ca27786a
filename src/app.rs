//! The running process: the current snapshot behind one `ArcSwap`, the key
//! stores that outlive snapshots, the upstream client and the metrics; and
//! `start`, which binds the listeners.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use jsonwebtoken::Algorithm;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{self, ConfigErrors, Limits, Origin, PolicySource, ProcessConfig, Vars};
use crate::jwks::{Fetcher, JwksStore, KeySource, Refresh};
use crate::metrics::Metrics;
use crate::proxy::{server, UpstreamClient};
use crate::snapshot::Snapshot;

/// The key-store registry key: a store is reused by a new snapshot only when
/// its issuer name, key source, algorithms and refresh timing are unchanged.
type StoreKey = (String, KeySource, Vec<String>, Refresh);

struct StoreEntry {
    store: Arc<JwksStore>,
    refresher: tokio::task::JoinHandle<()>,
}

pub struct App {
    snapshot: ArcSwap<Snapshot>,
    pub metrics: Arc<Metrics>,
    pub upstream: UpstreamClient,
    /// Verified tokens; outlives snapshots (entries check their issuer).
    pub token_cache: crate::token::TokenCache,
    pub limits: Limits,
    /// Where reloads read policy files from; `None` for embedded policies.
    policy_dir: Option<PathBuf>,
    vars: Box<dyn Vars>,
    stores: Mutex<HashMap<StoreKey, StoreEntry>>,
    fetcher: Fetcher,
    draining: AtomicBool,
    /// Serialises reloads so two never interleave.
    reload_lock: tokio::sync::Mutex<()>,
}

impl App {
    /// Compiles the first snapshot. Key stores start loading in the
    /// background; see [`App::is_ready`]. Needs a Tokio runtime.
    pub fn new(
        limits: Limits,
        policy_dir: Option<PathBuf>,
        sources: &[PolicySource],
        vars: Box<dyn Vars>,
    ) -> Result<Arc<Self>, ConfigErrors> {
        let metrics = Arc::new(Metrics::new());
        let fetcher = Fetcher::default();
        let stores = Mutex::new(HashMap::new());
        let snapshot = compile_with(
            &stores,
            &fetcher,
            &metrics,
            sources,
            vars.as_ref(),
            &limits,
            1,
        )?;
        metrics.config_reloads.with_label_values(&["success"]).inc();
        metrics.config_generation.set(1);
        let upstream = UpstreamClient::new(
            limits.upstream_connect_timeout,
            limits.upstream_response_timeout,
        );
        Ok(Arc::new(Self {
            snapshot: ArcSwap::from_pointee(snapshot),
            metrics,
            upstream,
            token_cache: crate::token::TokenCache::new(limits.token_cache_entries),
            limits,
            policy_dir,
            vars,
            stores,
            fetcher,
            draining: AtomicBool::new(false),
            reload_lock: tokio::sync::Mutex::new(()),
        }))
    }

    /// The snapshot serving requests now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Ready: not draining, and every issuer's keys loaded once (rule 12).
    pub fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::Acquire)
            && self
                .snapshot
                .load()
                .issuers
                .iter()
                .all(|i| i.keys.is_loaded())
    }

    /// Waits until every issuer of the current snapshot has keys.
    pub async fn wait_keys_loaded(&self) {
        let snapshot = self.snapshot();
        for issuer in snapshot.issuers.iter() {
            issuer.keys.wait_loaded().await;
        }
    }

    /// Marks the process as draining: `/readyz` answers 503 from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Rebuilds the snapshot from the policy directory and swaps it in whole.
    /// On any error the old snapshot keeps serving and every error is
    /// returned.
    pub async fn reload(&self) -> Result<u64, ConfigErrors> {
        let _guard = self.reload_lock.lock().await;
        let result = self.reload_locked();
        let label = if result.is_ok() { "success" } else { "failure" };
        self.metrics
            .config_reloads
            .with_label_values(&[label])
            .inc();
        match &result {
            Ok(g) => tracing::info!(generation = g, "policies reloaded"),
            Err(errs) => {
                for e in &errs.0 {
                    tracing::error!("policy reload refused: {e}");
                }
            }
        }
        result
    }

    fn reload_locked(&self) -> Result<u64, ConfigErrors> {
        let Some(dir) = &self.policy_dir else {
            let mut errs = ConfigErrors::default();
            errs.push(
                Origin::file(std::path::Path::new("(embedded)")),
                "embedded policies cannot be reloaded",
            );
            return Err(errs);
        };
        let sources = PolicySource::read_dir(dir)?;
        // Reloads are serialised by `reload_lock`, so this cannot race.
        let generation = self.snapshot.load().generation + 1;
        let snapshot = compile_with(
            &self.stores,
            &self.fetcher,
            &self.metrics,
            &sources,
            self.vars.as_ref(),
            &self.limits,
            generation,
        )?;
        self.snapshot.store(Arc::new(snapshot));
        self.metrics.config_generation.set(generation as i64);
        // Cached tokens hold their issuer, and with it its key store: drop
        // them before pruning, or old stores would look used and keep polling.
        self.token_cache.clear();
        self.prune_stores();
        Ok(generation)
    }

    /// Stops the key stores no snapshot refers to any more.
    fn prune_stores(&self) {
        let mut stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        stores.retain(|_, e| {
            let used = Arc::strong_count(&e.store) > 1;
            if !used {
                e.refresher.abort();
            }
            used
        });
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let stores = self.stores.get_mut().unwrap_or_else(|p| p.into_inner());
        for e in stores.values() {
            e.refresher.abort();
        }
    }
}

fn compile_with(
    stores: &Mutex<HashMap<StoreKey, StoreEntry>>,
    fetcher: &Fetcher,
    metrics: &Arc<Metrics>,
    sources: &[PolicySource],
    vars: &dyn Vars,
    limits: &Limits,
    generation: u64,
) -> Result<Snapshot, ConfigErrors> {
    let mut stores = stores.lock().unwrap_or_else(|p| p.into_inner());
    let mut get = |issuer: &str, source: &KeySource, algs: &[Algorithm], refresh: Refresh| {
        let key = (
            issuer.to_string(),
            source.clone(),
            algs.iter().map(|a| format!("{a:?}")).collect(),
            refresh,
        );
        stores
            .entry(key)
            .or_insert_with(|| {
                let store = Arc::new(JwksStore::new(
                    issuer.to_string(),
                    source.clone(),
                    algs.to_vec(),
                    refresh,
                    fetcher.clone(),
                    metrics.clone(),
                ));
                let refresher = store.spawn_refresher();
                StoreEntry { store, refresher }
            })
            .store
            .clone()
    };
    config::compile(sources, vars, &mut get, limits.max_token_bytes, generation)
}

/// A started claimgate: its bound addresses and a handle to stop it.
pub struct Running {
    pub app: Arc<App>,
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    proxy: tokio::task::JoinHandle<()>,
    admin: tokio::task::JoinHandle<()>,
}

/// Binds the proxy and admin listeners of `config` and starts serving.
pub async fn start(config: &ProcessConfig, app: Arc<App>) -> Result<Running, String> {
    let tls = match &config.tls {
        Some(files) => Some(server::tls_acceptor(files)?),
        None => None,
    };
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let admin_listener = TcpListener::bind(config.admin_listen)
        .await
        .map_err(|e| format!("cannot listen on {} (admin): {e}", config.admin_listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let admin_addr = admin_listener.local_addr().map_err(|e| e.to_string())?;
    let (shutdown, rx) = watch::channel(false);
    let proxy = tokio::spawn(server::serve(listener, app.clone(), tls, rx.clone()));
    let admin = tokio::spawn(crate::admin::serve(admin_listener, app.clone(), rx));
    Ok(Running {
        app,
        addr,
        admin_addr,
        shutdown,
        proxy,
        admin,
    })
}

impl Running {
    /// Drains: `/readyz` turns 503, claimgate keeps serving for `delay` (so
    /// load balancers notice), then stops accepting and waits for in-flight
    /// requests up to the grace period.
    pub async fn shutdown(self, delay: Duration) {
        self.app.start_draining();
        tokio::time::sleep(delay).await;
        let _ = self.shutdown.send(true);
        let _ = self.proxy.await;
        let _ = self.admin.await;
    }
}

/// Reads the process file and policy directory, builds the app.
pub fn load(
    config_path: &std::path::Path,
    vars: Box<dyn Vars>,
) -> Result<(ProcessConfig, Arc<App>), ConfigErrors> {
    let config = ProcessConfig::load(config_path, vars.as_ref())?;
    let sources = PolicySource::read_dir(&config.policies)?;
    let app = App::new(
        config.limits.clone(),
        Some(config.policies.clone()),
        &sources,
        vars,
    )?;
    Ok((config, app))
}
