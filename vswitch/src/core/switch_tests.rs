//! Tests of the forwarding core: every decision, with bytes checked.

use super::*;
use crate::core::config::{Allowance, PortKind};
use crate::core::mac_table::MacTableConfig;
use encap::Cidr;
use etherparse::{PacketBuilder, SlicedPacket};
use std::time::Duration;

const HEADROOM: usize = 64;
const T0_SECS: u64 = 0;

fn mac(last: u8) -> MacAddr {
    MacAddr([0x0a, 0x58, 0x0a, 0xf4, 0x01, last])
}
const ROUTER: MacAddr = MacAddr([0x0e, 0, 0, 0, 0, 1]);
const REMOTE_VTEP: MacAddr = MacAddr([0x0e, 0, 0, 0, 0, 2]);
const REMOTE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 2);

fn cfg(backend: Backend) -> SwitchConfig {
    SwitchConfig {
        subnet: Cidr::new(Ipv4Addr::new(10, 244, 1, 0), 24).unwrap(),
        gateway: Ipv4Addr::new(10, 244, 1, 1),
        cluster: Cidr::new(Ipv4Addr::new(10, 244, 0, 0), 16).unwrap(),
        router_mac: ROUTER,
        backend,
        tunnel_mtu: 1450,
        mac: MacTableConfig::default(),
        neighbor_capacity: 64,
        neighbor_aging: Duration::from_secs(300),
        conntrack: crate::core::config::ConntrackConfig::default(),
        icmp: Default::default(),
        storm: Default::default(),
    }
}

struct Fx {
    sw: Switch,
    now: Instant,
}

const HOST: PortId = PortId(0);
const POD3: PortId = PortId(1);
const POD4: PortId = PortId(2);

fn ip(d: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 1, d)
}

fn fixture(backend: Backend) -> Fx {
    let now = Instant::now() + Duration::from_secs(T0_SECS);
    let mut sw = Switch::new(cfg(backend));
    sw.add_port(
        HOST,
        PortConfig {
            kind: PortKind::Host,
            mac: mac(2),
            ip: ip(2),
        },
        now,
    );
    // Pod 3 bridges others (a VM, nested containers): its attachment
    // declares their MACs and one address, as port security requires.
    sw.state().add_port_allowing(
        POD3,
        PortConfig {
            kind: PortKind::Pod,
            mac: mac(3),
            ip: ip(3),
        },
        Allowance {
            macs: [0x09, 50, 0x55, 0x66, 0x77]
                .map(|b| MacAddr([0x0a, 0, 0, 0, 0, b]))
                .to_vec(),
            ips: vec![
                Cidr::new(ip(9), 32).unwrap(),
                Cidr::new(ip(50), 32).unwrap(),
            ],
        },
        now,
    );
    // Pod 4 may take over the VM (0a:..:66, 10.244.1.9) when it migrates.
    sw.state().add_port_allowing(
        POD4,
        PortConfig {
            kind: PortKind::Pod,
            mac: mac(4),
            ip: ip(4),
        },
        Allowance {
            macs: vec![MacAddr([0x0a, 0, 0, 0, 0, 0x66])],
            ips: vec![Cidr::new(ip(9), 32).unwrap()],
        },
        now,
    );
    sw.set_remotes(&[RemoteNode {
        subnet: Cidr::new(Ipv4Addr::new(10, 244, 2, 0), 24).unwrap(),
        endpoint: SocketAddrV4::new(REMOTE_IP, 8472),
        vtep_mac: REMOTE_VTEP,
        via: crate::core::Via::Tunnel,
    }]);
    Fx { sw, now }
}

fn buf(frame: &[u8]) -> PacketBuf {
    let mut b = PacketBuf::new(70_000, HEADROOM);
    b.reset(HEADROOM)[..frame.len()].copy_from_slice(frame);
    b.set_len(frame.len());
    b
}

fn udp_frame(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
        .ipv4(src.octets(), dst.octets(), ttl)
        .udp(40000, 5000)
        .write(&mut v, payload)
        .unwrap();
    v
}

fn udp_ip(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(src.octets(), dst.octets(), ttl)
        .udp(40000, 5000)
        .write(&mut v, payload)
        .unwrap();
    v
}

fn arp_frame(op: u16, smac: MacAddr, sip: Ipv4Addr, dmac: MacAddr, tip: Ipv4Addr) -> Vec<u8> {
    let mut v = vec![0u8; 42];
    ethernet::emit(
        &mut v,
        if op == arp::OP_REQUEST {
            MacAddr::BROADCAST
        } else {
            dmac
        },
        smac,
        ethernet::ETHERTYPE_ARP,
    )
    .unwrap();
    arp::Repr {
        operation: op,
        sender_mac: smac,
        sender_ip: sip,
        target_mac: if op == arp::OP_REQUEST {
            MacAddr::ZERO
        } else {
            dmac
        },
        target_ip: tip,
    }
    .emit(&mut v[14..])
    .unwrap();
    v
}

fn ip_of(frame: &[u8]) -> etherparse::Ipv4Header {
    let s = SlicedPacket::from_ethernet(frame).unwrap();
    match s.net.unwrap() {
        etherparse::NetSlice::Ipv4(i) => i.header().to_header(),
        n => panic!("{n:?}"),
    }
}

// ---- L2 segment ----

#[test]
fn learns_and_switches_between_pods() {
    let mut f = fixture(Backend::Vxlan { vni: 1 });
    let learned = MacAddr([0x0a, 0, 0, 0, 0, 0x77]);
    // A frame from an unknown MAC (a pod's secondary MAC) to pod 4: switched.
    let fr = udp_frame(learned, mac(4), ip(3), ip(4), 64, b"x");
    let mut b = buf(&fr);
    assert_eq!(f.sw.process_port(POD3, &mut b, f.now), Action::Output(POD4));
    assert_eq!(b.data(), &fr[..], "switched frames are not modified");
    // Pod 4 answers to the learned MAC: it goes to pod 3's port.
    let fr = udp_frame(mac(4), learned, ip(4), ip(3), 64, b"y");
    assert_eq!(
        f.sw.process_port(POD4, &mut buf(&fr), f.now),
        Action::Output(POD3)
    );
    assert_eq!(f.sw.counters().switched, 2);
}

