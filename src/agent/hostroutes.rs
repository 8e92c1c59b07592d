//! Remote subnets reached by a route instead of a tunnel: flannel's
//! `host-gw` backend (every node) and the vxlan backend's `DirectRouting`
//! (the nodes on a directly connected network).
//!
//! The switch hands a packet for such a subnet to the host through the
//! host port ([`Via::Host`]), and the host kernel forwards it by a route
//! this module installs, `SUBNET via NODE_IP dev UNDERLAY proto 116`, as
//! flannel's `RouteNetwork` does: TSO super-frames stay whole to the
//! underlay, and on the receiving node the host's connected route to the
//! host port brings the packet into the switch. (Encapsulating in the
//! switch and sending by raw socket was the other design: it would need a
//! second send path, ARP for the next hop in the switch and software
//! segmentation, for what the kernel does already.)
//!
//! One thread, the keeper, owns the netlink session (netlink calls block;
//! the lease follower is async). It is handed the node table, decides per
//! node, installs the routes first, then publishes the switch's remote
//! table, then removes the routes no longer wanted, so that the switch
//! never sends a subnet to the host before the host can route it. Every 10
//! s it checks again and puts back a route somebody deleted (flannel's
//! `routeCheck`). Routes are recognised as twill's by their protocol,
//! [`RTPROT_TWILL`]: a route to the same subnet that twill did not install
//! is never touched (the node is then reported as conflicting). A clean
//! stop removes twill's routes; after a crash, the next start removes
//! those it no longer wants.
//!
//! In BGP mode ([`Routing::Bgp`], `super::bgp`) BIRD installs the routes
//! (`proto bird`) and the keeper installs none: it points the switch at
//! the host for each node whose subnet has such a route, checking every
//! second, and reports the others as not reached.

use std::net::Ipv4Addr;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use control::{Backend, Peer};
use encap::lograte::LogRate;
use ipnet::Ipv4Net;
use vswitch::core::{RemoteNode, SwitchState, Via};
use vswitch::sys::netlink::{Netlink, RouteV4};

/// The `proto` of twill's routes (`ip route show proto 116`): a number no
/// routing daemon registers in iproute2's `rt_protos`.
pub const RTPROT_TWILL: u8 = 116;

/// How often the routes are checked and put back.
const CHECK_EVERY: Duration = Duration::from_secs(10);
/// How often BIRD's routes are looked for in BGP mode (they come and go
/// with BGP sessions, and a netlink route dump is cheap).
const CHECK_BGP_EVERY: Duration = Duration::from_secs(1);

/// The `proto` of BIRD's routes (`RTPROT_BIRD` in linux/rtnetlink.h).
pub const RTPROT_BIRD: u8 = 12;

/// Where the routes to other nodes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// The flannel backend's rules ([`decide`]): host-gw or DirectRouting
    /// routes installed by the keeper.
    Backend(Backend),
    /// BGP (BIRD installs them): every node is reached by the host.
    Bgp,
}

/// How the node table's nodes are reached, as `twill status` and `twill
/// counters` show it (one definition, in the counters' report).
pub use vswitch::stats::{NodeReach, Reach};

/// Where a node is reached, decided from the backend and this node's
/// directly connected networks (`connected`: link index and network).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Encapsulated.
    Tunnel(&'static str),
    /// By a route via its public IP out of link `oif`.
    Route {
        /// The link the node's network is on.
        oif: u32,
        /// Why.
        reason: String,
    },
    /// A route is needed and impossible: the node is on no directly
    /// connected network.
    Unreachable(String),
}

/// Decides how `peer` is reached. host-gw needs every node on a directly
/// connected network (its public IP is the next hop); DirectRouting routes
/// those that are and encapsulates the rest (flannel decides the same by
/// whether the kernel's route to the node has no gateway).
pub fn decide(backend: &Backend, peer: Ipv4Addr, connected: &[(u32, Ipv4Net)]) -> Decision {
    let on = connected.iter().find(|(_, n)| n.contains(&peer));
    match (backend, on) {
        (Backend::HostGw, Some((oif, net))) => Decision::Route {
            oif: *oif,
            reason: format!("host-gw: on the connected network {net}"),
        },
        (Backend::HostGw, None) => Decision::Unreachable(format!(
            "host-gw: {peer} is not on a directly connected network of this node, so it \
             cannot be the next hop (host-gw needs all nodes on one L2 network; use vxlan \
             with DirectRouting across networks)"
        )),
        (
            Backend::Vxlan {
                direct_routing: true,
                ..
            },
            Some((oif, net)),
        ) => Decision::Route {
            oif: *oif,
            reason: format!("DirectRouting: on the connected network {net}"),
        },
        (
            Backend::Vxlan {
                direct_routing: true,
                ..
            },
            None,
        ) => Decision::Tunnel("DirectRouting: not on a directly connected network"),
        _ => Decision::Tunnel("vxlan/udp backend"),
    }
}

