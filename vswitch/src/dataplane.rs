//! The dataplane driver: worker threads, each owning a [`Switch`] over the
//! node's one [`SwitchState`], its queue of every port's TAP and its tunnel
//! sockets. A worker waits on them with epoll and runs every frame to
//! completion (read → `Switch::process_*` → write), at most [`BURST`] frames
//! per ready fd per wake-up so that one busy port cannot starve the others
//! (OVS's `NETDEV_MAX_BURST`).
//!
//! The control side changes the switch's tables in the shared state (they
//! are published as snapshots the workers read without a lock), and talks
//! to the workers through a channel and a waker only for what each owns:
//! its TAP queues and its counters.
//! This module knows no forwarding rule: it performs the core's [`Action`]s.
//! The tunnel's receive and send paths are its submodules `tunnel_rx` and
//! `tunnel_tx`.

use std::io;
use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use encap::{gro, vnet, PacketBuf};

use crate::busy_poll::{BulkSignal, BusyPoll, Spinner};
use crate::capture::{Active, Captures};
use crate::core::policy::PolicyTable;
use crate::core::service::ServiceTable;
use crate::core::{
    Action, Allowance, PortConfig, PortId, RemoteNode, Switch, SwitchConfig, SwitchState,
};
use crate::sys::poll::{Events, Poller, Waker};
use crate::sys::tap::{
    Tap, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO_ECN, TUN_F_USO4, TUN_F_USO6, VNET_HDR_LEN,
};
use crate::sys::{steer, udp};
use crate::txbatch::TxBatch;

mod tunnel_rx;
mod tunnel_tx;

use tunnel_rx::RX_BATCH;

/// Frames handled per ready fd per wake-up.
pub const BURST: usize = 32;
/// Room in front of every packet: a vnet header (12) plus an Ethernet
/// header (14) pushed in front of a flannel-udp payload, with margin.
const HEADROOM: usize = 64;
/// Largest datagram or frame (a 64 KiB IP packet plus headers).
const BUF_LEN: usize = HEADROOM + 65536 + 64;
/// Room for the headers of one super-packet's segments (at most 22 + 60 +
/// 60 bytes each; payloads stay in the packet). As large as the buffer the
/// copying segmentation needed (64 KiB of payload plus 160 bytes of headers
/// per segment of at least 536 bytes), so that any packet it could segment,
/// tiny MSS included, still can be; only `count × hdr_len` bytes of it are
/// touched per packet (about 4 KiB for 64 KiB at MSS 1400).
const HDR_BUF_LEN: usize = 65536 + (65536 / 536 + 1) * 160;
/// A coalesced super-frame: 64 KiB of IP plus the Ethernet header.
const COALESCE_LEN: usize = 65536 + 128;

/// The offloads asked of every TAP: checksums, TCP segmentation (with ECN)
/// and, where the kernel has it (6.2+), UDP segmentation. tun takes USO4
/// only with USO6 ("for now USO4 and USO6 should work simultaneously", its
/// `set_offload`; either alone is EINVAL). IPv6 super-frames that this
/// lets in go where IPv6 goes: switched between local pods as they are,
/// never routed.
const OFFLOADS: u32 = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO_ECN | USO;
/// UDP segmentation, both halves.
const USO: u32 = TUN_F_USO4 | TUN_F_USO6;

/// Asks the TAP for checksum, TSO (with ECN) and USO offloads, then
/// without USO (kernels before 6.2), then for nothing; returns what it
/// accepted. What every port's
/// TAP gets (with offloads on), and `twill bench`'s floor too.
pub fn negotiate_offloads(tap: &Tap) -> u32 {
    for flags in [OFFLOADS, OFFLOADS & !USO] {
        match tap.set_offload(flags) {
            Ok(()) => return flags,
            Err(e) => {
                tracing::debug!(tap = tap.name(), flags, error = %e, "TAP refused offloads")
            }
        }
    }
    tracing::warn!(
        tap = tap.name(),
        "TAP refused checksum/segmentation offloads; frame by frame"
    );
    0
}

