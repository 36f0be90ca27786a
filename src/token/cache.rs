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
mod tests;
