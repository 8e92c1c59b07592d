//! Service NAT through the switch: two workers over one node state, byte
//! fixtures built with etherparse, checksums verified by etherparse,
//! explicit time.

use super::*;
use crate::core::config::{ConntrackConfig, PortKind};
use crate::core::mac_table::MacTableConfig;
use crate::core::service::conntrack::{FlowKey, TcpState};
use crate::core::service::{Endpoint, Frontend, Proto, Scope, ServicePortSpec, ServiceTable};
use encap::{checksum, Cidr};
use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, TransportHeader};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

const HEADROOM: usize = 64;
const ROUTER: MacAddr = MacAddr([0x0e, 0, 0, 0, 0, 1]);
const REMOTE_VTEP: MacAddr = MacAddr([0x0e, 0, 0, 0, 0, 2]);
const REMOTE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 2);
const HOST: PortId = PortId(0);
const POD3: PortId = PortId(1);
const POD4: PortId = PortId(2);
const POD5: PortId = PortId(3);
const VIP: &str = "10.96.0.10:80";
const GW: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);

fn mac(last: u8) -> MacAddr {
    MacAddr([0x0a, 0x58, 0x0a, 0xf4, 0x01, last])
}

fn sa(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

fn cfg(ct: ConntrackConfig) -> SwitchConfig {
    SwitchConfig {
        subnet: Cidr::new(Ipv4Addr::new(10, 244, 1, 0), 24).unwrap(),
        gateway: GW,
        cluster: Cidr::new(Ipv4Addr::new(10, 244, 0, 0), 16).unwrap(),
        router_mac: ROUTER,
        backend: Backend::Vxlan { vni: 1 },
        tunnel_mtu: 1450,
        mac: MacTableConfig::default(),
        neighbor_capacity: 64,
        neighbor_aging: Duration::from_secs(300),
        conntrack: ct,
        icmp: Default::default(),
        storm: Default::default(),
    }
}

/// One node, two workers.
struct Node {
    state: Arc<SwitchState>,
    a: Switch,
    b: Switch,
    now: Instant,
}

fn node_with(ct: ConntrackConfig) -> Node {
    let now = Instant::now();
    let state = Arc::new(SwitchState::new(cfg(ct)));
    for (id, kind, last) in [
        (HOST, PortKind::Host, 2),
        (POD3, PortKind::Pod, 3),
        (POD4, PortKind::Pod, 4),
        (POD5, PortKind::Pod, 5),
    ] {
        let ip = Ipv4Addr::new(10, 244, 1, last);
        let p = PortConfig {
            kind,
            mac: mac(last),
            ip,
        };
        state.add_port(id, p, now);
    }
    state.set_remotes(&[RemoteNode {
        subnet: Cidr::new(Ipv4Addr::new(10, 244, 2, 0), 24).unwrap(),
        endpoint: SocketAddrV4::new(REMOTE_IP, 8472),
        vtep_mac: REMOTE_VTEP,
        via: crate::core::Via::Tunnel,
    }]);
    Node {
        a: Switch::shared(Arc::clone(&state)),
        b: Switch::shared(Arc::clone(&state)),
        state,
        now,
    }
}

fn node() -> Node {
    node_with(ConntrackConfig::default())
}

fn ep(addr: &str, local: bool) -> Endpoint {
    Endpoint {
        addr: addr.parse().unwrap(),
        local,
        ready: true,
        serving: true,
        terminating: false,
    }
}

fn spec(name: &str, proto: Proto, fronts: &[(&str, Scope)], eps: Vec<Endpoint>) -> ServicePortSpec {
    ServicePortSpec {
        name: name.into(),
        proto,
        frontends: fronts
            .iter()
            .map(|(a, scope)| {
                let a: SocketAddr = a.parse().unwrap();
                Frontend {
                    ip: a.ip(),
                    port: a.port(),
                    proto,
                    scope: *scope,
                }
            })
            .collect(),
        endpoints: eps,
        affinity: None,
        internal_local: false,
        external_local: false,
    }
}

fn publish(n: &Node, specs: Vec<ServicePortSpec>) {
    let mut t = ServiceTable::default();
    for s in specs {
        t.upsert(s);
    }
    n.state.set_services(t);
}

fn cluster_ip(eps: Vec<Endpoint>) -> ServicePortSpec {
    spec("default/web", Proto::Tcp, &[(VIP, Scope::Internal)], eps)
}

#[derive(Clone, Copy)]
enum F {
    Syn,
    SynAck,
    Ack,
    Fin,
    Rst,
}

fn tcp(smac: MacAddr, dmac: MacAddr, src: &str, dst: &str, f: F, payload: &[u8]) -> Vec<u8> {
    let (s, d) = (sa(src), sa(dst));
    let b = PacketBuilder::ethernet2(smac.0, dmac.0)
        .ipv4(s.ip().octets(), d.ip().octets(), 64)
        .tcp(s.port(), d.port(), 1000, 65535);
    let b = match f {
        F::Syn => b.syn(),
        F::SynAck => b.syn().ack(1001),
        F::Ack => b.ack(1),
        F::Fin => b.fin().ack(1),
        F::Rst => b.rst(),
    };
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

fn udp(smac: MacAddr, dmac: MacAddr, src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
    let (s, d) = (sa(src), sa(dst));
    let mut v = Vec::new();
    PacketBuilder::ethernet2(smac.0, dmac.0)
        .ipv4(s.ip().octets(), d.ip().octets(), 64)
        .udp(s.port(), d.port())
        .write(&mut v, payload)
        .unwrap();
    v
}

/// The frame wrapped as the remote node's VXLAN datagram.
fn vxlan(inner: &[u8]) -> Vec<u8> {
    let mut v = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
    v.extend_from_slice(inner);
    v
}

fn buf(frame: &[u8]) -> PacketBuf {
    let mut b = PacketBuf::new(70_000, HEADROOM);
    b.reset(HEADROOM)[..frame.len()].copy_from_slice(frame);
    b.set_len(frame.len());
    b
}

/// The IPv4 TCP/UDP packet in an Ethernet frame: endpoints, with the IP
/// and L4 checksums verified by etherparse.
fn check(frame: &[u8]) -> (SocketAddrV4, SocketAddrV4) {
    let h = PacketHeaders::from_ethernet_slice(frame).unwrap();
    let Some(NetHeaders::Ipv4(ip, _)) = &h.net else {
        panic!("not IPv4")
    };
    assert_eq!(ip.header_checksum, ip.calc_header_checksum(), "IP checksum");
    let payload = h.payload.slice();
    let (sp, dp) = match &h.transport {
        Some(TransportHeader::Tcp(t)) => {
            let want = t.calc_checksum_ipv4(ip, payload).unwrap();
            assert_eq!(t.checksum, want, "TCP checksum");
            (t.source_port, t.destination_port)
        }
        Some(TransportHeader::Udp(u)) => {
            if u.checksum != 0 {
                let want = u.calc_checksum_ipv4(ip, payload).unwrap();
                assert_eq!(u.checksum, want, "UDP checksum");
            }
            (u.source_port, u.destination_port)
        }
        t => panic!("not TCP/UDP: {t:?}"),
    };
    (
        SocketAddrV4::new(ip.source.into(), sp),
        SocketAddrV4::new(ip.destination.into(), dp),
    )
}

/// Sends a frame from a port on worker `a` (or `b`), returns the action and
/// the bytes.
fn send(sw: &mut Switch, port: PortId, frame: &[u8], now: Instant) -> (Action, Vec<u8>) {
    let mut b = buf(frame);
    let a = sw.process_port(port, &mut b, now);
    (a, b.data().to_vec())
}

fn from_tunnel(sw: &mut Switch, inner: &[u8], now: Instant) -> (Action, Vec<u8>) {
    let mut b = buf(&vxlan(inner));
    let a = sw.process_tunnel(SocketAddrV4::new(REMOTE_IP, 8472), &mut b, now);
    (a, b.data().to_vec())
}

fn key(src: &str, dst: &str) -> FlowKey {
    FlowKey {
        proto: 6,
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
    }
}

#[test]
fn clusterip_tcp_syn_dnat_and_synack_reverse_on_the_other_worker() {
    let mut n = node();
    publish(&n, vec![cluster_ip(vec![ep("10.244.1.4:8080", true)])]);
    let syn = tcp(mac(3), ROUTER, "10.244.1.3:40000", VIP, F::Syn, b"");
    let (act, out) = send(&mut n.a, POD3, &syn, n.now);
    assert_eq!(act, Action::Output(POD4));
    assert_eq!(check(&out), (sa("10.244.1.3:40000"), sa("10.244.1.4:8080")));
    assert_eq!(&out[..6], &mac(4).0, "to the backend's MAC");
    assert_eq!(n.a.counters().conntrack_new, 1);
    assert_eq!(n.state.conntrack().len(), 1);

    // The backend answers its client directly on the segment (to its MAC):
    // on the other worker, and it must be translated back.
    let synack = tcp(
        mac(4),
        mac(3),
        "10.244.1.4:8080",
        "10.244.1.3:40000",
        F::SynAck,
        b"",
    );
    let (act, out) = send(&mut n.b, POD4, &synack, n.now);
    assert_eq!(act, Action::Output(POD3));
    assert_eq!(check(&out), (sa(VIP), sa("10.244.1.3:40000")));
    assert_eq!(n.b.counters().nat_translated, 1);
    let c = n
        .state
        .conntrack()
        .get(&key("10.244.1.3:40000", VIP))
        .unwrap();
    assert_eq!(c.tcp_state(), TcpState::SynRecv);

    let ack = tcp(mac(3), ROUTER, "10.244.1.3:40000", VIP, F::Ack, b"GET /");
    let (act, out) = send(&mut n.a, POD3, &ack, n.now);
    assert_eq!(act, Action::Output(POD4));
    assert_eq!(check(&out).1, sa("10.244.1.4:8080"));
    assert_eq!(c.tcp_state(), TcpState::Established);
    assert!(c.is_assured());
}

#[test]
fn udp_to_a_remote_backend_and_its_reply_from_the_tunnel() {
    let mut n = node();
    let dns = spec(
        "kube-system/dns:dns",
        Proto::Udp,
        &[("10.96.0.10:53", Scope::Internal)],
        vec![ep("10.244.2.7:5353", false)],
    );
    publish(&n, vec![dns]);
    let q = udp(
        mac(3),
        ROUTER,
        "10.244.1.3:33333",
        "10.96.0.10:53",
        b"query",
    );
    let (act, out) = send(&mut n.a, POD3, &q, n.now);
    let Action::Tunnel { l3, .. } = act else {
        panic!("{act:?}")
    };
    assert_eq!(l3, 22);
    assert_eq!(
        check(&out[8..]),
        (sa("10.244.1.3:33333"), sa("10.244.2.7:5353"))
    );

    let r = udp(
        REMOTE_VTEP,
        ROUTER,
        "10.244.2.7:5353",
        "10.244.1.3:33333",
        b"answer",
    );
    let (act, out) = from_tunnel(&mut n.b, &r, n.now);
    assert_eq!(act, Action::Output(POD3));
    assert_eq!(check(&out), (sa("10.96.0.10:53"), sa("10.244.1.3:33333")));
}

#[test]
fn hairpin_is_snated_to_the_gateway_and_its_reply_translated_back() {
    let mut n = node();
    publish(&n, vec![cluster_ip(vec![ep("10.244.1.3:8080", true)])]);
    let syn = tcp(mac(3), ROUTER, "10.244.1.3:40000", VIP, F::Syn, b"");
    let (act, out) = send(&mut n.a, POD3, &syn, n.now);
    assert_eq!(act, Action::Output(POD3));
    assert_eq!(check(&out), (sa("10.244.1.1:40000"), sa("10.244.1.3:8080")));

    // The pod answers the gateway address (through the router's MAC).
    let synack = tcp(
        mac(3),
        ROUTER,
        "10.244.1.3:8080",
        "10.244.1.1:40000",
        F::SynAck,
        b"",
    );
    let (act, out) = send(&mut n.b, POD3, &synack, n.now);
    assert_eq!(act, Action::Output(POD3));
    assert_eq!(check(&out), (sa(VIP), sa("10.244.1.3:40000")));
    assert_eq!(
        n.b.counters().drops_for(DropReason::ToGatewayUnsupported),
        0
    );
}

#[test]
fn snat_port_is_changed_when_the_clients_port_is_taken() {
    let mut n = node();
    publish(&n, vec![cluster_ip(vec![ep("10.244.1.3:8080", true)])]);
    // Take the reply key a hairpin from port 40000 would use.
    let ct = n.state.conntrack();
    let taken = key("10.244.1.3:8080", "10.244.1.1:40000");
    ct.insert(
        key("10.244.1.9:1", "10.96.0.11:80"),
        taken,
        9,
        false,
        crate::core::service::conntrack::Seen::Udp,
        n.now,
    )
    .unwrap();
    let syn = tcp(mac(3), ROUTER, "10.244.1.3:40000", VIP, F::Syn, b"");
    let (_, out) = send(&mut n.a, POD3, &syn, n.now);
    let (src, dst) = check(&out);
    assert_eq!(*src.ip(), GW);
    assert!((32768..61000).contains(&src.port()), "{src}");
    assert_eq!(dst, sa("10.244.1.3:8080"));
}

#[test]
fn nodeport_cluster_policy_snats_and_local_policy_keeps_the_client() {
    let mut n = node();
    let eps = vec![ep("10.244.1.4:8080", true), ep("10.244.2.7:8080", false)];
    let mut cluster = spec(
        "default/np-cluster",
        Proto::Tcp,
        &[("10.244.1.1:30080", Scope::External)],
        vec![ep("10.244.2.7:8080", false)],
    );
    cluster.external_local = false;
    let mut local = spec(
        "default/np-local",
        Proto::Tcp,
        &[("10.244.1.1:30081", Scope::External)],
        eps,
    );
    local.external_local = true;
    publish(&n, vec![cluster, local]);

    // An outside client through the host port, to the Cluster NodePort.
    let syn = tcp(
        mac(2),
        ROUTER,
        "192.168.1.50:5555",
        "10.244.1.1:30080",
        F::Syn,
        b"",
    );
    let (act, out) = send(&mut n.a, HOST, &syn, n.now);
    assert!(matches!(act, Action::Tunnel { .. }), "{act:?}");
    assert_eq!(
        check(&out[8..]),
        (sa("10.244.1.1:5555"), sa("10.244.2.7:8080"))
    );
    // The reply comes back through the tunnel and leaves to the host.
    let synack = tcp(
        REMOTE_VTEP,
        ROUTER,
        "10.244.2.7:8080",
        "10.244.1.1:5555",
        F::SynAck,
        b"",
    );
    let (act, out) = from_tunnel(&mut n.b, &synack, n.now);
    assert_eq!(act, Action::Output(HOST));
    assert_eq!(
        check(&out),
        (sa("10.244.1.1:30080"), sa("192.168.1.50:5555"))
    );

    // Local: the client's address is kept, only the local endpoint serves.
    for sport in 6000..6020 {
        let src = format!("192.168.1.50:{sport}");
        let syn = tcp(mac(2), ROUTER, &src, "10.244.1.1:30081", F::Syn, b"");
        let (act, out) = send(&mut n.a, HOST, &syn, n.now);
        assert_eq!(act, Action::Output(POD4));
        assert_eq!(check(&out), (sa(&src), sa("10.244.1.4:8080")));
    }
}

#[test]
fn session_affinity_keeps_a_client_on_one_backend_until_the_timeout() {
    let mut n = node();
    let eps = || {
        vec![
            ep("10.244.1.4:8080", true),
            ep("10.244.1.5:8080", true),
            ep("10.244.2.7:8080", false),
            ep("10.244.2.8:8080", false),
        ]
    };
    let mut s = cluster_ip(eps());
    s.affinity = Some(Duration::from_secs(60));
    publish(&n, vec![s.clone()]);
    let backend_of = |n: &mut Node, sport: u16, now: Instant| {
        let src = format!("10.244.1.3:{sport}");
        let syn = tcp(mac(3), ROUTER, &src, VIP, F::Syn, b"");
        let _ = send(&mut n.a, POD3, &syn, now);
        n.state.conntrack().get(&key(&src, VIP)).unwrap().backend()
    };
    let t0 = n.now;
    let first = backend_of(&mut n, 1000, t0);
    for sport in 1001..1020 {
        assert_eq!(backend_of(&mut n, sport, t0), first);
    }
    let c: IpAddr = "10.244.1.3".parse().unwrap();
    let id = n.state.services().load().get("default/web").unwrap().id;
    let t1 = n.now + Duration::from_secs(59);
    assert_eq!(n.state.conntrack().affinity(c, id, t1), Some(first));
    // Each new connection renews the pin; 61 s after the last one it is gone.
    let t2 = n.now + Duration::from_secs(61);
    assert_eq!(n.state.conntrack().affinity(c, id, t2), None);
    let again = backend_of(&mut n, 2000, t2);
    assert_eq!(n.state.conntrack().affinity(c, id, t2), Some(again));

    // The pinned backend goes away: a new pick, kept from then on.
    s.endpoints.retain(|e| {
        e.addr
            != SocketAddr::V4(match again {
                SocketAddr::V4(a) => a,
                SocketAddr::V6(_) => unreachable!(),
            })
    });
    publish(&n, vec![s]);
    let moved = backend_of(&mut n, 3000, t2);
    assert_ne!(moved, again);
    for sport in 3001..3010 {
        assert_eq!(backend_of(&mut n, sport, t2), moved);
    }
}

#[test]
fn a_removed_endpoint_keeps_its_connections_but_gets_no_new_ones() {
    let mut n = node();
    let both = vec![ep("10.244.1.4:8080", true), ep("10.244.1.5:8080", true)];
    publish(&n, vec![cluster_ip(both)]);
    // Find a client port whose connection lands on .4, and establish it.
    let mut sport = 10000;
    let src = loop {
        let src = format!("10.244.1.3:{sport}");
        let syn = tcp(mac(3), ROUTER, &src, VIP, F::Syn, b"");
        let (act, _) = send(&mut n.a, POD3, &syn, n.now);
        if act == Action::Output(POD4) {
            break src;
        }
        sport += 1;
    };
    let synack = tcp(mac(4), mac(3), "10.244.1.4:8080", &src, F::SynAck, b"");
    assert_eq!(send(&mut n.b, POD4, &synack, n.now).0, Action::Output(POD3));
    let ack = tcp(mac(3), ROUTER, &src, VIP, F::Ack, b"");
    assert_eq!(send(&mut n.a, POD3, &ack, n.now).0, Action::Output(POD4));

    publish(&n, vec![cluster_ip(vec![ep("10.244.1.5:8080", true)])]);
    let data = tcp(mac(3), ROUTER, &src, VIP, F::Ack, b"more");
    let (act, out) = send(&mut n.a, POD3, &data, n.now);
    assert_eq!(act, Action::Output(POD4), "established keeps its backend");
    assert_eq!(check(&out).1, sa("10.244.1.4:8080"));
    for p in 20000..20010 {
        let syn = tcp(mac(3), ROUTER, &format!("10.244.1.3:{p}"), VIP, F::Syn, b"");
        assert_eq!(send(&mut n.a, POD3, &syn, n.now).0, Action::Output(POD5));
    }
}

#[test]
fn no_endpoints_answers_icmp_port_unreachable() {
    let mut n = node();
    publish(&n, vec![cluster_ip(vec![])]);
    let syn = tcp(mac(3), ROUTER, "10.244.1.3:40000", VIP, F::Syn, b"");
    let (act, out) = send(&mut n.a, POD3, &syn, n.now);
    assert_eq!(act, Action::Output(POD3));
    assert_eq!(n.a.counters().drops_for(DropReason::ServiceNoEndpoints), 1);
    let h = PacketHeaders::from_ethernet_slice(&out).unwrap();
    let Some(NetHeaders::Ipv4(ip, _)) = &h.net else {
        panic!()
    };
    assert_eq!(ip.source, GW.octets());
    assert_eq!(ip.destination, [10, 244, 1, 3]);
    let icmp = &out[34..];
    assert_eq!((icmp[0], icmp[1]), (3, 3));
    assert_eq!(checksum::checksum(icmp), 0);
    assert_eq!(
        &icmp[8 + 16..8 + 20],
        &[10, 96, 0, 10],
        "quotes the ClusterIP"
    );
    assert!(n.state.conntrack().is_empty());
}

#[test]
fn tcp_timeouts_with_explicit_time() {
    let mut n = node();
    publish(&n, vec![cluster_ip(vec![ep("10.244.1.4:8080", true)])]);
    let ct = n.state.conntrack();
    // A SYN nobody answers: SYN_SENT lives 120 s.
    let syn = tcp(mac(3), ROUTER, "10.244.1.3:1", VIP, F::Syn, b"");
    let _ = send(&mut n.a, POD3, &syn, n.now);
    assert_eq!(ct.sweep_all(n.now + Duration::from_secs(119)), 0);
    assert_eq!(ct.sweep_all(n.now + Duration::from_secs(121)), 1);
    assert!(ct.is_empty());

    // Established, then RST: CLOSE, 10 s.
    let t = n.now + Duration::from_secs(200);
    let src = "10.244.1.3:2";
    let _ = send(
        &mut n.a,
        POD3,
        &tcp(mac(3), ROUTER, src, VIP, F::Syn, b""),
        t,
    );
    let _ = send(
        &mut n.b,
        POD4,
        &tcp(mac(4), mac(3), "10.244.1.4:8080", src, F::SynAck, b""),
        t,
    );
    let _ = send(
        &mut n.a,
        POD3,
        &tcp(mac(3), ROUTER, src, VIP, F::Ack, b""),
        t,
    );
    let c = ct.get(&key(src, VIP)).unwrap();
    assert_eq!(c.tcp_state(), TcpState::Established);
    let _ = send(
        &mut n.b,
        POD4,
        &tcp(mac(4), mac(3), "10.244.1.4:8080", src, F::Rst, b""),
        t,
    );
    assert_eq!(c.tcp_state(), TcpState::Close);
    assert_eq!(ct.sweep_all(t + Duration::from_secs(9)), 0);
    assert_eq!(ct.sweep_all(t + Duration::from_secs(11)), 1);

    // FIN: FIN_WAIT, 120 s instead of 5 days.
    let src = "10.244.1.3:3";
    let _ = send(
        &mut n.a,
        POD3,
        &tcp(mac(3), ROUTER, src, VIP, F::Syn, b""),
        t,
    );
    let _ = send(
        &mut n.b,
        POD4,
        &tcp(mac(4), mac(3), "10.244.1.4:8080", src, F::SynAck, b""),
        t,
    );
    let _ = send(
        &mut n.a,
        POD3,
        &tcp(mac(3), ROUTER, src, VIP, F::Ack, b""),
        t,
    );
    let _ = send(
        &mut n.a,
        POD3,
        &tcp(mac(3), ROUTER, src, VIP, F::Fin, b""),
        t,
    );
    assert_eq!(
        ct.get(&key(src, VIP)).unwrap().tcp_state(),
        TcpState::FinWait
    );
    assert_eq!(ct.sweep_all(t + Duration::from_secs(121)), 1);
    assert!(ct.is_empty());

    // The state's run drives the sweep, one shard per step.
    let mut when = t + Duration::from_secs(300);
    let _ = send(
        &mut n.a,
        POD3,
        &tcp(mac(3), ROUTER, "10.244.1.3:4", VIP, F::Syn, b""),
        when,
    );
    when += Duration::from_secs(121);
    for _ in 0..64 {
        let next = n.state.run(when);
        when = next.unwrap_or(when).max(when) + Duration::from_millis(1);
    }
    assert!(ct.is_empty());
    assert!(ct.expired() >= 4);
}

#[test]
fn a_full_table_early_drops_an_unassured_connection_then_refuses() {
    let ct_cfg = ConntrackConfig {
        max_entries: 2,
        ..ConntrackConfig::default()
    };
    let mut n = node_with(ct_cfg);
    publish(&n, vec![cluster_ip(vec![ep("10.244.1.4:8080", true)])]);
    let open = |n: &mut Node, src: &str| {
        send(
            &mut n.a,
            POD3,
            &tcp(mac(3), ROUTER, src, VIP, F::Syn, b""),
            n.now,
        )
        .0
    };
    assert_eq!(open(&mut n, "10.244.1.3:1"), Action::Output(POD4));
    assert_eq!(open(&mut n, "10.244.1.3:2"), Action::Output(POD4));
    assert_eq!(open(&mut n, "10.244.1.3:3"), Action::Output(POD4));
    assert_eq!(n.a.counters().conntrack_early_drop, 1);
    assert_eq!(n.state.conntrack().len(), 2);
    // Make the two left assured.
    for p in 1..=3 {
        let src = format!("10.244.1.3:{p}");
        if n.state.conntrack().get(&key(&src, VIP)).is_none() {
            continue; // the early-dropped one (an ACK would pick it up again)
        }
        let back = tcp(mac(4), mac(3), "10.244.1.4:8080", &src, F::SynAck, b"");
        let _ = send(&mut n.b, POD4, &back, n.now);
        let _ = send(
            &mut n.a,
            POD3,
            &tcp(mac(3), ROUTER, &src, VIP, F::Ack, b""),
            n.now,
        );
    }
    let act = open(&mut n, "10.244.1.3:4");
    assert_eq!(act, Action::Drop(DropReason::ConntrackFull));
    assert_eq!(n.a.counters().drops_for(DropReason::ConntrackFull), 1);
}

#[test]
fn partial_checksum_super_frame_keeps_a_correct_pseudo_header_sum() {
    let mut n = node();
    publish(&n, vec![cluster_ip(vec![ep("10.244.1.4:8080", true)])]);
    let payload = vec![0x5a; 4000];
    let mut f = tcp(mac(3), ROUTER, "10.244.1.3:40000", VIP, F::Ack, &payload);
    // What a pod offloading TSO hands over: the pseudo-header sum in the
    // checksum field, NEEDS_CSUM, GSO TCPv4.
    let l4 = f.len() - 34;
    let part = checksum::fold(checksum::pseudo_header(
        Ipv4Addr::new(10, 244, 1, 3),
        Ipv4Addr::new(10, 96, 0, 10),
        6,
        l4 as u16,
    ));
    f[34 + 16..34 + 18].copy_from_slice(&part.to_be_bytes());
    let mut b = buf(&f);
    b.offload = vnet::Header {
        flags: vnet::F_NEEDS_CSUM,
        gso_type: vnet::GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1400,
        csum_start: 34,
        csum_offset: 16,
    };
    let act = n.a.process_port(POD3, &mut b, n.now);
    assert_eq!(act, Action::Output(POD4));
    // Complete the checksum as the device would, then verify.
    let mut out = b.data().to_vec();
    let c = !checksum::fold(checksum::sum(0, &out[34..]));
    out[34 + 16..34 + 18].copy_from_slice(&c.to_be_bytes());
    assert_eq!(check(&out), (sa("10.244.1.3:40000"), sa("10.244.1.4:8080")));
}

/// Sets DF and fixes the IP header checksum.
fn set_df(frame: &mut [u8]) {
    frame[14 + 6] |= 0x40;
    frame[24..26].copy_from_slice(&[0, 0]);
    let c = checksum::checksum(&frame[14..34]);
    frame[24..26].copy_from_slice(&c.to_be_bytes());
}

#[test]
fn frag_needed_about_a_dnated_packet_is_translated_back() {
    let mut n = node();
    publish(&n, vec![cluster_ip(vec![ep("10.244.2.7:8080", false)])]);
    let src = "10.244.1.3:40000";
    let _ = send(
        &mut n.a,
        POD3,
        &tcp(mac(3), ROUTER, src, VIP, F::Syn, b""),
        n.now,
    );
    let mut big = tcp(mac(3), ROUTER, src, VIP, F::Ack, &[7u8; 1460]);
    set_df(&mut big);
    let (act, out) = send(&mut n.a, POD3, &big, n.now);
    assert_eq!(act, Action::Output(POD3));
    assert_eq!(n.a.counters().drops_for(DropReason::MtuFragNeeded), 1);
    let ip = &out[14..];
    assert_eq!(checksum::checksum(&ip[..20]), 0, "outer IP checksum");
    assert_eq!(&ip[12..16], &GW.octets());
    assert_eq!(&ip[16..20], &[10, 244, 1, 3]);
    let icmp = &ip[20..];
    assert_eq!((icmp[0], icmp[1]), (3, 4));
    assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1450);
    assert_eq!(checksum::checksum(icmp), 0, "ICMP checksum");
    let quote = &icmp[8..];
    assert_eq!(checksum::checksum(&quote[..20]), 0, "quoted IP checksum");
    let (_, qs, qd) = encap::nat::endpoints(quote).unwrap();
    assert_eq!((qs, qd), (sa(src), sa(VIP)));
}

#[test]
fn an_icmp_error_from_the_backend_is_translated_for_the_client() {
    let mut n = node();
    let dns = spec(
        "kube-system/dns:dns",
        Proto::Udp,
        &[("10.96.0.10:53", Scope::Internal)],
        vec![ep("10.244.1.4:5353", true)],
    );
    publish(&n, vec![dns]);
    let q = udp(
        mac(3),
        ROUTER,
        "10.244.1.3:33333",
        "10.96.0.10:53",
        b"query",
    );
    let (_, out) = send(&mut n.a, POD3, &q, n.now);
    // The backend's kernel says port unreachable, straight to the client.
    let mut msg = vec![3, 3, 0, 0, 0, 0, 0, 0];
    msg.extend_from_slice(&out[14..]);
    let c = checksum::checksum(&msg);
    msg[2..4].copy_from_slice(&c.to_be_bytes());
    let mut e = Vec::new();
    PacketBuilder::ethernet2(mac(4).0, mac(3).0)
        .ipv4([10, 244, 1, 4], [10, 244, 1, 3], 64)
        .write(&mut e, etherparse::IpNumber(1), &msg)
        .unwrap();
    let (act, out) = send(&mut n.b, POD4, &e, n.now);
    assert_eq!(act, Action::Output(POD3));
    let ip = &out[14..];
    assert_eq!(&ip[12..16], &[10, 96, 0, 10], "from the ClusterIP");
    assert_eq!(checksum::checksum(&ip[..20]), 0);
    assert_eq!(checksum::checksum(&ip[20..]), 0);
    let (_, qs, qd) = encap::nat::endpoints(&ip[28..]).unwrap();
    assert_eq!((qs, qd), (sa("10.244.1.3:33333"), sa("10.96.0.10:53")));
}

#[test]
fn fragments_to_a_frontend_are_dropped_and_counted() {
    let mut n = node();
    publish(&n, vec![cluster_ip(vec![ep("10.244.1.4:8080", true)])]);
    let mut f = udp(mac(3), ROUTER, "10.244.1.3:1", VIP, b"frag");
    f[14 + 6] |= 0x20; // more fragments
    f[24..26].copy_from_slice(&[0, 0]);
    let c = checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    let (act, _) = send(&mut n.a, POD3, &f, n.now);
    assert_eq!(act, Action::Drop(DropReason::ServiceFragment));
}

#[test]
fn traffic_no_service_concerns_is_unchanged_and_not_tracked() {
    for with_services in [false, true] {
        let mut n = node();
        if with_services {
            publish(&n, vec![cluster_ip(vec![ep("10.244.1.4:8080", true)])]);
        }
        let f = tcp(
            mac(3),
            ROUTER,
            "10.244.1.3:1234",
            "10.244.1.4:80",
            F::Syn,
            b"x",
        );
        let (act, out) = send(&mut n.a, POD3, &f, n.now);
        assert_eq!(act, Action::Output(POD4));
        // Routed: MACs and TTL change, nothing else.
        assert_eq!(&out[26..], &f[26..]);
        assert_eq!(out[14 + 8], f[14 + 8] - 1);
        let g = udp(mac(3), mac(4), "10.244.1.3:1", "10.244.1.4:2", b"bridged");
        let (act, out) = send(&mut n.b, POD3, &g, n.now);
        assert_eq!(act, Action::Output(POD4));
        assert_eq!(out, g);
        assert!(n.state.conntrack().is_empty());
        assert_eq!(
            n.a.counters().conntrack_new + n.a.counters().nat_translated,
            0
        );
    }
}

#[test]
fn snat_ports_exhausted_is_a_counted_drop() {
    let mut n = node();
    publish(&n, vec![cluster_ip(vec![ep("10.244.1.3:8080", true)])]);
    let ct = n.state.conntrack();
    let udp_seen = crate::core::service::conntrack::Seen::Udp;
    // Every source port a hairpin to this backend could get is in use.
    for p in 32768..61000 {
        let reply = key("10.244.1.3:8080", &format!("10.244.1.1:{p}"));
        let orig = key(&format!("10.244.1.9:{p}"), "10.96.0.11:80");
        ct.insert(orig, reply, 9, false, udp_seen, n.now).unwrap();
    }
    let syn = tcp(mac(3), ROUTER, "10.244.1.3:40000", VIP, F::Syn, b"");
    let (act, _) = send(&mut n.a, POD3, &syn, n.now);
    assert_eq!(act, Action::Drop(DropReason::SnatPortsExhausted));
    assert_eq!(n.a.counters().drops_for(DropReason::SnatPortsExhausted), 1);
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Random frames to and from Service addresses, cut anywhere, with
        /// random offload flags: no panic, every drop counted, and what is
        /// sent on keeps a valid IP header checksum.
        #[test]
        fn random_service_traffic_never_panics(
            frames in proptest::collection::vec(
                (0u8..6, any::<u16>(), any::<u8>(), 0usize..80, any::<bool>(), any::<bool>()),
                1..24,
            ),
        ) {
            let mut n = node_with(ConntrackConfig { max_entries: 8, ..ConntrackConfig::default() });
            publish(&n, vec![
                cluster_ip(vec![ep("10.244.1.4:8080", true), ep("10.244.1.3:8080", true), ep("10.244.2.7:8080", false)]),
                spec("default/np", Proto::Udp, &[("10.244.1.1:30053", Scope::External)], vec![ep("10.244.2.7:53", false)]),
            ]);
            for (kind, port, flags, cut, partial, second) in frames {
                let sport = format!("10.244.1.3:{}", port % 8 + 1000);
                let (in_port, mut f) = match kind {
                    0 => (POD3, tcp(mac(3), ROUTER, &sport, VIP, F::Syn, b"x")),
                    1 => (POD4, tcp(mac(4), mac(3), "10.244.1.4:8080", &sport, F::Ack, b"y")),
                    2 => (POD3, tcp(mac(3), ROUTER, "10.244.1.3:8080", &format!("10.244.1.1:{}", port % 8 + 1000), F::Fin, b"")),
                    3 => (HOST, udp(mac(2), ROUTER, &format!("192.168.1.9:{port}"), "10.244.1.1:30053", b"q")),
                    4 => (POD3, udp(mac(3), ROUTER, &sport, VIP, b"u")),
                    _ => (POD3, tcp(mac(3), ROUTER, &sport, VIP, F::Rst, b"")),
                };
                if f.len() > 47 {
                    f[47] = flags; // TCP flags (or a UDP payload byte)
                }
                let keep = f.len().saturating_sub(cut).max(14);
                f.truncate(keep);
                let mut b = buf(&f);
                if partial {
                    b.offload.flags = vnet::F_NEEDS_CSUM;
                }
                let sw = if second { &mut n.b } else { &mut n.a };
                let before: u64 = sw.counters().drops.iter().sum();
                let act = sw.process_port(in_port, &mut b, n.now);
                let after: u64 = sw.counters().drops.iter().sum();
                match act {
                    Action::Drop(_) => prop_assert_eq!(after, before + 1),
                    Action::Output(_) | Action::Flood { .. } => {
                        let d = b.data();
                        if d.len() >= 34 && d[12..14] == [8, 0] {
                            prop_assert_eq!(checksum::checksum(&d[14..34]), 0);
                        }
                    }
                    _ => {}
                }
                n.now += Duration::from_secs(u64::from(flags % 4));
                let _ = n.state.run(n.now);
            }
        }
    }
}

