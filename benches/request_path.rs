//! The request path's stages, each next to its baseline:
//! - verify: claimgate's whole verification and a verified-token cache hit
//!   vs two bare signature checks of the same token: jsonwebtoken's
//!   crypto::verify (parses the key on every call) and aws-lc-rs on a key
//!   parsed once, which is what claimgate now does;
//! - decide: the demo's `orders-read` rule, and a tenant rule (tenant from
//!   the path looked up in the tenant map, levels, scope, regex), over
//!   realistic claims;
//! - route: lookup among 10 vs 1,000 routes;
//! - inject: rendering five headers;
//! - core: the whole decision core (`claimgate::decision::decide`) for a
//!   cached token, the tenant rule and five headers: what every front door
//!   (proxy, forward-auth, ext_authz) pays before its own I/O.
//!
//! `cargo bench --bench request_path`

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use claimgate::config::{compile, PolicySource};
use claimgate::jwks::Algorithm;
use claimgate::jwks::{Fetcher, JwksStore, KeySource};
use claimgate::metrics::Metrics;
use claimgate::policy::rule::{Ctx, RequestFacts};
use claimgate::snapshot::Snapshot;
use claimgate::testkit::keys::{jwks, SigningKey};
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;
use std::hint::black_box;

const ISS: &str = "https://idp.claimgate.demo";

fn snapshot(policy: &str, keys: &[&SigningKey], dir: &tempfile::TempDir) -> Snapshot {
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, jwks(keys.iter().copied()).to_string()).unwrap();
    let store = Arc::new(JwksStore::new(
        "demo".into(),
        KeySource::File(jwks_path.clone()),
        claimgate::jwks::keys::ASYMMETRIC.to_vec(),
        claimgate::jwks::Refresh {
            min_interval: Duration::from_secs(60),
            max_interval: Duration::from_secs(3600),
            max_stale: Duration::from_secs(86400),
            interval: Duration::from_secs(3600),
            unknown_kid_cooldown: Duration::from_secs(30),
        },
        Fetcher::default(),
        Arc::new(Metrics::new()),
    ));
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(store.refresh())
        .unwrap();
    let vars: HashMap<String, String> = [
        (
            "DEMO_UPSTREAM".to_string(),
            "http://127.0.0.1:1".to_string(),
        ),
        (
            "DEMO_JWKS_URI".to_string(),
            "http://127.0.0.1:1/jwks.json".to_string(),
        ),
    ]
    .into();
    let mut stores =
        |_: &str, _: &KeySource, _: &[Algorithm], _: claimgate::jwks::Refresh| store.clone();
    let sources = [PolicySource {
        path: PathBuf::from("bench.yaml"),
        text: policy.to_string(),
    }];
    compile(&sources, &vars, &mut stores, 8192, 1).unwrap()
}

/// The core's context for a bench: the cache, no client, untraced.
fn bench_ctx<'s>(
    snapshot: &'s Snapshot,
    cache: &'s claimgate::token::TokenCache,
    now: u64,
    quotas: Option<&'s claimgate::quota::Quotas>,
) -> claimgate::decision::Ctx<'s> {
    claimgate::decision::Ctx {
        snapshot,
        cache: Some(cache),
        now,
        quotas,
        client: None,
        marks: None,
    }
}

fn claims() -> serde_json::Value {
    let now = claimgate::jwks::unix_now();
    json!({
        "iss": ISS, "aud": "orders-api", "sub": "bob", "iat": now, "nbf": now, "exp": now + 3600,
        "scope": "order profile", "subscription_level": "gold", "given_name": "Bob",
        "family_name": "Gold", "metadata": {"region": "eu-west"},
        "tenants": {"acme": {"roles": ["analyst"]}, "globex": {"roles": ["admin", "viewer"]}}
    })
}

