//! Header templates: literal text and `{{ source || source || 'fallback' }}`
//! expressions, compiled at load time. A source is a claim path (`$.sub`,
//! `$['https://hasura.io/jwt/claims']['x-hasura-user-id']`) or a request
//! value (`{order_id}`, `{header:X-Org}`, `{host}`, `{method}`).
//!
//! Each header has an [`Encoding`] for what its expressions find, and an
//! [`Empty`] policy for when an expression finds nothing (missing, null,
//! `""`, `[]` or `{}`) and has no fallback. A rendered value with a control
//! character or over 8 KiB refuses the request: never a panic, never a
//! mangled header.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::header::HeaderName;
use http::HeaderValue;
use serde::Deserialize;
use serde_json::Value;
use thiserror::Error;

use crate::claims::{ClaimPath, Found};
use crate::claims::{RequestFacts, RequestValue};

/// Longest header value claimgate renders.
pub const MAX_VALUE_BYTES: usize = 8 * 1024;

/// How a found value becomes header text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Strings as they are, numbers and booleans as JSON text, arrays of
    /// scalars joined with `,` (an element holding a `,` refuses the
    /// request), objects and nested arrays as compact JSON.
    #[default]
    Text,
    /// Compact JSON, strings quoted.
    Json,
    /// Arrays as a Postgres array literal, `{a,"b c"}` (what Hasura takes
    /// for array session variables); scalars as text; objects as JSON.
    Postgres,
    /// Base64url (no padding) of the compact JSON.
    Base64url,
}

/// What a header becomes when an expression finds nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Empty {
    /// The header is not sent.
    #[default]
    Omit,
    /// The header is sent with an empty value.
    Empty,
    /// The header is sent as `null`.
    Null,
}

#[derive(Debug, Clone)]
pub struct HeaderTemplate {
    pub name: HeaderName,
    parts: Vec<Part>,
    pub encoding: Encoding,
    /// Per-header empty policy; the route's when `None`.
    pub empty: Option<Empty>,
    /// Rendering empty (missing, or only white space) refuses the request.
    pub required: bool,
}

#[derive(Debug, Clone)]
enum Part {
    Literal(String),
    Expr {
        sources: Vec<Source>,
        fallback: Option<String>,
    },
}

#[derive(Debug, Clone)]
enum Source {
    Claim(ClaimPath),
    Request(RequestValue),
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

/// A rendered header: a value, or nothing found (the empty policy decides).
#[derive(Debug, PartialEq)]
pub enum Rendered {
    Value(HeaderValue),
    Missing,
}

impl HeaderTemplate {
    /// Compiles `text` for header `name`. `params` are the route's path
    /// parameters (none for file-wide templates).
    pub fn compile(
        name: &str,
        text: &str,
        untrusted: &[String],
        params: &[String],
    ) -> Result<Self, String> {
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
            // `{{ {param} }}`: the request value's own braces come first.
            let close = after
                .find("}}}")
                .map(|c| c + 1)
                .filter(|c| after[..*c].trim_start().starts_with('{'))
                .or_else(|| after.find("}}"))
                .ok_or_else(|| format!("`{{{{` without `}}}}` in `{text}`"))?;
            parts.push(expr(&after[..close], untrusted, params)?);
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
        Ok(Self {
            name,
            parts,
            encoding: Encoding::Text,
            empty: None,
            required: false,
        })
    }

    /// Whether an expression reads the request (a path parameter, a header,
    /// the host or the method), which the client chooses.
    pub fn reads_request(&self) -> bool {
        self.parts.iter().any(|p| match p {
            Part::Expr { sources, .. } => sources.iter().any(|s| matches!(s, Source::Request(_))),
            Part::Literal(_) => false,
        })
    }

    /// The same template with this encoding, empty policy, and whether it
    /// must render non-empty.
    pub fn with(mut self, encoding: Encoding, empty: Option<Empty>, required: bool) -> Self {
        self.encoding = encoding;
        self.empty = empty;
        self.required = required;
        self
    }

