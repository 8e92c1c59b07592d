//! Checksum fixers: a fuzz target applies them to a mutated frame (when
//! its input says so) so that the code behind the checksum checks is
//! reached, not only the checks.

use encap::checksum;

use crate::{addr, be16};

/// Recomputes the header checksum of the IPv4 header at the front of
/// `ip`, if it looks like one whose IHL lies within `ip`.
pub fn fix_ipv4(ip: &mut [u8]) {
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return;
    }
    let hl = usize::from(ip[0] & 0x0f) * 4;
    if hl < 20 || hl > ip.len() {
        return;
    }
    ip[10..12].fill(0);
    let c = checksum::checksum(&ip[..hl]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Recomputes the ICMP, TCP or UDP checksum of the IPv4 packet at the
/// front of `ip` (over its total length, cut to `ip`), then the header's.
pub fn fix_ipv4_and_l4(ip: &mut [u8]) {
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return;
    }
    let hl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(be16(ip, 2)).min(ip.len());
    if hl < 20 || total < hl {
        fix_ipv4(ip);
        return;
    }
    let (src, dst, proto) = (addr(&ip[12..16]), addr(&ip[16..20]), ip[9]);
    let l4 = &mut ip[hl..total];
    let n = l4.len();
    let at = match proto {
        1 if n >= 4 => Some((2, 0)),
        6 if n >= 18 => Some((16, checksum::pseudo_header(src, dst, 6, n as u16))),
        17 if n >= 8 => Some((6, checksum::pseudo_header(src, dst, 17, n as u16))),
        _ => None,
    };
    if let Some((at, pseudo)) = at {
        l4[at..at + 2].fill(0);
        let mut c = !checksum::fold(checksum::sum(pseudo, l4));
        if proto == 17 && c == 0 {
            c = 0xffff;
        }
        l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
    fix_ipv4(ip);
}

/// Leaves the TCP/UDP checksum of the IPv4 packet `ip` unfinished, as a
/// Linux sender with `CHECKSUM_PARTIAL` does (the folded pseudo-header sum,
/// not inverted), after [`fix_ipv4_and_l4`].
pub fn unfinish_l4(ip: &mut [u8]) {
    fix_ipv4_and_l4(ip);
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return;
    }
    let hl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(be16(ip, 2)).min(ip.len());
    if hl < 20 || total < hl {
        return;
    }
    let (src, dst, proto) = (addr(&ip[12..16]), addr(&ip[16..20]), ip[9]);
    let n = total - hl;
    let at = match proto {
        6 if n >= 18 => 16,
        17 if n >= 8 => 6,
        _ => return,
    };
    let p = checksum::fold(checksum::pseudo_header(src, dst, proto, n as u16));
    ip[hl + at..hl + at + 2].copy_from_slice(&p.to_be_bytes());
}

/// The same for the IPv4 packet behind an Ethernet header, if the
/// EtherType says IPv4.
pub fn fix_frame(frame: &mut [u8]) {
    if frame.len() >= 14 && frame[12..14] == [8, 0] {
        fix_ipv4_and_l4(&mut frame[14..]);
    }
}
