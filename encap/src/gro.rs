//! Software receive coalescing (GRO) of TCP/IPv4 Ethernet frames into one
//! GSO super-frame for a TAP with offloads; UDP/IPv4 datagrams into one USO
//! super-frame in [`UdpCoalescer`] (`gro_udp.rs`), and [`kind`] to tell
//! which of the two a frame is for.
//!
//! Frames that arrive from the tunnel are MTU-sized. Consecutive segments of
//! one TCP flow bound for the same TAP are joined here into one frame of up
//! to 64 KiB described by a vnet header (`GSO_TCPV4`, `F_NEEDS_CSUM`), so the
//! pod's kernel runs its receive path once per super-frame instead of once
//! per segment. This is the inverse of [`crate::gso::segment_tcp4`], and
//! follows the kernel's `inet_gro_receive`/`tcp_gro_receive`: only plain
//! in-order data segments of identical headers are joined; anything unusual
//! is passed on as it is.
//!
//! Every TCP checksum is verified before a segment is joined: the
//! super-frame gets a fresh (partial) checksum, which would otherwise hide a
//! corrupt segment from the receiver.
//!
//! No I/O, no clock; the one buffer is allocated in [`Coalescer::new`].
//! Nothing in a frame can make it panic.

use core::net::Ipv4Addr;

use crate::{checksum, ipv4, vnet};

/// Length of an Ethernet header (no VLAN tag).
const ETH_LEN: usize = 14;
/// EtherType of IPv4.
const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
/// Length of the IPv4 header this module accepts (no options).
const IP_LEN: usize = ipv4::MIN_HEADER_LEN;
/// Start of the TCP header in a frame.
const L4: usize = ETH_LEN + IP_LEN;
/// Length of a TCP header without options.
const TCP_MIN_LEN: usize = 20;
/// Largest IPv4 total length.
const MAX_IP_LEN: usize = 65_535;

const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;

/// Offsets inside the IPv4 header.
mod ip_field {
    use core::ops::Range;
    pub const VER_IHL: usize = 0;
    /// Version/IHL and TOS: must be identical.
    pub const HEAD: Range<usize> = 0..2;
    pub const LENGTH: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLG_OFF: Range<usize> = 6..8;
    /// Flags/fragment offset, TTL and protocol: must be identical.
    pub const MIDDLE: Range<usize> = 6..10;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    /// Source and destination addresses.
    pub const ADDRS: Range<usize> = 12..20;
}

/// Offsets inside the TCP header.
mod tcp_field {
    use core::ops::Range;
    pub const PORTS: Range<usize> = 0..4;
    pub const SEQ: Range<usize> = 4..8;
    pub const ACK: Range<usize> = 8..12;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Range<usize> = 14..16;
    pub const CHECKSUM: Range<usize> = 16..18;
    pub const URGENT: Range<usize> = 18..20;
}

/// IPv4 flags/offset bits: only DF may be set (no MF, no offset, no
/// reserved bit).
const IP_FLAG_DF: u16 = 0x4000;

/// Which coalescer a frame is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// TCP over IPv4: [`Coalescer`].
    Tcp,
    /// UDP over IPv4: [`UdpCoalescer`].
    Udp,
}

/// A first look at `frame` (EtherType and IP protocol only): which
/// coalescer to offer it to, `None` for neither. The coalescer checks the
/// rest, so a frame of either kind may still bypass it.
pub fn kind(frame: &[u8]) -> Option<Kind> {
    if frame.len() < L4 || frame[12..ETH_LEN] != ETHERTYPE_IPV4 {
        return None;
    }
    match frame[ETH_LEN + ip_field::PROTOCOL] {
        ipv4::PROTO_TCP => Some(Kind::Tcp),
        ipv4::PROTO_UDP => Some(Kind::Udp),
        _ => None,
    }
}

/// What [`Coalescer::push`] (or [`UdpCoalescer::push`]) did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Push {
    /// The frame was appended to (or started) the super-frame being built.
    Merged,
    /// The frame does not continue the current super-frame: flush (take) the
    /// current one first, then push again.
    Flush,
    /// The frame can never be coalesced (not TCP/IPv4 (UDP/IPv4), TCP flags
    /// other than ACK/PSH, bad or (UDP) no checksum, IP options/fragment, …):
    /// flush the current one, then write this frame as it is.
    Bypass,
}

