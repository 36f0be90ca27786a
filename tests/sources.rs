//! Where tokens come from: bearer, cookie, a header with a prefix, the
//! query string; two tokens are a 400; a source the token's issuer does not
//! list is a 401; the credential does not travel upstream. And the issuer's
//! maximum token lifetime. Every refusal asserts that the upstream received
//! nothing.

mod common;

use common::{Builder, Stack};
use http::StatusCode;
use serde_json::json;

const POLICY: &str = r#"
issuers:
  web:
    issuer: https://issuer.test
    audience: [api]
    jwks_uri: ${JWKS_URI}
    allow_http: true
    token_from: [bearer, "cookie:DS", "header:X-Auth:Token ", "query:access_token"]
    max_lifetime: 1h
  service:
    issuer: https://service.test
    audience: [api]
    jwks_uri: ${JWKS_URI}
    allow_http: true
    # bearer only (the default)

upstreams:
  app: ${UPSTREAM}

forward:
  X-User-Id: "{{ $.sub }}"

routes:
  - name: any
    match: { path: "/**" }
    upstream: app
"#;

async fn stack() -> Stack {
    Builder::new().policy(POLICY).start().await
}

async fn refused(
    s: &Stack,
    path: &str,
    headers: &[(&str, &str)],
    status: StatusCode,
    reason: &str,
) {
    let before = s.upstream.count();
    let resp = s.get(path, headers).await;
    assert_eq!(resp.status, status, "{path} {headers:?}: {}", resp.body);
    assert_eq!(resp.reason(), reason);
    assert_eq!(
        s.upstream.count(),
        before,
        "the upstream received something"
    );
}

#[tokio::test]
async fn a_cookie_token_passes_and_stays_here() {
    let s = stack().await;
    let t = s.token(json!({}));
    let cookie = format!("theme=dark; DS={t}; lang=en");
    let resp = s.get("/x", &[("cookie", &cookie)]).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
    let seen = s.upstream.last().unwrap();
    assert_eq!(seen.headers["x-user-id"], "user-1");
    assert_eq!(seen.headers["cookie"], "theme=dark; lang=en");
}

#[tokio::test]
async fn a_header_token_with_its_prefix() {
    let s = stack().await;
    let t = s.token(json!({}));
    let value = format!("Token {t}");
    let resp = s.get("/x", &[("x-auth", &value)]).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
    assert!(s.upstream.last().unwrap().headers.get("x-auth").is_none());
    // Another scheme in that header is not a token.
    refused(
        &s,
        "/x",
        &[("x-auth", "Basic dXNlcjpwdw==")],
        StatusCode::UNAUTHORIZED,
        "missing_token",
    )
    .await;
}

#[tokio::test]
async fn a_query_token_is_removed_from_the_upstream_url() {
    let s = stack().await;
    let t = s.token(json!({}));
    let resp = s
        .get(&format!("/x?page=2&access_token={t}&sort=asc"), &[])
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.body);
    assert_eq!(
        s.upstream.last().unwrap().path_and_query,
        "/x?page=2&sort=asc"
    );
    let resp = s.get(&format!("/y?access_token={t}"), &[]).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(s.upstream.last().unwrap().path_and_query, "/y");
}

#[tokio::test]
async fn two_tokens_are_a_400() {
    let s = stack().await;
    let t = s.token(json!({}));
    let bearer = format!("Bearer {t}");
    let cookie = format!("DS={t}");
    refused(
        &s,
        "/x",
        &[("authorization", &bearer), ("cookie", &cookie)],
        StatusCode::BAD_REQUEST,
        "multiple_tokens",
    )
    .await;
    let two = format!("DS={t}; DS={t}");
    refused(
        &s,
        "/x",
        &[("cookie", &two)],
        StatusCode::BAD_REQUEST,
        "multiple_tokens",
    )
    .await;
    refused(
        &s,
        &format!("/x?access_token={t}&access_token={t}"),
        &[],
        StatusCode::BAD_REQUEST,
        "multiple_tokens",
    )
    .await;
    refused(
        &s,
        &format!("/x?access_token={t}"),
        &[("authorization", &bearer)],
        StatusCode::BAD_REQUEST,
        "multiple_tokens",
    )
    .await;
}

#[tokio::test]
async fn a_source_the_issuer_does_not_list_is_refused() {
    let s = stack().await;
    // The service issuer takes bearer tokens only.
    let t = s.token(json!({"iss": "https://service.test"}));
    let bearer = format!("Bearer {t}");
    assert_eq!(
        s.get("/x", &[("authorization", &bearer)]).await.status,
        StatusCode::OK
    );
    let cookie = format!("DS={t}");
    refused(
        &s,
        "/x",
        &[("cookie", &cookie)],
        StatusCode::UNAUTHORIZED,
        "token_source_not_allowed",
    )
    .await;
    refused(
        &s,
        &format!("/x?access_token={t}"),
        &[],
        StatusCode::UNAUTHORIZED,
        "token_source_not_allowed",
    )
    .await;
    // Also when the token is already in the verified-token cache.
    refused(
        &s,
        "/x",
        &[("cookie", &cookie)],
        StatusCode::UNAUTHORIZED,
        "token_source_not_allowed",
    )
    .await;
}

#[tokio::test]
async fn max_lifetime_bounds_exp_minus_iat() {
    let s = stack().await;
    let now = claimgate::jwks::unix_now();
    let ok = s.token(json!({"iat": now, "exp": now + 3600}));
    assert_eq!(s.get_with_token("/x", &ok).await.status, StatusCode::OK);
    let long = s.token(json!({"iat": now, "exp": now + 3601}));
    let bearer = format!("Bearer {long}");
    refused(
        &s,
        "/x",
        &[("authorization", &bearer)],
        StatusCode::UNAUTHORIZED,
        "lifetime_too_long",
    )
    .await;
    let no_iat = s.key.sign(&common::without("iat"));
    let bearer = format!("Bearer {no_iat}");
    refused(
        &s,
        "/x",
        &[("authorization", &bearer)],
        StatusCode::UNAUTHORIZED,
        "missing_claim",
    )
    .await;
}
