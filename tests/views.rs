//! `twill fdb`, `twill nodes`, `twill routes` and `twill ports` (issue 15)
//! against real agents: two nodes with pods in network namespaces, known
//! traffic, then each view read back through its type (`--json`) and as the
//! table the binary prints. The vxlan cluster checks the tunnel's routes and
//! a MAC learned behind a pod; the host-gw cluster the routes via the host.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddrV4;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use serde::de::DeserializeOwned;
use vswitch::stats::Reach;
use vswitch::views::{
    offload_names, Fdb, FdbKind, NodeSource, Nodes, PortRole, Ports, RouteVia, Routes,
};

/// `twill VIEW --json` on `node`, read back through the view's type.
fn view<T: DeserializeOwned>(node: &NodeProcess, name: &str) -> T {
    let socket = node.socket().to_str().unwrap();
    let out = node.cli(&[name, "--socket", socket, "--json"]).unwrap();
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("`twill {name} --json`: {e}: {out}"))
}

/// `twill VIEW` (the table) on `node`.
fn text(node: &NodeProcess, name: &str) -> String {
    let socket = node.socket().to_str().unwrap();
    node.cli(&[name, "--socket", socket]).unwrap()
}

/// The line of `table` that holds every one of `words`.
fn line_with<'a>(table: &'a str, words: &[&str]) -> &'a str {
    table
        .lines()
        .find(|l| words.iter().all(|w| l.split_whitespace().any(|x| x == *w)))
        .unwrap_or_else(|| panic!("no line with {words:?} in:\n{table}"))
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn views_show_ports_macs_nodes_and_tunnel_routes_after_known_traffic() {
    if !require_root("views_show_ports_macs_nodes_and_tunnel_routes_after_known_traffic") {
        return;
    }
    let started = now_unix();
    let c = Cluster::new("vxlan").unwrap();
    // A "VM" behind a bridging pod: a macvlan on its eth0 in a namespace of
    // its own, with a MAC and address the pod's attachment allows. Its
    // frames are the only ones whose source the switch learns (every
    // attached port's own MAC is pinned, static).
    let vm = Netns::new("twl-v-vm").unwrap();
    let vm_ip = nth_host(subnet(1), 200);
    let vm_mac = "0a:58:0a:f4:01:c8";
    let allow_ip = format!("{vm_ip}/32");
    let allow = ["--allow-mac", vm_mac, "--allow-ip", allow_ip.as_str()];
    let br = Pod::attach_args(&c.node_a, "twl-v-br", &allow).unwrap();
    let mv = [
        "link", "add", "mv0", "link", "eth0", "address", vm_mac, "type", "macvlan", "mode",
        "bridge",
    ];
    br.netns().ip(&mv).unwrap();
    br.netns()
        .ip(&["link", "set", "mv0", "netns", vm.name()])
        .unwrap();
    vm.ip(&["addr", "add", &format!("{vm_ip}/24"), "dev", "mv0"])
        .unwrap();
    vm.ip(&["link", "set", "mv0", "up"]).unwrap();

    // Known traffic: pod to pod on the node, across the tunnel, and one
    // datagram from the VM.
    ping(c.a1.netns(), c.a2.ip(), 2).unwrap();
    ping(c.a1.netns(), c.b1.ip(), 2).unwrap();
    let hello = udp_socket(&vm, SocketAddrV4::new(vm_ip, 0)).unwrap();
    hello
        .send_to(b"hello", SocketAddrV4::new(c.a2.ip(), 9))
        .unwrap();

    // ports: each pod's id, netns, address, MAC, MTU, queues, offloads.
    let ports: Ports = view(&c.node_a, "ports");
    let counters = c.node_a.counters().unwrap();
    let mut pod_ports = Vec::new();
    for pod in [&c.a1, &c.a2, &br] {
        let info = pod.info().unwrap();
        let p = ports
            .ports
            .iter()
            .find(|p| p.pod_id.as_deref() == Some(info.id.as_str()))
            .unwrap_or_else(|| panic!("no port for {}: {ports:?}", info.id));
        assert_eq!(p.kind, PortRole::Pod);
        assert_eq!(p.netns.as_deref(), Some(pod.netns().name()));
        assert_eq!(p.ifname, "eth0");
        assert_eq!(p.ip, info.ip);
        assert_eq!(p.mac, info.mac);
        assert_eq!(p.mtu, info.mtu);
        assert_eq!(p.queues, counters.workers, "a queue per worker");
        let stats = counters.ports.iter().find(|s| s.id == p.id).unwrap();
        assert_eq!(p.offloads, offload_names(stats.offloads));
        assert!(
            p.offloads.iter().any(|o| o == "csum"),
            "offloads are on by default: {p:?}"
        );
        assert!(!p.dead);
        pod_ports.push((p.id, info.mac.clone(), info.id.clone()));
    }
    let host = ports
        .ports
        .iter()
        .find(|p| p.kind == PortRole::Host)
        .unwrap();
    assert_eq!((host.tap.as_str(), host.netns.as_deref()), ("twill0", None));
    assert_eq!(host.ip, format!("{}/24", c.node_a.config().host_ip()));

    // fdb: the router and the attached ports static, the VM learned on the
    // bridging pod's port, just now.
    let deadline = Instant::now() + Duration::from_secs(5);
    let fdb = loop {
        let f: Fdb = view(&c.node_a, "fdb");
        if f.entries.iter().any(|e| e.mac == vm_mac) || Instant::now() > deadline {
            break f;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(fdb.segment, subnet(1));
    let entry = |mac: &str| {
        fdb.entries
            .iter()
            .find(|e| e.mac == mac)
            .unwrap_or_else(|| panic!("{mac} not in {fdb:?}"))
    };
    let router = entry(&vtep_mac_for(subnet(1)));
    assert_eq!(
        (router.port, router.kind, router.name.as_str()),
        (None, FdbKind::Static, "router")
    );
    for (port, mac, id) in &pod_ports {
        let e = entry(mac);
        assert_eq!(
            (e.port, e.kind, e.age_secs),
            (Some(*port), FdbKind::Static, None)
        );
        assert_eq!(&e.name, id);
    }
    let (br_port, _, br_id) = &pod_ports[2];
    let learned = entry(vm_mac);
    assert_eq!(
        (learned.port, learned.kind),
        (Some(*br_port), FdbKind::Learned)
    );
    assert!(learned.age_secs.unwrap() <= 2, "{learned:?}");
    assert_eq!(&learned.name, br_id);
    assert_eq!(
        fdb.entries
            .iter()
            .filter(|e| e.kind == FdbKind::Learned)
            .count(),
        1,
        "only the VM's MAC is learned: {fdb:?}"
    );

    // nodes: node-b as the configuration gave it, reached by the tunnel.
    let nodes: Nodes = view(&c.node_a, "nodes");
    assert_eq!(nodes.source, "config");
    assert_eq!(nodes.nodes.len(), 1, "{nodes:?}");
    let b = &nodes.nodes[0];
    assert_eq!(b.name, "node-b");
    assert_eq!(b.public_ip, UNDERLAY_B);
    assert_eq!(b.subnet, subnet(2));
    assert_eq!(
        b.vtep_mac.as_deref(),
        Some(vtep_mac_for(subnet(2)).as_str())
    );
    assert_eq!((b.source, b.reach), (NodeSource::Config, Reach::Tunnel));
    assert!(
        (started..=now_unix()).contains(&b.changed_unix),
        "changed at {} (test started at {started})",
        b.changed_unix
    );

    // routes: the gateway, the local subnet, node-b's through the tunnel,
    // the rest of the cluster dropped, the outside to the host port.
    let routes: Routes = view(&c.node_a, "routes");
    let got: Vec<_> = routes
        .routes
        .iter()
        .map(|r| (r.destination.to_string(), r.via))
        .collect();
    let s = |x: &str| x.to_owned();
    assert_eq!(
        got,
        [
            (s("10.244.1.1/32"), RouteVia::Local),
            (s("10.244.1.0/24"), RouteVia::Connected),
            (s("10.244.2.0/24"), RouteVia::Tunnel),
            (s("10.244.0.0/16"), RouteVia::Unreachable),
            (s("0.0.0.0/0"), RouteVia::Host),
        ]
    );
    let tunnel = &routes.routes[2];
    assert_eq!(tunnel.next_hop.as_deref(), Some("192.168.100.2:8472"));
    assert_eq!(tunnel.node.as_deref(), Some("node-b"));
    assert_eq!(tunnel.vtep_mac, b.vtep_mac);
    assert_eq!(routes.routes[4].port, Some(host.id));
    drop(br);
}

#[test]
fn the_binary_prints_each_view_as_a_table_and_host_gw_routes_via_the_host() {
    if !require_root("the_binary_prints_each_view_as_a_table_and_host_gw_routes_via_the_host") {
        return;
    }
    let c = Cluster::new("host-gw").unwrap();
    ping(c.a1.netns(), c.b1.ip(), 2).unwrap();
    let a1 = c.a1.info().unwrap();

    let routes: Routes = view(&c.node_a, "routes");
    let b = routes
        .routes
        .iter()
        .find(|r| r.destination == subnet(2))
        .unwrap();
    assert_eq!(b.via, RouteVia::Host, "{routes:?}");
    assert_eq!(b.next_hop, Some(c.node_a.config().host_ip().to_string()));
    assert_eq!(
        (b.node.as_deref(), b.vtep_mac.as_deref()),
        (Some("node-b"), None)
    );

    let fdb = text(&c.node_a, "fdb");
    assert_eq!(
        fdb.lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["port", "segment", "MAC", "Age", "on"],
        "{fdb}"
    );
    line_with(
        &fdb,
        &[
            "router",
            "10.244.1.0/24",
            &vtep_mac_for(subnet(1)),
            "static",
        ],
    );
    line_with(&fdb, &[&a1.mac, "static", &a1.id]);
    line_with(&fdb, &["twill0", "static"]);

    let nodes = text(&c.node_a, "nodes");
    line_with(
        &nodes,
        &[
            "node-b",
            "192.168.100.2",
            "10.244.2.0/24",
            "-",
            "route",
            "config",
        ],
    );
    assert!(nodes.ends_with("node table from: config\n"), "{nodes}");

    let routes = text(&c.node_a, "routes");
    line_with(&routes, &["10.244.1.1/32", "local"]);
    line_with(&routes, &["10.244.1.0/24", "connected"]);
    line_with(
        &routes,
        &["10.244.2.0/24", "host", "10.244.1.2", "0", "node-b"],
    );
    line_with(&routes, &["10.244.0.0/16", "unreachable"]);
    line_with(&routes, &["0.0.0.0/0", "host", "10.244.1.2", "0"]);

    let ports = text(&c.node_a, "ports");
    let mtu = a1.mtu.to_string();
    line_with(
        &ports,
        &[
            "pod",
            &a1.id,
            c.a1.netns().name(),
            "eth0",
            &a1.ip,
            &a1.mac,
            &mtu,
        ],
    );
    line_with(&ports, &["0", "host", "twill0"]);
}

/// An "agent" on `socket` that answers one request with `result`.
fn answer_once(socket: &std::path::Path, result: serde_json::Value) -> std::thread::JoinHandle<()> {
    use std::io::{BufRead, BufReader, Write};
    let l = std::os::unix::net::UnixListener::bind(socket).unwrap();
    std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).unwrap();
        let resp = serde_json::json!({ "ok": true, "result": result });
        (&s).write_all(format!("{resp}\n").as_bytes()).unwrap();
    })
}

