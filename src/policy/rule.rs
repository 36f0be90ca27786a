//! `allow` rules: conditions over claims and request values, combined with
//! `all`, `any`, `not`. Evaluation never fails: a claim of the wrong JSON
//! type simply does not match.
//!
//! Request values (a path parameter, a header, the host, the method) are
//! compared with claims or used as keys into claim maps by direct lookup;
//! request text never becomes part of a JSONPath.
//!
//! One evaluator serves the proxy and `explain`: [`Rule::eval_with`] takes a
//! [`Tracer`], and the proxy's [`NoTrace`] compiles the tracing away.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, Method};
use regex::Regex;
use serde_json::Value;

use super::claim_path::{ClaimPath, Found};

/// A compiled rule.
#[derive(Debug, Clone)]
pub enum Rule {
    All(Vec<Rule>),
    Any(Vec<Rule>),
    Not(Box<Rule>),
    Claim {
        path: ClaimPath,
        op: Op,
    },
    /// Roles at the issuer's roles location.
    Role(Need),
    /// Permissions at the issuer's permissions location.
    Permission(Need),
    /// OAuth scopes: a space-separated string (RFC 9068 §2.2.3) or an array,
    /// at any of the issuer's scope locations.
    Scope(Need),
    /// Roles (or permissions) in one tenant of the issuer's tenant map.
    Tenant {
        kind: TenantKind,
        tenant: TenantFrom,
        need: Need,
    },
}

/// Which list of a tenant entry a `Tenant` rule reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantKind {
    Roles,
    Permissions,
}

/// Where a `Tenant` rule gets the tenant's id.
#[derive(Debug, Clone)]
pub enum TenantFrom {
    Request(RequestValue),
    /// The issuer's current-tenant claim (Descope's `dct`).
    Current,
    Literal(String),
}

/// Which of a list of names must be present.
#[derive(Debug, Clone)]
pub enum Need {
    AnyOf(Vec<String>),
    AllOf(Vec<String>),
}

/// A comparison applied to what a claim path found.
#[derive(Debug, Clone)]
pub enum Op {
    /// The claim equals the value (numbers compare by value: 1 == 1.0).
    Equals(Operand),
    /// The claim equals one of the values.
    In(Vec<Value>),
    /// The claim is an array holding the value (or the path selected several
    /// nodes and one of them is, or holds, the value).
    Contains(Operand),
    /// The claim's items hold at least one of the values.
    ContainsAny(Vec<Value>),
    /// The claim's items hold every one of the values.
    ContainsAll(Vec<Value>),
    /// The claim is present and not null (`true`), or absent (`false`).
    Exists(bool),
    /// The claim is a string matching the whole regex (anchored at load).
    Matches(Regex),
    /// The claim is a JSON number and compares so with the bound.
    Compare(Cmp, f64),
    /// The claim is a level of `levels` at or above `levels[rank]`.
    AtLeast {
        levels: Arc<Vec<String>>,
        rank: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Gt,
    Gte,
    Lt,
    Lte,
}

/// A value to compare a claim with: a literal, or a value of the request.
#[derive(Debug, Clone)]
pub enum Operand {
    Literal(Value),
    Request(RequestValue),
}

/// A value of the request a rule may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestValue {
    /// A `{param}` of the route's path template (by position).
    Param {
        index: usize,
        name: String,
    },
    /// A request header; absent when missing, repeated or not text. Headers
    /// claimgate owns were removed before any rule runs.
    Header(HeaderName),
    /// The host the route matched on: lowercase, without port.
    Host,
    Method,
}

impl RequestValue {
    /// Reads `{name}` (a path parameter of `params`), `{header:Name}`,
    /// `{host}` or `{method}`. `Ok(None)` for any other text (a literal);
    /// an error for braces naming nothing.
    pub fn parse(text: &str, params: &[String]) -> Result<Option<Self>, String> {
        let Some(inner) = text.strip_prefix('{').and_then(|t| t.strip_suffix('}')) else {
            return Ok(None);
        };
        if let Some(index) = params.iter().position(|p| p == inner) {
            return Ok(Some(RequestValue::Param {
                index,
                name: inner.to_string(),
            }));
        }
        match inner {
            "host" => return Ok(Some(RequestValue::Host)),
            "method" => return Ok(Some(RequestValue::Method)),
            _ => {}
        }
        if let Some(name) = inner.strip_prefix("header:") {
            return HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes())
                .map(|h| Some(RequestValue::Header(h)))
                .map_err(|_| format!("`{text}`: `{name}` is not a header name"));
        }
        let known = if params.is_empty() {
            "the route has no path parameters".to_string()
        } else {
            format!("the route's path parameters are {}", params.join(", "))
        };
        Err(format!(
            "`{text}` names no request value ({known}; also {{host}}, {{method}}, {{header:Name}})"
        ))
    }

    /// The value in `req`, if it has one.
    pub fn get<'a>(&self, req: &'a RequestFacts<'a>) -> Option<&'a str> {
        match self {
            RequestValue::Param { index, .. } => req.params.get(*index).map(|(_, v)| v.as_str()),
            RequestValue::Header(name) => {
                let mut values = req.headers.get_all(name).iter();
                match (values.next(), values.next()) {
                    (Some(v), None) => v.to_str().ok(),
                    _ => None,
                }
            }
            RequestValue::Host => Some(req.host),
            RequestValue::Method => Some(req.method.as_str()),
        }
    }
}

