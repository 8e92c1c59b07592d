//! `twill bench-control`: how fast a lease change reaches every node, and
//! what the controller costs in memory, with many simulated agents.
//!
//! It starts a real `twill controller` process on loopback (so its memory is
//! its own), then N lightweight agents in this process: each acquires a
//! lease (24 h TTL, so nothing renews during the run) and keeps a watch
//! stream open from the revision after all acquisitions — what a node agent
//! holds in steady state; no dataplane. A driver then makes lease changes
//! one at a time (a new node joins, the same node leaves, alternately), and
//! every agent notes when each change reaches it. The latency of a change is
//! from the driver's request to an agent's receipt (it includes the
//! controller's fsync). Reported: per delivery (p50, p99, max), per change
//! until the last agent has it (p50, p99), and the controller's resident
//! memory (VmRSS) and peak (VmHWM) with all watchers connected.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use control::client::ControllerClient;
use control::{AcquireRequest, LeaseAttrs, LeaseBackend, LeaseEvent, LeaseStore};
use futures::StreamExt;
use ipnet::Ipv4Net;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Simulated agents.
    pub agents: usize,
    /// Lease changes to time.
    pub changes: usize,
    /// The `twill` binary (runs the controller).
    pub twill_bin: PathBuf,
    /// Where to write results.json (optional).
    pub out: Option<PathBuf>,
}

/// A change's identity as watchers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Added(Ipv4Net),
    Removed(Ipv4Net),
}

type Seen = Arc<Mutex<Vec<(Key, Instant)>>>;

/// The controller child process; killed on drop.
struct ControllerProc {
    child: Child,
    dir: PathBuf,
}

impl Drop for ControllerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

