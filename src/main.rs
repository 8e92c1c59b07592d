//! `twill`: the userspace overlay dataplane's command line.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use nix::sys::signal::{SigSet, Signal};

use twill::agent::{self, Agent};
use twill::api::{self, AttachRequest, Request, DEFAULT_SOCKET};

mod capture_cmd;
mod controller_cmd;
#[cfg(feature = "lab")]
mod lab_cmd;
mod service_cmd;

/// twill: a userspace overlay dataplane for Kubernetes-style pod networks
/// (flannel's model and wire formats, VXLAN or UDP, TAP ports, MAC learning).
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
#[cfg_attr(
    not(feature = "lab"),
    command(
        after_help = "This build has no network-namespace lab (cargo feature `lab`): \
                          the `demo`, `bench` and `bench-services` commands are not in it."
    )
)]
struct Cli {
    /// How log lines (on stderr) are written: `text` for people, `json`
    /// for log shippers (one object a line: timestamp, level, target,
    /// fields, message). RUST_LOG sets the level (default: info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the node agent in the current network namespace until SIGTERM or
    /// SIGINT: takes its subnet and node table from its config file or
    /// leases them from a controller or etcd (and follows the table live),
    /// writes subnet.env, creates the host port, binds the tunnel socket,
    /// serves the local API for pod attachments.
    Node {
        /// The node's configuration (JSON; see the README).
        #[arg(long, short)]
        config: PathBuf,
        /// Do not ask TAPs for checksum and segmentation offloads: every
        /// frame is then at most one MTU (slower; for debugging and
        /// comparison).
        #[arg(long)]
        no_offload: bool,
        /// Worker threads (each with its own queue of every TAP and its own
        /// tunnel socket; see --steering). Default: one per CPU, at most
        /// 16. With --steering cpu: exactly one per CPU this process may
        /// run on (its affinity mask), and any other number is refused.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=16))]
        workers: Option<u64>,
        /// How a packet finds its worker. `hash` (the default) lets the
        /// kernel hash each direction of a flow to a TAP queue and a tunnel
        /// socket apart, workers running anywhere. `flow` puts both
        /// directions of a flow on one worker: every TAP picks its queue by
        /// the flow's symmetric hash (eBPF), the tunnel sends the flow from
        /// a source port that carries the hash's lane, and the receiving
        /// node's reuseport group reads it back (classic BPF), so that a
        /// reply is handled by the worker that delivered the request; on
        /// two CPUs it measured 5-10 % below `hash` in one-flow throughput
        /// and no faster in latency (benches/RESULTS.md).
        /// `cpu` pins worker i to the i-th CPU the process may run on and
        /// hands each packet to the worker of the CPU that produced it
        /// (eBPF on every TAP, classic BPF on the tunnel's reuseport group),
        /// a busy flow keeping its worker; experimental: on two CPUs it
        /// measured no faster than the others, and one flow's 64-byte UDP
        /// rate falls by up to a third (benches/RESULTS.md).
        #[arg(long, value_enum, default_value_t = agent::Steering::Hash)]
        steering: agent::Steering,
        /// When a worker keeps polling its TAPs and sockets instead of
        /// sleeping: `adaptive` polls for --busy-poll-us after a wake-up that
        /// carried a few small packets (request/response traffic: lower
        /// latency) and not for 20 ms after bulk traffic (super-frames,
        /// bursts), where polling would take CPU from the pods; `always`
        /// polls after any traffic; `off` sleeps at once.
        #[arg(long, value_enum, default_value_t = BusyPollMode::Adaptive)]
        busy_poll: BusyPollMode,
        /// Microseconds a worker keeps polling after its last packet (see
        /// --busy-poll).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        busy_poll_us: u64,
        /// Seconds after which the local API closes a connection that sent
        /// nothing (the API also takes at most 64 connections at once and
        /// requests of at most 1 MiB).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
        api_idle_timeout_secs: u64,
        /// Broadcast frames a second that one pod port may make the switch
        /// flood, after a burst of --storm-burst; the rest are dropped and
        /// counted (`storm_control`, and `storm_dropped` on the port). 0:
        /// unlimited. ARP requests for the gateway are answered by the
        /// router and never counted.
        #[arg(long, default_value_t = 1000)]
        storm_broadcast_pps: u32,
        /// Multicast frames a second a pod port may make the switch flood
        /// (0: unlimited).
        #[arg(long, default_value_t = 1000)]
        storm_multicast_pps: u32,
        /// Frames a second to unknown unicast MACs a pod port may make the
        /// switch flood (0: unlimited).
        #[arg(long, default_value_t = 1000)]
        storm_unknown_unicast_pps: u32,
        /// Frames of each storm-control class a quiet pod port may send at
        /// once.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
        storm_burst: u32,
        /// Serve Prometheus metrics (`/metrics`, OpenMetrics text) and the
        /// probes `/healthz` (the workers answer) and `/readyz` (workers,
        /// local API and lease: what CNI STATUS checks) on this address, in
        /// plain HTTP: e.g. 127.0.0.1:9475 for a node-local scraper. Default:
        /// not served (the agent shares the host's ports; see README,
        /// "Metrics").
        #[arg(long)]
        metrics_addr: Option<std::net::SocketAddr>,
    },
    /// Run the embedded controller until SIGTERM or SIGINT: hands out pod
    /// subnets of the cluster network to nodes over HTTP/JSON (bearer
    /// token), streams every lease change to watching nodes, and keeps its
    /// state in a file that survives restarts.
    Controller(controller_cmd::ControllerArgs),
    /// Kubernetes Services in the switch: store Services and EndpointSlices
    /// (`apply -f`, `delete`) where every node follows them, and show what
    /// the local agent balances (`list`).
    Service {
        #[command(subcommand)]
        cmd: service_cmd::ServiceCmd,
    },
    /// Store the objects of a manifest where every node follows them:
    /// Services, EndpointSlices, Pods (labels, container ports),
    /// Namespaces (labels) and NetworkPolicies, as `kubectl get -o
    /// json|yaml` prints them (several documents, or a `kind: List`). Other
    /// kinds are skipped and named; every object is checked before any is
    /// written.
    Apply {
        /// The manifest file, or `-` for standard input.
        #[arg(short = 'f', long = "filename")]
        file: String,
        #[command(flatten)]
        store: service_cmd::StoreArgs,
    },
    /// Delete stored objects: every object a manifest names (`-f FILE`),
    /// or one (`KIND NAME`, e.g. `networkpolicy deny-all -n prod`).
    Delete {
        /// The kind: pod, namespace, networkpolicy (netpol), service (svc),
        /// endpointslice, podaddress, or their plural.
        #[arg(requires = "name", conflicts_with = "file")]
        kind: Option<String>,
        /// The object's name.
        name: Option<String>,
        /// Its namespace (ignored for namespaces).
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// Delete the objects this manifest names instead.
        #[arg(short = 'f', long = "filename")]
        file: Option<String>,
        #[command(flatten)]
        store: service_cmd::StoreArgs,
    },
    /// Attach, detach or list pods on a running agent.
    Pod {
        #[command(subcommand)]
        cmd: PodCmd,
    },
    /// Print the agent's identity and control-plane state as JSON; exits
    /// non-zero when no agent answers.
    Status {
        /// The agent's API socket.
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// BGP mode (the node config's `bgp` block).
    Bgp {
        #[command(subcommand)]
        cmd: BgpCmd,
    },
    /// The CNI plugin: this program run as `twill-cni` is the plugin a
    /// container runtime calls (see the README).
    Cni {
        #[command(subcommand)]
        cmd: CniCmd,
    },
    /// Print the dataplane's counters (drops by reason, ports, tunnel).
    Counters {
        /// The agent's API socket.
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the MAC table: port, segment, MAC, age or `static`, as
    /// `ovs-appctl fdb/show` does.
    Fdb(ViewArgs),
    /// Print the other nodes: name, public IP, subnet, VTEP MAC, how they
    /// are reached, where each entry came from and when it changed.
    Nodes(ViewArgs),
    /// Print the router's table, in the order the router decides.
    Routes(ViewArgs),
    /// Print the ports: pod id, netns, IP, MAC, MTU, queues, offloads.
    Ports(ViewArgs),
    /// Copy a port's frames or the tunnel's datagrams to a pcap file or to
    /// `-w -`, like `tcpdump -w` (root or the socket's owner only). Ends
    /// after -c packets or on Ctrl-C with a valid file, and prints on stderr
    /// the packets captured and those dropped because the capture's queue
    /// was full (the dataplane never waits for a capture).
    Capture(capture_cmd::CaptureArgs),
    /// Build the embedded controller and a two-node overlay (the nodes lease
    /// their subnets from the controller) with two pods per node, in network
    /// namespaces on this machine; show pings and TCP throughput on every
    /// path, and clean everything up (also on Ctrl-C). Needs root.
    #[cfg(feature = "lab")]
    Demo(lab_cmd::DemoArgs),
    /// Benchmark pod-to-pod networking end to end. For each system, builds
    /// two node namespaces joined by a veth underlay with one pod on each,
    /// and measures pod A -> pod B with iperf3 (TCP 1 and 4 streams, 64-byte
    /// UDP packets/s), a 1-byte TCP request/response loop (mean, p50 and
    /// p99 latency) and the whole machine's CPU time per Gbit. Prints a
    /// table with ratios to kernel-vxlan and, per system, where the UDP
    /// test's lost packets were dropped and the TCP tests' retransmitted
    /// segments beside the drops during them (from the namespaces' and
    /// agents' drop counters), writes DIR/results.json and a bar
    /// chart DIR/results.png, and removes everything it built (also on
    /// Ctrl-C). Needs root and iperf3; run the
    /// release build (`cargo run --release -- bench`), since the nodes run
    /// this very executable.
    #[cfg(feature = "lab")]
    Bench(lab_cmd::BenchArgs),
    /// Measure Services at scale on one node: a static `twill node` in a
    /// network namespace with two pods follows a directory into which N
    /// Services × M endpoints are written (in steps: 100, 1,000, 10,000 …);
    /// at each step, the agent's memory and idle CPU, and the time from
    /// writing one more Service (endpoint: a UDP echo server in a pod) to
    /// the first datagram to its ClusterIP answered, beside the agent's own
    /// publish time. Removes everything it built (also on Ctrl-C). Needs
    /// root; run the release build.
    #[cfg(feature = "lab")]
    BenchServices(lab_cmd::BenchServicesArgs),
    /// Soak two leased nodes (not a test; minutes to hours): pods come and
    /// go through the CNI plugin on both without pause, iperf3 runs between
    /// two long-lived pods, leases renew every 5 s, and node B is killed
    /// with SIGKILL and restarted at an interval. Prints each agent's RSS,
    /// fds, threads, attachments and log lines every 10 s; fails unless
    /// node A's fds and threads end where they were after the first minute,
    /// its RSS grew by at most 25 %, no address leaked and the logs stayed
    /// under 30 lines a minute beside two per pod. Removes everything it built (also on
    /// Ctrl-C). Needs root and iperf3; run the release build.
    #[cfg(feature = "lab")]
    Soak(lab_cmd::SoakArgs),
    /// `demo` or `bench` asked of a build without the lab: not listed, and
    /// answered with a clear error rather than "unrecognized subcommand".
    #[cfg(not(feature = "lab"))]
    #[command(
        name = "demo",
        aliases = ["bench", "bench-services", "soak"],
        hide = true,
        disable_help_flag = true
    )]
    NoLab {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Measure the controller at scale: start `twill controller` on
    /// loopback, N simulated agents (a lease and a watch stream each, no
    /// dataplane), then time how long lease changes take to reach every
    /// agent (p50, p99) and read the controller's memory.
    BenchControl {
        /// Simulated agents.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=60000))]
        agents: u64,
        /// Lease changes to time (a node joins, then leaves, alternately).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=10000))]
        changes: u64,
        /// Also write the figures as JSON to this file.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// `twill node --busy-poll`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum BusyPollMode {
    Adaptive,
    Always,
    Off,
}

impl BusyPollMode {
    fn with_window(self, window: std::time::Duration) -> vswitch::busy_poll::BusyPoll {
        use vswitch::busy_poll::BusyPoll;
        match self {
            BusyPollMode::Adaptive => BusyPoll::Adaptive(window),
            BusyPollMode::Always => BusyPoll::Always(window),
            BusyPollMode::Off => BusyPoll::Off,
        }
    }
}

#[derive(Debug, Subcommand)]
enum BgpCmd {
    /// Each BGP peer's session state, as `calicoctl node status` shows it:
    /// address, type (router or node-to-node mesh), AS, BIRD's protocol
    /// state, since when, and the session state with its last error.
    Status {
        /// The agent's API socket.
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum CniCmd {
    /// Install the plugin (a copy of this program named `twill-cni`) and the
    /// network configuration list `10-twill.conflist` (twill, then portmap).
    Install {
        /// Where runtimes look for plugins.
        #[arg(long, default_value = "/opt/cni/bin")]
        bin_dir: PathBuf,
        /// Where runtimes read network configurations.
        #[arg(long, default_value = "/etc/cni/net.d")]
        conf_dir: PathBuf,
        /// The agent's API socket, written into the configuration.
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Install a symbolic link to this program instead of a copy.
        #[arg(long)]
        symlink: bool,
    },
}

#[derive(Debug, Subcommand)]
enum PodCmd {
    /// Create a pod interface: a TAP moved into the namespace, with the next
    /// free address of the node's subnet, a MAC, the tunnel's MTU and a
    /// default route via the gateway. Prints the attachment as JSON.
    Attach {
        /// The agent's API socket.
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Network namespace: a name under /run/netns, or a path.
        #[arg(long)]
        netns: String,
        /// Interface name inside the namespace.
        #[arg(long, default_value = "eth0")]
        ifname: String,
        /// Attachment id (default `<netns>:<ifname>`).
        #[arg(long)]
        id: Option<String>,
        /// A specific address of the node's subnet.
        #[arg(long)]
        ip: Option<std::net::Ipv4Addr>,
        /// A further source MAC the pod may send from (port security:
        /// without exceptions a pod sends only from its own MAC and
        /// address); for a pod that bridges others. Repeatable.
        #[arg(long, value_name = "MAC")]
        allow_mac: Vec<String>,
        /// A further IPv4 source prefix the pod may send from (and claim in
        /// ARP), e.g. 10.244.1.200/32; for a pod that routes or bridges for
        /// others. Repeatable.
        #[arg(long, value_name = "CIDR")]
        allow_ip: Vec<String>,
        /// The Kubernetes pod this is, NAMESPACE/NAME: its labels and
        /// container ports come from the Pod object of that name, the
        /// NetworkPolicies of its namespace apply to it, and the node
        /// publishes its address so that other nodes can match it.
        #[arg(long, value_name = "NS/NAME")]
        pod: Option<api::PodRef>,
    },
    /// Remove a pod interface and free its address.
    Detach {
        /// The agent's API socket.
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Attachment id.
        #[arg(long, conflicts_with = "netns")]
        id: Option<String>,
        /// Network namespace (with --ifname) instead of an id.
        #[arg(long)]
        netns: Option<String>,
        /// Interface name, with --netns.
        #[arg(long, default_value = "eth0")]
        ifname: String,
    },
    /// List attachments as JSON.
    List {
        /// The agent's API socket.
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
}

fn main() {
    // Run as `twill-cni`: the CNI plugin. Its stdout belongs to the runtime
    // (the result or the error object), so no logging set-up here.
    if twill::cni::invoked_as_plugin() {
        std::process::exit(twill::cni::plugin_main());
    }
    // netlink-packet-route warns about every attribute newer than itself
    // (e.g. IFLA_INET6_CONF growing by a field, once per pod attached):
    // noise, not a problem of ours. Silenced also under RUST_LOG=info,
    // unless RUST_LOG names it.
    let env = std::env::var("RUST_LOG").unwrap_or_default();
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if !env.contains("netlink_packet_route") {
        if let Ok(d) = "netlink_packet_route=error".parse() {
            filter = filter.add_directive(d);
        }
    }
    let cli = Cli::parse();
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => log
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => log.json().flatten_event(true).init(),
    }
    if let Err(e) = run(cli) {
        eprintln!("twill: {e:#}");
        std::process::exit(1);
    }
}

/// The options of `twill fdb`, `nodes`, `routes` and `ports`.
#[derive(Debug, clap::Args)]
struct ViewArgs {
    /// The agent's API socket.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn print_json(v: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Node {
            config,
            no_offload,
            workers,
            steering,
            busy_poll,
            busy_poll_us,
            api_idle_timeout_secs,
            storm_broadcast_pps,
            storm_multicast_pps,
            storm_unknown_unicast_pps,
            storm_burst,
            metrics_addr,
        } => node(
            &config,
            &agent::RunOptions {
                offload: !no_offload,
                workers: agent::workers_for(workers.map(|w| w as usize), steering)?,
                busy_poll: busy_poll.with_window(std::time::Duration::from_micros(busy_poll_us)),
                api_idle_timeout: std::time::Duration::from_secs(api_idle_timeout_secs),
                storm: vswitch::core::ratelimit::StormLimits {
                    broadcast_pps: storm_broadcast_pps,
                    multicast_pps: storm_multicast_pps,
                    unknown_unicast_pps: storm_unknown_unicast_pps,
                    burst: storm_burst,
                },
                metrics: metrics_addr,
                steering,
            },
        ),
        Cmd::Controller(args) => controller_cmd::run(args),
        Cmd::Service { cmd } => service_cmd::run(cmd),
        Cmd::Apply { file, store } => service_cmd::apply(&file, &store),
        Cmd::Delete {
            kind,
            name,
            namespace,
            file,
            store,
        } => service_cmd::delete(
            file.as_deref(),
            kind.as_deref(),
            name.as_deref(),
            &namespace,
            &store,
        ),
        Cmd::Pod { cmd } => match cmd {
            PodCmd::Attach {
                socket,
                netns,
                ifname,
                id,
                ip,
                allow_mac,
                allow_ip,
                pod,
            } => print_json(&api::call(
                &socket,
                &Request::Attach(AttachRequest {
                    netns,
                    ifname,
                    id,
                    ip,
                    cni: None,
                    port_security: api::PortSecurity {
                        allowed_macs: allow_mac,
                        allowed_ips: allow_ip,
                    },
                    pod,
                }),
            )?),
            PodCmd::Detach {
                socket,
                id,
                netns,
                ifname,
            } => {
                let id = match (id, netns) {
                    (Some(id), _) => id,
                    (None, Some(ns)) => format!("{ns}:{ifname}"),
                    (None, None) => bail!("say which pod: --id ID, or --netns NS [--ifname IF]"),
                };
                print_json(&api::call(&socket, &Request::Detach { id })?)
            }
            PodCmd::List { socket } => print_json(&api::call(&socket, &Request::List)?),
        },
        Cmd::Status { socket } => print_json(&api::call(&socket, &Request::Status)?),
        Cmd::Bgp {
            cmd: BgpCmd::Status { socket, json },
        } => {
            let v = api::call(&socket, &Request::Bgp)?;
            if json {
                print_json(&v)
            } else {
                print!("{}", agent::bgp::status_table(&v));
                Ok(())
            }
        }
        Cmd::Cni {
            cmd:
                CniCmd::Install {
                    bin_dir,
                    conf_dir,
                    socket,
                    symlink,
                },
        } => {
            let source = std::env::current_exe().context("finding this program's path")?;
            let done = twill::cni::install(&twill::cni::InstallOptions {
                source,
                bin_dir,
                conf_dir,
                socket: Some(socket),
                symlink,
            })?;
            println!("installed {}", done.plugin.display());
            println!("installed {}", done.conflist.display());
            Ok(())
        }
        Cmd::Counters { socket, json } => {
            let v = api::call(&socket, &Request::Counters)?;
            if json {
                print_json(&v)
            } else {
                let report: vswitch::stats::Report = serde_json::from_value(v)
                    .context("reading the agent's counters (is it another twill version?)")?;
                print!("{}", twill::report::counters_table(&report));
                Ok(())
            }
        }
        Cmd::Fdb(a) => twill::views_cmd::run(twill::views_cmd::View::Fdb, &a.socket, a.json),
        Cmd::Nodes(a) => twill::views_cmd::run(twill::views_cmd::View::Nodes, &a.socket, a.json),
        Cmd::Routes(a) => twill::views_cmd::run(twill::views_cmd::View::Routes, &a.socket, a.json),
        Cmd::Ports(a) => twill::views_cmd::run(twill::views_cmd::View::Ports, &a.socket, a.json),
        Cmd::Capture(args) => capture_cmd::run(args),
        #[cfg(feature = "lab")]
        Cmd::Demo(args) => lab_cmd::demo(args),
        Cmd::BenchControl {
            agents,
            changes,
            out,
        } => twill::ctlbench::run(twill::ctlbench::Options {
            agents: agents as usize,
            changes: changes as usize,
            twill_bin: std::env::current_exe().context("finding this program's path")?,
            out,
        }),
        #[cfg(feature = "lab")]
        Cmd::Bench(args) => lab_cmd::bench(args),
        #[cfg(feature = "lab")]
        Cmd::BenchServices(args) => lab_cmd::bench_services(args),
        #[cfg(feature = "lab")]
        Cmd::Soak(args) => lab_cmd::soak(args),
        #[cfg(not(feature = "lab"))]
        Cmd::NoLab { .. } => bail!(
            "`demo`, `bench`, `bench-services` and `soak` are not in this build: it was built without the \
             network-namespace lab (cargo feature `lab`, on by default)"
        ),
    }
}

fn node(config: &std::path::Path, run: &agent::RunOptions) -> Result<()> {
    // The error names the file and the field already.
    let cfg = control::NodeConfig::load(config)?;
    // Every API client holds a socket; don't run out at a low soft limit.
    twill::rlimit::raise_fd_limit();
    // Block the stop signals before any thread starts, so that every thread
    // inherits the mask and only the main thread's sigwait sees them.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGTERM);
    stop.add(Signal::SIGINT);
    stop.thread_block().context("blocking SIGTERM/SIGINT")?;

    if let Some(plane) = &cfg.control {
        return agent::leases::run_node(&cfg, plane, run, stop);
    }
    let agent = Arc::new(Agent::start(&cfg, run)?);
    agent.set_peers(&cfg.peers)?;
    agent
        .write_subnet_env(&cfg.lease.subnet_env, cfg.lease.ip_masq)
        .context("writing subnet.env")?;
    agent::serve_all(&agent, run)?;
    let _services = match &cfg.objects_dir {
        Some(dir) => Some(agent::services::follow_in_thread(
            agent.clone(),
            agent::lease_store::ObjectSource::Dir(dir.clone()),
        )?),
        None => None,
    };
    let sig = stop.wait().context("waiting for a stop signal")?;
    tracing::info!(signal = ?sig, "stopping");
    agent.shutdown();
    let _ = std::fs::remove_file(&cfg.socket);
    Ok(())
}
