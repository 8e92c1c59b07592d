//! Address and port translation of IPv4 TCP/UDP packets in place, with
//! incremental checksum updates (RFC 1624), and of the packet an ICMP error
//! quotes. No allocation, no I/O; every length is checked before a write.
//!
//! What the switch's Service NAT (DNAT to a backend, SNAT to the node, and
//! the reverse on replies) does to the bytes. The decision of what to write
//! is the caller's.

use core::net::{Ipv4Addr, SocketAddrV4};

use crate::checksum::{self, udp_wire, update16, update32, update_partial32};
use crate::{icmp, ipv4, Error};

/// Where a TCP/UDP header keeps its checksum.
fn l4_check_at(proto: u8) -> Option<usize> {
    match proto {
        ipv4::PROTO_TCP => Some(16),
        ipv4::PROTO_UDP => Some(6),
        _ => None,
    }
}

/// The transport endpoints of an IPv4 TCP/UDP packet (or of the start of a
/// quoted one): source and destination, protocol. `Unsupported` for other
/// protocols and for non-first fragments (no ports), `Truncated` if the
/// ports are not there.
pub fn endpoints(ip: &[u8]) -> Result<(u8, SocketAddrV4, SocketAddrV4), Error> {
    let p = ipv4::Packet::new_unchecked(ip);
    if ip.len() < ipv4::MIN_HEADER_LEN {
        return Err(Error::Truncated);
    }
    let hl = p.header_len();
    let proto = p.protocol();
    if l4_check_at(proto).is_none() || (p.is_fragment() && !p.is_first_fragment()) {
        return Err(Error::Unsupported);
    }
    let ports = ip.get(hl..hl + 4).ok_or(Error::Truncated)?;
    let sp = u16::from_be_bytes([ports[0], ports[1]]);
    let dp = u16::from_be_bytes([ports[2], ports[3]]);
    Ok((
        proto,
        SocketAddrV4::new(p.src(), sp),
        SocketAddrV4::new(p.dst(), dp),
    ))
}

/// How the L4 checksum of the packet being rewritten is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4Checksum {
    /// A complete checksum: updated for every address and port change (a
    /// UDP checksum of 0, "none", stays 0).
    Full,
    /// A partial checksum left for the device to finish (`NEEDS_CSUM`): it
    /// holds the pseudo-header sum, so it is updated for address changes
    /// only.
    Partial,
    /// Not there (a quoted header cut short): left alone.
    Absent,
}

/// Rewrites the IPv4 TCP/UDP packet `ip` (its header at 0) so that it goes
/// from `src` to `dst`, updating the IP header checksum and the L4 checksum
/// as `csum` says. Fields that do not change are not touched.
/// `Truncated` if the L4 header (or, unless `Absent`, its checksum) is not
/// within `ip`; `Unsupported` for another protocol.
pub fn rewrite(
    ip: &mut [u8],
    src: SocketAddrV4,
    dst: SocketAddrV4,
    csum: L4Checksum,
) -> Result<(), Error> {
    if ip.len() < ipv4::MIN_HEADER_LEN {
        return Err(Error::Truncated);
    }
    let (hl, proto) = {
        let p = ipv4::Packet::new_unchecked(&*ip);
        (p.header_len(), p.protocol())
    };
    let check_at = hl + l4_check_at(proto).ok_or(Error::Unsupported)?;
    let need = match csum {
        L4Checksum::Absent => hl + 4,
        _ => check_at + 2,
    };
    if ip.len() < need || hl < ipv4::MIN_HEADER_LEN {
        return Err(Error::Truncated);
    }
    let rd16 = |b: &[u8], at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
    let rd32 = |b: &[u8], at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let old_src = rd32(ip, 12);
    let old_dst = rd32(ip, 16);
    let old_sp = rd16(ip, hl);
    let old_dp = rd16(ip, hl + 2);
    let (new_src, new_dst) = (u32::from(*src.ip()), u32::from(*dst.ip()));
    let (new_sp, new_dp) = (src.port(), dst.port());

    let mut ipc = rd16(ip, 10);
    let mut l4c = if csum == L4Checksum::Absent {
        0
    } else {
        rd16(ip, check_at)
    };
    // UDP's "no checksum" stays so; an absent one is not written.
    let skip_l4 = csum == L4Checksum::Absent
        || (proto == ipv4::PROTO_UDP && csum == L4Checksum::Full && l4c == 0);
    for (at, old, new) in [(12, old_src, new_src), (16, old_dst, new_dst)] {
        if old == new {
            continue;
        }
        ipc = update32(ipc, old, new);
        if !skip_l4 {
            l4c = match csum {
                L4Checksum::Partial => update_partial32(l4c, old, new),
                _ => update32(l4c, old, new),
            };
        }
        ip[at..at + 4].copy_from_slice(&new.to_be_bytes());
    }
    for (at, old, new) in [(hl, old_sp, new_sp), (hl + 2, old_dp, new_dp)] {
        if old == new {
            continue;
        }
        if !skip_l4 && csum == L4Checksum::Full {
            l4c = update16(l4c, old, new);
        }
        ip[at..at + 2].copy_from_slice(&new.to_be_bytes());
    }
    ip[10..12].copy_from_slice(&ipc.to_be_bytes());
    if !skip_l4 {
        if proto == ipv4::PROTO_UDP && csum == L4Checksum::Full {
            l4c = udp_wire(l4c);
        }
        ip[check_at..check_at + 2].copy_from_slice(&l4c.to_be_bytes());
    }
    Ok(())
}