fn verify(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let es = SigningKey::generate(Algorithm::ES256, "es");
    let rs = SigningKey::generate(Algorithm::RS256, "rs");
    let snap = snapshot(claimgate::demo::POLICY, &[&es, &rs], &dir);
    let issuer = snap.issuers.by_name("demo").unwrap().clone();
    let keys = issuer.keys.current().unwrap();
    let now = claimgate::jwks::unix_now();
    for key in [&es, &rs] {
        let token = key.sign(&claims());
        let name = format!("{:?}", key.alg);
        let (message, sig) = token.rsplit_once('.').unwrap();
        let selected = keys.select(Some(&key.kid), key.alg).next().unwrap();
        // jsonwebtoken's own check, from the same public JWK.
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.jwk().clone()).unwrap();
        let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let jwt_alg: jsonwebtoken::Algorithm = key.alg.name().parse().unwrap();
        let parsed = selected.parsed(key.alg).unwrap();
        let sig_bytes =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig).unwrap();
        let mut g = c.benchmark_group(format!("verify/{name}"));
        // The floor: aws-lc-rs on a key parsed once and a decoded signature.
        g.bench_function("bare_parsed_signature", |b| {
            b.iter(|| {
                parsed
                    .verify_sig(message.as_bytes(), black_box(&sig_bytes))
                    .unwrap()
            })
        });
        g.bench_function("bare_signature", |b| {
            b.iter(|| {
                jsonwebtoken::crypto::verify(black_box(sig), message.as_bytes(), &decoding, jwt_alg)
                    .unwrap()
            })
        });
        let cache = claimgate::token::TokenCache::new(10_000);
        let verified = claimgate::token::verify(&token, &snap.issuers, None, 8192, now).unwrap();
        cache.insert(&token, &verified);
        g.bench_function("claimgate_cache_hit", |b| {
            b.iter(|| {
                cache
                    .get(black_box(&token), &snap.issuers, None, now)
                    .unwrap()
            })
        });
        g.bench_function("claimgate_full", |b| {
            b.iter(|| {
                claimgate::token::verify(black_box(&token), &snap.issuers, None, 8192, now).unwrap()
            })
        });
        g.finish();
    }
}

/// Benches the `allow` rule of the route `path` takes in `snap`, over
/// `claims`, as the proxy evaluates it.
fn bench_rule(
    c: &mut Criterion,
    name: &str,
    snap: &Snapshot,
    path: &[&str],
    claims: &serde_json::Value,
) {
    let segments: Vec<std::borrow::Cow<str>> = path.iter().map(|s| (*s).into()).collect();
    let m = snap
        .router
        .find("api", &http::Method::GET, &segments)
        .unwrap();
    let rule = m.route.allow.as_ref().unwrap();
    let issuer = snap.issuers.by_name("demo").unwrap();
    let headers = http::HeaderMap::new();
    let facts = RequestFacts {
        method: &http::Method::GET,
        host: "api",
        params: &m.params,
        headers: &headers,
        client: None,
    };
    let ctx = Ctx {
        claims,
        at: &issuer.locations,
        request: &facts,
    };
    assert!(rule.eval(&ctx), "{name}: the rule must hold");
    c.bench_function(name, |b| b.iter(|| rule.eval(black_box(&ctx))));
}

/// A realistic tenant policy: nested claims, the tenant from the path
/// looked up in the tenant map, levels, a scope, a regex.
const TENANT_ROUTES: &str = r#"levels:
  plan: [free, silver, gold, platinum]
routes:
  - name: tenant-reports
    match: { path: "/tenants/{tenant}/reports/**" }
    upstream: u
    allow:
      any:
        - role: { any_of: [superadmin, support] }
        - all:
            - tenant_role: { tenant: "{tenant}", any_of: [admin, analyst] }
            - claim: $.subscription_level
              at_least: gold
              levels: plan
            - scope: order
            - claim: $.metadata.region
              matches: "eu-[a-z]+"
"#;

