//! When a store loads on its own: a load at start, then every refresh
//! period moved by up to ±10 % (so a fleet started together does not reach
//! the IdP in lockstep), sooner after a failure, and each kid-miss load
//! deferred to the end of a cooldown.

use std::sync::Arc;
use std::time::Duration;

use super::{JwksStore, Trigger, JITTER, RETRY_AFTER_FAILURE};

impl JwksStore {
    /// Keeps the keys fresh until the returned task is aborted: a load now,
    /// then one every refresh period (jittered) after a success, sooner after
    /// a failure, and each kid-miss load deferred to the end of a cooldown.
    pub fn spawn_refresher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let store = Arc::downgrade(self);
        let wake = self.wake.clone();
        tokio::spawn(async move {
            let mut next_scheduled = tokio::time::Instant::now();
            loop {
                let Some(s) = store.upgrade() else { return };
                let deferred = s.state().deferred.map(tokio::time::Instant::from_std);
                let due = deferred.map_or(next_scheduled, |d| d.min(next_scheduled));
                s.state().next_load_at = Some(next_scheduled.into_std());
                drop(s);
                // Sleep until something is due; a newly deferred load wakes us
                // to recompute.
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => {}
                    _ = wake.notified() => continue,
                }
                let Some(s) = store.upgrade() else { return };
                let now = tokio::time::Instant::now();
                if deferred.is_some_and(|d| d <= now) && s.state().deferred.is_some() {
                    let _gate = s.load_gate.lock().await;
                    let _ = s.load_locked(Trigger::KidMiss).await;
                }
                if next_scheduled <= now {
                    let _gate = s.load_gate.lock().await;
                    let wait = match s.load_locked(Trigger::Scheduled).await {
                        Ok(_) => jittered(
                            s.state().next_interval.unwrap_or(s.refresh.interval),
                            random_unit(),
                        ),
                        Err(_) => RETRY_AFTER_FAILURE.min(s.refresh.interval),
                    };
                    next_scheduled = tokio::time::Instant::now() + wait;
                }
            }
        })
    }
}

/// `period` moved by up to ±10 %: `unit` in [0, 1) picks where.
pub(super) fn jittered(period: Duration, unit: f64) -> Duration {
    period.mul_f64(1.0 - JITTER + 2.0 * JITTER * unit.clamp(0.0, 1.0))
}

/// A uniform number in [0, 1) from the system's random source.
pub(super) fn random_unit() -> f64 {
    let mut b = [0u8; 8];
    match aws_lc_rs::rand::fill(&mut b) {
        // 53 random bits: every such fraction is exact in an f64.
        Ok(()) => (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    }
}
