//! The verified-token cache: a token verified once is not verified again
//! until it expires or the key that verified it leaves the issuer's JWKS.
//!
//! Keyed by SHA-256 of the whole token (an attacker cannot aim a token at
//! another's entry). Expired entries are dropped when looked up, or evicted
//! as the cache fills. An entry remembers the exact issuer
//! object that verified it, so a reload that changes any issuer setting
//! (audience, leeway, untrusted claims) makes its entries miss. Policy is
//! never cached: it runs on every request.

use aws_lc_rs::digest::{digest, SHA256};
use quick_cache::sync::Cache;

use super::issuer::Issuers;
use super::verify::Verified;

/// Bounded at `capacity` entries. Eviction is quick_cache's CLOCK-PRO
/// variant: a token seen once lands in a small probationary queue and is
/// the first to go, a token used again is kept, and recently evicted keys
/// are remembered (ghosts) so that a returning one is admitted straight to
/// the main queue. A scan of one-off tokens cannot flush the working set,
/// and a full cache still admits new tokens (the old map stopped at its
/// capacity and every further token paid a full verification).
pub struct TokenCache {
    map: Option<Cache<[u8; 32], Verified>>,
}

impl TokenCache {
    /// A cache of at most `capacity` tokens; 0 disables it.
    pub fn new(capacity: usize) -> Self {
        Self {
            map: (capacity > 0).then(|| Cache::new(capacity)),
        }
    }

    pub fn len(&self) -> usize {
        self.map.as_ref().map_or(0, Cache::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps only the entries verified by an issuer of `issuers` itself. A
    /// reload calls this: an issuer whose settings changed is a new `Arc`, so
    /// its tokens go (and with them the last hold on a replaced key store).
    pub fn retain_issuers(&self, issuers: &Issuers) {
        if let Some(map) = &self.map {
            map.retain(|_, v| issuers.holds(&v.issuer));
        }
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
        let map = self.map.as_ref()?;
        let key = Self::key(token);
        let hit = map.get(&key)?;
        let same_issuer = issuers.holds(&hit.issuer);
        let live = (now as f64) < hit.exp + hit.issuer.leeway as f64;
        let key_present = hit.issuer.keys.has_key(hit.key_fingerprint);
        if !(same_issuer && live && key_present) {
            map.remove(&key);
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
    pub fn insert(&self, token: &str, verified: &Verified) {
        if let Some(map) = &self.map {
            map.insert(Self::key(token), verified.clone());
        }
    }
}

#[cfg(test)]
mod tests;
