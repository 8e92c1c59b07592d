//! The switch fixture the `switch` target runs (node 10.244.2.0/24 of the
//! Linux VXLAN captures in `encap/src/fixtures`, whose sender is node
//! 10.244.1.0/24) and frame builders for the seed corpora.

use std::net::{Ipv4Addr, SocketAddrV4};

use encap::MacAddr;

use crate::net;

/// The router's (and VTEP's) MAC: the captures' inner destination.
pub const ROUTER_MAC: MacAddr = MacAddr([0x0a, 0x58, 0x0a, 0xf4, 0x02, 0x01]);
/// The gateway.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 1);
/// The VNI.
pub const VNI: u32 = 1;

/// A local port of the fixture: id, host or pod, MAC, address.
#[derive(Debug, Clone, Copy)]
pub struct LocalPort {
    /// `PortId` number.
    pub id: u16,
    /// The host port.
    pub host: bool,
    /// The MAC at the far end.
    pub mac: MacAddr,
    /// Its address.
    pub ip: Ipv4Addr,
}

/// The host port (.2) and two pods (.3, .4); port 3 stays unattached.
pub const PORTS: [LocalPort; 3] = [
    LocalPort {
        id: 0,
        host: true,
        mac: MacAddr([0x0a, 0x58, 0x0a, 0xf4, 0x02, 0x02]),
        ip: Ipv4Addr::new(10, 244, 2, 2),
    },
    LocalPort {
        id: 1,
        host: false,
        mac: MacAddr([0x0a, 0x58, 0x0a, 0xf4, 0x02, 0x03]),
        ip: Ipv4Addr::new(10, 244, 2, 3),
    },
    LocalPort {
        id: 2,
        host: false,
        mac: MacAddr([0x0a, 0x58, 0x0a, 0xf4, 0x02, 0x04]),
        ip: Ipv4Addr::new(10, 244, 2, 4),
    },
];

/// A remote node of the fixture: subnet, prefix, underlay address, VTEP MAC.
#[derive(Debug, Clone, Copy)]
pub struct Remote {
    /// Its pod subnet's address.
    pub subnet: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
    /// Underlay address and port.
    pub endpoint: SocketAddrV4,
    /// VTEP MAC.
    pub vtep: MacAddr,
}

/// Node 10.244.1.0/24 (the captures' sender) and node 10.244.3.0/24.
pub const REMOTES: [Remote; 2] = [
    Remote {
        subnet: Ipv4Addr::new(10, 244, 1, 0),
        prefix: 24,
        endpoint: SocketAddrV4::new(Ipv4Addr::new(192, 168, 200, 1), 8472),
        vtep: MacAddr([0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x01]),
    },
    Remote {
        subnet: Ipv4Addr::new(10, 244, 3, 0),
        prefix: 24,
        endpoint: SocketAddrV4::new(Ipv4Addr::new(192, 168, 200, 3), 8472),
        vtep: MacAddr([0x0a, 0x58, 0x0a, 0xf4, 0x03, 0x01]),
    },
];

/// An underlay address that is no node.
pub const STRANGER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 168, 200, 9), 8472);

/// An Ethernet frame.
pub fn eth(dst: MacAddr, src: MacAddr, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An IPv4 packet without options, checksums (its own and the L4 one)
/// computed.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, ttl: u8, ident: u16, l4: &[u8]) -> Vec<u8> {
    let total = (20 + l4.len()) as u16;
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&ident.to_be_bytes());
    p.extend_from_slice(&[0x40, 0, ttl, proto, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(l4);
    net::fix_ipv4_and_l4(&mut p);
    p
}

/// A TCP header without options (checksum left to [`ipv4`]) and payload.
pub fn tcp(sport: u16, dport: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(20 + payload.len());
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&1u32.to_be_bytes());
    t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    t
}

/// A UDP header (checksum left to [`ipv4`]) and payload.
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + payload.len());
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

/// An ICMP echo request (checksum left to [`ipv4`]).
pub fn echo(id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut e = vec![8, 0, 0, 0];
    e.extend_from_slice(&id.to_be_bytes());
    e.extend_from_slice(&seq.to_be_bytes());
    e.extend_from_slice(payload);
    e
}

/// An ARP packet for IPv4 over Ethernet.
pub fn arp(op: u16, smac: MacAddr, sip: Ipv4Addr, tmac: MacAddr, tip: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4];
    a.extend_from_slice(&op.to_be_bytes());
    a.extend_from_slice(&smac.0);
    a.extend_from_slice(&sip.octets());
    a.extend_from_slice(&tmac.0);
    a.extend_from_slice(&tip.octets());
    a
}

/// A payload of `n` bytes of a recognisable pattern.
pub fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect()
}
