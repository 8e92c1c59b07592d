//! `twill demo`: the embedded controller and two nodes that lease their
//! subnets from it, four pods, all in network namespaces on this host; a
//! ping and a verified TCP transfer over every path, each node's counters,
//! and a clean teardown (also on Ctrl-C or SIGTERM).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use crate::lan::Lan;
use crate::netns::Netns;
use crate::node::{NodeConfig, NodeProcess, PlaneConfig};
use crate::pod::Pod;
use crate::service::Service;
use crate::traffic::{ping, tcp_transfer_with, TransferOptions};

/// What `twill demo` was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoOptions {
    /// `"vxlan"` (default) or `"udp"`.
    pub backend: String,
    /// The `twill` binary the nodes run (the demo passes its own executable).
    pub twill_bin: PathBuf,
    /// Bytes per TCP transfer; each transfer also stops after 2.5 s.
    pub transfer_bytes: usize,
}

impl DemoOptions {
    /// vxlan, 200 MB per transfer.
    pub fn new(twill_bin: PathBuf) -> DemoOptions {
        DemoOptions {
            backend: "vxlan".into(),
            twill_bin,
            transfer_bytes: 200_000_000,
        }
    }
}

/// Longest time one TCP transfer of the demo may take.
const TRANSFER_CAP: Duration = Duration::from_millis(2500);

