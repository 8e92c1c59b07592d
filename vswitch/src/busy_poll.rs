//! When a worker polls instead of sleeping.
//!
//! A worker that sleeps in `epoll_wait` after every packet pays a scheduler
//! wake-up (tens of µs on a virtual machine) for the next one: a
//! request/response exchange pays it on every hop. Polling for a while
//! after the last packet removes that cost and spends a CPU instead. Where
//! traffic is bulk (super-frames, GRO batches, bursts of packets) the
//! wake-ups are already amortised over many packets, and the spinning CPU
//! is taken from the pods' own stacks and applications, which on a small
//! node costs throughput. So the default, [`BusyPoll::Adaptive`], spins only
//! while the worker's recent wake-ups each carried a few small packets
//! (what request/response traffic looks like), and stops for
//! [`BULK_HOLD`] after any wake-up that looks like bulk. Bulk seen by one
//! worker holds every worker of the dataplane ([`BulkSignal`]): the other
//! direction of a bulk TCP flow (its ACKs) is often handled by another
//! worker, and looks like request/response traffic there.
//!
//! Polling also only pays while the CPU is otherwise idle. When other
//! threads want it, the scheduler takes it from the polling worker for a
//! slice of milliseconds, during which the worker is runnable but not
//! running, so a packet that arrives waits for the slice to end instead of
//! waking a sleeping worker at once: polling then makes latency worse and
//! takes CPU from the pods. An adaptive spinner sees this as a gap between
//! two of its polls longer than its whole window, and stops polling for a
//! back-off ([`BACKOFF_MIN`], doubling while it recurs, up to
//! [`BACKOFF_MAX`]). Short preemptions, such as the pod's own thread
//! running for a few µs to answer a request, are below the window and do
//! not count.
//!
//! A polling worker also yields the CPU (`sched_yield`) after every empty
//! poll: a task waiting for that CPU (the pod a packet was just written for,
//! whose stack answers in its own context; the sender of the next request)
//! runs first, instead of waiting until the scheduler preempts the worker.
//! Measured with paced pings (`twill bench`, issue 16): without the yield,
//! adaptive polling made a ping every 1 ms take 271 µs at the median, almost
//! four times `off` (71 µs); with it, 66–89 µs, and the back-to-back
//! request/response median stays at 42–44 µs (`off`: 107 µs).
//!
//! Sans-IO: the worker tells [`Spinner`] what each wake-up carried and asks
//! it whether to poll; the clock is passed in.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a worker waits for its fds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusyPoll {
    /// Sleep in `epoll_wait` as soon as nothing is ready.
    Off,
    /// Keep polling this long after the last wake-up that handled anything,
    /// whatever the traffic.
    Always(Duration),
    /// Keep polling this long after the last wake-up that handled anything,
    /// unless traffic was bulk within [`BULK_HOLD`].
    Adaptive(Duration),
}

impl BusyPoll {
    /// The default: adaptive, with a window that covers one hop of a
    /// request/response exchange through a pod on another node.
    pub const DEFAULT: BusyPoll = BusyPoll::Adaptive(Duration::from_micros(100));
}

impl Default for BusyPoll {
    fn default() -> BusyPoll {
        BusyPoll::DEFAULT
    }
}

/// A wake-up with more packets than this is bulk.
pub const SMALL_PACKETS: u32 = 4;
/// A wake-up with more bytes than this is bulk (one super-frame or GRO
/// batch is; a few request/response packets are not).
pub const SMALL_BYTES: u64 = 4096;
/// How long bulk traffic keeps an adaptive worker from polling.
pub const BULK_HOLD: Duration = Duration::from_millis(20);

/// First back-off after the worker was kept from polling longer than its
/// window.
pub const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest back-off while that keeps happening.
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// The end of the current bulk hold, shared by the workers of one
/// dataplane. Written at most once per [`BULK_WRITE_EVERY`] by each worker
/// that sees bulk, read by polling workers: no shared write per packet.
#[derive(Debug)]
pub struct BulkSignal {
    base: Instant,
    /// Nanoseconds after `base`; 0: never.
    until_ns: AtomicU64,
}

