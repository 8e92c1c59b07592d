//! Retry pacing for the control-plane loops (leases, node table, Services)
//! and the API's accept loop.

use std::time::Duration;

/// Shortest wait between retries.
pub const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// Longest wait between retries.
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Exponential backoff between a shortest and a longest wait
/// (`BACKOFF_MIN` and `BACKOFF_MAX` by default).
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(BACKOFF_MIN, BACKOFF_MAX)
    }
}

impl Backoff {
    /// Waits from `min`, doubling up to `max`.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            next: min,
            min,
            max: max.max(min),
        }
    }

    /// The next wait (doubling each time).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// Back to the shortest wait, after a success.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_longest_wait_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(10), ms(1000));
        let waits: Vec<_> = (0..9).map(|_| b.next_delay()).collect();
        let want = [10, 20, 40, 80, 160, 320, 640, 1000, 1000].map(ms);
        assert_eq!(waits, want);
        b.reset();
        assert_eq!(b.next_delay(), ms(10));
    }
}
