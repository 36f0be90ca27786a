//! `claimgate explain` and `claimgate test`: one request run through the
//! request path offline, with the rule's trace.
//!
//! The request goes through the decision core (`crate::decision`), the one
//! every front door calls, with a tracer. Only the upstream call is left
//! out. Given claims instead of a token, verification is skipped — no
//! signature, `exp` or `aud` check — but the issuer's untrusted claims are
//! still removed, as verification would.

use http::header::{AUTHORIZATION, HOST};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::decision::{decide_traced, hygiene, Allowed, Ctx, Decision, Given};
use crate::forward::hasura;
use crate::policy::rule::Step;
use crate::policy::Target;
use crate::proxy::Rejection;
use crate::snapshot::Snapshot;
use crate::token::{Issuer, TokenError};

/// One request to explain.
#[derive(Debug, Clone)]
pub struct Case {
    pub method: Method,
    /// Path and query, as a client would send them.
    pub path: String,
    pub host: String,
    pub headers: HeaderMap,
    pub credential: Credential,
}

/// What the request carries.
#[derive(Debug, Clone)]
pub enum Credential {
    /// Whatever `headers` carry (an `Authorization` header, or nothing).
    Headers,
    /// A token, sent as `Authorization: Bearer`.
    Token(String),
    /// Claims taken as verified, for `issuer` (by name), or the issuer whose
    /// `iss` the claims name, or the only issuer.
    Claims {
        claims: Map<String, Value>,
        issuer: Option<String>,
    },
    /// An introspection answer (RFC 7662 JSON) for `issuer`: checked as the
    /// endpoint's answer would be (`active`, `exp`, `iss`, `aud`, `sub`),
    /// then its claims are the request's.
    Introspection {
        answer: Map<String, Value>,
        issuer: Option<String>,
    },
}

/// What claimgate would do with a request.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub request: String,
    pub route: Option<String>,
    pub template: Option<String>,
    pub params: Vec<(String, String)>,
    /// Client headers removed by hygiene.
    pub removed: Vec<String>,
    pub issuer: Option<String>,
    /// How the claims were obtained, or why there are none.
    pub token: String,
    pub trace: Vec<Step>,
    /// The `claimgate_requests_total` decision label.
    pub decision: Decision,
    /// The status claimgate answers with; 200 means "forwarded upstream".
    pub status: u16,
    /// The reason code of a refusal; empty when forwarded.
    pub reason: &'static str,
    pub upstream: Option<String>,
    /// A webhook route: it answers itself, and refuses with 401.
    pub webhook: bool,
    /// What the upstream would receive, claimgate's headers included.
    /// `X-Forwarded-*` (from the connection) are left out.
    pub headers: Vec<(String, String)>,
    /// The route's rate limits as they would apply to this request:
    /// `name: plan rate, key ...` (not counted: an explanation is offline).
    pub rate_limits: Vec<String>,
}

