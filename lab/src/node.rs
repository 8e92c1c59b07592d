//! A `twill node` agent running inside a lab namespace: its configuration
//! file, its process and its log, all owned by the [`NodeProcess`] guard.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ipnet::Ipv4Net;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use vswitch::stats::Report;

use crate::cmd::{self, SHORT};
use crate::names::{unique_suffix, LAB_RUN_DIR};
use crate::netns::Netns;

/// How long [`NodeProcess::start`] waits for `twill status` to answer.
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// flannel's net-conf.json keys (`Network`, `SubnetLen`, `Backend`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct NetConf {
    /// The cluster Network, e.g. 10.244.0.0/16.
    pub network: Ipv4Net,
    /// Prefix length of each node's subnet.
    pub subnet_len: u8,
    /// The backend.
    pub backend: BackendConf,
}

/// `Backend` of net-conf.json.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackendConf {
    /// `"vxlan"`, `"udp"` or `"host-gw"`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// VXLAN network identifier (vxlan only).
    #[serde(rename = "VNI", default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// UDP port of the tunnel.
    #[serde(rename = "Port", default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// vxlan's `DirectRouting`.
    #[serde(
        rename = "DirectRouting",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub direct_routing: Option<bool>,
}

impl BackendConf {
    /// flannel's defaults: vxlan VNI 1 port 8472, udp port 8285, host-gw
    /// without options.
    pub fn named(kind: &str) -> BackendConf {
        match kind {
            "udp" => BackendConf {
                kind: "udp".into(),
                vni: None,
                port: Some(8285),
                direct_routing: None,
            },
            "host-gw" => BackendConf {
                kind: "host-gw".into(),
                vni: None,
                port: None,
                direct_routing: None,
            },
            other => BackendConf {
                kind: other.into(),
                vni: Some(1),
                port: Some(8472),
                direct_routing: None,
            },
        }
    }

    /// Whether this is the vxlan backend.
    pub fn is_vxlan(&self) -> bool {
        self.kind == "vxlan"
    }

    /// The tunnel's UDP port (with flannel's defaults).
    pub fn udp_port(&self) -> u16 {
        self.port
            .unwrap_or(if self.is_vxlan() { 8472 } else { 8285 })
    }

    /// Bytes the tunnel adds: 50 for vxlan, 28 for udp, none for host-gw.
    pub fn overhead(&self) -> u32 {
        match self.kind.as_str() {
            "vxlan" => 50,
            "host-gw" => 0,
            _ => 28,
        }
    }
}

/// One entry of the static peer list.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerConfig {
    /// Node name.
    pub name: String,
    /// Underlay address.
    pub public_ip: Ipv4Addr,
    /// The peer's pod subnet.
    pub subnet: Ipv4Net,
    /// The peer's VTEP MAC (vxlan only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtep_mac: Option<String>,
}

/// The `twill node --config` file. `socket` and `state_dir` are filled in by
/// [`NodeProcess::start`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeConfig {
    /// Node name.
    pub name: String,
    /// Underlay address.
    pub public_ip: Ipv4Addr,
    /// This node's pod subnet.
    pub subnet: Ipv4Net,
    /// The network configuration.
    pub net_conf: NetConf,
    /// Fixed VTEP/router MAC, or the agent picks one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtep_mac: Option<String>,
    /// The agent's API socket.
    pub socket: PathBuf,
    /// The agent's state directory.
    pub state_dir: PathBuf,
    /// Name of the host-side TAP.
    pub host_port: String,
    /// The other nodes.
    pub peers: Vec<PeerConfig>,
    /// flannel's subnet.env; [`NodeProcess::start`] puts it in the node's
    /// directory.
    #[serde(default, skip_serializing_if = "is_empty_path")]
    pub subnet_env: PathBuf,
    /// The lease store; when set, `subnet`, `net_conf` and `peers` are not
    /// written (they come from the store) and `subnet` is read back from
    /// `twill status` once the node is up.
    #[serde(default, flatten, skip_serializing_if = "Option::is_none")]
    pub plane: Option<PlaneConfig>,
    /// Lease time to live, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ttl_secs: Option<u64>,
    /// Renew this long before expiry, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_margin_secs: Option<u64>,
    /// A directory of Kubernetes manifests a static node follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects_dir: Option<PathBuf>,
    /// The Service IP range routed from the host into the switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_cidr: Option<String>,
    /// BGP mode: the `bgp` block as written (`{"asn": …, "peers": […]}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<serde_json::Value>,
}

