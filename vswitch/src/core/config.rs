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
    /// No tunnel (flannel's host-gw): every remote node is reached
    /// [`crate::core::Via::Host`], and nothing is accepted from the tunnel.
    HostGw,
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
    /// The connection table of Service NAT: size and timeouts.
    pub conntrack: ConntrackConfig,
    /// How many ICMP errors the router sends (Linux's limits by default).
    pub icmp: super::ratelimit::IcmpLimits,
    /// Storm control of the pod ports.
    pub storm: super::ratelimit::StormLimits,
}

/// The connection table's size and timeouts, with Linux conntrack's
/// defaults (`nf_conntrack_*` sysctls, Documentation/networking/
/// nf_conntrack-sysctl.rst, <https://docs.kernel.org/networking/nf_conntrack-sysctl.html>).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConntrackConfig {
    /// Connections kept at most (`nf_conntrack_max`; 262144 is its value
    /// on hosts with 16 GiB or more).
    pub max_entries: usize,
    /// `nf_conntrack_tcp_timeout_syn_sent`: 120 s.
    pub tcp_syn_sent: Duration,
    /// `nf_conntrack_tcp_timeout_syn_recv`: 60 s.
    pub tcp_syn_recv: Duration,
    /// `nf_conntrack_tcp_timeout_established`: 432000 s (5 days).
    pub tcp_established: Duration,
    /// `nf_conntrack_tcp_timeout_fin_wait`: 120 s.
    pub tcp_fin_wait: Duration,
    /// `nf_conntrack_tcp_timeout_close_wait`: 60 s.
    pub tcp_close_wait: Duration,
    /// `nf_conntrack_tcp_timeout_last_ack`: 30 s.
    pub tcp_last_ack: Duration,
    /// `nf_conntrack_tcp_timeout_time_wait`: 120 s.
    pub tcp_time_wait: Duration,
    /// `nf_conntrack_tcp_timeout_close`: 10 s.
    pub tcp_close: Duration,
    /// `nf_conntrack_udp_timeout`: 30 s, until a reply is seen.
    pub udp: Duration,
    /// `nf_conntrack_udp_timeout_stream`: 120 s, once replied.
    pub udp_stream: Duration,
    /// How long one full sweep of expired connections takes: the table is
    /// swept in [`crate::core::service::conntrack::SHARDS`] steps spread over
    /// this interval.
    pub sweep_interval: Duration,
}

impl Default for ConntrackConfig {
    fn default() -> ConntrackConfig {
        let s = Duration::from_secs;
        ConntrackConfig {
            max_entries: 262_144,
            tcp_syn_sent: s(120),
            tcp_syn_recv: s(60),
            tcp_established: s(432_000),
            tcp_fin_wait: s(120),
            tcp_close_wait: s(60),
            tcp_last_ack: s(30),
            tcp_time_wait: s(120),
            tcp_close: s(10),
            udp: s(30),
            udp_stream: s(120),
            sweep_interval: s(1),
        }
    }
}

/// What a pod port may send besides its own MAC and address: the explicit
/// exceptions of port security (OVN's `port_security` addresses, Calico's
/// `allowedSourcePrefixes`), for a pod that routes or bridges for others.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowance {
    /// Further source MACs (learned on the port like any bridged MAC).
    pub macs: Vec<MacAddr>,
    /// Further IPv4 source prefixes (IPv4 packets and ARP senders).
    pub ips: Vec<Cidr>,
}

impl Allowance {
    /// Whether `mac` is one of the further MACs.
    pub fn allows_mac(&self, mac: MacAddr) -> bool {
        self.macs.contains(&mac)
    }

    /// Whether `ip` is inside one of the further prefixes.
    pub fn allows_ip(&self, ip: Ipv4Addr) -> bool {
        self.ips.iter().any(|c| c.contains(ip))
    }

    /// No exception at all.
    pub fn is_empty(&self) -> bool {
        self.macs.is_empty() && self.ips.is_empty()
    }
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
