//! CORS per route, as a browser on another origin sees it (curl-like
//! requests with `Origin`): preflights answered by claimgate without a token
//! and never forwarded; allowed origins echoed on real answers, refusals
//! included, so the page can read a 401.

mod common;

use common::Builder;
use serde_json::json;

const POLICY: &str = r#"
issuers:
  test:
    issuer: https://issuer.test
    audience: [api]
    jwks_uri: ${JWKS_URI}
    allow_http: true
upstreams:
  app: ${UPSTREAM}
routes:
  - name: api
    match: { path: "/api/**", methods: [GET, POST] }
    upstream: app
    cors:
      origins: [https://app.example]
      headers: [Authorization, Content-Type, X-Trace]
      expose_headers: [X-Request-Id]
      credentials: true
      max_age: 10m
  - name: private
    match: { path: "/private/**" }
    upstream: app
"#;

#[tokio::test]
async fn preflights_are_answered_here_and_real_answers_carry_the_origin() {
    let s = Builder::new().policy(POLICY).start().await;
    let before = s.upstream.count();
    let preflight = |origin: &'static str, method: &'static str, headers: &'static str| {
        vec![
            ("origin", origin),
            ("access-control-request-method", method),
            ("access-control-request-headers", headers),
        ]
    };
    let r = s
        .send(
            "OPTIONS",
            "/api/orders",
            &preflight("https://app.example", "POST", "authorization, x-trace"),
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(r.headers["access-control-allow-methods"], "GET, POST");
    assert_eq!(
        r.headers["access-control-allow-headers"],
        "authorization, x-trace"
    );
    assert_eq!(r.headers["access-control-allow-credentials"], "true");
    assert_eq!(r.headers["access-control-max-age"], "600");
    // Refused preflights: another origin, a method or a header not allowed,
    // a route without cors.
    for (path, origin, method, headers) in [
        (
            "/api/orders",
            "https://evil.example",
            "GET",
            "authorization",
        ),
        ("/api/orders", "https://app.example", "GET", "x-other"),
        ("/private/x", "https://app.example", "GET", "authorization"),
    ] {
        let r = s
            .send("OPTIONS", path, &preflight(origin, method, headers))
            .await;
        assert_eq!(r.status, 403, "{path} {origin} {headers}");
        assert_eq!(r.reason(), "cors_refused");
        assert!(r.headers.get("access-control-allow-origin").is_none());
    }
    let r = s
        .send(
            "OPTIONS",
            "/api/orders",
            &preflight("https://app.example", "DELETE", ""),
        )
        .await;
    assert_eq!(r.status, 405, "the route does not take DELETE at all");
    assert_eq!(s.upstream.count(), before, "no preflight was forwarded");

    // Real requests: the allowed origin is echoed, on a 401 too.
    let token = s.token(json!({}));
    let auth = format!("Bearer {token}");
    let r = s
        .get(
            "/api/orders",
            &[("origin", "https://app.example"), ("authorization", &auth)],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(r.headers["access-control-expose-headers"], "X-Request-Id");
    assert_eq!(r.headers["vary"], "origin");
    let r = s
        .get("/api/orders", &[("origin", "https://app.example")])
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(
        s.upstream.count(),
        before + 1,
        "only the allowed request went upstream"
    );
    let r = s
        .get(
            "/api/orders",
            &[("origin", "https://evil.example"), ("authorization", &auth)],
        )
        .await;
    assert_eq!(
        r.status, 200,
        "CORS is the browser's check; the token is ours"
    );
    assert!(r.headers.get("access-control-allow-origin").is_none());
}
