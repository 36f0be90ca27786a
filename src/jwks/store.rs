//! One issuer's keys: the current set behind an `ArcSwap`, loaded by a
//! background task on a jittered schedule, on demand when a token names an
//! unknown `kid` (rotation), and when the operator says so.
//!
//! SECURITY.md rule 11, the rotation contract:
//! - one load in flight per issuer (`load_gate`);
//! - kid-miss loads at most one per `unknown_kid_cooldown`, counted from the
//!   last *kid-miss* load only: scheduled, conditional and forced loads never
//!   arm it, so a rotation just after a scheduled refresh is seen at once;
//! - a negative-cache entry for a kid is dropped by any load that completes
//!   after it was recorded;
//! - a kid-miss during the cooldown schedules one load at its end, so a
//!   flood delays a real rotation by at most one cooldown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use tokio::sync::Notify;

use super::fetch::{Fetch, Validators};
use super::keys::{self, JwksError, KeySet};
use super::{unix_now, Algorithm, Fetcher, KeySource, Refresh, SecretRef};
use crate::metrics::Metrics;

/// How long to wait before retrying a load that failed.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// Bound of the unknown-kid negative cache; when full it starts over.
const MAX_UNKNOWN_KIDS: usize = 1024;
/// Scheduled refreshes land within ±10 % of their period, so that a fleet of
/// sidecars started together does not reach the IdP in lockstep.
const JITTER: f64 = 0.10;

/// Why a load runs: decides whether it arms the kid-miss cooldown and
/// whether it may be conditional.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Scheduled,
    KidMiss,
    Forced,
}