/// Runs `case` through the decision core over `snapshot` at Unix time
/// `now`, with the rule's trace. Keys must be loaded for a token to verify
/// (`KeysUnavailable` otherwise, as in the proxy); an unknown `kid` loads
/// them as the proxy would.
pub async fn explain(snapshot: &Snapshot, case: &Case, now: u64) -> Explanation {
    let mut x = Explanation {
        request: format!("{} {} (host {})", case.method, case.path, case.host),
        rate_limits: Vec::new(),
        route: None,
        template: None,
        params: Vec::new(),
        removed: Vec::new(),
        issuer: None,
        token: String::new(),
        trace: Vec::new(),
        decision: Decision::Allowed,
        status: 200,
        reason: "",
        upstream: None,
        webhook: false,
        headers: Vec::new(),
    };
    let mut head = match head(case) {
        Ok(h) => h,
        Err(rejection) => return x.refused(&rejection),
    };
    let given = match &case.credential {
        Credential::Claims { claims, issuer } => {
            match pick_issuer(snapshot, claims, issuer.as_deref()) {
                Ok(issuer) => Some(Given {
                    issuer,
                    claims: claims.clone(),
                }),
                Err(why) => {
                    x.token = why;
                    return x.refused(&Rejection::Token(TokenError::UnknownIssuer));
                }
            }
        }
        Credential::Introspection { answer, issuer } => {
            let issuer = match pick_issuer(snapshot, answer, issuer.as_deref()) {
                Ok(i) => i,
                Err(why) => {
                    x.token = why;
                    return x.refused(&Rejection::Token(TokenError::UnknownIssuer));
                }
            };
            x.issuer = Some(issuer.name.clone());
            match crate::token::introspect::checked(answer.clone(), &issuer, now) {
                Ok(claims) => Some(Given {
                    issuer,
                    claims: claims.root().as_object().cloned().unwrap_or_default(),
                }),
                Err(e) => {
                    x.token = format!("introspection answer refused: {e}");
                    return x.refused(&Rejection::Token(e));
                }
            }
        }
        Credential::Headers | Credential::Token(_) => None,
    };
    let introspected = matches!(case.credential, Credential::Introspection { .. });
    let claims_given = given.is_some();
    let sent = head.headers.clone();
    let ctx = Ctx {
        snapshot,
        cache: None,
        now,
        quotas: None,
        client: None,
        marks: None,
    };
    let outcome = decide_traced(&ctx, &mut head, given, &mut x.trace).await;
    let (matched, seen, verdict) = outcome.split();
    if let Some(m) = &matched {
        let route = m.route;
        x.route = Some(route.name.clone());
        x.template = Some(route.template.clone());
        x.webhook = route.is_webhook();
        x.upstream = Some(match &route.target {
            Target::Upstream(u) => u.name.clone(),
            Target::HasuraWebhook => "(webhook: answers itself)".into(),
        });
        x.params = m
            .params
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        // What the hygiene stage removes, shown by running it on a copy of
        // what was sent (the core set claim headers under some of the same
        // names since).
        let mut cleaned = sent.clone();
        if hygiene(snapshot, route, &mut cleaned).is_ok() {
            x.removed = sent
                .keys()
                .filter(|k| !cleaned.contains_key(*k))
                .map(|k| k.to_string())
                .collect();
        }
    }
    x.issuer = seen.issuer_name().map(str::to_string);
    x.token = match (&verdict, claims_given) {
        (
            Ok(Allowed {
                decision: Decision::Public,
                ..
            }),
            _,
        ) => "not needed: public route".into(),
        (Ok(_), true) if introspected => {
            "introspection answer given: active, exp, iss and aud checked".into()
        }
        (Ok(_), true) => "claims given: signature, exp and aud not checked".into(),
        (Ok(a), false) => match &a.source {
            Some(source) => format!("verified (from {source})"),
            None => String::new(),
        },
        (Err(Rejection::Token(TokenError::SourceNotAllowed(from))), _) => {
            format!("verified, but its issuer does not accept tokens from {from}")
        }
        (Err(Rejection::Token(e)), _) => format!("refused: {e}"),
        (Err(_), true) => "claims given: signature, exp and aud not checked".into(),
        (Err(_), false) => String::new(),
    };
    match verdict {
        Ok(allowed) => {
            if let (Some(m), Some(claims)) = (&matched, &allowed.claims) {
                x.rate_limits = rate_limits(m, claims.root(), &head);
            }
            x.decision = allowed.decision;
            x.headers = header_list(&head.headers);
            // The admin secret is real in the proxy; never in an explanation.
            for (k, v) in x.headers.iter_mut() {
                if k == hasura::ADMIN_SECRET {
                    *v = "(secret)".into();
                }
            }
            x
        }
        Err(rejection) if x.webhook => x.refused(&rejection.for_webhook()),
        Err(rejection) => x.refused(&rejection),
    }
}

/// Which limit, plan, rate and key each of the route's rate limits gives
/// this request.
fn rate_limits(
    m: &crate::policy::Matched<'_>,
    claims: &serde_json::Value,
    head: &Parts,
) -> Vec<String> {
    let host = head
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let facts = crate::claims::RequestFacts {
        method: &head.method,
        host,
        params: &m.params,
        headers: &head.headers,
        client: None,
    };
    m.route
        .rate_limits
        .iter()
        .map(|l| {
            let (plan, rate) = l.plan(claims);
            let rate = match rate {
                crate::quota::PlanRate::Unlimited => "unlimited".to_string(),
                crate::quota::PlanRate::Limited(r) => {
                    format!("{}/{}", r.count, humantime::format_duration(r.period))
                }
            };
            let key = match l.key.render(claims, &facts) {
                Ok(crate::forward::template::Rendered::Value(v)) => {
                    String::from_utf8_lossy(v.as_bytes()).into_owned()
                }
                _ => "(empty: one shared bucket)".into(),
            };
            let store = match l.store {
                crate::quota::StoreKind::Local => "this node",
                crate::quota::StoreKind::Redis => "redis",
            };
            format!("{}: plan {plan}, {rate}, key {key:?}, {store}", l.name)
        })
        .collect()
}

