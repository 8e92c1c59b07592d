//! Pod attachments: a TAP per pod, moved into the pod's namespace under the
//! requested name and configured there (MAC, MTU, address, default route),
//! then handed to the dataplane as a port.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use encap::Cidr;
use vswitch::core::{PortConfig, PortId, PortKind};
use vswitch::dataplane::Dataplane;
use vswitch::sys::{netlink, netns::NetNs};

use super::ipam::Ipam;
use super::{mac_for_ip, NodeInfo, HOST_PORT};
use crate::api::{AttachRequest, Attachment};

#[derive(Debug)]
struct Pod {
    port: PortId,
    att: Attachment,
    ip: std::net::Ipv4Addr,
}

/// The attachments of this node.
#[derive(Debug)]
pub(super) struct Pods {
    ipam: Ipam,
    by_id: BTreeMap<String, Pod>,
}

/// A usable Linux interface name: 1 to 15 bytes, no '/', ':' or white space,
/// not "." or "..".
fn check_ifname(n: &str) -> Result<()> {
    if n.is_empty()
        || n.len() > 15
        || n == "."
        || n == ".."
        || n.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        bail!("invalid interface name {n:?} (1 to 15 characters, no '/', ':' or spaces)");
    }
    Ok(())
}

impl Pods {
    pub(super) fn new(subnet: Cidr) -> Pods {
        Pods {
            ipam: Ipam::new(subnet),
            by_id: BTreeMap::new(),
        }
    }

    fn free_port(&self) -> Result<PortId> {
        let used: std::collections::BTreeSet<u16> = self.by_id.values().map(|p| p.port.0).collect();
        (HOST_PORT.0 + 1..u16::MAX)
            .find(|i| !used.contains(i))
            .map(PortId)
            .context("no free port id")
    }

    pub(super) fn attach(
        &mut self,
        info: &NodeInfo,
        dp: &Dataplane,
        req: &AttachRequest,
    ) -> Result<Attachment> {
        check_ifname(&req.ifname)?;
        let id = req
            .id
            .clone()
            .unwrap_or_else(|| format!("{}:{}", req.netns, req.ifname));
        if let Some(p) = self.by_id.get(&id) {
            if p.att.netns != req.netns || p.att.ifname != req.ifname {
                bail!(
                    "attachment id {id:?} is already used for {}:{}",
                    p.att.netns,
                    p.att.ifname
                );
            }
            return Ok(p.att.clone());
        }
        if let Some(p) = self
            .by_id
            .values()
            .find(|p| p.att.netns == req.netns && p.att.ifname == req.ifname)
        {
            bail!(
                "{}:{} is already attached as {:?}",
                req.netns,
                req.ifname,
                p.att.id
            );
        }
        let ns = NetNs::open(&req.netns)
            .with_context(|| format!("opening network namespace {:?}", req.netns))?;
        let port = self.free_port()?;
        let ip = self.ipam.allocate(req.ip)?;
        match self.plumb(info, dp, &ns, req, port, ip) {
            Ok(att) => {
                let att = Attachment {
                    id: id.clone(),
                    ..att
                };
                self.by_id.insert(
                    id,
                    Pod {
                        port,
                        att: att.clone(),
                        ip,
                    },
                );
                tracing::info!(id = %att.id, ip = %att.ip, netns = %att.netns, "pod attached");
                Ok(att)
            }
            Err(e) => {
                self.ipam.release(ip);
                Err(e)
            }
        }
    }

    /// Creates and configures the interface; on error everything it made
    /// is gone (the TAP's netdev dies with its fd).
    fn plumb(
        &self,
        info: &NodeInfo,
        dp: &Dataplane,
        ns: &NetNs,
        req: &AttachRequest,
        port: PortId,
        ip: std::net::Ipv4Addr,
    ) -> Result<Attachment> {
        let mac = mac_for_ip(ip);
        let queues = super::create_tap(&format!("twp{}", port.0), dp.workers())
            .context("creating the pod's TAP")?;
        let tap = &queues[0];
        netlink::move_link_to_netns(tap.created_ifindex(), ns, &req.ifname).with_context(|| {
            format!(
                "moving {} into {:?} as {}",
                tap.name(),
                req.netns,
                req.ifname
            )
        })?;
        let (ifname, prefix, gateway, mtu) = (
            req.ifname.clone(),
            info.subnet.prefix(),
            info.gateway,
            info.mtu,
        );
        ns.run(move || -> Result<()> {
            netlink::configure_link(
                "lo",
                &netlink::LinkConfig {
                    mac: None,
                    mtu: None,
                    addrs: vec![],
                    up: true,
                },
            )
            .context("bringing lo up")?;
            let idx = netlink::configure_link(
                &ifname,
                &netlink::LinkConfig {
                    mac: Some(mac),
                    mtu: Some(mtu),
                    addrs: vec![(ip, prefix)],
                    up: true,
                },
            )
            .with_context(|| format!("configuring {ifname}"))?;
            netlink::add_default_route_v4(gateway, Some(idx))
                .context("adding the default route")?;
            Ok(())
        })
        .context("entering the pod's namespace")??;
        dp.add_port(
            port,
            queues,
            PortConfig {
                kind: PortKind::Pod,
                mac,
                ip,
            },
        )
        .context("attaching the port to the dataplane")?;
        Ok(Attachment {
            id: String::new(),
            netns: req.netns.clone(),
            ifname: req.ifname.clone(),
            mac: mac.to_string(),
            ip: format!("{ip}/{prefix}"),
            gateway: gateway.to_string(),
            mtu,
        })
    }

    pub(super) fn detach(&mut self, dp: &Dataplane, id: &str) -> Result<bool> {
        let Some(p) = self.by_id.remove(id) else {
            return Ok(false);
        };
        let tap = dp
            .remove_port(p.port)
            .context("detaching the port from the dataplane")?;
        drop(tap); // closing the fd deletes the interface in the pod's namespace
        self.ipam.release(p.ip);
        tracing::info!(id, ip = %p.att.ip, "pod detached");
        Ok(true)
    }

    pub(super) fn detach_all(&mut self, dp: &Dataplane) {
        let ids: Vec<String> = self.by_id.keys().cloned().collect();
        for id in ids {
            let _ = self.detach(dp, &id);
        }
    }

    pub(super) fn list(&self) -> Vec<Attachment> {
        self.by_id.values().map(|p| p.att.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names() {
        for ok in ["eth0", "net1", "a", "abcdefghijklmno"] {
            assert!(check_ifname(ok).is_ok(), "{ok}");
        }
        for bad in ["", "abcdefghijklmnop", "a/b", "a:b", "a b", ".", ".."] {
            assert!(check_ifname(bad).is_err(), "{bad}");
        }
    }
}
