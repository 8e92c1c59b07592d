//! The worker's tunnel receive path: messages from the tunnel socket, many
//! per `recvmmsg`, each one datagram or a `UDP_GRO` batch of them, every
//! datagram processed where it landed, through the core; with offloads,
//! TCP segments bound for one port coalesced into a TSO super-frame, and
//! UDP datagrams into a USO one for a port that accepted USO, before the
//! TAP write. Part of the dataplane driver; it performs the core's actions
//! and knows no forwarding rule.
//!
//! Memory per worker: [`RX_BATCH`] buffers of `BUF_LEN` (64 KiB + 192
//! bytes) each, since any message may be a 64 KiB GRO batch and a
//! truncated one is an error: 513 KiB, of which only the pages that
//! messages reach are ever touched (one each for small datagrams).

use std::io;
use std::time::Instant;

use encap::gro::{self, Kind};

use super::{count_write, Worker, BURST, HEADROOM};
use crate::core::{Action, PortId};
use crate::sys::tap::{TUN_F_USO4, VNET_HDR_LEN};
use crate::sys::udp;

/// One message: at most 64 KiB of datagrams (one, or a `UDP_GRO` batch),
/// received into its buffer behind [`HEADROOM`] and processed there in
/// place.
const RX_BUF_LEN: usize = 65536;

/// Messages asked of one `recvmmsg`; [`BURST`] bounds the messages per
/// wake-up.
pub(super) const RX_BATCH: usize = 8;

