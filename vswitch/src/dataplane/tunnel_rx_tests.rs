//! What the tunnel receive path writes, checked against a real kernel: a
//! USO frame as [`gro::UdpCoalescer`] builds it, written into a TAP, comes
//! out of the pod's UDP socket as the datagrams that were joined, in order.
//! And what it counts: every datagram of a known mix, sent to a running
//! dataplane's tunnel socket, ends in exactly one outcome counter.

use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use encap::{gro, vnet, MacAddr};
use etherparse::PacketBuilder;

use crate::dataplane::negotiate_offloads;
use crate::sys::netlink::{self, LinkConfig};
use crate::sys::tap::{Tap, TUN_F_USO4, VNET_HDR_LEN};
use crate::sys::testutil::{need_root, TestNs};

const POD_MAC: MacAddr = MacAddr([0x0a, 0x58, 0x0a, 0x63, 0x00, 0x02]);
const PEER_MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
const POD_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
const PEER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 99, 0, 5), 40000);
const POD_PORT: u16 = 7000;

/// Datagrams from [`PEER`] to the pod of one flow, as the tunnel delivers
/// them (DF, identifications counting up from `ident`), with `payloads`.
fn flow(ident: u16, payloads: &[Vec<u8>]) -> Vec<Vec<u8>> {
    payloads
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut v = Vec::new();
            PacketBuilder::ethernet2(PEER_MAC, POD_MAC.0)
                .ipv4(PEER.ip().octets(), POD_IP.octets(), 64)
                .udp(PEER.port(), POD_PORT)
                .write(&mut v, p)
                .unwrap();
            // Identification and DF are not in the UDP checksum.
            let ip = &mut v[14..34];
            ip[4..6].copy_from_slice(&ident.wrapping_add(i as u16).to_be_bytes());
            ip[6] = 0x40;
            ip[10..12].copy_from_slice(&[0, 0]);
            let c = encap::checksum::checksum(ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            v
        })
        .collect()
}

/// `n` payloads of `len` bytes and a last one of `last` (if not 0), each
/// telling its index.
fn payloads(n: usize, len: usize, last: usize) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = (0..n)
        .map(|i| (0..len).map(|k| (i * 31 + k) as u8).collect())
        .collect();
    if last > 0 {
        v.push(vec![0xa5; last]);
    }
    v
}

#[test]
fn uso_frame_arrives_as_its_datagrams() {
    if !need_root("tunnel_rx::uso_frame_arrives_as_its_datagrams") {
        return;
    }
    let pod = TestNs::new();
    let (tap, sock) = pod
        .ns
        .run(|| {
            let tap = Tap::create("twuso%d").unwrap();
            let cfg = LinkConfig {
                mac: Some(POD_MAC),
                mtu: None,
                addrs: vec![(POD_IP, 24)],
                up: true,
            };
            netlink::configure_link(tap.name(), &cfg).unwrap();
            let sock = UdpSocket::bind((POD_IP, POD_PORT)).unwrap();
            (tap, sock)
        })
        .unwrap();
    // As the dataplane asks: only a TAP that accepts USO gets USO frames.
    if negotiate_offloads(&tap) & TUN_F_USO4 == 0 {
        let _ = writeln!(
            io::stderr(),
            "!!!!!!!! tunnel_rx: SKIPPED, this kernel has no USO (Linux < 6.2) !!!!!!!!"
        );
        return;
    }
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let cases = [
        ("64 x 64 bytes", payloads(63, 64, 20), 0xfff0),
        ("44 x 1472 bytes", payloads(44, 1472, 0), 7),
        ("64 x 1 byte", payloads(64, 1, 0), 0),
        ("2 datagrams", payloads(1, 300, 299), 100),
    ];
    for (what, sent, ident) in cases {
        let frames = flow(ident, &sent);
        let mut c = gro::UdpCoalescer::new(65_536 + 128);
        for f in &frames {
            assert_eq!(c.push(f), gro::Push::Merged, "{what}");
        }
        let (hdr, sf) = c.take().unwrap();
        assert_eq!(hdr.gso_type, vnet::GSO_UDP_L4, "{what}");
        let mut h = [0u8; VNET_HDR_LEN];
        hdr.emit(&mut h).unwrap();
        assert_eq!(tap.write_frame(&h, sf).unwrap(), VNET_HDR_LEN + sf.len());
        let mut buf = vec![0u8; 2048];
        for (i, want) in sent.iter().enumerate() {
            let (n, from) = sock
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("{what}: datagram {i} of {}: {e}", sent.len()));
            assert_eq!(from, PEER.into(), "{what}");
            assert_eq!(&buf[..n], &want[..], "{what}: datagram {i}");
        }
    }
    sock.set_nonblocking(true).unwrap();
    let e = sock.recv_from(&mut [0u8; 16]).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "one datagram too many");
}

// ---- every received datagram in exactly one counter ----

const ROUTER_MAC: MacAddr = MacAddr([0x0e, 0, 0, 0, 0, 1]);
const REMOTE_VTEP: [u8; 6] = [0x0e, 0, 0, 0, 0, 2];
const NEIGHBOR_MAC: MacAddr = MacAddr([0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x05]);

