//! The switch core on arbitrary frames, from its ports and from the tunnel
//! (single datagrams and `UDP_GRO` batches walked in place), with arbitrary
//! vnet headers, explicit time taken from the input, ports re-attached and
//! the remote table replaced on the way. Only the stable API of
//! `vswitch::core` is used.
//!
//! Input: byte 0 picks the backend (vxlan or udp), the tunnel MTU and
//! whether NetworkPolicy isolates the pods (see `policy`); then
//! a program of events, each `op, dt` and the op's operands (see `step`).
//!
//! Checked after every call, besides "no panic":
//! - nothing attached on the input port / a sender that is no node: dropped;
//! - `Output(p)`: `p` is attached; a switched frame never goes back out of
//!   its input port; a frame from the router carries a valid IPv4 packet of
//!   exactly the frame's length, or a 42-byte ARP packet with no offload;
//! - `Flood { except }`: `except` is the input port, or `None` for a frame
//!   the router built (source MAC the router's);
//! - `Tunnel { dst, l3, .. }`: `dst` is a node of the current table whose
//!   subnet holds the inner destination, `l3` is the backend's offset and
//!   lies inside the data, the VXLAN header and inner Ethernet header are
//!   the ones to that node, the inner IPv4 header is valid; a plain packet
//!   is exactly the data and fits the tunnel MTU; a GSO super-packet is
//!   segmented as the driver does it (header-only and copying segmentation
//!   agree byte for byte, every segment fits the MTU), and successfully
//!   unless its `gso_size` is 0 (which the TAP driver never lets in);
//!   nothing from the
//!   tunnel goes back into it but the gateway's own ICMP errors;
//! - a packet from the tunnel that leaves with `NEEDS_CSUM` (its checksum
//!   left unfinished by the sender) has its checksum offsets inside the
//!   frame, and finishing it there makes a valid TCP/UDP checksum;
//! - every packet from the tunnel ends in exactly one outcome counter (the
//!   core's own debug assertion, on in these builds);
//! - a datagram of a `UDP_GRO` batch is, when its turn comes, exactly as
//!   received, whatever the processing of the ones before it wrote;
//! - `run(now)` returns a deadline after `now`.
#![no_main]

use std::net::SocketAddrV4;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use encap::{ethernet, gso, ipv4, vnet, vxlan, Cidr, MacAddr, PacketBuf};
use libfuzzer_sys::fuzz_target;
use twill_fuzz::frames::{GATEWAY, PORTS, REMOTES, ROUTER_MAC, STRANGER, VNI};
use twill_fuzz::{net, trace, Reader};
use vswitch::core::policy::{PodPolicy, PolicyTable, PortRange, Ports, RuleSet};
use vswitch::core::{
    Action, Backend, DropReason, MacTableConfig, PortConfig, PortId, PortKind, RemoteNode, Switch,
    SwitchConfig, Via,
};

/// The drivers' headroom in front of a received frame.
const HEADROOM: usize = 64;
const BUF_LEN: usize = HEADROOM + 65536 + 64;
/// Port ids the program may name: 0..=2 attached, 3 not (until re-attached).
const PORT_IDS: u16 = 4;

/// Every pod port isolated both ways: in from the other pods with anything
/// and from the cluster on UDP 53 and TCP 80-81 except one remote /25; out
/// to the cluster on TCP, to one remote pod with anything. Drops, tracked
/// connections, replies and re-judging after a port change are reachable.
fn policy() -> PolicyTable {
    let net = |a: [u8; 4], len| Cidr::new(a.into(), len).expect("cidr");
    let mut t = PolicyTable::new();
    for p in PORTS.iter().filter(|p| !p.host) {
        let mut ingress = RuleSet::deny_all();
        for q in PORTS.iter().filter(|q| !q.host && q.ip != p.ip) {
            ingress.allow_peer(q.ip, &Ports::All);
        }
        ingress.allow_block(
            net([10, 244, 0, 0], 16),
            vec![net([10, 244, 3, 128], 25)],
            Ports::Some(vec![
                PortRange::one(17, 53),
                PortRange {
                    proto: 6,
                    first: 80,
                    last: 81,
                },
            ]),
        );
        let mut egress = RuleSet::deny_all();
        egress.allow_block(
            net([10, 244, 0, 0], 16),
            vec![],
            Ports::Some(vec![PortRange::all(6)]),
        );
        egress.allow_peer(std::net::Ipv4Addr::new(10, 244, 3, 5), &Ports::All);
        t.insert(
            p.ip,
            PodPolicy {
                ingress: Some(ingress),
                egress: Some(egress),
            },
        );
    }
    t
}

