//! GCRA (the generic cell rate algorithm), the arithmetic shared by the local
//! store and the Redis script: a limit of `count` per `period` admits a
//! burst of `count`, then one request every `period / count`.
//!
//! A key's whole state is its theoretical arrival time (TAT). A TAT in the
//! past is the same as no state at all, which is what lets the local store
//! drop idle keys without changing any answer.

use std::time::Duration;

/// `count` requests per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u64,
    pub period: Duration,
}

impl Rate {
    /// Reads `60/min`, `10/s`, `5000/hour`, `100/day`, `20/10s`, `3/1m30s`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not a rate such as 60/min, 10/s, 5000/hour or 20/10s");
        let (count, per) = text.trim().split_once('/').ok_or_else(bad)?;
        let count: u64 = count.trim().parse().map_err(|_| bad())?;
        let period = match per.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            "d" | "day" => Duration::from_secs(86_400),
            other => humantime::parse_duration(other).map_err(|_| bad())?,
        };
        if count == 0 || period.is_zero() || period > Duration::from_secs(86_400 * 31) {
            return Err(format!(
                "`{text}`: the count must be at least 1 and the period between 1ms and 31 days"
            ));
        }
        Ok(Self { count, period })
    }

    /// Time between two requests at the sustained rate, in µs (at least 1).
    pub fn interval_us(&self) -> u64 {
        (self.period.as_micros() as u64 / self.count).max(1)
    }

    pub fn period_us(&self) -> u64 {
        self.period.as_micros() as u64
    }

    /// The `w` of a `RateLimit-Policy` header: the window in seconds.
    pub fn window_secs(&self) -> u64 {
        self.period.as_secs().max(1)
    }
}

/// One request's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted, with this many more admissible at once.
    Allowed { remaining: u64 },
    /// Refused; a request will be admitted again after this long.
    Limited { retry_after: Duration },
}

/// One request at `now_us` against a key whose TAT is `tat_us` (0: none):
/// the verdict and the TAT to store (unchanged when refused).
pub fn step(rate: &Rate, tat_us: u64, now_us: u64) -> (Verdict, u64) {
    let interval = rate.interval_us();
    let period = rate.period_us();
    let new_tat = tat_us.max(now_us) + interval;
    let ahead = new_tat - now_us;
    if ahead > period {
        let wait = ahead - period;
        return (
            Verdict::Limited {
                retry_after: Duration::from_micros(wait),
            },
            tat_us,
        );
    }
    (
        Verdict::Allowed {
            remaining: (period - ahead) / interval,
        },
        new_tat,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_bad_ones_say_what_is_expected() {
        let r = Rate::parse("60/min").unwrap();
        assert_eq!((r.count, r.period), (60, Duration::from_secs(60)));
        assert_eq!(
            Rate::parse("20/10s").unwrap().period,
            Duration::from_secs(10)
        );
        assert_eq!(
            Rate::parse("3/1m30s").unwrap().period,
            Duration::from_secs(90)
        );
        assert_eq!(Rate::parse("5000/hour").unwrap().interval_us(), 720_000);
        for bad in ["60", "0/min", "x/min", "60/fortnight", "1/0s"] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
        assert!(Rate::parse("60/fortnight").unwrap_err().contains("60/min"));
    }

    #[test]
    fn a_burst_of_count_then_the_sustained_rate() {
        let rate = Rate::parse("10/s").unwrap();
        let mut tat = 0;
        let now = 1_000_000_000;
        let mut allowed = 0;
        for _ in 0..20 {
            let (v, t) = step(&rate, tat, now);
            tat = t;
            if let Verdict::Allowed { remaining } = v {
                allowed += 1;
                assert_eq!(remaining, 10 - allowed);
            }
        }
        assert_eq!(allowed, 10, "the burst is the count");
        // The next one is due one interval (100 ms) after the burst.
        let (v, _) = step(&rate, tat, now);
        assert_eq!(
            v,
            Verdict::Limited {
                retry_after: Duration::from_millis(100)
            }
        );
        let (v, _) = step(&rate, tat, now + 100_000);
        assert!(matches!(v, Verdict::Allowed { remaining: 0 }));
        // Idle for a period: a full burst again, as with no state at all.
        let later = now + 2_000_000;
        assert_eq!(step(&rate, tat, later).0, step(&rate, 0, later).0);
    }
}
