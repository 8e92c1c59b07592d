//! An underlay LAN for more than two nodes: a hub namespace holding a kernel
//! bridge, and one veth from the bridge to each member namespace. The hub
//! itself has an address on the bridge, so that services every node reaches
//! (the controller, etcd) run there.

use std::net::Ipv4Addr;

use anyhow::{Context, Result};

use crate::link::{addr_up, unique_ifname, Veth};
use crate::netns::Netns;

/// The LAN's hub: its namespace owns the bridge, so dropping the [`Lan`]
/// removes the bridge and every member's veth with it.
#[derive(Debug)]
pub struct Lan {
    hub: Netns,
    bridge: String,
    hub_ip: Ipv4Addr,
    prefix: u8,
}

impl Lan {
    /// A hub namespace (`PREFIX-…`) with bridge `br0` holding `hub_ip/prefix`.
    pub fn new(prefix_name: &str, hub_ip: Ipv4Addr, prefix: u8) -> Result<Lan> {
        let hub = Netns::new(prefix_name)?;
        let bridge = "br0".to_owned();
        hub.ip(&["link", "add", &bridge, "type", "bridge"])
            .context("creating the LAN bridge")?;
        addr_up(&hub, &bridge, hub_ip, prefix)?;
        Ok(Lan {
            hub,
            bridge,
            hub_ip,
            prefix,
        })
    }

    /// Plugs `member` into the LAN with address `ip`; returns its interface.
    pub fn join(&self, member: &Netns, ip: Ipv4Addr) -> Result<String> {
        let name = unique_ifname("lan");
        let veth = Veth::create(&self.hub, &name, member, &name)?;
        self.hub
            .ip(&["link", "set", &veth.a_if, "master", &self.bridge, "up"])
            .with_context(|| format!("adding {} to the LAN bridge", veth.a_if))?;
        addr_up(member, &veth.b_if, ip, self.prefix)?;
        Ok(veth.b_if)
    }

    /// The hub's namespace (services run here).
    pub fn hub(&self) -> &Netns {
        &self.hub
    }

    /// The hub's address on the LAN.
    pub fn hub_ip(&self) -> Ipv4Addr {
        self.hub_ip
    }
}
