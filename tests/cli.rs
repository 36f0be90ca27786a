//! The `claimgate` binary: `validate` runs the compile code and reports
//! every error with its file and line.

mod common;

use std::process::Command;

fn claimgate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_claimgate"))
        .args(args)
        .env("DEMO_UPSTREAM", "http://127.0.0.1:3000")
        .env("DEMO_JWKS_URI", "http://127.0.0.1:1/jwks.json")
        .output()
        .expect("run claimgate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_names_file_and_line_of_every_error() {
    let (code, _, err) = claimgate(&[
        "validate",
        "--config",
        "tests/fixtures/bad-policy/claimgate.yaml",
    ]);
    assert_eq!(code, 1, "{err}");
    // The unknown key `alow` stops the file's parse: reported with its line.
    assert!(
        err.contains("tests/fixtures/bad-policy/policies/orders.yaml:20"),
        "{err}"
    );
    assert!(err.contains("alow"), "{err}");
}

#[test]
fn validate_reports_all_semantic_errors_at_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("p")).unwrap();
    std::fs::write(dir.path().join("claimgate.yaml"), "policies: p\n").unwrap();
    let policy = std::fs::read_to_string("tests/fixtures/bad-policy/policies/orders.yaml")
        .unwrap()
        .replace("    alow: {}\n", "");
    std::fs::write(dir.path().join("p/orders.yaml"), policy).unwrap();
    let config = dir.path().join("claimgate.yaml");
    let (code, _, err) = claimgate(&["validate", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    let file = dir.path().join("p/orders.yaml");
    let file = file.display();
    assert!(
        err.contains(&format!("{file}:3:")),
        "plain-http jwks_uri, issuer body line: {err}"
    );
    assert!(err.contains("allow_http"), "{err}");
    assert!(err.contains(&format!("{file}:11:")), "route line: {err}");
    assert!(err.contains("upstream `missing` is not defined"), "{err}");
    assert!(err.contains(&format!("{file}:15:")), "rule line: {err}");
    assert!(err.contains("untrusted claim `nsec`"), "{err}");
}

#[test]
fn validate_accepts_the_shipped_demo_policy() {
    let dir = tempfile::tempdir().unwrap();
    let policies = std::fs::canonicalize("policies/demo").unwrap();
    std::fs::write(
        dir.path().join("claimgate.yaml"),
        format!("policies: {}\n", policies.display()),
    )
    .unwrap();
    let config = dir.path().join("claimgate.yaml");
    let (code, out, err) = claimgate(&["validate", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok (1 policy files, 3 routes)"), "{out}");
}

#[test]
fn validate_reports_rule_language_errors_with_their_lines() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("p")).unwrap();
    std::fs::write(dir.path().join("claimgate.yaml"), "policies: p\n").unwrap();
    let policy = r#"issuers:
  i:
    issuer: https://i
    audience: a
    jwks_file: jwks.json
    claims: { roles: $.nsec.roles }
upstreams: { u: "http://127.0.0.1:1" }
routes:
  - name: a
    match: { path: "/t/{tenant}" }
    upstream: u
    allow:
      tenant_role: { tenant: "{tenat}", any_of: [admin] }
  - name: b
    match: { path: /b }
    upstream: u
    allow:
      claim: $.plan
      at_least: gold
      levels: nope
  - name: c
    match: { path: /c }
    upstream: u
    allow:
      claim: $.email
      matches: "(unclosed"
  - name: d
    match: { path: /d }
    upstream: u
    allow:
      role: { any_of: [a], all_of: [b] }
  - name: e
    match: { path: /e }
    upstream: u
    allow:
      claim: $.x
      gt: 1
      lt: 5
  - name: f
    match: { path: /f }
    upstream: u
    allow:
      claim: $.plan
      at_least: diamond
      levels: [free, gold]
"#;
    std::fs::write(dir.path().join("p/policy.yaml"), policy).unwrap();
    let config = dir.path().join("claimgate.yaml");
    let (code, _, err) = claimgate(&["validate", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    let file = dir.path().join("p/policy.yaml");
    let at = |line: usize, needle: &str| {
        let prefix = format!("{}:{line}:", file.display());
        assert!(
            err.lines()
                .any(|l| l.starts_with(&prefix) && l.contains(needle)),
            "no `{needle}` at line {line}:\n{err}"
        );
    };
    at(3, "untrusted claim `nsec`");
    at(13, "`{tenat}` names no request value");
    at(18, "levels `nope` are not defined");
    at(25, "is not a regex: unclosed group");
    at(31, "exactly one of `any_of` and `all_of`");
    at(36, "needs exactly one operator");
    at(43, "`diamond` is not one of the levels");
    assert!(err.ends_with("7 error(s)\n"), "{err}");
}

#[test]
fn policy_tests_of_the_shipped_examples_pass() {
    // A directory is searched at any depth; policy and process files in it
    // are not test files.
    let (code, out, err) = claimgate(&["test", "policies"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("test result: ok."), "{out}");
    assert!(!out.contains("FAILED"), "{out}");
    assert!(out.contains("; 0 file(s) broken"), "{out}");
    // Every example directory has its test file.
    for example in std::fs::read_dir("policies/examples").unwrap() {
        let example = example.unwrap();
        if !example.file_type().unwrap().is_dir() {
            continue;
        }
        let name = example.file_name();
        let name = name.to_str().unwrap();
        assert!(
            out.contains(&format!("policies/tests/{name}.yaml")),
            "{name} has no tests: {out}"
        );
    }
}

#[test]
fn a_failing_policy_test_exits_1_and_shows_the_trace() {
    let dir = tempfile::tempdir().unwrap();
    let examples = std::fs::canonicalize("policies/examples/subscription").unwrap();
    let file = dir.path().join("t.yaml");
    std::fs::write(
        &file,
        format!(
            "policies: {}\ncases:\n  - name: silver is not gold\n    request: GET /premium/x\n    claims: {{ sub: r1, subscription_level: silver }}\n    expect: {{ decision: allowed }}\n  - name: passes\n    request: GET /articles/a\n    claims: {{ sub: r1 }}\n    expect: {{ decision: allowed, headers: {{ X-Plan: free }} }}\n",
            examples.display()
        ),
    )
    .unwrap();
    let (code, out, _) = claimgate(&["test", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAILED  silver is not gold"), "{out}");
    assert!(out.contains(&format!("{}:3:", file.display())), "{out}");
    assert!(
        out.contains("expected decision `allowed`, got `denied`"),
        "{out}"
    );
    assert!(
        out.contains(r#"claim $.subscription_level at least "gold""#),
        "{out}"
    );
    assert!(out.contains(r#"found "silver""#), "{out}");
    assert!(out.contains("1 passed; 1 failed"), "{out}");
}

#[test]
fn explain_prints_route_trace_decision_and_headers() {
    let dir = tempfile::tempdir().unwrap();
    let policies = std::fs::canonicalize("policies/examples/descope-tenants").unwrap();
    let config = dir.path().join("claimgate.yaml");
    std::fs::write(&config, format!("policies: {}\n", policies.display())).unwrap();
    let claims = r#"{"sub":"u1","drn":"DS","tenants":{"acme":{"roles":["analyst"]}}}"#;
    let (code, out, err) = claimgate(&[
        "explain",
        "--config",
        config.to_str().unwrap(),
        "--request",
        "GET /tenants/acme/reports/q3",
        "--claims",
        claims,
        "-H",
        "X-User-Id: spoofed",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("tenant-reports"), "{out}");
    assert!(out.contains("params: tenant=acme"), "{out}");
    assert!(out.contains("removed   x-user-id"), "{out}");
    assert!(
        out.contains(r#"tenant_role in {tenant}: any of ["admin", "analyst"]"#),
        "{out}"
    );
    assert!(out.contains(r#"tenant "acme": found ["analyst"]"#), "{out}");
    assert!(
        out.contains("allowed: forwarded to upstream `app`"),
        "{out}"
    );
    assert!(out.contains("x-user-id: u1"), "{out}");

    let (code, out, _) = claimgate(&[
        "explain",
        "--config",
        config.to_str().unwrap(),
        "--request",
        "GET /tenants/globex/reports/q3",
        "--claims",
        claims,
        "--json",
    ]);
    assert_eq!(code, 0);
    let x: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(x["decision"], "denied");
    assert_eq!(x["status"], 403);
    assert_eq!(x["trace"][0]["held"], false);
}

#[test]
fn explain_verifies_a_token_against_the_issuers_keys() {
    use claimgate::testkit::keys::{jwks, SigningKey};
    let key = SigningKey::generate(claimgate::jwks::Algorithm::ES256, "k1");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("p")).unwrap();
    std::fs::write(dir.path().join("p/jwks.json"), jwks([&key]).to_string()).unwrap();
    std::fs::write(
        dir.path().join("p/policy.yaml"),
        "issuers:\n  i:\n    issuer: https://i\n    audience: a\n    jwks_file: jwks.json\n\
         upstreams: { u: \"http://127.0.0.1:1\" }\n\
         routes:\n  - name: r\n    match: { path: /r }\n    upstream: u\n    allow: { role: admin }\n",
    )
    .unwrap();
    let config = dir.path().join("claimgate.yaml");
    std::fs::write(&config, "policies: p\n").unwrap();
    let now = claimgate::jwks::unix_now();
    let sign = |exp: u64| {
        key.sign(&serde_json::json!({"iss": "https://i", "aud": "a", "sub": "s", "exp": exp, "roles": ["admin"]}))
    };
    let run = |token: &str| {
        claimgate(&[
            "explain",
            "--config",
            config.to_str().unwrap(),
            "--request",
            "GET /r",
            "--token",
            token,
        ])
    };
    let (code, out, err) = run(&sign(now + 600));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("token     verified"), "{out}");
    assert!(out.contains("allowed: forwarded"), "{out}");
    let (_, out, _) = run(&sign(now - 600));
    assert!(out.contains("refused: token expired"), "{out}");
    assert!(out.contains("unauthenticated: 401 expired"), "{out}");
}

/// `claimgate keys` shows a running instance's keys and reloads them. (The
/// CLI blocks this thread: the instance needs a runtime thread of its own.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_shows_and_reloads_a_running_instance() {
    let s = common::stack().await;
    let admin = s.running().admin_addr.to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_claimgate"))
        .args(["keys", "--admin", &admin])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("test  source: http://"), "{text}");
    assert!(text.contains("kid k1  EC  ES256"), "{text}");

    let k2 =
        claimgate::testkit::keys::SigningKey::generate(claimgate::jwks::Algorithm::ES256, "k2");
    s.idp.set(&claimgate::testkit::keys::jwks([&k2]));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_claimgate"))
        .args(["keys", "--admin", &admin, "--reload", "--issuer", "test"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.trim(), "test: 1 keys; added: [k2]; removed: [k1]");
}