fn switch_cfg() -> crate::core::SwitchConfig {
    use crate::core::{Backend, ConntrackConfig, MacTableConfig, SwitchConfig};
    SwitchConfig {
        subnet: encap::Cidr::new(Ipv4Addr::new(10, 244, 1, 0), 24).unwrap(),
        gateway: Ipv4Addr::new(10, 244, 1, 1),
        cluster: encap::Cidr::new(Ipv4Addr::new(10, 244, 0, 0), 16).unwrap(),
        router_mac: ROUTER_MAC,
        backend: Backend::Vxlan { vni: 1 },
        tunnel_mtu: 1450,
        mac: MacTableConfig::default(),
        neighbor_capacity: 64,
        neighbor_aging: Duration::from_secs(300),
        conntrack: ConntrackConfig::default(),
        icmp: Default::default(),
        storm: Default::default(),
    }
}

/// A VXLAN datagram (`flags`, `vni`) around an Ethernet frame to `dst_mac`
/// of EtherType `ethertype` carrying `l3`.
fn vxlan(flags: u8, vni: u32, dst_mac: [u8; 6], ethertype: u16, l3: &[u8]) -> Vec<u8> {
    let mut v = vec![flags, 0, 0, 0];
    v.extend_from_slice(&(vni << 8).to_be_bytes());
    v.extend_from_slice(&dst_mac);
    v.extend_from_slice(&REMOTE_VTEP);
    v.extend_from_slice(&ethertype.to_be_bytes());
    v.extend_from_slice(l3);
    v
}

/// An IPv4 packet from a pod of the remote node to `dst`: UDP, or an ICMP
/// echo request when `ping`.
fn ipv4(dst: Ipv4Addr, ttl: u8, ping: bool, payload: &[u8]) -> Vec<u8> {
    ipv4_from(Ipv4Addr::new(10, 244, 2, 5), dst, ttl, ping, payload)
}

/// [`ipv4`] from `src`.
fn ipv4_from(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, ping: bool, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ipv4(src.octets(), dst.octets(), ttl);
    let mut v = Vec::new();
    if ping {
        b.icmpv4_echo_request(7, 1).write(&mut v, payload).unwrap();
    } else {
        b.udp(40000, 7000).write(&mut v, payload).unwrap();
    }
    v
}

/// A good datagram for the router: IPv4 in VXLAN VNI 1.
fn good(l3: &[u8]) -> Vec<u8> {
    vxlan(0x08, 1, ROUTER_MAC.0, 0x0800, l3)
}

