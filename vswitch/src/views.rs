//! Typed views of a node's tables, as `twill fdb`, `twill routes`,
//! `twill nodes` and `twill ports` show them: the one definition of each
//! answer, which the agent serializes and the CLI, the lab and the tests
//! read back (a renamed or missing field fails to parse, as with
//! [`crate::stats::Report`]).
//!
//! [`fdb`] and [`routes`] read what the switch knows (the shared MAC table,
//! the configuration snapshot) at a `now` the caller passes: nothing here
//! reads a clock. The agent adds what only it knows (pod ids, names, where
//! a node's entry came from) to the views it builds from these.

use std::net::Ipv4Addr;
use std::time::Instant;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::core::{Backend, PortKind, SwitchState, Tables, Via};
use crate::stats::Reach;

/// `twill fdb`: the MAC table of the node's L2 segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fdb {
    /// The segment: twill has one per node, untagged (no VLANs), named by
    /// the node's pod subnet.
    pub segment: Ipv4Net,
    /// How long an idle learned entry stays.
    pub aging_secs: u64,
    /// Entries, by port then MAC; the router's own MAC first.
    pub entries: Vec<FdbEntry>,
}

/// One MAC of the segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FdbEntry {
    /// The port it is on; `None` for the router's MAC (the gateway's and
    /// the VTEP's), which the switch answers itself on no port.
    pub port: Option<u16>,
    /// What is behind the port: the pod's attachment id, the host port's
    /// name, `router` (filled in by the agent; empty if unknown).
    pub name: String,
    /// `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// Static (an attached port's own MAC, the router's) or learned.
    pub kind: FdbKind,
    /// Seconds since a learned entry was last seen (refreshed at most a
    /// second apart, so up to a second more than the truth); `None` for a
    /// static entry.
    pub age_secs: Option<u64>,
}

/// How a MAC got into the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FdbKind {
    /// Pinned: never ages, never moves.
    Static,
    /// Learned from a frame's source; ages.
    Learned,
}

/// The MAC table of `state` at `now` (names left empty but the router's).
pub fn fdb(state: &SwitchState, now: Instant) -> Fdb {
    let t = state.snapshot();
    let mut entries: Vec<FdbEntry> = state
        .macs()
        .entries_seen()
        .into_iter()
        .map(|(mac, port, seen)| FdbEntry {
            port: Some(port.0),
            name: String::new(),
            mac: mac.to_string(),
            kind: if seen.is_some() {
                FdbKind::Learned
            } else {
                FdbKind::Static
            },
            age_secs: seen.map(|s| now.saturating_duration_since(s).as_secs()),
        })
        .collect();
    entries.sort_by(|a, b| (a.port, &a.mac).cmp(&(b.port, &b.mac)));
    entries.insert(
        0,
        FdbEntry {
            port: None,
            name: "router".into(),
            mac: t.cfg.router_mac.to_string(),
            kind: FdbKind::Static,
            age_secs: None,
        },
    );
    Fdb {
        segment: net(t.cfg.subnet),
        aging_secs: t.cfg.mac.aging.as_secs(),
        entries,
    }
}

/// `twill routes`: the router's table, in the order the router decides
/// (the first route that holds the destination wins; among the remote
/// nodes' subnets the longest prefix).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routes {
    /// The routes, in that order.
    pub routes: Vec<Route>,
}

/// One route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The destination prefix.
    pub destination: Ipv4Net,
    /// Where packets to it go.
    pub via: RouteVia,
    /// The next hop: the tunnel endpoint, or the host port's address.
    pub next_hop: Option<String>,
    /// The port it leaves by, if a port.
    pub port: Option<u16>,
    /// The remote node, by name (filled in by the agent).
    pub node: Option<String>,
    /// The remote node's VTEP MAC (vxlan tunnels).
    pub vtep_mac: Option<String>,
}

