//! `claimgate test`: policy unit tests. A test file names a policy
//! directory and lists cases — a request with claims (or a token) and what
//! claimgate must do with it. Each case runs through [`explain`], the same
//! stages as the proxy, so a passing test is a statement about the proxy.
//!
//! ```yaml
//! policies: ../examples/orders        # relative to this file
//! vars: { UPSTREAM: http://127.0.0.1:3000 }   # for ${VAR}; else the environment
//! cases:
//!   - name: a customer reads their own order
//!     request: GET /orders/7/owner/alice
//!     claims: { sub: alice, scope: order }   # or token: ..., or
//!     # introspection: { active: true, aud: api, ... } (an RFC 7662 answer)
//!     expect:
//!       decision: allowed
//!       headers: { X-User-Id: alice }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::Deserialize;
use serde_json::{Map, Value};
use serde_saphyr::Spanned;

use crate::app::App;
use crate::config::schema::origin;
use crate::config::{yaml, Limits, PolicySource};
use crate::explain::{explain, Case, Credential, Explanation};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    /// The policy directory, relative to the test file.
    policies: PathBuf,
    #[serde(default)]
    vars: BTreeMap<String, String>,
    /// Unix time the cases run at (for tokens); now when absent.
    now: Option<u64>,
    cases: Vec<Spanned<CaseDoc>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseDoc {
    name: String,
    /// `METHOD /path?query`.
    request: String,
    host: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// The issuer the claims are for (by name); else by `iss`, else the only one.
    issuer: Option<String>,
    claims: Option<Map<String, Value>>,
    token: Option<String>,
    /// An introspection answer (RFC 7662 JSON), as the issuer's endpoint
    /// would give it for an opaque token.
    introspection: Option<Map<String, Value>>,
    expect: ExpectDoc,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectDoc {
    /// `allowed`, `public`, `denied`, `unauthenticated`, `bad_request`,
    /// `no_route`, `unavailable`.
    decision: Option<String>,
    status: Option<u16>,
    route: Option<String>,
    reason: Option<String>,
    /// Headers the upstream must receive, with these exact values.
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Headers the upstream must not receive.
    #[serde(default)]
    absent: Vec<String>,
    /// Rate limits the request falls under, as `name: plan`
    /// (e.g. `per-user: gold`).
    #[serde(default)]
    rate_limits: Vec<String>,
}

/// The outcome of a run.
#[derive(Debug, Default)]
pub struct Report {
    pub passed: usize,
    pub failed: usize,
    /// Files that could not be run at all (bad YAML, policies that do not
    /// compile).
    pub broken: usize,
    pub output: String,
}

impl Report {
    pub fn success(&self) -> bool {
        self.failed == 0 && self.broken == 0 && self.passed > 0
    }
}

/// The test files under `dir`, at any depth: `*.yaml` / `*.yml` files with
/// top-level `policies:` and `cases:` (policy files beside them are not
/// test files and are passed over).
fn find_test_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for path in entries.filter_map(Result::ok).map(|e| e.path()) {
        if path.is_dir() {
            find_test_files(&path, found);
            continue;
        }
        let yaml = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        );
        let is_test = |text: String| {
            let top = |key: &str| text.lines().any(|l| l.starts_with(key));
            top("cases:") && top("policies:")
        };
        if yaml && std::fs::read_to_string(&path).is_ok_and(is_test) {
            found.push(path);
        }
    }
}

/// Runs every test file of `paths` (files, or directories searched at any
/// depth for test files).
pub async fn run(paths: &[PathBuf]) -> Report {
    let mut report = Report::default();
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found = Vec::new();
            find_test_files(p, &mut found);
            found.sort();
            if found.is_empty() {
                report.broken += 1;
                report.output.push_str(&format!(
                    "{}: no test files (*.yaml with `cases:`, in it or below)\n",
                    p.display()
                ));
            }
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    for file in files {
        run_file(&file, &mut report).await;
    }
    let verdict = if report.success() { "ok" } else { "FAILED" };
    report.output.push_str(&format!(
        "\ntest result: {verdict}. {} passed; {} failed; {} file(s) broken\n",
        report.passed, report.failed, report.broken
    ));
    report
}

