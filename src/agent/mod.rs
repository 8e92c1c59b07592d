//! The node agent (`twill node`): turns the node's configuration into a
//! running dataplane. It creates the host port, binds the tunnel sockets,
//! starts the dataplane worker, attaches and detaches pods on request, and
//! serves the local API. It owns no forwarding rule (those are in
//! `vswitch::core`) and does no per-packet work.

mod backoff;
pub mod bgp;
mod birdctl;
mod capture;
pub mod hostroutes;
mod ipam;
pub mod lease_store;
pub mod leases;
pub mod metrics;
use encap::lograte;
pub mod plan;
mod pod_error;
mod pods;
pub mod policy;
pub mod portholder;
mod server;
pub mod services;
mod steering;
pub mod store;
mod views;

use std::net::{SocketAddrV4, UdpSocket};
use std::path::Path;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use control::{BackendType, NodeConfig, Peer};
use encap::{Cidr, MacAddr};
use vswitch::core::PortId;
use vswitch::dataplane::{Dataplane, DataplaneConfig};
use vswitch::sys::{netlink, tap::Tap, udp};

pub use plan::{mac_for_ip, NodeInfo, NodePlan};
pub use server::serve;

/// The host port's id.
pub const HOST_PORT: PortId = PortId(0);
/// Sockets that send tunnel traffic, one per flow lane, each from a
/// source port whose residue is its lane (see [`udp::bind_lanes`]).
pub const TX_SOCKETS: usize = encap::flow::LANES;

/// How the dataplane runs (`twill node`'s flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOptions {
    /// Ask TAPs for checksum and segmentation offloads (TSO/USO).
    pub offload: bool,
    /// Worker threads.
    pub workers: usize,
    /// When a worker keeps polling after its last packet before it sleeps
    /// in `epoll_wait`.
    pub busy_poll: vswitch::busy_poll::BusyPoll,
    /// When the local API closes a connection that sent nothing.
    pub api_idle_timeout: std::time::Duration,
    /// What each pod port may make the switch flood.
    pub storm: vswitch::core::ratelimit::StormLimits,
    /// Where to serve metrics and probes; `None`: nowhere.
    pub metrics: Option<std::net::SocketAddr>,
    /// How a packet finds its worker.
    pub steering: Steering,
}

/// `twill node --steering`: how a packet finds its worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Steering {
    /// The kernel hashes each flow to a TAP queue and a tunnel socket
    /// (each direction apart); workers run on any CPU.
    #[default]
    Hash,
    /// Both directions of a flow on one worker: TAP queues and tunnel
    /// sockets chosen by the flow's symmetric hash (BPF), workers on any
    /// CPU.
    Flow,
    /// Workers pinned one per CPU; a packet goes to the worker on the CPU
    /// that produced it (BPF on the TAPs and the tunnel sockets).
    Cpu,
}

/// The worker threads `twill node` runs: `requested` (`--workers`) or one
/// per CPU, at most [`MAX_WORKERS`]; with [`Steering::Cpu`] exactly one per
/// CPU the process may run on, and a different `requested` is refused
/// (a worker short would leave a CPU's packets to the hash, one more would
/// have no CPU).
pub fn workers_for(requested: Option<usize>, steering: Steering) -> Result<usize> {
    if steering != Steering::Cpu {
        return Ok(requested.unwrap_or_else(default_workers));
    }
    let cpus = vswitch::sys::steer::allowed_cpus()
        .context("reading the CPUs this process may run on")?
        .len();
    if cpus > MAX_WORKERS {
        bail!(
            "--steering cpu runs one worker per CPU this process may run on: {cpus} CPUs, \
             more than {MAX_WORKERS} workers; restrict its CPUs (taskset, a cpuset) or use \
             --steering hash"
        );
    }
    match requested {
        Some(w) if w != cpus => bail!(
            "--workers {w} with --steering cpu: it runs one worker per CPU this process may \
             run on, {cpus} here; leave --workers out, or restrict the CPUs (taskset, a cpuset)"
        ),
        _ => Ok(cpus),
    }
}

