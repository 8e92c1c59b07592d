//! Routing without encapsulation (issue 14), in network namespaces:
//! flannel's `host-gw` backend between two nodes on one L2 underlay, the
//! vxlan backend's `DirectRouting` with three nodes of which one sits
//! behind a router, and host routes that follow leases live while leaving
//! every route twill did not install alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use common::*;
use vswitch::stats::Reach;

/// twill's route protocol number (`hostroutes::RTPROT_TWILL`).
const PROTO: &str = "116";

/// `ip route show proto 116` in `ns`, one route per line.
fn twill_routes(ns: &Netns) -> Vec<String> {
    ns.ip(&["route", "show", "proto", PROTO])
        .unwrap()
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Waits until `cond` holds, up to `secs`.
fn wait(secs: u64, what: &str, mut cond: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        if Instant::now() > deadline {
            bail!("{what}: not within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

#[test]
fn host_gw_carries_pods_as_bare_ip_by_host_routes_and_removes_them_at_a_clean_stop() {
    if !require_root(
        "host_gw_carries_pods_as_bare_ip_by_host_routes_and_removes_them_at_a_clean_stop",
    ) {
        return;
    }
    let mut c = Cluster::new("host-gw").unwrap();
    let routes = twill_routes(&c.ns_a);
    assert_eq!(routes.len(), 1, "{routes:?}");
    assert!(
        routes[0].starts_with(&format!("10.244.2.0/24 via {UNDERLAY_B} dev")),
        "{routes:?}"
    );
    // The pods get the underlay's MTU: nothing is added to their packets.
    assert_eq!(c.node_a.status_json().unwrap()["mtu"], 1500);

    let tap = RawLink::open(&c.ns_a, &c.underlay.veth.a_if).unwrap();
    let (a1, b1) = (c.a1.ip(), c.b1.ip());
    let (seen, ping) = underlay_traffic(&tap, a1, b1, || ping(c.a1.netns(), b1, 5));
    ping.unwrap();
    assert!(
        seen.0 >= 10,
        "the underlay carried {} bare pod packets",
        seen.0
    );
    assert_eq!(seen.1, 0, "no VXLAN on the underlay");
    check_path("a1 -> b1", c.a1.netns(), a1, c.b1.netns(), b1).unwrap();
    check_path("b2 -> a2", c.b2.netns(), c.b2.ip(), c.a2.netns(), c.a2.ip()).unwrap();

    let counters = c.node_a.counters().unwrap();
    assert!(counters.events.routed_direct > 0);
    assert_eq!(counters.events.encapsulated, 0);
    let nodes = &c.node_a.status_json().unwrap()["nodes"];
    assert_eq!(nodes[0]["via"], "route", "{nodes}");

    c.node_a.stop();
    assert_eq!(
        twill_routes(&c.ns_a),
        Vec::<String>::new(),
        "removed at a clean stop"
    );
}

#[test]
fn host_gw_refuses_a_node_that_is_not_on_a_connected_network_naming_it() {
    if !require_root("host_gw_refuses_a_node_that_is_not_on_a_connected_network_naming_it") {
        return;
    }
    let far = Ipv4Addr::new(172, 31, 9, 9);
    let c = Cluster::build("host-gw", &[], |cfg| {
        cfg.peers.push(PeerConfig {
            name: "node-far".into(),
            public_ip: far,
            subnet: "10.244.9.0/24".parse().unwrap(),
            vtep_mac: None,
        })
    })
    .unwrap();
    let nodes = c.node_a.status_json().unwrap()["nodes"].clone();
    let far_node = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "node-far")
        .cloned()
        .unwrap();
    assert_eq!(far_node["via"], "none", "{far_node}");
    assert!(
        far_node["reason"].as_str().unwrap().contains("172.31.9.9"),
        "{far_node}"
    );
    assert!(c.node_a.log_tail(50).contains("node unreachable"));
    // The other node is routed still, and no route names the far one.
    ping(c.a1.netns(), c.b1.ip(), 2).unwrap();
    let routes = twill_routes(&c.ns_a);
    assert!(
        routes.iter().all(|r| !r.contains("10.244.9.0")),
        "{routes:?}"
    );
}

const TOKEN: &str = "routing-token-0123456789";

/// A leased node on `lan` at `ip`, with `net_conf`'s backend, and one pod.
struct Member {
    pod: Pod,
    node: NodeProcess,
    ns: Netns,
}

fn member(plane: &PlaneConfig, ns: Netns, name: &str, ip: Ipv4Addr) -> Result<Member> {
    let mut cfg = NodeConfig::leased(name, ip, plane.clone());
    cfg.lease_ttl_secs = Some(6);
    let node = NodeProcess::start(&twill_bin(), &ns, cfg)?;
    let pod = Pod::attach(&node, &format!("twl-rt-{name}"))?;
    Ok(Member { pod, node, ns })
}

fn controller_on(lan: &Lan, net_conf: &str) -> Result<(Service, PlaneConfig)> {
    let listen = std::net::SocketAddrV4::new(lan.hub_ip(), 8765);
    let s = Service::controller(&twill_bin(), lan.hub(), listen, net_conf, TOKEN)?;
    let plane = PlaneConfig::Controller {
        url: format!("http://{listen}"),
        token_file: s.dir().join("token"),
    };
    Ok((s, plane))
}

#[test]
fn host_gw_routes_follow_leases_live_and_other_routes_are_never_touched() {
    if !require_root("host_gw_routes_follow_leases_live_and_other_routes_are_never_touched") {
        return;
    }
    let hub = Ipv4Addr::new(192, 168, 110, 254);
    let lan = Lan::new("twl-rt-hub", hub, 24).unwrap();
    let (_controller, plane) = controller_on(
        &lan,
        r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#,
    )
    .unwrap();
    let ip = |i| Ipv4Addr::new(192, 168, 110, i);
    let ns_a = Netns::new("twl-rt-a").unwrap();
    lan.join(&ns_a, ip(1)).unwrap();
    // Routes of others: one to elsewhere, one to a subnet the controller
    // will lease (10.244.0.0/24 is the first of the network).
    ns_a.ip(&["route", "add", "10.99.0.0/16", "via", &hub.to_string()])
        .unwrap();
    let a = member(&plane, ns_a, "node-a", ip(1)).unwrap();
    let ns_b = Netns::new("twl-rt-b").unwrap();
    lan.join(&ns_b, ip(2)).unwrap();
    let b = member(&plane, ns_b, "node-b", ip(2)).unwrap();
    let subnet_b = b.node.config().subnet;
    wait(10, "node A routes to node B's subnet", || {
        twill_routes(&a.ns)
            .iter()
            .any(|r| r.starts_with(&format!("{subnet_b} via {}", ip(2))))
    })
    .unwrap();
    check_path(
        "a -> b",
        a.pod.netns(),
        a.pod.ip(),
        b.pod.netns(),
        b.pod.ip(),
    )
    .unwrap();

    // A third node joins: its route appears on A, and goes when its lease
    // expires after it stopped.
    let ns_c = Netns::new("twl-rt-c").unwrap();
    lan.join(&ns_c, ip(3)).unwrap();
    let mut c = member(&plane, ns_c, "node-c", ip(3)).unwrap();
    let subnet_c = c.node.config().subnet;
    let has_c = |a: &Member| {
        twill_routes(&a.ns)
            .iter()
            .any(|r| r.starts_with(&format!("{subnet_c} via {}", ip(3))))
    };
    wait(10, "node A routes to node C's subnet", || has_c(&a)).unwrap();
    ping(a.pod.netns(), c.pod.ip(), 2).unwrap();
    c.node.stop();
    wait(20, "node C's route goes with its lease", || !has_c(&a)).unwrap();
    assert_eq!(twill_routes(&a.ns).len(), 1, "{:?}", twill_routes(&a.ns));
    let all = a.ns.ip(&["route", "show"]).unwrap();
    assert!(all.contains(&format!("10.99.0.0/16 via {hub}")), "{all}");
}

#[test]
fn direct_routing_routes_nodes_on_the_same_network_and_tunnels_to_the_one_behind_a_router() {
    if !require_root(
        "direct_routing_routes_nodes_on_the_same_network_and_tunnels_to_the_one_behind_a_router",
    ) {
        return;
    }
    // LAN 192.168.120.0/24 with nodes A and B; its hub routes to node C on
    // 192.168.121.0/24 and runs the controller.
    let hub = Ipv4Addr::new(192, 168, 120, 254);
    let lan = Lan::new("twl-dr-hub", hub, 24).unwrap();
    lan.hub().sysctl("net.ipv4.ip_forward", "1").unwrap();
    let (_controller, plane) = controller_on(
        &lan,
        r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}"#,
    )
    .unwrap();
    let lan_ip = |i| Ipv4Addr::new(192, 168, 120, i);
    let c_ip = Ipv4Addr::new(192, 168, 121, 3);
    let ns_c = Netns::new("twl-dr-c").unwrap();
    let far = Underlay::pair(
        lan.hub(),
        &ns_c,
        Ipv4Addr::new(192, 168, 121, 254),
        c_ip,
        24,
    )
    .unwrap();
    ns_c.ip(&["route", "add", "192.168.120.0/24", "via", "192.168.121.254"])
        .unwrap();
    let mut near = Vec::new();
    for (i, name) in [(1, "node-a"), (2, "node-b")] {
        let ns = Netns::new(&format!("twl-dr-{i}")).unwrap();
        lan.join(&ns, lan_ip(i)).unwrap();
        ns.ip(&["route", "add", "192.168.121.0/24", "via", &hub.to_string()])
            .unwrap();
        near.push(member(&plane, ns, name, lan_ip(i)).unwrap());
    }
    let c = &member(&plane, ns_c, "node-c", c_ip).unwrap();
    let (a, b) = (&near[0], &near[1]);
    let reach = |m: &Member, ip: Ipv4Addr| -> Option<String> {
        let nodes = m.node.status_json().ok()?["nodes"].clone();
        nodes.as_array()?.iter().find_map(|n| {
            (n["public_ip"] == ip.to_string()).then(|| n["via"].as_str().unwrap_or("").to_owned())
        })
    };
    wait(10, "every node knows the other two", || {
        [
            (a, lan_ip(2)),
            (a, c_ip),
            (b, lan_ip(1)),
            (c, lan_ip(1)),
            (c, lan_ip(2)),
        ]
        .iter()
        .all(|(m, ip)| reach(m, *ip).is_some())
    })
    .unwrap();
    assert_eq!(reach(a, lan_ip(2)).as_deref(), Some("route"));
    assert_eq!(reach(b, lan_ip(1)).as_deref(), Some("route"));
    assert_eq!(reach(a, c_ip).as_deref(), Some("tunnel"));
    assert_eq!(reach(c, lan_ip(1)).as_deref(), Some("tunnel"));
    for (from, to) in [(a, b), (b, a), (a, c), (c, b)] {
        let label = format!("{} -> {}", from.node.config().name, to.node.config().name);
        check_path(
            &label,
            from.pod.netns(),
            from.pod.ip(),
            to.pod.netns(),
            to.pod.ip(),
        )
        .unwrap();
    }
    let ea = a.node.counters().unwrap();
    assert!(ea.events.routed_direct > 0, "{:?}", ea.events);
    assert!(ea.events.encapsulated > 0, "{:?}", ea.events);
    // `twill counters` says it too, per node.
    let via_of = |ip: Ipv4Addr| ea.nodes.iter().find(|n| n.public_ip == ip).map(|n| n.via);
    assert_eq!(
        (via_of(lan_ip(2)), via_of(c_ip)),
        (Some(Reach::Route), Some(Reach::Tunnel)),
        "{:?}",
        ea.nodes
    );
    let text = a
        .node
        .cli(&["counters", "--socket", a.node.socket().to_str().unwrap()])
        .unwrap();
    assert!(
        text.contains("DirectRouting: on the connected network"),
        "{text}"
    );
    assert_eq!(c.node.counters().unwrap().events.routed_direct, 0);
    drop(far);
}
