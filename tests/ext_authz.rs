//! Envoy ext_authz over gRPC, called by an independent client: Python
//! `grpcio` with Envoy's own generated stubs (`xds-protos`), installed in the
//! project's virtualenv by `scripts/install-deps.sh`. Allowed and denied
//! checks with their headers, the gRPC health service, and SECURITY.md rule
//! 21 (only gateways may ask).

mod common;

use common::{envoy_checks, Builder};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_checks_are_allowed_and_denied_with_headers() {
    let s = Builder::new().ext_authz(&["127.0.0.0/8"]).start().await;
    let gold = format!("Bearer {}", s.gold_token());
    let free = format!(
        "Bearer {}",
        s.token(json!({"scope": "order", "subscription_level": "free"}))
    );
    let cases = json!([
        {"method": "GET", "path": "/orders/7?x=1", "host": "api.test",
         "headers": {"authorization": gold, "x-user-id": "spoofed", "x_region": "spoofed",
                     "x-envoy-original-path": "/admin"}},
        {"method": "GET", "path": "/orders/7", "host": "api.test", "headers": {}},
        {"method": "GET", "path": "/orders/7", "host": "api.test",
         "headers": {"authorization": "Bearer a.b.c"}},
        {"method": "GET", "path": "/orders/7", "host": "api.test",
         "headers": {"authorization": free}},
        {"method": "GET", "path": "/healthz", "host": "api.test", "headers": {}},
    ]);
    let got = envoy_checks(&s, &cases);
    assert_eq!(got["health"], 1, "SERVING");
    let r = &got["results"];

    // Allowed: OK, claimgate's headers to set, the client's copies, the
    // rewrite-class header and the credential to remove.
    assert_eq!(r[0]["code"], 0, "{r}");
    assert_eq!(
        r[0]["ok"]["set"],
        json!({"x-user-id": "user-1", "x-region": "global", "x-name": "Ada L"})
    );
    assert_eq!(
        r[0]["ok"]["remove"],
        json!(["authorization", "x-envoy-original-path", "x_region"])
    );
    // Refused: the gRPC code Envoy's own filters use, and the HTTP answer.
    let refused = [
        (1, 16, 401, "missing_token", r#"Bearer realm="claimgate""#),
        (
            2,
            16,
            401,
            "malformed_token",
            r#"Bearer realm="claimgate", error="invalid_token""#,
        ),
        (
            3,
            7,
            403,
            "policy_denied",
            r#"Bearer realm="claimgate", error="insufficient_scope""#,
        ),
    ];
    for (i, code, status, reason, challenge) in refused {
        let x = &r[i];
        assert_eq!(x["code"], code, "{x}");
        assert_eq!(x["message"], reason);
        assert_eq!(x["denied"]["status"], status);
        assert_eq!(x["denied"]["headers"]["www-authenticate"], challenge);
        let body: Value = serde_json::from_str(x["denied"]["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["reason"], reason);
    }
    // Public: OK with nothing to set.
    assert_eq!(r[4]["code"], 0);
    assert_eq!(r[4]["ok"]["set"], json!({}));
    // ext_authz never proxies.
    assert_eq!(s.upstream.count(), 0);
    let m = s.admin("GET", "/metrics").await.body;
    assert!(
        m.contains(r#"claimgate_requests_total{decision="allowed",route="orders"} 1"#),
        "{m}"
    );
}

/// Rule 21: a peer that is not a configured gateway gets the gRPC error
/// PERMISSION_DENIED and nothing is decided, however good its token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_is_not_a_gateway_cannot_ask() {
    let s = Builder::new().ext_authz(&["10.0.0.0/8"]).start().await;
    let gold = format!("Bearer {}", s.gold_token());
    let cases = json!([{"method": "GET", "path": "/orders/7", "host": "api.test",
                        "headers": {"authorization": gold}}]);
    let got = envoy_checks(&s, &cases);
    assert_eq!(got["results"][0]["error"], "PERMISSION_DENIED");
    assert!(got["results"][0]["message"]
        .as_str()
        .unwrap()
        .starts_with("untrusted_gateway"));
    assert_eq!(s.upstream.count(), 0);
}

/// `{client}` on the ext_authz door is the downstream peer Envoy reports
/// (`attributes.source`), as a request value in templates and rules.
#[tokio::test]
async fn client_is_the_source_envoy_reports() {
    use envoy_types::ext_authz::v3::pb::{CheckRequest, HttpResponse};
    use envoy_types::pb::envoy::config::core::v3::{address, Address, SocketAddress};
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest, Peer, Request,
    };
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    let s = Builder::new()
        .policy(
            "issuers:\n  test:\n    issuer: https://issuer.test\n    audience: [api]\n    jwks_uri: ${JWKS_URI}\n    allow_http: true\n\
             upstreams:\n  app: ${UPSTREAM}\nroutes:\n  - name: ip\n    match: { path: /ip }\n    upstream: app\n    forward:\n      X-Client: \"{{ {client} }}\"\n",
        )
        .start()
        .await;
    let bearer = format!("Bearer {}", s.gold_token());
    let ask = |source: Option<&str>| CheckRequest {
        attributes: Some(AttributeContext {
            source: source.map(|ip| Peer {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: ip.to_string(),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            }),
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: "/ip".into(),
                    host: "api.test".into(),
                    headers: [("authorization".to_string(), bearer.clone())].into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let app = &s.running().app;
    let set = |resp: envoy_types::ext_authz::v3::pb::CheckResponse| -> Value {
        match resp.http_response {
            Some(HttpResponse::OkResponse(ok)) => ok
                .headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .map(|h| (h.key.clone(), Value::from(h.value.clone())))
                .collect::<serde_json::Map<_, _>>()
                .into(),
            other => panic!("not allowed: {other:?}"),
        }
    };
    let got = set(claimgate::proxy::ext_authz::check(app, ask(Some("203.0.113.9"))).await);
    assert_eq!(got["x-client"], "203.0.113.9", "{got}");
    // No source: the value is empty, as for an absent request value.
    let got = set(claimgate::proxy::ext_authz::check(app, ask(None)).await);
    assert_ne!(got.get("x-client"), Some(&json!("203.0.113.9")), "{got}");
    assert_eq!(s.upstream.count(), 0);
}