#[test]
fn udp_connections_to_a_removed_endpoint_are_flushed_tcp_ones_kept() {
    let mut n = node();
    let dns = |eps| {
        spec(
            "kube-system/dns:dns",
            Proto::Udp,
            &[("10.96.0.10:53", Scope::Internal)],
            eps,
        )
    };
    publish(
        &n,
        vec![
            dns(vec![ep("10.244.1.4:53", true)]),
            cluster_ip(vec![ep("10.244.1.4:8080", true)]),
        ],
    );
    let q = udp(mac(3), ROUTER, "10.244.1.3:33333", "10.96.0.10:53", b"q");
    assert_eq!(send(&mut n.a, POD3, &q, n.now).0, Action::Output(POD4));
    let syn = tcp(mac(3), ROUTER, "10.244.1.3:40000", VIP, F::Syn, b"");
    assert_eq!(send(&mut n.a, POD3, &syn, n.now).0, Action::Output(POD4));
    assert_eq!(n.state.conntrack().len(), 2);

    publish(
        &n,
        vec![
            dns(vec![ep("10.244.1.5:53", true)]),
            cluster_ip(vec![ep("10.244.1.5:8080", true)]),
        ],
    );
    assert_eq!(n.state.conntrack().len(), 1, "the UDP one is gone");
    assert_eq!(send(&mut n.a, POD3, &q, n.now).0, Action::Output(POD5));
    let ack = tcp(mac(3), ROUTER, "10.244.1.3:40000", VIP, F::Ack, b"");
    assert_eq!(send(&mut n.a, POD3, &ack, n.now).0, Action::Output(POD4));
}

