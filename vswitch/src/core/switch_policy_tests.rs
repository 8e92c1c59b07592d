//! NetworkPolicy through the switch: bridged and routed packets, replies
//! of allowed connections, verdicts judged again after a change, TCP
//! picked up mid-stream, ping, Service backends. Two workers over one node
//! state, as in the Service tests whose fixtures these reuse.

use super::*;
use crate::core::policy::{PodPolicy, PolicyTable, PortRange, Ports, RuleSet, TCP, UDP};

const P3: &str = "10.244.1.3";
const P4: &str = "10.244.1.4";
const P5: &str = "10.244.1.5";
const REMOTE_POD: &str = "10.244.2.7";

fn a(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn tcp_port(p: u16) -> Ports {
    Ports::Some(vec![PortRange::one(TCP, p)])
}

/// Publishes `pods` (address, ingress, egress) as the node's policy.
fn isolate(n: &Node, pods: Vec<(&str, Option<RuleSet>, Option<RuleSet>)>) {
    let mut t = PolicyTable::new();
    for (ip, ingress, egress) in pods {
        t.insert(a(ip), PodPolicy { ingress, egress });
    }
    n.state.set_policy(t);
}

fn allowing(peers: &[(&str, Ports)]) -> Option<RuleSet> {
    let mut rs = RuleSet::deny_all();
    for (ip, ports) in peers {
        rs.allow_peer(a(ip), ports);
    }
    Some(rs)
}

fn drops(n: &Node, r: DropReason) -> u64 {
    n.a.counters().drops_for(r) + n.b.counters().drops_for(r)
}

fn bridged(from: u8, to: u8, sport: u16, dport: u16, f: F) -> Vec<u8> {
    tcp(
        mac(from),
        mac(to),
        &format!("10.244.1.{from}:{sport}"),
        &format!("10.244.1.{to}:{dport}"),
        f,
        b"",
    )
}

#[test]
fn pods_no_policy_selects_are_not_tracked() {
    let mut n = node();
    isolate(&n, vec![(P5, allowing(&[]), None)]);
    let (act, _) = send(&mut n.a, POD3, &bridged(3, 4, 1000, 80, F::Syn), n.now);
    assert_eq!(act, Action::Output(POD4));
    let (act, _) = send(&mut n.b, POD4, &bridged(4, 3, 80, 1000, F::SynAck), n.now);
    assert_eq!(act, Action::Output(POD3));
    assert!(n.state.conntrack().is_empty());
    assert_eq!(n.a.counters().policy_judged, 0);
}

#[test]
fn default_deny_ingress_drops_new_connections_but_not_replies() {
    let mut n = node();
    isolate(&n, vec![(P4, allowing(&[]), None)]);
    // Into .4: bridged from .3, routed from another node.
    let (act, _) = send(&mut n.a, POD3, &bridged(3, 4, 1000, 80, F::Syn), n.now);
    assert_eq!(act, Action::Drop(DropReason::PolicyIngress));
    let inner = udp(
        REMOTE_VTEP,
        ROUTER,
        &format!("{REMOTE_POD}:5000"),
        &format!("{P4}:53"),
        b"q",
    );
    let (act, _) = from_tunnel(&mut n.b, &inner, n.now);
    assert_eq!(act, Action::Drop(DropReason::PolicyIngress));
    assert_eq!(drops(&n, DropReason::PolicyIngress), 2);
    // Out of .4 (egress is not isolated): its connection and the replies.
    let (act, _) = send(&mut n.a, POD4, &bridged(4, 3, 2000, 80, F::Syn), n.now);
    assert_eq!(act, Action::Output(POD3));
    let (act, _) = send(&mut n.b, POD3, &bridged(3, 4, 80, 2000, F::SynAck), n.now);
    assert_eq!(
        act,
        Action::Output(POD4),
        "the reply of an allowed connection"
    );
    let out = udp(
        mac(4),
        ROUTER,
        &format!("{P4}:6000"),
        &format!("{REMOTE_POD}:53"),
        b"q",
    );
    let (act, _) = send(&mut n.a, POD4, &out, n.now);
    assert!(matches!(act, Action::Tunnel { .. }), "{act:?}");
    let back = udp(
        REMOTE_VTEP,
        ROUTER,
        &format!("{REMOTE_POD}:53"),
        &format!("{P4}:6000"),
        b"r",
    );
    let (act, _) = from_tunnel(&mut n.b, &back, n.now);
    assert_eq!(act, Action::Output(POD4));
    assert_eq!(n.state.conntrack().len(), 2);
}

#[test]
fn an_ingress_rule_allows_its_peer_on_its_port_only() {
    let mut n = node();
    isolate(&n, vec![(P4, allowing(&[(P3, tcp_port(80))]), None)]);
    let (act, _) = send(&mut n.a, POD3, &bridged(3, 4, 1000, 80, F::Syn), n.now);
    assert_eq!(act, Action::Output(POD4));
    let (act, _) = send(&mut n.a, POD3, &bridged(3, 4, 1001, 81, F::Syn), n.now);
    assert_eq!(act, Action::Drop(DropReason::PolicyIngress));
    let (act, _) = send(&mut n.a, POD5, &bridged(5, 4, 1000, 80, F::Syn), n.now);
    assert_eq!(act, Action::Drop(DropReason::PolicyIngress));
    // UDP to port 80 is another protocol.
    let u = udp(
        mac(3),
        mac(4),
        &format!("{P3}:1000"),
        &format!("{P4}:80"),
        b"x",
    );
    let (act, _) = send(&mut n.a, POD3, &u, n.now);
    assert_eq!(act, Action::Drop(DropReason::PolicyIngress));
}

#[test]
fn egress_is_judged_at_the_source_with_ip_blocks_and_except() {
    let mut n = node();
    let mut rs = RuleSet::deny_all();
    rs.allow_block(
        Cidr::new(a("10.244.2.0"), 24).unwrap(),
        vec![Cidr::new(a("10.244.2.9"), 32).unwrap()],
        Ports::Some(vec![PortRange::one(UDP, 53)]),
    );
    isolate(&n, vec![(P3, None, Some(rs))]);
    let q = |dst: &str, port: u16| {
        udp(
            mac(3),
            ROUTER,
            &format!("{P3}:5000"),
            &format!("{dst}:{port}"),
            b"q",
        )
    };
    let (act, _) = send(&mut n.a, POD3, &q(REMOTE_POD, 53), n.now);
    assert!(matches!(act, Action::Tunnel { .. }), "{act:?}");
    let (act, _) = send(&mut n.a, POD3, &q("10.244.2.9", 53), n.now);
    assert_eq!(act, Action::Drop(DropReason::PolicyEgress));
    let (act, _) = send(&mut n.a, POD3, &q(REMOTE_POD, 54), n.now);
    assert_eq!(act, Action::Drop(DropReason::PolicyEgress));
    // To the host port (bridged), outside the block.
    let h = udp(mac(3), mac(2), &format!("{P3}:5000"), "10.244.1.2:53", b"q");
    let (act, _) = send(&mut n.a, POD3, &h, n.now);
    assert_eq!(act, Action::Drop(DropReason::PolicyEgress));
}

#[test]
fn the_pods_own_node_is_always_let_in() {
    let mut n = node();
    isolate(&n, vec![(P4, allowing(&[]), None)]);
    // The host, through the host port with its address.
    let h = tcp(
        mac(2),
        mac(4),
        "10.244.1.2:40000",
        &format!("{P4}:8080"),
        F::Syn,
        b"",
    );
    let (act, _) = send(&mut n.a, HOST, &h, n.now);
    assert_eq!(act, Action::Output(POD4));
    // Another address behind the host port (an outside client) is not.
    let o = tcp(
        mac(2),
        mac(4),
        "192.0.2.1:40000",
        &format!("{P4}:8080"),
        F::Syn,
        b"",
    );
    let (act, _) = send(&mut n.a, HOST, &o, n.now);
    assert_eq!(act, Action::Drop(DropReason::PolicyIngress));
}

#[test]
fn a_policy_change_judges_established_connections_again() {
    let mut n = node();
    isolate(&n, vec![(P4, allowing(&[(P3, tcp_port(80))]), None)]);
    let (act, _) = send(&mut n.a, POD3, &bridged(3, 4, 1000, 80, F::Syn), n.now);
    assert_eq!(act, Action::Output(POD4));
    let (act, _) = send(&mut n.b, POD4, &bridged(4, 3, 80, 1000, F::SynAck), n.now);
    assert_eq!(act, Action::Output(POD3));
    // A policy that still allows it: the connection goes on.
    isolate(&n, vec![(P4, allowing(&[(P3, Ports::All)]), None)]);
    let (act, _) = send(&mut n.a, POD3, &bridged(3, 4, 1000, 80, F::Ack), n.now);
    assert_eq!(act, Action::Output(POD4));
    assert_eq!(n.a.counters().policy_rejudged, 1);
    // One that no longer does: both directions are cut, judged once.
    isolate(&n, vec![(P4, allowing(&[(P5, Ports::All)]), None)]);
    let (act, _) = send(&mut n.b, POD4, &bridged(4, 3, 80, 1000, F::Ack), n.now);
    assert_eq!(act, Action::Drop(DropReason::PolicyIngress));
    let (act, _) = send(&mut n.a, POD3, &bridged(3, 4, 1000, 80, F::Ack), n.now);
    assert_eq!(act, Action::Drop(DropReason::PolicyIngress));
    assert_eq!(
        n.a.counters().policy_rejudged + n.b.counters().policy_rejudged,
        2
    );
    // Allowed again: it resumes.
    isolate(&n, vec![]);
    let (act, _) = send(&mut n.a, POD3, &bridged(3, 4, 1000, 80, F::Ack), n.now);
    assert_eq!(act, Action::Output(POD4));
}

#[test]
fn tcp_picked_up_mid_stream_passes_if_either_end_may_open_it() {
    let mut n = node();
    // .4 accepts nothing but may connect out; the connection .4 → .3:80
    // began before the policy existed, and .3 speaks first after it.
    isolate(&n, vec![(P4, allowing(&[]), None)]);
    let (act, _) = send(&mut n.a, POD3, &bridged(3, 4, 80, 2000, F::Ack), n.now);
    assert_eq!(act, Action::Output(POD4));
    let c = n
        .state
        .conntrack()
        .get(&key(&format!("{P4}:2000"), &format!("{P3}:80")));
    assert!(c.is_some(), "tracked in the direction .4 opened it");
    // A new connection into .4 still is not allowed.
    let (act, _) = send(&mut n.a, POD3, &bridged(3, 4, 1000, 2000, F::Syn), n.now);
    assert_eq!(act, Action::Drop(DropReason::PolicyIngress));
    // Nor is a mid-stream segment neither end may open.
    isolate(&n, vec![(P4, allowing(&[]), allowing(&[]))]);
    let (act, _) = send(&mut n.a, POD3, &bridged(3, 4, 81, 2001, F::Ack), n.now);
    assert_eq!(act, Action::Drop(DropReason::PolicyIngress));
}

fn echo(from: u8, to: u8, reply: bool) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(mac(from).0, mac(to).0).ipv4(
        [10, 244, 1, from],
        [10, 244, 1, to],
        64,
    );
    let b = if reply {
        b.icmpv4_echo_reply(7, 1)
    } else {
        b.icmpv4_echo_request(7, 1)
    };
    let mut v = Vec::new();
    b.write(&mut v, b"ping").unwrap();
    v
}

