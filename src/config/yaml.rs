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
/// says so (every configuration type does).
pub fn parse<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T, ConfigError> {
    serde_saphyr::from_str::<T>(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        ConfigError {
            origin: Origin::new(file, line, column),
            message: e.without_snippet().to_string(),
        }
    })
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
