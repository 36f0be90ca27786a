//! Quotas by claim: a route's `rate_limits`, each with a key rendered from
//! the verified claims (and, when the limit says so, request values) and a
//! rate chosen by a claim (`by: $.subscription_level` → `free: 60/min`,
//! `gold: 6000/min`, a default).
//!
//! The check runs in the decision core after the rule allowed the request,
//! so every front door enforces it, and a refused request reaches no
//! upstream. Limits are kept on this node ([`local`]) or shared by a fleet
//! through Redis ([`redis`]); a Redis fault follows the limit's declared
//! `on_store_error` (SECURITY.md rule 24).

pub mod gcra;
pub mod local;
pub mod redis;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderName, HeaderValue};

use crate::claims::{ClaimPath, Found, RequestFacts};
use crate::forward::template::{HeaderTemplate, Rendered};
use crate::metrics::Metrics;
use gcra::{Rate, Verdict};

pub use self::redis::{RedisSettings, RedisStore};

/// Where a limit keeps its counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Local,
    Redis,
}

/// What a Redis-backed limit does when Redis fails or is too slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStoreError {
    /// Let the request through (counted in the metrics).
    Allow,
    /// Refuse it with 503 `rate_limit_unavailable`.
    Deny,
    /// Count it on this node instead, with the same rate.
    Local,
}

impl OnStoreError {
    pub fn as_str(self) -> &'static str {
        match self {
            OnStoreError::Allow => "allow",
            OnStoreError::Deny => "deny",
            OnStoreError::Local => "local",
        }
    }
}

/// A rate for a plan, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanRate {
    Limited(Rate),
    Unlimited,
}

/// One compiled `rate_limits` entry.
#[derive(Debug, Clone)]
pub struct RateLimit {
    pub name: String,
    pub key: HeaderTemplate,
    /// The claim naming the plan; `None`: one rate for everyone.
    pub by: Option<ClaimPath>,
    /// Plan name → rate, in the order written.
    pub plans: Vec<(String, PlanRate)>,
    /// For a plan not listed, a missing claim, or no `by`.
    pub default: PlanRate,
    pub store: StoreKind,
    pub on_store_error: OnStoreError,
    /// Send `RateLimit` / `RateLimit-Policy` on allowed responses too.
    pub headers: bool,
}

impl RateLimit {
    /// The plan (its name, `default` otherwise) and its rate for `claims`.
    pub fn plan(&self, claims: &serde_json::Value) -> (&str, PlanRate) {
        if let Some(by) = &self.by {
            let value = match by.find(claims) {
                Found::One(serde_json::Value::String(s)) => Some(s.as_str()),
                _ => None,
            };
            if let Some(v) = value {
                if let Some((name, rate)) = self.plans.iter().find(|(p, _)| p == v) {
                    return (name, *rate);
                }
            }
        }
        ("default", self.default)
    }
}

/// The stores, shared by every snapshot.
pub struct Quotas {
    pub local: local::LocalStore,
    pub redis: Option<RedisStore>,
    metrics: Arc<Metrics>,
}

/// What the limits of an allowed request add to its response.
pub type ResponseHeaders = Vec<(HeaderName, HeaderValue)>;

/// A refusal by a limit: 429 with its headers, or 503 when the store failed
/// and the limit says `deny`.
#[derive(Debug, Clone)]
pub enum Refusal {
    Limited(ResponseHeaders),
    StoreUnavailable,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers),
/// and `Retry-After` when refused.
fn headers(limit: &str, rate: &Rate, verdict: &Verdict) -> ResponseHeaders {
    let name = limit.replace(['"', '\\'], "");
    let w = rate.window_secs();
    let mut out = Vec::with_capacity(3);
    let policy = format!("\"{name}\";q={};w={w}", rate.count);
    let (remaining, reset) = match verdict {
        Verdict::Allowed { remaining } => (*remaining, 0),
        Verdict::Limited { retry_after } => (0, retry_secs(*retry_after)),
    };
    let state = format!("\"{name}\";r={remaining};t={reset}");
    for (h, v) in [("ratelimit-policy", policy), ("ratelimit", state)] {
        if let Ok(v) = HeaderValue::from_str(&v) {
            out.push((HeaderName::from_static(h), v));
        }
    }
    if let Verdict::Limited { retry_after } = verdict {
        out.push((
            http::header::RETRY_AFTER,
            HeaderValue::from(retry_secs(*retry_after)),
        ));
    }
    out
}

