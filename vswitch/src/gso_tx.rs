//! Sending a segmented super-packet through the tunnel without copying its
//! payload: [`encap::gso::segment_tcp4_headers`] (or the UDP one) wrote each
//! segment's headers into a small buffer; here every `UDP_SEGMENT` send
//! gathers up to 64 segments as an iovec list alternating headers `i` (in
//! that buffer) and payload `i` (in the packet itself), and the kernel cuts
//! the concatenation at `seg_len`. Where the kernel refuses `UDP_SEGMENT`,
//! each segment goes in its own two-slice send.
//!
//! No forwarding rule here, and no allocation: the iovec array is on the
//! stack.

use std::io::{self, IoSlice};
use std::net::{SocketAddrV4, UdpSocket};

use encap::gso::HeaderSegments;

use crate::dataplane::TunnelStats;
use crate::sys::udp;

/// Sends the datagrams `hs` describes (headers in `hdrs`, payloads in
/// `pkt`) to `dst`, with `UDP_SEGMENT` while `*udp_gso` holds (cleared at
/// the kernel's first refusal), and counts every datagram in `t`: sent
/// (`tx_packets`, `tx_bytes`), refused for a full buffer (`tx_dropped`) or
/// failed (`tx_errors`).
pub(crate) fn send_segments(
    sock: &UdpSocket,
    hs: &HeaderSegments,
    hdrs: &[u8],
    pkt: &[u8],
    dst: SocketAddrV4,
    udp_gso: &mut bool,
    t: &mut TunnelStats,
) {
    let segs = hs.segs;
    let per_send = (udp::GSO_MAX_BYTES / segs.seg_len.max(1)).min(udp::GSO_MAX_SEGMENTS);
    // Segments too large for two to share a send, or a single one: no GSO.
    let gso_size = u16::try_from(segs.seg_len)
        .ok()
        .filter(|_| per_send > 1 && segs.count > 1);
    let per_send = per_send.max(1);
    let mut iov = [IoSlice::new(&[]); 2 * udp::GSO_MAX_SEGMENTS];
    let mut first = 0;
    while first < segs.count {
        let n = per_send.min(segs.count - first);
        for (k, i) in (first..first + n).enumerate() {
            // Cannot fail for the buffers given to the segmentation.
            let Some((h, p)) = hs.parts(i, hdrs, pkt) else {
                t.tx_offload_errors += 1;
                return;
            };
            iov[2 * k] = IoSlice::new(h);
            iov[2 * k + 1] = IoSlice::new(p);
        }
        first += n;
        let chunk = &iov[..2 * n];
        if let (Some(size), true) = (gso_size, *udp_gso) {
            match udp::send_gso_iov(sock, chunk, size, dst) {
                Ok(bytes) => {
                    t.tx_gso_sends += 1;
                    t.tx_packets += n as u64;
                    t.tx_bytes += bytes as u64;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    t.tx_dropped += n as u64;
                    continue;
                }
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT)
                    ) =>
                {
                    tracing::warn!(error = %e, "the kernel refuses UDP_SEGMENT; sending segment by segment");
                    *udp_gso = false;
                    t.tx_gso_unsupported += 1;
                }
                Err(e) => {
                    // Counted per send, as `tx_errors` documents.
                    t.tx_errors += 1;
                    tracing::debug!(%dst, error = %e, "tunnel GSO send failed");
                    continue;
                }
            }
        }
        for pair in chunk.chunks(2) {
            send_one_iov(sock, pair, dst, t);
        }
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
