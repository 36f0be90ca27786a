use super::*;

fn route(
    name: &str,
    template: &str,
    methods: Option<&[&str]>,
    host: Option<&str>,
) -> (Vec<Segment>, Arc<Route>) {
    let segs = parse_template(template).unwrap();
    let params = param_names(&segs);
    let r = Route {
        name: name.into(),
        template: template.into(),
        methods: methods.map(|m| m.iter().map(|m| m.parse().unwrap()).collect()),
        host: host.map(str::to_string),
        target: Target::Upstream(Arc::new(
            Upstream::parse("u", "http://127.0.0.1:1").unwrap(),
        )),
        public: false,
        issuers: None,
        allow: None,
        forward: vec![],
        pass_authorization: false,
        trust_rewrite_headers: false,
        empty_claims: Empty::Omit,
        claims_header: None,
        hasura: None,
        params,
        rate_limits: Vec::new(),
        websocket_outlives_token: false,
        cors: None,
    };
    (segs, Arc::new(r))
}

/// (name, template, methods, host)
type Spec<'a> = (&'a str, &'a str, Option<&'a [&'a str]>, Option<&'a str>);

fn router(routes: &[Spec]) -> Router {
    let mut r = Router::default();
    for (name, t, m, h) in routes {
        let (segs, route) = route(name, t, *m, *h);
        r.insert(&segs, route).unwrap();
    }
    r
}

fn find(
    r: &Router,
    host: &str,
    method: &str,
    path: &str,
) -> Option<(String, Vec<(String, String)>)> {
    let segs = crate::policy::path::canonical_segments(path).unwrap();
    r.find(host, &method.parse().unwrap(), &segs).map(|m| {
        (
            m.route.name.clone(),
            m.params
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    })
}

#[test]
fn most_specific_wins() {
    let r = router(&[
        ("any-order", "/orders/{id}", None, None),
        ("mine", "/orders/mine", None, None),
        ("static", "/static/**", None, None),
        (
            "reports",
            "/tenants/{tenant}/reports/**",
            Some(&["GET"]),
            None,
        ),
        ("root", "/", None, None),
        ("admin-host", "/orders/{id}", None, Some("admin.example")),
    ]);
    let p = |k: &str, v: &str| (k.to_string(), v.to_string());
    assert_eq!(
        find(&r, "x", "GET", "/orders/7"),
        Some(("any-order".into(), vec![p("id", "7")]))
    );
    assert_eq!(
        find(&r, "admin.example", "GET", "/orders/7"),
        Some(("admin-host".into(), vec![p("id", "7")]))
    );
    assert_eq!(
        find(&r, "x", "GET", "/orders/mine"),
        Some(("mine".into(), vec![]))
    );
    assert_eq!(
        find(&r, "x", "GET", "/static/a/b.css").map(|m| m.0),
        Some("static".into())
    );
    assert_eq!(
        find(&r, "x", "GET", "/static").map(|m| m.0),
        Some("static".into())
    );
    assert_eq!(
        find(&r, "x", "GET", "/tenants/acme/reports/2024/q1"),
        Some(("reports".into(), vec![p("tenant", "acme")]))
    );
    assert_eq!(find(&r, "x", "POST", "/tenants/acme/reports/x"), None);
    assert_eq!(find(&r, "x", "GET", "/").map(|m| m.0), Some("root".into()));
    assert_eq!(
        find(&r, "x", "GET", "/orders/"),
        None,
        "a param never captures an empty segment"
    );
    assert_eq!(find(&r, "x", "GET", "/orders/7/items"), None);
    assert_eq!(find(&r, "x", "GET", "/nothing"), None);
}

#[test]
fn backtracks_from_literal_to_param() {
    let r = router(&[
        ("lit", "/a/b/c", None, None),
        ("par", "/a/{x}/d", None, None),
    ]);
    assert_eq!(
        find(&r, "h", "GET", "/a/b/d").map(|m| m.0),
        Some("par".into())
    );
}

#[test]
fn overlapping_routes_are_refused() {
    let mut r = Router::default();
    let (s, a) = route("a", "/x/{id}", Some(&["GET", "POST"]), None);
    r.insert(&s, a).unwrap();
    let (s, b) = route("b", "/x/{other}", Some(&["POST"]), None);
    assert_eq!(r.insert(&s, b), Err("a".into()));
    let (s, c) = route("c", "/x/{id}", Some(&["DELETE"]), None);
    assert!(r.insert(&s, c).is_ok());
}

#[test]
fn bad_templates() {
    for bad in [
        "orders", "/a/**/b", "/{}", "/{a}/{a}", "/a{b}", "/a//b", "/a/../b", "/a/*",
    ] {
        assert!(parse_template(bad).is_err(), "{bad}");
    }
}