impl std::fmt::Display for RequestValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestValue::Param { name, .. } => write!(f, "{{{name}}}"),
            RequestValue::Header(h) => write!(f, "{{header:{h}}}"),
            RequestValue::Host => f.write_str("{host}"),
            RequestValue::Method => f.write_str("{method}"),
        }
    }
}

/// The request as rules see it.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub method: &'a Method,
    pub host: &'a str,
    /// The route's path parameters, in template order.
    pub params: &'a [(&'a str, String)],
    pub headers: &'a HeaderMap,
}

/// Where an issuer keeps what the shorthands read. Set by its profile,
/// overridable per issuer.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimLocations {
    pub roles: ClaimPath,
    pub permissions: ClaimPath,
    /// Every one is read; a string there is a space-separated list.
    pub scopes: Vec<ClaimPath>,
    /// A map of tenant id → `{roles: [...], permissions: [...]}`.
    pub tenants: ClaimPath,
    pub tenant_roles: String,
    pub tenant_permissions: String,
    /// The tenant the session is working in (Descope's `dct`).
    pub current_tenant: ClaimPath,
}

impl ClaimLocations {
    /// Compiles locations from JSONPath texts.
    pub fn compile(texts: &LocationTexts, untrusted: &[String]) -> Result<Self, String> {
        let path = |t: &str| ClaimPath::compile(t, untrusted);
        Ok(Self {
            roles: path(&texts.roles)?,
            permissions: path(&texts.permissions)?,
            scopes: texts
                .scopes
                .iter()
                .map(|s| path(s))
                .collect::<Result<_, _>>()?,
            tenants: path(&texts.tenants)?,
            tenant_roles: texts.tenant_roles.clone(),
            tenant_permissions: texts.tenant_permissions.clone(),
            current_tenant: path(&texts.current_tenant)?,
        })
    }
}

/// [`ClaimLocations`] before compiling: what profiles and the config give.
#[derive(Debug, Clone)]
pub struct LocationTexts {
    pub roles: String,
    pub permissions: String,
    pub scopes: Vec<String>,
    pub tenants: String,
    pub tenant_roles: String,
    pub tenant_permissions: String,
    pub current_tenant: String,
}

/// What a rule is evaluated against.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    pub claims: &'a Value,
    pub at: &'a ClaimLocations,
    pub request: &'a RequestFacts<'a>,
}

/// Receives the steps of an evaluation, for `explain` and `claimgate test`.
pub trait Tracer {
    /// Whether steps are wanted; `false` compiles every tracing branch away.
    const ENABLED: bool;
    /// Opens a step for `rule` at `depth`; returns its handle.
    fn open(&mut self, depth: usize, rule: &Rule) -> usize;
    /// Closes the step with its outcome and, for leaves, what was found.
    fn close(&mut self, step: usize, held: bool, found: Option<String>);
}

/// The proxy's tracer: nothing.
pub struct NoTrace;

impl Tracer for NoTrace {
    const ENABLED: bool = false;
    #[inline(always)]
    fn open(&mut self, _: usize, _: &Rule) -> usize {
        0
    }
    #[inline(always)]
    fn close(&mut self, _: usize, _: bool, _: Option<String>) {}
}

/// One step of a traced evaluation.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Step {
    pub depth: usize,
    pub rule: String,
    pub held: bool,
    /// What a leaf found, e.g. `found "gold"`.
    pub found: Option<String>,
}

impl Tracer for Vec<Step> {
    const ENABLED: bool = true;
    fn open(&mut self, depth: usize, rule: &Rule) -> usize {
        self.push(Step {
            depth,
            rule: rule.describe(),
            held: false,
            found: None,
        });
        self.len() - 1
    }
    fn close(&mut self, step: usize, held: bool, found: Option<String>) {
        if let Some(s) = self.get_mut(step) {
            s.held = held;
            s.found = found;
        }
    }
}

impl Rule {
    /// Whether the rule holds in `ctx`.
    pub fn eval(&self, ctx: &Ctx<'_>) -> bool {
        self.eval_with(ctx, &mut NoTrace, 0)
    }