/// A frame that may be coalesced, as [`parse`] found it.
#[derive(Debug, Clone, Copy)]
struct Segment {
    /// TCP header length, options included.
    tcp_hl: usize,
    /// End of the IP packet in the frame (`ETH_LEN` + IP total length);
    /// bytes after it are Ethernet padding.
    ip_end: usize,
    /// TCP sequence number.
    seq: u32,
    /// PSH is set.
    psh: bool,
}

impl Segment {
    /// Length of the Ethernet, IP and TCP headers.
    fn hdr_len(&self) -> usize {
        L4 + self.tcp_hl
    }

    /// TCP payload bytes.
    fn payload_len(&self) -> usize {
        self.ip_end - self.hdr_len()
    }
}

/// The IPv4 checks both coalescers make: an IPv4 frame without options,
/// not a fragment (only DF may be set), carrying `proto`, whose total
/// length holds at least `min_l4` bytes of payload and lies within the
/// frame (Ethernet padding after it is ignored), with a valid header
/// checksum. Returns the IP packet, padding cut off.
fn ipv4_packet(frame: &[u8], proto: u8, min_l4: usize) -> Option<&[u8]> {
    if frame.len() < L4 + min_l4 || frame[12..ETH_LEN] != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = &frame[ETH_LEN..];
    // Version 4, IHL 5: no options.
    if ip[ip_field::VER_IHL] != 0x45 || ip[ip_field::PROTOCOL] != proto {
        return None;
    }
    if be16(ip, ip_field::FLG_OFF) & !IP_FLAG_DF != 0 {
        return None;
    }
    let total = usize::from(be16(ip, ip_field::LENGTH));
    if total < IP_LEN + min_l4 || total > ip.len() {
        return None;
    }
    if checksum::checksum(&ip[..IP_LEN]) != 0 {
        return None;
    }
    Some(&ip[..total])
}

/// Whether the L4 checksum (TCP or UDP, `proto`) of an IP packet from
/// [`ipv4_packet`] is valid.
fn l4_checksum_valid(ip: &[u8], proto: u8) -> bool {
    let l4 = &ip[IP_LEN..];
    // `l4.len() < ip.len() ≤ 65535`: the cast is exact.
    let pseudo =
        checksum::pseudo_header(addr(&ip[12..16]), addr(&ip[16..20]), proto, l4.len() as u16);
    checksum::fold(checksum::sum(pseudo, l4)) == 0xffff
}

/// The 16-bit big-endian field at `r` of `b` (which holds it).
fn be16(b: &[u8], r: core::ops::Range<usize>) -> u16 {
    u16::from_be_bytes([b[r.start], b[r.start + 1]])
}

/// Checks that `frame` is a coalescable TCP/IPv4 segment (see
/// [`Coalescer::push`]); `None` if it is not.
fn parse(frame: &[u8]) -> Option<Segment> {
    let ip = ipv4_packet(frame, ipv4::PROTO_TCP, TCP_MIN_LEN)?;
    let tcp = &ip[IP_LEN..];
    // The low nibble holds reserved bits and AE (accurate ECN): must be 0.
    let doff = tcp[tcp_field::DATA_OFF];
    let tcp_hl = usize::from(doff >> 4) * 4;
    if doff & 0x0f != 0 || tcp_hl < TCP_MIN_LEN || tcp_hl >= tcp.len() {
        // `>=`: a segment without payload is never coalesced.
        return None;
    }
    let flags = tcp[tcp_field::FLAGS];
    if flags != TCP_ACK && flags != TCP_ACK | TCP_PSH {
        return None;
    }
    if !l4_checksum_valid(ip, ipv4::PROTO_TCP) {
        return None;
    }
    let s = &tcp[tcp_field::SEQ];
    Some(Segment {
        tcp_hl,
        ip_end: ETH_LEN + ip.len(),
        seq: u32::from_be_bytes([s[0], s[1], s[2], s[3]]),
        psh: flags & TCP_PSH != 0,
    })
}

