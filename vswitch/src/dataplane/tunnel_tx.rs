//! The worker's tunnel send path: a packet the core sends to another node
//! leaves as one datagram (small ones batched for one `sendmmsg`), or, a
//! super-packet, cut into segments sent with `UDP_SEGMENT`. Part of the
//! dataplane driver; it performs the core's `Action::Tunnel` and knows no
//! forwarding rule.

use std::io;
use std::net::UdpSocket;

use encap::{gso, vnet};

use super::{TunnelStats, Worker};
use crate::gso_tx;
use crate::txbatch::TxBatch;

impl Worker {
    /// Sends what [`TxBatch`] holds.
    pub(super) fn flush_tx(&mut self) {
        if self.tx_batch.is_empty() {
            return;
        }
        let socks = if self.tx_sockets.is_empty() {
            std::slice::from_ref(&self.tunnel)
        } else {
            &self.tx_sockets[..]
        };
        self.tx_batch.flush(socks, &mut self.tunnel_stats);
    }

    /// Sends the packet to another node: a plain packet as one datagram
    /// (small ones through [`TxBatch`]), a partial checksum completed
    /// first, a super-packet cut into segments sent with `UDP_SEGMENT` (one
    /// send per up to 64 segments), each segment's headers written apart
    /// and its payload sent from where it is ([`gso_tx`]).
    pub(super) fn send_tunnel(&mut self, dst: std::net::SocketAddrV4, hash: u32, l3: usize) {
        // The flow's lane: with LANES send sockets, the source port's
        // residue that the receiver's reuseport program reads back.
        let sock_index = match self.tx_sockets.len() {
            0 => 0,
            n => encap::flow::lane(hash) % n,
        };
        let plain = !self.pkt.offload.is_gso();
        if self.tx_batch.is_full()
            || (!self.tx_batch.is_empty() && (!plain || !TxBatch::fits(self.pkt.len())))
        {
            // Keep the order: what is queued goes before this packet.
            self.flush_tx();
        }
        let sock = if self.tx_sockets.is_empty() {
            &self.tunnel
        } else {
            &self.tx_sockets[sock_index]
        };
        let off = self.pkt.offload;
        let t = &mut self.tunnel_stats;
        if !off.is_gso() {
            if off.flags & vnet::F_NEEDS_CSUM != 0 {
                // csum_start counts from the frame's Ethernet header (14
                // bytes), which now sits at l3 - 14 of the data.
                let start =
                    (usize::from(off.csum_start) + l3).checked_sub(encap::ethernet::HEADER_LEN);
                let done = start.map(|s| {
                    gso::complete_checksum(self.pkt.data_mut(), s, usize::from(off.csum_offset))
                });
                if !matches!(done, Some(Ok(()))) {
                    t.tx_offload_errors += 1;
                    return;
                }
            }
            if let Some(t) = &self.taps {
                let src = self.tx_local.get(sock_index).unwrap_or(&self.tunnel_local);
                t.tunnel(*src, dst, &[self.pkt.data()]);
            }
            if !self.tx_batch.push(sock_index, self.pkt.data(), dst) {
                send_one(sock, self.pkt.data(), dst, t);
            }
            return;
        }
        let mss = usize::from(off.gso_size);
        let pkt = self.pkt.data();
        let segs = match off.gso_type & !vnet::GSO_ECN {
            vnet::GSO_TCPV4 => gso::segment_tcp4_headers(pkt, l3, mss, &mut self.hdr_buf),
            vnet::GSO_UDP_L4 => gso::segment_udp4_headers(pkt, l3, mss, &mut self.hdr_buf),
            _ => Err(encap::Error::Unsupported),
        };
        let segs = match segs {
            Ok(s) => s,
            Err(e) => {
                t.tx_offload_errors += 1;
                tracing::debug!(error = %e, "cannot segment a super-packet");
                return;
            }
        };
        if let Some(cap) = &self.taps {
            // One record per segment, as it goes on the wire.
            let src = *self.tx_local.get(sock_index).unwrap_or(&self.tunnel_local);
            for i in 0..segs.segs.count {
                if let Some((h, p)) = segs.parts(i, &self.hdr_buf, pkt) {
                    cap.tunnel(src, dst, &[h, p]);
                }
            }
        }
        t.tx_gso_packets += 1;
        t.tx_gso_segments += segs.segs.count as u64;
        gso_tx::send_segments(sock, &segs, &self.hdr_buf, pkt, dst, &mut self.gso, t);
    }
}

/// One datagram, counted.
fn send_one(sock: &UdpSocket, data: &[u8], dst: std::net::SocketAddrV4, t: &mut TunnelStats) {
    crate::gso_tx::send_one_iov(sock, &[io::IoSlice::new(data)], dst, t);
}
