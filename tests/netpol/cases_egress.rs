//! The netpol cases, part two: upstream's egress, ipBlock, protocol and
//! deletion cases, its UDP variants (`udp_…`: the "using UDP" context), and
//! twill's own cases in the same style where upstream has none (endPort,
//! Services, established connections; their docs say so).
//!
//! Each case starts from the reset state (no policy, the model's labels)
//! and leaves whatever it applied to the suite's reset.

use std::net::{Ipv4Addr, SocketAddrV4};

use anyhow::{ensure, Result};
use ipnet::Ipv4Net;

use super::cases_ingress::{all_reachable, ns_name_sel, pod_in_other_namespace, pod_sel};
use super::harness::Netpol;
use super::model::Peer as P;
use super::model::Protocol::{Tcp, Udp};
use super::policy::{
    endpoint_slice_object, service_object, Peer, Policy, Port, Rule, Selector, NAMESPACE_NAME_LABEL,
};
use super::probe::Established;

/// Whether a TCP connection twill tracks is cut once a policy change denies
/// it (the connection the new policy still allows goes on either way). What
/// the README documents; flip it here if that changes.
pub const ESTABLISHED_CONNECTIONS_FOLLOW_POLICY: bool = true;

/// "should deny egress from pods based on PodSelector"
pub fn should_deny_egress_from_pods_based_on_pod_selector(c: &mut Netpol) -> Result<()> {
    c.create_policy(&Policy::new("x", "deny-egress-pod-a", pod_sel("a")).egress(vec![]))?;
    let mut r = all_reachable();
    r.expect_all_egress("x/a", false);
    c.validate(80, Tcp, &r)
}

/// "should deny egress from all pods in a namespace"
pub fn should_deny_egress_from_all_pods_in_a_namespace(c: &mut Netpol) -> Result<()> {
    c.create_policy(&Policy::new("x", "deny-egress-ns-x", Selector::all()).egress(vec![]))?;
    let mut r = all_reachable();
    r.expect_peer(P::ns("x"), P::any(), false);
    c.validate(80, Tcp, &r)
}

/// "should work with Ingress, Egress specified together"
pub fn should_work_with_ingress_egress_specified_together(c: &mut Netpol) -> Result<()> {
    let p = Policy::new("x", "allow-client-a-via-pod-selector", pod_sel("a"))
        .ingress(vec![Rule::peers(vec![Peer::pods(pod_sel("b"))])])
        .egress(vec![Rule::on(vec![Port::number_any(80)])]);
    c.create_policy(&p)?;
    let mut r80 = all_reachable();
    r80.expect_all_ingress("x/a", false)
        .expect("x/b", "x/a", true);
    c.validate(80, Tcp, &r80)?;
    let mut r81 = all_reachable();
    r81.expect_all_ingress("x/a", false)
        .expect_all_egress("x/a", false)
        .expect("x/b", "x/a", true);
    c.validate(81, Tcp, &r81)
}

/// "should support denying of egress traffic on the client side (even if
/// the server explicitly allows this traffic)"
pub fn should_support_denying_of_egress_traffic_on_the_client_side_even_if_the_server_explicitly_allows_this_traffic(
    c: &mut Netpol,
) -> Result<()> {
    c.create_policy(
        &Policy::new("x", "allow-to-ns-y-pod-a", pod_sel("a")).egress(vec![Rule::peers(vec![
            Peer::pods_in(ns_name_sel("y"), pod_sel("a")),
        ])]),
    )?;
    let from_x_a = || Rule::peers(vec![Peer::pods_in(ns_name_sel("x"), pod_sel("a"))]);
    c.create_policy(
        &Policy::new("y", "allow-from-xa-on-ya-match-selector", pod_sel("a"))
            .ingress(vec![from_x_a()]),
    )?;
    c.create_policy(
        &Policy::new("y", "allow-from-xa-on-yb-match-selector", pod_sel("b"))
            .ingress(vec![from_x_a()]),
    )?;
    let mut r = all_reachable();
    r.expect_peer(P::pod("x/a"), P::any(), false)
        .expect_peer(P::any(), P::pod("y/a"), false)
        .expect("x/a", "y/a", true)
        .expect_peer(P::any(), P::pod("y/b"), false);
    c.validate(80, Tcp, &r)
}

