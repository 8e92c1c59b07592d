//! Rate-limited reporting of a repeated event (an error in a loop): the
//! first occurrence is reported, later ones within the interval are only
//! counted, and the next report carries that count ("N more in the last
//! T s"). Like OVS's `VLOG_RATE_LIMIT`. No clock of its own: the caller
//! passes `now`.

use std::time::{Duration, Instant};

/// How often a retry loop reports that it is still failing.
pub const RETRY_REPORT_INTERVAL: Duration = Duration::from_secs(60);

/// What a report should say about the occurrences it stood for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suppressed {
    /// Occurrences since the previous report that were not reported.
    pub count: u64,
    /// Time since the previous report (zero for the first one).
    pub over: Duration,
}

/// Reports an event at most once per interval.
#[derive(Debug)]
pub struct LogRate {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogRate {
    /// At most one report per `interval`.
    pub fn new(interval: Duration) -> LogRate {
        LogRate {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// Records one occurrence at `now`; `Some` when it should be reported
    /// (with what was held back since the last report), `None` when it is
    /// only counted.
    #[must_use]
    pub fn hit(&mut self, now: Instant) -> Option<Suppressed> {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < self.interval => {
                self.suppressed += 1;
                None
            }
            last => {
                self.last = Some(now);
                Some(Suppressed {
                    count: std::mem::take(&mut self.suppressed),
                    over: last.map_or(Duration::ZERO, |t| now.saturating_duration_since(t)),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_once_per_interval_with_the_count_held_back() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut r = LogRate::new(10 * s);
        assert_eq!(
            r.hit(t0),
            Some(Suppressed {
                count: 0,
                over: Duration::ZERO
            })
        );
        for i in 1..=1000 {
            assert_eq!(r.hit(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(r.hit(t0 + 9 * s), None);
        assert_eq!(
            r.hit(t0 + 10 * s),
            Some(Suppressed {
                count: 1001,
                over: 10 * s
            })
        );
        // A quiet stretch: the next occurrence is reported with nothing held back.
        assert_eq!(
            r.hit(t0 + 60 * s),
            Some(Suppressed {
                count: 0,
                over: 50 * s
            })
        );
    }
}
