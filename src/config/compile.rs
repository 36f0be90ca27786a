//! Policy files → one [`Snapshot`]. Collects every error before giving up,
//! so an operator fixes a broken file in one pass.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::jwks::Algorithm;
use http::Method;
use serde_saphyr::Spanned;

use super::docs::{
    origin, ForwardDoc, HasuraDoc, IssuerDoc, LevelsRef, NeedDoc, PolicyDoc, RouteDoc, RuleDoc,
    SecretDoc, SpoofedHeaders, TenantNeedDoc, WebhookKind,
};
use super::error::{ConfigErrors, Origin};
use super::yaml::{self, Vars};
use crate::forward::forwarded::Cidr;
use crate::forward::hasura::{Hasura, Secret, SessionSource};
use crate::forward::template::Encoding;
use crate::forward::{HeaderTemplate, OwnedHeaders};
use crate::jwks::keys::{ASYMMETRIC, HMAC};
use crate::jwks::{JwksStore, KeySource, Refresh, SecretRef};
use crate::policy::route::{param_names, parse_template};
use crate::policy::rule::{
    ClaimLocations, Cmp, Need, Operand, RequestValue, TenantFrom, TenantKind,
};
use crate::policy::{ClaimPath, Op, Route, Router, Rule, Segment, Target};
use crate::snapshot::{Snapshot, SourceInfo, Upstream};
use crate::token::extract::TokenSource;
use crate::token::{Issuer, Issuers};
use http::HeaderValue;

/// The largest leeway accepted (SECURITY.md rule 5).
const MAX_LEEWAY: Duration = Duration::from_secs(60);
/// Longest `sub` by default (rule 5: a bounded identity).
const DEFAULT_MAX_SUB_BYTES: usize = 1024;
const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
const DEFAULT_UNKNOWN_KID_COOLDOWN: Duration = Duration::from_secs(30);
/// Bounds on a refresh period taken from `Cache-Control: max-age`.
const DEFAULT_REFRESH_MIN: Duration = Duration::from_secs(60);
const DEFAULT_REFRESH_MAX: Duration = Duration::from_secs(3600);
const DEFAULT_MAX_STALE: Duration = Duration::from_secs(24 * 3600);

/// One policy file's name and text.
#[derive(Debug, Clone)]
pub struct PolicySource {
    pub path: PathBuf,
    pub text: String,
}

impl PolicySource {
    /// Reads every `*.yaml` / `*.yml` file of `dir` (not hidden ones, not
    /// subfolders), sorted by name so that loads are deterministic.
    pub fn read_dir(dir: &Path) -> Result<Vec<PolicySource>, ConfigErrors> {
        let mut errs = ConfigErrors::default();
        let entries = std::fs::read_dir(dir).map_err(|e| {
            let mut errs = ConfigErrors::default();
            errs.push(
                Origin::file(dir),
                format!("cannot read policy directory: {e}"),
            );
            errs
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                !name.starts_with('.')
                    && (name.ends_with(".yaml") || name.ends_with(".yml"))
                    && p.is_file()
            })
            .collect();
        paths.sort();
        let mut out = Vec::new();
        for path in paths {
            match std::fs::read_to_string(&path) {
                Ok(text) => out.push(PolicySource { path, text }),
                Err(e) => errs.push(Origin::file(&path), format!("cannot read: {e}")),
            }
        }
        if out.is_empty() && errs.is_empty() {
            errs.push(
                Origin::file(dir),
                "no policy files (*.yaml) in the directory",
            );
        }
        errs.into_result(out)
    }
}

/// The content hash of a set of policy files: file names and texts, so that
/// a rename or an edit both change it, and a ConfigMap swap to equal content
/// does not.
pub fn digest(sources: &[PolicySource]) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for source in sources {
        let name = source
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for part in [name.as_bytes(), source.text.as_bytes()] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
    }
    ctx.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Gives the key store of an issuer; stores outlive snapshots, so the
/// caller decides whether an existing one is reused.
pub type KeyStores<'a> = dyn FnMut(&str, &KeySource, &[Algorithm], Refresh) -> Arc<JwksStore> + 'a;

