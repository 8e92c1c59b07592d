//! IPv4 headers (RFC 791): a checked view, the fields the forwarding path
//! touches, in-place TTL decrement with an incremental checksum update, and a
//! header builder for generated packets (ICMP replies and errors).

use core::net::Ipv4Addr;

use crate::{checksum, Error};

/// Length of a header without options.
pub const MIN_HEADER_LEN: usize = 20;
/// Protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// Protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// Protocol number of UDP.
pub const PROTO_UDP: u8 = 17;

mod field {
    use core::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLG_OFF: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A view of an IPv4 packet over the caller's bytes.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buf` after the strict checks a router makes before forwarding:
    /// version 4, IHL ≥ 5, the header and the total length within `buf`, total
    /// length ≥ header length, and a correct header checksum. Bytes after the
    /// total length (Ethernet padding) are allowed and ignored.
    pub fn new_checked(buf: T) -> Result<Self, Error> {
        let b = buf.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(Error::Malformed);
        }
        let hl = usize::from(b[field::VER_IHL] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([b[2], b[3]]));
        if hl < MIN_HEADER_LEN || total < hl {
            return Err(Error::Malformed);
        }
        if b.len() < hl || b.len() < total {
            return Err(Error::Truncated);
        }
        if checksum::checksum(&b[..hl]) != 0 {
            return Err(Error::Checksum);
        }
        Ok(Packet { buf })
    }

    /// Wraps `buf` without any check. Accessors may panic on short buffers:
    /// only for bytes this program just wrote.
    pub fn new_unchecked(buf: T) -> Self {
        Packet { buf }
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    fn u16_at(&self, r: core::ops::Range<usize>) -> u16 {
        let b = &self.b()[r];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Header length in bytes.
    pub fn header_len(&self) -> usize {
        usize::from(self.b()[field::VER_IHL] & 0x0f) * 4
    }

    /// Type of service / DSCP+ECN byte.
    pub fn tos(&self) -> u8 {
        self.b()[field::TOS]
    }

    /// Total length (header + payload).
    pub fn total_len(&self) -> usize {
        usize::from(self.u16_at(field::LENGTH))
    }

    /// Identification.
    pub fn ident(&self) -> u16 {
        self.u16_at(field::IDENT)
    }

    /// The don't-fragment flag.
    pub fn dont_frag(&self) -> bool {
        self.u16_at(field::FLG_OFF) & FLAG_DF != 0
    }

    /// This packet is a fragment (MF set or a non-zero offset): no L4 header
    /// can be assumed after the IP header.
    pub fn is_fragment(&self) -> bool {
        self.u16_at(field::FLG_OFF) & (FLAG_MF | OFFSET_MASK) != 0
    }

    /// The first fragment or an unfragmented packet: the L4 header is here.
    pub fn is_first_fragment(&self) -> bool {
        self.u16_at(field::FLG_OFF) & OFFSET_MASK == 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.b()[field::TTL]
    }

    /// Protocol of the payload.
    pub fn protocol(&self) -> u8 {
        self.b()[field::PROTOCOL]
    }

    /// Header checksum as stored.
    pub fn checksum(&self) -> u16 {
        self.u16_at(field::CHECKSUM)
    }

    /// Source address.
    pub fn src(&self) -> Ipv4Addr {
        let b = &self.b()[field::SRC];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// Destination address.
    pub fn dst(&self) -> Ipv4Addr {
        let b = &self.b()[field::DST];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// The payload, bounded by the total length (padding excluded).
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len()..self.total_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Decrements the TTL by one and patches the checksum incrementally.
    /// The caller has checked `ttl() > 1`.
    pub fn decrement_ttl(&mut self) {
        let b = self.buf.as_mut();
        let old = u16::from_be_bytes([b[field::TTL], b[field::PROTOCOL]]);
        b[field::TTL] = b[field::TTL].wrapping_sub(1);
        let new = u16::from_be_bytes([b[field::TTL], b[field::PROTOCOL]]);
        let c = checksum::update16(u16::from_be_bytes([b[10], b[11]]), old, new);
        b[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }

    /// The payload, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (hl, tl) = (self.header_len(), self.total_len());
        &mut self.buf.as_mut()[hl..tl]
    }
}

/// An IPv4 header without options, for building packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Payload protocol.
    pub protocol: u8,
    /// Payload length in bytes.
    pub payload_len: usize,
    /// Time to live.
    pub ttl: u8,
    /// Set the don't-fragment flag.
    pub dont_frag: bool,
}

impl Repr {
    /// Bytes [`Repr::emit`] writes.
    pub const fn buffer_len(&self) -> usize {
        MIN_HEADER_LEN
    }

    /// Writes a 20-byte header with its checksum into the front of `buf`.
    /// The identification is zero (as Linux does for DF packets it builds).
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), Error> {
        let total =
            u16::try_from(MIN_HEADER_LEN + self.payload_len).map_err(|_| Error::Malformed)?;
        let b = buf.get_mut(..MIN_HEADER_LEN).ok_or(Error::Truncated)?;
        b[field::VER_IHL] = 0x45;
        b[field::TOS] = 0;
        b[field::LENGTH].copy_from_slice(&total.to_be_bytes());
        b[field::IDENT].copy_from_slice(&[0, 0]);
        let flags = if self.dont_frag { FLAG_DF } else { 0 };
        b[field::FLG_OFF].copy_from_slice(&flags.to_be_bytes());
        b[field::TTL] = self.ttl;
        b[field::PROTOCOL] = self.protocol;
        b[field::CHECKSUM].copy_from_slice(&[0, 0]);
        b[field::SRC].copy_from_slice(&self.src.octets());
        b[field::DST].copy_from_slice(&self.dst.octets());
        let c = checksum::checksum(b);
        b[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
        Ok(())
    }
}

/// An IPv4 prefix such as 10.244.1.0/24.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Cidr {
    /// A prefix; host bits of `addr` are cleared. `None` if `prefix > 32`.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Cidr> {
        if prefix > 32 {
            return None;
        }
        Some(Cidr {
            addr: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        })
    }

    /// The network address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The network mask as an integer.
    pub fn mask(&self) -> u32 {
        mask(self.prefix)
    }

    /// `ip` is inside this prefix.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }

    /// The all-ones host address of the prefix.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    /// The `n`th address of the prefix (.1 is the gateway by convention), or
    /// `None` if it falls outside.
    pub fn nth(&self, n: u32) -> Option<Ipv4Addr> {
        if n > !self.mask() {
            return None;
        }
        Some(Ipv4Addr::from(u32::from(self.addr) + n))
    }
}