/// How often aging runs when nothing is due.
const IDLE_TICK: Duration = Duration::from_secs(1);

const TOKEN_WAKER: u64 = 0;
const TOKEN_TUNNEL: u64 = 1;
const TOKEN_PORT0: u64 = 2;

pub use crate::stats::{PortStats, Stats, TunnelStats};

enum Command {
    AddPort {
        id: PortId,
        tap: Option<Tap>,
        done: Sender<io::Result<()>>,
    },
    RemovePort {
        id: PortId,
        done: Sender<Option<Tap>>,
    },
    Stats(Sender<Stats>),
    Stop,
}

/// What the dataplane is made of.
#[derive(Debug)]
pub struct DataplaneConfig {
    /// The switch.
    pub switch: SwitchConfig,
    /// One socket per worker, all bound to the backend's port on the
    /// underlay address (with `SO_REUSEPORT` when there are several, so the
    /// kernel spreads senders' flows over them by hash). Their number is the
    /// number of worker threads. A worker sends from its own when
    /// `tx_sockets` is empty.
    pub tunnels: Vec<UdpSocket>,
    /// Sockets to send from, one chosen per flow hash: each is bound to its
    /// own source port, so that flows spread as Linux spreads them by
    /// source port (ECMP, RSS on the receiver).
    pub tx_sockets: Vec<UdpSocket>,
    /// Ask TAPs for checksum and segmentation offloads (TSO/USO): pods
    /// then hand the switch 64 KiB super-frames.
    pub offload: bool,
    /// When a worker keeps polling its fds (`epoll_wait` without
    /// sleeping) after it last handled something, before it sleeps: the
    /// wake-up latency of a request/response exchange traded for a CPU
    /// that spins (see [`crate::busy_poll`]).
    pub busy_poll: BusyPoll,
    /// How a packet finds its worker (with more than one).
    pub steering: Steering,
}

/// How a packet finds its worker when there are several (see [`steer`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Steering {
    /// The kernel's choice: tun's flow table for TAP queues (a flow goes
    /// to the queue of the worker that last wrote its other direction,
    /// else by hash), the reuseport group's hash of the outer addresses
    /// and ports for tunnel sockets.
    #[default]
    Hash,
    /// Flow lanes: both directions of a flow on one worker, on every node.
    /// A TAP's queue is the lane of the frame's symmetric flow hash modulo
    /// the workers (eBPF), the tunnel's reuseport group reads the lane
    /// from the source port (classic BPF), and the tunnel sends each flow
    /// from the send socket of its lane. The tunnel sockets must be bound
    /// in worker order.
    Flow,
    /// CPU-aligned: worker `i` is pinned to `cpus[i]` (one CPU per tunnel
    /// socket, bound in worker order), and the tunnel's reuseport group
    /// and every multi-queue TAP hand a packet to the worker of the CPU
    /// that produced it, a busy flow keeping its worker (flowlets).
    Cpu(Vec<usize>),
}

/// A running dataplane (its worker thread). Dropping it stops the worker.
#[derive(Debug)]
pub struct Dataplane {
    workers: Vec<Handle>,
    /// What every worker's switch shares.
    state: Arc<SwitchState>,
    /// The packet captures running (`twill capture`).
    captures: Arc<Captures>,
    /// Chooses every TAP's queue ([`Steering::Flow`] or [`Steering::Cpu`],
    /// with more than one worker).
    tap_steering: Option<steer::TapSteering>,
    /// The CPU each worker is pinned to (empty: none is).
    cpus: Vec<usize>,
}

