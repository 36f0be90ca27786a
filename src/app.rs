//! The running process: the current snapshot behind one `ArcSwap`, the key
//! stores that outlive snapshots, the upstream client and the metrics; and
//! `start`, which binds the listeners.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::jwks::Algorithm;
use arc_swap::ArcSwap;

use crate::config::{
    self, digest, ConfigErrors, Limits, Origin, PolicySource, ProcessConfig, Vars,
};
use crate::jwks::{Fetcher, JwksStore, KeySource, Refresh};
use crate::metrics::Metrics;
use crate::proxy::UpstreamClient;
use crate::snapshot::Snapshot;

mod running;
pub use running::{start, Running};

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
    /// Rate-limit counts: this node's, and the fleet's Redis when configured.
    pub quotas: crate::quota::Quotas,
    pub limits: Limits,
    /// The OTLP span exporter, when `tracing:` is configured.
    pub otel: Option<crate::otel::Otel>,
    /// Where reloads read policy files from; `None` for embedded policies.
    policy_dir: Option<PathBuf>,
    vars: Box<dyn Vars>,
    stores: Mutex<HashMap<StoreKey, StoreEntry>>,
    fetcher: Fetcher,
    draining: AtomicBool,
    /// Serialises reloads so two never interleave.
    reload_lock: tokio::sync::Mutex<()>,
    /// The last reload that failed, if none succeeded since.
    failed: Mutex<Option<FailedLoad>>,
}

/// A reload that was refused; the snapshot before it keeps serving.
#[derive(Debug, Clone)]
pub struct FailedLoad {
    pub sha256: String,
    pub at: SystemTime,
    pub errors: usize,
}

/// Whether a reload was asked for whatever the files hold, or only if they
/// changed since the last load or failed attempt (the watcher's and poll's
/// kind, so that an unchanged broken file is not reported every poll).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadKind {
    Forced,
    IfChanged,
}

