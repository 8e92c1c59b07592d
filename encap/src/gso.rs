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

/// What every segment of one super-packet shares, computed once: the
/// checked layout, the original headers and the sums of the header words
/// that do not change from one segment to the next.
struct Plan<'a> {
    layout: Layout,
    mss: usize,
    segs: Segments,
    /// `pkt[..hdr_len]`: prefix, IP and L4 headers of the original.
    hdr: &'a [u8],
    /// The L4 payload (up to the IP total length).
    payload: &'a [u8],
    /// Pseudo-header sum without the L4 length.
    pseudo: u32,
    ident0: u16,
    /// IPv4: everything but total length, identification and checksum.
    ip_fixed: u32,
    /// L4: everything that does not change per segment.
    l4_fixed: u32,
    /// TCP: sequence number, data offset byte and flags of the original.
    seq0: u32,
    data_off: u8,
    flags0: u8,
}

impl<'a> Plan<'a> {
    fn new(pkt: &'a [u8], l3: usize, mss: usize, want: L4) -> Result<Plan<'a>, Error> {
        let layout = Layout::parse(pkt, l3)?;
        if layout.l4 != want {
            return Err(Error::Unsupported);
        }
        let segs = layout.segments(mss)?;
        let hdr_len = layout.hdr_len();
        // `Layout::parse` checked that the headers and the payload are in `pkt`.
        let hdr = &pkt[..hdr_len];
        let payload = &pkt[hdr_len..hdr_len + layout.payload_len];
        let l4_at = l3 + layout.ip_hl;
        let ip = &hdr[l3..l4_at];
        let l4 = &hdr[l4_at..];
        let view = ipv4::Packet::new_unchecked(ip);
        let pseudo = checksum::pseudo_header(view.src(), view.dst(), view.protocol(), 0);
        let ip_fixed = sum16(&ip[..ip_field::LENGTH.start])
            + sum16(&ip[ip_field::IDENT.end..ip_field::CHECKSUM.start])
            + sum16(&ip[ip_field::CHECKSUM.end..]);
        let (l4_fixed, seq0, data_off, flags0) = match want {
            // All but sequence number, data offset/flags word and checksum.
            L4::Tcp => (
                sum16(&l4[..tcp_field::SEQ.start])
                    + sum16(&l4[tcp_field::SEQ.end..tcp_field::DATA_OFF])
                    + sum16(&l4[tcp_field::FLAGS + 1..tcp_field::CHECKSUM.start])
                    + sum16(&l4[tcp_field::CHECKSUM.end..]),
                u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]),
                l4[tcp_field::DATA_OFF],
                l4[tcp_field::FLAGS],
            ),
            // The ports.
            L4::Udp => (sum16(&l4[..udp_field::LENGTH.start]), 0, 0, 0),
        };
        Ok(Plan {
            layout,
            mss,
            segs,
            hdr,
            payload,
            pseudo: u32::from(checksum::fold(pseudo)),
            ident0: view.ident(),
            ip_fixed,
            l4_fixed,
            seq0,
            data_off,
            flags0,
        })
    }

    /// Offset in the payload of segment `i`'s first byte, and its length.
    /// `i` < `segs.count`.
    fn payload_range(&self, i: usize) -> core::ops::Range<usize> {
        let start = (i * self.mss).min(self.payload.len());
        start..(start + self.mss).min(self.payload.len())
    }

    /// Writes segment `i`'s headers into `h` (`hdr_len` bytes): a copy of
    /// the original's with the per-segment fields and checksums, for a
    /// payload of `take` bytes whose sum (`sum16`) is `payload_sum`.
    fn write_headers(&self, i: usize, h: &mut [u8], take: usize, payload_sum: u32) {
        h.copy_from_slice(self.hdr);
        let layout = &self.layout;
        // Lengths fit: each segment is no longer than the original packet.
        let l4_len = (layout.l4_hl + take) as u16;
        let ip_len = (layout.ip_hl + layout.l4_hl + take) as u16;
        let ident = self.ident0.wrapping_add(i as u16);
        let ip_sum = self.ip_fixed + u32::from(ip_len) + u32::from(ident);
        let (ip_out, l4_out) = h[layout.l3..].split_at_mut(layout.ip_hl);
        ip_out[ip_field::LENGTH].copy_from_slice(&ip_len.to_be_bytes());
        ip_out[ip_field::IDENT].copy_from_slice(&ident.to_be_bytes());
        ip_out[ip_field::CHECKSUM].copy_from_slice(&(!checksum::fold(ip_sum)).to_be_bytes());

        let acc = self.l4_fixed + self.pseudo + u32::from(l4_len) + payload_sum;
        match layout.l4 {
            L4::Tcp => {
                let mut flags = self.flags0;
                if i + 1 < self.segs.count {
                    flags &= !(TCP_FIN | TCP_PSH);
                }
                if i > 0 {
                    flags &= !TCP_CWR;
                }
                // The offset is within the 64 KiB payload.
                let seq = self.seq0.wrapping_add((i * self.mss) as u32);
                l4_out[tcp_field::SEQ].copy_from_slice(&seq.to_be_bytes());
                l4_out[tcp_field::FLAGS] = flags;
                let acc = acc
                    + (seq >> 16)
                    + (seq & 0xffff)
                    + u32::from(u16::from_be_bytes([self.data_off, flags]));
                // TCP sends 0 as 0: no mangling, as the kernel does.
                let c = !checksum::fold(acc);
                l4_out[tcp_field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
            }
            L4::Udp => {
                l4_out[udp_field::LENGTH].copy_from_slice(&l4_len.to_be_bytes());
                // The length counts twice: in the header and in the pseudo-header.
                let c = finish(acc + u32::from(l4_len));
                l4_out[udp_field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
            }
        }
    }
}

fn segment(pkt: &[u8], l3: usize, mss: usize, out: &mut [u8], want: L4) -> Result<Segments, Error> {
    let plan = Plan::new(pkt, l3, mss, want)?;
    let segs = plan.segs;
    let out = out.get_mut(..segs.total_len).ok_or(Error::NoRoom)?;
    let hdr_len = plan.hdr.len();
    for (i, seg) in out.chunks_mut(segs.seg_len).enumerate() {
        let chunk = &plan.payload[plan.payload_range(i)];
        // By construction `seg` is `hdr_len + chunk.len()` bytes long.
        let (h, p) = seg.split_at_mut(hdr_len);
        p.copy_from_slice(chunk);
        plan.write_headers(i, h, chunk.len(), sum16(chunk));
    }
    Ok(segs)
}

/// A segmentation that wrote only the headers ([`segment_tcp4_headers`],
/// [`segment_udp4_headers`]): datagram `i` is header `i` (in the caller's
/// header buffer) followed by payload `i` (a range of the original packet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderSegments {
    /// Number of datagrams, their `UDP_SEGMENT` size and their total length,
    /// the same as the copying functions give.
    pub segs: Segments,
    /// Length of every datagram's headers (tunnel prefix, IP, L4).
    pub hdr_len: usize,
    /// Where the payload starts in the packet.
    payload_start: usize,
    /// Payload bytes in the packet.
    payload_len: usize,
    /// Payload bytes per datagram but the last.
    mss: usize,
}