/// A pod that used its node's NodePort: the host DNATed the packet back into
/// the switch (it arrives from the host port with the pod's own source), so
/// the reply must go back to the host port too (whose conntrack restores the
/// node's address), not straight to the pod.
#[test]
fn a_reply_to_a_connection_from_the_host_port_goes_back_there_even_to_a_pod() {
    let mut n = node();
    let mut local = spec(
        "default/np-local",
        Proto::Tcp,
        &[("10.244.1.1:30081", Scope::External)],
        vec![ep("10.244.1.4:8080", true)],
    );
    local.external_local = true;
    publish(&n, vec![local]);
    let syn = tcp(
        mac(2),
        ROUTER,
        "10.244.1.3:7000",
        "10.244.1.1:30081",
        F::Syn,
        b"",
    );
    let (act, out) = send(&mut n.a, HOST, &syn, n.now);
    assert_eq!(act, Action::Output(POD4));
    assert_eq!(check(&out), (sa("10.244.1.3:7000"), sa("10.244.1.4:8080")));
    let synack = tcp(
        mac(4),
        ROUTER,
        "10.244.1.4:8080",
        "10.244.1.3:7000",
        F::SynAck,
        b"",
    );
    let (act, out) = send(&mut n.b, POD4, &synack, n.now);
    assert_eq!(act, Action::Output(HOST), "not straight to the pod");
    assert_eq!(check(&out), (sa("10.244.1.1:30081"), sa("10.244.1.3:7000")));
    // The same pod's connection to a ClusterIP (from its own port) is
    // answered straight to it.
    publish(
        &n,
        vec![spec(
            "default/web",
            Proto::Tcp,
            &[(VIP, Scope::Internal)],
            vec![ep("10.244.1.4:8080", true)],
        )],
    );
    let syn = tcp(mac(3), ROUTER, "10.244.1.3:7001", VIP, F::Syn, b"");
    let (act, _) = send(&mut n.a, POD3, &syn, n.now);
    assert_eq!(act, Action::Output(POD4));
    let synack = tcp(
        mac(4),
        mac(3),
        "10.244.1.4:8080",
        "10.244.1.3:7001",
        F::SynAck,
        b"",
    );
    let (act, out) = send(&mut n.b, POD4, &synack, n.now);
    assert_eq!(act, Action::Output(POD3));
    assert_eq!(check(&out), (sa(VIP), sa("10.244.1.3:7001")));
}