#[test]
fn the_reply_of_an_allowed_ping_passes() {
    let mut n = node();
    // .3 isolated both ways; it may reach .4 with anything (no ports).
    isolate(&n, vec![(P3, allowing(&[]), allowing(&[(P4, Ports::All)]))]);
    let (act, _) = send(&mut n.a, POD3, &echo(3, 4, false), n.now);
    assert_eq!(act, Action::Output(POD4));
    let (act, _) = send(&mut n.b, POD4, &echo(4, 3, true), n.now);
    assert_eq!(act, Action::Output(POD3));
    // .4 may not ping .3.
    let mut req = echo(4, 3, false);
    req[14 + 20 + 4] = 9; // another identifier
    let (act, _) = send(&mut n.b, POD4, &fix_icmp(req), n.now);
    assert_eq!(act, Action::Drop(DropReason::PolicyIngress));
    // A rule with ports does not allow ICMP.
    isolate(&n, vec![(P3, None, allowing(&[(P4, tcp_port(80))]))]);
    let mut req = echo(3, 4, false);
    req[14 + 20 + 4] = 10;
    let (act, _) = send(&mut n.a, POD3, &fix_icmp(req), n.now);
    assert_eq!(act, Action::Drop(DropReason::PolicyEgress));
}

/// Recomputes the ICMP checksum after an edit.
fn fix_icmp(mut f: Vec<u8>) -> Vec<u8> {
    let at = 14 + 20;
    f[at + 2] = 0;
    f[at + 3] = 0;
    let c = checksum::checksum(&f[at..]);
    f[at + 2..at + 4].copy_from_slice(&c.to_be_bytes());
    f
}

