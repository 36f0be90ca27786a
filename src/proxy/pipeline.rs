//! The reverse-proxy door, in order, on one screen:
//!
//! route → (deadline) → decide (the core: hygiene, token, rule, headers) →
//! forwarding headers → upstream → respond → telemetry, once.
//!
//! A request loads the snapshot once, here, and uses it to the end. Every
//! refusal returns before the upstream is called: nothing reaches the
//! upstream unless the request was allowed (SECURITY.md rule 20).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use http::header::HOST;
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue, Method, Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::reject::Rejection;
use super::upgrade;
use super::Body;
use crate::app::App;
use crate::decision::telemetry::{self, Record};
use crate::decision::{self, Allowed, Ctx, Decision, Seen};
use crate::forward;
use crate::forward::cors;
use crate::forward::forwarded::{self, FromProxy};
use crate::forward::hasura;
use crate::policy::rule::NoTrace;
use crate::policy::{Matched, Route, Target};
use hyper::upgrade::OnUpgrade;

pub use crate::decision::Peer;

/// Handles one request; never fails, every fault becomes a response
/// (`Infallible`: hyper's service future as it is, with no wrapper).
pub async fn handle(
    app: Arc<App>,
    req: Request<Incoming>,
    peer: Peer,
) -> Result<Response<Body>, Infallible> {
    let app = &*app;
    let started = Instant::now();
    // The request's deadline (`request_timeout`), up to the response head.
    let deadline = tokio::time::Instant::from_std(started) + app.limits.request_timeout;
    let snapshot = app.snapshot();
    let (mut head, body) = req.into_parts();
    // The request's trace, when tracing is on: continued from the client's
    // `traceparent`; the core marks its stages into it.
    let spans = app.otel.as_ref().map(|o| o.start(&head.headers, started));
    let mut ctx = app.decision_ctx(&snapshot);
    ctx.marks = spans.as_ref().map(|s| s.marks.clone());
    // Before hygiene replaces the forwarding headers.
    ctx.client = Some(forwarded::client_ip(
        &head.headers,
        peer.addr.ip(),
        &snapshot.trusted_proxies,
    ));
    // The request id goes upstream, into the access line and to the client.
    let id = forwarded::request_id(&head.headers, peer.addr.ip(), &snapshot.trusted_proxies);
    head.headers.insert(forwarded::X_REQUEST_ID, id.clone());
    let (method, path) = (head.method.clone(), head.uri.path().to_string());
    // Read before hygiene removes the hop-by-hop headers.
    let upgrade = upgrade::requested(&head);
    // A gRPC call is refused in gRPC's terms.
    let grpc = is_grpc(&head.headers);
    // A CORS preflight is answered here, with no token, never forwarded;
    // it is routed on the method it asks about.
    let preflight = cors::is_preflight(&head.method, &head.headers);
    let mut routed_head = None;
    if preflight {
        let mut probe = head.clone();
        probe.method = cors::requested_method(&head.headers).unwrap_or(Method::OPTIONS);
        routed_head = Some(probe);
    }
    let mut cors_origin = None;
    // Routing is quick and bounded; the deadline covers what may wait (keys,
    // the upstream), and a timeout is still counted under its route.
    let routing = decision::route(&snapshot, routed_head.as_ref().unwrap_or(&head));
    // Only a traced request needs when routing ended (one clock read less).
    let routed = spans.as_ref().map(|_| Instant::now());
    let (route, seen, result) = match routing {
        Err(rejection) => ("none", Seen::default(), Err(rejection)),
        Ok((matched, _)) if preflight => {
            let answer = matched
                .route
                .cors
                .as_ref()
                .and_then(|c| c.preflight(&head.headers))
                .map(|headers| {
                    let mut resp = Response::new(Body::default());
                    *resp.status_mut() = http::StatusCode::NO_CONTENT;
                    *resp.headers_mut() = headers;
                    (resp, Decision::Public, false)
                })
                .ok_or(Rejection::CorsRefused);
            (matched.route.name.as_str(), Seen::default(), answer)
        }
        Ok((matched, host)) => {
            let route = matched.route.name.as_str();
            // Allowed origins get the CORS headers on every answer, refusals
            // included, so that the page can read a 401 or a 429.
            cors_origin = matched
                .route
                .cors
                .as_ref()
                .and_then(|c| c.origin(&head.headers).map(|o| (c.clone(), o.clone())));
            // Boxed: the bulk of the request's state, needed only by a
            // request that was routed; a request refused before this
            // (no route, a preflight) moves and boxes a future a third
            // the size.
            let forwarded = Box::pin(forward_allowed(
                app,
                &ctx,
                deadline,
                matched,
                host,
                head,
                body,
                peer,
                upgrade,
                spans.as_ref(),
            ));
            let (seen, result) = forwarded.await;
            (route, seen, result)
        }
    };
    let (mut resp, decision, rejection, from_upstream) = match result {
        Ok((resp, decision, from_upstream)) => (resp, decision, None, from_upstream),
        Err(r) if grpc => (r.grpc_response(&id), r.decision(), Some(r), false),
        Err(r) => (r.response_with_id(&id), r.decision(), Some(r), false),
    };
    if let Some((cors, origin)) = &cors_origin {
        cors.response_headers(origin, resp.headers_mut());
    }
    let status = resp.status().as_u16();
    let upstream_status = from_upstream.then_some(status);
    resp.headers_mut()
        .insert(forwarded::X_REQUEST_ID, id.clone());
    let record = Record {
        door: "proxy",
        route,
        seen: &seen,
        decision,
        rejection: rejection.as_ref(),
        status,
        elapsed: started.elapsed(),
        method: method.as_str(),
        path: &path,
        client: Some(peer.addr.ip()),
        request_id: id.to_str().unwrap_or(""),
        upstream_status,
        bytes: hyper::body::Body::size_hint(resp.body()).exact(),
        trace_id: spans.as_ref().and_then(|s| s.trace_id()),
    };
    telemetry::record(&app.metrics, &record);
    if let Some(spans) = spans {
        spans.finish(&record, routed);
    }
    Ok(resp)
}