/// The running agent.
#[derive(Debug)]
pub struct Agent {
    /// What it is.
    pub info: NodeInfo,
    /// Its tunnel backend (`info.backend` is its name).
    backend: BackendType,
    dataplane: Dataplane,
    pods: Mutex<pods::Pods>,
    /// The control plane's state as `twill status` shows it (`null`: static).
    control: Mutex<Option<leases::ControlStatus>>,
    /// The service follower's state as `twill status` shows it (`null`:
    /// no object store).
    services: Mutex<serde_json::Value>,
    /// What steers NodePorts and external IPs from the host to the switch.
    steering: Mutex<steering::HostSteering>,
    /// The Kubernetes pods attached here, with their addresses: the object
    /// follower compiles policy for them and publishes their addresses.
    local_pods: tokio::sync::watch::Sender<Vec<(crate::api::PodRef, std::net::Ipv4Addr)>>,
    /// Pods detached because their network namespace vanished.
    vanished: std::sync::atomic::AtomicU64,
    /// The local API is bound and served.
    api_serving: std::sync::atomic::AtomicBool,
    /// The host routes to the nodes reached without a tunnel (host-gw,
    /// DirectRouting); `None` when every node is tunnelled to. Taken at
    /// shutdown, which removes the routes.
    routes: Mutex<Option<hostroutes::RouteKeeper>>,
    /// BIRD, in BGP mode (the config's `bgp`); taken at shutdown, which
    /// stops it.
    bgp: Mutex<Option<bgp::Speaker>>,
    /// What `twill bgp status` asks, without the lock above.
    bgp_status: Option<bgp::Status>,
    /// The node table last applied.
    peers: Mutex<Vec<Peer>>,
    /// Where the node table comes from and when each entry last changed
    /// (`twill nodes`).
    node_log: Mutex<views::NodeLog>,
}

/// A failure to bind the tunnel port, with who holds it when it is taken:
/// while the agent was down, another program (any local user may bind a
/// port above 1024) bound it and would receive the pods' tunnel traffic.
fn tunnel_port_taken(e: std::io::Error, bind: SocketAddrV4) -> anyhow::Error {
    if e.kind() != std::io::ErrorKind::AddrInUse {
        return e.into();
    }
    let holders: Vec<String> = portholder::udp_holders(bind)
        .iter()
        .map(ToString::to_string)
        .collect();
    let who = if holders.is_empty() {
        "by a socket /proc does not show".to_owned()
    } else {
        format!("by {}", holders.join("; "))
    };
    anyhow::Error::new(e).context(format!(
        "the tunnel port is held {who}: it would receive this node's tunnel traffic; \
         stop it, then start twill again (see README, \"The restart window\")"
    ))
}

/// The lease is held: it expires in the future (by the store's clock, read
/// as ours).
fn lease_check(c: &leases::ControlStatus, now: u64) -> Result<(), String> {
    match &c.lease {
        None => Err(format!("no lease (control plane {})", c.state)),
        Some(l) if l.expiration > now => Ok(()),
        Some(l) => Err(format!(
            "the lease of {} expired {} s ago (control plane {}{})",
            l.subnet,
            now - l.expiration,
            c.state,
            c.last_error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        )),
    }
}

/// Serves a started agent: the local API, the metrics endpoint (if
/// `run.metrics` names one) and the housekeeping thread.
pub fn serve_all(agent: &std::sync::Arc<Agent>, run: &RunOptions) -> Result<()> {
    serve(agent.clone(), run.api_idle_timeout)?;
    metrics::serve(agent, run.metrics)?;
    start_housekeeping(agent.clone())?;
    tracing::info!(socket = %agent.info.socket.display(), "API ready");
    Ok(())
}

/// How often the agent looks for pods whose namespace vanished.
pub const REAP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Starts the agent's housekeeping thread: every [`REAP_INTERVAL`] it
/// detaches the pods whose network namespace vanished without a CNI DEL
/// ([`Agent::reap_vanished`]). The thread ends with the process.
pub fn start_housekeeping(agent: std::sync::Arc<Agent>) -> Result<std::thread::JoinHandle<()>> {
    let h = std::thread::Builder::new()
        .name("twill-housekeeping".into())
        .spawn(move || {
            let mut errors = lograte::LogRate::new(lograte::RETRY_REPORT_INTERVAL);
            loop {
                std::thread::sleep(REAP_INTERVAL);
                if let Err(e) = agent.reap_vanished() {
                    if let Some(s) = errors.hit(std::time::Instant::now()) {
                        tracing::warn!(error = %format!("{e:#}"), suppressed = s.count,
                            "cannot look for vanished pod namespaces");
                    }
                }
            }
        })
        .context("starting the housekeeping thread")?;
    Ok(h)
}

