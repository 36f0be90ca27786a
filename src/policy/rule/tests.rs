use super::*;
use crate::token::Profile;
use http::{HeaderMap, HeaderName, Method};
use serde_json::json;

fn claim(path: &str, op: Op) -> Rule {
    Rule::Claim {
        path: ClaimPath::compile(path, &[]).unwrap(),
        op,
    }
}

fn lit(v: Value) -> Operand {
    Operand::Literal(v)
}

fn any_of(names: &[&str]) -> Need {
    Need::AnyOf(names.iter().map(|s| s.to_string()).collect())
}

fn all_of(names: &[&str]) -> Need {
    Need::AllOf(names.iter().map(|s| s.to_string()).collect())
}

fn claims() -> Value {
    json!({
        "sub": "u1", "user_role": "admin", "level": 3, "roles": ["a", "b"],
        "permissions": ["orders:read"], "user_id": 42, "email": "ada@example.com",
        "subscription_level": "gold", "scope": "order inventory",
        "meta": {"region": "eu"}, "flag": null, "dct": "t2",
        "tenants": {"t1": {"roles": ["admin"], "permissions": ["reports:read"]},
                    "t2": {"roles": ["viewer"]}, "bad": {"roles": "admin"}}
    })
}

struct Env {
    at: ClaimLocations,
    headers: HeaderMap,
    params: Vec<(&'static str, String)>,
}

impl Env {
    fn new() -> Self {
        let mut headers = HeaderMap::new();
        headers.insert("x-tenant", "t1".parse().unwrap());
        headers.append("x-twice", "a".parse().unwrap());
        headers.append("x-twice", "a".parse().unwrap());
        Self {
            at: ClaimLocations::compile(&Profile::Generic.locations(), &[]).unwrap(),
            headers,
            params: vec![("tenant", "t1".into()), ("owner", "42".into())],
        }
    }

