//! The state one node's switch keeps, shared by all its workers: what the
//! control side configures, published as immutable snapshots that workers
//! read without a lock, and what the data path learns, in the shared
//! learning tables.
//!
//! - [`Tables`]: the configuration, the attached ports and the remote
//!   nodes. The control side changes it by building a new snapshot and
//!   swapping it in (`arc-swap`); a worker sees the new one at its next
//!   frame. Changes are rare (a pod attached, a node joined).
//! - [`SharedMacTable`] and [`SharedNeighbors`]: learned from frames on any
//!   worker, read on every frame (see [`super::learning`]).
//!
//! Counters are not shared: each worker's [`super::Switch`] keeps its own,
//! and the driver sums them.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use encap::MacAddr;

use super::config::{Allowance, PortConfig, PortKind, SwitchConfig};
use super::learning::{SharedMacTable, SharedNeighbors};
use super::mac_table::{mac_key, MacHashBuilder};
use super::policy::PolicyTable;
use super::ratelimit::{FloodClass, IcmpLimiter, StormPort};
use super::service::conntrack::{Conntrack, GENERATION_MASK, SHARDS};
use super::service::{Scope, ServicePort, ServiceTable};
use super::tables::{RemoteNode, RemoteTable};
use super::PortId;

/// One immutable snapshot of what the control side configured.
#[derive(Debug, Clone)]
pub struct Tables {
    /// The switch's fixed configuration.
    pub cfg: SwitchConfig,
    /// Attached ports by id.
    pub ports: Vec<Option<PortConfig>>,
    /// The host port, if attached.
    pub host_port: Option<PortId>,
    /// The other nodes.
    pub remotes: RemoteTable,
    /// The attached ports' MACs and addresses, which are also the learning
    /// tables' static and fixed entries: frames between attached ports, the
    /// most common, are switched and routed from here without touching the
    /// shared tables.
    port_by_mac: HashMap<u64, PortId, MacHashBuilder>,
    mac_by_ip: HashMap<u32, MacAddr, MacHashBuilder>,
    /// The pod ports that declared port-security exceptions.
    allowances: HashMap<PortId, Arc<Allowance>>,
}

impl Tables {
    fn new(cfg: SwitchConfig) -> Tables {
        let hasher = MacHashBuilder::new(0x7477_696c_6c5f_7431);
        Tables {
            cfg,
            ports: Vec::new(),
            host_port: None,
            remotes: RemoteTable::default(),
            port_by_mac: HashMap::with_hasher(hasher),
            mac_by_ip: HashMap::with_hasher(hasher),
            allowances: HashMap::new(),
        }
    }

    /// The attached port whose interface has this MAC.
    #[inline]
    pub fn port_with_mac(&self, mac: MacAddr) -> Option<PortId> {
        self.port_by_mac.get(&mac_key(mac)).copied()
    }

    /// The MAC of the attached port that holds `ip`.
    #[inline]
    pub fn mac_of_port_ip(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        self.mac_by_ip.get(&u32::from(ip)).copied()
    }

    /// What pod port `id` may send besides its own MAC and address.
    #[inline]
    pub fn allowance(&self, id: PortId) -> Option<&Allowance> {
        self.allowances.get(&id).map(|a| &**a)
    }

    /// The attached port `id`.
    #[inline]
    pub fn port(&self, id: PortId) -> Option<&PortConfig> {
        self.ports.get(usize::from(id.0))?.as_ref()
    }

    /// The attached ports.
    pub fn ports(&self) -> impl Iterator<Item = (PortId, &PortConfig)> + '_ {
        self.ports
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.as_ref().map(|p| (PortId(i as u16), p)))
    }
}

/// Everything the workers of one node share.
#[derive(Debug)]
pub struct SwitchState {
    tables: Arc<ArcSwap<Tables>>,
    /// Serializes the control side's read-copy-update of `tables`.
    publish: Mutex<()>,
    macs: SharedMacTable,
    neighbors: SharedNeighbors,
    /// The Services, published apart from `tables` so that a Service change
    /// does not copy the ports.
    services: Arc<ArcSwap<ServiceTable>>,
    /// The compiled NetworkPolicies of the node's pods, published apart
    /// from `tables` likewise.
    policy: Arc<ArcSwap<PolicyTable>>,
    /// The node's connection table (Service NAT and policy verdicts).
    conntrack: Conntrack,
    /// When worker 0's next conntrack sweep step is due.
    next_sweep: Mutex<Option<Instant>>,
    /// The router's ICMP error limits.
    icmp: IcmpLimiter,
    /// Storm control, per pod port that flooded since it was attached.
    storm: papaya::HashMap<PortId, Arc<StormPort>>,
    /// The first `now` seen: rate limits count milliseconds from it.
    epoch: std::sync::OnceLock<Instant>,
}

