//! The L2 MAC learning table of the sans-IO core, after Open vSwitch's
//! lib/mac-learning.c: learn unicast sources only, move a MAC to the port it
//! was last seen on, age entries from an LRU list driven by `run(now)`, and
//! stay bounded by evicting fairly (the port holding the most entries loses its
//! least recently used one: OVS's defence against MAC flooding). Static
//! entries never age, move or get evicted. Beyond OVS there is a per-port cap:
//! a port at its cap recycles its own least recently used entry.
//!
//! `learn` runs for every source and `lookup` for every destination, so both
//! are O(1): a keyed hash map MAC -> slab index, and a slab whose entries form
//! intrusive doubly linked lists (indices, not pointers), one global LRU list
//! and one LRU list per port. Only an eviction for the global cap looks at
//! every port, O(ports).
//!
//! It must not do I/O or read the clock: time comes in as `now`, which the
//! caller must not pass decreasing. It must not panic on anything a packet
//! carries.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::time::{Duration, Instant};
use std::{cmp::Reverse, fmt};

use encap::MacAddr;

use super::PortId;

/// Sizes and timers of a [`MacTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacTableConfig {
    /// Most dynamic (learned) entries in the table; 0 is taken as 1.
    pub max_entries: usize,
    /// Most dynamic entries on one port; 0 is taken as 1.
    pub max_per_port: usize,
    /// An entry idle this long expires (OVS's `mac-aging-time`).
    pub aging: Duration,
}

impl Default for MacTableConfig {
    fn default() -> Self {
        let aging = Duration::from_secs(300);
        MacTableConfig {
            max_entries: 8192,
            max_per_port: 4096,
            aging,
        }
    }
}

/// What [`MacTable::learn`] did with a source MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Learn {
    /// A new entry.
    New,
    /// Known on this port: marked recently used.
    Refreshed,
    /// Known on another port: moved to this one.
    Moved { from: PortId },
    /// Multicast, broadcast or zero source: not learned.
    NotLearnable,
    /// A static entry, left alone. If `port` is not the input port, the frame
    /// claims a MAC pinned elsewhere: a possible spoof, for the caller to count.
    Static { port: PortId },
}

/// Running totals, as OVS's `total_learned` and friends.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MacCounters {
    pub learned: u64,
    pub expired: u64,
    pub evicted: u64,
    pub moved: u64,
}

/// "No entry" in the intrusive lists.
const NIL: u32 = u32::MAX;
/// Indices into `Entry::links`: the global LRU list, and the port's list.
const LRU: usize = 0;
const PORT: usize = 1;
/// Capacity reserved up front, so that learning does not allocate on the
/// forwarding path for any usual table size.
const PREALLOC_MAX: usize = 1 << 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Link {
    prev: u32,
    next: u32,
}

