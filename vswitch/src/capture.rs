//! Packet capture (`twill capture`): copies of the frames a port reads and
//! writes, or of the datagrams the tunnel sockets receive and send, for a
//! reader outside the dataplane, and the classic pcap format they are
//! written in. Part of the driver: the workers offer frames at their TAP
//! reads and writes and their tunnel receives and sends; the core knows
//! nothing of captures, and nothing here decides where a frame goes.
//!
//! **Cost.** With no capture, a worker loads one atomic per wake-up
//! ([`Captures::current`]) and tests an `Option` that is always `None` per
//! frame. With captures, a frame a capture wants is copied (at most its
//! snaplen) with a timestamp into that capture's bounded queue of
//! [`QUEUE_RECORDS`] records and about [`QUEUE_BYTES`] bytes; a copy that
//! does not fit is dropped and counted (`dropped`), never waited for.
//!
//! **Port captures** see both directions, frames as the TAP carries them
//! behind the vnet header: a pod's super-frames (TSO/USO) as they are, like
//! tcpdump on the TAP device.
//!
//! **Tunnel captures** see every datagram received or sent, one record
//! each (a `UDP_GRO` batch as its datagrams, a `UDP_SEGMENT` send as its
//! segments: what is on the wire). The socket gives the UDP payload only,
//! so each record gets synthesized outer headers ([`OUTER_LEN`] bytes):
//! Ethernet (zero MACs), IPv4 (lengths and header checksum right, TTL 64,
//! DF) and UDP (checksum 0: none, valid for IPv4) from the socket's local
//! address and the peer's, so that a reader decodes the VXLAN header and
//! the inner frame (`tshark -d udp.port==8472,vxlan` for flannel's port).

use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender};

use encap::MacAddr;

use crate::core::PortId;

/// Records one capture's queue holds.
pub const QUEUE_RECORDS: usize = 4096;
/// Bytes of frames one capture's queue holds (about: workers that offer at
/// once may each pass the check with one frame more).
pub const QUEUE_BYTES: usize = 16 << 20;
/// Captures at once on one dataplane.
pub const MAX_CAPTURES: usize = 8;
/// The synthesized outer headers of a tunnel record: Ethernet, IPv4, UDP.
pub const OUTER_LEN: usize = 14 + 20 + 8;
/// The largest snaplen (tcpdump's default, `MAXIMUM_SNAPLEN`).
pub const MAX_SNAPLEN: u32 = 262_144;

/// What a capture copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The frames a port reads and writes.
    Port(PortId),
    /// The datagrams of the tunnel sockets, behind synthesized outer headers.
    Tunnel,
}

/// Why a capture was not started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// [`MAX_CAPTURES`] are running.
    #[error("{MAX_CAPTURES} captures are running already")]
    TooMany,
    /// A snaplen of 0 or above [`MAX_SNAPLEN`].
    #[error("snaplen must be 1 to {MAX_SNAPLEN}")]
    Snaplen,
}

/// One copied frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// When the worker saw it.
    pub time: SystemTime,
    /// The frame's length (`data` holds at most the snaplen of it).
    pub orig_len: u32,
    /// Its first bytes.
    pub data: Vec<u8>,
}

/// One capture: its target, snaplen, queue and counters.
#[derive(Debug)]
pub struct Capture {
    target: Target,
    snaplen: usize,
    tx: Sender<Record>,
    rx: Receiver<Record>,
    /// Bytes of `data` in the queue.
    queued_bytes: AtomicUsize,
    captured: AtomicU64,
    dropped: AtomicU64,
}

impl Capture {
    fn new(target: Target, snaplen: u32) -> Capture {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE_RECORDS);
        Capture {
            target,
            snaplen: snaplen as usize,
            tx,
            rx,
            queued_bytes: AtomicUsize::new(0),
            captured: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// What it copies.
    pub fn target(&self) -> Target {
        self.target
    }

    /// Frames copied into the queue.
    pub fn captured(&self) -> u64 {
        self.captured.load(Ordering::Relaxed)
    }

    /// Frames not copied: the queue was full (records or bytes).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The next record, waiting at most `timeout` for one.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Record> {
        let r = self.rx.recv_timeout(timeout).ok()?;
        self.queued_bytes.fetch_sub(r.data.len(), Ordering::Relaxed);
        Some(r)
    }

