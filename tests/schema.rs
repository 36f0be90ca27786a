//! `claimgate schema` and `claimgate completions`: the JSON Schemas of both
//! config files accept every shipped file and refuse a misspelt key, as a
//! real validator (Python `jsonschema`, draft 2020-12) says; the bash
//! completion script loads in a real bash.

use std::path::Path;
use std::process::Command;

fn claimgate(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_claimgate"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs tests/interop/schema_check.py: (success, its output).
fn check(schema: &Path, files: &[&Path]) -> (bool, String) {
    let out = Command::new("python3")
        .arg("tests/interop/schema_check.py")
        .arg(schema)
        .args(files)
        .output()
        .expect("python3 (scripts/test.sh puts .venv first on PATH)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn the_schemas_accept_the_shipped_files_and_refuse_a_misspelt_key() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.schema.json");
    let process = dir.path().join("process.schema.json");
    std::fs::write(&policy, claimgate(&["schema", "policy"])).unwrap();
    std::fs::write(&process, claimgate(&["schema", "process"])).unwrap();
    for f in [&policy, &process] {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap();
        assert_eq!(v["$schema"], "https://json-schema.org/draft/2020-12/schema");
        assert_eq!(v["additionalProperties"], false, "unknown keys are errors");
    }

    let mut policies: Vec<std::path::PathBuf> = vec!["policies/demo/demo.yaml".into()];
    for e in std::fs::read_dir("policies/examples").unwrap() {
        let p = e.unwrap().path().join("policy.yaml");
        if p.exists() {
            policies.push(p);
        }
    }
    let refs: Vec<&Path> = policies.iter().map(|p| p.as_path()).collect();
    let (ok, out) = check(&policy, &refs);
    assert!(ok, "{out}");
    assert_eq!(out.matches("\nok ").count() + 1, policies.len(), "{out}");

    let processes = [
        Path::new("policies/examples/claimgate.yaml"),
        Path::new("deploy/kustomize/base/claimgate.yaml"),
        Path::new("deploy/kustomize/overlays/ext-authz/claimgate.yaml"),
    ];
    let (ok, out) = check(&process, &processes);
    assert!(ok, "{out}");

    // A misspelt key, and a policy file checked as a process file.
    let typo = dir.path().join("typo.yaml");
    std::fs::write(
        &typo,
        "issuers:\n  i:\n    issuer: https://i\n    audiense: a\n    jwks_uri: https://i/jwks\n",
    )
    .unwrap();
    let (ok, out) = check(&policy, &[&typo]);
    assert!(!ok, "{out}");
    assert!(out.contains("audiense"), "{out}");
    let (ok, out) = check(&process, &[Path::new("policies/demo/demo.yaml")]);
    assert!(!ok, "{out}");
}

#[test]
fn completions_load_in_bash_and_name_the_subcommands() {
    let script = claimgate(&["completions", "bash"]);
    assert!(script.contains("explain") && script.contains("validate"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("claimgate.bash");
    std::fs::write(&file, &script).unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && complete -p claimgate",
            file.display()
        ))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("claimgate"), "{said}");
    for shell in ["zsh", "fish"] {
        assert!(claimgate(&["completions", shell]).contains("explain"));
    }
}
