//! The node's connection table: every connection a Service translated,
//! shared by all workers (a reply may arrive on another worker than the
//! request), read without a lock.
//!
//! **Keys.** A connection is found by the 5-tuple a packet carries on the
//! wire ([`FlowKey`]: protocol, source and destination address and port).
//! Each connection is inserted under two keys, its original direction (as
//! the client sent it) and its reply direction (as the backend answers the
//! translated packet), both pointing to one shared [`Conn`]. A hit tells the
//! direction, and [`Conn::out`] the tuple the packet must leave with.
//!
//! **Concurrency.** The keys live in [`SHARDS`] `papaya` maps (lock-free
//! reads, the MAC table's choice, see [`crate::core::learning`]), a key's
//! shard chosen by a cheap hash of the tuple; the maps hash with the MAC
//! table's keyed folded-multiply hash (seeded from the OS once), as the
//! tuple is chosen by whoever sends. A lookup does no
//! write: the entry is read under the map's epoch guard (no `Arc` count
//! change). Per packet, the TCP state word changes only on a transition, and
//! the expiry (milliseconds since the table's first `now`) is written only
//! when it moves by more than [`REFRESH_MS`], so an established flow writes
//! the shared entry about once a second. Inserting is `try_insert` of the
//! reply key first (which also makes an SNAT port choice atomic between
//! workers), then of the original key.
//!
//! **Timeouts** are Linux conntrack's defaults
//! ([`crate::core::config::ConntrackConfig`]). TCP connections may be
//! picked up mid-stream, as with Linux's default `nf_conntrack_tcp_loose=1`:
//! a first packet that is not a SYN creates an ESTABLISHED entry (not
//! assured until a reply is seen); an RST closes (CLOSE, 10 s), FINs go
//! through FIN_WAIT, CLOSE_WAIT, LAST_ACK and TIME_WAIT; a SYN on a closed
//! entry reopens it. The state machine is simpler than Linux's
//! (`nf_conntrack_proto_tcp.c`): no sequence-window tracking.
//!
//! **Size.** At most `max_entries` connections. When full, a new connection
//! first tries to early-drop one that is not yet assured among the first
//! [`EARLY_DROP_SCAN`] entries from its own key's shard on (Linux's
//! `early_drop` scans a few buckets from the new tuple's hash likewise);
//! failing that it is refused.
//!
//! **Expiry.** [`Conntrack::sweep`] visits one shard per call (worker 0
//! calls it through [`crate::core::SwitchState::run`], [`SHARDS`] calls per
//! `sweep_interval`, 1 s by default), removing at most
//! [`SWEEP_MAX_REMOVALS`] connections per call. At 262144 connections that
//! is 524288 keys over 64 shards, about 8192 keys read per call. Measured
//! (`sweep_cost_at_capacity`, release, a 2-core VM shared with other
//! builds): a whole sweep that finds nothing expired takes 12 to 16 ms, so
//! about 0.2 ms per call and 1.2 to 1.6 % of one core; removing costs about
//! 1 µs per connection (2 keys, epoch-deferred frees), so a step that
//! removes its maximum takes about 1 ms, and a mass expiry of all 262144
//! connections is spread over about 4 s of steps. A lookup that finds an
//! expired entry removes it itself; a hit costs about 25 ns there.
//!
//! Nothing here reads a clock: time comes in as `now`.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::maglev::mix;
use crate::core::config::ConntrackConfig;
use crate::core::mac_table::MacHashBuilder;
use crate::core::policy::Verdict;

/// Number of maps the keys are spread over (and of sweep steps).
pub const SHARDS: usize = 64;
/// Entries looked at to find one to early-drop when the table is full.
pub const EARLY_DROP_SCAN: usize = 8;
/// Connections one sweep step removes at most (about 1 ms of work).
pub const SWEEP_MAX_REMOVALS: usize = 1024;
/// An expiry moves in shared memory only by more than this (ms).
pub const REFRESH_MS: u64 = 1000;

/// A packet's 5-tuple as seen on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowKey {
    /// IP protocol number (6 TCP, 17 UDP).
    pub proto: u8,
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
}

