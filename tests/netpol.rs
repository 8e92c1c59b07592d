//! Kubernetes NetworkPolicy in the switch, end to end: upstream's netpol
//! e2e suite (kubernetes test/e2e/network/netpol) ported to twill — the
//! truth-table model of namespaces x, y, z with pods a, b, c, every pod
//! serving 80 and 81 on TCP and UDP, each case applying policies and then
//! checking the full 9×9 reachability matrix, with upstream's truth tables
//! (expected, observed, comparison) on a mismatch.
//!
//! Placement: pods `a` and `c` of every namespace run on node A, pods `b`
//! on node B, so every matrix has same-node pairs (x/a → x/c, enforced in
//! node A's bridge) and cross-node pairs (x/a → x/b, enforced in the
//! routers).
//!
//! Layout: `netpol/model.rs` (the model, truth tables, reachability),
//! `netpol/policy.rs` (manifests), `netpol/probe.rs` (servers and probes),
//! `netpol/harness.rs` (the two-node cluster and upstream's calls),
//! `netpol/cases_ingress.rs` and `netpol/cases_egress.rs` (the cases).
//!
//! One cluster serves every case: [`netpol_suite`] builds it once, runs
//! the cases in order with a reset between them (policies and extra
//! objects deleted, labels restored, full reachability checked again) and
//! fails at the end with the cases that failed. `TWILL_NETPOL_CASE=text`
//! runs only the cases whose name contains `text`. Every case is also a
//! `#[test]` of its own name in `alone::`, ignored by default, which runs
//! it on a cluster of its own (`cargo test --test netpol -- --ignored
//! NAME`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "netpol/cases_egress.rs"]
mod cases_egress;
#[path = "netpol/cases_ingress.rs"]
mod cases_ingress;
mod common;
#[path = "netpol/harness.rs"]
mod harness;
#[path = "netpol/model.rs"]
mod model;
#[path = "netpol/policy.rs"]
mod policy;
#[path = "netpol/probe.rs"]
mod probe;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Result;
use common::require_root;
use harness::Netpol;

/// Every case, from both files.
mod cases {
    pub use super::cases_egress::*;
    pub use super::cases_ingress::*;
}

/// One case: applies policies to the reset cluster and validates.
type Case = fn(&mut Netpol) -> Result<()>;

/// Lists the cases once: the suite's table and the `alone::NAME` tests.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        const CASES: &[(&str, Case)] = &[$((stringify!($name), cases::$name)),*];

        /// Each case on a cluster of its own (ignored: the suite runs them).
        mod alone {
            $(
                #[test]
                #[ignore = "netpol_suite runs every case on one cluster"]
                fn $name() {
                    super::run_alone(stringify!($name), super::cases::$name);
                }
            )*
        }
    };
}

