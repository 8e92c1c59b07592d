//! Pod attachments: a TAP per pod, moved into the pod's namespace under the
//! requested name and configured there (MAC, MTU, address, default route),
//! then handed to the dataplane as a port.
//!
//! Every attachment is recorded in the state file ([`super::store`]) before
//! the caller hears of it, and removed from it before a detach is
//! acknowledged. On start, [`Pods::restore`] reconciles the file with the
//! system: an attachment whose namespace still exists (the same namespace:
//! same inode) gets its interface re-created with the same name, address and
//! MAC — the TAP died with the previous agent, and the pod, which still
//! exists, would otherwise be cut off while its runtime believes it attached;
//! one whose namespace is gone is released, since no interface can hold its
//! address any more and no runtime will find it to DEL.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{Context, Result};
use encap::Cidr;
use vswitch::core::{Allowance, PortConfig, PortId, PortKind};
use vswitch::dataplane::Dataplane;
use vswitch::sys::{netlink, netns::NetNs};

use super::ipam::Ipam;
use super::pod_error::{check_ifname, open_netns, PodError};
use super::store::{Record, Store};
use super::{mac_for_ip, Agent, NodeInfo, HOST_PORT};
use crate::api::{cni_id, AttachRequest, Attachment, CniAttachment, PodRef, PortSecurity};

#[derive(Debug)]
struct Pod {
    /// The dataplane port; `None` while the interface could not be
    /// re-created after a restart (the address stays reserved).
    port: Option<PortId>,
    att: Attachment,
    ip: Ipv4Addr,
    netns_inode: u64,
}

impl Pod {
    fn record(&self) -> Record {
        Record {
            id: self.att.id.clone(),
            netns: self.att.netns.clone(),
            netns_inode: self.netns_inode,
            ifname: self.att.ifname.clone(),
            ip: self.ip,
            cni: self.att.cni.clone(),
            port_security: self.att.port_security.clone(),
            pod: self.att.pod.clone(),
        }
    }
}

/// The attachments of this node.
#[derive(Debug)]
pub(super) struct Pods {
    subnet: Cidr,
    ipam: Ipam,
    by_id: BTreeMap<String, Pod>,
    store: Store,
}

/// The attachment `rec` describes, as the API shows it.
fn attachment(info: &NodeInfo, rec: &Record) -> Attachment {
    Attachment {
        id: rec.id.clone(),
        netns: rec.netns.clone(),
        ifname: rec.ifname.clone(),
        mac: mac_for_ip(rec.ip).to_string(),
        ip: format!("{}/{}", rec.ip, info.subnet.prefix()),
        gateway: info.gateway.to_string(),
        mtu: info.mtu,
        cni: rec.cni.clone(),
        port_security: rec.port_security.clone(),
        pod: rec.pod.clone(),
    }
}

