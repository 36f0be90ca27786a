//! Routes and the router: host + method + path template → one route.
//!
//! Templates are compiled into a segment trie, so lookup cost follows the
//! path's depth, not the number of routes. At each segment a literal beats a
//! `{param}`, which beats a trailing `**`: the most specific route wins.

use std::borrow::Cow;
use std::sync::Arc;

use http::Method;

use super::rule::Rule;
use crate::forward::hasura::Hasura;
use crate::forward::template::Empty;
use crate::forward::HeaderTemplate;
use crate::snapshot::Upstream;

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    pub name: String,
    /// The path template as written, e.g. `/orders/{order_id}`.
    pub template: String,
    /// Accepted methods; any when `None`.
    pub methods: Option<Vec<Method>>,
    /// Lowercase host without port or trailing dot; any when `None`.
    pub host: Option<String>,
    /// Where requests go.
    pub target: Target,
    pub public: bool,
    /// Issuer names accepted; any when `None`.
    pub issuers: Option<Vec<String>>,
    /// The rule a token must satisfy; any verified token when `None`.
    pub allow: Option<Rule>,
    /// Defaults first, then the route's own (which override by name).
    pub forward: Vec<HeaderTemplate>,
    pub pass_authorization: bool,
    /// Rewrite-class headers from a trusted proxy are passed on.
    pub trust_rewrite_headers: bool,
    /// What a header whose expression finds nothing becomes, unless the
    /// header says otherwise.
    pub empty_claims: Empty,
    /// Sends the whole verified claim set as base64url JSON.
    pub claims_header: Option<http::HeaderName>,
    /// Hasura session variables and role selection.
    pub hasura: Option<Arc<Hasura>>,
    /// Names of `{param}` segments, in order.
    pub params: Vec<String>,
    /// Quotas, checked in order once the rule allowed the request.
    pub rate_limits: Vec<crate::quota::RateLimit>,
    /// An upgraded connection may outlive the token (rule 23).
    pub websocket_outlives_token: bool,
    /// Cross-origin browser access.
    pub cors: Option<Arc<crate::forward::cors::Cors>>,
}

/// Where a route's allowed requests go.
#[derive(Debug, Clone)]
pub enum Target {
    Upstream(Arc<Upstream>),
    /// Answered here with Hasura's auth-webhook contract: nothing proxied.
    HasuraWebhook,
}

impl Route {
    pub fn is_webhook(&self) -> bool {
        matches!(self.target, Target::HasuraWebhook)
    }
}

/// One segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Param(String),
    /// `**`: the rest of the path, zero or more segments. Last only.
    Rest,
}

/// Parses a path template. Errors say what is wrong with it.
pub fn parse_template(template: &str) -> Result<Vec<Segment>, String> {
    let rest = template
        .strip_prefix('/')
        .ok_or_else(|| format!("path `{template}` must start with `/`"))?;
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<&str> = rest.split('/').collect();
    let mut out = Vec::with_capacity(parts.len());
    let mut names: Vec<&str> = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let seg = if *part == "**" {
            if i != parts.len() - 1 {
                return Err(format!("`**` must be the last segment of `{template}`"));
            }
            Segment::Rest
        } else if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            let valid =
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err(format!(
                    "`{{{name}}}` in `{template}` is not a parameter name"
                ));
            }
            if names.contains(&name) {
                return Err(format!("parameter `{name}` appears twice in `{template}`"));
            }
            names.push(name);
            Segment::Param(name.to_string())
        } else if part.contains(['{', '}', '*', '%', ';', '\\']) || *part == "." || *part == ".." {
            return Err(format!(
                "segment `{part}` of `{template}` is neither a literal nor a parameter"
            ));
        } else if part.is_empty() && i != parts.len() - 1 {
            return Err(format!("`{template}` has an empty segment"));
        } else {
            Segment::Literal(part.to_string())
        };
        out.push(seg);
    }
    Ok(out)
}