    /// Copies at most snaplen bytes of the frame made of `parts` (whole
    /// length `orig_len`) into the queue, or counts a drop. Never blocks.
    fn offer(&self, parts: &[&[u8]], orig_len: usize) {
        let cap = orig_len.min(self.snaplen);
        if self.queued_bytes.load(Ordering::Relaxed) + cap > QUEUE_BYTES || self.tx.is_full() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut data = Vec::with_capacity(cap);
        for p in parts {
            let room = cap - data.len();
            data.extend_from_slice(&p[..p.len().min(room)]);
        }
        let len = data.len();
        self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        let r = Record {
            time: SystemTime::now(),
            orig_len: u32::try_from(orig_len).unwrap_or(u32::MAX),
            data,
        };
        if self.tx.try_send(r).is_ok() {
            self.captured.fetch_add(1, Ordering::Relaxed);
        } else {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The captures of one dataplane, read by its workers without a lock.
#[derive(Debug, Default)]
pub struct Captures {
    list: ArcSwap<Vec<Arc<Capture>>>,
    /// `list` is not empty: the one load a worker pays per wake-up.
    active: AtomicBool,
    /// Serializes starts and stops (readers never take it).
    edit: Mutex<()>,
}

impl Captures {
    /// Starts a capture; it runs until the returned [`Session`] is dropped.
    pub fn start(self: &Arc<Self>, target: Target, snaplen: u32) -> Result<Session, Error> {
        if snaplen == 0 || snaplen > MAX_SNAPLEN {
            return Err(Error::Snaplen);
        }
        let _g = self.edit.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.list.load_full();
        if old.len() >= MAX_CAPTURES {
            return Err(Error::TooMany);
        }
        let c = Arc::new(Capture::new(target, snaplen));
        let mut new = Vec::clone(&old);
        new.push(c.clone());
        self.list.store(Arc::new(new));
        self.active.store(true, Ordering::Release);
        Ok(Session {
            captures: self.clone(),
            capture: c,
        })
    }

    fn stop(&self, c: &Arc<Capture>) {
        let _g = self.edit.lock().unwrap_or_else(|p| p.into_inner());
        let mut new = Vec::clone(&self.list.load_full());
        new.retain(|x| !Arc::ptr_eq(x, c));
        self.active.store(!new.is_empty(), Ordering::Release);
        self.list.store(Arc::new(new));
    }

    /// Captures running.
    pub fn len(&self) -> usize {
        self.list.load().len()
    }

    /// No capture runs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The captures running, or `None` (one atomic load) when none does: a
    /// worker takes this once per wake-up.
    pub fn current(&self) -> Option<Active> {
        if !self.active.load(Ordering::Acquire) {
            return None;
        }
        let l = self.list.load_full();
        (!l.is_empty()).then_some(Active(l))
    }
}

/// A running capture; dropping it removes the capture (workers stop
/// offering to it from their next wake-up on).
#[derive(Debug)]
pub struct Session {
    captures: Arc<Captures>,
    capture: Arc<Capture>,
}

impl std::ops::Deref for Session {
    type Target = Capture;
    fn deref(&self) -> &Capture {
        &self.capture
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.captures.stop(&self.capture);
        // Free what is queued now; a worker in the middle of a wake-up may
        // still add a few records, freed with the last reference.
        while self.capture.rx.try_recv().is_ok() {}
    }
}

/// The captures running when a worker woke up: where it offers frames.
#[derive(Debug, Clone)]
pub struct Active(Arc<Vec<Arc<Capture>>>);

impl Active {
    /// A frame port `id` read or wrote.
    pub fn port(&self, id: PortId, frame: &[u8]) {
        for c in self.0.iter() {
            if c.target == Target::Port(id) {
                c.offer(&[frame], frame.len());
            }
        }
    }

    /// A tunnel datagram from `src` to `dst`, its UDP payload made of
    /// `parts` (a segment's headers and its payload, or one slice).
    pub fn tunnel(&self, src: SocketAddrV4, dst: SocketAddrV4, parts: &[&[u8]]) {
        if !self.0.iter().any(|c| c.target == Target::Tunnel) {
            return;
        }
        let payload: usize = parts.iter().map(|p| p.len()).sum();
        let outer = outer_headers(src, dst, payload);
        let all: [&[u8]; 3] = [
            &outer,
            parts.first().copied().unwrap_or_default(),
            parts.get(1).copied().unwrap_or_default(),
        ];
        for c in self.0.iter().filter(|c| c.target == Target::Tunnel) {
            c.offer(&all, OUTER_LEN + payload);
        }
    }
}

/// Ethernet (zero MACs, IPv4), IPv4 (no options, DF, TTL 64, UDP, the
/// header checksum) and UDP (checksum 0: none) headers for a datagram of
/// `payload` bytes from `src` to `dst`. Lengths past 65535 (never for one
/// datagram) are written as 65535.
pub fn outer_headers(src: SocketAddrV4, dst: SocketAddrV4, payload: usize) -> [u8; OUTER_LEN] {
    use encap::{ethernet, ipv4};
    let mut h = [0u8; OUTER_LEN];
    let udp_len = (8 + payload).min(usize::from(u16::MAX) - ipv4::MIN_HEADER_LEN);
    let ip = ipv4::Repr {
        src: *src.ip(),
        dst: *dst.ip(),
        protocol: ipv4::PROTO_UDP,
        payload_len: udp_len,
        ttl: 64,
        dont_frag: true,
    };
    // Both fit: the buffer is OUTER_LEN long and the length is clamped.
    let _ = ethernet::emit(
        &mut h,
        MacAddr::ZERO,
        MacAddr::ZERO,
        ethernet::ETHERTYPE_IPV4,
    );
    let _ = ip.emit(&mut h[ethernet::HEADER_LEN..]);
    let udp = &mut h[ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN..];
    udp[0..2].copy_from_slice(&src.port().to_be_bytes());
    udp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    let ulen = u16::try_from(8 + payload).unwrap_or(u16::MAX);
    udp[4..6].copy_from_slice(&ulen.to_be_bytes());
    h
}

/// The classic pcap format (microsecond timestamps, Ethernet), in the
/// writer's byte order as the format allows (the magic tells readers).
pub mod pcap {
    use super::*;

    /// The file header's length.
    pub const FILE_HEADER_LEN: usize = 24;
    /// A record header's length.
    pub const RECORD_HEADER_LEN: usize = 16;
    /// `LINKTYPE_ETHERNET`.
    pub const LINKTYPE_ETHERNET: u32 = 1;

    /// The file header: magic, version 2.4, snaplen, Ethernet.
    pub fn file_header(snaplen: u32) -> [u8; FILE_HEADER_LEN] {
        let mut h = [0u8; FILE_HEADER_LEN];
        h[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        h[4..6].copy_from_slice(&2u16.to_le_bytes());
        h[6..8].copy_from_slice(&4u16.to_le_bytes());
        // thiszone and sigfigs: 0.
        h[16..20].copy_from_slice(&snaplen.to_le_bytes());
        h[20..24].copy_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        h
    }

    /// A record's header: its time, captured and original lengths.
    pub fn record_header(r: &Record) -> [u8; RECORD_HEADER_LEN] {
        let t = r.time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let mut h = [0u8; RECORD_HEADER_LEN];
        let secs = u32::try_from(t.as_secs()).unwrap_or(u32::MAX);
        h[0..4].copy_from_slice(&secs.to_le_bytes());
        h[4..8].copy_from_slice(&t.subsec_micros().to_le_bytes());
        let incl = u32::try_from(r.data.len()).unwrap_or(u32::MAX);
        h[8..12].copy_from_slice(&incl.to_le_bytes());
        h[12..16].copy_from_slice(&r.orig_len.to_le_bytes());
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn port_capture(snaplen: u32) -> (Arc<Captures>, Session) {
        let all = Arc::new(Captures::default());
        let s = all.start(Target::Port(PortId(3)), snaplen).unwrap();
        (all, s)
    }

    #[test]
    fn no_capture_means_no_snapshot() {
        let all = Arc::new(Captures::default());
        assert!(all.current().is_none());
        let s = all.start(Target::Tunnel, 100).unwrap();
        assert!(all.current().is_some());
        assert_eq!(all.len(), 1);
        drop(s);
        assert!(all.current().is_none());
        assert!(all.is_empty());
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        let (all, s) = port_capture(64);
        let a = all.current().unwrap();
        for _ in 0..QUEUE_RECORDS + 10 {
            a.port(PortId(3), &[7u8; 100]);
        }
        // Another port's frames are not this capture's.
        a.port(PortId(4), &[7u8; 100]);
        assert_eq!(s.captured(), QUEUE_RECORDS as u64);
        assert_eq!(s.dropped(), 10);
        let r = s.recv_timeout(Duration::ZERO).unwrap();
        assert_eq!((r.data.len(), r.orig_len), (64, 100));
        // One taken, one more fits.
        a.port(PortId(3), &[7u8; 100]);
        assert_eq!(s.captured(), QUEUE_RECORDS as u64 + 1);
    }

    #[test]
    fn the_byte_budget_bounds_large_frames() {
        let (all, s) = port_capture(MAX_SNAPLEN);
        let a = all.current().unwrap();
        let big = vec![0u8; 65536];
        let fit = QUEUE_BYTES / big.len();
        for _ in 0..fit + 3 {
            a.port(PortId(3), &big);
        }
        assert_eq!((s.captured(), s.dropped()), (fit as u64, 3));
    }

    #[test]
    fn too_many_captures_or_a_bad_snaplen_are_refused() {
        let all = Arc::new(Captures::default());
        assert_eq!(all.start(Target::Tunnel, 0).unwrap_err(), Error::Snaplen);
        let held: Vec<_> = (0..MAX_CAPTURES)
            .map(|_| all.start(Target::Tunnel, 10).unwrap())
            .collect();
        assert_eq!(all.start(Target::Tunnel, 10).unwrap_err(), Error::TooMany);
        drop(held);
        assert!(all.is_empty());
    }

    #[test]
    fn tunnel_records_carry_valid_outer_headers() {
        let all = Arc::new(Captures::default());
        let s = all.start(Target::Tunnel, MAX_SNAPLEN).unwrap();
        let src = SocketAddrV4::new(Ipv4Addr::new(192, 168, 100, 1), 40000);
        let dst = SocketAddrV4::new(Ipv4Addr::new(192, 168, 100, 2), 8472);
        all.current()
            .unwrap()
            .tunnel(src, dst, &[&[1, 2, 3], &[4, 5]]);
        let r = s.recv_timeout(Duration::ZERO).unwrap();
        assert_eq!(r.data.len(), OUTER_LEN + 5);
        let ip = etherparse::Ipv4HeaderSlice::from_slice(&r.data[14..]).unwrap();
        assert_eq!(ip.total_len(), 20 + 8 + 5);
        assert_eq!(ip.source_addr(), *src.ip());
        assert_eq!(ip.destination_addr(), *dst.ip());
        assert_eq!(ip.header_checksum(), ip.to_header().calc_header_checksum());
        let udp = etherparse::UdpHeaderSlice::from_slice(&r.data[34..]).unwrap();
        assert_eq!(
            (udp.source_port(), udp.destination_port(), udp.length()),
            (40000, 8472, 13)
        );
        assert_eq!(&r.data[OUTER_LEN..], &[1, 2, 3, 4, 5]);
    }

    #[test]
    fn pcap_headers_follow_the_classic_format() {
        let h = pcap::file_header(1500);
        assert_eq!(&h[0..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(u32::from_le_bytes([h[16], h[17], h[18], h[19]]), 1500);
        assert_eq!(h[20], 1);
        let r = Record {
            time: UNIX_EPOCH + Duration::new(5, 123_456_789),
            orig_len: 9,
            data: vec![0; 4],
        };
        let rh = pcap::record_header(&r);
        let word = |i: usize| u32::from_le_bytes([rh[i], rh[i + 1], rh[i + 2], rh[i + 3]]);
        assert_eq!((word(0), word(4), word(8), word(12)), (5, 123_456, 4, 9));
    }
}
