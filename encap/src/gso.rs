//! Software segmentation (GSO) of TCP/IPv4 and UDP/IPv4 super-packets, and
//! completion of partial checksums, for frames read from TAPs with offloads.
//!
//! A pod's TAP with `TUNSETOFFLOAD` CSUM|TSO4|USO4 hands the switch packets of
//! up to 64 KiB described by a vnet header ([`crate::vnet::Header`]). Before
//! such a packet leaves through the tunnel it is cut here into MTU-sized
//! packets written back to back, every one of the same length but the last,
//! so that one `sendmsg` with `UDP_SEGMENT = seg_len` sends them all.
//!
//! This module does what the kernel's `tcp_gso_segment`/`__udp_gso_segment`
//! and `skb_checksum_help` do, on the caller's bytes: no I/O, no allocation,
//! and nothing in a packet can make it panic. Like the kernel it recomputes
//! the headers' checksums without verifying the ones it was given: the
//! packet comes from a local pod whose stack left them partial or stale.

use crate::{checksum, ipv4, Error};

/// `gso_type`: TCP over IPv4 (`VIRTIO_NET_HDR_GSO_TCPV4`).
pub const GSO_TCPV4: u8 = 1;
/// `gso_type`: UDP segmentation, USO (`VIRTIO_NET_HDR_GSO_UDP_L4`).
pub const GSO_UDP_L4: u8 = 5;
/// Flag bit in `gso_type`: the TCP stream uses ECN, CWR may be set
/// (`VIRTIO_NET_HDR_GSO_ECN`).
pub const GSO_ECN: u8 = 0x80;

/// Length of a TCP header without options.
const TCP_MIN_HEADER_LEN: usize = 20;
/// Length of a UDP header.
const UDP_HEADER_LEN: usize = 8;

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// Offsets inside the IPv4 header.
mod ip_field {
    use core::ops::Range;
    pub const LENGTH: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 10..12;
}

/// Offsets inside the TCP header.
mod tcp_field {
    use core::ops::Range;
    pub const SEQ: Range<usize> = 4..8;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const CHECKSUM: Range<usize> = 16..18;
}

/// Offsets inside the UDP header.
mod udp_field {
    use core::ops::Range;
    pub const LENGTH: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
}

/// Completes a partial checksum as the kernel leaves it with
/// `CHECKSUM_PARTIAL` / `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the field at
/// `csum_start + csum_offset` holds the (non-inverted) pseudo-header sum; the
/// result is the inverted ones'-complement sum of `bytes[csum_start..]` (that
/// field included), written in place.
///
/// A result of 0 is written as 0xffff, as `skb_checksum_help` does: the two
/// are the same ones'-complement value for TCP, and UDP requires it.
///
/// Errors: the field does not fit in `bytes` ([`Error::Truncated`]), or
/// `csum_offset` is odd, which no protocol uses and which could not verify
/// ([`Error::Malformed`]).
pub fn complete_checksum(
    bytes: &mut [u8],
    csum_start: usize,
    csum_offset: usize,
) -> Result<(), Error> {
    if csum_offset & 1 != 0 {
        return Err(Error::Malformed);
    }
    let at = csum_start
        .checked_add(csum_offset)
        .ok_or(Error::Truncated)?;
    let end = at.checked_add(2).ok_or(Error::Truncated)?;
    if end > bytes.len() {
        return Err(Error::Truncated);
    }
    let c = finish(checksum::sum(0, &bytes[csum_start..]));
    bytes[at..end].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Result of a segmentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segments {
    /// Number of datagrams written.
    pub count: usize,
    /// Length of each datagram but the last (of the only one if `count` is
    /// 1): the `UDP_SEGMENT` size to send them with.
    pub seg_len: usize,
    /// Bytes written to `out`; the last datagram is `total_len - (count - 1)
    /// * seg_len` long, at most `seg_len`.
    pub total_len: usize,
}

impl Segments {
    /// The range in `out` of datagram `i`, or `None` past the last. A send
    /// too large for one `sendmsg` can be split at any datagram boundary.
    pub fn datagram(&self, i: usize) -> Option<core::ops::Range<usize>> {
        if i >= self.count {
            return None;
        }
        let start = i * self.seg_len;
        Some(start..(start + self.seg_len).min(self.total_len))
    }
}

/// The L4 protocols this module segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum L4 {
    Tcp,
    Udp,
}

/// Where the headers of a checked super-packet are.
#[derive(Debug, Clone, Copy)]
struct Layout {
    /// Start of the IPv4 header.
    l3: usize,
    /// IPv4 header length, options included.
    ip_hl: usize,
    /// TCP or UDP header length.
    l4_hl: usize,
    /// L4 payload bytes (bounded by the IP total length).
    payload_len: usize,
    /// Which L4 header follows the IP header.
    l4: L4,
}

