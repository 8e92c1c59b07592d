//! ICMPv4 (RFC 792): echo replies and the two errors a router sends — time
//! exceeded and fragmentation needed — built in place over the packet that
//! caused them.

use core::net::Ipv4Addr;

use crate::{checksum, ipv4, Error};

/// Echo reply.
pub const TYPE_ECHO_REPLY: u8 = 0;
/// Destination unreachable.
pub const TYPE_DEST_UNREACHABLE: u8 = 3;
/// Code of destination unreachable: fragmentation needed and DF set.
pub const CODE_FRAG_NEEDED: u8 = 4;
/// Code of destination unreachable: port unreachable (what a rejected
/// connection gets, as kube-proxy's REJECT sends for a Service with no
/// endpoints).
pub const CODE_PORT_UNREACHABLE: u8 = 3;
/// Echo request.
pub const TYPE_ECHO_REQUEST: u8 = 8;
/// Time exceeded.
pub const TYPE_TIME_EXCEEDED: u8 = 11;
/// Code of time exceeded: TTL exceeded in transit.
pub const CODE_TTL_EXCEEDED: u8 = 0;
/// Length of the ICMP header.
pub const HEADER_LEN: usize = 8;
/// Largest ICMP error Linux sends (RFC 1812 4.3.2.3: as much of the original
/// as fits in 576 bytes).
pub const MAX_ERROR_LEN: usize = 576;
/// TTL of the packets this router originates (Linux's default).
pub const REPLY_TTL: u8 = 64;

/// Whether `p` may be answered with an ICMP error (RFC 1122 3.2.2): not an
/// ICMP error itself, not a non-first fragment, not from or to a broadcast,
/// multicast, unspecified or loopback address.
pub fn may_send_error<T: AsRef<[u8]>>(p: &ipv4::Packet<T>) -> bool {
    if !p.is_first_fragment() {
        return false;
    }
    let bad =
        |a: Ipv4Addr| a.is_broadcast() || a.is_multicast() || a.is_unspecified() || a.is_loopback();
    if bad(p.src()) || bad(p.dst()) {
        return false;
    }
    if p.protocol() == ipv4::PROTO_ICMP {
        // Only queries (echo and friends) may be answered with an error.
        return match p.payload().first() {
            Some(&t) => matches!(
                t,
                TYPE_ECHO_REQUEST | TYPE_ECHO_REPLY | 13 | 14 | 15 | 16 | 17 | 18
            ),
            None => false,
        };
    }
    true
}

