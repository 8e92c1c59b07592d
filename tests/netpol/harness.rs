//! The cluster the netpol cases run against: two twill nodes following
//! one directory of manifests, the model's nine pods attached to them with
//! their identity, a server in each, and the calls the cases make
//! (upstream's `CreatePolicy`, `UpdatePolicy`, `AddNamespaceLabel`,
//! `AddPodLabels`, `ValidateOrFail`, …).
//!
//! Placement: pods `a` and `c` of every namespace on node A, pods `b` on
//! node B — so x/a → x/c and x/a → y/a are same-node pairs (enforced in
//! node A's bridge) and x/a → x/b or y/b → z/c cross the tunnel (enforced
//! in the routers).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use super::common::{subnet, twill_bin, UNDERLAY_A, UNDERLAY_B};
use super::model::{all_pods, split, Protocol, Reachability, TruthTable, NAMESPACES};
use super::policy::{
    default_namespace_labels, default_pod_labels, list, namespace_object, pod_object, Labels,
    Policy,
};
use super::probe::{probe, Outcome, PodServers};
use twill_lab::{Netns, NodeConfig, NodeProcess, Pod, Underlay};

/// How long a validation re-probes the matrix before it fails (upstream
/// polls the same way while policies take effect).
pub const VALIDATE_TIMEOUT: Duration = Duration::from_secs(10);

/// The node names the Pod objects carry.
const NODE_A: &str = "node-a";
const NODE_B: &str = "node-b";

/// One pod of the model.
#[derive(Debug)]
pub struct ModelPod {
    /// `x/a`.
    pub name: String,
    /// The node it runs on.
    pub node: &'static str,
    pub pod: Pod,
}

/// The cluster. Fields drop in order: servers, pods, nodes, underlay,
/// namespaces, then the manifest directory.
#[derive(Debug)]
pub struct Netpol {
    servers: Vec<PodServers>,
    pods: Vec<ModelPod>,
    node_a: NodeProcess,
    node_b: NodeProcess,
    _underlay: Underlay,
    _ns_b: Netns,
    _ns_a: Netns,
    dir: tempfile::TempDir,
    ns_labels: BTreeMap<String, Labels>,
    pod_labels: BTreeMap<String, Labels>,
    /// Policies applied since the last [`Netpol::reset`], by `ns/name`.
    policies: BTreeMap<String, Policy>,
    /// Other objects a case applied (Services, EndpointSlices).
    extra: Vec<Value>,
    applied: u32,
}

impl Netpol {
    /// Builds the nodes, attaches the nine pods, writes their Namespaces and
    /// Pods, starts the servers and waits until every pod reaches every
    /// pod.
    pub fn new() -> Result<Netpol> {
        let bin = twill_bin();
        let dir = tempfile::Builder::new()
            .prefix("twl-netpol-")
            .tempdir_in(std::env::temp_dir())?;
        let ns_a = Netns::new("twl-np-a")?;
        let ns_b = Netns::new("twl-np-b")?;
        let underlay = Underlay::pair(&ns_a, &ns_b, UNDERLAY_A, UNDERLAY_B, 24)?;
        let mut cfg_a = NodeConfig::new(NODE_A, UNDERLAY_A, subnet(1), "vxlan");
        let mut cfg_b = NodeConfig::new(NODE_B, UNDERLAY_B, subnet(2), "vxlan");
        cfg_a.peers.push(cfg_b.as_peer());
        cfg_b.peers.push(cfg_a.as_peer());
        for cfg in [&mut cfg_a, &mut cfg_b] {
            cfg.objects_dir = Some(dir.path().to_owned());
            cfg.service_cidr = Some("10.96.0.0/12".into());
        }
        let node_a = NodeProcess::start_args(&bin, &ns_a, cfg_a, &["--workers", "2"])?;
        let node_b = NodeProcess::start_args(&bin, &ns_b, cfg_b, &["--workers", "2"])?;
        let mut pods = Vec::new();
        for name in all_pods() {
            let (ns, pod) = split(&name);
            let (node, node_name) = if pod == "b" {
                (&node_b, NODE_B)
            } else {
                (&node_a, NODE_A)
            };
            let prefix = format!("twl-np-{ns}{pod}");
            let attached = Pod::attach_args(node, &prefix, &["--pod", &name])?;
            pods.push(ModelPod {
                name,
                node: node_name,
                pod: attached,
            });
        }
        let mut c = Netpol {
            servers: Vec::new(),
            pods,
            node_a,
            node_b,
            _underlay: underlay,
            _ns_b: ns_b,
            _ns_a: ns_a,
            dir,
            ns_labels: BTreeMap::new(),
            pod_labels: BTreeMap::new(),
            policies: BTreeMap::new(),
            extra: Vec::new(),
            applied: 0,
        };
        for p in &c.pods {
            c.servers
                .push(PodServers::start(p.pod.netns(), p.pod.ip(), &p.name)?);
        }
        c.restore_labels()?;
        for p in &c.pods {
            eprintln!("netpol: {} = {} on {}", p.name, p.pod.ip(), p.node);
        }
        c.validate(80, Protocol::Tcp, &Reachability::new(true))
            .context("the cluster before any policy")?;
        Ok(c)
    }