/// The core's decision, then, if allowed, the upstream (or the webhook's
/// own answer); says whether the answer came from the upstream.
#[allow(clippy::too_many_arguments)]
async fn forward_allowed(
    app: &App,
    ctx: &Ctx<'_>,
    deadline: tokio::time::Instant,
    matched: Matched<'_>,
    host: String,
    mut head: Parts,
    body: Incoming,
    peer: Peer,
    upgrade: Option<HeaderValue>,
    spans: Option<&crate::otel::RequestSpans<'_>>,
) -> (Seen, Result<(Response<Body>, Decision, bool), Rejection>) {
    let route = matched.route.clone();
    // A trusted proxy's forwarding headers, before hygiene removes them.
    let from_proxy = forwarded::from_trusted(
        &head.headers,
        peer.addr.ip(),
        &ctx.snapshot.trusted_proxies,
        route.trust_rewrite_headers,
    );
    let mut trace = NoTrace;
    // The timer is set only if the decision waits: one from cached keys
    // and tokens completes on its first poll and costs none. Pinned where
    // it is made: passed by value it would be copied whole again.
    let decided = {
        let deciding = std::pin::pin!(decision::decide_routed(
            ctx, matched, &host, &mut head, None, &mut trace
        ));
        super::deadlines::timeout_at(deadline.into_std(), deciding).await
    };
    let Some(outcome) = decided else {
        return (Seen::default(), Err(Rejection::RequestTimeout));
    };
    let (_, seen, verdict) = outcome.split();
    let allowed = match (verdict, &route.target) {
        (Ok(allowed), Target::Upstream(_)) => allowed,
        (Ok(allowed), Target::HasuraWebhook) => {
            return (
                seen,
                Ok((webhook_answer(&allowed.set), Decision::Allowed, false)),
            );
        }
        // Hasura reads any webhook answer but 200 and 401 as an error.
        (Err(e), Target::HasuraWebhook) => return (seen, Err(e.for_webhook())),
        (Err(e), Target::Upstream(_)) => return (seen, Err(e)),
    };
    let Target::Upstream(upstream) = &route.target else {
        return (seen, Err(Rejection::UpstreamUnavailable));
    };
    pin_host(&mut head);
    set_forwarded(&mut head, &host, peer, from_proxy);
    let upgrade = upgrade.and_then(|protocol| {
        upgrade::restore(&mut head.headers, &protocol);
        let client = head.extensions.remove::<OnUpgrade>()?;
        Some(Upgrade {
            client,
            protocol,
            lifetime: lifetime(&route, &seen, &allowed),
        })
    });
    let result = send_upstream(
        app,
        &route.name,
        upstream,
        head,
        body,
        &allowed,
        upgrade,
        spans,
        deadline,
    )
    .await;
    let result = result.map(|mut resp| {
        // The rate limits' headers, when the route asks: the upstream's
        // own of the same name are replaced.
        for (name, value) in &allowed.response_headers {
            resp.headers_mut().insert(name.clone(), value.clone());
        }
        resp
    });
    (seen, result.map(|resp| (resp, allowed.decision, true)))
}

/// An allowed upgrade request's client side, for the splice.
struct Upgrade {
    client: OnUpgrade,
    protocol: HeaderValue,
    lifetime: upgrade::Lifetime,
}

/// How long an upgraded connection may live (rule 23): to the token's `exp`
/// plus the issuer's leeway, unless the route lets it outlive the token.
fn lifetime(route: &Route, seen: &Seen, allowed: &Allowed) -> upgrade::Lifetime {
    let exp = allowed
        .claims
        .as_ref()
        .and_then(|c| c.root().get("exp").and_then(serde_json::Value::as_f64));
    match (route.websocket_outlives_token, exp, &seen.issuer) {
        (false, Some(exp), Some(issuer)) => {
            let left = exp + issuer.leeway as f64 - crate::jwks::unix_now() as f64;
            upgrade::Lifetime::Until(std::time::Duration::from_secs_f64(left.max(0.0)))
        }
        _ => upgrade::Lifetime::Unbounded,
    }
}

