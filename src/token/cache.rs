//! The verified-token cache: a token verified once is not verified again
//! until it expires or the key that verified it leaves the issuer's JWKS.
//!
//! Keyed by SHA-256 of the whole token (an attacker cannot aim a token at
//! another's entry). Expired entries are dropped when looked up, or evicted
//! as the cache fills. An entry remembers the exact issuer
//! object that verified it, so a reload that changes any issuer setting
//! (audience, leeway, untrusted claims) makes its entries miss. Policy is
//! never cached: it runs on every request.
//!
//! Two tiers, so that memory follows the number of tokens and speed the
//! working set:
//!
//! - **every** cached token keeps only what verification decided: its
//!   issuer, `exp` and which key verified it (~150 bytes per token all
//!   told, `benches/memory.sh`). Its claims are the token's own: a hit
//!   presents the very bytes that were verified (same SHA-256), so their
//!   payload is decoded and parsed again and its untrusted claims removed,
//!   as verification did (~15,700 instructions more than a working-set
//!   hit, against the signature check it saves), and the token is
//!   promoted;
//! - the **working set** (at most [`HOT_MAX`] tokens) also keeps the parsed
//!   claims (~1.2 KB each), so a hit there costs no parse.

use std::sync::Arc;

use aws_lc_rs::digest::{digest, SHA256};
use quick_cache::sync::Cache;

use super::issuer::{Issuer, Issuers};
use super::verify::{claims_again, Verified};

/// The most tokens whose parsed claims are kept (the hot tier).
pub const HOT_MAX: usize = 4_096;

/// Each tier is bounded by entries. Eviction is quick_cache's CLOCK-PRO
/// variant: a token seen once lands in a small probationary queue and is
/// the first to go, a token used again is kept, and recently evicted keys
/// are remembered (ghosts) so that a returning one is admitted straight to
/// the main queue. A scan of one-off tokens cannot flush the working set,
/// and a full cache still admits new tokens.
pub struct TokenCache {
    tiers: Option<Tiers>,
}

struct Tiers {
    /// Every cached token, without its claims.
    compact: Cache<[u8; 32], Compact>,
    /// The working set, its claims parsed (none: every hit parses).
    hot: Option<Cache<[u8; 32], Verified>>,
}

/// A token's cache key: SHA-256 of the whole token.
pub struct TokenKey([u8; 32]);

impl TokenKey {
    pub fn of(token: &str) -> Self {
        let mut out = [0u8; 32];
        out.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
        Self(out)
    }
}

/// A verification without its claims.
#[derive(Clone)]
struct Compact {
    issuer: Arc<Issuer>,
    exp: f64,
    key_fingerprint: u64,
}

impl TokenCache {
    /// A cache of at most `capacity` tokens; 0 disables it. The parsed
    /// claims of up to `min(capacity, HOT_MAX)` of them are kept too.
    pub fn new(capacity: usize) -> Self {
        Self::with_hot(capacity, capacity.min(HOT_MAX))
    }

    /// A cache of at most `capacity` tokens, the parsed claims of up to
    /// `hot` of them kept too (0: every hit parses).
    pub fn with_hot(capacity: usize, hot: usize) -> Self {
        Self {
            tiers: (capacity > 0).then(|| Tiers {
                compact: Cache::new(capacity),
                hot: (hot > 0).then(|| Cache::new(hot)),
            }),
        }
    }

    /// How many tokens are cached.
    pub fn len(&self) -> usize {
        self.tiers.as_ref().map_or(0, |t| t.compact.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps only the entries verified by an issuer of `issuers` itself. A
    /// reload calls this: an issuer whose settings changed is a new `Arc`, so
    /// its tokens go (and with them the last hold on a replaced key store).
    pub fn retain_issuers(&self, issuers: &Issuers) {
        if let Some(t) = &self.tiers {
            t.compact.retain(|_, v| issuers.holds(&v.issuer));
            if let Some(hot) = &t.hot {
                hot.retain(|_, v| issuers.holds(&v.issuer));
            }
        }
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
        self.get_key(token, &TokenKey::of(token), issuers, accepted, now)
    }

    /// [`TokenCache::get`] by the token's key, hashed once by a caller that
    /// inserts on a miss.
    pub fn get_key(
        &self,
        token: &str,
        key: &TokenKey,
        issuers: &Issuers,
        accepted: Option<&[String]>,
        now: u64,
    ) -> Option<Verified> {
        let tiers = self.tiers.as_ref()?;
        let key = key.0;
        let hit = match tiers.hot.as_ref().and_then(|hot| hot.get(&key)) {
            Some(hit) => {
                if !holds(&hit.issuer, hit.exp, hit.key_fingerprint, issuers, now) {
                    tiers.forget(&key);
                    return None;
                }
                hit
            }
            None => {
                let c = tiers.compact.get(&key)?;
                if !holds(&c.issuer, c.exp, c.key_fingerprint, issuers, now) {
                    tiers.forget(&key);
                    return None;
                }
                let Some(claims) = claims_again(token, &c.issuer) else {
                    // Cannot happen (these bytes verified); a miss verifies
                    // again.
                    tiers.forget(&key);
                    return None;
                };
                let hit = Verified {
                    issuer: c.issuer,
                    claims: Arc::new(claims),
                    exp: c.exp,
                    key_fingerprint: c.key_fingerprint,
                };
                if let Some(hot) = &tiers.hot {
                    hot.insert(key, hit.clone());
                }
                hit
            }
        };
        // A route restriction is the route's, not the token's: check it on
        // every hit. A miss here re-verifies, which refuses with the reason.
        if accepted.is_some_and(|names| !names.iter().any(|n| *n == hit.issuer.name)) {
            return None;
        }
        Some(hit)
    }

    /// Remembers a successful verification.
    pub fn insert(&self, token: &str, verified: &Verified) {
        self.insert_key(&TokenKey::of(token), verified);
    }

    /// [`TokenCache::insert`] by the token's key.
    pub fn insert_key(&self, key: &TokenKey, verified: &Verified) {
        let Some(tiers) = &self.tiers else {
            return;
        };
        let key = key.0;
        tiers.compact.insert(
            key,
            Compact {
                issuer: verified.issuer.clone(),
                exp: verified.exp,
                key_fingerprint: verified.key_fingerprint,
            },
        );
        if let Some(hot) = &tiers.hot {
            hot.insert(key, verified.clone());
        }
    }
}

impl Tiers {
    fn forget(&self, key: &[u8; 32]) {
        if let Some(hot) = &self.hot {
            hot.remove(key);
        }
        self.compact.remove(key);
    }
}

/// Whether a cached verification still holds: its issuer is the current
/// snapshot's, the token is live, and the key that verified it is still in
/// the issuer's JWKS.
fn holds(issuer: &Arc<Issuer>, exp: f64, key: u64, issuers: &Issuers, now: u64) -> bool {
    issuers.holds(issuer) && (now as f64) < exp + issuer.leeway as f64 && issuer.keys.has_key(key)
}

#[cfg(test)]
mod tests;
