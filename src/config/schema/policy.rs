//! The policy files' schema: issuers, upstreams, routes, rules, headers.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::config::duration;
use crate::forward::template::{Empty, Encoding};
use crate::token::Profile;

/// One policy file. The files of a directory are merged; a name defined twice
/// is an error naming both places.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyDoc {
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, IssuerDoc>")]
    pub issuers: BTreeMap<String, Spanned<IssuerDoc>>,
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, UpstreamDoc>")]
    pub upstreams: BTreeMap<String, Spanned<UpstreamDoc>>,
    /// Header templates applied on every authenticated route.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, ForwardDoc>")]
    pub forward: BTreeMap<String, Spanned<ForwardDoc>>,
    /// Peers (a load balancer, an ingress) whose `X-Forwarded-*` headers are
    /// extended or kept rather than replaced: addresses or blocks.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub trusted_proxies: Vec<Spanned<String>>,
    /// What to do with a client header claimgate owns: `strip` it (the
    /// default) or `refuse` the request with 400.
    #[serde(default)]
    pub spoofed_headers: SpoofedHeaders,
    /// Client headers starting with one of these are always removed.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub reserved_header_prefixes: Vec<Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Vec<RouteDoc>")]
    pub routes: Vec<Spanned<RouteDoc>>,
    /// Named orders for `at_least`, lowest first:
    /// `subscription: [free, silver, gold, platinum]`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Vec<String>>")]
    pub levels: BTreeMap<String, Spanned<Vec<String>>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
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
    #[schemars(with = "Option<String>")]
    pub leeway: Option<Duration>,
    #[serde(default, deserialize_with = "duration::option")]
    #[schemars(with = "Option<String>")]
    pub refresh_interval: Option<Duration>,
    /// Bounds on a period from the JWKS response's `Cache-Control: max-age`
    /// (defaults: 1m or refresh_interval if shorter, and 1h).
    #[serde(default, deserialize_with = "duration::option")]
    #[schemars(with = "Option<String>")]
    pub refresh_min: Option<Duration>,
    #[serde(default, deserialize_with = "duration::option")]
    #[schemars(with = "Option<String>")]
    pub refresh_max: Option<Duration>,
    /// Last good keys are dropped when no load succeeded for this long (24h).
    #[serde(default, deserialize_with = "duration::option")]
    #[schemars(with = "Option<String>")]
    pub max_stale: Option<Duration>,
    /// Least time between loads caused by unknown `kid`s (default 30s).
    #[serde(default, deserialize_with = "duration::option")]
    #[schemars(with = "Option<String>")]
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
    #[schemars(with = "Option<String>")]
    pub max_lifetime: Option<Duration>,
    /// Longest `sub` accepted, in bytes (default 1024). A `sub` must also
    /// hold a character other than white space.
    pub max_sub_length: Option<usize>,
    /// Opaque tokens: ask the issuer's introspection endpoint (RFC 7662).
    pub introspection: Option<IntrospectionDoc>,
    /// Where the IdP keeps roles, tenants, scopes; and its token checks.
    #[serde(default)]
    pub profile: Profile,
    /// Overrides of the profile's claim locations.
    #[serde(default)]
    pub claims: ClaimsDoc,
}

/// Where a secret is read from; its value never appears in the config.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretDoc {
    pub env: Option<String>,
    pub file: Option<PathBuf>,
}

/// An issuer's token introspection (RFC 7662 / RFC 9701 / phantom token).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionDoc {
    /// The endpoint; default: the discovery document's
    /// `introspection_endpoint` (needs `discovery`).
    pub endpoint: Option<String>,
    pub client_id: String,
    /// For `client_secret_basic` / `client_secret_post`.
    pub client_secret: Option<SecretDoc>,
    /// For `private_key_jwt`: the client's PKCS#8 PEM private key (P-256,
    /// RSA or Ed25519), from env or a file.
    pub private_key: Option<SecretDoc>,
    /// The private key's `kid`, sent in the assertion header.
    pub key_id: Option<String>,
    /// `client_secret_basic` (default), `client_secret_post` or
    /// `private_key_jwt` (RFC 7523).
    pub auth: Option<String>,
    /// `opaque` (default): tokens that are not JWTs; `all`: every token,
    /// JWTs too (a revocation then takes effect within `cache_ttl`).
    pub tokens: Option<String>,
    /// `json` (RFC 7662, default), `jwt` (RFC 9701, signed by the issuer) or
    /// `phantom` (`application/jwt`: the token's JWT).
    pub response: Option<String>,
    /// Longest an active answer is trusted (also never past its `exp`);
    /// default 60 s: a revocation takes effect within it.
    #[serde(default, deserialize_with = "duration::option")]
    #[schemars(with = "Option<String>")]
    pub cache_ttl: Option<Duration>,
    /// How long `active: false` is remembered; default 5 s.
    #[serde(default, deserialize_with = "duration::option")]
    #[schemars(with = "Option<String>")]
    pub inactive_ttl: Option<Duration>,
    /// Calls in flight at once; default 16. Past it: 503 `introspection_busy`.
    pub max_in_flight: Option<usize>,
    /// Calls a second (bursts up to one second's worth); default 50.
    pub max_per_second: Option<u32>,
}