    /// Evaluates, reporting each step to `t`. `all` and `any` stop at the
    /// first child that decides them, and so does the trace.
    pub fn eval_with<T: Tracer>(&self, ctx: &Ctx<'_>, t: &mut T, depth: usize) -> bool {
        let step = t.open(depth, self);
        let mut found = None;
        let held = match self {
            Rule::All(rules) => rules.iter().all(|r| r.eval_with(ctx, t, depth + 1)),
            Rule::Any(rules) => rules.iter().any(|r| r.eval_with(ctx, t, depth + 1)),
            Rule::Not(rule) => !rule.eval_with(ctx, t, depth + 1),
            Rule::Claim { path, op } => {
                let f = path.find(ctx.claims);
                if T::ENABLED {
                    found = Some(describe_found(&f));
                }
                op.holds(&f, ctx.request)
            }
            Rule::Role(need) => {
                let paths = std::slice::from_ref(&ctx.at.roles);
                list_rule(need, paths, false, ctx, &mut found, T::ENABLED)
            }
            Rule::Permission(need) => {
                let paths = std::slice::from_ref(&ctx.at.permissions);
                list_rule(need, paths, false, ctx, &mut found, T::ENABLED)
            }
            Rule::Scope(need) => list_rule(need, &ctx.at.scopes, true, ctx, &mut found, T::ENABLED),
            Rule::Tenant { kind, tenant, need } => {
                let id = match tenant {
                    TenantFrom::Request(r) => r.get(ctx.request),
                    TenantFrom::Current => match ctx.at.current_tenant.find(ctx.claims) {
                        Found::One(Value::String(s)) => Some(s.as_str()),
                        _ => None,
                    },
                    TenantFrom::Literal(s) => Some(s.as_str()),
                };
                let key = match kind {
                    TenantKind::Roles => &ctx.at.tenant_roles,
                    TenantKind::Permissions => &ctx.at.tenant_permissions,
                };
                // Direct lookups: tenants[id][key]. The id is request text
                // and is only ever a map key.
                let list = id.and_then(|id| match ctx.at.tenants.find(ctx.claims) {
                    Found::One(Value::Object(map)) => map.get(id)?.get(key.as_str()),
                    _ => None,
                });
                if T::ENABLED {
                    found = Some(match id {
                        None => "no tenant id in the request or claims".to_string(),
                        Some(id) => {
                            format!("tenant {id:?}: {}", describe_items(&strings(list, false)))
                        }
                    });
                }
                need.holds(|want| list.is_some_and(|l| list_has(l, false, want)))
            }
        };
        t.close(step, held, found);
        held
    }

    /// One line saying what the rule checks (children not included).
    pub fn describe(&self) -> String {
        match self {
            Rule::All(r) => format!("all of {}", r.len()),
            Rule::Any(r) => format!("any of {}", r.len()),
            Rule::Not(_) => "not".into(),
            Rule::Claim { path, op } => format!("claim {} {}", path.text(), op.describe()),
            Rule::Role(n) => format!("role {n}"),
            Rule::Permission(n) => format!("permission {n}"),
            Rule::Scope(n) => format!("scope {n}"),
            Rule::Tenant { kind, tenant, need } => {
                let what = match kind {
                    TenantKind::Roles => "tenant_role",
                    TenantKind::Permissions => "tenant_permission",
                };
                let tenant = match tenant {
                    TenantFrom::Request(r) => r.to_string(),
                    TenantFrom::Current => "current tenant".into(),
                    TenantFrom::Literal(s) => format!("{s:?}"),
                };
                format!("{what} in {tenant}: {need}")
            }
        }
    }
}

/// A list shorthand: the strings at `paths` (merged) satisfy `need`.
/// Allocates nothing unless tracing.
fn list_rule(
    need: &Need,
    paths: &[ClaimPath],
    split: bool,
    ctx: &Ctx<'_>,
    found: &mut Option<String>,
    tracing: bool,
) -> bool {
    if tracing {
        let mut items = Vec::new();
        for p in paths {
            if let Found::One(v) = p.find(ctx.claims) {
                items.extend(strings(Some(v), split));
            }
        }
        *found = Some(describe_items(&items));
    }
    need.holds(|want| {
        paths.iter().any(|p| match p.find(ctx.claims) {
            Found::One(v) => list_has(v, split, want),
            _ => false,
        })
    })
}

/// Whether a list claim holds `want`: an array's string items, or one string
/// (split on spaces when `split`, as OAuth scopes are). Anything else: no.
fn list_has(v: &Value, split: bool, want: &str) -> bool {
    match v {
        Value::Array(items) => items.iter().any(|x| x.as_str() == Some(want)),
        Value::String(s) if split => s.split(' ').any(|s| s == want),
        Value::String(s) => s == want,
        _ => false,
    }
}

impl Need {
    /// Whether the names `has` says are present satisfy the need.
    fn holds(&self, has: impl Fn(&str) -> bool) -> bool {
        match self {
            Need::AnyOf(want) => want.iter().any(|w| has(w)),
            Need::AllOf(want) => want.iter().all(|w| has(w)),
        }
    }
}

impl std::fmt::Display for Need {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Need::AnyOf(w) if w.len() == 1 => write!(f, "{:?}", w[0]),
            Need::AnyOf(w) => write!(f, "any of {w:?}"),
            Need::AllOf(w) => write!(f, "all of {w:?}"),
        }
    }
}