#[path = "switch_policy_tests.rs"]
mod policy;

// ---- unfinished checksums from the tunnel (a kernel peer on a veth) ----

/// The frame with its L4 checksum left unfinished, as a Linux sender with
/// `CHECKSUM_PARTIAL` leaves it: the folded pseudo-header sum, not inverted.
fn unfinish(frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    let at = 34 + if f[23] == 6 { 16 } else { 6 };
    let addr = |i: usize| Ipv4Addr::new(f[i], f[i + 1], f[i + 2], f[i + 3]);
    let part = checksum::fold(checksum::pseudo_header(
        addr(26),
        addr(30),
        f[23],
        (f.len() - 34) as u16,
    ));
    f[at..at + 2].copy_from_slice(&part.to_be_bytes());
    f
}

/// Finishes the checksum the vnet header `h` asks for, as the pod's kernel
/// (or a NIC) would.
fn finish(frame: &[u8], h: vnet::Header) -> Vec<u8> {
    let mut out = frame.to_vec();
    let (s, o) = (usize::from(h.csum_start), usize::from(h.csum_offset));
    encap::gso::complete_checksum(&mut out, s, o).unwrap();
    out
}

fn from_tunnel_buf(sw: &mut Switch, inner: &[u8], now: Instant) -> (Action, PacketBuf) {
    let mut b = buf(&vxlan(inner));
    let a = sw.process_tunnel(SocketAddrV4::new(REMOTE_IP, 8472), &mut b, now);
    (a, b)
}

