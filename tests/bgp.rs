//! BGP mode (issue 14), in network namespaces: two twill nodes in
//! different L3 subnets behind an FRR router playing the top-of-rack. Both
//! peer with it by eBGP; their pod subnets appear in its routing table;
//! pods talk through it as bare IP, never encapsulated; a node stopped
//! cleanly has its subnet withdrawn within the hold time. And without BIRD
//! nothing is routed, and the node says why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use common::*;
use serde_json::json;

const TOKEN: &str = "bgp-token-0123456789";
const NODE_ASN: u32 = 64512;
const ROUTER_ASN: u32 = 65000;
/// The hold time both sides use (FRR `timers 3 9`, BIRD `hold time 9`).
const HOLD_SECS: u64 = 9;
const PASSWORD: &str = "rack-7-secret";

/// Waits until `cond` holds, up to `secs`; returns how long it took.
fn wait(secs: u64, what: &str, mut cond: impl FnMut() -> bool) -> Result<Duration> {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > Duration::from_secs(secs) {
            bail!("{what}: not within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(start.elapsed())
}

/// `ip route show proto bird` in `ns`.
fn bird_routes(ns: &Netns) -> String {
    ns.ip(&["route", "show", "proto", "bird"])
        .unwrap_or_default()
}

/// `twill bgp status [--json]` against `node`.
fn bgp_status(node: &NodeProcess, json: bool) -> Result<String> {
    let mut c = Command::new(twill_bin());
    c.args(["bgp", "status", "--socket"]).arg(node.socket());
    if json {
        c.arg("--json");
    }
    let out = c.output()?;
    if !out.status.success() {
        bail!("twill bgp status: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// How `node` reaches the node at `ip` (`"route"`, `"none"` …), from
/// `twill status`.
fn reach(node: &NodeProcess, ip: Ipv4Addr) -> Option<String> {
    let nodes = node.status_json().ok()?["nodes"].clone();
    nodes.as_array()?.iter().find_map(|n| {
        (n["public_ip"] == ip.to_string()).then(|| n["via"].as_str().unwrap_or("").to_owned())
    })
}

/// A leased node in BGP mode, peering with the router at `router` (with
/// `password`, if any), with one pod.
struct Member {
    pod: Pod,
    node: NodeProcess,
    ns: Netns,
}

fn member(
    plane: &PlaneConfig,
    ns: Netns,
    name: &str,
    ip: Ipv4Addr,
    router: Ipv4Addr,
    password: Option<&str>,
) -> Result<Member> {
    let mut cfg = NodeConfig::leased(name, ip, plane.clone());
    cfg.lease_ttl_secs = Some(6);
    let mut peer = json!({ "address": router.to_string(), "asn": ROUTER_ASN });
    if let Some(pw) = password {
        peer["password"] = json!(pw);
    }
    cfg.bgp = Some(json!({ "asn": NODE_ASN, "hold_time_secs": HOLD_SECS, "peers": [peer] }));
    let node = NodeProcess::start(&twill_bin(), &ns, cfg)?;
    let pod = Pod::attach(&node, &format!("twl-bgp-{name}"))?;
    Ok(Member { pod, node, ns })
}

#[test]
fn bgp_nodes_behind_a_router_announce_their_subnets_and_pods_talk_without_encapsulation() {
    if !require_root(
        "bgp_nodes_behind_a_router_announce_their_subnets_and_pods_talk_without_encapsulation",
    ) {
        return;
    }
    // Router R: 192.168.130.0/24 to node A, 192.168.131.0/24 to node B.
    let ns_r = Netns::new("twl-bgp-r").unwrap();
    ns_r.sysctl("net.ipv4.ip_forward", "1").unwrap();
    let (r_a, a_ip) = (
        Ipv4Addr::new(192, 168, 130, 254),
        Ipv4Addr::new(192, 168, 130, 1),
    );
    let (r_b, b_ip) = (
        Ipv4Addr::new(192, 168, 131, 254),
        Ipv4Addr::new(192, 168, 131, 2),
    );
    let ns_a = Netns::new("twl-bgp-a").unwrap();
    let ns_b = Netns::new("twl-bgp-b").unwrap();
    let link_a = Underlay::pair(&ns_r, &ns_a, r_a, a_ip, 24).unwrap();
    let _link_b = Underlay::pair(&ns_r, &ns_b, r_b, b_ip, 24).unwrap();
    // Each node reaches the other's underlay through R (and nothing more:
    // the pod subnets come from BGP alone).
    ns_a.ip(&["route", "add", "192.168.131.0/24", "via", &r_a.to_string()])
        .unwrap();
    ns_b.ip(&["route", "add", "192.168.130.0/24", "via", &r_b.to_string()])
        .unwrap();

    let router = FrrRouter::start(
        &ns_r,
        &FrrConfig {
            router_id: r_a,
            asn: ROUTER_ASN,
            timers: (3, HOLD_SECS as u16),
            neighbors: vec![
                FrrNeighbor {
                    address: a_ip,
                    asn: NODE_ASN,
                    password: Some(PASSWORD.into()),
                },
                FrrNeighbor {
                    address: b_ip,
                    asn: NODE_ASN,
                    password: None,
                },
            ],
        },
    )
    .unwrap();
    // The controller in R; the net-conf says vxlan, BGP mode routes anyway.
    let listen = SocketAddrV4::new(r_a, 8765);
    let _controller = Service::controller(
        &twill_bin(),
        &ns_r,
        listen,
        r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#,
        TOKEN,
    )
    .unwrap();
    let plane = PlaneConfig::Controller {
        url: format!("http://{listen}"),
        token_file: _controller.dir().join("token"),
    };
    let a = member(&plane, ns_a, "node-a", a_ip, r_a, Some(PASSWORD)).unwrap();
    let mut b = member(&plane, ns_b, "node-b", b_ip, r_b, None).unwrap();
    let (subnet_a, subnet_b) = (a.node.config().subnet, b.node.config().subnet);

    // Both subnets in R's routing table, learned by BGP from the nodes.
    let has = |s: &str, net: ipnet::Ipv4Net, via: Ipv4Addr| {
        s.lines()
            .any(|l| l.contains(&net.to_string()) && l.contains(&format!("via {via}")))
    };
    wait(40, "R learns both pod subnets", || {
        let r = router.bgp_routes().unwrap_or_default();
        has(&r, subnet_a, a_ip) && has(&r, subnet_b, b_ip)
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{}\n{}\nA:\n{}",
            router.bgp_routes().unwrap_or_default(),
            router.log_tail(20),
            a.node.log_tail(30)
        )
    });
    let table = bgp_status(&a.node, false).unwrap();
    assert!(table.contains("| PEER ADDRESS"), "{table}");
    assert!(
        table.contains(&r_a.to_string()) && table.contains("Established"),
        "{table}"
    );
    let st: serde_json::Value = serde_json::from_str(&bgp_status(&b.node, true).unwrap()).unwrap();
    assert_eq!(st["peers"][0]["address"], r_b.to_string(), "{st}");
    assert_eq!(st["peers"][0]["asn"], ROUTER_ASN, "{st}");
    assert_eq!(st["peers"][0]["type"], "router", "{st}");
    assert_eq!(st["peers"][0]["bgp_state"], "Established", "{st}");
    assert_eq!(st["peers"][0]["routes_exported"], 1, "{st}");
    assert!(a.node.status_json().unwrap()["bgp"]["peers"].is_array());

    // BIRD put each other's subnet into A's and B's kernels via R; the
    // switch hands it to the host; the pods get the underlay's whole MTU.
    wait(10, "A and B route each other's subnet by BGP", || {
        bird_routes(&a.ns).contains(&format!("{subnet_b} via {r_a}"))
            && bird_routes(&b.ns).contains(&format!("{subnet_a} via {r_b}"))
            && reach(&a.node, b_ip).as_deref() == Some("route")
    })
    .unwrap();
    // Its own subnet came back from R and was refused: one route learned.
    let st: serde_json::Value = serde_json::from_str(&bgp_status(&b.node, true).unwrap()).unwrap();
    assert_eq!(st["peers"][0]["routes_imported"], 1, "{st}");
    assert_eq!(a.node.status_json().unwrap()["mtu"], 1500);

    let tap = RawLink::open(&a.ns, link_a.b_if()).unwrap();
    let (a1, b1) = (a.pod.ip(), b.pod.ip());
    let (seen, pinged) = underlay_traffic(&tap, a1, b1, || ping(a.pod.netns(), b1, 5));
    pinged.unwrap();
    assert!(
        seen.0 >= 10,
        "A's underlay carried {} bare pod packets",
        seen.0
    );
    assert_eq!(seen.1, 0, "no VXLAN on the underlay");
    check_path("a1 -> b1", a.pod.netns(), a1, b.pod.netns(), b1).unwrap();
    check_path("b1 -> a1", b.pod.netns(), b1, a.pod.netns(), a1).unwrap();
    let counters = a.node.counters().unwrap();
    assert!(counters.events.routed_direct > 0);
    assert_eq!(counters.events.encapsulated, 0);

    // B stops cleanly: BIRD closes its session, R withdraws B's subnet
    // well within the hold time, and A's route to it goes.
    b.node.stop();
    let took = wait(HOLD_SECS, "R withdraws B's subnet", || {
        !has(&router.bgp_routes().unwrap_or_default(), subnet_b, b_ip)
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{}\n{}\n{}\nB:\n{}",
            router.bgp_routes().unwrap_or_default(),
            router.vtysh("show bgp neighbors").unwrap_or_default(),
            router.log_tail(30),
            b.node.log_tail(30)
        )
    });
    eprintln!("B's subnet withdrawn from R after {took:?}");
    wait(5, "A's kernel route to B's subnet goes", || {
        !bird_routes(&a.ns).contains(&subnet_b.to_string())
    })
    .unwrap();
    wait(5, "A reports B unreached", || {
        reach(&a.node, b_ip).as_deref() != Some("route")
    })
    .unwrap();
    assert!(has(&router.bgp_routes().unwrap(), subnet_a, a_ip));
}

#[test]
fn bgp_without_bird_routes_nothing_and_says_why() {
    if !require_root("bgp_without_bird_routes_nothing_and_says_why") {
        return;
    }
    let missing = "/nonexistent/twill-test/bird";
    let c = Cluster::build("vxlan", &[], |cfg| {
        cfg.bgp = Some(json!({ "asn": NODE_ASN, "mesh": true, "bird": missing }));
    })
    .unwrap();
    let st = wait(10, "the agent reports BIRD's failure", || {
        bgp_status(&c.node_a, true).is_ok_and(|s| s.contains("not running") || s.contains(missing))
    });
    let text = bgp_status(&c.node_a, true).unwrap();
    st.unwrap_or_else(|e| panic!("{e}: {text}"));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["bird"]["running"], false, "{v}");
    assert!(
        v["bird"]["last_error"]
            .as_str()
            .unwrap_or("")
            .contains(missing),
        "{v}"
    );
    assert_eq!(v["peers"][0]["type"], "node-to-node mesh", "{v}");
    assert!(bgp_status(&c.node_a, false)
        .unwrap()
        .contains("not running"));
    // No BGP route, so node B is not reached, and pods cannot talk.
    let nodes = &c.node_a.status_json().unwrap()["nodes"];
    assert_eq!(nodes[0]["via"], "none", "{nodes}");
    assert!(
        nodes[0]["reason"].as_str().unwrap().contains("BGP"),
        "{nodes}"
    );
    assert!(ping(c.a1.netns(), c.b1.ip(), 2).is_err());
    assert!(c.node_a.log_tail(50).contains("BIRD"));
}

#[test]
fn bgp_full_mesh_between_two_nodes_routes_their_pods_by_ibgp() {
    if !require_root("bgp_full_mesh_between_two_nodes_routes_their_pods_by_ibgp") {
        return;
    }
    let c = Cluster::build("vxlan", &[], |cfg| {
        cfg.bgp = Some(json!({ "asn": NODE_ASN, "mesh": true, "hold_time_secs": HOLD_SECS }));
    })
    .unwrap();
    let subnet_b = c.node_b.config().subnet;
    wait(30, "A learns B's subnet from B by iBGP", || {
        bird_routes(&c.ns_a).contains(&format!("{subnet_b} via {UNDERLAY_B}"))
            && reach(&c.node_a, UNDERLAY_B).as_deref() == Some("route")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", bgp_status(&c.node_a, false).unwrap_or_default()));
    let st: serde_json::Value =
        serde_json::from_str(&bgp_status(&c.node_a, true).unwrap()).unwrap();
    assert_eq!(st["peers"][0]["type"], "node-to-node mesh", "{st}");
    assert_eq!(st["peers"][0]["node"], "node-b", "{st}");
    assert_eq!(st["peers"][0]["asn"], NODE_ASN, "{st}");
    assert_eq!(st["peers"][0]["bgp_state"], "Established", "{st}");
    check_path("a1 -> b1", c.a1.netns(), c.a1.ip(), c.b1.netns(), c.b1.ip()).unwrap();
    let counters = c.node_a.counters().unwrap();
    assert_eq!(counters.events.encapsulated, 0);

    // BIRD killed: the agent starts it again and the session comes back.
    let pid = st["bird"]["pid"].as_u64().unwrap();
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    wait(20, "A's BIRD restarted and peered again", || {
        bgp_status(&c.node_a, true)
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .is_some_and(|v| {
                v["bird"]["restarts"] == 1
                    && v["bird"]["pid"].as_u64().is_some_and(|p| p != pid)
                    && v["peers"][0]["bgp_state"] == "Established"
            })
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", bgp_status(&c.node_a, true).unwrap_or_default()));
    assert!(c.node_a.log_tail(50).contains("BIRD ended"));
    wait(10, "A routes B's subnet again", || {
        reach(&c.node_a, UNDERLAY_B).as_deref() == Some("route")
    })
    .unwrap();
    ping(c.a1.netns(), c.b1.ip(), 2).unwrap();
}

#[test]
fn bgp_mesh_follows_the_lease_table_live() {
    if !require_root("bgp_mesh_follows_the_lease_table_live") {
        return;
    }
    let hub = Ipv4Addr::new(192, 168, 132, 254);
    let lan = Lan::new("twl-bgpm-hub", hub, 24).unwrap();
    let listen = SocketAddrV4::new(hub, 8765);
    let controller = Service::controller(
        &twill_bin(),
        lan.hub(),
        listen,
        r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#,
        TOKEN,
    )
    .unwrap();
    let plane = PlaneConfig::Controller {
        url: format!("http://{listen}"),
        token_file: controller.dir().join("token"),
    };
    let start = |name: &str, i: u8| {
        let ip = Ipv4Addr::new(192, 168, 132, i);
        let ns = Netns::new(&format!("twl-bgpm-{i}")).unwrap();
        lan.join(&ns, ip).unwrap();
        let mut cfg = NodeConfig::leased(name, ip, plane.clone());
        cfg.lease_ttl_secs = Some(6);
        cfg.bgp = Some(json!({ "asn": NODE_ASN, "mesh": true, "hold_time_secs": HOLD_SECS }));
        let node = NodeProcess::start(&twill_bin(), &ns, cfg).unwrap();
        let pod = Pod::attach(&node, &format!("twl-bgpm-p{i}")).unwrap();
        Member { pod, node, ns }
    };
    let peers = |m: &Member| -> Vec<(String, String)> {
        let v: serde_json::Value = bgp_status(&m.node, true)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        v["peers"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| {
                        let s = |k: &str| p[k].as_str().unwrap_or("").to_owned();
                        (s("address"), s("bgp_state"))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let a = start("node-a", 1);
    assert_eq!(peers(&a), vec![], "alone, A peers with nobody");
    let mut b = start("node-b", 2);
    let b_ip = "192.168.132.2".to_owned();
    wait(30, "A peers with B once B's lease appears", || {
        peers(&a) == vec![(b_ip.clone(), "Established".to_owned())]
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", peers(&a), a.node.log_tail(20)));
    assert!(a.node.log_tail(50).contains("BIRD reconfigured"));
    ping(a.pod.netns(), b.pod.ip(), 2).unwrap();
    b.node.stop();
    wait(20, "A drops the session when B's lease goes", || {
        peers(&a).is_empty()
    })
    .unwrap();
    assert!(!bird_routes(&a.ns).contains(&b.node.config().subnet.to_string()));
}

#[test]
fn bgp_status_on_a_node_without_bgp_says_so() {
    if !require_root("bgp_status_on_a_node_without_bgp_says_so") {
        return;
    }
    let c = Cluster::new("vxlan").unwrap();
    let e = bgp_status(&c.node_a, false).unwrap_err().to_string();
    assert!(e.contains("BGP is not configured"), "{e}");
    assert!(c.node_a.status_json().unwrap()["bgp"].is_null());
}
