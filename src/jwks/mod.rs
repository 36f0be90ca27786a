//! The keys of each issuer: loaded from a file or a `jwks_uri`, held behind
//! their own `ArcSwap`, refreshed in the background. A failed refresh keeps
//! the last good keys (SECURITY.md rule 12).

pub mod alg;
pub mod fetch;
pub mod keys;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use tokio::sync::Notify;

pub use alg::Algorithm;
pub use fetch::Fetcher;
pub use keys::{JwksError, KeySet, VerifyKey};

use crate::metrics::Metrics;

/// Where an issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeySource {
    File(PathBuf),
    Uri {
        url: String,
        allow_http: bool,
        /// Extra trusted roots (PEM), besides the Mozilla ones.
        ca_file: Option<PathBuf>,
    },
    /// OIDC discovery (OpenID Connect Discovery 1.0 §4): the document at
    /// `url` + `/.well-known/openid-configuration` must name `issuer`
    /// exactly (§4.3) and give an https `jwks_uri`. Read again on every
    /// load, so a moved `jwks_uri` is followed.
    Discovery {
        url: String,
        issuer: String,
        allow_http: bool,
        ca_file: Option<PathBuf>,
    },
    /// A shared HMAC secret. Only where it is read from is held here, so
    /// that logs, `Debug` and `/admin/config` can never show the value.
    Secret(SecretRef),
}

/// Where a shared secret is read from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SecretRef {
    Env(String),
    /// Re-read on every refresh, so a rotated secret file is picked up.
    File(PathBuf),
}

impl SecretRef {
    /// The secret's bytes; errors name the variable or file, never a value.
    /// A trailing newline from `echo` or an editor is not part of a file's
    /// secret. (A small file read: done in place, also from async code.)
    pub fn read(&self) -> Result<Vec<u8>, String> {
        match self {
            SecretRef::Env(name) => std::env::var(name)
                .map(String::into_bytes)
                .map_err(|_| format!("${name} is not set")),
            SecretRef::File(path) => {
                let mut b = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
                while b.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
                    b.pop();
                }
                Ok(b)
            }
        }
    }
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::File(p) => write!(f, "file {}", p.display()),
            KeySource::Uri { url, .. } => write!(f, "{url}"),
            KeySource::Discovery { url, .. } => write!(f, "discovery {url}"),
            KeySource::Secret(SecretRef::Env(name)) => write!(f, "secret from ${name}"),
            KeySource::Secret(SecretRef::File(p)) => write!(f, "secret file {}", p.display()),
        }
    }
}

/// When an issuer's keys are fetched again, and how long they stay usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Refresh {
    /// Background refresh period after a success without `Cache-Control`.
    pub interval: Duration,
    /// Bounds on a period taken from the response's `Cache-Control: max-age`.
    pub min_interval: Duration,
    pub max_interval: Duration,
    /// Keys not refreshed successfully for this long are dropped: requests
    /// for the issuer then get 503 rather than trust keys the IdP may have
    /// revoked long ago.
    pub max_stale: Duration,
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
    last_success: std::sync::Mutex<Option<Instant>>,
    /// The period until the next background refresh (from `max-age`).
    next_interval: std::sync::Mutex<Duration>,
    /// Recently refused unknown `kid`s, so that a flood of them is answered
    /// without waiting on the load gate. Entries live one cooldown.
    unknown_kids: std::sync::Mutex<HashMap<String, Instant>>,
    loaded: AtomicBool,
    loaded_notify: Notify,
    fetcher: Fetcher,
    metrics: Arc<Metrics>,
}

/// How long to wait before retrying a load that failed.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// Bound of the unknown-kid negative cache; when full it starts over.
const MAX_UNKNOWN_KIDS: usize = 1024;