#[test]
fn unfinished_tcp_and_udp_checksums_from_the_tunnel_reach_the_pod_with_needs_csum() {
    let mut n = node();
    let payload = vec![0x3c; 1000];
    let frames = [
        (
            6,
            tcp(
                REMOTE_VTEP,
                ROUTER,
                "10.244.2.7:5201",
                "10.244.1.4:40000",
                F::Ack,
                &payload,
            ),
        ),
        (
            17,
            udp(
                REMOTE_VTEP,
                ROUTER,
                "10.244.2.7:5353",
                "10.244.1.4:33333",
                &payload,
            ),
        ),
    ];
    for (i, (proto, complete)) in frames.iter().enumerate() {
        let (act, b) = from_tunnel_buf(&mut n.a, &unfinish(complete), n.now);
        assert_eq!(act, Action::Output(POD4), "proto {proto}");
        let want = vnet::Header {
            flags: vnet::F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: if *proto == 6 { 16 } else { 6 },
            ..Default::default()
        };
        assert_eq!(b.offload, want, "proto {proto}");
        assert_eq!(n.a.counters().tunnel_csum_partial, i as u64 + 1);
        let out = finish(b.data(), b.offload);
        assert_eq!(
            check(&out).1,
            complete_dst(complete),
            "finished as the pod's kernel would, it is valid (proto {proto})"
        );
        assert_eq!(
            &out[34..],
            &complete[34..],
            "the sender's L4 bytes (proto {proto})"
        );
    }
    // Complete ones are left as they are and not counted.
    for (proto, complete) in &frames {
        let (act, b) = from_tunnel_buf(&mut n.a, complete, n.now);
        assert_eq!(act, Action::Output(POD4), "proto {proto}");
        assert!(b.offload.is_plain(), "proto {proto}");
        assert_eq!(&b.data()[34..], &complete[34..]);
    }
    assert_eq!(n.a.counters().tunnel_csum_partial, 2);
}

