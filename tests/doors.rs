//! One table of requests through every front door over the decision core —
//! the reverse proxy, forward-auth as nginx and Traefik call it,
//! forward-auth as Envoy's HTTP ext_authz calls it (path prefix), Envoy's
//! gRPC ext_authz (called by grpcio with Envoy's stubs), `explain`, and,
//! for a Hasura route, the Hasura webhook — and the same decision and the
//! same headers come out of each. SECURITY.md rule 21 (only gateways
//! may ask) is tested here too, with nothing reaching the upstream.

mod common;

use std::collections::BTreeMap;

use claimgate::explain::{explain, Case, Credential};
use common::{Builder, Resp, Stack};
use http::{HeaderMap, Method, StatusCode};
use serde_json::json;

/// The default policy plus a Hasura route proxied and as a webhook.
fn policy() -> String {
    format!(
        "{}{}",
        common::POLICY,
        r#"  - name: graphql
    match: { path: /v1/graphql }
    upstream: app
    hasura: {}
  - name: hasura-auth
    match: { path: /hasura/auth, methods: [GET] }
    webhook: hasura
    hasura: {}
"#
    )
}

/// The claimgate headers among `headers`: what the upstream (or gateway)
/// is told about the caller.
fn claim_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    headers
        .iter()
        .filter(|(k, _)| {
            let k = k.as_str();
            matches!(k, "x-user-id" | "x-region" | "x-name" | "x-display")
                || k.starts_with("x-hasura-")
        })
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
        .collect()
}

/// What a door said: status, reason (empty when allowed), headers.
#[derive(Debug, Clone, PartialEq)]
struct Said {
    status: StatusCode,
    reason: String,
    headers: BTreeMap<String, String>,
}

impl Said {
    fn refused(r: &Resp) -> Self {
        Said {
            status: r.status,
            reason: r.reason(),
            headers: BTreeMap::new(),
        }
    }
}

async fn through_proxy(s: &Stack, method: &str, path: &str, headers: &[(&str, &str)]) -> Said {
    let before = s.upstream.count();
    let r = s.send(method, path, headers).await;
    if r.status != StatusCode::OK {
        assert_eq!(s.upstream.count(), before, "refused, yet upstream reached");
        return Said::refused(&r);
    }
    assert_eq!(s.upstream.count(), before + 1);
    Said {
        status: r.status,
        reason: String::new(),
        headers: claim_headers(&s.upstream.last().unwrap().headers),
    }
}

async fn through_forward_auth(
    s: &Stack,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    envoy: bool,
) -> Said {
    let before = s.upstream.count();
    let mut h: Vec<(&str, &str)> = headers.to_vec();
    let r = if envoy {
        // Envoy: original method, prefixed path, original headers.
        let prefixed = format!("/ext_authz{path}");
        s.check(method, &prefixed, &h).await
    } else {
        // nginx auth_request / Traefik: a GET carrying the original.
        h.push(("x-original-method", method));
        h.push(("x-original-uri", path));
        s.check("GET", "/auth", &h).await
    };
    assert_eq!(s.upstream.count(), before, "forward-auth never proxies");
    if r.status != StatusCode::OK {
        return Said::refused(&r);
    }
    assert_eq!(r.body, "");
    Said {
        status: r.status,
        reason: String::new(),
        headers: claim_headers(&r.headers),
    }
}

async fn through_explain(s: &Stack, method: &str, path: &str, headers: &[(&str, &str)]) -> Said {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let case = Case {
        method: Method::from_bytes(method.as_bytes()).unwrap(),
        path: path.to_string(),
        host: "127.0.0.1".into(),
        headers: map,
        credential: Credential::Headers,
    };
    let snapshot = s.running().app.snapshot();
    let x = explain(&snapshot, &case, claimgate::jwks::unix_now()).await;
    let headers: HeaderMap = x
        .headers
        .iter()
        .map(|(k, v)| {
            (
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            )
        })
        .collect();
    Said {
        status: StatusCode::from_u16(x.status).unwrap(),
        reason: x.reason.to_string(),
        headers: if x.status == 200 {
            claim_headers(&headers)
        } else {
            BTreeMap::new()
        },
    }
}

