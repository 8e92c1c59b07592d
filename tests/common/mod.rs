//! Shared pieces of the namespace integration tests: the lab, the root check,
//! a two-node cluster and hand-made tunnel packets.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use ipnet::Ipv4Net;
use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, LinkAddr, MsgFlags, SockFlag, SockProtocol, SockType};
use nix::sys::time::TimeVal;

pub use twill_lab::*;

pub mod cni;

/// The `twill` binary cargo built for these tests.
pub fn twill_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_twill"))
}

/// True when the test may run. Without root it prints a loud SKIPPED line and
/// returns false — unless `TWILL_REQUIRE_ROOT=1` (CI), where it panics. The
/// first call also removes what killed earlier runs left behind.
pub fn require_root(test: &str) -> bool {
    if is_root() {
        static CLEANUP: std::sync::Once = std::sync::Once::new();
        CLEANUP.call_once(|| {
            for gone in cleanup_stale() {
                eprintln!("lab: removed leftover {gone}");
            }
        });
        return true;
    }
    if std::env::var("TWILL_REQUIRE_ROOT").is_ok_and(|v| v == "1") {
        panic!("{test}: needs root, and TWILL_REQUIRE_ROOT=1 forbids skipping");
    }
    eprintln!("\n!!!!! SKIPPED {test}: needs root (network namespaces) !!!!!\n");
    false
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next().ok_or_else(|| anyhow!("short MAC {s:?}"))?;
        *b = u8::from_str_radix(p, 16).with_context(|| format!("bad MAC {s:?}"))?;
    }
    if parts.next().is_some() {
        return Err(anyhow!("long MAC {s:?}"));
    }
    Ok(mac)
}

/// An IPv4/UDP packet (no link header) from `src` to `dst`.
pub fn ipv4_udp(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Result<Vec<u8>> {
    let b = etherparse::PacketBuilder::ipv4(src.ip().octets(), dst.ip().octets(), 64)
        .udp(src.port(), dst.port());
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload)?;
    Ok(out)
}

/// A VXLAN payload (RFC 7348 header with the I flag and `vni`) carrying an
/// Ethernet frame `src_mac` → `dst_mac` that holds an IPv4/UDP datagram.
pub fn vxlan_udp(
    vni: u32,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: &[u8],
) -> Result<Vec<u8>> {
    let v = vni.to_be_bytes();
    let mut out = vec![0x08, 0, 0, 0, v[1], v[2], v[3], 0];
    out.extend(ethernet_udp(src_mac, dst_mac, src, dst, payload)?);
    Ok(out)
}

/// The underlay addresses every two-node cluster uses (each test has its own
/// namespaces, so they may repeat across tests).
pub const UNDERLAY_A: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 1);
/// Node B's underlay address.
pub const UNDERLAY_B: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 2);

/// `10.244.N.0/24`.
pub fn subnet(n: u8) -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(10, 244, n, 0), 24).unwrap_or_default()
}

/// Two twill nodes joined by a veth underlay, two pods on each. Fields drop
/// in declaration order: pods, then nodes, then namespaces.
pub struct Cluster {
    pub a1: Pod,
    pub a2: Pod,
    pub b1: Pod,
    pub b2: Pod,
    pub node_a: NodeProcess,
    pub node_b: NodeProcess,
    pub underlay: Underlay,
    pub ns_b: Netns,
    pub ns_a: Netns,
}

impl Cluster {
    /// Builds the cluster with `backend` ("vxlan" or "udp").
    pub fn new(backend: &str) -> Result<Cluster> {
        Cluster::with_node_args(backend, &[])
    }

    /// Builds the cluster with `backend`, passing `args` to `twill node`.
    pub fn with_node_args(backend: &str, args: &[&str]) -> Result<Cluster> {
        Cluster::build(backend, args, |_| {})
    }

    /// Builds the cluster with `backend`, passing `args` to `twill node`,
    /// after `tweak` has seen each node's configuration.
    pub fn build(backend: &str, args: &[&str], tweak: impl Fn(&mut NodeConfig)) -> Result<Cluster> {
        Cluster::build_in(&twill_bin(), backend, args, tweak)
    }

    /// [`Cluster::with_node_args`] with the nodes run by `bin` (e.g. a
    /// release build, for measurements).
    pub fn build_with_bin(bin: &std::path::Path, backend: &str, args: &[&str]) -> Result<Cluster> {
        Cluster::build_in(bin, backend, args, |_| {})
    }

