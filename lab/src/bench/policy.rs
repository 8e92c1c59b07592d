//! `twill bench`'s `twill-vxlan-pol`: twill-vxlan with both pods under
//! NetworkPolicy. Builds the manifests (Namespace `bench`, Pods `bench/a`
//! and `bench/b`, [`UNRELATED`] policies that select both pods and allow
//! peers and ports the tests never use, and one that allows A → B on the
//! tests' ports and nothing back), stores them with `twill apply` in the
//! agents' `objects_dir`, waits until both agents have compiled them,
//! probes A → B once, and reads the agents' compile times from their logs.
//!
//! B → A is allowed by no policy: the replies pass as replies of tracked
//! connections, which is what the system measures. Test infrastructure
//! like the rest of the bench: it writes only into the lab's directories
//! and talks only to the lab's agents.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};

use super::{check, measure, SVC_PORTS};
use crate::cmd;
use crate::manifests::{self, SvcPort};
use crate::netns::Netns;
use crate::node::NodeProcess;

/// The namespace of the pods and the policies.
pub(super) const NAMESPACE: &str = "bench";
/// Policies that select both pods and allow only what the tests never send.
pub(super) const UNRELATED: usize = 1000;
/// Every policy: the unrelated ones and the one that allows A → B.
pub(super) const POLICIES: usize = UNRELATED + 1;
/// How long the agents get to compile every policy.
const READY: Duration = Duration::from_secs(60);
/// How long the A → B probe is retried (a peer's address reaches the
/// other agent through the objects directory, polled once a second).
const PROBE: Duration = Duration::from_secs(20);
/// How long `twill apply` of every object may take.
const APPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// How the policies were put in place, for `results.json` and the report.
#[derive(Debug, Clone, Default, Serialize)]
pub(super) struct PolicySetup {
    /// NetworkPolicies applied.
    pub(super) policies: usize,
    /// `twill apply` of every policy (one file), wall time.
    pub(super) apply_s: f64,
    /// From the start of `twill apply` until both agents reported every
    /// policy compiled and their pod isolated.
    pub(super) ready_s: f64,
    /// From then until the first TCP connection A → B got through.
    pub(super) probe_s: f64,
    /// Each agent's `policy_ms` when it was ready (`twill status`).
    pub(super) policy_ms: Vec<f64>,
    /// Every compile the agents logged until then.
    pub(super) compiles: Vec<Compile>,
    /// The agents' policy drops (ingress, egress, summed) before the tests,
    /// so that the report counts only the tests' own.
    pub(super) drops_before: [u64; 2],
}

/// One `policy table applied` line of an agent's log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct Compile {
    pub(super) node: String,
    pub(super) policies: u64,
    pub(super) isolated: u64,
    pub(super) ms: f64,
}

/// Namespace `bench` and its Pods `a` (on `node_a`, label `app: a`) and `b`
/// (on `node_b`, `app: b`, a container port named for each port the tests
/// use).
pub(super) fn pod_objects(node_a: &str, node_b: &str) -> Vec<Value> {
    vec![
        manifests::namespace(NAMESPACE, &[("purpose", "bench")]),
        manifests::pod(NAMESPACE, "a", &[("app", "a")], node_a, &[]),
        manifests::pod(NAMESPACE, "b", &[("app", "b")], node_b, &SVC_PORTS),
    ]
}

/// Every policy: [`UNRELATED`] of [`unrelated`], then [`allow_a_to_b`].
pub(super) fn policies() -> Vec<Value> {
    let mut all: Vec<Value> = (0..UNRELATED).map(unrelated).collect();
    all.push(allow_a_to_b(&SVC_PORTS));
    all
}

