//! `allow` rules: conditions over claims combined with `all`, `any`, `not`.
//! Evaluation never fails: a claim of the wrong JSON type simply does not
//! match.

use serde_json::Value;

use super::claim_path::{ClaimPath, Found};

/// A compiled rule.
#[derive(Debug, Clone)]
pub enum Rule {
    All(Vec<Rule>),
    Any(Vec<Rule>),
    Not(Box<Rule>),
    Claim {
        path: ClaimPath,
        op: Op,
    },
    /// The token holds this OAuth scope: `scope` as a space-separated string
    /// (RFC 8693 §4.2, RFC 9068 §2.2.3) or `scp` / `scope` as an array.
    Scope(String),
}

/// A comparison applied to what a claim path found.
#[derive(Debug, Clone)]
pub enum Op {
    /// The claim equals the value (numbers compare by value: 1 == 1.0).
    Equals(Value),
    /// The claim equals one of the values.
    In(Vec<Value>),
    /// The claim is an array holding the value (or the path selected several
    /// nodes and one of them is, or holds, the value).
    Contains(Value),
    /// The claim is present and not null (`true`), or absent (`false`).
    Exists(bool),
}

impl Rule {
    /// Whether `claims` satisfy the rule.
    pub fn eval(&self, claims: &Value) -> bool {
        match self {
            Rule::All(rules) => rules.iter().all(|r| r.eval(claims)),
            Rule::Any(rules) => rules.iter().any(|r| r.eval(claims)),
            Rule::Not(rule) => !rule.eval(claims),
            Rule::Claim { path, op } => op.holds(path.find(claims)),
            Rule::Scope(want) => has_scope(claims, want),
        }
    }
}

impl Op {
    fn holds(&self, found: Found<'_>) -> bool {
        match (self, found) {
            (Op::Exists(want), Found::Nothing) => !want,
            (Op::Exists(want), _) => *want,
            (_, Found::Nothing) => false,
            (Op::Equals(v), Found::One(x)) => json_eq(x, v),
            (Op::In(vs), Found::One(x)) => vs.iter().any(|v| json_eq(x, v)),
            (Op::Contains(v), Found::One(Value::Array(items))) => {
                items.iter().any(|x| json_eq(x, v))
            }
            (Op::Contains(v), Found::Many(nodes)) => nodes.iter().any(|n| match n {
                Value::Array(items) => items.iter().any(|x| json_eq(x, v)),
                other => json_eq(other, v),
            }),
            // Several nodes never "equal" one value; a scalar never "contains".
            _ => false,
        }
    }
}

fn has_scope(claims: &Value, want: &str) -> bool {
    let listed = |v: Option<&Value>| match v {
        Some(Value::String(s)) => s.split(' ').any(|s| s == want),
        Some(Value::Array(a)) => a.iter().any(|s| s.as_str() == Some(want)),
        _ => false,
    };
    listed(claims.get("scope")) || listed(claims.get("scp"))
}

/// JSON equality where numbers compare by value.
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim(path: &str, op: Op) -> Rule {
        Rule::Claim {
            path: ClaimPath::compile(path, &[]).unwrap(),
            op,
        }
    }

    fn claims() -> Value {
        json!({
            "sub": "u1", "user_role": "admin", "level": 3, "roles": ["a", "b"],
            "subscription_level": "gold", "scope": "order inventory",
            "meta": {"region": "eu"}, "flag": null,
            "tenants": {"t1": {"roles": ["admin"]}, "t2": {"roles": ["viewer"]}}
        })
    }

    #[test]
    fn operators_table() {
        let c = claims();
        let cases: Vec<(Rule, bool)> = vec![
            (claim("$.user_role", Op::Equals(json!("admin"))), true),
            (claim("$.user_role", Op::Equals(json!("user"))), false),
            (claim("$.level", Op::Equals(json!(3.0))), true),
            (claim("$.level", Op::Equals(json!("3"))), false),
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
            (claim("$.roles", Op::Contains(json!("b"))), true),
            (claim("$.roles", Op::Contains(json!("c"))), false),
            // Wrong JSON types never panic, simply do not match.
            (claim("$.user_role", Op::Contains(json!("adm"))), false),
            (claim("$.roles", Op::Equals(json!("a"))), false),
            (claim("$.meta", Op::In(vec![json!("eu")])), false),
            (claim("$.missing", Op::Equals(json!(null))), false),
            (claim("$.meta.region", Op::Exists(true)), true),
            (claim("$.flag", Op::Exists(true)), false),
            (claim("$.flag", Op::Exists(false)), true),
            (
                claim("$.tenants.*.roles", Op::Contains(json!("viewer"))),
                true,
            ),
            (
                claim("$.tenants.*.roles", Op::Equals(json!(["admin"]))),
                false,
            ),
            (Rule::Scope("order".into()), true),
            (Rule::Scope("ord".into()), false),
            (Rule::Scope("inventory".into()), true),
        ];
        for (i, (rule, want)) in cases.iter().enumerate() {
            assert_eq!(rule.eval(&c), *want, "case {i}: {rule:?}");
        }
    }

    #[test]
    fn scope_as_array_and_scp() {
        assert!(Rule::Scope("a".into()).eval(&json!({"scp": ["a", "b"]})));
        assert!(Rule::Scope("b".into()).eval(&json!({"scope": ["a", "b"]})));
        assert!(!Rule::Scope("a".into()).eval(&json!({"scope": 7})));
    }

    #[test]
    fn combinators() {
        let c = claims();
        let t = || claim("$.sub", Op::Exists(true));
        let f = || claim("$.nope", Op::Exists(true));
        assert!(Rule::All(vec![t(), t()]).eval(&c));
        assert!(!Rule::All(vec![t(), f()]).eval(&c));
        assert!(Rule::Any(vec![f(), t()]).eval(&c));
        assert!(!Rule::Any(vec![f(), f()]).eval(&c));
        assert!(Rule::Not(Box::new(f())).eval(&c));
        assert!(Rule::All(vec![]).eval(&c), "all of nothing holds");
        assert!(!Rule::Any(vec![]).eval(&c), "any of nothing fails");
    }
}