impl Layout {
    /// Checks the IPv4 header at `pkt[l3..]` and the TCP or UDP header after it.
    fn parse(pkt: &[u8], l3: usize) -> Result<Layout, Error> {
        let ip = pkt.get(l3..).ok_or(Error::Truncated)?;
        if ip.len() < ipv4::MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if ip[0] >> 4 != 4 {
            return Err(Error::Malformed);
        }
        let ip_hl = usize::from(ip[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        if ip_hl < ipv4::MIN_HEADER_LEN || total < ip_hl {
            return Err(Error::Malformed);
        }
        if ip.len() < total {
            return Err(Error::Truncated);
        }
        // Lengths checked: the view's accessors cannot panic from here on.
        let view = ipv4::Packet::new_unchecked(ip);
        if view.is_fragment() {
            return Err(Error::Unsupported);
        }
        let (l4, l4_hl) = match view.protocol() {
            ipv4::PROTO_TCP => {
                if total < ip_hl + TCP_MIN_HEADER_LEN {
                    return Err(Error::Truncated);
                }
                let doff = usize::from(ip[ip_hl + tcp_field::DATA_OFF] >> 4) * 4;
                if doff < TCP_MIN_HEADER_LEN {
                    return Err(Error::Malformed);
                }
                (L4::Tcp, doff)
            }
            ipv4::PROTO_UDP => (L4::Udp, UDP_HEADER_LEN),
            _ => return Err(Error::Unsupported),
        };
        if total < ip_hl + l4_hl {
            return Err(Error::Truncated);
        }
        Ok(Layout {
            l3,
            ip_hl,
            l4_hl,
            payload_len: total - ip_hl - l4_hl,
            l4,
        })
    }

    /// Bytes copied in front of every segment's payload.
    fn hdr_len(&self) -> usize {
        self.l3 + self.ip_hl + self.l4_hl
    }

    /// The segmentation of this packet into payloads of at most `mss` bytes.
    fn segments(&self, mss: usize) -> Result<Segments, Error> {
        if mss == 0 {
            return Err(Error::Malformed);
        }
        let hdr = self.hdr_len();
        let count = self.payload_len.div_ceil(mss).max(1);
        let seg_len = hdr + self.payload_len.min(mss);
        // The payload is at most 64 KiB, so `count` is bounded; `hdr` is not
        // (the caller's prefix), hence the checked arithmetic.
        let total_len = (count - 1)
            .checked_mul(hdr)
            .and_then(|h| h.checked_add(hdr))
            .and_then(|h| h.checked_add(self.payload_len))
            .ok_or(Error::NoRoom)?;
        Ok(Segments {
            count,
            seg_len,
            total_len,
        })
    }
}

/// Splits the TCP/IPv4 packet at `pkt[l3..]` into segments of at most `mss`
/// TCP payload bytes, written back to back into `out`.
///
/// The bytes `pkt[..l3]` (tunnel prefix + inner Ethernet header) are copied
/// unchanged in front of every segment. Each segment gets the IP and TCP
/// headers (options included) of the original with: IP total length,
/// identification = original + i (wrapping), IP header checksum recomputed;
/// TCP sequence = original + i·mss; FIN and PSH only on the last segment, CWR
/// only on the first; a full TCP checksum (whatever the original field held).
/// Bytes after the IP total length (padding) are ignored. An empty payload
/// gives one segment.
///
/// Errors, with nothing written: not IPv4 or a bad IP/TCP header length
/// ([`Error::Malformed`]), not TCP or an IP fragment ([`Error::Unsupported`]),
/// headers or the total length beyond `pkt` ([`Error::Truncated`]), `mss` 0
/// ([`Error::Malformed`]), `out` too small ([`Error::NoRoom`]).
pub fn segment_tcp4(pkt: &[u8], l3: usize, mss: usize, out: &mut [u8]) -> Result<Segments, Error> {
    segment(pkt, l3, mss, out, L4::Tcp)
}

/// The same as [`segment_tcp4`] for UDP/IPv4 (USO, `GSO_UDP_L4`): each
/// segment is a complete UDP datagram of at most `mss` payload bytes with its
/// own UDP length and full checksum (0xffff if it computes to 0), and IP
/// identification = original + i. The original UDP length and checksum fields
/// are ignored; the IP total length bounds the payload.
pub fn segment_udp4(pkt: &[u8], l3: usize, mss: usize, out: &mut [u8]) -> Result<Segments, Error> {
    segment(pkt, l3, mss, out, L4::Udp)
}

/// How many bytes [`segment_tcp4`]/[`segment_udp4`] will write for this packet
/// (TCP or UDP, whichever it is), and in how many datagrams; the same errors
/// but [`Error::NoRoom`].
pub fn segmented_len(pkt: &[u8], l3: usize, mss: usize) -> Result<Segments, Error> {
    Layout::parse(pkt, l3)?.segments(mss)
}

/// The inverted, folded sum as it goes into a TCP or UDP header, with 0
/// written as 0xffff (RFC 768; equivalent for TCP).
fn finish(acc: u32) -> u16 {
    match !checksum::fold(acc) {
        0 => 0xffff,
        c => c,
    }
}

/// `checksum::sum` folded to 16 bits, so that several can be added without
/// overflowing a `u32`.
fn sum16(data: &[u8]) -> u32 {
    u32::from(checksum::fold(checksum::sum(0, data)))
}

fn segment(pkt: &[u8], l3: usize, mss: usize, out: &mut [u8], want: L4) -> Result<Segments, Error> {
    let layout = Layout::parse(pkt, l3)?;
    if layout.l4 != want {
        return Err(Error::Unsupported);
    }
    let segs = layout.segments(mss)?;
    let out = out.get_mut(..segs.total_len).ok_or(Error::NoRoom)?;

    let hdr_len = layout.hdr_len();
    let l4_at = l3 + layout.ip_hl;
    let hdr = &pkt[..hdr_len];
    let payload = &pkt[hdr_len..hdr_len + layout.payload_len];
    let ip = &hdr[l3..l4_at];
    let l4 = &hdr[l4_at..];
    let view = ipv4::Packet::new_unchecked(ip);
    let (src, dst, ident0) = (view.src(), view.dst(), view.ident());

    // Sums of the header words every segment shares, computed once.
    // IPv4: everything but total length, identification and checksum.
    let ip_fixed = sum16(&ip[..ip_field::LENGTH.start])
        + sum16(&ip[ip_field::IDENT.end..ip_field::CHECKSUM.start])
        + sum16(&ip[ip_field::CHECKSUM.end..]);
    // L4: everything that does not change per segment.
    let l4_fixed = match want {
        // All but sequence number, data offset/flags word and checksum.
        L4::Tcp => {
            sum16(&l4[..tcp_field::SEQ.start])
                + sum16(&l4[tcp_field::SEQ.end..tcp_field::DATA_OFF])
                + sum16(&l4[tcp_field::FLAGS + 1..tcp_field::CHECKSUM.start])
                + sum16(&l4[tcp_field::CHECKSUM.end..])
        }
        // The ports.
        L4::Udp => sum16(&l4[..udp_field::LENGTH.start]),
    };
    // TCP: sequence number, data offset byte and flags of the original.
    let (seq0, data_off, flags0) = match want {
        L4::Tcp => (
            u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]),
            l4[tcp_field::DATA_OFF],
            l4[tcp_field::FLAGS],
        ),
        L4::Udp => (0, 0, 0),
    };
    let proto = view.protocol();