#[test]
fn unknown_unicast_and_broadcast_flood_except_input() {
    let mut f = fixture(Backend::Vxlan { vni: 1 });
    let fr = udp_frame(
        mac(3),
        MacAddr([0x0a, 0, 0, 0, 0, 0x99]),
        ip(3),
        ip(9),
        64,
        b"x",
    );
    assert_eq!(
        f.sw.process_port(POD3, &mut buf(&fr), f.now),
        Action::Flood { except: Some(POD3) }
    );
    let fr = arp_frame(arp::OP_REQUEST, mac(3), ip(3), MacAddr::ZERO, ip(4));
    assert_eq!(
        f.sw.process_port(POD3, &mut buf(&fr), f.now),
        Action::Flood { except: Some(POD3) }
    );
    assert_eq!(f.sw.counters().flooded, 2);
}

#[test]
fn destination_on_input_port_is_dropped() {
    let mut f = fixture(Backend::Vxlan { vni: 1 });
    let other = MacAddr([0x0a, 0, 0, 0, 0, 0x55]);
    let _ = f.sw.process_port(
        POD3,
        &mut buf(&udp_frame(other, mac(4), ip(3), ip(4), 64, b"")),
        f.now,
    );
    let fr = udp_frame(mac(3), other, ip(3), ip(4), 64, b"");
    assert_eq!(
        f.sw.process_port(POD3, &mut buf(&fr), f.now),
        Action::Drop(DropReason::SamePort)
    );
}

#[test]
fn spoofed_and_bad_sources_are_dropped() {
    let mut f = fixture(Backend::Vxlan { vni: 1 });
    // Pod 3 claims pod 4's MAC (a static entry): dropped, and pod 4 keeps it.
    let fr = udp_frame(mac(4), mac(2), ip(3), ip(2), 64, b"");
    assert_eq!(
        f.sw.process_port(POD3, &mut buf(&fr), f.now),
        Action::Drop(DropReason::MacSpoof)
    );
    assert_eq!(f.sw.macs().lookup(mac(4)), Some(POD4));
    let fr = udp_frame(ROUTER, mac(2), ip(3), ip(2), 64, b"");
    assert_eq!(
        f.sw.process_port(POD3, &mut buf(&fr), f.now),
        Action::Drop(DropReason::MacSpoof)
    );
    let fr = udp_frame(MacAddr::BROADCAST, mac(2), ip(3), ip(2), 64, b"");
    assert_eq!(
        f.sw.process_port(POD3, &mut buf(&fr), f.now),
        Action::Drop(DropReason::BadSrcMac)
    );
    assert_eq!(
        f.sw.process_port(POD3, &mut buf(&fr[..13]), f.now),
        Action::Drop(DropReason::Truncated)
    );
    assert_eq!(
        f.sw.process_port(PortId(9), &mut buf(&fr), f.now),
        Action::Drop(DropReason::UnknownPort)
    );
    assert_eq!(f.sw.counters().drops_for(DropReason::MacSpoof), 2);
}

#[test]
fn removed_port_forgets_its_entries() {
    let mut f = fixture(Backend::Vxlan { vni: 1 });
    assert!(f.sw.remove_port(POD4).is_some());
    assert_eq!(f.sw.macs().lookup(mac(4)), None);
    assert_eq!(f.sw.neighbors().lookup(ip(4)), None);
    let fr = udp_frame(mac(3), mac(4), ip(3), ip(4), 64, b"");
    assert_eq!(
        f.sw.process_port(POD3, &mut buf(&fr), f.now),
        Action::Flood { except: Some(POD3) }
    );
    assert_eq!(f.sw.state().snapshot().ports().count(), 2);
}

// ---- router: ARP and ICMP to the gateway ----

#[test]
fn answers_arp_for_the_gateway() {
    let mut f = fixture(Backend::Vxlan { vni: 1 });
    let fr = arp_frame(arp::OP_REQUEST, mac(3), ip(3), MacAddr::ZERO, ip(1));
    let mut b = buf(&fr);
    assert_eq!(f.sw.process_port(POD3, &mut b, f.now), Action::Output(POD3));
    let expect = arp_frame(arp::OP_REPLY, ROUTER, ip(1), mac(3), ip(3));
    assert_eq!(b.data(), &expect[..]);
    assert_eq!(f.sw.counters().arp_replies, 1);
    // Not for the gateway, unicast to the router: taken, not answered.
    let mut fr = arp_frame(arp::OP_REQUEST, mac(3), ip(3), MacAddr::ZERO, ip(7));
    fr[..6].copy_from_slice(&ROUTER.0);
    assert_eq!(
        f.sw.process_port(POD3, &mut buf(&fr), f.now),
        Action::Consumed
    );
    let mut bad = arp_frame(arp::OP_REQUEST, mac(3), ip(3), MacAddr::ZERO, ip(1));
    bad[..6].copy_from_slice(&ROUTER.0);
    bad[19] = 16;
    assert_eq!(
        f.sw.process_port(POD3, &mut buf(&bad), f.now),
        Action::Drop(DropReason::BadArp)
    );
}

#[test]
fn answers_ping_to_the_gateway() {
    let mut f = fixture(Backend::Vxlan { vni: 1 });
    let mut fr = Vec::new();
    PacketBuilder::ethernet2(mac(3).0, ROUTER.0)
        .ipv4(ip(3).octets(), ip(1).octets(), 64)
        .icmpv4_echo_request(7, 1)
        .write(&mut fr, b"ping-data")
        .unwrap();
    let mut b = buf(&fr);
    assert_eq!(f.sw.process_port(POD3, &mut b, f.now), Action::Output(POD3));
    let s = SlicedPacket::from_ethernet(b.data()).unwrap();
    let eth = s.link.unwrap().to_header().unwrap();
    let eth = eth.ethernet2().unwrap();
    assert_eq!((eth.source, eth.destination), (ROUTER.0, mac(3).0));
    let h = ip_of(b.data());
    assert_eq!(
        (h.source, h.destination, h.time_to_live),
        (ip(1).octets(), ip(3).octets(), 64)
    );
    match s.transport.unwrap() {
        etherparse::TransportSlice::Icmpv4(i) => {
            assert!(
                matches!(i.icmp_type(), etherparse::Icmpv4Type::EchoReply(e) if e.id == 7 && e.seq == 1)
            );
            assert_eq!(i.payload(), b"ping-data");
        }
        t => panic!("{t:?}"),
    }
    // UDP to the gateway is not served.
    let fr = udp_frame(mac(3), ROUTER, ip(3), ip(1), 64, b"");
    assert_eq!(
        f.sw.process_port(POD3, &mut buf(&fr), f.now),
        Action::Drop(DropReason::ToGatewayUnsupported)
    );
}

// ---- router: forwarding ----