async fn run_file(file: &Path, report: &mut Report) {
    report.output.push_str(&format!("{}\n", file.display()));
    let broken = |report: &mut Report, msg: String| {
        report.broken += 1;
        report.output.push_str(&format!("  error: {msg}\n"));
    };
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => return broken(report, format!("{}: cannot read: {e}", file.display())),
    };
    let doc: TestFile = match yaml::parse(file, &text) {
        Ok(d) => d,
        Err(e) => {
            let all: Vec<String> = e.iter().map(ToString::to_string).collect();
            return broken(report, all.join("\n"));
        }
    };
    let dir = file.parent().unwrap_or(Path::new(".")).join(&doc.policies);
    let vars: HashMap<String, String> = doc.vars.into_iter().collect();
    let app = PolicySource::read_dir(&dir).and_then(|sources| {
        App::new(
            Limits::default(),
            Some(dir.clone()),
            &sources,
            Box::new(vars),
        )
    });
    let app = match app {
        Ok(a) => a,
        Err(errs) => return broken(report, format!("the policies do not load:\n{errs}")),
    };
    // Keys loaded at once, as `explain --token` loads them: a load that
    // fails says why instead of every token case waiting 10 s for it.
    if doc.cases.iter().any(|c| c.value.token.is_some()) {
        for (issuer, why) in crate::explain::load_keys(&app.snapshot()).await {
            report.output.push_str(&format!(
                "{}: issuer `{issuer}`: keys did not load: {why}\n",
                file.display()
            ));
        }
    }
    let snapshot = app.snapshot();
    let now = doc.now.unwrap_or_else(crate::jwks::unix_now);
    for case in &doc.cases {
        let at = origin(file, case);
        let c = &case.value;
        let failures = match build_case(c) {
            Ok(built) => check(&c.expect, &explain(&snapshot, &built, now).await),
            Err(e) => Err((vec![e], None)),
        };
        match failures {
            Ok(()) => {
                report.passed += 1;
                report.output.push_str(&format!("  ok      {}\n", c.name));
            }
            Err((why, explanation)) => {
                report.failed += 1;
                report
                    .output
                    .push_str(&format!("  FAILED  {}  ({at})\n", c.name));
                for w in why {
                    report.output.push_str(&format!("          - {w}\n"));
                }
                if let Some(x) = explanation {
                    for l in x.to_text().lines() {
                        report.output.push_str(&format!("          | {l}\n"));
                    }
                }
            }
        }
    }
}

fn build_case(c: &CaseDoc) -> Result<Case, String> {
    let (method, path) = parse_request(&c.request)?;
    let mut headers = HeaderMap::new();
    for (k, v) in &c.headers {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("`{k}` is not a header name"))?;
        let value = HeaderValue::from_str(v).map_err(|_| format!("header `{k}`: bad value"))?;
        headers.append(name, value);
    }
    let credential = match (&c.claims, &c.token, &c.introspection) {
        (Some(claims), None, None) => Credential::Claims {
            claims: claims.clone(),
            issuer: c.issuer.clone(),
        },
        (None, Some(t), None) => Credential::Token(t.clone()),
        (None, None, Some(answer)) => Credential::Introspection {
            answer: answer.clone(),
            issuer: c.issuer.clone(),
        },
        (None, None, None) => Credential::Headers,
        _ => return Err("give one of `claims`, `token` and `introspection`".into()),
    };
    Ok(Case {
        method,
        path,
        host: c.host.clone().unwrap_or_else(|| "localhost".into()),
        headers,
        credential,
    })
}

/// `GET /orders/7` → the method and the path.
pub fn parse_request(text: &str) -> Result<(Method, String), String> {
    let mut parts = text.split_whitespace();
    let (Some(m), Some(p), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!(
            "request `{text}`: write it as `METHOD /path`, e.g. `GET /orders/7`"
        ));
    };
    let method = Method::from_bytes(m.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("`{m}` is not an HTTP method"))?;
    if !p.starts_with('/') {
        return Err(format!("request `{text}`: the path must start with `/`"));
    }
    Ok((method, p.to_string()))
}

type Failure = (Vec<String>, Option<Box<Explanation>>);

fn check(want: &ExpectDoc, got: &Explanation) -> Result<(), Failure> {
    let mut why = Vec::new();
    let mut expect = |what: &str, want: Option<String>, got: String| {
        if let Some(w) = want {
            if w != got {
                why.push(format!("expected {what} `{w}`, got `{got}`"));
            }
        }
    };
    expect("decision", want.decision.clone(), got.decision.to_string());
    expect(
        "status",
        want.status.map(|s| s.to_string()),
        got.status.to_string(),
    );
    expect(
        "route",
        want.route.clone(),
        got.route.clone().unwrap_or_else(|| "none".into()),
    );
    expect("reason", want.reason.clone(), got.reason.to_string());
    let header = |name: &str| {
        let name = name.to_ascii_lowercase();
        got.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    };
    for (name, value) in &want.headers {
        match header(name) {
            Some(v) if v == *value => {}
            Some(v) => why.push(format!("expected header {name}: `{value}`, got `{v}`")),
            None => why.push(format!("expected header {name}: `{value}`, it is not sent")),
        }
    }
    for limit in &want.rate_limits {
        let prefix = format!("{limit},");
        let plan = limit.replacen(": ", ": plan ", 1);
        if !got
            .rate_limits
            .iter()
            .any(|l| l.starts_with(&format!("{plan},")) || l.starts_with(&prefix))
        {
            why.push(format!(
                "expected rate limit `{limit}`, got [{}]",
                got.rate_limits.join("; ")
            ));
        }
    }
    for name in &want.absent {
        if let Some(v) = header(name) {
            why.push(format!("header {name} must not be sent, it is `{v}`"));
        }
    }
    if why.is_empty() {
        Ok(())
    } else {
        Err((why, Some(Box::new(got.clone()))))
    }
}