    let mut rest = payload;
    let mut seq = seq0;
    for (i, seg) in out.chunks_mut(segs.seg_len).enumerate() {
        let take = rest.len().min(mss);
        let (chunk, tail) = rest.split_at(take);
        rest = tail;
        let (h, p) = seg.split_at_mut(hdr_len);
        // By construction `seg` is `hdr_len + take` bytes long.
        h.copy_from_slice(hdr);
        p.copy_from_slice(chunk);

        // Lengths fit: each segment is no longer than the original packet.
        let l4_len = (layout.l4_hl + take) as u16;
        let ip_len = (layout.ip_hl + layout.l4_hl + take) as u16;
        let ident = ident0.wrapping_add(i as u16);
        let ip_sum = ip_fixed + u32::from(ip_len) + u32::from(ident);
        let (ip_out, l4_out) = h[l3..].split_at_mut(layout.ip_hl);
        ip_out[ip_field::LENGTH].copy_from_slice(&ip_len.to_be_bytes());
        ip_out[ip_field::IDENT].copy_from_slice(&ident.to_be_bytes());
        ip_out[ip_field::CHECKSUM].copy_from_slice(&(!checksum::fold(ip_sum)).to_be_bytes());

        let pseudo = u32::from(checksum::fold(checksum::pseudo_header(
            src, dst, proto, l4_len,
        )));
        let acc = l4_fixed + pseudo + sum16(p);
        match want {
            L4::Tcp => {
                let mut flags = flags0;
                if !rest.is_empty() {
                    flags &= !(TCP_FIN | TCP_PSH);
                }
                if i > 0 {
                    flags &= !TCP_CWR;
                }
                l4_out[tcp_field::SEQ].copy_from_slice(&seq.to_be_bytes());
                l4_out[tcp_field::FLAGS] = flags;
                let acc = acc
                    + (seq >> 16)
                    + (seq & 0xffff)
                    + u32::from(u16::from_be_bytes([data_off, flags]));
                // TCP sends 0 as 0: no mangling, as the kernel does.
                let c = !checksum::fold(acc);
                l4_out[tcp_field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
                seq = seq.wrapping_add(take as u32);
            }
            L4::Udp => {
                l4_out[udp_field::LENGTH].copy_from_slice(&l4_len.to_be_bytes());
                // The length counts twice: in the header and in the pseudo-header.
                let c = finish(acc + u32::from(l4_len));
                l4_out[udp_field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
            }
        }
    }
    Ok(segs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{
        Ipv4HeaderSlice, PacketBuilder, TcpHeaderSlice, TcpOptionElement, UdpHeaderSlice,
    };

    const SRC: [u8; 4] = [10, 244, 1, 3];
    const DST: [u8; 4] = [10, 244, 2, 7];
    /// A fake VXLAN header (8) + inner Ethernet header (14).
    const PREFIX_LEN: usize = 22;
    const MSS: usize = 1410;
    /// Chosen so that identifications and sequence numbers wrap.
    const IDENT: u16 = 0xfffd;
    const SEQ: u32 = 0xffff_f000;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    fn prefix(n: usize) -> Vec<u8> {
        (0..n).map(|i| 0xa0 ^ i as u8).collect()
    }

    /// Sets the IP identification and makes the header checksum right again.
    fn set_ident(ip: &mut [u8], ident: u16) {
        ip[4..6].copy_from_slice(&ident.to_be_bytes());
        ip[10..12].copy_from_slice(&[0, 0]);
        let hl = usize::from(ip[0] & 0xf) * 4;
        let c = checksum::checksum(&ip[..hl]);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
    }

    fn tcp_packet(prefix_len: usize, payload: &[u8], cwr: bool) -> Vec<u8> {
        tcp_packet_seq(prefix_len, payload, cwr, SEQ)
    }

    /// `prefix_len` pattern bytes, then a TCP/IPv4 packet with timestamps,
    /// PSH|ACK|FIN (and CWR if `cwr`), sequence number `seq` and `payload`.
    fn tcp_packet_seq(prefix_len: usize, payload: &[u8], cwr: bool, seq: u32) -> Vec<u8> {
        let mut b = PacketBuilder::ipv4(SRC, DST, 63)
            .tcp(40000, 5201, seq, 502)
            .options(&[
                TcpOptionElement::Noop,
                TcpOptionElement::Noop,
                TcpOptionElement::Timestamp(0x1234_5678, 0x9abc_def0),
            ])
            .unwrap()
            .psh()
            .ack(0x0102_0304)
            .fin();
        if cwr {
            b = b.cwr();
        }
        let mut v = prefix(prefix_len);
        b.write(&mut v, payload).unwrap();
        set_ident(&mut v[prefix_len..], IDENT);
        v
    }

    fn udp_packet(prefix_len: usize, payload: &[u8]) -> Vec<u8> {
        let mut v = prefix(prefix_len);
        PacketBuilder::ipv4(SRC, DST, 63)
            .udp(40000, 4789)
            .write(&mut v, payload)
            .unwrap();
        set_ident(&mut v[prefix_len..], IDENT);
        v
    }

    /// Checks the IP header of datagram `i` and returns it with the L4 bytes.
    fn check_ip<'a>(
        orig: &[u8],
        l3: usize,
        i: usize,
        d: &'a [u8],
    ) -> (Ipv4HeaderSlice<'a>, &'a [u8]) {
        assert_eq!(d[..l3], orig[..l3], "prefix of segment {i}");
        let ip = Ipv4HeaderSlice::from_slice(&d[l3..]).unwrap();
        let oip = Ipv4HeaderSlice::from_slice(&orig[l3..]).unwrap();
        assert_eq!(usize::from(ip.total_len()), d.len() - l3);
        assert_eq!(
            ip.identification(),
            oip.identification().wrapping_add(i as u16)
        );
        assert_eq!(ip.header_checksum(), ip.to_header().calc_header_checksum());
        assert_eq!(checksum::checksum(ip.slice()), 0);
        assert_eq!(
            (ip.source(), ip.destination(), ip.ttl(), ip.protocol()),
            (oip.source(), oip.destination(), oip.ttl(), oip.protocol())
        );
        assert!(!ip.more_fragments() && ip.fragments_offset().value() == 0);
        (ip, &d[l3 + ip.slice().len()..])
    }

    /// Checks the datagram lengths and returns each datagram.
    fn datagrams<'a>(segs: &Segments, out: &'a [u8]) -> Vec<&'a [u8]> {
        let v: Vec<&[u8]> = (0..segs.count)
            .map(|i| &out[segs.datagram(i).unwrap()])
            .collect();
        assert!(segs.datagram(segs.count).is_none());
        for d in &v[..v.len() - 1] {
            assert_eq!(d.len(), segs.seg_len);
        }
        assert!(v[v.len() - 1].len() <= segs.seg_len);
        assert_eq!(v.iter().map(|d| d.len()).sum::<usize>(), segs.total_len);
        v
    }

