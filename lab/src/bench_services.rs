//! `twill bench-services`: Services at scale on one node. A static `twill
//! node` in a namespace, two pods, and an `objects_dir` into which the
//! benchmark writes N Services × M endpoints (fake endpoints on other
//! nodes, one TCP port each), in steps (100, 1,000, 10,000, …, N). At each
//! step it waits until `twill status` shows every port applied, reads the
//! agent's memory and idle CPU, and times probes: one more Service whose
//! endpoint is a real UDP echo server in pod 2, from the file's rename to
//! the first datagram from pod 1 to its ClusterIP that is answered, beside
//! the agent's own `publish_ms`.
//!
//! Test infrastructure like the rest of the lab: traffic only between the
//! namespaces it creates; the namespace, the agent, the pods, the echo
//! server and the directory are guards removed on return, on error and on
//! Ctrl-C.

use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ipnet::Ipv4Net;
use serde::Serialize;
use serde_json::{json, Value};

use crate::link::addr_up;
use crate::manifests::{self, SvcEndpoint, SvcPort};
use crate::netns::Netns;
use crate::node::{NodeConfig, NodeProcess};
use crate::pod::Pod;
use crate::tempdir::TempDir;
use crate::traffic::udp_socket;

/// The steps at which the benchmark stops to measure (those below N, then N).
const STEPS: [usize; 3] = [100, 1_000, 10_000];
/// The bulk Services' port; their endpoints' port.
const BULK_PORT: SvcPort = SvcPort {
    name: "http",
    protocol: "TCP",
    port: 80,
    target_port: 8080,
};
/// The probes' port: pod 2's UDP echo server.
const ECHO_PORT: SvcPort = SvcPort {
    name: "echo",
    protocol: "UDP",
    port: 7,
    target_port: 7007,
};
/// How long one probe may take before it counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a step's bulk write may take to be applied.
const BULK_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the agent's idle CPU is sampled at each step.
const IDLE_SAMPLE: Duration = Duration::from_secs(3);
/// The DirStore's poll period (the agent reads the directory every second).
const POLL_PERIOD_MS: f64 = 1000.0;

/// What `twill bench-services` was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Services written (N).
    pub services: usize,
    /// Endpoints per Service (M).
    pub endpoints: usize,
    /// Services per manifest file.
    pub per_file: usize,
    /// Probes timed at each step.
    pub probes: usize,
    /// The `twill` binary the node runs.
    pub twill_bin: PathBuf,
    /// Extra arguments for `twill node`.
    pub node_args: Vec<String>,
    /// Also write the figures as JSON here.
    pub out: Option<PathBuf>,
}

/// One probe: one more Service, timed.
#[derive(Debug, Clone, Serialize)]
struct Probe {
    service: String,
    cluster_ip: String,
    /// Rename of the file → first datagram to the ClusterIP answered.
    first_answer_ms: f64,
    /// Datagrams sent until then (one every ~1 ms).
    datagrams_sent: u64,
    /// Rename of the file → `twill status` showing the port (polled every
    /// 20 ms, after the answer).
    status_ms: f64,
    /// The agent's `services.publish_ms` for that revision.
    publish_ms: Option<f64>,
    /// `twill status`'s `services` object then.
    status: Value,
}

/// One step: the figures at `existing` Services.
#[derive(Debug, Clone, Serialize)]
struct Step {
    /// Services in the directory before the probes (bulk + earlier probes).
    existing: usize,
    /// Bulk Services written at this step, and the rename of the last file
    /// → `twill status` showing them all.
    written: usize,
    bulk_apply_s: f64,
    bulk_publish_ms: Option<f64>,
    vm_rss_mib: f64,
    vm_hwm_mib: f64,
    /// The agent's CPU (all threads) while nothing changes: the poll's cost.
    idle_cpu_percent: f64,
    probes: Vec<Probe>,
}

