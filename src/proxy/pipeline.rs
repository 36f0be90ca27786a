//! The request path, in order, on one screen:
//!
//! route → hygiene → public? → extract → verify → decide → inject →
//! upstream → respond.
//!
//! A request loads the snapshot once, here, and uses it to the end. Every
//! refusal returns before the upstream is called: nothing reaches the
//! upstream unless the request was allowed (SECURITY.md rule 20).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::HOST;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::reject::Rejection;
use super::Body;
use crate::app::App;
use crate::forward;
use crate::forward::forwarded::{self, FromProxy};
use crate::forward::hasura;
use crate::forward::template::{Empty, Rendered, MAX_VALUE_BYTES};
use crate::forward::RenderError;
use crate::jwks::unix_now;
use crate::policy::rule::{Ctx, NoTrace, RequestFacts, Tracer};
use crate::policy::{canonical_segments, Matched, Route, Target};
use crate::snapshot::Snapshot;
use crate::token::extract::TokenSource;
use crate::token::{self, Issuer, TokenError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// What the connection tells about the client.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub addr: SocketAddr,
    pub tls: bool,
}

/// Handles one request; never fails, every fault becomes a response.
pub async fn handle(app: &App, req: Request<Incoming>, peer: Peer) -> Response<Body> {
    let started = Instant::now();
    let snapshot = app.snapshot();
    let mut route_name = "none";
    let mut issuer: Option<Arc<Issuer>> = None;
    let outcome = tokio::time::timeout(
        app.limits.request_timeout,
        proxy(app, &snapshot, req, peer, &mut route_name, &mut issuer),
    )
    .await
    .unwrap_or(Err(Rejection::RequestTimeout));
    let issuer_name = issuer.as_ref().map_or("", |i| i.name.as_str());
    let (resp, decision, reason) = match outcome {
        Ok((resp, decision)) => (resp, decision, ""),
        Err(rejection) => {
            let (decision, reason) = (rejection.decision(), rejection.reason());
            if let Rejection::Token(e) = &rejection {
                let issuer = if issuer_name.is_empty() {
                    "unknown"
                } else {
                    issuer_name
                };
                app.metrics
                    .auth_failures
                    .with_label_values(&[issuer, e.reason()])
                    .inc();
            }
            if let Rejection::Denied = rejection {
                app.metrics
                    .policy_denials
                    .with_label_values(&[route_name])
                    .inc();
            }
            let upstream_fault = match rejection {
                Rejection::UpstreamTimeout => Some("timeout"),
                Rejection::UpstreamUnavailable => Some("unavailable"),
                _ => None,
            };
            if let Some(kind) = upstream_fault {
                app.metrics
                    .upstream_errors
                    .with_label_values(&[route_name, kind])
                    .inc();
            }
            (rejection.into_response(), decision, reason)
        }
    };
    let elapsed = started.elapsed();
    app.metrics
        .requests
        .with_label_values(&[route_name, decision])
        .inc();
    app.metrics
        .request_duration
        .with_label_values(&[route_name])
        .observe(elapsed.as_secs_f64());
    tracing::info!(
        target: "claimgate::access",
        route = route_name,
        decision,
        reason,
        issuer = issuer_name,
        status = resp.status().as_u16(),
        latency_us = elapsed.as_micros() as u64,
    );
    resp
}

async fn proxy<'s>(
    app: &App,
    snapshot: &'s Snapshot,
    req: Request<Incoming>,
    peer: Peer,
    route_name: &mut &'s str,
    issuer: &mut Option<Arc<Issuer>>,
) -> Result<(Response<Body>, &'static str), Rejection> {
    // route: decide on the canonical path; ambiguous paths never get here.
    let segments = canonical_segments(req.uri().path()).map_err(Rejection::BadPath)?;
    let host = request_host(&req);
    let matched = snapshot
        .router
        .find(&host, req.method(), &segments)
        .ok_or(Rejection::NoRoute)?;
    let route: &Arc<Route> = matched.route;
    *route_name = &route.name;
    let result = through(app, snapshot, req, peer, &matched, &host, issuer).await;
    if route.is_webhook() {
        // Hasura reads any answer but 200 and 401 as an error.
        result.map_err(Rejection::for_webhook)
    } else {
        result
    }
}