fn retry_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl Quotas {
    pub fn new(max_local_keys: usize, redis: Option<RedisSettings>, metrics: Arc<Metrics>) -> Self {
        Self {
            local: local::LocalStore::new(max_local_keys),
            redis: redis.map(RedisStore::new),
            metrics,
        }
    }

    /// Every limit of `route` for one allowed request: the headers for the
    /// response, or the refusal. Limits are checked in order; a refusal
    /// stops there.
    pub async fn check(
        &self,
        route: &str,
        limits: &[RateLimit],
        claims: &serde_json::Value,
        facts: &RequestFacts<'_>,
    ) -> Result<ResponseHeaders, Refusal> {
        let mut out: Option<(u64, ResponseHeaders)> = None;
        for limit in limits {
            let (plan, rate) = limit.plan(claims);
            let PlanRate::Limited(rate) = rate else {
                continue;
            };
            // A key that renders empty (or fails) is one shared bucket for
            // the limit and plan: never a way around it.
            let key = match limit.key.render(claims, facts) {
                Ok(Rendered::Value(v)) => String::from_utf8_lossy(v.as_bytes()).into_owned(),
                _ => String::new(),
            };
            let verdict = self.verdict(route, limit, plan, &rate, &key).await?;
            let result = match verdict {
                Verdict::Allowed { .. } => "allowed",
                Verdict::Limited { .. } => "limited",
            };
            self.metrics
                .rate_limit_decisions
                .with_label_values(&[route, &limit.name, plan, result])
                .inc();
            match verdict {
                Verdict::Limited { .. } => {
                    return Err(Refusal::Limited(headers(&limit.name, &rate, &verdict)));
                }
                Verdict::Allowed { remaining } if limit.headers => {
                    // The binding limit (least left) speaks for the response.
                    if out.as_ref().is_none_or(|(r, _)| remaining < *r) {
                        out = Some((remaining, headers(&limit.name, &rate, &verdict)));
                    }
                }
                Verdict::Allowed { .. } => {}
            }
        }
        Ok(out.map(|(_, h)| h).unwrap_or_default())
    }

    async fn verdict(
        &self,
        route: &str,
        limit: &RateLimit,
        plan: &str,
        rate: &Rate,
        key: &str,
    ) -> Result<Verdict, Refusal> {
        let local = || {
            let bucket = self.local.bucket(&[route, &limit.name, plan, key]);
            self.local.check(bucket, rate, now_us())
        };
        if limit.store == StoreKind::Local {
            return Ok(local());
        }
        let error = match &self.redis {
            Some(redis) => {
                // Every node must name a bucket alike, so no per-process
                // secret: SHA-256 (first 128 bits), which nobody can aim a
                // key of theirs at another's bucket with.
                let bucket = format!("{route}:{}:{plan}:{}", limit.name, digest_hex(key));
                match redis.check(&bucket, rate).await {
                    Ok(v) => return Ok(v),
                    Err(e) => e.to_string(),
                }
            }
            None => "no redis configured".to_string(),
        };
        let mode = limit.on_store_error;
        tracing::warn!(
            route,
            limit = limit.name,
            on_store_error = mode.as_str(),
            "rate-limit store failed: {error}"
        );
        self.metrics
            .rate_limit_store_errors
            .with_label_values(&[route, &limit.name, mode.as_str()])
            .inc();
        match mode {
            OnStoreError::Allow => Ok(Verdict::Allowed {
                remaining: rate.count,
            }),
            OnStoreError::Deny => Err(Refusal::StoreUnavailable),
            OnStoreError::Local => Ok(local()),
        }
    }
}

/// The first 128 bits of SHA-256 of `key`, in hex: the key text never
/// reaches Redis in the clear.
fn digest_hex(key: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
    d.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
