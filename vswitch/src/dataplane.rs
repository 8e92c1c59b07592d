//! The dataplane driver: one worker thread that owns the [`Switch`], the
//! ports' TAP fds and the tunnel sockets, waits on them with epoll and runs
//! every frame to completion (read → `Switch::process_*` → write), at most
//! [`BURST`] frames per ready fd per wake-up so that one busy port cannot
//! starve the others (OVS's `NETDEV_MAX_BURST`).
//!
//! The control side talks to the worker through a channel and a waker:
//! attach/detach ports, replace the remote-node table, read statistics. It
//! never touches the switch directly, so the worker needs no lock.
//! This module knows no forwarding rule: it performs the core's [`Action`]s.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use encap::{vnet, PacketBuf};

use crate::core::mac_table::MacCounters;
use crate::core::{Action, Counters, PortConfig, PortId, RemoteNode, Switch, SwitchConfig};
use crate::sys::poll::{Events, Poller, Waker};
use crate::sys::tap::{Tap, VNET_HDR_LEN};

/// Frames handled per ready fd per wake-up.
pub const BURST: usize = 32;
/// Room in front of every packet: a vnet header (12) plus an Ethernet
/// header (14) pushed in front of a flannel-udp payload, with margin.
const HEADROOM: usize = 64;
/// Largest datagram or frame (a 64 KiB IP packet plus headers).
const BUF_LEN: usize = HEADROOM + 65536 + 64;

/// How often aging runs when nothing is due.
const IDLE_TICK: Duration = Duration::from_secs(1);

const TOKEN_WAKER: u64 = 0;
const TOKEN_TUNNEL: u64 = 1;
const TOKEN_PORT0: u64 = 2;

/// Counters of one port, kept by the driver.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Port id.
    pub id: u16,
    /// Interface name on the host side when created.
    pub name: String,
    /// Frames read.
    pub rx_packets: u64,
    /// Bytes read (Ethernet frames, vnet header excluded).
    pub rx_bytes: u64,
    /// Frames written.
    pub tx_packets: u64,
    /// Bytes written.
    pub tx_bytes: u64,
    /// Frames not written: the TAP's queue was full (nobody reading).
    pub tx_dropped: u64,
    /// Frames not written for another error.
    pub tx_errors: u64,
    /// Reads that failed other than with EAGAIN.
    pub rx_errors: u64,
    /// Frames whose vnet header asked for offload work this version does not do.
    pub rx_offload_dropped: u64,
    /// A read failed for good (e.g. the pod's namespace was deleted): the
    /// port is no longer polled.
    pub dead: bool,
}

/// Counters of the tunnel sockets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TunnelStats {
    /// Datagrams received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Receives that failed other than with EAGAIN.
    pub rx_errors: u64,
    /// Datagrams from a non-IPv4 address (dropped).
    pub rx_not_ipv4: u64,
    /// Datagrams sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Sends refused because the socket buffer was full.
    pub tx_dropped: u64,
    /// Sends that failed for another reason.
    pub tx_errors: u64,
}

/// A copy of every counter of the dataplane.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// The forwarding core's.
    pub core: Counters,
    /// MAC learning's.
    pub mac: MacCounters,
    /// Entries in the MAC table.
    pub mac_entries: usize,
    /// Per port.
    pub ports: Vec<PortStats>,
    /// The tunnel's.
    pub tunnel: TunnelStats,
    /// Worker wake-ups.
    pub wakeups: u64,
}

enum Command {
    AddPort {
        id: PortId,
        tap: Tap,
        cfg: PortConfig,
        done: Sender<io::Result<()>>,
    },
    RemovePort {
        id: PortId,
        done: Sender<Option<Tap>>,
    },
    SetRemotes(Vec<RemoteNode>),
    Stats(Sender<Stats>),
    Stop,
}

/// What the dataplane is made of.
#[derive(Debug)]
pub struct DataplaneConfig {
    /// The switch.
    pub switch: SwitchConfig,
    /// The socket bound to the backend's port on the underlay address:
    /// receives everything, and sends when `tx_sockets` is empty.
    pub tunnel: UdpSocket,
    /// Sockets to send from, one chosen per flow hash: each is bound to its
    /// own source port, so that flows spread as Linux spreads them by
    /// source port (ECMP, RSS on the receiver).
    pub tx_sockets: Vec<UdpSocket>,
}