/// Unrelated policy `i`: selects both pods (`{}`, `app In [a, b]` or `app
/// Exists`) for Ingress and Egress and allows one peer on one port that no
/// test uses — from ipBlock 10.200.x.y/32 or from pods `app: client-i`
/// (there are none), to ipBlock 10.201.x.y/32 or to pods of namespaces
/// `team: ti`; on TCP/UDP port 10000+i or on a named port `unused-i` (no
/// pod has one). The mix makes the compile resolve selectors, blocks and
/// named ports as a real cluster's would.
fn unrelated(i: usize) -> Value {
    let n = i as u32;
    let port = 10_000 + i as u16;
    let selector = match i % 3 {
        0 => json!({}),
        1 => {
            json!({ "matchExpressions": [{ "key": "app", "operator": "In", "values": ["a", "b"] }] })
        }
        _ => json!({ "matchExpressions": [{ "key": "app", "operator": "Exists" }] }),
    };
    let host = |base: Ipv4Addr| format!("{}/32", Ipv4Addr::from(u32::from(base) + n));
    let from = if i % 4 == 0 {
        json!({ "podSelector": { "matchLabels": { "app": format!("client-{i}") } } })
    } else {
        json!({ "ipBlock": { "cidr": host(Ipv4Addr::new(10, 200, 0, 0)) } })
    };
    let to = if i % 3 == 0 {
        json!({
            "namespaceSelector": { "matchLabels": { "team": format!("t{i}") } },
            "podSelector": { "matchLabels": { "app": "db" } },
        })
    } else {
        json!({ "ipBlock": { "cidr": host(Ipv4Addr::new(10, 201, 0, 0)) } })
    };
    let named = json!({ "port": format!("unused-{i}"), "protocol": "TCP" });
    let in_port = if i % 5 == 0 {
        named.clone()
    } else {
        json!({ "port": port, "protocol": "TCP" })
    };
    let out_port = if i % 7 == 0 {
        named
    } else {
        json!({ "port": port, "protocol": if i % 2 == 0 { "TCP" } else { "UDP" } })
    };
    policy(
        &format!("unrelated-{i:04}"),
        selector,
        json!([{ "from": [from], "ports": [in_port] }]),
        json!([{ "to": [to], "ports": [out_port] }]),
    )
}

/// `allow-a-to-b`: selects both pods; ingress from pods `app: a` on `ports`
/// by name (resolved on pod B), egress to pods `app: b` on `ports` by
/// number. Nothing allows B → A.
fn allow_a_to_b(ports: &[SvcPort]) -> Value {
    let named: Vec<Value> = ports
        .iter()
        .map(|p| json!({ "port": p.name, "protocol": p.protocol }))
        .collect();
    let numbers: Vec<Value> = ports
        .iter()
        .map(|p| json!({ "port": p.target_port, "protocol": p.protocol }))
        .collect();
    policy(
        "allow-a-to-b",
        json!({}),
        json!([{ "from": [{ "podSelector": { "matchLabels": { "app": "a" } } }], "ports": named }]),
        json!([{ "to": [{ "podSelector": { "matchLabels": { "app": "b" } } }], "ports": numbers }]),
    )
}

fn policy(name: &str, selector: Value, ingress: Value, egress: Value) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": { "name": name, "namespace": NAMESPACE },
        "spec": {
            "podSelector": selector,
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": egress,
        },
    })
}

/// Stores `objects` (one `kind: List` file) in `dir` with `twill apply -f
/// FILE --dir DIR`, run with `node`'s binary; returns how long it took.
pub(super) fn apply(
    node: &NodeProcess,
    dir: &Path,
    what: &str,
    objects: Vec<Value>,
    commands: &mut Vec<String>,
) -> Result<Duration> {
    // Hidden: the agents following `dir` never read it as a manifest.
    let file = dir.join(format!(".in-{what}.json"));
    std::fs::write(&file, serde_json::to_vec(&manifests::list(objects))?)
        .with_context(|| format!("writing {}", file.display()))?;
    let mut c = Command::new(node.twill_bin());
    c.args(["apply", "-f"]).arg(&file).arg("--dir").arg(dir);
    let described = cmd::describe(&c);
    commands.push(described.clone());
    let t0 = Instant::now();
    let out = cmd::run_checked(c, APPLY_TIMEOUT);
    let took = t0.elapsed();
    let _ = std::fs::remove_file(&file);
    out.with_context(|| format!("`{described}`"))?;
    Ok(took)
}