fn is_empty_path(p: &Path) -> bool {
    p.as_os_str().is_empty()
}

/// Where a leased node's lease and node table come from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PlaneConfig {
    /// `twill controller`.
    Controller {
        /// Base URL.
        url: String,
        /// File holding the bearer token.
        token_file: PathBuf,
    },
    /// etcd in flannel's layout.
    Etcd {
        /// Client URLs.
        endpoints: Vec<String>,
        /// Key prefix.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prefix: Option<String>,
    },
}

impl NodeConfig {
    /// A node in 10.244.0.0/16 with /24 subnets, the given backend with
    /// flannel's defaults, host port `twill0`, a VTEP MAC derived from the
    /// subnet (see [`vtep_mac_for`]) and no peers yet.
    pub fn new(name: &str, public_ip: Ipv4Addr, subnet: Ipv4Net, backend: &str) -> NodeConfig {
        NodeConfig {
            name: name.to_owned(),
            public_ip,
            subnet,
            net_conf: NetConf {
                network: Ipv4Net::new(Ipv4Addr::new(10, 244, 0, 0), 16)
                    .unwrap_or_else(|_| Ipv4Net::default()),
                subnet_len: subnet.prefix_len(),
                backend: BackendConf::named(backend),
            },
            vtep_mac: Some(vtep_mac_for(subnet)),
            socket: PathBuf::new(),
            state_dir: PathBuf::new(),
            host_port: "twill0".into(),
            peers: Vec::new(),
            subnet_env: PathBuf::new(),
            plane: None,
            lease_ttl_secs: None,
            renew_margin_secs: None,
            objects_dir: None,
            service_cidr: None,
            bgp: None,
        }
    }

    /// A node that gets its subnet, net-conf and node table from `plane`;
    /// its VTEP MAC is generated by the agent and kept in its state dir.
    pub fn leased(name: &str, public_ip: Ipv4Addr, plane: PlaneConfig) -> NodeConfig {
        let mut c = NodeConfig::new(name, public_ip, Ipv4Net::default(), "vxlan");
        c.vtep_mac = None;
        c.plane = Some(plane);
        c
    }

    /// The JSON `twill node --config` reads.
    pub fn to_json(&self) -> Result<String> {
        let mut v = serde_json::to_value(self)?;
        if self.plane.is_some() {
            if let Some(m) = v.as_object_mut() {
                for k in ["subnet", "net_conf", "peers"] {
                    m.remove(k);
                }
            }
        }
        Ok(serde_json::to_string_pretty(&v)?)
    }

    /// This node as another node's peer entry (VTEP MAC only for vxlan).
    pub fn as_peer(&self) -> PeerConfig {
        PeerConfig {
            name: self.name.clone(),
            public_ip: self.public_ip,
            subnet: self.subnet,
            vtep_mac: if self.net_conf.backend.is_vxlan() {
                self.vtep_mac.clone()
            } else {
                None
            },
        }
    }

    /// The gateway (router) address: the subnet's .1.
    pub fn gateway(&self) -> Ipv4Addr {
        nth_host(self.subnet, 1)
    }

    /// The host port's address: the subnet's .2.
    pub fn host_ip(&self) -> Ipv4Addr {
        nth_host(self.subnet, 2)
    }
}

/// A deterministic locally administered MAC for a subnet's router/VTEP, in
/// Kubernetes' `0a:58:<IPv4 of .1>` style: 10.244.1.0/24 → 0a:58:0a:f4:01:01.
pub fn vtep_mac_for(subnet: Ipv4Net) -> String {
    let o = nth_host(subnet, 1).octets();
    format!("0a:58:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

/// The `n`-th address of `net` (0 is the network address).
pub fn nth_host(net: Ipv4Net, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()).wrapping_add(n))
}