    /// Segments `orig` and checks every TCP segment; returns the result.
    fn check_tcp(orig: &[u8], l3: usize, mss: usize) -> Segments {
        let mut out = vec![0x55u8; segmented_len(orig, l3, mss).unwrap().total_len + 64];
        let segs = segment_tcp4(orig, l3, mss, &mut out).unwrap();
        assert_eq!(segmented_len(orig, l3, mss), Ok(segs));
        let (oip, otcp) = {
            let oip = Ipv4HeaderSlice::from_slice(&orig[l3..]).unwrap();
            let otcp = TcpHeaderSlice::from_slice(&orig[l3 + oip.slice().len()..]).unwrap();
            (oip, otcp)
        };
        let opayload =
            &orig[l3 + oip.slice().len() + otcp.slice().len()..l3 + usize::from(oip.total_len())];
        assert_eq!(segs.count, opayload.len().div_ceil(mss).max(1));
        let mut payload = Vec::new();
        let dgrams = datagrams(&segs, &out);
        for (i, d) in dgrams.iter().enumerate() {
            let last = i + 1 == segs.count;
            let (ip, l4) = check_ip(orig, l3, i, d);
            let tcp = TcpHeaderSlice::from_slice(l4).unwrap();
            let p = &l4[tcp.slice().len()..];
            assert!(p.len() <= mss);
            assert_eq!(
                tcp.sequence_number(),
                otcp.sequence_number().wrapping_add(payload.len() as u32)
            );
            assert_eq!(tcp.fin(), otcp.fin() && last, "FIN on {i}");
            assert_eq!(tcp.psh(), otcp.psh() && last, "PSH on {i}");
            assert_eq!(tcp.cwr(), otcp.cwr() && i == 0, "CWR on {i}");
            assert_eq!(
                (tcp.ack(), tcp.syn(), tcp.rst(), tcp.ece(), tcp.urg()),
                (otcp.ack(), otcp.syn(), otcp.rst(), otcp.ece(), otcp.urg())
            );
            assert_eq!(tcp.acknowledgment_number(), otcp.acknowledgment_number());
            assert_eq!(tcp.window_size(), otcp.window_size());
            assert_eq!(tcp.options(), otcp.options());
            assert_eq!(
                (tcp.source_port(), tcp.destination_port()),
                (otcp.source_port(), otcp.destination_port())
            );
            let want = tcp.calc_checksum_ipv4(&ip, p).unwrap();
            assert_eq!(tcp.checksum(), want, "TCP checksum of segment {i}");
            payload.extend_from_slice(p);
        }
        assert_eq!(payload, opayload);
        assert!(out[segs.total_len..].iter().all(|&b| b == 0x55));
        segs
    }