/// Two words for an IPv4 tuple (addresses; ports and protocol), five for
/// IPv6: a handful of multiplies with the table's keyed hasher, where the
/// derived `Hash` would feed a dozen small writes.
impl Hash for FlowKey {
    #[inline]
    fn hash<H: Hasher>(&self, h: &mut H) {
        match (self.src.ip(), self.dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                h.write_u64((u64::from(u32::from(s)) << 32) | u64::from(u32::from(d)));
            }
            (s, d) => {
                for a in [s, d] {
                    let x = match a {
                        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
                        IpAddr::V6(v6) => u128::from(v6),
                    };
                    h.write_u64((x >> 64) as u64);
                    h.write_u64(x as u64);
                }
            }
        }
        h.write_u64(
            (u64::from(self.src.port()) << 32)
                | (u64::from(self.dst.port()) << 16)
                | u64::from(self.proto),
        );
    }
}

impl FlowKey {
    /// The same flow in the other direction.
    pub fn reversed(&self) -> FlowKey {
        FlowKey {
            proto: self.proto,
            src: self.dst,
            dst: self.src,
        }
    }

    fn shard(&self) -> usize {
        let ip = |a: IpAddr| match a {
            IpAddr::V4(v4) => u64::from(u32::from(v4)),
            IpAddr::V6(v6) => {
                let x = u128::from(v6);
                (x >> 64) as u64 ^ x as u64
            }
        };
        let ports = (u64::from(self.src.port()) << 16) | u64::from(self.dst.port());
        let k = ip(self.src.ip()) ^ ip(self.dst.ip()).rotate_left(32) ^ (ports << 8);
        (mix(k ^ u64::from(self.proto)) % SHARDS as u64) as usize
    }
}

/// Which way a packet goes in its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// As the client sent the first packet.
    Original,
    /// From the backend back to the client.
    Reply,
}

/// TCP connection states (Linux conntrack's names); UDP entries have none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TcpState {
    /// Not TCP.
    None = 0,
    /// A SYN seen.
    SynSent = 1,
    /// The SYN-ACK seen.
    SynRecv = 2,
    /// The handshake's ACK seen (or picked up mid-stream).
    Established = 3,
    /// A FIN seen from one side.
    FinWait = 4,
    /// That FIN acknowledged by the other side.
    CloseWait = 5,
    /// FINs from both sides.
    LastAck = 6,
    /// The last FIN acknowledged.
    TimeWait = 7,
    /// An RST seen.
    Close = 8,
}

impl TcpState {
    fn from_bits(b: u32) -> TcpState {
        match b & STATE_MASK {
            1 => TcpState::SynSent,
            2 => TcpState::SynRecv,
            3 => TcpState::Established,
            4 => TcpState::FinWait,
            5 => TcpState::CloseWait,
            6 => TcpState::LastAck,
            7 => TcpState::TimeWait,
            8 => TcpState::Close,
            _ => TcpState::None,
        }
    }
}

const STATE_MASK: u32 = 0xff;
const FIN_ORIG: u32 = 1 << 8;
const FIN_REPLY: u32 = 1 << 9;
const REPLIED: u32 = 1 << 10;
const ASSURED: u32 = 1 << 11;

/// The TCP flags conntrack follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpFlags {
    /// SYN.
    pub syn: bool,
    /// ACK.
    pub ack: bool,
    /// FIN.
    pub fin: bool,
    /// RST.
    pub rst: bool,
}

impl TcpFlags {
    /// From the TCP header's flags byte (offset 13).
    pub fn from_byte(b: u8) -> TcpFlags {
        TcpFlags {
            fin: b & 0x01 != 0,
            syn: b & 0x02 != 0,
            rst: b & 0x04 != 0,
            ack: b & 0x10 != 0,
        }
    }
}

/// What a packet tells conntrack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// A TCP segment with these flags.
    Tcp(TcpFlags),
    /// A UDP datagram.
    Udp,
}

/// One connection, shared by its two keys.
#[derive(Debug)]
pub struct Conn {
    /// The tuple of the client's packets as sent.
    pub orig: FlowKey,
    /// The tuple of the backend's replies as sent (to the client, or to the
    /// node's address when SNATed).
    pub reply: FlowKey,
    /// The service port's id ([`super::ServicePort::id`]).
    pub service: u32,
    /// The first packet came in through the host port (a NodePort the
    /// host's nftables DNATed, or a host process): replies go back there,
    /// whatever their destination, so that the host's own conntrack undoes
    /// its half (a pod that used a NodePort expects the node's address).
    pub via_host: bool,
    /// The first packet came from the destination's own node (the host
    /// port's address, or the gateway's after an SNAT here), which
    /// NetworkPolicy always lets in.
    pub from_node: bool,
    /// The NetworkPolicy verdict and the policy generation it was reached
    /// under (see [`Conn::policy_verdict`]); 0: never judged.
    policy: AtomicU32,
    /// TCP state and flags (FINs seen, replied, assured).
    status: AtomicU32,
    /// Expiry, in ms since the table's epoch.
    expires: AtomicU64,
}