fn complete_dst(frame: &[u8]) -> SocketAddrV4 {
    check(frame).1
}

#[test]
fn service_nat_on_an_unfinished_checksum_from_the_tunnel_stays_correct() {
    // A client pod here, its Service's backend on the remote node: the
    // backend's replies come back through the tunnel, unfinished, and are
    // un-DNATed (source VIP) here.
    let mut n = node();
    publish(&n, vec![cluster_ip(vec![ep("10.244.2.7:8080", false)])]);
    let client = "10.244.1.3:40000";
    let syn = tcp(mac(3), ROUTER, client, VIP, F::Syn, b"");
    let (act, _) = send(&mut n.a, POD3, &syn, n.now);
    assert!(matches!(act, Action::Tunnel { .. }), "{act:?}");
    for (f, payload) in [(F::SynAck, &b""[..]), (F::Ack, &[0x77u8; 1200][..])] {
        let reply = tcp(REMOTE_VTEP, ROUTER, "10.244.2.7:8080", client, f, payload);
        let (act, b) = from_tunnel_buf(&mut n.b, &unfinish(&reply), n.now);
        assert_eq!(act, Action::Output(POD3));
        assert_eq!(b.offload.flags, vnet::F_NEEDS_CSUM);
        let out = finish(b.data(), b.offload);
        assert_eq!(
            check(&out),
            (sa(VIP), sa(client)),
            "translated and valid once finished"
        );
    }
    assert_eq!(n.b.counters().tunnel_csum_partial, 2);
    assert_eq!(n.b.counters().nat_translated, 2);
}

