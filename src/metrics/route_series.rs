//! A thread's handles for a route's per-request series.
//!
//! `with_label_values` hashes its labels and takes the vector's read lock,
//! shared by every shard, on each call; a proxied request made five such
//! calls. Here each shard resolves a route's series once, on first use, and
//! finds them again by the route's name: one map lookup a request, on the
//! shard's own memory. A series is still made only when first counted, so
//! `/metrics` shows the same series as before.

use std::cell::{OnceCell, RefCell};

use prometheus::{Histogram, IntCounter};

use super::{Metrics, STATUS_CLASSES};
use crate::decision::Decision;

/// One route's series, as far as this thread has used them.
#[derive(Default)]
pub(super) struct RouteSeries {
    /// By `Decision` (its place in `Decision::ALL`).
    requests: [OnceCell<IntCounter>; Decision::ALL.len()],
    request_duration: OnceCell<Histogram>,
    upstream_duration: OnceCell<Histogram>,
    upstream_responses: [OnceCell<IntCounter>; STATUS_CLASSES.len()],
}

/// This thread's series of every route it has served, by route name.
pub(super) type PerThread =
    thread_local::ThreadLocal<RefCell<crate::FastMap<Box<str>, RouteSeries>>>;

/// A route's series on this thread.
pub struct RouteHandles<'a> {
    metrics: &'a Metrics,
    series: &'a RouteSeries,
    route: &'a str,
}

impl RouteHandles<'_> {
    /// `claimgate_requests_total{route, decision}`.
    pub fn requests(&self, decision: Decision) -> &IntCounter {
        self.series.requests[decision as usize].get_or_init(|| {
            self.metrics
                .requests
                .with_label_values(&[self.route, decision.as_str()])
        })
    }

    pub fn request_duration(&self) -> &Histogram {
        self.series.request_duration.get_or_init(|| {
            self.metrics
                .request_duration
                .with_label_values(&[self.route])
        })
    }

    pub fn upstream_duration(&self) -> &Histogram {
        self.series.upstream_duration.get_or_init(|| {
            self.metrics
                .upstream_duration
                .with_label_values(&[self.route])
        })
    }

    /// `claimgate_upstream_responses_total{route, class}` for `status`, or
    /// `None` outside 100–599 (no class).
    pub fn upstream_response(&self, status: u16) -> Option<&IntCounter> {
        let i = usize::from(status / 100).checked_sub(1)?;
        let class = STATUS_CLASSES.get(i)?;
        Some(self.series.upstream_responses[i].get_or_init(|| {
            self.metrics
                .upstream_responses
                .with_label_values(&[self.route, class])
        }))
    }
}

impl Metrics {
    /// Calls `f` with this thread's handles for `route`'s series.
    pub fn for_route<R>(&self, route: &str, f: impl FnOnce(&RouteHandles<'_>) -> R) -> R {
        let cell = self.per_thread.get_or_default();
        {
            let map = cell.borrow();
            if let Some(series) = map.get(route) {
                return f(&RouteHandles {
                    metrics: self,
                    series,
                    route,
                });
            }
        }
        // The route's first request on this thread.
        cell.borrow_mut()
            .insert(route.into(), RouteSeries::default());
        let map = cell.borrow();
        f(&RouteHandles {
            metrics: self,
            series: &map[route],
            route,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_index_their_own_slot() {
        for (i, d) in Decision::ALL.iter().enumerate() {
            assert_eq!(*d as usize, i, "{d:?}");
        }
    }

    #[test]
    fn handles_count_into_the_labelled_series_from_every_thread() {
        let m = Metrics::new();
        let allowed = Decision::Allowed;
        for _ in 0..2 {
            m.for_route("r", |s| s.requests(allowed).inc());
        }
        std::thread::scope(|t| {
            t.spawn(|| m.for_route("r", |s| s.requests(allowed).inc()));
        });
        m.for_route("r", |s| {
            assert!(s.upstream_response(204).is_some());
            assert!(s.upstream_response(600).is_none());
            assert!(s.upstream_response(99).is_none());
            s.upstream_response(503).unwrap().inc();
            s.request_duration().observe(0.001);
        });
        m.for_route("other", |s| s.upstream_duration().observe(0.002));
        assert_eq!(m.requests.with_label_values(&["r", "allowed"]).get(), 3);
        let text = m.render();
        assert!(
            text.contains(r#"claimgate_requests_total{decision="allowed",route="r"} 3"#),
            "{text}"
        );
        assert!(text.contains(r#"claimgate_upstream_responses_total{class="5xx",route="r"} 1"#));
        assert!(text.contains(r#"claimgate_request_duration_seconds_count{route="r"} 1"#));
        assert!(text.contains(r#"claimgate_upstream_duration_seconds_count{route="other"} 1"#));
        // Series are made when first counted, not when a route is first seen.
        assert!(!text.contains(r#"decision="denied""#));
        assert!(!text.contains(r#"class="1xx""#));
        assert!(!text.contains(r#"claimgate_request_duration_seconds_count{route="other"}"#));
    }
}
