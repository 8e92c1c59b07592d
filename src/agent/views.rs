//! The agent's side of `twill fdb`, `twill nodes`, `twill routes` and
//! `twill ports`: the switch's views ([`vswitch::views`]) with what only
//! the agent knows added (pod ids, names, where each node's entry came
//! from and when it last changed).

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result};
use control::{ControlPlane, Peer};
use vswitch::views::{self, Fdb, NodeEntry, NodeSource, Nodes, PortEntry, PortRole, Ports, Routes};

use super::Agent;

/// The node table as applied, with where it came from and when each
/// entry last changed.
#[derive(Debug)]
pub(super) struct NodeLog {
    source: NodeSource,
    /// `config`, or the control plane as it names itself.
    origin: String,
    /// Each node's entry as last applied, with when it last changed (Unix
    /// seconds) and where it came from.
    entries: Vec<(Peer, u64, NodeSource)>,
}

impl NodeLog {
    /// A log of the configuration's `peers`, applied now.
    pub(super) fn new(peers: &[Peer]) -> NodeLog {
        let mut log = NodeLog {
            source: NodeSource::Config,
            origin: NodeSource::Config.name().to_owned(),
            entries: Vec::new(),
        };
        log.apply(peers, unix_now());
        log
    }

    /// Records the node table applied at `now` (Unix seconds): an entry
    /// equal to the one of the same name before keeps its time and source.
    pub(super) fn apply(&mut self, peers: &[Peer], now: u64) {
        let before: BTreeMap<&str, &(Peer, u64, NodeSource)> = self
            .entries
            .iter()
            .map(|e| (e.0.name.as_str(), e))
            .collect();
        let entries = peers
            .iter()
            .map(|p| match before.get(p.name.as_str()) {
                Some((old, since, source)) if old == p => (p.clone(), *since, *source),
                _ => (p.clone(), now, self.source),
            })
            .collect();
        self.entries = entries;
    }

    /// From now on, node tables come from `plane`.
    pub(super) fn set_plane(&mut self, plane: &ControlPlane) {
        self.source = match plane {
            ControlPlane::Controller { .. } => NodeSource::Controller,
            ControlPlane::Etcd { .. } => NodeSource::Etcd,
        };
        self.origin = plane.to_string();
    }
}

/// Seconds since the Unix epoch now.
pub(super) fn unix_now() -> u64 {
    control::store::unix_secs(SystemTime::now())
}

impl Agent {
    /// From now on, the node tables [`Agent::set_peers`] applies come from
    /// `plane` (`twill nodes` says so).
    pub fn set_node_source(&self, plane: &ControlPlane) {
        self.node_log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_plane(plane);
    }

    /// Records a node table applied now (from [`Agent::set_peers`]).
    pub(super) fn log_peers(&self, peers: &[Peer]) {
        let mut log = self.node_log.lock().unwrap_or_else(|e| e.into_inner());
        log.apply(peers, unix_now());
    }

    /// `twill fdb`.
    pub fn fdb_view(&self) -> Result<Fdb> {
        let mut f = views::fdb(self.dataplane.state(), Instant::now());
        let names = self.port_names()?;
        for e in &mut f.entries {
            if let Some(n) = e.port.and_then(|p| names.get(&p)) {
                e.name.clone_from(n);
            }
        }
        Ok(f)
    }

    /// `twill routes`.
    pub fn routes_view(&self) -> Routes {
        let mut r = views::routes(&self.dataplane.state().snapshot());
        let peers = self.peers.lock().map(|p| p.clone()).unwrap_or_default();
        for route in &mut r.routes {
            let owner = peers.iter().find(|p| p.subnet == route.destination);
            if let Some(p) = owner.filter(|_| route.via != views::RouteVia::Connected) {
                route.node = Some(p.name.clone());
            }
        }
        r
    }

    /// `twill nodes`.
    pub fn nodes_view(&self) -> Nodes {
        let reach = self.reach();
        let log = self.node_log.lock().unwrap_or_else(|e| e.into_inner());
        let mut nodes: Vec<NodeEntry> = log
            .entries
            .iter()
            .map(|(p, since, source)| {
                let r = reach.iter().find(|r| r.node == p.name);
                NodeEntry {
                    name: p.name.clone(),
                    public_ip: p.public_ip,
                    subnet: p.subnet,
                    vtep_mac: p.vtep_mac.map(|m| m.to_string()),
                    source: *source,
                    changed_unix: *since,
                    reach: r.map_or(vswitch::stats::Reach::None, |r| r.via),
                    reason: r
                        .map_or_else(|| "not in the switch's table".into(), |r| r.reason.clone()),
                }
            })
            .collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Nodes {
            source: log.origin.clone(),
            nodes,
        }
    }

