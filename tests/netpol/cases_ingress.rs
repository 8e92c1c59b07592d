//! The netpol cases, part one: upstream's ingress cases of
//! kubernetes/test/e2e/network/netpol/network_policy.go — default deny,
//! pod and namespace selectors (matchLabels, matchExpressions, both in one
//! peer or in two), ports and named ports, and policies and labels updated
//! while in force — one function per `ginkgo.It`, named after its text, on
//! the full nine-pod model (upstream's expectations widened to the pods a
//! case does not mention). Part two is `cases_egress.rs`.
//!
//! Each case starts from the reset state (no policy, the model's labels)
//! and leaves whatever it applied to the suite's reset.

use anyhow::Result;

use super::harness::Netpol;
use super::model::Protocol::{self, Tcp, Udp};
use super::model::{Peer as P, Reachability};
use super::policy::{Peer, Policy, Port, Rule, Selector, NAMESPACE_NAME_LABEL};

/// Every pair reachable: what each expectation starts from.
pub fn all_reachable() -> Reachability {
    Reachability::new(true)
}

/// Pods labelled `pod: NAME`.
pub fn pod_sel(pod: &str) -> Selector {
    Selector::labels(&[("pod", pod)])
}

/// Namespaces labelled `ns: NAME`.
pub fn ns_sel(ns: &str) -> Selector {
    Selector::labels(&[("ns", ns)])
}

/// Namespaces by their automatic `kubernetes.io/metadata.name` label.
pub fn ns_name_sel(ns: &str) -> Selector {
    Selector::labels(&[(NAMESPACE_NAME_LABEL, ns)])
}

/// No policy: every pod reaches every pod on both ports and protocols.
/// twill's own: upstream checks this while it initializes the model
/// (`waitForHTTPServers`), before any case.
pub fn should_have_every_pod_reach_every_pod_without_policies(c: &mut Netpol) -> Result<()> {
    for (port, proto) in [(80, Tcp), (81, Tcp), (80, Udp), (81, Udp)] {
        c.validate(port, proto, &all_reachable())?;
    }
    Ok(())
}

/// "should support a 'default-deny-ingress' policy"
pub fn should_support_a_default_deny_ingress_policy(c: &mut Netpol) -> Result<()> {
    c.create_policy(&Policy::new("x", "deny-ingress", Selector::all()).ingress(vec![]))?;
    let mut r = all_reachable();
    r.expect_peer(P::any(), P::ns("x"), false);
    c.validate(80, Tcp, &r)
}

/// "should support a 'default-deny-all' policy"
pub fn should_support_a_default_deny_all_policy(c: &mut Netpol) -> Result<()> {
    let p = Policy::new("x", "deny-all", Selector::all())
        .ingress(vec![])
        .egress(vec![]);
    c.create_policy(&p)?;
    let mut r = all_reachable();
    r.expect_peer(P::any(), P::ns("x"), false)
        .expect_peer(P::ns("x"), P::any(), false);
    c.validate(80, Tcp, &r)
}

/// "should enforce policy to allow traffic from pods within server
/// namespace based on PodSelector"
pub fn should_enforce_policy_to_allow_traffic_from_pods_within_server_namespace_based_on_pod_selector(
    c: &mut Netpol,
) -> Result<()> {
    let p = Policy::new("x", "x-a-allows-x-b", pod_sel("a"))
        .ingress(vec![Rule::peers(vec![Peer::pods(pod_sel("b"))])]);
    c.create_policy(&p)?;
    let mut r = all_reachable();
    r.expect_all_ingress("x/a", false)
        .expect("x/b", "x/a", true);
    c.validate(80, Tcp, &r)
}

/// "should enforce policy to allow ingress traffic for a target"
pub fn should_enforce_policy_to_allow_ingress_traffic_for_a_target(c: &mut Netpol) -> Result<()> {
    c.create_policy(&Policy::new("x", "deny-all", Selector::all()).ingress(vec![]))?;
    let allow = Policy::new("x", "allow-all-to-a", pod_sel("a")).ingress(vec![Rule::peers(vec![
        Peer::pods_in(Selector::all(), Selector::all()),
    ])]);
    c.create_policy(&allow)?;
    let mut r = all_reachable();
    r.expect_peer(P::any(), P::ns("x"), false)
        .expect_all_ingress("x/a", true);
    c.validate(80, Tcp, &r)
}

/// "should enforce policy to allow ingress traffic from pods in all
/// namespaces"
pub fn should_enforce_policy_to_allow_ingress_traffic_from_pods_in_all_namespaces(
    c: &mut Netpol,
) -> Result<()> {
    let p =
        Policy::new("x", "allow-from-another-ns", pod_sel("a")).ingress(vec![Rule::peers(vec![
            Peer::namespaces(Selector::labels(&[])),
        ])]);
    c.create_policy(&p)?;
    c.validate(80, Tcp, &all_reachable())
}

