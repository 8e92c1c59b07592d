//! What the control side configures in a switch: the node's settings and
//! its ports. Plain data; the switch reads it from [`super::Tables`].

use std::net::Ipv4Addr;
use std::time::Duration;

use encap::{Cidr, MacAddr};

use super::mac_table::MacTableConfig;

/// How frames cross to other nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// VXLAN with this VNI: the inner Ethernet frame goes from this node's
    /// VTEP MAC to the remote node's (flannel's vxlan backend).
    Vxlan {
        /// VXLAN network identifier.
        vni: u32,
    },
    /// The bare IPv4 packet as the UDP payload (flannel's udp backend).
    Udp,
}

/// The switch's fixed configuration.
#[derive(Debug, Clone)]
pub struct SwitchConfig {
    /// This node's pod subnet.
    pub subnet: Cidr,
    /// The gateway address (the subnet's .1), owned by the router.
    pub gateway: Ipv4Addr,
    /// The whole cluster network.
    pub cluster: Cidr,
    /// The router's MAC, which is also this node's VTEP MAC.
    pub router_mac: MacAddr,
    /// The tunnel.
    pub backend: Backend,
    /// The largest inner IPv4 packet the tunnel carries: the underlay MTU
    /// minus the backend's whole overhead (vxlan's 50 bytes count the inner
    /// Ethernet header, udp's 28 do not carry one), i.e. the pods' MTU.
    pub tunnel_mtu: usize,
    /// MAC learning limits and aging.
    pub mac: MacTableConfig,
    /// Learned neighbors kept at most.
    pub neighbor_capacity: usize,
    /// Learned neighbors' aging.
    pub neighbor_aging: Duration,
    /// Seed of the flow hash (outer source port, worker choice).
    pub flow_seed: u32,
}

/// What a port is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    /// A pod's TAP.
    Pod,
    /// The host-side TAP: traffic for the outside leaves the segment here.
    Host,
}

/// An attached port: its MAC and address are known (the agent assigned them)
/// and become static entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortConfig {
    /// What it is.
    pub kind: PortKind,
    /// The MAC of the interface at the far end (in the pod or the host).
    pub mac: MacAddr,
    /// Its address on the subnet.
    pub ip: Ipv4Addr,
}