#[test]
fn routes_to_a_remote_node_over_vxlan() {
    let mut f = fixture(Backend::Vxlan { vni: 1 });
    let dst = Ipv4Addr::new(10, 244, 2, 5);
    let fr = udp_frame(mac(3), ROUTER, ip(3), dst, 64, b"hello");
    let mut b = buf(&fr);
    let a = f.sw.process_port(POD3, &mut b, f.now);
    let Action::Tunnel { dst: ep, hash, l3 } = a else {
        panic!("{a:?}")
    };
    assert_eq!(ep, SocketAddrV4::new(REMOTE_IP, 8472));
    assert_eq!(hash, flow::symmetric_ipv4(&fr[14..]));
    assert_eq!(
        l3,
        8 + 14,
        "inner IPv4 behind the VXLAN and inner Ethernet headers"
    );
    let d = b.data();
    assert_eq!(&d[..8], &[0x08, 0, 0, 0, 0, 0, 1, 0]);
    assert_eq!(&d[8..14], &REMOTE_VTEP.0);
    assert_eq!(&d[14..20], &ROUTER.0);
    let h = ip_of(&d[8..]);
    assert_eq!(h.time_to_live, 63);
    assert_eq!(h.header_checksum, h.calc_header_checksum());
    assert_eq!(&d[8 + 14 + 20 + 8..], b"hello");
    assert_eq!(f.sw.counters().encapsulated, 1);
}

#[test]
fn routes_to_a_remote_node_over_udp() {
    let mut f = fixture(Backend::Udp);
    let dst = Ipv4Addr::new(10, 244, 2, 5);
    let fr = udp_frame(mac(3), ROUTER, ip(3), dst, 64, b"hello");
    let mut b = buf(&fr);
    assert!(matches!(
        f.sw.process_port(POD3, &mut b, f.now),
        Action::Tunnel { .. }
    ));
    let mut expect = udp_ip(ip(3), dst, 63, b"hello");
    // Only TTL and checksum differ from the original IP packet.
    let h = etherparse::Ipv4HeaderSlice::from_slice(&expect)
        .unwrap()
        .to_header();
    expect[10..12].copy_from_slice(&h.calc_header_checksum().to_be_bytes());
    assert_eq!(b.data(), &expect[..]);
}

#[test]
fn decapsulates_and_delivers_to_the_local_pod() {
    for backend in [Backend::Vxlan { vni: 1 }, Backend::Udp] {
        let mut f = fixture(backend);
        let src = Ipv4Addr::new(10, 244, 2, 5);
        let inner = udp_frame(REMOTE_VTEP, ROUTER, src, ip(4), 63, b"from-b");
        let payload = match backend {
            Backend::Vxlan { .. } => [&[0x08, 0, 0, 0, 0, 0, 1, 0][..], &inner].concat(),
            Backend::Udp | Backend::HostGw => inner[14..].to_vec(),
        };
        let mut b = buf(&payload);
        assert_eq!(
            f.sw.process_tunnel(SocketAddrV4::new(REMOTE_IP, 40001), &mut b, f.now),
            Action::Output(POD4)
        );
        let d = b.data();
        assert_eq!(&d[..6], &mac(4).0);
        assert_eq!(&d[6..12], &ROUTER.0);
        assert_eq!(ip_of(d).time_to_live, 62);
        assert_eq!(&d[d.len() - 6..], b"from-b");
        assert_eq!(f.sw.counters().decapsulated, 1);
    }
}

#[test]
fn tunnel_receive_rejects_every_malformed_case() {
    let mut f = fixture(Backend::Vxlan { vni: 1 });
    let from = SocketAddrV4::new(REMOTE_IP, 40001);
    let inner = udp_frame(
        REMOTE_VTEP,
        ROUTER,
        Ipv4Addr::new(10, 244, 2, 5),
        ip(4),
        63,
        b"z",
    );
    let vx = |h: [u8; 8], inner: &[u8]| [&h[..], inner].concat();
    let good = vx([0x08, 0, 0, 0, 0, 0, 1, 0], &inner);
    // A well-formed packet from the peer to `dst`, for the no-route cases.
    let to = |dst: Ipv4Addr| {
        vx(
            [0x08, 0, 0, 0, 0, 0, 1, 0],
            &udp_frame(REMOTE_VTEP, ROUTER, ip(4), dst, 63, b""),
        )
    };
    let cases: Vec<(Vec<u8>, SocketAddrV4, DropReason)> = vec![
        (
            good.clone(),
            SocketAddrV4::new(Ipv4Addr::new(192, 168, 100, 99), 40001),
            DropReason::UnknownSender,
        ),
        (
            vx([0x08, 0, 0, 0, 0, 0, 2, 0], &inner),
            from,
            DropReason::BadVni,
        ),
        (
            vx([0x0c, 0, 0, 0, 0, 0, 1, 0], &inner),
            from,
            DropReason::BadVxlanHeader,
        ),
        (
            vx([0x08, 0, 0, 0, 0, 0, 1, 1], &inner),
            from,
            DropReason::BadVxlanHeader,
        ),
        (good[..7].to_vec(), from, DropReason::Truncated),
        (good[..8 + 13].to_vec(), from, DropReason::Truncated),
        (good[..8 + 14 + 19].to_vec(), from, DropReason::Truncated),
        (
            vx(
                [0x08, 0, 0, 0, 0, 0, 1, 0],
                &udp_frame(
                    REMOTE_VTEP,
                    mac(4),
                    Ipv4Addr::new(10, 244, 2, 5),
                    ip(4),
                    63,
                    b"",
                ),
            ),
            from,
            DropReason::NotForVtep,
        ),
        (
            vx(
                [0x08, 0, 0, 0, 0, 0, 1, 0],
                &arp_frame(arp::OP_REPLY, REMOTE_VTEP, ip(9), ROUTER, ip(1)),
            ),
            from,
            DropReason::BadInner,
        ),
        (
            {
                let mut g = good.clone();
                g[8 + 14 + 15] ^= 0xff; // corrupt the inner source address
                g
            },
            from,
            DropReason::BadIpChecksum,
        ),
        (
            {
                let mut g = good.clone();
                g[8 + 14] = 0x55; // IP version 5
                g
            },
            from,
            DropReason::BadIpHeader,
        ),
        (to(Ipv4Addr::new(10, 244, 3, 1)), from, DropReason::NoRoute),
        (to(Ipv4Addr::new(10, 244, 2, 1)), from, DropReason::NoRoute),
        (to(Ipv4Addr::new(8, 8, 8, 8)), from, DropReason::NoRoute),
    ];
    for (i, (bytes, src, reason)) in cases.into_iter().enumerate() {
        let before = f.sw.counters().drops_for(reason);
        assert_eq!(
            f.sw.process_tunnel(src, &mut buf(&bytes), f.now),
            Action::Drop(reason),
            "case {i}"
        );
        assert_eq!(f.sw.counters().drops_for(reason), before + 1, "case {i}");
    }
    assert_eq!(
        f.sw.counters().decapsulated,
        6,
        "the six cases with a valid VXLAN header and inner Ethernet were decapsulated"
    );
}