/// Everything after routing: hygiene, the token, the decision, the headers,
/// and the upstream (or the webhook answer).
async fn through(
    app: &App,
    snapshot: &Snapshot,
    mut req: Request<Incoming>,
    peer: Peer,
    matched: &Matched<'_>,
    host: &str,
    issuer: &mut Option<Arc<Issuer>>,
) -> Result<(Response<Body>, &'static str), Rejection> {
    let route = matched.route;
    // A trusted proxy's forwarding headers, before hygiene removes them.
    let from_proxy = forwarded::from_trusted(
        req.headers(),
        peer.addr.ip(),
        &snapshot.trusted_proxies,
        route.trust_rewrite_headers,
    );
    let requested_role = hygiene(snapshot, route, req.headers_mut())?;

    // A query without the token, when the token came from the query.
    let mut new_query: Option<String> = None;
    let decision = if route.public {
        "public"
    } else {
        // extract → verify → decide
        let (token, source) =
            token::extract::find(req.headers(), req.uri().query(), &snapshot.token_sources)
                .map_err(Rejection::BadCredentials)?
                .ok_or(Rejection::Token(TokenError::Missing))?;
        let source = &snapshot.token_sources[source];
        let verified = verify_token(app, snapshot, route, token, source, issuer).await?;
        let facts = RequestFacts {
            method: req.method(),
            host,
            params: &matched.params,
            headers: req.headers(),
        };
        let rendered = authorize(
            route,
            verified.claims.root(),
            &verified.issuer,
            &facts,
            requested_role.as_deref(),
            &mut NoTrace,
        )?;
        if route.is_webhook() {
            return Ok((webhook_answer(&rendered), "allowed"));
        }
        // The credential stays here unless the route passes it on.
        if !route.pass_authorization {
            let query = match source {
                TokenSource::Query(_) => req.uri().query().map(str::to_owned),
                _ => None,
            };
            new_query = token::extract::strip(req.headers_mut(), query.as_deref(), source);
        }
        let headers = req.headers_mut();
        for (name, value) in rendered {
            headers.insert(name, value);
        }
        "allowed"
    };
    pin_host(&mut req);
    set_forwarded(&mut req, host, peer, from_proxy);

    // upstream: same method, raw path and query, streamed body.
    let path_and_query = match new_query {
        Some(q) if q.is_empty() => req.uri().path().to_string(),
        Some(q) => format!("{}?{q}", req.uri().path()),
        None => req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into()),
    };
    let Target::Upstream(upstream) = &route.target else {
        // A webhook answered above; it never gets here.
        return Err(Rejection::UpstreamUnavailable);
    };
    *req.uri_mut() = upstream
        .uri_for(&path_and_query)
        .map_err(|_| Rejection::UpstreamUnavailable)?;
    // The client's HTTP version is not the upstream's.
    *req.version_mut() = http::Version::HTTP_11;
    let limit = app.limits.max_body_bytes.unwrap_or(u64::MAX);
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(Rejection::BodyTooLarge);
    }
    let req = req.map(|body| Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX)));
    let sent = Instant::now();
    let resp = app.upstream.send(req).await;
    app.metrics
        .upstream_duration
        .with_label_values(&[route.name.as_str()])
        .observe(sent.elapsed().as_secs_f64());
    let resp = resp?;

    // respond: the upstream's hop-by-hop headers stop here too.
    let (mut parts, body) = resp.into_parts();
    forward::strip_hop_by_hop(&mut parts.headers);
    Ok((Response::from_parts(parts, body.boxed()), decision))
}

/// The verify stage: the verified-token cache, else full verification, once
/// more after a key refresh when the `kid` was unknown (rotation), then the
/// issuer's own source check. Sets `issuer` as soon as it is known.
async fn verify_token(
    app: &App,
    snapshot: &Snapshot,
    route: &Route,
    token: &str,
    source: &TokenSource,
    issuer: &mut Option<Arc<Issuer>>,
) -> Result<token::Verified, Rejection> {
    let now = unix_now();
    let cached = app
        .token_cache
        .get(token, &snapshot.issuers, route.issuers.as_deref(), now);
    let was_cached = cached.is_some();
    let label = if was_cached { "hit" } else { "miss" };
    app.metrics
        .token_cache_lookups
        .with_label_values(&[label])
        .inc();
    let verify = || {
        token::verify(
            token,
            &snapshot.issuers,
            route.issuers.as_deref(),
            snapshot.max_token_bytes,
            now,
        )
    };
    let mut result = match cached {
        Some(v) => Ok(v),
        None => verify(),
    };
    // Key rotation: an unknown kid may be a key the IdP just published.
    // The store bounds how often this fetches (rule 11); verify once more
    // only if the keys may have changed.
    if let Err(token::Refused {
        issuer: Some(i),
        error: TokenError::UnknownKey,
        kid,
    }) = &result
    {
        if i.keys.refresh_for_unknown_kid(kid.as_deref()).await {
            result = verify();
        }
    }
    let verified = result.map_err(|refused| {
        *issuer = refused.issuer;
        Rejection::Token(refused.error)
    })?;
    *issuer = Some(verified.issuer.clone());
    // The issuer is known only now: it must list the source the token
    // came from (a query-string token for a bearer-only issuer is not).
    if !verified.issuer.token_from.contains(source) {
        return Err(Rejection::Token(TokenError::SourceNotAllowed(
            source.to_string(),
        )));
    }
    if !was_cached {
        app.token_cache.insert(token, &verified, now);
    }
    Ok(verified)
}