/// "should enforce policy to allow traffic only from a different
/// namespace, based on NamespaceSelector"
pub fn should_enforce_policy_to_allow_traffic_only_from_a_different_namespace_based_on_namespace_selector(
    c: &mut Netpol,
) -> Result<()> {
    let p = Policy::new("x", "allow-client-a-via-ns-selector", pod_sel("a"))
        .ingress(vec![Rule::peers(vec![Peer::namespaces(ns_sel("y"))])]);
    c.create_policy(&p)?;
    let mut r = all_reachable();
    r.expect_peer(P::ns("x"), P::pod("x/a"), false)
        .expect_peer(P::ns("z"), P::pod("x/a"), false);
    c.validate(80, Tcp, &r)
}

/// "should enforce policy based on PodSelector with MatchExpressions"
pub fn should_enforce_policy_based_on_pod_selector_with_match_expressions(
    c: &mut Netpol,
) -> Result<()> {
    let p = Policy::new("x", "x-a-allows-x-b", pod_sel("a")).ingress(vec![Rule::peers(vec![
        Peer::pods(Selector::expr("pod", "In", &["b"])),
    ])]);
    c.create_policy(&p)?;
    let mut r = all_reachable();
    r.expect_all_ingress("x/a", false)
        .expect("x/b", "x/a", true);
    c.validate(80, Tcp, &r)
}

/// "should enforce policy based on NamespaceSelector with MatchExpressions"
pub fn should_enforce_policy_based_on_namespace_selector_with_match_expressions(
    c: &mut Netpol,
) -> Result<()> {
    let p = Policy::new("x", "allow-ns-y-match-selector", pod_sel("a")).ingress(vec![Rule::peers(
        vec![Peer::namespaces(Selector::expr("ns", "In", &["y"]))],
    )]);
    c.create_policy(&p)?;
    let mut r = all_reachable();
    r.expect_peer(P::ns("x"), P::pod("x/a"), false)
        .expect_peer(P::ns("z"), P::pod("x/a"), false);
    c.validate(80, Tcp, &r)
}

/// "should enforce policy based on PodSelector or NamespaceSelector"
pub fn should_enforce_policy_based_on_pod_selector_or_namespace_selector(
    c: &mut Netpol,
) -> Result<()> {
    let p = Policy::new("x", "allow-ns-y-match-selector", pod_sel("a")).ingress(vec![Rule::peers(
        vec![
            Peer::namespaces(Selector::expr("ns", "NotIn", &["x"])),
            Peer::pods(pod_sel("b")),
        ],
    )]);
    c.create_policy(&p)?;
    let mut r = all_reachable();
    r.expect("x/a", "x/a", false).expect("x/c", "x/a", false);
    c.validate(80, Tcp, &r)
}

/// "should enforce policy based on PodSelector and NamespaceSelector"
pub fn should_enforce_policy_based_on_pod_selector_and_namespace_selector(
    c: &mut Netpol,
) -> Result<()> {
    let p = Policy::new("x", "allow-ns-y-podselector-and-nsselector", pod_sel("a")).ingress(vec![
        Rule::peers(vec![Peer::pods_in(
            Selector::expr("ns", "NotIn", &["x"]),
            pod_sel("b"),
        )]),
    ]);
    c.create_policy(&p)?;
    let mut r = all_reachable();
    r.expect_all_ingress("x/a", false)
        .expect("y/b", "x/a", true)
        .expect("z/b", "x/a", true);
    c.validate(80, Tcp, &r)
}

/// "should enforce policy based on Multiple PodSelectors and
/// NamespaceSelectors"
pub fn should_enforce_policy_based_on_multiple_pod_selectors_and_namespace_selectors(
    c: &mut Netpol,
) -> Result<()> {
    let p =
        Policy::new("x", "allow-ns-y-z-pod-b-c", pod_sel("a")).ingress(vec![Rule::peers(vec![
            Peer::pods_in(
                Selector::expr("ns", "NotIn", &["x"]),
                Selector::expr("pod", "In", &["b", "c"]),
            ),
        ])]);
    c.create_policy(&p)?;
    let mut r = all_reachable();
    r.expect_all_ingress("x/a", false);
    for from in ["y/b", "y/c", "z/b", "z/c"] {
        r.expect(from, "x/a", true);
    }
    c.validate(80, Tcp, &r)
}