fn decide_and_inject(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let es = SigningKey::generate(Algorithm::ES256, "es");
    let claims = claims();
    let demo = snapshot(claimgate::demo::POLICY, &[&es], &dir);
    bench_rule(
        c,
        "decide/orders_read_rule",
        &demo,
        &["orders", "7"],
        &claims,
    );
    let tenant = snapshot(&format!("{PREAMBLE}{TENANT_ROUTES}"), &[&es], &dir);
    bench_rule(
        c,
        "decide/tenant_reports_rule",
        &tenant,
        &["tenants", "acme", "reports", "q3"],
        &claims,
    );

    let segments: Vec<std::borrow::Cow<str>> = vec!["orders".into(), "7".into()];
    let m = demo
        .router
        .find("api", &http::Method::GET, &segments)
        .unwrap();
    let route = m.route;
    let headers = http::HeaderMap::new();
    let facts = RequestFacts {
        method: &http::Method::GET,
        host: "api",
        params: &m.params,
        headers: &headers,
        client: None,
    };
    assert_eq!(route.forward.len(), 5);
    c.bench_function("inject/render_5_headers", |b| {
        b.iter(|| {
            for t in &route.forward {
                black_box(t.render(black_box(&claims), &facts).unwrap());
            }
        })
    });
}

/// One issuer `demo` and one upstream `u`, for generated policies.
const PREAMBLE: &str = "issuers:\n  demo:\n    issuer: https://idp.claimgate.demo\n    audience: [a]\n    jwks_uri: ${DEMO_JWKS_URI}\n    allow_http: true\nupstreams:\n  u: ${DEMO_UPSTREAM}\n";

fn routes(n: usize) -> String {
    let mut p = format!("{PREAMBLE}routes:\n");
    for i in 0..n {
        p.push_str(&format!(
            "  - name: r{i}\n    match: {{ path: \"/svc{i}/items/{{id}}/parts/**\" }}\n    upstream: u\n"
        ));
    }
    p
}

fn route(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let es = SigningKey::generate(Algorithm::ES256, "es");
    let mut g = c.benchmark_group("route");
    for n in [10usize, 1000, 10_000] {
        let snap = snapshot(&routes(n), &[&es], &dir);
        let path = format!("/svc{}/items/42/parts/a/b", n / 2);
        g.bench_function(format!("find_among_{n}"), |b| {
            b.iter(|| {
                let segs = claimgate::policy::canonical_segments(black_box(&path)).unwrap();
                black_box(snap.router.find("api", &http::Method::GET, &segs).is_some())
            })
        });
    }
    g.finish();
}

/// The verified-token cache holding 10k / 100k / 1M entries: a hit, and an
/// insert into the full cache (which evicts).
fn cache(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let rs = SigningKey::generate(Algorithm::RS256, "rs");
    let snap = snapshot(claimgate::demo::POLICY, &[&rs], &dir);
    let now = claimgate::jwks::unix_now();
    let token = rs.sign(&claims());
    let verified = claimgate::token::verify(&token, &snap.issuers, None, 8192, now).unwrap();
    let mut g = c.benchmark_group("cache");
    // A hit from the compact tier alone: the claims parsed.
    let compact = claimgate::token::TokenCache::with_hot(10, 0);
    compact.insert(&token, &verified);
    g.bench_function("hit_compact_tier", |b| {
        b.iter(|| {
            compact
                .get(black_box(&token), &snap.issuers, None, now)
                .unwrap()
        })
    });
    for n in [10_000usize, 100_000, 1_000_000] {
        let cache = claimgate::token::TokenCache::new(n);
        // Distinct keys of a token's length; one shared verification.
        for i in 0..n {
            cache.insert(&format!("{token}{i}"), &verified);
        }
        cache.insert(&token, &verified);
        g.bench_function(format!("hit_among_{n}"), |b| {
            b.iter(|| {
                cache
                    .get(black_box(&token), &snap.issuers, None, now)
                    .unwrap()
            })
        });
        let mut i = n;
        g.bench_function(format!("insert_into_full_{n}"), |b| {
            b.iter(|| {
                i += 1;
                cache.insert(black_box(&format!("{token}{i}")), &verified)
            })
        });
    }
    g.finish();
}

/// The tenant rule with five claim headers, for the whole core.
const CORE_ROUTES: &str = r#"levels:
  plan: [free, silver, gold, platinum]