/// Compiles policy sources into a snapshot of `generation`.
pub fn compile(
    sources: &[PolicySource],
    vars: &dyn Vars,
    stores: &mut KeyStores,
    max_token_bytes: usize,
    generation: u64,
) -> Result<Snapshot, ConfigErrors> {
    let mut errs = ConfigErrors::default();
    let mut docs: Vec<(&Path, PolicyDoc)> = Vec::new();
    for src in sources {
        let text = match yaml::expand(&src.path, &src.text, vars) {
            Ok(t) => t,
            Err(e) => {
                errs.0.extend(e);
                continue;
            }
        };
        match yaml::parse::<PolicyDoc>(&src.path, &text) {
            Ok(doc) => docs.push((&src.path, doc)),
            Err(e) => errs.0.push(e),
        }
    }

    let mut c = Compiler {
        errs,
        issuers: Issuers::default(),
        issuer_origin: BTreeMap::new(),
        untrusted: Vec::new(),
        upstreams: BTreeMap::new(),
        defaults: Vec::new(),
        prefixes: Vec::new(),
        levels: BTreeMap::new(),
        refuse_spoofed: false,
        trusted_proxies: Vec::new(),
    };
    // Issuers and upstreams first: routes refer to them by name.
    for (file, doc) in &mut docs {
        for (name, issuer) in std::mem::take(&mut doc.issuers) {
            c.issuer(file, name, issuer, stores);
        }
        for (name, url) in std::mem::take(&mut doc.upstreams) {
            c.upstream(file, name, url);
        }
        for p in std::mem::take(&mut doc.reserved_header_prefixes) {
            c.prefixes.push(p.value.to_ascii_lowercase());
        }
        for (name, list) in std::mem::take(&mut doc.levels) {
            c.levels_entry(file, name, list);
        }
    }
    if c.untrusted.is_empty() {
        c.untrusted.push("nsec".into());
    }
    for (file, doc) in &docs {
        for (name, text) in &doc.forward {
            if let Some(t) = c.template(file, name, text, &[]) {
                c.defaults.push(t);
            }
        }
        if doc.spoofed_headers == SpoofedHeaders::Refuse {
            c.refuse_spoofed = true;
        }
        for p in &doc.trusted_proxies {
            match Cidr::parse(&p.value) {
                Ok(cidr) => c.trusted_proxies.push(cidr),
                Err(e) => c
                    .errs
                    .push(origin(file, p), format!("trusted_proxies: {e}")),
            }
        }
    }
    let mut router = Router::default();
    let mut names: BTreeMap<String, Origin> = BTreeMap::new();
    let mut all_templates: Vec<String> = c.defaults.iter().map(|t| t.name.to_string()).collect();
    for (file, doc) in docs.iter_mut() {
        for route in std::mem::take(&mut doc.routes) {
            let at = origin(file, &route);
            if let Some(first) = names.get(&route.value.name) {
                c.errs.push(
                    at.clone(),
                    format!("route `{}` is already defined at {first}", route.value.name),
                );
            } else {
                names.insert(route.value.name.clone(), at.clone());
            }
            if let Some((segments, route)) = c.route(file, at.clone(), route.value) {
                all_templates.extend(route.forward.iter().map(|t| t.name.to_string()));
                all_templates.extend(route.claims_header.iter().map(|h| h.to_string()));
                if let Err(other) = router.insert(&segments, Arc::new(route)) {
                    c.errs.push(
                        at,
                        format!("this route can match the same requests as route `{other}`"),
                    );
                }
            }
        }
    }
    if router.is_empty() && c.errs.is_empty() {
        let first = sources
            .first()
            .map(|s| s.path.as_path())
            .unwrap_or(Path::new("."));
        c.errs.push(
            Origin::file(first),
            "no routes are defined: every request would be refused",
        );
    }
    let owned_headers = OwnedHeaders::new(
        all_templates.iter().map(String::as_str),
        c.prefixes.iter().map(String::as_str),
    );
    // Every issuer's sources, bearer first: a request is searched in all of
    // them, and two tokens anywhere are refused.
    let mut token_sources = vec![TokenSource::Bearer];
    for issuer in c.issuers.iter() {
        for s in &issuer.token_from {
            if !token_sources.contains(s) {
                token_sources.push(s.clone());
            }
        }
    }
    let snapshot = Snapshot {
        generation,
        source: SourceInfo {
            sha256: digest(sources),
            loaded_at: std::time::SystemTime::now(),
            files: sources.iter().map(|s| s.path.clone()).collect(),
        },
        token_sources,
        refuse_spoofed: c.refuse_spoofed,
        trusted_proxies: c.trusted_proxies,
        router,
        issuers: c.issuers,
        owned_headers,
        max_token_bytes,
    };
    c.errs.into_result(snapshot)
}