/// "should enforce egress policy allowing traffic to a server in a
/// different namespace based on PodSelector and NamespaceSelector"
pub fn should_enforce_egress_policy_allowing_traffic_to_a_server_in_a_different_namespace_based_on_pod_selector_and_namespace_selector(
    c: &mut Netpol,
) -> Result<()> {
    let p = Policy::new("x", "allow-to-ns-y-pod-a", pod_sel("a")).egress(vec![Rule::peers(vec![
        Peer::pods_in(ns_name_sel("y"), pod_sel("a")),
    ])]);
    c.create_policy(&p)?;
    let mut r = all_reachable();
    r.expect_all_egress("x/a", false).expect("x/a", "y/a", true);
    c.validate(80, Tcp, &r)
}

/// "should enforce ingress policy allowing any port traffic to a server on
/// a specific protocol"
pub fn should_enforce_ingress_policy_allowing_any_port_traffic_to_a_server_on_a_specific_protocol(
    c: &mut Netpol,
) -> Result<()> {
    let p = Policy::new("x", "allow-ingress-by-proto", pod_sel("a"))
        .ingress(vec![Rule::on(vec![Port::protocol("TCP")])]);
    c.create_policy(&p)?;
    c.validate(80, Tcp, &all_reachable())?;
    let mut udp = all_reachable();
    udp.expect_peer(P::any(), P::pod("x/a"), false);
    c.validate(80, Udp, &udp)
}

/// "should enforce multiple ingress policies with ingress allow-all policy
/// taking precedence"
pub fn should_enforce_multiple_ingress_policies_with_ingress_allow_all_policy_taking_precedence(
    c: &mut Netpol,
) -> Result<()> {
    c.create_policy(
        &Policy::new("x", "allow-ingress-port-80", Selector::all())
            .ingress(vec![Rule::on(vec![Port::number_any(80)])]),
    )?;
    let mut r = all_reachable();
    r.expect_peer(P::any(), P::ns("x"), false);
    c.validate(81, Tcp, &r)?;
    c.create_policy(
        &Policy::new("x", "allow-ingress", Selector::all()).ingress(vec![Rule::all()]),
    )?;
    c.validate(81, Tcp, &all_reachable())
}

/// "should enforce multiple egress policies with egress allow-all policy
/// taking precedence"
pub fn should_enforce_multiple_egress_policies_with_egress_allow_all_policy_taking_precedence(
    c: &mut Netpol,
) -> Result<()> {
    c.create_policy(
        &Policy::new("x", "allow-egress-port-80", Selector::all())
            .egress(vec![Rule::on(vec![Port::number_any(80)])]),
    )?;
    let mut r = all_reachable();
    r.expect_peer(P::ns("x"), P::any(), false);
    c.validate(81, Tcp, &r)?;
    c.create_policy(&Policy::new("x", "allow-egress", Selector::all()).egress(vec![Rule::all()]))?;
    c.validate(81, Tcp, &all_reachable())
}

/// "should stop enforcing policies after they are deleted"
pub fn should_stop_enforcing_policies_after_they_are_deleted(c: &mut Netpol) -> Result<()> {
    let p = Policy::new("x", "deny-all", Selector::all())
        .ingress(vec![])
        .egress(vec![]);
    c.create_policy(&p)?;
    let mut r = all_reachable();
    r.expect_peer(P::ns("x"), P::any(), false)
        .expect_peer(P::any(), P::ns("x"), false);
    c.validate(80, Tcp, &r)?;
    c.delete_policies()?;
    c.validate(80, Tcp, &all_reachable())
}

fn host_cidr(ip: Ipv4Addr) -> String {
    format!("{ip}/32")
}

/// Upstream's `makeLargeCIDRForIP`: the /4 holding `ip`.
fn large_cidr(ip: Ipv4Addr) -> String {
    Ipv4Net::new(ip, 4)
        .map(|n| n.trunc())
        .unwrap_or_default()
        .to_string()
}

