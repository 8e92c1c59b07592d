//! Kubernetes Services in the switch, end to end: two static nodes that
//! follow one directory of manifests, written with `twill service apply`;
//! backends are servers in the pods that answer with their name and the
//! address they saw the client at.
//!
//! Test names follow the upstream behaviour they mirror (kubernetes
//! test/e2e/network/service.go and kube-proxy's semantics).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use common::*;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const PORT: u16 = 8080;

/// A two-node cluster whose nodes both follow `dir`.
struct ServiceCluster {
    c: Cluster,
    dir: tempfile::TempDir,
}

impl ServiceCluster {
    fn new() -> ServiceCluster {
        let dir = tempfile::Builder::new()
            .prefix("twl-svc-")
            .tempdir_in(std::env::temp_dir())
            .unwrap();
        let path = dir.path().to_owned();
        let c = Cluster::build("vxlan", &["--workers", "2"], |cfg| {
            cfg.objects_dir = Some(path.clone());
            cfg.service_cidr = Some("10.96.0.0/12".into());
        })
        .unwrap();
        ServiceCluster { c, dir }
    }

    /// `twill service apply -f FILE --dir DIR` with `yaml` as the file.
    fn apply(&self, name: &str, yaml: &str) {
        let file = self.dir.path().join(format!(".{name}.in.yaml"));
        std::fs::write(&file, yaml).unwrap();
        let out = self.cli(&["service", "apply", "-f", file.to_str().unwrap()]);
        std::fs::remove_file(&file).unwrap();
        eprintln!("{out}");
    }

    /// `twill service delete NAME --dir DIR`.
    fn delete(&self, name: &str) {
        eprintln!("{}", self.cli(&["service", "delete", name]));
    }

    fn cli(&self, args: &[&str]) -> String {
        let dir = self.dir.path().to_str().unwrap();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--dir", dir]);
        self.c.node_a.cli(&all).unwrap()
    }

    /// Waits until both nodes balance `port_name` over `n` backends.
    fn wait_backends(&self, port_name: &str, n: usize) {
        for node in [&self.c.node_a, &self.c.node_b] {
            wait_for(&format!("{port_name} with {n} backends"), || {
                let v: serde_json::Value = serde_json::from_str(&node.cli(&[
                    "service",
                    "list",
                    "--json",
                    "--socket",
                    node.socket().to_str().unwrap(),
                ])?)?;
                let port = v
                    .as_array()
                    .and_then(|a| a.iter().find(|p| p["name"] == port_name));
                Ok(port.is_some_and(|p| p["backends"].as_array().map(Vec::len) == Some(n)))
            });
        }
    }

    /// Waits until both nodes have no port named `port_name`.
    fn wait_gone(&self, port_name: &str) {
        for node in [&self.c.node_a, &self.c.node_b] {
            wait_for(&format!("{port_name} gone"), || {
                let out = node.cli(&[
                    "service",
                    "list",
                    "--json",
                    "--socket",
                    node.socket().to_str().unwrap(),
                ])?;
                Ok(!out.contains(&format!("\"{port_name}\"")))
            });
        }
    }
}

fn wait_for(what: &str, mut f: impl FnMut() -> Result<bool>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match f() {
            Ok(true) => return,
            Ok(false) | Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Ok(false) => panic!("timed out waiting for {what}"),
            Err(e) => panic!("waiting for {what}: {e:#}"),
        }
    }
}

fn service_yaml(name: &str, extra_spec: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: default
  resourceVersion: "1234"
  uid: 0b7d3c4e-1111-2222-3333-444455556666
spec:
  clusterIP: {VIP}
  clusterIPs:
  - {VIP}
  internalTrafficPolicy: Cluster
  ipFamilies:
  - IPv4
  ipFamilyPolicy: SingleStack
  ports:
  - name: tcp
    port: 80
    protocol: TCP
    targetPort: {PORT}
  - name: udp
    port: 53
    protocol: UDP
    targetPort: {PORT}
  selector:
    app: {name}
  sessionAffinity: None
  type: ClusterIP
{extra_spec}status:
  loadBalancer: {{}}
"#
    )
}

