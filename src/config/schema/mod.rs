//! The configuration documents exactly as written in YAML. Every struct
//! rejects unknown keys; `Spanned` fields remember their line so that
//! errors found after parsing can still name it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::duration;
use super::error::{ConfigErrors, Origin};
use super::{ExtAuthzConfig, ForwardAuthConfig, Limits, ProcessConfig, ReloadSettings, TlsFiles};
use crate::forward::forwarded::Cidr;

// === process file ===

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessDoc {
    #[serde(default = "default_listen")]
    #[schemars(with = "String")]
    pub listen: Spanned<String>,
    #[serde(default = "default_admin_listen")]
    #[schemars(with = "String")]
    pub admin_listen: Spanned<String>,
    pub policies: PathBuf,
    #[serde(default)]
    pub tls: Option<TlsDoc>,
    #[serde(default)]
    pub limits: LimitsDoc,
    #[serde(default)]
    pub log_format: LogFormat,
    /// Request-serving threads, one runtime each; 0: one per core.
    #[serde(default)]
    pub workers: usize,
    #[serde(default)]
    pub reload: ReloadDoc,
    /// The forward-auth front door (nginx `auth_request`, Traefik
    /// `ForwardAuth`, Envoy HTTP ext_authz), on a listener of its own.
    #[schemars(with = "Option<ForwardAuthDoc>")]
    pub forward_auth: Option<Spanned<ForwardAuthDoc>>,
    /// The Envoy ext_authz gRPC door (Istio CUSTOM, Envoy Gateway), on a
    /// listener of its own.
    #[schemars(with = "Option<ExtAuthzDoc>")]
    pub ext_authz: Option<Spanned<ExtAuthzDoc>>,
    /// The shared store of `store: redis` rate limits.
    #[schemars(with = "Option<RedisDoc>")]
    pub redis: Option<Spanned<RedisDoc>>,
    /// OpenTelemetry traces, exported over OTLP/gRPC.
    #[schemars(with = "Option<TracingDoc>")]
    pub tracing: Option<Spanned<TracingDoc>>,
}

/// Where spans go and how many.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TracingDoc {
    /// The collector's OTLP/gRPC address, `http://host:4317`.
    pub otlp_endpoint: String,
    /// Share of new traces recorded, 0.0–1.0 (default 1.0); a client's
    /// sampled `traceparent` is always followed.
    pub sample_ratio: Option<f64>,
    /// `service.name` (default `claimgate`).
    pub service_name: Option<String>,
    /// Longest one export may take (default 10s).
    #[serde(default, deserialize_with = "duration::option")]
    #[schemars(with = "Option<String>")]
    pub export_timeout: Option<Duration>,
}

/// Where the fleet's rate-limit counts live.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisDoc {
    /// `redis://host:port/db` or `rediss://...`, without a password.
    pub url: String,
    /// The password, from env or a file (never in this file).
    pub password: Option<crate::config::schema::policy::SecretDoc>,
    /// Longest a rate-limit call may take (default 50ms); past it the
    /// limit's `on_store_error` applies.
    #[serde(default, deserialize_with = "duration::option")]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Duration>,
    /// Prefix of claimgate's keys (default `claimgate:rl:`).
    pub key_prefix: Option<String>,
}

/// The ext_authz gRPC listener and the Envoys it answers.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtAuthzDoc {
    pub listen: String,
    /// The Envoys' addresses: only they may ask (SECURITY.md rule 21).
    pub gateways: Vec<String>,
}

/// The forward-auth listener and the gateways it answers.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForwardAuthDoc {
    pub listen: String,
    /// The gateways' addresses (`10.0.0.0/8`, `127.0.0.1`): only they may
    /// say which request is decided (SECURITY.md rule 21). Required.
    pub gateways: Vec<String>,
    /// Envoy's HTTP ext_authz `path_prefix`: the check request's path is
    /// this prefix and the original path.
    #[serde(default)]
    pub path_prefix: String,
}

