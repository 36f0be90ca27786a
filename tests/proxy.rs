//! End to end over real HTTP: IdP (JWKS), echo upstream and claimgate on
//! loopback. Every rejection asserts the upstream received nothing.

mod common;

use std::time::Duration;

use common::{stack, Builder};
use http::StatusCode;
use serde_json::json;

#[tokio::test]
async fn valid_token_reaches_upstream_with_templated_headers() {
    let s = stack().await;
    let r = s.get_with_token("/orders/7?x=1", &s.gold_token()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(s.upstream.count(), 1);
    let seen = s.upstream.last().unwrap();
    assert_eq!(seen.path_and_query, "/orders/7?x=1");
    assert_eq!(seen.headers["x-user-id"], "user-1");
    assert_eq!(seen.headers["x-region"], "global");
    assert_eq!(seen.headers["x-name"], "Ada L");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert!(
        seen.headers.get("authorization").is_none(),
        "the token is not forwarded by default"
    );
}

#[tokio::test]
async fn missing_token_is_401_without_error_code() {
    let s = stack().await;
    let r = s.get("/orders/7", &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.www_authenticate(), Some(r#"Bearer realm="claimgate""#));
    assert_eq!(r.reason(), "missing_token");
    assert_eq!(s.upstream.count(), 0);
}

#[tokio::test]
async fn token_faults_are_401_invalid_token_and_reach_nothing() {
    let s = stack().await;
    let other =
        claimgate::testkit::keys::SigningKey::generate(claimgate::jwks::Algorithm::ES256, "k1");
    let good = s.gold_token();
    let tampered = {
        let (head, sig) = good.rsplit_once('.').unwrap();
        let flipped = if sig.starts_with('A') { "B" } else { "A" };
        format!("{head}.{flipped}{}", &sig[1..])
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("malformed", "not-a-jwt".into(), "malformed_token"),
        ("garbage parts", "a.b.c".into(), "malformed_token"),
        ("tampered signature", tampered, "bad_signature"),
        (
            "signed by another key with the same kid",
            other.sign(&common::claims(json!({}))),
            "bad_signature",
        ),
        (
            "expired",
            s.token(json!({"exp": claimgate::jwks::unix_now() - 120})),
            "expired",
        ),
        (
            "not yet valid",
            s.token(json!({"nbf": claimgate::jwks::unix_now() + 600})),
            "not_yet_valid",
        ),
        (
            "issued in the future",
            s.token(json!({"iat": claimgate::jwks::unix_now() + 600})),
            "issued_in_future",
        ),
        (
            "wrong issuer",
            s.token(json!({"iss": "https://evil.test"})),
            "unknown_issuer",
        ),
        (
            "issuer as array",
            s.token(json!({"iss": ["https://issuer.test"]})),
            "invalid_claim",
        ),
        (
            "wrong audience",
            s.token(json!({"aud": "other"})),
            "wrong_audience",
        ),
        (
            "audience of wrong type",
            s.token(json!({"aud": 5})),
            "invalid_claim",
        ),
        (
            "no sub",
            s.key.sign(&common::without("sub")),
            "missing_claim",
        ),
        (
            "no exp",
            s.key.sign(&common::without("exp")),
            "missing_claim",
        ),
        (
            "no aud",
            s.key.sign(&common::without("aud")),
            "missing_claim",
        ),
        (
            "exp as string",
            s.token(json!({"exp": "9999999999"})),
            "invalid_claim",
        ),
    ];
    for (name, token, reason) in cases {
        let r = s.get_with_token("/orders/7", &token).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{name}: {}", r.body);
        assert_eq!(
            r.www_authenticate(),
            Some(r#"Bearer realm="claimgate", error="invalid_token""#),
            "{name}"
        );
        assert_eq!(r.reason(), reason, "{name}");
    }
    assert_eq!(s.upstream.count(), 0);
}

#[tokio::test]
async fn policy_denial_is_403_insufficient_scope() {
    let s = stack().await;
    let free = s.token(json!({"scope": "order", "subscription_level": "free"}));
    let no_scope = s.token(json!({"subscription_level": "gold"}));
    for token in [free, no_scope] {
        let r = s.get_with_token("/orders/7", &token).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(
            r.www_authenticate(),
            Some(r#"Bearer realm="claimgate", error="insufficient_scope""#)
        );
        assert_eq!(r.reason(), "policy_denied");
    }
    // An admin passes the same route.
    let r = s
        .get_with_token("/orders/7", &s.token(json!({"user_role": "admin"})))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(s.upstream.count(), 1);
}

#[tokio::test]
async fn nsec_claims_set_by_a_client_are_never_trusted() {
    let s = stack().await;
    // Descope's nsec: claims a client SDK set. A role there must not count.
    let token = s.token(
        json!({"nsec": {"user_role": "admin"}, "scope": "order", "subscription_level": "free"}),
    );
    let r = s.get_with_token("/orders/7", &token).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(s.upstream.count(), 0);
}

#[tokio::test]
async fn spoofed_identity_headers_never_reach_the_upstream() {
    let s = stack().await;
    let auth = format!("Bearer {}", s.gold_token());
    let spoofs = [
        ("x-user-id", "admin"),
        ("X-User-Id", "admin"),
        ("X_User_Id", "admin"),
        ("x.user.id", "admin"),
        ("x-region", "spoofed"),
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-host", "evil.test"),
        ("forwarded", "for=6.6.6.6"),
        ("x-real-ip", "6.6.6.6"),
    ];
    let mut headers = vec![("authorization", auth.as_str())];
    headers.extend(spoofs);
    let r = s.get("/orders/7", &headers).await;
    assert_eq!(r.status, StatusCode::OK);
    let seen = s.upstream.last().unwrap();
    assert_eq!(
        seen.headers.get_all("x-user-id").iter().collect::<Vec<_>>(),
        vec!["user-1"]
    );
    assert_eq!(seen.headers["x-region"], "global");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    for name in ["x_user_id", "x.user.id", "forwarded", "x-real-ip"] {
        assert!(
            seen.headers.get(name).is_none(),
            "{name} reached the upstream"
        );
    }
    // On a public route too.
    let mut headers: Vec<(&str, &str)> = spoofs.to_vec();
    headers.push(("connection", "x-custom"));
    headers.push(("x-custom", "hop"));
    let r = s.get("/healthz", &headers).await;
    assert_eq!(r.status, StatusCode::OK);
    let seen = s.upstream.last().unwrap();
    for (name, _) in spoofs {
        let leaked = seen.headers.get(name).is_some_and(|v| {
            v == "admin"
                || v == "spoofed"
                || v.to_str().unwrap_or("").contains("6.6.6.6")
                || v == "evil.test"
        });
        assert!(!leaked, "{name} reached the upstream on a public route");
    }
    assert!(seen.headers.get("x-user-id").is_none());
    assert!(
        seen.headers.get("x-custom").is_none(),
        "a header named by Connection was forwarded"
    );
}

#[tokio::test]
async fn public_route_needs_no_token() {
    let s = stack().await;
    let r = s.get("/healthz", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(s.upstream.count(), 1);
}

#[tokio::test]
async fn unknown_route_is_404_and_reaches_nothing() {
    let s = stack().await;
    let r = s.get_with_token("/nowhere", &s.gold_token()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = s.send("POST", "/orders/7", &[]).await;
    assert_eq!(
        r.status,
        StatusCode::METHOD_NOT_ALLOWED,
        "method not in the route"
    );
    assert_eq!(s.upstream.count(), 0);
}

#[tokio::test]
async fn an_upstream_base_path_prefixes_the_raw_path_and_query() {
    let policy = common::POLICY.replace("app: ${UPSTREAM}", "app: ${UPSTREAM}/v2");
    let s = Builder::new().policy(&policy).start().await;
    let r = s.get("/healthz", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(s.upstream.last().unwrap().path_and_query, "/v2/healthz");
    let r = s
        .get_with_token("/orders/7?a=%2F&b=1", &s.gold_token())
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        s.upstream.last().unwrap().path_and_query,
        "/v2/orders/7?a=%2F&b=1"
    );
}

#[tokio::test]
async fn upstream_down_is_502() {
    let policy = common::POLICY.replace("${UPSTREAM}", "http://127.0.0.1:9");
    let s = Builder::new().policy(&policy).start().await;
    let r = s.get_with_token("/orders/7", &s.gold_token()).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.reason(), "upstream_unavailable");
}

#[tokio::test]
async fn slow_upstream_is_504() {
    // Plain HTTP/1.1 (the in-task path) and h2c (hyper-util's pool).
    let h2c = common::POLICY.replace(
        "  app: ${UPSTREAM}\n",
        "  app: { url: \"${UPSTREAM}\", protocol: h2c }\n",
    );
    assert_ne!(h2c, common::POLICY);
    for policy in [common::POLICY.to_string(), h2c] {
        let s = Builder::new()
            .policy(&policy)
            .limits(|l| l.upstream_response_timeout = Duration::from_millis(200))
            .start()
            .await;
        let started = std::time::Instant::now();
        let r = s.get_with_token("/slow/2000", &s.gold_token()).await;
        assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{policy}");
        assert_eq!(r.reason(), "upstream_timeout");
        assert!(started.elapsed() < Duration::from_millis(1500));
    }
}

#[tokio::test]
async fn unrenderable_claim_refuses_the_request() {
    let s = stack().await;
    for display in ["a\r\nX-Admin: 1", "line\nbreak", "nul\u{0}"] {
        let r = s
            .get_with_token("/me", &s.token(json!({ "display": display })))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{display:?}");
        assert_eq!(r.reason(), "unrenderable_claim");
    }
    assert_eq!(s.upstream.count(), 0);
    let r = s
        .get_with_token("/me", &s.token(json!({ "display": "Ada" })))
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn admin_plane_serves_metrics_and_health() {
    let s = stack().await;
    s.get_with_token("/orders/7", &s.gold_token()).await;
    s.get("/orders/7", &[]).await;
    assert_eq!(s.admin("GET", "/livez").await.status, StatusCode::OK);
    assert_eq!(s.admin("GET", "/readyz").await.status, StatusCode::OK);
    let m = s.admin("GET", "/metrics").await.body;
    assert!(
        m.contains(r#"claimgate_requests_total{decision="allowed",route="orders"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"claimgate_requests_total{decision="unauthenticated",route="orders"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"claimgate_auth_failures_total{issuer="unknown",reason="missing_token"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"claimgate_jwks_fetches_total{issuer="test",result="success"}"#),
        "{m}"
    );
    assert!(
        m.contains("claimgate_request_duration_seconds_bucket"),
        "{m}"
    );
}

#[tokio::test]
async fn not_ready_until_keys_load_and_503_meanwhile() {
    let s = Builder::new()
        .idp_down(StatusCode::INTERNAL_SERVER_ERROR)
        .start()
        .await;
    // The first load has been tried and failed (not merely not yet run).
    s.wait_for_fetches(1).await;
    let ready = s.admin("GET", "/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    // It says what is missing.
    assert!(ready.body.contains("issuer(s) test"), "{}", ready.body);
    let r = s.get_with_token("/orders/7", &s.gold_token()).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.reason(), "keys_unavailable");
    assert_eq!(s.upstream.count(), 0);
    // The IdP recovers; the retry (refresh_interval 1s) loads the keys.
    s.idp.set(&claimgate::testkit::keys::jwks([&s.key]));
    tokio::time::timeout(Duration::from_secs(10), s.running().app.wait_keys_loaded())
        .await
        .unwrap();
    assert_eq!(s.admin("GET", "/readyz").await.status, StatusCode::OK);
    let r = s.get_with_token("/orders/7", &s.gold_token()).await;
    assert_eq!(r.status, StatusCode::OK);
    let m = s.admin("GET", "/metrics").await.body;
    assert!(
        m.contains(r#"claimgate_jwks_fetches_total{issuer="test",result="failure"}"#),
        "{m}"
    );
}

#[tokio::test]
async fn failed_refresh_keeps_the_last_good_keys() {
    let s = stack().await;
    s.idp.set_raw(StatusCode::OK, "{\"not\":\"a jwks\"}");
    let before = s.idp.fetches();
    // Wait for at least one failed refresh (interval 1s).
    s.wait_for_fetches(before + 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = s.get_with_token("/orders/7", &s.gold_token()).await;
    assert_eq!(r.status, StatusCode::OK);
    let m = s.admin("GET", "/metrics").await.body;
    assert!(
        m.contains(r#"claimgate_jwks_fetches_total{issuer="test",result="failure"}"#),
        "{m}"
    );
}

#[tokio::test]
async fn graceful_shutdown_lets_in_flight_requests_finish() {
    let mut s = stack().await;
    let token = s.gold_token();
    let addr = s.addr();
    let slow = tokio::spawn(async move {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        common::send(
            &client,
            addr,
            "GET",
            "/slow/700",
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await
    });
    // Wait until the slow request is in flight at the upstream side.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let running = s.running.take().unwrap();
    running.shutdown(Duration::ZERO).await;
    let r = slow.await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test]
async fn shutdown_waits_for_no_silent_or_idle_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = stack().await;
    // One connection that never sent a byte (the header-read timeout is
    // 10 s), one idle after a request.
    let mut silent = tokio::net::TcpStream::connect(s.addr()).await.unwrap();
    let mut idle = tokio::net::TcpStream::connect(s.addr()).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    idle.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let running = s.running.take().unwrap();
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), running.shutdown(Duration::ZERO))
        .await
        .expect("the shutdown waited for a silent or idle connection");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(1), silent.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0))), "the silent connection is closed");
    assert_eq!(s.upstream.count(), 1);
}

#[tokio::test]
async fn reload_swaps_policy_or_keeps_the_old_one() {
    let s = stack().await;
    let free = s.token(json!({"scope": "order", "subscription_level": "free"}));
    assert_eq!(
        s.get_with_token("/orders/7", &free).await.status,
        StatusCode::FORBIDDEN
    );

    // A broken policy: the reload fails naming file and line, the old policy serves.
    s.write_policy(&common::POLICY.replace(
        "in: [gold, platinum]",
        "in: [gold, platinum]\n              bogus_key: 1",
    ));
    let r = s.admin("POST", "/admin/reload").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("policy.yaml:"), "{}", r.body);
    assert_eq!(
        s.get_with_token("/orders/7", &free).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        s.get_with_token("/orders/7", &s.gold_token()).await.status,
        StatusCode::OK
    );

    // A good one that also admits the free plan.
    s.write_policy(&common::POLICY.replace("in: [gold, platinum]", "in: [free, gold, platinum]"));
    let r = s.admin("POST", "/admin/reload").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        s.get_with_token("/orders/7", &free).await.status,
        StatusCode::OK
    );
    let m = s.admin("GET", "/metrics").await.body;
    assert!(
        m.contains(r#"claimgate_config_reloads_total{result="failure"} 1"#),
        "{m}"
    );
    assert!(m.contains("claimgate_config_generation 2"), "{m}");
}

#[tokio::test]
async fn h2c_and_request_bodies_pass_through() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    let s = stack().await;
    let token = s.token(json!({}));
    let body = Bytes::from(vec![b'x'; 3 * 1024 * 1024]);
    for http2 in [true, false] {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .http2_only(http2)
                .build_http::<Full<Bytes>>();
        let req = http::Request::post(format!("http://{}/me", s.addr()))
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(body.clone()))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "http2={http2}");
        let want = if http2 {
            http::Version::HTTP_2
        } else {
            http::Version::HTTP_11
        };
        assert_eq!(resp.version(), want);
        let echo: serde_json::Value =
            serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(echo["method"], "POST");
        assert_eq!(echo["body_bytes"], body.len());
        assert_eq!(s.upstream.last().unwrap().body, body);
    }
}

#[tokio::test]
async fn keys_from_a_jwks_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = claimgate::testkit::keys::SigningKey::generate(
        claimgate::jwks::Algorithm::EdDSA,
        "file-key",
    );
    let path = dir.path().join("keys.json");
    std::fs::write(&path, claimgate::testkit::keys::jwks([&key]).to_string()).unwrap();
    let policy = common::POLICY
        .replace(
            "jwks_uri: ${JWKS_URI}",
            &format!("jwks_file: {}", path.display()),
        )
        .replace("    allow_http: true\n", "");
    let s = Builder::new().policy(&policy).start().await;
    let r = s
        .get_with_token(
            "/orders/7",
            &key.sign(&common::claims(json!({"user_role": "admin"}))),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // The default key is not in the file.
    let r = s
        .get_with_token("/orders/7", &s.token(json!({"user_role": "admin"})))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.reason(), "unknown_key");
    assert_eq!(s.upstream.count(), 1);
}