/// The address in four bytes.
fn addr(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

/// Coalesces consecutive TCP/IPv4 Ethernet frames of one flow into a
/// super-frame.
///
/// The caller pushes each frame bound for one TAP, and acts on the answer:
/// on [`Push::Flush`] it takes (writes) the current super-frame and pushes
/// the frame again; on [`Push::Bypass`] it takes the current one and writes
/// the frame as it is; at the end of a batch it takes what is left.
#[derive(Debug)]
pub struct Coalescer {
    /// The super-frame being built: the first frame's headers, then the
    /// payloads in order.
    buf: Vec<u8>,
    /// Frames merged into the current super-frame (0: empty).
    segments: usize,
    /// Length of the first frame as pushed (Ethernet padding included), so
    /// that a single frame comes back unchanged.
    first_len: usize,
    /// End of the super-frame's IP packet in `buf` (once a second segment is
    /// merged, also the end of the super-frame).
    end: usize,
    /// Length of the Ethernet, IP and TCP headers.
    hdr_len: usize,
    /// Payload length of the first segment: every segment but the last has it.
    gso_size: usize,
    /// Sequence number the next segment must have.
    next_seq: u32,
    /// IP identification the next segment must have if DF is clear.
    next_ident: u16,
    /// The last segment was shorter than `gso_size` or had PSH: nothing more
    /// may be appended.
    closed: bool,
}

impl Coalescer {
    /// A coalescer whose super-frames are at most `capacity` bytes (Ethernet
    /// header included); 65 536 + 128 holds the largest IPv4 packet.
    pub fn new(capacity: usize) -> Coalescer {
        Coalescer {
            buf: vec![0; capacity],
            segments: 0,
            first_len: 0,
            end: 0,
            hdr_len: 0,
            gso_size: 0,
            next_seq: 0,
            next_ident: 0,
            closed: false,
        }
    }

    /// Offers one frame (Ethernet + IPv4 + TCP, checksums as received).
    ///
    /// A frame is coalescable if it is IPv4 without options and not a
    /// fragment (only DF may be set), with a valid header checksum and a
    /// total length within the frame (padding after it is ignored), carrying
    /// TCP with a sane data offset, no reserved bits, flags exactly ACK or
    /// ACK|PSH, at least one payload byte and a valid checksum. Anything else
    /// is [`Push::Bypass`].
    ///
    /// A coalescable frame continues the current super-frame if its Ethernet
    /// header, IP header (but total length, identification and checksum) and
    /// TCP header (but sequence number, PSH and checksum; options included)
    /// equal the first segment's, its sequence number follows the last
    /// segment's, its payload is at most the first segment's, the last
    /// segment was neither shorter nor PSH, the IP length stays ≤ 65 535 and
    /// the frame within the capacity. Without DF the identification must
    /// also follow the last segment's (as `inet_gro_receive` requires, and
    /// as segmentation restores it). Otherwise it is [`Push::Flush`]. An
    /// empty coalescer starts a super-frame with any coalescable frame that
    /// fits in its capacity.
    pub fn push(&mut self, frame: &[u8]) -> Push {
        // A frame the buffer cannot hold is never coalescable, so that an
        // empty coalescer takes every frame it answered `Flush` for.
        if frame.len() > self.buf.len() {
            return Push::Bypass;
        }
        let Some(seg) = parse(frame) else {
            return Push::Bypass;
        };
        if self.segments == 0 {
            return self.start(frame, seg);
        }
        if !self.continues(frame, &seg) {
            return Push::Flush;
        }
        let payload = &frame[seg.hdr_len()..seg.ip_end];
        let end = self.end + payload.len();
        // `continues` checked that `end` is within the buffer.
        self.buf[self.end..end].copy_from_slice(payload);
        self.end = end;
        self.segments += 1;
        self.next_seq = seg.seq.wrapping_add(payload.len() as u32);
        self.next_ident = self.next_ident.wrapping_add(1);
        if seg.psh {
            self.buf[L4 + tcp_field::FLAGS] |= TCP_PSH;
        }
        self.closed = seg.psh || payload.len() < self.gso_size;
        Push::Merged
    }

    /// Starts a super-frame with `frame`, which fits in the buffer.
    fn start(&mut self, frame: &[u8], seg: Segment) -> Push {
        self.buf[..frame.len()].copy_from_slice(frame);
        let ip = &frame[ETH_LEN..];
        let ident = be16(ip, ip_field::IDENT);
        self.segments = 1;
        self.first_len = frame.len();
        self.end = seg.ip_end;
        self.hdr_len = seg.hdr_len();
        self.gso_size = seg.payload_len();
        self.next_seq = seg.seq.wrapping_add(seg.payload_len() as u32);
        self.next_ident = ident.wrapping_add(1);
        self.closed = seg.psh;
        Push::Merged
    }

    /// `frame` (coalescable, described by `seg`) may be appended.
    fn continues(&self, frame: &[u8], seg: &Segment) -> bool {
        let payload_len = seg.payload_len();
        if self.closed
            || seg.hdr_len() != self.hdr_len
            || seg.seq != self.next_seq
            || payload_len > self.gso_size
            || self.end - ETH_LEN + payload_len > MAX_IP_LEN
            || self.end + payload_len > self.buf.len()
        {
            return false;
        }
        let (a, b) = (&self.buf[..self.hdr_len], &frame[..self.hdr_len]);
        let (ip_a, ip_b) = (&a[ETH_LEN..L4], &b[ETH_LEN..L4]);
        let (tcp_a, tcp_b) = (&a[L4..], &b[L4..]);
        let same = |x: &[u8], y: &[u8], r: core::ops::Range<usize>| x[r.clone()] == y[r];
        if a[..ETH_LEN] != b[..ETH_LEN]
            || !same(ip_a, ip_b, ip_field::HEAD)
            || !same(ip_a, ip_b, ip_field::MIDDLE)
            || !same(ip_a, ip_b, ip_field::ADDRS)
            || !same(tcp_a, tcp_b, tcp_field::PORTS)
            || !same(tcp_a, tcp_b, tcp_field::ACK)
            || !same(tcp_a, tcp_b, tcp_field::WINDOW)
            || !same(tcp_a, tcp_b, tcp_field::URGENT)
            // Options, timestamps included (the data offsets are equal).
            || !same(tcp_a, tcp_b, TCP_MIN_LEN..self.hdr_len - L4)
        {
            return false;
        }
        let dont_frag = ip_a[ip_field::FLG_OFF.start] & 0x40 != 0;
        let ident = be16(ip_b, ip_field::IDENT);
        dont_frag || ident == self.next_ident
    }

    /// The super-frame built so far and its vnet header, leaving the
    /// coalescer empty; `None` if it is empty.
    ///
    /// A single frame comes back unchanged (padding included) with a plain
    /// header. Several come back as one frame with the first one's headers,
    /// IP total length and checksum updated, PSH if the last segment had it,
    /// the TCP checksum field holding the folded pseudo-header sum (not
    /// inverted), and a `GSO_TCPV4` / `F_NEEDS_CSUM` vnet header whose
    /// `gso_size` is the first segment's payload length.
    pub fn take(&mut self) -> Option<(vnet::Header, &[u8])> {
        let segments = core::mem::replace(&mut self.segments, 0);
        match segments {
            0 => None,
            1 => Some((vnet::Header::default(), &self.buf[..self.first_len])),
            _ => {
                let ip_len = self.end - ETH_LEN;
                let tcp_len = ip_len - IP_LEN;
                let b = &mut self.buf[..self.end];
                // `continues` kept `ip_len` ≤ 65 535.
                b[ETH_LEN + ip_field::LENGTH.start..ETH_LEN + ip_field::LENGTH.end]
                    .copy_from_slice(&(ip_len as u16).to_be_bytes());
                b[ETH_LEN + ip_field::CHECKSUM.start..ETH_LEN + ip_field::CHECKSUM.end]
                    .copy_from_slice(&[0, 0]);
                let c = checksum::checksum(&b[ETH_LEN..L4]);
                b[ETH_LEN + ip_field::CHECKSUM.start..ETH_LEN + ip_field::CHECKSUM.end]
                    .copy_from_slice(&c.to_be_bytes());
                let (src, dst) = (addr(&b[ETH_LEN + 12..]), addr(&b[ETH_LEN + 16..]));
                let pseudo = checksum::fold(checksum::pseudo_header(
                    src,
                    dst,
                    ipv4::PROTO_TCP,
                    tcp_len as u16,
                ));
                b[L4 + tcp_field::CHECKSUM.start..L4 + tcp_field::CHECKSUM.end]
                    .copy_from_slice(&pseudo.to_be_bytes());
                // Header lengths are below 128 and `gso_size` below 65 536.
                let hdr = vnet::Header {
                    flags: vnet::F_NEEDS_CSUM,
                    gso_type: vnet::GSO_TCPV4,
                    hdr_len: self.hdr_len as u16,
                    gso_size: self.gso_size as u16,
                    csum_start: L4 as u16,
                    csum_offset: tcp_field::CHECKSUM.start as u16,
                };
                Some((hdr, &self.buf[..self.end]))
            }
        }
    }

    /// Nothing has been pushed since the last [`Coalescer::take`].
    pub fn is_empty(&self) -> bool {
        self.segments == 0
    }

    /// Frames merged into the current super-frame.
    pub fn segments(&self) -> usize {
        self.segments
    }
}

#[path = "gro_udp.rs"]
mod udp;
pub use udp::{UdpCoalescer, MAX_DATAGRAMS};

#[cfg(test)]
#[path = "gro_test_support.rs"]
mod test_support;

#[cfg(test)]
#[path = "gro_tests.rs"]
mod tests;