/// One worker thread and how to reach it.
#[derive(Debug)]
struct Handle {
    tx: Sender<Command>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl Handle {
    fn send(&self, c: Command) -> io::Result<()> {
        self.tx.send(c).map_err(|_| worker_gone())?;
        self.waker.wake()
    }
}

/// How long a control call waits for the worker.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

fn worker_gone() -> io::Error {
    io::Error::other("dataplane worker is not running")
}

impl Dataplane {
    /// Starts the worker thread.
    pub fn start(cfg: DataplaneConfig) -> io::Result<Dataplane> {
        if cfg.tunnels.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a dataplane needs at least one tunnel socket",
            ));
        }
        for s in &cfg.tx_sockets {
            s.set_nonblocking(true)?;
        }
        let tap_steering = steer(&cfg.tunnels, &cfg.steering)?;
        let cpus = match cfg.steering {
            Steering::Cpu(cpus) => cpus,
            _ => vec![],
        };
        let mut workers = Vec::with_capacity(cfg.tunnels.len());
        let bulk = BulkSignal::new();
        let state = Arc::new(SwitchState::new(cfg.switch));
        let captures = Arc::new(Captures::default());
        for (i, tunnel) in cfg.tunnels.into_iter().enumerate() {
            let tx_sockets = cfg
                .tx_sockets
                .iter()
                .map(UdpSocket::try_clone)
                .collect::<io::Result<Vec<_>>>()?;
            workers.push(Worker::spawn(
                i,
                Switch::shared(state.clone()),
                tunnel,
                tx_sockets,
                cfg.offload,
                Spinner::new(cfg.busy_poll, bulk.clone()),
                captures.clone(),
                cpus.get(i).copied(),
            )?);
        }
        Ok(Dataplane {
            workers,
            state,
            captures,
            tap_steering,
            cpus,
        })
    }

    /// The packet captures: start one with [`Captures::start`].
    pub fn captures(&self) -> &Arc<Captures> {
        &self.captures
    }

    /// The switch state the workers share (tables, learning).
    pub fn state(&self) -> &Arc<SwitchState> {
        &self.state
    }

    /// Number of worker threads: every port needs as many TAP queues.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Sends a command built for each worker and waits for every answer.
    fn call_all<T>(&self, mut make: impl FnMut(usize, Sender<T>) -> Command) -> io::Result<Vec<T>> {
        let mut replies = Vec::with_capacity(self.workers.len());
        for (i, w) in self.workers.iter().enumerate() {
            let (done, r) = crossbeam_channel::bounded(1);
            w.send(make(i, done))?;
            replies.push(r);
        }
        replies
            .into_iter()
            .map(|r| r.recv_timeout(CALL_TIMEOUT).map_err(|_| worker_gone()))
            .collect()
    }

    /// Attaches a TAP as port `id`, one queue per worker ([`Dataplane::workers`]
    /// of them: a multi-queue TAP and its `open_queue`s); the fds are owned by
    /// the dataplane from now on. On error nothing stays attached.
    pub fn add_port(&self, id: PortId, queues: Vec<Tap>, cfg: PortConfig) -> io::Result<()> {
        self.add_port_allowing(id, queues, cfg, Allowance::default())
    }

    /// [`Dataplane::add_port`] for a pod port whose attachment declares
    /// port-security exceptions.
    pub fn add_port_allowing(
        &self,
        id: PortId,
        queues: Vec<Tap>,
        cfg: PortConfig,
        allow: Allowance,
    ) -> io::Result<()> {
        if queues.len() != self.workers.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "port {} has {} queues for {} workers",
                    id.0,
                    queues.len(),
                    self.workers.len()
                ),
            ));
        }
        if let (Some(s), Some(q)) = (&self.tap_steering, queues.first()) {
            s.attach(q).map_err(|e| {
                io::Error::new(e.kind(), format!("TUNSETSTEERINGEBPF on {}: {e}", q.name()))
            })?;
        }
        let mut queues = queues.into_iter().map(Some).collect::<Vec<_>>();
        // Every worker polls its queue before the switch forwards to the
        // port, so that no worker decides for a port it cannot write.
        let results = self.call_all(|i, done| Command::AddPort {
            id,
            tap: queues[i].take(),
            done,
        })?;
        if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
            let _ = self.remove_port(id);
            return Err(e);
        }
        self.state.add_port_allowing(id, cfg, allow, Instant::now());
        Ok(())
    }

    /// Detaches port `id` and hands its queues back (drop them to delete the device).
    pub fn remove_port(&self, id: PortId) -> io::Result<Vec<Tap>> {
        // No switch forwards to it from its next frame on; then the
        // workers let go of their queues.
        let _ = self.state.remove_port(id);
        Ok(self
            .call_all(|_, done| Command::RemovePort { id, done })?
            .into_iter()
            .flatten()
            .collect())
    }

    /// Replaces the table of remote nodes: published at once to every
    /// worker, which reads it from its next frame on.
    pub fn set_remotes(&self, nodes: Vec<RemoteNode>) -> io::Result<()> {
        self.state.set_remotes(&nodes);
        Ok(())
    }

    /// Publishes the node's Services: every worker uses the new table for
    /// new connections from its next frame on; TCP connections keep their
    /// backend, UDP ones to a backend no longer usable are removed (see
    /// [`SwitchState::set_services`]).
    pub fn set_services(&self, services: ServiceTable) {
        self.state.set_services(services);
    }

    /// The Services currently published.
    pub fn services(&self) -> Arc<ServiceTable> {
        self.state.services().load_full()
    }

    /// Publishes the node's compiled NetworkPolicies: new connections are
    /// judged by them from each worker's next frame on, tracked ones again
    /// at their next packet (see [`SwitchState::set_policy`]).
    pub fn set_policy(&self, policy: PolicyTable) {
        self.state.set_policy(policy);
    }

    /// Frames storm control refused from `port` since it was attached.
    pub fn storm_dropped(&self, port: crate::core::PortId) -> u64 {
        self.state.storm_dropped(port)
    }

    /// The policy table currently published.
    pub fn policy(&self) -> Arc<PolicyTable> {
        self.state.policy().load_full()
    }

    /// Every counter: the workers' summed, the shared tables' once.
    pub fn stats(&self) -> io::Result<Stats> {
        let all = self.call_all(|_, done| Command::Stats(done))?;
        let mut total = Stats::default();
        for (i, s) in all.iter().enumerate() {
            total.merge(s);
            total.per_worker.push(crate::stats::WorkerReport {
                cpu: self.cpus.get(i).copied(),
                ..crate::stats::WorkerReport::of(i, s)
            });
        }
        total.mac = self.state.macs().counters();
        total.mac_entries = self.state.macs().len();
        total.conntrack_entries = self.state.conntrack().len();
        total.core.conntrack_expired = self.state.conntrack().expired();
        for p in &mut total.ports {
            p.storm_dropped = self.state.storm_dropped(crate::core::PortId(p.id));
        }
        Ok(total)
    }
}

