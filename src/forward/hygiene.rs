//! Header hygiene (SECURITY.md rules 13–15): what a client sent that must
//! never reach the upstream as it was sent.

use http::header::{HeaderName, CONNECTION};
use http::HeaderMap;

/// Forwarding headers claimgate sets itself from the connection (rule 15).
pub const FORWARDED_EXACT: [&str; 2] = ["forwarded", "x-real-ip"];
/// Prefixes of forwarding headers (rule 15).
pub const FORWARDED_PREFIXES: [&str; 2] = ["x-forwarded-", "x-original-"];

/// Rewrite-class headers (rule 15): what a proxy or framework in front of
/// the upstream may act on as the "real" method or path. A client's copy is
/// never passed on (Envoy CVE-2023-27487 class); a trusted proxy's only
/// where the route opts in (`trust_rewrite_headers`).
pub const REWRITE_EXACT: [&str; 4] = [
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];
/// Prefixes of rewrite-class headers; `x-original-*` too (above).
pub const REWRITE_PREFIXES: [&str; 2] = ["x-envoy-", "x-original-"];

/// Whether `name` (any spelling) is a rewrite-class header.
pub fn is_rewrite_class(name: &str) -> bool {
    with_canonical(name, |c| {
        REWRITE_EXACT.contains(&c) || REWRITE_PREFIXES.iter().any(|p| c.starts_with(p))
    })
}

/// The header names claimgate owns: a client can never send them upstream.
#[derive(Debug, Clone, Default)]
pub struct OwnedHeaders {
    /// Sorted, for a binary search: a few comparisons, no hashing.
    exact: Vec<String>,
    prefixes: Vec<String>,
    /// The subset set from claims (templates and reserved prefixes), which
    /// `spoofed_headers: refuse` refuses; forwarding headers from another
    /// proxy in front are only replaced.
    claimed_exact: Vec<String>,
    claimed_prefixes: Vec<String>,
    /// The canonical first bytes of `exact` and `prefixes` (a bit each):
    /// most of a request's headers (`host`, `accept`, `authorization`)
    /// start with none of them and are passed at once.
    first: [u64; 4],
}

impl OwnedHeaders {
    /// Owns the forwarding headers, plus `names` and `prefixes` (any spelling).
    pub fn new<'a>(
        names: impl IntoIterator<Item = &'a str>,
        prefixes: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let mut claimed_exact: Vec<String> = names.into_iter().map(canonical).collect();
        claimed_exact.sort();
        claimed_exact.dedup();
        let claimed_prefixes: Vec<String> = prefixes.into_iter().map(canonical).collect();
        let mut exact: Vec<String> = FORWARDED_EXACT
            .iter()
            .chain(REWRITE_EXACT.iter())
            .map(|s| s.to_string())
            .collect();
        exact.extend(claimed_exact.iter().cloned());
        exact.sort();
        exact.dedup();
        let mut prefixes = claimed_prefixes.clone();
        prefixes.extend(FORWARDED_PREFIXES.iter().map(|s| s.to_string()));
        prefixes.push(REWRITE_PREFIXES[0].to_string());
        let mut first = [0u64; 4];
        for name in exact.iter().chain(&prefixes) {
            match name.as_bytes().first() {
                Some(&b) => first[usize::from(b >> 6)] |= 1 << (b & 63),
                // An empty prefix owns every name.
                None => first = [u64::MAX; 4],
            }
        }
        Self {
            exact,
            prefixes,
            claimed_exact,
            claimed_prefixes,
            first,
        }
    }

    /// False when no owned name or prefix starts as `name` does.
    fn may_own(&self, name: &str) -> bool {
        let Some(&b) = name.as_bytes().first() else {
            return true;
        };
        let b = canonical_byte(b);
        self.first[usize::from(b >> 6)] & (1 << (b & 63)) != 0
    }

    /// True when a header of this name (any spelling) is one claimgate sets
    /// from claims, or under a reserved prefix.
    pub fn claims(&self, name: &str) -> bool {
        self.may_own(name)
            && with_canonical(name, |c| {
                matches(&self.claimed_exact, &self.claimed_prefixes, c)
            })
    }

    /// True when a header of this name (any spelling) is claimgate's.
    pub fn owns(&self, name: &str) -> bool {
        self.may_own(name) && with_canonical(name, |c| matches(&self.exact, &self.prefixes, c))
    }
}

