//! SECURITY.md rules, each refused over real HTTP with the upstream
//! receiving nothing.

mod common;

use claimgate::jwks::Algorithm;
use claimgate::testkit::keys::SigningKey;
use common::{claims, stack, Builder};
use http::StatusCode;
use serde_json::json;

#[tokio::test]
async fn rule_1_two_tokens_or_a_malformed_bearer_is_400() {
    let s = stack().await;
    let t = s.gold_token();
    let auth = format!("Bearer {t}");
    let lower = format!("bearer {t}");
    // The scheme is case-insensitive.
    assert_eq!(
        s.get("/orders/7", &[("authorization", &lower)])
            .await
            .status,
        StatusCode::OK
    );
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![("authorization", &auth), ("authorization", &auth)],
        vec![("authorization", "Bearer")],
        vec![("authorization", "Bearer a b")],
    ];
    for headers in cases {
        let r = s.get("/orders/7", &headers).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{headers:?}");
        assert_eq!(
            r.www_authenticate(),
            Some(r#"Bearer realm="claimgate", error="invalid_request""#)
        );
    }
    assert_eq!(s.upstream.count(), 1);
}

#[tokio::test]
async fn rule_2_length_and_charset_before_decoding() {
    let s = Builder::new()
        .limits(|l| l.max_token_bytes = 1024)
        .start()
        .await;
    let big = s.token(json!({"pad": "x".repeat(2000)}));
    let r = s.get_with_token("/orders/7", &big).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.reason(), "token_too_large");
    for bad in ["a.b.c.d", "a.b", "a+b.c.d", "a.b=.c"] {
        let r = s.get_with_token("/orders/7", bad).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{bad}");
        assert_eq!(r.reason(), "malformed_token", "{bad}");
    }
    assert_eq!(s.upstream.count(), 0);
}

#[tokio::test]
async fn rule_3_alg_none_hmac_and_key_pointing_headers_are_refused() {
    let s = stack().await;
    let payload = claims(json!({"user_role": "admin"})).to_string();
    let b64 = |t: &str| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t)
    };
    // alg none, with and without a signature.
    let none = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(&payload));
    let none_sig = format!(
        "{}.{}.c2ln",
        b64(r#"{"alg":"none","kid":"k1"}"#),
        b64(&payload)
    );
    // HS256 over the public key bytes: the RS/ES→HS confusion.
    let hs = {
        let h = b64(r#"{"alg":"HS256","kid":"k1"}"#);
        let p = b64(&payload);
        let key = jsonwebtoken::EncodingKey::from_secret(s.key.jwk().to_string().as_bytes());
        let sig = jsonwebtoken::crypto::sign(
            format!("{h}.{p}").as_bytes(),
            &key,
            jsonwebtoken::Algorithm::HS256,
        )
        .unwrap();
        format!("{h}.{p}.{sig}")
    };
    let r = s.get_with_token("/orders/7", &none).await;
    assert_eq!(r.reason(), "malformed_token", "empty signature part");
    let r = s.get_with_token("/orders/7", &none_sig).await;
    assert_eq!(r.reason(), "algorithm_not_allowed");
    let r = s.get_with_token("/orders/7", &hs).await;
    assert_eq!(r.reason(), "algorithm_not_allowed");
    for param in ["crit", "jku", "jwk", "x5u", "x5c"] {
        let header =
            json!({"alg": "ES256", "kid": "k1", param: ["https://evil.test/keys"]}).to_string();
        let token = s.key.sign_raw(&header, &payload);
        let r = s.get_with_token("/orders/7", &token).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{param}");
        assert_eq!(r.reason(), "unsupported_header", "{param}");
    }
    assert_eq!(s.upstream.count(), 0);
}

#[tokio::test]
async fn rule_4_unknown_kid_is_refused() {
    let s = stack().await;
    let header = json!({"alg": "ES256", "kid": "../../etc/passwd"}).to_string();
    let token = s
        .key
        .sign_raw(&header, &claims(json!({"user_role": "admin"})).to_string());
    let r = s.get_with_token("/orders/7", &token).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.reason(), "unknown_key");
    assert_eq!(s.upstream.count(), 0);
}

