//! `twill bench`: the end-to-end benchmark. For each system it builds, in the
//! same run, the same two-node topology in network namespaces (two node
//! namespaces joined by a veth underlay, one pod on each node) and measures
//! pod A → pod B with iperf3 (TCP 1 and 4 streams, 64-byte UDP packets), a
//! 1-byte TCP request/response loop and a loop of short TCP connections
//! (new connections per second), plus the system-wide CPU time of each
//! throughput test. `twill-vxlan-svc` is twill-vxlan with pod B behind a
//! ClusterIP: the client connects to the Service, the servers bind pod B's
//! address (submodule `service`). `twill-vxlan-pol` is twill-vxlan with
//! both pods selected by 1,001 NetworkPolicies, one of which allows A → B
//! (submodule `policy`). `floor` is the least a userspace overlay does,
//! the bound of twill's design (submodule `floor`). It prints a table
//! relative to kernel VXLAN (and the Service and policy systems relative
//! to twill-vxlan) and writes `results.json` and `results.png`
//! (submodules: `measure`, `loss`, `report`, `plot`).
//!
//! Test infrastructure like the rest of the lab: it shells out to `iperf3`
//! and `ip`, never sends traffic outside the namespaces it creates, and tears
//! every system down (guards) before building the next, also on error and on
//! Ctrl-C.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ipnet::Ipv4Net;
use serde::Serialize;

use crate::cmd;
use crate::kernel::{KernelPod, KernelVxlanNode};
use crate::link::{addr_up, unique_ifname, Underlay, Veth};
use crate::manifests::SvcPort;
use crate::netns::Netns;
use crate::node::{nth_host, NodeConfig, NodeProcess};
use crate::pod::Pod;
use crate::tempdir::TempDir;
use crate::traffic::ping;

mod floor;
mod loss;
mod measure;
pub mod observe;
mod plot;
mod policy;
mod report;
mod service;

/// iperf3's port inside pod B.
const IPERF_PORT: u16 = 5201;
/// The request/response server's port inside pod B.
const RR_PORT: u16 = 5301;
/// The short-connection server's port inside pod B.
const CONN_PORT: u16 = 5302;
/// twill-vxlan-svc: the ClusterIP in front of pod B.
const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// twill-vxlan-svc: the Service's ports, every port the tests use (same
/// numbers on the ClusterIP and on pod B); twill-vxlan-pol: pod B's named
/// container ports and the ports the policy allows A → B.
const SVC_PORTS: [SvcPort; 4] = [
    SvcPort {
        name: "iperf",
        protocol: "TCP",
        port: IPERF_PORT,
        target_port: IPERF_PORT,
    },
    SvcPort {
        name: "iperf-udp",
        protocol: "UDP",
        port: IPERF_PORT,
        target_port: IPERF_PORT,
    },
    SvcPort {
        name: "rr",
        protocol: "TCP",
        port: RR_PORT,
        target_port: RR_PORT,
    },
    SvcPort {
        name: "conn",
        protocol: "TCP",
        port: CONN_PORT,
        target_port: CONN_PORT,
    },
];
/// How long the agents get to show the Service's backends.
const SVC_READY: Duration = Duration::from_secs(20);
/// Request/response rounds measured (after [`RR_WARMUP`] unmeasured ones).
const RR_ROUNDS: usize = 5000;
const RR_WARMUP: usize = 200;
/// Payload of the UDP packet-rate test (iperf3 `-l`).
const UDP_LEN: u64 = 64;
/// /proc/stat counts in USER_HZ, which is 100 on every Linux ABI in use
/// (sysconf(_SC_CLK_TCK) would say so, but needs nix's `feature` feature).
const USER_HZ: f64 = 100.0;

/// One system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    /// Two `twill node` agents, vxlan backend.
    TwillVxlan,
    /// [`System::TwillVxlan`] with pod B behind a ClusterIP Service.
    TwillVxlanSvc,
    /// [`System::TwillVxlan`] with both pods under NetworkPolicy.
    TwillVxlanPol,
    /// Two `twill node` agents, udp backend.
    TwillUdp,
    /// Two `twill node` agents, host-gw backend (routes, no tunnel).
    TwillHostGw,
    /// Two [`KernelVxlanNode`]s (flannel's vxlan backend): the anchor.
    KernelVxlan,
    /// The least a userspace TAP-to-UDP forwarder does (submodule `floor`):
    /// the bound of twill's architecture.
    Floor,
    /// No overlay: pod veths routed by the node kernels over the underlay.
    Direct,
}

