//! The policy language over real HTTP: tenant from the path, owner from the
//! path, subscription levels, request headers as tenant keys, and roles a
//! client slipped into `nsec`. Every refusal asserts the status and that the
//! upstream received nothing.

mod common;

use common::{Builder, Stack};
use http::StatusCode;
use serde_json::json;

const POLICY: &str = r#"
levels:
  plan: [free, silver, gold, platinum]

issuers:
  descope:
    profile: descope
    issuer: https://issuer.test
    audience: [api]
    jwks_uri: ${JWKS_URI}
    allow_http: true

upstreams:
  app: ${UPSTREAM}

forward:
  X-User-Id: "{{ $.sub }}"

routes:
  - name: tenant-reports
    match: { path: "/tenants/{tenant}/reports/**" }
    upstream: app
    allow:
      tenant_role: { tenant: "{tenant}", any_of: [admin, analyst] }
  - name: org-by-header
    match: { path: /org/settings }
    upstream: app
    allow:
      tenant_permission: { tenant: "{header:X-Org}", all_of: ["settings:write"] }
  - name: owner
    match: { path: "/users/{user_id}/orders/**" }
    upstream: app
    allow:
      any:
        - role: admin
        - claim: $.sub
          equals: "{user_id}"
  - name: premium
    match: { path: "/premium/**" }
    upstream: app
    allow:
      claim: $.subscription_level
      at_least: gold
      levels: plan
  - name: admin
    match: { path: "/admin/**" }
    upstream: app
    allow:
      role: { any_of: [admin, superadmin] }
"#;

async fn stack() -> Stack {
    Builder::new().policy(POLICY).start().await
}

/// A Descope session token (`drn: DS`) with `extra` claims.
fn session(stack: &Stack, extra: serde_json::Value) -> String {
    let mut c = json!({"drn": "DS"});
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        c[k] = v;
    }
    stack.token(c)
}

/// Sends, and checks the status; a refusal must not reach the upstream.
async fn expect(
    stack: &Stack,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
    want: StatusCode,
) {
    let before = stack.upstream.count();
    let auth = format!("Bearer {token}");
    let mut all = vec![("authorization", auth.as_str())];
    all.extend_from_slice(headers);
    let resp = stack.get(path, &all).await;
    assert_eq!(resp.status, want, "{path}: {}", resp.body);
    let reached = stack.upstream.count() - before;
    if want == StatusCode::OK {
        assert_eq!(reached, 1, "{path}: forwarded once");
    } else {
        assert_eq!(reached, 0, "{path}: the upstream received something");
    }
}

#[tokio::test]
async fn tenant_from_the_path() {
    let s = stack().await;
    let t = session(
        &s,
        json!({"tenants": {"acme": {"roles": ["analyst"]}, "globex": {"roles": ["viewer"]}}}),
    );
    expect(&s, "/tenants/acme/reports/q3", &t, &[], StatusCode::OK).await;
    expect(
        &s,
        "/tenants/globex/reports/q3",
        &t,
        &[],
        StatusCode::FORBIDDEN,
    )
    .await;
    expect(
        &s,
        "/tenants/initech/reports/q3",
        &t,
        &[],
        StatusCode::FORBIDDEN,
    )
    .await;
    // A percent-encoded tenant id is decoded before the lookup: the same
    // tenant, one reading.
    expect(&s, "/tenants/%61cme/reports/q3", &t, &[], StatusCode::OK).await;
}

#[tokio::test]
async fn tenant_from_a_header() {
    let s = stack().await;
    let t = session(
        &s,
        json!({"tenants": {"acme": {"permissions": ["settings:write"]}, "globex": {"permissions": []}}}),
    );
    expect(
        &s,
        "/org/settings",
        &t,
        &[("x-org", "acme")],
        StatusCode::OK,
    )
    .await;
    expect(
        &s,
        "/org/settings",
        &t,
        &[("x-org", "globex")],
        StatusCode::FORBIDDEN,
    )
    .await;
    expect(&s, "/org/settings", &t, &[], StatusCode::FORBIDDEN).await;
    // Two values are no value.
    expect(
        &s,
        "/org/settings",
        &t,
        &[("x-org", "globex"), ("x-org", "acme")],
        StatusCode::FORBIDDEN,
    )
    .await;
}