/// The VTEP MAC: from the config, else from `<state_dir>/vtep_mac`, else a
/// new random one written there, so a restarted node keeps its MAC and its
/// peers' tables stay right.
pub fn vtep_mac(cfg: &NodeConfig) -> Result<MacAddr> {
    if let Some(m) = cfg.vtep_mac {
        return Ok(m);
    }
    let path = cfg.state_dir.join("vtep_mac");
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            return s
                .trim()
                .parse()
                .with_context(|| format!("{}: not a MAC address", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let mut b = [0u8; 6];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .context("reading /dev/urandom")?;
    let m = MacAddr::local_from_bytes(b);
    write_atomic(&path, format!("{m}\n").as_bytes())?;
    Ok(m)
}

/// The underlay MTU: from the config, else the MTU of the interface that
/// holds the public IP.
pub fn underlay_mtu(cfg: &NodeConfig) -> Result<u32> {
    if let Some(m) = cfg.underlay_mtu {
        return Ok(m);
    }
    netlink::mtu_of_link_with_address(cfg.public_ip)
        .with_context(|| format!("finding the interface that holds {}", cfg.public_ip))?
        .with_context(|| {
            format!(
                "public_ip {} is not an address of any interface in this network namespace",
                cfg.public_ip
            )
        })
}

impl Agent {
    /// Sets up the node in the current network namespace: learns the
    /// underlay MTU and the VTEP MAC, makes the [`NodePlan`], then creates
    /// what it says. `cfg` must hold a subnet and a net-conf: a static
    /// configuration, or one completed by [`NodeConfig::leased`].
    pub fn start(cfg: &NodeConfig, run: &RunOptions) -> Result<Agent> {
        let plan = NodePlan::new(cfg, underlay_mtu(cfg)?, vtep_mac(cfg)?)?;
        let bind = plan.tunnel_addr();
        let NodePlan {
            info,
            host,
            backend,
            mut switch,
            ..
        } = plan;
        switch.storm = run.storm;
        let workers = run.workers.clamp(1, MAX_WORKERS);
        // With CPU steering, worker i runs on the i-th allowed CPU.
        let steering = match run.steering {
            Steering::Flow => vswitch::dataplane::Steering::Flow,
            Steering::Hash => vswitch::dataplane::Steering::Hash,
            Steering::Cpu => {
                let cpus = vswitch::sys::steer::allowed_cpus()?;
                if cpus.len() != workers {
                    bail!(
                        "--steering cpu needs one worker per CPU: {} CPUs, {workers} workers",
                        cpus.len()
                    );
                }
                vswitch::dataplane::Steering::Cpu(cpus)
            }
        };

        let opts = udp::UdpOptions {
            reuse_port: workers > 1,
            recv_buf: Some(4 << 20),
            send_buf: Some(4 << 20),
        };
        // Bound in worker order, one after the other: with CPU steering
        // the reuseport group's index of a socket is its worker's.
        // host-gw has no tunnel: the workers' sockets (they have one each)
        // are bound to a loopback port nobody knows, and sent nothing.
        let net_backend = cfg.net_conf.as_ref().map(|n| n.backend);
        let tunnelled = net_backend.is_none_or(|b| b.has_tunnel());
        let bind = if tunnelled {
            bind
        } else {
            SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 0)
        };
        let tunnels = (0..workers)
            .map(|_| udp::bind_udp(bind, opts))
            .collect::<std::io::Result<Vec<UdpSocket>>>()
            .map_err(|e| tunnel_port_taken(e, bind))
            .with_context(|| format!("binding the {backend} socket(s) to {bind}"))?;
        let tx_sockets = if tunnelled {
            udp::bind_lanes(cfg.public_ip, TX_SOCKETS, opts).with_context(|| {
                format!("binding the tunnel's send sockets on {}", cfg.public_ip)
            })?
        } else {
            vec![]
        };

        let dataplane = Dataplane::start(DataplaneConfig {
            switch,
            tunnels,
            tx_sockets,
            offload: run.offload,
            busy_poll: run.busy_poll,
            steering,
        })
        .context("starting the dataplane")?;
        dataplane
            .set_remotes(plan::remote_nodes(&cfg.peers, info.port)?)
            .context("loading the peers")?;

        // The host port: a TAP in this namespace holding .2, with the
        // cluster network routed via the gateway.
        let queues = create_tap(&info.host_port, workers)
            .with_context(|| format!("creating host port {}", info.host_port))?;
        let tap = &queues[0];
        netlink::configure_link(
            tap.name(),
            &netlink::LinkConfig {
                mac: Some(host.mac),
                mtu: Some(info.mtu),
                addrs: vec![(host.ip, info.subnet.prefix())],
                up: true,
            },
        )
        .with_context(|| format!("configuring host port {}", tap.name()))?;
        let (cluster, gateway) = (info.cluster, info.gateway);
        netlink::add_route_v4(
            (cluster.addr(), cluster.prefix()),
            Some(gateway),
            Some(tap.created_ifindex()),
            false,
        )
        .with_context(|| format!("routing {cluster} via {gateway} on {}", info.host_port))?;
        if let Some(svc) = cfg.service_cidr {
            netlink::add_route_v4(
                (svc.addr(), svc.prefix_len()),
                Some(gateway),
                Some(tap.created_ifindex()),
                false,
            )
            .with_context(|| format!("routing the Service range {svc} via {gateway}"))?;
        }
        dataplane
            .add_port(HOST_PORT, queues, host)
            .context("attaching the host port")?;
        // Routes instead of tunnels to some nodes (host-gw, DirectRouting,
        // BGP): the keeper decides per node and owns the host routes (BIRD
        // owns them in BGP mode).
        let routing = match (&cfg.bgp, net_backend.filter(|b| b.routes_directly())) {
            (Some(_), _) => Some(hostroutes::Routing::Bgp),
            (None, Some(b)) => Some(hostroutes::Routing::Backend(b)),
            (None, None) => None,
        };
        let routes = match routing {
            Some(r) => {
                let k = hostroutes::RouteKeeper::start(r, info.port, dataplane.state().clone())
                    .context("starting the host routes to other nodes")?;
                k.set_peers(cfg.peers.clone());
                Some(k)
            }
            None => None,
        };
        let bgp = match (&cfg.bgp, &cfg.net_conf) {
            (Some(b), Some(nc)) => {
                let base = bgp::BirdParams {
                    router_id: cfg.public_ip,
                    asn: b.asn,
                    subnet: ipnet::Ipv4Net::new(info.subnet.addr(), info.subnet.prefix())
                        .context("this node's subnet")?,
                    network: nc.network,
                    host_port: info.host_port.clone(),
                    hold_time_secs: b.hold_time_secs,
                    sessions: Vec::new(),
                };
                Some(
                    bgp::Speaker::start(b, base, &cfg.state_dir, &cfg.peers)
                        .context("starting BGP (BIRD)")?,
                )
            }
            _ => None,
        };

        tracing::info!(name = %info.name, subnet = %info.subnet, public_ip = %info.public_ip,
            vtep_mac = %info.vtep_mac, backend = info.backend, mtu = info.mtu,
            peers = cfg.peers.len(), "node up");
        let pods = pods::Pods::restore(&info, &dataplane, &cfg.state_dir)
            .context("restoring the recorded pod attachments")?;
        let steering = steering::HostSteering::new(info.public_ip, info.gateway, &info.host_port);
        let (local_pods, _) = tokio::sync::watch::channel(pods.identities());
        Ok(Agent {
            local_pods,
            vanished: std::sync::atomic::AtomicU64::new(0),
            api_serving: std::sync::atomic::AtomicBool::new(false),
            pods: Mutex::new(pods),
            info,
            backend,
            dataplane,
            control: Mutex::new(None),
            services: Mutex::new(serde_json::Value::Null),
            steering: Mutex::new(steering),
            routes: Mutex::new(routes),
            bgp_status: bgp.as_ref().map(bgp::Speaker::status),
            bgp: Mutex::new(bgp),
            peers: Mutex::new(cfg.peers.clone()),
            node_log: Mutex::new(views::NodeLog::new(&cfg.peers)),
        })
    }

    /// Replaces the node table: tunnels go to exactly these peers from now
    /// on. Flows to peers that stay are not disturbed.
    pub fn set_peers(&self, peers: &[Peer]) -> Result<()> {
        if let Ok(mut p) = self.peers.lock() {
            *p = peers.to_vec();
        }
        self.log_peers(peers);
        if let Some(b) = self.bgp.lock().ok().as_ref().and_then(|b| b.as_ref()) {
            b.set_peers(peers.to_vec());
        }
        if let Some(k) = self.routes.lock().ok().as_ref().and_then(|r| r.as_ref()) {
            k.set_peers(peers.to_vec());
            return Ok(());
        }
        self.dataplane
            .set_remotes(plan::remote_nodes(peers, self.info.port)?)
            .context("loading the node table into the dataplane")
    }

    /// The tunnel backend.
    pub fn backend(&self) -> BackendType {
        self.backend
    }

    /// Records the control plane's state for `twill status`.
    pub fn set_control_status(&self, v: leases::ControlStatus) {
        if let Ok(mut c) = self.control.lock() {
            *c = Some(v);
        }
    }

    /// The control plane's state; `None` for a static node table.
    pub fn control_status(&self) -> Option<leases::ControlStatus> {
        self.control.lock().ok().and_then(|c| c.clone())
    }

    /// Publishes a new service table to the dataplane, and steers its
    /// NodePorts and external IPs from the host into the switch.
    pub fn set_services(&self, table: vswitch::core::service::ServiceTable) -> Result<()> {
        let wanted = steering::Wanted::of(&table, self.info.gateway);
        self.dataplane.set_services(table);
        self.steering
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sync(&wanted)
    }

    /// Records the service follower's state for `twill status`.
    pub fn set_services_status(&self, v: serde_json::Value) {
        if let Ok(mut c) = self.services.lock() {
            *c = v;
        }
    }

    /// The service ports the dataplane balances, as `twill service list`
    /// shows them: each port's frontends and usable backends per scope.
    pub fn services_json(&self) -> serde_json::Value {
        let table = self.dataplane.services();
        let mut ports: Vec<_> = table.ports().collect();
        ports.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        let addrs = |p: &vswitch::core::service::Pool| {
            p.backends.iter().map(|a| a.to_string()).collect::<Vec<_>>()
        };
        use vswitch::core::service::Scope;
        serde_json::Value::Array(
            ports
                .into_iter()
                .map(|p| {
                    let s = &p.spec;
                    serde_json::json!({
                        "name": s.name,
                        "protocol": s.proto.to_string(),
                        "frontends": s.frontends.iter().map(|f| serde_json::json!({
                            "address": std::net::SocketAddr::new(f.ip, f.port).to_string(),
                            "scope": match f.scope { Scope::Internal => "internal", Scope::External => "external" },
                        })).collect::<Vec<_>>(),
                        "endpoints": s.endpoints.len(),
                        "backends": addrs(p.pool(Scope::Internal)),
                        "external_backends": addrs(p.pool(Scope::External)),
                        "affinity_secs": s.affinity.map(|d| d.as_secs()),
                        "internal_traffic_policy": if s.internal_local { "Local" } else { "Cluster" },
                        "external_traffic_policy": if s.external_local { "Local" } else { "Cluster" },
                    })
                })
                .collect(),
        )
    }

    /// Writes flannel's `subnet.env` (atomically: temp file, rename), so
    /// that tools built for flannel find this node's network.
    pub fn write_subnet_env(&self, path: &Path, ip_masq: bool) -> Result<()> {
        let i = &self.info;
        let net = |c: Cidr| ipnet::Ipv4Net::new(c.addr(), c.prefix());
        let (Ok(cluster), Ok(subnet)) = (net(i.cluster), net(i.subnet)) else {
            bail!("bad prefix in {} or {}", i.cluster, i.subnet);
        };
        let text = control::plane::subnet_env(cluster, subnet, i.mtu, ip_masq);
        write_atomic(path, text.as_bytes())
    }

    /// The dataplane.
    pub fn dataplane(&self) -> &Dataplane {
        &self.dataplane
    }

    /// Attaches a pod (see the `pods` module).
    pub fn attach(&self, req: &crate::api::AttachRequest) -> Result<crate::api::Attachment> {
        let mut pods = self
            .pods
            .lock()
            .map_err(|_| anyhow::anyhow!("pod table poisoned"))?;
        let att = pods.attach(&self.info, &self.dataplane, req);
        self.local_pods.send_replace(pods.identities());
        att
    }

    /// Detaches the pods whose network namespace vanished without a CNI
    /// DEL (their TAP answers EBADFD and the dataplane stopped polling it),
    /// releasing their addresses as the restart reconciliation does.
    /// Returns the ids detached.
    pub fn reap_vanished(&self) -> Result<Vec<String>> {
        let stats = self
            .dataplane
            .stats()
            .context("reading the dataplane's counters")?;
        let dead: std::collections::BTreeSet<u16> = stats
            .ports
            .iter()
            .filter(|p| p.dead)
            .map(|p| p.id)
            .collect();
        if dead.is_empty() {
            return Ok(Vec::new());
        }
        let mut pods = self
            .pods
            .lock()
            .map_err(|_| anyhow::anyhow!("pod table poisoned"))?;
        let gone = pods.vanished(&dead);
        for id in &gone {
            pods.detach(&self.dataplane, id)?;
            self.vanished
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(id = %id, "pod's network namespace vanished without a CNI DEL; detached");
        }
        if !gone.is_empty() {
            self.local_pods.send_replace(pods.identities());
        }
        Ok(gone)
    }

    /// The Kubernetes pods attached here, as they change.
    pub fn local_pods(
        &self,
    ) -> tokio::sync::watch::Receiver<Vec<(crate::api::PodRef, std::net::Ipv4Addr)>> {
        self.local_pods.subscribe()
    }

    /// Publishes the compiled NetworkPolicies of this node's pods.
    pub fn set_policy(&self, table: vswitch::core::policy::PolicyTable) {
        self.dataplane.set_policy(table);
    }

    /// Detaches a pod by id.
    pub fn detach(&self, id: &str) -> Result<bool> {
        let mut pods = self
            .pods
            .lock()
            .map_err(|_| anyhow::anyhow!("pod table poisoned"))?;
        let gone = pods.detach(&self.dataplane, id);
        self.local_pods.send_replace(pods.identities());
        gone
    }

    /// The dataplane port of attachment `id` (`None`: attached, but its
    /// interface is missing now); an error if there is no such attachment.
    fn pod_port(&self, id: &str) -> Result<Option<PortId>> {
        let pods = self
            .pods
            .lock()
            .map_err(|_| anyhow::anyhow!("pod table poisoned"))?;
        pods.port_of(id)
            .ok_or_else(|| pod_error::PodError::NotFound(id.to_owned()).into())
    }

    /// Current attachments.
    pub fn list(&self) -> Result<Vec<crate::api::Attachment>> {
        let pods = self
            .pods
            .lock()
            .map_err(|_| anyhow::anyhow!("pod table poisoned"))?;
        Ok(pods.list())
    }

    /// Counters as JSON: the [`vswitch::stats::Report`] of the
    /// dataplane, the pods and the node table.
    pub fn counters_json(&self) -> Result<serde_json::Value> {
        serde_json::to_value(self.report()?).context("serializing the counters")
    }

    /// Every counter, as `twill counters` and the metrics report them.
    pub fn report(&self) -> Result<vswitch::stats::Report> {
        let s = self
            .dataplane
            .stats()
            .context("reading the dataplane's counters")?;
        let pods = vswitch::stats::PodReport {
            vanished: self.vanished.load(std::sync::atomic::Ordering::Relaxed),
        };
        Ok(vswitch::stats::Report::new(&s, pods, self.reach()))
    }

    /// Every worker answers (liveness: `/healthz`).
    pub fn workers_check(&self) -> control::metrics::Check {
        let r = self
            .dataplane
            .stats()
            .map(|_| ())
            .map_err(|e| format!("a dataplane worker does not answer: {e}"));
        control::metrics::Check::new("workers", r)
    }

    /// The readiness checks (`/readyz`, and CNI STATUS through `ready` in
    /// `twill status`): the workers answer, the local API serves, and the
    /// node's lease (if it leases) has not expired.
    pub fn readiness(&self) -> Vec<control::metrics::Check> {
        use control::metrics::Check;
        let api = if self.api_serving.load(std::sync::atomic::Ordering::Acquire) {
            Ok(())
        } else {
            Err(format!("not serving {}", self.info.socket.display()))
        };
        let lease = match self.control_status() {
            None => Ok(()),
            Some(c) => lease_check(&c, views::unix_now()),
        };
        vec![
            self.workers_check(),
            Check::new("api", api),
            Check::new("lease", lease),
        ]
    }

    /// Status as JSON.
    pub fn status_json(&self) -> serde_json::Value {
        let i = &self.info;
        serde_json::json!({
            "name": i.name, "public_ip": i.public_ip.to_string(), "subnet": i.subnet.to_string(),
            "cluster": i.cluster.to_string(), "gateway": i.gateway.to_string(),
            "vtep_mac": i.vtep_mac.to_string(), "backend": i.backend, "port": i.port,
            "mtu": i.mtu, "underlay_mtu": i.underlay_mtu, "host_port": i.host_port,
            "pods": self.list().map(|l| l.len()).unwrap_or(0),
            "ready": control::metrics::all_ok(&self.readiness()),
            "control": self.control_status(),
            "services": self.services.lock().map(|c| c.clone()).unwrap_or_default(),
            "nodes": self.reach(),
            "bgp": self.bgp_json(),
            "captures": self.dataplane.captures().len(),
        })
    }

    /// BGP's sessions as `twill bgp status` shows them; `null` without BGP.
    pub fn bgp_json(&self) -> serde_json::Value {
        self.bgp_status
            .as_ref()
            .map_or(serde_json::Value::Null, bgp::Status::json)
    }

    /// How each node of the table is reached (tunnel or route) and why.
    pub fn reach(&self) -> Vec<hostroutes::NodeReach> {
        if let Some(k) = self.routes.lock().ok().as_ref().and_then(|r| r.as_ref()) {
            return k.reach();
        }
        let peers = self.peers.lock().map(|p| p.clone()).unwrap_or_default();
        peers
            .into_iter()
            .map(|p| hostroutes::NodeReach {
                node: p.name,
                subnet: p.subnet,
                public_ip: p.public_ip,
                via: hostroutes::Reach::Tunnel,
                reason: format!("{} backend", self.info.backend),
            })
            .collect()
    }

    /// Closes every pod's TAP (on shutdown: they go with the process anyway,
    /// this makes it orderly). The attachments stay recorded: the next start
    /// re-creates the interfaces of the pods that still exist.
    pub fn shutdown(&self) {
        if let Ok(mut pods) = self.pods.lock() {
            pods.close_all(&self.dataplane);
        }
        if let Ok(mut s) = self.steering.lock() {
            s.remove();
        }
        // BIRD first: it closes its sessions (the peers withdraw this
        // node's subnet) and removes the routes it installed.
        if let Some(mut b) = self.bgp.lock().ok().and_then(|mut b| b.take()) {
            b.stop();
        }
        if let Some(mut k) = self.routes.lock().ok().and_then(|mut r| r.take()) {
            k.stop();
        }
    }
}

/// Most worker threads a node runs.
pub const MAX_WORKERS: usize = 16;

/// Worker threads by default: one per CPU this process may run on.
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(MAX_WORKERS)
}

/// A TAP with one queue (fd) per worker: multi-queue when there are several
/// workers. All queues are opened here, in the namespace the device is
/// created in, before it moves anywhere.
fn create_tap(name: &str, workers: usize) -> std::io::Result<Vec<Tap>> {
    let first = Tap::create_with(
        name,
        vswitch::sys::tap::TapOptions {
            multi_queue: workers > 1,
        },
    )?;
    let mut queues = Vec::with_capacity(workers);
    for _ in 1..workers {
        queues.push(first.open_queue()?);
    }
    queues.insert(0, first);
    Ok(queues)
}

/// Removes a stale socket file left by a process that died, refusing to
/// take over one a live agent still answers on.
pub fn claim_socket(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("another twill agent is listening on {}", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    Ok(())
}

/// [`crate::fsutil::write_atomic`], with the error as context.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    Ok(crate::fsutil::write_atomic(path, data)?)
}