impl Pods {
    /// The attachments recorded in `state_dir`, reconciled with the system
    /// (see the module's documentation), and the file rewritten to match.
    pub(super) fn restore(info: &NodeInfo, dp: &Dataplane, state_dir: &Path) -> Result<Pods> {
        let mut pods = Pods {
            subnet: info.subnet,
            ipam: Ipam::new(info.subnet),
            by_id: BTreeMap::new(),
            store: Store::new(state_dir),
        };
        let Some(loaded) = pods.store.load()? else {
            return Ok(pods);
        };
        if loaded.subnet != info.subnet.to_string() {
            tracing::warn!(old = %loaded.subnet, new = %info.subnet, released = loaded.records.len(),
                "the node's subnet changed: every recorded attachment is released");
            pods.save()?;
            return Ok(pods);
        }
        let (mut restored, mut released, mut down) = (0usize, 0usize, 0usize);
        for rec in loaded.records {
            let why_not = if check_ifname(&rec.ifname).is_err() {
                Some("bad interface name".to_owned())
            } else if pods.by_id.contains_key(&rec.id) {
                Some("duplicate id".to_owned())
            } else {
                pods.ipam
                    .allocate(Some(rec.ip))
                    .err()
                    .map(|e| e.to_string())
            };
            if let Some(why) = why_not {
                tracing::warn!(id = %rec.id, ip = %rec.ip, why, "dropping an invalid attachment record");
                released += 1;
                continue;
            }
            let ns = match NetNs::open(&rec.netns) {
                Ok(ns) if ns.inode().ok() == Some(rec.netns_inode) => Some(ns),
                Ok(_) => {
                    tracing::info!(id = %rec.id, netns = %rec.netns, ip = %rec.ip,
                        "the path names another namespace now: releasing the attachment");
                    None
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::InvalidInput
                    ) =>
                {
                    tracing::info!(id = %rec.id, netns = %rec.netns, ip = %rec.ip,
                        "the namespace is gone: releasing the attachment");
                    None
                }
                Err(e) => {
                    // Not proof that the pod is gone: keep its address.
                    tracing::warn!(id = %rec.id, netns = %rec.netns, error = %e,
                        "cannot open the namespace; keeping the address reserved");
                    down += 1;
                    pods.insert(info, &rec, None);
                    continue;
                }
            };
            let Some(ns) = ns else {
                pods.ipam.release(rec.ip);
                released += 1;
                continue;
            };
            let port = pods.free_port()?;
            let allow = allowance(&rec.port_security).unwrap_or_default();
            match plumb(info, dp, &ns, &rec.netns, &rec.ifname, port, rec.ip, allow) {
                Ok(()) => {
                    restored += 1;
                    pods.insert(info, &rec, Some(port));
                }
                Err(e) => {
                    tracing::warn!(id = %rec.id, netns = %rec.netns, error = format!("{e:#}"),
                        "cannot re-create the interface; the address stays reserved (DEL releases it)");
                    down += 1;
                    pods.insert(info, &rec, None);
                }
            }
        }
        pods.save()?;
        tracing::info!(restored, released, down, file = %pods.store.path().display(),
            "attachments reconciled");
        Ok(pods)
    }

    fn insert(&mut self, info: &NodeInfo, rec: &Record, port: Option<PortId>) {
        self.by_id.insert(
            rec.id.clone(),
            Pod {
                port,
                att: attachment(info, rec),
                ip: rec.ip,
                netns_inode: rec.netns_inode,
            },
        );
    }

    fn records(&self) -> Vec<Record> {
        self.by_id.values().map(Pod::record).collect()
    }

    fn save(&self) -> Result<(), PodError> {
        Ok(self.store.save(self.subnet, &self.records())?)
    }

