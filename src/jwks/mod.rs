//! The keys of each issuer: loaded from a file or a `jwks_uri`, held behind
//! their own `ArcSwap`, refreshed in the background. A failed refresh keeps
//! the last good keys (SECURITY.md rule 12).

pub mod alg;
pub mod fetch;
pub mod keys;
mod store;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use alg::Algorithm;
pub use fetch::Fetcher;
pub use keys::{JwksError, KeySet, VerifyKey};
pub use store::{JwksStore, KeyChange, KeyInfo, StoreInfo};

/// Where an issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeySource {
    File(PathBuf),
    Uri {
        url: String,
        allow_http: bool,
        /// Extra trusted roots (PEM), besides the Mozilla ones.
        ca_file: Option<PathBuf>,
    },
    /// OIDC discovery (OpenID Connect Discovery 1.0 §4): the document at
    /// `url` + `/.well-known/openid-configuration` must name `issuer`
    /// exactly (§4.3) and give an https `jwks_uri`. Read again on every
    /// load, so a moved `jwks_uri` is followed.
    Discovery {
        url: String,
        issuer: String,
        allow_http: bool,
        ca_file: Option<PathBuf>,
    },
    /// A shared HMAC secret. Only where it is read from is held here, so
    /// that logs, `Debug` and `/admin/config` can never show the value.
    Secret(SecretRef),
}

/// Where a shared secret is read from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SecretRef {
    Env(String),
    /// Re-read on every refresh, so a rotated secret file is picked up.
    File(PathBuf),
}

impl SecretRef {
    /// The secret's bytes; errors name the variable or file, never a value.
    /// A trailing newline from `echo` or an editor is not part of a file's
    /// secret. (A small file read: done in place, also from async code.)
    pub fn read(&self) -> Result<Vec<u8>, String> {
        match self {
            SecretRef::Env(name) => std::env::var(name)
                .map(String::into_bytes)
                .map_err(|_| format!("${name} is not set")),
            SecretRef::File(path) => {
                let mut b = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
                while b.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
                    b.pop();
                }
                Ok(b)
            }
        }
    }
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::File(p) => write!(f, "file {}", p.display()),
            KeySource::Uri { url, .. } => write!(f, "{url}"),
            KeySource::Discovery { url, .. } => write!(f, "discovery {url}"),
            KeySource::Secret(SecretRef::Env(name)) => write!(f, "secret from ${name}"),
            KeySource::Secret(SecretRef::File(p)) => write!(f, "secret file {}", p.display()),
        }
    }
}

/// When an issuer's keys are fetched again, and how long they stay usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Refresh {
    /// Background refresh period after a success without `Cache-Control`.
    pub interval: Duration,
    /// Bounds on a period taken from the response's `Cache-Control: max-age`.
    pub min_interval: Duration,
    pub max_interval: Duration,
    /// Keys not refreshed successfully for this long are dropped: requests
    /// for the issuer then get 503 rather than trust keys the IdP may have
    /// revoked long ago.
    pub max_stale: Duration,
    /// Least time between two loads caused by unknown `kid`s, counted from
    /// the last such load only: scheduled, conditional and operator-forced
    /// loads never arm it (SECURITY.md rule 11).
    pub unknown_kid_cooldown: Duration,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