/// The one clock reading: every `now` is this plus what the input says.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

struct Fx {
    sw: Switch,
    backend: Backend,
    mtu: usize,
    now: Instant,
    /// What is attached, as the harness did it.
    ports: [Option<PortConfig>; PORT_IDS as usize],
    /// The current remote table.
    remotes: Vec<RemoteNode>,
    pkt: PacketBuf,
    hdrs: Vec<u8>,
    out: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum From {
    Port(PortId),
    Tunnel,
}

fn remote(i: usize) -> RemoteNode {
    let r = REMOTES[i];
    RemoteNode {
        subnet: Cidr::new(r.subnet, r.prefix).expect("fixture subnet"),
        endpoint: r.endpoint,
        vtep_mac: r.vtep,
        // Every fixture node is tunnelled to; routed nodes (host-gw,
        // DirectRouting, BGP) are the core unit tests'.
        via: Via::Tunnel,
    }
}

impl Fx {
    fn new(sel: u8) -> Fx {
        let backend = if sel & 1 == 0 {
            Backend::Vxlan { vni: VNI }
        } else {
            Backend::Udp
        };
        let mtu = [1450, 1472, 576, 68][usize::from(sel >> 1 & 3)];
        let cfg = SwitchConfig {
            subnet: Cidr::new(std::net::Ipv4Addr::new(10, 244, 2, 0), 24).expect("subnet"),
            gateway: GATEWAY,
            cluster: Cidr::new(std::net::Ipv4Addr::new(10, 244, 0, 0), 16).expect("cluster"),
            router_mac: ROUTER_MAC,
            backend,
            tunnel_mtu: mtu,
            // Small tables, short aging: eviction and expiry are reachable.
            mac: MacTableConfig {
                max_entries: 8,
                max_per_port: 3,
                aging: Duration::from_secs(300),
            },
            neighbor_capacity: 4,
            neighbor_aging: Duration::from_secs(60),
            conntrack: vswitch::core::config::ConntrackConfig::default(),
            icmp: Default::default(),
            storm: Default::default(),
        };
        let now = epoch();
        let mut fx = Fx {
            sw: Switch::new(cfg),
            backend,
            mtu,
            now,
            ports: [None; PORT_IDS as usize],
            remotes: Vec::new(),
            pkt: PacketBuf::new(BUF_LEN, HEADROOM),
            hdrs: vec![0; 64 * 1024],
            out: vec![0; 256 * 1024],
        };
        for p in PORTS {
            let kind = if p.host {
                PortKind::Host
            } else {
                PortKind::Pod
            };
            fx.attach(
                p.id,
                PortConfig {
                    kind,
                    mac: p.mac,
                    ip: p.ip,
                },
            );
        }
        fx.set_remotes(0b11);
        if sel & 8 != 0 {
            fx.sw.state().set_policy(policy());
        }
        fx
    }

    fn attach(&mut self, id: u16, p: PortConfig) {
        self.sw.add_port(PortId(id), p, self.now);
        self.ports[usize::from(id)] = Some(p);
    }

    fn set_remotes(&mut self, mask: u8) {
        self.remotes = (0..REMOTES.len())
            .filter(|i| mask >> i & 1 != 0)
            .map(remote)
            .collect();
        self.sw.set_remotes(&self.remotes);
    }

    /// Puts `frame` in the buffer as a driver's read does.
    fn load(&mut self, frame: &[u8], offload: vnet::Header) {
        let room = self.pkt.reset(HEADROOM);
        let n = frame.len().min(room.len());
        room[..n].copy_from_slice(&frame[..n]);
        self.pkt.set_len(n);
        self.pkt.offload = offload;
    }