    fn build_in(
        bin: &std::path::Path,
        backend: &str,
        args: &[&str],
        tweak: impl Fn(&mut NodeConfig),
    ) -> Result<Cluster> {
        let ns_a = Netns::new("twl-t-a")?;
        let ns_b = Netns::new("twl-t-b")?;
        let underlay = Underlay::pair(&ns_a, &ns_b, UNDERLAY_A, UNDERLAY_B, 24)?;
        let mut cfg_a = NodeConfig::new("node-a", UNDERLAY_A, subnet(1), backend);
        let mut cfg_b = NodeConfig::new("node-b", UNDERLAY_B, subnet(2), backend);
        cfg_a.peers.push(cfg_b.as_peer());
        cfg_b.peers.push(cfg_a.as_peer());
        tweak(&mut cfg_a);
        tweak(&mut cfg_b);
        let node_a = NodeProcess::start_args(bin, &ns_a, cfg_a, args)?;
        let node_b = NodeProcess::start_args(bin, &ns_b, cfg_b, args)?;
        Ok(Cluster {
            a1: Pod::attach(&node_a, "twl-t-a1")?,
            a2: Pod::attach(&node_a, "twl-t-a2")?,
            b1: Pod::attach(&node_b, "twl-t-b1")?,
            b2: Pod::attach(&node_b, "twl-t-b2")?,
            node_a,
            node_b,
            underlay,
            ns_b,
            ns_a,
        })
    }
}

/// Bytes of every verified TCP transfer in the path tests.
pub const TCP_BYTES: usize = 8 << 20;

/// Ping, a verified TCP transfer (server at `to_ip`) and a UDP exchange from
/// `from_ip` in `from` to `to_ip` in `to`.
pub fn check_path(
    label: &str,
    from: &Netns,
    from_ip: Ipv4Addr,
    to: &Netns,
    to_ip: Ipv4Addr,
) -> Result<()> {
    ping(from, to_ip, 3).with_context(|| format!("{label}: ping"))?;
    let r = tcp_transfer(to, to_ip, from, TCP_BYTES).with_context(|| format!("{label}: TCP"))?;
    udp_exchange(from, from_ip, to, to_ip, 20).with_context(|| format!("{label}: UDP"))?;
    eprintln!(
        "{label}: ok (TCP {:.2} Gbit/s over {} bytes)",
        r.gbit_per_s, r.bytes
    );
    Ok(())
}

/// `aa:bb:cc:dd:ee:ff`, as `ip` prints a MAC.
pub fn mac_str(mac: [u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

/// The broadcast MAC.
pub const BROADCAST: [u8; 6] = [0xff; 6];
/// ARP operation: request.
pub const ARP_REQUEST: u16 = 1;
/// ARP operation: reply.
pub const ARP_REPLY: u16 = 2;

/// An ARP packet for IPv4 over Ethernet (RFC 826), every field chosen by the
/// test: what a pod's own kernel would never send is the point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    /// [`ARP_REQUEST`] or [`ARP_REPLY`].
    pub op: u16,
    /// Sender hardware address.
    pub sender_mac: [u8; 6],
    /// Sender protocol address.
    pub sender_ip: Ipv4Addr,
    /// Target hardware address.
    pub target_mac: [u8; 6],
    /// Target protocol address.
    pub target_ip: Ipv4Addr,
}

impl Arp {
    /// The Ethernet frame `eth_src` → `eth_dst` (EtherType 0x0806) holding
    /// this packet: 42 bytes, unpadded, as Linux sends ARP on a veth.
    pub fn frame(&self, eth_src: [u8; 6], eth_dst: [u8; 6]) -> Vec<u8> {
        let mut f = Vec::with_capacity(42);
        f.extend_from_slice(&eth_dst);
        f.extend_from_slice(&eth_src);
        f.extend_from_slice(&[0x08, 0x06]); // ARP
        f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4]); // Ethernet, IPv4, lengths
        f.extend_from_slice(&self.op.to_be_bytes());
        f.extend_from_slice(&self.sender_mac);
        f.extend_from_slice(&self.sender_ip.octets());
        f.extend_from_slice(&self.target_mac);
        f.extend_from_slice(&self.target_ip.octets());
        f
    }

    /// The ARP packet of an Ethernet frame, with the frame's destination;
    /// None for anything else.
    pub fn parse(frame: &[u8]) -> Option<([u8; 6], Arp)> {
        let f = frame.get(..42)?;
        if f[12..14] != [0x08, 0x06] || f[14..20] != [0, 1, 0x08, 0, 6, 4] {
            return None;
        }
        let mac = |at: usize| -> [u8; 6] { f[at..at + 6].try_into().unwrap_or_default() };
        let ip = |at: usize| Ipv4Addr::new(f[at], f[at + 1], f[at + 2], f[at + 3]);
        let arp = Arp {
            op: u16::from_be_bytes([f[20], f[21]]),
            sender_mac: mac(22),
            sender_ip: ip(28),
            target_mac: mac(32),
            target_ip: ip(38),
        };
        Some((mac(0), arp))
    }
}

