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