#[test]
fn ttl_exhausted_gets_time_exceeded_back() {
    let mut f = fixture(Backend::Vxlan { vni: 1 });
    let fr = udp_frame(
        mac(3),
        ROUTER,
        ip(3),
        Ipv4Addr::new(10, 244, 2, 5),
        1,
        b"dying",
    );
    let mut b = buf(&fr);
    assert_eq!(f.sw.process_port(POD3, &mut b, f.now), Action::Output(POD3));
    let h = ip_of(b.data());
    assert_eq!((h.source, h.destination), (ip(1).octets(), ip(3).octets()));
    assert_eq!(b.data()[14 + 20], icmp::TYPE_TIME_EXCEEDED);
    assert_eq!(&b.data()[14 + 28..], &fr[14..], "quotes the original whole");
    assert_eq!(f.sw.counters().drops_for(DropReason::TtlExceeded), 1);
    assert_eq!(f.sw.counters().icmp_errors, 1);
}

/// Issue 13's probe: forged TTL-1 packets must not turn the router into an
/// amplifier towards the forged source. Linux's limits: a burst of 6 per
/// destination, then one a second.
#[test]
fn icmp_errors_towards_one_destination_are_rate_limited() {
    let mut f = fixture(Backend::Vxlan { vni: 1 });
    let victim = Ipv4Addr::new(192, 0, 2, 9);
    // Through the host port (the outside's traffic enters there).
    let fr = udp_frame(
        mac(2),
        ROUTER,
        victim,
        Ipv4Addr::new(10, 244, 2, 5),
        1,
        b"x",
    );
    let mut sent = 0;
    for _ in 0..100 {
        match f.sw.process_port(HOST, &mut buf(&fr), f.now) {
            Action::Output(HOST) => sent += 1,
            a => assert_eq!(a, Action::Drop(DropReason::TtlExceeded)),
        }
    }
    assert_eq!(sent, 6);
    assert_eq!(f.sw.counters().icmp_errors_suppressed, 94);
    assert_eq!(f.sw.counters().drops_for(DropReason::TtlExceeded), 100);
    // A second later, one more; another destination has its own budget.
    let later = f.now + Duration::from_secs(1);
    assert_eq!(
        f.sw.process_port(HOST, &mut buf(&fr), later),
        Action::Output(HOST)
    );
    let other = udp_frame(mac(3), ROUTER, ip(3), Ipv4Addr::new(10, 244, 2, 5), 1, b"x");
    assert_eq!(
        f.sw.process_port(POD3, &mut buf(&other), later),
        Action::Output(POD3)
    );
}

#[test]
fn too_big_for_the_tunnel() {
    let mut f = fixture(Backend::Vxlan { vni: 1 });
    let dst = Ipv4Addr::new(10, 244, 2, 5);
    // 1451-byte IP packet with DF (etherparse sets DF by default).
    let fr = udp_frame(mac(3), ROUTER, ip(3), dst, 64, &[7u8; 1451 - 28]);
    let mut b = buf(&fr);
    assert_eq!(f.sw.process_port(POD3, &mut b, f.now), Action::Output(POD3));
    let d = b.data();
    assert_eq!(
        &d[14 + 20..14 + 22],
        &[icmp::TYPE_DEST_UNREACHABLE, icmp::CODE_FRAG_NEEDED]
    );
    assert_eq!(&d[14 + 26..14 + 28], &1450u16.to_be_bytes());
    assert_eq!(f.sw.counters().drops_for(DropReason::MtuFragNeeded), 1);
    // Exactly the tunnel MTU passes.
    let fr = udp_frame(mac(3), ROUTER, ip(3), dst, 64, &[7u8; 1450 - 28]);
    assert!(matches!(
        f.sw.process_port(POD3, &mut buf(&fr), f.now),
        Action::Tunnel { .. }
    ));
    // Without DF: dropped and counted, not fragmented.
    let mut fr = udp_frame(mac(3), ROUTER, ip(3), dst, 64, &[7u8; 1451 - 28]);
    fr[14 + 6] = 0;
    fr[14 + 10] = 0;
    fr[14 + 11] = 0;
    let c = encap::checksum::checksum(&fr[14..34]);
    fr[24..26].copy_from_slice(&c.to_be_bytes());
    assert_eq!(
        f.sw.process_port(POD3, &mut buf(&fr), f.now),
        Action::Drop(DropReason::MtuNoFragment)
    );
}

/// Issue 13: frames over the receiving pod's MTU were delivered. Every
/// port has the pods' MTU (1450 here): a pod that raised its own cannot
/// push larger frames into its neighbours, bridged or routed.
#[test]
fn frames_over_the_ports_mtu_are_not_delivered() {
    let mut f = fixture(Backend::Vxlan { vni: 1 });
    // Bridged to pod 4: 1451 bytes of IP are one too many, 1450 pass.
    let big = udp_frame(mac(3), mac(4), ip(3), ip(4), 64, &[7u8; 1451 - 28]);
    assert_eq!(
        f.sw.process_port(POD3, &mut buf(&big), f.now),
        Action::Drop(DropReason::PortMtuExceeded)
    );
    let fits = udp_frame(mac(3), mac(4), ip(3), ip(4), 64, &[7u8; 1450 - 28]);
    assert_eq!(
        f.sw.process_port(POD3, &mut buf(&fits), f.now),
        Action::Output(POD4)
    );
    // Routed towards the outside (the host port): fragmentation needed.
    let out = udp_frame(
        mac(3),
        ROUTER,
        ip(3),
        Ipv4Addr::new(192, 0, 2, 1),
        64,
        &[7u8; 1451 - 28],
    );
    let mut b = buf(&out);
    assert_eq!(f.sw.process_port(POD3, &mut b, f.now), Action::Output(POD3));
    assert_eq!(
        &b.data()[14 + 20..14 + 22],
        &[icmp::TYPE_DEST_UNREACHABLE, icmp::CODE_FRAG_NEEDED]
    );
    assert_eq!(f.sw.counters().drops_for(DropReason::PortMtuExceeded), 1);
}

