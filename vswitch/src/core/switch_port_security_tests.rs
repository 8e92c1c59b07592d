//! Port security: a pod port sends from its own MAC and address (ARP
//! included), or from what its attachment declares; everything else is
//! dropped and counted by reason. The host port is not checked (it carries
//! the node's and the outside's traffic).

use super::*;

/// Pod 4 (no exceptions) forging packets as others.
#[test]
fn a_pod_cannot_send_from_another_address() {
    let mut f = fixture(Backend::Vxlan { vni: 1 });
    // As pod 3, as the gateway, as the host port, as a pod of another node.
    for forged in [ip(3), ip(1), ip(2), Ipv4Addr::new(10, 244, 2, 5)] {
        let fr = udp_frame(
            mac(4),
            ROUTER,
            forged,
            Ipv4Addr::new(10, 244, 2, 7),
            64,
            b"x",
        );
        assert_eq!(
            f.sw.process_port(POD4, &mut buf(&fr), f.now),
            Action::Drop(DropReason::IpSpoof),
            "{forged}"
        );
        // Bridged to a local pod too.
        let fr = udp_frame(mac(4), mac(3), forged, ip(3), 64, b"x");
        assert_eq!(
            f.sw.process_port(POD4, &mut buf(&fr), f.now),
            Action::Drop(DropReason::IpSpoof)
        );
    }
    assert_eq!(f.sw.counters().drops_for(DropReason::IpSpoof), 8);
    // Its own address passes, and so does 0.0.0.0 (a DHCP-style client).
    let fr = udp_frame(mac(4), mac(3), ip(4), ip(3), 64, b"x");
    assert_eq!(
        f.sw.process_port(POD4, &mut buf(&fr), f.now),
        Action::Output(POD3)
    );
    let fr = udp_frame(mac(4), mac(3), Ipv4Addr::UNSPECIFIED, ip(3), 64, b"x");
    assert_eq!(
        f.sw.process_port(POD4, &mut buf(&fr), f.now),
        Action::Output(POD3)
    );
}

#[test]
fn a_pod_cannot_claim_another_address_by_arp() {
    let mut f = fixture(Backend::Vxlan { vni: 1 });
    let cases = [
        // A request claiming pod 3's address (broadcast: every cache).
        arp_frame(arp::OP_REQUEST, mac(4), ip(3), MacAddr::ZERO, ip(2)),
        // A reply claiming pod 3's address, to the host port.
        arp_frame(arp::OP_REPLY, mac(4), ip(3), mac(2), ip(2)),
        // A gratuitous ARP for pod 3's address.
        arp_frame(arp::OP_REQUEST, mac(4), ip(3), MacAddr::ZERO, ip(3)),
        // The gateway, claimed towards a victim pod (unicast reply).
        arp_frame(arp::OP_REPLY, mac(4), ip(1), mac(3), ip(3)),
        // Its own address with another sender MAC (the frame's is right).
        {
            let mut fr = arp_frame(arp::OP_REQUEST, mac(4), ip(4), MacAddr::ZERO, ip(3));
            fr[14 + 8..14 + 14].copy_from_slice(&mac(3).0);
            fr
        },
    ];
    for (i, fr) in cases.iter().enumerate() {
        assert_eq!(
            f.sw.process_port(POD4, &mut buf(fr), f.now),
            Action::Drop(DropReason::ArpSpoof),
            "case {i}"
        );
    }
    assert_eq!(f.sw.counters().drops_for(DropReason::ArpSpoof), 5);
    // Nothing was learned from the lies.
    assert_eq!(f.sw.neighbors().lookup(ip(3)), Some(mac(3)));
    // Its own ARP, and an RFC 5227 probe (sender 0.0.0.0), pass.
    let own = arp_frame(arp::OP_REQUEST, mac(4), ip(4), MacAddr::ZERO, ip(3));
    assert_eq!(
        f.sw.process_port(POD4, &mut buf(&own), f.now),
        Action::Flood { except: Some(POD4) }
    );
    let probe = arp_frame(
        arp::OP_REQUEST,
        mac(4),
        Ipv4Addr::UNSPECIFIED,
        MacAddr::ZERO,
        ip(4),
    );
    assert_eq!(
        f.sw.process_port(POD4, &mut buf(&probe), f.now),
        Action::Flood { except: Some(POD4) }
    );
}

