//! Configuration: parse → validate → compile → freeze.
//!
//! Two kinds of file. The process file (`claimgate.yaml`) names the
//! listeners, limits and where the policy files live; it is read once at
//! start. The policy directory holds issuers, upstreams, header templates and
//! routes; `compile` turns it into one immutable [`Snapshot`], and
//! `claimgate validate` runs exactly that code.
//!
//! [`Snapshot`]: crate::snapshot::Snapshot

mod compile;
mod duration;
pub mod error;
pub mod schema;
pub mod yaml;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use compile::{compile, digest, PolicySource};
pub use error::{ConfigError, ConfigErrors, Origin};
pub use schema::{LogFormat, ProcessDoc};
pub use yaml::{EnvVars, Vars};

/// The process configuration, validated.
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Directory of policy files, resolved against the process file's folder.
    pub policies: PathBuf,
    pub tls: Option<TlsFiles>,
    pub limits: Limits,
    pub log_format: LogFormat,
    /// Request-serving threads (shards), each with its own runtime,
    /// listener and upstream pool; 0: one per core.
    pub workers: usize,
    pub reload: ReloadSettings,
    pub forward_auth: Option<ForwardAuthConfig>,
    pub ext_authz: Option<ExtAuthzConfig>,
}

/// The Envoy ext_authz gRPC door's listener and trusted gateways.
#[derive(Debug, Clone)]
pub struct ExtAuthzConfig {
    pub listen: SocketAddr,
    /// Peers allowed to ask (SECURITY.md rule 21): the Envoys / Istio
    /// sidecars / gateways.
    pub gateways: Vec<crate::forward::forwarded::Cidr>,
}

/// The forward-auth front door's listener and trusted gateways.
#[derive(Debug, Clone)]
pub struct ForwardAuthConfig {
    pub listen: SocketAddr,
    /// Peers allowed to ask (SECURITY.md rule 21).
    pub gateways: Vec<crate::forward::forwarded::Cidr>,
    /// Stripped from the check request's path (Envoy's `path_prefix`); no
    /// trailing `/`.
    pub path_prefix: String,
}

/// Automatic reloads of the policy directory.
#[derive(Debug, Clone)]
pub struct ReloadSettings {
    /// Watch the directory for changes.
    pub watch: bool,
    /// Quiet time after the last change event before reloading.
    pub debounce: Duration,
    /// Re-read the directory this often whatever the watch says; zero: never.
    pub poll_interval: Duration,
}

impl Default for ReloadSettings {
    fn default() -> Self {
        Self {
            watch: true,
            debounce: Duration::from_millis(250),
            poll_interval: Duration::from_secs(10),
        }
    }
}

/// A certificate chain and private key, both PEM.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// How often the files are checked for a new pair (cert-manager,
    /// Kubernetes Secret mounts); zero: never.
    pub reload_interval: Duration,
}

/// Bounds on what one client or upstream may cost (SECURITY.md rule 18).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest token accepted, in bytes, checked before any decoding.
    pub max_token_bytes: usize,
    /// Time a client has to send a request's headers.
    pub header_read_timeout: Duration,
    /// Largest request head (HTTP/1 buffer) in bytes.
    pub max_header_bytes: usize,
    /// Most request headers accepted.
    pub max_headers: usize,
    /// Connections served at once; further ones wait in the accept queue.
    pub max_connections: usize,
    /// HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    pub upstream_connect_timeout: Duration,
    /// Time the upstream has to send its response headers.
    pub upstream_response_timeout: Duration,
    /// Largest request body sent upstream; `None`: no limit. A larger
    /// `Content-Length` is a 413 before the upstream is called; a chunked
    /// body is cut off at the limit (the upstream sees an aborted body).
    pub max_body_bytes: Option<u64>,
    /// The request deadline (SECURITY.md rule 18): from the request head to
    /// the response head, whatever it waits on (keys, the upstream).
    pub request_timeout: Duration,
    /// How long in-flight requests may run after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Verified tokens remembered; 0 turns the cache off.
    pub token_cache_entries: usize,
    /// After SIGTERM: how long `/readyz` answers 503 while requests are still
    /// served, so that load balancers stop sending before the listener closes.
    pub drain_delay: Duration,
    /// Most keys the per-node rate-limit store holds (about 40 bytes each).
    pub rate_limit_keys: usize,
    /// The shared store of `store: redis` rate limits (the process file's
    /// `redis:`).
    pub redis: Option<crate::quota::RedisSettings>,
    /// OpenTelemetry traces over OTLP (the process file's `tracing:`).
    pub tracing: Option<crate::otel::Settings>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_token_bytes: 8 * 1024,
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_connections: 10_000,
            max_concurrent_streams: 200,
            upstream_connect_timeout: Duration::from_secs(2),
            upstream_response_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            max_body_bytes: None,
            shutdown_grace: Duration::from_secs(30),
            token_cache_entries: 100_000,
            drain_delay: Duration::from_secs(5),
            rate_limit_keys: 1_000_000,
            redis: None,
            tracing: None,
        }
    }
}

impl ProcessConfig {
    /// Reads and validates the process file. Every error at once.
    pub fn load(path: &Path, vars: &dyn Vars) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let mut errs = ConfigErrors::default();
            errs.push(Origin::file(path), format!("cannot read: {e}"));
            errs
        })?;
        Self::from_text(path, &text, vars)
    }

    /// Validates process configuration text; `path` names it in errors and
    /// anchors relative paths.
    pub fn from_text(path: &Path, text: &str, vars: &dyn Vars) -> Result<Self, ConfigErrors> {
        let text = yaml::expand(path, text, vars).map_err(ConfigErrors)?;
        let doc: ProcessDoc = yaml::parse(path, &text).map_err(ConfigErrors)?;
        doc.validate(path)
    }
}

/// The JSON Schema (draft 2020-12) of a policy file, or of the process file.
pub fn json_schema(policy: bool) -> String {
    let schema = if policy {
        schemars::schema_for!(schema::PolicyDoc)
    } else {
        schemars::schema_for!(schema::ProcessDoc)
    };
    serde_json::to_string_pretty(&schema).unwrap_or_default()
}