/// When the policy directory is read again, besides SIGHUP and
/// `POST /admin/reload`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReloadDoc {
    /// Watch the directory (inotify); survives ConfigMap `..data` swaps.
    pub watch: Option<bool>,
    /// Quiet time after the last change before reloading.
    #[serde(default, deserialize_with = "duration::option")]
    #[schemars(with = "Option<String>")]
    pub debounce: Option<Duration>,
    /// Re-read the directory this often as a backstop; `0s` turns it off.
    #[serde(default, deserialize_with = "duration::option")]
    #[schemars(with = "Option<String>")]
    pub poll_interval: Option<Duration>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsDoc {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// How often the pair is re-read (default 10s; 0s: never).
    #[serde(default, deserialize_with = "duration::option")]
    #[schemars(with = "Option<String>")]
    pub reload_interval: Option<Duration>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsDoc {
    pub max_token_bytes: Option<usize>,
    #[serde(default, deserialize_with = "duration::option")]
    #[schemars(with = "Option<String>")]
    pub header_read_timeout: Option<Duration>,
    pub max_header_bytes: Option<usize>,
    pub max_headers: Option<usize>,
    pub max_connections: Option<usize>,
    pub max_concurrent_streams: Option<u32>,
    #[serde(default, deserialize_with = "duration::option")]
    #[schemars(with = "Option<String>")]
    pub upstream_connect_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration::option")]
    #[schemars(with = "Option<String>")]
    pub upstream_response_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration::option")]
    #[schemars(with = "Option<String>")]
    pub request_timeout: Option<Duration>,
    pub max_body_bytes: Option<u64>,
    #[serde(default, deserialize_with = "duration::option")]
    #[schemars(with = "Option<String>")]
    pub shutdown_grace: Option<Duration>,
    pub token_cache_entries: Option<usize>,
    #[serde(default, deserialize_with = "duration::option")]
    #[schemars(with = "Option<String>")]
    pub drain_delay: Option<Duration>,
    pub rate_limit_keys: Option<usize>,
}

fn default_listen() -> Spanned<String> {
    Spanned::new(
        "0.0.0.0:8080".into(),
        serde_saphyr::Location::UNKNOWN,
        serde_saphyr::Location::UNKNOWN,
    )
}

fn default_admin_listen() -> Spanned<String> {
    Spanned::new(
        "127.0.0.1:9180".into(),
        serde_saphyr::Location::UNKNOWN,
        serde_saphyr::Location::UNKNOWN,
    )
}

/// The origin of a spanned value in `file`.
pub fn origin<T>(file: &Path, s: &Spanned<T>) -> Origin {
    Origin::new(file, s.referenced.line(), s.referenced.column())
}

impl ProcessDoc {
    pub fn validate(self, path: &Path) -> Result<ProcessConfig, ConfigErrors> {
        let mut errs = ConfigErrors::default();
        let base = path.parent().unwrap_or(Path::new("."));
        let mut addr = |s: &Spanned<String>, what: &str| match s.value.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                errs.push(
                    origin(path, s),
                    format!(
                        "{what} `{}` is not an address such as 127.0.0.1:8080",
                        s.value
                    ),
                );
                None
            }
        };
        let listen = addr(&self.listen, "listen");
        let admin_listen = addr(&self.admin_listen, "admin_listen");
        let d = Limits::default();
        let l = self.limits;
        let limits = Limits {
            max_token_bytes: l.max_token_bytes.unwrap_or(d.max_token_bytes),
            header_read_timeout: l.header_read_timeout.unwrap_or(d.header_read_timeout),
            max_header_bytes: l.max_header_bytes.unwrap_or(d.max_header_bytes),
            max_headers: l.max_headers.unwrap_or(d.max_headers),
            max_connections: l.max_connections.unwrap_or(d.max_connections),
            max_concurrent_streams: l.max_concurrent_streams.unwrap_or(d.max_concurrent_streams),
            upstream_connect_timeout: l
                .upstream_connect_timeout
                .unwrap_or(d.upstream_connect_timeout),
            upstream_response_timeout: l
                .upstream_response_timeout
                .unwrap_or(d.upstream_response_timeout),
            request_timeout: l.request_timeout.unwrap_or(d.request_timeout),
            max_body_bytes: l.max_body_bytes.or(d.max_body_bytes),
            shutdown_grace: l.shutdown_grace.unwrap_or(d.shutdown_grace),
            token_cache_entries: l.token_cache_entries.unwrap_or(d.token_cache_entries),
            drain_delay: l.drain_delay.unwrap_or(d.drain_delay),
            rate_limit_keys: l.rate_limit_keys.unwrap_or(d.rate_limit_keys),
            redis: None,
            tracing: None,
        };
        let mut limits = limits;
        if let Some(doc) = self.redis {
            let at = origin(path, &doc);
            let doc = doc.value;
            let password = match &doc.password {
                None => None,
                Some(s) => match (&s.env, &s.file) {
                    (Some(name), None) => std::env::var(name)
                        .map_err(|_| format!("redis.password: ${name} is not set"))
                        .map(Some),
                    (None, Some(f)) => crate::jwks::SecretRef::File(base.join(f))
                        .read()
                        .map(|b| Some(String::from_utf8_lossy(&b).into_owned()))
                        .map_err(|e| format!("redis.password: {e}")),
                    _ => Err("redis.password takes exactly one of `env` and `file`".into()),
                }
                .unwrap_or_else(|e| {
                    errs.push(at.clone(), e);
                    None
                }),
            };
            if !(doc.url.starts_with("redis://") || doc.url.starts_with("rediss://")) {
                errs.push(
                    at.clone(),
                    format!("redis.url `{}` is not a redis:// or rediss:// URL", doc.url),
                );
            } else if doc.url.contains('@') {
                errs.push(
                    at.clone(),
                    "redis.url carries a password: use `password: {env: ...}` or `{file: ...}`",
                );
            }
            limits.redis = Some(crate::quota::RedisSettings {
                url: doc.url,
                password,
                timeout: doc.timeout.unwrap_or(Duration::from_millis(50)),
                prefix: doc.key_prefix.unwrap_or_else(|| "claimgate:rl:".into()),
            });
        }
        if let Some(doc) = self.tracing {
            let at = origin(path, &doc);
            let doc = doc.value;
            let ratio = doc.sample_ratio.unwrap_or(1.0);
            if !(0.0..=1.0).contains(&ratio) {
                errs.push(
                    at.clone(),
                    format!("tracing.sample_ratio {ratio} is not between 0.0 and 1.0"),
                );
            }
            if !(doc.otlp_endpoint.starts_with("http://")
                || doc.otlp_endpoint.starts_with("https://"))
            {
                errs.push(
                    at,
                    format!(
                        "tracing.otlp_endpoint `{}` is not a URL such as http://otel-collector:4317",
                        doc.otlp_endpoint
                    ),
                );
            }
            limits.tracing = Some(crate::otel::Settings {
                otlp_endpoint: doc.otlp_endpoint,
                sample_ratio: ratio,
                service_name: doc.service_name.unwrap_or_else(|| "claimgate".into()),
                export_timeout: doc.export_timeout.unwrap_or(Duration::from_secs(10)),
            });
        }
        let rd = ReloadSettings::default();
        let reload = ReloadSettings {
            watch: self.reload.watch.unwrap_or(rd.watch),
            debounce: self.reload.debounce.unwrap_or(rd.debounce),
            poll_interval: self.reload.poll_interval.unwrap_or(rd.poll_interval),
        };
        if limits.max_header_bytes < 8192 {
            // hyper refuses an HTTP/1 buffer under 8 KiB.
            errs.push(
                Origin::file(path),
                "limits.max_header_bytes must be at least 8192",
            );
        }
        if limits.max_connections == 0 {
            errs.push(
                Origin::file(path),
                "limits.max_connections must be at least 1",
            );
        }
        let forward_auth = self.forward_auth.and_then(|fa| {
            let at = origin(path, &fa);
            let doc = fa.value;
            let listen = doc.listen.parse().map_err(|_| {
                errs.push(
                    at.clone(),
                    format!(
                        "forward_auth.listen `{}` is not an address such as 127.0.0.1:8081",
                        doc.listen
                    ),
                )
            });
            let gateways = gateways(&mut errs, &at, "forward_auth", &doc.gateways);
            if !doc.path_prefix.is_empty() && !doc.path_prefix.starts_with('/') {
                errs.push(at, "forward_auth.path_prefix must start with `/`");
            }
            Some(ForwardAuthConfig {
                listen: listen.ok()?,
                gateways,
                path_prefix: doc.path_prefix.trim_end_matches('/').to_string(),
            })
        });
        let ext_authz = self.ext_authz.and_then(|ea| {
            let at = origin(path, &ea);
            let doc = ea.value;
            let listen = doc.listen.parse().map_err(|_| {
                errs.push(
                    at.clone(),
                    format!(
                        "ext_authz.listen `{}` is not an address such as 0.0.0.0:9001",
                        doc.listen
                    ),
                )
            });
            let gateways = gateways(&mut errs, &at, "ext_authz", &doc.gateways);
            Some(ExtAuthzConfig {
                listen: listen.ok()?,
                gateways,
            })
        });
        let config = ProcessConfig {
            ext_authz,
            forward_auth,
            listen: listen.unwrap_or(([0, 0, 0, 0], 0).into()),
            admin_listen: admin_listen.unwrap_or(([127, 0, 0, 1], 0).into()),
            policies: base.join(&self.policies),
            tls: self.tls.map(|t| TlsFiles {
                reload_interval: t.reload_interval.unwrap_or(Duration::from_secs(10)),
                cert: base.join(t.cert),
                key: base.join(t.key),
            }),
            limits,
            log_format: self.log_format,
            workers: self.workers,
            reload,
        };
        errs.into_result(config)
    }
}

/// A door's `gateways`: address blocks, at least one.
fn gateways(errs: &mut ConfigErrors, at: &Origin, door: &str, list: &[String]) -> Vec<Cidr> {
    let mut out = Vec::new();
    for g in list {
        match Cidr::parse(g) {
            Ok(c) => out.push(c),
            Err(e) => errs.push(at.clone(), format!("{door}.gateways: {e}")),
        }
    }
    if list.is_empty() {
        errs.push(
            at.clone(),
            format!("{door}.gateways must name the gateways' addresses: only they may say which request is decided"),
        );
    }
    out
}

mod policy;
pub use policy::*;
