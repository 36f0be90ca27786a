//! Reading one YAML file: `${VAR}` expansion, then strict deserialisation
//! (unknown keys are errors), with errors carrying file and line.

use std::path::Path;

use serde::de::DeserializeOwned;

use super::error::{ConfigError, Origin};

/// Looks up `${NAME}` references in configuration text. The process
/// environment by default; the demo and the tests supply their own values.
pub trait Vars: Send + Sync {
    fn get(&self, name: &str) -> Option<String>;
}

/// Variables from the process environment.
pub struct EnvVars;

impl Vars for EnvVars {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Vars for std::collections::HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        self.get(name).cloned().or_else(|| std::env::var(name).ok())
    }
}

/// Replaces every `${NAME}` with its value. `$${` is a literal `${`.
/// Values may not contain a line break, so line numbers stay true.
pub fn expand(file: &Path, text: &str, vars: &dyn Vars) -> Result<String, Vec<ConfigError>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let line_no = n as u64 + 1;
        if line.trim_start().starts_with('#') {
            // Comment lines are left as written.
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("${") {
            if rest[..at].ends_with('$') {
                out.push_str(&rest[..at]);
                out.push('{');
                rest = &rest[at + 2..];
                continue;
            }
            out.push_str(&rest[..at]);
            let after = &rest[at + 2..];
            let Some(end) = after.find('}') else {
                errors.push(ConfigError {
                    origin: Origin::new(file, line_no, col(line, rest, at)),
                    message: "unterminated `${`".into(),
                });
                rest = "";
                break;
            };
            let name = &after[..end];
            let valid =
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            match vars.get(name) {
                _ if !valid => errors.push(ConfigError {
                    origin: Origin::new(file, line_no, col(line, rest, at)),
                    message: format!("`${{{name}}}` is not a variable name"),
                }),
                Some(value) if value.contains(['\n', '\r']) => errors.push(ConfigError {
                    origin: Origin::new(file, line_no, col(line, rest, at)),
                    message: format!("variable {name} contains a line break"),
                }),
                Some(value) => out.push_str(&value),
                None => errors.push(ConfigError {
                    origin: Origin::new(file, line_no, col(line, rest, at)),
                    message: format!("variable {name} is not set"),
                }),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn col(line: &str, rest: &str, at: usize) -> u64 {
    (line.len() - rest.len() + at) as u64 + 1
}

/// Parses `text` (already expanded) as `T`, rejecting unknown keys where `T`
/// says so (every configuration type does). Every unknown key of the file
/// is reported, not only the first: an unknown key on a line of its own is
/// blanked out (with its block) and the text parsed again, up to 50 times;
/// the first error of any other kind ends the file's errors.
pub fn parse<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T, Vec<ConfigError>> {
    let mut text = text.to_string();
    let mut errors: Vec<ConfigError> = Vec::new();
    // The keys suggested for blanked ones: their absence is the typo's
    // doing, not another mistake.
    let mut suggested: Vec<String> = Vec::new();
    for _ in 0..50 {
        let e = match serde_saphyr::from_str::<T>(&text) {
            Ok(doc) if errors.is_empty() => return Ok(doc),
            Ok(_) => return Err(errors),
            Err(e) => e,
        };
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        let raw = e.without_snippet().to_string();
        let (message, suggestion) = explain(&raw);
        let consequence = !errors.is_empty()
            && (raw.starts_with("unexpected end of input")
                || suggested
                    .iter()
                    .any(|k| raw.starts_with(&format!("missing field `{k}`"))));
        if consequence {
            break;
        }
        let unknown = message.starts_with("unknown key");
        let policy_file = message.contains("this looks like a policy file");
        errors.push(ConfigError {
            origin: Origin::new(file, line, column),
            message,
        });
        suggested.extend(suggestion);
        match blank_key(&text, line, column) {
            Some(rest) if unknown && !policy_file => text = rest,
            _ => break,
        }
    }
    Err(errors)
}

/// serde-saphyr's message, said for an operator: no repeated location, the
/// closest valid key for an unknown one, and what to do about the parser
/// errors people meet.
fn explain(raw: &str) -> (String, Option<String>) {
    // The location is printed before the message already.
    let msg = match raw.rfind(" at line ") {
        Some(at) if raw[at..].contains(", column ") => &raw[..at],
        _ => raw,
    };
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        if let Some((key, expected)) = rest.split_once("`, expected one of ") {
            let valid: Vec<&str> = expected.split(", ").map(|k| k.trim_matches('`')).collect();
            let mut out = format!("unknown key `{key}`");
            let close = closest(key, &valid);
            if let Some(close) = close {
                out.push_str(&format!(": did you mean `{close}`?"));
            }
            if ["issuers", "upstreams", "routes"].contains(&key) && valid.contains(&"policies") {
                out.push_str(
                    "; this looks like a policy file: --config takes the process file (claimgate.yaml), whose `policies:` names the directory of policy files",
                );
            }
            out.push_str(&format!(" (valid here: {})", valid.join(", ")));
            return (out, close.map(str::to_string));
        }
        if let Some((key, _)) = rest.split_once("`, there are no fields") {
            return (format!("unknown key `{key}`: this map takes no keys"), None);
        }
    }
    if msg.contains("flow mapping") && msg.contains("did not find expected ','") {
        let hint = format!(
            "{msg}: a `{{` or `,` inside a `{{ ... }}` map needs quotes, e.g. path: \"/orders/{{id}}\""
        );
        return (hint, None);
    }
    (msg.to_string(), None)
}

/// The valid key closest to `key` by edit distance, if close enough to be
/// a typo.
fn closest<'a>(key: &str, valid: &[&'a str]) -> Option<&'a str> {
    let best = valid
        .iter()
        .map(|v| (edit_distance(key, v), *v))
        .min_by_key(|(d, _)| *d)?;
    (best.0 <= (key.len() / 3).max(2)).then_some(best.1)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// `text` with the key at `line`:`column` blanked out, with the lines of
