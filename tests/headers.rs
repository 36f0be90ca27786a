//! Claims to headers over real HTTP: encodings, the empty-claims policy,
//! request values, the whole-claims header, and refusing spoofed headers.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::Builder;
use http::StatusCode;
use serde_json::{json, Value};

const POLICY: &str = r#"
issuers:
  test:
    issuer: https://issuer.test
    audience: [api]
    jwks_uri: ${JWKS_URI}
    allow_http: true

upstreams:
  app: ${UPSTREAM}

forward:
  X-User-Id: "{{ $.sub }}"

routes:
  - name: encoded
    match: { path: "/orders/{order_id}" }
    upstream: app
    claims_header: X-Claims
    forward:
      X-Roles-Text: "{{ $.roles }}"
      X-Roles-Json: { value: "{{ $.roles }}", encoding: json }
      X-Roles-Pg: { value: "{{ $.roles }}", encoding: postgres }
      X-Meta: { value: "{{ $.metadata }}", encoding: base64url }
      X-Hasura-User: "{{ $['https://hasura.io/jwt/claims']['x-hasura-user-id'] }}"
      X-Order: "order {{ {order_id} }} for {{ $.sub }} via {{ {header:X-Client} || 'web' }}"
  - name: omit
    match: { path: /omit }
    upstream: app
    forward:
      X-Region: "{{ $.region }}"
  - name: as-empty
    match: { path: /empty }
    upstream: app
    empty_claims: empty
    forward:
      X-Region: "{{ $.region }}"
      X-Team: { value: "{{ $.team }}", empty: null }
  - name: as-null
    match: { path: /null }
    upstream: app
    empty_claims: null
    forward:
      X-Region: "{{ $.region }}"
"#;