/// Runs the benchmark. Needs root.
pub fn run(opts: Options) -> Result<()> {
    if !crate::is_root() {
        bail!("the benchmark builds network namespaces and needs root (try sudo)");
    }
    if opts.services == 0 || opts.endpoints == 0 || opts.per_file == 0 {
        bail!("--services, --endpoints and --per-file must be at least 1");
    }
    if opts.services + opts.probes * STEPS.len() + 1 > 1 << 16 {
        bail!("at most 65,000 Services (their ClusterIPs come from one /16)");
    }
    if !opts.twill_bin.exists() {
        bail!("twill binary {} not found", opts.twill_bin.display());
    }
    let stop = crate::cmd::install_stop_handler()?;
    for gone in crate::names::cleanup_stale() {
        progress!("removed a leftover of an earlier, killed run: {gone}");
    }
    let started = Instant::now();
    let outcome = bench(&opts, &stop);
    if stop.load(Ordering::SeqCst) {
        progress!("\ninterrupted: everything the benchmark built has been removed");
        return Err(anyhow!("interrupted"));
    }
    let steps = outcome?;
    say!("{}", table(&opts, &steps));
    if let Some(out) = &opts.out {
        let doc = json!({
            "services": opts.services,
            "endpoints_per_service": opts.endpoints,
            "services_per_file": opts.per_file,
            "probes_per_step": opts.probes,
            "twill_bin": opts.twill_bin.display().to_string(),
            "wall_time_s": started.elapsed().as_secs_f64(),
            "methods": {
                "first_answer_ms": "from the rename of the probe's manifest file (Service + \
                    EndpointSlice, one UDP port, endpoint: pod 2's echo server) to the first \
                    datagram from pod 1 to the ClusterIP answered from the ClusterIP; pod 1 \
                    sends one every ~1 ms; includes the DirStore's poll (every 1 s)",
                "publish_ms": "the agent's own figure, `services.publish_ms` of `twill status`",
                "vm_rss_mib": "VmRSS of /proc/PID/status of the agent; vm_hwm_mib its VmHWM",
                "idle_cpu_percent": "utime+stime of the agent (all threads) over 3 s without \
                    changes, / 3 s",
            },
            "steps": steps,
        });
        fs::write(out, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", out.display()))?;
        progress!("wrote {}", out.display());
    }
    progress!(
        "namespace, agent and files removed ({:.1} s in total)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn check(stop: &AtomicBool) -> Result<()> {
    if stop.load(Ordering::SeqCst) {
        progress!("\ninterrupted: cleaning up …");
        bail!("interrupted");
    }
    Ok(())
}

/// The node, its pods and its directory. Fields drop in declaration order:
/// the echo server, the pods, the agent, the directory, the namespace.
struct Lab {
    _echo: UdpEcho,
    pod1: Pod,
    pod2: Pod,
    node: NodeProcess,
    objects: TempDir,
    _ns: Netns,
}

fn build(opts: &Options) -> Result<Lab> {
    let ns = Netns::new("twl-svcb")?;
    let public_ip = Ipv4Addr::new(192, 168, 78, 1);
    // The underlay: a veth pair with both ends in the node's namespace (no
    // peer nodes; not every kernel has the dummy device).
    ns.ip(&[
        "link",
        "add",
        "underlay0",
        "type",
        "veth",
        "peer",
        "name",
        "underlay1",
    ])?;
    ns.ip(&["link", "set", "underlay1", "up"])?;
    addr_up(&ns, "underlay0", public_ip, 24)?;
    let objects = TempDir::new("svcbench-objects")?;
    let subnet = Ipv4Net::new(Ipv4Addr::new(10, 244, 1, 0), 24)?;
    let mut cfg = NodeConfig::new("node-a", public_ip, subnet, "vxlan");
    cfg.objects_dir = Some(objects.path().to_owned());
    let args: Vec<&str> = opts.node_args.iter().map(String::as_str).collect();
    let node = NodeProcess::start_args(&opts.twill_bin, &ns, cfg, &args)?;
    let pod1 = Pod::attach(&node, "twl-svcb-p1")?;
    let pod2 = Pod::attach(&node, "twl-svcb-p2")?;
    let echo = UdpEcho::start(
        pod2.netns(),
        SocketAddrV4::new(pod2.ip(), ECHO_PORT.target_port),
    )?;
    Ok(Lab {
        _echo: echo,
        pod1,
        pod2,
        node,
        objects,
        _ns: ns,
    })
}

fn bench(opts: &Options, stop: &AtomicBool) -> Result<Vec<Step>> {
    progress!(
        "building a static node with two pods; {} Services × {} endpoints to come",
        opts.services,
        opts.endpoints
    );
    let lab = build(opts)?;
    let pid = lab
        .node
        .pid()
        .ok_or_else(|| anyhow!("the agent is not running"))?;
    let levels = levels(opts.services);
    let mut bulk = 0usize;
    let mut probes = 0usize;
    let mut steps = Vec::new();
    for level in levels {
        check(stop)?;
        progress!("[{level}] writing Services {bulk}..{level}");
        let mut last = Instant::now();
        let written = level - bulk;
        while bulk < level {
            let end = (bulk + opts.per_file).min(level);
            let items = (bulk..end)
                .flat_map(|i| bulk_service(i, opts.endpoints))
                .collect();
            manifests::write(
                lab.objects.path(),
                &format!("bulk-{bulk:06}.json"),
                &manifests::list(items),
            )?;
            last = Instant::now();
            bulk = end;
        }
        let want = (bulk + probes) as u64;
        let status = wait_ports(&lab.node, want, last, BULK_TIMEOUT, stop)
            .with_context(|| format!("applying {level} Services"))?;
        let bulk_apply_s = last.elapsed().as_secs_f64();
        let bulk_publish_ms = status.get("publish_ms").and_then(Value::as_f64);
        progress!(
            "[{level}]   applied {} s after the last write (publish_ms {bulk_publish_ms:?})",
            fmt_s(bulk_apply_s)
        );
        let idle_cpu_percent = idle_cpu(pid, stop)?;
        let (vm_rss_mib, vm_hwm_mib) = memory(pid)?;
        progress!(
            "[{level}]   agent: VmRSS {vm_rss_mib:.1} MiB (peak {vm_hwm_mib:.1}), idle CPU \
             {idle_cpu_percent:.1} %"
        );
        let mut step = Step {
            existing: bulk + probes,
            written,
            bulk_apply_s,
            bulk_publish_ms,
            vm_rss_mib,
            vm_hwm_mib,
            idle_cpu_percent,
            probes: Vec::new(),
        };
        for _ in 0..opts.probes {
            check(stop)?;
            let p = probe(&lab, probes, bulk + probes, stop)?;
            progress!(
                "[{level}]   probe {}: first answer after {:.0} ms, publish_ms {:?}",
                p.service,
                p.first_answer_ms,
                p.publish_ms
            );
            step.probes.push(p);
            probes += 1;
        }
        steps.push(step);
    }
    progress!("tearing down");
    Ok(steps)
}

/// The steps for N Services: those of [`STEPS`] below N, then N.
fn levels(n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = STEPS.iter().copied().filter(|&s| s < n).collect();
    v.push(n);
    v
}

/// Bulk Service `i`: `default/svc-i` on 10.96.0.0 + 16 + i, its M
/// endpoints fake pods of other nodes (node-2 … node-251 with their /24 of
/// 10.244.0.0/16), the Service and its EndpointSlice.
fn bulk_service(i: usize, m: usize) -> [Value; 2] {
    let name = format!("svc-{i}");
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 16)) + i as u32);
    let endpoints: Vec<SvcEndpoint> = (0..m)
        .map(|j| {
            let e = i * m + j;
            let node = 2 + e % 250;
            let host = 3 + (e / 250) % 250;
            SvcEndpoint {
                ip: Ipv4Addr::new(10, 244, node as u8, host as u8),
                node: format!("node-{node}"),
            }
        })
        .collect();
    [
        manifests::service("default", &name, ip, &[BULK_PORT]),
        manifests::endpoint_slice("default", &name, &[BULK_PORT], &endpoints),
    ]
}