suite![
    should_have_every_pod_reach_every_pod_without_policies,
    should_support_a_default_deny_ingress_policy,
    should_support_a_default_deny_all_policy,
    should_enforce_policy_to_allow_traffic_from_pods_within_server_namespace_based_on_pod_selector,
    should_enforce_policy_to_allow_ingress_traffic_for_a_target,
    should_enforce_policy_to_allow_ingress_traffic_from_pods_in_all_namespaces,
    should_enforce_policy_to_allow_traffic_only_from_a_different_namespace_based_on_namespace_selector,
    should_enforce_policy_based_on_pod_selector_with_match_expressions,
    should_enforce_policy_based_on_namespace_selector_with_match_expressions,
    should_enforce_policy_based_on_pod_selector_or_namespace_selector,
    should_enforce_policy_based_on_pod_selector_and_namespace_selector,
    should_enforce_policy_based_on_multiple_pod_selectors_and_namespace_selectors,
    should_enforce_policy_based_on_any_pod_selectors,
    should_enforce_policy_to_allow_traffic_only_from_a_pod_in_a_different_namespace_based_on_pod_selector_and_namespace_selector,
    should_enforce_policy_based_on_ports,
    should_enforce_multiple_stacked_policies_with_overlapping_pod_selectors,
    should_support_allow_all_policy,
    should_allow_ingress_access_on_one_named_port,
    should_allow_ingress_access_from_namespace_on_one_named_port,
    should_allow_egress_access_on_one_named_port,
    should_enforce_updated_policy,
    should_allow_ingress_access_from_updated_namespace,
    should_allow_ingress_access_from_updated_pod,
    should_deny_ingress_from_pods_on_other_namespaces,
    should_deny_ingress_access_to_updated_pod,
    should_deny_egress_from_pods_based_on_pod_selector,
    should_deny_egress_from_all_pods_in_a_namespace,
    should_work_with_ingress_egress_specified_together,
    should_support_denying_of_egress_traffic_on_the_client_side_even_if_the_server_explicitly_allows_this_traffic,
    should_enforce_egress_policy_allowing_traffic_to_a_server_in_a_different_namespace_based_on_pod_selector_and_namespace_selector,
    should_enforce_ingress_policy_allowing_any_port_traffic_to_a_server_on_a_specific_protocol,
    should_enforce_multiple_ingress_policies_with_ingress_allow_all_policy_taking_precedence,
    should_enforce_multiple_egress_policies_with_egress_allow_all_policy_taking_precedence,
    should_stop_enforcing_policies_after_they_are_deleted,
    should_allow_egress_access_to_server_in_cidr_block,
    should_enforce_except_clause_while_egress_access_to_server_in_cidr_block,
    should_ensure_an_ip_overlapping_both_ip_block_cidr_and_ip_block_except_is_allowed,
    should_enforce_policies_to_check_ingress_and_egress_policies_can_be_controlled_independently_based_on_pod_selector,
    should_not_mistakenly_treat_protocol_sctp_as_protocol_tcp_even_if_the_plugin_doesnt_support_sctp,
    should_properly_isolate_pods_that_are_selected_by_a_policy_allowing_sctp_even_if_the_plugin_doesnt_support_sctp,
    should_not_allow_access_by_tcp_when_a_policy_specifies_only_udp,
    should_enforce_policy_to_allow_traffic_based_on_namespace_selector_with_match_labels_using_default_ns_label,
    should_enforce_policy_based_on_namespace_selector_with_match_expressions_using_default_ns_label,
    udp_should_support_a_default_deny_ingress_policy,
    udp_should_enforce_policy_based_on_ports,
    udp_should_enforce_policy_to_allow_traffic_only_from_a_pod_in_a_different_namespace_based_on_pod_selector_and_namespace_selector,
    should_allow_ingress_access_on_a_port_range_with_end_port,
    should_be_able_to_update_end_port,
    should_apply_egress_policy_to_the_backend_of_a_service,
    should_cut_established_connections_a_new_policy_denies_and_keep_the_ones_it_allows,
];

/// Runs `case` on `c`, a panic counting as a failure.
fn run_case(c: &mut Netpol, name: &str, case: Case) -> Result<(), String> {
    eprintln!("\n===== {name}");
    match catch_unwind(AssertUnwindSafe(|| case(c))) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("{e:#}\n{}", c.logs())),
        Err(panic) => Err(panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "panicked".into())),
    }
}

#[test]
fn netpol_suite() {
    if !require_root("netpol_suite") {
        return;
    }
    let filter = std::env::var("TWILL_NETPOL_CASE").unwrap_or_default();
    let chosen: Vec<_> = CASES.iter().filter(|(n, _)| n.contains(&filter)).collect();
    assert!(!chosen.is_empty(), "no case matches {filter:?}");
    let t0 = Instant::now();
    let mut c = Netpol::new().unwrap();
    let setup = t0.elapsed();
    let mut results = Vec::new();
    for &&(name, case) in &chosen {
        let t = Instant::now();
        let mut outcome = run_case(&mut c, name, case);
        if let Err(e) = c.reset() {
            let msg = format!("resetting the cluster after the case: {e:#}");
            outcome = Err(match outcome {
                Ok(()) => msg,
                Err(first) => format!("{first}\n{msg}"),
            });
        }
        match &outcome {
            Ok(()) => eprintln!("----- PASS {name} ({:.1} s)", t.elapsed().as_secs_f64()),
            Err(e) => eprintln!(
                "----- FAIL {name} ({:.1} s)\n{e}",
                t.elapsed().as_secs_f64()
            ),
        }
        results.push((name, outcome.is_ok(), t.elapsed()));
    }
    drop(c);
    eprintln!(
        "\nnetpol: {} case(s) in {:.1} s (cluster setup {:.1} s)",
        results.len(),
        t0.elapsed().as_secs_f64(),
        setup.as_secs_f64()
    );
    for (name, ok, d) in &results {
        eprintln!(
            "  {} {name} ({:.1} s)",
            if *ok { "pass" } else { "FAIL" },
            d.as_secs_f64()
        );
    }
    let failed: Vec<&str> = results.iter().filter(|r| !r.1).map(|r| r.0).collect();
    assert!(
        failed.is_empty(),
        "{} of {} netpol case(s) failed:\n  {}",
        failed.len(),
        results.len(),
        failed.join("\n  ")
    );
}

/// One case on a cluster of its own; one such cluster at a time.
fn run_alone(name: &str, case: Case) {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    if !require_root(name) {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = Netpol::new().unwrap();
    if let Err(e) = run_case(&mut c, name, case) {
        panic!("{name}:\n{e}");
    }
}
