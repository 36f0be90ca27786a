//! The shape the code promises (docs/DESIGN.md, STYLE): no source file over
//! 500 lines of non-test code, no inline test module over 100 lines (larger
//! ones live in a sibling `tests.rs`), and `forward`, `token` and `jwks`
//! never reach into `policy`: what they share is the `claims` leaf module.

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn all() -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect()
}

#[test]
fn no_file_is_over_500_lines_of_code_nor_holds_a_big_test_module() {
    let mut over = Vec::new();
    for (path, text) in all() {
        let lines: Vec<&str> = text.lines().collect();
        let test_at = lines.iter().position(|l| l.trim() == "#[cfg(test)]");
        let code = test_at.unwrap_or(lines.len());
        let is_test_file = path.ends_with("tests.rs") || path.ends_with("props.rs");
        if !is_test_file && code > 500 {
            over.push(format!("{}: {code} lines of code", path.display()));
        }
        if let Some(at) = test_at {
            let inline = lines.len() - at;
            if inline > 100 {
                over.push(format!(
                    "{}: an inline test module of {inline} lines",
                    path.display()
                ));
            }
        }
    }
    assert!(
        over.is_empty(),
        "split these along a seam:\n{}",
        over.join("\n")
    );
}

#[test]
fn the_stages_below_the_core_share_only_the_claims_leaf() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut reaching = Vec::new();
    for (path, text) in all() {
        let rel = path.strip_prefix(&src).unwrap();
        let leaf = ["claims", "forward", "token", "jwks"]
            .iter()
            .any(|m| rel.starts_with(m));
        if leaf
            && !path.ends_with("tests.rs")
            && (text.contains("crate::policy")
                || text.contains("crate::decision")
                || text.contains("crate::proxy"))
        {
            reaching.push(rel.display().to_string());
        }
    }
    assert!(reaching.is_empty(), "reach above their layer: {reaching:?}");
}