struct Compiler {
    errs: ConfigErrors,
    issuers: Issuers,
    issuer_origin: BTreeMap<String, Origin>,
    untrusted: Vec<String>,
    upstreams: BTreeMap<String, (Origin, Arc<Upstream>)>,
    defaults: Vec<HeaderTemplate>,
    prefixes: Vec<String>,
    /// Named `at_least` orders from every file's `levels:`.
    levels: BTreeMap<String, Arc<Vec<String>>>,
    /// Some file says `spoofed_headers: refuse`.
    refuse_spoofed: bool,
    trusted_proxies: Vec<Cidr>,
}

impl Compiler {
    fn issuer(
        &mut self,
        file: &Path,
        name: String,
        doc: Spanned<IssuerDoc>,
        stores: &mut KeyStores,
    ) {
        let at = origin(file, &doc);
        if let Some(first) = self.issuer_origin.get(&name) {
            self.errs
                .push(at, format!("issuer `{name}` is already defined at {first}"));
            return;
        }
        self.issuer_origin.insert(name.clone(), at.clone());
        let doc = doc.value;
        let before = self.errs.len();
        let ca_file = doc
            .ca_file
            .as_ref()
            .map(|p| file.parent().unwrap_or(Path::new(".")).join(p));
        if let Some(path) = &ca_file {
            if let Err(e) = crate::jwks::fetch::ca_certificates(path) {
                self.errs
                    .push(at.clone(), format!("issuer `{name}`: ca_file {e}"));
            }
            if doc.jwks_file.is_some() {
                self.errs.push(
                    at.clone(),
                    format!("issuer `{name}`: ca_file goes with jwks_uri or discovery"),
                );
            }
        }
        let mut check_url = |what: &str, url: &str| {
            if url.starts_with("http://") && !doc.allow_http {
                self.errs.push(
                    at.clone(),
                    format!(
                        "issuer `{name}`: {what} is plain http; set `allow_http: true` to allow it"
                    ),
                );
            } else if !url.starts_with("https://") && !url.starts_with("http://") {
                self.errs.push(
                    at.clone(),
                    format!("issuer `{name}`: {what} must be an https URL"),
                );
            }
        };
        let iss = doc.issuer.clone().or_else(|| doc.discovery.clone());
        let secret = match doc.hmac_secret.as_ref().map(|s| secret_ref(file, s)) {
            None => None,
            Some(Ok(s)) => Some(s),
            Some(Err(e)) => {
                self.errs
                    .push(at.clone(), format!("issuer `{name}`: hmac_secret {e}"));
                return;
            }
        };
        let source = match (&secret, &doc.jwks_uri, &doc.jwks_file, &doc.discovery) {
            (Some(s), None, None, None) => KeySource::Secret(s.clone()),
            (Some(_), ..) => {
                self.errs.push(
                    at.clone(),
                    format!("issuer `{name}`: an hmac_secret issuer has no public keys (drop jwks_uri, jwks_file, discovery): one issuer never mixes HMAC and asymmetric keys"),
                );
                return;
            }
            (None, Some(url), None, None) => {
                check_url("jwks_uri", url);
                KeySource::Uri {
                    url: url.clone(),
                    allow_http: doc.allow_http,
                    ca_file: ca_file.clone(),
                }
            }
            (None, None, Some(path), None) => {
                KeySource::File(file.parent().unwrap_or(Path::new(".")).join(path))
            }
            (None, None, None, Some(url)) => {
                check_url("discovery", url);
                KeySource::Discovery {
                    url: url.clone(),
                    issuer: iss.clone().unwrap_or_default(),
                    allow_http: doc.allow_http,
                    ca_file: ca_file.clone(),
                }
            }
            _ => {
                self.errs.push(
                    at.clone(),
                    format!(
                        "issuer `{name}`: set exactly one of jwks_uri, jwks_file, discovery and hmac_secret"
                    ),
                );
                return;
            }
        };
        let Some(iss) = iss else {
            self.errs.push(
                at.clone(),
                format!("issuer `{name}`: `issuer` (the exact `iss`) is required"),
            );
            return;
        };
        // Rule 10: HMAC only with a configured secret, and then only HMAC.
        let family: &[Algorithm] = if secret.is_some() { &HMAC } else { &ASYMMETRIC };
        let algorithms = match &doc.algorithms {
            None if secret.is_some() => vec![Algorithm::HS256],
            None => ASYMMETRIC.to_vec(),
            Some(list) => {
                let mut out = Vec::new();
                for a in list {
                    match a.parse::<Algorithm>() {
                        Ok(alg) if family.contains(&alg) => out.push(alg),
                        _ if secret.is_some() => self.errs.push(at.clone(), format!("issuer `{name}`: algorithm `{a}` does not go with hmac_secret (HS256, HS384, HS512 only)")),
                        _ => self.errs.push(at.clone(), format!("issuer `{name}`: algorithm `{a}` is not supported (asymmetric only: RS*, PS*, ES256, ES384, ES512, EdDSA, Ed25519; HS* need hmac_secret)")),
                    }
                }
                out
            }
        };
        let leeway = doc.leeway.unwrap_or(DEFAULT_LEEWAY);
        if leeway > MAX_LEEWAY {
            self.errs.push(
                at.clone(),
                format!("issuer `{name}`: leeway may be at most 60s"),
            );
        }
        let audiences = doc.audience.into_vec();
        if audiences.is_empty() || audiences.iter().any(String::is_empty) {
            self.errs.push(
                at.clone(),
                format!("issuer `{name}`: audience must name at least one value"),
            );
        }
        if iss.is_empty() {
            self.errs.push(
                at.clone(),
                format!("issuer `{name}`: issuer must not be empty"),
            );
        }
        if let Some(other) = self.issuers.by_iss(&iss) {
            self.errs.push(
                at.clone(),
                format!(
                    "issuer `{name}`: `{iss}` is also the issuer of `{}`",
                    other.name
                ),
            );
        }
        let untrusted = doc.untrusted_claims.unwrap_or_else(|| vec!["nsec".into()]);
        if self.errs.len() != before {
            return;
        }
        for u in &untrusted {
            if !self.untrusted.contains(u) {
                self.untrusted.push(u.clone());
            }
        }
        let interval = doc
            .refresh_interval
            .unwrap_or(DEFAULT_REFRESH)
            .max(Duration::from_secs(1));
        let refresh = Refresh {
            interval,
            min_interval: doc
                .refresh_min
                .unwrap_or(interval.min(DEFAULT_REFRESH_MIN))
                .max(Duration::from_secs(1)),
            max_interval: doc.refresh_max.unwrap_or(interval.max(DEFAULT_REFRESH_MAX)),
            max_stale: doc.max_stale.unwrap_or(DEFAULT_MAX_STALE),
            unknown_kid_cooldown: doc
                .unknown_kid_cooldown
                .unwrap_or(DEFAULT_UNKNOWN_KID_COOLDOWN),
        };
        if refresh.min_interval > refresh.max_interval {
            self.errs.push(
                at.clone(),
                format!("issuer `{name}`: refresh_min is above refresh_max"),
            );
        }
        if refresh.max_stale <= refresh.max_interval.max(interval) {
            self.errs.push(
                at.clone(),
                format!("issuer `{name}`: max_stale must be longer than the refresh period, or keys would expire between two refreshes"),
            );
        }
        let mut texts = doc.profile.locations();
        let c = doc.claims;
        let set = |slot: &mut String, v: Option<String>| {
            if let Some(v) = v {
                *slot = v;
            }
        };
        set(&mut texts.roles, c.roles);
        set(&mut texts.permissions, c.permissions);
        set(&mut texts.tenants, c.tenants);
        set(&mut texts.tenant_roles, c.tenant_roles);
        set(&mut texts.tenant_permissions, c.tenant_permissions);
        set(&mut texts.current_tenant, c.current_tenant);
        if let Some(scope) = c.scope {
            texts.scopes = scope.into_vec();
        }
        let mut token_from = Vec::new();
        for text in doc.token_from.unwrap_or_else(|| vec!["bearer".into()]) {
            match TokenSource::parse(&text) {
                Ok(s) if !token_from.contains(&s) => token_from.push(s),
                Ok(_) => {}
                Err(e) => self.errs.push(at.clone(), format!("issuer `{name}`: {e}")),
            }
        }
        if token_from.is_empty() {
            self.errs.push(
                at.clone(),
                format!("issuer `{name}`: token_from needs at least one source"),
            );
            return;
        }
        let locations = match ClaimLocations::compile(&texts, &untrusted) {
            Ok(l) => l,
            Err(e) => {
                self.errs.push(at, format!("issuer `{name}`: claims: {e}"));
                return;
            }
        };
        let keys = stores(&name, &source, &algorithms, refresh);
        self.issuers.insert(Issuer {
            name,
            iss,
            audiences,
            algorithms,
            leeway: leeway.as_secs(),
            untrusted_claims: untrusted,
            refuse_untrusted: doc.refuse_untrusted_claims,
            profile: doc.profile,
            token_from,
            max_lifetime: doc.max_lifetime.map(|d| d.as_secs()),
            max_sub_bytes: doc.max_sub_length.unwrap_or(DEFAULT_MAX_SUB_BYTES),
            locations,
            keys,
        });
    }