/// The upstream stage: same method, raw path (and the query without the
/// credential), the body streamed and bounded.
#[allow(clippy::too_many_arguments)]
async fn send_upstream(
    app: &App,
    route: &str,
    upstream: &crate::snapshot::Upstream,
    mut head: Parts,
    body: Incoming,
    allowed: &Allowed,
    upgrade: Option<Upgrade>,
    spans: Option<&crate::otel::RequestSpans<'_>>,
    deadline: tokio::time::Instant,
) -> Result<Response<Body>, Rejection> {
    let path_and_query = match &allowed.query {
        Some(q) if q.is_empty() => PathAndQuery::try_from(head.uri.path()),
        Some(q) => PathAndQuery::try_from(format!("{}?{q}", head.uri.path())),
        None => Ok(head
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"))),
    };
    head.uri = path_and_query
        .map_err(http::Error::from)
        .and_then(|p| upstream.uri_for(p))
        .map_err(|_| Rejection::UpstreamUnavailable)?;
    // gRPC over HTTP/2 needs `TE: trailers`, which hygiene removed with
    // the other hop-by-hop headers (RFC 9113 §8.2.2 allows this one value).
    let grpc = is_grpc(&head.headers);
    if grpc && upstream.transport.protocol != crate::snapshot::Protocol::Http1 {
        head.headers
            .insert(http::header::TE, HeaderValue::from_static("trailers"));
    }
    let limit = app.limits.max_body_bytes.unwrap_or(u64::MAX);
    let declared = head
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(Rejection::BodyTooLarge);
    }
    let body = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    if let Some(spans) = spans {
        spans.upstream_start(&mut head.headers, head.uri.host());
    }
    let sent = Instant::now();
    let resp = app
        .upstream
        .send(
            &upstream.transport,
            Request::from_parts(head, body),
            tokio::time::Instant::from_std(sent),
            deadline,
        )
        .await;
    app.metrics.for_route(route, |series| {
        series
            .upstream_duration()
            .observe(sent.elapsed().as_secs_f64());
    });
    if let Some(spans) = spans {
        spans.upstream_end(resp.as_ref().ok().map(|r| r.status().as_u16()));
    }
    // respond: the upstream's hop-by-hop headers stop here too.
    let mut resp = resp?;
    forward::strip_hop_by_hop(resp.headers_mut());
    if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        // A 101 the client did not ask for cannot be passed on.
        let Some(u) = upgrade else {
            return Err(Rejection::UpstreamUnavailable);
        };
        upgrade::splice(
            u.client,
            &mut resp,
            &u.protocol,
            u.lifetime,
            &app.metrics,
            route,
        );
    }
    Ok(resp)
}

/// A gRPC call: `content-type: application/grpc` (or `+proto`, `+json`).
fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
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

/// Rule 16: the upstream must see the host claimgate routed on. When the
/// request carries an authority (HTTP/2 `:authority`, HTTP/1 absolute-form),
/// routing used it, so it replaces any `Host` header (RFC 9112 §3.2.2).
fn pin_host(req: &mut Parts) {
    let Some(authority) = req.uri.authority() else {
        return;
    };
    let value = match authority.port() {
        Some(port) => format!("{}:{}", authority.host(), port),
        None => authority.host().to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        req.headers.insert(HOST, v);
    }
}

/// Rule 15: the client's forwarding headers were removed by hygiene; these
/// come from the connection, extended from a trusted proxy's.
fn set_forwarded(req: &mut Parts, host: &str, peer: Peer, proxy: FromProxy) {
    let headers = &mut req.headers;
    for (name, value) in proxy.rewrite {
        headers.append(name, value);
    }
    let mut buf = [0u8; 48];
    let peer_ip = forwarded::ip_text(peer.addr.ip(), &mut buf);
    let chain = match proxy.forwarded_for {
        Some(prior) => HeaderValue::try_from(format!("{prior}, {peer_ip}")),
        None => HeaderValue::from_str(peer_ip),
    };
    if let Ok(v) = chain {
        headers.insert(forwarded::X_FORWARDED_FOR, v);
    }
    let proto = proxy.proto.unwrap_or(HeaderValue::from_static(if peer.tls {
        "https"
    } else {
        "http"
    }));
    headers.insert(forwarded::X_FORWARDED_PROTO, proto);
    let own_host = HeaderValue::from_str(host)
        .ok()
        .filter(|_| !host.is_empty());
    if let Some(v) = proxy.host.or(own_host) {
        headers.insert(forwarded::X_FORWARDED_HOST, v);
    }
}