    fn l3(&self) -> usize {
        match self.backend {
            Backend::Vxlan { .. } => vxlan::HEADER_LEN + ethernet::HEADER_LEN,
            // Never chosen: the fuzzed switch always has a tunnel.
            Backend::Udp | Backend::HostGw => 0,
        }
    }

    /// The checks on one action (see the module docs).
    fn check(&mut self, from: From, src_mac: Option<MacAddr>, a: Action) {
        if trace() {
            eprintln!(
                "{from:?} → {a:?} ({} bytes, {:?})",
                self.pkt.len(),
                self.pkt.offload
            );
        }
        let data = self.pkt.data();
        let router_built = data.len() >= 14 && data[6..12] == ROUTER_MAC.0;
        if from == From::Tunnel && matches!(a, Action::Output(_) | Action::Flood { .. }) {
            check_unfinished(data, &self.pkt.offload);
        }
        match a {
            Action::Output(p) => {
                let attached = self.ports.get(usize::from(p.0)).copied().flatten();
                assert!(attached.is_some(), "output to unattached port {p:?}");
                assert!(data.len() >= ethernet::HEADER_LEN);
                if router_built {
                    check_router_frame(data, &self.pkt.offload);
                } else if let From::Port(i) = from {
                    assert_ne!(p, i, "switched back out of its input port");
                    assert_eq!(Some(MacAddr::from_slice(&data[6..12]).expect("6")), src_mac);
                } else {
                    panic!("a frame from the tunnel left with a foreign source MAC");
                }
            }
            Action::Flood { except } => match except {
                Some(p) => assert_eq!(From::Port(p), from),
                None => {
                    assert!(
                        router_built,
                        "flood to all ports of a frame not the router's"
                    );
                    check_router_frame(data, &self.pkt.offload);
                }
            },
            Action::Tunnel { dst, l3, hash: _ } => self.check_tunnel(from, dst, l3),
            Action::Consumed | Action::Drop(_) => {}
        }
    }

    fn check_tunnel(&mut self, from: From, dst: SocketAddrV4, l3: usize) {
        assert_eq!(l3, self.l3());
        let data = self.pkt.data();
        assert!(l3 < data.len(), "l3 {l3} outside the data ({})", data.len());
        let node = self
            .remotes
            .iter()
            .find(|n| n.endpoint == dst)
            .copied()
            .unwrap_or_else(|| panic!("tunnel to {dst}, not a node"));
        if let Backend::Vxlan { vni } = self.backend {
            assert_eq!(vxlan::parse(data), Ok(vni));
            let f = ethernet::Frame::new_checked(&data[vxlan::HEADER_LEN..]).expect("inner eth");
            assert_eq!(f.dst(), node.vtep_mac);
            assert_eq!(f.src(), ROUTER_MAC);
            assert_eq!(f.ethertype(), ethernet::ETHERTYPE_IPV4);
        }
        let ip = ipv4::Packet::new_checked(&data[l3..]).expect("valid inner IPv4");
        assert!(
            node.subnet.contains(ip.dst()),
            "{} routed to {dst}",
            ip.dst()
        );
        if from == From::Tunnel {
            assert_eq!(ip.src(), GATEWAY, "tunnel-to-tunnel transit");
            assert_eq!(ip.protocol(), ipv4::PROTO_ICMP);
        }
        let off = self.pkt.offload;
        if !off.is_gso() {
            assert_eq!(
                ip.total_len(),
                data.len() - l3,
                "padding left in a tunnel packet"
            );
            assert!(
                ip.total_len() <= self.mtu,
                "{} > MTU {}",
                ip.total_len(),
                self.mtu
            );
            return;
        }
        // What the driver does with a super-packet (tunnel_tx.rs).
        let mss = usize::from(off.gso_size);
        let (hs, full) = match off.gso_type & !vnet::GSO_ECN {
            vnet::GSO_TCPV4 => (
                gso::segment_tcp4_headers(data, l3, mss, &mut self.hdrs),
                gso::segment_tcp4(data, l3, mss, &mut self.out),
            ),
            vnet::GSO_UDP_L4 => (
                gso::segment_udp4_headers(data, l3, mss, &mut self.hdrs),
                gso::segment_udp4(data, l3, mss, &mut self.out),
            ),
            t => panic!("the switch sent GSO type {t:#x} to the tunnel"),
        };
        match (hs, full) {
            (Ok(hs), Ok(segs)) => {
                assert_eq!(hs.segs, segs);
                for i in 0..segs.count {
                    let (h, p) = hs.parts(i, &self.hdrs, data).expect("part");
                    let seg = &self.out[segs.datagram(i).expect("datagram")];
                    assert_eq!(&seg[..h.len()], h);
                    assert_eq!(&seg[h.len()..], p);
                    let ip = ipv4::Packet::new_checked(&seg[l3..]).expect("segment IPv4");
                    assert_eq!(ip.total_len(), seg.len() - l3);
                    assert!(
                        ip.total_len() <= self.mtu,
                        "segment {} > MTU",
                        ip.total_len()
                    );
                }
            }
            // The harness's buffers, not the packet, were too small.
            (Err(encap::Error::NoRoom), _) | (_, Err(encap::Error::NoRoom)) => {}
            (Err(a), Err(b)) => {
                assert_eq!(a, b);
                // The TAP driver lets no GSO frame with gso_size 0 in
                // (`offload_fits`); any other super-packet the switch
                // sends to the tunnel must be one the driver can cut.
                assert!(
                    mss == 0,
                    "the switch sent a super-packet the driver cannot segment: {a:?}"
                );
            }
            (a, b) => panic!("header-only {a:?} and copying {b:?} segmentation disagree"),
        }
    }