/// The names of a template's `{param}` segments, in order.
pub fn param_names(segments: &[Segment]) -> Vec<String> {
    segments
        .iter()
        .filter_map(|s| match s {
            Segment::Param(p) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

#[derive(Default, Debug)]
struct Node {
    literal: crate::FastMap<String, Node>,
    param: Option<Box<Node>>,
    /// Routes whose template ends here.
    exact: Vec<Arc<Route>>,
    /// Routes whose template ends here with `**`.
    rest: Vec<Arc<Route>>,
}

/// All routes of a snapshot.
#[derive(Default, Debug)]
pub struct Router {
    root: Node,
    /// Every route, in insertion order (for the metrics' series).
    all: Vec<Arc<Route>>,
}

/// A route and the path parameters it captured, by name.
#[derive(Debug)]
pub struct Matched<'a> {
    pub route: &'a Arc<Route>,
    pub params: Vec<(&'a str, String)>,
}

impl Router {
    /// Adds a route. Returns the name of a route already taking the same
    /// template, host and (some of the same) methods: an ambiguity.
    pub fn insert(&mut self, segments: &[Segment], route: Arc<Route>) -> Result<(), String> {
        let mut node = &mut self.root;
        let mut rest = false;
        for seg in segments {
            node = match seg {
                Segment::Literal(l) => node.literal.entry(l.clone()).or_default(),
                Segment::Param(_) => node.param.get_or_insert_with(Default::default),
                Segment::Rest => {
                    rest = true;
                    node
                }
            };
        }
        let list = if rest {
            &mut node.rest
        } else {
            &mut node.exact
        };
        if let Some(other) = list.iter().find(|o| overlaps(o, &route)) {
            return Err(other.name.clone());
        }
        // Host-specific routes are tried before host-less ones.
        list.push(route.clone());
        list.sort_by_key(|r| r.host.is_none());
        self.all.push(route);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Every route, in the order they were added.
    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.all.iter()
    }

    /// The most specific route for `host` (lowercase, no port), `method` and
    /// the canonical `segments`.
    pub fn find<'a>(
        &'a self,
        host: &str,
        method: &Method,
        segments: &[Cow<'_, str>],
    ) -> Option<Matched<'a>> {
        let mut captured = Vec::new();
        let route = find_in(&self.root, host, method, segments, &mut captured)?;
        let params = route
            .params
            .iter()
            .map(String::as_str)
            .zip(captured)
            .collect();
        Some(Matched { route, params })
    }
}

impl Router {
    /// The methods some route takes for this host and path (for a 405's
    /// `Allow`), among the common ones.
    pub fn methods_for(&self, host: &str, segments: &[Cow<'_, str>]) -> Vec<Method> {
        [
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ]
        .into_iter()
        .filter(|m| find_in(&self.root, host, m, segments, &mut Vec::new()).is_some())
        .collect()
    }
}

fn accepts(route: &Route, host: &str, method: &Method) -> bool {
    route.host.as_deref().is_none_or(|h| h == host)
        && route.methods.as_ref().is_none_or(|m| m.contains(method))
}

fn overlaps(a: &Route, b: &Route) -> bool {
    let hosts = a.host == b.host;
    let methods = match (&a.methods, &b.methods) {
        (Some(x), Some(y)) => x.iter().any(|m| y.contains(m)),
        _ => true,
    };
    hosts && methods
}

fn find_in<'a>(
    node: &'a Node,
    host: &str,
    method: &Method,
    segments: &[Cow<'_, str>],
    captured: &mut Vec<String>,
) -> Option<&'a Arc<Route>> {
    match segments.split_first() {
        None => {
            if let Some(r) = node.exact.iter().find(|r| accepts(r, host, method)) {
                return Some(r);
            }
        }
        Some((first, rest)) => {
            if let Some(next) = node.literal.get(first.as_ref()) {
                if let Some(r) = find_in(next, host, method, rest, captured) {
                    return Some(r);
                }
            }
            // A parameter never captures an empty segment (`/orders/`).
            if let (Some(next), false) = (&node.param, first.is_empty()) {
                captured.push(first.to_string());
                if let Some(r) = find_in(next, host, method, rest, captured) {
                    return Some(r);
                }
                captured.pop();
            }
        }
    }
    node.rest.iter().find(|r| accepts(r, host, method))
}

#[cfg(test)]
mod tests;