/// Issue 13: one pod's broadcast storm reached every other pod without
/// limit. Storm control: each pod port may flood 1000 frames a second per
/// class after a burst of 1000; the rest is dropped and counted per port.
#[test]
fn storm_control_caps_what_a_pod_may_flood() {
    let mut f = fixture(Backend::Vxlan { vni: 1 });
    let bcast = udp_frame(
        mac(3),
        MacAddr::BROADCAST,
        ip(3),
        Ipv4Addr::BROADCAST,
        64,
        b"x",
    );
    let flooded = (0..3000)
        .filter(|_| {
            matches!(
                f.sw.process_port(POD3, &mut buf(&bcast), f.now),
                Action::Flood { .. }
            )
        })
        .count();
    assert_eq!(flooded, 1000, "the burst");
    assert_eq!(f.sw.counters().drops_for(DropReason::StormControl), 2000);
    assert_eq!(f.sw.state().storm_dropped(POD3), 2000);
    // Unknown unicast and multicast have buckets of their own; so has
    // every other port, and the host port is not limited.
    let unknown = udp_frame(mac(3), mac(99), ip(3), ip(99), 64, b"x");
    assert!(matches!(
        f.sw.process_port(POD3, &mut buf(&unknown), f.now),
        Action::Flood { .. }
    ));
    let from4 = udp_frame(
        mac(4),
        MacAddr::BROADCAST,
        ip(4),
        Ipv4Addr::BROADCAST,
        64,
        b"x",
    );
    assert!(matches!(
        f.sw.process_port(POD4, &mut buf(&from4), f.now),
        Action::Flood { .. }
    ));
    let from_host = udp_frame(
        mac(2),
        MacAddr::BROADCAST,
        ip(2),
        Ipv4Addr::BROADCAST,
        64,
        b"x",
    );
    for _ in 0..2000 {
        assert!(matches!(
            f.sw.process_port(HOST, &mut buf(&from_host), f.now),
            Action::Flood { .. }
        ));
    }
    // ARP for the gateway is answered, never flooded nor limited.
    let arp = arp_frame(arp::OP_REQUEST, mac(3), ip(3), MacAddr::ZERO, ip(1));
    assert_eq!(
        f.sw.process_port(POD3, &mut buf(&arp), f.now),
        Action::Output(POD3)
    );
    // A tenth of a second later: 100 more.
    let later = f.now + Duration::from_millis(100);
    let flooded = (0..1000)
        .filter(|_| {
            matches!(
                f.sw.process_port(POD3, &mut buf(&bcast), later),
                Action::Flood { .. }
            )
        })
        .count();
    assert_eq!(flooded, 100);
}

#[test]
fn outside_goes_to_the_host_port_and_never_back() {
    let mut f = fixture(Backend::Vxlan { vni: 1 });
    let out = Ipv4Addr::new(1, 1, 1, 1);
    let fr = udp_frame(mac(3), ROUTER, ip(3), out, 64, b"out");
    let mut b = buf(&fr);
    assert_eq!(f.sw.process_port(POD3, &mut b, f.now), Action::Output(HOST));
    assert_eq!(&b.data()[..6], &mac(2).0);
    assert_eq!(f.sw.counters().routed_host, 1);
    let fr = udp_frame(mac(2), ROUTER, ip(2), out, 64, b"loop");
    assert_eq!(
        f.sw.process_port(HOST, &mut buf(&fr), f.now),
        Action::Drop(DropReason::NoRoute)
    );
    // Inside the cluster network but no node has it.
    let fr = udp_frame(mac(3), ROUTER, ip(3), Ipv4Addr::new(10, 244, 9, 9), 64, b"");
    assert_eq!(
        f.sw.process_port(POD3, &mut buf(&fr), f.now),
        Action::Drop(DropReason::NoRoute)
    );
    let fr = udp_frame(mac(3), ROUTER, ip(3), ip(255), 64, b"");
    assert_eq!(
        f.sw.process_port(POD3, &mut buf(&fr), f.now),
        Action::Drop(DropReason::SubnetBroadcast)
    );
}

/// host-gw, DirectRouting, BGP: a node reached by the host's route gets
/// its subnet's packets out of the host port, TTL decremented, MACs set
/// for the host; what comes back from the host (its route missing) or the
/// tunnel for that subnet goes no further.
#[test]
fn a_node_reached_by_route_gets_its_packets_through_the_host_port() {
    for backend in [Backend::HostGw, Backend::Vxlan { vni: 1 }] {
        let mut f = fixture(backend);
        f.sw.set_remotes(&[RemoteNode {
            subnet: Cidr::new(Ipv4Addr::new(10, 244, 2, 0), 24).unwrap(),
            endpoint: SocketAddrV4::new(REMOTE_IP, 8472),
            vtep_mac: REMOTE_VTEP,
            via: crate::core::Via::Host,
        }]);
        let dst = Ipv4Addr::new(10, 244, 2, 7);
        let fr = udp_frame(mac(3), ROUTER, ip(3), dst, 64, b"direct");
        let mut b = buf(&fr);
        assert_eq!(f.sw.process_port(POD3, &mut b, f.now), Action::Output(HOST));
        let d = b.data();
        assert_eq!((&d[..6], &d[6..12]), (&mac(2).0[..], &ROUTER.0[..]));
        assert_eq!(d[14 + 8], 63, "TTL decremented");
        let c = f.sw.counters();
        assert_eq!((c.routed_host, c.routed_direct, c.encapsulated), (1, 1, 0));
        let fr = udp_frame(mac(2), ROUTER, ip(2), dst, 64, b"back");
        assert_eq!(
            f.sw.process_port(HOST, &mut buf(&fr), f.now),
            Action::Drop(DropReason::NoRoute)
        );
    }
    // A host-gw switch has no tunnel: nothing is accepted from one.
    let mut f = fixture(Backend::HostGw);
    let inner = udp_frame(
        REMOTE_VTEP,
        ROUTER,
        Ipv4Addr::new(10, 244, 2, 5),
        ip(4),
        63,
        b"",
    );
    assert_eq!(
        f.sw.process_tunnel(
            SocketAddrV4::new(REMOTE_IP, 40001),
            &mut buf(&inner[14..]),
            f.now
        ),
        Action::Drop(DropReason::UnknownSender)
    );
}