#[tokio::test]
async fn rule_7_duplicate_members_are_refused() {
    let s = stack().await;
    let c = claims(json!({"scope": "order", "subscription_level": "free"}));
    // The last `subscription_level` would win in a lenient parser.
    let payload = format!(
        r#"{},"subscription_level":"gold"}}"#,
        c.to_string().trim_end_matches('}')
    );
    let token = s
        .key
        .sign_raw(&json!({"alg": "ES256", "kid": "k1"}).to_string(), &payload);
    let r = s.get_with_token("/orders/7", &token).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.reason(), "malformed_token");
    let header = r#"{"alg":"ES256","kid":"k1","kid":"k2"}"#;
    let token = s
        .key
        .sign_raw(header, &claims(json!({"user_role": "admin"})).to_string());
    assert_eq!(
        s.get_with_token("/orders/7", &token).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(s.upstream.count(), 0);
}

#[tokio::test]
async fn rule_16_ambiguous_paths_are_400() {
    let s = stack().await;
    let auth = format!("Bearer {}", s.token(json!({"user_role": "admin"})));
    for path in [
        "/orders/%2e%2e/admin",
        "/orders/..%2fadmin",
        "/orders/7%2f8",
        "/orders/7%5c8",
        "/orders/./7",
        "/orders//7",
        "/orders/7;jsessionid=x",
        "/orders/7%00",
        "/orders/%zz",
        "/healthz/%2e%2e/orders/7",
    ] {
        let r = s.get(path, &[("authorization", &auth)]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(r.reason(), "ambiguous_path", "{path}");
    }
    assert_eq!(s.upstream.count(), 0);
    // Percent-encoded ordinary characters are decided decoded and sent as sent.
    let r = s
        .get("/orders/caf%C3%A9", &[("authorization", &auth)])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        s.upstream.last().unwrap().path_and_query,
        "/orders/caf%C3%A9"
    );
}

#[tokio::test]
async fn rule_16_host_is_compared_lowercase_without_trailing_dot() {
    let policy = common::POLICY.replace(
        "match: { path: /healthz }",
        "match: { path: /healthz, host: API.Example.test. }",
    );
    let s = Builder::new().policy(&policy).start().await;
    for host in [
        "api.example.test",
        "API.EXAMPLE.TEST",
        "api.example.test.",
        "api.example.test:8443",
    ] {
        assert_eq!(
            s.get("/healthz", &[("host", host)]).await.status,
            StatusCode::OK,
            "{host}"
        );
    }
    assert_eq!(
        s.get("/healthz", &[("host", "other.test")]).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn every_supported_algorithm_verifies_and_a_key_only_signs_its_own_alg() {
    let algs = [
        Algorithm::RS256,
        Algorithm::PS256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];
    let keys: Vec<SigningKey> = algs
        .iter()
        .map(|a| SigningKey::generate(*a, &format!("{a:?}")))
        .collect();
    let s = Builder::new().with_keys(keys).start().await;
    let c = claims(json!({"user_role": "admin"}));
    for key in &s.extra_keys {
        let r = s.get_with_token("/orders/7", &key.sign(&c)).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}: {}", key.alg, r.body);
    }
    assert_eq!(s.upstream.count(), algs.len());
    // The RSA key's JWK says RS256: a PS256 token under its kid is refused.
    let rs = &s.extra_keys[0];
    let header = json!({"alg": "PS256", "kid": rs.kid}).to_string();
    let forged = s.extra_keys[1].sign_raw(&header, &c.to_string());
    let r = s.get_with_token("/orders/7", &forged).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.reason(), "algorithm_not_allowed");
    assert_eq!(s.upstream.count(), algs.len());
}

#[tokio::test]
async fn rule_16_absolute_form_host_wins_over_a_contradicting_host_header() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let policy = common::POLICY.replace(
        "match: { path: /healthz }",
        "match: { path: /healthz, host: api.example.test }",
    );
    let s = Builder::new().policy(&policy).start().await;
    // Routed on the URI's authority, so the upstream must see that host, not
    // the Host header the client also sent.
    let mut conn = tokio::net::TcpStream::connect(s.addr()).await.unwrap();
    conn.write_all(
        b"GET http://api.example.test/healthz HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut resp = String::new();
    conn.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let seen = s.upstream.last().unwrap();
    let hosts: Vec<_> = seen.headers.get_all("host").iter().collect();
    assert_eq!(hosts, vec!["api.example.test"]);
}

