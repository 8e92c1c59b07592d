//! The `floor` system: the least that any forwarder built as twill is (a
//! userspace process between a TAP and a UDP socket on each node) has to
//! do, with nothing else. What twill-vxlan costs above it is twill's own;
//! what it costs above kernel-vxlan is the architecture's, and no
//! switching code can win it back.
//!
//! Per node: pod's TAP (vnet header, the offloads twill asks for), one UDP
//! socket on the underlay (`UDP_GRO`), and two threads: one blocks in
//! `read` on the TAP and sends the frame, vnet header and all, to the other
//! node in one `send` (`UDP_SEGMENT` when it is longer than a datagram);
//! the other blocks in `recv` and writes what it got to the TAP. Two
//! syscalls per frame per node, no epoll, no parsing, no segmenting or
//! coalescing: a 64 KiB super-frame crosses whole.
//!
//! That wire format is not VXLAN, and it holds only because the veth
//! underlay passes a UDP GSO send to the receiving socket as one buffer
//! (without `UDP_GRO` the receiver would get its pieces). A message that
//! arrives cut anyway would be written to the TAP broken, and the pod's
//! kernel would drop it. The pods share one /16, so ARP crosses the wire
//! like any frame.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use anyhow::{bail, Context, Result};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::{shutdown, Shutdown};
use vswitch::dataplane::negotiate_offloads;
use vswitch::sys::tap::{Tap, TUN_F_TSO4};
use vswitch::sys::udp::{self, UdpOptions};

use crate::link::addr_up;
use crate::netns::Netns;

/// The floor's UDP port on both nodes.
pub(super) const PORT: u16 = 8499;
/// The pods' MTU: twill-vxlan's and kernel-vxlan's, so that TCP sends the
/// same segments over all three.
pub(super) const POD_MTU: u32 = 1450;
/// Largest UDP payload in one underlay datagram (MTU 1500 less IPv4 and
/// UDP headers); longer messages go as `UDP_SEGMENT` sends of this size.
const DATAGRAM: usize = 1500 - 20 - 8;
/// A receive buffer: the largest super-frame with its vnet header.
const BUF: usize = 65536 + 64;

/// One node's counters.
#[derive(Debug, Default)]
struct Counters {
    /// TAP → socket: frames whose send failed.
    send_dropped: AtomicU64,
    /// Socket → TAP: messages whose write failed.
    write_dropped: AtomicU64,
    /// The longest frame (with its vnet header) read from the TAP.
    longest: AtomicU64,
}

/// One node's forwarder. Dropping it deletes the TAP (which ends the TAP
/// reader's blocking `read`) and shuts the socket down (which ends the
/// `recv`), then joins both threads.
#[derive(Debug)]
pub(super) struct FloorNode {
    pod: Netns,
    tap_name: String,
    sock: Arc<UdpSocket>,
    counters: Arc<Counters>,
    threads: Vec<JoinHandle<()>>,
}

impl FloorNode {
    /// Builds the forwarder of the node in `node` (whose underlay holds
    /// `local`) towards `peer`, with a pod namespace (prefix `pod_prefix`)
    /// whose TAP gets `pod_ip`/16 and MTU [`POD_MTU`].
    pub(super) fn start(
        node: &Netns,
        local: Ipv4Addr,
        peer: Ipv4Addr,
        pod_prefix: &str,
        pod_ip: Ipv4Addr,
    ) -> Result<FloorNode> {
        let pod = Netns::new(pod_prefix)?;
        let (tap, sock) = node.run_in(|| -> Result<(Tap, UdpSocket)> {
            let tap = Tap::create("twfloor%d").context("creating the floor's TAP")?;
            // twill's offloads, negotiated as twill does; without TSO this
            // would be no floor of twill with offloads.
            if negotiate_offloads(&tap) & TUN_F_TSO4 == 0 {
                bail!("the floor's TAP refused the offloads twill asks for");
            }
            let opts = UdpOptions {
                reuse_port: false,
                recv_buf: Some(4 << 20),
                send_buf: Some(4 << 20),
            };
            let sock = udp::bind_udp(SocketAddrV4::new(local, PORT), opts)?;
            udp::enable_gro(&sock)?;
            sock.set_nonblocking(false)?;
            Ok((tap, sock))
        })??;
        // Both threads block: the floor pays no epoll.
        let flags = fcntl(tap.as_raw_fd(), FcntlArg::F_GETFL).context("the TAP's flags")?;
        let blocking = OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK;
        fcntl(tap.as_raw_fd(), FcntlArg::F_SETFL(blocking)).context("making the TAP blocking")?;
        let tap_name = tap.current_name()?;
        node.ip(&["link", "set", &tap_name, "netns", pod.name()])?;
        pod.ip(&["link", "set", &tap_name, "mtu", &POD_MTU.to_string()])?;
        addr_up(&pod, &tap_name, pod_ip, 16)?;

        let (tap, sock, counters) = (Arc::new(tap), Arc::new(sock), Arc::new(Counters::default()));
        let mut threads = Vec::new();
        let (t, s, d) = (tap.clone(), sock.clone(), counters.clone());
        let dst = SocketAddrV4::new(peer, PORT);
        threads.push(thread::spawn(move || tap_to_socket(&t, &s, dst, &d)));
        let (t, s, d) = (tap, sock.clone(), counters.clone());
        threads.push(thread::spawn(move || socket_to_tap(&s, &t, &d)));
        Ok(FloorNode {
            pod,
            tap_name,
            sock,
            counters,
            threads,
        })
    }