#[test]
fn unresolved_neighbor_sends_one_arp_request_then_learns() {
    let mut f = fixture(Backend::Vxlan { vni: 1 });
    let target = ip(50);
    let inner = udp_frame(
        REMOTE_VTEP,
        ROUTER,
        Ipv4Addr::new(10, 244, 2, 5),
        target,
        63,
        b"q",
    );
    let pkt = [&[0x08, 0, 0, 0, 0, 0, 1, 0][..], &inner].concat();
    let from = SocketAddrV4::new(REMOTE_IP, 40001);
    let mut b = buf(&pkt);
    assert_eq!(
        f.sw.process_tunnel(from, &mut b, f.now),
        Action::Flood { except: None }
    );
    assert_eq!(
        b.data(),
        &arp_frame(arp::OP_REQUEST, ROUTER, ip(1), MacAddr::ZERO, target)[..]
    );
    // A second packet within a second is dropped without another request.
    assert_eq!(
        f.sw.process_tunnel(from, &mut buf(&pkt), f.now),
        Action::Drop(DropReason::NeighborUnresolved)
    );
    assert_eq!(f.sw.counters().arp_requests, 1);
    assert_eq!(f.sw.counters().drops_for(DropReason::NeighborUnresolved), 2);
    // The reply teaches the router the MAC; the next packet is delivered.
    let m = MacAddr([0x0a, 0, 0, 0, 0, 50]);
    let reply = arp_frame(arp::OP_REPLY, m, target, ROUTER, ip(1));
    assert_eq!(
        f.sw.process_port(POD3, &mut buf(&reply), f.now),
        Action::Consumed
    );
    assert_eq!(
        f.sw.process_tunnel(from, &mut buf(&pkt), f.now),
        Action::Output(POD3)
    );
    // A pod cannot take over another pod's address by ARP: port security
    // drops the lie before the router sees it.
    let lie = arp_frame(arp::OP_REPLY, m, ip(4), ROUTER, ip(1));
    assert_eq!(
        f.sw.process_port(POD3, &mut buf(&lie), f.now),
        Action::Drop(DropReason::ArpSpoof)
    );
    assert_eq!(f.sw.neighbors().lookup(ip(4)), Some(mac(4)));
}

#[test]
fn aging_runs_on_the_callers_clock() {
    let mut f = fixture(Backend::Vxlan { vni: 1 });
    let other = MacAddr([0x0a, 0, 0, 0, 0, 0x55]);
    let _ = f.sw.process_port(
        POD3,
        &mut buf(&udp_frame(other, mac(4), ip(3), ip(4), 64, b"")),
        f.now,
    );
    assert_eq!(f.sw.macs().lookup(other), Some(POD3));
    let next = f.sw.run(f.now).unwrap();
    assert_eq!(next, f.now + Duration::from_secs(300));
    let _ = f.sw.run(next);
    assert_eq!(f.sw.macs().lookup(other), None);
    assert_eq!(
        f.sw.macs().lookup(mac(3)),
        Some(POD3),
        "static entries never age"
    );
}

// ---- two switches joined by an in-memory tunnel ----

#[test]
fn two_nodes_round_trip_in_memory() {
    for backend in [Backend::Vxlan { vni: 1 }, Backend::Udp] {
        let now = Instant::now();
        let mut ca = cfg(backend);
        ca.router_mac = MacAddr([0x0e, 0, 0, 0, 0, 0xa]);
        let mut cb = cfg(backend);
        cb.subnet = Cidr::new(Ipv4Addr::new(10, 244, 2, 0), 24).unwrap();
        cb.gateway = Ipv4Addr::new(10, 244, 2, 1);
        cb.router_mac = MacAddr([0x0e, 0, 0, 0, 0, 0xb]);
        let (ua, ub) = (
            Ipv4Addr::new(192, 168, 100, 1),
            Ipv4Addr::new(192, 168, 100, 2),
        );
        let mut a = Switch::new(ca.clone());
        let mut b = Switch::new(cb.clone());
        a.set_remotes(&[RemoteNode {
            subnet: cb.subnet,
            endpoint: SocketAddrV4::new(ub, 8472),
            vtep_mac: cb.router_mac,
            via: crate::core::Via::Tunnel,
        }]);
        b.set_remotes(&[RemoteNode {
            subnet: ca.subnet,
            endpoint: SocketAddrV4::new(ua, 8472),
            vtep_mac: ca.router_mac,
            via: crate::core::Via::Tunnel,
        }]);
        let pa = MacAddr([0x0a, 0x58, 10, 244, 1, 3]);
        let pb = MacAddr([0x0a, 0x58, 10, 244, 2, 3]);
        a.add_port(
            PortId(1),
            PortConfig {
                kind: PortKind::Pod,
                mac: pa,
                ip: Ipv4Addr::new(10, 244, 1, 3),
            },
            now,
        );
        b.add_port(
            PortId(1),
            PortConfig {
                kind: PortKind::Pod,
                mac: pb,
                ip: Ipv4Addr::new(10, 244, 2, 3),
            },
            now,
        );

        let payload: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let fr = udp_frame(
            pa,
            ca.router_mac,
            Ipv4Addr::new(10, 244, 1, 3),
            Ipv4Addr::new(10, 244, 2, 3),
            64,
            &payload,
        );
        let mut p = buf(&fr);
        let Action::Tunnel { dst, .. } = a.process_port(PortId(1), &mut p, now) else {
            panic!()
        };
        assert_eq!(*dst.ip(), ub);
        let wire = p.data().to_vec();
        let mut q = buf(&wire);
        assert_eq!(
            b.process_tunnel(SocketAddrV4::new(ua, 50000), &mut q, now),
            Action::Output(PortId(1))
        );
        let s = SlicedPacket::from_ethernet(q.data()).unwrap();
        assert_eq!(
            s.link
                .unwrap()
                .to_header()
                .unwrap()
                .ethernet2()
                .unwrap()
                .destination,
            pb.0
        );
        let h = ip_of(q.data());
        assert_eq!(h.time_to_live, 62, "two router hops, as with the kernel");
        match s.transport.unwrap() {
            etherparse::TransportSlice::Udp(u) => assert_eq!(u.payload(), &payload[..]),
            t => panic!("{t:?}"),
        }
    }
}

// ---- against the bytes a Linux vxlan device (flannel-configured) emits ----

static LINUX_ICMP: &[u8] = include_bytes!("../../../encap/src/fixtures/linux_vxlan_icmp.bin");
static LINUX_UDP: &[u8] = include_bytes!("../../../encap/src/fixtures/linux_vxlan_udp.bin");
const LINUX_VTEP: MacAddr = MacAddr([0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x01]);
const TWILL_VTEP: MacAddr = MacAddr([0x0a, 0x58, 0x0a, 0xf4, 0x02, 0x01]);