/// What `twill status` prints (JSON).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct NodeStatus {
    /// Node name.
    pub name: String,
    /// Pod subnet.
    pub subnet: String,
    /// Underlay address.
    pub public_ip: String,
    /// VTEP/router MAC.
    #[serde(default)]
    pub vtep_mac: Option<String>,
    /// `"vxlan"` or `"udp"`.
    pub backend: String,
    /// The gateway address.
    pub gateway: String,
    /// The control plane's state (`null` for a static node).
    #[serde(default)]
    pub control: serde_json::Value,
    /// The Service follower's state (`null` without an object store).
    #[serde(default)]
    pub services: serde_json::Value,
}

/// A running `twill node` inside a namespace. Drop stops it (SIGTERM, then
/// SIGKILL after 3 s), reaps it, prints its log's tail if the thread is
/// panicking (or `TWILL_LAB_LOGS=1`) and removes its directory (kept when
/// `TWILL_LAB_KEEP=1`). `TWILL_LAB_WORKERS=N` starts it with `--workers N`
/// (see [`lab_workers`]).
///
/// The child is started under `setpriv --pdeathsig TERM`, so it also stops
/// when the thread that started it dies without running Drop (e.g. SIGKILL);
/// start nodes from a thread that outlives them. It runs in its own process
/// group so that a terminal's Ctrl-C reaches the lab's owner first, which then
/// tears down in order.
#[derive(Debug)]
pub struct NodeProcess {
    child: Option<Child>,
    dir: PathBuf,
    config: NodeConfig,
    log: PathBuf,
    twill_bin: PathBuf,
    netns: String,
    /// Arguments after `--config FILE`.
    args: Vec<String>,
    /// A command the agent runs under (`prlimit --nofile=…`), before the binary.
    wrapper: Vec<String>,
    status: Option<NodeStatus>,
}

/// The workers every agent the lab starts is given, from
/// `TWILL_LAB_WORKERS=N` (so that the end-to-end tests run with 1, 2 or 4
/// workers whatever the machine's CPUs): `None` when it is not set, an
/// error for anything but a number from 1 to 16.
pub fn lab_workers() -> Result<Option<usize>> {
    let Some(n) = std::env::var_os("TWILL_LAB_WORKERS") else {
        return Ok(None);
    };
    let n = n
        .to_str()
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| (1..=16).contains(n))
        .with_context(|| {
            format!("TWILL_LAB_WORKERS={n:?}: not a number of workers from 1 to 16")
        })?;
    Ok(Some(n))
}

/// `--workers N` from [`lab_workers`], unless the agent's arguments choose
/// its workers already (`--workers`, or `--steering cpu`, which sets one
/// per CPU).
fn lab_workers_args(args: &[String]) -> Result<Vec<String>> {
    let Some(n) = lab_workers()? else {
        return Ok(vec![]);
    };
    let cpu_steering = args.iter().enumerate().any(|(i, a)| {
        a == "--steering=cpu" || (a == "--steering" && args.get(i + 1).is_some_and(|v| v == "cpu"))
    });
    if cpu_steering || args.iter().any(|a| a.starts_with("--workers")) {
        return Ok(vec![]);
    }
    Ok(vec!["--workers".into(), n.to_string()])
}

impl NodeProcess {
    /// Writes `config` (with `socket` and `state_dir` in a fresh directory
    /// under [`LAB_RUN_DIR`]), starts `TWILL_BIN node --config FILE` in `ns`
    /// and waits until `twill status` answers.
    pub fn start(twill_bin: &Path, ns: &Netns, config: NodeConfig) -> Result<NodeProcess> {
        NodeProcess::start_timeout(twill_bin, ns, config, READY_TIMEOUT)
    }

