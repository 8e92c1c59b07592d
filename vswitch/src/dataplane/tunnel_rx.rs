//! The worker's tunnel receive path: datagrams from the tunnel socket (many
//! per `UDP_GRO` receive, processed where they landed) through the core,
//! and TCP segments bound for one port coalesced into super-frames before
//! the TAP write. Part of the dataplane driver; it performs the core's
//! actions and knows no forwarding rule.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use encap::gro;

use super::{count_write, Worker, BURST, HEADROOM};
use crate::core::{Action, PortId};
use crate::sys::tap::VNET_HDR_LEN;
use crate::sys::udp;

/// One `UDP_GRO` receive: at most 64 KiB of datagrams, received into
/// `pkt` behind [`HEADROOM`] and processed there in place.
const RX_BUF_LEN: usize = 65536;

impl Worker {
    pub(super) fn tunnel_rx(&mut self) {
        if self.tunnel_stats.rx_gro {
            self.tunnel_rx_gro();
        } else {
            self.tunnel_rx_single();
        }
    }

    fn tunnel_rx_single(&mut self) {
        for _ in 0..BURST {
            let room = self.pkt.reset(HEADROOM);
            let (n, from) = match self.tunnel.recv_from(room) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.tunnel_stats.rx_errors += 1;
                    tracing::warn!(error = %e, "tunnel receive failed");
                    return;
                }
            };
            self.pkt.set_len(n);
            self.tunnel_stats.rx_packets += 1;
            self.tunnel_stats.rx_bytes += n as u64;
            let SocketAddr::V4(from) = from else {
                self.tunnel_stats.rx_not_ipv4 += 1;
                continue;
            };
            let a = self.sw.process_tunnel(from, &mut self.pkt, Instant::now());
            self.perform(a);
        }
    }

    /// Receives with `UDP_GRO`: each receive may hold many datagrams of
    /// one sender. Each goes through the core on its own, where it was
    /// received ([`encap::buf::Datagrams`]: the previous datagram's bytes
    /// are its headroom, 64 bytes of the next one, saved and restored, its
    /// tailroom); TCP segments bound for the same port are merged into
    /// super-frames (one TAP write, one pass of the pod's TCP receive path,
    /// for up to 64 KiB). Every use of a datagram (TAP write, coalescer or
    /// batch copy, send) ends before the next one is taken.
    fn tunnel_rx_gro(&mut self) {
        for _ in 0..BURST {
            // The datagrams land in the packet buffer itself and are
            // processed there, one after the other (no copy out).
            let room = self.pkt.reset(HEADROOM);
            let cap = room.len().min(RX_BUF_LEN);
            let (n, from, seg) =
                match udp::recv_gro(&self.tunnel, &mut room[..cap], &mut self.rx_cmsg) {
                    Ok(r) => r,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.tunnel_stats.rx_errors += 1;
                        tracing::warn!(error = %e, "tunnel receive failed");
                        break;
                    }
                };
            let seg = seg.unwrap_or(n).max(1);
            self.tunnel_stats.rx_gro_batches += u64::from(n > seg);
            let now = Instant::now();
            let mut datagrams = self.pkt.datagrams(n, seg);
            while datagrams.next(&mut self.pkt) {
                self.tunnel_stats.rx_packets += 1;
                self.tunnel_stats.rx_bytes += self.pkt.len() as u64;
                match self.sw.process_tunnel(from, &mut self.pkt, now) {
                    Action::Output(p) => self.output_coalesced(p),
                    a => {
                        self.flush_coalesced();
                        self.perform(a);
                    }
                }
            }
        }
        self.flush_coalesced();
    }

    /// Offers the packet, bound for port `p`, to the coalescer; what cannot
    /// be merged is written as it is, in order.
    fn output_coalesced(&mut self, p: PortId) {
        if !self.pkt.offload.is_plain() {
            self.flush_coalesced();
            self.write_port(p);
            return;
        }
        if self.coal_port != Some(p) {
            self.flush_coalesced();
        }
        let mut r = self.coal.push(self.pkt.data());
        if r == gro::Push::Flush {
            self.flush_coalesced();
            r = self.coal.push(self.pkt.data());
        }
        match r {
            gro::Push::Merged => self.coal_port = Some(p),
            gro::Push::Flush | gro::Push::Bypass => {
                self.flush_coalesced();
                self.write_port(p);
            }
        }
    }

    /// Writes the coalescer's super-frame, if any, to its port.
    fn flush_coalesced(&mut self) {
        let Some(p) = self.coal_port.take() else {
            return;
        };
        let segments = self.coal.segments() as u64;
        let Some((hdr, frame)) = self.coal.take() else {
            return;
        };
        let Some(Some(slot)) = self.ports.get_mut(usize::from(p.0)) else {
            return;
        };
        let mut h = [0u8; VNET_HDR_LEN];
        if hdr.emit(&mut h).is_err() {
            slot.stats.tx_errors += 1;
            return;
        }
        let written = slot.tap.write_frame(&h, frame);
        if count_write(&mut slot.stats, written, frame.len()) && segments > 1 {
            self.tunnel_stats.rx_coalesced_frames += 1;
            self.tunnel_stats.rx_coalesced_segments += segments;
        }
    }
}
