//! claimgate: a reverse proxy that verifies JWTs, decides with RBAC policies
//! over their claims, and forwards the verified claims as headers.
//!
//! The request path is one straight line (see `proxy::pipeline`):
//! route → hygiene → extract → verify → decide → inject → upstream → respond.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod claims;
pub mod config;
pub mod decision;
pub mod demo;
pub mod explain;
pub mod forward;
pub mod jwks;
pub mod metrics;
pub mod policy;
pub mod policy_test;
pub mod policy_watch;
pub mod proxy;
pub mod snapshot;
pub mod token;
