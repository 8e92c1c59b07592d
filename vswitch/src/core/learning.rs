//! The node's learning tables, shared by every worker: the MAC table and the
//! neighbor (IP → MAC) table of the L2 segment, so that a MAC learned from a
//! frame on one worker is known to all of them, and the caps (OVS's 8192
//! entries, fair eviction) hold for the node, not per worker.
//!
//! Each table is two parts:
//! - a **mirror** read on every frame without a lock: a `papaya` concurrent
//!   hash map, key → what forwarding needs (the port, the MAC);
//! - the **policy** behind a mutex: the sans-IO [`MacTable`] and
//!   [`NeighborTable`] with their LRU lists, caps, eviction and aging rules,
//!   unchanged. Every change of a mirror is made while holding its policy's
//!   lock, right after the policy decided it, so a mirror never disagrees
//!   with its policy once the lock is released.
//!
//! The common case costs no write and no lock: a source MAC already known on
//! its port, refreshed less than [`refresh_interval`] ago, is one mirror
//! lookup and a compare. Only a new MAC, a move, or a refresh older than that
//! interval takes the lock (so an active MAC takes it about once a second),
//! which keeps the policy's LRU order within that interval of the truth.
//!
//! Why `papaya` (`cargo bench --bench dataplane -- learning`, recorded in
//! `benches/RESULTS.md` under "Shared learning tables"): with a second
//! worker on the same table, a papaya read costs what it costs alone
//! (45 ns for a refresh and a lookup), while a dashmap goes from 59 to 90 ns
//! and one mutex from 42 to 278 ns.
//!
//! The switch asks these tables only about learned entries: the attached
//! ports' MACs and addresses are in its configuration snapshot
//! ([`super::Tables`]).
//!
//! Like the rest of the core, nothing here reads a clock or does I/O: time
//! comes in as `now`, which callers must not pass decreasing.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use encap::MacAddr;

use super::mac_table::{mac_key, Learn, MacCounters, MacHashBuilder, MacTable, MacTableConfig};
use super::tables::{NeighborTable, NeighborUpdate};
use super::PortId;

/// A known source MAC seen again on its port within this long of its last
/// refresh is not written anywhere: at most a quarter of the aging time, and
/// at most a second.
pub fn refresh_interval(aging: Duration) -> Duration {
    (aging / 4).min(Duration::from_secs(1))
}

/// A lock that a panicking holder did not leave unusable: the tables behind
/// it are consistent after every call, so the poison carries no meaning.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes from the mirror what the policy deleted since it was last asked.
fn forget_removed<G: papaya::Guard>(
    policy: &mut MacTable,
    mirror: &papaya::HashMapRef<'_, u64, MacEntry, MacHashBuilder, G>,
) {
    for gone in policy.drain_removed() {
        mirror.remove(&mac_key(gone));
    }
}

/// What a frame's forwarding needs to know of a MAC.
#[derive(Debug)]
struct MacEntry {
    port: PortId,
    is_static: bool,
    /// When the policy last refreshed it, in [`Clock`] ticks.
    refreshed: AtomicU64,
}

/// Instants as nanoseconds since the first `now` the table saw, so that they
/// fit an atomic. An instant before that counts as that instant.
#[derive(Debug, Default)]
struct Clock(OnceLock<Instant>);

impl Clock {
    #[inline]
    fn ticks(&self, now: Instant) -> u64 {
        let epoch = *self.0.get_or_init(|| now);
        u64::try_from(now.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
    }
}

/// The segment's MAC learning table, shared by every worker.
#[derive(Debug)]
pub struct SharedMacTable {
    mirror: papaya::HashMap<u64, MacEntry, MacHashBuilder>,
    policy: Mutex<MacTable>,
    clock: Clock,
    refresh: u64,
}

impl SharedMacTable {
    /// An empty table.
    pub fn new(cfg: MacTableConfig) -> SharedMacTable {
        Self::with_policy(MacTable::new(cfg), cfg)
    }

    /// An empty table with a chosen hash key (tests, reproducible runs).
    pub fn with_seed(cfg: MacTableConfig, seed: u64) -> SharedMacTable {
        Self::with_policy(MacTable::with_seed(cfg, seed), cfg)
    }