    fn check_udp(orig: &[u8], l3: usize, mss: usize) -> Segments {
        let mut out = vec![0x55u8; segmented_len(orig, l3, mss).unwrap().total_len + 64];
        let segs = segment_udp4(orig, l3, mss, &mut out).unwrap();
        assert_eq!(segmented_len(orig, l3, mss), Ok(segs));
        let oip = Ipv4HeaderSlice::from_slice(&orig[l3..]).unwrap();
        let oudp = UdpHeaderSlice::from_slice(&orig[l3 + oip.slice().len()..]).unwrap();
        let opayload = &orig[l3 + oip.slice().len() + 8..l3 + usize::from(oip.total_len())];
        assert_eq!(segs.count, opayload.len().div_ceil(mss).max(1));
        let mut payload = Vec::new();
        for (i, d) in datagrams(&segs, &out).iter().enumerate() {
            let (ip, l4) = check_ip(orig, l3, i, d);
            let udp = UdpHeaderSlice::from_slice(l4).unwrap();
            let p = &l4[8..];
            assert!(p.len() <= mss);
            assert_eq!(usize::from(udp.length()), l4.len());
            assert_eq!(
                (udp.source_port(), udp.destination_port()),
                (oudp.source_port(), oudp.destination_port())
            );
            let want = udp
                .to_header()
                .calc_checksum_ipv4(&ip.to_header(), p)
                .unwrap();
            assert_eq!(udp.checksum(), want, "UDP checksum of datagram {i}");
            assert_ne!(udp.checksum(), 0);
            payload.extend_from_slice(p);
        }
        assert_eq!(payload, opayload);
        assert!(out[segs.total_len..].iter().all(|&b| b == 0x55));
        segs
    }

