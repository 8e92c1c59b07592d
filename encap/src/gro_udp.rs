//! Software receive coalescing of UDP/IPv4 Ethernet frames into one USO
//! super-frame (`GSO_UDP_L4`) for a TAP: the inverse of
//! [`crate::gso::segment_udp4`], as [`super::Coalescer`] is of TCP
//! segmentation.
//!
//! Small datagrams of one flow (a stream of 64-byte RTP or iperf3 packets)
//! arrive from the tunnel one by one. Consecutive ones bound for the same
//! TAP are joined here into one frame of up to 64 datagrams, which the
//! pod's kernel cuts back into the very same datagrams (its USO does what
//! `segment_udp4` does): one TAP write and one pass of the receive path up
//! to UDP for the lot. Only datagrams that segmentation reproduces byte for
//! byte are joined: identical headers but for the lengths, the IP
//! identification and the checksums; identifications counting up by one
//! (USO numbers the segments so); every payload the first one's length but
//! a shorter last one.
//!
//! Every UDP checksum is verified before a datagram is joined, and one
//! without a checksum (0) is never joined: the super-frame gets a partial
//! checksum that the segments inherit, which would hide a corrupt datagram
//! or give a checksum to one sent without.
//!
//! No I/O, no clock; the one buffer is allocated in [`UdpCoalescer::new`].
//! Nothing in a frame can make it panic.

use super::{
    addr, be16, ip_field, ipv4_packet, l4_checksum_valid, Push, ETH_LEN, IP_LEN, MAX_IP_LEN,
};
use crate::{checksum, ipv4, vnet};

/// Start of the UDP header in a frame.
const L4: usize = ETH_LEN + IP_LEN;
/// Length of a UDP header.
const UDP_LEN: usize = 8;
/// Length of the Ethernet, IP and UDP headers of a coalescable frame.
const HDR_LEN: usize = L4 + UDP_LEN;

/// Most datagrams joined in one super-frame: the kernel's
/// `UDP_MAX_SEGMENTS`, beyond which it refuses to segment a USO frame.
pub const MAX_DATAGRAMS: usize = 64;

/// Offsets inside the UDP header.
mod udp_field {
    use core::ops::Range;
    pub const PORTS: Range<usize> = 0..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
}

/// A frame that may be coalesced, as [`parse`] found it.
#[derive(Debug, Clone, Copy)]
struct Datagram {
    /// End of the IP packet in the frame (`ETH_LEN` + IP total length);
    /// bytes after it are Ethernet padding.
    ip_end: usize,
    /// IP identification.
    ident: u16,
}

impl Datagram {
    /// UDP payload bytes.
    fn payload_len(&self) -> usize {
        self.ip_end - HDR_LEN
    }
}

/// Checks that `frame` is a coalescable UDP/IPv4 datagram (see
/// [`UdpCoalescer::push`]); `None` if it is not.
fn parse(frame: &[u8]) -> Option<Datagram> {
    // `+ 1`: a datagram without payload is never coalesced.
    let ip = ipv4_packet(frame, ipv4::PROTO_UDP, UDP_LEN + 1)?;
    let udp = &ip[IP_LEN..];
    // The UDP length must be the IP payload's (segmentation derives it so),
    // and a checksum must be there (0: sent without one).
    if usize::from(be16(udp, udp_field::LENGTH)) != udp.len()
        || be16(udp, udp_field::CHECKSUM) == 0
        || !l4_checksum_valid(ip, ipv4::PROTO_UDP)
    {
        return None;
    }
    Some(Datagram {
        ip_end: ETH_LEN + ip.len(),
        ident: be16(ip, ip_field::IDENT),
    })
}

