//! Several switches over one [`SwitchState`], as a node's workers run them:
//! what one learns or the control side publishes, every other one uses.

use super::*;

#[test]
fn a_mac_learned_through_one_worker_is_forwarded_to_by_another() {
    let mut f = fixture(Backend::Vxlan { vni: 1 });
    let mut other = Switch::shared(f.sw.state().clone());
    // A second MAC behind pod 3 (a bridge in the pod), not yet learned.
    let learned = MacAddr([0x0a, 0, 0, 0, 0, 0x77]);
    let to_learned = udp_frame(mac(4), learned, ip(4), ip(3), 64, b"y");
    assert_eq!(
        other.process_port(POD4, &mut buf(&to_learned), f.now),
        Action::Flood { except: Some(POD4) }
    );
    // Worker A sees a frame from it on pod 3's port...
    let from_learned = udp_frame(learned, mac(4), ip(3), ip(4), 64, b"x");
    assert_eq!(
        f.sw.process_port(POD3, &mut buf(&from_learned), f.now),
        Action::Output(POD4)
    );
    // ...and worker B forwards to it instead of flooding.
    assert_eq!(
        other.process_port(POD4, &mut buf(&to_learned), f.now),
        Action::Output(POD3)
    );
    // Counters stay each worker's own.
    assert_eq!(f.sw.counters().switched, 1);
    assert_eq!(
        (other.counters().switched, other.counters().flooded),
        (1, 1)
    );
    assert_eq!(f.sw.macs().counters().learned, 1);
}

#[test]
fn a_move_seen_by_one_worker_redirects_the_others() {
    let mut f = fixture(Backend::Vxlan { vni: 1 });
    let mut other = Switch::shared(f.sw.state().clone());
    let vm = MacAddr([0x0a, 0, 0, 0, 0, 0x66]);
    let from_vm = udp_frame(vm, mac(2), ip(9), ip(2), 64, b"");
    let _ = f.sw.process_port(POD3, &mut buf(&from_vm), f.now);
    // The VM migrates behind pod 4; worker B sees it first.
    let later = f.now + Duration::from_secs(2);
    let _ = other.process_port(POD4, &mut buf(&from_vm), later);
    let to_vm = udp_frame(mac(2), vm, ip(2), ip(9), 64, b"");
    assert_eq!(
        f.sw.process_port(HOST, &mut buf(&to_vm), later),
        Action::Output(POD4)
    );
    assert_eq!(f.sw.macs().counters().moved, 1);
}

#[test]
fn a_neighbor_snooped_by_one_worker_is_routed_to_by_another() {
    let mut f = fixture(Backend::Vxlan { vni: 1 });
    let mut other = Switch::shared(f.sw.state().clone());
    let m = MacAddr([0x0a, 0, 0, 0, 0, 0x09]);
    // 10.244.1.9 (not an attached port) announces itself through worker A.
    let garp = arp_frame(arp::OP_REQUEST, m, ip(9), MacAddr::ZERO, ip(9));
    let _ = f.sw.process_port(POD3, &mut buf(&garp), f.now);
    // Worker B routes a packet from the tunnel to it without asking ARP.
    let from = SocketAddrV4::new(REMOTE_IP, 8472);
    let inner = udp_frame(
        REMOTE_VTEP,
        ROUTER,
        Ipv4Addr::new(10, 244, 2, 5),
        ip(9),
        64,
        b"z",
    );
    let mut pkt = vec![0u8; vxlan::HEADER_LEN];
    vxlan::emit(&mut pkt, 1).unwrap();
    pkt.extend_from_slice(&inner);
    let mut b = buf(&pkt);
    assert_eq!(
        other.process_tunnel(from, &mut b, f.now),
        Action::Output(POD3)
    );
    assert_eq!(other.counters().arp_requests, 0);
}

