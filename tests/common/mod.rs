//! Shared pieces of the namespace integration tests: the lab, the root check,
//! a two-node cluster and hand-made tunnel packets.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use ipnet::Ipv4Net;

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
    let b = etherparse::PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src.ip().octets(), dst.ip().octets(), 64)
        .udp(src.port(), dst.port());
    let v = vni.to_be_bytes();
    let mut out = vec![0x08, 0, 0, 0, v[1], v[2], v[3], 0];
    b.write(&mut out, payload)?;
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
        let ns_a = Netns::new("twl-t-a")?;
        let ns_b = Netns::new("twl-t-b")?;
        let underlay = Underlay::pair(&ns_a, &ns_b, UNDERLAY_A, UNDERLAY_B, 24)?;
        let mut cfg_a = NodeConfig::new("node-a", UNDERLAY_A, subnet(1), backend);
        let mut cfg_b = NodeConfig::new("node-b", UNDERLAY_B, subnet(2), backend);
        cfg_a.peers.push(cfg_b.as_peer());
        cfg_b.peers.push(cfg_a.as_peer());
        tweak(&mut cfg_a);
        tweak(&mut cfg_b);
        let bin = twill_bin();
        let node_a = NodeProcess::start_args(&bin, &ns_a, cfg_a, args)?;
        let node_b = NodeProcess::start_args(&bin, &ns_b, cfg_b, args)?;
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
