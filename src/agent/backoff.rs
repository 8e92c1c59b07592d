//! Retry pacing for the control-plane loops (leases, node table, Services).

use std::time::Duration;

/// Shortest wait between retries.
pub const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// Longest wait between retries.
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Exponential backoff between `BACKOFF_MIN` and `BACKOFF_MAX`.
#[derive(Debug)]
pub struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(BACKOFF_MIN)
    }
}

impl Backoff {
    /// The next wait (doubling each time).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
        d
    }

    /// Back to the shortest wait, after a success.
    pub fn reset(&mut self) {
        self.0 = BACKOFF_MIN;
    }
}
