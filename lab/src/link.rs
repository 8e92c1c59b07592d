//! Links between lab namespaces: veth pairs and the underlay "wire" between
//! two nodes. Devices are created directly inside their namespaces (`ip -n`),
//! so nothing ever appears in the caller's own namespace.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result};

use crate::netns::Netns;

static LINK_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A short interface name `PREFIX<N>` unique within this process (≤ 15 bytes
/// for prefixes of up to 8 bytes).
pub fn unique_ifname(prefix: &str) -> String {
    let n = LINK_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{n}")
}

/// A veth pair with one end in each of two namespaces. It is not a guard:
/// the pair disappears with either namespace.
#[derive(Debug, Clone)]
pub struct Veth {
    /// Namespace of end A.
    pub a_ns: String,
    /// Interface name of end A.
    pub a_if: String,
    /// Namespace of end B.
    pub b_ns: String,
    /// Interface name of end B.
    pub b_if: String,
}

impl Veth {
    /// Creates `a_if` in `a` paired with `b_if` in `b`, both down and unaddressed.
    pub fn create(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<Veth> {
        a.ip(&[
            "link",
            "add",
            a_if,
            "type",
            "veth",
            "peer",
            "name",
            b_if,
            "netns",
            b.name(),
        ])
        .with_context(|| format!("creating veth {}:{a_if} <-> {}:{b_if}", a.name(), b.name()))?;
        Ok(Veth {
            a_ns: a.name().to_owned(),
            a_if: a_if.to_owned(),
            b_ns: b.name().to_owned(),
            b_if: b_if.to_owned(),
        })
    }
}

/// Adds `addr/prefix` to `ifname` in `ns` and brings it up.
pub fn addr_up(ns: &Netns, ifname: &str, addr: Ipv4Addr, prefix: u8) -> Result<()> {
    ns.ip(&["addr", "add", &format!("{addr}/{prefix}"), "dev", ifname])?;
    ns.ip(&["link", "set", ifname, "up"])?;
    Ok(())
}

/// Makes `ifname` in `ns` finish checksums in software before it sends
/// (`ethtool -K IFNAME tx off`), as a NIC does on a real wire.
///
/// A veth with checksum offload hands CHECKSUM_PARTIAL packets to its peer
/// unfinished: the checksum field holds only the pseudo-header sum. A kernel
/// receiver trusts such packets; a userspace receiver reading the tunnel's UDP
/// socket (twill) sees the unfinished bytes of the inner packet. Kernel
/// senders on a lab underlay therefore need this; twill builds its packets
/// complete.
pub fn finish_checksums(ns: &Netns, ifname: &str) -> Result<()> {
    ns.run("ethtool", &["-K", ifname, "tx", "off"])
        .with_context(|| {
            format!(
                "turning tx checksum offload off on {ifname} in {}",
                ns.name()
            )
        })?;
    Ok(())
}

/// The underlay between two nodes: one veth pair, addressed and up, MTU 1500.
#[derive(Debug, Clone)]
pub struct Underlay {
    /// The pair itself.
    pub veth: Veth,
    /// Address of end A (node A's public IP).
    pub a_ip: Ipv4Addr,
    /// Address of end B (node B's public IP).
    pub b_ip: Ipv4Addr,
    /// Prefix length of both addresses.
    pub prefix: u8,
}

impl Underlay {
    /// Joins `a` and `b` by a veth pair holding `a_ip/prefix` and `b_ip/prefix`.
    pub fn pair(
        a: &Netns,
        b: &Netns,
        a_ip: Ipv4Addr,
        b_ip: Ipv4Addr,
        prefix: u8,
    ) -> Result<Underlay> {
        let name = unique_ifname("ul");
        let veth = Veth::create(a, &name, b, &name)?;
        addr_up(a, &veth.a_if, a_ip, prefix)?;
        addr_up(b, &veth.b_if, b_ip, prefix)?;
        Ok(Underlay {
            veth,
            a_ip,
            b_ip,
            prefix,
        })
    }

    /// Interface name on node A's side.
    pub fn a_if(&self) -> &str {
        &self.veth.a_if
    }

    /// Interface name on node B's side.
    pub fn b_if(&self) -> &str {
        &self.veth.b_if
    }
}
