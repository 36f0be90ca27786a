//! claimgate: a reverse proxy that verifies JWTs, decides with RBAC policies
//! over their claims, and forwards the verified claims as headers.
//!
//! One decision core (`decision`: route → hygiene → extract → verify →
//! decide → render) and front doors over it (`proxy`: the reverse proxy,
//! forward-auth, Envoy ext_authz; the Hasura webhook; `explain`). The
//! layering, leaves first: `claims` → `jwks`, `token`, `policy`, `forward`
//! → `decision` → `proxy`, `admin`, `explain` → `app`.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod app;
pub mod claims;
pub mod config;
pub mod decision;
#[cfg(feature = "testkit")]
pub mod demo;
pub mod explain;
pub mod forward;
pub mod jwks;
pub mod logging;
pub mod metrics;
pub mod otel;
pub mod policy;
pub mod policy_test;
pub mod policy_watch;
pub mod proxy;
pub mod quota;
pub mod snapshot;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod token;
pub mod trust;

/// The hash maps a request looks up (routes, issuers, keys, idle upstream
/// connections): ahash, keyed at random per process like the standard
/// library's SipHash (a client cannot aim keys at one bucket), at a
/// fraction of its cost per lookup.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;
pub(crate) type FastSet<K> = std::collections::HashSet<K, ahash::RandomState>;
