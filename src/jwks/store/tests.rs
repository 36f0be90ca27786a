use super::*;
use crate::testkit::keys::{jwks, SigningKey};

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

fn loads(metrics: &Metrics, result: &str) -> u64 {
    metrics.jwks_fetches.with_label_values(&["i", result]).get()
}

fn suppressed(metrics: &Metrics) -> u64 {
    metrics
        .jwks_refreshes_suppressed
        .with_label_values(&["i"])
        .get()
}

#[tokio::test]
async fn a_scheduled_load_never_arms_the_kid_miss_cooldown() {
    let dir = tempfile::tempdir().unwrap();
    let (store, metrics) = file_store(&dir);
    store.refresh().await.unwrap();
    // The IdP rotates right after the scheduled load: the first token with
    // the new kid loads at once and verifies.
    let new = SigningKey::generate(Algorithm::ES256, "k2");
    std::fs::write(dir.path().join("jwks.json"), jwks([&new]).to_string()).unwrap();
    assert!(store.refresh_for_unknown_kid(Some("k2")).await);
    assert_eq!(loads(&metrics, "success"), 2);
    assert_eq!(suppressed(&metrics), 0);
    // A forced load does not arm it either; the kid-miss load above did.
    assert!(store.in_cooldown());
}

#[tokio::test]
async fn a_forced_load_neither_waits_for_nor_arms_the_cooldown() {
    let dir = tempfile::tempdir().unwrap();
    let (store, metrics) = file_store(&dir);
    let change = store.reload_now().await;
    assert_eq!((change.added, change.keys), (vec!["k1".to_string()], 1));
    assert!(!store.in_cooldown());
    // Right after a kid-miss load, in its cooldown, a forced load still runs.
    assert!(!store.refresh_for_unknown_kid(Some("nope")).await);
    assert!(store.in_cooldown());
    let new = SigningKey::generate(Algorithm::ES256, "k2");
    std::fs::write(dir.path().join("jwks.json"), jwks([&new]).to_string()).unwrap();
    let change = store.reload_now().await;
    assert_eq!(change.added, ["k2"]);
    assert_eq!(change.removed, ["k1"]);
    assert_eq!(change.error, None);
    assert_eq!(loads(&metrics, "success"), 3);
}

#[tokio::test]
async fn a_kid_miss_in_the_cooldown_defers_one_load_to_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let (store, metrics) = file_store(&dir);
    store.refresh().await.unwrap();
    assert!(!store.refresh_for_unknown_kid(Some("a")).await);
    let armed = store.state().last_kid_miss_load.unwrap();
    assert_eq!(store.state().deferred, None);
    for kid in ["b", "c", "a", "d"] {
        assert!(!store.refresh_for_unknown_kid(Some(kid)).await);
    }
    // One load owed, at the cooldown's end, however many kids asked.
    assert_eq!(
        store.state().deferred,
        Some(armed + REFRESH.unknown_kid_cooldown)
    );
    assert_eq!(loads(&metrics, "success"), 2);
    assert_eq!(suppressed(&metrics), 4);
}

#[tokio::test]
async fn a_kid_known_to_be_unknown_does_not_wait_for_the_load_gate() {
    let dir = tempfile::tempdir().unwrap();
    let (store, metrics) = file_store(&dir);
    store.refresh().await.unwrap();
    // A kid-miss load that does not bring `x` remembers it.
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
    assert_eq!(suppressed(&metrics), 1);
}

#[tokio::test]
async fn any_completed_load_drops_the_negative_cache() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = file_store(&dir);
    store.refresh().await.unwrap();
    for i in 0..5000 {
        store.remember_unknown(&format!("kid-{i}"));
        assert!(store.state().unknown_kids.len() <= MAX_UNKNOWN_KIDS);
    }
    assert!(store.recently_unknown("kid-4999"));
    // A scheduled load completes after the entry was recorded: dropped.
    store.refresh().await.unwrap();
    assert!(!store.recently_unknown("kid-4999"));
    store.remember_unknown("again");
    store.reload_now().await;
    assert!(!store.recently_unknown("again"));
}

#[test]
fn jitter_stays_within_ten_percent() {
    let period = Duration::from_secs(300);
    assert_eq!(jittered(period, 0.0), Duration::from_secs(270));
    assert_eq!(jittered(period, 0.5), period);
    assert!(jittered(period, 0.999_999) < Duration::from_secs(330));
    assert_eq!(jittered(period, 7.0), Duration::from_secs(330));
    let draws: Vec<Duration> = (0..1000).map(|_| jittered(period, random_unit())).collect();
    let (lo, hi) = (Duration::from_secs(270), Duration::from_secs(330));
    assert!(draws.iter().all(|d| *d >= lo && *d < hi));
    // Spread, not a constant: both halves of the window are hit.
    assert!(draws.iter().any(|d| *d < period) && draws.iter().any(|d| *d > period));
}

#[tokio::test]
async fn secrets_come_from_the_environment_or_say_which_variable_is_missing() {
    let store = |name: &str| store(KeySource::Secret(SecretRef::Env(name.into())), &keys::HMAC).0;
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
