//! The forward-auth door: a gateway that already proxies (nginx
//! `auth_request`, ingress-nginx `auth-url`, Traefik `ForwardAuth`, Envoy's
//! HTTP ext_authz) asks claimgate about a request, and claimgate answers
//! with the decision core's outcome:
//!
//! - allowed: 200 with the headers to inject (the gateway copies them:
//!   `auth_request_set`, `authResponseHeaders`, `allowed_upstream_headers`);
//! - refused: the proxy's own status, RFC 6750 challenge and JSON reason.
//!
//! The original method, URI and host come from the gateway's headers —
//! `X-Original-Method` / `X-Original-URI` (nginx), `X-Forwarded-Method` /
//! `-Uri` / `-Host` (Traefik), or, without them, the check request itself
//! less `path_prefix` (Envoy) — and only from a configured gateway
//! (SECURITY.md rule 21): any other peer is refused before anything is
//! read, so a client that reaches this listener cannot choose what is
//! decided.

use std::time::Instant;

use http::header::HOST;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;

use super::{Body, Rejection};
use crate::app::App;
use crate::config::ForwardAuthConfig;
use crate::decision::telemetry::{self, Record};
use crate::decision::{self, Peer, Seen};

/// Answers one check request.
pub async fn handle(
    app: &App,
    config: &ForwardAuthConfig,
    req: Request<Incoming>,
    peer: Peer,
) -> Response<Body> {
    let started = Instant::now();
    let snapshot = app.snapshot();
    let (parts, _body) = req.into_parts();
    // The check's span, continued from the `traceparent` the gateway passes
    // on (the original request's).
    let spans = app.otel.as_ref().map(|o| o.start(&parts.headers, started));
    let mut ctx = app.decision_ctx(&snapshot);
    ctx.marks = spans.as_ref().map(|s| s.marks.clone());
    // The gateway is trusted for the original request (rule 21), so for
    // the client's address in its X-Forwarded-For too.
    ctx.client = Some(crate::forward::forwarded::client_ip(
        &parts.headers,
        peer.addr.ip(),
        &config.gateways,
    ));
    let mut route = "none";
    let (mut method, mut path) = (String::new(), String::new());
    let (seen, result) = match original_request(config, &parts, peer) {
        Err(rejection) => (Seen::default(), Err(rejection)),
        Ok(mut head) => {
            method = head.method.to_string();
            path = head.uri.path().to_string();
            let decided = decision::decide(&ctx, &mut head, None);
            match tokio::time::timeout(app.limits.request_timeout, decided).await {
                Err(_) => (Seen::default(), Err(Rejection::RequestTimeout)),
                Ok(outcome) => {
                    let (matched, seen, verdict) = outcome.split();
                    route = matched.map_or("none", |m| m.route.name.as_str());
                    let answered =
                        |a: decision::Allowed| (answer(&a.set, &a.response_headers), a.decision);
                    (seen, verdict.map(answered))
                }
            }
        }
    };
    let (resp, decision, rejection) = match result {
        Ok((resp, decision)) => (resp, decision, None),
        Err(r) => (r.response(), r.decision(), Some(r)),
    };
    let request_id = parts
        .headers
        .get(crate::forward::forwarded::X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let record = Record {
        door: "forward_auth",
        route,
        seen: &seen,
        decision,
        rejection: rejection.as_ref(),
        status: resp.status().as_u16(),
        elapsed: started.elapsed(),
        method: &method,
        path: &path,
        // The original client, as the trusted gateway reports it (as the
        // ext_authz door logs Envoy's source), not the gateway itself.
        client: ctx.client,
        request_id,
        upstream_status: None,
        bytes: hyper::body::Body::size_hint(resp.body()).exact(),
        trace_id: spans.as_ref().and_then(|s| s.trace_id()),
    };
    telemetry::record(&app.metrics, &record);
    if let Some(spans) = spans {
        spans.finish(&record, None);
    }
    resp
}

/// 200 with the headers the gateway is to set on the request, and the
/// route's rate-limit headers (`RateLimit-*`) when it sends them.
fn answer(
    set: &[(http::HeaderName, HeaderValue)],
    limits: &[(http::HeaderName, HeaderValue)],
) -> Response<Body> {
    let mut resp = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *resp.status_mut() = StatusCode::OK;
    for (name, value) in set.iter().chain(limits) {
        resp.headers_mut().insert(name.clone(), value.clone());
    }
    resp
}

/// The request the gateway asks about, as a request head for the core:
/// method, URI and host from the gateway's headers (or the check request
/// itself), every other header as the gateway passed it on.
pub fn original_request(
    config: &ForwardAuthConfig,
    check: &Parts,
    peer: Peer,
) -> Result<Parts, Rejection> {
    // Rule 21: only a configured gateway says what is decided.
    if !config.gateways.iter().any(|c| c.contains(peer.addr.ip())) {
        return Err(Rejection::UntrustedGateway);
    }
    let h = &check.headers;
    let method = match one(h, &["x-original-method", "x-forwarded-method"])? {
        Some(m) => Method::from_bytes(m.as_bytes()).map_err(|_| Rejection::BadForwardAuth)?,
        None => check.method.clone(),
    };
    let uri = match one(h, &["x-original-uri", "x-forwarded-uri"])? {
        Some(u) => u.to_string(),
        None => {
            // Envoy: the check request's own path, after the prefix.
            let pq = check.uri.path_and_query().map_or("/", |p| p.as_str());
            match pq.strip_prefix(config.path_prefix.as_str()) {
                Some(rest) if rest.starts_with('/') => rest.to_string(),
                _ => return Err(Rejection::BadForwardAuth),
            }
        }
    };
    if !uri.starts_with('/') {
        return Err(Rejection::BadForwardAuth);
    }
    let host = match one(h, &["x-forwarded-host"])? {
        Some(host) => HeaderValue::from_str(host).map_err(|_| Rejection::BadForwardAuth)?,
        None => h.get(HOST).cloned().ok_or(Rejection::BadForwardAuth)?,
    };
    let mut original = Request::builder()
        .method(method)
        .uri(uri)
        .body(())
        .map_err(|_| Rejection::BadForwardAuth)?
        .into_parts()
        .0;
    // The gateway's copies of forwarding and original-request headers are
    // claimgate-owned: the core's hygiene removes them like a client's.
    original.headers = h.clone();
    original.headers.insert(HOST, host);
    Ok(original)
}

/// The one value of the first of `names` present; a repeated header is
/// refused rather than read one way (rule 16's spirit).
fn one<'h>(headers: &'h HeaderMap, names: &[&str]) -> Result<Option<&'h str>, Rejection> {
    for name in names {
        let mut values = headers.get_all(*name).iter();
        if let Some(v) = values.next() {
            if values.next().is_some() {
                return Err(Rejection::BadForwardAuth);
            }
            return v.to_str().map(Some).map_err(|_| Rejection::BadForwardAuth);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests;
