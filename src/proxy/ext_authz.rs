//! Envoy's external authorization over gRPC
//! (`envoy.service.auth.v3.Authorization/Check`; Istio's CUSTOM action,
//! Envoy Gateway's `SecurityPolicy`), with the gRPC health service.
//!
//! The check request's HTTP attributes become a request head for the
//! decision core. Allowed: `OK` with the headers to set (overwriting) and
//! the client headers to remove (hygiene's removals and the credential),
//! exactly what the reverse proxy would do to the request. Refused: the
//! gRPC status (`UNAUTHENTICATED` for a token fault, `PERMISSION_DENIED`
//! otherwise) and a denied HTTP response with the proxy's own status,
//! challenge and JSON reason. Only configured gateways may ask (SECURITY.md
//! rule 21): any other peer gets the gRPC error `PERMISSION_DENIED` and
//! nothing is decided.

use std::sync::Arc;
use std::time::Instant;

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, DeniedHttpResponse,
    HeaderAppendAction, HeaderValue, HeaderValueOption, HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::google::rpc;
use http::request::Parts;
use http::{HeaderName, Request};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::Rejection;
use crate::app::App;
use crate::config::ExtAuthzConfig;
use crate::decision::telemetry::{self, Record};
use crate::decision::{self, Seen};

/// The gRPC service name Envoy calls (and the health service reports).
pub const SERVICE: &str = "envoy.service.auth.v3.Authorization";

/// gRPC status codes (google.rpc.Code).
const OK: i32 = 0;
const PERMISSION_DENIED: i32 = 7;
const UNAUTHENTICATED: i32 = 16;
const UNAVAILABLE: i32 = 14;

struct Service {
    app: Arc<App>,
    config: Arc<ExtAuthzConfig>,
}

#[tonic::async_trait]
impl Authorization for Service {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let trusted = request
            .remote_addr()
            .is_some_and(|a| self.config.gateways.iter().any(|c| c.contains(a.ip())));
        if !trusted {
            // Rule 21: not a gateway; decide nothing.
            record(
                &self.app,
                Asked::new(Instant::now()),
                "none",
                &Seen::default(),
                Err(&Rejection::UntrustedGateway),
            );
            return Err(tonic::Status::permission_denied(
                "untrusted_gateway: only configured gateways may ask",
            ));
        }
        Ok(tonic::Response::new(
            check(&self.app, request.into_inner()).await,
        ))
    }
}

/// Decides one check request.
pub async fn check(app: &App, req: CheckRequest) -> CheckResponse {
    let mut asked = Asked::new(Instant::now());
    let snapshot = app.snapshot();
    let mut ctx = app.decision_ctx(&snapshot);
    let mut head = match head(&req) {
        Ok(h) => h,
        Err(r) => {
            record(app, asked, "none", &Seen::default(), Err(&r));
            return denied(&r);
        }
    };
    // Envoy's downstream peer: the client, for `{client}`.
    ctx.client = source_ip(&req);
    asked.client = ctx.client;
    asked.method = head.method.to_string();
    asked.path = head.uri.path().to_string();
    asked.request_id = header_text(&head, crate::forward::forwarded::X_REQUEST_ID);
    // The check's span, continued from the request's `traceparent` when
    // Envoy traces.
    let spans = app
        .otel
        .as_ref()
        .map(|o| o.start(&head.headers, asked.started));
    ctx.marks = spans.as_ref().map(|s| s.marks.clone());
    let sent: Vec<HeaderName> = head.headers.keys().cloned().collect();
    let decided = decision::decide(&ctx, &mut head, None);
    let outcome = match tokio::time::timeout(app.limits.request_timeout, decided).await {
        Ok(o) => o,
        Err(_) => {
            let r = Rejection::RequestTimeout;
            asked.spans = spans;
            record(app, asked, "none", &Seen::default(), Err(&r));
            return denied(&r);
        }
    };
    asked.spans = spans;
    let (matched, seen, verdict) = outcome.split();
    let route = matched.map_or("none", |m| m.route.name.as_str());
    match verdict {
        Ok(allowed) => {
            record(app, asked, route, &seen, Ok(allowed.decision));
            let headers = allowed.set.iter().map(|(k, v)| overwrite(k, v)).collect();
            // What the proxy would have removed: hygiene's removals and the
            // credential (Envoy cannot remove `host` or pseudo-headers).
            let headers_to_remove = sent
                .iter()
                .filter(|k| !head.headers.contains_key(*k) && k.as_str() != "host")
                .map(|k| k.to_string())
                .collect();
            CheckResponse {
                status: Some(rpc::Status {
                    code: OK,
                    ..Default::default()
                }),
                http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                    headers,
                    headers_to_remove,
                    ..Default::default()
                })),
                ..Default::default()
            }
        }
        Err(r) => {
            record(app, asked, route, &seen, Err(&r));
            denied(&r)
        }
    }
}