impl System {
    /// Every system, in the default order.
    pub const ALL: [System; 8] = [
        System::TwillVxlan,
        System::TwillVxlanSvc,
        System::TwillVxlanPol,
        System::TwillUdp,
        System::TwillHostGw,
        System::KernelVxlan,
        System::Floor,
        System::Direct,
    ];

    /// [`System::ALL`]'s names, comma-separated (the command line's
    /// default; a test holds it to `ALL`).
    pub const ALL_NAMES: &'static str =
        "twill-vxlan,twill-vxlan-svc,twill-vxlan-pol,twill-udp,twill-host-gw,kernel-vxlan,floor,direct";

    /// The name used on the command line and in the results.
    pub fn name(self) -> &'static str {
        match self {
            System::TwillVxlan => "twill-vxlan",
            System::TwillVxlanSvc => "twill-vxlan-svc",
            System::TwillVxlanPol => "twill-vxlan-pol",
            System::TwillUdp => "twill-udp",
            System::TwillHostGw => "twill-host-gw",
            System::KernelVxlan => "kernel-vxlan",
            System::Floor => "floor",
            System::Direct => "direct",
        }
    }

    /// Parses a command-line name.
    pub fn from_name(name: &str) -> Result<System> {
        System::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = System::ALL.iter().map(|s| s.name()).collect();
                anyhow!("unknown system {name:?} ({})", known.join(", "))
            })
    }

    fn description(self) -> &'static str {
        match self {
            System::TwillVxlan => "two `twill node` agents, vxlan backend (VNI 1, port 8472)",
            System::TwillVxlanSvc => {
                "twill-vxlan, the client connecting to ClusterIP 10.96.0.10 whose one \
                 endpoint is pod B (Service and EndpointSlice in the agents' objects_dir)"
            }
            System::TwillVxlanPol => {
                "twill-vxlan, pods bench/a and bench/b selected by 1,001 NetworkPolicies \
                 (1,000 allowing unrelated peers, one allowing A -> B on the tests' ports; \
                 replies pass as tracked connections)"
            }
            System::TwillUdp => "two `twill node` agents, udp backend (port 8285)",
            System::TwillHostGw => {
                "two `twill node` agents, host-gw backend: the switch hands pod B's subnet to \
                 the host, which routes it via node B (no tunnel)"
            }
            System::KernelVxlan => {
                "kernel VXLAN as flannel configures it: flannel.1 + cni0 bridge + veth pods"
            }
            System::Floor => {
                "the floor of a userspace overlay: per node, a thread reads the pod's TAP and \
                 sends each frame whole in one UDP send, another receives and writes the TAP \
                 (no switching, no VXLAN, no epoll)"
            }
            System::Direct => "no overlay: pod veths routed by the node kernels over the underlay",
        }
    }
}

/// What `twill bench` was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchOptions {
    /// Systems to measure, in order.
    pub systems: Vec<System>,
    /// Length of each iperf3 test.
    pub duration: Duration,
    /// Where `results.json` goes (created if missing).
    pub out: PathBuf,
    /// The `twill` binary the nodes run (the command passes its own executable).
    pub twill_bin: PathBuf,
    /// Extra arguments for every `twill node` (e.g. `--busy-poll-us 200`).
    pub node_args: Vec<String>,
    /// What watches the twill systems while they are measured (a metrics
    /// scraper, a capture): to measure what watching costs.
    pub observe: observe::Observe,
}

/// One TCP throughput test.
#[derive(Debug, Clone, Serialize)]
struct Throughput {
    /// Receiver-side goodput.
    gbit_per_s: f64,
    bytes_received: u64,
    seconds: f64,
    retransmits: Option<u64>,
    /// Busy CPU time of the whole machine during the test (all CPUs).
    cpu_busy_s: f64,
    /// `cpu_busy_s / Gbit received` = CPUs kept busy per Gbit/s.
    cpu_s_per_gbit: f64,
}