/// An agent of another version (here: a field this CLI does not know) is
/// refused in words by the table, and passed through by `--json`.
#[test]
fn a_view_of_another_version_is_refused_by_the_table_not_by_json() {
    let dir = tempfile::tempdir().unwrap();
    let newer = serde_json::json!({
        "segment": "10.244.1.0/24", "aging_secs": 300, "entries": [], "vlan": 7,
    });
    for (json, ok) in [(false, false), (true, true)] {
        let socket = dir.path().join(format!("agent-{json}.sock"));
        let agent = answer_once(&socket, newer.clone());
        let mut cmd = std::process::Command::new(twill_bin());
        cmd.arg("fdb").arg("--socket").arg(&socket);
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().unwrap();
        agent.join().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.success(), ok, "{stderr}");
        if ok {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(v["vlan"], 7);
        } else {
            assert!(stderr.contains("another twill version"), "{stderr}");
            assert!(stderr.contains("vlan"), "{stderr}");
        }
    }
}

/// Nodes that lease from `twill controller`: `twill nodes` says the table
/// comes from it, and an entry keeps the time it changed while other
/// entries come and go.
#[test]
fn nodes_from_the_controller_keep_their_change_time_as_others_join() {
    if !require_root("nodes_from_the_controller_keep_their_change_time_as_others_join") {
        return;
    }
    const HUB: std::net::Ipv4Addr = std::net::Ipv4Addr::new(192, 168, 100, 254);
    let lan = Lan::new("twl-vw-hub", HUB, 24).unwrap();
    let _controller = Service::controller(
        &twill_bin(),
        lan.hub(),
        SocketAddrV4::new(HUB, 8765),
        r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#,
        "views-token-0123456789",
    )
    .unwrap();
    let plane = PlaneConfig::Controller {
        url: format!("http://{HUB}:8765"),
        token_file: _controller.dir().join("token"),
    };
    let mut nss = Vec::new();
    let mut nodes = Vec::new();
    let start = |i: u8, nss: &mut Vec<Netns>, nodes: &mut Vec<NodeProcess>| {
        let ns = Netns::new(&format!("twl-vw-n{i}")).unwrap();
        let ip = std::net::Ipv4Addr::new(192, 168, 100, i);
        lan.join(&ns, ip).unwrap();
        let cfg = NodeConfig::leased(&format!("node-{i}"), ip, plane.clone());
        nodes.push(NodeProcess::start(&twill_bin(), &ns, cfg).unwrap());
        nss.push(ns);
    };
    let table = |node: &NodeProcess, n: usize| -> Nodes {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let t: Nodes = view(node, "nodes");
            if t.nodes.len() == n {
                return t;
            }
            assert!(Instant::now() < deadline, "not {n} nodes: {t:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    start(1, &mut nss, &mut nodes);
    start(2, &mut nss, &mut nodes);
    let before = table(&nodes[0], 1);
    assert_eq!(before.source, format!("controller http://{HUB}:8765"));
    let two = &before.nodes[0];
    assert_eq!(two.public_ip, std::net::Ipv4Addr::new(192, 168, 100, 2));
    assert_eq!(
        (two.source, two.reach),
        (NodeSource::Controller, Reach::Tunnel)
    );
    assert!(two.vtep_mac.is_some());

    // A second later, a third node joins: node-2's entry did not change.
    std::thread::sleep(Duration::from_millis(1100));
    start(3, &mut nss, &mut nodes);
    let after = table(&nodes[0], 2);
    let by_ip = |t: &Nodes, last: u8| {
        let ip = std::net::Ipv4Addr::new(192, 168, 100, last);
        t.nodes.iter().find(|n| n.public_ip == ip).cloned().unwrap()
    };
    assert_eq!(by_ip(&after, 2), *two);
    let three = by_ip(&after, 3);
    assert_eq!(three.source, NodeSource::Controller);
    assert!(three.changed_unix > two.changed_unix, "{after:?}");
    // Nodes before their namespaces.
    drop(nodes);
}
