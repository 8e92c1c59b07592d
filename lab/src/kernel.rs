//! A Linux node configured exactly as flannel's vxlan backend configures one:
//! the reference peer for interop tests and the kernel baseline of benchmarks.
//!
//! In the node's namespace: `flannel.1` (vxlan, VNI, dstport, local public IP,
//! nolearning, on the underlay device) holding `subnet.0/32`; bridge `cni0`
//! holding `subnet.1/len`; pods on veth pairs enslaved to `cni0`; per peer a
//! permanent neighbor entry, an FDB entry and an onlink route. The underlay
//! veth gets tx checksum offload off (see [`crate::finish_checksums`]) so that
//! what leaves the node is what a NIC would put on the wire, unless every
//! peer is a kernel node ([`KernelVxlanNode::new_among_kernels`]).

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};
use ipnet::Ipv4Net;

use crate::link::{finish_checksums, unique_ifname};
use crate::netns::Netns;
use crate::node::nth_host;

/// Name of the vxlan device, as flannel names it for VNI 1.
pub const VXLAN_DEV: &str = "flannel.1";
/// Name of the pods' bridge, as flannel's CNI config names it.
pub const BRIDGE_DEV: &str = "cni0";

/// A flannel-style kernel vxlan node living in an existing namespace (which
/// must already hold `public_ip` on its underlay device). Not a guard: its
/// devices disappear with the namespace.
#[derive(Debug)]
pub struct KernelVxlanNode {
    ns: String,
    public_ip: Ipv4Addr,
    subnet: Ipv4Net,
    vtep_mac: String,
    mtu: u32,
    next_host: AtomicU32,
}

impl KernelVxlanNode {
    /// Builds the node's devices in `ns`: `flannel.1` (id `vni`, dstport
    /// `port`, MTU underlay − 50), `cni0` and IP forwarding.
    pub fn new(
        ns: &Netns,
        public_ip: Ipv4Addr,
        subnet: Ipv4Net,
        vni: u32,
        port: u16,
    ) -> Result<KernelVxlanNode> {
        KernelVxlanNode::build(ns, public_ip, subnet, vni, port, true)
    }

    /// As [`KernelVxlanNode::new`], but the underlay veth keeps its checksum
    /// offload, so that inner TCP/UDP leaves with unfinished (partial)
    /// checksums, as from a node of a container-in-container cluster. A
    /// kernel peer trusts them; twill recognises them and passes them on
    /// with `NEEDS_CSUM` (see `tests/interop_linux.rs`). The benchmark's
    /// anchor, at the kernel's full speed.
    pub fn new_among_kernels(
        ns: &Netns,
        public_ip: Ipv4Addr,
        subnet: Ipv4Net,
        vni: u32,
        port: u16,
    ) -> Result<KernelVxlanNode> {
        KernelVxlanNode::build(ns, public_ip, subnet, vni, port, false)
    }

    fn build(
        ns: &Netns,
        public_ip: Ipv4Addr,
        subnet: Ipv4Net,
        vni: u32,
        port: u16,
        finish_inner_checksums: bool,
    ) -> Result<KernelVxlanNode> {
        let underlay = ns.iface_with_addr(public_ip)?;
        // The underlay veth stands for a NIC, which finishes inner checksums.
        if finish_inner_checksums {
            finish_checksums(ns, &underlay)?;
        }
        let underlay_mtu = link_mtu(ns, &underlay)?;
        let mtu = underlay_mtu.saturating_sub(50);
        let (vni_s, port_s, ip_s, mtu_s) = (
            vni.to_string(),
            port.to_string(),
            public_ip.to_string(),
            mtu.to_string(),
        );
        ns.ip(&[
            "link",
            "add",
            VXLAN_DEV,
            "mtu",
            &mtu_s,
            "type",
            "vxlan",
            "id",
            &vni_s,
            "dstport",
            &port_s,
            "local",
            &ip_s,
            "nolearning",
            "dev",
            &underlay,
        ])
        .with_context(|| format!("creating {VXLAN_DEV} in {}", ns.name()))?;
        let net0 = format!("{}/32", subnet.network());
        ns.ip(&["addr", "add", &net0, "dev", VXLAN_DEV])?;
        ns.ip(&["link", "set", VXLAN_DEV, "up"])?;
        let vtep_mac = ns.link_mac(VXLAN_DEV)?;

        ns.ip(&["link", "add", BRIDGE_DEV, "mtu", &mtu_s, "type", "bridge"])?;
        let gw = format!("{}/{}", nth_host(subnet, 1), subnet.prefix_len());
        ns.ip(&["addr", "add", &gw, "dev", BRIDGE_DEV])?;
        ns.ip(&["link", "set", BRIDGE_DEV, "up"])?;
        ns.sysctl("net.ipv4.ip_forward", "1")?;
        Ok(KernelVxlanNode {
            ns: ns.name().to_owned(),
            public_ip,
            subnet,
            vtep_mac,
            mtu,
            next_host: AtomicU32::new(2),
        })
    }

