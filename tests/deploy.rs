//! The Kubernetes deployment as shipped (`deploy/kustomize`): every overlay
//! renders with `kubectl kustomize`; every object validates strictly
//! against the schemas of Kubernetes 1.29 and the newest release that
//! `kubernetes-validate` knows (objects of CRDs — ServiceMonitor,
//! PodMonitor, Istio, Envoy Gateway — have no schema offline and are only
//! rendered); every pod template passes the restricted Pod Security
//! Standard (`deploy/check_pss.py`); and `claimgate validate` accepts each
//! overlay's process file and policies. `scripts/install-deps.sh` installs
//! kubectl (Debian) and kubernetes-validate (the virtualenv).

use std::path::{Path, PathBuf};
use std::process::Command;

const OVERLAYS: [&str; 4] = ["edge", "sidecar", "hasura", "ext-authz"];
const VERSIONS: [&str; 2] = ["1.29.0", "1.37.0"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (run the tests with `bash scripts/test.sh`)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn render(overlay: &str, into: &Path) -> PathBuf {
    let dir = root().join("deploy/kustomize/overlays").join(overlay);
    let (ok, yaml) = run(Command::new("kubectl").arg("kustomize").arg(&dir));
    assert!(ok, "{overlay} does not render: {yaml}");
    let file = into.join(format!("{overlay}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    file
}

#[test]
fn every_overlay_renders_and_validates_strictly() {
    let tmp = tempfile::tempdir().unwrap();
    for overlay in OVERLAYS {
        let file = render(overlay, tmp.path());
        for version in VERSIONS {
            let (ok, out) = run(Command::new("kubernetes-validate")
                .args(["--strict", "--quiet", "-k", version])
                .arg(&file));
            let errors: Vec<&str> = out
                .lines()
                .filter(|l| !l.starts_with("WARN") || !l.contains("Couldn't find schema"))
                .filter(|l| !l.trim().is_empty())
                .collect();
            assert!(ok && errors.is_empty(), "{overlay} on {version}:\n{out}");
        }
    }
}

#[test]
fn every_pod_meets_the_restricted_pod_security_standard() {
    let tmp = tempfile::tempdir().unwrap();
    for overlay in OVERLAYS {
        let file = render(overlay, tmp.path());
        let (ok, out) = run(Command::new("python3")
            .arg(root().join("deploy/check_pss.py"))
            .arg(&file));
        assert!(ok, "{overlay}:\n{out}");
        assert!(out.contains("0 problems"), "{out}");
    }
}

/// The process file and policies each overlay ships load with the same
/// code a reload runs (the ConfigMaps' data, written out; mount paths
/// pointed at the copies).
#[test]
fn claimgate_validate_accepts_every_overlays_configuration() {
    let tmp = tempfile::tempdir().unwrap();
    for overlay in OVERLAYS {
        let file = render(overlay, tmp.path());
        let out_dir = tmp.path().join(format!("{overlay}-config"));
        let script = r#"
import os, sys, yaml
out = sys.argv[2]
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d.get("kind") == "ConfigMap":
        name = d["metadata"]["name"]
        sub = "process" if name.startswith("claimgate-process") else "policies"
        os.makedirs(os.path.join(out, sub), exist_ok=True)
        for k, v in d.get("data", {}).items():
            open(os.path.join(out, sub, k), "w").write(v)
"#;
        let (ok, out) = run(Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&file)
            .arg(&out_dir));
        assert!(ok, "{out}");
        let process = out_dir.join("process/claimgate.yaml");
        let secret = tmp.path().join("admin-secret");
        std::fs::write(&secret, "s3cret").unwrap();
        let text = std::fs::read_to_string(&process).unwrap().replace(
            "/etc/claimgate/policies",
            &out_dir.join("policies").display().to_string(),
        );
        std::fs::write(&process, text).unwrap();
        for policy in std::fs::read_dir(out_dir.join("policies")).unwrap() {
            let p = policy.unwrap().path();
            let text = std::fs::read_to_string(&p).unwrap().replace(
                "/var/run/secrets/hasura/admin-secret",
                &secret.display().to_string(),
            );
            std::fs::write(&p, text).unwrap();
        }
        let (ok, out) = run(Command::new(env!("CARGO_BIN_EXE_claimgate"))
            .args(["validate", "--config"])
            .arg(&process));
        assert!(ok, "{overlay}: {out}");
    }
}