/// Coalesces consecutive UDP/IPv4 Ethernet frames of one flow into a USO
/// super-frame.
///
/// Used as [`super::Coalescer`] is: the caller pushes each frame bound for
/// one TAP, and acts on the answer: on [`Push::Flush`] it takes (writes)
/// the current super-frame and pushes the frame again; on [`Push::Bypass`]
/// it takes the current one and writes the frame as it is; at the end of a
/// batch it takes what is left. Only for a TAP whose kernel knows USO
/// (`TUN_F_USO4` accepted, Linux 6.2+).
#[derive(Debug)]
pub struct UdpCoalescer {
    /// The super-frame being built: the first frame's headers, then the
    /// payloads in order.
    buf: Vec<u8>,
    /// Datagrams merged into the current super-frame (0: empty).
    datagrams: usize,
    /// Length of the first frame as pushed (Ethernet padding included), so
    /// that a single frame comes back unchanged.
    first_len: usize,
    /// End of the super-frame's IP packet in `buf` (once a second datagram
    /// is merged, also the end of the super-frame).
    end: usize,
    /// Payload length of the first datagram: every one but the last has it.
    gso_size: usize,
    /// IP identification the next datagram must have.
    next_ident: u16,
    /// The last datagram was shorter than `gso_size`: nothing more may be
    /// appended.
    closed: bool,
}

impl UdpCoalescer {
    /// A coalescer whose super-frames are at most `capacity` bytes (Ethernet
    /// header included); 65 536 + 128 holds the largest IPv4 packet.
    pub fn new(capacity: usize) -> UdpCoalescer {
        UdpCoalescer {
            buf: vec![0; capacity],
            datagrams: 0,
            first_len: 0,
            end: 0,
            gso_size: 0,
            next_ident: 0,
            closed: false,
        }
    }

    /// Offers one frame (Ethernet + IPv4 + UDP, checksums as received).
    ///
    /// A frame is coalescable if it is IPv4 without options and not a
    /// fragment (only DF may be set), with a valid header checksum and a
    /// total length within the frame (padding after it is ignored), carrying
    /// UDP with a length equal to the IP payload's, at least one payload
    /// byte and a non-zero, valid checksum. Anything else is
    /// [`Push::Bypass`].
    ///
    /// A coalescable frame continues the current super-frame if its Ethernet
    /// header, IP header (but total length, identification and checksum;
    /// so TOS, DF and TTL included) and UDP ports equal the first
    /// datagram's, its identification is the last one's + 1 (wrapping), its
    /// payload is at most the first datagram's, the last datagram was not
    /// shorter, fewer than [`MAX_DATAGRAMS`] are merged, the IP length
    /// stays ≤ 65 535 and the frame within the capacity. Otherwise it is
    /// [`Push::Flush`]. An empty coalescer starts a super-frame with any
    /// coalescable frame that fits in its capacity.
    pub fn push(&mut self, frame: &[u8]) -> Push {
        // A frame the buffer cannot hold is never coalescable, so that an
        // empty coalescer takes every frame it answered `Flush` for.
        if frame.len() > self.buf.len() {
            return Push::Bypass;
        }
        let Some(d) = parse(frame) else {
            return Push::Bypass;
        };
        if self.datagrams == 0 {
            return self.start(frame, d);
        }
        if !self.continues(frame, &d) {
            return Push::Flush;
        }
        let payload = &frame[HDR_LEN..d.ip_end];
        let end = self.end + payload.len();
        // `continues` checked that `end` is within the buffer.
        self.buf[self.end..end].copy_from_slice(payload);
        self.end = end;
        self.datagrams += 1;
        self.next_ident = d.ident.wrapping_add(1);
        self.closed = payload.len() < self.gso_size;
        Push::Merged
    }

    /// Starts a super-frame with `frame`, which fits in the buffer.
    fn start(&mut self, frame: &[u8], d: Datagram) -> Push {
        self.buf[..frame.len()].copy_from_slice(frame);
        self.datagrams = 1;
        self.first_len = frame.len();
        self.end = d.ip_end;
        self.gso_size = d.payload_len();
        self.next_ident = d.ident.wrapping_add(1);
        self.closed = false;
        Push::Merged
    }