    // --- complete_checksum ---

    /// Replaces the L4 checksum by the pseudo-header sum, as a sender with
    /// checksum offload leaves it.
    fn make_partial(pkt: &mut [u8], l3: usize, csum_offset: usize) -> u16 {
        let ip = ipv4::Packet::new_checked(&pkt[l3..]).unwrap();
        let (hl, l4_len) = (ip.header_len(), ip.total_len() - ip.header_len());
        let pseudo = checksum::pseudo_header(ip.src(), ip.dst(), ip.protocol(), l4_len as u16);
        let at = l3 + hl + csum_offset;
        let orig = u16::from_be_bytes([pkt[at], pkt[at + 1]]);
        pkt[at..at + 2].copy_from_slice(&checksum::fold(pseudo).to_be_bytes());
        assert_ne!(orig, checksum::fold(pseudo));
        orig
    }

    #[test]
    fn completes_tcp_checksum() {
        for l3 in [0, 14, PREFIX_LEN] {
            let mut pkt = tcp_packet(l3, &pattern(1001), false);
            let want = make_partial(&mut pkt, l3, 16);
            complete_checksum(&mut pkt, l3 + 20, 16).unwrap();
            assert_eq!(pkt[l3 + 20 + 16..l3 + 20 + 18], want.to_be_bytes());
            let tcp = TcpHeaderSlice::from_slice(&pkt[l3 + 20..]).unwrap();
            let ip = Ipv4HeaderSlice::from_slice(&pkt[l3..]).unwrap();
            let calc = tcp.calc_checksum_ipv4(&ip, &pkt[l3 + 20 + 32..]).unwrap();
            assert_eq!(tcp.checksum(), calc);
        }
    }

    #[test]
    fn completes_udp_checksum() {
        for len in [0, 1, 2, 999, 1400] {
            let mut pkt = udp_packet(PREFIX_LEN, &pattern(len));
            let want = make_partial(&mut pkt, PREFIX_LEN, 6);
            complete_checksum(&mut pkt, PREFIX_LEN + 20, 6).unwrap();
            let at = PREFIX_LEN + 20 + 6;
            assert_eq!(pkt[at..at + 2], want.to_be_bytes(), "payload {len}");
        }
    }

    #[test]
    fn complete_checksum_writes_zero_as_ffff() {
        // The bytes sum to 0xffff: the inverted sum is 0.
        let mut b = [0xff, 0xff, 0x00, 0x00];
        complete_checksum(&mut b, 0, 2).unwrap();
        assert_eq!(b, [0xff, 0xff, 0xff, 0xff]);
        let mut b = [0x12, 0x34, 0x00, 0x00];
        complete_checksum(&mut b, 0, 2).unwrap();
        assert_eq!(b, [0x12, 0x34, 0xed, 0xcb]);
    }

    #[test]
    fn complete_checksum_rejects_bad_offsets() {
        let pkt = tcp_packet(0, &pattern(100), false);
        let len = pkt.len();
        let cases = [
            (len, 0, Error::Truncated),
            (len + 10, 0, Error::Truncated),
            (len - 1, 0, Error::Truncated),
            (20, len - 20 - 1, Error::Malformed),
            (20, len - 20, Error::Truncated),
            (20, 17, Error::Malformed),
            (usize::MAX, 2, Error::Truncated),
            (usize::MAX - 1, 0, Error::Truncated),
            (2, usize::MAX - 1, Error::Truncated),
        ];
        for (start, offset, err) in cases {
            let mut b = pkt.clone();
            assert_eq!(
                complete_checksum(&mut b, start, offset),
                Err(err),
                "{start} {offset}"
            );
            assert_eq!(b, pkt);
        }
        // The last two bytes are the last place a field fits.
        let mut b = pkt.clone();
        assert_eq!(complete_checksum(&mut b, len - 2, 0), Ok(()));
    }

    // --- segment_tcp4 ---