    fn port(&mut self, r: &mut Reader) {
        let id = PortId(u16::from(r.u8()) % PORT_IDS);
        let flags = r.u8();
        let offload = if flags & 2 != 0 {
            vnet::Header::parse(&r.array::<12>()).expect("12 bytes")
        } else {
            vnet::Header::default()
        };
        let mut frame = r.frame().to_vec();
        if flags & 1 != 0 {
            net::fix_frame(&mut frame);
        }
        self.load(&frame, offload);
        let src = MacAddr::from_slice(self.pkt.data().get(6..12).unwrap_or(&[]));
        let a = self.sw.process_port(id, &mut self.pkt, self.now);
        if self.ports[usize::from(id.0)].is_none() {
            assert_eq!(a, Action::Drop(DropReason::UnknownPort));
        }
        self.check(From::Port(id), src, a);
    }

    fn sender(&self, b: u8) -> SocketAddrV4 {
        match b % 3 {
            2 => STRANGER,
            i => REMOTES[usize::from(i)].endpoint,
        }
    }

    fn fix_tunnel(&self, d: &mut [u8]) {
        if let Some(ip) = d.get_mut(self.l3()..) {
            net::fix_ipv4_and_l4(ip);
        }
    }

    /// As [`Fx::fix_tunnel`], the L4 checksum left unfinished (a kernel
    /// peer on a veth underlay).
    fn unfinish_tunnel(&self, d: &mut [u8]) {
        if let Some(ip) = d.get_mut(self.l3()..) {
            net::unfinish_l4(ip);
        }
    }

    fn tunnel(&mut self, src: SocketAddrV4) {
        let a = self.sw.process_tunnel(src, &mut self.pkt, self.now);
        if !self.remotes.iter().any(|n| n.endpoint.ip() == src.ip()) {
            assert_eq!(a, Action::Drop(DropReason::UnknownSender));
        }
        self.check(From::Tunnel, None, a);
    }

    fn datagram(&mut self, r: &mut Reader) {
        let src = self.sender(r.u8());
        let flags = r.u8();
        let mut d = r.frame().to_vec();
        if flags & 3 == 3 {
            self.unfinish_tunnel(&mut d);
        } else if flags & 1 != 0 {
            self.fix_tunnel(&mut d);
        }
        self.load(&d, vnet::Header::default());
        self.tunnel(src);
    }

