//! BGP mode (the node config's `bgp` block): this node's pod subnet is
//! announced to BGP peers and the other nodes' subnets are learned from
//! them, with no encapsulation, as Calico does it: by running BIRD
//! (Debian's `bird2`) with a configuration generated here, never by a BGP
//! implementation of our own.
//!
//! The agent starts `bird -f` as its child (with a parent-death signal, so
//! that it dies with the agent), writes `STATE_DIR/bird.conf`, and reloads
//! it through the control socket `STATE_DIR/bird.ctl` when the node table
//! changes the mesh. BIRD's `kernel` protocol installs the learned routes
//! (`proto bird`); the route keeper ([`super::hostroutes`], BGP mode)
//! points the switch at the host for every node whose subnet has such a
//! route. If BIRD dies it is started again with a growing delay; at a
//! clean stop it gets SIGTERM, closes its sessions (its peers withdraw the
//! subnet at once) and removes its routes.
//!
//! This module decides nothing per packet and touches no route itself.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use control::{BgpConfig, Peer};
use encap::lograte::{LogRate, RETRY_REPORT_INTERVAL};
use ipnet::Ipv4Net;
use serde::Serialize;

use super::backoff::Backoff;
use super::birdctl;

/// How long a question to BIRD may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the supervisor looks at its child.
const TICK: Duration = Duration::from_secs(1);
/// How long BIRD gets to close its sessions at a stop.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// What kind of peer a session is with, as `calicoctl node status` names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerKind {
    /// Another node of the node table (iBGP full mesh).
    Mesh {
        /// The node's name.
        node: String,
    },
    /// A configured router.
    Router,
}

/// One BGP session BIRD is configured with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Session {
    /// BIRD's protocol name (`mesh_10_0_0_2`, `router_10_0_0_254`).
    pub protocol: String,
    /// The peer's address.
    pub address: Ipv4Addr,
    /// The peer's AS number.
    pub asn: u32,
    /// Mesh or router.
    pub kind: PeerKind,
    /// The MD5 password (never shown).
    #[serde(skip)]
    pub password: Option<String>,
}

/// What BIRD's configuration is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BirdParams {
    /// The router id and the sessions' source: this node's public IP.
    pub router_id: Ipv4Addr,
    /// This node's AS number.
    pub asn: u32,
    /// The pod subnet announced.
    pub subnet: Ipv4Net,
    /// The cluster Network: only routes inside it are learned.
    pub network: Ipv4Net,
    /// The host port, left out of BIRD's connected routes.
    pub host_port: String,
    /// Hold time proposed.
    pub hold_time_secs: u16,
    /// The sessions.
    pub sessions: Vec<Session>,
}

/// The sessions for `cfg` and the node table `nodes`: every configured
/// router, and with `mesh` every other node (not this one, `me`, nor one
/// that is also a configured router).
pub fn sessions(cfg: &BgpConfig, me: Ipv4Addr, nodes: &[Peer]) -> Vec<Session> {
    let name = |kind: &str, a: Ipv4Addr| format!("{kind}_{}", a.to_string().replace('.', "_"));
    let mut out: Vec<Session> = cfg
        .peers
        .iter()
        .map(|p| Session {
            protocol: name("router", p.address),
            address: p.address,
            asn: p.asn,
            kind: PeerKind::Router,
            password: p.password.clone(),
        })
        .collect();
    if cfg.mesh {
        let mut nodes: Vec<&Peer> = nodes.iter().filter(|n| n.public_ip != me).collect();
        nodes.sort_by_key(|n| n.public_ip);
        nodes.dedup_by_key(|n| n.public_ip);
        for n in nodes {
            if out.iter().any(|s| s.address == n.public_ip) {
                continue;
            }
            out.push(Session {
                protocol: name("mesh", n.public_ip),
                address: n.public_ip,
                asn: cfg.asn,
                kind: PeerKind::Mesh {
                    node: n.name.clone(),
                },
                password: None,
            });
        }
    }
    out
}