    /// A route's Hasura profile. The admin secret is read here, once.
    fn hasura(&self, file: &Path, doc: &HasuraDoc) -> Result<Hasura, String> {
        let source = match (&doc.namespace, &doc.claims_map) {
            (Some(_), Some(_)) => return Err("give `namespace` or `claims_map`, not both".into()),
            (None, Some(map)) => {
                let mut entries = Vec::new();
                for (name, path) in map {
                    let name = name.to_ascii_lowercase();
                    if !name.starts_with("x-hasura-") {
                        return Err(format!("`{name}` is not an x-hasura-* session variable"));
                    }
                    entries.push((name, ClaimPath::compile(path, &self.untrusted)?));
                }
                SessionSource::Map(entries)
            }
            (ns, None) => SessionSource::Namespace(ClaimPath::compile(
                ns.as_deref().unwrap_or("$['https://hasura.io/jwt/claims']"),
                &self.untrusted,
            )?),
        };
        let admin_secret = match &doc.admin_secret {
            None => None,
            Some(s) => {
                let value = secret_ref(file, s)
                    .and_then(|r| r.read())
                    .map_err(|e| format!("admin_secret {e}"))?;
                let value = HeaderValue::from_bytes(&value)
                    .ok()
                    .filter(|_| !value.is_empty())
                    .ok_or("admin_secret is empty or not a valid header value")?;
                Some(Secret(value))
            }
        };
        Ok(Hasura {
            source,
            format: doc.claims_format,
            admin_secret,
        })
    }