    /// The pod `x/a`.
    pub fn pod(&self, name: &str) -> &ModelPod {
        self.pods
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no pod {name}"))
    }

    /// The address of pod `x/a`.
    pub fn ip(&self, name: &str) -> Ipv4Addr {
        self.pod(name).pod.ip()
    }

    /// The one place that runs the object CLI: `twill apply|delete -f FILE
    /// --dir DIR`.
    fn objects_cli(&mut self, verb: &str, objects: Vec<Value>) -> Result<String> {
        self.applied += 1;
        let file = self.dir.path().join(format!(".in-{}.json", self.applied));
        std::fs::write(&file, serde_json::to_string_pretty(&list(objects))?)?;
        let (file_s, dir_s) = (path_str(&file)?, path_str(self.dir.path())?);
        let args = [verb, "-f", &file_s, "--dir", &dir_s];
        let out = self.node_a.cli(&args);
        std::fs::remove_file(&file)?;
        out.with_context(|| format!("twill {}", args.join(" ")))
    }

    fn apply_objects(&mut self, objects: Vec<Value>) -> Result<()> {
        let out = self.objects_cli("apply", objects)?;
        eprintln!("netpol: applied: {}", out.trim().replace('\n', "; "));
        Ok(())
    }

    /// Stores `policy` (upstream's `CreatePolicy`).
    pub fn create_policy(&mut self, policy: &Policy) -> Result<()> {
        self.apply_objects(vec![policy.to_json()])?;
        self.policies.insert(
            format!("{}/{}", policy.namespace, policy.name),
            policy.clone(),
        );
        Ok(())
    }

    /// Replaces the stored policy of the same name (upstream's
    /// `UpdatePolicy`).
    pub fn update_policy(&mut self, policy: &Policy) -> Result<()> {
        self.create_policy(policy)
    }

    /// Deletes every policy applied since the last reset (upstream's
    /// `cleanNetworkPolicies`).
    pub fn delete_policies(&mut self) -> Result<()> {
        if self.policies.is_empty() {
            return Ok(());
        }
        let all: Vec<Value> = self.policies.values().map(Policy::to_json).collect();
        let out = self.objects_cli("delete", all)?;
        eprintln!("netpol: deleted: {}", out.trim().replace('\n', "; "));
        self.policies.clear();
        Ok(())
    }

    /// Stores other objects (Services, EndpointSlices), deleted at the reset.
    pub fn apply_extra(&mut self, objects: Vec<Value>) -> Result<()> {
        self.apply_objects(objects.clone())?;
        self.extra.extend(objects);
        Ok(())
    }

    /// Sets label `key` of namespace `ns` (upstream's `AddNamespaceLabel`).
    pub fn add_namespace_label(&mut self, ns: &str, key: &str, value: &str) -> Result<()> {
        let labels = self.ns_labels.get_mut(ns).context("no such namespace")?;
        labels.insert(key.into(), value.into());
        let obj = namespace_object(ns, labels);
        self.apply_objects(vec![obj])
    }

    /// Adds `labels` to pod `x/a` (upstream's `AddPodLabels`).
    pub fn add_pod_labels(&mut self, pod: &str, labels: &[(&str, &str)]) -> Result<()> {
        let current = self.pod_labels.get_mut(pod).context("no such pod")?;
        for (k, v) in labels {
            current.insert((*k).into(), (*v).into());
        }
        let current = current.clone();
        let obj = self.pod_object(pod, &current);
        self.apply_objects(vec![obj])
    }

    fn pod_object(&self, name: &str, labels: &Labels) -> Value {
        let p = self.pod(name);
        let (ns, pod) = split(name);
        pod_object(ns, pod, labels, p.node, p.pod.ip())
    }

    /// Writes every Namespace and Pod with the model's labels.
    fn restore_labels(&mut self) -> Result<()> {
        let mut objs = Vec::new();
        self.ns_labels.clear();
        self.pod_labels.clear();
        for ns in NAMESPACES {
            let l = default_namespace_labels(ns);
            objs.push(namespace_object(ns, &l));
            self.ns_labels.insert(ns.into(), l);
        }
        for name in all_pods() {
            let l = default_pod_labels(split(&name).1);
            objs.push(self.pod_object(&name, &l));
            self.pod_labels.insert(name, l);
        }
        self.apply_objects(objs)
    }

