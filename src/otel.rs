//! OpenTelemetry traces: one server span per request with a child span per
//! stage (`route`, `verify`, `decide`, `upstream`), exported over OTLP/gRPC
//! in batches from a thread of the SDK's. W3C `traceparent` is continued
//! from the client and propagated to the upstream from the `upstream` span.
//!
//! Off unless the process file has `tracing: { otlp_endpoint }`; off, a
//! request pays one `Option` check and `traceparent` passes through as the
//! client sent it. Spans carry the request's method, path (never the
//! query), route, decision, reason, issuer, status and request id: never a
//! token or a claim value.
//!
//! The stages run in the decision core, which records no telemetry: it
//! marks when verify began and ended and when decide ended ([`Marks`]), and
//! the door turns the marks into spans once the request is done.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};

use crate::decision::telemetry::Record;

/// The process file's `tracing:`.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The OTLP/gRPC collector, e.g. `http://otel-collector:4317`.
    pub otlp_endpoint: String,
    /// The share of new traces recorded (0.0–1.0); a client's sampled
    /// `traceparent` is always followed (parent-based sampling).
    pub sample_ratio: f64,
    /// `service.name` of the spans' resource.
    pub service_name: String,
    /// Longest one export may take.
    pub export_timeout: Duration,
}

/// The exporter and tracer; one per process.
pub struct Otel {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
}

impl Otel {
    /// Builds the OTLP exporter. Needs a Tokio runtime (tonic's channel
    /// lives on it); the collector is connected to lazily.
    pub fn new(s: &Settings) -> Result<Self, String> {
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(s.otlp_endpoint.clone())
            .with_timeout(s.export_timeout)
            .build()
            .map_err(|e| format!("tracing.otlp_endpoint `{}`: {e}", s.otlp_endpoint))?;
        let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            s.sample_ratio.clamp(0.0, 1.0),
        )));
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(s.service_name.clone())
            .with_attribute(KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION").to_string(),
            ))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(sampler)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("claimgate");
        Ok(Self {
            provider,
            tracer,
            propagator: TraceContextPropagator::new(),
        })
    }

    /// Starts a request's server span, the child of the client's
    /// `traceparent` when it has one.
    pub fn start(&self, headers: &HeaderMap, started: Instant) -> RequestSpans<'_> {
        let parent = self.propagator.extract(&Headers(headers));
        let at = SystemTime::now() - started.elapsed();
        let span = self
            .tracer
            .span_builder("request")
            .with_kind(SpanKind::Server)
            .with_start_time(at)
            .start_with_context(&self.tracer, &parent);
        RequestSpans {
            otel: self,
            cx: parent.with_span(span),
            origin: (started, at),
            marks: std::sync::Arc::new(Marks::new(started)),
            upstream: std::sync::Mutex::new(None),
        }
    }

    /// Exports every finished span now. Blocks: call it off the runtime.
    pub fn flush(&self) -> Result<(), String> {
        self.provider.force_flush().map_err(|e| e.to_string())
    }

    /// Exports what is left and stops the exporter (at exit).
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown_with_timeout(Duration::from_secs(5)) {
            tracing::warn!("tracing: the last spans were not exported: {e}");
        }
    }
}

/// When the core's stages began and ended, as nanoseconds after the
/// request began (0: not reached). Atomics: the core sees `&Ctx` only.
pub struct Marks {
    origin: Instant,
    at: [AtomicU64; 3],
}

/// A point the core marks.
#[derive(Debug, Clone, Copy)]
pub enum Mark {
    VerifyStart = 0,
    VerifyEnd = 1,
    DecideEnd = 2,
}

impl Marks {
    fn new(origin: Instant) -> Self {
        Self {
            origin,
            at: Default::default(),
        }
    }

    pub fn set(&self, mark: Mark) {
        let ns = self.origin.elapsed().as_nanos() as u64;
        self.at[mark as usize].store(ns.max(1), Ordering::Relaxed);
    }

    fn get(&self, mark: Mark) -> Option<Duration> {
        match self.at[mark as usize].load(Ordering::Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }
}

/// One request's spans while it is served.
pub struct RequestSpans<'o> {
    otel: &'o Otel,
    /// The client's context with the server span in it.
    cx: Context,
    /// When the request began, as an `Instant` and as wall-clock time.
    origin: (Instant, SystemTime),
    pub marks: std::sync::Arc<Marks>,
    /// The `upstream` span's context while the upstream is called.
    upstream: std::sync::Mutex<Option<Context>>,
}