    /// `frame` (coalescable, described by `d`) may be appended.
    fn continues(&self, frame: &[u8], d: &Datagram) -> bool {
        let payload_len = d.payload_len();
        if self.closed
            || self.datagrams >= MAX_DATAGRAMS
            || d.ident != self.next_ident
            || payload_len > self.gso_size
            || self.end - ETH_LEN + payload_len > MAX_IP_LEN
            || self.end + payload_len > self.buf.len()
        {
            return false;
        }
        let (a, b) = (&self.buf[..HDR_LEN], &frame[..HDR_LEN]);
        let (ip_a, ip_b) = (&a[ETH_LEN..L4], &b[ETH_LEN..L4]);
        let (udp_a, udp_b) = (&a[L4..], &b[L4..]);
        let same = |x: &[u8], y: &[u8], r: core::ops::Range<usize>| x[r.clone()] == y[r];
        a[..ETH_LEN] == b[..ETH_LEN]
            && same(ip_a, ip_b, ip_field::HEAD)
            && same(ip_a, ip_b, ip_field::MIDDLE)
            && same(ip_a, ip_b, ip_field::ADDRS)
            && same(udp_a, udp_b, udp_field::PORTS)
    }

    /// The super-frame built so far and its vnet header, leaving the
    /// coalescer empty; `None` if it is empty.
    ///
    /// A single frame comes back unchanged (padding included) with a plain
    /// header. Several come back as one frame with the first one's headers,
    /// IP total length and checksum and UDP length updated, the UDP
    /// checksum field holding the folded pseudo-header sum over the whole
    /// UDP length (not inverted, as the kernel's `udp4_hwcsum` leaves it),
    /// and a `GSO_UDP_L4` / `F_NEEDS_CSUM` vnet header whose `gso_size` is
    /// the first datagram's payload length, `csum_start` the UDP header and
    /// `csum_offset` its checksum field (6).
    pub fn take(&mut self) -> Option<(vnet::Header, &[u8])> {
        let datagrams = core::mem::replace(&mut self.datagrams, 0);
        match datagrams {
            0 => None,
            1 => Some((vnet::Header::default(), &self.buf[..self.first_len])),
            _ => {
                let ip_len = self.end - ETH_LEN;
                // `continues` kept `ip_len` ≤ 65 535.
                let udp_len = (ip_len - IP_LEN) as u16;
                let b = &mut self.buf[..self.end];
                let (ip, udp) = b[ETH_LEN..].split_at_mut(IP_LEN);
                ip[ip_field::LENGTH].copy_from_slice(&(ip_len as u16).to_be_bytes());
                ip[ip_field::CHECKSUM].copy_from_slice(&[0, 0]);
                let c = checksum::checksum(ip);
                ip[ip_field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
                let pseudo = checksum::fold(checksum::pseudo_header(
                    addr(&ip[12..16]),
                    addr(&ip[16..20]),
                    ipv4::PROTO_UDP,
                    udp_len,
                ));
                udp[udp_field::LENGTH].copy_from_slice(&udp_len.to_be_bytes());
                udp[udp_field::CHECKSUM].copy_from_slice(&pseudo.to_be_bytes());
                // Header lengths are below 64 and `gso_size` below 65 536.
                let hdr = vnet::Header {
                    flags: vnet::F_NEEDS_CSUM,
                    gso_type: vnet::GSO_UDP_L4,
                    hdr_len: HDR_LEN as u16,
                    gso_size: self.gso_size as u16,
                    csum_start: L4 as u16,
                    csum_offset: udp_field::CHECKSUM.start as u16,
                };
                Some((hdr, &self.buf[..self.end]))
            }
        }
    }

    /// Nothing has been pushed since the last [`UdpCoalescer::take`].
    pub fn is_empty(&self) -> bool {
        self.datagrams == 0
    }

    /// Frames merged into the current super-frame.
    pub fn datagrams(&self) -> usize {
        self.datagrams
    }
}

#[cfg(test)]
#[path = "gro_udp_tests.rs"]
mod tests;
