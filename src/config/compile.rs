//! Policy files → one [`Snapshot`]. Collects every error before giving up,
//! so an operator fixes a broken file in one pass.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use jsonwebtoken::Algorithm;
use serde_saphyr::Spanned;

use super::docs::{origin, IssuerDoc, PolicyDoc, RouteDoc, RuleDoc};
use super::error::{ConfigErrors, Origin};
use super::yaml::{self, Vars};
use crate::forward::{HeaderTemplate, OwnedHeaders};
use crate::jwks::keys::ASYMMETRIC;
use crate::jwks::{JwksStore, KeySource, Refresh};
use crate::policy::route::{param_names, parse_template};
use crate::policy::{ClaimPath, Op, Route, Router, Rule, Segment};
use crate::snapshot::{Snapshot, Upstream};
use crate::token::{Issuer, Issuers};

/// The largest leeway accepted (SECURITY.md rule 5).
const MAX_LEEWAY: Duration = Duration::from_secs(60);
const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
const DEFAULT_UNKNOWN_KID_COOLDOWN: Duration = Duration::from_secs(30);

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
    }
    if c.untrusted.is_empty() {
        c.untrusted.push("nsec".into());
    }
    for (file, doc) in &docs {
        for (name, text) in &doc.forward {
            if let Some(t) = c.template(file, name, text) {
                c.defaults.push(t);
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
    let snapshot = Snapshot {
        generation,
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
        let source = match (&doc.jwks_uri, &doc.jwks_file) {
            (Some(url), None) => {
                if url.starts_with("http://") && !doc.allow_http {
                    self.errs.push(at.clone(), format!("issuer `{name}`: jwks_uri is plain http; set `allow_http: true` to allow it"));
                } else if !url.starts_with("https://") && !url.starts_with("http://") {
                    self.errs.push(
                        at.clone(),
                        format!("issuer `{name}`: jwks_uri must be an https URL"),
                    );
                }
                KeySource::Uri {
                    url: url.clone(),
                    allow_http: doc.allow_http,
                }
            }
            (None, Some(path)) => {
                KeySource::File(file.parent().unwrap_or(Path::new(".")).join(path))
            }
            _ => {
                self.errs.push(
                    at.clone(),
                    format!("issuer `{name}`: set exactly one of jwks_uri and jwks_file"),
                );
                return;
            }
        };
        let algorithms = match &doc.algorithms {
            None => ASYMMETRIC.to_vec(),
            Some(list) => {
                let mut out = Vec::new();
                for a in list {
                    match a.parse::<Algorithm>() {
                        Ok(alg) if ASYMMETRIC.contains(&alg) => out.push(alg),
                        _ => self.errs.push(at.clone(), format!("issuer `{name}`: algorithm `{a}` is not supported (asymmetric only: RS*, PS*, ES256, ES384, EdDSA)")),
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
        if doc.issuer.is_empty() {
            self.errs.push(
                at.clone(),
                format!("issuer `{name}`: issuer must not be empty"),
            );
        }
        if let Some(other) = self.issuers.by_iss(&doc.issuer) {
            self.errs.push(
                at.clone(),
                format!(
                    "issuer `{name}`: `{}` is also the issuer of `{}`",
                    doc.issuer, other.name
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
        let refresh = Refresh {
            interval: doc
                .refresh_interval
                .unwrap_or(DEFAULT_REFRESH)
                .max(Duration::from_secs(1)),
            unknown_kid_cooldown: doc
                .unknown_kid_cooldown
                .unwrap_or(DEFAULT_UNKNOWN_KID_COOLDOWN),
        };
        let keys = stores(&name, &source, &algorithms, refresh);
        self.issuers.insert(Issuer {
            name,
            iss: doc.issuer,
            audiences,
            algorithms,
            leeway: leeway.as_secs(),
            untrusted_claims: untrusted,
            keys,
        });
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
        text: &Spanned<String>,
    ) -> Option<HeaderTemplate> {
        HeaderTemplate::compile(name, &text.value, &self.untrusted)
            .map_err(|e| {
                self.errs
                    .push(origin(file, text), format!("header `{name}`: {e}"))
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
        let upstream = match &doc.upstream {
            Some(u) => match self.upstreams.get(u) {
                Some((_, up)) => Some(up.clone()),
                None => {
                    self.errs
                        .push(at.clone(), ctx(format!("upstream `{u}` is not defined")));
                    None
                }
            },
            None => {
                self.errs
                    .push(at.clone(), ctx("needs an `upstream`".into()));
                None
            }
        };
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
        let allow = doc.allow.and_then(|r| self.rule(file, &r));
        // Defaults first; a route's own template replaces a default of the same name.
        let mut forward: Vec<HeaderTemplate> = Vec::new();
        if !doc.public {
            forward = self.defaults.clone();
            for (hname, text) in &doc.forward {
                if let Some(t) = self.template(file, hname, text) {
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
        if self.errs.len() != before {
            return None;
        }
        let segments = segments?;
        let params = param_names(&segments);
        let route = Route {
            name,
            template: doc.matcher.path,
            methods,
            host,
            upstream: upstream?,
            public: doc.public,
            issuers: doc.issuers,
            allow,
            forward,
            pass_authorization: doc.pass_authorization,
            params,
        };
        Some((segments, route))
    }

    fn rule(&mut self, file: &Path, doc: &Spanned<RuleDoc>) -> Option<Rule> {
        let at = origin(file, doc);
        let d = &doc.value;
        let count = |set: &[bool]| set.iter().filter(|b| **b).count();
        let ops = count(&[
            d.equals.is_some(),
            d.one_of.is_some(),
            d.contains.is_some(),
            d.exists.is_some(),
        ]);
        let forms = count(&[
            d.all.is_some(),
            d.any.is_some(),
            d.not.is_some(),
            d.claim.is_some(),
            d.scope.is_some(),
        ]);
        if forms != 1 {
            self.errs.push(at, "a rule is exactly one of `all`, `any`, `not`, `claim` (with one operator) or `scope`");
            return None;
        }
        if ops > 0 && d.claim.is_none() {
            self.errs.push(
                at,
                "`equals`, `in`, `contains` and `exists` go with `claim`",
            );
            return None;
        }
        let many = |c: &mut Self, list: &[Spanned<RuleDoc>]| -> Option<Vec<Rule>> {
            let rules: Vec<Option<Rule>> = list.iter().map(|r| c.rule(file, r)).collect();
            rules.into_iter().collect()
        };
        if let Some(list) = &d.all {
            return many(self, list).map(Rule::All);
        }
        if let Some(list) = &d.any {
            return many(self, list).map(Rule::Any);
        }
        if let Some(inner) = &d.not {
            return self.rule(file, inner).map(|r| Rule::Not(Box::new(r)));
        }
        if let Some(scope) = &d.scope {
            return Some(Rule::Scope(scope.clone()));
        }
        let text = d.claim.as_deref().unwrap_or_default();
        let path = match ClaimPath::compile(text, &self.untrusted) {
            Ok(p) => p,
            Err(e) => {
                self.errs.push(at, e);
                return None;
            }
        };
        let op = match (&d.equals, &d.one_of, &d.contains, d.exists) {
            (Some(v), None, None, None) => Op::Equals(v.clone()),
            (None, Some(v), None, None) => Op::In(v.clone()),
            (None, None, Some(v), None) => Op::Contains(v.clone()),
            (None, None, None, Some(b)) => Op::Exists(b),
            _ => {
                self.errs.push(
                    at,
                    format!(
                        "claim `{text}` needs exactly one of `equals`, `in`, `contains`, `exists`"
                    ),
                );
                return None;
            }
        };
        Some(Rule::Claim { path, op })
    }
}
