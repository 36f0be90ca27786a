//! OpenTelemetry: the spans of an allowed and a refused request arrive at a
//! real OTLP/gRPC receiver (the official `opentelemetry-proto` service,
//! served by tonic) with the right parent, names and attributes, and no
//! token or claim value; the client's `traceparent` is continued and the
//! upstream gets the `upstream` span's.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;

/// An OTLP trace receiver keeping every span it is sent, with its
/// resource's `service.name`.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut kept = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| text(kv.value.as_ref()?.value.as_ref()?))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    kept.push((service.clone(), span));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn text(v: &AnyValue) -> Option<String> {
    match v {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

fn attributes(span: &Span) -> HashMap<String, String> {
    span.attributes
        .iter()
        .filter_map(|kv| Some((kv.key.clone(), text(kv.value.as_ref()?.value.as_ref()?)?)))
        .collect()
}

async fn start_collector() -> (std::net::SocketAddr, Collector) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let collector = Collector::default();
    let service = TraceServiceServer::new(collector.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    (addr, collector)
}

/// Tracing to the collector at `addr`, keeping `ratio` of new traces.
fn traced(
    addr: std::net::SocketAddr,
    ratio: f64,
    service: &str,
) -> impl FnOnce(&mut claimgate::config::Limits) {
    let service = service.to_string();
    move |l| {
        l.tracing = Some(claimgate::otel::Settings {
            otlp_endpoint: format!("http://{addr}"),
            sample_ratio: ratio,
            service_name: service,
            export_timeout: Duration::from_secs(5),
        })
    }
}

/// Exports every finished span now (the exporter blocks: off the runtime).
async fn flush(s: &common::Stack) {
    let app = s.running().app.clone();
    tokio::task::spawn_blocking(move || app.otel.as_ref().unwrap().flush())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_of_an_allowed_and_a_refused_request_reach_the_collector() {
    let (addr, collector) = start_collector().await;
    let s = common::Builder::new()
        .limits(traced(addr, 1.0, "claimgate-test"))
        .start()
        .await;
    let token = s.gold_token();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{client_span}-01");
    let auth = format!("Bearer {token}");
    let resp = s
        .get(
            "/orders/7",
            &[("authorization", &auth), ("traceparent", &traceparent)],
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
    let sent_upstream = s.upstream.last().unwrap().headers["traceparent"]
        .to_str()
        .unwrap()
        .to_string();
    // Refused: no token.
    let refused = s.get("/orders/7", &[]).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(s.upstream.count(), 1);

    flush(&s).await;
    let spans = collector.spans.lock().unwrap().clone();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let names: Vec<_> = spans.iter().map(|(_, s)| s.name.clone()).collect();
    assert!(spans.iter().all(|(svc, _)| svc == "claimgate-test"));

    // The allowed request: a server span, the child of the client's span.
    let (_, server) = spans
        .iter()
        .find(|(_, s)| hex(&s.trace_id) == trace_id && s.name == "GET orders")
        .unwrap_or_else(|| panic!("no server span in {names:?}"));
    assert_eq!(hex(&server.parent_span_id), client_span);
    assert_eq!(server.kind, 2, "SPAN_KIND_SERVER");
    let a = attributes(server);
    assert_eq!(a["http.request.method"], "GET");
    assert_eq!(a["url.path"], "/orders/7");
    assert_eq!(a["http.route"], "orders");
    assert_eq!(a["http.response.status_code"], "200");
    assert_eq!(a["claimgate.decision"], "allowed");
    assert_eq!(a["claimgate.issuer"], "test");
    assert_eq!(a["claimgate.request_id"], resp.headers["x-request-id"]);
    // Its stages, each the server span's child, in order.
    let child = |name: &str| {
        spans
            .iter()
            .map(|(_, s)| s)
            .find(|s| s.name == name && s.parent_span_id == server.span_id)
            .unwrap_or_else(|| panic!("no {name} span under the server span: {names:?}"))
    };
    let (route, verify, decide, upstream) = (
        child("route"),
        child("verify"),
        child("decide"),
        child("upstream"),
    );
    assert!(route.end_time_unix_nano <= verify.start_time_unix_nano);
    assert!(verify.end_time_unix_nano <= decide.end_time_unix_nano);
    assert!(decide.end_time_unix_nano <= upstream.start_time_unix_nano);
    assert!(upstream.end_time_unix_nano <= server.end_time_unix_nano);
    assert_eq!(upstream.kind, 3, "SPAN_KIND_CLIENT");
    assert_eq!(attributes(upstream)["http.response.status_code"], "200");
    // The upstream got the upstream span's traceparent, in the same trace.
    assert_eq!(
        sent_upstream,
        format!("00-{trace_id}-{}-01", hex(&upstream.span_id))
    );

    // The refused request: a root span of its own trace, with the reason,
    // no upstream span.
    let (_, denied) = spans
        .iter()
        .find(|(_, s)| {
            s.name == "GET orders" && attributes(s)["http.response.status_code"] == "401"
        })
        .unwrap_or_else(|| panic!("no refused request's span in {names:?}"));
    assert!(denied.parent_span_id.is_empty());
    let d = attributes(denied);
    assert_eq!(d["claimgate.decision"], "unauthenticated");
    assert_eq!(d["claimgate.reason"], "missing_token");
    assert!(!spans
        .iter()
        .any(|(_, s)| s.name == "upstream" && s.parent_span_id == denied.span_id));

    // No token and no claim value in any attribute of any span.
    let everything: Vec<String> = spans
        .iter()
        .flat_map(|(_, s)| attributes(s).into_values())
        .collect();
    for secret in [token.as_str(), "user-1"] {
        assert!(
            !everything.iter().any(|v| v.contains(secret)),
            "{secret} in {everything:?}"
        );
    }
}

/// A client's unsampled `traceparent` is followed: no span is exported,
/// and the upstream still gets a `traceparent` of the client's trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsampled_parent_is_followed() {
    let (addr, collector) = start_collector().await;
    let s = common::Builder::new()
        .limits(traced(addr, 1.0, "claimgate"))
        .start()
        .await;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let traceparent = format!("00-{trace_id}-b7ad6b7169203331-00");
    let auth = format!("Bearer {}", s.gold_token());
    let resp = s
        .get(
            "/orders/7",
            &[("authorization", &auth), ("traceparent", &traceparent)],
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    let sent = s.upstream.last().unwrap().headers["traceparent"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(sent.starts_with(&format!("00-{trace_id}-")), "{sent}");
    assert!(sent.ends_with("-00"), "{sent}");
    assert_ne!(sent, traceparent);
    flush(&s).await;
    assert!(collector.spans.lock().unwrap().is_empty());
}

/// The forward-auth door traces its checks too, continuing the
/// `traceparent` the gateway passes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_auth_check_is_a_span_of_the_original_trace() {
    let (addr, collector) = start_collector().await;
    let s = common::Builder::new()
        .forward_auth(&["127.0.0.0/8"], "")
        .limits(traced(addr, 0.0, "claimgate"))
        .start()
        .await;
    let trace_id = "5bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace_id}-10f067aa0ba902b7-01");
    let auth = format!("Bearer {}", s.gold_token());
    let r = s
        .check(
            "GET",
            "/auth",
            &[
                ("authorization", &auth),
                ("x-original-method", "GET"),
                ("x-original-uri", "/orders/7"),
                ("traceparent", &traceparent),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // Unsampled (ratio 0) without a parent: nothing exported for this one.
    let r = s
        .check("GET", "/auth", &[("x-original-uri", "/orders/7")])
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    flush(&s).await;
    let spans = collector.spans.lock().unwrap().clone();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let servers: Vec<_> = spans.iter().filter(|(_, s)| s.kind == 2).collect();
    assert_eq!(servers.len(), 1, "{spans:?}");
    let server = &servers[0].1;
    assert_eq!(server.name, "GET orders");
    assert_eq!(hex(&server.trace_id), trace_id);
    assert_eq!(attributes(server)["claimgate.decision"], "allowed");
    assert!(spans
        .iter()
        .any(|(_, s)| s.name == "verify" && s.parent_span_id == server.span_id));
    assert_eq!(s.upstream.count(), 0);
}
