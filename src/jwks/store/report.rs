//! What the operator sees of a store: its keys (never key material), age,
//! next load and last error, and what a forced load changed.

use std::collections::BTreeSet;
use std::time::Instant;

use super::JwksStore;
use crate::jwks::KeySet;

/// What an operator-forced load changed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyChange {
    pub issuer: String,
    /// Kids (or `#n` for keys without one) now published and not before.
    pub added: Vec<String>,
    /// Kids no longer published: tokens they verified are refused from now
    /// on, cached ones included.
    pub removed: Vec<String>,
    pub keys: usize,
    /// Why the load failed; the previous keys stay in place.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One key as the operator sees it: no key material.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyInfo {
    pub kid: Option<String>,
    pub kty: &'static str,
    pub algorithms: Vec<&'static str>,
}

/// The state of one issuer's keys, for `GET /admin/keys`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoreInfo {
    pub issuer: String,
    pub source: String,
    pub loaded: bool,
    pub keys: Vec<KeyInfo>,
    /// Seconds since the last successful load (a 304 counts).
    pub age_seconds: Option<u64>,
    /// Seconds until the next scheduled (or deferred kid-miss) load.
    pub next_refresh_seconds: Option<u64>,
    /// The last load's error, if the last load failed.
    pub last_error: Option<String>,
}

impl JwksStore {
    /// The operator's view of this store: keys (no material), age, the next
    /// load, the last error.
    pub fn info(&self) -> StoreInfo {
        let keys = self
            .current()
            .map(|set| {
                set.keys()
                    .iter()
                    .map(|k| KeyInfo {
                        kid: k.kid.clone(),
                        kty: k.kty,
                        algorithms: k.algorithms.iter().map(|a| a.name()).collect(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let state = self.state();
        let now = Instant::now();
        let next = match (state.next_load_at, state.deferred) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        StoreInfo {
            issuer: self.issuer.clone(),
            source: self.source.to_string(),
            loaded: self.is_loaded(),
            keys,
            age_seconds: state.last_success.map(|t| t.elapsed().as_secs()),
            next_refresh_seconds: next.map(|t| t.saturating_duration_since(now).as_secs()),
            last_error: state.last_error.clone(),
        }
    }
}

/// The names of a key set's keys: kids, or `#i` for keys without one.
pub(super) fn kid_names(set: Option<&KeySet>) -> BTreeSet<String> {
    set.map(|s| {
        s.keys()
            .iter()
            .enumerate()
            .map(|(i, k)| k.kid.clone().unwrap_or_else(|| format!("#{i}")))
            .collect()
    })
    .unwrap_or_default()
}
