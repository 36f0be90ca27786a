//! The policy compiler on arbitrary text: it must return `Ok` or errors
//! with a file and line, never panic, hang or allocate without bound.
//!
//! `cargo fuzz run policy_parse -s none` (see fuzz/README.md).
#![no_main]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use claimgate::config::{compile, PolicySource};
use claimgate::jwks::{Fetcher, JwksStore, KeySource, Refresh};
use claimgate::metrics::Metrics;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let metrics = Arc::new(Metrics::new());
    let vars: HashMap<String, String> =
        [("U".to_string(), "http://127.0.0.1:1".to_string())].into();
    // Key stores are created, never loaded: compiling fetches nothing.
    let mut stores =
        |issuer: &str, source: &KeySource, algs: &[jsonwebtoken::Algorithm], refresh: Refresh| {
            Arc::new(JwksStore::new(
                issuer.to_string(),
                source.clone(),
                algs.to_vec(),
                refresh,
                Fetcher::default(),
                metrics.clone(),
            ))
        };
    let sources = [PolicySource {
        path: PathBuf::from("fuzz.yaml"),
        text: text.to_string(),
    }];
    if let Err(errs) = compile(&sources, &vars, &mut stores, 8192, 1) {
        for e in &errs.0 {
            assert!(e.to_string().starts_with("fuzz.yaml"), "{e}");
        }
    }
});
