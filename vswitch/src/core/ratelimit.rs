//! Rate limits the switch applies: to what it sends on its own, ICMP errors
//! (per destination and node-wide, as Linux's `icmp_ratelimit` and
//! `icmp_msgs_per_sec` do), so that forged packets cannot turn the router
//! into an amplifier towards a victim; and to what a pod makes it flood
//! (storm control: broadcast, multicast and unknown unicast per port, as
//! physical switches and OVS ingress policing do), so that one pod's storm
//! does not reach every other pod without limit.
//!
//! Token buckets on the caller's clock (milliseconds from a fixed epoch),
//! shared by the workers: the node-wide one lock-free, the per-destination
//! ones under a mutex taken only when an error is about to be sent.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// Credit units per token (the bucket's resolution).
const UNIT: u64 = 64;
/// Bits of the packed state that hold the credit.
const CREDIT_BITS: u32 = 20;
const CREDIT_MASK: u64 = (1 << CREDIT_BITS) - 1;

/// Linux's defaults for ICMP errors (`Documentation/networking/ip-sysctl.rst`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpLimits {
    /// Errors to one destination: one per this interval (`icmp_ratelimit`,
    /// 1000 ms)…
    pub per_dest_interval: Duration,
    /// …after a burst of this many (the kernel's `XRLIM_BURST_FACTOR`, 6).
    pub per_dest_burst: u32,
    /// Errors per second node-wide (`icmp_msgs_per_sec`, 1000)…
    pub global_per_sec: u32,
    /// …after a burst of this many (`icmp_msgs_burst`, 50).
    pub global_burst: u32,
    /// Destinations remembered at most; when full, an error to a new one
    /// is suppressed (an attacker spraying sources gets the global limit
    /// anyway).
    pub max_dests: usize,
}

impl Default for IcmpLimits {
    fn default() -> Self {
        IcmpLimits {
            per_dest_interval: Duration::from_secs(1),
            per_dest_burst: 6,
            global_per_sec: 1000,
            global_burst: 50,
            max_dests: 4096,
        }
    }
}

/// Storm control: what one pod port may make the switch flood, in frames
/// per second per class (0: unlimited), after a burst. The defaults are far
/// above what ARP, DHCP or mDNS send and far below a storm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StormLimits {
    /// Broadcast frames (ARP requests not for the gateway among them).
    pub broadcast_pps: u32,
    /// Multicast frames.
    pub multicast_pps: u32,
    /// Unicast frames to a MAC the switch does not know.
    pub unknown_unicast_pps: u32,
    /// Frames of each class a port may send at once after being quiet.
    pub burst: u32,
}

impl Default for StormLimits {
    fn default() -> Self {
        StormLimits {
            broadcast_pps: 1000,
            multicast_pps: 1000,
            unknown_unicast_pps: 1000,
            burst: 1000,
        }
    }
}

/// What a flooded frame is, for storm control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloodClass {
    /// To ff:ff:ff:ff:ff:ff.
    Broadcast,
    /// To another group address.
    Multicast,
    /// To a unicast MAC not in the table.
    UnknownUnicast,
}

/// One port's storm-control buckets and what they dropped.
#[derive(Debug)]
pub struct StormPort {
    buckets: [Option<TokenBucket>; 3],
    dropped: AtomicU64,
}

impl StormPort {
    /// Full buckets for `limits`.
    pub fn new(limits: &StormLimits) -> StormPort {
        let b = |pps: u32| (pps > 0).then(|| TokenBucket::new(pps, limits.burst));
        StormPort {
            buckets: [
                b(limits.broadcast_pps),
                b(limits.multicast_pps),
                b(limits.unknown_unicast_pps),
            ],
            dropped: AtomicU64::new(0),
        }
    }

    /// Whether a flood of `class` may go at `now_ms`; a refusal is counted.
    pub fn allow(&self, class: FloodClass, now_ms: u64) -> bool {
        let ok = self.buckets[class as usize]
            .as_ref()
            .is_none_or(|b| b.take(now_ms));
        if !ok {
            self.dropped.fetch_add(1, Relaxed);
        }
        ok
    }