const UNLINKED: Link = Link {
    prev: NIL,
    next: NIL,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct List {
    head: u32,
    tail: u32,
}

const EMPTY: List = List {
    head: NIL,
    tail: NIL,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// On the free list, linked through `links[LRU].next`.
    Free,
    /// Learned, last seen at the given time.
    Dynamic(Instant),
    Static,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    mac: MacAddr,
    port: PortId,
    /// Index of `port` in `MacTable::ports`.
    pslot: u16,
    kind: Kind,
    /// `[LRU]`: the global LRU list (dynamic entries only). `[PORT]`: the
    /// port's LRU list of dynamic entries, or its list of static ones.
    links: [Link; 2],
}

#[derive(Debug, Clone, Copy)]
struct PortState {
    id: PortId,
    dyn_count: u32,
    /// Dynamic entries, least recently used first.
    dynamic: List,
    statics: List,
}

/// The MAC learning table of one L2 segment.
pub struct MacTable {
    cfg: MacTableConfig,
    map: HashMap<u64, u32, MacHashBuilder>,
    slab: Vec<Entry>,
    free: u32,
    /// All dynamic entries, least recently used first.
    lru: List,
    dyn_len: usize,
    /// One slot per port ever seen: at most 65536, as `PortId` is a `u16`.
    ports: Vec<PortState>,
    port_slots: HashMap<PortId, u16, MacHashBuilder>,
    counters: MacCounters,
    /// MACs deleted since the last [`MacTable::drain_removed`], kept only
    /// once [`MacTable::log_removals`] asked for it (a mirror of the table
    /// needs them; a table used alone must not grow a log).
    removed: Option<Vec<MacAddr>>,
}

impl fmt::Debug for MacTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MacTable")
            .field("cfg", &self.cfg)
            .field("len", &self.map.len())
            .field("dynamic", &self.dyn_len)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl MacTable {
    /// An empty table, its hash keyed from the OS's randomness once, here (as
    /// OVS's `ml->secret`, or quinn-proto's `Endpoint::new` with no seed).
    pub fn new(cfg: MacTableConfig) -> Self {
        Self::with_seed(cfg, RandomState::new().hash_one(0x0074_7769_6c6c_u64))
    }

    /// An empty table with a chosen hash key (tests, reproducible runs).
    pub fn with_seed(cfg: MacTableConfig, seed: u64) -> Self {
        let max_entries = cfg.max_entries.max(1);
        let max_per_port = cfg.max_per_port.max(1);
        let cfg = MacTableConfig {
            max_entries,
            max_per_port,
            aging: cfg.aging,
        };
        let (hasher, cap) = (MacHashBuilder::new(seed), max_entries.min(PREALLOC_MAX));
        MacTable {
            cfg,
            map: HashMap::with_capacity_and_hasher(cap, hasher),
            slab: Vec::with_capacity(cap),
            free: NIL,
            lru: EMPTY,
            dyn_len: 0,
            ports: Vec::new(),
            port_slots: HashMap::with_hasher(hasher),
            counters: MacCounters::default(),
            removed: None,
        }
    }

    /// From now on, remember every MAC deleted (aged, evicted, flushed,
    /// removed) until [`MacTable::drain_removed`] takes them.
    pub fn log_removals(&mut self) {
        self.removed.get_or_insert_with(Vec::new);
    }

    /// The MACs deleted since the last call (none unless
    /// [`MacTable::log_removals`] was called).
    pub fn drain_removed(&mut self) -> impl Iterator<Item = MacAddr> + '_ {
        self.removed.iter_mut().flat_map(|v| v.drain(..))
    }

    /// Learns that `mac` sent a frame received on `port` at `now`.
    pub fn learn(&mut self, mac: MacAddr, port: PortId, now: Instant) -> Learn {
        if !mac.is_unicast() {
            return Learn::NotLearnable;
        }
        let key = mac_key(mac);
        if let Some(&i) = self.map.get(&key) {
            return self.relearn(i, port, now);
        }
        let slot = self.port_slot(port);
        if !self.evict_if_port_full(slot) && self.dyn_len >= self.cfg.max_entries {
            self.evict_fairly();
        }
        let Some(i) = self.alloc(mac, port, slot, Kind::Dynamic(now)) else {
            return Learn::NotLearnable;
        };
        self.map.insert(key, i);
        self.attach_dynamic(i);
        self.counters.learned += 1;
        Learn::New
    }

    /// A known MAC seen again, on `port`.
    fn relearn(&mut self, i: u32, port: PortId, now: Instant) -> Learn {
        let e = self.slab[ix(i)];
        match e.kind {
            Kind::Static => Learn::Static { port: e.port },
            Kind::Free => Learn::NotLearnable,
            Kind::Dynamic(_) if e.port == port => {
                self.slab[ix(i)].kind = Kind::Dynamic(now);
                move_to_tail(&mut self.slab, &mut self.lru, i, LRU);
                let p = &mut self.ports[usize::from(e.pslot)];
                move_to_tail(&mut self.slab, &mut p.dynamic, i, PORT);
                Learn::Refreshed
            }
            Kind::Dynamic(_) => {
                let slot = self.port_slot(port);
                self.evict_if_port_full(slot); // never `i`: that is on another port
                self.detach(i);
                let entry = &mut self.slab[ix(i)];
                (entry.port, entry.pslot, entry.kind) = (port, slot, Kind::Dynamic(now));
                self.attach_dynamic(i);
                self.counters.moved += 1;
                Learn::Moved { from: e.port }
            }
        }
    }

    /// The port `mac` was learned on or pinned to. Does not refresh, and may
    /// return an entry past its age until the next `run`, as OVS does.
    #[inline]
    pub fn lookup(&self, mac: MacAddr) -> Option<PortId> {
        let i = *self.map.get(&mac_key(mac))?;
        self.slab.get(ix(i)).map(|e| e.port)
    }

    /// Pins `mac` to `port`, replacing any entry for it. Static entries never
    /// age, move or get evicted and do not count toward the caps. Returns
    /// false, and does nothing, for a multicast or zero MAC (OVS refuses them).
    pub fn insert_static(&mut self, mac: MacAddr, port: PortId) -> bool {
        if !mac.is_unicast() {
            return false;
        }
        let (slot, key) = (self.port_slot(port), mac_key(mac));
        let i = if let Some(&i) = self.map.get(&key) {
            self.detach(i);
            i
        } else {
            let Some(i) = self.alloc(mac, port, slot, Kind::Static) else {
                return false;
            };
            self.map.insert(key, i);
            i
        };
        let e = &mut self.slab[ix(i)];
        (e.port, e.pslot, e.kind) = (port, slot, Kind::Static);
        let p = &mut self.ports[usize::from(slot)];
        push_back(&mut self.slab, &mut p.statics, i, PORT);
        true
    }

    /// Removes the entry for `mac`, static or dynamic. True if there was one.
    pub fn remove(&mut self, mac: MacAddr) -> bool {
        let i = self.map.get(&mac_key(mac)).copied();
        i.inspect(|&i| self.delete(i)).is_some()
    }

    /// Removes every entry of `port`, dynamic and static (the port is gone).
    /// Returns how many; they count as neither expired nor evicted.
    pub fn flush_port(&mut self, port: PortId) -> usize {
        let Some(&slot) = self.port_slots.get(&port) else {
            return 0;
        };
        let mut n = 0;
        for statics in [false, true] {
            loop {
                let p = &self.ports[usize::from(slot)];
                let head = if statics { p.statics } else { p.dynamic }.head;
                if head == NIL {
                    break;
                }
                self.delete(head);
                n += 1;
            }
        }
        n
    }

    /// Expires dynamic entries idle for `aging` or longer, from the head of
    /// the LRU list, and returns when the next one falls due (`None` with no
    /// dynamic entries left, or a deadline too far to represent).
    pub fn run(&mut self, now: Instant) -> Option<Instant> {
        loop {
            let head = self.lru.head;
            let used = self.slab.get(ix(head))?.kind.used()?;
            if now.saturating_duration_since(used) < self.cfg.aging {
                return used.checked_add(self.cfg.aging);
            }
            self.delete(head);
            self.counters.expired += 1;
        }
    }

    pub fn counters(&self) -> MacCounters {
        self.counters
    }

    /// Entries, static and dynamic.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Dynamic (learned) entries.
    pub fn dynamic_len(&self) -> usize {
        self.dyn_len
    }

    /// Dynamic entries on `port`.
    pub fn port_len(&self, port: PortId) -> usize {
        let slot = self.port_slots.get(&port);
        slot.map_or(0, |&s| self.ports[usize::from(s)].dyn_count as usize)
    }

    /// Every entry as (MAC, port, is static), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (MacAddr, PortId, bool)> + '_ {
        self.slab.iter().filter_map(|e| match e.kind {
            Kind::Free => None,
            Kind::Dynamic(_) => Some((e.mac, e.port, false)),
            Kind::Static => Some((e.mac, e.port, true)),
        })
    }

    /// Every entry as (MAC, port, when last seen), in no particular order:
    /// `None` for a static entry. A dynamic entry's time is its last
    /// refresh, which a [`super::learning::SharedMacTable`] makes at most
    /// [`super::learning::refresh_interval`] apart.
    pub fn iter_seen(&self) -> impl Iterator<Item = (MacAddr, PortId, Option<Instant>)> + '_ {
        self.slab.iter().filter_map(|e| match e.kind {
            Kind::Free => None,
            Kind::Dynamic(t) => Some((e.mac, e.port, Some(t))),
            Kind::Static => Some((e.mac, e.port, None)),
        })
    }

    /// The slot of `port`, made on first sight. Slots are never freed and
    /// there are at most 65536 PortIds, so a slot index fits a `u16`.
    fn port_slot(&mut self, id: PortId) -> u16 {
        if let Some(&s) = self.port_slots.get(&id) {
            return s;
        }
        let slot = self.ports.len() as u16;
        let (dynamic, statics) = (EMPTY, EMPTY);
        self.ports.push(PortState {
            id,
            dyn_count: 0,
            dynamic,
            statics,
        });
        self.port_slots.insert(id, slot);
        slot
    }

    fn alloc(&mut self, mac: MacAddr, port: PortId, pslot: u16, kind: Kind) -> Option<u32> {
        let links = [UNLINKED; 2];
        let e = Entry {
            mac,
            port,
            pslot,
            kind,
            links,
        };
        if let Some(free) = self.slab.get_mut(ix(self.free)) {
            let i = self.free;
            self.free = free.links[LRU].next;
            *free = e;
            return Some(i);
        }
        let i = u32::try_from(self.slab.len()).ok().filter(|&i| i != NIL)?;
        self.slab.push(e);
        Some(i)
    }

    /// Links dynamic entry `i` at the tails of the global and its port's list.
    fn attach_dynamic(&mut self, i: u32) {
        push_back(&mut self.slab, &mut self.lru, i, LRU);
        let p = &mut self.ports[usize::from(self.slab[ix(i)].pslot)];
        push_back(&mut self.slab, &mut p.dynamic, i, PORT);
        p.dyn_count += 1;
        self.dyn_len += 1;
    }

    /// Unlinks entry `i` from its lists; it stays in the map and the slab.
    fn detach(&mut self, i: u32) {
        let e = self.slab[ix(i)];
        let p = &mut self.ports[usize::from(e.pslot)];
        match e.kind {
            Kind::Dynamic(_) => {
                unlink(&mut self.slab, &mut self.lru, i, LRU);
                unlink(&mut self.slab, &mut p.dynamic, i, PORT);
                p.dyn_count -= 1;
                self.dyn_len -= 1;
            }
            Kind::Static => unlink(&mut self.slab, &mut p.statics, i, PORT),
            Kind::Free => {}
        }
    }

    /// Removes entry `i` from everything and frees it.
    fn delete(&mut self, i: u32) {
        self.detach(i);
        let e = &mut self.slab[ix(i)];
        self.map.remove(&mac_key(e.mac));
        if let Some(log) = &mut self.removed {
            log.push(e.mac);
        }
        e.kind = Kind::Free;
        e.links[LRU].next = self.free;
        self.free = i;
    }

    fn evict(&mut self, i: u32) {
        if i != NIL {
            self.delete(i);
            self.counters.evicted += 1;
        }
    }

    /// The per-port cap: a full port loses its LRU entry. True if it did.
    fn evict_if_port_full(&mut self, slot: u16) -> bool {
        let p = self.ports[usize::from(slot)];
        let full = p.dyn_count as usize >= self.cfg.max_per_port;
        if full {
            self.evict(p.dynamic.head);
        }
        full
    }

    /// OVS's `evict_mac_entry_fairly`: the LRU entry of the port with the
    /// most dynamic entries, the lowest `PortId` among equals. O(ports).
    fn evict_fairly(&mut self) {
        let busiest = self.ports.iter().filter(|p| p.dyn_count > 0);
        let busiest = busiest.max_by_key(|p| (p.dyn_count, Reverse(p.id)));
        if let Some(head) = busiest.map(|p| p.dynamic.head) {
            self.evict(head);
        }
    }

    /// Checks every internal invariant: list links, the LRU's time order,
    /// counts, caps, the map, the free list. O(n), for tests and debugging.
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), &'static str> {
        let walk = |list: List, w: usize| -> Result<Vec<&Entry>, &'static str> {
            let (mut out, mut prev, mut cur) = (Vec::new(), NIL, list.head);
            while cur != NIL {
                let e = self.slab.get(ix(cur)).filter(|e| e.links[w].prev == prev);
                let e = e
                    .filter(|_| out.len() < self.slab.len())
                    .ok_or("broken list")?;
                out.push(e);
                (prev, cur) = (cur, e.links[w].next);
            }
            ensure(list.tail == prev, "list tail")?;
            Ok(out)
        };
        let lru = walk(self.lru, LRU)?;
        let used: Vec<_> = lru.iter().map(|e| e.kind.used()).collect();
        ensure(!used.contains(&None) && used.is_sorted(), "LRU list order")?;
        ensure(lru.len() == self.dyn_len, "dynamic count")?;
        ensure(self.dyn_len <= self.cfg.max_entries, "max_entries")?;
        let (mut dynamic, mut listed) = (0, 0);
        for (s, p) in self.ports.iter().enumerate() {
            let (d, st) = (walk(p.dynamic, PORT)?, walk(p.statics, PORT)?);
            let here = |e: &&Entry| usize::from(e.pslot) == s && e.port == p.id;
            ensure(
                d.iter().all(|e| here(e) && e.kind.used().is_some()),
                "dynamic list",
            )?;
            ensure(
                st.iter().all(|e| here(e) && e.kind == Kind::Static),
                "static list",
            )?;
            ensure(self.port_slots.get(&p.id) == Some(&(s as u16)), "port slot")?;
            ensure(d.len() == p.dyn_count as usize, "port count")?;
            ensure(d.len() <= self.cfg.max_per_port, "max_per_port")?;
            (dynamic, listed) = (dynamic + d.len(), listed + d.len() + st.len());
        }
        ensure(
            dynamic == self.dyn_len && listed == self.map.len(),
            "entries not listed",
        )?;
        ensure(self.port_slots.len() == self.ports.len(), "port slots")?;
        for (&key, &i) in &self.map {
            let e = self.slab.get(ix(i)).filter(|e| e.kind != Kind::Free);
            ensure(e.is_some_and(|e| mac_key(e.mac) == key), "map")?;
        }
        let (mut free, mut cur) = (0, self.free);
        while let Some(e) = self.slab.get(ix(cur)).filter(|_| free < self.slab.len()) {
            ensure(e.kind == Kind::Free, "live entry on the free list")?;
            (free, cur) = (free + 1, e.links[LRU].next);
        }
        ensure(cur == NIL && free + listed == self.slab.len(), "free list")
    }
}