#[tokio::test]
async fn verified_token_cache_hits_and_dies_with_its_key() {
    let s = stack().await;
    let token = s.gold_token();
    for _ in 0..3 {
        assert_eq!(
            s.get_with_token("/orders/7", &token).await.status,
            StatusCode::OK
        );
    }
    let m = s.admin("GET", "/metrics").await.body;
    assert!(
        m.contains(r#"claimgate_token_cache_lookups_total{result="hit"} 2"#),
        "{m}"
    );
    assert!(
        m.contains(r#"claimgate_token_cache_lookups_total{result="miss"} 1"#),
        "{m}"
    );
    // The IdP drops the key (rotation); after the next refresh (1s) the
    // cached token must fail too.
    let other =
        claimgate::testkit::keys::SigningKey::generate(claimgate::jwks::Algorithm::ES256, "k9");
    let before = s.idp.fetches();
    s.idp.set(&claimgate::testkit::keys::jwks([&other]));
    s.wait_for_fetches(before + 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = s.get_with_token("/orders/7", &token).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    assert_eq!(r.reason(), "unknown_key");
    assert_eq!(s.upstream.count(), 3);
}

#[tokio::test]
async fn a_reload_that_changes_the_audience_invalidates_cached_tokens() {
    let s = stack().await;
    let token = s.gold_token();
    assert_eq!(
        s.get_with_token("/orders/7", &token).await.status,
        StatusCode::OK
    );
    s.write_policy(&common::POLICY.replace("audience: [api]", "audience: [other-api]"));
    assert_eq!(
        s.admin("POST", "/admin/reload").await.status,
        StatusCode::OK
    );
    let r = s.get_with_token("/orders/7", &token).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.reason(), "wrong_audience");
    assert_eq!(s.upstream.count(), 1);
}

#[tokio::test]
async fn a_replaced_issuer_stops_polling_its_old_idp_even_with_cached_tokens() {
    let s = stack().await;
    // Cache a token under the current issuer.
    assert_eq!(
        s.get_with_token("/orders/7", &s.gold_token()).await.status,
        StatusCode::OK
    );
    let new_idp = claimgate::testkit::servers::JwksServer::start(
        ([127, 0, 0, 1], 0).into(),
        &claimgate::testkit::keys::jwks([&s.key]),
    )
    .await
    .unwrap();
    s.write_policy(&common::POLICY.replace("${JWKS_URI}", &new_idp.url()));
    assert_eq!(
        s.admin("POST", "/admin/reload").await.status,
        StatusCode::OK
    );
    s.running().app.wait_keys_loaded().await;
    // The old store's refresher (1s interval) must be gone.
    let old = s.idp.fetches();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        s.idp.fetches(),
        old,
        "the replaced issuer's IdP is still polled"
    );
    assert!(new_idp.fetches() >= 2, "the new IdP is polled");
    assert_eq!(
        s.get_with_token("/orders/7", &s.gold_token()).await.status,
        StatusCode::OK
    );
}

/// SECURITY.md rule 18: a request deadline over everything a request may
/// wait on before its response head — here, keys loading from a stalled IdP
/// after an unknown kid, and a slow upstream.
#[tokio::test]
async fn the_request_deadline_bounds_every_wait() {
    let policy = common::POLICY.replace(
        "    refresh_interval: 1s\n",
        "    refresh_interval: 1h\n    unknown_kid_cooldown: 0s\n",
    );
    let s = Builder::new()
        .policy(&policy)
        .limits(|l| l.request_timeout = Duration::from_millis(500))
        .start()
        .await;
    s.idp.set_delay(Duration::from_secs(3));
    let stranger =
        claimgate::testkit::keys::SigningKey::generate(claimgate::jwks::Algorithm::ES256, "new");
    let token = stranger.sign(&common::claims(json!({})));
    let started = std::time::Instant::now();
    let r = s.get_with_token("/me", &token).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(r.reason(), "request_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(s.upstream.count(), 0);

    let r = s.get_with_token("/slow/2000", &s.gold_token()).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(r.reason(), "request_timeout");
}

/// The drain after a refused body is bounded (rule 18): a client that
/// goes on sending after its 413 is read from for the linger time (5 s),
/// then reset, not for good.
#[tokio::test]
async fn a_refused_body_drains_for_a_bounded_time() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Builder::new()
        .limits(|l| l.max_body_bytes = Some(1024))
        .start()
        .await;
    let token = s.token(json!({}));
    let mut tcp = tokio::net::TcpStream::connect(s.addr()).await.unwrap();
    let head = format!(
        "POST /me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 100000000\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&[b'x'; 64 * 1024]).await.unwrap();
    // The answer, and claimgate's end of stream (its write side shut).
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let drained = std::time::Instant::now();
    // Sending on: accepted while claimgate drains, refused once it closed.
    let refused = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if tcp.write_all(&[b'x'; 4096]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let waited = drained.elapsed();
    assert!(refused.is_ok(), "still draining after {waited:?}");
    assert!(
        waited >= Duration::from_secs(4),
        "reset after {waited:?}, without draining"
    );
    assert_eq!(s.upstream.count(), 0);
}

#[tokio::test]
async fn bodies_over_the_limit_never_reach_the_upstream_whole() {
    use bytes::Bytes;
    use http_body_util::{Full, StreamBody};
    let s = Builder::new()
        .limits(|l| l.max_body_bytes = Some(1024 * 1024))
        .start()
        .await;
    let token = s.token(json!({}));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let post = |n: usize| {
        http::Request::post(format!("http://{}/me", s.addr()))
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::from(vec![b'x'; n])))
            .unwrap()
    };
    let resp = client.request(post(512 * 1024)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(s.upstream.count(), 1);
    // A declared length over the limit: 413 before the upstream is called,
    // and before the body is read. The client here sends its whole body
    // before it reads (as curl does without `Expect`): claimgate drains
    // what it refused instead of closing on it (a reset: the client's next
    // write fails and it never reads the 413), then closes.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let size = 16 * 1024 * 1024;
        let mut tcp = tokio::net::TcpStream::connect(s.addr()).await.unwrap();
        let head = format!(
            "POST /me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: {size}\r\n\r\n"
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        tcp.write_all(&vec![b'x'; size])
            .await
            .expect("the refused body is drained, not reset");
        tcp.shutdown().await.unwrap();
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("body_too_large"), "{answer}");
    }
    assert_eq!(s.upstream.count(), 1);

    // A chunked body (no length) is cut off at the limit: the upstream never
    // holds more than the limit, and the client gets an error status.
    let chunks: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> = (0..48)
        .map(|_| Ok(http_body::Frame::data(Bytes::from(vec![b'y'; 64 * 1024]))))
        .collect();
    let streaming =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<StreamBody<futures_util::stream::Iter<std::vec::IntoIter<_>>>>();
    let req = http::Request::post(format!("http://{}/me", s.addr()))
        .header("authorization", format!("Bearer {token}"))
        .body(StreamBody::new(futures_util::stream::iter(chunks)))
        .unwrap();
    let resp = streaming.request(req).await.unwrap();
    assert!(resp.status().is_server_error(), "{}", resp.status());
    if let Some(seen) = s.upstream.last() {
        assert!(
            seen.body.len() <= 1024 * 1024,
            "{} bytes reached the upstream",
            seen.body.len()
        );
    }
}

/// A path a route takes with another method is 405 with `Allow`, checked
/// before any token (nothing upstream); an unknown path stays 404.
#[tokio::test]
async fn a_wrong_method_is_405_with_allow() {
    let s = common::stack().await;
    let before = s.upstream.count();
    let r = s.send("DELETE", "/orders/7", &[]).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.headers["allow"], "GET");
    assert_eq!(r.reason(), "method_not_allowed");
    let r = s.send("DELETE", "/nowhere", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(s.upstream.count(), before);
}