/// An EndpointSlice for service `svc` with `(pod ip, node, ready, serving,
/// terminating)` endpoints.
fn slice_yaml(svc: &str, endpoints: &[(Ipv4Addr, &str, bool, bool, bool)]) -> String {
    let mut eps = String::new();
    for (ip, node, ready, serving, terminating) in endpoints {
        eps.push_str(&format!(
            "- addresses:\n  - {ip}\n  conditions:\n    ready: {ready}\n    serving: {serving}\n    terminating: {terminating}\n  nodeName: {node}\n"
        ));
    }
    let eps = if endpoints.is_empty() {
        " []\n".to_owned()
    } else {
        format!("\n{eps}")
    };
    format!(
        r#"---
addressType: IPv4
apiVersion: discovery.k8s.io/v1
endpoints:{eps}kind: EndpointSlice
metadata:
  labels:
    endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io
    kubernetes.io/service-name: {svc}
  name: {svc}-abcde
  namespace: default
ports:
- name: tcp
  port: {PORT}
  protocol: TCP
- name: udp
  port: {PORT}
  protocol: UDP
"#
    )
}

/// A server in a pod: on TCP and UDP port [`PORT`], answers
/// `"<name> <client ip:port>"`; a TCP connection then echoes what it gets.
struct Server {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Server {
    fn start(pod: &Pod, name: &str) -> Server {
        let addr = SocketAddrV4::new(pod.ip(), PORT);
        let tcp = pod
            .netns()
            .run_in(|| TcpListener::bind(addr))
            .unwrap()
            .unwrap();
        let udp = udp_socket(pod.netns(), addr).unwrap();
        tcp.set_nonblocking(true).unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (s1, s2, n1, n2) = (stop.clone(), stop.clone(), name.to_owned(), name.to_owned());
        let t = std::thread::spawn(move || {
            while !s1.load(Ordering::Relaxed) {
                match tcp.accept() {
                    Ok((conn, peer)) => {
                        let name = n1.clone();
                        std::thread::spawn(move || echo(conn, &name, peer));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        let u = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !s2.load(Ordering::Relaxed) {
                if let Ok((_, peer)) = udp.recv_from(&mut buf) {
                    let _ = udp.send_to(format!("{n2} {peer}").as_bytes(), peer);
                }
            }
        });
        Server {
            stop,
            threads: vec![t, u],
        }
    }
}

fn echo(mut conn: TcpStream, name: &str, peer: SocketAddr) {
    let _ = conn.set_nonblocking(false);
    if conn
        .write_all(format!("{name} {peer}\n").as_bytes())
        .is_err()
    {
        return;
    }
    let mut buf = [0u8; 4096];
    while let Ok(n) = conn.read(&mut buf) {
        if n == 0 || conn.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A TCP connection from `ns` to the service: the server's greeting
/// (its name, the client address it saw) and the open stream.
fn tcp_hello(ns: &Netns, to: SocketAddrV4) -> Result<(String, String, TcpStream)> {
    let s = ns
        .run_in(|| TcpStream::connect_timeout(&to.into(), Duration::from_secs(2)))?
        .with_context(|| format!("connecting to {to}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    BufReader::new(s.try_clone()?).read_line(&mut line)?;
    let mut it = line.split_whitespace();
    let (Some(name), Some(seen)) = (it.next(), it.next()) else {
        bail!("bad greeting {line:?}");
    };
    Ok((name.to_owned(), seen.to_owned(), s))
}

/// One UDP question from `from` to the service: the server's name and the
/// client address it saw.
fn udp_hello(ns: &Netns, from: Ipv4Addr, to: SocketAddrV4) -> Result<(String, String)> {
    let s = udp_socket(ns, SocketAddrV4::new(from, 0))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.send_to(b"?", to)?;
    let mut buf = [0u8; 256];
    let (n, src) = s.recv_from(&mut buf).context("no UDP answer")?;
    if src != SocketAddr::V4(to) {
        bail!("answer came from {src}, not from the service {to}");
    }
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    let mut it = text.split_whitespace();
    match (it.next(), it.next()) {
        (Some(a), Some(b)) => Ok((a.to_owned(), b.to_owned())),
        _ => Err(anyhow!("bad answer {text:?}")),
    }
}

/// Which servers `n` new TCP connections from `ns` reach.
fn spread(ns: &Netns, n: usize) -> BTreeMap<String, usize> {
    let mut hits = BTreeMap::new();
    for _ in 0..n {
        let (name, _, _) = tcp_hello(ns, SocketAddrV4::new(VIP, 80)).unwrap();
        *hits.entry(name).or_insert(0) += 1;
    }
    hits
}

fn ip_of(seen: &str) -> Ipv4Addr {
    seen.parse::<SocketAddrV4>().unwrap().ip().to_owned()
}

#[test]
fn should_serve_a_basic_endpoint_from_pods_on_this_node_and_another_over_tcp_and_udp() {
    if !require_root(
        "should_serve_a_basic_endpoint_from_pods_on_this_node_and_another_over_tcp_and_udp",
    ) {
        return;
    }
    let s = ServiceCluster::new();
    let c = &s.c;
    let _a2 = Server::start(&c.a2, "a2");
    let _b1 = Server::start(&c.b1, "b1");
    s.apply(
        "web",
        &(service_yaml("web", "")
            + &slice_yaml(
                "web",
                &[
                    (c.a2.ip(), "node-a", true, true, false),
                    (c.b1.ip(), "node-b", true, true, false),
                ],
            )),
    );
    s.wait_backends("default/web:tcp", 2);

    // TCP from a pod on node A and from a pod on node B: both backends
    // take connections, and each sees the client's own address (no SNAT
    // for ClusterIP traffic).
    for (client, ip) in [(&c.a1, c.a1.ip()), (&c.b2, c.b2.ip())] {
        let hits = spread(client.netns(), 24);
        assert_eq!(hits.len(), 2, "from {ip}: {hits:?}");
        let (_, seen, mut conn) = tcp_hello(client.netns(), SocketAddrV4::new(VIP, 80)).unwrap();
        assert_eq!(ip_of(&seen), ip);
        // The connection carries data both ways after the handshake.
        let data = vec![0x5au8; 200_000];
        let mut w = conn.try_clone().unwrap();
        let sender = std::thread::spawn(move || w.write_all(&data));
        let mut got = vec![0u8; 200_000];
        conn.read_exact(&mut got).unwrap();
        sender.join().unwrap().unwrap();
        assert!(got.iter().all(|&b| b == 0x5a));
    }
    // From the node itself (a host process): the Service range is routed
    // into the switch.
    let (_, seen, _) = tcp_hello(&c.ns_a, SocketAddrV4::new(VIP, 80)).unwrap();
    assert_eq!(ip_of(&seen), c.node_a.config().host_ip());
    // UDP: answers come back from the service address.
    let mut names = std::collections::BTreeSet::new();
    for _ in 0..24 {
        let (name, seen) = udp_hello(c.a1.netns(), c.a1.ip(), SocketAddrV4::new(VIP, 53)).unwrap();
        assert_eq!(ip_of(&seen), c.a1.ip());
        names.insert(name);
    }
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn should_allow_pods_to_hairpin_back_to_themselves_through_services() {
    if !require_root("should_allow_pods_to_hairpin_back_to_themselves_through_services") {
        return;
    }
    let s = ServiceCluster::new();
    let c = &s.c;
    let _a1 = Server::start(&c.a1, "a1");
    s.apply(
        "self",
        &(service_yaml("self", "")
            + &slice_yaml("self", &[(c.a1.ip(), "node-a", true, true, false)])),
    );
    s.wait_backends("default/self:tcp", 1);
    let (name, seen, _) = tcp_hello(c.a1.netns(), SocketAddrV4::new(VIP, 80)).unwrap();
    assert_eq!(name, "a1");
    // kube-proxy masquerades hairpin traffic; twill uses the gateway.
    assert_eq!(ip_of(&seen), c.node_a.config().gateway());
    let (name, seen) = udp_hello(c.a1.netns(), c.a1.ip(), SocketAddrV4::new(VIP, 53)).unwrap();
    assert_eq!(
        (name.as_str(), ip_of(&seen)),
        ("a1", c.node_a.config().gateway())
    );
}

#[test]
fn should_have_session_affinity_work_for_service_with_type_clusterip() {
    if !require_root("should_have_session_affinity_work_for_service_with_type_clusterip") {
        return;
    }
    let s = ServiceCluster::new();
    let c = &s.c;
    let _a2 = Server::start(&c.a2, "a2");
    let _b1 = Server::start(&c.b1, "b1");
    let _b2 = Server::start(&c.b2, "b2");
    let affinity = "  sessionAffinityConfig:\n    clientIP:\n      timeoutSeconds: 10800\n";
    let yaml = service_yaml("sticky", affinity)
        .replace("sessionAffinity: None", "sessionAffinity: ClientIP");
    s.apply(
        "sticky",
        &(yaml
            + &slice_yaml(
                "sticky",
                &[
                    (c.a2.ip(), "node-a", true, true, false),
                    (c.b1.ip(), "node-b", true, true, false),
                    (c.b2.ip(), "node-b", true, true, false),
                ],
            )),
    );
    s.wait_backends("default/sticky:tcp", 3);
    let hits = spread(c.a1.netns(), 20);
    assert_eq!(
        hits.len(),
        1,
        "every connection of one client goes to one backend: {hits:?}"
    );
}

#[test]
fn should_keep_established_connections_when_their_endpoint_is_removed_and_send_new_ones_elsewhere()
{
    if !require_root("should_keep_established_connections_when_their_endpoint_is_removed_and_send_new_ones_elsewhere") {
        return;
    }
    let s = ServiceCluster::new();
    let c = &s.c;
    let _a2 = Server::start(&c.a2, "a2");
    let _b1 = Server::start(&c.b1, "b1");
    let both = [
        (c.a2.ip(), "node-a", true, true, false),
        (c.b1.ip(), "node-b", true, true, false),
    ];
    s.apply(
        "web",
        &(service_yaml("web", "") + &slice_yaml("web", &both)),
    );
    s.wait_backends("default/web:tcp", 2);
    let (first, _, mut conn) = tcp_hello(c.a1.netns(), SocketAddrV4::new(VIP, 80)).unwrap();
    let (ip, node) = if first == "a2" {
        (c.b1.ip(), "node-b")
    } else {
        (c.a2.ip(), "node-a")
    };
    s.apply(
        "web-slice",
        &slice_yaml("web", &[(ip, node, true, true, false)]),
    );
    s.wait_backends("default/web:tcp", 1);
    // The running connection still works, on its backend.
    conn.write_all(b"still there").unwrap();
    let mut back = [0u8; 11];
    conn.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"still there");
    let hits = spread(c.a1.netns(), 10);
    assert!(
        !hits.contains_key(&first),
        "new connections avoid the removed endpoint: {hits:?}"
    );
}

#[test]
fn should_send_traffic_to_terminating_endpoints_only_when_no_endpoint_is_ready() {
    if !require_root("should_send_traffic_to_terminating_endpoints_only_when_no_endpoint_is_ready")
    {
        return;
    }
    let s = ServiceCluster::new();
    let c = &s.c;
    let _a2 = Server::start(&c.a2, "a2");
    let _b1 = Server::start(&c.b1, "b1");
    // a2 is terminating but still serving; b1 is ready.
    let eps = [
        (c.a2.ip(), "node-a", false, true, true),
        (c.b1.ip(), "node-b", true, true, false),
    ];
    s.apply("web", &(service_yaml("web", "") + &slice_yaml("web", &eps)));
    s.wait_backends("default/web:tcp", 1);
    assert_eq!(spread(c.a1.netns(), 10).keys().collect::<Vec<_>>(), ["b1"]);
    // b1 goes away: the terminating endpoint takes the traffic (KEP-1669).
    s.apply("web-slice", &slice_yaml("web", &eps[..1]));
    wait_for("a2 to take over", || {
        Ok(spread(c.a1.netns(), 1).contains_key("a2"))
    });
    assert_eq!(spread(c.a1.netns(), 10).keys().collect::<Vec<_>>(), ["a2"]);
}

#[test]
fn should_add_and_remove_services_live_and_reject_connections_without_endpoints() {
    if !require_root("should_add_and_remove_services_live_and_reject_connections_without_endpoints")
    {
        return;
    }
    let s = ServiceCluster::new();
    let c = &s.c;
    let _b1 = Server::start(&c.b1, "b1");
    // A service with no endpoints rejects (kube-proxy's REJECT: ICMP
    // port unreachable, so connect fails at once instead of timing out).
    s.apply("web", &(service_yaml("web", "") + &slice_yaml("web", &[])));
    s.wait_backends("default/web:tcp", 0);
    let t0 = Instant::now();
    let err = tcp_hello(c.a1.netns(), SocketAddrV4::new(VIP, 80)).unwrap_err();
    let refused = err
        .chain()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::ConnectionRefused);
    assert!(refused, "{err:#}");
    assert!(t0.elapsed() < Duration::from_secs(1));
    // Endpoints arrive: served, with no agent restart.
    s.apply(
        "web-slice",
        &slice_yaml("web", &[(c.b1.ip(), "node-b", true, true, false)]),
    );
    s.wait_backends("default/web:tcp", 1);
    assert_eq!(
        tcp_hello(c.a1.netns(), SocketAddrV4::new(VIP, 80))
            .unwrap()
            .0,
        "b1"
    );
    // Deleted: the address is no service any more.
    s.delete("web");
    s.wait_gone("default/web:tcp");
    assert!(tcp_hello(c.a1.netns(), SocketAddrV4::new(VIP, 80)).is_err());
    let v = c.node_a.counters().unwrap();
    assert!(v.drops.service_no_endpoints >= 1, "{:?}", v.drops);
}

fn node_port_yaml(policy: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: np
  namespace: default
spec:
  clusterIP: {VIP}
  clusterIPs:
  - {VIP}
  externalTrafficPolicy: {policy}
  ports:
  - name: tcp
    nodePort: 30080
    port: 80
    protocol: TCP
    targetPort: {PORT}
  - name: udp
    nodePort: 30053
    port: 53
    protocol: UDP
    targetPort: {PORT}
  selector:
    app: np
  type: NodePort
"#
    )
}

#[test]
fn should_be_able_to_create_a_functioning_nodeport_service_with_both_external_traffic_policies() {
    if !require_root("should_be_able_to_create_a_functioning_nodeport_service_with_both_external_traffic_policies") {
        return;
    }
    let s = ServiceCluster::new();
    let c = &s.c;
    // A node forwards (as every Kubernetes node does): the host hands the
    // NodePort traffic it steered to the switch.
    c.ns_a.sysctl("net.ipv4.ip_forward", "1").unwrap();
    let _a2 = Server::start(&c.a2, "a2");
    let _b1 = Server::start(&c.b1, "b1");
    let eps = [
        (c.a2.ip(), "node-a", true, true, false),
        (c.b1.ip(), "node-b", true, true, false),
    ];
    s.apply("np", &(node_port_yaml("Cluster") + &slice_yaml("np", &eps)));
    s.wait_backends("default/np:tcp", 2);
    // The outside client: node B's host namespace, over the underlay, to
    // node A's address.
    let outside = &c.ns_b;
    let node_port = SocketAddrV4::new(UNDERLAY_A, 30080);
    let gateway = c.node_a.config().gateway();
    let mut seen_by = BTreeMap::new();
    for _ in 0..20 {
        let (name, seen, _) = tcp_hello(outside, node_port).unwrap();
        seen_by.insert(name, ip_of(&seen));
    }
    // Cluster: both nodes' endpoints serve, and every backend sees node
    // A's address (SNAT), so that replies come back through node A.
    assert_eq!(seen_by.len(), 2, "{seen_by:?}");
    assert!(seen_by.values().all(|&ip| ip == gateway), "{seen_by:?}");
    let (_, seen) = udp_hello(outside, UNDERLAY_B, SocketAddrV4::new(UNDERLAY_A, 30053)).unwrap();
    assert_eq!(ip_of(&seen), gateway);
    // A pod of the node using the node's NodePort: the host DNATs it back
    // into the switch, and the replies go back through the host, whose
    // conntrack gives them the node's address again.
    for _ in 0..6 {
        let (_, seen, _) = tcp_hello(c.a1.netns(), node_port).unwrap();
        assert_eq!(ip_of(&seen), gateway);
    }

    // Local: only node A's endpoint, and it sees the client's address.
    s.apply("np", &node_port_yaml("Local"));
    wait_for("Local policy", || {
        tcp_hello(outside, node_port).map(|(_, seen, _)| ip_of(&seen) == UNDERLAY_B)
    });
    for _ in 0..10 {
        let (name, seen, _) = tcp_hello(outside, node_port).unwrap();
        assert_eq!((name.as_str(), ip_of(&seen)), ("a2", UNDERLAY_B));
    }
    let (name, seen) =
        udp_hello(outside, UNDERLAY_B, SocketAddrV4::new(UNDERLAY_A, 30053)).unwrap();
    assert_eq!((name.as_str(), ip_of(&seen)), ("a2", UNDERLAY_B));
}

#[test]
fn should_be_able_to_reach_a_service_at_its_external_ip_from_outside_and_from_pods() {
    if !require_root(
        "should_be_able_to_reach_a_service_at_its_external_ip_from_outside_and_from_pods",
    ) {
        return;
    }
    let s = ServiceCluster::new();
    let c = &s.c;
    c.ns_a.sysctl("net.ipv4.ip_forward", "1").unwrap();
    let _b1 = Server::start(&c.b1, "b1");
    let external = Ipv4Addr::new(192, 0, 2, 7);
    let extra = format!("  externalIPs:\n  - {external}\n");
    s.apply(
        "web",
        &(service_yaml("web", &extra)
            + &slice_yaml("web", &[(c.b1.ip(), "node-b", true, true, false)])),
    );
    s.wait_backends("default/web:tcp", 1);
    // The outside: a namespace beyond node A that routes the external IP to
    // node A, as an upstream router or a load balancer would. (Node B's own
    // namespace is no outside: it steers the external IP into its own
    // switch, as kube-proxy does on every node.)
    let outside = Netns::new("twl-svc-out").unwrap();
    let (a_side, out_side) = (
        Ipv4Addr::new(192, 168, 200, 1),
        Ipv4Addr::new(192, 168, 200, 2),
    );
    let _link = Underlay::pair(&c.ns_a, &outside, a_side, out_side, 24).unwrap();
    outside
        .ip(&[
            "route",
            "add",
            &format!("{external}/32"),
            "via",
            &a_side.to_string(),
        ])
        .unwrap();
    let to = SocketAddrV4::new(external, 80);
    let (name, seen, _) = tcp_hello(&outside, to)
        .map_err(|e| e.context(c.node_a.log_tail(20)))
        .unwrap();
    assert_eq!(
        (name.as_str(), ip_of(&seen)),
        ("b1", c.node_a.config().gateway())
    );
    let (name, _, _) = tcp_hello(c.a1.netns(), to).unwrap();
    assert_eq!(name, "b1");
}

/// Services stored in the control plane reach every leased node live:
/// `twill service apply` against the store, a pod on one node reaches a
/// backend on another through the ClusterIP, `twill service delete` takes
/// it away again, all without restarting an agent.
fn services_through_the_store(etcd: bool) {
    const HUB: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 254);
    const NET_CONF: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;
    let lan = Lan::new("twl-svc-hub", HUB, 24).unwrap();
    let (_store, plane, store_args) = if etcd {
        let s = Service::etcd(
            lan.hub(),
            SocketAddrV4::new(HUB, 2379),
            "/coreos.com/network",
            NET_CONF,
        )
        .unwrap();
        let plane = PlaneConfig::Etcd {
            endpoints: vec![format!("http://{HUB}:2379")],
            prefix: None,
        };
        (
            s,
            plane,
            vec!["--etcd".to_owned(), format!("http://{HUB}:2379")],
        )
    } else {
        let s = Service::controller(
            &twill_bin(),
            lan.hub(),
            SocketAddrV4::new(HUB, 8765),
            NET_CONF,
            "svc-token-0123",
        )
        .unwrap();
        let token = s.dir().join("token");
        let plane = PlaneConfig::Controller {
            url: format!("http://{HUB}:8765"),
            token_file: token.clone(),
        };
        let args = vec![
            "--controller".to_owned(),
            format!("http://{HUB}:8765"),
            "--token-file".to_owned(),
            token.display().to_string(),
        ];
        (s, plane, args)
    };
    let mut nodes = Vec::new();
    let mut nss = Vec::new();
    for i in 1..=2u8 {
        let ns = Netns::new(&format!("twl-svc-n{i}")).unwrap();
        lan.join(&ns, Ipv4Addr::new(192, 168, 100, i)).unwrap();
        let cfg = NodeConfig::leased(
            &format!("node-{i}"),
            Ipv4Addr::new(192, 168, 100, i),
            plane.clone(),
        );
        nodes.push(NodeProcess::start(&twill_bin(), &ns, cfg).unwrap());
        nss.push(ns);
    }
    let client = Pod::attach(&nodes[0], "twl-svc-c").unwrap();
    let backend = Pod::attach(&nodes[1], "twl-svc-s").unwrap();
    let _server = Server::start(&backend, "s");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        file.path(),
        service_yaml("web", "")
            + &slice_yaml("web", &[(backend.ip(), "node-2", true, true, false)]),
    )
    .unwrap();
    // The CLI talks to the store from the hub's namespace, where it listens.
    let cli = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(store_args.iter().map(String::as_str));
        lan.hub().run(twill_bin(), &all).unwrap()
    };
    eprintln!(
        "{}",
        cli(&["service", "apply", "-f", file.path().to_str().unwrap()])
    );
    wait_for("the ClusterIP to answer", || {
        Ok(tcp_hello(client.netns(), SocketAddrV4::new(VIP, 80)).is_ok_and(|(n, _, _)| n == "s"))
    });
    let st = nodes[0].status().unwrap();
    assert_eq!(st.services["state"], "connected", "{:?}", st.services);
    eprintln!("{}", cli(&["service", "delete", "web"]));
    wait_for("the ClusterIP to be gone", || {
        Ok(tcp_hello(client.netns(), SocketAddrV4::new(VIP, 80)).is_err())
    });
}

#[test]
fn should_follow_services_stored_in_the_controller_without_restarting() {
    if !require_root("should_follow_services_stored_in_the_controller_without_restarting") {
        return;
    }
    services_through_the_store(false);
}

#[test]
fn should_follow_services_stored_in_etcd_without_restarting() {
    if !require_root("should_follow_services_stored_in_etcd_without_restarting") {
        return;
    }
    services_through_the_store(true);
}

/// Path MTU discovery through a Service: a pod whose MTU is larger than the
/// tunnel's sends a datagram too big for it to a ClusterIP whose backend is
/// on another node; the router's fragmentation-needed is about the DNATed
/// packet and must reach the pod translated back (quoting the ClusterIP),
/// or the pod's kernel would learn the MTU of the backend's address instead
/// of the one it sends to.
#[test]
fn should_translate_fragmentation_needed_so_that_pmtu_discovery_works_through_a_service() {
    if !require_root(
        "should_translate_fragmentation_needed_so_that_pmtu_discovery_works_through_a_service",
    ) {
        return;
    }
    let s = ServiceCluster::new();
    let c = &s.c;
    let _b1 = Server::start(&c.b1, "b1");
    s.apply(
        "web",
        &(service_yaml("web", "")
            + &slice_yaml("web", &[(c.b1.ip(), "node-b", true, true, false)])),
    );
    s.wait_backends("default/web:udp", 1);
    let pod_mtu = c.a1.info().unwrap().mtu;
    c.a1.netns()
        .ip(&["link", "set", "dev", "eth0", "mtu", "1500"])
        .unwrap();
    let sock = udp_socket(c.a1.netns(), SocketAddrV4::new(c.a1.ip(), 0)).unwrap();
    sock.connect(SocketAddrV4::new(VIP, 53)).unwrap();
    let mtu = || nix::sys::socket::getsockopt(&sock, nix::sys::socket::sockopt::IpMtu).unwrap();
    assert_eq!(mtu(), 1500);
    // Linux sets DF on UDP (IP_PMTUDISC_WANT): too big for the tunnel.
    sock.send(&[0u8; 1472]).unwrap();
    wait_for("the pod's path MTU to the ClusterIP to drop", || {
        Ok(mtu() != 1500)
    });
    assert_eq!(
        mtu() as u32,
        pod_mtu,
        "the tunnel's MTU, learnt for the ClusterIP"
    );
    let v = c.node_a.counters().unwrap();
    assert!(v.drops.mtu_frag_needed >= 1, "{:?}", v.drops);
}
