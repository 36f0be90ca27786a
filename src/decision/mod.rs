//! The decision core: a request head and the snapshot in, an [`Outcome`] out.
//!
//! route → hygiene → public? → extract → verify → decide → render
//!
//! Every front door is a thin adapter over [`decide`]: the reverse proxy
//! (which then calls the upstream), forward-auth for nginx / Traefik /
//! Envoy, the Hasura webhook, and `explain` / `claimgate test` offline. The
//! core does no I/O but waiting for keys (a kid-miss load, SECURITY.md rule
//! 11), and records no telemetry: the door records it once, from the
//! outcome (`telemetry`).

mod stages;
pub mod telemetry;

use std::net::SocketAddr;
use std::sync::Arc;

use http::request::Parts;
use http::{HeaderName, HeaderValue};
use serde_json::{Map, Value};

use crate::policy::rule::{NoTrace, Tracer};
use crate::policy::{canonical_segments, Matched, Route};
use crate::proxy::Rejection;
use crate::snapshot::Snapshot;
use crate::token::extract::TokenSource;
use crate::token::{Claims, Issuer, TokenCache};

pub use stages::{authorize, hygiene, normal_host, request_host};

/// What the connection tells about the client.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub addr: SocketAddr,
    pub tls: bool,
}

/// What the core may use besides the snapshot: the verified-token cache
/// (none offline) and the clock.
pub struct Ctx<'s> {
    pub snapshot: &'s Snapshot,
    pub cache: Option<&'s TokenCache>,
    pub now: u64,
    /// The rate-limit stores; `None` offline (explain, policy tests), where
    /// limits are shown, not counted.
    pub quotas: Option<&'s crate::quota::Quotas>,
    /// The client's address, for `{client}` (the reverse proxy's door).
    pub client: Option<std::net::IpAddr>,
    /// Where the stages' times go when the request is traced.
    pub marks: Option<std::sync::Arc<crate::otel::Marks>>,
}

impl Ctx<'_> {
    /// Marks a stage's boundary for the request's trace, if traced.
    pub fn mark(&self, mark: crate::otel::Mark) {
        if let Some(m) = &self.marks {
            m.set(mark);
        }
    }
}

/// Claims handed to the core instead of a token (`explain --claims` and
/// policy tests): taken as verified for `issuer`, untrusted claims still
/// removed.
pub struct Given {
    pub issuer: Arc<Issuer>,
    pub claims: Map<String, Value>,
}

/// The decision label of `claimgate_requests_total` and the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allowed,
    Public,
    Denied,
    Unauthenticated,
    BadRequest,
    NoRoute,
    Unavailable,
    UpstreamError,
    Timeout,
    RateLimited,
}

impl Decision {
    pub const ALL: [Decision; 10] = [
        Decision::Allowed,
        Decision::Public,
        Decision::Denied,
        Decision::Unauthenticated,
        Decision::BadRequest,
        Decision::NoRoute,
        Decision::Unavailable,
        Decision::UpstreamError,
        Decision::Timeout,
        Decision::RateLimited,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Public => "public",
            Decision::Denied => "denied",
            Decision::Unauthenticated => "unauthenticated",
            Decision::BadRequest => "bad_request",
            Decision::NoRoute => "no_route",
            Decision::Unavailable => "unavailable",
            Decision::UpstreamError => "upstream_error",
            Decision::Timeout => "timeout",
            Decision::RateLimited => "rate_limited",
        }
    }
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the core decided about one request.
pub struct Outcome<'s> {
    /// The route and its path parameters, once routing succeeded.
    pub matched: Option<Matched<'s>>,
    /// The issuer, as soon as the token named a known one.
    pub issuer: Option<Arc<Issuer>>,
    /// Whether the verified-token cache answered (`None`: not consulted).
    pub cache_hit: Option<bool>,
    pub verdict: Result<Allowed, Rejection>,
}