impl Conn {
    /// The tuple a packet of direction `dir` leaves with: the original
    /// direction goes to the backend as the reply key's reverse, a reply
    /// goes back as the original key's reverse.
    #[inline]
    pub fn out(&self, dir: Dir) -> FlowKey {
        match dir {
            Dir::Original => self.reply.reversed(),
            Dir::Reply => self.orig.reversed(),
        }
    }

    /// The TCP state (`None` for UDP).
    pub fn tcp_state(&self) -> TcpState {
        TcpState::from_bits(self.status.load(Relaxed))
    }

    /// Whether traffic was seen both ways (and, for TCP, the connection is
    /// established): such an entry is never early-dropped.
    pub fn is_assured(&self) -> bool {
        self.status.load(Relaxed) & ASSURED != 0
    }

    /// The backend's address and port.
    pub fn backend(&self) -> SocketAddr {
        self.reply.src
    }

    /// Whether this connection is Service-translated (else a connection
    /// tracked for NetworkPolicy only).
    #[inline]
    pub fn is_nat(&self) -> bool {
        self.service != NO_SERVICE
    }

    /// The policy verdict reached under generation `generation`, or
    /// `None` if it was judged under another generation (or never).
    #[inline]
    pub fn policy_verdict(&self, generation: u32) -> Option<Verdict> {
        let w = self.policy.load(Relaxed);
        if w >> 3 != generation & GENERATION_MASK || w & JUDGED == 0 {
            return None;
        }
        Some(match w & 0b11 {
            0 => Verdict::Allow,
            1 => Verdict::DenyEgress,
            _ => Verdict::DenyIngress,
        })
    }

    /// Records the verdict reached under `generation`.
    #[inline]
    pub fn set_policy_verdict(&self, generation: u32, v: Verdict) {
        self.policy.store(policy_word(generation, v), Relaxed);
    }
}

/// The [`Conn::service`] of a connection tracked for policy only.
pub const NO_SERVICE: u32 = u32::MAX;

/// Policy generations are compared modulo 2^29.
pub const GENERATION_MASK: u32 = (1 << 29) - 1;
const JUDGED: u32 = 0b100;

/// A verdict word: the generation (29 bits), a judged bit, the verdict.
#[inline]
fn policy_word(generation: u32, v: Verdict) -> u32 {
    let r = match v {
        Verdict::Allow => 0,
        Verdict::DenyEgress => 1,
        Verdict::DenyIngress => 2,
    };
    ((generation & GENERATION_MASK) << 3) | JUDGED | r
}

/// What a connection is besides its keys: see [`Conn`]'s fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnMeta {
    /// [`Conn::service`] ([`NO_SERVICE`] if none).
    pub service: u32,
    /// [`Conn::via_host`].
    pub via_host: bool,
    /// [`Conn::from_node`].
    pub from_node: bool,
    /// The policy generation its verdict (allowed: it is being inserted)
    /// was reached under; `None` if it was not judged.
    pub judged: Option<u32>,
}

/// Why a connection was not inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertError {
    /// The table is full and nothing could be early-dropped.
    Full,
    /// The reply key is some other connection's (pick another source port).
    ReplyTaken,
    /// The original key exists already (another worker inserted it).
    Exists,
}

#[derive(Debug)]
struct Affinity {
    backend: SocketAddr,
    expires: AtomicU64,
}

/// The connection table (see the module documentation).
#[derive(Debug)]
pub struct Conntrack {
    cfg: ConntrackConfig,
    shards: Box<[papaya::HashMap<FlowKey, Arc<Conn>, MacHashBuilder>]>,
    /// `sessionAffinity: ClientIP`: (client, service port id) → backend.
    affinity: papaya::HashMap<(IpAddr, u32), Affinity>,
    /// Read on every frame while connections exist, written on every new
    /// or removed one: on a cache line of its own, away from `cfg`.
    len: Padded<AtomicUsize>,
    epoch: OnceLock<Instant>,
    /// Written by the sweeper only.
    cursor: Padded<AtomicUsize>,
    expired: AtomicU64,
}