#[tokio::test]
async fn arrays_objects_urls_and_request_values_render_as_documented() {
    let s = Builder::new().policy(POLICY).start().await;
    let token = s.token(json!({
        "roles": ["editor", "a b"],
        "metadata": {"region": "eu", "tier": 2},
        "https://hasura.io/jwt/claims": {"x-hasura-user-id": "42"},
        "nsec": {"roles": ["admin"]}
    }));
    let auth = format!("Bearer {token}");
    let resp = s
        .get(
            "/orders/7",
            &[("authorization", &auth), ("x-client", "cli")],
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
    assert_eq!(
        common::last_header(&s, "x-roles-text").as_deref(),
        Some("editor,a b")
    );
    assert_eq!(
        common::last_header(&s, "x-roles-json").as_deref(),
        Some(r#"["editor","a b"]"#)
    );
    assert_eq!(
        common::last_header(&s, "x-roles-pg").as_deref(),
        Some(r#"{editor,"a b"}"#)
    );
    let meta = URL_SAFE_NO_PAD
        .decode(common::last_header(&s, "x-meta").unwrap())
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&meta).unwrap(),
        json!({"region": "eu", "tier": 2})
    );
    assert_eq!(
        common::last_header(&s, "x-hasura-user").as_deref(),
        Some("42")
    );
    assert_eq!(
        common::last_header(&s, "x-order").as_deref(),
        Some("order 7 for user-1 via cli")
    );
    // The whole claim set, untrusted claims removed.
    let all = URL_SAFE_NO_PAD
        .decode(common::last_header(&s, "x-claims").unwrap())
        .unwrap();
    let all: Value = serde_json::from_slice(&all).unwrap();
    assert_eq!(all["sub"], "user-1");
    assert_eq!(all["roles"], json!(["editor", "a b"]));
    assert!(all.get("nsec").is_none(), "{all}");

    // A client cannot send the claims header itself.
    let resp = s
        .get(
            "/orders/8",
            &[("authorization", &auth), ("x_claims", "e30")],
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_ne!(common::last_header(&s, "x-claims").as_deref(), Some("e30"));
}

#[tokio::test]
async fn a_missing_claim_follows_the_empty_claims_policy() {
    let s = Builder::new().policy(POLICY).start().await;
    for token in [
        s.token(json!({})),
        s.token(json!({"region": "", "team": []})),
    ] {
        assert_eq!(
            s.get_with_token("/omit", &token).await.status,
            StatusCode::OK
        );
        assert_eq!(common::last_header(&s, "x-region"), None, "omit");
        assert_eq!(
            s.get_with_token("/empty", &token).await.status,
            StatusCode::OK
        );
        assert_eq!(
            common::last_header(&s, "x-region").as_deref(),
            Some(""),
            "empty"
        );
        assert_eq!(
            common::last_header(&s, "x-team").as_deref(),
            Some("null"),
            "per-header override"
        );
        assert_eq!(
            s.get_with_token("/null", &token).await.status,
            StatusCode::OK
        );
        assert_eq!(
            common::last_header(&s, "x-region").as_deref(),
            Some("null"),
            "null"
        );
    }
    // A present claim is sent under every policy.
    let token = s.token(json!({"region": "eu"}));
    for path in ["/omit", "/empty", "/null"] {
        assert_eq!(s.get_with_token(path, &token).await.status, StatusCode::OK);
        assert_eq!(
            common::last_header(&s, "x-region").as_deref(),
            Some("eu"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_separator_inside_an_element_refuses_rather_than_mangles() {
    let s = Builder::new().policy(POLICY).start().await;
    let token = s.token(json!({"roles": ["a,b"]}));
    let resp = s.get_with_token("/orders/7", &token).await;
    assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    assert_eq!(resp.reason(), "unrenderable_claim");
    assert_eq!(s.upstream.count(), 0);
}

#[tokio::test]
async fn spoofed_headers_can_be_refused_instead_of_stripped() {
    let policy =
        format!("spoofed_headers: refuse\nreserved_header_prefixes: [x-internal-]\n{POLICY}");
    let s = Builder::new().policy(&policy).start().await;
    let token = s.token(json!({}));
    let auth = format!("Bearer {token}");
    for (name, value) in [
        ("X-User-Id", "admin"),
        ("x_user_id", "admin"),
        ("x.user.id", "admin"),
        ("X-Internal-Debug", "1"),
        ("x-claims", "e30"),
    ] {
        let resp = s
            .get("/omit", &[("authorization", &auth), (name, value)])
            .await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{name}");
        assert_eq!(resp.reason(), "spoofed_header", "{name}");
    }
    assert_eq!(s.upstream.count(), 0, "the upstream received something");
    // Forwarding headers from a proxy in front are replaced, not refused.
    let resp = s
        .get(
            "/omit",
            &[("authorization", &auth), ("x-forwarded-for", "10.0.0.1")],
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(
        common::last_header(&s, "x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
}

#[tokio::test]
async fn a_trusted_proxy_extends_the_forwarding_headers_others_are_replaced() {
    let sent = [
        ("x-forwarded-for", "203.0.113.7"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "shop.example.com"),
    ];
    // The tests connect from 127.0.0.1: trusted in the first policy, not in
    // the second, where everything comes from the connection.
    let cases: [(&str, [Option<&str>; 3]); 2] = [
        (
            "trusted_proxies: [127.0.0.0/8, \"10.0.0.0/8\"]",
            [
                Some("203.0.113.7, 127.0.0.1"),
                Some("https"),
                Some("shop.example.com"),
            ],
        ),
        (
            "trusted_proxies: [10.0.0.0/8]",
            // Host: the request's own (the client connects to 127.0.0.1).
            [Some("127.0.0.1"), Some("http"), Some("127.0.0.1")],
        ),
    ];
    for (trust, want) in cases {
        let s = Builder::new()
            .policy(&format!("{trust}\n{POLICY}"))
            .start()
            .await;
        let auth = format!("Bearer {}", s.token(json!({})));
        let mut headers = vec![("authorization", auth.as_str())];
        headers.extend_from_slice(&sent);
        assert_eq!(s.get("/omit", &headers).await.status, StatusCode::OK);
        let got = ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"]
            .map(|h| common::last_header(&s, h));
        assert_eq!(got.each_ref().map(|g| g.as_deref()), want, "{trust}");
    }
}

/// `X-Request-Id`: generated for every request (a client's own is replaced),
/// kept from a trusted proxy; sent upstream, returned to the client, and in
/// a refusal's body.
#[tokio::test]
async fn a_request_id_is_generated_or_kept_from_a_trusted_proxy() {
    for (trust, kept) in [("", false), ("trusted_proxies: [127.0.0.0/8]\n", true)] {
        let s = Builder::new()
            .policy(&format!("{trust}{}", common::POLICY))
            .start()
            .await;
        let auth = format!("Bearer {}", s.token(json!({})));
        let r = s
            .get(
                "/me",
                &[("authorization", &auth), ("x-request-id", "from-the-lb-42")],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let upstream = common::last_header(&s, "x-request-id").unwrap();
        assert_eq!(r.headers["x-request-id"], upstream.as_str());
        if kept {
            assert_eq!(upstream, "from-the-lb-42");
        } else {
            assert_eq!(upstream.len(), 32, "{upstream}");
            assert!(upstream.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        // A refusal carries it too, in the header and the body.
        let r = s.get("/me", &[]).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        let id = r.headers["x-request-id"].to_str().unwrap().to_string();
        assert_eq!(r.json()["request_id"], id.as_str());
    }
}