/// Whether the tunnel sockets are one reuseport group (one address): not
/// without a tunnel (host-gw), where each is bound to a port of its own
/// and only the TAPs are steered.
fn reuseport_group(tunnels: &[UdpSocket]) -> io::Result<bool> {
    let first = tunnels.first().map(UdpSocket::local_addr).transpose()?;
    for t in tunnels.iter().skip(1) {
        if Some(t.local_addr()?) != first {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Sets up `steering` for one worker per tunnel socket: makes the
/// sockets' reuseport group choose by CPU or by flow lane and checks that
/// it does (without a tunnel, host-gw, there is no group), and loads the
/// TAP program that every port's TAP gets. Nothing to steer with
/// [`Steering::Hash`] or one worker.
fn steer(tunnels: &[UdpSocket], steering: &Steering) -> io::Result<Option<steer::TapSteering>> {
    // `None`: flow lanes.
    let cpus = match steering {
        Steering::Hash => return Ok(None),
        Steering::Flow => None,
        Steering::Cpu(cpus) if cpus.len() != tunnels.len() => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} CPUs to steer to for {} workers",
                    cpus.len(),
                    tunnels.len()
                ),
            ))
        }
        Steering::Cpu(cpus) => Some(&cpus[..]),
    };
    if tunnels.len() < 2 {
        return Ok(None);
    }
    let ctx = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
    if reuseport_group(tunnels)? {
        match cpus {
            Some(cpus) => steer::attach_reuseport_cpu(&tunnels[0], cpus),
            None => steer::attach_reuseport_lanes(&tunnels[0], tunnels.len()),
        }
        .map_err(|e| ctx("SO_ATTACH_REUSEPORT_CBPF on the tunnel sockets", e))?;
        let checked = match cpus {
            Some(cpus) => steer::check_reuseport_order(tunnels, cpus)?,
            None => steer::check_reuseport_lanes(tunnels)?,
        };
        if !checked {
            tracing::warn!(
                by = if cpus.is_some() { "CPU" } else { "flow lane" },
                "a probe to the tunnel sockets did not arrive: their order is unchecked"
            );
        }
    }
    let taps = match cpus {
        Some(cpus) => steer::TapSteering::load(cpus),
        None => steer::TapSteering::load_lanes(tunnels.len()),
    }
    .map_err(|e| ctx("loading the TAP steering program (bpf BPF_PROG_LOAD)", e))?;
    match cpus {
        Some(cpus) => tracing::info!(
            ?cpus,
            "workers pinned one per CPU; tunnel sockets and TAP queues chosen by CPU"
        ),
        None => tracing::info!(
            workers = tunnels.len(),
            "both directions of a flow on one worker: TAP queues and tunnel sockets chosen by flow lane"
        ),
    }
    Ok(Some(taps))
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        for w in &self.workers {
            let _ = w.send(Command::Stop);
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}