    fn free_port(&self) -> Result<PortId> {
        let used: BTreeSet<u16> = self
            .by_id
            .values()
            .filter_map(|p| p.port)
            .map(|p| p.0)
            .collect();
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
        let allow = allowance(&req.port_security)?;
        let id = match (&req.cni, &req.id) {
            (Some(c), given) => {
                let want = cni_id(&c.network, &c.container_id, &req.ifname);
                if let Some(given) = given.as_ref().filter(|g| **g != want) {
                    return Err(PodError::IdMismatch {
                        given: given.clone(),
                        want,
                    }
                    .into());
                }
                want
            }
            (None, Some(id)) => id.clone(),
            (None, None) => format!("{}:{}", req.netns, req.ifname),
        };
        if let Some(p) = self.by_id.get(&id) {
            if p.att.netns != req.netns || p.att.ifname != req.ifname {
                return Err(PodError::IdTaken {
                    id,
                    netns: p.att.netns.clone(),
                    ifname: p.att.ifname.clone(),
                }
                .into());
            }
            if p.port.is_some() {
                return Ok(p.att.clone());
            }
            return self.replumb(info, dp, &id);
        }
        if let Some(p) = self
            .by_id
            .values()
            .find(|p| p.att.netns == req.netns && p.att.ifname == req.ifname)
        {
            return Err(PodError::AlreadyAttached {
                netns: req.netns.clone(),
                ifname: req.ifname.clone(),
                id: p.att.id.clone(),
            }
            .into());
        }
        let ns = open_netns(&req.netns)?;
        let netns_inode = ns
            .inode()
            .with_context(|| format!("reading the inode of {:?}", req.netns))?;
        let port = self.free_port()?;
        let ip = self.ipam.allocate(req.ip).map_err(PodError::from)?;
        let rec = Record {
            id: id.clone(),
            netns: req.netns.clone(),
            netns_inode,
            ifname: req.ifname.clone(),
            ip,
            cni: req.cni.clone(),
            port_security: req.port_security.clone(),
            pod: req.pod.clone(),
        };
        // Recorded before the interface exists and long before the caller
        // hears of it: an acknowledged address is never forgotten.
        let mut recs = self.records();
        recs.push(rec.clone());
        if let Err(e) = self.store.save(self.subnet, &recs) {
            self.ipam.release(ip);
            return Err(PodError::from(e).into());
        }
        match plumb(info, dp, &ns, &req.netns, &req.ifname, port, ip, allow) {
            Ok(()) => {
                self.insert(info, &rec, Some(port));
                tracing::info!(id = %id, ip = %ip, netns = %req.netns, "pod attached");
                self.by_id
                    .get(&id)
                    .map(|p| p.att.clone())
                    .context("attachment vanished")
            }
            Err(e) => {
                self.ipam.release(ip);
                if let Err(se) = self.save() {
                    // The file still holds the address: the next start
                    // reconciles it; nothing is handed out twice, since
                    // every later save rewrites the file from memory.
                    tracing::warn!(%ip, error = %se, "cannot record a failed attach's release");
                }
                Err(e)
            }
        }
    }

    /// Tries again to create the interface of a restored attachment.
    fn replumb(&mut self, info: &NodeInfo, dp: &Dataplane, id: &str) -> Result<Attachment> {
        let port = self.free_port()?;
        let p = self
            .by_id
            .get_mut(id)
            .ok_or_else(|| PodError::NotFound(id.to_owned()))?;
        let ns = open_netns(&p.att.netns)?;
        if ns.inode().ok() != Some(p.netns_inode) {
            return Err(PodError::CheckFailed {
                id: id.to_owned(),
                why: format!(
                    "{:?} is no longer the namespace attached: DEL it first",
                    p.att.netns
                ),
            }
            .into());
        }
        let allow = allowance(&p.att.port_security)?;
        plumb(
            info,
            dp,
            &ns,
            &p.att.netns,
            &p.att.ifname,
            port,
            p.ip,
            allow,
        )?;
        p.port = Some(port);
        tracing::info!(id, ip = %p.ip, "pod interface re-created");
        Ok(p.att.clone())
    }

    /// The attachments on `dead` ports (whose TAP the dataplane stopped
    /// polling) whose network namespace is gone: it cannot be opened, or
    /// the path names another namespace now. A dead port whose namespace
    /// still exists is left alone (a CNI DEL or `twill pod detach` decides).
    pub(super) fn vanished(&self, dead: &BTreeSet<u16>) -> Vec<String> {
        self.by_id
            .values()
            .filter(|p| p.port.is_some_and(|port| dead.contains(&port.0)))
            .filter(|p| {
                NetNs::open(&p.att.netns).map_or(true, |ns| ns.inode().ok() != Some(p.netns_inode))
            })
            .map(|p| p.att.id.clone())
            .collect()
    }

    /// The Kubernetes pods attached here, with their addresses.
    pub(super) fn identities(&self) -> Vec<(PodRef, Ipv4Addr)> {
        self.by_id
            .values()
            .filter_map(|p| Some((p.att.pod.clone()?, p.ip)))
            .collect()
    }