/// The 64-byte UDP test.
#[derive(Debug, Clone, Serialize)]
struct UdpRate {
    sent_pps: f64,
    received_pps: f64,
    /// iperf3's count (the server's, from sequence numbers).
    lost_packets: u64,
    lost_percent: f64,
    cpu_busy_s: f64,
}

/// The request/response test.
#[derive(Debug, Clone, Serialize)]
struct Latency {
    rounds: usize,
    mean_us: f64,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
}

/// One paced latency test: a ping every `interval_ms`.
#[derive(Debug, Clone, Serialize)]
struct Paced {
    interval_ms: f64,
    probes: usize,
    p50_us: f64,
    p99_us: f64,
    /// Worker wake-ups on both nodes per round trip (twill systems; the
    /// sender's, the receiver's and the reply's way back each cost some).
    wakeups_per_rt: Option<f64>,
}

/// The paced latency tests: (interval, pings).
const PACED: [(Duration, u32); 3] = [
    (Duration::from_millis(200), 25),
    (Duration::from_millis(10), 200),
    (Duration::from_millis(1), 1000),
];

/// The short-connection test: connect, 1-byte request and response, close.
#[derive(Debug, Clone, Serialize)]
struct ConnRate {
    /// Connections completed per second.
    conn_per_s: f64,
    completed: u64,
    /// Connections that failed (refused, reset, timed out), not counted above.
    failed: u64,
    seconds: f64,
    /// Connect to the server's close seen by the client, per connection.
    p50_us: f64,
    p99_us: f64,
    /// The first failure, if any.
    first_error: Option<String>,
}

/// Everything measured for one system.
#[derive(Debug, Clone, Serialize)]
struct SystemResult {
    system: &'static str,
    description: &'static str,
    pod_mtu: Option<u32>,
    tcp1: Option<Throughput>,
    tcp4: Option<Throughput>,
    /// Where the TCP tests' segments were dropped, beside their
    /// retransmissions.
    tcp1_loss: Option<loss::TcpLoss>,
    tcp4_loss: Option<loss::TcpLoss>,
    udp64: Option<UdpRate>,
    /// Where the UDP test's lost packets went.
    udp64_loss: Option<loss::UdpLoss>,
    rr: Option<Latency>,
    /// Paced pings, one entry per interval of [`PACED`].
    paced: Vec<Paced>,
    /// New TCP connections per second.
    conn: Option<ConnRate>,
    /// The address the client connected to (pod B, or its ClusterIP).
    target: Option<String>,
    /// twill-vxlan-pol: how the policies were put in place.
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<policy::PolicySetup>,
    /// twill-vxlan-svc and twill-vxlan-pol: each agent's `twill counters
    /// --json` after the tests (service, policy and connection-table
    /// counters among them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    agent_counters: Vec<serde_json::Value>,
    /// What watched the measurement (`--scrape-every-ms`, `--capture`).
    #[serde(skip_serializing_if = "Option::is_none")]
    watched: Option<observe::Watched>,
    /// Commands run for the measurements, as run.
    commands: Vec<String>,
    /// What failed (the other measurements still ran).
    errors: Vec<String>,
}

impl SystemResult {
    fn new(system: System) -> SystemResult {
        SystemResult {
            system: system.name(),
            description: system.description(),
            pod_mtu: None,
            tcp1: None,
            tcp4: None,
            udp64: None,
            tcp1_loss: None,
            tcp4_loss: None,
            udp64_loss: None,
            rr: None,
            paced: Vec::new(),
            conn: None,
            target: None,
            policy: None,
            agent_counters: Vec::new(),
            watched: None,
            commands: Vec::new(),
            errors: Vec::new(),
        }
    }
}