/// Text that may go between double quotes in BIRD's configuration.
fn quoted(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
        .collect()
}

/// BIRD's configuration.
///
/// - The subnet is announced from a `static` route (`blackhole`) that only
///   the BGP sessions export: the `kernel` protocol exports BGP routes
///   alone, so the blackhole never reaches the kernel, where the host
///   port's connected route delivers the subnet to the switch.
/// - Learned routes are taken only inside the cluster Network and never
///   for our own subnet (a router may send it back; eBGP loop detection is
///   relaxed with `allow local as` because every node has the same AS).
/// - A peer that went away is tried again within seconds (`connect retry
///   time`, `error wait time`; BIRD's defaults are 120 s and 60 s, too
///   long for a node that restarts).
/// - Kernel and connected routes are read (`learn`, `direct`) so that an
///   iBGP next hop behind a router resolves, but are never exported.
pub fn bird_conf(p: &BirdParams) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Generated by twill (BGP mode); rewritten at every change.\n\
         router id {rid};\n\
         timeformat protocol \"%Y-%m-%dT%H:%M:%S\";\n\n\
         protocol device {{ scan time 10; }}\n\n\
         protocol direct {{\n  ipv4;\n  interface -\"{hp}\", \"*\";\n}}\n\n\
         protocol kernel {{\n  scan time 10;\n  learn;\n  merge paths on;\n  \
         ipv4 {{ import all; export where source = RTS_BGP; }};\n}}\n\n\
         protocol static twill_subnet {{\n  ipv4;\n  route {subnet} blackhole;\n}}\n\n\
         filter twill_import {{\n  if net ~ [ {subnet}+ ] then reject;\n  \
         if net ~ [ {network}+ ] then accept;\n  reject;\n}}",
        rid = p.router_id,
        hp = quoted(&p.host_port),
        subnet = p.subnet,
        network = p.network,
    );
    for ss in &p.sessions {
        let what = match &ss.kind {
            PeerKind::Mesh { node } => format!("node {}", quoted(node)),
            PeerKind::Router => "router".to_owned(),
        };
        let _ = write!(
            s,
            "\nprotocol bgp {name} {{\n  description \"{what}\";\n  \
             local {rid} as {asn};\n  neighbor {addr} as {pasn};\n  hold time {hold};\n  \
             connect retry time 5;\n  error wait time 5, 60;\n",
            name = ss.protocol,
            rid = p.router_id,
            asn = p.asn,
            addr = ss.address,
            pasn = ss.asn,
            hold = p.hold_time_secs,
        );
        if let Some(pw) = &ss.password {
            let _ = writeln!(s, "  password \"{}\";", quoted(pw));
        }
        if ss.asn != p.asn {
            s.push_str("  allow local as;\n");
        }
        s.push_str(
            "  ipv4 {\n    import filter twill_import;\n    \
             export where proto = \"twill_subnet\";\n    next hop self;\n  };\n}\n",
        );
    }
    s
}

/// BIRD as the supervisor last saw it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BirdState {
    /// Its process id, while it runs.
    pub pid: Option<u32>,
    /// Times it was started again after it ended.
    pub restarts: u64,
    /// Why it last ended or could not start or reload.
    pub last_error: Option<String>,
}

enum Msg {
    Peers(Vec<Peer>),
    Stop,
}

/// The BIRD supervisor: see the module's documentation.
#[derive(Debug)]
pub struct Speaker {
    tx: mpsc::Sender<Msg>,
    status: Status,
    thread: Option<JoinHandle<()>>,
}

/// What `twill bgp status` reads: a handle that asks BIRD without holding
/// anything of the agent's (a question may take two seconds).
#[derive(Debug, Clone)]
pub struct Status {
    state: Arc<Mutex<(BirdState, Vec<Session>)>>,
    ctl: PathBuf,
    cfg: BgpConfig,
}