routes:
  - name: tenant-reports
    match: { path: "/tenants/{tenant}/reports/**" }
    upstream: u
    allow:
      all:
        - tenant_role: { tenant: "{tenant}", any_of: [admin, analyst] }
        - claim: $.subscription_level
          at_least: gold
          levels: plan
        - scope: order
        - claim: $.metadata.region
          matches: "eu-[a-z]+"
    forward:
      X-User-Id: "{{ $.sub }}"
      X-Tenant: "{{ {tenant} }}"
      X-Plan: "{{ $.subscription_level }}"
      X-Region: "{{ $.metadata.region || 'global' }}"
      X-Name: "{{ $.given_name }} {{ $.family_name }}"
"#;

fn core(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let es = SigningKey::generate(Algorithm::ES256, "es");
    let mut claims = claims();
    claims["aud"] = json!("a");
    let token = es.sign(&claims);
    let snap = snapshot(&format!("{PREAMBLE}{CORE_ROUTES}"), &[&es], &dir);
    let cache = claimgate::token::TokenCache::new(10_000);
    let now = claimgate::jwks::unix_now();
    let verified = claimgate::token::verify(&token, &snap.issuers, None, 8192, now).unwrap();
    cache.insert(&token, &verified);
    let ctx = bench_ctx(&snap, &cache, now, None);
    let head = http::Request::get("/tenants/acme/reports/q3?page=2")
        .header("host", "api.example")
        .header("authorization", format!("Bearer {token}"))
        .header("accept", "application/json")
        .header("user-agent", "bench/1.0")
        .header("x-user-id", "spoofed")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The core never waits on a cached token: the runtime only polls once.
    let outcome = rt.block_on(async {
        let mut h = head.clone();
        let o = claimgate::decision::decide(&ctx, &mut h, None).await;
        (o.cache_hit, o.verdict.map(|a| a.set.len()).ok())
    });
    assert_eq!(outcome, (Some(true), Some(5)));
    c.bench_function("core/decide_cached_tenant_rule_5_headers", |b| {
        b.iter(|| {
            let mut h = head.clone();
            let o = rt.block_on(claimgate::decision::decide(&ctx, &mut h, None));
            black_box(o.verdict.is_ok())
        })
    });
    // The same request with an opaque token whose introspection answer is
    // cached (SECURITY.md rule 22): it must cost no more than the JWT hit.
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret").unwrap();
    let answer = json!({"active": true, "aud": "a", "sub": "bob", "scope": "order profile",
        "subscription_level": "gold", "given_name": "Bob", "family_name": "Gold",
        "metadata": {"region": "eu-west"}, "exp": now + 3600,
        "tenants": {"acme": {"roles": ["analyst"]}}})
    .to_string();
    let (endpoint, _server) = rt.block_on(async move {
        claimgate::testkit::servers::serve(([127, 0, 0, 1], 0).into(), move |_req| {
            let answer = answer.clone();
            async move {
                http::Response::builder()
                    .header("content-type", "application/json")
                    .body(http_body_util::Full::new(bytes::Bytes::from(answer)))
                    .unwrap()
            }
        })
        .await
        .unwrap()
    });
    let introspecting = PREAMBLE.replace(
        "    allow_http: true\n",
        &format!(
            "    allow_http: true\n    introspection:\n      endpoint: http://{endpoint}/introspect\n      client_id: bench\n      client_secret: {{ file: {} }}\n",
            secret.display()
        ),
    );
    let snap_i = snapshot(&format!("{introspecting}{CORE_ROUTES}"), &[&es], &dir);
    let ctx_i = bench_ctx(&snap_i, &cache, now, None);
    let mut opaque_head = head.clone();
    opaque_head.headers.insert(
        "authorization",
        http::HeaderValue::from_static("Bearer an-opaque-reference-token-0123456789"),
    );
    let first = rt.block_on(async {
        let mut h = opaque_head.clone();
        let o = claimgate::decision::decide(&ctx_i, &mut h, None).await;
        o.verdict.map(|a| a.set.len()).map_err(|e| e.reason())
    });
    assert_eq!(first, Ok(5), "the opaque token is introspected and allowed");
    c.bench_function("core/decide_cached_opaque_token_same_rule", |b| {
        b.iter(|| {
            let mut h = opaque_head.clone();
            let o = rt.block_on(claimgate::decision::decide(&ctx_i, &mut h, None));
            black_box(o.verdict.is_ok())
        })
    });
    // The same route with a local rate limit by plan (never reached: the
    // rate is far above the bench's), against the route without limits.
    let limited_routes = CORE_ROUTES.replace(
        "    upstream: u\n",
        "    upstream: u\n    rate_limits:\n      - { name: per-user, key: \"{{ $.sub }}\", by: $.subscription_level, limits: { gold: 1000000000/s }, default: 10/s }\n",
    );
    let snap_l = snapshot(&format!("{PREAMBLE}{limited_routes}"), &[&es], &dir);
    let quotas = claimgate::quota::Quotas::new(
        1_000_000,
        None,
        std::sync::Arc::new(claimgate::metrics::Metrics::new()),
    );
    let ctx_l = bench_ctx(&snap_l, &cache, now, Some(&quotas));
    let limited = rt.block_on(async {
        let mut h = head.clone();
        let o = claimgate::decision::decide(&ctx_l, &mut h, None).await;
        o.verdict.map(|a| a.set.len()).map_err(|e| e.reason())
    });
    assert_eq!(limited, Ok(5), "allowed under the limit");
    c.bench_function("core/decide_cached_tenant_rule_local_rate_limit", |b| {
        b.iter(|| {
            let mut h = head.clone();
            let o = rt.block_on(claimgate::decision::decide(&ctx_l, &mut h, None));
            black_box(o.verdict.is_ok())
        })
    });
    // Its floor: copying the request head, which every iteration above does.
    c.bench_function("core/baseline_clone_head", |b| {
        b.iter(|| black_box(head.clone()))
    });
}