struct PortSlot {
    tap: Tap,
    stats: PortStats,
}

struct Worker {
    sw: Switch,
    poller: Poller,
    waker: Arc<Waker>,
    rx: Receiver<Command>,
    tunnel: UdpSocket,
    tx_sockets: Vec<UdpSocket>,
    ports: Vec<Option<PortSlot>>,
    tunnel_stats: TunnelStats,
    wakeups: u64,
    pkt: PacketBuf,
    /// Where the headers of a super-packet's segments are written for the
    /// tunnel (their payloads are sent from `pkt`).
    hdr_buf: Box<[u8]>,
    /// The tunnel's `recvmmsg` state, one slot per buffer of `rx_bufs`.
    rx_batch: udp::RecvBatch,
    /// Where one `recvmmsg` lands its messages, one each; a message is
    /// processed in place, its buffer swapped with `pkt` meanwhile.
    rx_bufs: Vec<PacketBuf>,
    /// Received TCP segments bound for one port, merged into a super-frame.
    coal: gro::Coalescer,
    /// Received UDP datagrams bound for one port that accepted USO, merged
    /// into a USO super-frame.
    coal_udp: gro::UdpCoalescer,
    /// The port the super-frame being built goes to, and which coalescer
    /// builds it (one at a time).
    coal_at: Option<(PortId, gro::Kind)>,
    /// Ask TAPs for offloads.
    offload: bool,
    /// Whether `UDP_SEGMENT` works here (cleared at its first refusal), and
    /// the `sendmmsg` headers of a super-packet's sends.
    gso: crate::gso_tx::GsoSender,
    /// Small tunnel datagrams waiting for one `sendmmsg`.
    tx_batch: TxBatch,
    /// When to keep polling (see [`DataplaneConfig::busy_poll`]), and its
    /// counters.
    spinner: Spinner,
    /// This worker ages the node's shared learning tables (worker 0 does;
    /// the tables are one for all, so one timer is enough).
    ages: bool,
    /// Failed tunnel receives (counted in `rx_errors`), reported once a
    /// minute: a socket error that repeats must not flood the log.
    rx_error_log: encap::lograte::LogRate,
    /// The captures, and those running at this wake-up (`None`, the one
    /// test per frame, when none is).
    captures: Arc<Captures>,
    taps: Option<Active>,
    /// The local addresses of `tunnel` and of each of `tx_sockets`, for
    /// tunnel captures' outer headers.
    tunnel_local: SocketAddrV4,
    tx_local: Vec<SocketAddrV4>,
}

