//! claimgate in front of Hasura, and as Hasura's auth webhook: role
//! selection as Hasura does it, session variables, the admin secret, and
//! no client-sent X-Hasura-* header ever reaching Hasura.

mod common;

use common::{Builder, Stack};
use http::StatusCode;
use serde_json::{json, Value};

fn policy(secret_file: &std::path::Path) -> String {
    format!(
        r#"
issuers:
  test:
    issuer: https://issuer.test
    audience: [api]
    jwks_uri: ${{JWKS_URI}}
    allow_http: true
upstreams:
  hasura: ${{UPSTREAM}}
routes:
  - name: graphql
    match: {{ path: /v1/graphql }}
    upstream: hasura
    hasura:
      admin_secret: {{ file: {secret} }}
  - name: mapped
    match: {{ path: /v2/graphql }}
    upstream: hasura
    hasura:
      claims_map:
        x-hasura-user-id: $.sub
        x-hasura-allowed-roles: $.roles
        x-hasura-default-role: $.roles[0]
  - name: hasura-auth
    match: {{ path: /hasura/auth, methods: [GET] }}
    webhook: hasura
    hasura:
      admin_secret: {{ file: {secret} }}
"#,
        secret = secret_file.display()
    )
}

const SECRET: &str = "hasura-admin-secret-value";

async fn stack() -> (Stack, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("admin-secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    (Builder::new().policy(&policy(&secret)).start().await, dir)
}

fn session_token(s: &Stack) -> String {
    s.token(json!({"https://hasura.io/jwt/claims": {
        "x-hasura-allowed-roles": ["user", "editor"],
        "x-hasura-default-role": "user",
        "x-hasura-user-id": "u42",
        "x-hasura-org-ids": ["o1", "o2"]
    }}))
}

#[tokio::test]
async fn role_selection_session_variables_and_the_admin_secret() {
    let (s, _dir) = stack().await;
    let token = session_token(&s);
    let auth = format!("Bearer {token}");

    // No role asked for: the default.
    let r = s.get("/v1/graphql", &[("authorization", &auth)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        common::last_header(&s, "x-hasura-role").as_deref(),
        Some("user")
    );
    assert_eq!(
        common::last_header(&s, "x-hasura-user-id").as_deref(),
        Some("u42")
    );
    assert_eq!(
        common::last_header(&s, "x-hasura-org-ids").as_deref(),
        Some("{o1,o2}")
    );
    assert_eq!(
        common::last_header(&s, "x-hasura-admin-secret").as_deref(),
        Some(SECRET)
    );
    assert_eq!(common::last_header(&s, "authorization"), None);

    // An allowed role asked for: granted.
    let r = s
        .get(
            "/v1/graphql",
            &[("authorization", &auth), ("x-hasura-role", "editor")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        common::last_header(&s, "x-hasura-role").as_deref(),
        Some("editor")
    );

    // A role not allowed: 403, nothing reaches Hasura.
    let before = s.upstream.count();
    let r = s
        .get(
            "/v1/graphql",
            &[("authorization", &auth), ("x-hasura-role", "admin")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.reason(), "hasura_role_not_allowed");
    assert_eq!(s.upstream.count(), before);

    // Client-sent session headers and a guessed admin secret never pass.
    let r = s
        .get(
            "/v1/graphql",
            &[
                ("authorization", &auth),
                ("x-hasura-user-id", "u1"),
                ("X_Hasura_Admin_Secret", "guess"),
                ("x.hasura.org.ids", "{o9}"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        common::last_header(&s, "x-hasura-user-id").as_deref(),
        Some("u42")
    );
    assert_eq!(
        common::last_header(&s, "x-hasura-admin-secret").as_deref(),
        Some(SECRET)
    );
    assert_eq!(
        common::last_header(&s, "x-hasura-org-ids").as_deref(),
        Some("{o1,o2}")
    );
    let last = s.upstream.last().unwrap();
    assert!(last.headers.get("x_hasura_admin_secret").is_none());
    assert!(last.headers.get("x.hasura.org.ids").is_none());

    // A token without Hasura claims: 403.
    let plain = s.token(json!({}));
    let r = s.get_with_token("/v1/graphql", &plain).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.reason(), "hasura_no_allowed_roles");

    // The admin secret shows nowhere else.
    for path in ["/admin/config", "/metrics"] {
        assert!(!s.admin("GET", path).await.body.contains(SECRET), "{path}");
    }
}

#[tokio::test]
async fn a_claims_map_picks_session_variables_from_any_claims() {
    let (s, _dir) = stack().await;
    let token = s.token(json!({"roles": ["viewer", "editor"]}));
    let r = s.get_with_token("/v2/graphql", &token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        common::last_header(&s, "x-hasura-role").as_deref(),
        Some("viewer")
    );
    assert_eq!(
        common::last_header(&s, "x-hasura-user-id").as_deref(),
        Some("user-1")
    );
    assert_eq!(
        common::last_header(&s, "x-hasura-admin-secret"),
        None,
        "no secret configured"
    );
}

#[tokio::test]
async fn the_auth_webhook_answers_200_with_the_session_or_401() {
    let (s, _dir) = stack().await;
    let token = session_token(&s);
    let auth = format!("Bearer {token}");
    let r = s.get("/hasura/auth", &[("authorization", &auth)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.json(),
        json!({"x-hasura-role": "user", "x-hasura-user-id": "u42", "x-hasura-org-ids": "{o1,o2}"})
    );
    let r = s
        .get(
            "/hasura/auth",
            &[("authorization", &auth), ("x-hasura-role", "editor")],
        )
        .await;
    assert_eq!(r.json()["x-hasura-role"], "editor");
    // Not allowed, no token, a bad token: 401, Hasura's "deny".
    for headers in [
        vec![("authorization", auth.as_str()), ("x-hasura-role", "admin")],
        vec![],
        vec![("authorization", "Bearer not.a.token")],
    ] {
        let r = s.get("/hasura/auth", &headers).await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "{headers:?}: {}",
            r.body
        );
        assert!(r.json()["reason"].is_string());
    }
    // The webhook never proxies anything.
    assert_eq!(s.upstream.count(), 0);
    let body: Value = r_json(&s, &auth).await;
    assert!(body.get("x-hasura-admin-secret").is_none());
}

async fn r_json(s: &Stack, auth: &str) -> Value {
    s.get("/hasura/auth", &[("authorization", auth)])
        .await
        .json()
}
