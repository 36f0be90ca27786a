//! The keys of each issuer: loaded from a file or a `jwks_uri`, held behind
//! their own `ArcSwap`, refreshed in the background. A failed refresh keeps
//! the last good keys (SECURITY.md rule 12).

pub mod fetch;
pub mod keys;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use jsonwebtoken::Algorithm;
use tokio::sync::Notify;

pub use fetch::Fetcher;
pub use keys::{JwksError, KeySet, VerifyKey};

use crate::metrics::Metrics;

/// Where an issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeySource {
    File(PathBuf),
    Uri { url: String, allow_http: bool },
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::File(p) => write!(f, "file {}", p.display()),
            KeySource::Uri { url, .. } => write!(f, "{url}"),
        }
    }
}

/// When an issuer's keys are fetched again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Refresh {
    /// Background refresh period after a success.
    pub interval: Duration,
    /// Least time between two loads caused by unknown `kid`s, counted from
    /// the last load attempt of any kind (SECURITY.md rule 11).
    pub unknown_kid_cooldown: Duration,
}

/// The key set of one issuer.
pub struct JwksStore {
    issuer: String,
    source: KeySource,
    algorithms: Vec<Algorithm>,
    refresh: Refresh,
    keys: ArcSwapOption<KeySet>,
    /// One load at a time: a flood of unknown kids waits on the load in
    /// flight instead of starting its own.
    load_gate: tokio::sync::Mutex<()>,
    last_attempt: std::sync::Mutex<Option<Instant>>,
    loaded: AtomicBool,
    loaded_notify: Notify,
    fetcher: Fetcher,
    metrics: Arc<Metrics>,
}

/// How long to wait before retrying a load that failed.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

impl JwksStore {
    pub fn new(
        issuer: String,
        source: KeySource,
        algorithms: Vec<Algorithm>,
        refresh: Refresh,
        fetcher: Fetcher,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            issuer,
            source,
            algorithms,
            refresh,
            keys: ArcSwapOption::empty(),
            load_gate: tokio::sync::Mutex::new(()),
            last_attempt: std::sync::Mutex::new(None),
            loaded: AtomicBool::new(false),
            loaded_notify: Notify::new(),
            fetcher,
            metrics,
        }
    }

    /// The current keys, or `None` before the first successful load.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.keys.load_full()
    }

    /// Whether the key with this fingerprint is in the current set. No
    /// refcount traffic: this runs on every verified-token cache hit.
    pub fn has_key(&self, fingerprint: u64) -> bool {
        self.keys
            .load()
            .as_ref()
            .is_some_and(|set| set.contains(fingerprint))
    }

    /// True once a load has succeeded.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Waits until the first load succeeded.
    pub async fn wait_loaded(&self) {
        loop {
            let notified = self.loaded_notify.notified();
            if self.is_loaded() {
                return;
            }
            notified.await;
        }
    }

    /// Loads the keys once. On failure the previous keys stay in place.
    pub async fn refresh(&self) -> Result<usize, JwksError> {
        let _gate = self.load_gate.lock().await;
        self.refresh_locked().await
    }

    /// A token named a `kid` this issuer does not have: maybe the IdP rotated
    /// its keys. Loads again unless a load was attempted within the cooldown;
    /// while a load is in flight, waits for it instead of starting another.
    /// Returns whether the keys may have changed (worth verifying again).
    pub async fn refresh_for_unknown_kid(&self) -> bool {
        let before = self.keys.load_full();
        let _gate = self.load_gate.lock().await;
        // The load we may have waited for could have brought the key.
        if !same_keys(&before, &self.keys.load_full()) {
            return true;
        }
        if self.in_cooldown() {
            self.metrics
                .jwks_refreshes_suppressed
                .with_label_values(&[&self.issuer])
                .inc();
            return false;
        }
        self.refresh_locked().await.is_ok()
    }

    fn in_cooldown(&self) -> bool {
        let last = *self.last_attempt.lock().unwrap_or_else(|p| p.into_inner());
        last.is_some_and(|t| t.elapsed() < self.refresh.unknown_kid_cooldown)
    }

    async fn refresh_locked(&self) -> Result<usize, JwksError> {
        *self.last_attempt.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        let result = self.load().await;
        let issuer = self.issuer.as_str();
        match &result {
            Ok(set) => {
                for why in &set.skipped {
                    tracing::warn!(issuer, source = %self.source, "JWKS key skipped: {why}");
                }
                let n = set.len();
                self.keys.store(Some(set.clone()));
                self.loaded.store(true, Ordering::Release);
                self.loaded_notify.notify_waiters();
                self.metrics
                    .jwks_fetches
                    .with_label_values(&[issuer, "success"])
                    .inc();
                self.metrics
                    .jwks_keys
                    .with_label_values(&[issuer])
                    .set(n as i64);
                self.metrics
                    .jwks_last_success
                    .with_label_values(&[issuer])
                    .set(unix_now() as i64);
            }
            Err(e) => {
                tracing::warn!(issuer, source = %self.source, "JWKS load failed, keeping the last good keys: {e}");
                self.metrics
                    .jwks_fetches
                    .with_label_values(&[issuer, "failure"])
                    .inc();
            }
        }
        result.map(|s| s.len())
    }

    async fn load(&self) -> Result<Arc<KeySet>, JwksError> {
        let bytes = match &self.source {
            KeySource::File(path) => tokio::fs::read(path)
                .await
                .map_err(|e| JwksError::Fetch(format!("{}: {e}", path.display())))?
                .into(),
            KeySource::Uri { url, allow_http } => self.fetcher.get(url, *allow_http).await?,
        };
        keys::parse(&bytes, &self.algorithms).map(Arc::new)
    }

    /// Keeps the keys fresh until the returned task is aborted: every
    /// `refresh_interval` after a success, sooner after a failure.
    pub fn spawn_refresher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let store = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(s) = store.upgrade() else { return };
                let wait = match s.refresh().await {
                    Ok(_) => s.refresh.interval,
                    Err(_) => RETRY_AFTER_FAILURE.min(s.refresh.interval),
                };
                drop(s);
                tokio::time::sleep(wait).await;
            }
        })
    }
}

fn same_keys(a: &Option<Arc<KeySet>>, b: &Option<Arc<KeySet>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