/// What a load that did not fail did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loaded {
    /// A new key set is in place.
    Keys,
    /// The IdP answered `304 Not Modified`: the keys stay.
    NotModified,
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
    state: Mutex<State>,
    /// Wakes the background task when a deferred kid-miss load is set.
    wake: Arc<Notify>,
    loaded: AtomicBool,
    loaded_notify: Notify,
    fetcher: Fetcher,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct State {
    /// When the last kid-miss load started: the cooldown counts from it.
    last_kid_miss_load: Option<Instant>,
    last_attempt: Option<Instant>,
    last_success: Option<Instant>,
    last_error: Option<String>,
    /// The period until the next scheduled refresh (from `max-age`).
    next_interval: Option<Duration>,
    /// When the background task will load next (for the operator's view).
    next_load_at: Option<Instant>,
    /// A kid-miss load owed at the end of the cooldown.
    deferred: Option<Instant>,
    /// Unknown `kid`s and when they were recorded, so that a flood of them
    /// is answered without waiting on the load gate.
    unknown_kids: HashMap<String, Instant>,
    /// The last answer's `ETag` / `Last-Modified`.
    validators: Option<Validators>,
}

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
            state: Mutex::new(State::default()),
            wake: Arc::new(Notify::new()),
            loaded: AtomicBool::new(false),
            loaded_notify: Notify::new(),
            fetcher,
            metrics,
        }
    }

    /// The issuer's configuration name.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The registry this store counts into (its issuer's other parts, such
    /// as introspection, count into the same one).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
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

    /// Loads the keys once, as a scheduled refresh would (conditionally).
    /// On failure the previous keys stay in place.
    pub async fn refresh(&self) -> Result<usize, JwksError> {
        let _gate = self.load_gate.lock().await;
        self.load_locked(Trigger::Scheduled).await?;
        Ok(self.current().map_or(0, |k| k.len()))
    }

    /// The operator's reload: loads now, unconditionally, bypassing the
    /// kid-miss cooldown (and not arming it), and says which keys came and
    /// went. Tokens verified by a removed key are refused from the moment
    /// this returns, cached ones included (the cache checks the key).
    pub async fn reload_now(&self) -> KeyChange {
        let _gate = self.load_gate.lock().await;
        let before = kid_names(self.current().as_deref());
        let error = self
            .load_locked(Trigger::Forced)
            .await
            .err()
            .map(|e| e.to_string());
        let after = kid_names(self.current().as_deref());
        KeyChange {
            issuer: self.issuer.clone(),
            added: after.difference(&before).cloned().collect(),
            removed: before.difference(&after).cloned().collect(),
            keys: after.len(),
            error,
        }
    }

    /// A token named a `kid` this issuer does not have: maybe the IdP rotated
    /// its keys. Loads now unless a kid-miss load ran within the cooldown;
    /// while a load is in flight, waits for it instead of starting another.
    /// Returns whether the keys may now verify the token (worth verifying
    /// again).
    pub async fn refresh_for_unknown_kid(&self, kid: Option<&str>) -> bool {
        let kid = kid.unwrap_or("");
        if self.recently_unknown(kid) {
            self.defer_kid_miss_load();
            self.suppressed();
            return false;
        }
        let before = self.keys.load_full();
        let _gate = self.load_gate.lock().await;
        // The load we may have waited for could have brought the key.
        if !same_keys(&before, &self.keys.load_full()) && self.knows(kid) {
            return true;
        }
        if self.in_cooldown() {
            self.remember_unknown(kid);
            self.defer_kid_miss_load();
            self.suppressed();
            return false;
        }
        let loaded = self.load_locked(Trigger::KidMiss).await;
        if loaded == Ok(Loaded::Keys) && self.knows(kid) {
            return true;
        }
        self.remember_unknown(kid);
        false
    }

    /// Whether the current keys have `kid` (any kid, for a shared secret).
    fn knows(&self, kid: &str) -> bool {
        self.keys
            .load()
            .as_ref()
            .is_some_and(|set| set.knows_kid(kid))
    }

    fn suppressed(&self) {
        self.metrics
            .jwks_refreshes_suppressed
            .with_label_values(&[&self.issuer])
            .inc();
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn recently_unknown(&self, kid: &str) -> bool {
        self.state().unknown_kids.contains_key(kid)
    }

    fn remember_unknown(&self, kid: &str) {
        let mut state = self.state();
        if state.unknown_kids.len() >= MAX_UNKNOWN_KIDS {
            state.unknown_kids.clear();
        }
        state.unknown_kids.insert(kid.to_string(), Instant::now());
    }

    fn in_cooldown(&self) -> bool {
        self.state()
            .last_kid_miss_load
            .is_some_and(|t| t.elapsed() < self.refresh.unknown_kid_cooldown)
    }

    /// Owes one kid-miss load at the end of the current cooldown (one, however
    /// many kid-misses ask), and wakes the background task to run it.
    fn defer_kid_miss_load(&self) {
        let mut state = self.state();
        if state.deferred.is_some() {
            return;
        }
        let at = match state.last_kid_miss_load {
            Some(t) => t + self.refresh.unknown_kid_cooldown,
            None => Instant::now(),
        };
        state.deferred = Some(at);
        drop(state);
        self.wake.notify_one();
    }

    /// Loads with the gate held, records the outcome, and updates the keys,
    /// the metrics and the negative cache.
    async fn load_locked(&self, trigger: Trigger) -> Result<Loaded, JwksError> {
        let validators = {
            let mut state = self.state();
            let now = Instant::now();
            state.last_attempt = Some(now);
            if trigger == Trigger::KidMiss {
                state.last_kid_miss_load = Some(now);
                state.deferred = None;
            }
            // A forced load asks for the whole document: the operator wants
            // what the IdP publishes now, whatever its validators say.
            match trigger {
                Trigger::Forced => None,
                _ => state.validators.clone().filter(Validators::any),
            }
        };
        let result = self.load(validators.as_ref()).await;
        let issuer = self.issuer.as_str();
        let outcome = match result {
            Ok((fetched, interval)) => {
                let loaded = match fetched {
                    Some((set, validators)) => {
                        for why in &set.skipped {
                            tracing::warn!(issuer, source = %self.source, "JWKS key skipped: {why}");
                        }
                        self.metrics
                            .jwks_keys
                            .with_label_values(&[issuer])
                            .set(set.len() as i64);
                        self.keys.store(Some(set));
                        self.state().validators = validators;
                        Loaded::Keys
                    }
                    None => Loaded::NotModified,
                };
                let mut state = self.state();
                state.last_success = Some(Instant::now());
                state.last_error = None;
                state.next_interval = Some(interval);
                // Rule 11: a load that completed drops every negative entry
                // recorded before it (all of them: none is newer).
                state.unknown_kids.clear();
                drop(state);
                self.loaded.store(true, Ordering::Release);
                self.loaded_notify.notify_waiters();
                let result = match loaded {
                    Loaded::Keys => "success",
                    Loaded::NotModified => "not_modified",
                };
                self.metrics
                    .jwks_fetches
                    .with_label_values(&[issuer, result])
                    .inc();
                self.metrics
                    .jwks_last_success
                    .with_label_values(&[issuer])
                    .set(unix_now() as i64);
                Ok(loaded)
            }
            Err(e) => {
                self.metrics
                    .jwks_fetches
                    .with_label_values(&[issuer, "failure"])
                    .inc();
                let mut state = self.state();
                state.last_error = Some(e.to_string());
                let last = state.last_success;
                drop(state);
                let stale = last.is_some_and(|t| t.elapsed() > self.refresh.max_stale);
                if stale && self.keys.load().is_some() {
                    self.keys.store(None);
                    self.metrics.jwks_keys.with_label_values(&[issuer]).set(0);
                    tracing::error!(issuer, source = %self.source, max_stale = ?self.refresh.max_stale, "JWKS load failed and the last good keys are older than max_stale: dropped; requests for this issuer get 503 until a load succeeds: {e}");
                } else if self.keys.load().is_some() {
                    tracing::warn!(issuer, source = %self.source, "JWKS load failed, keeping the last good keys: {e}");
                } else {
                    tracing::warn!(issuer, source = %self.source, "JWKS load failed and no keys were ever loaded: requests for this issuer get 503 until a load succeeds: {e}");
                }
                Err(e)
            }
        };
        outcome
    }

    /// Fetches and parses the keys. `Ok((None, _))` is a 304. The duration is
    /// the period until the next scheduled refresh.
    #[allow(clippy::type_complexity)]
    async fn load(
        &self,
        since: Option<&Validators>,
    ) -> Result<(Option<(Arc<KeySet>, Option<Validators>)>, Duration), JwksError> {
        let fetched = match &self.source {
            KeySource::Secret(from) => {
                let set = self.load_secret(from)?;
                return Ok((Some((set, None)), self.refresh.interval));
            }
            KeySource::File(path) => {
                let bytes = tokio::fs::read(path)
                    .await
                    .map_err(|e| JwksError::Fetch(format!("{}: {e}", path.display())))?;
                let set = keys::parse(&bytes, &self.algorithms).map(Arc::new)?;
                return Ok((Some((set, None)), self.refresh.interval));
            }
            KeySource::Uri {
                url, allow_http, ..
            } => self.fetcher.get_if(url, *allow_http, since).await?,
            KeySource::Discovery {
                url,
                issuer,
                allow_http,
                ..
            } => {
                let jwks_uri = self.discover(url, issuer, *allow_http).await?;
                self.fetcher.get_if(&jwks_uri, *allow_http, since).await?
            }
        };
        let r = &self.refresh;
        let period = |max_age: Option<Duration>| match max_age {
            Some(age) => age.clamp(r.min_interval, r.max_interval),
            None => r.interval,
        };
        match fetched {
            Fetch::NotModified { max_age } => Ok((None, period(max_age))),
            Fetch::Body(f) => {
                let set = keys::parse(&f.body, &self.algorithms).map(Arc::new)?;
                Ok((Some((set, Some(f.validators))), period(f.max_age)))
            }
        }
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
}

fn same_keys(a: &Option<Arc<KeySet>>, b: &Option<Arc<KeySet>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

mod report;
mod schedule;

use report::kid_names;
pub use report::{KeyChange, KeyInfo, StoreInfo};
#[cfg(test)]
use schedule::{jittered, random_unit};

#[cfg(test)]
mod tests;