    /// The MAC of `flannel.1` (what peers put in their neighbor/FDB entries).
    pub fn vtep_mac(&self) -> &str {
        &self.vtep_mac
    }

    /// The node's underlay address.
    pub fn public_ip(&self) -> Ipv4Addr {
        self.public_ip
    }

    /// The node's pod subnet.
    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    /// The gateway address on `cni0` (subnet .1).
    pub fn gateway(&self) -> Ipv4Addr {
        nth_host(self.subnet, 1)
    }

    /// The pods' MTU (underlay − 50).
    pub fn mtu(&self) -> u32 {
        self.mtu
    }

    /// Name of the node's namespace.
    pub fn netns(&self) -> &str {
        &self.ns
    }

    fn ip(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", self.ns.as_str()];
        all.extend_from_slice(args);
        crate::cmd::ip(&all)
    }

    /// A new pod: namespace with `eth0` (next address from .2, MTU, default
    /// route via .1) on a veth whose other end is enslaved to `cni0`.
    pub fn add_pod(&self) -> Result<KernelPod> {
        let n = self.next_host.fetch_add(1, Ordering::Relaxed);
        let ip = nth_host(self.subnet, n);
        if !self.subnet.contains(&ip) || ip == self.subnet.broadcast() {
            bail!("subnet {} has no address left for a pod", self.subnet);
        }
        let ns = Netns::new("twl-kpod")?;
        let host_if = unique_ifname("veth");
        let mtu = self.mtu.to_string();
        ns.ip(&[
            "link", "add", "eth0", "mtu", &mtu, "type", "veth", "peer", "name", &host_if, "mtu",
            &mtu, "netns", &self.ns,
        ])
        .context("creating the pod's veth pair")?;
        self.ip(&["link", "set", &host_if, "master", BRIDGE_DEV])?;
        self.ip(&["link", "set", &host_if, "up"])?;
        let addr = format!("{ip}/{}", self.subnet.prefix_len());
        ns.ip(&["addr", "add", &addr, "dev", "eth0"])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        ns.ip(&[
            "route",
            "add",
            "default",
            "via",
            &self.gateway().to_string(),
        ])?;
        let mac = ns.link_mac("eth0")?;
        Ok(KernelPod {
            ns,
            ip,
            mac,
            host_if,
        })
    }

    /// Routes `peer_subnet` to a peer exactly as flannel's vxlan backend does:
    /// `ip neigh replace <peer .0> lladdr MAC dev flannel.1 nud permanent`,
    /// `bridge fdb replace MAC dev flannel.1 dst PEER_IP self permanent`,
    /// `ip route replace <peer_subnet> via <peer .0> dev flannel.1 onlink`.
    pub fn add_peer(
        &self,
        peer_subnet: Ipv4Net,
        peer_public_ip: Ipv4Addr,
        peer_vtep_mac: &str,
    ) -> Result<()> {
        let net0 = peer_subnet.network().to_string();
        self.ip(&[
            "neigh",
            "replace",
            &net0,
            "lladdr",
            peer_vtep_mac,
            "dev",
            VXLAN_DEV,
            "nud",
            "permanent",
        ])?;
        let mut bridge = std::process::Command::new("bridge");
        bridge
            .args([
                "-n",
                &self.ns,
                "fdb",
                "replace",
                peer_vtep_mac,
                "dev",
                VXLAN_DEV,
            ])
            .args(["dst", &peer_public_ip.to_string(), "self", "permanent"]);
        crate::cmd::run_checked(bridge, crate::cmd::SHORT)?;
        self.ip(&[
            "route",
            "replace",
            &peer_subnet.to_string(),
            "via",
            &net0,
            "dev",
            VXLAN_DEV,
            "onlink",
        ])?;
        Ok(())
    }
}

fn link_mtu(ns: &Netns, ifname: &str) -> Result<u32> {
    let out = ns.ip(&["-j", "link", "show", "dev", ifname])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("parsing `ip -j link`")?;
    v.get(0)
        .and_then(|l| l.get("mtu"))
        .and_then(|m| m.as_u64())
        .and_then(|m| u32::try_from(m).ok())
        .with_context(|| format!("no MTU for {ifname}"))
}

/// A pod of a [`KernelVxlanNode`]: its namespace (deleted on drop, which also
/// removes the veth pair) and its addresses.
#[derive(Debug)]
pub struct KernelPod {
    ns: Netns,
    ip: Ipv4Addr,
    mac: String,
    host_if: String,
}

impl KernelPod {
    /// The pod's namespace.
    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    /// The pod's address.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The MAC of the pod's `eth0`.
    pub fn mac(&self) -> &str {
        &self.mac
    }

    /// The node-side end of the veth pair (a port of `cni0`).
    pub fn host_if(&self) -> &str {
        &self.host_if
    }
}