// The gRPC client blocks a thread: the servers need another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_door_gives_the_same_decision_and_headers() {
    let s = Builder::new()
        .policy(&policy())
        .forward_auth(&["127.0.0.0/8"], "/ext_authz")
        .ext_authz(&["127.0.0.0/8"])
        .start()
        .await;
    let gold = format!("Bearer {}", s.gold_token());
    let admin = format!(
        "Bearer {}",
        s.token(json!({"user_role": "admin", "metadata": {"region": "eu"}}))
    );
    let free = format!(
        "Bearer {}",
        s.token(json!({"scope": "order", "subscription_level": "free"}))
    );
    let forged = {
        let t = s.gold_token();
        let (head, _) = t.rsplit_once('.').unwrap();
        format!("Bearer {head}.AAAA")
    };
    let hasura = format!(
        "Bearer {}",
        s.token(json!({"https://hasura.io/jwt/claims": {
            "x-hasura-allowed-roles": ["user", "editor"],
            "x-hasura-default-role": "user",
            "x-hasura-user-id": "u42",
        }}))
    );
    type Headers<'a> = Vec<(&'a str, &'a str)>;
    let cases: Vec<(&str, &str, Headers, StatusCode)> = vec![
        (
            "GET",
            "/orders/7",
            vec![("authorization", &gold)],
            StatusCode::OK,
        ),
        (
            "GET",
            "/orders/7",
            vec![("authorization", &admin)],
            StatusCode::OK,
        ),
        (
            "GET",
            "/orders/7",
            vec![
                ("authorization", &gold),
                ("x-user-id", "spoofed"),
                ("X_Region", "spoofed"),
            ],
            StatusCode::OK,
        ),
        (
            "GET",
            "/orders/7",
            vec![("authorization", &free)],
            StatusCode::FORBIDDEN,
        ),
        ("GET", "/orders/7", vec![], StatusCode::UNAUTHORIZED),
        (
            "GET",
            "/orders/7",
            vec![("authorization", &forged)],
            StatusCode::UNAUTHORIZED,
        ),
        (
            "GET",
            "/orders/7",
            vec![("authorization", &gold), ("authorization", &gold)],
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/orders/7",
            vec![("authorization", &gold)],
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            "GET",
            "/orders/%2e%2e/admin",
            vec![("authorization", &gold)],
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/healthz",
            vec![("x-user-id", "spoofed")],
            StatusCode::OK,
        ),
        ("GET", "/me", vec![("authorization", &gold)], StatusCode::OK),
        (
            "POST",
            "/v1/graphql",
            vec![("authorization", &hasura)],
            StatusCode::OK,
        ),
        (
            "POST",
            "/v1/graphql",
            vec![("authorization", &hasura), ("x-hasura-role", "editor")],
            StatusCode::OK,
        ),
        (
            "POST",
            "/v1/graphql",
            vec![("authorization", &hasura), ("x-hasura-role", "admin")],
            StatusCode::FORBIDDEN,
        ),
    ];
    let mut envoy_cases = Vec::new();
    let mut proxied = Vec::new();
    for (method, path, headers, status) in &cases {
        let what = format!("{method} {path} {headers:?}");
        let proxy = through_proxy(&s, method, path, headers).await;
        // gRPC carries headers as a map: one value per name.
        let names: std::collections::BTreeSet<_> = headers
            .iter()
            .map(|(k, _)| k.to_ascii_lowercase())
            .collect();
        if names.len() == headers.len() {
            let map: serde_json::Map<String, serde_json::Value> = headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), json!(v)))
                .collect();
            envoy_cases
                .push(json!({"method": method, "path": path, "host": "127.0.0.1", "headers": map}));
            proxied.push((what.clone(), proxy.clone()));
        }
        assert_eq!(proxy.status, *status, "proxy: {what}");
        let nginx = through_forward_auth(&s, method, path, headers, false).await;
        assert_eq!(nginx, proxy, "forward-auth (nginx/Traefik): {what}");
        let envoy = through_forward_auth(&s, method, path, headers, true).await;
        assert_eq!(envoy, proxy, "forward-auth (Envoy HTTP): {what}");
        let explained = through_explain(&s, method, path, headers).await;
        assert_eq!(explained, proxy, "explain: {what}");
    }
    let before = s.upstream.count();
    let envoy = common::envoy_checks(&s, &serde_json::Value::Array(envoy_cases));
    assert_eq!(s.upstream.count(), before, "ext_authz never proxies");
    for ((what, proxy), got) in proxied.iter().zip(envoy["results"].as_array().unwrap()) {
        let said = match got["ok"].as_object() {
            Some(ok) => Said {
                status: StatusCode::OK,
                reason: String::new(),
                headers: ok["set"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect(),
            },
            None => {
                let body: serde_json::Value =
                    serde_json::from_str(got["denied"]["body"].as_str().unwrap()).unwrap();
                Said {
                    status: StatusCode::from_u16(got["denied"]["status"].as_u64().unwrap() as u16)
                        .unwrap(),
                    reason: body["reason"].as_str().unwrap().to_string(),
                    headers: BTreeMap::new(),
                }
            }
        };
        assert_eq!(&said, proxy, "ext_authz (gRPC): {what}");
    }
    // The claim headers really are there (the comparison is not empty).
    let said = through_proxy(&s, "GET", "/orders/7", &[("authorization", &gold)]).await;
    assert_eq!(said.headers["x-user-id"], "user-1");
    assert_eq!(said.headers["x-region"], "global");

    // The Hasura webhook: the same session variables as the proxied route.
    for role in [None, Some("editor")] {
        let mut h = vec![("authorization", hasura.as_str())];
        if let Some(r) = role {
            h.push(("x-hasura-role", r));
        }
        let proxied = through_proxy(&s, "POST", "/v1/graphql", &h).await;
        let r = s.get("/hasura/auth", &h).await;
        assert_eq!(r.status, StatusCode::OK);
        let session: BTreeMap<String, String> = serde_json::from_str(&r.body).unwrap();
        // The webhook contract carries the session variables only.
        let mut session_headers = proxied.headers.clone();
        session_headers.retain(|k, _| k.starts_with("x-hasura-"));
        assert_eq!(session, session_headers, "webhook vs proxy, role {role:?}");
        assert_eq!(session["x-hasura-role"], role.unwrap_or("user"));
    }
}

/// Rule 21: a peer that is not a configured gateway cannot choose what is
/// decided: refused before anything is read, however good its token.
#[tokio::test]
async fn a_peer_that_is_not_a_gateway_is_refused() {
    let s = Builder::new()
        .forward_auth(&["10.0.0.0/8"], "")
        .start()
        .await;
    let gold = format!("Bearer {}", s.gold_token());
    let r = s
        .check(
            "GET",
            "/auth",
            &[
                ("authorization", &gold),
                ("x-original-uri", "/orders/7"),
                ("x-original-method", "GET"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.reason(), "untrusted_gateway");
    assert!(r.headers.get("x-user-id").is_none());
    assert_eq!(s.upstream.count(), 0);
    let m = s.admin("GET", "/metrics").await.body;
    assert!(
        m.contains(r#"claimgate_requests_total{decision="denied",route="none"} 1"#),
        "{m}"
    );
}
