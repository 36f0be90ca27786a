use super::*;
use crate::forward::forwarded::Cidr;

fn config(prefix: &str) -> ForwardAuthConfig {
    ForwardAuthConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        gateways: vec![Cidr::parse("10.0.0.0/8").unwrap()],
        path_prefix: prefix.into(),
    }
}

fn check(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

fn peer(ip: [u8; 4]) -> Peer {
    Peer {
        addr: (ip, 40000).into(),
        tls: false,
    }
}

#[test]
fn the_original_request_comes_from_each_gateways_headers() {
    let gw = peer([10, 1, 2, 3]);
    let cases: [(&str, Parts, (&str, &str, &str)); 4] = [
        (
            "nginx",
            check(
                "GET",
                "/auth",
                &[
                    ("host", "claimgate:8081"),
                    ("x-original-method", "POST"),
                    ("x-original-uri", "/orders/7?x=1"),
                    ("x-forwarded-host", "shop.example"),
                ],
            ),
            ("POST", "/orders/7?x=1", "shop.example"),
        ),
        (
            "traefik",
            check(
                "GET",
                "/",
                &[
                    ("host", "claimgate"),
                    ("x-forwarded-method", "DELETE"),
                    ("x-forwarded-uri", "/orders/7"),
                    ("x-forwarded-host", "api.example"),
                ],
            ),
            ("DELETE", "/orders/7", "api.example"),
        ),
        (
            "envoy",
            check("PUT", "/check/orders/7?a=b", &[("host", "api.example")]),
            ("PUT", "/orders/7?a=b", "api.example"),
        ),
        (
            "envoy, root path",
            check("GET", "/check/", &[("host", "api.example")]),
            ("GET", "/", "api.example"),
        ),
    ];
    for (what, parts, (m, u, h)) in cases {
        let prefix = if what.starts_with("envoy") {
            "/check"
        } else {
            ""
        };
        let got = original_request(&config(prefix), &parts, gw).unwrap();
        assert_eq!(got.method.as_str(), m, "{what}");
        assert_eq!(got.uri.to_string(), u, "{what}");
        assert_eq!(got.headers[HOST], h, "{what}");
    }
}

#[test]
fn only_a_gateway_may_ask_and_ambiguity_is_refused() {
    let parts = check("GET", "/", &[("host", "x"), ("x-original-uri", "/admin")]);
    assert!(matches!(
        original_request(&config(""), &parts, peer([192, 0, 2, 1])),
        Err(Rejection::UntrustedGateway)
    ));
    let gw = peer([10, 0, 0, 1]);
    for bad in [
        check(
            "GET",
            "/",
            &[
                ("host", "x"),
                ("x-original-uri", "/a"),
                ("x-original-uri", "/b"),
            ],
        ),
        check("GET", "/", &[("host", "x"), ("x-original-uri", "admin")]),
        check("GET", "/", &[("host", "x"), ("x-original-method", "G E T")]),
        check("GET", "/elsewhere/x", &[("host", "x")]),
    ] {
        let prefix = "/check";
        assert!(
            matches!(
                original_request(&config(prefix), &bad, gw),
                Err(Rejection::BadForwardAuth)
            ),
            "{:?}",
            bad.headers
        );
    }
}
