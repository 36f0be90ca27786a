//! The configuration documents exactly as written in YAML. Every struct
//! rejects unknown keys; `Spanned` fields remember their line so that
//! errors found after parsing can still name it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::duration;
use super::error::{ConfigErrors, Origin};
use super::{ExtAuthzConfig, ForwardAuthConfig, Limits, ProcessConfig, ReloadSettings, TlsFiles};
use crate::forward::forwarded::Cidr;
use crate::forward::template::{Empty, Encoding};
use crate::token::Profile;

// === process file ===

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessDoc {
    #[serde(default = "default_listen")]
    pub listen: Spanned<String>,
    #[serde(default = "default_admin_listen")]
    pub admin_listen: Spanned<String>,
    pub policies: PathBuf,
    #[serde(default)]
    pub tls: Option<TlsDoc>,
    #[serde(default)]
    pub limits: LimitsDoc,
    #[serde(default)]
    pub log_format: LogFormat,
    #[serde(default)]
    pub reload: ReloadDoc,
    /// The forward-auth front door (nginx `auth_request`, Traefik
    /// `ForwardAuth`, Envoy HTTP ext_authz), on a listener of its own.
    pub forward_auth: Option<Spanned<ForwardAuthDoc>>,
    /// The Envoy ext_authz gRPC door (Istio CUSTOM, Envoy Gateway), on a
    /// listener of its own.
    pub ext_authz: Option<Spanned<ExtAuthzDoc>>,
}

/// The ext_authz gRPC listener and the Envoys it answers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtAuthzDoc {
    pub listen: String,
    /// The Envoys' addresses: only they may ask (SECURITY.md rule 21).
    pub gateways: Vec<String>,
}

/// The forward-auth listener and the gateways it answers.
#[derive(Debug, Deserialize)]
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
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadDoc {
    /// Watch the directory (inotify); survives ConfigMap `..data` swaps.
    pub watch: Option<bool>,
    /// Quiet time after the last change before reloading.
    #[serde(default, deserialize_with = "duration::option")]
    pub debounce: Option<Duration>,
    /// Re-read the directory this often as a backstop; `0s` turns it off.
    #[serde(default, deserialize_with = "duration::option")]
    pub poll_interval: Option<Duration>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsDoc {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsDoc {
    pub max_token_bytes: Option<usize>,
    #[serde(default, deserialize_with = "duration::option")]
    pub header_read_timeout: Option<Duration>,
    pub max_header_bytes: Option<usize>,
    pub max_headers: Option<usize>,
    pub max_connections: Option<usize>,
    pub max_concurrent_streams: Option<u32>,
    #[serde(default, deserialize_with = "duration::option")]
    pub upstream_connect_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration::option")]
    pub upstream_response_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration::option")]
    pub request_timeout: Option<Duration>,
    pub max_body_bytes: Option<u64>,
    #[serde(default, deserialize_with = "duration::option")]
    pub shutdown_grace: Option<Duration>,
    pub token_cache_entries: Option<usize>,
    #[serde(default, deserialize_with = "duration::option")]
    pub drain_delay: Option<Duration>,
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
        "127.0.0.1:9090".into(),
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
        };
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
                cert: base.join(t.cert),
                key: base.join(t.key),
            }),
            limits,
            log_format: self.log_format,
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

// === policy files ===