impl App {
    /// What the decision core uses for one request over `snapshot`: the
    /// verified-token cache and the time now. Every front door starts here.
    pub fn decision_ctx<'s>(
        &'s self,
        snapshot: &'s crate::snapshot::Snapshot,
    ) -> crate::decision::Ctx<'s> {
        crate::decision::Ctx {
            snapshot,
            cache: Some(&self.token_cache),
            now: crate::jwks::unix_now(),
            quotas: Some(&self.quotas),
            client: None,
            marks: None,
        }
    }

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
        metrics.init_series(&snapshot);
        let otel = match &limits.tracing {
            Some(settings) => Some(crate::otel::Otel::new(settings).map_err(|e| {
                let mut errs = ConfigErrors::default();
                errs.push(
                    crate::config::Origin::file(std::path::Path::new("tracing")),
                    e,
                );
                errs
            })?),
            None => None,
        };
        let upstream = UpstreamClient::new(
            limits.upstream_connect_timeout,
            limits.upstream_response_timeout,
        );
        Ok(Arc::new(Self {
            snapshot: ArcSwap::from_pointee(snapshot),
            quotas: crate::quota::Quotas::new(
                limits.rate_limit_keys,
                limits.redis.clone(),
                metrics.clone(),
            ),
            metrics,
            upstream,
            token_cache: crate::token::TokenCache::new(limits.token_cache_entries),

            limits,
            otel,
            policy_dir,
            vars,
            stores,
            fetcher,
            draining: AtomicBool::new(false),
            reload_lock: tokio::sync::Mutex::new(()),
            failed: Mutex::new(None),
        }))
    }

    /// The snapshot serving requests now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Ready: not draining, and every issuer's keys loaded once (rule 12).
    pub fn is_ready(&self) -> bool {
        self.not_ready().is_none()
    }

    /// Why the process is not ready (`/readyz` says it), or `None`.
    pub fn not_ready(&self) -> Option<String> {
        if self.draining.load(Ordering::Acquire) {
            return Some("draining (shutting down)".into());
        }
        let snapshot = self.snapshot.load();
        let mut waiting: Vec<&str> = snapshot
            .issuers
            .iter()
            .filter(|i| !i.keys.is_loaded())
            .map(|i| i.name.as_str())
            .collect();
        waiting.sort_unstable();
        (!waiting.is_empty()).then(|| {
            format!(
                "no keys loaded yet for issuer(s) {} (GET /admin/keys shows the last error)",
                waiting.join(", ")
            )
        })
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

    /// The last refused reload, if no reload succeeded after it.
    pub fn last_failure(&self) -> Option<FailedLoad> {
        lock(&self.failed).clone()
    }

    /// Rebuilds the snapshot from the policy directory and swaps it in whole.
    /// On any error the old snapshot keeps serving and every error is
    /// returned.
    pub async fn reload(&self) -> Result<u64, ConfigErrors> {
        self.reload_as(ReloadKind::Forced)
            .await
            .map(|g| g.unwrap_or_else(|| self.snapshot.load().generation))
    }

    /// Reloads as `kind` says; `Ok(None)` when an `IfChanged` reload found
    /// nothing new.
    pub async fn reload_as(&self, kind: ReloadKind) -> Result<Option<u64>, ConfigErrors> {
        let _guard = self.reload_lock.lock().await;
        let Some(dir) = &self.policy_dir else {
            let mut errs = ConfigErrors::default();
            errs.push(
                Origin::file(std::path::Path::new("(embedded)")),
                "embedded policies cannot be reloaded",
            );
            return Err(errs);
        };
        let read = PolicySource::read_dir(dir);
        let sha256 = read.as_ref().map(|s| digest(s)).unwrap_or_default();
        if kind == ReloadKind::IfChanged {
            let seen = self.snapshot.load().source.sha256 == sha256
                || lock(&self.failed)
                    .as_ref()
                    .is_some_and(|f| f.sha256 == sha256);
            if seen {
                return Ok(None);
            }
        }
        let result = read.and_then(|sources| self.swap_in(&sources));
        let label = if result.is_ok() { "success" } else { "failure" };
        self.metrics
            .config_reloads
            .with_label_values(&[label])
            .inc();
        match &result {
            Ok(g) => {
                *lock(&self.failed) = None;
                tracing::info!(generation = g, %sha256, "policies reloaded");
            }
            Err(errs) => {
                *lock(&self.failed) = Some(FailedLoad {
                    sha256,
                    at: SystemTime::now(),
                    errors: errs.len(),
                });
                for e in &errs.0 {
                    tracing::error!("policy reload refused: {e}");
                }
            }
        }
        result.map(Some)
    }

    /// Compiles `sources` and swaps the result in. Callers hold `reload_lock`.
    fn swap_in(&self, sources: &[PolicySource]) -> Result<u64, ConfigErrors> {
        let previous = self.snapshot.load_full();
        let generation = previous.generation + 1;
        let mut snapshot = compile_with(
            &self.stores,
            &self.fetcher,
            &self.metrics,
            sources,
            self.vars.as_ref(),
            &self.limits,
            generation,
        )?;
        // An issuer whose settings and key store did not change stays the
        // same `Arc`, so the tokens it verified stay cached.
        snapshot.issuers.adopt_unchanged(&previous.issuers);
        drop(previous);
        let snapshot = Arc::new(snapshot);
        self.snapshot.store(snapshot.clone());
        self.metrics.config_generation.set(generation as i64);
        self.metrics.init_series(&snapshot);
        // Cached tokens hold their issuer, and with it its key store: drop
        // those of changed issuers before pruning, or old stores would look
        // used and keep polling.
        self.token_cache.retain_issuers(&snapshot.issuers);
        self.prune_stores();
        Ok(generation)
    }

    /// Stops the key stores no snapshot refers to any more.
    fn prune_stores(&self) {
        let mut stores = lock(&self.stores);
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

/// Locks `m`; a panic elsewhere while holding it leaves data that is still
/// whole (every critical section here is a single assignment or map update).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
    let mut stores = lock(stores);
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