/// Applies [`pod_objects`] (pod A on the first of `nodes`, B on the last),
/// then [`policies`]; waits until every agent reports [`POLICIES`]
/// policies and its one pod isolated, and probes A → B on the
/// short-connection port until a connection gets through.
pub(super) fn install(
    nodes: &[NodeProcess],
    dir: &Path,
    client: &Netns,
    server: &Netns,
    server_ip: Ipv4Addr,
    commands: &mut Vec<String>,
    stop: &AtomicBool,
) -> Result<PolicySetup> {
    let (Some(first), Some(last)) = (nodes.first(), nodes.last()) else {
        bail!("no agents");
    };
    let pods = pod_objects(&first.config().name, &last.config().name);
    apply(first, dir, "pods", pods, commands)?;
    let t0 = Instant::now();
    let apply_s = apply(first, dir, "policies", policies(), commands)?.as_secs_f64();
    let policy_ms = wait_compiled(nodes, t0 + READY, stop)?;
    let ready_s = t0.elapsed().as_secs_f64();
    let compiles = nodes.iter().flat_map(logged_compiles).collect();
    let t1 = Instant::now();
    probe(client, server, server_ip, stop)?;
    let probe_s = t1.elapsed().as_secs_f64();
    let mut drops_before = [0; 2];
    for node in nodes {
        let c = node.counters()?;
        drops_before[0] += c.drops.policy_ingress;
        drops_before[1] += c.drops.policy_egress;
    }
    Ok(PolicySetup {
        policies: POLICIES,
        apply_s,
        ready_s,
        probe_s,
        policy_ms,
        compiles,
        drops_before,
    })
}

