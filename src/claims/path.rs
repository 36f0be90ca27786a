//! Claim paths: JSONPath (RFC 9535) compiled at load time, with a fast path
//! for plain member chains (`$.a.b`, `$['https://x/claims']['role']`) that
//! walks the JSON without the JSONPath engine.

use jsonpath_rust::parser::model::JpQuery;
use jsonpath_rust::parser::parse_json_path;
use jsonpath_rust::query::js_path_process;
use serde_json::Value;

/// A compiled claim path.
#[derive(Debug, Clone)]
pub struct ClaimPath {
    text: String,
    kind: Kind,
}

/// Two paths are equal when their texts are.
impl PartialEq for ClaimPath {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Members(Vec<String>),
    Query(Box<JpQuery>),
}

/// What a path found in a claim set.
#[derive(Debug, PartialEq)]
pub enum Found<'a> {
    Nothing,
    One(&'a Value),
    /// A JSONPath query that selected several nodes.
    Many(Vec<&'a Value>),
}

/// Why a path may not read `claim`, and what to do instead.
fn untrusted_read(text: &str, claim: &str) -> String {
    format!(
        "`{text}` reads the untrusted claim `{claim}`: it is in an issuer's \
         `untrusted_claims` (default [nsec], Descope's client-settable claims), so a \
         client could have set it; read a claim the IdP sets, or take `{claim}` out \
         of `untrusted_claims` if your IdP alone sets it"
    )
}

impl ClaimPath {
    /// Compiles `text`. A path reading one of `untrusted` (top-level claims a
    /// client could have set) is refused (SECURITY.md rule 8).
    pub fn compile(text: &str, untrusted: &[String]) -> Result<Self, String> {
        let text = text.trim();
        let kind = match members(text) {
            Some(m) => {
                if let Some(first) = m.first() {
                    if untrusted.contains(first) {
                        return Err(untrusted_read(text, first));
                    }
                }
                Kind::Members(m)
            }
            None => {
                let q = parse_json_path(text).map_err(|e| {
                    if text.starts_with('$') {
                        format!("`{text}` is not a JSONPath: {e}")
                    } else {
                        format!("`{text}` is not a claim path: write `$.{text}` (a JSONPath starts with `$`)")
                    }
                })?;
                for name in untrusted {
                    let reads = [
                        format!(".{name}"),
                        format!("['{name}']"),
                        format!("[\"{name}\"]"),
                    ]
                    .iter()
                    .any(|needle| text.contains(needle.as_str()));
                    if reads {
                        return Err(untrusted_read(text, name));
                    }
                }
                Kind::Query(Box::new(q))
            }
        };
        Ok(Self {
            text: text.to_string(),
            kind,
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// True when the path is a plain member chain (no JSONPath engine).
    pub fn is_fast(&self) -> bool {
        matches!(self.kind, Kind::Members(_))
    }

    /// Looks the path up in `root`. A JSON `null` counts as nothing.
    pub fn find<'a>(&self, root: &'a Value) -> Found<'a> {
        match &self.kind {
            Kind::Members(names) => {
                let mut at = root;
                for name in names {
                    match at.get(name.as_str()) {
                        Some(v) => at = v,
                        None => return Found::Nothing,
                    }
                }
                if at.is_null() {
                    Found::Nothing
                } else {
                    Found::One(at)
                }
            }
            Kind::Query(q) => {
                let nodes: Vec<&Value> = js_path_process(q, root)
                    .map(|refs| {
                        refs.into_iter()
                            .map(|r| r.val())
                            .filter(|v| !v.is_null())
                            .collect()
                    })
                    .unwrap_or_default();
                match nodes.len() {
                    0 => Found::Nothing,
                    1 => Found::One(nodes[0]),
                    _ => Found::Many(nodes),
                }
            }
        }
    }
}

/// Parses a plain member chain: `$`, then `.name` or `['name']` / `["name"]`
/// steps. Anything else (indexes, wildcards, filters) is left to JSONPath.
fn members(text: &str) -> Option<Vec<String>> {
    let mut rest = text.strip_prefix('$')?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                .unwrap_or(r.len());
            // `-` is not a JSONPath name character; leave such names to the
            // engine so both readings agree.
            let name = &r[..end];
            if name.is_empty()
                || name.contains('-')
                || name.starts_with(|c: char| c.is_ascii_digit())
            {
                return None;
            }
            out.push(name.to_string());
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let quote = r.chars().next().filter(|c| *c == '\'' || *c == '"')?;
            let body = &r[1..];
            let close = body.find(quote)?;
            let name = &body[..close];
            if name.contains('\\') {
                return None;
            }
            rest = body[close + 1..].strip_prefix(']')?;
            out.push(name.to_string());
        } else {
            return None;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims() -> Value {
        json!({
            "sub": "u1",
            "metadata": {"region": "eu", "empty": null},
            "https://hasura.io/jwt/claims": {"x-hasura-user-id": "42"},
            "roles": ["a", "b"],
            "tenants": {"t1": {"roles": ["admin"]}, "t2": {"roles": ["viewer"]}}
        })
    }

    #[test]
    fn finds_table() {
        let c = claims();
        let cases: &[(&str, bool, Found)] = &[
            ("$.sub", true, Found::One(&c["sub"])),
            (
                "$.metadata.region",
                true,
                Found::One(&c["metadata"]["region"]),
            ),
            ("$.metadata.empty", true, Found::Nothing),
            ("$.missing.deeper", true, Found::Nothing),
            (
                "$['https://hasura.io/jwt/claims']['x-hasura-user-id']",
                true,
                Found::One(&c["https://hasura.io/jwt/claims"]["x-hasura-user-id"]),
            ),
            ("$.roles[1]", false, Found::One(&c["roles"][1])),
            (
                "$.tenants.*.roles",
                false,
                Found::Many(vec![
                    &c["tenants"]["t1"]["roles"],
                    &c["tenants"]["t2"]["roles"],
                ]),
            ),
            ("$.sub.x", true, Found::Nothing),
        ];
        for (path, fast, want) in cases {
            let p = ClaimPath::compile(path, &[]).unwrap();
            assert_eq!(p.is_fast(), *fast, "{path}");
            assert_eq!(&p.find(&c), want, "{path}");
        }
    }

    #[test]
    fn refuses_untrusted_and_invalid_paths() {
        let untrusted = vec!["nsec".to_string()];
        for bad in ["$.nsec.roles", "$['nsec']", "$.nsec[0]", "$[\"nsec\"].x"] {
            let err = ClaimPath::compile(bad, &untrusted).unwrap_err();
            assert!(err.contains("untrusted"), "{bad}: {err}");
        }
        assert!(ClaimPath::compile("$.[", &[]).is_err());
        assert!(ClaimPath::compile("sub", &[]).is_err());
        assert!(ClaimPath::compile("$.nsecure", &untrusted).is_ok());
    }
}