#[test]
fn a_pod_cannot_send_from_an_undeclared_mac_but_a_declared_one_is_learned() {
    let mut f = fixture(Backend::Vxlan { vni: 1 });
    let stranger = MacAddr([0x0a, 0, 0, 0, 0, 0x99]);
    let fr = udp_frame(stranger, mac(3), ip(4), ip(3), 64, b"x");
    assert_eq!(
        f.sw.process_port(POD4, &mut buf(&fr), f.now),
        Action::Drop(DropReason::MacSpoof)
    );
    assert_eq!(f.sw.macs().lookup(stranger), None, "not learned");
    // IPv6 (any EtherType other than IPv4 and ARP) gets the MAC rule.
    let mut v6 = udp_frame(stranger, mac(3), ip(4), ip(3), 64, b"x");
    v6[12..14].copy_from_slice(&[0x86, 0xdd]);
    assert_eq!(
        f.sw.process_port(POD4, &mut buf(&v6), f.now),
        Action::Drop(DropReason::MacSpoof)
    );
    // Pod 3 declared 0a:..:77 and 10.244.1.50: a VM behind it.
    let vm = MacAddr([0x0a, 0, 0, 0, 0, 0x77]);
    let fr = udp_frame(vm, mac(4), ip(50), ip(4), 64, b"x");
    assert_eq!(
        f.sw.process_port(POD3, &mut buf(&fr), f.now),
        Action::Output(POD4)
    );
    assert_eq!(f.sw.macs().lookup(vm), Some(POD3));
    // ...but not any address.
    let fr = udp_frame(vm, mac(4), ip(51), ip(4), 64, b"x");
    assert_eq!(
        f.sw.process_port(POD3, &mut buf(&fr), f.now),
        Action::Drop(DropReason::IpSpoof)
    );
}

#[test]
fn the_host_port_is_not_checked() {
    let mut f = fixture(Backend::Vxlan { vni: 1 });
    // The host forwards the outside's packets (NodePort clients, replies
    // of pods' outbound connections) with their own source addresses.
    let fr = udp_frame(mac(2), mac(3), Ipv4Addr::new(192, 0, 2, 9), ip(3), 64, b"x");
    assert_eq!(
        f.sw.process_port(HOST, &mut buf(&fr), f.now),
        Action::Output(POD3)
    );
}

#[test]
fn a_detached_ports_exceptions_go_with_it() {
    let f = fixture(Backend::Vxlan { vni: 1 });
    let st = f.sw.state();
    assert!(st.snapshot().allowance(POD3).is_some());
    st.remove_port(POD3);
    assert!(st.snapshot().allowance(POD3).is_none());
    st.add_port(
        POD3,
        PortConfig {
            kind: PortKind::Pod,
            mac: mac(3),
            ip: ip(3),
        },
        f.now,
    );
    assert!(
        st.snapshot().allowance(POD3).is_none(),
        "a new attachment starts strict"
    );
}

/// The EUI-64 link-local address Linux gives the interface with `m`.
fn link_local(m: MacAddr) -> [u8; 16] {
    let b = m.0;
    [
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        b[0] ^ 0x02,
        b[1],
        b[2],
        0xff,
        0xfe,
        b[3],
        b[4],
        b[5],
    ]
}

/// An IPv6 frame from `smac`/`src` carrying ICMPv6 `icmp` (type first).
fn ipv6_frame(smac: MacAddr, dmac: MacAddr, src: [u8; 16], icmp: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dmac.0);
    f.extend_from_slice(&smac.0);
    f.extend_from_slice(&0x86ddu16.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 255]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    f.extend_from_slice(icmp);
    f
}

/// A neighbour advertisement for `target` with a target link-layer
/// address option `lla`.
fn na(target: [u8; 16], lla: MacAddr) -> Vec<u8> {
    let mut m = vec![136, 0, 0, 0, 0x20, 0, 0, 0];
    m.extend_from_slice(&target);
    m.extend_from_slice(&[2, 1]);
    m.extend_from_slice(&lla.0);
    m
}

#[test]
fn a_pod_cannot_claim_another_ports_ipv6_link_local_address() {
    let mut f = fixture(Backend::Vxlan { vni: 1 });
    let all_nodes = MacAddr([0x33, 0x33, 0, 0, 0, 1]);
    let cases = [
        // An advertisement for pod 3's address, from pod 4's own source.
        ipv6_frame(
            mac(4),
            all_nodes,
            link_local(mac(4)),
            &na(link_local(mac(3)), mac(4)),
        ),
        // Pod 3's address as the source.
        ipv6_frame(
            mac(4),
            all_nodes,
            link_local(mac(3)),
            &na(link_local(mac(4)), mac(4)),
        ),
        // Its own address, but pointing caches at pod 3's MAC.
        ipv6_frame(
            mac(4),
            all_nodes,
            link_local(mac(4)),
            &na(link_local(mac(4)), mac(3)),
        ),
    ];
    for (i, fr) in cases.iter().enumerate() {
        assert_eq!(
            f.sw.process_port(POD4, &mut buf(fr), f.now),
            Action::Drop(DropReason::NdSpoof),
            "case {i}"
        );
    }
    assert_eq!(f.sw.counters().drops_for(DropReason::NdSpoof), 3);
    // Its own advertisement floods as on any bridge.
    let own = ipv6_frame(
        mac(4),
        all_nodes,
        link_local(mac(4)),
        &na(link_local(mac(4)), mac(4)),
    );
    assert_eq!(
        f.sw.process_port(POD4, &mut buf(&own), f.now),
        Action::Flood { except: Some(POD4) }
    );
    // And the MAC rule holds for IPv6 too.
    let forged = ipv6_frame(
        mac(3),
        all_nodes,
        link_local(mac(3)),
        &na(link_local(mac(3)), mac(3)),
    );
    assert_eq!(
        f.sw.process_port(POD4, &mut buf(&forged), f.now),
        Action::Drop(DropReason::MacSpoof)
    );
}