/// Where a route sends packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteVia {
    /// The router's own address (the gateway): it answers ARP and ICMP.
    Local,
    /// The node's L2 segment: to the port whose address it is, or to the
    /// MAC ARP found (the subnet's network and broadcast addresses are
    /// dropped).
    Connected,
    /// Encapsulated to another node.
    Tunnel,
    /// Out the host port unencapsulated: the host kernel routes it (a
    /// remote node reached by route: host-gw, DirectRouting, BGP; and
    /// everything outside the cluster).
    Host,
    /// Dropped, counted as `no_route`: the cluster's addresses no node
    /// holds, or the outside when there is no host port.
    Unreachable,
}

/// The router's table of `t` (node names left empty).
pub fn routes(t: &Tables) -> Routes {
    let cfg = &t.cfg;
    let host = t.host_port.and_then(|h| t.port(h).map(|p| (h, p.ip)));
    let host_route = |destination| match host {
        Some((h, ip)) => Route {
            destination,
            via: RouteVia::Host,
            next_hop: Some(ip.to_string()),
            port: Some(h.0),
            node: None,
            vtep_mac: None,
        },
        None => Route::unreachable(destination),
    };
    let mut routes = vec![
        Route {
            destination: Ipv4Net::new(cfg.gateway, 32).unwrap_or_default(),
            via: RouteVia::Local,
            ..Route::unreachable(Ipv4Net::default())
        },
        Route {
            destination: net(cfg.subnet),
            via: RouteVia::Connected,
            ..Route::unreachable(Ipv4Net::default())
        },
    ];
    let mut remotes: Vec<_> = t.remotes.nodes().iter().collect();
    remotes.sort_by_key(|n| (std::cmp::Reverse(n.subnet.prefix()), n.subnet.addr()));
    for n in remotes {
        let destination = net(n.subnet);
        routes.push(match (n.via, cfg.backend) {
            (Via::Host, _) => host_route(destination),
            // The router drops what would go through a tunnel it has not.
            (Via::Tunnel, Backend::HostGw) => Route::unreachable(destination),
            (Via::Tunnel, backend) => Route {
                destination,
                via: RouteVia::Tunnel,
                next_hop: Some(n.endpoint.to_string()),
                port: None,
                node: None,
                vtep_mac: matches!(backend, Backend::Vxlan { .. }).then(|| n.vtep_mac.to_string()),
            },
        });
    }
    routes.push(Route::unreachable(net(cfg.cluster)));
    routes.push(host_route(Ipv4Net::default()));
    Routes { routes }
}

impl Route {
    fn unreachable(destination: Ipv4Net) -> Route {
        Route {
            destination,
            via: RouteVia::Unreachable,
            next_hop: None,
            port: None,
            node: None,
            vtep_mac: None,
        }
    }
}

/// `twill nodes`: the other nodes of the node table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nodes {
    /// Where the node table comes from: `config` (the node's configuration
    /// file), or the control plane (`controller URL`, `etcd ENDPOINTS PREFIX`).
    pub source: String,
    /// The nodes, by name.
    pub nodes: Vec<NodeEntry>,
}

/// One remote node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    /// Its name (its public IP for a flannel lease).
    pub name: String,
    /// Its underlay address.
    pub public_ip: Ipv4Addr,
    /// Its pod subnet.
    pub subnet: Ipv4Net,
    /// Its VTEP MAC (vxlan; none for udp and host-gw leases).
    pub vtep_mac: Option<String>,
    /// Where its entry came from.
    pub source: NodeSource,
    /// When its entry last changed (added, or a field changed), in seconds
    /// since the Unix epoch.
    pub changed_unix: u64,
    /// How it is reached.
    pub reach: Reach,
    /// Why.
    pub reason: String,
}

/// Where a node's entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeSource {
    /// The node's configuration file (`peers`).
    Config,
    /// `twill controller`'s node table.
    Controller,
    /// flannel's keys in etcd.
    Etcd,
}

impl NodeSource {
    /// Its name, as JSON spells it.
    pub fn name(self) -> &'static str {
        match self {
            NodeSource::Config => "config",
            NodeSource::Controller => "controller",
            NodeSource::Etcd => "etcd",
        }
    }
}