    /// The pod's namespace.
    pub(super) fn pod(&self) -> &Netns {
        &self.pod
    }

    /// Frames dropped so far: (TAP → socket, socket → TAP).
    pub(super) fn drops(&self) -> (u64, u64) {
        (
            self.counters.send_dropped.load(Ordering::Relaxed),
            self.counters.write_dropped.load(Ordering::Relaxed),
        )
    }

    /// The longest frame read from the TAP so far, vnet header included.
    #[cfg(test)]
    fn longest(&self) -> u64 {
        self.counters.longest.load(Ordering::Relaxed)
    }
}

impl Drop for FloorNode {
    fn drop(&mut self) {
        // Deleting the netdev wakes a reader blocked on its fd (the kernel
        // shuts the queue's socket down); shutdown(2) wakes a `recv`.
        let _ = self.pod.ip(&["link", "del", &self.tap_name]);
        let _ = shutdown(self.sock.as_raw_fd(), Shutdown::Both);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Reads frames until the TAP is gone; each goes out as one send.
fn tap_to_socket(tap: &Tap, sock: &UdpSocket, dst: SocketAddrV4, counters: &Counters) {
    let mut buf = vec![0u8; BUF];
    loop {
        let n = match tap.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        counters.longest.fetch_max(n as u64, Ordering::Relaxed);
        let sent = if n <= DATAGRAM {
            sock.send_to(&buf[..n], dst)
        } else {
            udp::send_gso(sock, &buf[..n], DATAGRAM as u16, dst)
        };
        if sent.is_err() {
            counters.send_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Receives messages until the socket is shut down; each is written to the
/// TAP as it came.
fn socket_to_tap(sock: &UdpSocket, tap: &Tap, counters: &Counters) {
    let mut buf = vec![0u8; BUF];
    loop {
        let n = match sock.recv(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        if tap.write(&buf[..n]).is_err() {
            counters.write_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::Underlay;
    use crate::traffic::{ping, tcp_transfer};

    /// Pods on two floor nodes reach each other (ARP crosses like any
    /// frame), and a TCP stream sent as super-frames (TSO) arrives intact,
    /// which it does only if each crossed whole; nothing is dropped, and the
    /// nodes stop when dropped.
    #[test]
    fn floor_carries_arp_pings_and_tcp_super_frames_whole() {
        if !crate::is_root() {
            eprintln!("skipped: needs root (network namespaces, TAP devices)");
            return;
        }
        let ns_a = Netns::new("twl-t-floor-a").unwrap();
        let ns_b = Netns::new("twl-t-floor-b").unwrap();
        let (ip_a, ip_b) = (
            Ipv4Addr::new(192, 168, 78, 1),
            Ipv4Addr::new(192, 168, 78, 2),
        );
        Underlay::pair(&ns_a, &ns_b, ip_a, ip_b, 24).unwrap();
        let (pod_a, pod_b) = (Ipv4Addr::new(10, 244, 1, 2), Ipv4Addr::new(10, 244, 2, 2));
        let a = FloorNode::start(&ns_a, ip_a, ip_b, "twl-t-floor-pa", pod_a).unwrap();
        let b = FloorNode::start(&ns_b, ip_b, ip_a, "twl-t-floor-pb", pod_b).unwrap();

        let p = ping(a.pod(), pod_b, 3).unwrap();
        assert_eq!(p.received, 3, "{p:?}");
        let bytes = 32 << 20;
        let t = tcp_transfer(b.pod(), pod_b, a.pod(), bytes).unwrap();
        assert_eq!(t.bytes, bytes);
        assert!(
            a.longest() as usize > DATAGRAM,
            "pod A sent no frame longer than a datagram ({} bytes at most): no super-frame crossed",
            a.longest()
        );
        assert_eq!(a.drops(), (0, 0));
        assert_eq!(b.drops(), (0, 0));

        let pod_names = [a.pod().name().to_owned(), b.pod().name().to_owned()];
        drop((a, b));
        for name in pod_names {
            assert!(!Netns::exists(&name), "{name} is left");
        }
    }
}