/// Turns the IPv4 echo request at the front of `ip` into its reply, in place:
/// swaps the addresses, sets TTL to [`REPLY_TTL`], the type to echo reply,
/// and fixes both checksums. The identifier, sequence and data are kept.
/// Returns [`Error::Unsupported`] when the packet is not an unfragmented echo
/// request, [`Error::Checksum`] when its ICMP checksum is wrong.
pub fn echo_reply_in_place(ip: &mut [u8]) -> Result<(), Error> {
    let (hl, tl) = {
        let p = ipv4::Packet::new_checked(&ip[..])?;
        if p.protocol() != ipv4::PROTO_ICMP || p.is_fragment() {
            return Err(Error::Unsupported);
        }
        let icmp = p.payload();
        if icmp.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if icmp[0] != TYPE_ECHO_REQUEST || icmp[1] != 0 {
            return Err(Error::Unsupported);
        }
        if checksum::checksum(icmp) != 0 {
            return Err(Error::Checksum);
        }
        (p.header_len(), p.total_len())
    };
    let (src, dst) = {
        let p = ipv4::Packet::new_unchecked(&ip[..]);
        (p.src(), p.dst())
    };
    ip[12..16].copy_from_slice(&dst.octets());
    ip[16..20].copy_from_slice(&src.octets());
    ip[8] = REPLY_TTL;
    ip[10..12].copy_from_slice(&[0, 0]);
    let c = checksum::checksum(&ip[..hl]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let icmp = &mut ip[hl..tl];
    let old = u16::from_be_bytes([icmp[0], icmp[1]]);
    icmp[0] = TYPE_ECHO_REPLY;
    let new = u16::from_be_bytes([icmp[0], icmp[1]]);
    let c = checksum::update16(u16::from_be_bytes([icmp[2], icmp[3]]), old, new);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// An ICMP error to send about an offending packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorRepr {
    /// ICMP type.
    pub icmp_type: u8,
    /// ICMP code.
    pub code: u8,
    /// The second header word: the next-hop MTU in its low 16 bits for
    /// fragmentation needed (RFC 1191), zero otherwise.
    pub rest: u32,
    /// The address the error comes from (the router's).
    pub src: Ipv4Addr,
}

/// Builds, in place, an ICMP error about the IPv4 packet that starts at
/// `buf[at..]`: the error's IP header is written at `at`, followed by the ICMP
/// header and as much of the original packet as fits in
/// [`MAX_ERROR_LEN`] bytes (and in `buf`). It is addressed to the original
/// sender. The caller checked the original with [`may_send_error`].
/// Returns the length of the new IP packet.
pub fn error_in_place(buf: &mut [u8], at: usize, e: &ErrorRepr) -> Result<usize, Error> {
    let orig_src = {
        let p = ipv4::Packet::new_checked(buf.get(at..).ok_or(Error::Truncated)?)?;
        p.src()
    };
    let (orig_len, quote_at) = {
        let p = ipv4::Packet::new_unchecked(&buf[at..]);
        (p.total_len(), at + ipv4::MIN_HEADER_LEN + HEADER_LEN)
    };
    let room = buf.len().saturating_sub(quote_at);
    let quote = orig_len
        .min(MAX_ERROR_LEN - ipv4::MIN_HEADER_LEN - HEADER_LEN)
        .min(room);
    if quote < ipv4::MIN_HEADER_LEN + 8 {
        return Err(Error::NoRoom);
    }
    buf.copy_within(at..at + quote, quote_at);
    let icmp_len = HEADER_LEN + quote;
    ipv4::Repr {
        src: e.src,
        dst: orig_src,
        protocol: ipv4::PROTO_ICMP,
        payload_len: icmp_len,
        ttl: REPLY_TTL,
        dont_frag: false,
    }
    .emit(&mut buf[at..])?;
    let icmp = &mut buf[at + ipv4::MIN_HEADER_LEN..at + ipv4::MIN_HEADER_LEN + icmp_len];
    icmp[0] = e.icmp_type;
    icmp[1] = e.code;
    icmp[2..4].copy_from_slice(&[0, 0]);
    icmp[4..8].copy_from_slice(&e.rest.to_be_bytes());
    let c = checksum::checksum(icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    Ok(ipv4::MIN_HEADER_LEN + icmp_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{Icmpv4Type, IpNumber, PacketBuilder, SlicedPacket};

    fn echo_request(payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ipv4([10, 244, 2, 3], [10, 244, 1, 1], 63)
            .icmpv4_echo_request(0x1234, 7);
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v
    }

    #[test]
    fn echo_reply() {
        let mut p = echo_request(b"abcdefgh12345678");
        echo_reply_in_place(&mut p).unwrap();
        let s = SlicedPacket::from_ip(&p).unwrap();
        let ip = match s.net.unwrap() {
            etherparse::NetSlice::Ipv4(ip) => ip,
            _ => panic!(),
        };
        assert_eq!(ip.header().source(), [10, 244, 1, 1]);
        assert_eq!(ip.header().destination(), [10, 244, 2, 3]);
        assert_eq!(ip.header().ttl(), 64);
        assert_eq!(checksum::checksum(&p[..20]), 0);
        assert_eq!(checksum::checksum(&p[20..]), 0);
        match s.transport.unwrap() {
            etherparse::TransportSlice::Icmpv4(i) => {
                match i.icmp_type() {
                    Icmpv4Type::EchoReply(h) => assert_eq!((h.id, h.seq), (0x1234, 7)),
                    t => panic!("{t:?}"),
                }
                assert_eq!(i.payload(), b"abcdefgh12345678");
            }
            t => panic!("{t:?}"),
        }
    }

    #[test]
    fn echo_reply_rejects() {
        let mut p = echo_request(b"x");
        p[20] = TYPE_ECHO_REPLY; // not a request (and now a bad checksum too)
        assert_eq!(echo_reply_in_place(&mut p), Err(Error::Unsupported));
        let mut p = echo_request(b"xyz");
        p[30] ^= 0xff; // corrupt the data
        assert_eq!(echo_reply_in_place(&mut p), Err(Error::Checksum));
        let mut p = echo_request(b"");
        p.truncate(24);
        p[3] = 24;
        p[10] = 0;
        p[11] = 0;
        let c = checksum::checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(echo_reply_in_place(&mut p), Err(Error::Truncated));
    }

    fn udp_packet(len: usize, dst: [u8; 4]) -> Vec<u8> {
        let b = PacketBuilder::ipv4([10, 244, 1, 3], dst, 1).udp(40000, 5000);
        let mut v = Vec::new();
        b.write(&mut v, &vec![0x5a; len]).unwrap();
        v
    }

    #[test]
    fn frag_needed_quotes_the_original() {
        let orig = udp_packet(1400, [10, 244, 2, 3]);
        let mut buf = orig.clone();
        buf.resize(2000, 0);
        let e = ErrorRepr {
            icmp_type: TYPE_DEST_UNREACHABLE,
            code: CODE_FRAG_NEEDED,
            rest: 1450,
            src: Ipv4Addr::new(10, 244, 1, 1),
        };
        let n = error_in_place(&mut buf, 0, &e).unwrap();
        assert_eq!(n, MAX_ERROR_LEN);
        let s = SlicedPacket::from_ip(&buf[..n]).unwrap();
        let ip = match s.net.unwrap() {
            etherparse::NetSlice::Ipv4(ip) => ip,
            _ => panic!(),
        };
        assert_eq!(ip.header().source(), [10, 244, 1, 1]);
        assert_eq!(ip.header().destination(), [10, 244, 1, 3]);
        assert_eq!(ip.header().protocol(), IpNumber::ICMP);
        match s.transport.unwrap() {
            etherparse::TransportSlice::Icmpv4(i) => {
                assert_eq!(i.type_u8(), 3);
                assert_eq!(i.code_u8(), 4);
                assert_eq!(&i.bytes5to8()[2..4], &1450u16.to_be_bytes());
                assert_eq!(i.payload(), &orig[..548]);
            }
            t => panic!("{t:?}"),
        }
        assert_eq!(checksum::checksum(&buf[20..n]), 0);
    }

    #[test]
    fn small_original_is_quoted_whole_at_an_offset() {
        let orig = udp_packet(10, [10, 244, 2, 3]);
        let mut buf = vec![0xee; 16];
        buf.extend_from_slice(&orig);
        buf.resize(16 + orig.len() + 28, 0);
        let e = ErrorRepr {
            icmp_type: TYPE_TIME_EXCEEDED,
            code: 0,
            rest: 0,
            src: Ipv4Addr::new(10, 244, 1, 1),
        };
        let n = error_in_place(&mut buf, 16, &e).unwrap();
        assert_eq!(n, 28 + orig.len());
        assert_eq!(&buf[..16], &[0xee; 16]);
        assert_eq!(&buf[16 + 28..16 + n], &orig[..]);
        assert_eq!(buf[16 + 20], TYPE_TIME_EXCEEDED);
        assert_eq!(checksum::checksum(&buf[16..36]), 0);
    }

    #[test]
    fn no_room_is_an_error() {
        let orig = udp_packet(10, [10, 244, 2, 3]);
        let mut buf = orig.clone();
        buf.resize(40, 0); // the quote would not reach 28 bytes
        let e = ErrorRepr {
            icmp_type: TYPE_TIME_EXCEEDED,
            code: 0,
            rest: 0,
            src: Ipv4Addr::new(10, 244, 1, 1),
        };
        assert_eq!(error_in_place(&mut buf, 0, &e), Err(Error::NoRoom));
    }

    #[test]
    fn never_an_error_about_an_error_or_a_broadcast() {
        let mut buf = udp_packet(10, [10, 244, 2, 3]);
        buf.resize(200, 0);
        let e = ErrorRepr {
            icmp_type: TYPE_TIME_EXCEEDED,
            code: 0,
            rest: 0,
            src: Ipv4Addr::new(10, 244, 1, 1),
        };
        let n = error_in_place(&mut buf, 0, &e).unwrap();
        assert!(!may_send_error(
            &ipv4::Packet::new_checked(&buf[..n]).unwrap()
        ));
        let b = udp_packet(10, [255, 255, 255, 255]);
        assert!(!may_send_error(&ipv4::Packet::new_checked(&b[..]).unwrap()));
        let b = udp_packet(10, [10, 244, 2, 3]);
        assert!(may_send_error(&ipv4::Packet::new_checked(&b[..]).unwrap()));
        let ping = echo_request(b"x");
        assert!(may_send_error(
            &ipv4::Packet::new_checked(&ping[..]).unwrap()
        ));
    }
}
