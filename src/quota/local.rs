//! The per-node store: a key's GCRA state (one `u64`) in one of 64 locked
//! shards, keyed by a 64-bit SipHash of (limit, plan, key) under a key drawn
//! at start, so clients cannot aim two keys at one bucket.
//!
//! Memory is bounded: at most `max_keys` keys, 16 bytes each in a hash
//! table (under 40 bytes a key with the table's spare room). A shard that
//! fills drops its idle keys first (a TAT in the past is the same as no
//! state); if every key is active it drops one at random, which gives that
//! key a fresh burst: the bound wins over exactness past `max_keys` active
//! keys.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Mutex;

use super::gcra::{self, Rate, Verdict};

const SHARDS: usize = 64;
/// Least time between two purges of one full shard, in µs.
const PURGE_EVERY_US: u64 = 1_000_000;

pub struct LocalStore {
    /// Each shard: its keys' TATs, and when it was last purged (µs).
    shards: Vec<Mutex<(HashMap<u64, u64>, u64)>>,
    per_shard: usize,
    hasher: std::collections::hash_map::RandomState,
}

impl LocalStore {
    pub fn new(max_keys: usize) -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new((HashMap::new(), 0)))
                .collect(),
            per_shard: max_keys.div_ceil(SHARDS).max(1),
            hasher: Default::default(),
        }
    }

    /// The bucket of `parts` (limit, plan, key), as a 64-bit keyed hash.
    pub fn bucket(&self, parts: &[&str]) -> u64 {
        let mut h = self.hasher.build_hasher();
        for p in parts {
            p.hash(&mut h);
        }
        h.finish()
    }

    /// One request against `bucket` at `now_us`.
    pub fn check(&self, bucket: u64, rate: &Rate, now_us: u64) -> Verdict {
        let shard = &self.shards[(bucket >> 58) as usize % SHARDS];
        let mut guard = shard.lock().unwrap_or_else(|p| p.into_inner());
        let (map, last_purge) = &mut *guard;
        let tat = map.get(&bucket).copied().unwrap_or(0);
        let (verdict, new_tat) = gcra::step(rate, tat, now_us);
        if new_tat != tat {
            if tat == 0 && map.len() >= self.per_shard {
                // A full scan at most once a second: a shard full of active
                // keys would otherwise cost one per new key.
                if now_us >= *last_purge + PURGE_EVERY_US {
                    *last_purge = now_us;
                    map.retain(|_, t| *t > now_us);
                }
                if map.len() >= self.per_shard {
                    if let Some(k) = map.keys().next().copied() {
                        map.remove(&k);
                    }
                }
            }
            map.insert(bucket, new_tat);
        }
        verdict
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |m| m.0.len()))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes the tables hold (slots × 17: key, value, control byte).
    pub fn table_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |m| m.0.capacity() * 17))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_million_keys_stay_within_the_stated_bound() {
        let store = LocalStore::new(1_000_000);
        let rate = Rate::parse("10/s").unwrap();
        let now = 1_000_000_000;
        for i in 0..1_500_000u64 {
            let b = store.bucket(&["per-user", "free", &i.to_string()]);
            assert!(matches!(
                store.check(b, &rate, now),
                Verdict::Allowed { .. }
            ));
        }
        assert!(store.len() <= 1_000_000 + SHARDS, "{}", store.len());
        let bytes = store.table_bytes();
        assert!(bytes <= 40 * 1_000_000, "{bytes} bytes for 1M keys");
    }

    #[test]
    fn idle_keys_go_first_and_active_ones_keep_their_state() {
        let store = LocalStore::new(SHARDS * 2);
        let rate = Rate::parse("1/min").unwrap();
        let now = 1_000_000_000;
        let hot = store.bucket(&["l", "p", "hot"]);
        assert!(matches!(
            store.check(hot, &rate, now),
            Verdict::Allowed { .. }
        ));
        // Many one-off keys, all idle a minute later.
        for i in 0..10_000 {
            let b = store.bucket(&["l", "p", &i.to_string()]);
            store.check(b, &rate, now);
        }
        assert!(store.len() <= SHARDS * 2 + SHARDS);
        let later = now + 61_000_000;
        let again = store.bucket(&["l", "p", "again"]);
        assert!(matches!(
            store.check(again, &rate, later),
            Verdict::Allowed { .. }
        ));
        assert!(matches!(
            store.check(again, &rate, later),
            Verdict::Limited { .. }
        ));
    }
}