/// "should allow egress access to server in CIDR block"
pub fn should_allow_egress_access_to_server_in_cidr_block(c: &mut Netpol) -> Result<()> {
    let cidr = host_cidr(c.ip("y/b"));
    let p = Policy::new("x", "allow-client-a-via-cidr-egress-rule", pod_sel("a"))
        .egress(vec![Rule::peers(vec![Peer::ip_block(&cidr, &[])])]);
    c.create_policy(&p)?;
    let mut r = all_reachable();
    r.expect_all_egress("x/a", false).expect("x/a", "y/b", true);
    c.validate(80, Tcp, &r)
}

fn except_x_b(c: &mut Netpol) -> Result<()> {
    let (large, b) = (large_cidr(c.ip("x/b")), host_cidr(c.ip("x/b")));
    let p = Policy::new("x", "allow-client-a-via-cidr-egress-rule", pod_sel("a"))
        .egress(vec![Rule::peers(vec![Peer::ip_block(&large, &[&b])])]);
    c.create_policy(&p)?;
    let mut r = all_reachable();
    r.expect("x/a", "x/b", false);
    c.validate(80, Tcp, &r)
}

/// "should enforce except clause while egress access to server in CIDR
/// block"
pub fn should_enforce_except_clause_while_egress_access_to_server_in_cidr_block(
    c: &mut Netpol,
) -> Result<()> {
    except_x_b(c)
}

/// "should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is
/// allowed"
pub fn should_ensure_an_ip_overlapping_both_ip_block_cidr_and_ip_block_except_is_allowed(
    c: &mut Netpol,
) -> Result<()> {
    except_x_b(c)?;
    let b = host_cidr(c.ip("x/b"));
    let p = Policy::new("x", "allow-client-a-via-cidr-egress-rule", pod_sel("a"))
        .egress(vec![Rule::peers(vec![Peer::ip_block(&b, &[])])]);
    c.update_policy(&p)?;
    let mut r = all_reachable();
    r.expect_all_egress("x/a", false).expect("x/a", "x/b", true);
    c.validate(80, Tcp, &r)
}

/// "should enforce policies to check ingress and egress policies can be
/// controlled independently based on PodSelector"
pub fn should_enforce_policies_to_check_ingress_and_egress_policies_can_be_controlled_independently_based_on_pod_selector(
    c: &mut Netpol,
) -> Result<()> {
    c.create_policy(
        &Policy::new("x", "allow-egress-for-target", pod_sel("a")).egress(vec![Rule::all()]),
    )?;
    c.validate(80, Tcp, &all_reachable())?;
    c.create_policy(
        &Policy::new("x", "deny-ingress-via-label-selector", pod_sel("a")).ingress(vec![]),
    )?;
    let mut r = all_reachable();
    r.expect_all_ingress("x/a", false);
    c.validate(80, Tcp, &r)
}

/// "should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even
/// if the plugin doesn't support SCTP". twill carries TCP and UDP only and
/// refuses a policy naming SCTP when it is stored (the choice), so
/// the upstream expectation becomes: the refusal names SCTP, nothing of
/// the policy takes effect, and the other policy still does.
pub fn should_not_mistakenly_treat_protocol_sctp_as_protocol_tcp_even_if_the_plugin_doesnt_support_sctp(
    c: &mut Netpol,
) -> Result<()> {
    c.create_policy(&Policy::new("x", "deny-ingress", Selector::all()).ingress(vec![]))?;
    let sctp = Policy::new("x", "allow-only-sctp-ingress-on-port-81", pod_sel("a"))
        .ingress(vec![Rule::on(vec![Port::number_raw(81, "SCTP")])]);
    expect_sctp_refused(c, &sctp)?;
    let mut r = all_reachable();
    r.expect_peer(P::any(), P::ns("x"), false);
    c.validate(81, Tcp, &r)
}