fn start_controller(bin: &Path, token: &str) -> Result<(ControllerProc, SocketAddrV4)> {
    let dir = std::env::temp_dir().join(format!("twill-bench-control-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("token"), token)?;
    std::fs::write(
        dir.join("net-conf.json"),
        r#"{"Network":"10.0.0.0/8","SubnetLen":24,"Backend":{"Type":"vxlan"}}"#,
    )?;
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, free_port()?);
    let child = Command::new(bin)
        .arg("controller")
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--state-file")
        .arg(dir.join("state.json"))
        .arg("--token-file")
        .arg(dir.join("token"))
        .arg("--net-conf")
        .arg(dir.join("net-conf.json"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("starting twill controller")?;
    let proc = ControllerProc { child, dir };
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            bail!("the controller did not listen on {addr} within 15 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((proc, addr))
}

/// `VmRSS` and `VmHWM` of a process, in KiB.
fn memory_kib(pid: u32) -> Result<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

fn attrs(i: usize) -> LeaseAttrs {
    // Made-up underlay addresses: only data, nothing is ever sent there.
    let base = u32::from(Ipv4Addr::new(172, 16, 0, 1));
    let ip = Ipv4Addr::from(base.wrapping_add(u32::try_from(i).unwrap_or(0)));
    let o = ip.octets();
    LeaseAttrs {
        public_ip: ip,
        backend: LeaseBackend::Vxlan {
            vni: Some(1),
            vtep_mac: encap::MacAddr([0x0a, 0x58, o[0], o[1], o[2], o[3]]),
        },
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs the benchmark and prints its table.
pub fn run(opts: Options) -> Result<()> {
    if opts.agents == 0 || opts.changes == 0 {
        bail!("--agents and --changes must be at least 1");
    }
    let token = "bench-control-token";
    let (ctl, addr) = start_controller(&opts.twill_bin, token)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(drive(&opts, ctl, addr, token))
}

async fn drive(opts: &Options, ctl: ControllerProc, addr: SocketAddrV4, token: &str) -> Result<()> {
    let n = opts.agents;
    let client = ControllerClient::new(&format!("http://{addr}"), token)?;
    let pid = ctl.child.id();
    eprintln!("bench-control: controller pid {pid} on {addr}; {n} agents acquiring leases…");

    // Every agent acquires its lease (64 at a time).
    let t = Instant::now();
    let acquired = futures::stream::iter(0..n)
        .map(|i| {
            let c = client.clone();
            async move {
                c.acquire(AcquireRequest {
                    attrs: attrs(i),
                    previous: None,
                    ttl_secs: 86400,
                })
                .await
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    for r in &acquired {
        if let Err(e) = r {
            bail!("acquiring a lease: {e}");
        }
    }
    let acquire_time = t.elapsed();
    let snap = client.list().await?;
    eprintln!(
        "bench-control: {n} leases in {:.2} s; opening {n} watch streams from revision {}…",
        acquire_time.as_secs_f64(),
        snap.revision
    );

    // Every agent watches from the same revision.
    let t = Instant::now();
    let mut seen: Vec<Seen> = Vec::with_capacity(n);
    let mut tasks = Vec::with_capacity(n);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<Result<(), String>>(n);
    for _ in 0..n {
        let s: Seen = Arc::new(Mutex::new(Vec::new()));
        seen.push(s.clone());
        let c = client.clone();
        let ready = ready_tx.clone();
        let from = snap.revision;
        tasks.push(tokio::spawn(async move {
            let mut stream = match c.watch(from).await {
                Ok(st) => {
                    let _ = ready.send(Ok(())).await;
                    st
                }
                Err(e) => {
                    let _ = ready.send(Err(e.to_string())).await;
                    return;
                }
            };
            while let Some(Ok(ev)) = stream.next().await {
                let key = match ev.event {
                    LeaseEvent::Added { lease } => Key::Added(lease.subnet),
                    LeaseEvent::Removed { subnet } => Key::Removed(subnet),
                };
                if let Ok(mut v) = s.lock() {
                    v.push((key, Instant::now()));
                }
            }
        }));
    }
    drop(ready_tx);
    for _ in 0..n {
        match ready_rx.recv().await {
            Some(Ok(())) => {}
            Some(Err(e)) => bail!("opening a watch: {e}"),
            None => bail!("a watcher vanished"),
        }
    }
    let watch_time = t.elapsed();
    let (rss_idle, _) = memory_kib(pid)?;
    eprintln!(
        "bench-control: {n} watchers connected in {:.2} s; controller RSS {:.1} MiB; {} changes…",
        watch_time.as_secs_f64(),
        rss_idle as f64 / 1024.0,
        opts.changes
    );

    // The changes: a node joins, then leaves, alternately.
    let mut issued: HashMap<Key, Instant> = HashMap::new();
    let mut joined = None;
    for k in 0..opts.changes {
        let t0 = Instant::now();
        match joined.take() {
            None => {
                let l = client
                    .acquire(AcquireRequest {
                        attrs: attrs(n + k),
                        previous: None,
                        ttl_secs: 86400,
                    })
                    .await?;
                issued.insert(Key::Added(l.subnet), t0);
                joined = Some(l);
            }
            Some(l) => {
                client.release(&l).await?;
                issued.insert(Key::Removed(l.subnet), t0);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Wait until every agent has every change (or 10 s).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let complete = seen
            .iter()
            .all(|s| s.lock().map(|v| v.len() >= issued.len()).unwrap_or(false));
        if complete || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (rss, hwm) = memory_kib(pid)?;
    for t in &tasks {
        t.abort();
    }

    let mut deliveries = Vec::with_capacity(n * issued.len());
    let mut last: HashMap<Key, Duration> = HashMap::new();
    let mut missing = 0usize;
    for s in &seen {
        let v = s.lock().map(|v| v.clone()).unwrap_or_default();
        let got: HashMap<Key, Instant> = v.into_iter().collect();
        for (key, t0) in &issued {
            match got.get(key) {
                Some(t) => {
                    let d = t.saturating_duration_since(*t0);
                    deliveries.push(d);
                    let e = last.entry(*key).or_default();
                    *e = (*e).max(d);
                }
                None => missing += 1,
            }
        }
    }
    deliveries.sort();
    let mut all: Vec<Duration> = last.values().copied().collect();
    all.sort();
    let result = serde_json::json!({
        "agents": n,
        "changes": issued.len(),
        "acquire_all_s": acquire_time.as_secs_f64(),
        "watch_all_s": watch_time.as_secs_f64(),
        "delivery_ms": { "p50": ms(percentile(&deliveries, 0.5)), "p99": ms(percentile(&deliveries, 0.99)),
                         "max": ms(deliveries.last().copied().unwrap_or_default()) },
        "change_reaches_all_ms": { "p50": ms(percentile(&all, 0.5)), "p99": ms(percentile(&all, 0.99)) },
        "missed_deliveries": missing,
        "controller_rss_mib": rss as f64 / 1024.0,
        "controller_rss_idle_mib": rss_idle as f64 / 1024.0,
        "controller_peak_mib": hwm as f64 / 1024.0,
    });
    println!(
        "agents {n}, changes {}: delivery p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; \
         change reaches all p50 {:.1} ms, p99 {:.1} ms; missed {missing}; \
         controller RSS {:.1} MiB (peak {:.1} MiB)",
        issued.len(),
        ms(percentile(&deliveries, 0.5)),
        ms(percentile(&deliveries, 0.99)),
        ms(deliveries.last().copied().unwrap_or_default()),
        ms(percentile(&all, 0.5)),
        ms(percentile(&all, 0.99)),
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
    );
    if let Some(out) = &opts.out {
        std::fs::write(out, serde_json::to_string_pretty(&result)?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    drop(ctl);
    if missing > 0 {
        bail!("{missing} deliveries never arrived");
    }
    Ok(())
}