/// The request head `case` describes, its credential in place.
fn head(case: &Case) -> Result<Parts, Rejection> {
    let mut req = http::Request::builder()
        .method(case.method.clone())
        .uri(case.path.as_str())
        .body(())
        .map_err(|_| Rejection::BadPath(crate::policy::PathError::NotAbsolute))?;
    let headers = req.headers_mut();
    *headers = case.headers.clone();
    if let Ok(host) = HeaderValue::from_str(&case.host) {
        headers.insert(HOST, host);
    }
    if let Credential::Token(t) = &case.credential {
        let value = HeaderValue::from_str(&format!("Bearer {t}"))
            .map_err(|_| Rejection::Token(TokenError::Malformed("not base64url")))?;
        headers.insert(AUTHORIZATION, value);
    }
    Ok(req.into_parts().0)
}

impl Explanation {
    fn refused(mut self, rejection: &Rejection) -> Self {
        self.decision = rejection.decision();
        self.status = rejection.status().as_u16();
        self.reason = rejection.reason();
        self.headers.clear();
        self
    }
}

fn pick_issuer(
    snapshot: &Snapshot,
    claims: &Map<String, Value>,
    name: Option<&str>,
) -> Result<std::sync::Arc<Issuer>, String> {
    if let Some(name) = name {
        return snapshot
            .issuers
            .by_name(name)
            .cloned()
            .ok_or_else(|| format!("no issuer is named `{name}`"));
    }
    if let Some(iss) = claims.get("iss").and_then(Value::as_str) {
        return snapshot
            .issuers
            .by_iss(iss)
            .cloned()
            .ok_or_else(|| format!("no issuer has `iss` {iss:?}"));
    }
    let mut all = snapshot.issuers.iter();
    match (all.next(), all.next()) {
        (Some(only), None) => Ok(only.clone()),
        _ => Err("the claims have no `iss` and there are several issuers: name one".into()),
    }
}

fn header_list(headers: &HeaderMap) -> Vec<(String, String)> {
    let mut list: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    list.sort();
    list
}

impl Explanation {
    /// The explanation for a terminal.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let mut line = |k: &str, v: &str| {
            out.push_str(format!("{k:<9} {v}").trim_end());
            out.push('\n');
        };
        line("request", &self.request);
        match (&self.route, &self.template) {
            (Some(r), Some(t)) => {
                let params = self
                    .params
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let params = if params.is_empty() {
                    String::new()
                } else {
                    format!("  params: {params}")
                };
                line("route", &format!("{r}  ({t}){params}"));
            }
            _ => line("route", "none"),
        }
        if !self.removed.is_empty() {
            line("removed", &self.removed.join(", "));
        }
        if let Some(i) = &self.issuer {
            line("issuer", i);
        }
        if !self.token.is_empty() {
            line("token", &self.token);
        }
        if !self.trace.is_empty() {
            line("rule", "");
            for s in &self.trace {
                let mark = if s.held { "held  " } else { "FAILED" };
                let found = s.found.as_deref().unwrap_or("");
                out.push_str(&format!(
                    "  {mark} {}{}{}\n",
                    "  ".repeat(s.depth),
                    s.rule,
                    if found.is_empty() {
                        String::new()
                    } else {
                        format!("  -- {found}")
                    }
                ));
            }
        }
        let mut line = |k: &str, v: &str| {
            out.push_str(format!("{k:<9} {v}").trim_end());
            out.push('\n');
        };
        let verdict = match (self.status, &self.upstream) {
            (200, Some(u)) => format!("{}: forwarded to upstream `{u}`", self.decision),
            _ => format!("{}: {} {}", self.decision, self.status, self.reason),
        };
        line("decision", &verdict);
        if !self.rate_limits.is_empty() {
            out.push_str("limits    (not counted here)\n");
            for l in &self.rate_limits {
                out.push_str(&format!("  {l}\n"));
            }
        }
        if self.status == 200 {
            out.push_str("upstream  headers:\n");
            for (k, v) in &self.headers {
                out.push_str(&format!("  {k}: {v}\n"));
            }
        }
        out
    }
}

/// Loads every issuer's keys now, all at once, each within 10 s; returns
/// the issuers whose keys did not load, and why (the fetch's own error).
pub async fn load_keys(snapshot: &Snapshot) -> Vec<(String, String)> {
    let mut loads = tokio::task::JoinSet::new();
    for issuer in snapshot.issuers.iter() {
        let (name, keys) = (issuer.name.clone(), issuer.keys.clone());
        loads.spawn(async move {
            if keys.is_loaded() {
                return None;
            }
            let load = tokio::time::timeout(std::time::Duration::from_secs(10), keys.reload_now());
            match load.await {
                Ok(change) => change.error.map(|e| (name, e)),
                Err(_) => Some((name, "no answer within 10 s".to_string())),
            }
        });
    }
    let mut failed = Vec::new();
    while let Some(done) = loads.join_next().await {
        failed.extend(done.ok().flatten());
    }
    failed.sort();
    failed
}