    fn eval(&self, rule: &Rule, claims: &Value) -> bool {
        let request = RequestFacts {
            method: &Method::GET,
            host: "api.example.com",
            params: &self.params,
            headers: &self.headers,
            client: None,
        };
        rule.eval(&Ctx {
            claims,
            at: &self.at,
            request: &request,
        })
    }
}

fn param(index: usize, name: &str) -> RequestValue {
    RequestValue::Param {
        index,
        name: name.into(),
    }
}

fn levels() -> Arc<Vec<String>> {
    Arc::new(
        ["free", "silver", "gold", "platinum"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    )
}

#[test]
fn operators_table() {
    let env = Env::new();
    let c = claims();
    let re = |r: &str| Op::Matches(Regex::new(&format!("^(?:{r})$")).unwrap());
    let cases: Vec<(Rule, bool)> = vec![
        (claim("$.user_role", Op::Equals(lit(json!("admin")))), true),
        (claim("$.user_role", Op::Equals(lit(json!("user")))), false),
        (claim("$.level", Op::Equals(lit(json!(3.0)))), true),
        (claim("$.level", Op::Equals(lit(json!("3")))), false),
        (
            claim(
                "$.subscription_level",
                Op::In(vec![json!("gold"), json!("platinum")]),
            ),
            true,
        ),
        (
            claim("$.subscription_level", Op::In(vec![json!("free")])),
            false,
        ),
        (claim("$.roles", Op::Contains(lit(json!("b")))), true),
        (claim("$.roles", Op::Contains(lit(json!("c")))), false),
        (
            claim("$.roles", Op::ContainsAny(vec![json!("x"), json!("a")])),
            true,
        ),
        (
            claim("$.roles", Op::ContainsAny(vec![json!("x"), json!("y")])),
            false,
        ),
        (
            claim("$.roles", Op::ContainsAll(vec![json!("a"), json!("b")])),
            true,
        ),
        (
            claim("$.roles", Op::ContainsAll(vec![json!("a"), json!("x")])),
            false,
        ),
        (claim("$.email", re(r"[^@]+@example\.com")), true),
        // Anchored: a match inside the string is not enough.
        (claim("$.email", re(r"example\.com")), false),
        (claim("$.level", Op::Compare(Cmp::Gt, 2.0)), true),
        (claim("$.level", Op::Compare(Cmp::Gt, 3.0)), false),
        (claim("$.level", Op::Compare(Cmp::Gte, 3.0)), true),
        (claim("$.level", Op::Compare(Cmp::Lt, 3.5)), true),
        (claim("$.level", Op::Compare(Cmp::Lte, 2.0)), false),
        (
            claim(
                "$.subscription_level",
                Op::AtLeast {
                    levels: levels(),
                    rank: 2,
                },
            ),
            true,
        ),
        (
            claim(
                "$.subscription_level",
                Op::AtLeast {
                    levels: levels(),
                    rank: 3,
                },
            ),
            false,
        ),
        (claim("$.meta.region", Op::Exists(true)), true),
        (claim("$.flag", Op::Exists(true)), false),
        (claim("$.flag", Op::Exists(false)), true),
        (
            claim("$.tenants.*.roles", Op::Contains(lit(json!("viewer")))),
            true,
        ),
        (
            claim("$.tenants.*.roles", Op::Equals(lit(json!(["admin"])))),
            false,
        ),
    ];
    for (i, (rule, want)) in cases.iter().enumerate() {
        assert_eq!(env.eval(rule, &c), *want, "case {i}: {}", rule.describe());
    }
}

#[test]
fn wrong_json_types_never_match_and_never_panic() {
    let env = Env::new();
    let c = claims();
    let ops = || {
        vec![
            Op::Equals(lit(json!("a"))),
            Op::In(vec![json!("a")]),
            Op::Contains(lit(json!("adm"))),
            Op::ContainsAny(vec![json!("a")]),
            Op::ContainsAll(vec![json!("a")]),
            Op::Matches(Regex::new("^(?:.*)$").unwrap()),
            Op::Compare(Cmp::Gte, 0.0),
            Op::AtLeast {
                levels: levels(),
                rank: 0,
            },
            Op::Equals(Operand::Request(param(0, "tenant"))),
        ]
    };
    // A string where an array is expected, an array where a string or
    // number is, an object, a bool.
    for path in ["$.user_role", "$.roles", "$.meta", "$.flag", "$.missing"] {
        for op in ops() {
            let rule = claim(path, op);
            let _ = env.eval(&rule, &c);
        }
    }
    let odd = json!({"user_role": true, "roles": "a", "meta": [1, 2], "level": "3"});
    assert!(!env.eval(&claim("$.roles", Op::Contains(lit(json!("a")))), &odd));
    assert!(!env.eval(&claim("$.level", Op::Compare(Cmp::Gte, 0.0)), &odd));
    assert!(!env.eval(
        &claim("$.meta", Op::Matches(Regex::new(".*").unwrap())),
        &odd
    ));
    assert!(!env.eval(&Rule::Role(any_of(&["a"])), &json!({"roles": {"a": 1}})));
    assert!(!env.eval(&Rule::Scope(any_of(&["a"])), &json!({"scope": 7})));
}

#[test]
fn request_values_compare_with_claims() {
    let env = Env::new();
    let c = claims();
    let owner = Operand::Request(param(1, "owner"));
    // `"42"` from the path equals the integer claim 42...
    assert!(env.eval(&claim("$.user_id", Op::Equals(owner.clone())), &c));
    // ...but never a different one, or a non-integer.
    assert!(!env.eval(&claim("$.level", Op::Equals(owner.clone())), &c));
    assert!(!env.eval(
        &claim("$.user_id", Op::Equals(owner)),
        &json!({"user_id": 42.5})
    ));
    let tenant = Operand::Request(param(0, "tenant"));
    assert!(env.eval(
        &claim("$.tenant_ids", Op::Contains(tenant.clone())),
        &json!({"tenant_ids": ["t0", "t1"]})
    ));
    let header = Operand::Request(RequestValue::Header(HeaderName::from_static("x-tenant")));
    assert!(env.eval(&claim("$.home", Op::Equals(header)), &json!({"home": "t1"})));
    // A repeated header is no value at all.
    let twice = Operand::Request(RequestValue::Header(HeaderName::from_static("x-twice")));
    assert!(!env.eval(&claim("$.x", Op::Equals(twice)), &json!({"x": "a"})));
    let host = Operand::Request(RequestValue::Host);
    assert!(env.eval(
        &claim("$.aud", Op::Equals(host)),
        &json!({"aud": "api.example.com"})
    ));
    let method = Operand::Request(RequestValue::Method);
    assert!(env.eval(&claim("$.m", Op::Contains(method)), &json!({"m": ["GET"]})));
}

#[test]
fn shorthands_read_the_profile_locations() {
    let env = Env::new();
    let c = claims();
    let cases: Vec<(Rule, bool)> = vec![
        (Rule::Role(any_of(&["b"])), true),
        (Rule::Role(any_of(&["x", "a"])), true),
        (Rule::Role(all_of(&["a", "b"])), true),
        (Rule::Role(all_of(&["a", "x"])), false),
        (Rule::Permission(any_of(&["orders:read"])), true),
        (Rule::Permission(any_of(&["orders:write"])), false),
        (Rule::Scope(any_of(&["order"])), true),
        (Rule::Scope(any_of(&["ord"])), false),
        (Rule::Scope(all_of(&["order", "inventory"])), true),
    ];
    for (i, (rule, want)) in cases.iter().enumerate() {
        assert_eq!(env.eval(rule, &c), *want, "case {i}: {}", rule.describe());
    }
    assert!(env.eval(&Rule::Scope(any_of(&["a"])), &json!({"scp": ["a", "b"]})));
    assert!(env.eval(&Rule::Scope(any_of(&["b"])), &json!({"scope": ["a", "b"]})));
    // A single string role is one role, not a space-separated list.
    assert!(!env.eval(&Rule::Role(any_of(&["a"])), &json!({"roles": "a b"})));
}

#[test]
fn tenant_rules_look_the_tenant_up_directly() {
    let env = Env::new();
    let c = claims();
    let tenant_role = |tenant: TenantFrom, need: Need| Rule::Tenant {
        kind: TenantKind::Roles,
        tenant,
        need,
    };
    let from_path = || TenantFrom::Request(param(0, "tenant"));
    assert!(env.eval(&tenant_role(from_path(), any_of(&["admin", "analyst"])), &c));
    assert!(!env.eval(&tenant_role(from_path(), any_of(&["viewer"])), &c));
    // Admin in t1 says nothing of t2, the current tenant.
    assert!(!env.eval(&tenant_role(TenantFrom::Current, any_of(&["admin"])), &c));
    assert!(env.eval(&tenant_role(TenantFrom::Current, any_of(&["viewer"])), &c));
    let header = TenantFrom::Request(RequestValue::Header(HeaderName::from_static("x-tenant")));
    assert!(env.eval(&tenant_role(header, any_of(&["admin"])), &c));
    assert!(!env.eval(
        &tenant_role(TenantFrom::Literal("nope".into()), any_of(&["admin"])),
        &c
    ));
    // A string where the roles array should be: one role, as at the root.
    assert!(env.eval(
        &tenant_role(TenantFrom::Literal("bad".into()), any_of(&["admin"])),
        &c
    ));
    let perm = Rule::Tenant {
        kind: TenantKind::Permissions,
        tenant: from_path(),
        need: any_of(&["reports:read"]),
    };
    assert!(env.eval(&perm, &c));
    // Request text is only ever a key: a tenant id that looks like a
    // JSONPath or a wildcard finds nothing.
    let env2 = Env {
        params: vec![("tenant", "*".into()), ("owner", "x".into())],
        ..Env::new()
    };
    assert!(!env2.eval(&tenant_role(from_path(), any_of(&["admin", "viewer"])), &c));
    let env3 = Env {
        params: vec![("tenant", "t1'].roles['".into()), ("owner", "x".into())],
        ..Env::new()
    };
    assert!(!env3.eval(&tenant_role(from_path(), any_of(&["admin"])), &c));
}

#[test]
fn combinators() {
    let env = Env::new();
    let c = claims();
    let t = || claim("$.sub", Op::Exists(true));
    let f = || claim("$.nope", Op::Exists(true));
    assert!(env.eval(&Rule::All(vec![t(), t()]), &c));
    assert!(!env.eval(&Rule::All(vec![t(), f()]), &c));
    assert!(env.eval(&Rule::Any(vec![f(), t()]), &c));
    assert!(!env.eval(&Rule::Any(vec![f(), f()]), &c));
    assert!(env.eval(&Rule::Not(Box::new(f())), &c));
    assert!(env.eval(&Rule::All(vec![]), &c), "all of nothing holds");
    assert!(!env.eval(&Rule::Any(vec![]), &c), "any of nothing fails");
}

#[test]
fn request_value_syntax() {
    let params = vec!["tenant".to_string()];
    assert_eq!(RequestValue::parse("admin", &params), Ok(None));
    assert_eq!(
        RequestValue::parse("{tenant}", &params),
        Ok(Some(param(0, "tenant")))
    );
    assert_eq!(
        RequestValue::parse("{host}", &params),
        Ok(Some(RequestValue::Host))
    );
    assert_eq!(
        RequestValue::parse("{header:X-Org}", &params),
        Ok(Some(RequestValue::Header(HeaderName::from_static("x-org"))))
    );
    let err = RequestValue::parse("{tenat}", &params).unwrap_err();
    assert!(err.contains("tenant"), "{err}");
    assert!(RequestValue::parse("{header:bad name}", &params).is_err());
}

#[test]
fn trace_records_each_step_with_what_it_found() {
    let env = Env::new();
    let c = claims();
    let rule = Rule::Any(vec![
        claim("$.user_role", Op::Equals(lit(json!("root")))),
        Rule::All(vec![
            Rule::Scope(any_of(&["order"])),
            claim("$.subscription_level", Op::In(vec![json!("gold")])),
        ]),
    ]);
    let request = RequestFacts {
        method: &Method::GET,
        host: "h",
        params: &env.params,
        headers: &env.headers,
        client: None,
    };
    let ctx = Ctx {
        claims: &c,
        at: &env.at,
        request: &request,
    };
    let mut steps: Vec<Step> = Vec::new();
    assert!(rule.eval_with(&ctx, &mut steps, 0));
    let lines: Vec<(usize, &str, bool, Option<&str>)> = steps
        .iter()
        .map(|s| (s.depth, s.rule.as_str(), s.held, s.found.as_deref()))
        .collect();
    assert_eq!(
        lines,
        vec![
            (0, "any of 2", true, None),
            (
                1,
                "claim $.user_role equals \"root\"",
                false,
                Some("found \"admin\"")
            ),
            (1, "all of 2", true, None),
            (
                2,
                "scope \"order\"",
                true,
                Some("found [\"order\", \"inventory\"]")
            ),
            (
                2,
                "claim $.subscription_level in [\"gold\"]",
                true,
                Some("found \"gold\"")
            ),
        ]
    );
}