/// The request head of a check request's HTTP attributes.
fn head(req: &CheckRequest) -> Result<Parts, Rejection> {
    let http = req
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
        .ok_or(Rejection::BadForwardAuth)?;
    // Envoy's `path` carries the query too.
    let mut builder = Request::builder()
        .method(http.method.as_str())
        .uri(http.path.as_str());
    for (k, v) in &http.headers {
        // HTTP/2 pseudo-headers travel as `:authority`, `:path`, ...
        if !k.starts_with(':') {
            builder = builder.header(k.as_str(), v.as_str());
        }
    }
    if !http.host.is_empty() {
        builder = builder.header(http::header::HOST, http.host.as_str());
    }
    let parts = builder
        .body(())
        .map_err(|_| Rejection::BadForwardAuth)?
        .into_parts()
        .0;
    if !parts.uri.path().starts_with('/') {
        return Err(Rejection::BadForwardAuth);
    }
    Ok(parts)
}

/// A refusal as Envoy relays it: the gRPC code, and the HTTP status,
/// headers and body the client gets.
fn denied(r: &Rejection) -> CheckResponse {
    let code = match r {
        Rejection::Token(e) if e.is_unavailable() => UNAVAILABLE,
        Rejection::RequestTimeout => UNAVAILABLE,
        Rejection::Token(_) => UNAUTHENTICATED,
        _ => PERMISSION_DENIED,
    };
    let resp = r.response();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| overwrite(k, v))
        .collect();
    CheckResponse {
        status: Some(rpc::Status {
            code,
            message: r.reason().to_string(),
            details: Vec::new(),
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(r.status().as_u16()),
            }),
            headers,
            body: r.body(),
        })),
        ..Default::default()
    }
}

/// A header Envoy sets, replacing any value the request had.
fn overwrite(name: &HeaderName, value: &http::HeaderValue) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.to_string(),
            value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
            raw_value: Vec::new(),
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

/// What the access line and the span say of a check, besides its outcome.
struct Asked<'o> {
    started: Instant,
    method: String,
    path: String,
    client: Option<std::net::IpAddr>,
    request_id: String,
    spans: Option<crate::otel::RequestSpans<'o>>,
}

impl Asked<'_> {
    fn new(started: Instant) -> Self {
        Self {
            started,
            method: String::new(),
            path: String::new(),
            client: None,
            request_id: String::new(),
            spans: None,
        }
    }
}

/// The downstream peer's IP address Envoy reports (`attributes.source`).
fn source_ip(req: &CheckRequest) -> Option<std::net::IpAddr> {
    use envoy_types::pb::envoy::config::core::v3::address::Address;
    let source = req.attributes.as_ref()?.source.as_ref()?;
    match source.address.as_ref()?.address.as_ref()? {
        Address::SocketAddress(s) => s.address.parse().ok(),
        _ => None,
    }
}

fn header_text(head: &Parts, name: HeaderName) -> String {
    head.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

fn record(
    app: &App,
    asked: Asked<'_>,
    route: &str,
    seen: &Seen,
    result: Result<decision::Decision, &Rejection>,
) {
    let (decision, rejection, status) = match result {
        Ok(d) => (d, None, 200),
        Err(r) => (r.decision(), Some(r), r.status().as_u16()),
    };
    let record = Record {
        door: "ext_authz",
        route,
        seen,
        decision,
        rejection,
        status,
        elapsed: asked.started.elapsed(),
        method: &asked.method,
        path: &asked.path,
        client: asked.client,
        request_id: &asked.request_id,
        upstream_status: None,
        bytes: None,
        trace_id: asked.spans.as_ref().and_then(|s| s.trace_id()),
    };
    telemetry::record(&app.metrics, &record);
    if let Some(spans) = asked.spans {
        spans.finish(&record, None);
    }
}

/// Serves ext_authz and gRPC health on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    config: Arc<ExtAuthzConfig>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<AuthorizationServer<Service>>().await;
    let service = AuthorizationServer::new(Service { app, config });
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let stopped = async move { super::server::stopped(&mut shutdown).await };
    let result = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, stopped)
        .await;
    if let Err(e) = result {
        tracing::error!("ext_authz server: {e}");
    }
}