impl Kind {
    fn used(self) -> Option<Instant> {
        match self {
            Kind::Dynamic(t) => Some(t),
            _ => None,
        }
    }
}

fn ensure(ok: bool, what: &'static str) -> Result<(), &'static str> {
    ok.then_some(()).ok_or(what)
}

#[inline]
fn ix(i: u32) -> usize {
    i as usize
}

/// Unlinks entry `i` from `list`, which runs through `links[w]`.
fn unlink(slab: &mut [Entry], list: &mut List, i: u32, w: usize) {
    let Link { prev, next } = slab[ix(i)].links[w];
    match prev {
        NIL => list.head = next,
        p => slab[ix(p)].links[w].next = next,
    }
    match next {
        NIL => list.tail = prev,
        n => slab[ix(n)].links[w].prev = prev,
    }
    slab[ix(i)].links[w] = UNLINKED;
}

fn push_back(slab: &mut [Entry], list: &mut List, i: u32, w: usize) {
    let tail = list.tail;
    slab[ix(i)].links[w] = Link {
        prev: tail,
        next: NIL,
    };
    match tail {
        NIL => list.head = i,
        t => slab[ix(t)].links[w].next = i,
    }
    list.tail = i;
}

#[inline]
fn move_to_tail(slab: &mut [Entry], list: &mut List, i: u32, w: usize) {
    if list.tail != i {
        unlink(slab, list, i, w);
        push_back(slab, list, i, w);
    }
}

/// The six bytes of a MAC as one integer: the map's key.
#[inline]
pub(crate) fn mac_key(mac: MacAddr) -> u64 {
    let [a, b, c, d, e, f] = mac.0;
    u64::from_be_bytes([0, 0, a, b, c, d, e, f])
}

/// foldhash's folded multiply: the high and low halves of a 128-bit product.
#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// A keyed folded-multiply hash of integer keys (one multiply per MAC). Not
/// cryptographic; the key keeps a port from choosing MACs that collide.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MacHashBuilder(u64, u64);

impl MacHashBuilder {
    pub(crate) fn new(seed: u64) -> Self {
        let k0 = fold(seed ^ 0x243f_6a88_85a3_08d3, 0x1319_8a2e_0370_7344);
        let k1 = fold(k0 ^ 0xa409_3822_299f_31d0, 0x082e_fa98_ec4e_6c89) | 1;
        MacHashBuilder(k0, k1)
    }
}

impl BuildHasher for MacHashBuilder {
    type Hasher = MacHasher;
    fn build_hasher(&self) -> MacHasher {
        MacHasher(self.0, self.1)
    }
}

/// (state, multiplier)
#[derive(Debug, Clone, Copy)]
pub(crate) struct MacHasher(u64, u64);

impl Hasher for MacHasher {
    #[inline]
    fn write_u64(&mut self, x: u64) {
        self.0 = fold(self.0 ^ x, self.1);
    }
    #[inline]
    fn write_u32(&mut self, x: u32) {
        self.write_u64(u64::from(x));
    }
    fn write(&mut self, bytes: &[u8]) {
        bytes.iter().for_each(|&b| self.write_u64(u64::from(b)));
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
#[path = "mac_table_tests.rs"]
mod tests;