/// Runs the benchmark. Needs root and iperf3. Every system is torn down
/// before the next one is built; results are written even when a system
/// failed (the command then returns an error).
pub fn run(opts: BenchOptions) -> Result<()> {
    if !crate::is_root() {
        bail!("the benchmark builds network namespaces and needs root (try sudo)");
    }
    if opts.systems.is_empty() {
        bail!("no systems to measure");
    }
    if !opts.twill_bin.exists() {
        bail!("twill binary {} not found", opts.twill_bin.display());
    }
    let iperf_version = iperf3_version()?;
    if opts
        .twill_bin
        .components()
        .any(|c| c.as_os_str() == "debug")
    {
        progress!(
            "warning: {} looks like a debug build; twill's figures will be meaningless \
             (use `cargo run --release -- bench`)",
            opts.twill_bin.display()
        );
    }
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let stop = crate::cmd::install_stop_handler()?;
    for gone in crate::names::cleanup_stale() {
        progress!("removed a leftover of an earlier, killed run: {gone}");
    }
    let started = Instant::now();
    let mut results = Vec::new();
    let n = opts.systems.len();
    for (i, &system) in opts.systems.iter().enumerate() {
        progress!("[{}/{n} {}] {}", i + 1, system.name(), system.description());
        let mut res = SystemResult::new(system);
        let outcome = bench_system(system, &opts, &stop, &mut res);
        // The topology is gone by now (guards dropped inside bench_system).
        if stop.load(Ordering::SeqCst) {
            progress!("\ninterrupted: everything the benchmark built has been removed");
            return Err(anyhow!("interrupted"));
        }
        if let Err(e) = outcome {
            progress!("[{}] FAILED: {e:#}", system.name());
            res.errors.push(format!("{e:#}"));
        }
        results.push(res);
    }
    let total = started.elapsed();
    say!("{}", report::table(&results));
    let doc = report::results_json(&opts, &iperf_version, &results, total);
    let path = opts.out.join("results.json");
    std::fs::write(&path, serde_json::to_string_pretty(&doc)?)
        .with_context(|| format!("writing {}", path.display()))?;
    progress!("wrote {}", path.display());
    let png = opts.out.join("results.png");
    match plot::draw(&png, &report::caption(&doc), &report::panels(&results)) {
        Ok(()) => progress!("wrote {}", png.display()),
        Err(e) => progress!("results.png skipped: {e:#}"),
    }
    progress!(
        "all namespaces removed ({:.1} s in total)",
        total.as_secs_f64()
    );
    let failed: Vec<&str> = results
        .iter()
        .filter(|r| !r.errors.is_empty())
        .map(|r| r.system)
        .collect();
    if !failed.is_empty() {
        bail!("measurements failed for: {}", failed.join(", "));
    }
    Ok(())
}

/// `iperf3 --version`'s first line, or a clear error when it is missing.
fn iperf3_version() -> Result<String> {
    let mut c = Command::new("iperf3");
    c.arg("--version");
    match cmd::run_timeout(c, Duration::from_secs(5)) {
        Ok(out) => Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("iperf3 (unknown version)")
            .trim()
            .to_owned()),
        Err(e) => bail!(
            "iperf3 is required and could not be run ({e:#}); install it, e.g. \
             `DEBIAN_FRONTEND=noninteractive apt-get install -y iperf3`"
        ),
    }
}

fn check(stop: &AtomicBool) -> Result<()> {
    if stop.load(Ordering::SeqCst) {
        progress!("\ninterrupted: cleaning up …");
        bail!("interrupted");
    }
    Ok(())
}

/// A pod of any of the systems.
#[derive(Debug)]
enum PodGuard {
    Twill(Pod),
    Kernel(KernelPod),
    Plain(Netns),
    Floor(floor::FloorNode),
}

impl PodGuard {
    fn netns(&self) -> &Netns {
        match self {
            PodGuard::Twill(p) => p.netns(),
            PodGuard::Kernel(p) => p.netns(),
            PodGuard::Plain(ns) => ns,
            PodGuard::Floor(f) => f.pod(),
        }
    }
}

/// One system's topology. Fields drop in declaration order: pods, then the
/// agents, then their manifest directory, then the node namespaces (which
/// take the underlay with them).
#[derive(Debug)]
struct Topology {
    pod_a: PodGuard,
    pod_b: PodGuard,
    nodes: Vec<NodeProcess>,
    /// The agents' `objects_dir` (twill-vxlan-svc, twill-vxlan-pol).
    objects: Option<TempDir>,
    ns_b: Netns,
    ns_a: Netns,
    /// Pod B's address: where the servers bind.
    server_ip: Ipv4Addr,
    /// Where the client connects: pod B, or the ClusterIP in front of it.
    target: Ipv4Addr,
    pod_mtu: u32,
}