/// Runs the demo. Needs root. Returns an error if any path fails or when
/// interrupted; everything built is removed before this returns.
pub fn run(opts: DemoOptions) -> Result<()> {
    if !crate::is_root() {
        bail!("the demo builds network namespaces and needs root (try sudo)");
    }
    if opts.backend != "vxlan" && opts.backend != "udp" {
        bail!("unknown backend {:?} (vxlan or udp)", opts.backend);
    }
    if !opts.twill_bin.exists() {
        bail!("twill binary {} not found", opts.twill_bin.display());
    }
    let stop = crate::cmd::install_stop_handler()?;
    for gone in crate::names::cleanup_stale() {
        say!("removed a leftover of an earlier, killed run: {gone}");
    }
    let started = Instant::now();
    let res = build_and_measure(&opts, &stop);
    // All guards are dropped by now: nodes stopped, namespaces deleted.
    if stop.load(Ordering::SeqCst) {
        say!("\ninterrupted: everything the demo built has been removed");
        return Err(anyhow!("interrupted"));
    }
    match res {
        Ok(()) => {
            say!(
                "\ncleaned up: all namespaces removed ({:.1} s in total)",
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Err(e) => {
            say!("\ndemo failed; everything it built has been removed");
            Err(e)
        }
    }
}

fn check(stop: &AtomicBool) -> Result<()> {
    if stop.load(Ordering::SeqCst) {
        progress!("\ninterrupted: cleaning up …");
        bail!("interrupted");
    }
    Ok(())
}

/// The demo's bearer token between the nodes and the controller.
const TOKEN: &str = "twill-demo-token";

fn build_and_measure(opts: &DemoOptions, stop: &AtomicBool) -> Result<()> {
    let bin = &opts.twill_bin;
    say!("twill demo — backend {}\n", opts.backend);

    // Declaration order is teardown order reversed: pods, nodes, controller,
    // namespaces (the LAN's hub last).
    let hub_ip = Ipv4Addr::new(192, 168, 123, 254);
    let lan = Lan::new("twl-demo-hub", hub_ip, 24)?;
    let ns_a = Netns::new("twl-demo-a")?;
    let ns_b = Netns::new("twl-demo-b")?;
    let (ip_a, ip_b) = (
        Ipv4Addr::new(192, 168, 123, 1),
        Ipv4Addr::new(192, 168, 123, 2),
    );
    lan.join(&ns_a, ip_a)?;
    lan.join(&ns_b, ip_b)?;
    say!(
        "underlay   {} {ip_a}, {} {ip_b} and the hub {} {hub_ip} on one bridged LAN (MTU 1500)",
        ns_a.name(),
        ns_b.name(),
        lan.hub().name(),
    );
    check(stop)?;

    let listen = std::net::SocketAddrV4::new(hub_ip, 8765);
    let net_conf = format!(
        r#"{{"Network":"10.244.0.0/16","Backend":{{"Type":"{}"}}}}"#,
        opts.backend
    );
    let controller = Service::controller(bin, lan.hub(), listen, &net_conf, TOKEN)?;
    say!("controller twill controller on http://{listen} (network 10.244.0.0/16, /24 per node)");
    let plane = PlaneConfig::Controller {
        url: format!("http://{listen}"),
        token_file: controller.dir().join("token"),
    };
    let node_a = NodeProcess::start(
        bin,
        &ns_a,
        NodeConfig::leased("node-a", ip_a, plane.clone()),
    )?;
    let node_b = NodeProcess::start(bin, &ns_b, NodeConfig::leased("node-b", ip_b, plane))?;
    // Each node learns the other's lease from the controller's watch.
    let deadline = Instant::now() + Duration::from_secs(10);
    for node in [&node_a, &node_b] {
        while node.status()?.control["nodes"].as_u64() != Some(1) {
            check(stop)?;
            if Instant::now() > deadline {
                bail!(
                    "{} did not learn the other node from the controller",
                    node.config().name
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    for node in [&node_a, &node_b] {
        let c = node.config();
        say!(
            "node       {} in {}: leased subnet {}, gateway {}, host port {} {}, VTEP {}",
            c.name,
            node.netns(),
            c.subnet,
            c.gateway(),
            c.host_port,
            c.host_ip(),
            node.ready_status()
                .and_then(|s| s.vtep_mac.clone())
                .or_else(|| c.vtep_mac.clone())
                .unwrap_or_else(|| "-".into())
        );
    }
    check(stop)?;

    let a1 = Pod::attach(&node_a, "twl-demo-a1")?;
    let a2 = Pod::attach(&node_a, "twl-demo-a2")?;
    let b1 = Pod::attach(&node_b, "twl-demo-b1")?;
    let b2 = Pod::attach(&node_b, "twl-demo-b2")?;
    for (label, pod) in [("a1", &a1), ("a2", &a2), ("b1", &b1), ("b2", &b2)] {
        let (mac, mtu) = pod
            .info()
            .map(|i| (i.mac.clone(), i.mtu))
            .unwrap_or_default();
        say!(
            "pod {label}     {} in {} (eth0 {mac}, MTU {mtu})",
            pod.ip(),
            pod.netns().name()
        );
    }
    check(stop)?;

    say!(
        "\n{:<42} {:>10}   TCP, every byte verified",
        "path",
        "ping rtt"
    );
    let gw_a = node_a.config().gateway();
    let host_a = node_a.config().host_ip();
    let rows: [(&str, &Netns, Ipv4Addr, &Netns, bool); 7] = [
        (
            "pod a1 -> pod a2      (same node)",
            a1.netns(),
            a2.ip(),
            a2.netns(),
            true,
        ),
        (
            "pod a1 -> pod b1      (across nodes)",
            a1.netns(),
            b1.ip(),
            b1.netns(),
            true,
        ),
        (
            "pod b2 -> pod a2      (across nodes)",
            b2.netns(),
            a2.ip(),
            a2.netns(),
            true,
        ),
        (
            "host A -> pod a1      (own pod)",
            &ns_a,
            a1.ip(),
            a1.netns(),
            true,
        ),
        (
            "pod a2 -> host A      (its node, .2)",
            a2.netns(),
            host_a,
            &ns_a,
            true,
        ),
        (
            "host A -> pod b2      (other node's pod)",
            &ns_a,
            b2.ip(),
            b2.netns(),
            true,
        ),
        ("pod a1 -> gateway A", a1.netns(), gw_a, &ns_a, false),
    ];
    let mut failures = Vec::new();
    for (label, from, to, to_ns, tcp) in rows {
        check(stop)?;
        let rtt = match ping(from, to, 5) {
            Ok(r) => format!("{:.3} ms", r.rtt_avg_ms),
            Err(e) => {
                failures.push(format!("{label}: {e:#}"));
                "FAILED".into()
            }
        };
        let tput = if tcp {
            check(stop)?;
            let o = TransferOptions {
                bytes: opts.transfer_bytes,
                max_time: Some(TRANSFER_CAP),
                stall_timeout: Duration::from_secs(5),
            };
            match tcp_transfer_with(to_ns, to, from, o) {
                Ok(r) => format!(
                    "{:>7.2} Gbit/s  ({} MB in {:.2} s)",
                    r.gbit_per_s,
                    r.bytes / 1_000_000,
                    r.secs
                ),
                Err(e) => {
                    failures.push(format!("{label}: {e:#}"));
                    "FAILED".into()
                }
            }
        } else {
            "-".into()
        };
        say!("{label:<42} {rtt:>10}   {tput}");
    }

    for node in [&node_a, &node_b] {
        check(stop)?;
        say!("\ncounters of {}:", node.config().name);
        let sock = node.socket().to_string_lossy().into_owned();
        match node.cli(&["counters", "--socket", &sock]) {
            Ok(text) => {
                for line in text.lines() {
                    say!("  {line}");
                }
            }
            Err(e) => say!("  (unavailable: {e:#})"),
        }
    }

    if !failures.is_empty() {
        for f in &failures {
            progress!("FAILED {f}");
        }
        bail!("{} of the demo's checks failed", failures.len());
    }
    Ok(())
}