/// A value alone on its cache line (two, for the adjacent-line prefetcher).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl Conntrack {
    /// An empty table.
    pub fn new(cfg: ConntrackConfig) -> Conntrack {
        let per = (cfg.max_entries * 2 / SHARDS).clamp(16, 1 << 16);
        // Keyed from the OS's randomness once, as the MAC table's: senders
        // choose the tuples.
        let seed = RandomState::new().hash_one(0x7477_696c_6c5f_6374_u64);
        let hasher = MacHashBuilder::new(seed);
        let shards = (0..SHARDS)
            .map(|_| {
                papaya::HashMap::builder()
                    .capacity(per)
                    .hasher(hasher)
                    .build()
            })
            .collect();
        Conntrack {
            cfg,
            shards,
            affinity: papaya::HashMap::new(),
            len: Padded(AtomicUsize::new(0)),
            epoch: OnceLock::new(),
            cursor: Padded(AtomicUsize::new(0)),
            expired: AtomicU64::new(0),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ConntrackConfig {
        &self.cfg
    }

    /// Connections in the table (each has two keys).
    #[inline]
    pub fn len(&self) -> usize {
        self.len.load(Relaxed)
    }

    /// Whether there are no connections.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Connections removed because they expired, since the start.
    pub fn expired(&self) -> u64 {
        self.expired.load(Relaxed)
    }

    /// `now` in ms since the first `now` the table saw (earlier counts as
    /// that one).
    #[inline]
    fn ms(&self, now: Instant) -> u64 {
        let epoch = *self.epoch.get_or_init(|| now);
        u64::try_from(now.saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX)
    }

    fn shard(&self, k: &FlowKey) -> &papaya::HashMap<FlowKey, Arc<Conn>, MacHashBuilder> {
        &self.shards[k.shard()]
    }

    /// Runs `f` on the live connection `key` belongs to and the packet's
    /// direction, without a write. An expired entry found here is removed
    /// and counts as a miss.
    #[inline]
    pub fn with<R>(
        &self,
        key: &FlowKey,
        now: Instant,
        f: impl FnOnce(&Conn, Dir) -> R,
    ) -> Option<R> {
        let m = self.shard(key).pin();
        let c = m.get(key)?;
        if c.expires.load(Relaxed) <= self.ms(now) {
            if self.remove(c) {
                self.expired.fetch_add(1, Relaxed);
            }
            return None;
        }
        let dir = if *key == c.orig {
            Dir::Original
        } else {
            Dir::Reply
        };
        Some(f(c, dir))
    }

    /// The connection `key` belongs to, expired or not (views and tests).
    pub fn get(&self, key: &FlowKey) -> Option<Arc<Conn>> {
        self.shard(key).pin().get(key).cloned()
    }

    /// Whether `key` is some connection's key.
    pub fn contains(&self, key: &FlowKey) -> bool {
        self.shard(key).pin().contains_key(key)
    }

    fn timeout(&self, status: u32) -> Duration {
        let c = &self.cfg;
        match TcpState::from_bits(status) {
            TcpState::None if status & REPLIED != 0 => c.udp_stream,
            TcpState::None => c.udp,
            TcpState::SynSent => c.tcp_syn_sent,
            TcpState::SynRecv => c.tcp_syn_recv,
            TcpState::Established => c.tcp_established,
            TcpState::FinWait => c.tcp_fin_wait,
            TcpState::CloseWait => c.tcp_close_wait,
            TcpState::LastAck => c.tcp_last_ack,
            TcpState::TimeWait => c.tcp_time_wait,
            TcpState::Close => c.tcp_close,
        }
    }

    fn deadline(&self, status: u32, now_ms: u64) -> u64 {
        let t = u64::try_from(self.timeout(status).as_millis()).unwrap_or(u64::MAX);
        now_ms.saturating_add(t.max(1))
    }

    /// Follows a packet of an existing connection: its TCP state, its
    /// expiry. Writes the shared entry only on a state change or when the
    /// expiry moves by more than [`REFRESH_MS`].
    #[inline]
    pub fn observe(&self, c: &Conn, dir: Dir, seen: Seen, now: Instant) {
        let now_ms = self.ms(now);
        let cur = c.status.load(Relaxed);
        let next = match seen {
            Seen::Tcp(f) => tcp_next(cur, dir, f),
            Seen::Udp if dir == Dir::Reply => cur | REPLIED | ASSURED,
            Seen::Udp => cur,
        };
        let exp = self.deadline(next, now_ms);
        if next != cur {
            if c.status
                .compare_exchange(cur, next, Relaxed, Relaxed)
                .is_ok()
            {
                c.expires.store(exp, Relaxed);
            }
        } else if exp > c.expires.load(Relaxed).saturating_add(REFRESH_MS) {
            c.expires.store(exp, Relaxed);
        }
    }

    /// Inserts a connection first seen as `seen`, under `orig` and `reply`.
    /// `Ok(true)` if another connection was early-dropped to make room.
    pub fn insert(
        &self,
        orig: FlowKey,
        reply: FlowKey,
        service: u32,
        via_host: bool,
        seen: Seen,
        now: Instant,
    ) -> Result<bool, InsertError> {
        let meta = ConnMeta {
            service,
            via_host,
            from_node: false,
            judged: None,
        };
        self.insert_with(orig, reply, meta, seen, now)
    }

    /// [`Conntrack::insert`] with everything a connection may carry.
    pub fn insert_with(
        &self,
        orig: FlowKey,
        reply: FlowKey,
        meta: ConnMeta,
        seen: Seen,
        now: Instant,
    ) -> Result<bool, InsertError> {
        let mut early = false;
        if self.len() >= self.cfg.max_entries {
            if !self.early_drop(&orig) {
                return Err(InsertError::Full);
            }
            early = true;
        }
        let status = match seen {
            Seen::Tcp(f) if f.syn && !f.ack => TcpState::SynSent as u32,
            // Mid-stream pickup (nf_conntrack_tcp_loose=1).
            Seen::Tcp(_) => TcpState::Established as u32,
            Seen::Udp => TcpState::None as u32,
        };
        let conn = Arc::new(Conn {
            orig,
            reply,
            service: meta.service,
            via_host: meta.via_host,
            from_node: meta.from_node,
            policy: AtomicU32::new(meta.judged.map_or(0, |g| policy_word(g, Verdict::Allow))),
            status: AtomicU32::new(status),
            expires: AtomicU64::new(self.deadline(status, self.ms(now))),
        });
        let rmap = self.shard(&reply).pin();
        if rmap.try_insert(reply, Arc::clone(&conn)).is_err() {
            return Err(InsertError::ReplyTaken);
        }
        if self
            .shard(&orig)
            .pin()
            .try_insert(orig, Arc::clone(&conn))
            .is_err()
        {
            let _ = rmap.remove_if(&reply, |_, v| Arc::ptr_eq(v, &conn));
            return Err(InsertError::Exists);
        }
        self.len.fetch_add(1, Relaxed);
        Ok(early)
    }

    /// Removes `c` (both keys). Whether this call removed it.
    fn remove(&self, c: &Conn) -> bool {
        let same = |_: &FlowKey, v: &Arc<Conn>| std::ptr::eq(&**v, c);
        let removed = matches!(
            self.shard(&c.orig).pin().remove_if(&c.orig, same),
            Ok(Some(_))
        );
        let _ = self.shard(&c.reply).pin().remove_if(&c.reply, same);
        if removed {
            self.len.fetch_sub(1, Relaxed);
        }
        removed
    }

    /// Removes the Service-translated UDP connections `keep` rejects (kube-proxy deletes the
    /// UDP conntrack entries of removed endpoints, as UDP has no RST to end
    /// them; TCP connections run on until they end). Reads every key: for
    /// the control side, on a Service change. Returns how many.
    pub fn flush_udp(&self, keep: impl Fn(&Conn) -> bool) -> usize {
        let mut gone = 0;
        for shard in self.shards.iter() {
            for (k, c) in shard.pin().iter() {
                let udp = k.proto == super::Proto::Udp.number();
                if udp && *k == c.orig && c.is_nat() && !keep(c) && self.remove(c) {
                    gone += 1;
                }
            }
        }
        gone
    }

    /// Removes one connection that is not assured among the first
    /// [`EARLY_DROP_SCAN`] entries from `near`'s shard on (the next shards
    /// when it holds fewer). Whether one was.
    fn early_drop(&self, near: &FlowKey) -> bool {
        let first = near.shard();
        let mut budget = EARLY_DROP_SCAN;
        for i in 0..SHARDS {
            let m = self.shards[(first + i) % SHARDS].pin();
            for (_, c) in m.iter().take(budget) {
                if !c.is_assured() && self.remove(c) {
                    return true;
                }
                budget -= 1;
            }
            if budget == 0 {
                break;
            }
        }
        false
    }

    /// Removes the expired connections of the next shard (one of
    /// [`SHARDS`]; the affinity entries with shard 0), at most
    /// [`SWEEP_MAX_REMOVALS`] of them: a shard with more is swept again at
    /// the next call. Returns how many were removed. One caller at a time.
    pub fn sweep(&self, now: Instant) -> usize {
        let step = self.cursor.load(Relaxed);
        let i = step % SHARDS;
        let now_ms = self.ms(now);
        let mut dead = 0;
        for (_, c) in self.shards[i].pin().iter() {
            if c.expires.load(Relaxed) <= now_ms && self.remove(c) {
                dead += 1;
                if dead == SWEEP_MAX_REMOVALS {
                    break;
                }
            }
        }
        if dead < SWEEP_MAX_REMOVALS {
            self.cursor.store(step.wrapping_add(1), Relaxed);
            if i == 0 {
                self.affinity
                    .pin()
                    .retain(|_, a| a.expires.load(Relaxed) > now_ms);
            }
        }
        self.expired.fetch_add(dead as u64, Relaxed);
        dead
    }

    /// Sweeps until every shard was swept once to the end (tests, views).
    pub fn sweep_all(&self, now: Instant) -> usize {
        let (mut dead, mut done) = (0, 0);
        while done < SHARDS {
            let before = self.cursor.load(Relaxed);
            dead += self.sweep(now);
            if self.cursor.load(Relaxed) != before {
                done += 1;
            }
        }
        dead
    }

    /// The backend `client` is pinned to for service port `port`, if the
    /// pin has not expired.
    pub fn affinity(&self, client: IpAddr, port: u32, now: Instant) -> Option<SocketAddr> {
        let now_ms = self.ms(now);
        let m = self.affinity.pin();
        let a = m.get(&(client, port))?;
        (a.expires.load(Relaxed) > now_ms).then_some(a.backend)
    }

    /// Pins `client` to `backend` for `port` for `timeout` from `now` (each
    /// new connection renews it, as kube-proxy's `recent` match does). Not
    /// recorded when the affinity table holds `max_entries` clients.
    pub fn set_affinity(
        &self,
        client: IpAddr,
        port: u32,
        backend: SocketAddr,
        timeout: Duration,
        now: Instant,
    ) {
        let t = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let exp = self.ms(now).saturating_add(t);
        let m = self.affinity.pin();
        if let Some(a) = m.get(&(client, port)) {
            if a.backend == backend {
                a.expires.store(exp, Relaxed);
                return;
            }
        } else if m.len() >= self.cfg.max_entries {
            return;
        }
        m.insert(
            (client, port),
            Affinity {
                backend,
                expires: AtomicU64::new(exp),
            },
        );
    }
}

/// The TCP state word after a segment with flags `f` in direction `dir`.
fn tcp_next(cur: u32, dir: Dir, f: TcpFlags) -> u32 {
    use TcpState as S;
    let st = TcpState::from_bits(cur);
    let mut bits = cur & !STATE_MASK;
    if dir == Dir::Reply {
        bits |= REPLIED;
    }
    let (mine, theirs) = match dir {
        Dir::Original => (FIN_ORIG, FIN_REPLY),
        Dir::Reply => (FIN_REPLY, FIN_ORIG),
    };
    let next = if f.rst {
        S::Close
    } else if f.syn && !f.ack {
        if dir == Dir::Original && matches!(st, S::TimeWait | S::Close) {
            bits = 0; // a new connection on the same tuple
            S::SynSent
        } else {
            st
        }
    } else if st == S::Close {
        S::Close
    } else if f.syn {
        if dir == Dir::Reply && st == S::SynSent {
            S::SynRecv
        } else {
            st
        }
    } else if f.fin {
        bits |= mine;
        if bits & theirs != 0 {
            S::LastAck
        } else {
            S::FinWait
        }
    } else if f.ack {
        match st {
            S::SynRecv if dir == Dir::Original => S::Established,
            S::FinWait if bits & mine == 0 => S::CloseWait,
            S::LastAck => S::TimeWait,
            s => s,
        }
    } else {
        st
    };
    if next == S::Established && bits & REPLIED != 0 {
        bits |= ASSURED;
    }
    bits | next as u32
}

#[cfg(test)]
#[path = "conntrack_tests.rs"]
mod tests;