    /// [`NodeProcess::start`] with more arguments after `--config FILE`
    /// (e.g. `--no-offload`).
    pub fn start_args(
        twill_bin: &Path,
        ns: &Netns,
        config: NodeConfig,
        args: &[&str],
    ) -> Result<NodeProcess> {
        NodeProcess::spawn(twill_bin, ns, config, READY_TIMEOUT, args)
    }

    /// [`NodeProcess::start_args`] run under `wrapper`, a command that
    /// execs the rest of its arguments (e.g. `["prlimit", "--nofile=256:256",
    /// "--"]`), so the agent keeps the process id [`NodeProcess::pid`] names.
    pub fn start_wrapped(
        twill_bin: &Path,
        ns: &Netns,
        config: NodeConfig,
        wrapper: &[&str],
        args: &[&str],
    ) -> Result<NodeProcess> {
        NodeProcess::spawn_wrapped(twill_bin, ns, config, READY_TIMEOUT, wrapper, args)
    }

    /// [`NodeProcess::start`] with a chosen readiness timeout.
    pub fn start_timeout(
        twill_bin: &Path,
        ns: &Netns,
        config: NodeConfig,
        ready_timeout: Duration,
    ) -> Result<NodeProcess> {
        NodeProcess::spawn(twill_bin, ns, config, ready_timeout, &[])
    }

    fn spawn(
        twill_bin: &Path,
        ns: &Netns,
        config: NodeConfig,
        ready_timeout: Duration,
        args: &[&str],
    ) -> Result<NodeProcess> {
        NodeProcess::spawn_wrapped(twill_bin, ns, config, ready_timeout, &[], args)
    }

    fn spawn_wrapped(
        twill_bin: &Path,
        ns: &Netns,
        mut config: NodeConfig,
        ready_timeout: Duration,
        wrapper: &[&str],
        args: &[&str],
    ) -> Result<NodeProcess> {
        let dir = PathBuf::from(LAB_RUN_DIR).join(format!("{}-{}", config.name, unique_suffix()));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        config.socket = dir.join("api.sock");
        config.state_dir = dir.join("state");
        if config.subnet_env.as_os_str().is_empty() {
            config.subnet_env = dir.join("subnet.env");
        }
        let log = dir.join("node.log");
        let mut node = NodeProcess {
            child: None,
            dir,
            config,
            log,
            twill_bin: twill_bin.to_owned(),
            netns: ns.name().to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            wrapper: wrapper.iter().map(|a| (*a).to_owned()).collect(),
            status: None,
        };
        let cfg_path = node.config_path();
        fs::write(&cfg_path, node.config.to_json()?)
            .with_context(|| format!("writing {}", cfg_path.display()))?;
        node.launch(ready_timeout)?;
        Ok(node)
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("node.json")
    }

    /// Starts the agent process (appending to its log) and waits until it
    /// answers; a leased node's subnet is read back from its status.
    fn launch(&mut self, ready_timeout: Duration) -> Result<()> {
        let mut args = vec![
            std::ffi::OsString::from("node"),
            "--config".into(),
            self.config_path().into(),
        ];
        args.extend(self.args.iter().map(Into::into));
        args.extend(lab_workers_args(&self.args)?.into_iter().map(Into::into));
        let (program, args) = match self.wrapper.split_first() {
            None => (self.twill_bin.clone(), args),
            Some((first, rest)) => {
                let mut all: Vec<std::ffi::OsString> = rest.iter().map(Into::into).collect();
                all.push(self.twill_bin.clone().into());
                all.extend(args);
                (PathBuf::from(first), all)
            }
        };
        self.child = Some(cmd::spawn_in_netns(
            &self.netns,
            "TERM",
            &program,
            args,
            &self.log,
        )?);
        self.wait_ready(ready_timeout)
            .with_context(|| format!("node {} in {}", self.config.name, self.netns))?;
        if self.config.plane.is_some() {
            if let Some(st) = &self.status {
                self.config.subnet = st
                    .subnet
                    .parse()
                    .with_context(|| format!("status subnet {:?}", st.subnet))?;
            }
        }
        Ok(())
    }