impl Speaker {
    /// Starts BIRD for `cfg` in `state_dir` and keeps it running; `base`
    /// holds everything but the sessions, made from `nodes`.
    pub fn start(
        cfg: &BgpConfig,
        base: BirdParams,
        state_dir: &Path,
        nodes: &[Peer],
    ) -> Result<Speaker> {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("creating {}", state_dir.display()))?;
        let (tx, rx) = mpsc::channel();
        let state = Arc::new(Mutex::new((BirdState::default(), Vec::new())));
        let files = Files::in_dir(state_dir);
        let ctl = files.ctl.clone();
        let sup = Supervisor {
            cfg: cfg.clone(),
            base,
            files,
            child: None,
            nodes: nodes.to_vec(),
            written: None,
            backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(30)),
            next_start: Instant::now(),
            failures: LogRate::new(RETRY_REPORT_INTERVAL),
            state: state.clone(),
        };
        sup.stop_stale();
        let thread = std::thread::Builder::new()
            .name("twill-bgp".into())
            .spawn(move || sup.run(&rx))
            .context("starting the BGP supervisor thread")?;
        Ok(Speaker {
            tx,
            status: Status {
                state,
                ctl,
                cfg: cfg.clone(),
            },
            thread: Some(thread),
        })
    }

    /// The handle `twill bgp status` reads.
    pub fn status(&self) -> Status {
        self.status.clone()
    }

    /// Hands over a new node table (for the mesh).
    pub fn set_peers(&self, nodes: Vec<Peer>) {
        let _ = self.tx.send(Msg::Peers(nodes));
    }

    /// Stops BIRD (its sessions close, peers withdraw the subnet, its
    /// routes go) and the supervisor.
    pub fn stop(&mut self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Status {
    /// Each session's state from BIRD (`twill bgp status`), beside what
    /// the supervisor knows. BIRD not answering is said, not an error.
    pub fn json(&self) -> serde_json::Value {
        let (bird, sessions) = self.state.lock().map(|s| s.clone()).unwrap_or_default();
        let (protos, ask_error) =
            match birdctl::command(&self.ctl, "show protocols all", ASK_TIMEOUT) {
                Ok(lines) => (birdctl::protocols(&lines), None),
                Err(e) => (Vec::new(), Some(format!("{e:#}"))),
            };
        let peers: Vec<serde_json::Value> = sessions
            .iter()
            .map(|s| {
                let p = protos.iter().find(|p| p.name == s.protocol);
                let (kind, node) = match &s.kind {
                    PeerKind::Mesh { node } => ("node-to-node mesh", Some(node.clone())),
                    PeerKind::Router => ("router", None),
                };
                serde_json::json!({
                    "address": s.address.to_string(),
                    "asn": s.asn,
                    "type": kind,
                    "node": node,
                    "protocol": s.protocol,
                    "state": p.map_or("unknown", |p| p.state.as_str()),
                    "bgp_state": p.and_then(|p| p.bgp_state.clone()),
                    "established": p.is_some_and(|p| p.bgp_state.as_deref() == Some("Established")),
                    "since": p.map(|p| p.since.clone()),
                    "info": p.map(|p| p.info.clone()),
                    "routes_imported": p.and_then(|p| p.imported),
                    "routes_exported": p.and_then(|p| p.exported),
                    "last_error": p.and_then(|p| p.last_error.clone()),
                })
            })
            .collect();
        serde_json::json!({
            "asn": self.cfg.asn,
            "mesh": self.cfg.mesh,
            "hold_time_secs": self.cfg.hold_time_secs,
            "bird": {
                "pid": bird.pid,
                "running": bird.pid.is_some(),
                "restarts": bird.restarts,
                "last_error": bird.last_error,
                "socket": self.ctl.display().to_string(),
                "answering": ask_error.is_none(),
                "ask_error": ask_error,
            },
            "peers": peers,
        })
    }
}

impl Drop for Speaker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// BIRD's files in the state directory.
struct Files {
    conf: PathBuf,
    ctl: PathBuf,
    pid: PathBuf,
    log: PathBuf,
}

impl Files {
    fn in_dir(d: &Path) -> Files {
        Files {
            conf: d.join("bird.conf"),
            ctl: d.join("bird.ctl"),
            pid: d.join("bird.pid"),
            log: d.join("bird.log"),
        }
    }
}

struct Supervisor {
    cfg: BgpConfig,
    base: BirdParams,
    files: Files,
    child: Option<Child>,
    nodes: Vec<Peer>,
    /// The configuration last written.
    written: Option<String>,
    backoff: Backoff,
    next_start: Instant,
    failures: LogRate,
    state: Arc<Mutex<(BirdState, Vec<Session>)>>,
}

impl Supervisor {
    fn run(mut self, rx: &mpsc::Receiver<Msg>) {
        loop {
            if let Err(e) = self.step() {
                let msg = format!("{e:#}");
                if let Some(s) = self.failures.hit(Instant::now()) {
                    tracing::warn!(error = %msg, suppressed = s.count,
                        "BGP: BIRD is not running as configured; retrying");
                }
                self.with_state(|st| st.last_error = Some(msg));
            }
            match rx.recv_timeout(TICK) {
                Ok(Msg::Peers(p)) => self.nodes = p,
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
        self.stop_child();
    }

    fn with_state(&self, f: impl FnOnce(&mut BirdState)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s.0);
        }
    }

    /// Writes the configuration if it changed (reloading a running BIRD),
    /// notices BIRD's end, starts it when due.
    fn step(&mut self) -> Result<()> {
        let mut params = self.base.clone();
        params.sessions = sessions(&self.cfg, self.base.router_id, &self.nodes);
        let conf = bird_conf(&params);
        if let Ok(mut s) = self.state.lock() {
            s.1 = params.sessions.clone();
        }
        if let Some(c) = &mut self.child {
            if let Some(status) = c.try_wait().context("waiting for BIRD")? {
                self.child = None;
                let delay = self.backoff.next_delay();
                self.next_start = Instant::now() + delay;
                self.with_state(|s| {
                    s.pid = None;
                    s.restarts += 1;
                });
                anyhow::bail!(
                    "BIRD ended ({status}); starting it again in {delay:?} (its log: {}): {}",
                    self.files.log.display(),
                    last_line(&self.files.log)
                );
            }
        }
        if self.written.as_deref() != Some(conf.as_str()) {
            super::write_atomic(&self.files.conf, conf.as_bytes())?;
            if self.child.is_some() {
                // Until BIRD takes it, it is tried again every tick.
                birdctl::command(&self.files.ctl, "configure", ASK_TIMEOUT)
                    .context("reloading BIRD's configuration")?;
                tracing::info!(sessions = params.sessions.len(), "BGP: BIRD reconfigured");
            }
            self.written = Some(conf);
        }
        if self.child.is_none() && Instant::now() >= self.next_start {
            let child = match self.spawn() {
                Ok(c) => c,
                Err(e) => {
                    self.next_start = Instant::now() + self.backoff.next_delay();
                    return Err(e);
                }
            };
            tracing::info!(pid = child.id(), sessions = params.sessions.len(),
                conf = %self.files.conf.display(), "BGP: BIRD started");
            let pid = child.id();
            self.child = Some(child);
            self.with_state(|s| s.pid = Some(pid));
            self.backoff.reset();
        }
        Ok(())
    }

    fn spawn(&mut self) -> Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.files.log)
            .with_context(|| format!("opening {}", self.files.log.display()))?;
        let bird = &self.cfg.bird;
        let mut c = Command::new(bird);
        c.arg("-f")
            .arg("-c")
            .arg(&self.files.conf)
            .arg("-s")
            .arg(&self.files.ctl)
            .arg("-P")
            .arg(&self.files.pid)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // The agent's blocked SIGTERM must not reach BIRD, and BIRD goes
        // when this thread (which lives as long as the agent) goes, even if
        // the agent is killed.
        vswitch::sys::child::unblocked_with_parent_death(&mut c, nix::sys::signal::Signal::SIGTERM);
        c.spawn()
            .with_context(|| format!("starting BIRD ({})", bird.display()))
    }

    /// A BIRD left running by an agent that was killed before its child
    /// could be told: found by its pid file, stopped if it is BIRD with our
    /// socket.
    fn stop_stale(&self) {
        let Ok(text) = std::fs::read_to_string(&self.files.pid) else {
            return;
        };
        let Ok(pid) = text.trim().parse::<i32>() else {
            return;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains("bird") && cmdline.contains(&*self.files.ctl.to_string_lossy()) {
            tracing::warn!(pid, "BGP: stopping a BIRD left running by an earlier agent");
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + STOP_GRACE;
            while Instant::now() < deadline && nix::sys::signal::kill(pid, None).is_ok() {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn stop_child(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(c.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + STOP_GRACE;
        loop {
            match c.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    tracing::warn!("BGP: BIRD did not stop within {STOP_GRACE:?}; killed");
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        self.with_state(|s| s.pid = None);
        tracing::info!("BGP: BIRD stopped; its sessions are closed and its routes removed");
    }
}

/// The last non-empty line of `path` (BIRD's last words).
fn last_line(path: &Path) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| {
            t.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

/// `twill bgp status` as a table, like `calicoctl node status`.
pub fn status_table(v: &serde_json::Value) -> String {
    let mut s = String::new();
    let bird = &v["bird"];
    let _ = writeln!(
        s,
        "BIRD is {} (AS {}, hold time {} s, restarts {}).",
        match (bird["running"].as_bool(), bird["answering"].as_bool()) {
            (Some(true), Some(true)) => "running".to_owned(),
            (Some(true), _) => format!(
                "running but not answering: {}",
                bird["ask_error"].as_str().unwrap_or("")
            ),
            _ => format!(
                "not running: {}",
                bird["last_error"].as_str().unwrap_or("not started yet")
            ),
        },
        v["asn"],
        v["hold_time_secs"],
        bird["restarts"],
    );
    let head = ["PEER ADDRESS", "PEER TYPE", "ASN", "STATE", "SINCE", "INFO"];
    let mut rows: Vec<[String; 6]> = Vec::new();
    let text = |x: &serde_json::Value| x.as_str().unwrap_or("").to_owned();
    for p in v["peers"].as_array().into_iter().flatten() {
        let kind = match p["node"].as_str() {
            Some(n) => format!("{} ({n})", text(&p["type"])),
            None => text(&p["type"]),
        };
        rows.push([
            text(&p["address"]),
            kind,
            p["asn"].to_string(),
            text(&p["state"]),
            text(&p["since"]),
            text(&p["info"]),
        ]);
    }
    let mut w = head.map(str::len);
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |s: &mut String| {
        let _ = writeln!(
            s,
            "+{}+",
            w.iter()
                .map(|n| "-".repeat(n + 2))
                .collect::<Vec<_>>()
                .join("+")
        );
    };
    let row = |s: &mut String, cells: &[&str]| {
        let cells: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!(" {c:<width$} ", width = w[i]))
            .collect();
        let _ = writeln!(s, "|{}|", cells.join("|"));
    };
    line(&mut s);
    row(&mut s, &head);
    line(&mut s);
    for r in &rows {
        row(&mut s, &r.each_ref().map(String::as_str));
    }
    line(&mut s);
    s
}

#[cfg(test)]
#[path = "bgp_tests.rs"]
mod tests;
