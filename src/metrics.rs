//! Every metric claimgate exports, in one place.
//!
//! Names carry the `claimgate_` prefix, base units and `_total` on counters.
//! Labels come only from bounded sets: route names and issuer names from the
//! configuration, reason codes and results from enums. Never `sub`, tenant,
//! token, path or header values.

use std::sync::OnceLock;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

mod route_series;
pub use route_series::RouteHandles;

/// Request-duration buckets, fine below a millisecond so that claimgate's own
/// overhead is visible, up to the upstream timeouts.
const DURATION_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// The `class` label of `claimgate_upstream_responses_total`, by status
/// class (1xx first).
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

pub struct Metrics {
    registry: Registry,
    /// Requests by route and decision (`allowed`, `denied`, `unauthenticated`, ...).
    pub requests: IntCounterVec,
    /// Token failures by issuer (`unknown` before one is known) and reason code.
    pub auth_failures: IntCounterVec,
    /// Upstream answers by route and status class (`2xx`, `5xx`, ...): an
    /// upstream 5xx is `allowed` in `requests`, and counted here. (Policy
    /// denials are `requests{decision="denied"}`; no counter repeats them.)
    pub upstream_responses: IntCounterVec,
    /// Whole request time as claimgate saw it, by route.
    pub request_duration: HistogramVec,
    /// Time from sending to the upstream to its response head, by route;
    /// failed attempts included.
    pub upstream_duration: HistogramVec,
    /// Upstream faults by route and kind (`connect`, `timeout`, `protocol`).
    pub upstream_errors: IntCounterVec,
    /// JWKS loads by issuer and result (`success`, `failure`).
    pub jwks_fetches: IntCounterVec,
    /// Unknown-kid refreshes not made because of the cooldown, by issuer.
    pub jwks_refreshes_suppressed: IntCounterVec,
    /// Usable keys per issuer.
    pub jwks_keys: IntGaugeVec,
    /// Unix time of the last successful key load per issuer.
    pub jwks_last_success: IntGaugeVec,
    /// Verified-token cache lookups by result (`hit`, `miss`).
    pub token_cache_lookups: IntCounterVec,
    /// `token_cache_lookups`' two series, resolved on first use.
    token_cache_results: [OnceLock<IntCounter>; 2],
    /// Each thread's resolved per-route series ([`Metrics::for_route`]).
    per_thread: route_series::PerThread,
    /// Introspection calls by issuer and result (`active`, `inactive`,
    /// `error`, `refused`, `throttled`).
    pub introspection_calls: IntCounterVec,
    pub introspection_duration: HistogramVec,
    /// Introspection answer cache lookups by issuer and result.
    pub introspection_cache_lookups: IntCounterVec,
    /// Policy loads by result.
    pub config_reloads: IntCounterVec,
    /// Server certificate re-reads that found a new pair, by result.
    pub tls_reloads: IntCounterVec,
    /// Generation of the serving snapshot.
    pub config_generation: IntGauge,
    /// Tokens in the verified-token cache, set when metrics are scraped.
    pub token_cache_entries: IntGauge,
    pub rate_limit_decisions: IntCounterVec,
    /// Upgraded (WebSocket) connections open now, by route.
    pub upgraded_open: prometheus::IntGaugeVec,
    pub upgraded_closed: IntCounterVec,
    pub rate_limit_store_errors: IntCounterVec,
}