impl HeaderSegments {
    /// Bytes of headers written: `count * hdr_len`.
    pub fn headers_len(&self) -> usize {
        self.segs.count * self.hdr_len
    }

    /// The range in the header buffer of datagram `i`'s headers, or `None`
    /// past the last.
    pub fn header(&self, i: usize) -> Option<core::ops::Range<usize>> {
        if i >= self.segs.count {
            return None;
        }
        Some(i * self.hdr_len..(i + 1) * self.hdr_len)
    }

    /// The range in the packet of datagram `i`'s payload (empty for the
    /// only datagram of a packet without payload), or `None` past the last.
    pub fn payload(&self, i: usize) -> Option<core::ops::Range<usize>> {
        if i >= self.segs.count {
            return None;
        }
        let off = (i * self.mss).min(self.payload_len);
        let start = self.payload_start + off;
        Some(start..start + self.mss.min(self.payload_len - off))
    }

    /// Datagram `i` as its two parts: its headers in `hdrs` (the buffer
    /// given to the segmentation) and its payload in `pkt` (the packet
    /// segmented). `None` past the last or for other buffers too short.
    pub fn parts<'a>(
        &self,
        i: usize,
        hdrs: &'a [u8],
        pkt: &'a [u8],
    ) -> Option<(&'a [u8], &'a [u8])> {
        Some((hdrs.get(self.header(i)?)?, pkt.get(self.payload(i)?)?))
    }
}

/// Like [`segment_tcp4`], but writes only each segment's headers, back to
/// back into `hdr_out`; payloads stay in `pkt`, read once for their
/// checksums, never copied. Sending header `i` then payload `i` for every
/// `i` (e.g. an iovec list with `UDP_SEGMENT`) gives exactly the bytes
/// [`segment_tcp4`] would have written.
///
/// The same errors as [`segment_tcp4`]; [`Error::NoRoom`] when `hdr_out` is
/// shorter than [`HeaderSegments::headers_len`] (nothing written then).
pub fn segment_tcp4_headers(
    pkt: &[u8],
    l3: usize,
    mss: usize,
    hdr_out: &mut [u8],
) -> Result<HeaderSegments, Error> {
    segment_headers(pkt, l3, mss, hdr_out, L4::Tcp)
}

/// Like [`segment_udp4`] (USO), writing only the headers: see
/// [`segment_tcp4_headers`].
pub fn segment_udp4_headers(
    pkt: &[u8],
    l3: usize,
    mss: usize,
    hdr_out: &mut [u8],
) -> Result<HeaderSegments, Error> {
    segment_headers(pkt, l3, mss, hdr_out, L4::Udp)
}

fn segment_headers(
    pkt: &[u8],
    l3: usize,
    mss: usize,
    hdr_out: &mut [u8],
    want: L4,
) -> Result<HeaderSegments, Error> {
    let plan = Plan::new(pkt, l3, mss, want)?;
    let hdr_len = plan.hdr.len();
    let hs = HeaderSegments {
        segs: plan.segs,
        hdr_len,
        payload_start: hdr_len,
        payload_len: plan.payload.len(),
        mss,
    };
    let need = hs.segs.count.checked_mul(hdr_len).ok_or(Error::NoRoom)?;
    let out = hdr_out.get_mut(..need).ok_or(Error::NoRoom)?;
    // `chunks_exact_mut` of a `count * hdr_len` buffer: `count` headers (and
    // one, empty, when `hdr_len` is 0, which `Layout` rules out).
    for (i, h) in out.chunks_exact_mut(hdr_len.max(1)).enumerate() {
        let chunk = &plan.payload[plan.payload_range(i)];
        plan.write_headers(i, h, chunk.len(), sum16(chunk));
    }
    Ok(hs)
}

#[cfg(test)]
#[path = "gso_tests.rs"]
mod tests;
