//! Sending a segmented super-packet through the tunnel without copying its
//! payload: [`encap::gso::segment_tcp4_headers`] (or the UDP one) wrote each
//! segment's headers into a small buffer; here every `UDP_SEGMENT` send
//! gathers up to 64 segments as an iovec list alternating headers `i` (in
//! that buffer) and payload `i` (in the packet itself), and the kernel cuts
//! the concatenation at `seg_len`; the sends of one super-packet go in one
//! `sendmmsg`. Where the kernel refuses `UDP_SEGMENT`, each segment goes in
//! its own two-slice send.
//!
//! No forwarding rule here, and no allocation: the iovec array is on the
//! stack.

use std::io::{self, IoSlice};
use std::net::{SocketAddrV4, UdpSocket};

use encap::gso::HeaderSegments;

use crate::stats::TunnelStats;
use crate::sys::udp;

/// Sends the datagrams `hs` describes (headers in `hdrs`, payloads in
/// `pkt`) to `dst`, with `UDP_SEGMENT` while `gso.enabled` holds (cleared
/// at the kernel's first refusal), and counts every datagram in `t`: sent
/// (`tx_packets`, `tx_bytes`), refused for a full buffer (`tx_dropped`) or
/// failed (`tx_errors`). A super-packet longer than one send (64 KiB of
/// datagrams: 44 of 1,472 bytes) takes several, all in one `sendmmsg`, so
/// that it costs one system call and its datagrams reach the receiver
/// together (one receive, one super-frame there).
pub(crate) fn send_segments(
    sock: &UdpSocket,
    hs: &HeaderSegments,
    hdrs: &[u8],
    pkt: &[u8],
    dst: SocketAddrV4,
    gso: &mut GsoSender,
    t: &mut TunnelStats,
) {
    let segs = hs.segs;
    let per_send = (udp::GSO_MAX_BYTES / segs.seg_len.max(1)).min(udp::GSO_MAX_SEGMENTS);
    // Segments too large for two to share a send, or a single one: no GSO.
    let gso_size = u16::try_from(segs.seg_len)
        .ok()
        .filter(|_| per_send > 1 && segs.count > 1);
    let per_send = per_send.max(1);
    let mut iov = [IoSlice::new(&[]); 2 * udp::GSO_MAX_SEGMENTS * udp::GSO_MMSG_MAX];
    let mut first = 0;
    while first < segs.count {
        // Up to GSO_MMSG_MAX sends' worth of segments, their iovecs back
        // to back: `ends[j]` is where the slices of send j end.
        let mut ends = [0usize; udp::GSO_MMSG_MAX];
        let mut sends = 0;
        let mut k = 0;
        while sends < udp::GSO_MMSG_MAX && first < segs.count {
            let n = per_send.min(segs.count - first);
            for i in first..first + n {
                // Cannot fail for the buffers given to the segmentation.
                let Some((h, p)) = hs.parts(i, hdrs, pkt) else {
                    t.tx_offload_errors += 1;
                    return;
                };
                iov[k] = IoSlice::new(h);
                iov[k + 1] = IoSlice::new(p);
                k += 2;
            }
            first += n;
            ends[sends] = k;
            sends += 1;
        }
        let mut chunks: [&[IoSlice<'_>]; udp::GSO_MMSG_MAX] = [&[]; udp::GSO_MMSG_MAX];
        let mut start = 0;
        for (c, &end) in chunks.iter_mut().zip(&ends[..sends]) {
            *c = &iov[start..end];
            start = end;
        }
        let chunks = &chunks[..sends];
        let done = match (gso_size, gso.enabled) {
            (Some(size), true) if sends > 1 => gso.send_many(sock, chunks, size, dst, t),
            _ => 0,
        };
        for chunk in &chunks[done..] {
            send_chunk(sock, chunk, gso_size, dst, gso, t);
        }
    }
}

/// The tunnel's `UDP_SEGMENT` state, one per worker: whether the kernel
/// takes it, and the headers of the `sendmmsg` that sends all of one
/// super-packet's sends at once.
#[derive(Debug)]
pub(crate) struct GsoSender {
    /// Cleared at the kernel's first refusal: from then on one send per
    /// segment.
    pub(crate) enabled: bool,
    headers: udp::MmsgHeaders,
}

impl GsoSender {
    pub(crate) fn new() -> GsoSender {
        GsoSender {
            enabled: true,
            headers: udp::gso_mmsg_headers(),
        }
    }

    /// Sends `chunks` (each one `UDP_SEGMENT` send of `size`-byte
    /// segments) with one `sendmmsg`; returns how many the kernel took and
    /// counts them. The caller sends the rest one by one, which tells why
    /// they failed.
    fn send_many(
        &mut self,
        sock: &UdpSocket,
        chunks: &[&[IoSlice<'_>]],
        size: u16,
        dst: SocketAddrV4,
        t: &mut TunnelStats,
    ) -> usize {
        match udp::send_gso_many(sock, &mut self.headers, chunks, size, dst) {
            Ok((sent, bytes)) => {
                t.tx_gso_calls += 1;
                t.tx_gso_sends += sent as u64;
                t.tx_packets += chunks[..sent]
                    .iter()
                    .map(|c| c.len() as u64 / 2)
                    .sum::<u64>();
                t.tx_bytes += bytes as u64;
                sent
            }
            Err(_) => 0,
        }
    }
}

/// One `UDP_SEGMENT` send of `chunk` (header and payload slices of its
/// segments, alternating) while the kernel takes it, else one send per
/// segment; counted.
fn send_chunk(
    sock: &UdpSocket,
    chunk: &[IoSlice<'_>],
    gso_size: Option<u16>,
    dst: SocketAddrV4,
    gso: &mut GsoSender,
    t: &mut TunnelStats,
) {
    let n = chunk.len() as u64 / 2;
    if let (Some(size), true) = (gso_size, gso.enabled) {
        match udp::send_gso_iov(sock, chunk, size, dst) {
            Ok(bytes) => {
                t.tx_gso_calls += 1;
                t.tx_gso_sends += 1;
                t.tx_packets += n;
                t.tx_bytes += bytes as u64;
                return;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                t.tx_dropped += n;
                return;
            }
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT)
                ) =>
            {
                tracing::warn!(error = %e, "the kernel refuses UDP_SEGMENT; sending segment by segment");
                gso.enabled = false;
                t.tx_gso_unsupported += 1;
            }
            Err(e) => {
                // Counted per send, as `tx_errors` documents.
                t.tx_errors += 1;
                tracing::debug!(%dst, error = %e, "tunnel GSO send failed");
                return;
            }
        }
    }
    for pair in chunk.chunks(2) {
        send_one_iov(sock, pair, dst, t);
    }
}

/// One datagram gathered from `iov`, counted.
pub(crate) fn send_one_iov(
    sock: &UdpSocket,
    iov: &[IoSlice<'_>],
    dst: SocketAddrV4,
    t: &mut TunnelStats,
) {
    match udp::send_iov(sock, iov, dst) {
        Ok(n) => {
            t.tx_packets += 1;
            t.tx_bytes += n as u64;
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => t.tx_dropped += 1,
        Err(e) => {
            t.tx_errors += 1;
            tracing::debug!(%dst, error = %e, "tunnel send failed");
        }
    }
}

#[cfg(test)]
#[path = "gso_tx_tests.rs"]
mod tests;