    #[test]
    fn tcp_super_packet_through_vxlan() {
        let pkt = tcp_packet(PREFIX_LEN, &pattern(10_000), true);
        let segs = check_tcp(&pkt, PREFIX_LEN, MSS);
        let hdr = PREFIX_LEN + 20 + 32;
        assert_eq!(segs.count, 8);
        assert_eq!(segs.seg_len, hdr + MSS);
        assert_eq!(segs.total_len, 8 * hdr + 10_000);
    }

    #[test]
    fn tcp_payload_a_multiple_of_mss() {
        let pkt = tcp_packet(PREFIX_LEN, &pattern(5 * MSS), true);
        let segs = check_tcp(&pkt, PREFIX_LEN, MSS);
        assert_eq!(segs.count, 5);
        assert_eq!(segs.total_len, 5 * segs.seg_len);
    }

    #[test]
    fn tcp_payload_below_mss_is_one_segment() {
        let pkt = tcp_packet(PREFIX_LEN, &pattern(700), true);
        let segs = check_tcp(&pkt, PREFIX_LEN, MSS);
        assert_eq!(segs.count, 1);
        assert_eq!((segs.seg_len, segs.total_len), (pkt.len(), pkt.len()));
        // Only the checksum may differ from the input (which was complete).
        let mut out = vec![0; pkt.len()];
        segment_tcp4(&pkt, PREFIX_LEN, MSS, &mut out).unwrap();
        assert_eq!(out, pkt);
    }

    #[test]
    fn tcp_empty_payload_is_one_segment() {
        let pkt = tcp_packet(PREFIX_LEN, &[], false);
        let segs = check_tcp(&pkt, PREFIX_LEN, MSS);
        assert_eq!((segs.count, segs.total_len), (1, pkt.len()));
    }

    #[test]
    fn tcp_without_prefix() {
        let pkt = tcp_packet_seq(0, &pattern(10_000), true, 0x1234_5678);
        let segs = check_tcp(&pkt, 0, 1448);
        assert_eq!((segs.count, segs.seg_len), (7, 52 + 1448));
    }

    #[test]
    fn tcp_odd_mss_and_largest_packet() {
        let pkt = tcp_packet(PREFIX_LEN, &pattern(65_535 - 52), true);
        check_tcp(&pkt, PREFIX_LEN, 1377);
        check_tcp(&pkt, PREFIX_LEN, 1);
    }

    #[test]
    fn ignores_bytes_after_the_ip_total_length() {
        let mut pkt = tcp_packet(PREFIX_LEN, &pattern(3000), false);
        pkt.extend_from_slice(&[0xee; 9]);
        let segs = check_tcp(&pkt, PREFIX_LEN, MSS);
        assert_eq!(segs.total_len, 3 * (PREFIX_LEN + 52) + 3000);
    }

    #[test]
    fn tcp_out_too_small_writes_nothing() {
        let pkt = tcp_packet(PREFIX_LEN, &pattern(10_000), true);
        let need = segmented_len(&pkt, PREFIX_LEN, MSS).unwrap().total_len;
        let mut out = vec![0x55u8; need - 1];
        assert_eq!(
            segment_tcp4(&pkt, PREFIX_LEN, MSS, &mut out),
            Err(Error::NoRoom)
        );
        assert!(out.iter().all(|&b| b == 0x55));
        let mut out = vec![0x55u8; need];
        assert!(segment_tcp4(&pkt, PREFIX_LEN, MSS, &mut out).is_ok());
    }