    fn with_policy(mut policy: MacTable, cfg: MacTableConfig) -> SharedMacTable {
        policy.log_removals();
        let hasher = MacHashBuilder::new(0x7477_696c_6c5f_6d31);
        let cap = cfg.max_entries.clamp(1, 1 << 16);
        SharedMacTable {
            mirror: papaya::HashMap::builder()
                .capacity(cap)
                .hasher(hasher)
                // Resizes copy the table at once. papaya's default
                // (incremental: 64 entries per later write) kept every old
                // table of a map churned by a few writes a second, as pods
                // coming and going churn this one: about 1 KB per pod, for
                // ever (`tests/churn_memory.rs`). A resize happens when
                // removals have filled the table, rarely; its one-off copy
                // of at most 64 Ki slots costs tens of µs.
                .resize_mode(papaya::ResizeMode::Blocking)
                .build(),
            policy: Mutex::new(policy),
            clock: Clock::default(),
            refresh: u64::try_from(refresh_interval(cfg.aging).as_nanos()).unwrap_or(u64::MAX),
        }
    }

    /// Learns that `mac` sent a frame received on `port` at `now`, as
    /// [`MacTable::learn`] does; lock-free when the entry is fresh.
    #[inline]
    pub fn learn(&self, mac: MacAddr, port: PortId, now: Instant) -> Learn {
        if !mac.is_unicast() {
            return Learn::NotLearnable;
        }
        let key = mac_key(mac);
        {
            let m = self.mirror.pin();
            if let Some(e) = m.get(&key) {
                if e.is_static {
                    return Learn::Static { port: e.port };
                }
                let age = self
                    .clock
                    .ticks(now)
                    .saturating_sub(e.refreshed.load(Relaxed));
                if e.port == port && age < self.refresh {
                    return Learn::Refreshed;
                }
            }
        }
        self.learn_locked(key, mac, port, now)
    }

    #[cold]
    fn learn_locked(&self, key: u64, mac: MacAddr, port: PortId, now: Instant) -> Learn {
        let mut policy = lock(&self.policy);
        let r = policy.learn(mac, port, now);
        let m = self.mirror.pin();
        forget_removed(&mut policy, &m);
        let t = self.clock.ticks(now);
        match r {
            Learn::New | Learn::Moved { .. } => {
                let refreshed = AtomicU64::new(t);
                let e = MacEntry {
                    port,
                    is_static: false,
                    refreshed,
                };
                m.insert(key, e);
            }
            Learn::Refreshed => {
                if let Some(e) = m.get(&key) {
                    e.refreshed.store(t, Relaxed);
                }
            }
            Learn::NotLearnable | Learn::Static { .. } => {}
        }
        r
    }

    /// The port `mac` was learned on or pinned to.
    #[inline]
    pub fn lookup(&self, mac: MacAddr) -> Option<PortId> {
        self.mirror.pin().get(&mac_key(mac)).map(|e| e.port)
    }

    /// Pins `mac` to `port`, as [`MacTable::insert_static`].
    pub fn insert_static(&self, mac: MacAddr, port: PortId) -> bool {
        let mut policy = lock(&self.policy);
        if !policy.insert_static(mac, port) {
            return false;
        }
        let refreshed = AtomicU64::new(0);
        let e = MacEntry {
            port,
            is_static: true,
            refreshed,
        };
        self.mirror.pin().insert(mac_key(mac), e);
        true
    }

    /// Removes every entry of `port`, as [`MacTable::flush_port`].
    pub fn flush_port(&self, port: PortId) -> usize {
        self.changed(|p| p.flush_port(port))
    }

    /// Removes the entry for `mac`, as [`MacTable::remove`].
    pub fn remove(&self, mac: MacAddr) -> bool {
        self.changed(|p| p.remove(mac))
    }

    /// Ages entries, as [`MacTable::run`].
    pub fn run(&self, now: Instant) -> Option<Instant> {
        self.changed(|p| p.run(now))
    }

    /// Runs `f` on the policy, then removes from the mirror what it deleted.
    fn changed<R>(&self, f: impl FnOnce(&mut MacTable) -> R) -> R {
        let mut policy = lock(&self.policy);
        let r = f(&mut policy);
        forget_removed(&mut policy, &self.mirror.pin());
        r
    }

    /// Learned, moved, expired and evicted, node-wide.
    pub fn counters(&self) -> MacCounters {
        lock(&self.policy).counters()
    }

