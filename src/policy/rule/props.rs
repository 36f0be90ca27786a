use super::*;
use crate::token::Profile;
use http::{HeaderMap, Method};
use proptest::prelude::*;

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-5i64..5).prop_map(Value::from),
        prop_oneof![Just("a"), Just("b"), Just("gold"), Just("x y")].prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![Just("a"), Just("b"), Just("c"), Just("roles"), Just("n")]
                    .prop_map(String::from),
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn leaf() -> impl Strategy<Value = Rule> {
    let path = prop_oneof![
        Just("$.a"),
        Just("$.b.c"),
        Just("$.roles"),
        Just("$.n"),
        Just("$.*.a")
    ]
    .prop_map(|p| ClaimPath::compile(p, &[]).unwrap());
    let levels = Arc::new(vec!["a".to_string(), "b".to_string(), "gold".to_string()]);
    let op = prop_oneof![
        json().prop_map(|v| Op::Equals(Operand::Literal(v))),
        json().prop_map(|v| Op::Contains(Operand::Literal(v))),
        prop::collection::vec(json(), 1..3).prop_map(Op::In),
        prop::collection::vec(json(), 1..3).prop_map(Op::ContainsAny),
        prop::collection::vec(json(), 1..3).prop_map(Op::ContainsAll),
        any::<bool>().prop_map(Op::Exists),
        (-5.0f64..5.0).prop_map(|n| Op::Compare(Cmp::Gte, n)),
        Just(Op::Matches(Regex::new("^(?:[ab].*)$").unwrap())),
        (0usize..3).prop_map(move |rank| Op::AtLeast {
            levels: levels.clone(),
            rank
        }),
    ];
    let names = prop::collection::vec(
        prop_oneof![Just("a"), Just("b"), Just("x")].prop_map(String::from),
        1..3,
    );
    prop_oneof![
        4 => (path, op).prop_map(|(path, op)| Rule::Claim { path, op }),
        1 => names.clone().prop_map(|n| Rule::Role(Need::AnyOf(n))),
        1 => names.clone().prop_map(|n| Rule::Scope(Need::AllOf(n))),
        1 => names.prop_map(|n| Rule::Tenant {
            kind: TenantKind::Roles,
            tenant: TenantFrom::Literal("a".into()),
            need: Need::AnyOf(n),
        }),
    ]
}

fn rule() -> impl Strategy<Value = Rule> {
    leaf().prop_recursive(3, 16, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Rule::All),
            prop::collection::vec(inner.clone(), 0..3).prop_map(Rule::Any),
            inner.prop_map(|r| Rule::Not(Box::new(r))),
        ]
    })
}

fn eval(rule: &Rule, claims: &Value) -> bool {
    let at = ClaimLocations::compile(&Profile::Generic.locations(), &[]).unwrap();
    let headers = HeaderMap::new();
    let request = RequestFacts {
        method: &Method::GET,
        host: "h",
        params: &[],
        headers: &headers,
        client: None,
    };
    rule.eval(&Ctx {
        claims,
        at: &at,
        request: &request,
    })
}

proptest! {
    #[test]
    fn double_negation(r in rule(), c in json()) {
        let nn = Rule::Not(Box::new(Rule::Not(Box::new(r.clone()))));
        prop_assert_eq!(eval(&nn, &c), eval(&r, &c));
    }

    #[test]
    fn singletons(r in rule(), c in json()) {
        let x = eval(&r, &c);
        prop_assert_eq!(eval(&Rule::Any(vec![r.clone()]), &c), x);
        prop_assert_eq!(eval(&Rule::All(vec![r.clone()]), &c), x);
    }

    #[test]
    fn de_morgan_and_commutativity(x in rule(), y in rule(), c in json()) {
        let not = |r: &Rule| Rule::Not(Box::new(r.clone()));
        prop_assert_eq!(
            eval(&not(&Rule::Any(vec![x.clone(), y.clone()])), &c),
            eval(&Rule::All(vec![not(&x), not(&y)]), &c)
        );
        prop_assert_eq!(
            eval(&Rule::All(vec![x.clone(), y.clone()]), &c),
            eval(&Rule::All(vec![y.clone(), x.clone()]), &c)
        );
        prop_assert_eq!(
            eval(&Rule::Any(vec![x.clone(), y.clone()]), &c),
            eval(&Rule::Any(vec![y, x]), &c)
        );
    }

    #[test]
    fn the_trace_agrees_with_the_evaluation(r in rule(), c in json()) {
        let at = ClaimLocations::compile(&Profile::Generic.locations(), &[]).unwrap();
        let headers = HeaderMap::new();
        let request = RequestFacts { method: &Method::GET, host: "h", params: &[], headers: &headers , client: None};
        let ctx = Ctx { claims: &c, at: &at, request: &request };
        let mut steps: Vec<Step> = Vec::new();
        let traced = r.eval_with(&ctx, &mut steps, 0);
        prop_assert_eq!(traced, r.eval(&ctx));
        prop_assert_eq!(steps[0].held, traced);
        prop_assert_eq!(steps[0].depth, 0);
    }
}