    /// Renders the header from `claims` and the request.
    pub fn render(
        &self,
        claims: &Value,
        request: &RequestFacts<'_>,
    ) -> Result<Rendered, RenderError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Expr { sources, fallback } => {
                    let mut done = false;
                    for source in sources {
                        done = match source {
                            Source::Claim(path) => match path.find(claims) {
                                Found::One(v) if !is_empty(v) => {
                                    self.push_value(&mut out, v)?;
                                    true
                                }
                                Found::Many(nodes) => {
                                    let v = Value::Array(nodes.into_iter().cloned().collect());
                                    self.push_value(&mut out, &v)?;
                                    true
                                }
                                _ => false,
                            },
                            Source::Request(r) => match r.get(request) {
                                Some(text) if !text.is_empty() => {
                                    self.push_value(&mut out, &Value::String(text.into()))?;
                                    true
                                }
                                _ => false,
                            },
                        };
                        if done {
                            break;
                        }
                    }
                    match (done, fallback) {
                        (true, _) => {}
                        (false, Some(fb)) => out.push_str(fb),
                        (false, None) => return Ok(Rendered::Missing),
                    }
                }
            }
            if out.len() > MAX_VALUE_BYTES {
                return Err(RenderError::TooLong(self.name.clone()));
            }
        }
        self.finish(out).map(Rendered::Value)
    }

    /// Checks and converts a finished value.
    fn finish(&self, out: String) -> Result<HeaderValue, RenderError> {
        if out.len() > MAX_VALUE_BYTES {
            return Err(RenderError::TooLong(self.name.clone()));
        }
        if out.bytes().any(|b| b < 0x20 || b == 0x7f) {
            return Err(RenderError::ControlCharacter(self.name.clone()));
        }
        // The String's buffer becomes the value's, not a copy of it.
        // (`from_str` and `from_bytes` accept the same bytes: visible
        // ASCII, space, tab, obs-text.)
        HeaderValue::try_from(out).map_err(|_| RenderError::ControlCharacter(self.name.clone()))
    }

    fn push_value(&self, out: &mut String, v: &Value) -> Result<(), RenderError> {
        match self.encoding {
            Encoding::Json => out.push_str(&v.to_string()),
            Encoding::Base64url => out.push_str(&URL_SAFE_NO_PAD.encode(v.to_string())),
            Encoding::Postgres => match v {
                Value::Array(_) => postgres_array(out, v),
                other => text(out, other),
            },
            Encoding::Text => match v {
                Value::Array(items) if items.iter().all(is_scalar) => {
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let start = out.len();
                        text(out, item);
                        if out[start..].contains(',') {
                            return Err(RenderError::SeparatorInElement(self.name.clone()));
                        }
                    }
                }
                other => text(out, other),
            },
        }
        Ok(())
    }
}

/// Nothing worth a header: null, `""`, `[]`, `{}`.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Array(_) | Value::Object(_))
}

/// Strings as they are, everything else as compact JSON.
fn text(out: &mut String, v: &Value) {
    match v {
        Value::String(s) => out.push_str(s),
        other => out.push_str(&other.to_string()),
    }
}

/// A Postgres array literal (PostgreSQL docs, "Array Value Input"):
/// elements quoted when empty, `NULL`, or holding a delimiter, brace, quote,
/// backslash or whitespace; `"` and `\` escaped inside quotes.
pub(crate) fn postgres_array(out: &mut String, v: &Value) {
    match v {
        Value::Array(items) => {
            out.push('{');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                postgres_array(out, item);
            }
            out.push('}');
        }
        Value::Null => out.push_str("NULL"),
        other => {
            let mut t = String::new();
            text(&mut t, other);
            let quote = t.is_empty()
                || t.eq_ignore_ascii_case("null")
                || t.chars()
                    .any(|c| matches!(c, ',' | '{' | '}' | '"' | '\\') || c.is_whitespace());
            if quote {
                out.push('"');
                for c in t.chars() {
                    if c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            } else {
                out.push_str(&t);
            }
        }
    }
}

fn expr(text: &str, untrusted: &[String], params: &[String]) -> Result<Part, String> {
    let mut sources = Vec::new();
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
        } else if let Some(r) = RequestValue::parse(alt, params)? {
            sources.push(Source::Request(r));
        } else {
            sources.push(Source::Claim(ClaimPath::compile(alt, untrusted)?));
        }
    }
    if sources.is_empty() {
        return Err(format!("`{{{{{text}}}}}` names no claim or request value"));
    }
    Ok(Part::Expr { sources, fallback })
}

#[cfg(test)]
mod tests;