impl RequestSpans<'_> {
    /// The trace id, hex, when this request is sampled.
    pub fn trace_id(&self) -> Option<String> {
        let span = self.cx.span();
        let sc = span.span_context();
        sc.is_sampled().then(|| sc.trace_id().to_string())
    }

    fn wall(&self, at: Instant) -> SystemTime {
        self.origin.1 + at.saturating_duration_since(self.origin.0)
    }

    fn child(&self, name: &'static str, start: SystemTime, end: SystemTime) {
        let mut span = self
            .otel
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Internal)
            .with_start_time(start)
            .start_with_context(&self.otel.tracer, &self.cx);
        span.end_with_timestamp(end.max(start));
    }

    /// Starts the `upstream` client span and puts its `traceparent` (and the
    /// client's `tracestate`) into the upstream request's headers.
    pub fn upstream_start(&self, headers: &mut HeaderMap, server: Option<&str>) {
        let mut attributes = vec![];
        if let Some(s) = server {
            attributes.push(KeyValue::new("server.address", s.to_string()));
        }
        let span = self
            .otel
            .tracer
            .span_builder("upstream")
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(&self.otel.tracer, &self.cx);
        let cx = self.cx.with_span(span);
        headers.remove("traceparent");
        self.otel
            .propagator
            .inject_context(&cx, &mut HeadersMut(headers));
        *self.upstream.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx);
    }

    /// Ends the `upstream` span with the upstream's status, or as failed.
    pub fn upstream_end(&self, status: Option<u16>) {
        let taken = self
            .upstream
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(cx) = taken else {
            return;
        };
        let span = cx.span();
        match status {
            Some(s) => {
                span.set_attribute(KeyValue::new("http.response.status_code", i64::from(s)));
                if s >= 500 {
                    span.set_status(Status::error(""));
                }
            }
            None => span.set_status(Status::error("no answer from the upstream")),
        }
        span.end();
    }

    /// Records the stages' spans and ends the server span, from what the
    /// door recorded of the request; `routed` is when routing ended (the
    /// `route` span's end), when the door routes.
    pub fn finish(self, f: &Record<'_>, routed: Option<Instant>) {
        self.upstream_end(None);
        let start = self.origin.1;
        let mark = |m| self.marks.get(m).map(|d| start + d);
        let (decision, reason) = f.outcome();
        if let Some(routed) = routed {
            self.child("route", start, self.wall(routed));
        }
        if let (Some(a), Some(b)) = (mark(Mark::VerifyStart), mark(Mark::VerifyEnd)) {
            self.child("verify", a, b);
        }
        if let (Some(a), Some(b)) = (
            mark(Mark::VerifyEnd).or_else(|| routed.map(|r| self.wall(r))),
            mark(Mark::DecideEnd),
        ) {
            self.child("decide", a, b);
        }
        let span = self.cx.span();
        span.update_name(format!("{} {}", f.method, f.route));
        let mut attributes = vec![
            KeyValue::new("http.request.method", f.method.to_string()),
            KeyValue::new("url.path", f.path.to_string()),
            KeyValue::new("http.route", f.route.to_string()),
            KeyValue::new("http.response.status_code", i64::from(f.status)),
            KeyValue::new("claimgate.decision", decision.as_str()),
            KeyValue::new("claimgate.request_id", f.request_id.to_string()),
        ];
        if !reason.is_empty() {
            attributes.push(KeyValue::new("claimgate.reason", reason));
        }
        if let Some(i) = f.seen.issuer_name() {
            attributes.push(KeyValue::new("claimgate.issuer", i.to_string()));
        }
        if let Some(c) = f.client {
            attributes.push(KeyValue::new("client.address", c.to_string()));
        }
        span.set_attributes(attributes);
        if f.status >= 500 {
            span.set_status(Status::error(reason));
        }
        span.end();
    }
}

struct Headers<'h>(&'h HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeadersMut<'h>(&'h mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(k, v);
        }
    }
}