/// "should enforce policy based on any PodSelectors"
pub fn should_enforce_policy_based_on_any_pod_selectors(c: &mut Netpol) -> Result<()> {
    let p = Policy::new("x", "allow-ns-x-pod-b-c", pod_sel("a")).ingress(vec![Rule::peers(vec![
        Peer::pods(pod_sel("b")),
        Peer::pods(pod_sel("c")),
    ])]);
    c.create_policy(&p)?;
    let mut r = all_reachable();
    r.expect_all_ingress("x/a", false)
        .expect("x/b", "x/a", true)
        .expect("x/c", "x/a", true);
    c.validate(80, Tcp, &r)
}

/// "should enforce policy to allow traffic only from a pod in a different
/// namespace based on PodSelector and NamespaceSelector"
pub fn should_enforce_policy_to_allow_traffic_only_from_a_pod_in_a_different_namespace_based_on_pod_selector_and_namespace_selector(
    c: &mut Netpol,
) -> Result<()> {
    pod_in_other_namespace(c, 80, Tcp)
}

/// x/a open only to y/a (namespace and pod selector in one peer), on
/// `port`/`proto`; shared with the UDP variant.
pub fn pod_in_other_namespace(c: &mut Netpol, port: u16, proto: Protocol) -> Result<()> {
    let p = Policy::new(
        "x",
        "allow-ns-y-pod-a-via-namespace-pod-selector",
        pod_sel("a"),
    )
    .ingress(vec![Rule::peers(vec![Peer::pods_in(
        ns_name_sel("y"),
        pod_sel("a"),
    )])]);
    c.create_policy(&p)?;
    let mut r = all_reachable();
    r.expect_all_ingress("x/a", false)
        .expect("y/a", "x/a", true);
    c.validate(port, proto, &r)
}

/// "should enforce policy based on Ports" (81 allowed from y; 80, which the
/// policy does not name, denied to everyone)
pub fn should_enforce_policy_based_on_ports(c: &mut Netpol) -> Result<()> {
    let p = Policy::new("x", "allow-client-a-via-ns-selector", pod_sel("a"))
        .ingress(vec![Rule::peers(vec![Peer::namespaces(ns_name_sel("y"))])
            .ports(vec![Port::number(81, Tcp)])]);
    c.create_policy(&p)?;
    let mut r = all_reachable();
    r.expect_peer(P::ns("x"), P::pod("x/a"), false)
        .expect_peer(P::ns("y"), P::pod("x/a"), true)
        .expect_peer(P::ns("z"), P::pod("x/a"), false);
    c.validate(81, Tcp, &r)?;
    let mut r80 = all_reachable();
    r80.expect_all_ingress("x/a", false);
    c.validate(80, Tcp, &r80)
}

/// "should enforce multiple, stacked policies with overlapping
/// podSelectors"
pub fn should_enforce_multiple_stacked_policies_with_overlapping_pod_selectors(
    c: &mut Netpol,
) -> Result<()> {
    let from_y = || Rule::peers(vec![Peer::namespaces(ns_name_sel("y"))]);
    c.create_policy(
        &Policy::new("x", "allow-client-a-via-ns-selector", pod_sel("a"))
            .ingress(vec![from_y().ports(vec![Port::number(81, Tcp)])]),
    )?;
    let mut allow = all_reachable();
    allow
        .expect_peer(P::ns("x"), P::pod("x/a"), false)
        .expect_peer(P::ns("z"), P::pod("x/a"), false);
    c.validate(81, Tcp, &allow)?;
    let mut deny = all_reachable();
    deny.expect_all_ingress("x/a", false);
    c.validate(80, Tcp, &deny)?;
    c.create_policy(
        &Policy::new("x", "allow-client-a-via-ns-selector-80", pod_sel("a"))
            .ingress(vec![from_y().ports(vec![Port::number(80, Tcp)])]),
    )?;
    c.validate(80, Tcp, &allow)?;
    c.validate(81, Tcp, &allow)
}

/// "should support allow-all policy"
pub fn should_support_allow_all_policy(c: &mut Netpol) -> Result<()> {
    c.create_policy(&Policy::new("x", "allow-all", Selector::all()).ingress(vec![Rule::all()]))?;
    c.validate(80, Tcp, &all_reachable())?;
    c.validate(81, Tcp, &all_reachable())
}

/// "should allow ingress access on one named port"
pub fn should_allow_ingress_access_on_one_named_port(c: &mut Netpol) -> Result<()> {
    let p = Policy::new("x", "allow-all", Selector::all())
        .ingress(vec![Rule::on(vec![Port::named("serve-81-tcp")])]);
    c.create_policy(&p)?;
    c.validate(81, Tcp, &all_reachable())?;
    let mut r = all_reachable();
    r.expect_peer(P::any(), P::ns("x"), false);
    c.validate(80, Tcp, &r)
}