/// The strings of a list claim, as [`list_has`] reads it (for traces).
fn strings(v: Option<&Value>, split: bool) -> Vec<&str> {
    match v {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        Some(Value::String(s)) if split => s.split(' ').filter(|s| !s.is_empty()).collect(),
        Some(Value::String(s)) => vec![s.as_str()],
        _ => Vec::new(),
    }
}

fn describe_items(items: &[&str]) -> String {
    if items.is_empty() {
        "found none".into()
    } else {
        format!("found {items:?}")
    }
}

fn describe_found(found: &Found<'_>) -> String {
    let short = |v: &Value| {
        let mut s = v.to_string();
        if s.len() > 80 {
            let mut end = 77;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
            s.push_str("...");
        }
        s
    };
    match found {
        Found::Nothing => "found nothing".into(),
        Found::One(v) => format!("found {}", short(v)),
        Found::Many(vs) => format!(
            "found {} nodes: {}",
            vs.len(),
            vs.iter().map(|v| short(v)).collect::<Vec<_>>().join(", ")
        ),
    }
}

impl Operand {
    /// Whether claim value `x` equals the operand. A request value is text:
    /// it equals a string claim of the same text, or an integer claim whose
    /// decimal form is that text (`"42"` and `42`).
    fn matches(&self, x: &Value, req: &RequestFacts<'_>) -> bool {
        match self {
            Operand::Literal(v) => json_eq(x, v),
            Operand::Request(r) => match (r.get(req), x) {
                (Some(text), Value::String(s)) => s == text,
                (Some(text), Value::Number(n)) => {
                    (n.is_i64() || n.is_u64()) && n.to_string() == text
                }
                _ => false,
            },
        }
    }

    fn describe(&self) -> String {
        match self {
            Operand::Literal(v) => v.to_string(),
            Operand::Request(r) => r.to_string(),
        }
    }
}

impl Op {
    fn holds(&self, found: &Found<'_>, req: &RequestFacts<'_>) -> bool {
        match (self, found) {
            (Op::Exists(want), Found::Nothing) => !want,
            (Op::Exists(want), _) => *want,
            (_, Found::Nothing) => false,
            (Op::Equals(v), Found::One(x)) => v.matches(x, req),
            (Op::In(vs), Found::One(x)) => vs.iter().any(|v| json_eq(x, v)),
            (Op::Contains(v), found) => any_item(found, |x| v.matches(x, req)),
            (Op::ContainsAny(vs), found) => any_item(found, |x| vs.iter().any(|v| json_eq(x, v))),
            (Op::ContainsAll(vs), found) => vs.iter().all(|v| any_item(found, |x| json_eq(x, v))),
            (Op::Matches(re), Found::One(Value::String(s))) => re.is_match(s),
            (Op::Compare(cmp, bound), Found::One(Value::Number(n))) => {
                n.as_f64().is_some_and(|x| match cmp {
                    Cmp::Gt => x > *bound,
                    Cmp::Gte => x >= *bound,
                    Cmp::Lt => x < *bound,
                    Cmp::Lte => x <= *bound,
                })
            }
            (Op::AtLeast { levels, rank }, Found::One(Value::String(s))) => levels
                .iter()
                .position(|l| l == s)
                .is_some_and(|r| r >= *rank),
            // Several nodes never "equal" one value; wrong types never match.
            _ => false,
        }
    }

    fn describe(&self) -> String {
        let list = |vs: &[Value]| {
            vs.iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Op::Equals(v) => format!("equals {}", v.describe()),
            Op::In(vs) => format!("in [{}]", list(vs)),
            Op::Contains(v) => format!("contains {}", v.describe()),
            Op::ContainsAny(vs) => format!("contains any of [{}]", list(vs)),
            Op::ContainsAll(vs) => format!("contains all of [{}]", list(vs)),
            Op::Exists(true) => "exists".into(),
            Op::Exists(false) => "is absent".into(),
            Op::Matches(re) => format!("matches {}", re.as_str()),
            Op::Compare(cmp, n) => {
                let sign = match cmp {
                    Cmp::Gt => ">",
                    Cmp::Gte => ">=",
                    Cmp::Lt => "<",
                    Cmp::Lte => "<=",
                };
                format!("{sign} {n}")
            }
            Op::AtLeast { levels, rank } => {
                format!("at least {:?} of {levels:?}", levels[*rank])
            }
        }
    }
}

/// Whether `f` holds for an item a `contains` looks at: an array's
/// elements, or with several nodes each node's elements (or the node itself
/// when it is a scalar).
fn any_item(found: &Found<'_>, mut f: impl FnMut(&Value) -> bool) -> bool {
    match found {
        Found::One(Value::Array(xs)) => xs.iter().any(&mut f),
        Found::Many(nodes) => nodes.iter().any(|n| match n {
            Value::Array(xs) => xs.iter().any(&mut f),
            other => f(other),
        }),
        _ => false,
    }
}

