use super::*;
use crate::jwks::Algorithm;
use crate::jwks::{Fetcher, JwksStore, KeySource, Refresh};
use crate::metrics::Metrics;
use crate::testkit::keys::{jwks, SigningKey};
use crate::token::{verify, Issuer};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

async fn issuers(key: &SigningKey, dir: &tempfile::TempDir) -> Issuers {
    issuers_with(key, dir, vec![]).await
}

async fn issuers_with(
    key: &SigningKey,
    dir: &tempfile::TempDir,
    untrusted: Vec<String>,
) -> Issuers {
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
        untrusted_claims: untrusted,
        refuse_untrusted: false,
        profile: crate::token::Profile::Generic,
        token_from: vec![crate::token::extract::TokenSource::Bearer],
        max_lifetime: None,
        max_sub_bytes: 1024,
        introspection: None,
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
    cache.insert(&t, &v);
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
        cache.insert(t, &v);
    }
    assert!(cache.len() <= 3, "bounded: {}", cache.len());
    // A full cache still admits: the newest token is there.
    assert!(cache.get(&tokens[4], &issuers_a, None, 900).is_some());
    assert!(
        cache.get(&tokens[4], &issuers_b, None, 900).is_none(),
        "another snapshot's issuer"
    );
    assert!(
        cache.get(&tokens[4], &issuers_a, None, 900).is_none(),
        "the stale entry was dropped"
    );
}

/// The working set survives a scan: tokens used again and again stay
/// cached while ten times the capacity of one-off tokens go through.
#[tokio::test]
async fn a_scan_of_one_off_tokens_keeps_the_working_set() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate(Algorithm::ES256, "k");
    let issuers = issuers(&key, &dir).await;
    let cache = TokenCache::new(1_000);
    let hot: Vec<(String, Verified)> = (0..100)
        .map(|i| {
            let t = token(&key, &format!("hot{i}"), 1_000);
            let v = verify(&t, &issuers, None, 8192, 900).unwrap();
            (t, v)
        })
        .collect();
    let one_off = verify(&hot[0].0, &issuers, None, 8192, 900).unwrap();
    for (t, v) in &hot {
        cache.insert(t, v);
        assert!(cache.get(t, &issuers, None, 900).is_some());
    }
    // 10,000 distinct one-off tokens, each inserted once (the verification
    // is reused: only the key matters to the cache), the hot set used
    // between them.
    for i in 0..10_000 {
        cache.insert(&format!("one-off-{i}"), &one_off);
        if i % 10 == 0 {
            let (t, _) = &hot[(i / 10) % hot.len()];
            let _ = cache.get(t, &issuers, None, 900);
        }
    }
    let kept = hot
        .iter()
        .filter(|(t, _)| cache.get(t, &issuers, None, 900).is_some())
        .count();
    assert!(kept >= 95, "{kept} of 100 hot tokens kept");
    assert!(cache.len() <= 1_000);
    // A full cache still admits a new token.
    cache.insert(&hot[0].0.replace('.', "!"), &one_off);
    assert!(cache
        .get(&hot[0].0.replace('.', "!"), &issuers, None, 900)
        .is_some());
}

/// With no hot tier every hit parses the token's payload again: the claims
/// come back equal (numbers, nesting, unicode), without the untrusted claims, and
/// every check of a hit still applies.
#[tokio::test]
async fn the_compact_tier_gives_back_the_same_claims() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate(Algorithm::ES256, "k");
    let issuers = issuers_with(&key, &dir, vec!["nsec".into()]).await;
    let t = key.sign(&json!({
        "iss": "https://i", "aud": "a", "sub": "u", "exp": 1_000, "iat": 0.5,
        "big": 18_446_744_073_709_551_615u64, "neg": -7, "f": 1e-7,
        "name": "Zoë \u{1F600} \"q\"", "roles": ["a", {"b": [null, true]}],
        "nsec": {"roles": ["admin"]},
    }));
    let v = verify(&t, &issuers, None, 8192, 900).unwrap();
    assert!(v.claims.root().get("nsec").is_none());
    for cache in [TokenCache::with_hot(10, 0), TokenCache::new(10)] {
        cache.insert(&t, &v);
        for _ in 0..2 {
            let hit = cache.get(&t, &issuers, None, 900).expect("a hit");
            assert_eq!(hit.claims, v.claims);
            assert_eq!(hit.exp, v.exp);
            assert!(Arc::ptr_eq(&hit.issuer, &v.issuer));
        }
        assert!(cache.get(&t, &issuers, Some(&["x".into()]), 900).is_none());
        assert!(
            cache.get(&t, &issuers, None, 1_000).is_none(),
            "dead at exp"
        );
        assert!(cache.is_empty(), "a dead entry leaves both tiers");
        assert!(cache.get(&t, &issuers, None, 900).is_none());
    }
}