/// An allowed request: what to set on it before it goes upstream.
#[derive(Debug)]
pub struct Allowed {
    /// `Public` or `Allowed`.
    pub decision: Decision,
    pub claims: Option<Arc<Claims>>,
    /// Where the token came from.
    pub source: Option<TokenSource>,
    /// The headers claimgate sets from the claims (templates, the claims
    /// header, Hasura's session), already in the request head too.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// The query without the credential, when the token came from it
    /// (`Some("")`: no query left).
    pub query: Option<String>,
    /// For the response to the client: the rate limits' `RateLimit` headers
    /// when the route asks for them.
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
}

/// What telemetry needs of an outcome once the door has taken its verdict.
#[derive(Debug, Default)]
pub struct Seen {
    pub issuer: Option<Arc<Issuer>>,
    pub cache_hit: Option<bool>,
}

impl Seen {
    pub fn issuer_name(&self) -> Option<&str> {
        self.issuer.as_deref().map(|i| i.name.as_str())
    }
}

impl<'s> Outcome<'s> {
    /// The route, what telemetry needs, and the verdict, apart.
    pub fn split(self) -> (Option<Matched<'s>>, Seen, Result<Allowed, Rejection>) {
        let seen = Seen {
            issuer: self.issuer,
            cache_hit: self.cache_hit,
        };
        (self.matched, seen, self.verdict)
    }
}

impl Outcome<'_> {
    /// The route's name, or `none`.
    pub fn route_name(&self) -> &str {
        self.matched
            .as_ref()
            .map_or("none", |m| m.route.name.as_str())
    }

    pub fn route(&self) -> Option<&Arc<Route>> {
        self.matched.as_ref().map(|m| m.route)
    }

    pub fn decision(&self) -> Decision {
        match &self.verdict {
            Ok(a) => a.decision,
            Err(r) => r.decision(),
        }
    }
}

/// The router stage alone: the route for a request head (rule 16: on the
/// canonical path; ambiguous paths are refused), and the host it was
/// matched on (normalised once here; the later stages take it).
pub fn route<'s>(snapshot: &'s Snapshot, head: &Parts) -> Result<(Matched<'s>, String), Rejection> {
    let segments = canonical_segments(head.uri.path()).map_err(Rejection::BadPath)?;
    let host = request_host(head);
    match snapshot.router.find(&host, &head.method, &segments) {
        Some(matched) => Ok((matched, host)),
        None => {
            // The path is a route's, only not with this method: 405, and
            // which methods it takes.
            let allowed = snapshot.router.methods_for(&host, &segments);
            if allowed.is_empty() {
                Err(Rejection::NoRoute)
            } else {
                Err(Rejection::MethodNotAllowed(allowed))
            }
        }
    }
}

/// The whole decision for a request head: route, then [`decide_routed`].
/// `head` is left as the upstream should receive it (client headers
/// cleaned, credential removed, claim headers set).
pub async fn decide<'s>(ctx: &Ctx<'s>, head: &mut Parts, given: Option<Given>) -> Outcome<'s> {
    decide_traced(ctx, head, given, &mut NoTrace).await
}

/// [`decide`] with the rule's trace written to `trace` (`explain`).
pub async fn decide_traced<'s, T: Tracer>(
    ctx: &Ctx<'s>,
    head: &mut Parts,
    given: Option<Given>,
    trace: &mut T,
) -> Outcome<'s> {
    match route(ctx.snapshot, head) {
        Ok((matched, host)) => decide_routed(ctx, matched, &host, head, given, trace).await,
        Err(rejection) => Outcome {
            matched: None,
            issuer: None,
            cache_hit: None,
            verdict: Err(rejection),
        },
    }
}

/// Everything after routing: hygiene, the credential, the rule, the
/// headers. For a door that routed already (to label a timeout).
pub async fn decide_routed<'s, T: Tracer>(
    ctx: &Ctx<'s>,
    matched: Matched<'s>,
    host: &str,
    head: &mut Parts,
    given: Option<Given>,
    trace: &mut T,
) -> Outcome<'s> {
    let ran = stages::run(ctx, &matched, host, head, given, trace).await;
    Outcome {
        matched: Some(matched),
        issuer: ran.issuer,
        cache_hit: ran.cache_hit,
        verdict: ran.verdict,
    }
}