    #[test]
    fn rejects_what_it_cannot_segment() {
        let tcp = tcp_packet(PREFIX_LEN, &pattern(3000), false);
        let udp = udp_packet(PREFIX_LEN, &pattern(3000));
        let mut out = vec![0u8; 10_000];
        let l3 = PREFIX_LEN;
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut p = tcp.clone();
            f(&mut p);
            p
        };
        let cases: Vec<(Vec<u8>, usize, usize, Error)> = vec![
            (tcp.clone(), l3, 0, Error::Malformed),              // mss 0
            (tcp.clone(), tcp.len() + 1, MSS, Error::Truncated), // l3 past the end
            (tcp.clone(), tcp.len() - 19, MSS, Error::Truncated),
            (tcp[..tcp.len() - 1].to_vec(), l3, MSS, Error::Truncated), // total length
            (tcp[..l3 + 20 + 19].to_vec(), l3, MSS, Error::Truncated),  // TCP header
            (with(&|p| p[l3] = 0x65), l3, MSS, Error::Malformed),       // IPv6
            (with(&|p| p[l3] = 0x44), l3, MSS, Error::Malformed),       // IHL 4
            (
                {
                    let mut p = tcp_packet(l3, &pattern(10), false);
                    p[l3] = 0x4f;
                    p
                },
                l3,
                MSS,
                Error::Truncated,
            ), // IHL 15: the options leave too little for TCP
            (with(&|p| p[l3 + 6] |= 0x20), l3, MSS, Error::Unsupported), // MF
            (with(&|p| p[l3 + 7] = 1), l3, MSS, Error::Unsupported),    // offset
            (with(&|p| p[l3 + 9] = 1), l3, MSS, Error::Unsupported),    // ICMP
            (with(&|p| p[l3 + 20 + 12] = 0x40), l3, MSS, Error::Malformed), // doff 4
            (
                with(&|p| p[l3 + 2..l3 + 4].copy_from_slice(&[0, 19])),
                l3,
                MSS,
                Error::Malformed,
            ),
            (
                with(&|p| p[l3 + 2..l3 + 4].copy_from_slice(&[0, 40])),
                l3,
                MSS,
                Error::Truncated,
            ),
            (udp.clone(), l3, MSS, Error::Unsupported), // UDP to the TCP function
        ];
        for (i, (p, l3, mss, err)) in cases.iter().enumerate() {
            assert_eq!(segment_tcp4(p, *l3, *mss, &mut out), Err(*err), "case {i}");
            if *p != udp {
                assert_eq!(segmented_len(p, *l3, *mss), Err(*err), "case {i}");
            }
        }
        assert_eq!(
            segment_udp4(&tcp, l3, MSS, &mut out),
            Err(Error::Unsupported)
        );
    }

    // --- segment_udp4 ---

    #[test]
    fn udp_super_packet_through_vxlan() {
        let pkt = udp_packet(PREFIX_LEN, &pattern(10_000));
        let segs = check_udp(&pkt, PREFIX_LEN, MSS);
        let hdr = PREFIX_LEN + 28;
        assert_eq!((segs.count, segs.seg_len), (8, hdr + MSS));
        assert_eq!(segs.total_len, 8 * hdr + 10_000);
    }

    #[test]
    fn udp_edge_sizes() {
        for (len, mss, count) in [(5 * MSS, MSS, 5), (700, MSS, 1), (0, MSS, 1), (7, 2, 4)] {
            let pkt = udp_packet(PREFIX_LEN, &pattern(len));
            assert_eq!(check_udp(&pkt, PREFIX_LEN, mss).count, count, "{len}/{mss}");
        }
        let pkt = udp_packet(0, &pattern(65_535 - 28));
        check_udp(&pkt, 0, 1472);
        check_udp(&pkt, 0, 1);
    }

    #[test]
    fn udp_out_too_small_writes_nothing() {
        let pkt = udp_packet(0, &pattern(4000));
        let need = segmented_len(&pkt, 0, MSS).unwrap().total_len;
        let mut out = vec![0x55u8; need - 1];
        assert_eq!(segment_udp4(&pkt, 0, MSS, &mut out), Err(Error::NoRoom));
        assert!(out.iter().all(|&b| b == 0x55));
        assert_eq!(segment_udp4(&pkt, 0, 0, &mut out), Err(Error::Malformed));
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(
            bytes in proptest::collection::vec(0u8.., 0..400),
            l3 in 0usize..64,
            mss in 0usize..300,
            out_len in 0usize..4000,
            v4 in proptest::bool::ANY,
        ) {
            let mut bytes = bytes;
            // Make the IPv4 paths likely to be reached.
            if v4 && bytes.len() > l3 + 10 {
                bytes[l3] = 0x45;
                bytes[l3 + 6] = 0;
                bytes[l3 + 7] = 0;
                bytes[l3 + 9] = if bytes[l3 + 8] & 1 == 0 { 6 } else { 17 };
            }
            let mut out = vec![0u8; out_len];
            let len = segmented_len(&bytes, l3, mss);
            let results = [
                segment_tcp4(&bytes, l3, mss, &mut out),
                segment_udp4(&bytes, l3, mss, &mut out),
            ];
            for s in results.into_iter().flatten() {
                proptest::prop_assert_eq!(Ok(s), len);
                proptest::prop_assert!(s.total_len <= out_len);
            }
            let _ = complete_checksum(&mut bytes, l3, mss);
        }

        #[test]
        fn any_size_segments_correctly(
            len in 0usize..5000,
            mss in 1usize..1600,
            l3 in 0usize..40,
            cwr in proptest::bool::ANY,
            seq in 0u32..,
        ) {
            check_tcp(&tcp_packet_seq(l3, &pattern(len), cwr, seq), l3, mss);
            check_udp(&udp_packet(l3, &pattern(len)), l3, mss);
        }
    }
}