/// A running dataplane (its worker thread). Dropping it stops the worker.
#[derive(Debug)]
pub struct Dataplane {
    tx: Sender<Command>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

/// How long a control call waits for the worker.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

fn worker_gone() -> io::Error {
    io::Error::other("dataplane worker is not running")
}

impl Dataplane {
    /// Starts the worker thread.
    pub fn start(cfg: DataplaneConfig) -> io::Result<Dataplane> {
        let poller = Poller::new()?;
        let waker = Arc::new(Waker::new()?);
        waker.register(&poller, TOKEN_WAKER)?;
        cfg.tunnel.set_nonblocking(true)?;
        poller.add(cfg.tunnel.as_fd(), TOKEN_TUNNEL)?;
        for s in &cfg.tx_sockets {
            s.set_nonblocking(true)?;
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        let w = Worker {
            sw: Switch::new(cfg.switch),
            poller,
            waker: waker.clone(),
            rx,
            tunnel: cfg.tunnel,
            tx_sockets: cfg.tx_sockets,
            ports: Vec::new(),
            tunnel_stats: TunnelStats::default(),
            wakeups: 0,
            pkt: PacketBuf::new(BUF_LEN, HEADROOM),
        };
        let thread = std::thread::Builder::new()
            .name("twill-dp".into())
            .spawn(move || w.run())?;
        Ok(Dataplane {
            tx,
            waker,
            thread: Some(thread),
        })
    }

    fn send(&self, c: Command) -> io::Result<()> {
        self.tx.send(c).map_err(|_| worker_gone())?;
        self.waker.wake()
    }

    /// Attaches a TAP as port `id`; its fd is owned by the dataplane from now on.
    pub fn add_port(&self, id: PortId, tap: Tap, cfg: PortConfig) -> io::Result<()> {
        let (done, r) = crossbeam_channel::bounded(1);
        self.send(Command::AddPort { id, tap, cfg, done })?;
        r.recv_timeout(CALL_TIMEOUT).map_err(|_| worker_gone())?
    }

    /// Detaches port `id` and hands its TAP back (drop it to delete the device).
    pub fn remove_port(&self, id: PortId) -> io::Result<Option<Tap>> {
        let (done, r) = crossbeam_channel::bounded(1);
        self.send(Command::RemovePort { id, done })?;
        r.recv_timeout(CALL_TIMEOUT).map_err(|_| worker_gone())
    }

    /// Replaces the table of remote nodes.
    pub fn set_remotes(&self, nodes: Vec<RemoteNode>) -> io::Result<()> {
        self.send(Command::SetRemotes(nodes))
    }

    /// A copy of every counter.
    pub fn stats(&self) -> io::Result<Stats> {
        let (done, r) = crossbeam_channel::bounded(1);
        self.send(Command::Stats(done))?;
        r.recv_timeout(CALL_TIMEOUT).map_err(|_| worker_gone())
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        let _ = self.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
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
}

impl Worker {
    fn run(mut self) {
        let mut events = Events::with_capacity(64);
        let mut deadline: Option<Instant> = None;
        loop {
            let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poller.wait(&mut events, timeout) {
                tracing::error!(error = %e, "epoll_wait failed; dataplane worker stops");
                return;
            }
            self.wakeups += 1;
            for ev in events.iter() {
                match ev.token {
                    TOKEN_WAKER => {
                        let _ = self.waker.drain();
                        if !self.commands() {
                            return;
                        }
                    }
                    TOKEN_TUNNEL => self.tunnel_rx(),
                    t => self.port_rx(PortId((t - TOKEN_PORT0) as u16)),
                }
            }
            let now = Instant::now();
            if deadline.is_none_or(|d| d <= now) {
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
                Command::AddPort { id, tap, cfg, done } => {
                    let r = self.add_port(id, tap, cfg);
                    let _ = done.send(r);
                }
                Command::RemovePort { id, done } => {
                    let tap = self.remove_port(id);
                    let _ = done.send(tap);
                }
                Command::SetRemotes(n) => self.sw.set_remotes(&n),
                Command::Stats(done) => {
                    let _ = done.send(self.stats());
                }
                Command::Stop => return false,
            }
        }
        true
    }

    fn add_port(&mut self, id: PortId, tap: Tap, cfg: PortConfig) -> io::Result<()> {
        let _ = self.remove_port(id);
        self.poller
            .add(tap.as_fd(), TOKEN_PORT0 + u64::from(id.0))?;
        let i = usize::from(id.0);
        if self.ports.len() <= i {
            self.ports.resize_with(i + 1, || None);
        }
        let stats = PortStats {
            id: id.0,
            name: tap.name().to_string(),
            ..Default::default()
        };
        self.ports[i] = Some(PortSlot { tap, stats });
        self.sw.add_port(id, cfg, Instant::now());
        Ok(())
    }

    fn remove_port(&mut self, id: PortId) -> Option<Tap> {
        let slot = self.ports.get_mut(usize::from(id.0))?.take()?;
        if !slot.stats.dead {
            let _ = self.poller.delete(slot.tap.as_fd());
        }
        let _ = self.sw.remove_port(id);
        Some(slot.tap)
    }

    fn stats(&self) -> Stats {
        Stats {
            core: self.sw.counters().clone(),
            mac: self.sw.macs().counters(),
            mac_entries: self.sw.macs().len(),
            ports: self
                .ports
                .iter()
                .flatten()
                .map(|p| p.stats.clone())
                .collect(),
            tunnel: self.tunnel_stats.clone(),
            wakeups: self.wakeups,
        }
    }

    fn port_rx(&mut self, id: PortId) {
        for _ in 0..BURST {
            let Some(Some(slot)) = self.ports.get_mut(usize::from(id.0)) else {
                return;
            };
            let room = self.pkt.reset(HEADROOM - VNET_HDR_LEN);
            let n = match slot.tap.read(room) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // A TAP whose namespace was deleted answers EBADFD for
                    // ever, and epoll keeps reporting it: stop polling the
                    // port (it stays attached, and counted, until detached).
                    slot.stats.rx_errors += 1;
                    slot.stats.dead = true;
                    let _ = self.poller.delete(slot.tap.as_fd());
                    tracing::warn!(port = id.0, name = %slot.stats.name, error = %e, "TAP read failed; port stops being polled");
                    return;
                }
            };
            self.pkt.set_len(n);
            let plain = vnet::Header::parse(self.pkt.data())
                .map(|h| h.is_plain())
                .unwrap_or(false);
            if !plain || self.pkt.pull_front(VNET_HDR_LEN).is_err() {
                slot.stats.rx_offload_dropped += 1;
                continue;
            }
            slot.stats.rx_packets += 1;
            slot.stats.rx_bytes += self.pkt.len() as u64;
            let a = self.sw.process_port(id, &mut self.pkt, Instant::now());
            self.perform(a);
        }
    }