    /// Entries, static and dynamic.
    pub fn len(&self) -> usize {
        self.mirror.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Dynamic entries on `port`.
    pub fn port_len(&self, port: PortId) -> usize {
        lock(&self.policy).port_len(port)
    }

    /// Every entry as (MAC, port, is static), in no particular order.
    pub fn entries(&self) -> Vec<(MacAddr, PortId, bool)> {
        lock(&self.policy).iter().collect()
    }

    /// Every entry as (MAC, port, when last seen; `None`: static), as
    /// [`MacTable::iter_seen`].
    pub fn entries_seen(&self) -> Vec<(MacAddr, PortId, Option<Instant>)> {
        lock(&self.policy).iter_seen().collect()
    }

    /// The policy's invariants, and that the mirror holds exactly its
    /// entries. O(n), for tests.
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), &'static str> {
        let policy = lock(&self.policy);
        policy.check_invariants()?;
        let m = self.mirror.pin();
        if m.len() != policy.len() {
            return Err("mirror size");
        }
        for (mac, port, is_static) in policy.iter() {
            match m.get(&mac_key(mac)) {
                Some(e) if e.port == port && e.is_static == is_static => {}
                _ => return Err("mirror entry"),
            }
        }
        Ok(())
    }
}

/// The segment's neighbor table (IP → MAC), shared by every worker. Changes
/// come from ARP and attachments, rare next to the lookups of every routed
/// frame, so every change takes the lock.
#[derive(Debug)]
pub struct SharedNeighbors {
    mirror: papaya::HashMap<u32, MacAddr, MacHashBuilder>,
    policy: Mutex<NeighborTable>,
}

impl SharedNeighbors {
    /// An empty table holding at most `capacity` learned entries.
    pub fn new(capacity: usize, aging: Duration) -> SharedNeighbors {
        let hasher = MacHashBuilder::new(0x7477_696c_6c5f_6e31);
        SharedNeighbors {
            mirror: papaya::HashMap::builder()
                .capacity(capacity.clamp(16, 1 << 16))
                .hasher(hasher)
                // As the MAC table's (see `SharedMacTable::with_policy`).
                .resize_mode(papaya::ResizeMode::Blocking)
                .build(),
            policy: Mutex::new(NeighborTable::new(capacity, aging)),
        }
    }

    /// The MAC of `ip`, if known.
    #[inline]
    pub fn lookup(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        self.mirror.pin().get(&u32::from(ip)).copied()
    }

    /// Records what ARP said, as [`NeighborTable::observe`].
    pub fn observe(&self, ip: Ipv4Addr, mac: MacAddr, now: Instant) -> NeighborUpdate {
        let mut policy = lock(&self.policy);
        let r = policy.observe(ip, mac, now);
        if r == NeighborUpdate::Learned {
            self.mirror.pin().insert(u32::from(ip), mac);
        }
        r
    }

    /// A fixed entry, as [`NeighborTable::insert_fixed`].
    pub fn insert_fixed(&self, ip: Ipv4Addr, mac: MacAddr, now: Instant) {
        let mut policy = lock(&self.policy);
        policy.insert_fixed(ip, mac, now);
        self.mirror.pin().insert(u32::from(ip), mac);
    }

    /// Removes the entry of `ip` if it still maps to `mac` (a detached
    /// port's, not one learned since).
    pub fn remove_if(&self, ip: Ipv4Addr, mac: MacAddr) {
        let mut policy = lock(&self.policy);
        if policy.lookup(ip) == Some(mac) {
            policy.remove(ip);
            self.mirror.pin().remove(&u32::from(ip));
        }
    }

    /// Whether an ARP request for `ip` may be sent now, as
    /// [`NeighborTable::may_ask`].
    pub fn may_ask(&self, ip: Ipv4Addr, now: Instant) -> bool {
        lock(&self.policy).may_ask(ip, now)
    }

    /// Ages learned entries, as [`NeighborTable::run`].
    pub fn run(&self, now: Instant) -> Option<Instant> {
        let mut policy = lock(&self.policy);
        let m = self.mirror.pin();
        policy.expire(now, |ip| {
            m.remove(&u32::from(ip));
        })
    }

    /// Entries (ip, mac, fixed).
    pub fn entries(&self) -> Vec<(Ipv4Addr, MacAddr, bool)> {
        lock(&self.policy).iter().collect()
    }

    /// Entries.
    pub fn len(&self) -> usize {
        self.mirror.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[path = "learning_tests.rs"]
mod tests;