impl JwksStore {
    pub fn new(
        issuer: String,
        source: KeySource,
        algorithms: Vec<Algorithm>,
        refresh: Refresh,
        fetcher: Fetcher,
        metrics: Arc<Metrics>,
    ) -> Self {
        // An issuer behind a private CA gets a fetcher of its own.
        let ca_file = match &source {
            KeySource::Uri { ca_file, .. } | KeySource::Discovery { ca_file, .. } => {
                ca_file.as_ref()
            }
            KeySource::File(_) | KeySource::Secret(_) => None,
        };
        let fetcher = match ca_file.map(|p| Fetcher::with_ca_file(p)) {
            None => fetcher,
            Some(Ok(f)) => f,
            Some(Err(e)) => {
                // Checked at load; reaching this means the file changed
                // since. Fetches then fail (and say why) rather than trust
                // less or more than configured.
                tracing::error!(issuer, "ca_file: {e}");
                Fetcher::broken(e)
            }
        };
        Self {
            issuer,
            source,
            algorithms,
            refresh,
            keys: ArcSwapOption::empty(),
            load_gate: tokio::sync::Mutex::new(()),
            last_attempt: std::sync::Mutex::new(None),
            last_success: std::sync::Mutex::new(None),
            next_interval: std::sync::Mutex::new(refresh.interval),
            unknown_kids: std::sync::Mutex::new(HashMap::new()),
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
    pub async fn refresh_for_unknown_kid(&self, kid: Option<&str>) -> bool {
        let kid = kid.unwrap_or("");
        if self.recently_unknown(kid) {
            self.suppressed();
            return false;
        }
        let before = self.keys.load_full();
        let _gate = self.load_gate.lock().await;
        // The load we may have waited for could have brought the key.
        if !same_keys(&before, &self.keys.load_full()) {
            return true;
        }
        if self.in_cooldown() {
            self.remember_unknown(kid);
            self.suppressed();
            return false;
        }
        let changed = self.refresh_locked().await.is_ok();
        if !changed {
            self.remember_unknown(kid);
        }
        changed
    }

    fn suppressed(&self) {
        self.metrics
            .jwks_refreshes_suppressed
            .with_label_values(&[&self.issuer])
            .inc();
    }

    fn recently_unknown(&self, kid: &str) -> bool {
        let cooldown = self.refresh.unknown_kid_cooldown;
        lock(&self.unknown_kids)
            .get(kid)
            .is_some_and(|t| t.elapsed() < cooldown)
    }

    fn remember_unknown(&self, kid: &str) {
        let mut kids = lock(&self.unknown_kids);
        if kids.len() >= MAX_UNKNOWN_KIDS {
            kids.clear();
        }
        kids.insert(kid.to_string(), Instant::now());
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
                *lock(&self.last_success) = Some(Instant::now());
                // New keys: a kid refused before may be among them.
                lock(&self.unknown_kids).clear();
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
                self.metrics
                    .jwks_fetches
                    .with_label_values(&[issuer, "failure"])
                    .inc();
                let last = *lock(&self.last_success);
                let stale = last.is_some_and(|t| t.elapsed() > self.refresh.max_stale);
                if stale && self.keys.load().is_some() {
                    self.keys.store(None);
                    self.metrics.jwks_keys.with_label_values(&[issuer]).set(0);
                    tracing::error!(issuer, source = %self.source, max_stale = ?self.refresh.max_stale, "JWKS load failed and the last good keys are older than max_stale: dropped; requests for this issuer get 503 until a load succeeds: {e}");
                } else {
                    tracing::warn!(issuer, source = %self.source, "JWKS load failed, keeping the last good keys: {e}");
                }
            }
        }
        result.map(|s| s.len())
    }

    async fn load(&self) -> Result<Arc<KeySet>, JwksError> {
        let (bytes, max_age) = match &self.source {
            KeySource::Secret(from) => return self.load_secret(from),
            KeySource::File(path) => (
                tokio::fs::read(path)
                    .await
                    .map_err(|e| JwksError::Fetch(format!("{}: {e}", path.display())))?
                    .into(),
                None,
            ),
            KeySource::Uri {
                url, allow_http, ..
            } => {
                let f = self.fetcher.get(url, *allow_http).await?;
                (f.body, f.max_age)
            }
            KeySource::Discovery {
                url,
                issuer,
                allow_http,
                ..
            } => {
                let jwks_uri = self.discover(url, issuer, *allow_http).await?;
                let f = self.fetcher.get(&jwks_uri, *allow_http).await?;
                (f.body, f.max_age)
            }
        };
        let set = keys::parse(&bytes, &self.algorithms).map(Arc::new)?;
        let r = &self.refresh;
        *lock(&self.next_interval) = match max_age {
            Some(age) => age.clamp(r.min_interval, r.max_interval),
            None => r.interval,
        };
        Ok(set)
    }

    /// The key set of a shared secret, read where the config says.
    fn load_secret(&self, from: &SecretRef) -> Result<Arc<KeySet>, JwksError> {
        let secret = from.read().map_err(JwksError::Fetch)?;
        keys::secret(&secret, &self.algorithms).map(Arc::new)
    }