    pub(super) fn detach(&mut self, dp: &Dataplane, id: &str) -> Result<bool> {
        if !self.by_id.contains_key(id) {
            return Ok(false);
        }
        // Recorded first: if that fails nothing changed and the caller may
        // try again; once it succeeded the address is free after any crash.
        let recs: Vec<Record> = self
            .by_id
            .values()
            .filter(|p| p.att.id != id)
            .map(Pod::record)
            .collect();
        self.store
            .save(self.subnet, &recs)
            .map_err(PodError::from)?;
        let Some(p) = self.by_id.remove(id) else {
            return Ok(false);
        };
        if let Some(port) = p.port {
            match dp.remove_port(port) {
                // Closing the fds deletes the interface in the pod's namespace.
                Ok(taps) => drop(taps),
                Err(e) => tracing::warn!(id, error = %e, "detaching the port from the dataplane"),
            }
        }
        self.ipam.release(p.ip);
        tracing::info!(id, ip = %p.att.ip, "pod detached");
        Ok(true)
    }

    /// Closes every pod's TAP (on shutdown) and keeps the records: the next
    /// agent re-creates the interfaces of the pods that still exist.
    pub(super) fn close_all(&mut self, dp: &Dataplane) {
        for p in self.by_id.values_mut() {
            if let Some(port) = p.port.take() {
                let _ = dp.remove_port(port);
            }
        }
    }

    /// The attachments that have a port, with it (`twill ports`).
    pub(super) fn ported(&self) -> Vec<(PortId, Attachment)> {
        let ported = self
            .by_id
            .values()
            .filter_map(|p| Some((p.port?, p.att.clone())));
        ported.collect()
    }

    /// The port of attachment `id`, if attached.
    pub(super) fn port_of(&self, id: &str) -> Option<Option<PortId>> {
        self.by_id.get(id).map(|p| p.port)
    }

    pub(super) fn list(&self) -> Vec<Attachment> {
        self.by_id.values().map(|p| p.att.clone()).collect()
    }

    fn check(&self, info: &NodeInfo, dp: &Dataplane, id: &str) -> Result<Attachment> {
        let p = self
            .by_id
            .get(id)
            .ok_or_else(|| PodError::NotFound(id.to_owned()))?;
        let fail = |why: String| -> anyhow::Error {
            PodError::CheckFailed {
                id: id.to_owned(),
                why,
            }
            .into()
        };
        let Some(port) = p.port else {
            return Err(fail(
                "its interface could not be re-created after the agent restarted".into(),
            ));
        };
        let ns = NetNs::open(&p.att.netns)
            .map_err(|e| fail(format!("cannot open {:?}: {e}", p.att.netns)))?;
        if ns.inode().ok() != Some(p.netns_inode) {
            return Err(fail(format!(
                "{:?} is not the namespace attached any more",
                p.att.netns
            )));
        }
        let (ifname, mac, ip, prefix) = (
            p.att.ifname.clone(),
            mac_for_ip(p.ip),
            p.ip,
            info.subnet.prefix(),
        );
        ns.run(move || -> Result<(), String> {
            let nl = netlink::Netlink::new().map_err(|e| e.to_string())?;
            let link = nl
                .link(&ifname)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no interface {ifname} in the namespace"))?;
            if link.mac != Some(mac) {
                return Err(format!("{ifname} has MAC {:?}, not {mac}", link.mac));
            }
            if !link.up {
                return Err(format!("{ifname} is down"));
            }
            let addrs = nl.addresses_v4(link.index).map_err(|e| e.to_string())?;
            if !addrs.contains(&(ip, prefix)) {
                return Err(format!("{ifname} does not hold {ip}/{prefix}"));
            }
            Ok(())
        })
        .map_err(|e| fail(format!("cannot enter the namespace: {e}")))?
        .map_err(fail)?;
        let stats = dp.stats().context("reading the dataplane's ports")?;
        if stats.ports.iter().any(|s| s.id == port.0 && s.dead) {
            return Err(fail("its TAP failed and is no longer polled".into()));
        }
        Ok(p.att.clone())
    }
}