/// its block (more indented than the key); `None` unless the key starts its
/// line (a key in a `{ ... }` map or after `- ` is left alone). Line numbers
/// are kept: the lines stay, empty.
fn blank_key(text: &str, line: u64, column: u64) -> Option<String> {
    let lines: Vec<&str> = text.split('\n').collect();
    let at = usize::try_from(line).ok()?.checked_sub(1)?;
    let key_line = lines.get(at)?;
    let indent = key_line.len() - key_line.trim_start().len();
    if column as usize != indent + 1 || key_line.trim_start().starts_with('-') {
        return None;
    }
    let mut end = at + 1;
    while let Some(l) = lines.get(end) {
        let blank = l.trim().is_empty() || l.trim_start().starts_with('#');
        if !blank && l.len() - l.trim_start().len() <= indent {
            break;
        }
        end += 1;
    }
    let out: Vec<&str> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| if (at..end).contains(&i) { "" } else { *l })
        .collect();
    Some(out.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn expands_known_variables_and_keeps_escapes() {
        let v = vars(&[("CG_TEST_A", "x"), ("CG_TEST_B", "y")]);
        let out = expand(
            Path::new("f"),
            "a: ${CG_TEST_A}-${CG_TEST_B}\nb: $${CG_TEST_A}\n",
            &v,
        )
        .unwrap();
        assert_eq!(out, "a: x-y\nb: ${CG_TEST_A}\n");
    }

    #[test]
    fn unknown_variable_names_file_and_line() {
        let errs = expand(
            Path::new("p.yaml"),
            "a: 1\nb: ${CG_TEST_SURELY_UNSET_9}\n",
            &vars(&[]),
        )
        .unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs[0].to_string(),
            "p.yaml:2:4: variable CG_TEST_SURELY_UNSET_9 is not set"
        );
    }

    #[test]
    fn comment_lines_are_not_expanded() {
        let out = expand(
            Path::new("f"),
            "# see ${UNSET_IN_COMMENT}\na: 1\n",
            &vars(&[]),
        )
        .unwrap();
        assert_eq!(out, "# see ${UNSET_IN_COMMENT}\na: 1\n");
    }

    #[test]
    fn value_with_line_break_is_refused() {
        let v = vars(&[("CG_TEST_NL", "a\nb")]);
        assert!(expand(Path::new("f"), "a: ${CG_TEST_NL}", &v).is_err());
    }
}