    /// Back to the model's initial state: no policy, no extra object, the
    /// model's labels; then checks that every pod reaches every pod again
    /// on both ports and protocols, so that no case sees what the last one
    /// left.
    pub fn reset(&mut self) -> Result<()> {
        self.delete_policies()?;
        if !self.extra.is_empty() {
            let extra = std::mem::take(&mut self.extra);
            self.objects_cli("delete", extra)?;
        }
        let changed = self
            .ns_labels
            .iter()
            .any(|(ns, l)| *l != default_namespace_labels(ns))
            || self
                .pod_labels
                .iter()
                .any(|(p, l)| *l != default_pod_labels(split(p).1));
        if changed {
            self.restore_labels()?;
        }
        let all = Reachability::new(true);
        for (port, protocol) in [
            (80, Protocol::Tcp),
            (81, Protocol::Tcp),
            (80, Protocol::Udp),
        ] {
            self.validate(port, protocol, &all)
                .with_context(|| format!("after the reset, {port}/{}", protocol.k8s()))?;
        }
        Ok(())
    }

    /// One probe from pod `from` to `to` (an address, expecting the server
    /// `expect_id`).
    pub fn probe_addr(
        &self,
        from: &str,
        to: SocketAddrV4,
        protocol: Protocol,
        expect_id: &str,
    ) -> Outcome {
        let p = &self.pod(from).pod;
        probe(p.netns(), p.ip(), to, protocol, expect_id)
    }

    /// Probes every pod from every pod on `port`/`protocol` at once.
    pub fn probe_matrix(&self, port: u16, protocol: Protocol) -> (TruthTable, Vec<String>) {
        let items = all_pods();
        let mut table = TruthTable::new(items.clone(), None);
        let mut notes = Vec::new();
        let results: Vec<(String, String, Outcome)> = std::thread::scope(|s| {
            let handles: Vec<_> = items
                .iter()
                .flat_map(|from| items.iter().map(move |to| (from, to)))
                .map(|(from, to)| {
                    s.spawn(move || {
                        let addr = SocketAddrV4::new(self.ip(to), port);
                        let id = format!("{to}:{port}");
                        let o = self.probe_addr(from, addr, protocol, &id);
                        (from.clone(), to.clone(), o)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        for (from, to, o) in results {
            if let Outcome::Wrong(why) = &o {
                notes.push(format!("{from} -> {to}: {why}"));
            }
            table.set(&from, &to, o.connected());
        }
        (table, notes)
    }

    /// Upstream's `ValidateOrFail`: probes the whole matrix until it
    /// matches `expected` or [`VALIDATE_TIMEOUT`] passes, then fails with
    /// the expected, observed and comparison tables.
    pub fn validate(&self, port: u16, protocol: Protocol, expected: &Reachability) -> Result<()> {
        let start = Instant::now();
        let mut tries = 0;
        loop {
            tries += 1;
            let (observed, notes) = self.probe_matrix(port, protocol);
            let s = expected.summary(&observed);
            if s.wrong == 0 && notes.is_empty() {
                eprintln!(
                    "netpol: {port}/{} as expected after {tries} probe(s) of the matrix ({:.1} s)",
                    protocol.k8s(),
                    start.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            if start.elapsed() >= VALIDATE_TIMEOUT {
                bail!(
                    "{port}/{}: the matrix still differs after {tries} probes over {:.1} s\n\n{}{}",
                    protocol.k8s(),
                    start.elapsed().as_secs_f64(),
                    expected.report(&observed),
                    if notes.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "\nprobes that reached the wrong server:\n{}\n",
                            notes.join("\n")
                        )
                    }
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Probes `from` → `to` until the outcome is `want` (connected or not)
    /// or [`VALIDATE_TIMEOUT`] passes.
    pub fn expect_addr(
        &self,
        from: &str,
        to: SocketAddrV4,
        protocol: Protocol,
        expect_id: &str,
        want: bool,
    ) -> Result<()> {
        let start = Instant::now();
        loop {
            let o = self.probe_addr(from, to, protocol, expect_id);
            if let Outcome::Wrong(why) = &o {
                bail!("{from} -> {to}: {why}");
            }
            if o.connected() == want {
                return Ok(());
            }
            if start.elapsed() >= VALIDATE_TIMEOUT {
                bail!(
                    "{from} -> {to} ({}): expected {}, still {o:?} after {:.1} s",
                    protocol.k8s(),
                    if want { "connected" } else { "blocked" },
                    start.elapsed().as_secs_f64()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last lines of both nodes' logs (without netlink's noise), for a
    /// failure report.
    pub fn logs(&self) -> String {
        let tail = |node: &NodeProcess| {
            let text = node.log_tail(200);
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| !l.contains("netlink_packet_route"))
                .collect();
            lines[lines.len().saturating_sub(15)..].join("\n")
        };
        format!(
            "--- node-a log ---\n{}\n--- node-b log ---\n{}",
            tail(&self.node_a),
            tail(&self.node_b)
        )
    }
}

fn path_str(p: &Path) -> Result<String> {
    p.to_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", p.display()))
}
