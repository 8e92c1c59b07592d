//! MAC learning shared by the workers of a node: a pod that bridges a second
//! MAC (here a macvlan on the pod's eth0, moved into a namespace of its own,
//! as a VM or a nested container behind the pod would be) is reached by
//! unicast from every worker once any worker has seen a frame from it.
// Helpers outside #[test] functions panic on failure too: this is a test crate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use common::*;

/// Flows from the sending pod: each one hashed to a TAP queue, so to a
/// worker, by the pod's kernel; with 16 of them both workers carry some.
const FLOWS: u16 = 16;
const PER_FLOW: u16 = 20;

/// The node's (flooded, switched) events.
fn flooded_switched(node: &NodeProcess) -> (u64, u64) {
    let e = node.counters().unwrap().events;
    (e.flooded, e.switched)
}

#[test]
fn a_mac_learned_behind_a_pod_is_switched_not_flooded_by_every_worker() {
    if !require_root("a_mac_learned_behind_a_pod_is_switched_not_flooded_by_every_worker") {
        return;
    }
    let c = Cluster::with_node_args("vxlan", &["--workers", "2"]).unwrap();
    let v = c.node_a.counters().unwrap();
    assert_eq!(v.workers, 2, "{v:?}");

    // Behind a pod: a macvlan with its own MAC and address, in its own
    // namespace (the "VM"), routed via the pod subnet's gateway. No IPv6 and
    // static neighbours on both sides, so that the VM's MAC sends exactly
    // what the test sends and nothing else (no NDP, MLD or ARP).
    let vm = Netns::new("twl-l-vm").unwrap();
    vm.sysctl("net.ipv6.conf.all.disable_ipv6", "1").unwrap();
    vm.sysctl("net.ipv6.conf.default.disable_ipv6", "1")
        .unwrap();
    let vm_ip = nth_host(subnet(1), 200);
    let vm_mac = "0a:58:0a:f4:01:c8";
    let gw = c.node_a.config().gateway().to_string();
    // The pod that bridges the VM declares its MAC and address (port
    // security: a pod sends only from its own otherwise).
    let vm_ip_prefix = format!("{vm_ip}/32");
    let allow = ["--allow-mac", vm_mac, "--allow-ip", vm_ip_prefix.as_str()];
    let br = Pod::attach_args(&c.node_a, "twl-l-br", &allow).unwrap();
    let bridge = br.netns();
    bridge
        .ip(&[
            "link", "add", "mv0", "link", "eth0", "address", vm_mac, "type", "macvlan", "mode",
            "bridge",
        ])
        .unwrap();
    bridge
        .ip(&["link", "set", "mv0", "netns", vm.name()])
        .unwrap();
    vm.ip(&["addr", "add", &format!("{vm_ip}/24"), "dev", "mv0"])
        .unwrap();
    vm.ip(&["link", "set", "mv0", "up"]).unwrap();
    vm.ip(&["route", "add", "default", "via", &gw]).unwrap();
    assert_eq!(vm.link_mac("mv0").unwrap(), vm_mac);
    let (a2, a2_ip) = (c.a2.netns(), c.a2.ip());
    let a2_mac = a2.link_mac("eth0").unwrap();
    let static_neigh = |ns: &Netns, ip: std::net::Ipv4Addr, mac: &str, dev: &str| {
        let ip = ip.to_string();
        ns.ip(&[
            "neigh",
            "replace",
            &ip,
            "lladdr",
            mac,
            "dev",
            dev,
            "nud",
            "permanent",
        ])
        .unwrap();
    };
    static_neigh(a2, vm_ip, vm_mac, "eth0");
    static_neigh(&vm, a2_ip, &a2_mac, "mv0");

    // One datagram from the VM teaches the switch its MAC: on one worker,
    // whichever reads the bridging pod's queue that carried it.
    let learned = |node: &NodeProcess| Some(node.counters().unwrap().mac.learned);
    assert_eq!(learned(&c.node_a), Some(0), "nothing learned yet");
    let hello = udp_socket(&vm, SocketAddrV4::new(vm_ip, 0)).unwrap();
    hello
        .send_to(b"hello", SocketAddrV4::new(a2_ip, 9))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while learned(&c.node_a) != Some(1) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        learned(&c.node_a),
        Some(1),
        "the VM's MAC {vm_mac} was not learned"
    );

    // The VM reads while the pod sends (320 datagrams outgrow a default
    // socket buffer).
    let rx = udp_socket(&vm, SocketAddrV4::new(vm_ip, 7000)).unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let want = usize::from(FLOWS * PER_FLOW);
    let receiver = std::thread::spawn(move || {
        let mut got = HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 16];
        while got.len() < want && Instant::now() < deadline {
            if let Ok((3, _)) = rx.recv_from(&mut buf) {
                got.insert((buf[0], u16::from_be_bytes([buf[1], buf[2]])));
            }
        }
        got.len()
    });
    let senders: Vec<_> = (0..FLOWS)
        .map(|_| udp_socket(a2, SocketAddrV4::new(a2_ip, 0)).unwrap())
        .collect();
    let (flooded, switched) = flooded_switched(&c.node_a);
    let dst = SocketAddrV4::new(vm_ip, 7000);
    for seq in 0..PER_FLOW {
        for (f, s) in senders.iter().enumerate() {
            s.send_to(&[f as u8, (seq >> 8) as u8, seq as u8], dst)
                .unwrap();
        }
        // A pause per round keeps the pods' and the VM's queues short.
        std::thread::sleep(Duration::from_millis(2));
    }
    let got = receiver.join().unwrap();
    let (f, s) = flooded_switched(&c.node_a);
    let (flooded, switched) = (f - flooded, s - switched);
    assert_eq!(got, want, "datagrams lost");
    // Every datagram went to the VM's port alone, whichever worker read it.
    // (A worker that had not learned the MAC would flood each of its
    // flows' datagrams to every port.) A few floods may be the pods' own
    // IPv6 multicast.
    assert!(
        switched >= u64::from(FLOWS * PER_FLOW),
        "switched {switched}, flooded {flooded}"
    );
    assert!(
        flooded <= 4,
        "flooded {flooded} frames, switched {switched}"
    );
    // The VM is routed too, across the node.
    ping(&vm, c.b1.ip(), 2).unwrap();
}