/// Probe `k`'s ClusterIP: 10.111.0.0 + 1 + k (inside 10.96.0.0/12, apart
/// from the bulk Services).
fn probe_ip(k: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 111, 0, 1)) + k as u32)
}

/// Writes probe Service `k` (endpoint: pod 2's echo server) and times it.
/// `existing` Services are in the directory before it.
fn probe(lab: &Lab, k: usize, existing: usize, stop: &AtomicBool) -> Result<Probe> {
    let name = format!("probe-{k}");
    let cluster_ip = probe_ip(k);
    let vip = SocketAddrV4::new(cluster_ip, ECHO_PORT.port);
    let sock = udp_socket(lab.pod1.netns(), SocketAddrV4::new(lab.pod1.ip(), 0))?;
    sock.set_read_timeout(Some(Duration::from_millis(1)))?;
    let endpoint = SvcEndpoint {
        ip: lab.pod2.ip(),
        node: "node-a".into(),
    };
    let doc = manifests::list(vec![
        manifests::service("default", &name, cluster_ip, &[ECHO_PORT]),
        manifests::endpoint_slice("default", &name, &[ECHO_PORT], &[endpoint]),
    ]);
    // The previous probe ended right after a poll; without a random wait
    // every write would wait for the whole next period.
    let delay = jitter(Duration::from_millis(POLL_PERIOD_MS as u64));
    let t = Instant::now();
    while t.elapsed() < delay {
        check(stop)?;
        thread::sleep(Duration::from_millis(10).min(delay.saturating_sub(t.elapsed())));
    }
    manifests::write(lab.objects.path(), &format!("{name}.json"), &doc)?;
    let written = Instant::now();
    let mut sent = 0u64;
    let mut buf = [0u8; 64];
    let answered = loop {
        if sent % 256 == 0 {
            check(stop)?;
            if written.elapsed() > PROBE_TIMEOUT {
                bail!(
                    "{vip} ({name}) not answered {PROBE_TIMEOUT:?} after its manifest was \
                     written ({sent} datagrams); agent log tail:\n{}",
                    lab.node.log_tail(30)
                );
            }
        }
        let msg = format!("probe {k} {sent}");
        // Before the Service exists the datagrams go nowhere; an ICMP error
        // reported on the socket is not a failure either.
        let _ = sock.send_to(msg.as_bytes(), vip);
        sent += 1;
        match sock.recv_from(&mut buf) {
            Ok((n, from)) if buf[..n].starts_with(format!("probe {k} ").as_bytes()) => {
                let t = written.elapsed();
                if from != std::net::SocketAddr::V4(vip) {
                    bail!("the answer to {vip} came from {from}, not from the ClusterIP");
                }
                break t;
            }
            Ok(_) | Err(_) => {}
        }
    };
    let want = (existing + 1) as u64;
    let status = wait_ports(&lab.node, want, written, PROBE_TIMEOUT, stop)?;
    let status_ms = written.elapsed().as_secs_f64() * 1e3;
    Ok(Probe {
        service: format!("default/{name}"),
        cluster_ip: cluster_ip.to_string(),
        first_answer_ms: answered.as_secs_f64() * 1e3,
        datagrams_sent: sent,
        status_ms,
        publish_ms: status.get("publish_ms").and_then(Value::as_f64),
        status,
    })
}