    /// Stops the agent and starts it again with the same configuration and
    /// state directory (so a leased node asks for its previous subnet).
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.launch(READY_TIMEOUT)
    }

    /// Kills the agent with SIGKILL — a crash: no clean-up runs in it — and
    /// reaps it. Its TAPs vanish with it; its socket file and state stay.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Already gone is fine: the wait reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The agent's state directory.
    pub fn state_dir(&self) -> &Path {
        &self.config.state_dir
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last_err = anyhow!("never asked");
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(st) = child.try_wait()? {
                    self.child = None;
                    bail!(
                        "`twill node` exited early ({st}); log tail:\n{}",
                        self.log_tail(40)
                    );
                }
            }
            match self.query_status() {
                Ok(st) => {
                    self.status = Some(st);
                    return Ok(());
                }
                Err(e) => last_err = e,
            }
            if Instant::now() >= deadline {
                bail!(
                    "`twill status` not ready after {timeout:?} (last: {last_err:#}); log tail:\n{}",
                    self.log_tail(40)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn twill(&self, args: &[&str]) -> Result<String> {
        self.twill_timeout(args, SHORT)
    }

    fn twill_timeout(&self, args: &[&str], timeout: Duration) -> Result<String> {
        let mut c = Command::new(&self.twill_bin);
        c.args(args);
        cmd::run_checked(c, timeout)
    }

    fn query_status(&self) -> Result<NodeStatus> {
        let sock = self.socket_str()?;
        let out = self.twill_timeout(&["status", "--socket", sock], Duration::from_secs(3))?;
        serde_json::from_str(&out).with_context(|| format!("parsing `twill status` output: {out}"))
    }

    /// `twill status` now.
    pub fn status(&self) -> Result<NodeStatus> {
        self.query_status()
    }

    /// The status read when the node became ready.
    pub fn ready_status(&self) -> Option<&NodeStatus> {
        self.status.as_ref()
    }

    /// `twill counters --json` now, read through its typed definition: a
    /// counter missing, renamed or added without the type is an error here.
    pub fn counters(&self) -> Result<Report> {
        let out = self.twill(&["counters", "--socket", self.socket_str()?, "--json"])?;
        serde_json::from_str(&out)
            .with_context(|| format!("parsing `twill counters --json` output: {out}"))
    }

    /// `twill service list --json` now: each balanced port (`ns/name:port`)
    /// with its backends (`ip:port`).
    pub fn service_backends(&self) -> Result<Vec<(String, Vec<String>)>> {
        let out = self.twill(&["service", "list", "--json", "--socket", self.socket_str()?])?;
        parse_service_list(&out)
            .with_context(|| format!("parsing `twill service list --json` output: {out}"))
    }

    /// `twill status` now, as raw JSON (fields the lab has no type for, such
    /// as `services`).
    pub fn status_json(&self) -> Result<serde_json::Value> {
        let out = self.twill(&["status", "--socket", self.socket_str()?])?;
        serde_json::from_str(&out).with_context(|| format!("parsing `twill status` output: {out}"))
    }

    /// Runs `twill ARGS…` (from the caller's namespace; the API is a Unix socket).
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        self.twill(args)
    }

    /// The configuration as written (with socket and state dir).
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The agent's API socket.
    pub fn socket(&self) -> &Path {
        &self.config.socket
    }

    fn socket_str(&self) -> Result<&str> {
        self.config
            .socket
            .to_str()
            .ok_or_else(|| anyhow!("socket path is not UTF-8"))
    }

    /// The `twill` binary this node runs.
    pub fn twill_bin(&self) -> &Path {
        &self.twill_bin
    }

    /// Name of the namespace the agent runs in.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// The agent's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the agent's log (at most 64 KiB are read).
    pub fn log_tail(&self, lines: usize) -> String {
        tail_file(&self.log, lines)
    }

    /// The agent's process id (None once stopped).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the agent process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Stops the agent (SIGTERM, SIGKILL after 3 s) and reaps it; idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                // ESRCH: it already exited; the wait below reaps it.
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
            if let Ok(None) = cmd::wait_deadline(&mut child, Duration::from_secs(3)) {
                cmd::note(format_args!(
                    "lab: node {} ignored SIGTERM for 3 s and was killed",
                    self.config.name
                ));
            }
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() || env_flag("TWILL_LAB_LOGS") {
            cmd::note(format_args!(
                "---- log of twill node {} ({}) ----\n{}\n---- end of log ----",
                self.config.name,
                self.log.display(),
                self.log_tail(60)
            ));
        }
        if env_flag("TWILL_LAB_KEEP") {
            cmd::note(format_args!("lab: keeping {}", self.dir.display()));
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1")
}

/// The `name` and `backends` of each entry of `twill service list --json`.
fn parse_service_list(out: &str) -> Result<Vec<(String, Vec<String>)>> {
    #[derive(Deserialize)]
    struct Entry {
        name: String,
        #[serde(default)]
        backends: Vec<String>,
    }
    let entries: Vec<Entry> = serde_json::from_str(out)?;
    Ok(entries.into_iter().map(|e| (e.name, e.backends)).collect())
}

/// The last `lines` lines of a file (reads at most its last 64 KiB).
pub fn tail_file(path: &Path, lines: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(64 * 1024);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(lines);
    all[from..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_json_has_the_contract_shape() {
        let subnet: Ipv4Net = "10.244.1.0/24".parse().unwrap();
        let mut a = NodeConfig::new("node-a", Ipv4Addr::new(192, 168, 100, 1), subnet, "vxlan");
        let b = NodeConfig::new(
            "node-b",
            Ipv4Addr::new(192, 168, 100, 2),
            "10.244.2.0/24".parse().unwrap(),
            "vxlan",
        );
        a.peers.push(b.as_peer());
        a.socket = "/run/x/a.sock".into();
        a.state_dir = "/run/x/a".into();
        let v = serde_json::to_value(&a).unwrap();
        let want = serde_json::json!({
            "name": "node-a", "public_ip": "192.168.100.1", "subnet": "10.244.1.0/24",
            "net_conf": { "Network": "10.244.0.0/16", "SubnetLen": 24,
                          "Backend": { "Type": "vxlan", "VNI": 1, "Port": 8472 } },
            "vtep_mac": "0a:58:0a:f4:01:01",
            "socket": "/run/x/a.sock", "state_dir": "/run/x/a", "host_port": "twill0",
            "peers": [ { "name": "node-b", "public_ip": "192.168.100.2",
                         "subnet": "10.244.2.0/24", "vtep_mac": "0a:58:0a:f4:02:01" } ]
        });
        assert_eq!(v, want);
        assert_eq!(a.gateway(), Ipv4Addr::new(10, 244, 1, 1));
        assert_eq!(a.host_ip(), Ipv4Addr::new(10, 244, 1, 2));
    }

    #[test]
    fn udp_backend_has_port_8285_and_peers_without_mac() {
        let c = NodeConfig::new(
            "n",
            Ipv4Addr::new(192, 168, 1, 1),
            "10.244.3.0/24".parse().unwrap(),
            "udp",
        );
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            v["net_conf"]["Backend"],
            serde_json::json!({ "Type": "udp", "Port": 8285 })
        );
        assert_eq!(c.as_peer().vtep_mac, None);
        assert_eq!(c.net_conf.backend.overhead(), 28);
    }

    #[test]
    fn service_list_reads_names_and_backends() {
        let out = r#"[{"name":"default/bench:iperf","backends":["10.244.2.3:5201"],"x":1},
                      {"name":"default/bench:rr"}]"#;
        assert_eq!(
            parse_service_list(out).unwrap(),
            vec![
                (
                    "default/bench:iperf".to_owned(),
                    vec!["10.244.2.3:5201".to_owned()]
                ),
                ("default/bench:rr".to_owned(), vec![]),
            ]
        );
        assert!(parse_service_list(r#"{"error":"x"}"#).is_err());
    }
}
