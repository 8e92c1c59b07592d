//! Compiling NetworkPolicies for this node's pods: selectors, namespaces,
//! named ports, ipBlocks, policyTypes, from objects as kubectl prints them.

use super::*;
use control::objects::StoredObject;
use vswitch::core::policy::Verdict;

fn put(book: &mut PolicyBook, yaml: &str) {
    let m = k8s::parse_manifests(yaml).unwrap();
    assert!(!m.objects.is_empty(), "{yaml}");
    for o in m.objects {
        let key = o.key();
        book.apply(ObjectChange::Put {
            object: StoredObject {
                key,
                revision: 1,
                object: o.into_value(),
            },
        });
    }
}

fn pod(ns: &str, name: &str, labels: &str, ports: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {labels}\nspec:\n  containers:\n  - name: c\n    image: x\n    ports: {ports}\n---\n"
    )
}

fn ns(name: &str, labels: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels: {labels}\n---\n")
}

fn r(ns: &str, name: &str) -> PodRef {
    PodRef::new(ns, name).unwrap()
}

fn a(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

const XA: &str = "10.244.1.3";
const XB: &str = "10.244.1.4";
const YA: &str = "10.244.2.3";

/// x/a and x/b here, y/a on another node (published address).
fn cluster() -> (PolicyBook, Vec<(PodRef, Ipv4Addr)>) {
    let mut b = PolicyBook::new();
    let ports = "[{name: serve-80-tcp, containerPort: 80}, {name: dns, containerPort: 5353, protocol: UDP}]";
    put(&mut b, &pod("x", "a", "{pod: a}", ports));
    put(&mut b, &pod("x", "b", "{pod: b}", ports));
    put(
        &mut b,
        &pod(
            "y",
            "a",
            "{pod: a}",
            "[{name: serve-80-tcp, containerPort: 8080}]",
        ),
    );
    put(&mut b, &ns("x", "{ns: x}"));
    put(&mut b, &ns("y", "{ns: y, team: blue}"));
    put(
        &mut b,
        "apiVersion: networking.twill.dev/v1\nkind: PodAddress\nmetadata: {name: a, namespace: y}\nspec: {node: node-b, ip: 10.244.2.3}\n",
    );
    let local = vec![(r("x", "a"), a(XA)), (r("x", "b"), a(XB))];
    (b, local)
}

fn policy(ns: &str, name: &str, spec: &str) -> String {
    format!("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{spec}")
}

#[test]
fn no_policy_isolates_nothing() {
    let (b, local) = cluster();
    assert!(b.compile(&local).is_empty());
}

#[test]
fn an_empty_pod_selector_with_no_rules_denies_all_ingress_of_the_namespace() {
    let (mut b, local) = cluster();
    put(&mut b, &policy("x", "deny", "  podSelector: {}\n"));
    let t = b.compile(&local);
    assert_eq!(t.len(), 2);
    assert_eq!(
        t.verdict(a(YA), a(XA), TCP, 80, false),
        Verdict::DenyIngress
    );
    assert_eq!(
        t.verdict(a(XA), a(YA), TCP, 80, false),
        Verdict::Allow,
        "egress not isolated"
    );
}

#[test]
fn policy_types_default_to_egress_when_egress_rules_exist() {
    let (mut b, local) = cluster();
    put(
        &mut b,
        &policy("x", "eg", "  podSelector: {matchLabels: {pod: a}}\n  egress:\n  - to:\n    - podSelector: {matchLabels: {pod: b}}\n"),
    );
    let t = b.compile(&local);
    // Isolated both ways: ingress with no rule, egress to x/b only.
    assert_eq!(
        t.verdict(a(XB), a(XA), TCP, 80, false),
        Verdict::DenyIngress
    );
    assert_eq!(t.verdict(a(XA), a(XB), TCP, 80, false), Verdict::Allow);
    assert_eq!(t.verdict(a(XA), a(YA), TCP, 80, false), Verdict::DenyEgress);
}

#[test]
fn namespace_selector_and_pod_selector_in_one_peer_are_anded() {
    let (mut b, local) = cluster();
    let spec = "  podSelector: {matchLabels: {pod: b}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {team: blue}}\n      podSelector: {matchLabels: {pod: a}}\n";
    put(&mut b, &policy("x", "and", spec));
    let t = b.compile(&local);
    assert_eq!(t.verdict(a(YA), a(XB), TCP, 80, false), Verdict::Allow);
    assert_eq!(
        t.verdict(a(XA), a(XB), TCP, 80, false),
        Verdict::DenyIngress,
        "x is not blue"
    );
    // The default namespace label selects by name.
    let spec = "  podSelector: {matchLabels: {pod: b}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: x}}\n";
    put(&mut b, &policy("x", "and", spec));
    let t = b.compile(&local);
    assert_eq!(t.verdict(a(XA), a(XB), TCP, 80, false), Verdict::Allow);
    assert_eq!(
        t.verdict(a(YA), a(XB), TCP, 80, false),
        Verdict::DenyIngress
    );
}

#[test]
fn named_ports_resolve_against_the_destination_pod() {
    let (mut b, local) = cluster();
    // Ingress: x/b's own serve-80-tcp is 80.
    let spec = "  podSelector: {matchLabels: {pod: b}}\n  ingress:\n  - ports:\n    - port: serve-80-tcp\n";
    put(&mut b, &policy("x", "named-in", spec));
    // Egress of x/a: serve-80-tcp of each destination (y/a's is 8080).
    let spec = "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n  - ports:\n    - port: serve-80-tcp\n";
    put(&mut b, &policy("x", "named-out", spec));
    let t = b.compile(&local);
    assert_eq!(t.verdict(a(YA), a(XB), TCP, 80, false), Verdict::Allow);
    assert_eq!(
        t.verdict(a(YA), a(XB), TCP, 81, false),
        Verdict::DenyIngress
    );
    assert_eq!(t.verdict(a(XA), a(YA), TCP, 8080, false), Verdict::Allow);
    assert_eq!(t.verdict(a(XA), a(YA), TCP, 80, false), Verdict::DenyEgress);
    assert_eq!(t.verdict(a(XA), a(XB), TCP, 80, false), Verdict::Allow);
    // Not a pod: no named port there.
    assert_eq!(
        t.verdict(a(XA), a("192.0.2.1"), TCP, 80, false),
        Verdict::DenyEgress
    );
}

#[test]
fn end_port_and_ip_block_except() {
    let (mut b, local) = cluster();
    let spec = "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - ipBlock: {cidr: 10.244.2.0/24, except: [10.244.2.3/32]}\n    ports:\n    - {protocol: TCP, port: 32000, endPort: 32768}\n";
    put(&mut b, &policy("x", "range", spec));
    let t = b.compile(&local);
    assert_eq!(
        t.verdict(a(XA), a("10.244.2.9"), TCP, 32768, false),
        Verdict::Allow
    );
    assert_eq!(
        t.verdict(a(XA), a("10.244.2.9"), TCP, 32769, false),
        Verdict::DenyEgress
    );
    assert_eq!(
        t.verdict(a(XA), a("10.244.2.9"), UDP, 32000, false),
        Verdict::DenyEgress
    );
    assert_eq!(
        t.verdict(a(XA), a(YA), TCP, 32000, false),
        Verdict::DenyEgress,
        "except"
    );
}

#[test]
fn a_deleted_policy_no_longer_isolates() {
    let (mut b, local) = cluster();
    put(&mut b, &policy("x", "deny", "  podSelector: {}\n"));
    assert!(!b.compile(&local).is_empty());
    b.apply(ObjectChange::Deleted {
        key: ObjectKey {
            kind: Kind::NetworkPolicy,
            namespace: "x".into(),
            name: "deny".into(),
        },
    });
    assert!(b.compile(&local).is_empty());
}

#[test]
fn policies_of_other_namespaces_do_not_select() {
    let (mut b, local) = cluster();
    put(&mut b, &policy("y", "deny", "  podSelector: {}\n"));
    assert!(b.compile(&local).is_empty());
}

#[test]
fn a_stale_address_in_this_nodes_subnet_lends_no_identity() {
    let (mut b, local) = cluster();
    b.set_own_subnet("10.244.1.0/24".parse().unwrap());
    // z/old once had x/b's address (deleted while this node was down): its
    // PodAddress lingers in the store.
    put(
        &mut b,
        "apiVersion: networking.twill.dev/v1\nkind: PodAddress\nmetadata: {name: old, namespace: z}\nspec: {node: node-a, ip: 10.244.1.4}\n",
    );
    put(&mut b, &ns("z", "{ns: z}"));
    let spec = "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: z}}\n";
    put(&mut b, &policy("x", "from-z", spec));
    let t = b.compile(&local);
    assert_eq!(
        t.verdict(a(XB), a(XA), TCP, 80, false),
        Verdict::DenyIngress
    );
    // Another node's addresses are taken at their word.
    put(
        &mut b,
        "apiVersion: networking.twill.dev/v1\nkind: PodAddress\nmetadata: {name: new, namespace: z}\nspec: {node: node-b, ip: 10.244.2.9}\n",
    );
    let t = b.compile(&local);
    assert_eq!(
        t.verdict(a("10.244.2.9"), a(XA), TCP, 80, false),
        Verdict::Allow
    );
}