/// Claim locations, each a JSONPath (tenant keys are member names).
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
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

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
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

#[derive(Debug, Deserialize, schemars::JsonSchema)]
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
    #[schemars(with = "Option<RuleDoc>")]
    pub allow: Option<Spanned<RuleDoc>>,
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, ForwardDoc>")]
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
    /// An upgraded (WebSocket) connection may outlive the token's `exp`
    /// (SECURITY.md rule 23: by default it is closed then).
    #[serde(default)]
    pub websocket_outlives_token: bool,
    /// Cross-origin browser access: preflights answered here.
    pub cors: Option<CorsDoc>,
    /// Quotas: each limit's key, rate by plan, and store.
    #[serde(default)]
    #[schemars(with = "Vec<RateLimitDoc>")]
    pub rate_limits: Vec<Spanned<RateLimitDoc>>,
}

/// A route's CORS settings.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CorsDoc {
    /// Exact origins, `https://app.example.com`; `*` for any.
    pub origins: Vec<String>,
    /// Default: the route's methods, else GET, HEAD, POST.
    pub methods: Option<Vec<String>>,
    /// Request headers a page may send (default: Authorization, Content-Type).
    pub headers: Option<Vec<String>>,
    /// Response headers a page may read.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    #[serde(default)]
    pub credentials: bool,
    #[serde(default, deserialize_with = "duration::option")]
    #[schemars(with = "Option<String>")]
    pub max_age: Option<Duration>,
}

/// One rate limit of a route.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitDoc {
    /// Names the limit in metrics and headers; unique in the route.
    pub name: String,
    /// A template like a header's: `{{ $.sub }}`, `{{ $.org_id }}`, and
    /// with `key_from_request: true` also `{{ {tenant} }}` or
    /// `{{ {header:X-Api-Key} }}`.
    pub key: String,
    /// Lets the key read request values (unverified input, rule 24).
    #[serde(default)]
    pub key_from_request: bool,
    /// The claim naming the plan, e.g. `$.subscription_level`.
    pub by: Option<String>,
    /// Plan → rate (`60/min`, `10/s`, `unlimited`); needs `by`.
    #[serde(default)]
    pub limits: BTreeMap<String, String>,
    /// The rate without `by`, or for a plan not listed.
    pub default: Option<String>,
    /// `local` (default) or `redis` (the process file's `redis:`).
    pub store: Option<String>,
    /// With `store: redis`, required: `allow`, `deny` or `local`.
    pub on_store_error: Option<String>,
    /// `RateLimit` / `RateLimit-Policy` on allowed responses too.
    #[serde(default)]
    pub headers: bool,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WebhookKind {
    Hasura,
}

/// An upstream: its URL, or the URL with how to speak to it.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum UpstreamDoc {
    Url(String),
    Full(UpstreamFullDoc),
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFullDoc {
    pub url: String,
    /// `http1` (default), `h2c` (HTTP/2 without TLS, prior knowledge), `h2`
    /// (HTTP/2 over TLS), `auto` (over TLS, h2 or http/1.1 by ALPN).
    pub protocol: Option<String>,
    /// PEM CA certificates trusted for this upstream, besides the Mozilla
    /// roots (relative to the policy file).
    pub ca_file: Option<PathBuf>,
    /// A client certificate (PEM chain) and key for mTLS to the upstream.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// A header: a template, or a template with its encoding and empty policy.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum ForwardDoc {
    Template(String),
    Full(ForwardFullDoc),
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SpoofedHeaders {
    #[default]
    Strip,
    Refuse,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchDoc {
    pub path: String,
    pub methods: Option<Vec<String>>,
    pub host: Option<String>,
}

/// One node of an `allow` rule: exactly one of `all`, `any`, `not`, a
/// `claim` with one operator, or a shorthand such as `scope`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleDoc {
    #[schemars(with = "Option<Vec<RuleDoc>>")]
    pub all: Option<Vec<Spanned<RuleDoc>>>,
    #[schemars(with = "Option<Vec<RuleDoc>>")]
    pub any: Option<Vec<Spanned<RuleDoc>>>,
    #[schemars(with = "Option<Box<RuleDoc>>")]
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
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum NeedDoc {
    One(String),
    Set(NeedSetDoc),
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NeedSetDoc {
    pub any_of: Option<Vec<String>>,
    pub all_of: Option<Vec<String>>,
}

/// `{tenant: "{tenant}", any_of: [admin, analyst]}`; `tenant` is a request
/// value (`{param}`, `{header:Name}`), `current` for the current-tenant
/// claim, or a literal tenant id.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantNeedDoc {
    pub tenant: String,
    pub any_of: Option<Vec<String>>,
    pub all_of: Option<Vec<String>>,
}

/// The order `at_least` compares in: a name from the file's `levels`, or
/// the list itself.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum LevelsRef {
    Named(String),
    Inline(Vec<String>),
}
