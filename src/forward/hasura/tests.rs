use super::*;
use serde_json::json;

fn namespace() -> Hasura {
    Hasura {
        format: ClaimsFormat::Json,
        source: SessionSource::Namespace(
            ClaimPath::compile("$['https://hasura.io/jwt/claims']", &[]).unwrap(),
        ),
        admin_secret: Some(Secret(HeaderValue::from_static("s3cret"))),
    }
}

fn claims() -> Value {
    json!({"sub": "u1", "https://hasura.io/jwt/claims": {
        "x-hasura-allowed-roles": ["user", "editor"],
        "x-hasura-default-role": "user",
        "X-Hasura-User-Id": "u1",
        "x-hasura-org-ids": ["o1", "o 2"],
        "not-hasura": "dropped"
    }})
}

fn names(h: &[(HeaderName, HeaderValue)]) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
        .collect()
}

#[test]
fn role_selection_follows_hasura() {
    let h = namespace();
    let c = claims();
    let role = |requested| h.session(&c, requested).map(|hs| names(&hs)[0].1.clone());
    assert_eq!(role(None), Ok("user".into()), "absent: the default");
    assert_eq!(role(Some("editor")), Ok("editor".into()), "allowed");
    assert_eq!(role(Some("admin")), Err(HasuraError::RoleNotAllowed));
    let no_default = json!({"https://hasura.io/jwt/claims": {"x-hasura-allowed-roles": ["user"]}});
    assert_eq!(
        h.session(&no_default, None).unwrap_err(),
        HasuraError::NoDefaultRole
    );
    let bad_default = json!({"https://hasura.io/jwt/claims": {
        "x-hasura-allowed-roles": ["user"], "x-hasura-default-role": "admin"}});
    assert_eq!(
        h.session(&bad_default, None).unwrap_err(),
        HasuraError::NoDefaultRole
    );
    assert_eq!(
        h.session(&json!({}), None).unwrap_err(),
        HasuraError::NoAllowedRoles
    );
    // Hasura's string form of the allowed roles.
    let pg = json!({"https://hasura.io/jwt/claims": {
        "x-hasura-allowed-roles": "{user,editor}", "x-hasura-default-role": "user"}});
    assert_eq!(
        names(&h.session(&pg, Some("editor")).unwrap())[0].1,
        "editor"
    );
}

#[test]
fn session_variables_and_the_admin_secret() {
    let h = namespace();
    let got = names(&h.session(&claims(), None).unwrap());
    assert_eq!(
        got,
        vec![
            ("x-hasura-role".to_string(), "user".to_string()),
            ("x-hasura-user-id".to_string(), "u1".to_string()),
            ("x-hasura-org-ids".to_string(), r#"{o1,"o 2"}"#.to_string()),
            ("x-hasura-admin-secret".to_string(), "s3cret".to_string()),
        ]
    );
    assert_eq!(format!("{:?}", h.admin_secret), "Some((secret))");
}

/// Hasura's `claims_format: stringified_json`: the namespace claim is a
/// string holding the object; the same session comes out. A malformed
/// or duplicate-member string has no session (no allowed roles).
#[test]
fn a_stringified_namespace_gives_the_same_session() {
    let mut h = namespace();
    let ns = "https://hasura.io/jwt/claims";
    let mut stringified = claims();
    stringified[ns] = json!(claims()[ns].to_string());
    // As JSON (the default) a string namespace has no session.
    assert_eq!(
        h.session(&stringified, None),
        Err(HasuraError::NoAllowedRoles)
    );
    h.format = ClaimsFormat::StringifiedJson;
    let want = names(&namespace().session(&claims(), None).unwrap());
    assert_eq!(names(&h.session(&stringified, None).unwrap()), want);
    for bad in [
        "{not json",
        r#"{"x-hasura-allowed-roles":["user"],"x-hasura-default-role":"user","x-hasura-default-role":"admin"}"#,
        "[1,2]",
    ] {
        stringified[ns] = json!(bad);
        assert_eq!(
            h.session(&stringified, None),
            Err(HasuraError::NoAllowedRoles),
            "{bad}"
        );
    }
}

#[test]
fn a_claims_map_picks_variables_by_path() {
    let h = Hasura {
        format: ClaimsFormat::Json,
        source: SessionSource::Map(vec![
            (
                "x-hasura-user-id".into(),
                ClaimPath::compile("$.sub", &[]).unwrap(),
            ),
            (
                "x-hasura-allowed-roles".into(),
                ClaimPath::compile("$.roles", &[]).unwrap(),
            ),
            (
                "x-hasura-default-role".into(),
                ClaimPath::compile("$.roles[0]", &[]).unwrap(),
            ),
        ]),
        admin_secret: None,
    };
    let c = json!({"sub": "u9", "roles": ["viewer", "editor"]});
    assert_eq!(
        names(&h.session(&c, None).unwrap()),
        vec![
            ("x-hasura-role".to_string(), "viewer".to_string()),
            ("x-hasura-user-id".to_string(), "u9".to_string()),
        ]
    );
    let bad = json!({"sub": "u9\r\nx: y", "roles": ["viewer"]});
    assert!(matches!(
        h.session(&bad, None),
        Err(HasuraError::BadValue(_))
    ));
}

#[test]
fn the_requested_role_header_is_taken_out() {
    let mut h = http::HeaderMap::new();
    assert_eq!(take_requested_role(&mut h), Ok(None));
    h.insert("x-hasura-role", "editor".parse().unwrap());
    assert_eq!(take_requested_role(&mut h), Ok(Some("editor".into())));
    assert!(h.is_empty());
    h.append("x-hasura-role", "a".parse().unwrap());
    h.append("x-hasura-role", "b".parse().unwrap());
    assert_eq!(take_requested_role(&mut h), Err(HasuraError::BadRoleHeader));
    assert!(h.is_empty());
}