#[test]
fn policy_applies_to_the_backend_after_service_translation() {
    let mut n = node();
    publish(&n, vec![cluster_ip(vec![ep("10.244.1.4:8080", true)])]);
    // The backend .4 accepts .3 on 8080 (the target port, not the
    // Service's 80), nobody else.
    isolate(&n, vec![(P4, allowing(&[(P3, tcp_port(8080))]), None)]);
    let syn = |from: u8, port: u16| {
        tcp(
            mac(from),
            ROUTER,
            &format!("10.244.1.{from}:{port}"),
            VIP,
            F::Syn,
            b"",
        )
    };
    let (act, bytes) = send(&mut n.a, POD3, &syn(3, 1000), n.now);
    assert_eq!(act, Action::Output(POD4));
    assert_eq!(check(&bytes).1, sa("10.244.1.4:8080"));
    let (act, _) = send(&mut n.a, POD5, &syn(5, 1000), n.now);
    assert_eq!(act, Action::Drop(DropReason::PolicyIngress));
    // The backend's reply is translated back and passes.
    let r = tcp(
        mac(4),
        mac(3),
        "10.244.1.4:8080",
        &format!("{P3}:1000"),
        F::SynAck,
        b"",
    );
    let (act, bytes) = send(&mut n.b, POD4, &r, n.now);
    assert_eq!(act, Action::Output(POD3));
    assert_eq!(check(&bytes).0, sa(VIP));
    // An egress policy of the client judges the backend too.
    isolate(&n, vec![(P5, None, allowing(&[(P3, Ports::All)]))]);
    let (act, _) = send(&mut n.a, POD5, &syn(5, 1001), n.now);
    assert_eq!(act, Action::Drop(DropReason::PolicyEgress));
    // And a change cuts the Service connection already open.
    isolate(&n, vec![(P4, allowing(&[]), None)]);
    let (act, _) = send(&mut n.b, POD4, &r, n.now);
    assert_eq!(act, Action::Drop(DropReason::PolicyIngress));
}

#[test]
fn a_remote_peer_is_judged_by_its_address_at_the_destination_node() {
    let mut n = node();
    isolate(&n, vec![(P4, allowing(&[(REMOTE_POD, Ports::All)]), None)]);
    let from = |src: &str| {
        udp(
            REMOTE_VTEP,
            ROUTER,
            &format!("{src}:5000"),
            &format!("{P4}:53"),
            b"q",
        )
    };
    let (act, _) = from_tunnel(&mut n.a, &from(REMOTE_POD), n.now);
    assert_eq!(act, Action::Output(POD4));
    let (act, _) = from_tunnel(&mut n.a, &from("10.244.2.8"), n.now);
    assert_eq!(act, Action::Drop(DropReason::PolicyIngress));
}