impl Topology {
    /// Everything [`loss::Probe`] samples: the four namespaces and the agents.
    fn loss_probe(&self) -> loss::Probe<'_> {
        loss::Probe {
            pod_a: self.pod_a.netns(),
            nodes: [&self.ns_a, &self.ns_b],
            pod_b: self.pod_b.netns(),
            agents: &self.nodes,
        }
    }
}

fn subnet(third: u8) -> Result<Ipv4Net> {
    Ok(Ipv4Net::new(Ipv4Addr::new(10, 244, third, 0), 24)?)
}

fn build(system: System, twill_bin: &std::path::Path, node_args: &[String]) -> Result<Topology> {
    // Locals drop in reverse order if a step fails: pods, nodes, namespaces.
    let ns_a = Netns::new("twl-bench-a")?;
    let ns_b = Netns::new("twl-bench-b")?;
    let (ip_a, ip_b) = (
        Ipv4Addr::new(192, 168, 77, 1),
        Ipv4Addr::new(192, 168, 77, 2),
    );
    Underlay::pair(&ns_a, &ns_b, ip_a, ip_b, 24)?;
    let (net_a, net_b) = (subnet(1)?, subnet(2)?);
    match system {
        System::TwillVxlan
        | System::TwillVxlanSvc
        | System::TwillVxlanPol
        | System::TwillUdp
        | System::TwillHostGw => {
            let backend = match system {
                System::TwillUdp => "udp",
                System::TwillHostGw => "host-gw",
                _ => "vxlan",
            };
            let mut cfg_a = NodeConfig::new("node-a", ip_a, net_a, backend);
            let mut cfg_b = NodeConfig::new("node-b", ip_b, net_b, backend);
            cfg_a.peers.push(cfg_b.as_peer());
            cfg_b.peers.push(cfg_a.as_peer());
            // Both agents follow the same (at first empty) directory, as
            // every node of a cluster sees every Service and policy.
            let objects = match system {
                System::TwillVxlanSvc | System::TwillVxlanPol => {
                    let dir = TempDir::new("bench-objects")?;
                    cfg_a.objects_dir = Some(dir.path().to_owned());
                    cfg_b.objects_dir = Some(dir.path().to_owned());
                    Some(dir)
                }
                _ => None,
            };
            let args: Vec<&str> = node_args.iter().map(String::as_str).collect();
            let node_a = NodeProcess::start_args(twill_bin, &ns_a, cfg_a, &args)?;
            let node_b = NodeProcess::start_args(twill_bin, &ns_b, cfg_b, &args)?;
            let (pod_a, pod_b) = if system == System::TwillVxlanPol {
                let id = |pod: &str| format!("{}/{pod}", policy::NAMESPACE);
                (
                    Pod::attach_args(&node_a, "twl-bench-pa", &["--pod", &id("a")])?,
                    Pod::attach_args(&node_b, "twl-bench-pb", &["--pod", &id("b")])?,
                )
            } else {
                (
                    Pod::attach(&node_a, "twl-bench-pa")?,
                    Pod::attach(&node_b, "twl-bench-pb")?,
                )
            };
            let server_ip = pod_b.ip();
            let target = match (&objects, system) {
                (Some(dir), System::TwillVxlanSvc) => {
                    service::add_bench_service(dir.path(), server_ip, "node-b")?;
                    CLUSTER_IP
                }
                // twill-vxlan-pol: the Pods and policies once the
                // topology has been checked without them.
                _ => server_ip,
            };
            let pod_mtu = pod_a.info().map(|i| i.mtu).unwrap_or(0);
            Ok(Topology {
                pod_a: PodGuard::Twill(pod_a),
                pod_b: PodGuard::Twill(pod_b),
                nodes: vec![node_a, node_b],
                objects,
                ns_b,
                ns_a,
                server_ip,
                target,
                pod_mtu,
            })
        }
        System::KernelVxlan => {
            let kn_a = KernelVxlanNode::new_among_kernels(&ns_a, ip_a, net_a, 1, 8472)?;
            let kn_b = KernelVxlanNode::new_among_kernels(&ns_b, ip_b, net_b, 1, 8472)?;
            kn_a.add_peer(net_b, ip_b, kn_b.vtep_mac())?;
            kn_b.add_peer(net_a, ip_a, kn_a.vtep_mac())?;
            let pod_a = kn_a.add_pod()?;
            let pod_b = kn_b.add_pod()?;
            Ok(Topology {
                server_ip: pod_b.ip(),
                target: pod_b.ip(),
                pod_mtu: kn_a.mtu(),
                pod_a: PodGuard::Kernel(pod_a),
                pod_b: PodGuard::Kernel(pod_b),
                nodes: Vec::new(),
                objects: None,
                ns_b,
                ns_a,
            })
        }
        System::Floor => {
            let (pod_ip_a, pod_ip_b) = (nth_host(net_a, 2), nth_host(net_b, 2));
            let pod_a = floor::FloorNode::start(&ns_a, ip_a, ip_b, "twl-bench-pa", pod_ip_a)?;
            let pod_b = floor::FloorNode::start(&ns_b, ip_b, ip_a, "twl-bench-pb", pod_ip_b)?;
            Ok(Topology {
                pod_a: PodGuard::Floor(pod_a),
                pod_b: PodGuard::Floor(pod_b),
                nodes: Vec::new(),
                objects: None,
                ns_b,
                ns_a,
                server_ip: pod_ip_b,
                target: pod_ip_b,
                pod_mtu: floor::POD_MTU,
            })
        }
        System::Direct => {
            let pod_a = plain_pod(&ns_a, "twl-bench-pa", net_a)?;
            let pod_b = plain_pod(&ns_b, "twl-bench-pb", net_b)?;
            ns_a.ip(&["route", "add", &net_b.to_string(), "via", &ip_b.to_string()])?;
            ns_b.ip(&["route", "add", &net_a.to_string(), "via", &ip_a.to_string()])?;
            Ok(Topology {
                pod_a: PodGuard::Plain(pod_a),
                pod_b: PodGuard::Plain(pod_b),
                nodes: Vec::new(),
                objects: None,
                ns_b,
                ns_a,
                server_ip: nth_host(net_b, 2),
                target: nth_host(net_b, 2),
                pod_mtu: 1500,
            })
        }
    }
}