/// A random duration in [0, `max`) (std's randomly keyed hasher as the
/// source: no dependency for one number per probe).
fn jitter(max: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    let max_us = max.as_micros().max(1) as u64;
    Duration::from_micros(h.finish() % max_us)
}

/// Polls `twill status` until `services.ports` is `want`; returns the
/// `services` object.
fn wait_ports(
    node: &NodeProcess,
    want: u64,
    since: Instant,
    timeout: Duration,
    stop: &AtomicBool,
) -> Result<Value> {
    loop {
        check(stop)?;
        let last = match node.status_json() {
            Ok(v) => {
                let services = v.get("services").cloned().unwrap_or(Value::Null);
                if services.get("ports").and_then(Value::as_u64) == Some(want) {
                    return Ok(services);
                }
                services
            }
            Err(e) => json!(format!("{e:#}")),
        };
        if since.elapsed() > timeout {
            bail!(
                "`twill status` does not show {want} service ports after {timeout:?} \
                 (last `services`: {last}); agent log tail:\n{}",
                node.log_tail(30)
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// VmRSS and VmHWM of process `pid`, in MiB.
fn memory(pid: u32) -> Result<(f64, f64)> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let kib = |key: &str| -> Result<f64> {
        let line = text
            .lines()
            .find(|l| l.starts_with(key))
            .ok_or_else(|| anyhow!("no {key} in {path}"))?;
        parse_kib(line).ok_or_else(|| anyhow!("cannot read {line:?} of {path}"))
    };
    Ok((kib("VmRSS:")? / 1024.0, kib("VmHWM:")? / 1024.0))
}

/// `VmRSS:   12345 kB` → 12345.
fn parse_kib(line: &str) -> Option<f64> {
    let mut parts = line.split_whitespace().skip(1);
    let v = parts.next()?.parse().ok()?;
    (parts.next()? == "kB").then_some(v)
}

/// utime + stime of process `pid` (all threads), in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_stat_ticks(&text).ok_or_else(|| anyhow!("cannot read {path}: {text}"))
}

/// Fields 14 and 15 (utime, stime) of a /proc/PID/stat line, read after the
/// command name (which may hold spaces and parentheses).
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The agent's CPU use over [`IDLE_SAMPLE`], in percent of one CPU
/// (USER_HZ = 100 ticks per second).
fn idle_cpu(pid: u32, stop: &AtomicBool) -> Result<f64> {
    let before = cpu_ticks(pid)?;
    let t = Instant::now();
    while t.elapsed() < IDLE_SAMPLE {
        check(stop)?;
        thread::sleep(Duration::from_millis(100));
    }
    let ticks = cpu_ticks(pid)?.saturating_sub(before);
    Ok(ticks as f64 / t.elapsed().as_secs_f64())
}

/// A UDP echo server in a namespace; stopped and joined on drop.
struct UdpEcho {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl UdpEcho {
    fn start(ns: &Netns, addr: SocketAddrV4) -> Result<UdpEcho> {
        let sock: UdpSocket = udp_socket(ns, addr)?;
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    // A lost answer is the prober's to notice.
                    let _ = sock.send_to(&buf[..n], from);
                }
            }
        });
        Ok(UdpEcho {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn fmt_s(s: f64) -> String {
    format!("{s:.2}")
}

/// p50 and max of `v` (NaN when empty).
fn p50_max(mut v: Vec<f64>) -> (f64, f64) {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    (v[(v.len() - 1) / 2], v[v.len() - 1])
}

fn table(opts: &Options, steps: &[Step]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\ntwill bench-services: one static node, {} Services × {} endpoints (one TCP port \
         each), {} per manifest file, {} probes per step\n",
        opts.services, opts.endpoints, opts.per_file, opts.probes
    );
    let _ = writeln!(
        s,
        "{:>9} {:>11} {:>16} {:>10} {:>26} {:>18} {:>22}",
        "existing",
        "bulk apply",
        "RSS MiB (peak)",
        "idle CPU",
        "first answer min/p50/max",
        "publish_ms p50/max",
        "answer − publish min"
    );
    for st in steps {
        let answers: Vec<f64> = st.probes.iter().map(|p| p.first_answer_ms).collect();
        let publish: Vec<f64> = st.probes.iter().filter_map(|p| p.publish_ms).collect();
        let rest: Vec<f64> = st
            .probes
            .iter()
            .filter_map(|p| p.publish_ms.map(|m| p.first_answer_ms - m))
            .collect();
        let amin = answers.iter().copied().fold(f64::NAN, f64::min);
        let rmin = rest.iter().copied().fold(f64::NAN, f64::min);
        let (a50, amax) = p50_max(answers);
        let (p50, pmax) = p50_max(publish);
        let _ = writeln!(
            s,
            "{:>9} {:>9} s {:>16} {:>8.1} % {:>23} ms {:>15} ms {:>19} ms",
            st.existing,
            fmt_s(st.bulk_apply_s),
            format!("{:.1} ({:.1})", st.vm_rss_mib, st.vm_hwm_mib),
            st.idle_cpu_percent,
            format!("{amin:.0} / {a50:.0} / {amax:.0}"),
            format!("{p50:.1} / {pmax:.1}"),
            format!("{rmin:.0}"),
        );
    }
    let _ = write!(
        s,
        "\nexisting: Services in the directory when the probes ran. bulk apply: from the \
         rename of the step's last file to `twill status` showing every port (includes the \
         poll). RSS: the agent's VmRSS (peak: VmHWM). idle CPU: the agent's CPU over 3 s \
         without changes (the directory is listed every second; only changed files are read).\nfirst answer: from the \
         rename of one more Service's file (endpoint: a UDP echo server in pod 2) to the \
         first datagram from pod 1 to its ClusterIP answered (one sent every ~1 ms), each \
         probe written at a random point of the poll period. It includes the DirStore's \
         poll: the directory is read every {POLL_PERIOD_MS:.0} ms, so a write waits \
         0–{POLL_PERIOD_MS:.0} ms (about {:.0} ms on average) before the store sees it, \
         then for the scan (a stat of every file, a read of the changed ones). publish_ms: the agent's own figure \
         (`twill status`: from the store's event to the table published). answer − \
         publish min: the least the poll, the scan and the first datagram added.\nGoals (issue 11): applied < 100 ms after the store's event \
         (publish_ms), < 300 MiB per agent.\n",
        POLL_PERIOD_MS / 2.0
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_stop_at_n() {
        assert_eq!(levels(10_000), vec![100, 1_000, 10_000]);
        assert_eq!(levels(20_000), vec![100, 1_000, 10_000, 20_000]);
        assert_eq!(levels(500), vec![100, 500]);
        assert_eq!(levels(50), vec![50]);
    }

    #[test]
    fn bulk_services_are_distinct_and_in_the_cluster_network() {
        let [svc, slice] = bulk_service(9_999, 10);
        assert_eq!(svc["spec"]["clusterIP"], "10.96.39.31");
        assert_eq!(
            slice["metadata"]["labels"]["kubernetes.io/service-name"],
            "svc-9999"
        );
        let eps = slice["endpoints"].as_array().unwrap();
        assert_eq!(eps.len(), 10);
        let mut seen = std::collections::HashSet::new();
        for i in [0, 1, 9_999] {
            let [_, sl] = bulk_service(i, 10);
            for e in sl["endpoints"].as_array().unwrap() {
                let ip: Ipv4Addr = e["addresses"][0].as_str().unwrap().parse().unwrap();
                assert_eq!(ip.octets()[..2], [10, 244]);
                assert_ne!(ip.octets()[2], 1, "not on this node's subnet");
                let node = e["nodeName"].as_str().unwrap();
                assert_eq!(node, format!("node-{}", ip.octets()[2]));
                assert!(seen.insert(ip), "{ip} twice");
            }
        }
        assert!(!(0..20_000).any(|i| probe_ip(i) == Ipv4Addr::new(10, 96, 39, 31)));
    }

    #[test]
    fn proc_fields_are_read() {
        assert_eq!(parse_kib("VmRSS:\t   12345 kB"), Some(12345.0));
        assert_eq!(parse_kib("VmRSS: 12"), None);
        let stat = "4242 (twill (x) y) S 1 2 3 4 5 6 7 8 9 10 111 222 13 14 15";
        assert_eq!(parse_stat_ticks(stat), Some(333));
    }

    #[test]
    fn jitter_stays_below_its_bound() {
        for _ in 0..100 {
            assert!(jitter(Duration::from_millis(5)) < Duration::from_millis(5));
        }
    }

    #[test]
    fn p50_and_max() {
        assert_eq!(p50_max(vec![3.0, 1.0, 2.0]), (2.0, 3.0));
        assert_eq!(p50_max(vec![4.0, 1.0, 2.0, 3.0]), (2.0, 4.0));
        assert!(p50_max(vec![]).0.is_nan());
    }
}
