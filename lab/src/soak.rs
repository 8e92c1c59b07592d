//! `twill soak`: hours of a node's life in minutes. Two leased nodes and a
//! controller on one LAN; pods come and go through the CNI plugin on both
//! nodes without pause, iperf3 runs between two long-lived pods, leases
//! renew every few seconds, and node B is killed with SIGKILL and started
//! again at an interval. Every ten seconds the agents' memory, file
//! descriptors, threads, attachments and log volume are sampled.
//!
//! What must hold at the end (the verdict): node A, which is never killed,
//! holds at the quietest moment of the last minute no more file
//! descriptors and threads than at the busiest of the minute after warm-up
//! and at most 25 % more resident memory; once churn stops, each node holds exactly
//! its long-lived pod (no address leaked, also for pods whose DEL failed
//! while B was down: their namespaces vanish and the agent reaps them);
//! and the logs grew by at most [`MAX_LOG_LINES_PER_MIN`] lines a minute
//! beside [`LOG_LINES_PER_POD`] per pod that came and went.

use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cmd::{self, Reaped};
use crate::cni::CniInstall;
use crate::lan::Lan;
use crate::netns::Netns;
use crate::node::{NodeConfig, NodeProcess, PlaneConfig};
use crate::pod::Pod;
use crate::service::Service;

/// The log growth the verdict allows per node, beside the pods' own lines.
pub const MAX_LOG_LINES_PER_MIN: f64 = 30.0;
/// The lines a pod's attachment and detachment may take (one each).
pub const LOG_LINES_PER_POD: f64 = 2.0;
/// How often the agents are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Lease time to live: renewals every few seconds.
const LEASE_TTL_SECS: u64 = 10;
const TOKEN: &str = "soak-token-0123456789";

/// What to run.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// The `twill` executable the nodes run.
    pub twill_bin: PathBuf,
    /// How long.
    pub duration: Duration,
    /// How often node B is killed and restarted.
    pub kill_every: Duration,
    /// iperf3's target rate between the long-lived pods (`-b`), so that
    /// traffic does not starve the churn on a small machine.
    pub iperf_rate: String,
}

/// A log message (level, target and text, without fields) and how often
/// it was logged.
pub type Frequent = (String, u64);

/// How one sampled figure is read, what it is called, and how far (in %
/// of the warm-up value) it may grow.
type Check = (&'static str, fn(&Sample) -> u64, u64);

/// One sample of one agent.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// Resident memory, KiB.
    pub rss_kib: u64,
    /// Open file descriptors.
    pub fds: u64,
    /// Threads.
    pub threads: u64,
    /// Attachments the agent holds.
    pub pods: u64,
    /// Lines in its log.
    pub log_lines: u64,
}

/// What the soak measured.
#[derive(Debug, Clone, Default)]
pub struct SoakReport {
    /// Seconds from the start, and node A's and node B's samples (B's is
    /// `None` while it is down).
    pub samples: Vec<(f64, Sample, Option<Sample>)>,
    /// CNI ADD+DEL cycles that completed, and those that failed (mostly
    /// while B was down).
    pub cycles_ok: u64,
    /// Cycles with a failed ADD, ping or DEL.
    pub cycles_failed: u64,
    /// Kills of node B.
    pub kills: u64,
    /// iperf3 runs that completed, and failed.
    pub iperf_ok: u64,
    /// iperf3 runs that failed (B was killed under them).
    pub iperf_failed: u64,
    /// Attachments left on A and B after churn stopped (1 each is right).
    pub pods_left: (u64, u64),
    /// Pods node B reaped because their namespace vanished.
    pub vanished_b: u64,
    /// Lines each node logged.
    pub log_lines: (u64, u64),
    /// The messages node A and node B logged most.
    pub top_messages: (Vec<Frequent>, Vec<Frequent>),
}