/// A pod namespace on a veth whose node end holds the subnet's .1 and is
/// routed by the node's kernel; the pod gets .2 and a default route via .1.
fn plain_pod(node: &Netns, prefix: &str, net: Ipv4Net) -> Result<Netns> {
    let pod = Netns::new(prefix)?;
    let host_if = unique_ifname("veth");
    Veth::create(&pod, "eth0", node, &host_if)?;
    let len = net.prefix_len();
    addr_up(node, &host_if, nth_host(net, 1), len)?;
    addr_up(&pod, "eth0", nth_host(net, 2), len)?;
    pod.ip(&[
        "route",
        "add",
        "default",
        "via",
        &nth_host(net, 1).to_string(),
    ])?;
    node.sysctl("net.ipv4.ip_forward", "1")?;
    Ok(pod)
}

fn bench_system(
    system: System,
    opts: &BenchOptions,
    stop: &AtomicBool,
    res: &mut SystemResult,
) -> Result<()> {
    let name = system.name();
    progress!("[{name}] building the topology");
    let node_args: Vec<String> = opts
        .node_args
        .iter()
        .cloned()
        .chain(opts.observe.node_args())
        .collect();
    let topo = build(system, &opts.twill_bin, &node_args)?;
    res.pod_mtu = Some(topo.pod_mtu);
    check(stop)?;
    let (client, server) = (topo.pod_a.netns(), topo.pod_b.netns());
    let (server_ip, ip) = (topo.server_ip, topo.target);
    res.target = Some(ip.to_string());
    progress!(
        "[{name}] pod {} -> pod {server_ip} (MTU {}), checking connectivity",
        client.name(),
        topo.pod_mtu
    );
    // ICMP to pod B itself: a Service does not answer echo requests (and
    // the policies, applied after this check, allow none).
    ping(client, server_ip, 3).context("pod A cannot reach pod B")?;
    check(stop)?;
    match (&topo.objects, system) {
        (Some(_), System::TwillVxlanSvc) => {
            progress!("[{name}] waiting for the agents to balance {ip} to pod {server_ip}");
            service::wait_for_service(&topo.nodes, stop)?;
            progress!("[{name}] clients connect to the ClusterIP {ip}");
        }
        (Some(dir), _) => {
            progress!(
                "[{name}] applying {} NetworkPolicies, waiting for both agents to compile them",
                policy::POLICIES
            );
            let setup = policy::install(
                &topo.nodes,
                dir.path(),
                client,
                server,
                server_ip,
                &mut res.commands,
                stop,
            )?;
            progress!("[{name}]   {}", report::policy_setup(&setup));
            res.policy = Some(setup);
        }
        (None, _) => {}
    }
    // Declared after `topo`, so dropped (killed) before the namespaces go.
    let _server = measure::IperfServer::start(server, server_ip, &mut res.commands)?;
    let secs = opts.duration.as_secs().max(1);
    let observer = match (opts.observe.any(), topo.nodes.first()) {
        (true, Some(node_a)) => {
            let pod_a = match &topo.pod_a {
                PodGuard::Twill(p) => Some(p),
                _ => None,
            };
            progress!("[{name}] watched: {:?}", opts.observe);
            Some(observe::Observer::start(
                &opts.observe,
                &topo.ns_a,
                node_a,
                pod_a,
            )?)
        }
        _ => None,
    };

    let probe = topo.loss_probe();
    for (streams, slot, loss_slot) in [
        (1u32, &mut res.tcp1, &mut res.tcp1_loss),
        (4, &mut res.tcp4, &mut res.tcp4_loss),
    ] {
        check(stop)?;
        progress!("[{name}] TCP, {streams} stream(s), {secs} s …");
        let extra: &[&str] = if streams > 1 { &["-P", "4"] } else { &[] };
        let before = probe.sample();
        let tcp = measure::iperf(client, ip, secs, extra, &mut res.commands, stop)
            .and_then(|(v, cpu)| measure::tcp_result(&v, cpu));
        let after = probe.sample();
        let retransmits = tcp.as_ref().ok().and_then(|t| t.retransmits);
        match tcp {
            Ok(t) => {
                progress!(
                    "[{name}]   {:.2} Gbit/s, {:.2} CPU s/Gbit",
                    t.gbit_per_s,
                    t.cpu_s_per_gbit
                );
                *slot = Some(t);
            }
            Err(e) => record(&mut res.errors, name, &format!("TCP {streams}"), e),
        }
        let loss = loss::TcpLoss::between(&before, &after, retransmits);
        if loss.any() {
            progress!("[{name}]   {}", report::tcp_loss_places(&loss));
        }
        *loss_slot = Some(loss);
        pause(stop);
    }

    check(stop)?;
    progress!("[{name}] UDP, {UDP_LEN}-byte payloads, unlimited rate, {secs} s …");
    let len = UDP_LEN.to_string();
    let udp_args = ["-u", "-l", len.as_str(), "-b", "0"];
    let before = probe.sample();
    let udp = measure::iperf(client, ip, secs, &udp_args, &mut res.commands, stop)
        .and_then(|(v, cpu)| measure::udp_result(&v, cpu));
    let after = probe.sample();
    match udp {
        Ok(u) => {
            progress!(
                "[{name}]   {:.0} packets/s received ({:.0} sent, {:.1} % lost)",
                u.received_pps,
                u.sent_pps,
                u.lost_percent
            );
            res.udp64 = Some(u);
        }
        Err(e) => record(&mut res.errors, name, "UDP 64", e),
    }
    let lost = res.udp64.as_ref().map(|u| u.lost_packets);
    let udp_loss = loss::UdpLoss::between(&before, &after, lost);
    for what in &udp_loss.unreadable {
        progress!("[{name}]   warning: loss counter not read: {what}");
    }
    progress!("[{name}]   lost: {}", report::loss_places(&udp_loss));
    res.udp64_loss = Some(udp_loss);
    pause(stop);

    check(stop)?;
    progress!("[{name}] TCP request/response, 1 byte each way, {RR_ROUNDS} rounds …");
    res.commands.push(format!(
        "(in-process) TCP 1-byte request/response, {RR_WARMUP} warm-up + {RR_ROUNDS} rounds, \
         pod A -> {ip}:{RR_PORT}, TCP_NODELAY"
    ));
    match measure::request_response(client, server, server_ip, ip, stop) {
        Ok(l) => {
            progress!(
                "[{name}]   mean {:.1} µs, p50 {:.1} µs, p99 {:.1} µs",
                l.mean_us,
                l.p50_us,
                l.p99_us
            );
            res.rr = Some(l);
        }
        Err(e) => record(&mut res.errors, name, "request/response", e),
    }
    pause(stop);

    check(stop)?;
    progress!("[{name}] new TCP connections (connect, 1 byte each way, close), {secs} s …");
    res.commands.push(format!(
        "(in-process) TCP connect + 1-byte request/response + close in a loop for {secs} s, \
         pod A -> {ip}:{CONN_PORT}, the server closes first"
    ));
    match measure::connection_rate(client, server, server_ip, ip, opts.duration, stop) {
        Ok(c) => {
            progress!(
                "[{name}]   {:.0} conn/s (p50 {:.0} µs, p99 {:.0} µs, {} failed)",
                c.conn_per_s,
                c.p50_us,
                c.p99_us,
                c.failed
            );
            res.conn = Some(c);
        }
        Err(e) => record(&mut res.errors, name, "connections/s", e),
    }
    // The policies allow A -> B on the tests' TCP and UDP ports only.
    let paced = if res.policy.is_some() {
        &[][..]
    } else {
        &PACED[..]
    };
    for &(interval, count) in paced {
        check(stop)?;
        progress!(
            "[{name}] paced pings, one every {} ms, {count} of them …",
            interval.as_millis()
        );
        match measure::paced(
            client,
            server_ip,
            interval,
            count,
            &topo.nodes,
            &mut res.commands,
        ) {
            Ok(p) => {
                progress!(
                    "[{name}]   p50 {:.0} µs, p99 {:.0} µs{}",
                    p.p50_us,
                    p.p99_us,
                    p.wakeups_per_rt.map_or(String::new(), |w| format!(
                        ", {w:.1} wake-ups per round trip"
                    ))
                );
                res.paced.push(p);
            }
            Err(e) => record(&mut res.errors, name, "paced pings", e),
        }
    }
    if let Some(o) = observer {
        let w = o.finish();
        progress!(
            "[{name}]   watched: {} scrapes ({} failed, slowest {:.1} ms); capture: {}",
            w.scrapes,
            w.scrape_errors,
            w.scrape_max_ms,
            w.capture.as_deref().unwrap_or("none")
        );
        res.watched = Some(w);
    }
    if topo.objects.is_some() {
        for node in &topo.nodes {
            match node.counters() {
                Ok(c) => res
                    .agent_counters
                    .push(serde_json::to_value(c).unwrap_or_default()),
                Err(e) => record(&mut res.errors, name, "counters", e),
            }
        }
    }
    if let (Some(setup), true) = (&res.policy, res.agent_counters.len() == topo.nodes.len()) {
        let [ingress, egress] = report::test_policy_drops(setup, &res.agent_counters);
        if ingress + egress > 0 {
            let e = anyhow!(
                "the policies dropped {ingress} packet(s) on ingress and {egress} on egress \
                 during the tests; every test flow is allowed A -> B and its replies tracked, \
                 so there should be none"
            );
            record(&mut res.errors, name, "policy drops", e);
        }
    }
    for pod in [&topo.pod_a, &topo.pod_b] {
        if let PodGuard::Floor(f) = pod {
            let (send, write) = f.drops();
            if send + write > 0 {
                progress!(
                    "[{name}]   the floor in {} dropped {send} frame(s) whose send failed and \
                     {write} whose TAP write failed",
                    f.pod().name()
                );
            }
        }
    }
    check(stop)?;
    progress!("[{name}] tearing down");
    Ok(())
}

fn record(errors: &mut Vec<String>, system: &str, what: &str, e: anyhow::Error) {
    progress!("[{system}]   {what} FAILED: {e:#}");
    errors.push(format!("{what}: {e:#}"));
}

/// A short pause between tests (lets TIME_WAIT sockets and queues settle),
/// cut short by an interruption.
fn pause(stop: &AtomicBool) {
    for _ in 0..5 {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_names_round_trip() {
        for s in System::ALL {
            assert_eq!(System::from_name(s.name()).ok(), Some(s));
        }
        assert!(System::from_name("flannel").is_err());
        let names: Vec<&str> = System::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(System::ALL_NAMES, names.join(","));
    }
}