/// One policy file. The files of a directory are merged; a name defined twice
/// is an error naming both places.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDoc {
    #[serde(default)]
    pub issuers: BTreeMap<String, Spanned<IssuerDoc>>,
    #[serde(default)]
    pub upstreams: BTreeMap<String, Spanned<String>>,
    /// Header templates applied on every authenticated route.
    #[serde(default)]
    pub forward: BTreeMap<String, Spanned<ForwardDoc>>,
    /// Peers (a load balancer, an ingress) whose `X-Forwarded-*` headers are
    /// extended or kept rather than replaced: addresses or blocks.
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
    /// What to do with a client header claimgate owns: `strip` it (the
    /// default) or `refuse` the request with 400.
    #[serde(default)]
    pub spoofed_headers: SpoofedHeaders,
    /// Client headers starting with one of these are always removed.
    #[serde(default)]
    pub reserved_header_prefixes: Vec<Spanned<String>>,
    #[serde(default)]
    pub routes: Vec<Spanned<RouteDoc>>,
    /// Named orders for `at_least`, lowest first:
    /// `subscription: [free, silver, gold, platinum]`.
    #[serde(default)]
    pub levels: BTreeMap<String, Spanned<Vec<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerDoc {
    /// The exact `iss` value of this issuer's tokens; with `discovery`, the
    /// discovery URL when not given.
    pub issuer: Option<String>,
    /// OIDC discovery: the issuer URL whose
    /// `/.well-known/openid-configuration` names the `jwks_uri`. The
    /// document's `issuer` must equal this issuer's.
    pub discovery: Option<String>,
    /// Accepted `aud` values; a token must name at least one.
    pub audience: OneOrMany,
    pub jwks_uri: Option<String>,
    /// A JWKS file, resolved against the policy file's folder.
    pub jwks_file: Option<PathBuf>,
    /// A shared HMAC secret instead of public keys: `{env: NAME}` or
    /// `{file: path}`. Its algorithms are HS* only.
    pub hmac_secret: Option<SecretDoc>,
    /// Extra trusted CA certificates (PEM) for `jwks_uri` / `discovery`,
    /// relative to the policy file.
    pub ca_file: Option<PathBuf>,
    /// Plain-http `jwks_uri` is refused unless this is set.
    #[serde(default)]
    pub allow_http: bool,
    pub algorithms: Option<Vec<String>>,
    #[serde(default, deserialize_with = "duration::option")]
    pub leeway: Option<Duration>,
    #[serde(default, deserialize_with = "duration::option")]
    pub refresh_interval: Option<Duration>,
    /// Bounds on a period from the JWKS response's `Cache-Control: max-age`
    /// (defaults: 1m or refresh_interval if shorter, and 1h).
    #[serde(default, deserialize_with = "duration::option")]
    pub refresh_min: Option<Duration>,
    #[serde(default, deserialize_with = "duration::option")]
    pub refresh_max: Option<Duration>,
    /// Last good keys are dropped when no load succeeded for this long (24h).
    #[serde(default, deserialize_with = "duration::option")]
    pub max_stale: Option<Duration>,
    /// Least time between loads caused by unknown `kid`s (default 30s).
    #[serde(default, deserialize_with = "duration::option")]
    pub unknown_kid_cooldown: Option<Duration>,
    pub untrusted_claims: Option<Vec<String>>,
    /// Refuse (401 `untrusted_claim`) a token carrying an untrusted claim,
    /// instead of removing the claim.
    #[serde(default)]
    pub refuse_untrusted_claims: bool,
    /// Where tokens may come from, in order: `bearer`, `cookie:NAME`,
    /// `header:NAME[:PREFIX]`, `query:NAME`. Default `[bearer]`.
    pub token_from: Option<Vec<String>>,
    /// Longest `exp - iat` accepted; `iat` becomes required.
    #[serde(default, deserialize_with = "duration::option")]
    pub max_lifetime: Option<Duration>,
    /// Longest `sub` accepted, in bytes (default 1024). A `sub` must also
    /// hold a character other than white space.
    pub max_sub_length: Option<usize>,
    /// Where the IdP keeps roles, tenants, scopes; and its token checks.
    #[serde(default)]
    pub profile: Profile,
    /// Overrides of the profile's claim locations.
    #[serde(default)]
    pub claims: ClaimsDoc,
}

/// Where a secret is read from; its value never appears in the config.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretDoc {
    pub env: Option<String>,
    pub file: Option<PathBuf>,
}