#[test]
fn accepts_what_a_linux_vtep_sends() {
    let now = Instant::now();
    let mut c = cfg(Backend::Vxlan { vni: 1 });
    c.subnet = Cidr::new(Ipv4Addr::new(10, 244, 2, 0), 24).unwrap();
    c.gateway = Ipv4Addr::new(10, 244, 2, 1);
    c.router_mac = TWILL_VTEP;
    let mut sw = Switch::new(c);
    let linux = Ipv4Addr::new(192, 168, 200, 1);
    sw.set_remotes(&[RemoteNode {
        subnet: Cidr::new(Ipv4Addr::new(10, 244, 1, 0), 24).unwrap(),
        endpoint: SocketAddrV4::new(linux, 8472),
        vtep_mac: LINUX_VTEP,
        via: crate::core::Via::Tunnel,
    }]);
    let pod = MacAddr([0x0a, 0x58, 0x0a, 0xf4, 0x02, 0x03]);
    sw.add_port(
        PortId(1),
        PortConfig {
            kind: PortKind::Pod,
            mac: pod,
            ip: Ipv4Addr::new(10, 244, 2, 3),
        },
        now,
    );
    for fixture in [LINUX_ICMP, LINUX_UDP] {
        let mut b = buf(fixture);
        assert_eq!(
            sw.process_tunnel(SocketAddrV4::new(linux, 33129), &mut b, now),
            Action::Output(PortId(1))
        );
        let d = b.data();
        assert_eq!(&d[..6], &pod.0);
        assert_eq!(&d[6..12], &TWILL_VTEP.0);
        // Same IP packet, one hop later.
        let h = ip_of(d);
        assert_eq!(h.time_to_live, 63);
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        assert_eq!(&d[14 + 20..], &fixture[8 + 14 + 20..]);
    }
}

#[test]
fn emits_what_a_linux_vtep_emits() {
    // twill as the sending node: the same inner IP packet, arriving from a
    // pod with one more hop of TTL, must leave as the kernel's exact bytes.
    let now = Instant::now();
    let mut c = cfg(Backend::Vxlan { vni: 1 });
    c.router_mac = LINUX_VTEP;
    let mut sw = Switch::new(c);
    sw.set_remotes(&[RemoteNode {
        subnet: Cidr::new(Ipv4Addr::new(10, 244, 2, 0), 24).unwrap(),
        endpoint: SocketAddrV4::new(Ipv4Addr::new(192, 168, 200, 2), 8472),
        vtep_mac: TWILL_VTEP,
        via: crate::core::Via::Tunnel,
    }]);
    let pod = mac(3);
    // The kernel's captures come from another pod address: allowed here,
    // the test is about the bytes on the wire.
    sw.state().add_port_allowing(
        POD3,
        PortConfig {
            kind: PortKind::Pod,
            mac: pod,
            ip: ip(3),
        },
        Allowance {
            macs: Vec::new(),
            ips: vec![Cidr::new(Ipv4Addr::new(10, 244, 0, 0), 16).unwrap()],
        },
        now,
    );
    for fixture in [LINUX_ICMP, LINUX_UDP] {
        let mut ipk = fixture[8 + 14..].to_vec();
        ipk[8] += 1;
        ipk[10] = 0;
        ipk[11] = 0;
        let cs = encap::checksum::checksum(&ipk[..20]);
        ipk[10..12].copy_from_slice(&cs.to_be_bytes());
        let mut fr = Vec::new();
        fr.extend_from_slice(&LINUX_VTEP.0);
        fr.extend_from_slice(&pod.0);
        fr.extend_from_slice(&[0x08, 0x00]);
        fr.extend_from_slice(&ipk);
        let mut b = buf(&fr);
        let a = sw.process_port(POD3, &mut b, now);
        assert!(
            matches!(a, Action::Tunnel { dst, .. } if dst == SocketAddrV4::new(Ipv4Addr::new(192, 168, 200, 2), 8472)),
            "{a:?}"
        );
        assert_eq!(
            b.data(),
            fixture,
            "byte-identical to the kernel's VXLAN payload"
        );
    }
}

// ---- nothing derived from a packet may panic ----

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_frames_never_panic(
        body in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
        dst_router in proptest::bool::ANY,
        ethertype in proptest::sample::select(vec![0x0800u16, 0x0806, 0x86dd, 0x1234]),
        port in 0u16..4,
        fix_ip in proptest::bool::ANY,
        gso_type in proptest::sample::select(vec![0u8, 1, 4, 5, 0x81, 0xff]),
        gso_size in 0u16..3000,
        dst in proptest::sample::select(vec![[10u8, 244, 1, 1], [10, 244, 1, 3], [10, 244, 1, 99], [10, 244, 2, 5], [10, 244, 9, 9], [1, 1, 1, 1], [10, 244, 1, 255]]),
    ) {
        let mut f = fixture(Backend::Vxlan { vni: 1 });
        let mut body = body;
        if fix_ip && body.len() >= 20 {
            // Arbitrary fields behind a header that passes the checks, so
            // that routing, TTL and ICMP error paths are reached.
            let ihl = usize::from(body[0] & 0x0f).clamp(5, body.len() / 4);
            body[0] = 0x40 | ihl as u8;
            let total = (body.len() as u16).saturating_sub(u16::from(body[2]) % 8);
            body[2..4].copy_from_slice(&total.max(ihl as u16 * 4).to_be_bytes());
            body[16..20].copy_from_slice(&dst);
            body[10] = 0;
            body[11] = 0;
            let c = encap::checksum::checksum(&body[..ihl * 4]);
            body[10..12].copy_from_slice(&c.to_be_bytes());
        }
        let mut fr = Vec::new();
        fr.extend_from_slice(&(if dst_router { ROUTER } else { MacAddr::BROADCAST }).0);
        fr.extend_from_slice(&MacAddr([0x0a, 0, 0, 0, 0, 0x42]).0);
        fr.extend_from_slice(&ethertype.to_be_bytes());
        fr.extend_from_slice(&body);
        let mut b = buf(&fr);
        b.offload = encap::vnet::Header { gso_type, gso_size, ..Default::default() };
        let _ = f.sw.process_port(PortId(port), &mut b, f.now);
        let _ = f.sw.process_port(PortId(port), &mut buf(&body), f.now);
    }

    #[test]
    fn arbitrary_tunnel_payloads_never_panic(
        body in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
        valid_prefix in proptest::bool::ANY,
        known in proptest::bool::ANY,
        udp in proptest::bool::ANY,
    ) {
        let mut f = fixture(if udp { Backend::Udp } else { Backend::Vxlan { vni: 1 } });
        let mut p = Vec::new();
        if valid_prefix && !udp {
            p.extend_from_slice(&[0x08, 0, 0, 0, 0, 0, 1, 0]);
            p.extend_from_slice(&ROUTER.0);
            p.extend_from_slice(&REMOTE_VTEP.0);
            p.extend_from_slice(&[0x08, 0x00]);
        }
        if valid_prefix && udp && body.len() >= 20 {
            // A plausible IPv4 start: version/IHL and a length that fits.
            p.push(0x45);
            p.push(0);
            p.extend_from_slice(&((body.len() as u16).min(200)).to_be_bytes());
            p.extend_from_slice(&body[4..]);
        } else {
            p.extend_from_slice(&body);
        }
        let from = if known { REMOTE_IP } else { Ipv4Addr::new(192, 168, 100, 77) };
        let _ = f.sw.process_tunnel(SocketAddrV4::new(from, 4789), &mut buf(&p), f.now);
    }
}