/// "should properly isolate pods that are selected by a policy allowing
/// SCTP, even if the plugin doesn't support SCTP": refused at the door (see
/// above), so x/a stays as it was: reachable.
pub fn should_properly_isolate_pods_that_are_selected_by_a_policy_allowing_sctp_even_if_the_plugin_doesnt_support_sctp(
    c: &mut Netpol,
) -> Result<()> {
    let sctp = Policy::new("x", "allow-only-sctp-ingress-on-port-80", pod_sel("a"))
        .ingress(vec![Rule::on(vec![Port::number_raw(80, "SCTP")])]);
    expect_sctp_refused(c, &sctp)?;
    c.validate(81, Tcp, &all_reachable())
}

/// `twill apply` of `p` fails, naming SCTP.
fn expect_sctp_refused(c: &mut Netpol, p: &Policy) -> Result<()> {
    match c.create_policy(p) {
        Ok(()) => anyhow::bail!("a policy with SCTP was stored"),
        Err(e) => {
            let msg = format!("{e:#}");
            ensure!(msg.contains("SCTP"), "refused, but not for SCTP: {msg}");
            Ok(())
        }
    }
}

/// "should not allow access by TCP when a policy specifies only UDP" (and,
/// beyond upstream, that the UDP it names does get through)
pub fn should_not_allow_access_by_tcp_when_a_policy_specifies_only_udp(
    c: &mut Netpol,
) -> Result<()> {
    c.create_policy(
        &Policy::new("x", "allow-only-udp-ingress-on-port-81", pod_sel("a"))
            .ingress(vec![Rule::on(vec![Port::number(81, Udp)])]),
    )?;
    let mut r = all_reachable();
    r.expect_all_ingress("x/a", false);
    c.validate(81, Tcp, &r)?;
    c.validate(81, Udp, &all_reachable())
}

/// "should enforce policy to allow traffic based on NamespaceSelector with
/// MatchLabels using default ns label"
pub fn should_enforce_policy_to_allow_traffic_based_on_namespace_selector_with_match_labels_using_default_ns_label(
    c: &mut Netpol,
) -> Result<()> {
    let p = Policy::new(
        "x",
        "allow-client-a-via-ns-selector-for-immutable-ns-label",
        pod_sel("a"),
    )
    .ingress(vec![Rule::peers(vec![Peer::namespaces(ns_name_sel("y"))])]);
    c.create_policy(&p)?;
    let mut r = all_reachable();
    r.expect_peer(P::ns("x"), P::pod("x/a"), false)
        .expect_peer(P::ns("z"), P::pod("x/a"), false);
    c.validate(80, Tcp, &r)
}

/// "should enforce policy based on NamespaceSelector with MatchExpressions
/// using default ns label"
pub fn should_enforce_policy_based_on_namespace_selector_with_match_expressions_using_default_ns_label(
    c: &mut Netpol,
) -> Result<()> {
    let p = Policy::new(
        "x",
        "allow-ns-y-match-selector-for-immutable-ns-label",
        pod_sel("a"),
    )
    .egress(vec![Rule::peers(vec![Peer::namespaces(Selector::expr(
        NAMESPACE_NAME_LABEL,
        "NotIn",
        &["y"],
    ))])]);
    c.create_policy(&p)?;
    let mut r = all_reachable();
    r.expect_peer(P::pod("x/a"), P::ns("y"), false);
    c.validate(80, Tcp, &r)
}

/// "NetworkPolicy between server and client using UDP should support a
/// 'default-deny-ingress' policy"
pub fn udp_should_support_a_default_deny_ingress_policy(c: &mut Netpol) -> Result<()> {
    c.create_policy(&Policy::new("x", "deny-all", Selector::all()).ingress(vec![]))?;
    let mut r = all_reachable();
    r.expect_peer(P::any(), P::ns("x"), false);
    c.validate(80, Udp, &r)
}

