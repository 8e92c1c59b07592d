//! The compiled policy form: port sets, peers, blocks, the verdict's
//! direction rules.

use super::*;

fn a(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn cidr(s: &str) -> Cidr {
    let (ip, len) = s.split_once('/').unwrap();
    Cidr::new(a(ip), len.parse().unwrap()).unwrap()
}

fn tcp(first: u16, last: u16) -> PortRange {
    PortRange {
        proto: TCP,
        first,
        last,
    }
}

#[test]
fn ports_merge_overlapping_and_adjacent_ranges_per_protocol() {
    let mut p = Ports::Some(vec![tcp(80, 80)]);
    p.extend(&Ports::Some(vec![
        tcp(81, 90),
        tcp(85, 100),
        PortRange::one(UDP, 53),
    ]));
    assert_eq!(p, Ports::Some(vec![tcp(80, 100), PortRange::one(UDP, 53)]));
    assert!(p.allows(TCP, 95) && p.allows(UDP, 53));
    assert!(!p.allows(UDP, 80) && !p.allows(TCP, 101) && !p.allows(1, 0));
    p.extend(&Ports::All);
    assert_eq!(p, Ports::All);
    assert!(p.allows(1, 0), "a rule without ports allows ICMP too");
}

#[test]
fn an_empty_rule_set_denies_everything() {
    let rs = RuleSet::deny_all();
    assert!(rs.is_deny_all());
    assert!(!rs.allows(a("10.0.0.1"), TCP, 80));
}

#[test]
fn rules_are_a_union_of_any_peers_and_blocks() {
    let mut rs = RuleSet::deny_all();
    rs.allow_peer(a("10.244.1.3"), &Ports::Some(vec![tcp(80, 80)]));
    rs.allow_peer(a("10.244.1.3"), &Ports::Some(vec![tcp(81, 81)]));
    rs.allow_block(
        cidr("10.244.2.0/24"),
        vec![cidr("10.244.2.128/25")],
        Ports::Some(vec![PortRange::all(UDP)]),
    );
    assert!(rs.allows(a("10.244.1.3"), TCP, 80));
    assert!(rs.allows(a("10.244.1.3"), TCP, 81));
    assert!(!rs.allows(a("10.244.1.3"), TCP, 82));
    assert!(!rs.allows(a("10.244.1.4"), TCP, 80));
    assert!(rs.allows(a("10.244.2.5"), UDP, 9999));
    assert!(!rs.allows(a("10.244.2.200"), UDP, 9999), "except");
    assert!(!rs.allows(a("10.244.2.5"), TCP, 80));
    rs.allow_any(&Ports::Some(vec![tcp(443, 443)]));
    assert!(rs.allows(a("192.0.2.1"), TCP, 443));
    assert!(!rs.allows(a("192.0.2.1"), TCP, 80));
}

fn table() -> PolicyTable {
    let mut t = PolicyTable::new();
    // .3: ingress only from .4 on TCP 80; egress not isolated.
    let mut ing = RuleSet::deny_all();
    ing.allow_peer(a("10.244.1.4"), &Ports::Some(vec![tcp(80, 80)]));
    t.insert(
        a("10.244.1.3"),
        PodPolicy {
            ingress: Some(ing),
            egress: None,
        },
    );
    // .4: egress denied everywhere; ingress not isolated.
    t.insert(
        a("10.244.1.4"),
        PodPolicy {
            ingress: None,
            egress: Some(RuleSet::deny_all()),
        },
    );
    t
}

#[test]
fn egress_is_judged_for_the_source_and_ingress_for_the_destination() {
    let t = table();
    let (p3, p4, other) = (a("10.244.1.3"), a("10.244.1.4"), a("10.244.2.9"));
    // .4 may not send anywhere, even where .3's ingress would allow it.
    assert_eq!(t.verdict(p4, p3, TCP, 80, false), Verdict::DenyEgress);
    // .3 accepts only .4 on 80.
    assert_eq!(t.verdict(other, p3, TCP, 80, false), Verdict::DenyIngress);
    // .3 may send anywhere, .4 accept anything.
    assert_eq!(t.verdict(p3, p4, TCP, 22, false), Verdict::Allow);
    assert_eq!(t.verdict(p3, other, UDP, 53, false), Verdict::Allow);
    // The node itself is always let in, never let out past egress rules.
    assert_eq!(t.verdict(other, p3, TCP, 22, true), Verdict::Allow);
    assert_eq!(t.verdict(p4, other, TCP, 22, true), Verdict::DenyEgress);
}

#[test]
fn concerns_only_isolated_local_pods() {
    let t = table();
    assert!(t.concerns(a("10.244.1.3"), a("10.244.2.9")));
    assert!(t.concerns(a("10.244.2.9"), a("10.244.1.4")));
    assert!(!t.concerns(a("10.244.1.5"), a("10.244.2.9")));
    assert!(!PolicyTable::new().concerns(a("10.244.1.3"), a("10.244.1.4")));
}

#[test]
fn a_pod_isolated_in_no_direction_is_not_kept() {
    let mut t = table();
    t.insert(a("10.244.1.3"), PodPolicy::default());
    assert_eq!(t.len(), 1);
    assert!(t.pod(a("10.244.1.3")).is_none());
}
