//! The canonical request path (SECURITY.md rule 16). claimgate decides on
//! the percent-decoded path and refuses every path that the upstream could
//! read another way: encoded `/`, `\` or `%`, NUL and control characters,
//! `.` and `..` segments, `//`, and `;` parameters.

use std::borrow::Cow;

use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PathError {
    #[error("path does not start with `/`")]
    NotAbsolute,
    #[error("path has an invalid percent-encoding")]
    BadEncoding,
    #[error("path has a character that could be read two ways")]
    Ambiguous,
    #[error("path has an empty, `.` or `..` segment")]
    DotOrEmptySegment,
}

/// The decoded segments of `raw` (the path as it appears on the wire).
/// A trailing `/` gives a final empty segment: `/a/` is `["a", ""]`. A
/// segment with nothing encoded is borrowed from `raw` (most are).
pub fn canonical_segments(raw: &str) -> Result<Vec<Cow<'_, str>>, PathError> {
    let rest = raw.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::with_capacity(rest.bytes().filter(|&b| b == b'/').count() + 1);
    let mut segments = rest.split('/').peekable();
    while let Some(seg) = segments.next() {
        let decoded = decode(seg)?;
        let is_dot = decoded == "." || decoded == "..";
        let last = segments.peek().is_none();
        if is_dot || (decoded.is_empty() && !last) {
            return Err(PathError::DotOrEmptySegment);
        }
        out.push(decoded);
    }
    Ok(out)
}

/// A byte a path may not hold, decoded or not (rule 16).
fn refused(b: u8) -> bool {
    b == b'\\' || b == b';' || b < 0x20 || b == 0x7f
}

fn decode(seg: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = seg.as_bytes();
    if !bytes.contains(&b'%') {
        // Nothing encoded: the same checks, no copy.
        if bytes.iter().any(|&b| refused(b)) {
            return Err(PathError::Ambiguous);
        }
        return Ok(Cow::Borrowed(seg));
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEncoding)?;
                let hex = std::str::from_utf8(hex).map_err(|_| PathError::BadEncoding)?;
                let b = u8::from_str_radix(hex, 16).map_err(|_| PathError::BadEncoding)?;
                i += 3;
                // An encoded `/`, `\` or `%` is where proxies and upstreams
                // disagree (double decoding, path splitting): refuse.
                if matches!(b, b'/' | b'\\' | b'%') {
                    return Err(PathError::Ambiguous);
                }
                b
            }
            b => {
                i += 1;
                b
            }
        };
        if refused(b) {
            return Err(PathError::Ambiguous);
        }
        out.push(b);
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| PathError::BadEncoding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_decodes() {
        let ok: &[(&str, &[&str])] = &[
            ("/", &[]),
            ("/orders/7", &["orders", "7"]),
            ("/orders/", &["orders", ""]),
            ("/a%20b/%7Euser", &["a b", "~user"]),
            ("/caf%C3%A9", &["café"]),
            ("/a.b/..c", &["a.b", "..c"]),
        ];
        for (raw, want) in ok {
            let want: Vec<Cow<str>> = want.iter().map(|s| Cow::Borrowed(*s)).collect();
            assert_eq!(canonical_segments(raw), Ok(want), "{raw}");
        }
    }

    #[test]
    fn refuses_every_ambiguous_form() {
        let bad: &[(&str, PathError)] = &[
            ("orders", PathError::NotAbsolute),
            ("/a%2fb", PathError::Ambiguous),
            ("/a%2Fb", PathError::Ambiguous),
            ("/a%5cb", PathError::Ambiguous),
            ("/a\\b", PathError::Ambiguous),
            ("/a%00b", PathError::Ambiguous),
            ("/a%0d%0ab", PathError::Ambiguous),
            ("/a%252e", PathError::Ambiguous),
            ("/a;jsessionid=1/b", PathError::Ambiguous),
            ("/a%3bx", PathError::Ambiguous),
            ("/a/../b", PathError::DotOrEmptySegment),
            ("/a/%2e%2e/b", PathError::DotOrEmptySegment),
            ("/a/./b", PathError::DotOrEmptySegment),
            ("/a/%2E/b", PathError::DotOrEmptySegment),
            ("//a", PathError::DotOrEmptySegment),
            ("/a//b", PathError::DotOrEmptySegment),
            ("/a/..", PathError::DotOrEmptySegment),
            ("/a%zz", PathError::BadEncoding),
            ("/a%2", PathError::BadEncoding),
            ("/a%ff", PathError::BadEncoding),
        ];
        for (raw, want) in bad {
            assert_eq!(canonical_segments(raw), Err(*want), "{raw}");
        }
    }
}