/// BGP mode: whether BIRD installed a route to `subnet`.
fn learned(routes: &[RouteV4], subnet: Ipv4Net) -> (Option<Via>, Reach, String) {
    let r = routes.iter().find(|r| {
        r.protocol == RTPROT_BIRD
            && r.dst == subnet.network()
            && r.prefix_len == subnet.prefix_len()
    });
    match r {
        Some(r) => (
            Some(Via::Host),
            Reach::Route,
            match r.gateway {
                Some(g) => format!("BGP: learned, via {g}"),
                None => "BGP: learned".to_owned(),
            },
        ),
        None => (
            None,
            Reach::None,
            format!(
                "BGP: no route to {subnet} learned (yet): is a session up? see `twill bgp status`"
            ),
        ),
    }
}

enum Msg {
    Peers(Vec<Peer>),
    Stop,
}

/// The keeper thread: see the module's documentation.
#[derive(Debug)]
pub struct RouteKeeper {
    tx: mpsc::Sender<Msg>,
    view: Arc<Mutex<Vec<NodeReach>>>,
    thread: Option<JoinHandle<()>>,
}

impl RouteKeeper {
    /// Starts the keeper for `backend`, publishing remote tables to
    /// `state` (tunnel endpoints on `port`). Opens netlink and enables IPv4
    /// forwarding in this namespace first (the host forwards the switch's
    /// packets): an error here stops the agent's start.
    pub fn start(routing: Routing, port: u16, state: Arc<SwitchState>) -> Result<RouteKeeper> {
        enable_forwarding()?;
        let (tx, rx) = mpsc::channel();
        let view = Arc::new(Mutex::new(Vec::new()));
        let shown = view.clone();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("twill-routes".into())
            .spawn(move || {
                let nl = match Netlink::new() {
                    Ok(nl) => {
                        let _ = ready_tx.send(Ok(()));
                        nl
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                Keeper {
                    nl,
                    routing,
                    port,
                    state,
                    view: shown,
                    peers: Vec::new(),
                    failures: LogRate::new(encap::lograte::RETRY_REPORT_INTERVAL),
                    reported: Vec::new(),
                    published: None,
                }
                .run(&rx)
            })
            .context("starting the route keeper thread")?;
        ready_rx
            .recv()
            .context("the route keeper thread ended")?
            .context("opening netlink for the host routes")?;
        Ok(RouteKeeper {
            tx,
            view,
            thread: Some(thread),
        })
    }

    /// Hands over a new node table (returns at once).
    pub fn set_peers(&self, peers: Vec<Peer>) {
        let _ = self.tx.send(Msg::Peers(peers));
    }

    /// How each node is reached, as last decided.
    pub fn reach(&self) -> Vec<NodeReach> {
        self.view.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Removes twill's routes and ends the thread.
    pub fn stop(&mut self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RouteKeeper {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `net.ipv4.ip_forward` on: the host forwards the pods' packets between
/// the host port and the underlay.
fn enable_forwarding() -> Result<()> {
    let path = "/proc/sys/net/ipv4/ip_forward";
    let on = std::fs::read_to_string(path).is_ok_and(|v| v.trim() == "1");
    if !on {
        std::fs::write(path, "1").with_context(|| format!("enabling IPv4 forwarding ({path})"))?;
        tracing::info!("enabled IPv4 forwarding: the host routes the pods' packets to other nodes");
    }
    Ok(())
}

struct Keeper {
    nl: Netlink,
    routing: Routing,
    port: u16,
    state: Arc<SwitchState>,
    view: Arc<Mutex<Vec<NodeReach>>>,
    peers: Vec<Peer>,
    /// Failed netlink calls, reported once a minute.
    failures: LogRate,
    /// The last decisions logged, to log only changes.
    reported: Vec<NodeReach>,
    /// The remote table last published to the switch.
    published: Option<Vec<RemoteNode>>,
}

impl Keeper {
    fn run(mut self, rx: &mpsc::Receiver<Msg>) {
        let every = match self.routing {
            Routing::Bgp => CHECK_BGP_EVERY,
            Routing::Backend(_) => CHECK_EVERY,
        };
        let mut next_check = Instant::now() + every;
        loop {
            let wait = next_check.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(Msg::Peers(p)) => {
                    // Only the latest table matters.
                    self.peers = p;
                    let mut stop = false;
                    while let Ok(m) = rx.try_recv() {
                        match m {
                            Msg::Peers(p) => self.peers = p,
                            Msg::Stop => stop = true,
                        }
                    }
                    if stop {
                        break;
                    }
                }
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => next_check = Instant::now() + every,
            }
            if let Err(e) = self.sync() {
                if let Some(s) = self.failures.hit(Instant::now()) {
                    tracing::warn!(error = %format!("{e:#}"), suppressed = s.count,
                        "cannot update the host routes to other nodes; retrying");
                }
            }
        }
        self.remove_all();
    }

    /// Twill's routes in the main table.
    fn ours(&self) -> Result<Vec<RouteV4>> {
        Ok(self
            .nl
            .routes_v4()
            .context("listing routes")?
            .into_iter()
            .filter(|r| r.protocol == RTPROT_TWILL)
            .collect())
    }

    /// Routes what is wanted, publishes the remote table, removes what is
    /// not wanted.
    fn sync(&mut self) -> Result<()> {
        // BGP mode decides by BIRD's routes alone (and checks every
        // second): the addresses are dumped only for the backends' rules.
        let connected: Vec<(u32, Ipv4Net)> = match self.routing {
            Routing::Bgp => Vec::new(),
            Routing::Backend(_) => self
                .nl
                .all_addresses_v4()
                .context("listing addresses")?
                .into_iter()
                .filter_map(|(i, a, p)| Some((i, Ipv4Net::new(a, p).ok()?.trunc())))
                .filter(|(_, n)| n.prefix_len() < 32)
                .collect(),
        };
        let routes = self.nl.routes_v4().context("listing routes")?;
        let mut remotes = Vec::with_capacity(self.peers.len());
        let mut reach = Vec::with_capacity(self.peers.len());
        let mut wanted = Vec::new();
        for p in &self.peers {
            let (via, how, reason) = match self.routing {
                Routing::Bgp => learned(&routes, p.subnet),
                Routing::Backend(b) => self.by_backend(&b, p, &connected, &routes, &mut wanted),
            };
            if let Some(via) = via {
                remotes.push(super::plan::remote_node(p, self.port, via)?);
            }
            reach.push(NodeReach {
                node: p.name.clone(),
                subnet: p.subnet,
                public_ip: p.public_ip,
                via: how,
                reason,
            });
        }
        // Published only when it changed: the periodic checks mostly find
        // nothing new, and each publication is a new snapshot the workers
        // load.
        if self.published.as_ref() != Some(&remotes) {
            self.state.set_remotes(&remotes);
            self.published = Some(remotes);
        }
        for r in routes.iter().filter(|r| r.protocol == RTPROT_TWILL) {
            if !wanted.contains(r) {
                self.remove(r);
            }
        }
        self.report(&reach);
        if let Ok(mut v) = self.view.lock() {
            *v = reach;
        }
        Ok(())
    }

    /// How `p` is reached under the flannel backend's rules, its route
    /// installed (and added to `wanted`) when it is routed.
    fn by_backend(
        &self,
        b: &Backend,
        p: &Peer,
        connected: &[(u32, Ipv4Net)],
        routes: &[RouteV4],
        wanted: &mut Vec<RouteV4>,
    ) -> (Option<Via>, Reach, String) {
        match decide(b, p.public_ip, connected) {
            Decision::Tunnel(why) => (Some(Via::Tunnel), Reach::Tunnel, why.to_owned()),
            Decision::Unreachable(why) => (None, Reach::None, why),
            Decision::Route { oif, reason } => {
                let want = RouteV4 {
                    dst: p.subnet.network(),
                    prefix_len: p.subnet.prefix_len(),
                    gateway: Some(p.public_ip),
                    oif: Some(oif),
                    onlink: false,
                    protocol: RTPROT_TWILL,
                };
                match self.install(&want, routes) {
                    Ok(None) => {
                        wanted.push(want);
                        (Some(Via::Host), Reach::Route, reason)
                    }
                    // Someone else's route to the subnet decides.
                    Ok(Some(foreign)) => (Some(Via::Host), Reach::Route, foreign),
                    Err(e) => (
                        None,
                        Reach::None,
                        format!("{reason}; the route failed: {e:#}"),
                    ),
                }
            }
        }
    }

    /// Makes `want` present. `Ok(Some(why))` when a route to the subnet
    /// that twill did not install is there instead (left alone).
    fn install(&self, want: &RouteV4, routes: &[RouteV4]) -> Result<Option<String>> {
        let same_dst = routes
            .iter()
            .filter(|r| r.dst == want.dst && r.prefix_len == want.prefix_len);
        let mut ours_differs = None;
        for r in same_dst {
            if r == want {
                return Ok(None);
            }
            if r.protocol != RTPROT_TWILL {
                return Ok(Some(format!(
                    "a route to {}/{} exists that twill did not install (via {:?}, proto {}): \
                     left alone, and it decides where these packets go",
                    r.dst, r.prefix_len, r.gateway, r.protocol
                )));
            }
            ours_differs = Some(r.clone());
        }
        if let Some(old) = ours_differs {
            self.nl
                .delete_exact_route_v4(&old)
                .with_context(|| format!("removing twill's old route {old:?}"))?;
        }
        self.nl.create_route_v4(want).with_context(|| {
            format!(
                "adding {}/{} via {:?}",
                want.dst, want.prefix_len, want.gateway
            )
        })?;
        Ok(None)
    }

    fn remove(&mut self, r: &RouteV4) {
        if let Err(e) = self.nl.delete_exact_route_v4(r) {
            if let Some(s) = self.failures.hit(Instant::now()) {
                tracing::warn!(route = ?r, error = %e, suppressed = s.count,
                    "cannot remove twill's route to a node no longer in the table");
            }
        }
    }

    /// Removes every route of twill's (at a clean stop).
    fn remove_all(&mut self) {
        match self.ours() {
            Ok(rs) => {
                for r in &rs {
                    self.remove(r);
                }
                if !rs.is_empty() {
                    tracing::info!(routes = rs.len(), "removed the host routes to other nodes");
                }
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot list routes to remove them")
            }
        }
    }

    /// Logs each node whose reach changed.
    fn report(&mut self, reach: &[NodeReach]) {
        for r in reach.iter().filter(|r| !self.reported.contains(r)) {
            if r.via == Reach::None {
                tracing::error!(node = %r.node, subnet = %r.subnet, public_ip = %r.public_ip,
                    reason = %r.reason, "node unreachable: its pods' packets are dropped");
            } else {
                tracing::info!(node = %r.node, subnet = %r.subnet, public_ip = %r.public_ip,
                    via = ?r.via, reason = %r.reason, "node reached");
            }
        }
        self.reported = reach.to_vec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    const VX: Backend = Backend::Vxlan {
        vni: 1,
        port: 8472,
        direct_routing: false,
    };
    const DR: Backend = Backend::Vxlan {
        vni: 1,
        port: 8472,
        direct_routing: true,
    };

    #[test]
    fn host_gw_routes_connected_nodes_and_refuses_the_others_naming_them() {
        let connected = [(2, net("192.168.1.0/24")), (3, net("10.0.0.0/8"))];
        let near = Ipv4Addr::new(192, 168, 1, 7);
        assert!(matches!(
            decide(&Backend::HostGw, near, &connected),
            Decision::Route { oif: 2, .. }
        ));
        match decide(&Backend::HostGw, Ipv4Addr::new(172, 16, 0, 1), &connected) {
            Decision::Unreachable(why) => assert!(why.contains("172.16.0.1"), "{why}"),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn direct_routing_routes_the_nodes_on_a_connected_network_and_tunnels_the_rest() {
        let connected = [(2, net("192.168.1.0/24"))];
        assert!(matches!(
            decide(&DR, Ipv4Addr::new(192, 168, 1, 9), &connected),
            Decision::Route { oif: 2, .. }
        ));
        assert!(matches!(
            decide(&DR, Ipv4Addr::new(192, 168, 2, 9), &connected),
            Decision::Tunnel(_)
        ));
        // Without DirectRouting everything is tunnelled.
        assert!(matches!(
            decide(&VX, Ipv4Addr::new(192, 168, 1, 9), &connected),
            Decision::Tunnel(_)
        ));
    }
}