    fn tunnel_rx(&mut self) {
        for _ in 0..BURST {
            let room = self.pkt.reset(HEADROOM);
            let (n, from) = match self.tunnel.recv_from(room) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.tunnel_stats.rx_errors += 1;
                    tracing::warn!(error = %e, "tunnel receive failed");
                    return;
                }
            };
            self.pkt.set_len(n);
            self.tunnel_stats.rx_packets += 1;
            self.tunnel_stats.rx_bytes += n as u64;
            let SocketAddr::V4(from) = from else {
                self.tunnel_stats.rx_not_ipv4 += 1;
                continue;
            };
            let a = self.sw.process_tunnel(from, &mut self.pkt, Instant::now());
            self.perform(a);
        }
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
            Action::Tunnel { dst, hash } => {
                let sock = if self.tx_sockets.is_empty() {
                    &self.tunnel
                } else {
                    &self.tx_sockets[hash as usize % self.tx_sockets.len()]
                };
                match sock.send_to(self.pkt.data(), dst) {
                    Ok(n) => {
                        self.tunnel_stats.tx_packets += 1;
                        self.tunnel_stats.tx_bytes += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.tunnel_stats.tx_dropped += 1
                    }
                    Err(e) => {
                        self.tunnel_stats.tx_errors += 1;
                        tracing::debug!(%dst, error = %e, "tunnel send failed");
                    }
                }
            }
            Action::Consumed | Action::Drop(_) => {}
        }
    }

    /// Writes the packet, behind a zero vnet header, to one port.
    fn write_port(&mut self, id: PortId) {
        let Some(Some(slot)) = self.ports.get_mut(usize::from(id.0)) else {
            return;
        };
        match self.pkt.front_mut(VNET_HDR_LEN) {
            Ok(h) => h.fill(0),
            Err(_) => {
                slot.stats.tx_errors += 1;
                return;
            }
        }
        let Ok(bytes) = self.pkt.with_front(VNET_HDR_LEN) else {
            return;
        };
        match slot.tap.write(bytes) {
            Ok(_) => {
                slot.stats.tx_packets += 1;
                slot.stats.tx_bytes += (bytes.len() - VNET_HDR_LEN) as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => slot.stats.tx_dropped += 1,
            Err(e) => {
                slot.stats.tx_errors += 1;
                tracing::debug!(port = id.0, error = %e, "TAP write failed");
            }
        }
    }
}
