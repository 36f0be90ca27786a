//! The core's stages after routing, in order: hygiene → public? → extract →
//! verify → decide → render. Each returns a value; [`run`] chains them.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::header::HOST;
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::{Allowed, Ctx, Decision, Given};
use crate::forward;
use crate::forward::hasura;
use crate::forward::template::{Empty, Rendered, MAX_VALUE_BYTES};
use crate::forward::RenderError;
use crate::policy::rule::{Ctx as RuleCtx, RequestFacts, Tracer};
use crate::policy::{Matched, Route};
use crate::proxy::Rejection;
use crate::snapshot::Snapshot;
use crate::token::extract::TokenSource;
use crate::token::introspect::{self, Which};
use crate::token::{self, Claims, Issuer, TokenError};

/// What the stages found: the issuer and cache use even when refused.
pub(super) struct Ran {
    pub issuer: Option<Arc<Issuer>>,
    pub cache_hit: Option<bool>,
    pub verdict: Result<Allowed, Rejection>,
}

impl Ran {
    fn refused(issuer: Option<Arc<Issuer>>, cache_hit: Option<bool>, r: Rejection) -> Self {
        Self {
            issuer,
            cache_hit,
            verdict: Err(r),
        }
    }
}

pub(super) async fn run<T: Tracer>(
    ctx: &Ctx<'_>,
    matched: &Matched<'_>,
    host: &str,
    head: &mut Parts,
    given: Option<Given>,
    trace: &mut T,
) -> Ran {
    let route = matched.route;
    let snapshot = ctx.snapshot;
    // hygiene: on every route, public ones included (rules 13–15).
    let requested_role = match hygiene(snapshot, route, &mut head.headers) {
        Ok(r) => r,
        Err(e) => return Ran::refused(None, None, e),
    };
    if route.public {
        return Ran {
            issuer: None,
            cache_hit: None,
            verdict: Ok(Allowed {
                decision: Decision::Public,
                claims: None,
                source: None,
                set: Vec::new(),
                query: None,
                response_headers: Vec::new(),
            }),
        };
    }
    // extract → verify (or claims given offline)
    let (issuer, claims, source, cache_hit) = match given {
        Some(g) => match given_claims(route, g) {
            Ok((issuer, claims)) => (issuer, claims, None, None),
            Err((issuer, e)) => return Ran::refused(issuer, None, e),
        },
        None => {
            ctx.mark(crate::otel::Mark::VerifyStart);
            let found =
                token::extract::find(&head.headers, head.uri.query(), &snapshot.token_sources);
            let (token, source) = match found {
                Ok(Some((token, i))) => (token, &snapshot.token_sources[i]),
                Ok(None) => return Ran::refused(None, None, Rejection::Token(TokenError::Missing)),
                Err(e) => return Ran::refused(None, None, Rejection::BadCredentials(e)),
            };
            let v = verify(ctx, route, token, source).await;
            ctx.mark(crate::otel::Mark::VerifyEnd);
            match v.result {
                Ok(verified) => (
                    verified.issuer,
                    verified.claims,
                    Some(source.clone()),
                    v.cache_hit,
                ),
                Err(e) => return Ran::refused(v.issuer, v.cache_hit, e),
            }
        }
    };
    // decide → render
    // The client's address as text, on the stack: no allocation.
    let mut client_buf = [0u8; 48];
    let client = ctx
        .client
        .map(|ip| forward::forwarded::ip_text(ip, &mut client_buf));
    let facts = RequestFacts {
        method: &head.method,
        host,
        params: &matched.params,
        headers: &head.headers,
        client,
    };
    let set = match authorize(
        route,
        &claims,
        &issuer,
        &facts,
        requested_role.as_deref(),
        trace,
    ) {
        Ok(set) => set,
        Err(e) => {
            ctx.mark(crate::otel::Mark::DecideEnd);
            return Ran::refused(Some(issuer), cache_hit, e);
        }
    };
    // quota: counted only for a request the rule allowed.
    let mut response_headers = Vec::new();
    if let (false, Some(quotas)) = (route.rate_limits.is_empty(), ctx.quotas) {
        let checked = quotas.check(&route.name, &route.rate_limits, claims.root(), &facts);
        match Box::pin(checked).await {
            Ok(h) => response_headers = h,
            Err(r) => {
                ctx.mark(crate::otel::Mark::DecideEnd);
                return Ran::refused(Some(issuer), cache_hit, Rejection::from(r));
            }
        }
    }
    // The credential stays here unless the route passes it on.
    let mut query = None;
    if let (false, Some(source)) = (route.pass_authorization, &source) {
        let q = match source {
            TokenSource::Query(_) => head.uri.query().map(str::to_owned),
            _ => None,
        };
        query = token::extract::strip(&mut head.headers, q.as_deref(), source);
    }
    for (name, value) in &set {
        head.headers.insert(name.clone(), value.clone());
    }
    ctx.mark(crate::otel::Mark::DecideEnd);
    Ran {
        issuer: Some(issuer),
        cache_hit,
        verdict: Ok(Allowed {
            decision: Decision::Allowed,
            claims: Some(claims),
            source,
            set,
            query,
            response_headers,
        }),
    }
}