#[test]
fn every_received_datagram_ends_in_exactly_one_counter() {
    use crate::core::RemoteNode;
    use crate::dataplane::{Dataplane, DataplaneConfig};
    use crate::sys::udp;
    use std::collections::BTreeMap;
    use std::time::Instant;

    let tunnel = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = match tunnel.local_addr().unwrap() {
        std::net::SocketAddr::V4(a) => a,
        a => panic!("{a}"),
    };
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let stranger = UdpSocket::bind("127.0.0.2:0").unwrap();
    let peer_at = match peer.local_addr().unwrap() {
        std::net::SocketAddr::V4(a) => a,
        a => panic!("{a}"),
    };
    let dp = Dataplane::start(DataplaneConfig {
        switch: switch_cfg(),
        tunnels: vec![tunnel],
        tx_sockets: Vec::new(),
        offload: true,
        busy_poll: crate::busy_poll::BusyPoll::Off,
        steering: Default::default(),
    })
    .unwrap();
    dp.set_remotes(vec![RemoteNode {
        subnet: encap::Cidr::new(Ipv4Addr::new(10, 244, 2, 0), 24).unwrap(),
        endpoint: peer_at,
        vtep_mac: MacAddr(REMOTE_VTEP),
        via: crate::core::Via::Tunnel,
    }])
    .unwrap();
    let neighbor = Ipv4Addr::new(10, 244, 1, 5);
    let _ = dp
        .state()
        .neighbors()
        .observe(neighbor, NEIGHBOR_MAC, Instant::now());

    let mut bad_csum = ipv4(neighbor, 64, false, b"x");
    bad_csum[10] ^= 0xff;
    let mut partial = ipv4(neighbor, 64, false, b"partial");
    let pseudo = encap::checksum::fold(encap::checksum::pseudo_header(
        Ipv4Addr::new(10, 244, 2, 5),
        neighbor,
        17,
        (partial.len() - 20) as u16,
    ));
    partial[26..28].copy_from_slice(&pseudo.to_be_bytes());
    // (what is sent, by whom, the counter it must end in)
    let mix: Vec<(Vec<u8>, &UdpSocket, &str)> = vec![
        (Vec::new(), &peer, "truncated"),
        (vec![0x08, 0, 0], &peer, "truncated"),
        (Vec::new(), &stranger, "unknown_sender"),
        (
            good(&ipv4(neighbor, 64, false, b"x")),
            &stranger,
            "unknown_sender",
        ),
        (
            vxlan(
                0x0c,
                1,
                ROUTER_MAC.0,
                0x0800,
                &ipv4(neighbor, 64, false, b"x"),
            ),
            &peer,
            "bad_vxlan_header",
        ),
        (
            vxlan(
                0x08,
                2,
                ROUTER_MAC.0,
                0x0800,
                &ipv4(neighbor, 64, false, b"x"),
            ),
            &peer,
            "bad_vni",
        ),
        (
            vxlan(
                0x08,
                1,
                [0x0a, 0, 0, 0, 0, 9],
                0x0800,
                &ipv4(neighbor, 64, false, b"x"),
            ),
            &peer,
            "not_for_vtep",
        ),
        (
            vxlan(0x08, 1, ROUTER_MAC.0, 0x0806, &[0; 28]),
            &peer,
            "bad_inner",
        ),
        (good(&[0x45, 0, 0]), &peer, "truncated"),
        (good(&bad_csum), &peer, "bad_ip_checksum"),
        (good(&ipv4(neighbor, 1, false, b"x")), &peer, "ttl_exceeded"),
        (
            good(&ipv4(Ipv4Addr::new(10, 244, 3, 5), 64, false, b"x")),
            &peer,
            "no_route",
        ),
        (
            good(&ipv4(Ipv4Addr::new(10, 244, 2, 9), 64, false, b"x")),
            &peer,
            "no_route",
        ),
        (
            good(&ipv4(Ipv4Addr::new(8, 8, 8, 8), 64, false, b"x")),
            &peer,
            "no_route",
        ),
        (
            good(&ipv4(Ipv4Addr::new(10, 244, 1, 77), 64, false, b"x")),
            &peer,
            "neighbor_unresolved",
        ),
        (
            good(&ipv4(Ipv4Addr::new(10, 244, 1, 255), 64, false, b"x")),
            &peer,
            "subnet_broadcast",
        ),
        (
            good(&ipv4(neighbor, 64, false, b"delivered")),
            &peer,
            "routed_local",
        ),
        (good(&partial), &peer, "routed_local"),
        (
            good(&ipv4(Ipv4Addr::new(10, 244, 1, 1), 64, true, b"ping")),
            &peer,
            "icmp_echo_replies",
        ),
        (
            good(&ipv4(Ipv4Addr::new(10, 244, 1, 1), 64, false, b"x")),
            &peer,
            "to_gateway_unsupported",
        ),
    ];
    // Answers the router cannot route back (a source no node holds): the
    // packet answered is counted, the lost answer only as replies_dropped.
    let (gw, nowhere) = (Ipv4Addr::new(10, 244, 1, 1), Ipv4Addr::new(10, 244, 3, 5));
    let unanswerable = [
        (
            ipv4_from(nowhere, gw, 64, true, b"ping"),
            "icmp_echo_replies",
        ),
        (ipv4_from(nowhere, neighbor, 1, false, b"x"), "ttl_exceeded"),
    ];
    let mut mix = mix;
    for (l3, outcome) in &unanswerable {
        mix.push((good(l3), &peer, outcome));
    }
    let mut want: BTreeMap<&str, u64> = BTreeMap::new();
    for (d, from, outcome) in &mix {
        from.send_to(d, to).unwrap();
        *want.entry(outcome).or_default() += 1;
    }
    let mut sent = mix.len() as u64;
    // A UDP_GRO batch: equal datagrams sent in one UDP_SEGMENT call arrive
    // as one message of several.
    let one = good(&ipv4(neighbor, 64, false, b"batched!"));
    let batch: Vec<u8> = one.iter().copied().cycle().take(one.len() * 4).collect();
    let batched = udp::send_gso(&peer, &batch, one.len() as u16, to).is_ok();
    if batched {
        *want.entry("routed_local").or_default() += 4;
        sent += 4;
    } else {
        let _ = writeln!(
            io::stderr(),
            "tunnel_rx: UDP_SEGMENT refused here, the UDP_GRO batch is not part of the mix"
        );
    }

    let deadline = Instant::now() + Duration::from_secs(5);
    let stats = loop {
        let s = dp.stats().unwrap();
        if s.tunnel.rx_packets + s.tunnel.rx_not_ipv4 >= sent || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(
        stats.tunnel.rx_packets + stats.tunnel.rx_not_ipv4,
        sent,
        "datagrams received"
    );
    let got: BTreeMap<&str, u64> = stats.tunnel_rx_outcomes().filter(|(_, n)| *n > 0).collect();
    assert_eq!(got, want, "each datagram in the counter of its fate");
    let total: u64 = stats.tunnel_rx_outcomes().map(|(_, n)| n).sum();
    assert_eq!(total, sent, "the outcomes sum to the datagrams received");
    assert_eq!(stats.core.tunnel_csum_partial, 1);
    assert_eq!(stats.core.replies_dropped, 2);
    if batched {
        assert!(
            stats.tunnel.rx_gro_batches > 0,
            "the batch came as one message"
        );
    }
}