/// An Ethernet frame `src_mac` → `dst_mac` holding an IPv4/UDP datagram.
pub fn ethernet_udp(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: &[u8],
) -> Result<Vec<u8>> {
    let b = etherparse::PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src.ip().octets(), dst.ip().octets(), 64)
        .udp(src.port(), dst.port());
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload)?;
    Ok(out)
}

/// A raw `AF_PACKET` socket bound to one interface of a namespace: frames
/// sent go out exactly as built, link header included, and every frame the
/// interface sends or receives can be read. No `unsafe`: the link address
/// to bind to is the interface's own `AF_PACKET` entry of `getifaddrs`.
#[derive(Debug)]
pub struct RawLink {
    fd: OwnedFd,
}

impl RawLink {
    /// Opens the socket on `ifname` inside `ns` (needs CAP_NET_RAW there).
    pub fn open(ns: &Netns, ifname: &str) -> Result<RawLink> {
        let what = format!("raw socket on {ifname} in {}", ns.name());
        ns.run_in(|| -> Result<RawLink> {
            let link: LinkAddr = nix::ifaddrs::getifaddrs()?
                .filter(|i| i.interface_name == ifname)
                .find_map(|i| i.address.and_then(|a| a.as_link_addr().copied()))
                .ok_or_else(|| anyhow!("{ifname} has no link address"))?;
            let fd = socket::socket(
                AddressFamily::Packet,
                SockType::Raw,
                SockFlag::SOCK_CLOEXEC,
                SockProtocol::EthAll,
            )?;
            // Protocol 0 in the address keeps the socket's (every EtherType).
            socket::bind(fd.as_raw_fd(), &link)?;
            Ok(RawLink { fd })
        })?
        .context(what)
    }

    /// Sends one frame.
    pub fn send(&self, frame: &[u8]) -> Result<()> {
        let n = socket::send(self.fd.as_raw_fd(), frame, MsgFlags::empty())?;
        anyhow::ensure!(n == frame.len(), "sent {n} of {} bytes", frame.len());
        Ok(())
    }

    /// Reads frames (sent and received ones) until `want` accepts one, or
    /// `timeout` has passed: whether one was accepted.
    pub fn wait_for(&self, timeout: Duration, mut want: impl FnMut(&[u8]) -> bool) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 2048];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            let tv = TimeVal::new(
                left.as_secs().try_into().unwrap_or(1),
                left.subsec_micros().max(1).into(),
            );
            socket::setsockopt(&self.fd, socket::sockopt::ReceiveTimeout, &tv)?;
            match socket::recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(n) if want(&buf[..n]) => return Ok(true),
                Ok(_) | Err(Errno::EAGAIN | Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Whether `frame` is an IPv4 packet from `src` to `dst` (bare, not in a
/// tunnel).
pub fn bare_ipv4(frame: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> bool {
    frame.len() >= 34
        && frame[12..14] == [0x08, 0x00]
        && frame[26..30] == src.octets()
        && frame[30..34] == dst.octets()
}

/// Whether `frame` is UDP to the VXLAN port 8472.
pub fn vxlan_datagram(frame: &[u8]) -> bool {
    frame.len() >= 38
        && frame[12..14] == [0x08, 0x00]
        && frame[23] == 17
        && frame[36..38] == 8472u16.to_be_bytes()
}

/// What `link` (an underlay end) carried in the 3 s from when `during`
/// starts: bare IPv4 packets between `a` and `b` either way, and VXLAN
/// datagrams; with what `during` returned.
pub fn underlay_traffic<R: Send>(
    link: &RawLink,
    a: Ipv4Addr,
    b: Ipv4Addr,
    during: impl FnOnce() -> R + Send,
) -> ((usize, usize), R) {
    std::thread::scope(|s| {
        let seen = s.spawn(|| {
            let (mut bare, mut vxlan) = (0, 0);
            let _ = link.wait_for(Duration::from_secs(3), |f| {
                bare += usize::from(bare_ipv4(f, a, b) || bare_ipv4(f, b, a));
                vxlan += usize::from(vxlan_datagram(f));
                false
            });
            (bare, vxlan)
        });
        let r = during();
        (seen.join().unwrap_or((0, 0)), r)
    })
}