/// Claims given offline: the issuer must be one the route accepts, and its
/// untrusted claims are removed (or refuse), as verification would.
#[allow(clippy::type_complexity)]
fn given_claims(
    route: &Route,
    g: Given,
) -> Result<(Arc<Issuer>, Arc<Claims>), (Option<Arc<Issuer>>, Rejection)> {
    let Given { issuer, mut claims } = g;
    if let Some(names) = &route.issuers {
        if !names.contains(&issuer.name) {
            let e = TokenError::IssuerNotAccepted(issuer.name.clone());
            return Err((Some(issuer), Rejection::Token(e)));
        }
    }
    if let Err(e) = issuer.strip_untrusted(&mut claims) {
        return Err((Some(issuer), Rejection::Token(e)));
    }
    Ok((issuer, Arc::new(Claims::from_object(claims))))
}

/// What the verify stage found.
struct Verification {
    issuer: Option<Arc<Issuer>>,
    cache_hit: Option<bool>,
    result: Result<token::Verified, Rejection>,
}

/// The verify stage: the verified-token cache, else full verification, once
/// more after a key load when the `kid` was unknown (rotation), then the
/// issuer's own source check.
async fn verify(ctx: &Ctx<'_>, route: &Route, token: &str, source: &TokenSource) -> Verification {
    if !introspect::looks_like_jwt(token) {
        // Boxed, as every rarely taken wait below: the request's future
        // (moved whole a few times per request) stays small.
        return Box::pin(introspected(ctx, route, token, source)).await;
    }
    let snapshot = ctx.snapshot;
    let accepted = route.issuers.as_deref();
    // Hashed once: the lookup, and the insert after a miss.
    let key = ctx.cache.map(|_| token::TokenKey::of(token));
    let cached = ctx
        .cache
        .zip(key.as_ref())
        .and_then(|(c, k)| c.get_key(token, k, &snapshot.issuers, accepted, ctx.now));
    let cache_hit = ctx.cache.map(|_| cached.is_some());
    let full = || {
        token::verify(
            token,
            &snapshot.issuers,
            accepted,
            snapshot.max_token_bytes,
            ctx.now,
        )
    };
    let mut result = match cached {
        Some(v) => Ok(v),
        None => full(),
    };
    // Key rotation: an unknown kid may be a key the IdP just published.
    // The store bounds how often this loads (rule 11); verify once more
    // only if the keys may now verify it.
    if let Err(token::Refused {
        issuer: Some(i),
        error: TokenError::UnknownKey,
        kid,
    }) = &result
    {
        if Box::pin(i.keys.refresh_for_unknown_kid(kid.as_deref())).await {
            result = full();
        }
    }
    let verified = match result {
        Ok(v) => v,
        Err(refused) => {
            return Verification {
                issuer: refused.issuer,
                cache_hit,
                result: Err(Rejection::Token(refused.error)),
            }
        }
    };
    let issuer = Some(verified.issuer.clone());
    // The issuer is known only now: it must list the source the token
    // came from (a query-string token for a bearer-only issuer is not).
    if !verified.issuer.token_from.contains(source) {
        let e = TokenError::SourceNotAllowed(source.to_string());
        return Verification {
            issuer,
            cache_hit,
            result: Err(Rejection::Token(e)),
        };
    }
    if cache_hit == Some(false) {
        if let (Some(cache), Some(key)) = (ctx.cache, &key) {
            cache.insert_key(key, &verified);
        }
    }
    // `tokens: all`: a JWT is introspected too, so that a revocation takes
    // effect within `cache_ttl` (the JWT's own claims stay the claims).
    let all = verified.issuer.introspection.as_ref();
    if let Some(i) = all.filter(|i| i.settings.which == Which::All) {
        let asked =
            Box::pin(i.introspect(&verified.issuer, &snapshot.issuers, token, ctx.now)).await;
        if let Err(e) = asked {
            return Verification {
                issuer,
                cache_hit,
                result: Err(Rejection::Token(e)),
            };
        }
    }
    Verification {
        issuer,
        cache_hit,
        result: Ok(verified),
    }
}