/// The default policy with a long background refresh, so that only the
/// unknown-kid path can fetch, and the given cooldown.
fn rotation_policy(cooldown: &str) -> String {
    common::POLICY.replace(
        "    refresh_interval: 1s\n",
        &format!("    refresh_interval: 1h\n    unknown_kid_cooldown: {cooldown}\n"),
    )
}

#[tokio::test]
async fn rule_11_a_rotated_key_is_fetched_on_its_first_token() {
    let s = Builder::new()
        .policy(&rotation_policy("200ms"))
        .start()
        .await;
    assert_eq!(s.idp.fetches(), 1);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // The IdP publishes a new key; a token signed with it arrives.
    let new = SigningKey::generate(Algorithm::RS256, "k2");
    s.idp.set(&claimgate::testkit::keys::jwks([&s.key, &new]));
    let token = new.sign(&claims(json!({"user_role": "admin"})));
    let r = s.get_with_token("/orders/7", &token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(s.idp.fetches(), 2, "exactly one fetch for the new kid");
    // The old key still verifies.
    assert_eq!(
        s.get_with_token("/orders/7", &s.token(json!({"user_role": "admin"})))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(s.idp.fetches(), 2);
}

#[tokio::test]
async fn rule_11_a_flood_of_unknown_kids_is_at_most_one_fetch_per_cooldown() {
    let s = Builder::new().policy(&rotation_policy("30s")).start().await;
    let before = s.idp.fetches();
    let payload = claims(json!({"user_role": "admin"})).to_string();
    let tokens: Vec<String> = (0..1000)
        .map(|i| {
            s.key.sign_raw(
                &json!({"alg": "ES256", "kid": format!("forged-{i}")}).to_string(),
                &payload,
            )
        })
        .collect();
    let addr = s.addr();
    let mut tasks = Vec::new();
    for chunk in tokens.chunks(20) {
        let chunk = chunk.to_vec();
        tasks.push(tokio::spawn(async move {
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http();
            let mut statuses = Vec::new();
            for t in chunk {
                let auth = format!("Bearer {t}");
                statuses.push(
                    common::send(
                        &client,
                        addr,
                        "GET",
                        "/orders/7",
                        &[("authorization", &auth)],
                    )
                    .await
                    .status,
                );
            }
            statuses
        }));
    }
    for t in tasks {
        for status in t.await.unwrap() {
            assert_eq!(status, StatusCode::UNAUTHORIZED);
        }
    }
    assert!(
        s.idp.fetches() - before <= 1,
        "{} fetches for 1,000 unknown kids",
        s.idp.fetches() - before
    );
    assert_eq!(s.upstream.count(), 0);
    let m = s.admin("GET", "/metrics").await.body;
    assert!(
        m.contains(r#"claimgate_jwks_refreshes_suppressed_total{issuer="test"}"#),
        "{m}"
    );
    // Valid tokens are unaffected.
    assert_eq!(
        s.get_with_token("/orders/7", &s.gold_token()).await.status,
        StatusCode::OK
    );
}

/// A token naming a known key with an algorithm that key does not allow is
/// an algorithm fault: 401 `algorithm_not_allowed`, and no JWKS refresh (a
/// refresh could not change it).
#[tokio::test]
async fn an_algorithm_the_named_key_does_not_allow_is_refused_without_a_refresh() {
    let policy = common::POLICY.replace(
        "    refresh_interval: 1s\n",
        "    refresh_interval: 1h\n    unknown_kid_cooldown: 0s\n",
    );
    let s = common::Builder::new().policy(&policy).start().await;
    let fetches = s.idp.fetches();
    // `k1` is an ES256 key; the same kid with ES384 in the header.
    let header = serde_json::json!({"alg": "ES384", "kid": "k1"}).to_string();
    let other =
        claimgate::testkit::keys::SigningKey::generate(claimgate::jwks::Algorithm::ES384, "k1");
    let token = other.sign_raw(&header, &common::claims(serde_json::json!({})).to_string());
    let r = s.get_with_token("/me", &token).await;
    assert_eq!(r.status, http::StatusCode::UNAUTHORIZED);
    assert_eq!(r.reason(), "algorithm_not_allowed");
    assert_eq!(s.upstream.count(), 0);
    assert_eq!(
        s.idp.fetches(),
        fetches,
        "no refresh for an algorithm fault"
    );
}

/// Rule 5: `sub` must be a string with a non-blank character and at most
/// `max_sub_length` bytes (1,024 by default); anything else is 401
/// `invalid_claim` with nothing upstream, on a signature that verifies.
#[tokio::test]
async fn rule_5_an_empty_blank_long_or_non_string_sub_is_refused() {
    let s = stack().await;
    let cases = [
        json!(""),
        json!(" "),
        json!("\t \n"),
        json!("x".repeat(1025)),
        json!(42),
        json!(null),
        json!(["admin"]),
        json!({"id": "x"}),
    ];
    for sub in cases {
        let token = s.token(json!({"sub": sub.clone(), "user_role": "admin"}));
        let r = s.get_with_token("/orders/7", &token).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "sub {sub}");
        assert_eq!(r.reason(), "invalid_claim", "sub {sub}");
    }
    assert_eq!(s.upstream.count(), 0);
    // At the bound, and with inner white space, it passes.
    for sub in ["x".repeat(1024), " a b ".to_string()] {
        let token = s.token(json!({"sub": sub, "user_role": "admin"}));
        assert_eq!(
            s.get_with_token("/orders/7", &token).await.status,
            StatusCode::OK
        );
    }
    // The bound is the issuer's to set.
    let s = Builder::new()
        .policy(&common::POLICY.replace(
            "    refresh_interval: 1s\n",
            "    refresh_interval: 1s\n    max_sub_length: 8\n",
        ))
        .start()
        .await;
    let r = s
        .get_with_token("/me", &s.token(json!({"sub": "123456789"})))
        .await;
    assert_eq!(r.reason(), "invalid_claim");
    assert_eq!(s.upstream.count(), 0);
}

/// Rule 5: a header the route marks `required` that renders empty (missing,
/// empty or blank) refuses the request: 403 `required_header_empty`, never
/// forwarded without the identity.
#[tokio::test]
async fn rule_5_a_required_header_rendering_empty_refuses_the_request() {
    let policy = common::POLICY.replace(
        "    forward:\n      X-Display: \"{{ $.display }}\"\n",
        "    forward:\n      X-Display: \"{{ $.display }}\"\n      X-Tenant:\n        value: \"{{ $.tenant }}\"\n        required: true\n",
    );
    assert_ne!(policy, common::POLICY);
    let s = Builder::new().policy(&policy).start().await;
    for tenant in [None, Some(json!("")), Some(json!("  ")), Some(json!([]))] {
        let extra = match &tenant {
            Some(t) => json!({ "tenant": t }),
            None => json!({}),
        };
        let r = s.get_with_token("/me", &s.token(extra)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "tenant {tenant:?}");
        assert_eq!(r.reason(), "required_header_empty", "tenant {tenant:?}");
        assert_eq!(
            r.www_authenticate(),
            Some(r#"Bearer realm="claimgate", error="insufficient_scope""#)
        );
    }
    assert_eq!(s.upstream.count(), 0);
    let r = s
        .get_with_token("/me", &s.token(json!({"tenant": "t1"})))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(common::last_header(&s, "x-tenant").as_deref(), Some("t1"));
}

/// Rule 15 (extended): rewrite-class headers a client sends are removed on
/// every route, public ones included, in any spelling; a trusted proxy's
/// reach the upstream only on a route that opts in.
#[tokio::test]
async fn rule_15_rewrite_class_headers_never_pass_from_a_client() {
    let rewrite = [
        ("X-Envoy-Original-Path", "/admin"),
        ("x-envoy-decorator-operation", "admin"),
        ("X-Rewrite-URL", "/admin"),
        ("X_Rewrite_URL", "/admin"),
        ("X-HTTP-Method-Override", "DELETE"),
        ("X-HTTP-Method", "DELETE"),
        ("X-Method-Override", "DELETE"),
        ("x.method.override", "DELETE"),
        ("X-Original-URL", "/admin"),
        ("X-Original-Method", "DELETE"),
    ];
    let policy = format!(
        "{}  - name: behind-proxy\n    match: {{ path: /proxied }}\n    upstream: app\n    public: true\n    trust_rewrite_headers: true\n",
        common::POLICY
    );
    let gold = |s: &common::Stack| format!("Bearer {}", s.gold_token());
    for (trust, passes) in [("", false), ("trusted_proxies: [127.0.0.0/8]\n", true)] {
        let s = Builder::new()
            .policy(&format!("{trust}{policy}"))
            .start()
            .await;
        let auth = gold(&s);
        for (path, with_token, route_opts_in) in [
            ("/orders/7", true, false),
            ("/healthz", false, false),
            ("/proxied", false, true),
        ] {
            for (name, value) in rewrite {
                let mut headers = vec![(name, value)];
                if with_token {
                    headers.push(("authorization", auth.as_str()));
                }
                let r = s.get(path, &headers).await;
                assert_eq!(r.status, StatusCode::OK, "{path} {name}");
                let seen = s.upstream.last().unwrap().headers;
                let sent = name.to_ascii_lowercase();
                let canonical = sent.replace(['_', '.'], "-");
                let got = |n: &str| seen.get(n).map(|v| v.to_str().unwrap().to_string());
                if passes && route_opts_in {
                    assert_eq!(got(&sent).as_deref(), Some(value), "{trust}{path} {name}");
                } else {
                    assert_eq!(got(&sent), None, "{trust}{path} {name} passed through");
                    assert_eq!(got(&canonical), None, "{trust}{path} {name} passed through");
                }
            }
        }
    }
}

/// Rule 18: the header count is bounded: hyper's default of 100, and a
/// configured `limits.max_headers`. Past it: 431, nothing upstream.
#[tokio::test]
async fn rule_18_too_many_headers_is_431() {
    let names: Vec<String> = (0..120).map(|i| format!("x-extra-{i}")).collect();
    let many =
        |n: usize| -> Vec<(&str, &str)> { names[..n].iter().map(|k| (k.as_str(), "v")).collect() };
    let s = stack().await;
    assert_eq!(s.get("/healthz", &many(90)).await.status, StatusCode::OK);
    let before = s.upstream.count();
    assert_eq!(
        s.get("/healthz", &many(110)).await.status,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    assert_eq!(s.upstream.count(), before);

    let s = Builder::new().limits(|l| l.max_headers = 20).start().await;
    assert_eq!(s.get("/healthz", &many(10)).await.status, StatusCode::OK);
    let before = s.upstream.count();
    assert_eq!(
        s.get("/healthz", &many(30)).await.status,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    assert_eq!(s.upstream.count(), before);
}

/// Rule 18: the header-read timeout. A client that connects and sends
/// nothing, or stops in the middle of its request head, is closed once
/// `limits.header_read_timeout` has passed; nothing reaches the upstream.
#[tokio::test]
async fn rule_18_a_silent_or_slow_client_is_closed_at_the_header_read_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Builder::new()
        .limits(|l| l.header_read_timeout = std::time::Duration::from_millis(300))
        .start()
        .await;
    let before = s.upstream.count();
    for sent in [
        &b""[..],
        b"GET /healthz HTTP/1.1\r\nHost: a\r\n",
        b"PRI * HTTP/2.0\r\n",
    ] {
        let started = std::time::Instant::now();
        let mut c = tokio::net::TcpStream::connect(s.addr()).await.unwrap();
        c.write_all(sent).await.unwrap();
        let mut rest = Vec::new();
        let read =
            tokio::time::timeout(std::time::Duration::from_secs(5), c.read_to_end(&mut rest)).await;
        let waited = started.elapsed();
        assert!(read.is_ok(), "{sent:?}: still open after 5 s");
        assert!(
            waited >= std::time::Duration::from_millis(250),
            "{sent:?}: closed after {waited:?}, before the timeout"
        );
        let text = String::from_utf8_lossy(&rest);
        assert!(!text.contains("200 OK"), "{sent:?}: answered {text}");
    }
    assert_eq!(s.upstream.count(), before);
    // A prompt client is served.
    assert_eq!(s.get("/healthz", &[]).await.status, StatusCode::OK);
}