/// Creates and configures the interface and adds its port; on error
/// everything it made is gone (the TAP's netdev dies with its fd).
/// The switch's form of an attachment's port-security exceptions; an
/// error names the first entry that is no unicast MAC or no IPv4 prefix.
fn allowance(ps: &PortSecurity) -> Result<Allowance, PodError> {
    let macs = ps
        .allowed_macs
        .iter()
        .map(|m| match m.parse::<encap::MacAddr>() {
            Ok(mac) if mac.is_unicast() => Ok(mac),
            _ => Err(PodError::BadPortSecurity(format!(
                "allowed MAC {m:?} is not a unicast MAC such as 0a:58:0a:f4:01:c8"
            ))),
        })
        .collect::<Result<_, _>>()?;
    let ips = ps
        .allowed_ips
        .iter()
        .map(|c| {
            let net: Option<ipnet::Ipv4Net> = c.parse().ok();
            net.and_then(|n| Cidr::new(n.network(), n.prefix_len()))
                .ok_or_else(|| {
                    PodError::BadPortSecurity(format!(
                        "allowed IP {c:?} is not an IPv4 prefix such as 10.244.1.200/32"
                    ))
                })
        })
        .collect::<Result<_, _>>()?;
    Ok(Allowance { macs, ips })
}

#[allow(clippy::too_many_arguments)]
fn plumb(
    info: &NodeInfo,
    dp: &Dataplane,
    ns: &NetNs,
    netns: &str,
    ifname: &str,
    port: PortId,
    ip: Ipv4Addr,
    allow: Allowance,
) -> Result<()> {
    let mac = mac_for_ip(ip);
    let queues = super::create_tap(&format!("twp{}", port.0), dp.workers())
        .context("creating the pod's TAP")?;
    let tap = &queues[0];
    netlink::move_link_to_netns(tap.created_ifindex(), ns, ifname)
        .with_context(|| format!("moving {} into {netns:?} as {ifname}", tap.name()))?;
    let (ifname, prefix, gateway, mtu) = (
        ifname.to_owned(),
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
        netlink::add_default_route_v4(gateway, Some(idx)).context("adding the default route")?;
        Ok(())
    })
    .context("entering the pod's namespace")??;
    dp.add_port_allowing(
        port,
        queues,
        PortConfig {
            kind: PortKind::Pod,
            mac,
            ip,
        },
        allow,
    )
    .context("attaching the port to the dataplane")?;
    Ok(())
}

// The CNI plugin's requests (kept apart from `mod.rs`'s attach/detach).
impl Agent {
    /// Verifies an attachment against the system (see [`crate::api::Request::Check`]).
    pub fn check(&self, id: &str) -> Result<Attachment> {
        let pods = self
            .pods
            .lock()
            .map_err(|_| anyhow::anyhow!("pod table poisoned"))?;
        pods.check(&self.info, &self.dataplane, id)
    }

    /// Releases every CNI attachment of `network` not in `valid`; returns
    /// the ids released. Tries them all; fails if any failed.
    pub fn gc(&self, network: &str, valid: &[CniAttachment]) -> Result<Vec<String>> {
        let mut pods = self
            .pods
            .lock()
            .map_err(|_| anyhow::anyhow!("pod table poisoned"))?;
        let keep: BTreeSet<(&str, &str)> = valid
            .iter()
            .map(|v| (v.container_id.as_str(), v.ifname.as_str()))
            .collect();
        let stale: Vec<String> = pods
            .by_id
            .values()
            .filter(|p| {
                p.att.cni.as_ref().is_some_and(|c| {
                    c.network == network
                        && !keep.contains(&(c.container_id.as_str(), p.att.ifname.as_str()))
                })
            })
            .map(|p| p.att.id.clone())
            .collect();
        let mut released = Vec::new();
        let mut errors = Vec::new();
        for id in stale {
            match pods.detach(&self.dataplane, &id) {
                Ok(_) => released.push(id),
                Err(e) => errors.push(format!("{id}: {e:#}")),
            }
        }
        if !errors.is_empty() {
            anyhow::bail!(
                "GC released {} attachment(s) but failed for: {}",
                released.len(),
                errors.join("; ")
            );
        }
        tracing::info!(network, released = released.len(), "CNI GC");
        Ok(released)
    }
}
