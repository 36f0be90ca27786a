//! `claimgate explain` and `claimgate test`: one request run through the
//! request path offline, with the rule's trace.
//!
//! The stages are the proxy's own functions in the proxy's order: canonical
//! path, router, header hygiene, bearer extraction, verification (for a
//! token) and [`authorize`] (rule, then headers). Only the upstream call is
//! left out. Given claims instead of a token, verification is skipped — no
//! signature, `exp` or `aud` check — but the issuer's untrusted claims are
//! still removed, as verification would.

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue, Method};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::forward::hasura;
use crate::policy::rule::{RequestFacts, Step};
use crate::policy::{canonical_segments, Target};
use crate::proxy::pipeline::{authorize, hygiene, normal_host};
use crate::proxy::Rejection;
use crate::snapshot::Snapshot;
use crate::token::{self, Issuer, TokenError};

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
    pub decision: &'static str,
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
}

/// Runs `case` through `snapshot` at Unix time `now`. Keys must be loaded
/// for a token to verify (`KeysUnavailable` otherwise, as in the proxy).
pub fn explain(snapshot: &Snapshot, case: &Case, now: u64) -> Explanation {
    let mut x = Explanation {
        request: format!("{} {} (host {})", case.method, case.path, case.host),
        route: None,
        template: None,
        params: Vec::new(),
        removed: Vec::new(),
        issuer: None,
        token: String::new(),
        trace: Vec::new(),
        decision: "allowed",
        status: 200,
        reason: "",
        upstream: None,
        webhook: false,
        headers: Vec::new(),
    };
    let result = run(snapshot, case, now, &mut x);
    let result = if x.webhook {
        result.map_err(Rejection::for_webhook)
    } else {
        result
    };
    if let Err(rejection) = result {
        x.decision = rejection.decision();
        x.status = rejection.status().as_u16();
        x.reason = rejection.reason();
        x.headers.clear();
    }
    x
}

fn run(snapshot: &Snapshot, case: &Case, now: u64, x: &mut Explanation) -> Result<(), Rejection> {
    let path = case.path.split('?').next().unwrap_or("/");
    let segments = canonical_segments(path).map_err(Rejection::BadPath)?;
    let host = normal_host(&case.host);
    let matched = snapshot
        .router
        .find(&host, &case.method, &segments)
        .ok_or(Rejection::NoRoute)?;
    let route = matched.route;
    x.route = Some(route.name.clone());
    x.template = Some(route.template.clone());
    x.webhook = route.is_webhook();
    x.upstream = Some(match &route.target {
        Target::Upstream(u) => u.name.clone(),
        Target::HasuraWebhook => "(webhook: answers itself)".into(),
    });
    x.params = matched
        .params
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();

    let mut headers = case.headers.clone();
    if let Credential::Token(t) = &case.credential {
        let value = HeaderValue::from_str(&format!("Bearer {t}"))
            .map_err(|_| Rejection::Token(TokenError::Malformed("not base64url")))?;
        headers.insert(AUTHORIZATION, value);
    }
    let before: Vec<String> = headers.keys().map(|k| k.to_string()).collect();
    let requested_role = hygiene(snapshot, route, &mut headers)?;
    x.removed = before
        .into_iter()
        .filter(|k| !headers.contains_key(k.as_str()))
        .collect();
    x.removed.dedup();

    if route.public {
        x.decision = "public";
        x.token = "not needed: public route".into();
        x.headers = header_list(&headers);
        return Ok(());
    }
    let mut source = None;
    let (claims, issuer): (Value, std::sync::Arc<Issuer>) = match &case.credential {
        Credential::Claims { claims, issuer } => {
            let issuer = pick_issuer(snapshot, claims, issuer.as_deref()).map_err(|e| {
                x.token = e;
                Rejection::Token(TokenError::UnknownIssuer)
            })?;
            if let Some(names) = &route.issuers {
                if !names.contains(&issuer.name) {
                    return Err(Rejection::Token(TokenError::IssuerNotAccepted(
                        issuer.name.clone(),
                    )));
                }
            }
            let mut claims = claims.clone();
            for name in &issuer.untrusted_claims {
                if claims.remove(name).is_some() && issuer.refuse_untrusted {
                    x.token = format!("refused: carries the untrusted claim `{name}`");
                    return Err(Rejection::Token(TokenError::UntrustedClaim(name.clone())));
                }
            }
            x.token = "claims given: signature, exp and aud not checked".into();
            (Value::Object(claims), issuer)
        }
        Credential::Headers | Credential::Token(_) => {
            let query = case.path.split_once('?').map(|(_, q)| q);
            let (token, from) = token::extract::find(&headers, query, &snapshot.token_sources)
                .map_err(Rejection::BadCredentials)?
                .ok_or(Rejection::Token(TokenError::Missing))?;
            let from = &snapshot.token_sources[from];
            let verified = token::verify(
                token,
                &snapshot.issuers,
                route.issuers.as_deref(),
                snapshot.max_token_bytes,
                now,
            )
            .map_err(|refused| {
                x.issuer = refused.issuer.as_ref().map(|i| i.name.clone());
                x.token = format!("refused: {}", refused.error);
                Rejection::Token(refused.error)
            })?;
            if !verified.issuer.token_from.contains(from) {
                x.issuer = Some(verified.issuer.name.clone());
                x.token = format!("verified, but its issuer does not accept tokens from {from}");
                return Err(Rejection::Token(TokenError::SourceNotAllowed(
                    from.to_string(),
                )));
            }
            x.token = format!("verified (from {from})");
            source = Some(from.clone());
            (verified.claims.root().clone(), verified.issuer)
        }
    };
    x.issuer = Some(issuer.name.clone());
    let facts = RequestFacts {
        method: &case.method,
        host: &host,
        params: &matched.params,
        headers: &headers,
    };
    let rendered = authorize(
        route,
        &claims,
        &issuer,
        &facts,
        requested_role.as_deref(),
        &mut x.trace,
    )?;
    if let (false, Some(source)) = (route.pass_authorization, &source) {
        // A query-string token stays in the path shown as the request.
        token::extract::strip(&mut headers, None, source);
    }
    for (name, value) in rendered {
        headers.insert(name, value);
    }
    x.headers = header_list(&headers);
    // The admin secret is real in the proxy; never in an explanation.
    for (k, v) in x.headers.iter_mut() {
        if k == hasura::ADMIN_SECRET {
            *v = "(secret)".into();
        }
    }
    Ok(())
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
        if self.status == 200 {
            line("upstream", "headers:");
            for (k, v) in &self.headers {
                out.push_str(&format!("  {k}: {v}\n"));
            }
        }
        out
    }
}
