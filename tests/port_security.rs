//! Port security end to end: a pod that sends from an address that is not
//! its own (here a second address added to its eth0, as an attacker with
//! CAP_NET_ADMIN in its pod would) reaches nobody, and the drop is counted;
//! its own address still works.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use common::*;

fn udp_arrives(from: &Pod, src: Ipv4Addr, to: &Pod) -> bool {
    let rx = udp_socket(to.netns(), SocketAddrV4::new(to.ip(), 7100)).unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let tx = udp_socket(from.netns(), SocketAddrV4::new(src, 0)).unwrap();
    for _ in 0..5 {
        tx.send_to(b"spoof?", SocketAddrV4::new(to.ip(), 7100))
            .unwrap();
    }
    let mut buf = [0u8; 16];
    rx.recv_from(&mut buf).is_ok()
}

#[test]
fn a_pod_sending_from_another_pods_or_the_gateways_address_reaches_nobody() {
    if !require_root("a_pod_sending_from_another_pods_or_the_gateways_address_reaches_nobody") {
        return;
    }
    let c = Cluster::new("vxlan").unwrap();
    let attacker = &c.a2;
    // Its own address works, to a pod on this node and on the other.
    assert!(udp_arrives(attacker, attacker.ip(), &c.a1));
    assert!(udp_arrives(attacker, attacker.ip(), &c.b1));
    for forged in [c.a1.ip(), c.node_a.config().gateway(), c.b2.ip()] {
        attacker
            .netns()
            .ip(&["addr", "add", &format!("{forged}/32"), "dev", "eth0"])
            .unwrap();
        for victim in [&c.a1, &c.b1] {
            if victim.ip() != forged {
                assert!(
                    !udp_arrives(attacker, forged, victim),
                    "{forged} reached {}",
                    victim.ip()
                );
            }
        }
    }
    let drops = c.node_a.counters().unwrap().drops("ip_spoof");
    assert!(drops >= 5, "ip_spoof {drops}");
}
