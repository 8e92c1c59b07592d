//! What brings Service traffic that arrives at the host into the switch:
//! NodePorts (nftables DNAT of `public_ip:<nodePort>` to the gateway, see
//! [`vswitch::sys::nft`]) and external and load-balancer IPs (a host route
//! per address via the gateway on the host port). Both are derived from the
//! published service table; only what changed is touched, and only what
//! twill installed is ever removed.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context, Result};
use vswitch::core::service::{Proto, Scope, ServiceTable};
use vswitch::sys::netlink;
use vswitch::sys::nft::NodePortSteering;

/// The host-side steering of one node.
#[derive(Debug)]
pub struct HostSteering {
    public_ip: Ipv4Addr,
    gateway: Ipv4Addr,
    host_port: String,
    /// Installed with the first NodePort.
    nodeports: Option<NodePortSteering>,
    /// External and load-balancer IPs routed to the gateway.
    routes: BTreeSet<Ipv4Addr>,
}

/// What a service table asks of the host.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    /// NodePorts by protocol.
    pub tcp: BTreeSet<u16>,
    /// UDP NodePorts.
    pub udp: BTreeSet<u16>,
    /// Addresses to route into the switch.
    pub routes: BTreeSet<Ipv4Addr>,
}

impl Wanted {
    /// NodePorts are the external frontends at the gateway; every other
    /// external frontend's address is routed to the gateway.
    pub fn of(table: &ServiceTable, gateway: Ipv4Addr) -> Wanted {
        let mut w = Wanted::default();
        for f in table.ports().flat_map(|p| p.spec.frontends.iter()) {
            match (f.scope, f.ip) {
                (Scope::External, IpAddr::V4(ip)) if ip == gateway => {
                    match f.proto {
                        Proto::Tcp => w.tcp.insert(f.port),
                        Proto::Udp => w.udp.insert(f.port),
                    };
                }
                (Scope::External, IpAddr::V4(ip)) => {
                    w.routes.insert(ip);
                }
                _ => {}
            }
        }
        w
    }
}

impl HostSteering {
    /// Nothing installed yet.
    pub fn new(public_ip: Ipv4Addr, gateway: Ipv4Addr, host_port: &str) -> HostSteering {
        HostSteering {
            public_ip,
            gateway,
            host_port: host_port.to_owned(),
            nodeports: None,
            routes: BTreeSet::new(),
        }
    }

    /// Makes the host steer what `w` asks for.
    pub fn sync(&mut self, w: &Wanted) -> Result<()> {
        if self.nodeports.is_some() || !w.tcp.is_empty() || !w.udp.is_empty() {
            let s = match self.nodeports.as_mut() {
                Some(s) => s,
                None => self.nodeports.insert(
                    NodePortSteering::install(self.public_ip, self.gateway)
                        .context("installing the nftables table `ip twill` for NodePorts")?,
                ),
            };
            s.sync(&w.tcp, &w.udp)
                .context("updating the NodePorts in nftables")?;
        }
        if w.routes != self.routes {
            // (`self.routes` holds only what twill installed.)
            let nl = netlink::Netlink::new().context("opening netlink")?;
            let oif = nl
                .link_index(&self.host_port)
                .context("finding the host port")?;
            for &ip in self.routes.difference(&w.routes) {
                if let Err(e) = nl.delete_route_v4(ip, 32) {
                    tracing::warn!(%ip, error = %e, "cannot remove the route of an external IP");
                }
            }
            // A route to the address that twill did not install is left
            // alone (and the address is not steered here).
            let foreign: BTreeSet<Ipv4Addr> = nl
                .routes_v4()
                .context("listing routes")?
                .into_iter()
                .filter(|r| r.prefix_len == 32)
                .map(|r| r.dst)
                .filter(|ip| !self.routes.contains(ip))
                .collect();
            let mut installed: BTreeSet<Ipv4Addr> =
                self.routes.intersection(&w.routes).copied().collect();
            for &ip in w.routes.difference(&self.routes) {
                if foreign.contains(&ip) {
                    tracing::warn!(%ip, "a route to this external IP exists and is not twill's: left alone");
                    continue;
                }
                nl.add_route_v4(&netlink::RouteV4 {
                    dst: ip,
                    prefix_len: 32,
                    gateway: Some(self.gateway),
                    oif,
                    onlink: false,
                    protocol: 0,
                })
                .with_context(|| format!("routing external IP {ip} to the switch"))?;
                installed.insert(ip);
            }
            self.routes = installed;
        }
        Ok(())
    }

    /// Removes everything installed (at a clean stop).
    pub fn remove(&mut self) {
        if let Some(s) = self.nodeports.take() {
            if let Err(e) = s.remove() {
                tracing::warn!(error = %e, "cannot remove the nftables table `ip twill`");
            }
        }
        let _ = self.sync(&Wanted::default());
    }
}
