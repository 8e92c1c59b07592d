//! Small tunnel datagrams gathered during one burst and sent with one
//! `sendmmsg` per send socket, instead of one `sendto` each: at 64-byte
//! packets the syscall per packet is the cost.
//!
//! A datagram is copied into a fixed slot (small packets only; anything
//! larger is sent at once by the caller). Datagrams keep their order per
//! socket, and a flow always uses one socket, so a flow's packets keep
//! their order. The batch is flushed when full, before any send that does
//! not go through it, and at the end of every burst, so it adds no wait.

use std::io;
use std::net::{SocketAddrV4, UdpSocket};

use nix::sys::socket::SockaddrIn;

use crate::stats::TunnelStats;
use crate::sys::udp::{self, MmsgHeaders};

/// Datagrams per batch.
pub const SLOTS: usize = 32;
/// Largest datagram a slot holds (an MTU-sized VXLAN packet and more).
pub const SLOT_LEN: usize = 2048;

/// The pending datagrams of one worker.
pub struct TxBatch {
    buf: Box<[u8]>,
    lens: [usize; SLOTS],
    dsts: [SocketAddrV4; SLOTS],
    socks: [usize; SLOTS],
    n: usize,
    headers: MmsgHeaders,
}

impl std::fmt::Debug for TxBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxBatch").field("pending", &self.n).finish()
    }
}

impl Default for TxBatch {
    fn default() -> Self {
        TxBatch {
            buf: vec![0; SLOTS * SLOT_LEN].into_boxed_slice(),
            lens: [0; SLOTS],
            dsts: [SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0); SLOTS],
            socks: [0; SLOTS],
            n: 0,
            headers: udp::mmsg_headers(SLOTS),
        }
    }
}

impl TxBatch {
    /// Whether `len` bytes fit a slot.
    pub fn fits(len: usize) -> bool {
        len <= SLOT_LEN
    }

    /// Whether no datagram is pending.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Whether every slot is taken.
    pub fn is_full(&self) -> bool {
        self.n == SLOTS
    }

    /// Queues `data` for `dst` on socket `sock`. The caller checked
    /// [`TxBatch::fits`] and flushed a full batch; otherwise false.
    pub fn push(&mut self, sock: usize, data: &[u8], dst: SocketAddrV4) -> bool {
        if self.is_full() || !Self::fits(data.len()) {
            return false;
        }
        let i = self.n;
        self.buf[i * SLOT_LEN..i * SLOT_LEN + data.len()].copy_from_slice(data);
        self.lens[i] = data.len();
        self.dsts[i] = dst;
        self.socks[i] = sock;
        self.n += 1;
        true
    }

    /// Sends everything pending: one `sendmmsg` per socket (more if the
    /// kernel takes part of a batch), counted in `t`. A full socket buffer
    /// drops the rest of that socket's datagrams (`tx_dropped`); another
    /// error costs the one datagram it names (`tx_errors`).
    pub fn flush(&mut self, socks: &[UdpSocket], t: &mut TunnelStats) {
        let n = std::mem::take(&mut self.n);
        let mut done = [false; SLOTS];
        for first in 0..n {
            if done[first] {
                continue;
            }
            let sock = self.socks[first];
            let mut iovs = [[io::IoSlice::new(&[])]; SLOTS];
            let mut addrs: [Option<SockaddrIn>; SLOTS] = [None; SLOTS];
            let mut k = 0;
            for (i, d) in done.iter_mut().enumerate().take(n).skip(first) {
                if self.socks[i] == sock && !*d {
                    *d = true;
                    iovs[k] = [io::IoSlice::new(
                        &self.buf[i * SLOT_LEN..i * SLOT_LEN + self.lens[i]],
                    )];
                    addrs[k] = Some(SockaddrIn::from(self.dsts[i]));
                    k += 1;
                }
            }
            let Some(s) = socks.get(sock) else {
                t.tx_errors += k as u64;
                continue;
            };
            let mut from = 0;
            while from < k {
                match udp::send_many(s, &mut self.headers, &iovs[from..k], &addrs[from..k]) {
                    Ok(0) => {
                        t.tx_dropped += (k - from) as u64;
                        break;
                    }
                    Ok(sent) => {
                        t.tx_packets += sent as u64;
                        t.tx_bytes += iovs[from..from + sent]
                            .iter()
                            .map(|v| v[0].len() as u64)
                            .sum::<u64>();
                        t.tx_mmsg_sends += 1;
                        from += sent;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        t.tx_dropped += (k - from) as u64;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        t.tx_errors += 1;
                        tracing::debug!(error = %e, "tunnel sendmmsg failed");
                        from += 1;
                    }
                }
            }
        }
    }
}