/// `twill ports`: the switch's ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ports {
    /// The ports, by id.
    pub ports: Vec<PortEntry>,
}

/// One port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortEntry {
    /// Port id.
    pub id: u16,
    /// A pod's TAP, or the host port.
    pub kind: PortRole,
    /// The TAP's name when it was created (in the node's namespace).
    pub tap: String,
    /// The pod's attachment id (pods only).
    pub pod_id: Option<String>,
    /// The Kubernetes pod, `namespace/name`, if the attachment named one.
    pub pod: Option<String>,
    /// The pod's network namespace as attached (pods only; the host port
    /// is in the node's own).
    pub netns: Option<String>,
    /// The interface's name where it lives.
    pub ifname: String,
    /// Its address with the subnet's prefix.
    pub ip: String,
    /// Its MAC.
    pub mac: String,
    /// Its MTU.
    pub mtu: u32,
    /// The offloads the kernel accepted for the TAP (`csum`, `tso4`,
    /// `tso6`, `tso_ecn`, `uso4`, `uso6`; an unknown bit as `0x…`).
    pub offloads: Vec<String>,
    /// TAP queues: one per worker.
    pub queues: usize,
    /// A read failed for good (the pod's namespace is gone): not polled.
    pub dead: bool,
}

/// What a port is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortRole {
    /// A pod's TAP.
    Pod,
    /// The host port.
    Host,
}

impl From<PortKind> for PortRole {
    fn from(k: PortKind) -> PortRole {
        match k {
            PortKind::Pod => PortRole::Pod,
            PortKind::Host => PortRole::Host,
        }
    }
}

/// The names of the `TUN_F_*` bits in `bits`.
pub fn offload_names(bits: u32) -> Vec<String> {
    const NAMES: [(u32, &str); 7] = [
        (0x01, "csum"),
        (0x02, "tso4"),
        (0x04, "tso6"),
        (0x08, "tso_ecn"),
        (0x10, "ufo"),
        (0x20, "uso4"),
        (0x40, "uso6"),
    ];
    let mut out: Vec<String> = NAMES
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| (*n).to_owned())
        .collect();
    let known = NAMES.iter().fold(0, |a, (b, _)| a | b);
    for i in 0..32 {
        let b = 1u32 << i;
        if bits & b != 0 && known & b == 0 {
            out.push(format!("{b:#x}"));
        }
    }
    out
}