    /// `twill ports`.
    pub fn ports_view(&self) -> Result<Ports> {
        let stats = self
            .dataplane
            .stats()
            .context("reading the dataplane's ports")?;
        self.ports_of(&stats.ports)
    }

    /// `twill ports` for the ports of a counter read already (the metrics
    /// read them once per scrape, for the report and for this).
    pub fn ports_of(&self, counted: &[vswitch::stats::PortStats]) -> Result<Ports> {
        let tables = self.dataplane.state().snapshot();
        let pods: BTreeMap<u16, crate::api::Attachment> = self
            .pods
            .lock()
            .map_err(|_| anyhow::anyhow!("pod table poisoned"))?
            .ported()
            .into_iter()
            .map(|(id, a)| (id.0, a))
            .collect();
        let prefix = self.info.subnet.prefix();
        let mut ports: Vec<PortEntry> = counted
            .iter()
            .filter_map(|s| {
                let cfg = tables.port(vswitch::core::PortId(s.id))?;
                let pod = pods.get(&s.id);
                Some(PortEntry {
                    id: s.id,
                    kind: PortRole::from(cfg.kind),
                    tap: s.name.clone(),
                    pod_id: pod.map(|a| a.id.clone()),
                    pod: pod.and_then(|a| a.pod.as_ref()).map(ToString::to_string),
                    netns: pod.map(|a| a.netns.clone()),
                    ifname: pod.map_or_else(|| s.name.clone(), |a| a.ifname.clone()),
                    ip: format!("{}/{prefix}", cfg.ip),
                    mac: cfg.mac.to_string(),
                    mtu: pod.map_or(self.info.mtu, |a| a.mtu),
                    offloads: views::offload_names(s.offloads),
                    queues: self.dataplane.workers(),
                    dead: s.dead,
                })
            })
            .collect();
        ports.sort_by_key(|p| p.id);
        Ok(Ports { ports })
    }

    /// What each port is, for the fdb: the pod's attachment id, the host
    /// port's name.
    fn port_names(&self) -> Result<BTreeMap<u16, String>> {
        let pods = self
            .pods
            .lock()
            .map_err(|_| anyhow::anyhow!("pod table poisoned"))?;
        let mut names: BTreeMap<u16, String> = pods
            .ported()
            .into_iter()
            .map(|(id, a)| (id.0, a.id))
            .collect();
        names.insert(super::HOST_PORT.0, self.info.host_port.clone());
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, n: u8) -> Peer {
        Peer {
            name: name.into(),
            public_ip: [192, 168, 100, n].into(),
            subnet: format!("10.244.{n}.0/24").parse().unwrap(),
            vtep_mac: Some(encap::MacAddr([0x0e, 0, 0, 0, 0, n])),
        }
    }

    #[test]
    fn a_node_entry_keeps_its_time_and_source_until_it_changes() {
        let mut log = NodeLog::new(&[]);
        log.apply(&[peer("b", 2)], 100);
        log.set_plane(&ControlPlane::Etcd {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: "/coreos.com/network".into(),
            tls: Default::default(),
        });
        let mut moved = peer("b", 2);
        moved.public_ip = [192, 168, 100, 9].into();
        log.apply(&[peer("b", 2), peer("c", 3)], 200);
        log.apply(&[moved.clone(), peer("c", 3)], 300);
        let got: Vec<_> = log
            .entries
            .iter()
            .map(|(p, t, s)| (p.name.as_str(), p.public_ip.octets()[3], *t, *s))
            .collect();
        assert_eq!(
            got,
            [
                ("b", 9, 300, NodeSource::Etcd),
                ("c", 3, 200, NodeSource::Etcd)
            ]
        );
        assert!(log.origin.starts_with("etcd "), "{}", log.origin);
        log.apply(&[peer("c", 3)], 400);
        assert_eq!(log.entries.len(), 1);
    }
}
