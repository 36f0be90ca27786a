//! Telemetry, recorded once per request by the door that answered it, from
//! what the core saw ([`Seen`]) and how the request ended: the request
//! counter and histogram, auth failures, upstream answers by status class and faults,
//! the token cache, and one access-log line.

use std::time::Duration;

use super::{Decision, Seen};
use crate::metrics::Metrics;
use crate::proxy::Rejection;

/// How one request ended, as telemetry sees it.
pub struct Record<'a> {
    /// The front door: `proxy`, `forward_auth`, `ext_authz`.
    pub door: &'static str,
    pub route: &'a str,
    pub seen: &'a Seen,
    /// `Allowed` or `Public` when allowed; the refusal's otherwise.
    pub decision: Decision,
    pub rejection: Option<&'a Rejection>,
    pub status: u16,
    pub elapsed: Duration,
    /// The request as the door saw it: method and path — never the query,
    /// which may carry a credential.
    pub method: &'a str,
    pub path: &'a str,
    pub client: Option<std::net::IpAddr>,
    /// `X-Request-Id`, kept from a trusted proxy or generated (proxy door).
    pub request_id: &'a str,
    /// The upstream's status, when the answer came from the upstream.
    pub upstream_status: Option<u16>,
    /// The response body's length, when known before it is sent (not for
    /// a streamed body).
    pub bytes: Option<u64>,
    /// The request's trace id, when it is traced (`tracing:`).
    pub trace_id: Option<String>,
}

impl Record<'_> {
    /// The decision and reason code as reported: the refusal's when refused.
    pub fn outcome(&self) -> (Decision, &'static str) {
        match self.rejection {
            Some(r) => (r.decision(), r.reason()),
            None => (self.decision, ""),
        }
    }
}

/// Records `r` in `metrics` and the access log.
pub fn record(metrics: &Metrics, r: &Record<'_>) {
    let issuer = r.seen.issuer_name();
    if let Some(hit) = r.seen.cache_hit {
        metrics.token_cache_lookup(hit).inc();
    }
    match r.rejection {
        Some(Rejection::Token(e)) => {
            metrics
                .auth_failures
                .with_label_values(&[issuer.unwrap_or("unknown"), e.reason()])
                .inc();
        }
        Some(Rejection::UpstreamTimeout) => {
            metrics
                .upstream_errors
                .with_label_values(&[r.route, "timeout"])
                .inc();
        }
        Some(Rejection::UpstreamUnavailable) => {
            metrics
                .upstream_errors
                .with_label_values(&[r.route, "unavailable"])
                .inc();
        }
        _ => {}
    }
    let (decision, reason) = r.outcome();
    metrics.for_route(r.route, |series| {
        if let Some(counter) = r.upstream_status.and_then(|s| series.upstream_response(s)) {
            counter.inc();
        }
        series.requests(decision).inc();
        series.request_duration().observe(r.elapsed.as_secs_f64());
    });
    if crate::access_log::direct() {
        access_line(r, decision, reason, issuer);
        return;
    }
    tracing::info!(
        target: "claimgate::access",
        door = r.door,
        route = r.route,
        decision = decision.as_str(),
        reason,
        issuer = issuer.unwrap_or(""),
        status = r.status,
        upstream_status = r.upstream_status,
        latency_us = r.elapsed.as_micros() as u64,
        method = r.method,
        path = r.path,
        client = r.client.map(|c| c.to_string()),
        request_id = r.request_id,
        bytes = r.bytes,
        trace_id = r.trace_id.as_deref(),
    );
}

/// The same line, written by [`crate::access_log`] without `tracing`'s
/// formatter.
fn access_line(r: &Record<'_>, decision: Decision, reason: &str, issuer: Option<&str>) {
    use crate::access_log::name;
    use crate::access_log::Field::{Str, U64};
    let mut client = [0u8; 48];
    let client = r
        .client
        .map(|ip| crate::forward::forwarded::ip_text(ip, &mut client));
    crate::access_log::write(&[
        (name!("door"), Some(Str(r.door))),
        (name!("route"), Some(Str(r.route))),
        (name!("decision"), Some(Str(decision.as_str()))),
        (name!("reason"), Some(Str(reason))),
        (name!("issuer"), Some(Str(issuer.unwrap_or("")))),
        (name!("status"), Some(U64(u64::from(r.status)))),
        (
            name!("upstream_status"),
            r.upstream_status.map(|s| U64(u64::from(s))),
        ),
        (name!("latency_us"), Some(U64(r.elapsed.as_micros() as u64))),
        (name!("method"), Some(Str(r.method))),
        (name!("path"), Some(Str(r.path))),
        (name!("client"), client.map(Str)),
        (name!("request_id"), Some(Str(r.request_id))),
        (name!("bytes"), r.bytes.map(U64)),
        (name!("trace_id"), r.trace_id.as_deref().map(Str)),
    ]);
}
