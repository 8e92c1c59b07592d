//! The dataplane's counters: per port, per tunnel, and their sum over the
//! workers (each worker keeps its own; `Dataplane::stats` adds them up and
//! adds the shared MAC table's once); and [`Report`], the one typed
//! definition of what `twill counters` reports, which the agent serializes
//! and the CLI, the tests and the metrics read.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::core::mac_table::MacCounters;
use crate::core::{Counters, Drops};

/// Counters of one port, kept by the driver.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// The TUN_F_* offloads the kernel accepted for this TAP (0: none).
    pub offloads: u32,
    /// Frames read as GSO super-frames.
    pub rx_gso: u64,
    /// Frames read with a checksum left to complete.
    pub rx_csum_partial: u64,
    /// Floods storm control refused from this port (node-wide: filled in
    /// from the shared state by `Dataplane::stats`).
    pub storm_dropped: u64,
}

/// Counters of the tunnel sockets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelStats {
    /// Datagrams received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Receives that failed other than with EAGAIN.
    pub rx_errors: u64,
    /// Datagrams from a non-IPv4 address (dropped, not in `rx_packets`;
    /// every datagram of such a `UDP_GRO` batch).
    pub rx_not_ipv4: u64,
    /// Datagrams sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Sends refused because the socket buffer was full.
    pub tx_dropped: u64,
    /// Sends that failed for another reason.
    pub tx_errors: u64,
    /// Super-packets cut into segments for the tunnel.
    pub tx_gso_packets: u64,
    /// Segments they made.
    pub tx_gso_segments: u64,
    /// `UDP_SEGMENT` sends (each carrying up to 64 segments).
    pub tx_gso_sends: u64,
    /// System calls that made them: one `sendmsg` each, or one `sendmmsg`
    /// for all the sends of a super-packet.
    pub tx_gso_calls: u64,
    /// `sendmmsg` calls (each carrying up to 32 small datagrams).
    pub tx_mmsg_sends: u64,
    /// The kernel refused `UDP_SEGMENT`: from then on one send per segment.
    pub tx_gso_unsupported: u64,
    /// Super-packets or partial checksums that could not be completed.
    pub tx_offload_errors: u64,
    /// `UDP_GRO` is on: one receive may return many datagrams.
    pub rx_gro: bool,
    /// Receives that returned more than one datagram.
    pub rx_gro_batches: u64,
    /// `recvmmsg` calls that returned messages.
    pub rx_mmsg_calls: u64,
    /// Messages they returned (each one datagram, or a `UDP_GRO` batch).
    pub rx_mmsg_messages: u64,
    /// Super-frames written to ports, coalesced from received segments.
    pub rx_coalesced_frames: u64,
    /// Segments merged into them.
    pub rx_coalesced_segments: u64,
    /// USO super-frames written to ports, coalesced from received UDP
    /// datagrams.
    pub rx_coalesced_udp_frames: u64,
    /// Datagrams merged into them.
    pub rx_coalesced_udp_datagrams: u64,
}

/// A copy of every counter of the dataplane.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// The forwarding core's.
    pub core: Counters,
    /// MAC learning's (node-wide: the table is shared, never summed).
    pub mac: MacCounters,
    /// Entries in the node's MAC table.
    pub mac_entries: usize,
    /// Connections in the node's connection table (Service NAT).
    pub conntrack_entries: usize,
    /// Per port.
    pub ports: Vec<PortStats>,
    /// The tunnel's.
    pub tunnel: TunnelStats,
    /// Worker wake-ups.
    pub wakeups: u64,
    /// Busy polls that found nothing (see [`crate::busy_poll`]).
    pub busy_polls: u64,
    /// Times an adaptive worker stopped polling because it was kept off its
    /// CPU for longer than its window.
    pub busy_poll_backoffs: u64,
    /// Worker threads these counters sum up.
    pub workers: usize,
    /// Each worker's own share (filled in by `Dataplane::stats`), to see
    /// how the kernel's hashing spreads the load over them.
    pub per_worker: Vec<WorkerReport>,
}

/// One worker's share of the load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerReport {
    /// The worker's index (0-based; its thread is `twill-dpN`).
    pub worker: usize,
    /// Its wake-ups.
    pub wakeups: u64,
    /// Its busy polls that found nothing.
    pub busy_polls: u64,
    /// Times it stopped busy polling for being kept off its CPU.
    pub busy_poll_backoffs: u64,
    /// Frames it read from the ports' TAP queues.
    pub port_rx_packets: u64,
    /// Datagrams it received from the tunnel.
    pub tunnel_rx_packets: u64,
    /// Datagrams it sent to the tunnel.
    pub tunnel_tx_packets: u64,
    /// The CPU it is pinned to (`--steering cpu`); absent: not pinned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<usize>,
}