impl SoakReport {
    /// The verdict's failures, empty when everything held.
    pub fn failures(&self, minutes: f64) -> Vec<String> {
        let mut f = Vec::new();
        // A leak shows as the low values creeping up: what the agent
        // holds at the quietest moment of the last minute against the
        // busiest of the minute after warm-up (connections in flight and
        // tokio's short-lived blocking threads come and go).
        let a: Vec<Sample> = self.samples.iter().map(|s| s.1).collect();
        let warm = a.len().min(6)..a.len().min(12);
        let last = a.len().saturating_sub(6)..a.len();
        if warm.is_empty() || last.start < warm.end {
            f.push(format!("too short to judge: {} samples", a.len()));
            return f;
        }
        let max = |r: std::ops::Range<usize>, k: fn(&Sample) -> u64| {
            a[r].iter().map(k).max().unwrap_or(0)
        };
        let min = |r: std::ops::Range<usize>, k: fn(&Sample) -> u64| {
            a[r].iter().map(k).min().unwrap_or(0)
        };
        let checks: [Check; 3] = [
            ("fds", |s| s.fds, 100),
            ("threads", |s| s.threads, 100),
            ("RSS (KiB)", |s| s.rss_kib, 125),
        ];
        for (what, k, pct) in checks {
            let (before, after) = (max(warm.clone(), k), min(last.clone(), k));
            if after * 100 > before * pct {
                f.push(format!("node A's {what} grew from {before} to {after}"));
            }
        }
        if self.pods_left != (1, 1) {
            f.push(format!(
                "attachments left after churn: A {}, B {} (1 each expected)",
                self.pods_left.0, self.pods_left.1
            ));
        }
        // A line each for a pod's attach and detach is the log's job; the
        // rest must not grow with time or with traffic.
        let cycles = (self.cycles_ok + self.cycles_failed) as f64 / 2.0;
        let allowed = MAX_LOG_LINES_PER_MIN * minutes.max(1.0) + LOG_LINES_PER_POD * cycles;
        for (node, lines) in [("A", self.log_lines.0), ("B", self.log_lines.1)] {
            if lines as f64 > allowed {
                f.push(format!(
                    "node {node} logged {lines} lines in {minutes:.1} min (allowed: {allowed:.0})"
                ));
            }
        }
        if self.cycles_ok == 0 {
            f.push("no pod churn cycle completed".into());
        }
        f
    }
}