#[test]
fn ports_and_remotes_published_once_reach_every_worker() {
    let mut f = fixture(Backend::Vxlan { vni: 1 });
    let mut other = Switch::shared(f.sw.state().clone());
    // Warm worker B's cached snapshot before the control side changes it.
    let fr = udp_frame(mac(3), mac(4), ip(3), ip(4), 64, b"");
    assert_eq!(
        other.process_port(POD3, &mut buf(&fr), f.now),
        Action::Output(POD4)
    );
    let pod5 = PortId(3);
    let p5 = PortConfig {
        kind: PortKind::Pod,
        mac: mac(5),
        ip: ip(5),
    };
    f.sw.state().add_port(pod5, p5, f.now);
    f.sw.state().set_remotes(&[RemoteNode {
        subnet: Cidr::new(Ipv4Addr::new(10, 244, 7, 0), 24).unwrap(),
        endpoint: SocketAddrV4::new(Ipv4Addr::new(192, 168, 100, 7), 8472),
        vtep_mac: REMOTE_VTEP,
        via: crate::core::Via::Tunnel,
    }]);
    let fr = udp_frame(mac(5), mac(3), ip(5), ip(3), 64, b"");
    assert_eq!(
        other.process_port(pod5, &mut buf(&fr), f.now),
        Action::Output(POD3)
    );
    let fr = udp_frame(mac(5), ROUTER, ip(5), Ipv4Addr::new(10, 244, 7, 2), 64, b"");
    assert!(matches!(
        other.process_port(pod5, &mut buf(&fr), f.now),
        Action::Tunnel { dst, .. } if *dst.ip() == Ipv4Addr::new(192, 168, 100, 7)
    ));
    // The old remote node is gone for both.
    let fr = udp_frame(mac(3), ROUTER, ip(3), Ipv4Addr::new(10, 244, 2, 2), 64, b"");
    assert_eq!(
        f.sw.process_port(POD3, &mut buf(&fr), f.now),
        Action::Drop(DropReason::NoRoute)
    );
    assert!(f.sw.remove_port(pod5).is_some());
    let fr = udp_frame(mac(5), mac(3), ip(5), ip(3), 64, b"");
    assert_eq!(
        other.process_port(pod5, &mut buf(&fr), f.now),
        Action::Drop(DropReason::UnknownPort)
    );
}

#[test]
fn the_mac_table_cap_holds_for_the_node() {
    let mut c = cfg(Backend::Vxlan { vni: 1 });
    c.mac = MacTableConfig {
        max_entries: 4,
        max_per_port: 4,
        aging: Duration::from_secs(300),
    };
    let state = Arc::new(SwitchState::new(c));
    let now = Instant::now();
    let (mut a, mut b) = (Switch::shared(state.clone()), Switch::shared(state));
    for (id, d) in [(POD3, 3), (POD4, 4)] {
        let p = PortConfig {
            kind: PortKind::Pod,
            mac: mac(d),
            ip: ip(d),
        };
        // Each pod bridges three more MACs (declared, as port security asks).
        let macs = (0..3u8).map(|n| MacAddr([0x0a, 0, 0, 0, d, n])).collect();
        let allow = Allowance {
            macs,
            ips: Vec::new(),
        };
        a.state().add_port_allowing(id, p, allow, now);
    }
    for n in 0..3u8 {
        let src = MacAddr([0x0a, 0, 0, 0, 3, n]);
        let _ = a.process_port(
            POD3,
            &mut buf(&udp_frame(src, mac(4), ip(3), ip(4), 64, b"")),
            now,
        );
        let src = MacAddr([0x0a, 0, 0, 0, 4, n]);
        let _ = b.process_port(
            POD4,
            &mut buf(&udp_frame(src, mac(3), ip(4), ip(3), 64, b"")),
            now,
        );
    }
    let macs = a.macs();
    assert_eq!(macs.len(), 4 + 2, "4 learned (the cap) and 2 static");
    assert_eq!(macs.counters().learned, 6);
    assert_eq!(macs.counters().evicted, 2);
    assert_eq!(macs.check_invariants(), Ok(()));
}