/// How much later a bulk hold must end before a worker writes it again.
pub const BULK_WRITE_EVERY: Duration = Duration::from_millis(1);

impl BulkSignal {
    /// A signal with no hold.
    pub fn new() -> Arc<BulkSignal> {
        Arc::new(BulkSignal {
            base: Instant::now(),
            until_ns: AtomicU64::new(0),
        })
    }

    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    fn hold_until(&self, until: Instant) {
        self.until_ns
            .fetch_max(self.nanos(until), Ordering::Relaxed);
    }

    fn holds(&self, now: Instant) -> bool {
        self.nanos(now) < self.until_ns.load(Ordering::Relaxed)
    }
}

/// The polling decision of one worker.
#[derive(Debug)]
pub struct Spinner {
    mode: BusyPoll,
    bulk: Arc<BulkSignal>,
    /// The end of the last bulk hold this worker wrote.
    bulk_written: Option<Instant>,
    /// End of the last wake-up that handled a packet.
    last_work: Option<Instant>,
    /// No adaptive polling before this instant (the worker was kept from
    /// polling).
    quiet_until: Option<Instant>,
    /// The last poll that found nothing, while still polling.
    last_poll: Option<Instant>,
    /// The current back-off, and when it was last applied.
    backoff: Duration,
    last_backoff: Option<Instant>,
    /// Polls that found nothing.
    pub empty_polls: u64,
    /// Back-offs for being kept from polling.
    pub backoffs: u64,
}

impl Spinner {
    /// A spinner that polls as `mode` says, held by `bulk` with the other
    /// workers of its dataplane.
    pub fn new(mode: BusyPoll, bulk: Arc<BulkSignal>) -> Spinner {
        Spinner {
            mode,
            bulk,
            bulk_written: None,
            last_work: None,
            quiet_until: None,
            last_poll: None,
            backoff: BACKOFF_MIN,
            last_backoff: None,
            empty_polls: 0,
            backoffs: 0,
        }
    }

    /// Records what the wake-up that ended at `now` handled.
    pub fn wakeup(&mut self, now: Instant, packets: u32, bytes: u64) {
        self.last_poll = None;
        if packets == 0 {
            return;
        }
        self.last_work = Some(now);
        if matches!(self.mode, BusyPoll::Adaptive(_))
            && (packets > SMALL_PACKETS || bytes > SMALL_BYTES)
        {
            let until = now + BULK_HOLD;
            if self
                .bulk_written
                .is_none_or(|t| until >= t + BULK_WRITE_EVERY)
            {
                self.bulk.hold_until(until);
                self.bulk_written = Some(until);
            }
        }
    }

    /// Records that a poll at `now` (one [`Spinner::spin`] said yes to)
    /// found nothing.
    pub fn empty_poll(&mut self, now: Instant) {
        self.empty_polls += 1;
        self.last_poll = Some(now);
    }

    /// Whether to poll (`epoll_wait` without sleeping) at `now`.
    pub fn spin(&mut self, now: Instant) -> bool {
        let (window, adaptive) = match self.mode {
            BusyPoll::Off => return false,
            BusyPoll::Always(w) => (w, false),
            BusyPoll::Adaptive(w) => (w, true),
        };
        if let Some(prev) = self.last_poll.take() {
            if adaptive && now.saturating_duration_since(prev) > window {
                self.back_off(now);
            }
        }
        let Some(last) = self.last_work else {
            return false;
        };
        if adaptive && (self.quiet_until.is_some_and(|t| now < t) || self.bulk.holds(now)) {
            return false;
        }
        now.saturating_duration_since(last) < window
    }