/// JSON equality where numbers compare by value.
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Profile;
    use serde_json::json;

    fn claim(path: &str, op: Op) -> Rule {
        Rule::Claim {
            path: ClaimPath::compile(path, &[]).unwrap(),
            op,
        }
    }

    fn lit(v: Value) -> Operand {
        Operand::Literal(v)
    }

    fn any_of(names: &[&str]) -> Need {
        Need::AnyOf(names.iter().map(|s| s.to_string()).collect())
    }

    fn all_of(names: &[&str]) -> Need {
        Need::AllOf(names.iter().map(|s| s.to_string()).collect())
    }

    fn claims() -> Value {
        json!({
            "sub": "u1", "user_role": "admin", "level": 3, "roles": ["a", "b"],
            "permissions": ["orders:read"], "user_id": 42, "email": "ada@example.com",
            "subscription_level": "gold", "scope": "order inventory",
            "meta": {"region": "eu"}, "flag": null, "dct": "t2",
            "tenants": {"t1": {"roles": ["admin"], "permissions": ["reports:read"]},
                        "t2": {"roles": ["viewer"]}, "bad": {"roles": "admin"}}
        })
    }

    struct Env {
        at: ClaimLocations,
        headers: HeaderMap,
        params: Vec<(&'static str, String)>,
    }

    impl Env {
        fn new() -> Self {
            let mut headers = HeaderMap::new();
            headers.insert("x-tenant", "t1".parse().unwrap());
            headers.append("x-twice", "a".parse().unwrap());
            headers.append("x-twice", "a".parse().unwrap());
            Self {
                at: ClaimLocations::compile(&Profile::Generic.locations(), &[]).unwrap(),
                headers,
                params: vec![("tenant", "t1".into()), ("owner", "42".into())],
            }
        }

        fn eval(&self, rule: &Rule, claims: &Value) -> bool {
            let request = RequestFacts {
                method: &Method::GET,
                host: "api.example.com",
                params: &self.params,
                headers: &self.headers,
            };
            rule.eval(&Ctx {
                claims,
                at: &self.at,
                request: &request,
            })
        }
    }

    fn param(index: usize, name: &str) -> RequestValue {
        RequestValue::Param {
            index,
            name: name.into(),
        }
    }

    fn levels() -> Arc<Vec<String>> {
        Arc::new(
            ["free", "silver", "gold", "platinum"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        )
    }

    #[test]
    fn operators_table() {
        let env = Env::new();
        let c = claims();
        let re = |r: &str| Op::Matches(Regex::new(&format!("^(?:{r})$")).unwrap());
        let cases: Vec<(Rule, bool)> = vec![
            (claim("$.user_role", Op::Equals(lit(json!("admin")))), true),
            (claim("$.user_role", Op::Equals(lit(json!("user")))), false),
            (claim("$.level", Op::Equals(lit(json!(3.0)))), true),
            (claim("$.level", Op::Equals(lit(json!("3")))), false),
            (
                claim(
                    "$.subscription_level",
                    Op::In(vec![json!("gold"), json!("platinum")]),
                ),
                true,
            ),
            (
                claim("$.subscription_level", Op::In(vec![json!("free")])),
                false,
            ),
            (claim("$.roles", Op::Contains(lit(json!("b")))), true),
            (claim("$.roles", Op::Contains(lit(json!("c")))), false),
            (
                claim("$.roles", Op::ContainsAny(vec![json!("x"), json!("a")])),
                true,
            ),
            (
                claim("$.roles", Op::ContainsAny(vec![json!("x"), json!("y")])),
                false,
            ),
            (
                claim("$.roles", Op::ContainsAll(vec![json!("a"), json!("b")])),
                true,
            ),
            (
                claim("$.roles", Op::ContainsAll(vec![json!("a"), json!("x")])),
                false,
            ),
            (claim("$.email", re(r"[^@]+@example\.com")), true),
            // Anchored: a match inside the string is not enough.
            (claim("$.email", re(r"example\.com")), false),
            (claim("$.level", Op::Compare(Cmp::Gt, 2.0)), true),
            (claim("$.level", Op::Compare(Cmp::Gt, 3.0)), false),
            (claim("$.level", Op::Compare(Cmp::Gte, 3.0)), true),
            (claim("$.level", Op::Compare(Cmp::Lt, 3.5)), true),
            (claim("$.level", Op::Compare(Cmp::Lte, 2.0)), false),
            (
                claim(
                    "$.subscription_level",
                    Op::AtLeast {
                        levels: levels(),
                        rank: 2,
                    },
                ),
                true,
            ),
            (
                claim(
                    "$.subscription_level",
                    Op::AtLeast {
                        levels: levels(),
                        rank: 3,
                    },
                ),
                false,
            ),
            (claim("$.meta.region", Op::Exists(true)), true),
            (claim("$.flag", Op::Exists(true)), false),
            (claim("$.flag", Op::Exists(false)), true),
            (
                claim("$.tenants.*.roles", Op::Contains(lit(json!("viewer")))),
                true,
            ),
            (
                claim("$.tenants.*.roles", Op::Equals(lit(json!(["admin"])))),
                false,
            ),
        ];
        for (i, (rule, want)) in cases.iter().enumerate() {
            assert_eq!(env.eval(rule, &c), *want, "case {i}: {}", rule.describe());
        }
    }

    #[test]
    fn wrong_json_types_never_match_and_never_panic() {
        let env = Env::new();
        let c = claims();
        let ops = || {
            vec![
                Op::Equals(lit(json!("a"))),
                Op::In(vec![json!("a")]),
                Op::Contains(lit(json!("adm"))),
                Op::ContainsAny(vec![json!("a")]),
                Op::ContainsAll(vec![json!("a")]),
                Op::Matches(Regex::new("^(?:.*)$").unwrap()),
                Op::Compare(Cmp::Gte, 0.0),
                Op::AtLeast {
                    levels: levels(),
                    rank: 0,
                },
                Op::Equals(Operand::Request(param(0, "tenant"))),
            ]
        };
        // A string where an array is expected, an array where a string or
        // number is, an object, a bool.
        for path in ["$.user_role", "$.roles", "$.meta", "$.flag", "$.missing"] {
            for op in ops() {
                let rule = claim(path, op);
                let _ = env.eval(&rule, &c);
            }
        }
        let odd = json!({"user_role": true, "roles": "a", "meta": [1, 2], "level": "3"});
        assert!(!env.eval(&claim("$.roles", Op::Contains(lit(json!("a")))), &odd));
        assert!(!env.eval(&claim("$.level", Op::Compare(Cmp::Gte, 0.0)), &odd));
        assert!(!env.eval(
            &claim("$.meta", Op::Matches(Regex::new(".*").unwrap())),
            &odd
        ));
        assert!(!env.eval(&Rule::Role(any_of(&["a"])), &json!({"roles": {"a": 1}})));
        assert!(!env.eval(&Rule::Scope(any_of(&["a"])), &json!({"scope": 7})));
    }

    #[test]
    fn request_values_compare_with_claims() {
        let env = Env::new();
        let c = claims();
        let owner = Operand::Request(param(1, "owner"));
        // `"42"` from the path equals the integer claim 42...
        assert!(env.eval(&claim("$.user_id", Op::Equals(owner.clone())), &c));
        // ...but never a different one, or a non-integer.
        assert!(!env.eval(&claim("$.level", Op::Equals(owner.clone())), &c));
        assert!(!env.eval(
            &claim("$.user_id", Op::Equals(owner)),
            &json!({"user_id": 42.5})
        ));
        let tenant = Operand::Request(param(0, "tenant"));
        assert!(env.eval(
            &claim("$.tenant_ids", Op::Contains(tenant.clone())),
            &json!({"tenant_ids": ["t0", "t1"]})
        ));
        let header = Operand::Request(RequestValue::Header(HeaderName::from_static("x-tenant")));
        assert!(env.eval(&claim("$.home", Op::Equals(header)), &json!({"home": "t1"})));
        // A repeated header is no value at all.
        let twice = Operand::Request(RequestValue::Header(HeaderName::from_static("x-twice")));
        assert!(!env.eval(&claim("$.x", Op::Equals(twice)), &json!({"x": "a"})));
        let host = Operand::Request(RequestValue::Host);
        assert!(env.eval(
            &claim("$.aud", Op::Equals(host)),
            &json!({"aud": "api.example.com"})
        ));
        let method = Operand::Request(RequestValue::Method);
        assert!(env.eval(&claim("$.m", Op::Contains(method)), &json!({"m": ["GET"]})));
    }

    #[test]
    fn shorthands_read_the_profile_locations() {
        let env = Env::new();
        let c = claims();
        let cases: Vec<(Rule, bool)> = vec![
            (Rule::Role(any_of(&["b"])), true),
            (Rule::Role(any_of(&["x", "a"])), true),
            (Rule::Role(all_of(&["a", "b"])), true),
            (Rule::Role(all_of(&["a", "x"])), false),
            (Rule::Permission(any_of(&["orders:read"])), true),
            (Rule::Permission(any_of(&["orders:write"])), false),
            (Rule::Scope(any_of(&["order"])), true),
            (Rule::Scope(any_of(&["ord"])), false),
            (Rule::Scope(all_of(&["order", "inventory"])), true),
        ];
        for (i, (rule, want)) in cases.iter().enumerate() {
            assert_eq!(env.eval(rule, &c), *want, "case {i}: {}", rule.describe());
        }
        assert!(env.eval(&Rule::Scope(any_of(&["a"])), &json!({"scp": ["a", "b"]})));
        assert!(env.eval(&Rule::Scope(any_of(&["b"])), &json!({"scope": ["a", "b"]})));
        // A single string role is one role, not a space-separated list.
        assert!(!env.eval(&Rule::Role(any_of(&["a"])), &json!({"roles": "a b"})));
    }

    #[test]
    fn tenant_rules_look_the_tenant_up_directly() {
        let env = Env::new();
        let c = claims();
        let tenant_role = |tenant: TenantFrom, need: Need| Rule::Tenant {
            kind: TenantKind::Roles,
            tenant,
            need,
        };
        let from_path = || TenantFrom::Request(param(0, "tenant"));
        assert!(env.eval(&tenant_role(from_path(), any_of(&["admin", "analyst"])), &c));
        assert!(!env.eval(&tenant_role(from_path(), any_of(&["viewer"])), &c));
        // Admin in t1 says nothing of t2, the current tenant.
        assert!(!env.eval(&tenant_role(TenantFrom::Current, any_of(&["admin"])), &c));
        assert!(env.eval(&tenant_role(TenantFrom::Current, any_of(&["viewer"])), &c));
        let header = TenantFrom::Request(RequestValue::Header(HeaderName::from_static("x-tenant")));
        assert!(env.eval(&tenant_role(header, any_of(&["admin"])), &c));
        assert!(!env.eval(
            &tenant_role(TenantFrom::Literal("nope".into()), any_of(&["admin"])),
            &c
        ));
        // A string where the roles array should be: one role, as at the root.
        assert!(env.eval(
            &tenant_role(TenantFrom::Literal("bad".into()), any_of(&["admin"])),
            &c
        ));
        let perm = Rule::Tenant {
            kind: TenantKind::Permissions,
            tenant: from_path(),
            need: any_of(&["reports:read"]),
        };
        assert!(env.eval(&perm, &c));
        // Request text is only ever a key: a tenant id that looks like a
        // JSONPath or a wildcard finds nothing.
        let env2 = Env {
            params: vec![("tenant", "*".into()), ("owner", "x".into())],
            ..Env::new()
        };
        assert!(!env2.eval(&tenant_role(from_path(), any_of(&["admin", "viewer"])), &c));
        let env3 = Env {
            params: vec![("tenant", "t1'].roles['".into()), ("owner", "x".into())],
            ..Env::new()
        };
        assert!(!env3.eval(&tenant_role(from_path(), any_of(&["admin"])), &c));
    }

    #[test]
    fn combinators() {
        let env = Env::new();
        let c = claims();
        let t = || claim("$.sub", Op::Exists(true));
        let f = || claim("$.nope", Op::Exists(true));
        assert!(env.eval(&Rule::All(vec![t(), t()]), &c));
        assert!(!env.eval(&Rule::All(vec![t(), f()]), &c));
        assert!(env.eval(&Rule::Any(vec![f(), t()]), &c));
        assert!(!env.eval(&Rule::Any(vec![f(), f()]), &c));
        assert!(env.eval(&Rule::Not(Box::new(f())), &c));
        assert!(env.eval(&Rule::All(vec![]), &c), "all of nothing holds");
        assert!(!env.eval(&Rule::Any(vec![]), &c), "any of nothing fails");
    }

    #[test]
    fn request_value_syntax() {
        let params = vec!["tenant".to_string()];
        assert_eq!(RequestValue::parse("admin", &params), Ok(None));
        assert_eq!(
            RequestValue::parse("{tenant}", &params),
            Ok(Some(param(0, "tenant")))
        );
        assert_eq!(
            RequestValue::parse("{host}", &params),
            Ok(Some(RequestValue::Host))
        );
        assert_eq!(
            RequestValue::parse("{header:X-Org}", &params),
            Ok(Some(RequestValue::Header(HeaderName::from_static("x-org"))))
        );
        let err = RequestValue::parse("{tenat}", &params).unwrap_err();
        assert!(err.contains("tenant"), "{err}");
        assert!(RequestValue::parse("{header:bad name}", &params).is_err());
    }

    #[test]
    fn trace_records_each_step_with_what_it_found() {
        let env = Env::new();
        let c = claims();
        let rule = Rule::Any(vec![
            claim("$.user_role", Op::Equals(lit(json!("root")))),
            Rule::All(vec![
                Rule::Scope(any_of(&["order"])),
                claim("$.subscription_level", Op::In(vec![json!("gold")])),
            ]),
        ]);
        let request = RequestFacts {
            method: &Method::GET,
            host: "h",
            params: &env.params,
            headers: &env.headers,
        };
        let ctx = Ctx {
            claims: &c,
            at: &env.at,
            request: &request,
        };
        let mut steps: Vec<Step> = Vec::new();
        assert!(rule.eval_with(&ctx, &mut steps, 0));
        let lines: Vec<(usize, &str, bool, Option<&str>)> = steps
            .iter()
            .map(|s| (s.depth, s.rule.as_str(), s.held, s.found.as_deref()))
            .collect();
        assert_eq!(
            lines,
            vec![
                (0, "any of 2", true, None),
                (
                    1,
                    "claim $.user_role equals \"root\"",
                    false,
                    Some("found \"admin\"")
                ),
                (1, "all of 2", true, None),
                (
                    2,
                    "scope \"order\"",
                    true,
                    Some("found [\"order\", \"inventory\"]")
                ),
                (
                    2,
                    "claim $.subscription_level in [\"gold\"]",
                    true,
                    Some("found \"gold\"")
                ),
            ]
        );
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use crate::token::Profile;
    use proptest::prelude::*;

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-5i64..5).prop_map(Value::from),
            prop_oneof![Just("a"), Just("b"), Just("gold"), Just("x y")].prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![Just("a"), Just("b"), Just("c"), Just("roles"), Just("n")]
                        .prop_map(String::from),
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn leaf() -> impl Strategy<Value = Rule> {
        let path = prop_oneof![
            Just("$.a"),
            Just("$.b.c"),
            Just("$.roles"),
            Just("$.n"),
            Just("$.*.a")
        ]
        .prop_map(|p| ClaimPath::compile(p, &[]).unwrap());
        let levels = Arc::new(vec!["a".to_string(), "b".to_string(), "gold".to_string()]);
        let op = prop_oneof![
            json().prop_map(|v| Op::Equals(Operand::Literal(v))),
            json().prop_map(|v| Op::Contains(Operand::Literal(v))),
            prop::collection::vec(json(), 1..3).prop_map(Op::In),
            prop::collection::vec(json(), 1..3).prop_map(Op::ContainsAny),
            prop::collection::vec(json(), 1..3).prop_map(Op::ContainsAll),
            any::<bool>().prop_map(Op::Exists),
            (-5.0f64..5.0).prop_map(|n| Op::Compare(Cmp::Gte, n)),
            Just(Op::Matches(Regex::new("^(?:[ab].*)$").unwrap())),
            (0usize..3).prop_map(move |rank| Op::AtLeast {
                levels: levels.clone(),
                rank
            }),
        ];
        let names = prop::collection::vec(
            prop_oneof![Just("a"), Just("b"), Just("x")].prop_map(String::from),
            1..3,
        );
        prop_oneof![
            4 => (path, op).prop_map(|(path, op)| Rule::Claim { path, op }),
            1 => names.clone().prop_map(|n| Rule::Role(Need::AnyOf(n))),
            1 => names.clone().prop_map(|n| Rule::Scope(Need::AllOf(n))),
            1 => names.prop_map(|n| Rule::Tenant {
                kind: TenantKind::Roles,
                tenant: TenantFrom::Literal("a".into()),
                need: Need::AnyOf(n),
            }),
        ]
    }

    fn rule() -> impl Strategy<Value = Rule> {
        leaf().prop_recursive(3, 16, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Rule::All),
                prop::collection::vec(inner.clone(), 0..3).prop_map(Rule::Any),
                inner.prop_map(|r| Rule::Not(Box::new(r))),
            ]
        })
    }

    fn eval(rule: &Rule, claims: &Value) -> bool {
        let at = ClaimLocations::compile(&Profile::Generic.locations(), &[]).unwrap();
        let headers = HeaderMap::new();
        let request = RequestFacts {
            method: &Method::GET,
            host: "h",
            params: &[],
            headers: &headers,
        };
        rule.eval(&Ctx {
            claims,
            at: &at,
            request: &request,
        })
    }

    proptest! {
        #[test]
        fn double_negation(r in rule(), c in json()) {
            let nn = Rule::Not(Box::new(Rule::Not(Box::new(r.clone()))));
            prop_assert_eq!(eval(&nn, &c), eval(&r, &c));
        }

        #[test]
        fn singletons(r in rule(), c in json()) {
            let x = eval(&r, &c);
            prop_assert_eq!(eval(&Rule::Any(vec![r.clone()]), &c), x);
            prop_assert_eq!(eval(&Rule::All(vec![r.clone()]), &c), x);
        }

        #[test]
        fn de_morgan_and_commutativity(x in rule(), y in rule(), c in json()) {
            let not = |r: &Rule| Rule::Not(Box::new(r.clone()));
            prop_assert_eq!(
                eval(&not(&Rule::Any(vec![x.clone(), y.clone()])), &c),
                eval(&Rule::All(vec![not(&x), not(&y)]), &c)
            );
            prop_assert_eq!(
                eval(&Rule::All(vec![x.clone(), y.clone()]), &c),
                eval(&Rule::All(vec![y.clone(), x.clone()]), &c)
            );
            prop_assert_eq!(
                eval(&Rule::Any(vec![x.clone(), y.clone()]), &c),
                eval(&Rule::Any(vec![y, x]), &c)
            );
        }

        #[test]
        fn the_trace_agrees_with_the_evaluation(r in rule(), c in json()) {
            let at = ClaimLocations::compile(&Profile::Generic.locations(), &[]).unwrap();
            let headers = HeaderMap::new();
            let request = RequestFacts { method: &Method::GET, host: "h", params: &[], headers: &headers };
            let ctx = Ctx { claims: &c, at: &at, request: &request };
            let mut steps: Vec<Step> = Vec::new();
            let traced = r.eval_with(&ctx, &mut steps, 0);
            prop_assert_eq!(traced, r.eval(&ctx));
            prop_assert_eq!(steps[0].held, traced);
            prop_assert_eq!(steps[0].depth, 0);
        }
    }
}
