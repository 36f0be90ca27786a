//! The configuration mistakes a new user makes, each through the real
//! `claimgate` binary: the message names the file and line, says what is
//! wrong and what to do.

use std::path::Path;
use std::process::Command;

/// Runs `claimgate validate` on a process file and one policy file;
/// returns (exit code, stderr).
fn validate(process: &str, policy: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("p")).unwrap();
    std::fs::write(dir.path().join("claimgate.yaml"), process).unwrap();
    std::fs::write(dir.path().join("p/policy.yaml"), policy).unwrap();
    run(&dir.path().join("claimgate.yaml"))
}

fn run(config: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_claimgate"))
        .args(["validate", "--config"])
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

const ROUTE: &str = "upstreams: { u: \"http://127.0.0.1:1\" }\nroutes:\n  - name: r\n    match: { path: /r }\n    upstream: u\n    public: true\n";

#[test]
fn each_mistake_names_file_line_what_and_what_to_do() {
    let issuer = |extra: &str| {
        format!("issuers:\n  i:\n    issuer: https://i\n    audience: a\n    jwks_uri: https://i/jwks\n{extra}{ROUTE}")
    };
    // (what, process file, policy file, every text the message must have)
    let cases: Vec<(&str, String, String, Vec<&str>)> = vec![
        (
            "a misspelt key, with the closest valid one",
            "policies: ./p\n".into(),
            issuer("    leway: 30s\n"),
            vec!["/p/policy.yaml:6:5:", "unknown key `leway`", "did you mean `leeway`?"],
        ),
        (
            "every misspelt key of a file, not only the first",
            "policies: p\n".into(),
            format!("issuers:\n  i:\n    issuer: https://i\n    audience: a\n    jwks_uri: https://i/jwks\n    leway: 30s\n{ROUTE}    upstreem: u\n"),
            vec![
                "policy.yaml:6:5: unknown key `leway`",
                "policy.yaml:13:5: unknown key `upstreem`: did you mean `upstream`?",
                "2 error(s)",
            ],
        ),
        (
            "a policy file given as the process file",
            "x".into(),
            String::new(),
            vec!["unknown key `issuers`", "looks like a policy file", "--config takes the process file"],
        ),
        (
            "an unquoted {param} in a flow map",
            "policies: p\n".into(),
            "upstreams: { u: \"http://127.0.0.1:1\" }\nroutes:\n  - name: r\n    match: { path: /r/{id} }\n    upstream: u\n".into(),
            vec!["policy.yaml:4:", "needs quotes", "path: \"/orders/{id}\""],
        ),
        (
            "a rule reading a claim a client could have set",
            "policies: p\n".into(),
            issuer("").replace("    public: true\n", "    allow: { claim: $.nsec.role, equals: admin }\n"),
            vec!["policy.yaml:", "reads the untrusted claim `nsec`", "untrusted_claims", "a client could have set it"],
        ),
        (
            "a claim path without its `$`",
            "policies: p\n".into(),
            issuer("").replace("    public: true\n", "    allow: { claim: roles, equals: admin }\n"),
            vec!["policy.yaml:11:", "`roles` is not a claim path: write `$.roles`"],
        ),
        (
            "a duration with its parts in the wrong order",
            "policies: p\nlimits: { request_timeout: 30s1m }\n".into(),
            ROUTE.into(),
            vec!["claimgate.yaml:2:", "duration `30s1m`", "largest unit down"],
        ),
        (
            "a sample ratio out of range",
            "policies: p\ntracing: { otlp_endpoint: \"http://127.0.0.1:4317\", sample_ratio: 2 }\n".into(),
            ROUTE.into(),
            vec!["claimgate.yaml:2:", "tracing.sample_ratio 2 is not between 0.0 and 1.0"],
        ),
        (
            "an OTLP endpoint that is not a URL",
            "policies: p\ntracing: { otlp_endpoint: \"collector:4317\" }\n".into(),
            ROUTE.into(),
            vec!["tracing.otlp_endpoint `collector:4317`", "http://otel-collector:4317"],
        ),
    ];
    for (what, process, policy, want) in cases {
        let (code, err) = if process == "x" {
            // The policy file itself as --config.
            let dir = tempfile::tempdir().unwrap();
            let f = dir.path().join("policy.yaml");
            std::fs::write(&f, issuer("")).unwrap();
            run(&f)
        } else {
            validate(&process, &policy)
        };
        assert_eq!(code, 1, "{what}: {err}");
        for text in want {
            assert!(err.contains(text), "{what}: `{text}` not in:\n{err}");
        }
        // The location once, and no `./` in paths.
        assert!(!err.contains(" at line "), "{what}: {err}");
        assert!(!err.contains("/./"), "{what}: {err}");
    }
}

#[test]
fn durations_take_several_units() {
    let (code, err) = validate(
        "policies: p\nlimits: { request_timeout: 1m30s, drain_delay: 2s500ms }\n",
        ROUTE,
    );
    assert_eq!(code, 0, "{err}");
}

/// A port another process holds: the error says so and names the key to
/// change.
#[test]
fn a_busy_port_names_the_key_to_change() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("p")).unwrap();
    std::fs::write(dir.path().join("p/policy.yaml"), ROUTE).unwrap();
    std::fs::write(
        dir.path().join("claimgate.yaml"),
        format!("policies: p\nlisten: 127.0.0.1:0\nadmin_listen: 127.0.0.1:{port}\nreload: {{ watch: false, poll_interval: 0s }}\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_claimgate"))
        .args(["run", "--config"])
        .arg(dir.path().join("claimgate.yaml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "cannot listen on 127.0.0.1:{port} (`admin_listen`)"
        )),
        "{err}"
    );
    assert!(
        err.contains("set `admin_listen:` in the process file"),
        "{err}"
    );
}

/// The examples ship a process file, so that `--config` has one to take.
#[test]
fn the_shipped_example_process_file_validates() {
    let (code, err) = run(Path::new("policies/examples/claimgate.yaml"));
    assert_eq!(code, 0, "{err}");
}