/// The decide and inject stages for a verified token: the route's rule over
/// the claims and the request, then every header rendered. All headers are
/// rendered before any is set, so a bad value refuses the whole request.
/// `explain` and `claimgate test` call this same function with a tracer.
pub fn authorize<T: Tracer>(
    route: &Route,
    claims: &serde_json::Value,
    issuer: &Issuer,
    request: &RequestFacts<'_>,
    requested_role: Option<&str>,
    trace: &mut T,
) -> Result<Vec<(HeaderName, HeaderValue)>, Rejection> {
    if let Some(rule) = &route.allow {
        let ctx = Ctx {
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
        if let Ok(v) = HeaderValue::from_str(&json) {
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

/// Hasura's auth-webhook answer: 200 with the session variables as a JSON
/// object of strings. The admin secret is never in it.
fn webhook_answer(rendered: &[(HeaderName, HeaderValue)]) -> Response<Body> {
    let session: serde_json::Map<String, serde_json::Value> = rendered
        .iter()
        .filter(|(k, _)| k.as_str().starts_with("x-hasura-") && k.as_str() != hasura::ADMIN_SECRET)
        .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.into())))
        .collect();
    let body = serde_json::Value::Object(session).to_string();
    let mut resp = Response::new(
        http_body_util::Full::new(bytes::Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The hygiene stage, on every route, public ones included. Hasura's
/// `X-Hasura-Role` is taken out first (a request for a role, decided later;
/// it is returned); then, where the policy says so, a client header
/// claimgate owns refuses the request; then hop-by-hop, `Connection`-named
/// and claimgate-owned headers are removed. `explain` runs this too.
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
fn request_host(req: &Request<Incoming>) -> String {
    match req.uri().authority() {
        Some(a) => normal_host(a.as_str()),
        None => normal_host(
            req.headers()
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

/// Rule 16: the upstream must see the host claimgate routed on. When the
/// request carries an authority (HTTP/2 `:authority`, HTTP/1 absolute-form),
/// routing used it, so it replaces any `Host` header (RFC 9112 §3.2.2).
fn pin_host(req: &mut Request<Incoming>) {
    let Some(authority) = req.uri().authority() else {
        return;
    };
    let value = match authority.port() {
        Some(port) => format!("{}:{}", authority.host(), port),
        None => authority.host().to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        req.headers_mut().insert(HOST, v);
    }
}

/// Rule 15: the client's forwarding headers were removed by hygiene; these
/// come from the connection, extended from a trusted proxy's.
fn set_forwarded(req: &mut Request<Incoming>, host: &str, peer: Peer, proxy: FromProxy) {
    let headers = req.headers_mut();
    for (name, value) in proxy.rewrite {
        headers.append(name, value);
    }
    let peer_ip = peer.addr.ip().to_string();
    let chain = match proxy.forwarded_for {
        Some(prior) => format!("{prior}, {peer_ip}"),
        None => peer_ip,
    };
    if let Ok(v) = HeaderValue::from_str(&chain) {
        headers.insert("x-forwarded-for", v);
    }
    let proto = proxy.proto.unwrap_or(HeaderValue::from_static(if peer.tls {
        "https"
    } else {
        "http"
    }));
    headers.insert("x-forwarded-proto", proto);
    let own_host = HeaderValue::from_str(host)
        .ok()
        .filter(|_| !host.is_empty());
    if let Some(v) = proxy.host.or(own_host) {
        headers.insert("x-forwarded-host", v);
    }
}