/// An opaque token: asked of the first issuer (by name) the route accepts
/// that introspects (SECURITY.md rule 22).
async fn introspected(
    ctx: &Ctx<'_>,
    route: &Route,
    token: &str,
    source: &TokenSource,
) -> Verification {
    let snapshot = ctx.snapshot;
    let accepted = route.issuers.as_deref();
    let refused = |issuer: Option<Arc<Issuer>>, e: TokenError| Verification {
        issuer,
        cache_hit: None,
        result: Err(Rejection::Token(e)),
    };
    let mut candidates: Vec<(&Arc<Issuer>, &Arc<introspect::Introspector>)> = snapshot
        .issuers
        .iter()
        .filter(|i| accepted.is_none_or(|names| names.contains(&i.name)))
        .filter_map(|i| i.introspection.as_ref().map(|x| (i, x)))
        .collect();
    candidates.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    let Some((issuer, introspector)) = candidates.first().copied() else {
        return refused(None, TokenError::Malformed("not three parts"));
    };
    // Rule 2 for opaque tokens: bounded, printable, before any call.
    if token.len() > snapshot.max_token_bytes {
        let max = snapshot.max_token_bytes;
        return refused(None, TokenError::TooLarge { max });
    }
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return refused(None, TokenError::Malformed("not printable"));
    }
    if !issuer.token_from.contains(source) {
        let e = TokenError::SourceNotAllowed(source.to_string());
        return refused(Some(issuer.clone()), e);
    }
    match introspector
        .introspect(issuer, &snapshot.issuers, token, ctx.now)
        .await
    {
        Ok(claims) => Verification {
            issuer: Some(issuer.clone()),
            cache_hit: None,
            result: Ok(token::Verified {
                issuer: issuer.clone(),
                exp: claims
                    .root()
                    .get("exp")
                    .and_then(serde_json::Value::as_f64)
                    .unwrap_or(0.0),
                claims,
                key_fingerprint: 0,
            }),
        },
        Err(e) => refused(Some(issuer.clone()), e),
    }
}

/// The decide and render stages for verified claims: the route's rule over
/// the claims and the request, then every header rendered. All headers are
/// rendered before any is set, so a bad value refuses the whole request.
pub fn authorize<T: Tracer>(
    route: &Route,
    claims: &Claims,
    issuer: &Issuer,
    request: &RequestFacts<'_>,
    requested_role: Option<&str>,
    trace: &mut T,
) -> Result<Vec<(HeaderName, HeaderValue)>, Rejection> {
    let claims = claims.root();
    if let Some(rule) = &route.allow {
        let ctx = RuleCtx {
            claims,
            at: &issuer.locations,
            request,
        };
        if !rule.eval_with(&ctx, trace, 0) {
            return Err(Rejection::Denied);
        }
    }
    let mut rendered = Vec::with_capacity(route.forward.len() + 1);
    for t in &route.forward {
        let value = t.render(claims, request).map_err(Rejection::Render)?;
        let blank = match &value {
            Rendered::Value(v) => v.as_bytes().iter().all(u8::is_ascii_whitespace),
            Rendered::Missing => true,
        };
        if t.required && blank {
            return Err(Rejection::RequiredHeaderEmpty(t.name.clone()));
        }
        let value = match value {
            Rendered::Value(v) => v,
            Rendered::Missing => match t.empty.unwrap_or(route.empty_claims) {
                Empty::Omit => continue,
                Empty::Empty => HeaderValue::from_static(""),
                Empty::Null => HeaderValue::from_static("null"),
            },
        };
        rendered.push((t.name.clone(), value));
    }
    if let Some(name) = &route.claims_header {
        let json = URL_SAFE_NO_PAD.encode(claims.to_string());
        if json.len() > MAX_VALUE_BYTES {
            return Err(Rejection::Render(RenderError::TooLong(name.clone())));
        }
        // Base64url is header-safe by construction.
        if let Ok(v) = HeaderValue::try_from(json) {
            rendered.push((name.clone(), v));
        }
    }
    if let Some(h) = &route.hasura {
        rendered.extend(
            h.session(claims, requested_role)
                .map_err(Rejection::Hasura)?,
        );
    }
    Ok(rendered)
}

/// The hygiene stage, on every route, public ones included. Hasura's
/// `X-Hasura-Role` is taken out first (a request for a role, decided later;
/// it is returned); then, where the policy says so, a client header
/// claimgate owns refuses the request; then hop-by-hop, `Connection`-named
/// and claimgate-owned headers are removed.
pub fn hygiene(
    snapshot: &Snapshot,
    route: &Route,
    headers: &mut HeaderMap,
) -> Result<Option<String>, Rejection> {
    let requested_role = match route.hasura {
        Some(_) => hasura::take_requested_role(headers).map_err(Rejection::Hasura)?,
        None => None,
    };
    if snapshot.refuse_spoofed {
        if let Some(name) = forward::spoofed(headers, &snapshot.owned_headers) {
            return Err(Rejection::Spoofed(name));
        }
    }
    forward::clean_request(headers, &snapshot.owned_headers);
    Ok(requested_role)
}

/// The request's host: lowercase, without port or trailing dot (rule 16).
pub fn request_host(head: &Parts) -> String {
    match head.uri.authority() {
        Some(a) => normal_host(a.as_str()),
        None => normal_host(
            head.headers
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or(""),
        ),
    }
}

/// An authority (`Host` header value) as routes compare it: the host part,
/// lowercase, without port or trailing dot; empty when it is not one.
pub fn normal_host(authority: &str) -> String {
    authority
        .parse::<http::uri::Authority>()
        .map(|a| a.host().trim_end_matches('.').to_ascii_lowercase())
        .unwrap_or_default()
}