/// Whether the IPv4 packet `ip` is an ICMP error that quotes a packet
/// (destination unreachable, time exceeded), and where the quote starts.
pub fn icmp_error_quote(ip: &[u8]) -> Option<usize> {
    let p = ipv4::Packet::new_checked(ip).ok()?;
    if p.protocol() != ipv4::PROTO_ICMP || p.is_fragment() {
        return None;
    }
    let hl = p.header_len();
    let t = *ip.get(hl)?;
    if t != icmp::TYPE_DEST_UNREACHABLE && t != icmp::TYPE_TIME_EXCEEDED {
        return None;
    }
    let at = hl + icmp::HEADER_LEN;
    (ip.len() >= at + ipv4::MIN_HEADER_LEN + 4).then_some(at)
}

/// Translates an ICMP error (`ip`, the whole IPv4 packet, quoting at
/// `quote`, see [`icmp_error_quote`]): the quoted packet becomes one from
/// `inner_src` to `inner_dst` (its IP checksum updated, its L4 checksum
/// too when quoted whole enough), the outer destination `outer_dst`, the
/// outer source `outer_src`; the ICMP checksum is computed afresh (the
/// message is at most 576 bytes).
pub fn rewrite_icmp_error(
    ip: &mut [u8],
    quote: usize,
    outer_src: Ipv4Addr,
    outer_dst: Ipv4Addr,
    inner_src: SocketAddrV4,
    inner_dst: SocketAddrV4,
) -> Result<(), Error> {
    let hl = ipv4::Packet::new_checked(&*ip)?.header_len();
    let total = ip.len();
    if quote < hl + icmp::HEADER_LEN || quote > total {
        return Err(Error::Truncated);
    }
    {
        let inner = &mut ip[quote..];
        let ihl = usize::from(inner.first().ok_or(Error::Truncated)? & 0x0f) * 4;
        let proto = *inner.get(9).ok_or(Error::Truncated)?;
        let check_at = ihl + l4_check_at(proto).ok_or(Error::Unsupported)?;
        let csum = if inner.len() >= check_at + 2 {
            L4Checksum::Full
        } else {
            L4Checksum::Absent
        };
        rewrite(inner, inner_src, inner_dst, csum)?;
    }
    let rd32 = |b: &[u8], at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let mut ipc = u16::from_be_bytes([ip[10], ip[11]]);
    for (at, new) in [(12, outer_src), (16, outer_dst)] {
        let (old, new) = (rd32(ip, at), u32::from(new));
        if old != new {
            ipc = update32(ipc, old, new);
            ip[at..at + 4].copy_from_slice(&new.to_be_bytes());
        }
    }
    ip[10..12].copy_from_slice(&ipc.to_be_bytes());
    let msg = &mut ip[hl..];
    msg[2..4].copy_from_slice(&[0, 0]);
    let c = checksum::checksum(msg);
    msg[2..4].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

#[cfg(test)]
#[path = "nat_tests.rs"]
mod tests;
