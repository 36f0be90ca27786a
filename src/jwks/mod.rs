//! The keys of each issuer: loaded from a file or a `jwks_uri`, held behind
//! their own `ArcSwap`, refreshed in the background. A failed refresh keeps
//! the last good keys (SECURITY.md rule 12).

pub mod fetch;
pub mod keys;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// The key set of one issuer.
pub struct JwksStore {
    issuer: String,
    source: KeySource,
    algorithms: Vec<Algorithm>,
    refresh_interval: Duration,
    keys: ArcSwapOption<KeySet>,
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
        refresh_interval: Duration,
        fetcher: Fetcher,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            issuer,
            source,
            algorithms,
            refresh_interval,
            keys: ArcSwapOption::empty(),
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
                    Ok(_) => s.refresh_interval,
                    Err(_) => RETRY_AFTER_FAILURE.min(s.refresh_interval),
                };
                drop(s);
                tokio::time::sleep(wait).await;
            }
        })
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