#[test]
fn an_unfinished_tcp_super_packet_from_the_tunnel_becomes_a_tso_frame() {
    // A kernel peer's underlay veth carries its TSO super-packets whole:
    // one datagram, larger than the pods' MTU, no segment size.
    let mut n = node();
    let payload = vec![0x42; 4000];
    let big = tcp(
        REMOTE_VTEP,
        ROUTER,
        "10.244.2.7:5201",
        "10.244.1.4:40000",
        F::Ack,
        &payload,
    );
    let (act, b) = from_tunnel_buf(&mut n.a, &unfinish(&big), n.now);
    assert_eq!(act, Action::Output(POD4));
    let want = vnet::Header {
        flags: vnet::F_NEEDS_CSUM,
        gso_type: vnet::GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1450 - 40,
        csum_start: 34,
        csum_offset: 16,
    };
    assert_eq!(b.offload, want);
    assert_eq!(&b.data()[54..], &payload[..], "the payload as sent");
    assert_eq!(n.a.counters().tunnel_csum_partial, 1);
    assert_eq!(n.a.counters().drops_for(DropReason::MtuFragNeeded), 0);

    // A complete one that large is not for the pods' MTU, as before; a UDP
    // one cannot be cut without the sender's sizes.
    let udp_big = udp(
        REMOTE_VTEP,
        ROUTER,
        "10.244.2.7:5353",
        "10.244.1.4:33333",
        &payload,
    );
    for f in [big, unfinish(&udp_big)] {
        let mut f = f;
        set_df(&mut f);
        let (act, _) = from_tunnel_buf(&mut n.a, &f, n.now);
        assert_ne!(act, Action::Output(POD4));
    }
    assert_eq!(n.a.counters().drops_for(DropReason::MtuFragNeeded), 2);
}