    fn levels_entry(&mut self, file: &Path, name: String, list: Spanned<Vec<String>>) {
        let at = origin(file, &list);
        let mut seen = std::collections::BTreeSet::new();
        if list.value.is_empty() || !list.value.iter().all(|l| seen.insert(l)) {
            self.errs.push(
                at,
                format!("levels `{name}`: a non-empty list of distinct names, lowest first"),
            );
        } else {
            match self.levels.entry(name) {
                std::collections::btree_map::Entry::Occupied(e) => {
                    let name = e.key();
                    self.errs
                        .push(at, format!("levels `{name}` are defined twice"));
                }
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(Arc::new(list.value));
                }
            }
        }
    }

    fn upstream(&mut self, file: &Path, name: String, url: Spanned<String>) {
        let at = origin(file, &url);
        if let Some((first, _)) = self.upstreams.get(&name) {
            self.errs.push(
                at,
                format!("upstream `{name}` is already defined at {first}"),
            );
            return;
        }
        match Upstream::parse(&name, &url.value) {
            Ok(u) => {
                self.upstreams.insert(name, (at, Arc::new(u)));
            }
            Err(e) => self.errs.push(at, e),
        }
    }

    fn template(
        &mut self,
        file: &Path,
        name: &str,
        doc: &Spanned<ForwardDoc>,
        params: &[String],
    ) -> Option<HeaderTemplate> {
        let (text, encoding, empty, required) = match &doc.value {
            ForwardDoc::Template(t) => (t, Encoding::Text, None, false),
            ForwardDoc::Full(f) => (&f.value, f.encoding, f.empty, f.required),
        };
        HeaderTemplate::compile(name, text, &self.untrusted, params)
            .map(|t| t.with(encoding, empty, required))
            .map_err(|e| {
                self.errs
                    .push(origin(file, doc), format!("header `{name}`: {e}"))
            })
            .ok()
    }

    fn route(&mut self, file: &Path, at: Origin, doc: RouteDoc) -> Option<(Vec<Segment>, Route)> {
        let before = self.errs.len();
        let name = doc.name;
        let ctx = |m: String| format!("route `{name}`: {m}");
        let segments = parse_template(&doc.matcher.path)
            .map_err(|e| self.errs.push(at.clone(), ctx(e)))
            .ok();
        let methods = doc.matcher.methods.map(|list| {
            list.iter()
                .filter_map(|m| {
                    let upper = m.to_ascii_uppercase();
                    Method::from_bytes(upper.as_bytes())
                        .map_err(|_| {
                            self.errs
                                .push(at.clone(), ctx(format!("`{m}` is not an HTTP method")))
                        })
                        .ok()
                })
                .collect::<Vec<_>>()
        });
        let host = doc
            .matcher
            .host
            .map(|h| h.trim_end_matches('.').to_ascii_lowercase());
        let webhook = doc.webhook == Some(WebhookKind::Hasura);
        let upstream = match (&doc.upstream, webhook) {
            (Some(u), false) => match self.upstreams.get(u) {
                Some((_, up)) => Some(up.clone()),
                None => {
                    self.errs
                        .push(at.clone(), ctx(format!("upstream `{u}` is not defined")));
                    None
                }
            },
            (Some(_), true) => {
                self.errs.push(
                    at.clone(),
                    ctx("a webhook route answers itself: drop `upstream`".into()),
                );
                None
            }
            (None, true) => None,
            (None, false) => {
                self.errs
                    .push(at.clone(), ctx("needs an `upstream`".into()));
                None
            }
        };
        let hasura = match doc.hasura.as_ref().map(|h| self.hasura(file, h)) {
            None => None,
            Some(Ok(h)) => Some(Arc::new(h)),
            Some(Err(e)) => {
                self.errs.push(at.clone(), ctx(format!("hasura: {e}")));
                None
            }
        };
        if webhook && doc.hasura.is_none() {
            self.errs.push(
                at.clone(),
                ctx("`webhook: hasura` needs a `hasura:` block".into()),
            );
        }
        if doc.hasura.is_some() && doc.public {
            self.errs.push(
                at.clone(),
                ctx("a public route has no claims for hasura".into()),
            );
        }
        if hasura.is_some() && !self.prefixes.iter().any(|p| p == "x-hasura-") {
            // No client ever sends an X-Hasura-* header upstream, on any route.
            self.prefixes.push("x-hasura-".into());
        }
        if let Some(list) = &doc.issuers {
            for i in list {
                if self.issuers.by_name(i).is_none() {
                    self.errs
                        .push(at.clone(), ctx(format!("issuer `{i}` is not defined")));
                }
            }
        }
        if !doc.public && self.issuers.is_empty() && self.issuer_origin.is_empty() {
            self.errs.push(
                at.clone(),
                ctx("is not public but no issuer is defined".into()),
            );
        }
        if doc.public && doc.allow.is_some() {
            self.errs.push(
                at.clone(),
                ctx("a public route cannot have an `allow` rule".into()),
            );
        }
        let params = segments.as_deref().map(param_names).unwrap_or_default();
        let allow = doc.allow.and_then(|r| self.rule(file, &r, &params));
        // Defaults first; a route's own template replaces a default of the same name.
        let mut forward: Vec<HeaderTemplate> = Vec::new();
        if !doc.public {
            forward = self.defaults.clone();
            for (hname, text) in &doc.forward {
                if let Some(t) = self.template(file, hname, text, &params) {
                    forward.retain(|d| d.name != t.name);
                    forward.push(t);
                }
            }
        } else if let Some((hname, text)) = doc.forward.iter().next() {
            self.errs.push(
                origin(file, text),
                ctx(format!(
                    "a public route has no claims to forward (header `{hname}`)"
                )),
            );
        }
        let claims_header = match &doc.claims_header {
            None => None,
            Some(h) => match h.parse::<http::HeaderName>() {
                Ok(h) if !doc.public => Some(h),
                Ok(_) => {
                    self.errs.push(
                        at.clone(),
                        ctx("a public route has no claims for claims_header".into()),
                    );
                    None
                }
                Err(_) => {
                    self.errs
                        .push(at.clone(), ctx(format!("`{h}` is not a header name")));
                    None
                }
            },
        };
        if self.errs.len() != before {
            return None;
        }
        let segments = segments?;
        let route = Route {
            empty_claims: doc.empty_claims.unwrap_or_default(),
            claims_header,
            name,
            template: doc.matcher.path,
            methods,
            host,
            target: if webhook {
                Target::HasuraWebhook
            } else {
                Target::Upstream(upstream?)
            },
            hasura,
            public: doc.public,
            issuers: doc.issuers,
            allow,
            forward,
            pass_authorization: doc.pass_authorization,
            trust_rewrite_headers: doc.trust_rewrite_headers,
            params,
        };
        Some((segments, route))
    }

    fn rule(&mut self, file: &Path, doc: &Spanned<RuleDoc>, params: &[String]) -> Option<Rule> {
        let at = origin(file, doc);
        let d = &doc.value;
        let set = |list: &[(&'static str, bool)]| -> Vec<&'static str> {
            list.iter().filter(|(_, on)| *on).map(|(n, _)| *n).collect()
        };
        let forms = set(&[
            ("all", d.all.is_some()),
            ("any", d.any.is_some()),
            ("not", d.not.is_some()),
            ("claim", d.claim.is_some()),
            ("role", d.role.is_some()),
            ("permission", d.permission.is_some()),
            ("scope", d.scope.is_some()),
            ("tenant_role", d.tenant_role.is_some()),
            ("tenant_permission", d.tenant_permission.is_some()),
        ]);
        let ops = set(&[
            ("equals", d.equals.is_some()),
            ("in", d.one_of.is_some()),
            ("contains", d.contains.is_some()),
            ("contains_any", d.contains_any.is_some()),
            ("contains_all", d.contains_all.is_some()),
            ("exists", d.exists.is_some()),
            ("matches", d.matches.is_some()),
            ("gt", d.gt.is_some()),
            ("gte", d.gte.is_some()),
            ("lt", d.lt.is_some()),
            ("lte", d.lte.is_some()),
            ("at_least", d.at_least.is_some()),
        ]);
        if forms.len() != 1 {
            let found = if forms.is_empty() {
                "none".to_string()
            } else {
                forms.join(", ")
            };
            self.errs.push(at, format!("a rule is exactly one of `all`, `any`, `not`, `claim` (with one operator), `role`, `permission`, `scope`, `tenant_role`, `tenant_permission` (found: {found})"));
            return None;
        }
        if d.claim.is_none() && !ops.is_empty() {
            self.errs
                .push(at, format!("`{}` goes with `claim`", ops.join("`, `")));
            return None;
        }
        if d.levels.is_some() && d.at_least.is_none() {
            self.errs.push(at, "`levels` goes with `at_least`");
            return None;
        }
        let many = |c: &mut Self, list: &[Spanned<RuleDoc>]| -> Option<Vec<Rule>> {
            let rules: Vec<Option<Rule>> = list.iter().map(|r| c.rule(file, r, params)).collect();
            rules.into_iter().collect()
        };
        match forms[0] {
            "all" => many(self, d.all.as_deref()?).map(Rule::All),
            "any" => many(self, d.any.as_deref()?).map(Rule::Any),
            "not" => self
                .rule(file, d.not.as_deref()?, params)
                .map(|r| Rule::Not(Box::new(r))),
            "role" => self.need(&at, "role", d.role.as_ref()?).map(Rule::Role),
            "permission" => self
                .need(&at, "permission", d.permission.as_ref()?)
                .map(Rule::Permission),
            "scope" => self.need(&at, "scope", d.scope.as_ref()?).map(Rule::Scope),
            "tenant_role" => self.tenant(&at, TenantKind::Roles, d.tenant_role.as_ref()?, params),
            "tenant_permission" => self.tenant(
                &at,
                TenantKind::Permissions,
                d.tenant_permission.as_ref()?,
                params,
            ),
            _ => self.claim_rule(at, d, &ops, params),
        }
    }

    fn claim_rule(
        &mut self,
        at: Origin,
        d: &RuleDoc,
        ops: &[&str],
        params: &[String],
    ) -> Option<Rule> {
        let text = d.claim.as_deref().unwrap_or_default();
        let path = ClaimPath::compile(text, &self.untrusted)
            .map_err(|e| self.errs.push(at.clone(), e))
            .ok()?;
        if ops.len() != 1 {
            self.errs.push(
                at,
                format!("claim `{text}` needs exactly one operator: `equals`, `in`, `contains`, `contains_any`, `contains_all`, `exists`, `matches`, `gt`, `gte`, `lt`, `lte` or `at_least`"),
            );
            return None;
        }
        let mut fail = |m: String| {
            self.errs.push(at.clone(), format!("claim `{text}`: {m}"));
        };
        let operand = |v: &serde_json::Value| -> Result<Operand, String> {
            match v {
                serde_json::Value::String(s) => Ok(match RequestValue::parse(s, params)? {
                    Some(r) => Operand::Request(r),
                    None => Operand::Literal(v.clone()),
                }),
                _ => Ok(Operand::Literal(v.clone())),
            }
        };
        let non_empty = |name: &str, v: &Vec<serde_json::Value>| {
            if v.is_empty() {
                Err(format!("`{name}` needs at least one value"))
            } else {
                Ok(v.clone())
            }
        };
        let op = match ops[0] {
            "equals" => operand(d.equals.as_ref()?).map(Op::Equals),
            "in" => non_empty("in", d.one_of.as_ref()?).map(Op::In),
            "contains" => operand(d.contains.as_ref()?).map(Op::Contains),
            "contains_any" => {
                non_empty("contains_any", d.contains_any.as_ref()?).map(Op::ContainsAny)
            }
            "contains_all" => {
                non_empty("contains_all", d.contains_all.as_ref()?).map(Op::ContainsAll)
            }
            "exists" => Ok(Op::Exists(d.exists?)),
            "matches" => {
                let re = d.matches.as_deref()?;
                regex::RegexBuilder::new(&format!("^(?:{re})$"))
                    .size_limit(1 << 20)
                    .build()
                    .map(Op::Matches)
                    .map_err(|e| {
                        // The regex crate's message is several lines with a
                        // caret under the fault; its last line says what.
                        let e = e.to_string();
                        let what = e.lines().last().unwrap_or_default();
                        let what = what.trim_start_matches("error: ");
                        format!("`{re}` is not a regex: {what}")
                    })
            }
            "gt" => Ok(Op::Compare(Cmp::Gt, d.gt?)),
            "gte" => Ok(Op::Compare(Cmp::Gte, d.gte?)),
            "lt" => Ok(Op::Compare(Cmp::Lt, d.lt?)),
            "lte" => Ok(Op::Compare(Cmp::Lte, d.lte?)),
            _ => {
                let level = d.at_least.as_deref()?;
                let levels = match &d.levels {
                    None => Err(
                        "`at_least` needs `levels`: a name from the file's `levels` or a list"
                            .to_string(),
                    ),
                    Some(LevelsRef::Named(name)) => {
                        self.levels.get(name).cloned().ok_or_else(|| {
                            format!("levels `{name}` are not defined (top-level `levels:`)")
                        })
                    }
                    Some(LevelsRef::Inline(list)) => Ok(Arc::new(list.clone())),
                };
                levels.and_then(|levels| match levels.iter().position(|l| l == level) {
                    Some(rank) => Ok(Op::AtLeast { levels, rank }),
                    None => Err(format!("`{level}` is not one of the levels {levels:?}")),
                })
            }
        };
        match op {
            Ok(op) => Some(Rule::Claim { path, op }),
            Err(e) => {
                fail(e);
                None
            }
        }
    }

    /// `admin`, `{any_of: [...]}` or `{all_of: [...]}`.
    fn need(&mut self, at: &Origin, what: &str, doc: &NeedDoc) -> Option<Need> {
        let need = match doc {
            NeedDoc::One(s) => Ok(Need::AnyOf(vec![s.clone()])),
            NeedDoc::Set(set) => need_set(&set.any_of, &set.all_of),
        };
        need.map_err(|e| self.errs.push(at.clone(), format!("`{what}`: {e}")))
            .ok()
    }

    fn tenant(
        &mut self,
        at: &Origin,
        kind: TenantKind,
        doc: &TenantNeedDoc,
        params: &[String],
    ) -> Option<Rule> {
        let what = match kind {
            TenantKind::Roles => "tenant_role",
            TenantKind::Permissions => "tenant_permission",
        };
        let tenant = if doc.tenant == "current" {
            Ok(TenantFrom::Current)
        } else {
            RequestValue::parse(&doc.tenant, params).map(|r| match r {
                Some(r) => TenantFrom::Request(r),
                None => TenantFrom::Literal(doc.tenant.clone()),
            })
        };
        let need = need_set(&doc.any_of, &doc.all_of);
        match (tenant, need) {
            (Ok(tenant), Ok(need)) => Some(Rule::Tenant { kind, tenant, need }),
            (Err(e), _) | (_, Err(e)) => {
                self.errs.push(at.clone(), format!("`{what}`: {e}"));
                None
            }
        }
    }
}

/// Where a secret is read from: `{env: NAME}` or `{file: path}` (relative
/// to the policy file).
fn secret_ref(file: &Path, doc: &SecretDoc) -> Result<SecretRef, String> {
    match (&doc.env, &doc.file) {
        (Some(name), None) => Ok(SecretRef::Env(name.clone())),
        (None, Some(p)) => Ok(SecretRef::File(
            file.parent().unwrap_or(Path::new(".")).join(p),
        )),
        _ => Err("takes exactly one of `env` and `file`".into()),
    }
}

fn need_set(any_of: &Option<Vec<String>>, all_of: &Option<Vec<String>>) -> Result<Need, String> {
    match (any_of, all_of) {
        (Some(v), None) if !v.is_empty() => Ok(Need::AnyOf(v.clone())),
        (None, Some(v)) if !v.is_empty() => Ok(Need::AllOf(v.clone())),
        _ => Err("give exactly one of `any_of` and `all_of`, with at least one name".into()),
    }
}