// ---- offloads: GSO super-frames and partial checksums ----

fn tcp_super_frame(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, payload: usize) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(mac(3).0, ROUTER.0)
        .ipv4(src.octets(), dst.octets(), ttl)
        .tcp(40000, 5201, 1, 65535)
        .write(&mut v, &vec![0x11; payload])
        .unwrap();
    v
}

fn tso(gso_size: u16) -> encap::vnet::Header {
    encap::vnet::Header {
        flags: encap::vnet::F_NEEDS_CSUM,
        gso_type: encap::vnet::GSO_TCPV4,
        hdr_len: 54,
        gso_size,
        csum_start: 34,
        csum_offset: 16,
    }
}

#[test]
fn super_frames_are_checked_per_segment_against_the_tunnel_mtu() {
    let mut f = fixture(Backend::Vxlan { vni: 1 });
    let dst = Ipv4Addr::new(10, 244, 2, 5);
    // 20000 bytes of payload, far above the tunnel MTU: fine as segments of
    // 1410 (20 + 20 + 1410 = 1450), refused as segments of 1411.
    let fr = tcp_super_frame(ip(3), dst, 64, 20000);
    let mut b = buf(&fr);
    b.offload = tso(1410);
    let a = f.sw.process_port(POD3, &mut b, f.now);
    assert!(matches!(a, Action::Tunnel { l3: 22, .. }), "{a:?}");
    assert_eq!(
        b.offload,
        tso(1410),
        "the offload state travels with the packet"
    );
    let mut b = buf(&fr);
    b.offload = tso(1411);
    assert_eq!(
        f.sw.process_port(POD3, &mut b, f.now),
        Action::Drop(DropReason::GsoSegmentTooBig)
    );
    // A GSO type that cannot be segmented here.
    let mut b = buf(&fr);
    b.offload = encap::vnet::Header {
        gso_type: 4,
        ..tso(1400)
    }; // TCPV6
    assert_eq!(
        f.sw.process_port(POD3, &mut b, f.now),
        Action::Drop(DropReason::UnsupportedOffload)
    );
    // To a local pod a super-frame passes whole.
    let fr = tcp_super_frame(ip(3), ip(4), 64, 20000);
    let mut b = buf(&fr);
    b.offload = tso(1410);
    assert_eq!(f.sw.process_port(POD3, &mut b, f.now), Action::Output(POD4));
    assert_eq!(b.offload, tso(1410));
}

/// Found by the `switch` fuzz target (fuzz/regressions/switch/
/// tso-data-offset-0): a TSO super-frame whose TCP data offset was below 5
/// went to the tunnel, where the driver's segmentation refused it and
/// counted a TX offload error; so did a fragment, and one whose headers
/// exceed its total length. The switch drops them as unsupported offloads.
#[test]
fn super_frames_the_driver_cannot_cut_are_dropped() {
    let mut f = fixture(Backend::Vxlan { vni: 1 });
    let fr = tcp_super_frame(ip(3), Ipv4Addr::new(10, 244, 2, 5), 64, 4000);
    // (what, offset in the frame, bytes written there)
    let edits: [(&str, usize, &[u8]); 4] = [
        ("data offset 0", 14 + 20 + 12, &[0x00]),
        ("data offset 4", 14 + 20 + 12, &[0x40]),
        ("a fragment (MF)", 14 + 6, &[0x20]),
        ("total length within the TCP header", 14 + 2, &[0, 30]),
    ];
    for (what, at, bytes) in edits {
        let mut fr = fr.clone();
        fr[at..at + bytes.len()].copy_from_slice(bytes);
        fr[24..26].fill(0);
        let c = encap::checksum::checksum(&fr[14..34]);
        fr[24..26].copy_from_slice(&c.to_be_bytes());
        let mut b = buf(&fr);
        b.offload = tso(1400);
        assert_eq!(
            f.sw.process_port(POD3, &mut b, f.now),
            Action::Drop(DropReason::UnsupportedOffload),
            "{what}"
        );
    }
    // gso_size 0 (which the TAP driver does not let in either).
    let mut b = buf(&fr);
    b.offload = tso(0);
    assert_eq!(
        f.sw.process_port(POD3, &mut b, f.now),
        Action::Drop(DropReason::UnsupportedOffload)
    );
    // The frame itself goes.
    let mut b = buf(&fr);
    b.offload = tso(1400);
    let a = f.sw.process_port(POD3, &mut b, f.now);
    assert!(matches!(a, Action::Tunnel { l3: 22, .. }), "{a:?}");
}

#[test]
fn udp_backend_reports_l3_at_zero() {
    let mut f = fixture(Backend::Udp);
    let fr = tcp_super_frame(ip(3), Ipv4Addr::new(10, 244, 2, 5), 64, 3000);
    let mut b = buf(&fr);
    b.offload = tso(1410);
    assert!(matches!(
        f.sw.process_port(POD3, &mut b, f.now),
        Action::Tunnel { l3: 0, .. }
    ));
}

#[test]
fn router_built_packets_carry_no_offload_state() {
    let mut f = fixture(Backend::Vxlan { vni: 1 });
    // A TSO super-frame whose TTL runs out: the ICMP error built over it
    // must not go out with the super-frame's GSO header.
    let fr = tcp_super_frame(ip(3), Ipv4Addr::new(10, 244, 2, 5), 1, 20000);
    let mut b = buf(&fr);
    b.offload = tso(1410);
    assert_eq!(f.sw.process_port(POD3, &mut b, f.now), Action::Output(POD3));
    assert_eq!(b.data()[14 + 20], icmp::TYPE_TIME_EXCEEDED);
    assert_eq!(b.offload, encap::vnet::Header::default());
    // Nor does an ARP reply built over a frame that had a partial checksum.
    let fr = arp_frame(arp::OP_REQUEST, mac(3), ip(3), MacAddr::ZERO, ip(1));
    let mut b = buf(&fr);
    b.offload = tso(1410);
    assert_eq!(f.sw.process_port(POD3, &mut b, f.now), Action::Output(POD3));
    assert_eq!(b.offload, encap::vnet::Header::default());
}

// ---- workers: several switches over one state ----

#[path = "switch_workers_tests.rs"]
mod workers;

#[path = "switch_port_security_tests.rs"]
mod port_security;