impl core::fmt::Display for Cidr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

/// Where an unfinished (partial) L4 checksum sits: what a sender that
/// offloads the checksum (Linux's `CHECKSUM_PARTIAL`, a vnet header's
/// `NEEDS_CSUM`) leaves for the device to complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unfinished {
    /// Where summing starts: the L4 header, from the start of the IP packet.
    pub start: usize,
    /// Where the checksum field is, from `start` (16 for TCP, 6 for UDP).
    pub offset: usize,
}

/// Whether the IPv4 TCP or UDP packet `ip` (its header at 0, exactly its
/// total length long) carries an unfinished L4 checksum: one whose field
/// holds the folded pseudo-header sum, not inverted, as a Linux sender
/// leaves it with `CHECKSUM_PARTIAL` (`~csum_tcpudp_magic(…)`) when the
/// device that should finish it is virtual (a veth) and the packet went
/// into a tunnel instead. O(1): the pseudo-header sum and one compare, the
/// payload is not read.
///
/// A complete checksum equals that value for about one packet in 2¹⁶;
/// such a packet is, byte for byte, also a valid unfinished one, and
/// finishing it writes the checksum it already had (the field is summed
/// with the data), so treating it as unfinished never breaks a valid
/// packet. What is lost is only that a receiver told to trust it
/// (`NEEDS_CSUM` on local delivery) does not verify it: a packet corrupted
/// on the way whose field happens to equal its pseudo-header sum is
/// accepted, where a full check would have caught it (one in 2¹⁶ of the
/// corrupted ones, besides the one in 2¹⁶ that any 16-bit checksum lets
/// through).
///
/// `None` for other protocols, fragments, an L4 header shorter than its
/// minimum, or a field that is anything else (a UDP checksum of 0, "none",
/// is never a pseudo-header sum: that sum is never 0).
pub fn unfinished_l4(ip: &[u8]) -> Option<Unfinished> {
    let ver_ihl = *ip.first()?;
    let hl = usize::from(ver_ihl & 0x0f) * 4;
    let h = ip.get(..hl.max(20))?;
    let (offset, min_len) = match h[9] {
        PROTO_TCP => (16, 20),
        PROTO_UDP => (6, 8),
        _ => return None,
    };
    // More fragments or a fragment offset: not a whole L4 packet.
    if ver_ihl >> 4 != 4 || hl < 20 || u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 {
        return None;
    }
    let l4_len = ip.len().checked_sub(hl)?;
    if l4_len < min_len || l4_len > usize::from(u16::MAX) {
        return None;
    }
    let field = ip.get(hl + offset..hl + offset + 2)?;
    let field = u16::from_be_bytes([field[0], field[1]]);
    let addr = |r: core::ops::Range<usize>| {
        Ipv4Addr::new(h[r.start], h[r.start + 1], h[r.start + 2], h[r.start + 3])
    };
    let pseudo = checksum::fold(checksum::pseudo_header(
        addr(12..16),
        addr(16..20),
        h[9],
        l4_len as u16,
    ));
    (field == pseudo).then_some(Unfinished { start: hl, offset })
}

