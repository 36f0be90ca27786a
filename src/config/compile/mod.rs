//! Policy files → one [`Snapshot`]. Collects every error before giving up,
//! so an operator fixes a broken file in one pass.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::jwks::Algorithm;
use http::Method;
use serde_saphyr::Spanned;

use super::error::{ConfigErrors, Origin};
use super::schema::{
    origin, ForwardDoc, HasuraDoc, IssuerDoc, LevelsRef, NeedDoc, PolicyDoc, RouteDoc, RuleDoc,
    SecretDoc, SpoofedHeaders, TenantNeedDoc, UpstreamDoc, WebhookKind,
};
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
use crate::snapshot::{Protocol, Snapshot, SourceInfo, Transport, Upstream};
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
            Err(e) => errs.0.extend(e),
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

    fn upstream(&mut self, file: &Path, name: String, doc: Spanned<UpstreamDoc>) {
        let at = origin(file, &doc);
        if let Some((first, _)) = self.upstreams.get(&name) {
            self.errs.push(
                at,
                format!("upstream `{name}` is already defined at {first}"),
            );
            return;
        }
        let dir = file.parent().unwrap_or(Path::new("."));
        let parsed = match doc.value {
            UpstreamDoc::Url(url) => Upstream::parse(&name, &url),
            UpstreamDoc::Full(f) => {
                let protocol = f
                    .protocol
                    .as_deref()
                    .map_or(Ok(Protocol::Http1), Protocol::parse);
                let client_cert = match (f.client_cert, f.client_key) {
                    (Some(c), Some(k)) => Ok(Some((dir.join(c), dir.join(k)))),
                    (None, None) => Ok(None),
                    _ => Err(format!(
                        "upstream `{name}`: client_cert and client_key go together"
                    )),
                };
                let ca_file = f.ca_file.map(|p| dir.join(p));
                match (protocol, client_cert) {
                    (Ok(protocol), Ok(client_cert)) => {
                        Upstream::parse(&name, &f.url).and_then(|u| {
                            u.with_transport(Transport {
                                protocol,
                                ca_file,
                                client_cert,
                            })
                        })
                    }
                    (Err(e), _) => Err(format!("upstream `{name}`: {e}")),
                    (_, Err(e)) => Err(e),
                }
            }
        };
        match parsed {
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

mod issuer;
mod quota;
mod route;
