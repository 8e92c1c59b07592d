//! Interop with a Linux node configured exactly as flannel's vxlan backend
//! configures one (`flannel.1`, permanent neighbor + FDB entry, onlink route,
//! pods on `cni0`).
//!
//! `kernel_nodes_interoperate` proves the flannel-style set-up itself (two
//! kernel nodes, no twill); `twill_node_interoperates_with_a_flannel_node`
//! puts twill on node A; `..._that_leaves_checksums_unfinished` does so with
//! the kernel node's underlay veth keeping its tx checksum offload, as in a
//! container-in-container cluster.
// Helpers outside #[test] functions panic on failure too: this is a test crate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

#[test]
fn kernel_nodes_interoperate() {
    if !require_root("kernel_nodes_interoperate") {
        return;
    }
    let ns_a = Netns::new("twl-k-a").unwrap();
    let ns_b = Netns::new("twl-k-b").unwrap();
    Underlay::pair(&ns_a, &ns_b, UNDERLAY_A, UNDERLAY_B, 24).unwrap();
    let ka = KernelVxlanNode::new(&ns_a, UNDERLAY_A, subnet(1), 1, 8472).unwrap();
    let kb = KernelVxlanNode::new(&ns_b, UNDERLAY_B, subnet(2), 1, 8472).unwrap();
    ka.add_peer(kb.subnet(), kb.public_ip(), kb.vtep_mac())
        .unwrap();
    kb.add_peer(ka.subnet(), ka.public_ip(), ka.vtep_mac())
        .unwrap();
    assert_eq!(ka.mtu(), 1450);
    let a1 = ka.add_pod().unwrap();
    let a2 = ka.add_pod().unwrap();
    let b1 = kb.add_pod().unwrap();

    check_path("kernel a1 -> a2", a1.netns(), a1.ip(), a2.netns(), a2.ip()).unwrap();
    check_path("kernel a1 -> b1", a1.netns(), a1.ip(), b1.netns(), b1.ip()).unwrap();
    check_path("kernel b1 -> a1", b1.netns(), b1.ip(), a1.netns(), a1.ip()).unwrap();
    // The node hosts reach the other node's pods through flannel.1.
    ping(&ns_a, b1.ip(), 2).unwrap();
    ping(&ns_b, a2.ip(), 2).unwrap();
    // A full-size packet with DF fits the 1450-byte pod MTU end to end.
    let out = a1
        .netns()
        .exec(
            "ping",
            &[
                "-n",
                "-q",
                "-c",
                "1",
                "-W",
                "2",
                "-M",
                "do",
                "-s",
                "1422",
                &b1.ip().to_string(),
            ],
        )
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn twill_node_interoperates_with_a_flannel_node() {
    if !require_root("twill_node_interoperates_with_a_flannel_node") {
        return;
    }
    let ns_a = Netns::new("twl-i-a").unwrap();
    let ns_b = Netns::new("twl-i-b").unwrap();
    Underlay::pair(&ns_a, &ns_b, UNDERLAY_A, UNDERLAY_B, 24).unwrap();

    // Node B: the kernel, configured as flannel would.
    let kb = KernelVxlanNode::new(&ns_b, UNDERLAY_B, subnet(2), 1, 8472).unwrap();

    // Node A: twill, with node B (flannel.1's MAC) as its peer.
    let mut cfg = NodeConfig::new("node-a", UNDERLAY_A, subnet(1), "vxlan");
    cfg.peers.push(PeerConfig {
        name: "node-b".into(),
        public_ip: UNDERLAY_B,
        subnet: kb.subnet(),
        vtep_mac: Some(kb.vtep_mac().to_owned()),
    });
    let node_a = NodeProcess::start(&twill_bin(), &ns_a, cfg).unwrap();
    let vtep_a = node_a
        .ready_status()
        .and_then(|s| s.vtep_mac.clone())
        .or_else(|| node_a.config().vtep_mac.clone())
        .unwrap();
    kb.add_peer(subnet(1), UNDERLAY_A, &vtep_a).unwrap();

    let a1 = Pod::attach(&node_a, "twl-i-a1").unwrap();
    let b1 = kb.add_pod().unwrap();
    assert_eq!(a1.info().unwrap().mtu, kb.mtu());

    check_path(
        "twill a1 -> kernel b1",
        a1.netns(),
        a1.ip(),
        b1.netns(),
        b1.ip(),
    )
    .unwrap();
    check_path(
        "kernel b1 -> twill a1",
        b1.netns(),
        b1.ip(),
        a1.netns(),
        a1.ip(),
    )
    .unwrap();
    // The hosts: twill's host port to the kernel pod, the kernel host to twill's pod.
    ping(&ns_a, b1.ip(), 2).unwrap();
    ping(&ns_b, a1.ip(), 2).unwrap();
}

/// A counter of `/proc/net/snmp` (`Tcp`/`Udp` row, e.g. `InCsumErrors`) as
/// the namespace `ns` sees it.
fn snmp(ns: &Netns, row: &str, field: &str) -> u64 {
    let text = ns.run("cat", &["/proc/net/snmp"]).unwrap();
    let prefix = format!("{row}:");
    let mut rows = text.lines().filter(|l| l.starts_with(&prefix));
    let (names, values) = (rows.next().unwrap(), rows.next().unwrap());
    let i = names.split_whitespace().position(|n| n == field).unwrap();
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

/// A kernel VXLAN node on a virtual underlay whose veth keeps tx checksum
/// offload sends inner TCP/UDP with unfinished (CHECKSUM_PARTIAL)
/// checksums: twill recognises them and hands them to its pod with
/// `NEEDS_CSUM`, so that verified TCP flows both ways, the counter says so
/// and the pod's kernel counts no checksum error.
#[test]
fn twill_node_interoperates_with_a_kernel_node_that_leaves_checksums_unfinished() {
    let test = "twill_node_interoperates_with_a_kernel_node_that_leaves_checksums_unfinished";
    if !require_root(test) {
        return;
    }
    let ns_a = Netns::new("twl-u-a").unwrap();
    let ns_b = Netns::new("twl-u-b").unwrap();
    Underlay::pair(&ns_a, &ns_b, UNDERLAY_A, UNDERLAY_B, 24).unwrap();

    // Node B: the kernel, its underlay veth's checksum offload left on.
    let kb = KernelVxlanNode::new_among_kernels(&ns_b, UNDERLAY_B, subnet(2), 1, 8472).unwrap();
    let ul = ns_b.iface_with_addr(UNDERLAY_B).unwrap();
    let features = ns_b.run("ethtool", &["-k", &ul]).unwrap();
    assert!(
        features.contains("tx-checksumming: on"),
        "the kernel node's underlay must keep tx checksum offload:\n{features}"
    );

    let mut cfg = NodeConfig::new("node-a", UNDERLAY_A, subnet(1), "vxlan");
    cfg.peers.push(PeerConfig {
        name: "node-b".into(),
        public_ip: UNDERLAY_B,
        subnet: kb.subnet(),
        vtep_mac: Some(kb.vtep_mac().to_owned()),
    });
    let node_a = NodeProcess::start(&twill_bin(), &ns_a, cfg).unwrap();
    let vtep_a = node_a
        .ready_status()
        .and_then(|s| s.vtep_mac.clone())
        .or_else(|| node_a.config().vtep_mac.clone())
        .unwrap();
    kb.add_peer(subnet(1), UNDERLAY_A, &vtep_a).unwrap();

    let a1 = Pod::attach(&node_a, "twl-u-a1").unwrap();
    let b1 = kb.add_pod().unwrap();
    let csum_errors = |what: &str| {
        (
            snmp(a1.netns(), "Tcp", "InCsumErrors"),
            snmp(a1.netns(), "Udp", "InCsumErrors"),
            what.to_owned(),
        )
    };
    let before = csum_errors("before");

    check_path(
        "twill a1 -> kernel b1",
        a1.netns(),
        a1.ip(),
        b1.netns(),
        b1.ip(),
    )
    .unwrap();
    check_path(
        "kernel b1 -> twill a1",
        b1.netns(),
        b1.ip(),
        a1.netns(),
        a1.ip(),
    )
    .unwrap_or_else(|e| panic!("{e:#}\ntwill's counters: {:?}", node_a.counters().unwrap()));

    let after = csum_errors("after");
    assert_eq!(
        (before.0, before.1),
        (after.0, after.1),
        "pod a1's TCP/UDP InCsumErrors grew"
    );
    let c = node_a.counters().unwrap();
    let partial = c.events.tunnel_csum_partial;
    assert!(partial > 0, "no unfinished checksum was recognised: {c:?}");
    eprintln!("{test}: {partial} segments with unfinished checksums passed on");
}
