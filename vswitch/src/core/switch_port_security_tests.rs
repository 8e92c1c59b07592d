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