impl SwitchState {
    /// A state with no ports and no remote nodes.
    pub fn new(cfg: SwitchConfig) -> SwitchState {
        let macs = SharedMacTable::new(cfg.mac);
        let neighbors = SharedNeighbors::new(cfg.neighbor_capacity, cfg.neighbor_aging);
        let conntrack = Conntrack::new(cfg.conntrack);
        let icmp = IcmpLimiter::new(cfg.icmp);
        SwitchState {
            icmp,
            // Churned by pods coming and going, a few writes at a time:
            // resized at once (see `SharedMacTable::with_policy`).
            storm: papaya::HashMap::builder()
                .resize_mode(papaya::ResizeMode::Blocking)
                .build(),
            epoch: std::sync::OnceLock::new(),
            tables: Arc::new(ArcSwap::from_pointee(Tables::new(cfg))),
            publish: Mutex::new(()),
            macs,
            neighbors,
            services: Arc::new(ArcSwap::from_pointee(ServiceTable::default())),
            policy: Arc::new(ArcSwap::from_pointee(PolicyTable::default())),
            conntrack,
            next_sweep: Mutex::new(None),
        }
    }

    /// The snapshot workers read (they cache it: see [`super::Switch`]).
    pub fn tables(&self) -> &Arc<ArcSwap<Tables>> {
        &self.tables
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Tables> {
        self.tables.load_full()
    }

    /// The MAC table.
    pub fn macs(&self) -> &SharedMacTable {
        &self.macs
    }

    /// The neighbor table.
    pub fn neighbors(&self) -> &SharedNeighbors {
        &self.neighbors
    }

    /// The Service table workers read (they cache it like the tables).
    pub fn services(&self) -> &Arc<ArcSwap<ServiceTable>> {
        &self.services
    }

    /// Publishes a new Service table: new connections use it from each
    /// worker's next frame on; TCP connections keep their backend; UDP
    /// connections whose backend is no longer usable for their service port
    /// are removed (as kube-proxy does), so that their next datagram picks
    /// a live one. That costs a walk over the connection table.
    pub fn set_services(&self, services: ServiceTable) {
        let services = Arc::new(services);
        self.services.store(Arc::clone(&services));
        if self.conntrack.is_empty() {
            return;
        }
        let by_id: HashMap<u32, &ServicePort> = services.ports().map(|p| (p.id, &**p)).collect();
        self.conntrack.flush_udp(|c| {
            by_id.get(&c.service).is_some_and(|p| {
                let b = c.backend();
                p.pool(Scope::Internal).contains(b) || p.pool(Scope::External).contains(b)
            })
        });
    }

    /// The policy table workers read (they cache it like the tables).
    pub fn policy(&self) -> &Arc<ArcSwap<PolicyTable>> {
        &self.policy
    }

    /// Publishes a new policy table under the next generation: new
    /// connections are judged by it from each worker's next frame on, and
    /// every tracked connection is judged again by it at its next packet
    /// (a connection it no longer allows is cut: its packets are dropped
    /// until it expires). One publisher at a time (the control side).
    pub fn set_policy(&self, mut policy: PolicyTable) {
        let _one_writer = self.publish.lock().unwrap_or_else(|e| e.into_inner());
        let next = self.policy.load().generation().wrapping_add(1) & GENERATION_MASK;
        policy.set_generation(next);
        self.policy.store(Arc::new(policy));
    }

    /// Whether the router may send an ICMP error to `dst` at `now` (see
    /// [`IcmpLimiter::allow`]).
    pub fn icmp_allowed(&self, dst: Ipv4Addr, per_dest: bool, now: Instant) -> bool {
        self.icmp.allow(dst, per_dest, self.ms(now))
    }

    /// Whether pod port `port` may make the switch flood a frame of
    /// `class` at `now` (storm control); a refusal is counted on the port.
    pub fn flood_allowed(&self, port: PortId, class: FloodClass, now: Instant) -> bool {
        let ms = self.ms(now);
        let m = self.storm.pin();
        match m.get(&port) {
            Some(p) => p.allow(class, ms),
            None => {
                let limits = self.tables.load().cfg.storm;
                let p = m.get_or_insert_with(port, || Arc::new(StormPort::new(&limits)));
                p.allow(class, ms)
            }
        }
    }

    /// Frames storm control refused from `port` since it was attached.
    pub fn storm_dropped(&self, port: PortId) -> u64 {
        self.storm.pin().get(&port).map_or(0, |p| p.dropped())
    }

    /// Milliseconds from the first `now` seen (the rate limits' clock).
    fn ms(&self, now: Instant) -> u64 {
        let epoch = *self.epoch.get_or_init(|| now);
        u64::try_from(now.saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// The connection table.
    pub fn conntrack(&self) -> &Conntrack {
        &self.conntrack
    }

    /// Publishes `change` applied to a copy of the current snapshot, unless
    /// it returns `None` (nothing changed).
    fn update<R>(&self, change: impl FnOnce(&mut Tables) -> Option<R>) -> Option<R> {
        let _one_writer = self.publish.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = Tables::clone(&self.tables.load());
        let r = change(&mut next)?;
        self.tables.store(Arc::new(next));
        Some(r)
    }

    /// Attaches a port: its MAC becomes a static MAC entry and its address a
    /// fixed neighbor, then the port is published. Replaces whatever had
    /// the same id.
    pub fn add_port(&self, id: PortId, p: PortConfig, now: Instant) {
        self.add_port_allowing(id, p, Allowance::default(), now);
    }

    /// [`SwitchState::add_port`] for a pod port that may also send from
    /// the MACs and addresses `allow` names (port security's exceptions).
    pub fn add_port_allowing(&self, id: PortId, p: PortConfig, allow: Allowance, now: Instant) {
        self.remove_port(id);
        let _ = self.macs.insert_static(p.mac, id);
        self.neighbors.insert_fixed(p.ip, p.mac, now);
        self.update(|t| {
            let i = usize::from(id.0);
            if t.ports.len() <= i {
                t.ports.resize(i + 1, None);
            }
            t.ports[i] = Some(p);
            if p.kind == PortKind::Host {
                t.host_port = Some(id);
            }
            if p.mac.is_unicast() {
                t.port_by_mac.insert(mac_key(p.mac), id);
            }
            t.mac_by_ip.insert(u32::from(p.ip), p.mac);
            if !allow.is_empty() {
                t.allowances.insert(id, Arc::new(allow));
            }
            Some(())
        });
    }

    /// Detaches a port (no worker forwards to it from its next frame on),
    /// then forgets everything learned on it.
    pub fn remove_port(&self, id: PortId) -> Option<PortConfig> {
        let p = self.update(|t| {
            let p = t.ports.get_mut(usize::from(id.0))?.take()?;
            if t.host_port == Some(id) {
                t.host_port = None;
            }
            if t.port_with_mac(p.mac) == Some(id) {
                t.port_by_mac.remove(&mac_key(p.mac));
            }
            if t.mac_of_port_ip(p.ip) == Some(p.mac) {
                t.mac_by_ip.remove(&u32::from(p.ip));
            }
            t.allowances.remove(&id);
            Some(p)
        })?;
        self.macs.flush_port(id);
        self.neighbors.remove_if(p.ip, p.mac);
        self.storm.pin().remove(&id);
        Some(p)
    }

    /// Replaces the table of remote nodes.
    pub fn set_remotes(&self, nodes: &[RemoteNode]) {
        let remotes = RemoteTable::new(nodes);
        self.update(|t| {
            t.remotes = remotes;
            Some(())
        });
    }

    /// Ages MAC and neighbor entries and sweeps one step of the connection
    /// table (one shard of [`SHARDS`], at most every `sweep_interval /
    /// SHARDS`); returns when to call again. One worker calls it.
    pub fn run(&self, now: Instant) -> Option<Instant> {
        let a = self.macs.run(now);
        let b = self.neighbors.run(now);
        let c = self.sweep(now);
        [a, b, c].into_iter().flatten().min()
    }

    fn sweep(&self, now: Instant) -> Option<Instant> {
        let mut next = self.next_sweep.lock().unwrap_or_else(|e| e.into_inner());
        if next.is_none_or(|t| now >= t) {
            let step = self.conntrack.config().sweep_interval / SHARDS as u32;
            self.conntrack.sweep(now);
            *next = Some(now + step);
        }
        if self.conntrack.is_empty() {
            None
        } else {
            *next
        }
    }
}
