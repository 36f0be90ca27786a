//! Header templates: literal text and `{{ path || path || 'fallback' }}`
//! expressions over the verified claims, compiled at load time.
//!
//! Rendering: strings as they are, numbers and booleans as JSON text, arrays
//! of scalars joined with `,` (an element holding a `,` is refused rather
//! than mangled), objects and other arrays as compact JSON. A value that is
//! missing everywhere and has no fallback omits the header.

use http::header::HeaderName;
use http::HeaderValue;
use serde_json::Value;
use thiserror::Error;

use crate::policy::{ClaimPath, Found};

/// Longest header value claimgate renders.
pub const MAX_VALUE_BYTES: usize = 8 * 1024;

#[derive(Debug, Clone)]
pub struct HeaderTemplate {
    pub name: HeaderName,
    parts: Vec<Part>,
}

#[derive(Debug, Clone)]
enum Part {
    Literal(String),
    Expr {
        paths: Vec<ClaimPath>,
        fallback: Option<String>,
    },
}

/// Why a header could not be rendered: the request is refused, the upstream
/// receives nothing (SECURITY.md rule 17).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RenderError {
    #[error("header {0}: claim value has a control character")]
    ControlCharacter(HeaderName),
    #[error("header {0}: value longer than {MAX_VALUE_BYTES} bytes")]
    TooLong(HeaderName),
    #[error("header {0}: array element contains the `,` separator")]
    SeparatorInElement(HeaderName),
}

impl HeaderTemplate {
    /// Compiles `text` for header `name`.
    pub fn compile(name: &str, text: &str, untrusted: &[String]) -> Result<Self, String> {
        let name: HeaderName = name
            .parse()
            .map_err(|_| format!("`{name}` is not a header name"))?;
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| format!("`{{{{` without `}}}}` in `{text}`"))?;
            parts.push(expr(&after[..close], untrusted)?);
            rest = &after[close + 2..];
        }
        if rest.contains("}}") {
            return Err(format!("`}}}}` without `{{{{` in `{text}`"));
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        for p in &parts {
            if let Part::Literal(l)
            | Part::Expr {
                fallback: Some(l), ..
            } = p
            {
                if HeaderValue::from_str(l).is_err() {
                    return Err(format!("`{l}` is not valid in a header value"));
                }
            }
        }
        Ok(Self { name, parts })
    }

    /// Renders the header from `claims`. `Ok(None)`: omit the header.
    pub fn render(&self, claims: &Value) -> Result<Option<HeaderValue>, RenderError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Expr { paths, fallback } => {
                    let found = paths
                        .iter()
                        .map(|p| p.find(claims))
                        .find(|f| *f != Found::Nothing);
                    match (found, fallback) {
                        (Some(f), _) => self.push_found(&mut out, f)?,
                        (None, Some(fb)) => out.push_str(fb),
                        (None, None) => return Ok(None),
                    }
                }
            }
            if out.len() > MAX_VALUE_BYTES {
                return Err(RenderError::TooLong(self.name.clone()));
            }
        }
        if out.bytes().any(|b| b < 0x20 || b == 0x7f) {
            return Err(RenderError::ControlCharacter(self.name.clone()));
        }
        HeaderValue::from_str(&out)
            .or_else(|_| HeaderValue::from_bytes(out.as_bytes()))
            .map(Some)
            .map_err(|_| RenderError::ControlCharacter(self.name.clone()))
    }

    fn push_found(&self, out: &mut String, found: Found<'_>) -> Result<(), RenderError> {
        match found {
            Found::Nothing => Ok(()),
            Found::One(v) => self.push_value(out, v),
            Found::Many(nodes) => {
                self.push_value(out, &Value::Array(nodes.into_iter().cloned().collect()))
            }
        }
    }

    fn push_value(&self, out: &mut String, v: &Value) -> Result<(), RenderError> {
        match v {
            Value::String(s) => out.push_str(s),
            Value::Array(items) if items.iter().all(is_scalar) => {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let start = out.len();
                    scalar(out, item);
                    if out[start..].contains(',') {
                        return Err(RenderError::SeparatorInElement(self.name.clone()));
                    }
                }
            }
            Value::Null => {}
            other => out.push_str(&other.to_string()),
        }
        Ok(())
    }
}

fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Array(_) | Value::Object(_))
}

fn scalar(out: &mut String, v: &Value) {
    match v {
        Value::String(s) => out.push_str(s),
        other => out.push_str(&other.to_string()),
    }
}

fn expr(text: &str, untrusted: &[String]) -> Result<Part, String> {
    let mut paths = Vec::new();
    let mut fallback = None;
    let alternatives: Vec<&str> = text.split("||").map(str::trim).collect();
    let last = alternatives.len() - 1;
    for (i, alt) in alternatives.into_iter().enumerate() {
        if let Some(lit) = alt.strip_prefix('\'').and_then(|a| a.strip_suffix('\'')) {
            if i != last {
                return Err(format!(
                    "the fallback '{lit}' must come last in `{{{{{text}}}}}`"
                ));
            }
            fallback = Some(lit.to_string());
        } else {
            paths.push(ClaimPath::compile(alt, untrusted)?);
        }
    }
    if paths.is_empty() {
        return Err(format!("`{{{{{text}}}}}` names no claim"));
    }
    Ok(Part::Expr { paths, fallback })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(t: &str, claims: &Value) -> Result<Option<String>, RenderError> {
        HeaderTemplate::compile("x-test", t, &["nsec".into()])
            .unwrap()
            .render(claims)
            .map(|v| v.map(|v| String::from_utf8(v.as_bytes().to_vec()).unwrap()))
    }

    #[test]
    fn renders_table() {
        let c = json!({
            "sub": "u1", "given_name": "Ada", "family_name": "Lovelace", "n": 7, "ok": true,
            "roles": ["a", "b"], "meta": {"region": "eu"}, "bad": ["x,y"],
            "https://hasura.io/jwt/claims": {"x-hasura-user-id": "42"}
        });
        let cases: &[(&str, Option<&str>)] = &[
            ("{{ $.sub }}", Some("u1")),
            ("{{$.given_name}} {{ $.family_name }}", Some("Ada Lovelace")),
            ("user-{{ $.n }}", Some("user-7")),
            ("{{ $.ok }}", Some("true")),
            ("{{ $.roles }}", Some("a,b")),
            ("{{ $.meta }}", Some(r#"{"region":"eu"}"#)),
            ("{{ $.meta.region || 'global' }}", Some("eu")),
            ("{{ $.meta.zone || 'global' }}", Some("global")),
            ("{{ $.meta.zone || $.sub }}", Some("u1")),
            ("{{ $.missing }}", None),
            (
                "{{ $['https://hasura.io/jwt/claims']['x-hasura-user-id'] }}",
                Some("42"),
            ),
            ("{{ $.roles[0] }}", Some("a")),
            ("static", Some("static")),
        ];
        for (t, want) in cases {
            assert_eq!(render(t, &c).unwrap().as_deref(), *want, "{t}");
        }
        assert_eq!(
            render("{{ $.bad }}", &c),
            Err(RenderError::SeparatorInElement("x-test".parse().unwrap()))
        );
    }

    #[test]
    fn refuses_control_characters_and_huge_values() {
        for v in ["a\r\nx-admin: 1", "a\nb", "a\u{0}b", "tab\there"] {
            let c = json!({ "v": v });
            assert!(
                matches!(
                    render("{{ $.v }}", &c),
                    Err(RenderError::ControlCharacter(_))
                ),
                "{v:?}"
            );
        }
        let c = json!({ "v": "a".repeat(MAX_VALUE_BYTES + 1) });
        assert!(matches!(
            render("{{ $.v }}", &c),
            Err(RenderError::TooLong(_))
        ));
    }

    #[test]
    fn compile_errors() {
        for bad in [
            "{{ $.sub ",
            "{{ }}",
            "{{ 'x' || $.sub }}",
            "{{ $.nsec.roles }}",
            "a }} b",
            "{{ sub }}",
        ] {
            assert!(
                HeaderTemplate::compile("x", bad, &["nsec".into()]).is_err(),
                "{bad}"
            );
        }
        assert!(HeaderTemplate::compile("bad name", "x", &[]).is_err());
    }
}