/// "should allow ingress access from namespace on one named port"
pub fn should_allow_ingress_access_from_namespace_on_one_named_port(c: &mut Netpol) -> Result<()> {
    let p = Policy::new("x", "allow-client-a-via-ns-selector-80", pod_sel("a"))
        .ingress(vec![Rule::peers(vec![Peer::namespaces(ns_name_sel("y"))])
            .ports(vec![Port::named_proto("serve-80-tcp", Tcp)])]);
    c.create_policy(&p)?;
    let mut r = all_reachable();
    r.expect_peer(P::ns("x"), P::pod("x/a"), false)
        .expect_peer(P::ns("z"), P::pod("x/a"), false);
    c.validate(80, Tcp, &r)?;
    let mut fail = all_reachable();
    fail.expect_all_ingress("x/a", false);
    c.validate(81, Tcp, &fail)
}

/// "should allow egress access on one named port" (the name resolves
/// against the destination pod's container ports)
pub fn should_allow_egress_access_on_one_named_port(c: &mut Netpol) -> Result<()> {
    let p = Policy::new("x", "allow-egress", Selector::all())
        .egress(vec![Rule::on(vec![Port::named("serve-80-tcp")])]);
    c.create_policy(&p)?;
    c.validate(80, Tcp, &all_reachable())?;
    let mut r = all_reachable();
    r.expect_peer(P::ns("x"), P::any(), false);
    c.validate(81, Tcp, &r)
}

/// "should enforce updated policy"
pub fn should_enforce_updated_policy(c: &mut Netpol) -> Result<()> {
    let mut p = Policy::new("x", "allow-all-mutate-to-deny-all", Selector::all())
        .ingress(vec![Rule::all()]);
    c.create_policy(&p)?;
    c.validate(81, Tcp, &all_reachable())?;
    p.ingress = Some(vec![]);
    c.update_policy(&p)?;
    let mut deny = all_reachable();
    deny.expect_peer(P::any(), P::ns("x"), false);
    c.validate(81, Tcp, &deny)
}

/// "should allow ingress access from updated namespace"
pub fn should_allow_ingress_access_from_updated_namespace(c: &mut Netpol) -> Result<()> {
    let p = Policy::new("x", "allow-client-a-via-ns-selector", pod_sel("a")).ingress(vec![
        Rule::peers(vec![Peer::namespaces(Selector::labels(&[(
            "ns2", "updated",
        )]))]),
    ]);
    c.create_policy(&p)?;
    let mut r = all_reachable();
    r.expect_all_ingress("x/a", false);
    c.validate(80, Tcp, &r)?;
    c.add_namespace_label("y", "ns2", "updated")?;
    let mut with_label = all_reachable();
    with_label
        .expect_all_ingress("x/a", false)
        .expect_peer(P::ns("y"), P::any(), true);
    c.validate(80, Tcp, &with_label)
}

/// "should allow ingress access from updated pod"
pub fn should_allow_ingress_access_from_updated_pod(c: &mut Netpol) -> Result<()> {
    let labels = [("pod", "b"), ("pod2", "updated")];
    let p = Policy::new("x", "allow-client-a-via-pod-selector", pod_sel("a")).ingress(vec![
        Rule::peers(vec![Peer::pods(Selector::labels(&labels))]),
    ]);
    c.create_policy(&p)?;
    let mut r = all_reachable();
    r.expect_all_ingress("x/a", false);
    c.validate(80, Tcp, &r)?;
    c.add_pod_labels("x/b", &labels)?;
    r.expect("x/b", "x/a", true);
    c.validate(80, Tcp, &r)
}

/// "should deny ingress from pods on other namespaces"
pub fn should_deny_ingress_from_pods_on_other_namespaces(c: &mut Netpol) -> Result<()> {
    let p = Policy::new("x", "deny-empty-policy", Selector::all())
        .ingress(vec![Rule::peers(vec![Peer::pods(Selector::labels(&[]))])]);
    c.create_policy(&p)?;
    let mut r = all_reachable();
    r.expect_peer(P::ns("y"), P::ns("x"), false)
        .expect_peer(P::ns("z"), P::ns("x"), false);
    c.validate(80, Tcp, &r)
}

/// "should deny ingress access to updated pod"
pub fn should_deny_ingress_access_to_updated_pod(c: &mut Netpol) -> Result<()> {
    let p = Policy::new(
        "x",
        "deny-ingress-via-label-selector",
        Selector::labels(&[("target", "isolated")]),
    )
    .ingress(vec![]);
    c.create_policy(&p)?;
    c.validate(80, Tcp, &all_reachable())?;
    c.add_pod_labels("x/a", &[("target", "isolated")])?;
    let mut r = all_reachable();
    r.expect_all_ingress("x/a", false);
    c.validate(80, Tcp, &r)
}