    /// One `UDP_GRO` receive: datagrams of `seg` bytes back to back.
    fn batch(&mut self, r: &mut Reader) {
        let src = self.sender(r.u8());
        let flags = r.u8();
        let seg = usize::from(r.u16() % 2048);
        let mut all = r.frame().to_vec();
        if flags & 1 != 0 && seg > 0 {
            for d in all.chunks_mut(seg) {
                self.fix_tunnel(d);
            }
        }
        self.load(&all, vnet::Header::default());
        let n = self.pkt.len();
        let mut walk = self.pkt.datagrams(n, seg);
        let step = if seg == 0 { n.max(1) } else { seg };
        let mut at = 0;
        while walk.next(&mut self.pkt) {
            let want = &all[at..(at + step).min(n)];
            assert_eq!(self.pkt.data(), want, "datagram at {at} damaged");
            at += step;
            self.tunnel(src);
        }
        assert!(at >= n);
    }

    fn reconfigure(&mut self, r: &mut Reader) {
        let b = r.u8();
        if b & 1 == 0 {
            self.set_remotes(b >> 1);
            return;
        }
        let id = u16::from(b >> 1) % PORT_IDS;
        let kind = if b & 0x80 != 0 {
            PortKind::Host
        } else {
            PortKind::Pod
        };
        let mac = MacAddr(r.array::<6>());
        let ip = std::net::Ipv4Addr::from(r.array::<4>());
        self.attach(id, PortConfig { kind, mac, ip });
    }

    fn step(&mut self, r: &mut Reader) {
        let op = r.u8();
        let dt = r.u8();
        self.now += if dt == 0xff {
            Duration::from_secs(400)
        } else {
            Duration::from_millis(250 * u64::from(dt))
        };
        match op % 8 {
            0..=2 => self.port(r),
            3 | 4 => self.datagram(r),
            5 => self.batch(r),
            6 => {
                if let Some(d) = self.sw.run(self.now) {
                    assert!(
                        d > self.now,
                        "run({:?}) asks to be called again at once",
                        self.now
                    );
                }
            }
            _ => self.reconfigure(r),
        }
    }
}

/// A frame from the tunnel passed on with `NEEDS_CSUM`: the offsets are
/// inside it and finishing the checksum makes it valid (the L4 sum,
/// pseudo-header included, is all ones).
fn check_unfinished(data: &[u8], offload: &vnet::Header) {
    if offload.flags & vnet::F_NEEDS_CSUM == 0 {
        return;
    }
    let (start, off) = (
        usize::from(offload.csum_start),
        usize::from(offload.csum_offset),
    );
    assert!(
        start + off + 2 <= data.len(),
        "checksum offsets outside the frame"
    );
    let mut f = data.to_vec();
    gso::complete_checksum(&mut f, start, off).expect("finishable");
    let ip = ipv4::Packet::new_checked(&f[14..]).expect("valid IPv4");
    let l4 = &f[14 + ip.header_len()..];
    let pseudo = encap::checksum::pseudo_header(ip.src(), ip.dst(), ip.protocol(), l4.len() as u16);
    assert_eq!(
        encap::checksum::fold(encap::checksum::sum(pseudo, l4)),
        0xffff,
        "finished checksum invalid"
    );
}

/// A frame the router built or routed: a valid IPv4 packet of exactly the
/// frame's length, or an ARP packet with no offload state left.
fn check_router_frame(data: &[u8], offload: &vnet::Header) {
    match u16::from_be_bytes([data[12], data[13]]) {
        ethernet::ETHERTYPE_IPV4 => {
            let ip = ipv4::Packet::new_checked(&data[14..]).expect("router's IPv4 valid");
            assert_eq!(ip.total_len(), data.len() - 14);
        }
        ethernet::ETHERTYPE_ARP => {
            assert_eq!(data.len(), 42);
            assert_eq!(*offload, vnet::Header::default());
        }
        t => panic!("router sent EtherType {t:#06x}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let mut fx = Fx::new(r.u8());
    let mut steps = 0;
    while !r.is_empty() && steps < 64 {
        fx.step(&mut r);
        steps += 1;
    }
});