    /// The `jwks_uri` of an OIDC discovery document whose `issuer` is
    /// exactly `issuer`.
    async fn discover(
        &self,
        url: &str,
        issuer: &str,
        allow_http: bool,
    ) -> Result<String, JwksError> {
        let well_known = format!(
            "{}/.well-known/openid-configuration",
            url.trim_end_matches('/')
        );
        let doc = self.fetcher.get(&well_known, allow_http).await?;
        let doc: serde_json::Value = serde_json::from_slice(&doc.body)
            .map_err(|e| JwksError::Fetch(format!("discovery document: {e}")))?;
        let named = doc.get("issuer").and_then(|v| v.as_str()).unwrap_or("");
        if named != issuer {
            return Err(JwksError::Fetch(format!(
                "discovery document names issuer {named:?}, not {issuer:?}"
            )));
        }
        let jwks_uri = doc
            .get("jwks_uri")
            .and_then(|v| v.as_str())
            .ok_or_else(|| JwksError::Fetch("discovery document has no jwks_uri".into()))?;
        Ok(jwks_uri.to_string())
    }

    /// Keeps the keys fresh until the returned task is aborted: every
    /// `refresh_interval` after a success, sooner after a failure.
    pub fn spawn_refresher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let store = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(s) = store.upgrade() else { return };
                let wait = match s.refresh().await {
                    Ok(_) => *lock(&s.next_interval),
                    Err(_) => RETRY_AFTER_FAILURE.min(s.refresh.interval),
                };
                drop(s);
                tokio::time::sleep(wait).await;
            }
        })
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::keys::{jwks, SigningKey};

    const REFRESH: Refresh = Refresh {
        interval: Duration::from_secs(3600),
        min_interval: Duration::from_secs(1),
        max_interval: Duration::from_secs(3600),
        max_stale: Duration::from_secs(86400),
        unknown_kid_cooldown: Duration::from_secs(30),
    };

    /// A store of issuer `i` over `source`, and its metrics.
    fn store(source: KeySource, algorithms: &[Algorithm]) -> (JwksStore, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let store = JwksStore::new(
            "i".into(),
            source,
            algorithms.to_vec(),
            REFRESH,
            Fetcher::default(),
            metrics.clone(),
        );
        (store, metrics)
    }

    /// A store loading a one-key JWKS file in `dir`.
    fn file_store(dir: &tempfile::TempDir) -> (JwksStore, Arc<Metrics>) {
        let path = dir.path().join("jwks.json");
        let key = SigningKey::generate(Algorithm::ES256, "k1");
        std::fs::write(&path, jwks([&key]).to_string()).unwrap();
        store(KeySource::File(path), &keys::ASYMMETRIC)
    }

    #[tokio::test]
    async fn a_kid_known_to_be_unknown_does_not_wait_for_the_load_gate() {
        let dir = tempfile::tempdir().unwrap();
        let (store, metrics) = file_store(&dir);
        store.refresh().await.unwrap();
        // Right after a load: in the cooldown, `x` is refused and remembered.
        assert!(!store.refresh_for_unknown_kid(Some("x")).await);
        // With a load in flight (the gate held), `x` is answered at once...
        let gate = store.load_gate.lock().await;
        let quick = tokio::time::timeout(
            Duration::from_millis(200),
            store.refresh_for_unknown_kid(Some("x")),
        )
        .await;
        assert_eq!(quick, Ok(false));
        // ...while a kid never seen waits for the load.
        let waits = tokio::time::timeout(
            Duration::from_millis(200),
            store.refresh_for_unknown_kid(Some("y")),
        )
        .await;
        assert!(waits.is_err());
        drop(gate);
        let suppressed = metrics
            .jwks_refreshes_suppressed
            .with_label_values(&["i"])
            .get();
        assert_eq!(suppressed, 2);
    }

    #[tokio::test]
    async fn the_negative_cache_is_bounded_and_cleared_by_new_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = file_store(&dir);
        store.refresh().await.unwrap();
        for i in 0..5000 {
            store.remember_unknown(&format!("kid-{i}"));
            assert!(lock(&store.unknown_kids).len() <= MAX_UNKNOWN_KIDS);
        }
        assert!(store.recently_unknown("kid-4999"));
        store.refresh().await.unwrap();
        assert!(!store.recently_unknown("kid-4999"));
    }

    #[tokio::test]
    async fn secrets_come_from_the_environment_or_say_which_variable_is_missing() {
        let store =
            |name: &str| store(KeySource::Secret(SecretRef::Env(name.into())), &keys::HMAC).0;
        // `PATH` is set in every test environment and long enough for HS256.
        let path_len = std::env::var("PATH").unwrap().len();
        match store("PATH").refresh().await {
            Ok(n) => assert!(path_len >= 32 && n == 1),
            Err(e) => assert!(path_len < 32 && e.to_string().contains("bytes"), "{e}"),
        }
        let missing = store("CLAIMGATE_TEST_UNSET_SECRET").refresh().await;
        assert_eq!(
            missing,
            Err(JwksError::Fetch(
                "$CLAIMGATE_TEST_UNSET_SECRET is not set".into()
            ))
        );
    }
}