fn net(c: encap::Cidr) -> Ipv4Net {
    Ipv4Net::new(c.addr(), c.prefix()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{MacTableConfig, PortConfig, PortId, RemoteNode, SwitchConfig};
    use encap::{Cidr, MacAddr};
    use std::net::SocketAddrV4;
    use std::time::Duration;

    fn config(backend: Backend) -> SwitchConfig {
        SwitchConfig {
            subnet: Cidr::new([10, 244, 1, 0].into(), 24).unwrap(),
            gateway: [10, 244, 1, 1].into(),
            cluster: Cidr::new([10, 244, 0, 0].into(), 16).unwrap(),
            router_mac: MacAddr([0x0e, 0, 0, 0, 0, 1]),
            backend,
            tunnel_mtu: 1450,
            mac: MacTableConfig::default(),
            neighbor_capacity: 64,
            neighbor_aging: Duration::from_secs(60),
            conntrack: Default::default(),
            icmp: Default::default(),
            storm: Default::default(),
        }
    }

    fn port(kind: PortKind, last: u8) -> PortConfig {
        PortConfig {
            kind,
            mac: MacAddr([0x0a, 0x58, 10, 244, 1, last]),
            ip: [10, 244, 1, last].into(),
        }
    }

    fn remote(n: u8, via: Via) -> RemoteNode {
        RemoteNode {
            subnet: Cidr::new([10, 244, n, 0].into(), 24).unwrap(),
            endpoint: SocketAddrV4::new([192, 168, 100, n].into(), 8472),
            vtep_mac: MacAddr([0x0e, 0, 0, 0, 0, n]),
            via,
        }
    }

    #[test]
    fn fdb_has_the_router_static_ports_and_learned_macs_with_their_age() {
        let s = SwitchState::new(config(Backend::Vxlan { vni: 1 }));
        let t0 = Instant::now();
        s.add_port(PortId(0), port(PortKind::Host, 2), t0);
        s.add_port(PortId(3), port(PortKind::Pod, 3), t0);
        let behind = MacAddr([0x0a, 0x58, 10, 244, 1, 200]);
        let _ = s.macs().learn(behind, PortId(3), t0);
        let f = fdb(&s, t0 + Duration::from_secs(7));
        assert_eq!(f.segment.to_string(), "10.244.1.0/24");
        assert_eq!(f.aging_secs, 300);
        let rows: Vec<_> = f
            .entries
            .iter()
            .map(|e| (e.port, e.mac.as_str(), e.kind, e.age_secs))
            .collect();
        assert_eq!(
            rows,
            vec![
                (None, "0e:00:00:00:00:01", FdbKind::Static, None),
                (Some(0), "0a:58:0a:f4:01:02", FdbKind::Static, None),
                (Some(3), "0a:58:0a:f4:01:03", FdbKind::Static, None),
                (Some(3), "0a:58:0a:f4:01:c8", FdbKind::Learned, Some(7)),
            ]
        );
        let back: Fdb = serde_json::from_value(serde_json::to_value(&f).unwrap()).unwrap();
        assert_eq!(back, f);
    }

    #[test]
    fn routes_follow_the_routers_order() {
        let s = SwitchState::new(config(Backend::Vxlan { vni: 1 }));
        s.add_port(PortId(0), port(PortKind::Host, 2), Instant::now());
        s.set_remotes(&[remote(3, Via::Host), remote(2, Via::Tunnel)]);
        let r = routes(&s.snapshot());
        let rows: Vec<_> = r
            .routes
            .iter()
            .map(|r| {
                (
                    r.destination.to_string(),
                    r.via,
                    r.next_hop.clone().unwrap_or_default(),
                    r.port,
                    r.vtep_mac.clone(),
                )
            })
            .collect();
        let s = |x: &str| x.to_owned();
        assert_eq!(
            rows,
            vec![
                (s("10.244.1.1/32"), RouteVia::Local, s(""), None, None),
                (s("10.244.1.0/24"), RouteVia::Connected, s(""), None, None),
                (
                    s("10.244.2.0/24"),
                    RouteVia::Tunnel,
                    s("192.168.100.2:8472"),
                    None,
                    Some(s("0e:00:00:00:00:02"))
                ),
                (
                    s("10.244.3.0/24"),
                    RouteVia::Host,
                    s("10.244.1.2"),
                    Some(0),
                    None
                ),
                (s("10.244.0.0/16"), RouteVia::Unreachable, s(""), None, None),
                (
                    s("0.0.0.0/0"),
                    RouteVia::Host,
                    s("10.244.1.2"),
                    Some(0),
                    None
                ),
            ]
        );
    }

    #[test]
    fn without_a_host_port_the_outside_is_unreachable_and_udp_has_no_vtep() {
        let s = SwitchState::new(config(Backend::Udp));
        s.set_remotes(&[remote(2, Via::Tunnel)]);
        let r = routes(&s.snapshot());
        assert_eq!(r.routes[2].vtep_mac, None);
        assert_eq!(r.routes[2].via, RouteVia::Tunnel);
        assert_eq!(r.routes.last().unwrap().via, RouteVia::Unreachable);
    }

    #[test]
    fn offloads_by_name() {
        assert_eq!(
            offload_names(0x01 | 0x02 | 0x08 | 0x20 | 0x40),
            ["csum", "tso4", "tso_ecn", "uso4", "uso6"]
        );
        assert_eq!(offload_names(0x80), ["0x80"]);
        assert!(offload_names(0).is_empty());
    }
}