/// Claim locations, each a JSONPath (tenant keys are member names).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimsDoc {
    pub roles: Option<String>,
    pub permissions: Option<String>,
    pub scope: Option<OneOrMany>,
    pub tenants: Option<String>,
    pub tenant_roles: Option<String>,
    pub tenant_permissions: Option<String>,
    pub current_tenant: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteDoc {
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: MatchDoc,
    pub upstream: Option<String>,
    /// No token needed; header hygiene still applies.
    #[serde(default)]
    pub public: bool,
    /// Issuers whose tokens this route accepts; all when absent.
    pub issuers: Option<Vec<String>>,
    /// The rule a verified token must satisfy; any verified token when absent.
    pub allow: Option<Spanned<RuleDoc>>,
    #[serde(default)]
    pub forward: BTreeMap<String, Spanned<ForwardDoc>>,
    /// What headers whose expression finds nothing become (default omit).
    #[serde(default, deserialize_with = "empty_policy")]
    pub empty_claims: Option<Empty>,
    /// Send the whole verified claim set (untrusted claims removed) in this
    /// header, as base64url JSON.
    pub claims_header: Option<String>,
    /// Hasura's session variables and role selection, as `X-Hasura-*`.
    pub hasura: Option<HasuraDoc>,
    /// Answer Hasura's auth-webhook contract instead of proxying.
    pub webhook: Option<WebhookKind>,
    /// Send the client's `Authorization` header to the upstream.
    #[serde(default)]
    pub pass_authorization: bool,
    /// Pass rewrite-class headers (`X-Envoy-*`, `X-Original-*`,
    /// `X-Rewrite-URL`, `X-HTTP-Method-Override`, ...) on when they come
    /// from a `trusted_proxies` peer. From any other peer they are always
    /// removed.
    #[serde(default)]
    pub trust_rewrite_headers: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HasuraDoc {
    /// The claim holding the session variables (default
    /// `$['https://hasura.io/jwt/claims']`).
    pub namespace: Option<String>,
    /// Instead: each session variable from its own JSONPath.
    pub claims_map: Option<BTreeMap<String, String>>,
    /// `json` (default) or `stringified_json`: the namespace claim is a
    /// string holding the JSON object, as Hasura's `claims_format` allows.
    #[serde(default)]
    pub claims_format: crate::forward::hasura::ClaimsFormat,
    /// Sent as `X-Hasura-Admin-Secret`, so that Hasura takes the role and
    /// session headers from claimgate.
    pub admin_secret: Option<SecretDoc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookKind {
    Hasura,
}

/// A header: a template, or a template with its encoding and empty policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ForwardDoc {
    Template(String),
    Full(ForwardFullDoc),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardFullDoc {
    pub value: String,
    #[serde(default)]
    pub encoding: Encoding,
    #[serde(default, deserialize_with = "empty_policy")]
    pub empty: Option<Empty>,
    /// The request is refused (403 `required_header_empty`) when this header
    /// would render empty: an upstream keyed on it never sees a request
    /// without it (SECURITY.md rule 5).
    #[serde(default)]
    pub required: bool,
}

/// `omit`, `empty` or `null` — where YAML reads a bare `null` as null, which
/// here means the `null` policy, not "unset".
fn empty_policy<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Empty>, D::Error> {
    match Option::<String>::deserialize(d)?.as_deref() {
        None | Some("null") => Ok(Some(Empty::Null)),
        Some("omit") => Ok(Some(Empty::Omit)),
        Some("empty") => Ok(Some(Empty::Empty)),
        Some(other) => Err(serde::de::Error::custom(format!(
            "`{other}` is not an empty-claims policy (omit, empty, null)"
        ))),
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpoofedHeaders {
    #[default]
    Strip,
    Refuse,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchDoc {
    pub path: String,
    pub methods: Option<Vec<String>>,
    pub host: Option<String>,
}

/// One node of an `allow` rule: exactly one of `all`, `any`, `not`, a
/// `claim` with one operator, or a shorthand such as `scope`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDoc {
    pub all: Option<Vec<Spanned<RuleDoc>>>,
    pub any: Option<Vec<Spanned<RuleDoc>>>,
    pub not: Option<Box<Spanned<RuleDoc>>>,
    pub claim: Option<String>,
    pub equals: Option<serde_json::Value>,
    #[serde(rename = "in")]
    pub one_of: Option<Vec<serde_json::Value>>,
    pub contains: Option<serde_json::Value>,
    pub exists: Option<bool>,
    pub contains_any: Option<Vec<serde_json::Value>>,
    pub contains_all: Option<Vec<serde_json::Value>>,
    /// A regex the whole string claim must match.
    pub matches: Option<String>,
    pub gt: Option<f64>,
    pub gte: Option<f64>,
    pub lt: Option<f64>,
    pub lte: Option<f64>,
    /// A level name; with `levels`, a name from the file's `levels` or a list.
    pub at_least: Option<String>,
    pub levels: Option<LevelsRef>,
    pub role: Option<NeedDoc>,
    pub permission: Option<NeedDoc>,
    pub scope: Option<NeedDoc>,
    pub tenant_role: Option<TenantNeedDoc>,
    pub tenant_permission: Option<TenantNeedDoc>,
}

/// `admin`, `{any_of: [a, b]}` or `{all_of: [a, b]}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum NeedDoc {
    One(String),
    Set(NeedSetDoc),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeedSetDoc {
    pub any_of: Option<Vec<String>>,
    pub all_of: Option<Vec<String>>,
}

/// `{tenant: "{tenant}", any_of: [admin, analyst]}`; `tenant` is a request
/// value (`{param}`, `{header:Name}`), `current` for the current-tenant
/// claim, or a literal tenant id.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantNeedDoc {
    pub tenant: String,
    pub any_of: Option<Vec<String>>,
    pub all_of: Option<Vec<String>>,
}

/// The order `at_least` compares in: a name from the file's `levels`, or
/// the list itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum LevelsRef {
    Named(String),
    Inline(Vec<String>),
}