/// A policy of `n` issuers (the token's is the last), each with its own
/// `iss` and audience, and one route any of them may use.
fn issuers_policy(n: usize) -> String {
    let mut p = String::from("issuers:\n");
    for i in 0..n {
        let iss = if i + 1 == n {
            ISS.to_string()
        } else {
            format!("https://idp{i}.example")
        };
        p.push_str(&format!(
            "  i{i}:\n    issuer: {iss}\n    audience: [orders-api]\n    jwks_uri: ${{DEMO_JWKS_URI}}\n    allow_http: true\n"
        ));
    }
    p.push_str("upstreams: { app: \"${DEMO_UPSTREAM}\" }\nroutes:\n  - name: any\n    match: { path: \"/**\" }\n    upstream: app\n");
    p
}

/// The decision with a cached token, and a full verification, among 1, 10
/// and 100 issuers (Envoy users run 50+): flat if issuer lookup is by `iss`.
fn issuers(c: &mut Criterion) {
    let es = SigningKey::generate(Algorithm::ES256, "es");
    let token = es.sign(&claims());
    let now = claimgate::jwks::unix_now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let head = http::Request::get("/orders/7")
        .header("host", "api.example")
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .unwrap()
        .into_parts()
        .0;
    let mut g = c.benchmark_group("issuers");
    for n in [1, 10, 100] {
        let dir = tempfile::tempdir().unwrap();
        let snap = snapshot(&issuers_policy(n), &[&es], &dir);
        let cache = claimgate::token::TokenCache::new(10_000);
        let ctx = bench_ctx(&snap, &cache, now, None);
        let allowed = rt.block_on(async {
            let mut h = head.clone();
            claimgate::decision::decide(&ctx, &mut h, None)
                .await
                .verdict
                .is_ok()
        });
        assert!(allowed, "the token of the last of {n} issuers is allowed");
        g.bench_function(format!("decide_cached_among_{n}"), |b| {
            b.iter(|| {
                let mut h = head.clone();
                let o = rt.block_on(claimgate::decision::decide(&ctx, &mut h, None));
                black_box(o.verdict.is_ok())
            })
        });
        g.bench_function(format!("verify_full_among_{n}"), |b| {
            b.iter(|| {
                claimgate::token::verify(black_box(&token), &snap.issuers, None, 8192, now).unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    verify,
    decide_and_inject,
    route,
    cache,
    core,
    issuers
);
criterion_main!(benches);