fn matches(exact: &[String], prefixes: &[String], c: &str) -> bool {
    exact.binary_search_by(|e| e.as_str().cmp(c)).is_ok()
        || prefixes.iter().any(|p| c.starts_with(p.as_str()))
}

/// Calls `f` with the canonical form of `name`, built on the stack when
/// short (every request's every header goes through here).
fn with_canonical<R>(name: &str, f: impl FnOnce(&str) -> R) -> R {
    let mut buf = [0u8; 64];
    if name.len() > buf.len() {
        return f(&canonical(name));
    }
    for (slot, b) in buf.iter_mut().zip(name.bytes()) {
        *slot = canonical_byte(b);
    }
    match std::str::from_utf8(&buf[..name.len()]) {
        Ok(c) => f(c),
        Err(_) => f(&canonical(name)),
    }
}

fn canonical_byte(b: u8) -> u8 {
    match b {
        b'_' | b'.' => b'-',
        b => b.to_ascii_lowercase(),
    }
}

/// The canonical form of a header name: lowercase, with `_` and `.` read as
/// `-`, the way CGI, WSGI, Rails and nginx's `underscores_in_headers` may
/// read them (rule 14). `X_User_Id` and `x.user.id` are `x-user-id`.
pub fn canonical(name: &str) -> String {
    name.bytes().map(|b| canonical_byte(b) as char).collect()
}

/// The first client header that claims to be one claimgate sets from
/// claims (any spelling), for `spoofed_headers: refuse`.
pub fn spoofed(headers: &HeaderMap, owned: &OwnedHeaders) -> Option<String> {
    headers
        .keys()
        .find(|name| owned.claims(name.as_str()))
        .map(|n| n.to_string())
}

/// Removes hop-by-hop headers, every header the `Connection` header names,
/// and every header claimgate owns, in any spelling.
pub fn clean_request(headers: &mut HeaderMap, owned: &OwnedHeaders) {
    strip_hop_by_hop(headers);
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| owned.owns(name.as_str()))
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(&name);
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded either way; as
/// header names, so that removing them parses nothing.
const HOP_BY_HOP_NAMES: [HeaderName; 9] = [
    HeaderName::from_static("connection"),
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("proxy-authenticate"),
    HeaderName::from_static("proxy-authorization"),
    HeaderName::from_static("te"),
    HeaderName::from_static("trailer"),
    HeaderName::from_static("transfer-encoding"),
    HeaderName::from_static("upgrade"),
];

/// Removes hop-by-hop headers and those named by `Connection` (rule 13).
/// Used on requests and on upstream responses.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names (each compared with nine, standard ones as
    // enums) notes which hop-by-hop headers are present; only those are
    // removed. Most requests carry none; most upstream responses one
    // (`Connection: keep-alive`), where nine hashed removals cost more
    // than the rest of the response's header work.
    let hop = &HOP_BY_HOP_NAMES;
    let mut present = 0u16;
    for k in headers.keys() {
        if let Some(i) = hop.iter().position(|h| h == k) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // The names `Connection` lists, read before it goes (rarely any).
    let mut named: Vec<HeaderName> = Vec::new();
    if present & 1 != 0 {
        // `connection` is the first of the nine.
        for v in headers.get_all(CONNECTION) {
            let Ok(v) = v.to_str() else { continue };
            for n in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                // The nine go anyway; most responses name one of them
                // (`keep-alive`), which then costs no parse and no copy.
                if hop.iter().any(|h| h.as_str().eq_ignore_ascii_case(n)) {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(n.as_bytes()) {
                    named.push(name);
                }
            }
        }
    }
    let here = hop
        .iter()
        .enumerate()
        .filter(|(i, _)| present & (1 << i) != 0)
        .map(|(_, h)| h);
    for name in here.chain(&named) {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests;
