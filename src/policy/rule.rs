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

use regex::Regex;
use serde_json::Value;

pub use crate::claims::{ClaimLocations, LocationTexts, RequestFacts, RequestValue};
use crate::claims::{ClaimPath, Found};

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
mod props;
#[cfg(test)]
mod tests;