impl Worker {
    /// Receives what the tunnel socket holds, up to [`BURST`] messages:
    /// one `recvmmsg` per [`RX_BATCH`] of them, until one returns fewer
    /// (the socket is drained: no further call just to hear `EAGAIN`).
    /// What the coalescer holds at the end is written out.
    pub(super) fn tunnel_rx(&mut self) {
        let mut messages = 0;
        while messages < BURST {
            let bufs = self.rx_bufs.iter_mut().map(|b| {
                let room = b.reset(HEADROOM);
                let cap = room.len().min(RX_BUF_LEN);
                &mut room[..cap]
            });
            let n = match udp::recv_many(&self.tunnel, &mut self.rx_batch, bufs) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.rx_failed(&e);
                    break;
                }
            };
            self.tunnel_stats.rx_mmsg_calls += 1;
            self.tunnel_stats.rx_mmsg_messages += n as u64;
            messages += n;
            for i in 0..n {
                match self.rx_batch.message(i) {
                    Ok(m) => self.tunnel_rx_message(i, m),
                    Err(e) => self.rx_failed(&e),
                }
            }
            if n < self.rx_batch.capacity() {
                break;
            }
        }
        self.flush_coalesced();
    }

    /// Counts a failed receive (`rx_errors`); reports it once a minute.
    fn rx_failed(&mut self, e: &dyn std::fmt::Display) {
        self.tunnel_stats.rx_errors += 1;
        if let Some(s) = self.rx_error_log.hit(Instant::now()) {
            let socket = self
                .tunnel
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            tracing::warn!(%socket, error = %e, suppressed = s.count, "tunnel receive failed");
        }
    }

    /// Processes message `i` of the last receive, `m`: each of its
    /// datagrams goes through the core on its own, where it was received
    /// ([`encap::buf::Datagrams`]: the previous datagram's bytes are its
    /// headroom, 64 bytes of the next one, saved and restored, its
    /// tailroom), in `rx_bufs[i]` swapped in as `pkt` meanwhile. With
    /// offloads, TCP segments bound for the same port are merged into
    /// super-frames (one TAP write, one pass of the pod's TCP receive path,
    /// for up to 64 KiB), UDP datagrams likewise (up to 64). Every use of a
    /// datagram (TAP write, coalescer or batch copy, send) ends before the
    /// next one is taken.
    fn tunnel_rx_message(&mut self, i: usize, m: udp::Received) {
        let Some(from) = m.from else {
            // Every datagram of it (an empty one is one).
            let seg = m.seg.unwrap_or(m.len).max(1);
            self.tunnel_stats.rx_not_ipv4 += m.len.div_ceil(seg).max(1) as u64;
            return;
        };
        if m.len == 0 {
            // An empty datagram: counted like any other, and dropped by the
            // core as truncated (the datagram walk below yields nothing).
            self.tunnel_stats.rx_packets += 1;
            let pkt = &mut self.rx_bufs[i];
            pkt.reset(HEADROOM);
            pkt.set_len(0);
            let a = self.sw.process_tunnel(from, pkt, Instant::now());
            debug_assert!(matches!(a, Action::Drop(_)), "{a:?}");
            return;
        }
        let seg = m.seg.unwrap_or(m.len).max(1);
        self.tunnel_stats.rx_gro_batches += u64::from(m.len > seg);
        std::mem::swap(&mut self.pkt, &mut self.rx_bufs[i]);
        let now = Instant::now();
        let mut datagrams = self.pkt.datagrams(m.len, seg);
        while datagrams.next(&mut self.pkt) {
            self.tunnel_stats.rx_packets += 1;
            self.tunnel_stats.rx_bytes += self.pkt.len() as u64;
            if let Some(t) = &self.taps {
                t.tunnel(from, self.tunnel_local, &[self.pkt.data()]);
            }
            match self.sw.process_tunnel(from, &mut self.pkt, now) {
                Action::Output(p) if self.offload => self.output_coalesced(p),
                a => {
                    self.flush_coalesced();
                    self.perform(a);
                }
            }
        }
        std::mem::swap(&mut self.pkt, &mut self.rx_bufs[i]);
    }

    /// Offers the packet, bound for port `p`, to the coalescer of its kind
    /// (UDP only if the port accepted USO); what cannot be merged is
    /// written as it is, in order. One super-frame is built at a time: one
    /// of another kind or port is written first.
    fn output_coalesced(&mut self, p: PortId) {
        let kind = match gro::kind(self.pkt.data()) {
            Some(k) if self.pkt.offload.is_plain() && (k == Kind::Tcp || self.takes_uso(p)) => k,
            _ => {
                self.flush_coalesced();
                self.write_port(p);
                return;
            }
        };
        if self.coal_at != Some((p, kind)) {
            self.flush_coalesced();
        }
        let mut r = self.coal_push(kind);
        if r == gro::Push::Flush {
            self.flush_coalesced();
            r = self.coal_push(kind);
        }
        match r {
            gro::Push::Merged => self.coal_at = Some((p, kind)),
            gro::Push::Flush | gro::Push::Bypass => {
                self.flush_coalesced();
                self.write_port(p);
            }
        }
    }

    /// Offers the packet to the coalescer of `kind`.
    fn coal_push(&mut self, kind: Kind) -> gro::Push {
        match kind {
            Kind::Tcp => self.coal.push(self.pkt.data()),
            Kind::Udp => self.coal_udp.push(self.pkt.data()),
        }
    }

    /// Port `p`'s TAP accepted `TUN_F_USO4`: its kernel (6.2+) takes USO
    /// frames.
    fn takes_uso(&self, p: PortId) -> bool {
        matches!(self.ports.get(usize::from(p.0)), Some(Some(slot)) if slot.stats.offloads & TUN_F_USO4 != 0)
    }

    /// Writes the super-frame being built, if any, to its port.
    fn flush_coalesced(&mut self) {
        let Some((p, kind)) = self.coal_at.take() else {
            return;
        };
        let (merged, taken) = match kind {
            Kind::Tcp => (self.coal.segments() as u64, self.coal.take()),
            Kind::Udp => (self.coal_udp.datagrams() as u64, self.coal_udp.take()),
        };
        let Some((hdr, frame)) = taken else {
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
        if let Some(t) = &self.taps {
            t.port(p, frame);
        }
        let written = slot.tap.write_frame(&h, frame);
        if count_write(&mut slot.stats, written, frame.len()) && merged > 1 {
            let t = &mut self.tunnel_stats;
            match kind {
                Kind::Tcp => {
                    t.rx_coalesced_frames += 1;
                    t.rx_coalesced_segments += merged;
                }
                Kind::Udp => {
                    t.rx_coalesced_udp_frames += 1;
                    t.rx_coalesced_udp_datagrams += merged;
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "tunnel_rx_tests.rs"]
mod tests;
