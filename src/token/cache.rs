//! The verified-token cache: a token verified once is not verified again
//! until it expires or the key that verified it leaves the issuer's JWKS.
//!
//! Keyed by SHA-256 of the whole token. An entry remembers the exact issuer
//! object that verified it, so a reload that changes any issuer setting
//! (audience, leeway, untrusted claims) makes its entries miss. Policy is
//! never cached: it runs on every request.

use std::sync::atomic::{AtomicU64, Ordering};

use aws_lc_rs::digest::{digest, SHA256};
use dashmap::DashMap;

use super::issuer::Issuers;
use super::verify::Verified;

/// How often a full cache may be swept for expired entries, in seconds.
const SWEEP_EVERY_SECS: u64 = 1;

pub struct TokenCache {
    map: DashMap<[u8; 32], Verified>,
    capacity: usize,
    last_sweep: AtomicU64,
}

impl TokenCache {
    /// A cache of at most `capacity` tokens; 0 disables it.
    pub fn new(capacity: usize) -> Self {
        Self {
            map: DashMap::new(),
            capacity,
            last_sweep: AtomicU64::new(0),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Keeps only the entries verified by an issuer of `issuers` itself. A
    /// reload calls this: an issuer whose settings changed is a new `Arc`, so
    /// its tokens go (and with them the last hold on a replaced key store).
    pub fn retain_issuers(&self, issuers: &Issuers) {
        self.map.retain(|_, v| issuers.holds(&v.issuer));
    }

    fn key(token: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
        out
    }

    /// The cached verification of `token`, if it still holds at `now` for a
    /// route accepting `accepted` issuers under the current `issuers`.
    pub fn get(
        &self,
        token: &str,
        issuers: &Issuers,
        accepted: Option<&[String]>,
        now: u64,
    ) -> Option<Verified> {
        if self.capacity == 0 {
            return None;
        }
        let key = Self::key(token);
        let hit = self.map.get(&key)?.value().clone();
        let same_issuer = issuers.holds(&hit.issuer);
        let live = (now as f64) < hit.exp + hit.issuer.leeway as f64;
        let key_present = hit.issuer.keys.has_key(hit.key_fingerprint);
        if !(same_issuer && live && key_present) {
            self.map.remove(&key);
            return None;
        }
        // A route restriction is the route's, not the token's: check it on
        // every hit. A miss here re-verifies, which refuses with the reason.
        if accepted.is_some_and(|names| !names.iter().any(|n| *n == hit.issuer.name)) {
            return None;
        }
        Some(hit)
    }

    /// Remembers a successful verification.
    pub fn insert(&self, token: &str, verified: &Verified, now: u64) {
        if self.capacity == 0 {
            return;
        }
        if self.map.len() >= self.capacity {
            // Sweep expired entries, at most once per second, so a full cache
            // of live tokens does not cost a scan per request.
            let last = self.last_sweep.load(Ordering::Relaxed);
            if now >= last + SWEEP_EVERY_SECS
                && self
                    .last_sweep
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                self.map
                    .retain(|_, v| (now as f64) < v.exp + v.issuer.leeway as f64);
            }
            if self.map.len() >= self.capacity {
                return;
            }
        }
        self.map.insert(Self::key(token), verified.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::keys::{jwks, SigningKey};
    use crate::jwks::Algorithm;
    use crate::jwks::{Fetcher, JwksStore, KeySource, Refresh};
    use crate::metrics::Metrics;
    use crate::token::{verify, Issuer};
    use serde_json::json;
    use std::sync::Arc;
    use std::time::Duration;

    async fn issuers(key: &SigningKey, dir: &tempfile::TempDir) -> Issuers {
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, jwks([key]).to_string()).unwrap();
        let refresh = Refresh {
            min_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(3600),
            max_stale: Duration::from_secs(86400),
            interval: Duration::from_secs(3600),
            unknown_kid_cooldown: Duration::from_secs(30),
        };
        let store = Arc::new(JwksStore::new(
            "i".into(),
            KeySource::File(path),
            vec![key.alg],
            refresh,
            Fetcher::default(),
            Arc::new(Metrics::new()),
        ));
        store.refresh().await.unwrap();
        let mut issuers = Issuers::default();
        issuers.insert(Issuer {
            name: "i".into(),
            iss: "https://i".into(),
            audiences: vec!["a".into()],
            algorithms: vec![key.alg],
            leeway: 0,
            untrusted_claims: vec![],
            refuse_untrusted: false,
            profile: crate::token::Profile::Generic,
            token_from: vec![crate::token::extract::TokenSource::Bearer],
            max_lifetime: None,
            max_sub_bytes: 1024,
            locations: crate::claims::ClaimLocations::compile(
                &crate::token::Profile::Generic.locations(),
                &[],
            )
            .unwrap(),
            keys: store,
        });
        issuers
    }

    fn token(key: &SigningKey, sub: &str, exp: u64) -> String {
        key.sign(&json!({"iss": "https://i", "aud": "a", "sub": sub, "exp": exp}))
    }

    #[tokio::test]
    async fn entries_die_at_exp_and_respect_route_issuers() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate(Algorithm::ES256, "k");
        let issuers = issuers(&key, &dir).await;
        let cache = TokenCache::new(10);
        let t = token(&key, "u", 1_000);
        let v = verify(&t, &issuers, None, 8192, 900).unwrap();
        cache.insert(&t, &v, 900);
        assert!(cache.get(&t, &issuers, None, 999).is_some());
        assert!(cache
            .get(&t, &issuers, Some(&["other".into()]), 999)
            .is_none());
        assert!(cache.get(&t, &issuers, Some(&["i".into()]), 999).is_some());
        assert!(
            cache.get(&t, &issuers, None, 1_000).is_none(),
            "dead at exp"
        );
        assert!(cache.is_empty(), "a dead entry is removed");
        // Another token with the same claims but different bytes never hits.
        assert!(cache
            .get(&token(&key, "u2", 1_000), &issuers, None, 900)
            .is_none());
    }

    #[tokio::test]
    async fn a_reloaded_issuer_misses_and_capacity_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate(Algorithm::ES256, "k");
        let issuers_a = issuers(&key, &dir).await;
        let issuers_b = issuers(&key, &dir).await;
        let cache = TokenCache::new(3);
        let tokens: Vec<String> = (0..5)
            .map(|i| token(&key, &format!("u{i}"), 1_000))
            .collect();
        for t in &tokens {
            let v = verify(t, &issuers_a, None, 8192, 900).unwrap();
            cache.insert(t, &v, 900);
        }
        assert_eq!(cache.len(), 3, "bounded");
        assert!(cache.get(&tokens[0], &issuers_a, None, 900).is_some());
        assert!(
            cache.get(&tokens[0], &issuers_b, None, 900).is_none(),
            "another snapshot's issuer"
        );
        assert_eq!(cache.len(), 2, "the stale entry is dropped");
        // Full again; once its entries expire, the sweep (at most once a
        // second) makes room.
        let v = verify(&tokens[4], &issuers_a, None, 8192, 900).unwrap();
        cache.insert(&tokens[4], &v, 900);
        assert_eq!(cache.len(), 3);
        let late = token(&key, "late", 5_000);
        let v = verify(&late, &issuers_a, None, 8192, 2_000).unwrap();
        cache.insert(&late, &v, 2_000);
        assert_eq!(cache.len(), 1);
    }
}
