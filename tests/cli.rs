//! The `claimgate` binary: `validate` runs the compile code and reports
//! every error with its file and line.

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