impl Metrics {
    /// `claimgate_token_cache_lookups_total{result="hit"}` or `"miss"`.
    pub fn token_cache_lookup(&self, hit: bool) -> &IntCounter {
        self.token_cache_results[usize::from(hit)].get_or_init(|| {
            self.token_cache_lookups
                .with_label_values(&[if hit { "hit" } else { "miss" }])
        })
    }

    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let requests = counter(
            "claimgate_requests_total",
            "Requests handled, by route and decision.",
            &["route", "decision"],
        );
        let auth_failures = counter(
            "claimgate_auth_failures_total",
            "Requests refused for a token fault, by issuer and reason.",
            &["issuer", "reason"],
        );
        let upstream_responses = counter(
            "claimgate_upstream_responses_total",
            "Upstream answers, by route and status class (1xx ... 5xx).",
            &["route", "class"],
        );
        let upstream_errors = counter(
            "claimgate_upstream_errors_total",
            "Upstream faults, by route and kind.",
            &["route", "kind"],
        );
        let rate_limit_decisions = counter(
            "claimgate_rate_limit_decisions_total",
            "Rate-limit checks, by route, limit, plan and result (allowed, limited).",
            &["route", "limit", "plan", "result"],
        );
        let rate_limit_store_errors = counter(
            "claimgate_rate_limit_store_errors_total",
            "Rate-limit store (Redis) failures, by route, limit and the failure mode applied.",
            &["route", "limit", "on_store_error"],
        );
        let upgraded_closed = counter(
            "claimgate_upgraded_connections_closed_total",
            "Upgraded (WebSocket) connections ended, by route and reason (closed, error, token_expired).",
            &["route", "reason"],
        );
        let upgraded_open = prometheus::IntGaugeVec::new(
            Opts::new(
                "claimgate_upgraded_connections",
                "Upgraded (WebSocket) connections open now, by route.",
            ),
            &["route"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(upgraded_open.clone()))
            .expect("unique metric");
        let jwks_fetches = counter(
            "claimgate_jwks_fetches_total",
            "JWKS loads, by issuer and result.",
            &["issuer", "result"],
        );
        let jwks_refreshes_suppressed = counter(
            "claimgate_jwks_refreshes_suppressed_total",
            "Unknown-kid JWKS refreshes skipped because of the cooldown, by issuer.",
            &["issuer"],
        );
        let token_cache_lookups = counter(
            "claimgate_token_cache_lookups_total",
            "Verified-token cache lookups, by result.",
            &["result"],
        );
        let tls_reloads = counter(
            "claimgate_tls_reloads_total",
            "Server certificate changes picked up (success) or refused, the old pair kept (failure).",
            &["result"],
        );
        let config_reloads = counter(
            "claimgate_config_reloads_total",
            "Policy loads, by result.",
            &["result"],
        );
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let jwks_keys = gauge(
            "claimgate_jwks_keys",
            "Usable keys per issuer.",
            &["issuer"],
        );
        let jwks_last_success = gauge(
            "claimgate_jwks_last_success_timestamp_seconds",
            "Unix time of the last successful JWKS load per issuer.",
            &["issuer"],
        );
        let histogram_by = |name: &str, help: &str, label: &str| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(DURATION_BUCKETS.to_vec()),
                &[label],
            )
            .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        let request_duration = histogram_by(
            "claimgate_request_duration_seconds",
            "Time from request head to response head, by route.",
            "route",
        );
        let upstream_duration = histogram_by(
            "claimgate_upstream_duration_seconds",
            "Time from sending a request upstream to its response head, by route.",
            "route",
        );
        let introspection_duration = histogram_by(
            "claimgate_introspection_duration_seconds",
            "Time of one introspection call, by issuer.",
            "issuer",
        );
        let introspection_calls = counter(
            "claimgate_introspection_calls_total",
            "Introspection calls (and throttled attempts), by issuer and result.",
            &["issuer", "result"],
        );
        let introspection_cache_lookups = counter(
            "claimgate_introspection_cache_lookups_total",
            "Introspection answer cache lookups, by issuer and result.",
            &["issuer", "result"],
        );
        let build_info = IntGaugeVec::new(
            Opts::new(
                "claimgate_build_info",
                "Always 1; the labels say which claimgate this is.",
            ),
            &["version"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(build_info.clone()))
            .expect("unique metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        // process_cpu_seconds_total, process_resident_memory_bytes,
        // process_open_fds, ... (Linux /proc).
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric");
        let config_generation = IntGauge::new(
            "claimgate_config_generation",
            "Generation of the policy snapshot serving requests.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(config_generation.clone()))
            .expect("unique metric");
        let token_cache_entries = IntGauge::new(
            "claimgate_token_cache_entries",
            "Verified tokens in the token cache.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(token_cache_entries.clone()))
            .expect("unique metric");
        Self {
            token_cache_results: Default::default(),
            per_thread: Default::default(),
            registry,
            requests,
            auth_failures,
            upstream_responses,
            request_duration,
            upstream_duration,
            upstream_errors,
            jwks_fetches,
            jwks_refreshes_suppressed,
            jwks_keys,
            jwks_last_success,
            token_cache_lookups,
            introspection_calls,
            introspection_duration,
            introspection_cache_lookups,
            config_reloads,
            config_generation,
            tls_reloads,
            token_cache_entries,
            rate_limit_decisions,
            rate_limit_store_errors,
            upgraded_open,
            upgraded_closed,
        }
    }

    /// Creates, at 0, every failure and outcome series of `snapshot`'s
    /// routes and issuers, so that `rate()` alerts see 0 rather than no data
    /// before the first failure. Labels are configuration names and enums
    /// only.
    pub fn init_series(&self, snapshot: &crate::snapshot::Snapshot) {
        for result in ["success", "failure"] {
            self.config_reloads.with_label_values(&[result]);
            self.tls_reloads.with_label_values(&[result]);
        }
        for route in snapshot.router.routes() {
            let r = route.name.as_str();
            for limit in &route.rate_limits {
                if limit.store == crate::quota::StoreKind::Redis {
                    let mode = limit.on_store_error.as_str();
                    self.rate_limit_store_errors
                        .with_label_values(&[r, &limit.name, mode]);
                }
            }
            for d in crate::decision::Decision::ALL {
                self.requests.with_label_values(&[r, d.as_str()]);
            }
            for class in STATUS_CLASSES {
                self.upstream_responses.with_label_values(&[r, class]);
            }
            for kind in ["timeout", "unavailable"] {
                self.upstream_errors.with_label_values(&[r, kind]);
            }
        }
        for issuer in snapshot.issuers.iter() {
            let i = issuer.name.as_str();
            for result in ["success", "not_modified", "failure"] {
                self.jwks_fetches.with_label_values(&[i, result]);
            }
            self.jwks_refreshes_suppressed.with_label_values(&[i]);
            for reason in [
                "bad_signature",
                "expired",
                "unknown_key",
                "keys_unavailable",
            ] {
                self.auth_failures.with_label_values(&[i, reason]);
            }
            if issuer.introspection.is_some() {
                for result in ["active", "inactive", "error", "refused", "throttled"] {
                    self.introspection_calls.with_label_values(&[i, result]);
                }
            }
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding our own registry into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