#[cfg(test)]
mod tests {
    use super::*;

    // ICMP echo request 10.244.1.3 -> 10.244.2.3, DF, TTL 64, 84 bytes total,
    // header as a Linux pod emits it (payload elided to the ICMP header).
    static HDR: [u8; 28] = [
        0x45, 0x00, 0x00, 0x1c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x01, 0x00, 0x00, 10, 244, 1, 3, 10,
        244, 2, 3, 0x08, 0x00, 0xf7, 0xff, 0x00, 0x00, 0x00, 0x00,
    ];

    fn fixture() -> [u8; 28] {
        let mut b = HDR;
        let c = checksum::checksum(&b[..20]);
        b[10..12].copy_from_slice(&c.to_be_bytes());
        b
    }

    #[test]
    fn deconstruct() {
        let b = fixture();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 28);
        assert_eq!(p.ident(), 0x1234);
        assert!(p.dont_frag());
        assert!(!p.is_fragment());
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), PROTO_ICMP);
        assert_eq!(p.src(), Ipv4Addr::new(10, 244, 1, 3));
        assert_eq!(p.dst(), Ipv4Addr::new(10, 244, 2, 3));
        assert_eq!(p.payload().len(), 8);
    }

    #[test]
    fn padding_is_ignored() {
        let mut v = fixture().to_vec();
        v.extend_from_slice(&[0; 18]); // Ethernet minimum-size padding
        let p = Packet::new_checked(&v[..]).unwrap();
        assert_eq!(p.payload().len(), 8);
    }

    #[test]
    fn decrement_ttl_keeps_checksum_valid() {
        let mut b = fixture();
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.decrement_ttl();
        assert_eq!(p.ttl(), 63);
        assert!(Packet::new_checked(&b[..]).is_ok());
    }

    #[test]
    fn rejects_every_malformed_case() {
        let good = fixture();
        assert_eq!(
            Packet::new_checked(&good[..19]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            Packet::new_checked(&good[..27]).unwrap_err(),
            Error::Truncated
        ); // total says 28
        let mut b = good;
        b[0] = 0x65; // version 6
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::Malformed);
        let mut b = good;
        b[0] = 0x44; // IHL 4
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::Malformed);
        let mut b = good;
        b[0] = 0x46; // IHL 6 but the buffer's header bytes do not checksum
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::Checksum);
        let mut b = good;
        b[3] = 16; // total length shorter than the header
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::Malformed);
        let mut b = good;
        b[15] ^= 1; // corrupt the source address
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::Checksum);
    }

    #[test]
    fn emit_round_trip() {
        let r = Repr {
            src: Ipv4Addr::new(10, 244, 1, 1),
            dst: Ipv4Addr::new(10, 244, 1, 3),
            protocol: PROTO_ICMP,
            payload_len: 8,
            ttl: 64,
            dont_frag: false,
        };
        let mut b = [0u8; 28];
        r.emit(&mut b).unwrap();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(
            (p.src(), p.dst(), p.protocol(), p.ttl(), p.total_len()),
            (r.src, r.dst, 1, 64, 28)
        );
        assert!(!p.dont_frag());
        let eth = etherparse::Ipv4HeaderSlice::from_slice(&b).unwrap();
        assert_eq!(
            eth.header_checksum(),
            eth.to_header().calc_header_checksum()
        );
    }

    #[test]
    fn fragments() {
        let mut b = fixture();
        b[6] = 0x20; // MF
        b[10] = 0;
        b[11] = 0;
        let c = checksum::checksum(&b[..20]);
        b[10..12].copy_from_slice(&c.to_be_bytes());
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(p.is_fragment());
        assert!(p.is_first_fragment());
    }

    #[test]
    fn cidr() {
        let c = Cidr::new(Ipv4Addr::new(10, 244, 1, 77), 24).unwrap();
        assert_eq!(c.addr(), Ipv4Addr::new(10, 244, 1, 0));
        assert!(c.contains(Ipv4Addr::new(10, 244, 1, 255)));
        assert!(!c.contains(Ipv4Addr::new(10, 244, 2, 0)));
        assert_eq!(c.broadcast(), Ipv4Addr::new(10, 244, 1, 255));
        assert_eq!(c.nth(1), Some(Ipv4Addr::new(10, 244, 1, 1)));
        assert_eq!(c.nth(256), None);
        assert_eq!(c.to_string(), "10.244.1.0/24");
        assert!(Cidr::new(Ipv4Addr::UNSPECIFIED, 33).is_none());
        assert!(Cidr::new(Ipv4Addr::UNSPECIFIED, 0)
            .unwrap()
            .contains(Ipv4Addr::BROADCAST));
    }
}