/// "NetworkPolicy between server and client using UDP should enforce policy
/// based on Ports"
pub fn udp_should_enforce_policy_based_on_ports(c: &mut Netpol) -> Result<()> {
    let p = Policy::new("x", "allow-ingress-on-port-81-ns-x", pod_sel("a"))
        .ingress(vec![Rule::peers(vec![Peer::namespaces(ns_name_sel("y"))])
            .ports(vec![Port::number(81, Udp)])]);
    c.create_policy(&p)?;
    let mut r = all_reachable();
    r.expect_peer(P::ns("x"), P::pod("x/a"), false)
        .expect_peer(P::ns("z"), P::pod("x/a"), false);
    c.validate(81, Udp, &r)?;
    let mut r80 = all_reachable();
    r80.expect_all_ingress("x/a", false);
    c.validate(80, Udp, &r80)
}

/// "NetworkPolicy between server and client using UDP should enforce policy
/// to allow traffic only from a pod in a different namespace based on
/// PodSelector and NamespaceSelector"
pub fn udp_should_enforce_policy_to_allow_traffic_only_from_a_pod_in_a_different_namespace_based_on_pod_selector_and_namespace_selector(
    c: &mut Netpol,
) -> Result<()> {
    pod_in_other_namespace(c, 80, Udp)
}

/// twill's own (the upstream file has no endPort case): an ingress port
/// range `80`–`endPort: 81` allows both ports from y, and nothing else.
pub fn should_allow_ingress_access_on_a_port_range_with_end_port(c: &mut Netpol) -> Result<()> {
    let p = Policy::new("x", "allow-80-81-from-y", pod_sel("a"))
        .ingress(vec![Rule::peers(vec![Peer::namespaces(ns_name_sel("y"))])
            .ports(vec![Port::range(80, 81, Tcp)])]);
    c.create_policy(&p)?;
    let mut r = all_reachable();
    r.expect_peer(P::ns("x"), P::pod("x/a"), false)
        .expect_peer(P::ns("z"), P::pod("x/a"), false);
    c.validate(80, Tcp, &r)?;
    c.validate(81, Tcp, &r)?;
    let mut udp = all_reachable();
    udp.expect_all_ingress("x/a", false);
    c.validate(81, Udp, &udp)
}

/// twill's own, after "should enforce updated policy": an egress range
/// `80`–`endPort: 80` leaves 81 denied; updated to `endPort: 81`, 81 is
/// allowed too.
pub fn should_be_able_to_update_end_port(c: &mut Netpol) -> Result<()> {
    let narrow = Policy::new("x", "egress-range", Selector::all())
        .egress(vec![Rule::on(vec![Port::range(80, 80, Tcp)])]);
    c.create_policy(&narrow)?;
    c.validate(80, Tcp, &all_reachable())?;
    let mut r = all_reachable();
    r.expect_peer(P::ns("x"), P::any(), false);
    c.validate(81, Tcp, &r)?;
    let wide = Policy::new("x", "egress-range", Selector::all())
        .egress(vec![Rule::on(vec![Port::range(80, 81, Tcp)])]);
    c.update_policy(&wide)?;
    c.validate(81, Tcp, &all_reachable())
}

/// The ClusterIP of the service case (in the nodes' 10.96.0.0/12).
const SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

/// twill's own (upstream probes pods directly): x/a's egress policy applies
/// to the Service's backend after translation — through the ClusterIP of
/// a Service whose only endpoint is y/b, x/a gets through while its policy
/// allows y/b and not once it allows only y/a.
pub fn should_apply_egress_policy_to_the_backend_of_a_service(c: &mut Netpol) -> Result<()> {
    let vip = SocketAddrV4::new(SERVICE_IP, 80);
    let yb = c.ip("y/b");
    c.apply_extra(vec![
        service_object("y", "svc-b", SERVICE_IP, 80, 80),
        endpoint_slice_object("y", "svc-b", yb, "node-b", 80),
    ])?;
    c.expect_addr("x/a", vip, Tcp, "y/b:80", true)?;
    let to = |pod| {
        Policy::new("x", "allow-to-y-pod", pod_sel("a")).egress(vec![Rule::peers(vec![
            Peer::pods_in(ns_name_sel("y"), pod_sel(pod)),
        ])])
    };
    c.create_policy(&to("b"))?;
    let mut r = all_reachable();
    r.expect_all_egress("x/a", false).expect("x/a", "y/b", true);
    c.validate(80, Tcp, &r)?;
    c.expect_addr("x/a", vip, Tcp, "y/b:80", true)?;
    c.update_policy(&to("a"))?;
    let mut r = all_reachable();
    r.expect_all_egress("x/a", false).expect("x/a", "y/a", true);
    c.validate(80, Tcp, &r)?;
    c.expect_addr("x/a", vip, Tcp, "y/b:80", false)
}