    /// The worker was kept from polling: stop for a while, longer each
    /// time it happens again soon after.
    fn back_off(&mut self, now: Instant) {
        let recurring = self
            .last_backoff
            .is_some_and(|t| now.saturating_duration_since(t) < self.backoff + BACKOFF_MAX);
        self.backoff = if recurring {
            (self.backoff * 2).min(BACKOFF_MAX)
        } else {
            BACKOFF_MIN
        };
        self.last_backoff = Some(now);
        self.backoffs += 1;
        self.quiet_until = Some(now + self.backoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_micros(100);

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn off_never_spins() {
        let t = Instant::now();
        let mut s = Spinner::new(BusyPoll::Off, BulkSignal::new());
        s.wakeup(t, 1, 60);
        assert!(!s.spin(t));
    }

    #[test]
    fn nothing_handled_yet_means_no_spin() {
        let t = Instant::now();
        let mut s = Spinner::new(BusyPoll::Always(W), BulkSignal::new());
        assert!(!s.spin(t));
        // A wake-up that handled nothing (a command, a timer) is no traffic.
        s.wakeup(t, 0, 0);
        assert!(!s.spin(t));
    }

    #[test]
    fn spins_for_the_window_after_small_traffic() {
        let t = Instant::now();
        for mode in [BusyPoll::Always(W), BusyPoll::Adaptive(W)] {
            let mut s = Spinner::new(mode, BulkSignal::new());
            s.wakeup(t, 1, 66);
            assert!(s.spin(t));
            assert!(s.spin(t + us(99)));
            assert!(!s.spin(t + us(100)));
            // Each new packet restarts the window.
            s.wakeup(t + us(90), 2, 132);
            assert!(s.spin(t + us(180)));
            assert!(!s.spin(t + us(190)));
        }
    }

    #[test]
    fn adaptive_stops_for_bulk_and_resumes_after_the_hold() {
        let t = Instant::now();
        for (packets, bytes) in [(SMALL_PACKETS + 1, 400), (1, SMALL_BYTES + 1)] {
            let mut s = Spinner::new(BusyPoll::Adaptive(W), BulkSignal::new());
            s.wakeup(t, 1, 66);
            assert!(s.spin(t + us(10)));
            s.wakeup(t + us(20), packets, bytes);
            assert!(!s.spin(t + us(21)), "{packets} packets, {bytes} bytes");
            // Small packets during the hold do not bring polling back…
            let later = t + us(20) + BULK_HOLD - us(50);
            s.wakeup(later, 1, 66);
            assert!(!s.spin(later + us(1)));
            // …until the hold has passed.
            let after = t + us(20) + BULK_HOLD;
            s.wakeup(after, 1, 66);
            assert!(s.spin(after + us(1)));
        }
    }

    #[test]
    fn always_ignores_bulk() {
        let t = Instant::now();
        let mut s = Spinner::new(BusyPoll::Always(W), BulkSignal::new());
        s.wakeup(t, 32, 64 * 1024);
        assert!(s.spin(t + us(50)));
    }

    #[test]
    fn the_limits_are_inclusive_of_small() {
        let t = Instant::now();
        let mut s = Spinner::new(BusyPoll::Adaptive(W), BulkSignal::new());
        s.wakeup(t, SMALL_PACKETS, SMALL_BYTES);
        assert!(s.spin(t + us(1)));
    }

    /// Polls every µs from `from` while the spinner says so; returns when
    /// it stopped.
    fn poll_until_stop(s: &mut Spinner, from: Instant) -> Instant {
        let mut t = from;
        while s.spin(t) {
            s.empty_poll(t);
            t += us(1);
        }
        t
    }

    #[test]
    fn a_long_gap_between_polls_backs_off() {
        let t = Instant::now();
        let mut s = Spinner::new(BusyPoll::Adaptive(W), BulkSignal::new());
        s.wakeup(t, 1, 66);
        assert!(s.spin(t + us(1)));
        s.empty_poll(t + us(1));
        // Preempted for less than the window (the pod's thread answering):
        // polling goes on.
        assert!(s.spin(t + us(60)));
        s.empty_poll(t + us(60));
        s.wakeup(t + us(70), 1, 66);
        assert!(s.spin(t + us(71)));
        s.empty_poll(t + us(71));
        // Kept off the CPU for longer than the window: back off, even
        // after new small traffic.
        let t2 = t + us(71) + Duration::from_millis(3);
        assert!(!s.spin(t2));
        assert_eq!(s.backoffs, 1);
        s.wakeup(t2 + us(5), 1, 66);
        assert!(!s.spin(t2 + us(6)));
        let t3 = t2 + BACKOFF_MIN;
        s.wakeup(t3, 1, 66);
        assert!(s.spin(t3 + us(1)));
        assert_eq!(poll_until_stop(&mut s, t3 + us(1)), t3 + W);
    }

    #[test]
    fn recurring_backoffs_grow_to_the_limit_and_reset_after_a_quiet_spell() {
        let mut t = Instant::now();
        let mut s = Spinner::new(BusyPoll::Adaptive(W), BulkSignal::new());
        let mut expected = BACKOFF_MIN;
        for _ in 0..8 {
            s.wakeup(t, 1, 66);
            assert!(s.spin(t));
            s.empty_poll(t);
            t += Duration::from_millis(5);
            assert!(!s.spin(t));
            assert_eq!(s.backoff, expected);
            t += s.backoff;
            expected = (expected * 2).min(BACKOFF_MAX);
        }
        assert_eq!(s.backoff, BACKOFF_MAX);
        // Long after the last one, a new back-off starts small again.
        t += BACKOFF_MAX * 3;
        s.wakeup(t, 1, 66);
        assert!(s.spin(t));
        s.empty_poll(t);
        assert!(!s.spin(t + Duration::from_millis(5)));
        assert_eq!(s.backoff, BACKOFF_MIN);
    }

    #[test]
    fn always_never_backs_off() {
        let t = Instant::now();
        let mut s = Spinner::new(BusyPoll::Always(W), BulkSignal::new());
        s.wakeup(t, 1, 66);
        assert!(s.spin(t));
        s.empty_poll(t);
        s.wakeup(t + Duration::from_millis(5), 1, 66);
        assert!(s.spin(t + Duration::from_millis(5)));
        assert_eq!(s.backoffs, 0);
    }

    #[test]
    fn a_wakeup_between_polls_is_not_a_gap() {
        let t = Instant::now();
        let mut s = Spinner::new(BusyPoll::Adaptive(W), BulkSignal::new());
        s.wakeup(t, 1, 66);
        assert!(s.spin(t));
        s.empty_poll(t);
        // A long wake-up of the worker's own (it handled 4 packets for
        // 300 µs) is work, not preemption.
        s.wakeup(t + us(300), 4, 264);
        assert!(s.spin(t + us(301)));
        assert_eq!(s.backoffs, 0);
    }

    #[test]
    fn bulk_on_one_worker_holds_the_others() {
        let t = Instant::now();
        let bulk = BulkSignal::new();
        let mut data = Spinner::new(BusyPoll::Adaptive(W), bulk.clone());
        let mut acks = Spinner::new(BusyPoll::Adaptive(W), bulk);
        acks.wakeup(t, 1, 66);
        assert!(acks.spin(t + us(1)));
        data.wakeup(t + us(2), 1, 64 * 1024);
        assert!(!acks.spin(t + us(3)));
        acks.wakeup(t + us(10), 1, 66);
        assert!(!acks.spin(t + us(11)));
        // Bulk again within BULK_WRITE_EVERY is not written again…
        data.wakeup(t + us(500), 8, 800);
        assert_eq!(data.bulk_written, Some(t + us(2) + BULK_HOLD));
        // …later it is, and the hold moves with it.
        let later = t + us(2) + BULK_WRITE_EVERY;
        data.wakeup(later, 8, 800);
        assert_eq!(data.bulk_written, Some(later + BULK_HOLD));
        let end = later + BULK_HOLD;
        acks.wakeup(end - us(5), 1, 66);
        assert!(!acks.spin(end - us(4)));
        acks.wakeup(end, 1, 66);
        assert!(acks.spin(end + us(1)));
    }
}