impl Worker {
    /// Starts worker `index` with its switch, tunnel socket and buffers,
    /// pinned to `cpu` if given.
    #[allow(clippy::too_many_arguments)]
    fn spawn(
        index: usize,
        sw: Switch,
        tunnel: UdpSocket,
        tx_sockets: Vec<UdpSocket>,
        offload: bool,
        spinner: Spinner,
        captures: Arc<Captures>,
        cpu: Option<usize>,
    ) -> io::Result<Handle> {
        let poller = Poller::new()?;
        let waker = Arc::new(Waker::new()?);
        waker.register(&poller, TOKEN_WAKER)?;
        tunnel.set_nonblocking(true)?;
        let rx_gro = offload
            && udp::enable_gro(&tunnel)
                .map_err(|e| {
                    tracing::warn!(socket = ?tunnel.local_addr().ok(), error = %e,
                        "UDP_GRO refused; one datagram per receive")
                })
                .is_ok();
        poller.add(tunnel.as_fd(), TOKEN_TUNNEL)?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let tunnel_local = local_v4(&tunnel);
        let tx_local = tx_sockets.iter().map(local_v4).collect();
        let w = Worker {
            sw,
            poller,
            waker: waker.clone(),
            rx,
            tunnel,
            tx_sockets,
            ports: Vec::new(),
            tunnel_stats: TunnelStats {
                rx_gro,
                ..TunnelStats::default()
            },
            wakeups: 0,
            pkt: PacketBuf::new(BUF_LEN, HEADROOM),
            hdr_buf: vec![0; HDR_BUF_LEN].into_boxed_slice(),
            rx_batch: udp::RecvBatch::new(RX_BATCH),
            rx_bufs: (0..RX_BATCH)
                .map(|_| PacketBuf::new(BUF_LEN, HEADROOM))
                .collect(),
            coal: gro::Coalescer::new(COALESCE_LEN),
            coal_udp: gro::UdpCoalescer::new(COALESCE_LEN),
            coal_at: None,
            offload,
            gso: crate::gso_tx::GsoSender::new(),
            tx_batch: TxBatch::default(),
            spinner,
            ages: index == 0,
            rx_error_log: encap::lograte::LogRate::new(std::time::Duration::from_secs(60)),
            captures,
            taps: None,
            tunnel_local,
            tx_local,
        };
        let (pinned, is_pinned) = crossbeam_channel::bounded(1);
        let thread = std::thread::Builder::new()
            .name(format!("twill-dp{index}"))
            .spawn(move || {
                let r = cpu.map_or(Ok(()), steer::pin_current_thread);
                let ok = r.is_ok();
                let _ = pinned.send(r);
                if ok {
                    w.run()
                }
            })?;
        if let Ok(Err(e)) = is_pinned.recv() {
            let _ = thread.join();
            return Err(io::Error::new(
                e.kind(),
                format!("pinning worker {index} to CPU {cpu:?}: {e}"),
            ));
        }
        Ok(Handle {
            tx,
            waker,
            thread: Some(thread),
        })
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(64);
        let mut deadline: Option<Instant> = None;
        loop {
            let top = Instant::now();
            let spin = self.spinner.spin(top);
            let timeout = if spin {
                Some(Duration::ZERO)
            } else {
                deadline.map(|d| d.saturating_duration_since(top))
            };
            if let Err(e) = self.poller.wait(&mut events, timeout) {
                tracing::error!(error = %e, "epoll_wait failed; dataplane worker stops");
                return;
            }
            if spin && events.is_empty() {
                self.spinner.empty_poll(top);
                // Polite: a task that waits for this CPU (the pod a packet
                // was just written for, a sender) runs first. Spinning with
                // a pause only would keep it waiting until the scheduler
                // preempts the worker, up to a slice later.
                std::thread::yield_now();
                continue;
            }
            self.wakeups += 1;
            self.taps = self.captures.current();
            // What this wake-up carried, for the spinner: the ports' packets
            // counted here, the tunnel's from its counters.
            let (tunnel_packets, tunnel_bytes) =
                (self.tunnel_stats.rx_packets, self.tunnel_stats.rx_bytes);
            let (mut packets, mut bytes) = (0u64, 0u64);
            for ev in events.iter() {
                match ev.token {
                    TOKEN_WAKER => {
                        let _ = self.waker.drain();
                        if !self.commands() {
                            return;
                        }
                    }
                    TOKEN_TUNNEL => self.tunnel_rx(),
                    t => {
                        let (p, b) = self.port_rx(PortId((t - TOKEN_PORT0) as u16));
                        packets += p;
                        bytes += b;
                    }
                }
            }
            packets += self.tunnel_stats.rx_packets - tunnel_packets;
            bytes += self.tunnel_stats.rx_bytes - tunnel_bytes;
            // Nothing waits in the batch while the worker sleeps.
            self.flush_tx();
            // Nor does a stopped capture's queue wait for its next wake-up.
            self.taps = None;
            let now = Instant::now();
            self.spinner
                .wakeup(now, u32::try_from(packets).unwrap_or(u32::MAX), bytes);
            if self.ages && deadline.is_none_or(|d| d <= now) {
                // Nothing to age yet: look again in a second rather than on
                // every wake-up (entries learned meanwhile age later anyway).
                deadline = Some(self.sw.run(now).unwrap_or(now + IDLE_TICK));
            }
        }
    }