/// twill's own (README, "When policies change"): what a policy change does
/// to TCP connections already established, on a cross-node (→ y/b) and a
/// same-node (→ y/c) path each.
/// 1. Connections that began before any policy concerned their pods are
///    picked up at their next packet, allowed if either end could open
///    them: a first deny-ingress policy on y/b and y/c does not cut x/a's
///    connections to them (y/b and y/c may connect out to x/a).
/// 2. Connections twill tracked from their start (opened while an allow-all
///    policy already isolated y/b and y/c) are judged again when the policy
///    changes: the ones the new policy denies are cut, the ones it allows go
///    on.
pub fn should_cut_established_connections_a_new_policy_denies_and_keep_the_ones_it_allows(
    c: &mut Netpol,
) -> Result<()> {
    let targets = Selector::expr("pod", "In", &["b", "c"]);
    let only_from_c =
        Policy::new("y", "only-from-c", targets.clone()).ingress(vec![Rule::peers(vec![
            Peer::pods_in(Selector::all(), pod_sel("c")),
        ])]);
    let pairs = [
        ("x/a", "y/b", false),
        ("x/a", "y/c", false),
        ("x/c", "y/b", true),
        ("x/c", "y/c", true),
    ];
    let mut matrix = all_reachable();
    matrix
        .expect_all_ingress("y/b", false)
        .expect_all_ingress("y/c", false)
        .expect_peer(P::named("c"), P::pod("y/b"), true)
        .expect_peer(P::named("c"), P::pod("y/c"), true);
    let mut round = 0;
    let mut check = |conns: &mut Vec<(Established, bool)>, what: &str| -> Result<()> {
        let mut wrong = Vec::new();
        for (e, want) in conns.iter_mut() {
            round += 1;
            let alive = e.alive(round);
            if alive != *want {
                wrong.push(format!(
                    "{}: {} but expected {}",
                    e.label,
                    if alive { "alive" } else { "cut" },
                    if *want { "alive" } else { "cut" }
                ));
            }
        }
        ensure!(wrong.is_empty(), "{what}:\n{}", wrong.join("\n"));
        Ok(())
    };
    let open = |c: &Netpol, tracked: &str| -> Result<Vec<(Established, bool)>> {
        let mut conns = Vec::new();
        for (from, to, allowed) in pairs {
            let addr = SocketAddrV4::new(c.ip(to), 80);
            let label = format!("{from} -> {to} ({tracked})");
            let mut e =
                Established::open(c.pod(from).pod.netns(), addr, &format!("{to}:80"), &label)?;
            ensure!(e.alive(0), "{label}: dead before the change");
            conns.push((e, allowed));
        }
        Ok(conns)
    };
    // 1. Opened with no policy at all.
    let mut before = open(c, "untracked")?;
    c.create_policy(&only_from_c)?;
    c.validate(80, Tcp, &matrix)?;
    for (_, want) in before.iter_mut() {
        *want = true;
    }
    check(
        &mut before,
        "connections from before any policy, after the first one",
    )?;
    drop(before);
    // 2. Opened while an allow-all policy isolates the targets.
    c.update_policy(&Policy::new("y", "only-from-c", targets).ingress(vec![Rule::all()]))?;
    c.validate(80, Tcp, &all_reachable())?;
    let mut tracked = open(c, "tracked")?;
    c.update_policy(&only_from_c)?;
    c.validate(80, Tcp, &matrix)?;
    for (_, want) in tracked.iter_mut() {
        *want = *want || !ESTABLISHED_CONNECTIONS_FOLLOW_POLICY;
    }
    check(&mut tracked, "tracked connections after the policy changed")
}