/// Runs the soak and prints a line per sample; the report at the end.
pub fn run(opts: &SoakOptions) -> Result<SoakReport> {
    if !crate::is_root() {
        bail!("the soak builds network namespaces and needs root (try sudo)");
    }
    let interrupted = crate::cmd::install_stop_handler()?;
    for gone in crate::names::cleanup_stale() {
        println!("removed a leftover of an earlier, killed run: {gone}");
    }
    let bin = &opts.twill_bin;
    // Declaration order is teardown order reversed.
    let hub_ip = Ipv4Addr::new(192, 168, 124, 254);
    let lan = Lan::new("twl-soak-hub", hub_ip, 24)?;
    let ns_a = Netns::new("twl-soak-a")?;
    let ns_b = Netns::new("twl-soak-b")?;
    let (ip_a, ip_b) = (
        Ipv4Addr::new(192, 168, 124, 1),
        Ipv4Addr::new(192, 168, 124, 2),
    );
    lan.join(&ns_a, ip_a)?;
    lan.join(&ns_b, ip_b)?;
    let listen = SocketAddrV4::new(hub_ip, 8765);
    let net_conf = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;
    let controller = Service::controller(bin, lan.hub(), listen, net_conf, TOKEN)?;
    let plane = PlaneConfig::Controller {
        url: format!("http://{listen}"),
        token_file: controller.dir().join("token"),
    };
    let leased = |name: &str, ip| {
        let mut c = NodeConfig::leased(name, ip, plane.clone());
        c.lease_ttl_secs = Some(LEASE_TTL_SECS);
        c
    };
    let node_a = NodeProcess::start(bin, &ns_a, leased("node-a", ip_a))?;
    let mut node_b = NodeProcess::start(bin, &ns_b, leased("node-b", ip_b))?;
    let cni_a = CniInstall::new(bin, node_a.socket(), true)?;
    let cni_b = CniInstall::new(bin, node_b.socket(), true)?;
    let a1 = Pod::attach(&node_a, "twl-soak-a1")?;
    let b1 = Pod::attach(&node_b, "twl-soak-b1")?;
    crate::traffic::ping(a1.netns(), b1.ip(), 2).context("a1 reaches b1 before the soak")?;
    let _server = Reaped(
        b1.netns()
            .command("iperf3")
            .args(["-s", "-B", &b1.ip().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting iperf3 -s in b1")?,
    );

    let t0 = Instant::now();
    let end = t0 + opts.duration;
    let stop = AtomicBool::new(false);
    let counts = Counts::default();
    let mut report = SoakReport::default();
    let result = std::thread::scope(|s| -> Result<()> {
        let churn = s.spawn(|| churn(&[&cni_a, &cni_b], a1.ip(), &stop, &counts));
        let iperf = s.spawn(|| iperf(&a1, b1.ip(), &opts.iperf_rate, &stop, &counts));
        let outcome = supervise(
            opts,
            &node_a,
            &mut node_b,
            t0,
            end,
            &interrupted,
            &mut report,
        );
        stop.store(true, Relaxed);
        let churned = churn.join();
        let _ = iperf.join();
        outcome?;
        match churned {
            Ok(r) => r,
            Err(_) => bail!("the churn thread panicked"),
        }
    });
    result?;
    report.cycles_ok = counts.cycles_ok.load(Relaxed);
    report.cycles_failed = counts.cycles_failed.load(Relaxed);
    report.iperf_ok = counts.iperf_ok.load(Relaxed);
    report.iperf_failed = counts.iperf_failed.load(Relaxed);

    // Pods whose DEL failed while B was down had their namespaces deleted:
    // the agent reaps them within seconds.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        report.pods_left = (pod_count(&node_a)?, pod_count(&node_b)?);
        if report.pods_left == (1, 1) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    report.vanished_b = node_b.counters()?.pods.vanished;
    report.log_lines = (lines(node_a.log_path()), lines(node_b.log_path()));
    report.top_messages = (
        top_messages(node_a.log_path()),
        top_messages(node_b.log_path()),
    );
    Ok(report)
}

/// The five most frequent messages of a log: each line's level, target and
/// message without its fields (`key=value`) and timestamp.
fn top_messages(path: &Path) -> Vec<Frequent> {
    let text = fs::read_to_string(path).unwrap_or_default();
    let mut counts = std::collections::HashMap::<String, u64>::new();
    for line in text.lines() {
        let words: Vec<&str> = line
            .split_whitespace()
            .skip(1)
            .take_while(|w| !w.contains('='))
            .collect();
        *counts.entry(words.join(" ")).or_default() += 1;
    }
    let mut v: Vec<_> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(5);
    v
}

#[derive(Debug, Default)]
struct Counts {
    cycles_ok: AtomicU64,
    cycles_failed: AtomicU64,
    iperf_ok: AtomicU64,
    iperf_failed: AtomicU64,
}

/// Samples every [`SAMPLE_EVERY`] and kills node B every
/// `opts.kill_every`, until `end`.
fn supervise(
    opts: &SoakOptions,
    node_a: &NodeProcess,
    node_b: &mut NodeProcess,
    t0: Instant,
    end: Instant,
    interrupted: &AtomicBool,
    report: &mut SoakReport,
) -> Result<()> {
    println!(
        "{:>6}  {:>9} {:>4} {:>4} {:>5} {:>6}   {:>9} {:>4} {:>4} {:>5} {:>6}",
        "t (s)", "A rss KiB", "fds", "thr", "pods", "log", "B rss KiB", "fds", "thr", "pods", "log"
    );
    let mut next_kill = t0 + opts.kill_every;
    let mut next_sample = t0;
    while Instant::now() < end {
        if interrupted.load(Relaxed) {
            bail!("interrupted: cleaning up");
        }
        let now = Instant::now();
        if now >= next_sample {
            next_sample += SAMPLE_EVERY;
            let a = sample(node_a)?;
            let b = sample(node_b).ok();
            let t = t0.elapsed().as_secs_f64();
            let bcols = b.map_or_else(
                || format!("{:>9}", "(down)"),
                |b| {
                    format!(
                        "{:>9} {:>4} {:>4} {:>5} {:>6}",
                        b.rss_kib, b.fds, b.threads, b.pods, b.log_lines
                    )
                },
            );
            println!(
                "{t:>6.0}  {:>9} {:>4} {:>4} {:>5} {:>6}   {bcols}",
                a.rss_kib, a.fds, a.threads, a.pods, a.log_lines
            );
            report.samples.push((t, a, b));
        }
        if now >= next_kill {
            next_kill += opts.kill_every;
            node_b.kill();
            report.kills += 1;
            // Down a moment, as a crash-looping pod of a DaemonSet is.
            std::thread::sleep(Duration::from_secs(2));
            node_b
                .restart()
                .context("restarting node B after kill -9")?;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn sample(node: &NodeProcess) -> Result<Sample> {
    let pid = node.pid().context("the node is not running")?;
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(Sample {
        rss_kib: field("VmRSS:"),
        threads: field("Threads:"),
        fds: fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64,
        pods: pod_count(node)?,
        log_lines: lines(node.log_path()),
    })
}

fn pod_count(node: &NodeProcess) -> Result<u64> {
    let sock = node.socket().display().to_string();
    let out = node.cli(&["pod", "list", "--socket", &sock])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("parsing twill pod list")?;
    Ok(v.as_array().map_or(0, |a| a.len() as u64))
}

fn lines(path: &Path) -> u64 {
    fs::read(path).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count() as u64)
}

/// CNI ADD, one ping to `target`, CNI DEL and the namespace deleted, on
/// each installation in turn, until `stop`.
fn churn(cnis: &[&CniInstall], target: Ipv4Addr, stop: &AtomicBool, counts: &Counts) -> Result<()> {
    let runtimes = cnis
        .iter()
        .map(|c| c.runtime())
        .collect::<Result<Vec<_>>>()?;
    let mut i = 0u64;
    while !stop.load(Relaxed) {
        let rt = &runtimes[(i % runtimes.len() as u64) as usize];
        i += 1;
        let ns = Netns::new("twl-soak-c")?;
        let path = ns.path().display().to_string();
        let ctr = format!("soak-{i}");
        let added = rt.add(&ctr, &path, "eth0").and_then(|o| o.ok().map(|_| ()));
        let pinged = added.is_ok() && ping_once(&ns, target);
        let deleted = rt
            .del(&ctr, Some(&path), "eth0", None)
            .and_then(|o| o.ok().map(|_| ()));
        let n = if added.is_ok() && pinged && deleted.is_ok() {
            &counts.cycles_ok
        } else {
            &counts.cycles_failed
        };
        n.fetch_add(1, Relaxed);
        drop(ns);
    }
    Ok(())
}

fn ping_once(ns: &Netns, to: Ipv4Addr) -> bool {
    let mut c = ns.command("ping");
    c.args(["-n", "-q", "-c", "1", "-W", "2", &to.to_string()]);
    cmd::run_timeout(c, Duration::from_secs(5)).is_ok_and(|o| o.status.success())
}

/// iperf3 from `from` to `to` in 10-second runs, until `stop`.
fn iperf(from: &Pod, to: Ipv4Addr, rate: &str, stop: &AtomicBool, counts: &Counts) {
    while !stop.load(Relaxed) {
        let mut c: Command = from.netns().command("iperf3");
        c.args([
            "-c",
            &to.to_string(),
            "-t",
            "10",
            "-b",
            rate,
            "--connect-timeout",
            "2000",
        ]);
        let ok = cmd::run_timeout(c, Duration::from_secs(30)).is_ok_and(|o| o.status.success());
        let n = if ok {
            &counts.iperf_ok
        } else {
            std::thread::sleep(Duration::from_secs(1));
            &counts.iperf_failed
        };
        n.fetch_add(1, Relaxed);
    }
}
