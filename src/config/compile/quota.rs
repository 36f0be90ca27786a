//! Compiling a route's `rate_limits`: the key template, the plan claim, the
//! rates and the store with its failure mode (SECURITY.md rule 24).

use super::*;
use crate::config::schema::RateLimitDoc;
use crate::quota::RateLimit;

impl Compiler {
    pub(super) fn rate_limit(
        &self,
        doc: &Spanned<RateLimitDoc>,
        params: &[String],
    ) -> Result<RateLimit, String> {
        use crate::quota::{gcra::Rate, OnStoreError, PlanRate, StoreKind};
        let doc = &doc.value;
        let rate = |t: &str| -> Result<PlanRate, String> {
            match t.trim() {
                "unlimited" => Ok(PlanRate::Unlimited),
                other => Rate::parse(other).map(PlanRate::Limited),
            }
        };
        let key = HeaderTemplate::compile("x-rate-limit-key", &doc.key, &self.untrusted, params)
            .map_err(|e| format!("key: {e}"))?;
        if key.reads_request() && !doc.key_from_request {
            return Err("the key reads the request (a path parameter, header or host), which the client chooses: \
                 say `key_from_request: true` to mean it (SECURITY.md rule 24)"
                .into());
        }
        let by = match &doc.by {
            Some(p) => {
                Some(ClaimPath::compile(p, &self.untrusted).map_err(|e| format!("by: {e}"))?)
            }
            None => None,
        };
        if by.is_none() && !doc.limits.is_empty() {
            return Err("`limits:` by plan needs `by:`, the claim naming the plan".into());
        }
        if by.is_some() && doc.limits.is_empty() {
            return Err("`by:` needs `limits:`, a rate per plan".into());
        }
        let plans = doc
            .limits
            .iter()
            .map(|(p, t)| {
                rate(t)
                    .map(|r| (p.clone(), r))
                    .map_err(|e| format!("plan `{p}`: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let default = match &doc.default {
            Some(t) => rate(t)?,
            None if by.is_some() => {
                return Err(
                    "needs `default:` for a plan not listed or a token without the claim \
                     (`unlimited` says so explicitly)"
                        .into(),
                )
            }
            None => return Err("needs a rate: `default: 60/min`".into()),
        };
        let store = match doc.store.as_deref() {
            None | Some("local") => StoreKind::Local,
            Some("redis") => StoreKind::Redis,
            Some(o) => return Err(format!("store `{o}` is not `local` or `redis`")),
        };
        let on_store_error = match (store, doc.on_store_error.as_deref()) {
            (StoreKind::Redis, None) => {
                return Err("`store: redis` needs `on_store_error: allow | deny | local`, what to do when Redis fails (SECURITY.md rule 24)".into())
            }
            (StoreKind::Local, Some(_)) => {
                return Err("`on_store_error` is for `store: redis`".into())
            }
            (_, None | Some("local")) => OnStoreError::Local,
            (_, Some("allow")) => OnStoreError::Allow,
            (_, Some("deny")) => OnStoreError::Deny,
            (_, Some(o)) => return Err(format!("on_store_error `{o}` is not allow, deny or local")),
        };
        Ok(RateLimit {
            name: doc.name.clone(),
            key,
            by,
            plans,
            default,
            store,
            on_store_error,
            headers: doc.headers,
        })
    }
}