    /// Handles queued commands; false when told to stop.
    fn commands(&mut self) -> bool {
        while let Ok(c) = self.rx.try_recv() {
            match c {
                Command::AddPort { id, tap, done } => {
                    let r = match tap {
                        Some(tap) => self.add_port(id, tap),
                        None => Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "no TAP queue for this worker",
                        )),
                    };
                    let _ = done.send(r);
                }
                Command::RemovePort { id, done } => {
                    let tap = self.remove_port(id);
                    let _ = done.send(tap);
                }
                Command::Stats(done) => {
                    let _ = done.send(self.stats());
                }
                Command::Stop => return false,
            }
        }
        true
    }

    /// Polls this worker's queue of port `id` (the switch learns of the
    /// port from the shared state).
    fn add_port(&mut self, id: PortId, tap: Tap) -> io::Result<()> {
        let _ = self.remove_port(id);
        self.poller
            .add(tap.as_fd(), TOKEN_PORT0 + u64::from(id.0))?;
        let i = usize::from(id.0);
        if self.ports.len() <= i {
            self.ports.resize_with(i + 1, || None);
        }
        let offloads = if self.offload {
            negotiate_offloads(&tap)
        } else {
            0
        };
        let stats = PortStats {
            id: id.0,
            name: tap.name().to_string(),
            offloads,
            ..Default::default()
        };
        self.ports[i] = Some(PortSlot { tap, stats });
        Ok(())
    }

    fn remove_port(&mut self, id: PortId) -> Option<Tap> {
        let slot = self.ports.get_mut(usize::from(id.0))?.take()?;
        if !slot.stats.dead {
            let _ = self.poller.delete(slot.tap.as_fd());
        }
        Some(slot.tap)
    }

    /// This worker's counters (the shared tables' are the dataplane's).
    fn stats(&self) -> Stats {
        Stats {
            core: self.sw.counters().clone(),
            ports: self
                .ports
                .iter()
                .flatten()
                .map(|p| p.stats.clone())
                .collect(),
            tunnel: self.tunnel_stats.clone(),
            wakeups: self.wakeups,
            busy_polls: self.spinner.empty_polls,
            busy_poll_backoffs: self.spinner.backoffs,
            workers: 1,
            ..Stats::default()
        }
    }

    /// Reads up to [`BURST`] frames from a port; returns the frames and
    /// bytes read.
    fn port_rx(&mut self, id: PortId) -> (u64, u64) {
        let (mut packets, mut bytes) = (0, 0);
        for _ in 0..BURST {
            let Some(Some(slot)) = self.ports.get_mut(usize::from(id.0)) else {
                break;
            };
            let room = self.pkt.reset(HEADROOM - VNET_HDR_LEN);
            let n = match slot.tap.read(room) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // A TAP whose namespace was deleted answers EBADFD for
                    // ever, and epoll keeps reporting it: stop polling the
                    // port (it stays attached, and counted, until detached).
                    slot.stats.rx_errors += 1;
                    slot.stats.dead = true;
                    let _ = self.poller.delete(slot.tap.as_fd());
                    tracing::warn!(port = id.0, name = %slot.stats.name, error = %e, "TAP read failed; port stops being polled");
                    break;
                }
            };
            self.pkt.set_len(n);
            let Ok(hdr) = vnet::Header::parse(self.pkt.data()) else {
                slot.stats.rx_offload_dropped += 1;
                continue;
            };
            if self.pkt.pull_front(VNET_HDR_LEN).is_err() || !offload_fits(&hdr, self.pkt.len()) {
                slot.stats.rx_offload_dropped += 1;
                continue;
            }
            slot.stats.rx_gso += u64::from(hdr.is_gso());
            slot.stats.rx_csum_partial += u64::from(hdr.flags & vnet::F_NEEDS_CSUM != 0);
            self.pkt.offload = hdr;
            if let Some(t) = &self.taps {
                t.port(id, self.pkt.data());
            }
            slot.stats.rx_packets += 1;
            slot.stats.rx_bytes += self.pkt.len() as u64;
            packets += 1;
            bytes += self.pkt.len() as u64;
            let a = self.sw.process_port(id, &mut self.pkt, Instant::now());
            self.perform(a);
        }
        (packets, bytes)
    }

    fn perform(&mut self, a: Action) {
        match a {
            Action::Output(p) => self.write_port(p),
            Action::Flood { except } => {
                for i in 0..self.ports.len() {
                    let id = PortId(i as u16);
                    if Some(id) != except && self.ports[i].is_some() {
                        self.write_port(id);
                    }
                }
            }
            Action::Tunnel { dst, hash, l3 } => self.send_tunnel(dst, hash, l3),
            Action::Consumed | Action::Drop(_) => {}
        }
    }

    /// Writes the packet, behind its vnet header, to one port.
    fn write_port(&mut self, id: PortId) {
        let Some(Some(slot)) = self.ports.get_mut(usize::from(id.0)) else {
            return;
        };
        // The packet's own offload state: a super-frame or a partial
        // checksum stays one for the receiving kernel, which finishes it.
        let hdr = self.pkt.offload;
        let written = self.pkt.front_mut(VNET_HDR_LEN).map(|h| hdr.emit(h));
        if !matches!(written, Ok(Ok(()))) {
            slot.stats.tx_errors += 1;
            return;
        }
        let Ok(bytes) = self.pkt.with_front(VNET_HDR_LEN) else {
            return;
        };
        if let Some(t) = &self.taps {
            t.port(id, &bytes[VNET_HDR_LEN..]);
        }
        let written = slot.tap.write(bytes);
        count_write(&mut slot.stats, written, bytes.len() - VNET_HDR_LEN);
    }
}

/// Counts a TAP write of a `frame_len`-byte frame; true if it was written.
/// A full queue (nobody reading the pod's side) is a drop, anything else
/// an error.
fn count_write(stats: &mut PortStats, r: io::Result<usize>, frame_len: usize) -> bool {
    match r {
        Ok(_) => {
            stats.tx_packets += 1;
            stats.tx_bytes += frame_len as u64;
            true
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            stats.tx_dropped += 1;
            false
        }
        Err(e) => {
            stats.tx_errors += 1;
            tracing::debug!(port = stats.id, name = %stats.name, error = %e, "TAP write failed");
            false
        }
    }
}

/// A socket's local IPv4 address (unspecified if it has none).
fn local_v4(s: &UdpSocket) -> SocketAddrV4 {
    match s.local_addr() {
        Ok(std::net::SocketAddr::V4(a)) => a,
        _ => SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0),
    }
}

/// Whether a vnet header's offsets lie inside a frame of `len` bytes.
fn offload_fits(h: &vnet::Header, len: usize) -> bool {
    if h.flags & vnet::F_NEEDS_CSUM != 0
        && usize::from(h.csum_start) + usize::from(h.csum_offset) + 2 > len
    {
        return false;
    }
    !h.is_gso() || h.gso_size > 0
}