    /// Frames refused since the port was attached.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }
}

/// A token bucket that many threads take from without a lock: `rate`
/// tokens per second, at most `burst` saved up (full at the start).
#[derive(Debug)]
pub struct TokenBucket {
    /// Last refill in ms (high bits) and credit in 1/[`UNIT`] tokens.
    state: AtomicU64,
    /// Credit units gained per second.
    units_per_s: u64,
    max_credit: u64,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_s: u32, burst: u32) -> TokenBucket {
        TokenBucket::with_units(u64::from(rate_per_s) * UNIT, burst)
    }

    /// A full bucket that gains one token per `interval`.
    pub fn one_per(interval: Duration, burst: u32) -> TokenBucket {
        let ms = u64::try_from(interval.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        TokenBucket::with_units(1000 * UNIT / ms, burst)
    }

    fn with_units(units_per_s: u64, burst: u32) -> TokenBucket {
        let max_credit = (u64::from(burst.max(1)) * UNIT).min(CREDIT_MASK);
        TokenBucket {
            state: AtomicU64::new(max_credit),
            units_per_s,
            max_credit,
        }
    }

    /// Takes one token at `now_ms` (ms from the caller's epoch); whether
    /// there was one.
    pub fn take(&self, now_ms: u64) -> bool {
        let mut s = self.state.load(Relaxed);
        loop {
            let (last, credit) = (s >> CREDIT_BITS, s & CREDIT_MASK);
            let gained = now_ms.saturating_sub(last).saturating_mul(self.units_per_s) / 1000;
            let credit = credit.saturating_add(gained).min(self.max_credit);
            if credit < UNIT {
                return false;
            }
            // Time moves only when credit was gained, so fractions add up.
            let t = if gained > 0 { now_ms.max(last) } else { last };
            let next = (t << CREDIT_BITS) | (credit - UNIT);
            match self.state.compare_exchange_weak(s, next, Relaxed, Relaxed) {
                Ok(_) => return true,
                Err(cur) => s = cur,
            }
        }
    }
}

/// The ICMP error limiter of a node.
#[derive(Debug)]
pub struct IcmpLimiter {
    limits: IcmpLimits,
    global: TokenBucket,
    per_dest: Mutex<HashMap<Ipv4Addr, TokenBucket>>,
}

impl IcmpLimiter {
    /// A limiter with every bucket full.
    pub fn new(limits: IcmpLimits) -> IcmpLimiter {
        IcmpLimiter {
            global: TokenBucket::new(limits.global_per_sec, limits.global_burst),
            limits,
            per_dest: Mutex::new(HashMap::new()),
        }
    }

    /// Whether an error to `dst` may be sent at `now_ms`. `per_dest: false`
    /// for errors the destination needs to work at all (fragmentation
    /// needed, as Linux exempts them): only the node-wide limit applies.
    pub fn allow(&self, dst: Ipv4Addr, per_dest: bool, now_ms: u64) -> bool {
        if per_dest && !self.allow_dest(dst, now_ms) {
            return false;
        }
        self.global.take(now_ms)
    }

    fn allow_dest(&self, dst: Ipv4Addr, now_ms: u64) -> bool {
        let l = &self.limits;
        let ms = u64::try_from(l.per_dest_interval.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut m = self.per_dest.lock().unwrap_or_else(|e| e.into_inner());
        if !m.contains_key(&dst) && m.len() >= l.max_dests {
            // Forget the destinations whose bucket is full again.
            let full = u64::from(l.per_dest_burst) * ms;
            m.retain(|_, b| {
                let last = b.state.load(Relaxed) >> CREDIT_BITS;
                now_ms.saturating_sub(last) < full
            });
            if m.len() >= l.max_dests {
                return false;
            }
        }
        let b = m
            .entry(dst)
            .or_insert_with(|| TokenBucket::one_per(l.per_dest_interval, l.per_dest_burst));
        b.take(now_ms)
    }
}

#[cfg(test)]
#[path = "ratelimit_tests.rs"]
mod tests;
