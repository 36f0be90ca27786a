use super::*;
use http::{HeaderMap, Method};
use serde_json::json;

fn render_with(t: &str, encoding: Encoding, claims: &Value) -> Result<Option<String>, RenderError> {
    let params = vec!["order_id".to_string()];
    let mut headers = HeaderMap::new();
    headers.insert("x-org", "acme".parse().unwrap());
    let request = RequestFacts {
        method: &Method::GET,
        host: "api.example.com",
        params: &[("order_id", "7".to_string())],
        headers: &headers,
        client: None,
    };
    let r = HeaderTemplate::compile("x-test", t, &["nsec".into()], &params)
        .unwrap()
        .with(encoding, None, false)
        .render(claims, &request)?;
    Ok(match r {
        Rendered::Value(v) => Some(String::from_utf8(v.as_bytes().to_vec()).unwrap()),
        Rendered::Missing => None,
    })
}

fn render(t: &str, claims: &Value) -> Result<Option<String>, RenderError> {
    render_with(t, Encoding::Text, claims)
}

fn claims() -> Value {
    json!({
        "sub": "u1", "given_name": "Ada", "family_name": "Lovelace", "n": 7, "ok": true,
        "roles": ["a", "b"], "meta": {"region": "eu"}, "bad": ["x,y"], "empty": "",
        "none": [], "nested": [["a"], ["b", "c"]], "odd": ["a b", "", "NULL", "q\"x", "c,d"],
        "https://hasura.io/jwt/claims": {"x-hasura-user-id": "42"}
    })
}

#[test]
fn renders_table() {
    let c = claims();
    let cases: &[(&str, Option<&str>)] = &[
        ("{{ $.sub }}", Some("u1")),
        ("{{$.given_name}} {{ $.family_name }}", Some("Ada Lovelace")),
        ("user-{{ $.n }}", Some("user-7")),
        ("{{ $.ok }}", Some("true")),
        ("{{ $.roles }}", Some("a,b")),
        ("{{ $.meta }}", Some(r#"{"region":"eu"}"#)),
        ("{{ $.meta.region || 'global' }}", Some("eu")),
        ("{{ $.meta.zone || 'global' }}", Some("global")),
        ("{{ $.meta.zone || $.sub }}", Some("u1")),
        ("{{ $.missing }}", None),
        // Empty values count as missing.
        ("{{ $.empty }}", None),
        ("{{ $.none || 'no roles' }}", Some("no roles")),
        (
            "{{ $['https://hasura.io/jwt/claims']['x-hasura-user-id'] }}",
            Some("42"),
        ),
        ("{{ $.roles[0] }}", Some("a")),
        ("static", Some("static")),
        // Request values.
        ("order-{{ {order_id} }}", Some("order-7")),
        ("{{{order_id}}}", Some("7")),
        ("{{ {header:X-Org} }}/{{ $.sub }}", Some("acme/u1")),
        (
            "{{ {header:x-missing} || {host} }}",
            Some("api.example.com"),
        ),
        ("{{ {method} }}", Some("GET")),
    ];
    for (t, want) in cases {
        assert_eq!(render(t, &c).unwrap().as_deref(), *want, "{t}");
    }
    assert_eq!(
        render("{{ $.bad }}", &c),
        Err(RenderError::SeparatorInElement("x-test".parse().unwrap()))
    );
}

#[test]
fn every_encoding_is_lossless() {
    let c = claims();
    let cases: &[(&str, Encoding, &str)] = &[
        ("{{ $.roles }}", Encoding::Json, r#"["a","b"]"#),
        ("{{ $.sub }}", Encoding::Json, r#""u1""#),
        ("{{ $.meta }}", Encoding::Json, r#"{"region":"eu"}"#),
        ("{{ $.bad }}", Encoding::Json, r#"["x,y"]"#),
        ("{{ $.roles }}", Encoding::Postgres, "{a,b}"),
        ("{{ $.bad }}", Encoding::Postgres, r#"{"x,y"}"#),
        ("{{ $.nested }}", Encoding::Postgres, "{{a},{b,c}}"),
        (
            "{{ $.odd }}",
            Encoding::Postgres,
            r#"{"a b","","NULL","q\"x","c,d"}"#,
        ),
        ("{{ $.sub }}", Encoding::Postgres, "u1"),
        ("{{ $.meta }}", Encoding::Base64url, "eyJyZWdpb24iOiJldSJ9"),
        ("{{ $.roles }}", Encoding::Base64url, "WyJhIiwiYiJd"),
    ];
    for (t, encoding, want) in cases {
        assert_eq!(
            render_with(t, *encoding, &c).unwrap().as_deref(),
            Some(*want),
            "{t} as {encoding:?}"
        );
    }
    // Base64url decodes back to the claim.
    let b = render_with("{{ $.meta }}", Encoding::Base64url, &c)
        .unwrap()
        .unwrap();
    let back: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(b).unwrap()).unwrap();
    assert_eq!(back, c["meta"]);
}

#[test]
fn refuses_control_characters_and_huge_values() {
    for v in ["a\r\nx-admin: 1", "a\nb", "a\u{0}b", "tab\there"] {
        let c = json!({ "v": v });
        assert!(
            matches!(
                render("{{ $.v }}", &c),
                Err(RenderError::ControlCharacter(_))
            ),
            "{v:?}"
        );
    }
    let c = json!({ "v": "a".repeat(MAX_VALUE_BYTES + 1) });
    assert!(matches!(
        render("{{ $.v }}", &c),
        Err(RenderError::TooLong(_))
    ));
}

#[test]
fn compile_errors() {
    let params = vec!["order_id".to_string()];
    for bad in [
        "{{ $.sub ",
        "{{ }}",
        "{{ 'x' || $.sub }}",
        "{{ $.nsec.roles }}",
        "a }} b",
        "{{ sub }}",
        "{{ {ordr_id} }}",
    ] {
        assert!(
            HeaderTemplate::compile("x", bad, &["nsec".into()], &params).is_err(),
            "{bad}"
        );
    }
    assert!(HeaderTemplate::compile("bad name", "x", &[], &[]).is_err());
}