impl WorkerReport {
    /// Worker `worker`'s share, from its own counters.
    pub fn of(worker: usize, s: &Stats) -> WorkerReport {
        WorkerReport {
            worker,
            wakeups: s.wakeups,
            busy_polls: s.busy_polls,
            busy_poll_backoffs: s.busy_poll_backoffs,
            port_rx_packets: s.ports.iter().map(|p| p.rx_packets).sum(),
            tunnel_rx_packets: s.tunnel.rx_packets,
            tunnel_tx_packets: s.tunnel.tx_packets,
            cpu: None,
        }
    }
}

impl Stats {
    /// The counters every datagram received from the tunnel ends in,
    /// exactly one per datagram: `tunnel.rx_not_ipv4` (the driver's only
    /// drop before the core), then the core's
    /// [`Counters::tunnel_rx_outcomes`] (each drop reason, `routed_local`,
    /// `routed_host`, `icmp_echo_replies`). Datagrams received are
    /// `tunnel.rx_packets + tunnel.rx_not_ipv4`; on a node whose ports sent
    /// nothing these sum to that (port traffic shares the core's counters).
    /// Receive errors (`rx_errors`) count failed calls, not datagrams.
    pub fn tunnel_rx_outcomes(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        std::iter::once(("rx_not_ipv4", self.tunnel.rx_not_ipv4))
            .chain(self.core.tunnel_rx_outcomes())
    }

    /// Adds another worker's counters to these.
    pub(crate) fn merge(&mut self, o: &Stats) {
        self.core.merge(&o.core);
        for p in &o.ports {
            match self.ports.iter_mut().find(|q| q.id == p.id) {
                Some(q) => q.merge(p),
                None => self.ports.push(p.clone()),
            }
        }
        // UDP_GRO is on only if every worker has it.
        let gro = if self.workers == 0 {
            o.tunnel.rx_gro
        } else {
            self.tunnel.rx_gro && o.tunnel.rx_gro
        };
        self.tunnel.merge(&o.tunnel);
        self.tunnel.rx_gro = gro;
        self.wakeups += o.wakeups;
        self.busy_polls += o.busy_polls;
        self.busy_poll_backoffs += o.busy_poll_backoffs;
        self.workers += o.workers;
    }
}

impl PortStats {
    pub(crate) fn merge(&mut self, o: &PortStats) {
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.tx_packets += o.tx_packets;
        self.tx_bytes += o.tx_bytes;
        self.tx_dropped += o.tx_dropped;
        self.tx_errors += o.tx_errors;
        self.rx_errors += o.rx_errors;
        self.rx_offload_dropped += o.rx_offload_dropped;
        self.dead |= o.dead;
        self.offloads &= o.offloads;
        self.rx_gso += o.rx_gso;
        self.rx_csum_partial += o.rx_csum_partial;
    }
}

impl TunnelStats {
    pub(crate) fn merge(&mut self, o: &TunnelStats) {
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.rx_errors += o.rx_errors;
        self.rx_not_ipv4 += o.rx_not_ipv4;
        self.tx_packets += o.tx_packets;
        self.tx_bytes += o.tx_bytes;
        self.tx_dropped += o.tx_dropped;
        self.tx_errors += o.tx_errors;
        self.tx_gso_packets += o.tx_gso_packets;
        self.tx_gso_segments += o.tx_gso_segments;
        self.tx_gso_sends += o.tx_gso_sends;
        self.tx_gso_calls += o.tx_gso_calls;
        self.tx_mmsg_sends += o.tx_mmsg_sends;
        self.tx_gso_unsupported += o.tx_gso_unsupported;
        self.tx_offload_errors += o.tx_offload_errors;
        self.rx_gro_batches += o.rx_gro_batches;
        self.rx_mmsg_calls += o.rx_mmsg_calls;
        self.rx_mmsg_messages += o.rx_mmsg_messages;
        self.rx_coalesced_frames += o.rx_coalesced_frames;
        self.rx_coalesced_segments += o.rx_coalesced_segments;
        self.rx_coalesced_udp_frames += o.rx_coalesced_udp_frames;
        self.rx_coalesced_udp_datagrams += o.rx_coalesced_udp_datagrams;
    }
}

/// Everything `twill counters` reports, typed once: the agent serializes
/// it for its API, and the CLI's table, the tests and the metrics read it
/// back (a counter renamed or removed fails to compile where it is read,
/// or to parse). Per-worker counters are summed; the MAC table and the
/// connection table are the node's, counted once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// Drops by reason.
    pub drops: Drops,
    /// The core's events (switched, routed, encapsulated, …); its `drops`
    /// array is empty (they are in `drops`, by name).
    pub events: Counters,
    /// The MAC table.
    pub mac: MacReport,
    /// The connection table.
    pub conntrack: ConntrackReport,
    /// Pod attachments.
    pub pods: PodReport,
    /// How each remote node is reached, and why.
    pub nodes: Vec<NodeReach>,
    /// Per port.
    pub ports: Vec<PortStats>,
    /// The tunnel sockets.
    pub tunnel: TunnelStats,
    /// Worker wake-ups.
    pub wakeups: u64,
    /// Busy polls that found nothing.
    pub busy_polls: u64,
    /// Times an adaptive worker stopped polling (see [`crate::busy_poll`]).
    pub busy_poll_backoffs: u64,
    /// Worker threads summed up.
    pub workers: usize,
    /// Each worker's share.
    pub per_worker: Vec<WorkerReport>,
}