/// Waits until each agent's `twill status` says `network_policies ==
/// POLICIES` and `isolated_pods == 1`; returns their `policy_ms`.
fn wait_compiled(nodes: &[NodeProcess], deadline: Instant, stop: &AtomicBool) -> Result<Vec<f64>> {
    let mut ms = Vec::new();
    for node in nodes {
        loop {
            check(stop)?;
            let last = node.status_json();
            if let Ok(st) = &last {
                let s = &st["services"];
                if s["network_policies"].as_u64() == Some(POLICIES as u64)
                    && s["isolated_pods"].as_u64() == Some(1)
                {
                    ms.push(s["policy_ms"].as_f64().unwrap_or(f64::NAN));
                    break;
                }
            }
            if Instant::now() >= deadline {
                let seen = match &last {
                    Ok(st) => st["services"].to_string(),
                    Err(e) => format!("{e:#}"),
                };
                bail!(
                    "node {}: not {POLICIES} NetworkPolicies compiled with its pod isolated \
                     after {READY:?} (last `twill status` services: {seen}); log tail:\n{}",
                    node.config().name,
                    node.log_tail(30)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(ms)
}

/// Short connections A → B ([`super::CONN_PORT`]) until one round of them
/// all succeeds, or a clear error after [`PROBE`].
fn probe(client: &Netns, server: &Netns, server_ip: Ipv4Addr, stop: &AtomicBool) -> Result<()> {
    let deadline = Instant::now() + PROBE;
    loop {
        check(stop)?;
        let round = Duration::from_millis(200);
        let last = measure::connection_rate(client, server, server_ip, server_ip, round, stop);
        match &last {
            Ok(c) if c.completed > 0 && c.failed == 0 => return Ok(()),
            _ if Instant::now() < deadline => thread::sleep(Duration::from_millis(200)),
            Ok(c) => bail!(
                "pod A cannot open TCP connections to pod B under the policies after {PROBE:?} \
                 ({} completed, {} failed, first error: {:?})",
                c.completed,
                c.failed,
                c.first_error
            ),
            Err(e) => bail!(
                "pod A cannot open TCP connections to pod B under the policies after \
                 {PROBE:?}: {e:#}"
            ),
        }
    }
}

/// The `policy table applied` lines of `node`'s log (its last 64 KiB).
fn logged_compiles(node: &NodeProcess) -> Vec<Compile> {
    let name = &node.config().name;
    crate::node::tail_file(node.log_path(), 10_000)
        .lines()
        .filter_map(|l| parse_compile(name, l))
        .collect()
}

/// `… policy table applied policies=1001 isolated=1 ms=12.5` (tracing's
/// text format; ANSI colours, if any, removed).
fn parse_compile(node: &str, line: &str) -> Option<Compile> {
    if !line.contains("policy table applied") {
        return None;
    }
    let plain = strip_ansi(line);
    let field = |k: &str| -> Option<&str> {
        plain
            .split_whitespace()
            .find_map(|w| w.strip_prefix(k)?.strip_prefix('='))
    };
    Some(Compile {
        node: node.to_owned(),
        policies: field("policies")?.parse().ok()?,
        isolated: field("isolated")?.parse().ok()?,
        ms: field("ms")?.parse().ok()?,
    })
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters… final byte in @..~.
            for d in chars.by_ref() {
                if ('@'..='~').contains(&d) && d != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The policy drops (ingress, egress) in `counters`, summed.
pub(super) fn policy_drops(counters: &[Value]) -> [u64; 2] {
    let mut d = [0; 2];
    for c in counters {
        let drops = &c["drops"];
        d[0] += drops["policy_ingress"].as_u64().unwrap_or(0);
        d[1] += drops["policy_egress"].as_u64().unwrap_or(0);
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_policy_selects_both_pods_for_both_directions() {
        let all = policies();
        assert_eq!(all.len(), POLICIES);
        let names: std::collections::BTreeSet<&str> = all
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(names.len(), POLICIES, "names are unique");
        for p in &all {
            assert_eq!(p["metadata"]["namespace"], NAMESPACE);
            assert_eq!(p["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
            let sel = &p["spec"]["podSelector"];
            let selects_both = *sel == json!({})
                || sel["matchExpressions"][0]["key"] == "app"
                    && matches!(
                        sel["matchExpressions"][0]["operator"].as_str(),
                        Some("Exists" | "In")
                    );
            assert!(selects_both, "{sel}");
        }
    }

    #[test]
    fn unrelated_policies_never_allow_a_test_port() {
        let test_ports: Vec<u64> = SVC_PORTS.iter().map(|p| u64::from(p.target_port)).collect();
        let test_names: Vec<&str> = SVC_PORTS.iter().map(|p| p.name).collect();
        for i in 0..UNRELATED {
            let p = unrelated(i);
            for dir in ["ingress", "egress"] {
                for port in p["spec"][dir][0]["ports"].as_array().into_iter().flatten() {
                    match &port["port"] {
                        Value::Number(n) => {
                            assert!(!test_ports.contains(&n.as_u64().unwrap_or(0)), "{p}")
                        }
                        Value::String(s) => {
                            assert!(!test_names.contains(&s.as_str()), "{p}");
                            assert!(s.len() <= 15, "{s} is no IANA service name");
                        }
                        other => panic!("port {other}"),
                    }
                }
            }
        }
    }

    #[test]
    fn the_allow_policy_opens_a_to_b_only() {
        let p = allow_a_to_b(&SVC_PORTS);
        let ingress = &p["spec"]["ingress"][0];
        assert_eq!(
            ingress["from"],
            json!([{ "podSelector": { "matchLabels": { "app": "a" } } }])
        );
        assert_eq!(
            ingress["ports"][1],
            json!({ "port": "iperf-udp", "protocol": "UDP" })
        );
        let egress = &p["spec"]["egress"][0];
        assert_eq!(
            egress["to"],
            json!([{ "podSelector": { "matchLabels": { "app": "b" } } }])
        );
        assert_eq!(
            egress["ports"].as_array().map(Vec::len),
            Some(SVC_PORTS.len())
        );
        assert_eq!(
            egress["ports"][0],
            json!({ "port": 5201, "protocol": "TCP" })
        );
    }

    #[test]
    fn pod_b_names_every_port_the_allow_policy_names() {
        let objs = pod_objects("node-a", "node-b");
        let b = &objs[2];
        assert_eq!(b["metadata"]["name"], "b");
        let names: Vec<&str> = b["spec"]["containers"][0]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(names, ["iperf", "iperf-udp", "rr", "conn"]);
    }

    #[test]
    fn compile_lines_are_read_with_or_without_colours() {
        let plain = "2026-12-05T06:41:00.1Z  INFO twill::agent::services: policy table applied \
                     policies=1001 isolated=1 ms=12.5";
        assert_eq!(
            parse_compile("node-a", plain),
            Some(Compile {
                node: "node-a".into(),
                policies: 1001,
                isolated: 1,
                ms: 12.5
            })
        );
        let coloured = "\u{1b}[32m INFO\u{1b}[0m policy table applied \u{1b}[3mpolicies\u{1b}[0m\
                        \u{1b}[2m=\u{1b}[0m7 \u{1b}[3misolated\u{1b}[0m\u{1b}[2m=\u{1b}[0m0 \
                        \u{1b}[3mms\u{1b}[0m\u{1b}[2m=\u{1b}[0m0.25";
        assert_eq!(parse_compile("n", coloured).map(|c| c.policies), Some(7));
        assert_eq!(parse_compile("n", "service table applied ms=1"), None);
    }
}