#[tokio::test]
async fn owner_from_the_path() {
    let s = stack().await;
    let alice = session(&s, json!({"sub": "alice"}));
    expect(&s, "/users/alice/orders/1", &alice, &[], StatusCode::OK).await;
    let seen = s.upstream.last().unwrap();
    assert_eq!(seen.headers["x-user-id"], "alice");
    expect(
        &s,
        "/users/bob/orders/1",
        &alice,
        &[],
        StatusCode::FORBIDDEN,
    )
    .await;
    let admin = session(&s, json!({"sub": "root", "roles": ["admin"]}));
    expect(&s, "/users/bob/orders/1", &admin, &[], StatusCode::OK).await;
}

#[tokio::test]
async fn subscription_levels() {
    let s = stack().await;
    for (level, want) in [
        ("free", StatusCode::FORBIDDEN),
        ("silver", StatusCode::FORBIDDEN),
        ("gold", StatusCode::OK),
        ("platinum", StatusCode::OK),
        ("Gold", StatusCode::FORBIDDEN),
    ] {
        let t = session(&s, json!({"subscription_level": level}));
        expect(&s, "/premium/x", &t, &[], want).await;
    }
    let t = session(&s, json!({"subscription_level": ["gold"]}));
    expect(&s, "/premium/x", &t, &[], StatusCode::FORBIDDEN).await;
}

#[tokio::test]
async fn roles_spoofed_in_nsec_get_403() {
    let s = stack().await;
    // Descope's nsec holds claims the client may set: roles there are never
    // read, at the root or per tenant.
    let spoofed = session(
        &s,
        json!({"roles": [], "nsec": {"roles": ["admin"], "tenants": {"acme": {"roles": ["admin"]}}}}),
    );
    expect(&s, "/admin/users", &spoofed, &[], StatusCode::FORBIDDEN).await;
    expect(
        &s,
        "/tenants/acme/reports/q3",
        &spoofed,
        &[],
        StatusCode::FORBIDDEN,
    )
    .await;
    let real = session(&s, json!({"roles": ["admin"]}));
    expect(&s, "/admin/users", &real, &[], StatusCode::OK).await;
}

#[tokio::test]
async fn descope_refresh_tokens_are_refused() {
    let s = stack().await;
    let refresh = s.token(json!({"drn": "DSR", "roles": ["admin"]}));
    let before = s.upstream.count();
    let resp = s.get_with_token("/admin/users", &refresh).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp.reason(), "wrong_token_type");
    assert_eq!(s.upstream.count(), before);
    let none = s.token(json!({"roles": ["admin"]}));
    let resp = s.get_with_token("/admin/users", &none).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(s.upstream.count(), before);
}

#[tokio::test]
async fn rfc9068_profile_needs_typ_at_jwt() {
    let policy = POLICY.replace("profile: descope", "profile: rfc9068");
    let s = Builder::new().policy(&policy).start().await;
    let claims = common::claims(json!({"roles": ["admin"]}));
    let with_typ = |typ: &str| {
        let header = json!({"alg": "ES256", "typ": typ, "kid": "k1"}).to_string();
        s.key.sign_raw(&header, &claims.to_string())
    };
    for typ in ["at+jwt", "application/at+JWT"] {
        expect(&s, "/admin/users", &with_typ(typ), &[], StatusCode::OK).await;
    }
    for typ in ["JWT", "at+jwt2", ""] {
        let before = s.upstream.count();
        let resp = s.get_with_token("/admin/users", &with_typ(typ)).await;
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "typ {typ:?}");
        assert_eq!(resp.reason(), "wrong_token_type");
        assert_eq!(s.upstream.count(), before);
    }
}

#[tokio::test]
async fn an_issuer_can_refuse_tokens_carrying_untrusted_claims() {
    let policy = POLICY.replace(
        "    profile: descope\n",
        "    profile: descope\n    refuse_untrusted_claims: true\n",
    );
    let s = Builder::new().policy(&policy).start().await;
    let spoofed = session(
        &s,
        json!({"roles": ["admin"], "nsec": {"roles": ["admin"]}}),
    );
    let before = s.upstream.count();
    let resp = s.get_with_token("/admin/users", &spoofed).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp.reason(), "untrusted_claim");
    assert_eq!(s.upstream.count(), before);
    let clean = session(&s, json!({"roles": ["admin"]}));
    expect(&s, "/admin/users", &clean, &[], StatusCode::OK).await;
}