/// The MAC table in a [`Report`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MacReport {
    /// Entries now.
    pub entries: usize,
    /// MACs learned.
    pub learned: u64,
    /// Entries aged out.
    pub expired: u64,
    /// Entries evicted for room.
    pub evicted: u64,
    /// MACs seen moving to another port.
    pub moved: u64,
}

/// The connection table in a [`Report`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConntrackReport {
    /// Connections now.
    pub entries: usize,
}

/// Pod attachments in a [`Report`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodReport {
    /// Pods detached because their network namespace vanished.
    pub vanished: u64,
}

/// How a remote node is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reach {
    /// Encapsulated.
    Tunnel,
    /// By the host's route to its subnet.
    Route,
    /// Not at all: its pods' packets are dropped as `no_route`.
    None,
}

/// One remote node in a [`Report`] (and in `twill status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeReach {
    /// The node's name (its public IP for a flannel lease).
    pub node: String,
    /// Its pod subnet.
    pub subnet: Ipv4Net,
    /// Its public IP.
    pub public_ip: Ipv4Addr,
    /// How it is reached.
    pub via: Reach,
    /// Why.
    pub reason: String,
}

impl Report {
    /// The report of `s`, with the agent's own parts.
    pub fn new(s: &Stats, pods: PodReport, nodes: Vec<NodeReach>) -> Report {
        // The drops go by name; `events` holds the rest (as it reads back).
        let mut events = s.core.clone();
        events.drops = [0; crate::core::DropReason::COUNT];
        Report {
            drops: Drops::from_counts(&s.core.drops),
            events,
            mac: MacReport {
                entries: s.mac_entries,
                learned: s.mac.learned,
                expired: s.mac.expired,
                evicted: s.mac.evicted,
                moved: s.mac.moved,
            },
            conntrack: ConntrackReport {
                entries: s.conntrack_entries,
            },
            pods,
            nodes,
            ports: s.ports.clone(),
            tunnel: s.tunnel.clone(),
            wakeups: s.wakeups,
            busy_polls: s.busy_polls,
            busy_poll_backoffs: s.busy_poll_backoffs,
            workers: s.workers,
            per_worker: s.per_worker.clone(),
        }
    }

    /// Every packet counted as dropped: every drop reason, each port's
    /// `tx_dropped`, `tx_errors` and `rx_offload_dropped`, the tunnel's
    /// `tx_dropped`, `tx_errors` and `rx_not_ipv4`, and the router's own
    /// replies that could not be routed (`events.replies_dropped`). Failed
    /// calls (`rx_errors`) are not packets and are left out.
    pub fn dropped_packets(&self) -> u64 {
        let ports: u64 = self
            .ports
            .iter()
            .map(|p| p.tx_dropped + p.tx_errors + p.rx_offload_dropped)
            .sum();
        let t = &self.tunnel;
        self.drops.total()
            + ports
            + t.tx_dropped
            + t.tx_errors
            + t.rx_not_ipv4
            + self.events.replies_dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::DropReason;

    /// The report's JSON is its type's: every drop reason by name, every
    /// event, and nothing that the type does not name reads back.
    #[test]
    fn a_report_reads_back_and_refuses_what_its_type_does_not_name() {
        let mut s = Stats::default();
        s.core.drop(DropReason::StormControl);
        s.core.drop(DropReason::StormControl);
        s.core.routed_direct = 7;
        s.core.replies_dropped = 1;
        s.ports.push(PortStats {
            id: 3,
            tx_dropped: 4,
            ..PortStats::default()
        });
        s.tunnel.rx_not_ipv4 = 5;
        let r = Report::new(&s, PodReport { vanished: 1 }, Vec::new());
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["drops"]["storm_control"], 2);
        assert_eq!(v["events"]["routed_direct"], 7);
        assert!(v["events"].get("drops").is_none(), "drops go by name");
        let back: Report = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.drops.get(DropReason::StormControl), 2);
        assert_eq!(back.dropped_packets(), 2 + 4 + 5 + 1);

        let mut renamed = v.clone();
        let d = renamed["drops"].as_object_mut().unwrap();
        let n = d.remove("storm_control").unwrap();
        d.insert("storm".into(), n);
        assert!(serde_json::from_value::<Report>(renamed).is_err());
        let mut missing = v;
        missing["events"].as_object_mut().unwrap().remove("flooded");
        assert!(serde_json::from_value::<Report>(missing).is_err());
    }
}
