//! The node's plan: everything the agent derives from its configuration
//! before it touches the system. The gateway (the subnet's .1) and the
//! host port's address (.2), the pod and tunnel MTUs, the switch's
//! settings, the tunnel port. It is a pure function of the configuration
//! and of the two values that take I/O to learn (the underlay MTU, the VTEP
//! MAC), which the caller passes in; [`super::Agent::start`] then only does
//! I/O with the plan. The backends' overheads come from control's one
//! table ([`control::BackendSpec`]).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use control::node::MIN_POD_MTU;
use control::{Backend as NetBackend, BackendType, NodeConfig, Peer};
use encap::{Cidr, MacAddr};
use ipnet::Ipv4Net;
use vswitch::core::{Backend, MacTableConfig, PortConfig, PortKind, RemoteNode, SwitchConfig};

/// Learned neighbours (IP to MAC) the switch keeps at most.
const NEIGHBOR_CAPACITY: usize = 4096;
/// How long a learned neighbour stays without being seen again.
const NEIGHBOR_AGING: Duration = Duration::from_secs(300);

/// Everything the agent derived from its configuration at start-up.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// Node name.
    pub name: String,
    /// Underlay address.
    pub public_ip: Ipv4Addr,
    /// Pod subnet.
    pub subnet: Cidr,
    /// Cluster network.
    pub cluster: Cidr,
    /// The subnet's .1.
    pub gateway: Ipv4Addr,
    /// Router and VTEP MAC.
    pub vtep_mac: MacAddr,
    /// "vxlan" or "udp".
    pub backend: &'static str,
    /// Tunnel UDP port.
    pub port: u16,
    /// Pod and host-port MTU.
    pub mtu: u32,
    /// Underlay MTU it was derived from.
    pub underlay_mtu: u32,
    /// The host port's name.
    pub host_port: String,
    /// The API socket.
    pub socket: PathBuf,
}

/// The MAC of an interface holding `ip`: 0a:58 followed by the address, as
/// Kubernetes' CNI plugins derive it, so that a MAC tells which pod it is.
pub fn mac_for_ip(ip: Ipv4Addr) -> MacAddr {
    let o = ip.octets();
    MacAddr([0x0a, 0x58, o[0], o[1], o[2], o[3]])
}

/// What a node is made of, before anything is created.
#[derive(Debug, Clone)]
pub struct NodePlan {
    /// What `twill status` reports and the pod code reads: name, subnet,
    /// gateway, VTEP MAC, backend, tunnel port, pod MTU, underlay MTU…
    pub info: NodeInfo,
    /// The host port as the switch sees it: the subnet's .2, with a MAC
    /// derived from it as for pods.
    pub host: PortConfig,
    /// The tunnel backend.
    pub backend: BackendType,
    /// Bytes the backend's encapsulation adds to every packet.
    pub overhead: u32,
    /// The switch's settings; `switch.tunnel_mtu` is the largest inner
    /// IPv4 packet a tunnel carries.
    pub switch: SwitchConfig,
}

/// A configuration the node cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// A control plane has not given the node its subnet and net-conf.
    #[error("the node has no subnet or net-conf yet")]
    NotLeased,
    /// A prefix the switch cannot hold (`Cidr::new` refused it).
    #[error("bad prefix {0}")]
    BadPrefix(Ipv4Net),
    /// A subnet without room for the gateway and the host port.
    #[error("subnet {subnet} is too small: the gateway (.1) and the host port (.2) need a /30 or larger")]
    SubnetTooSmall {
        /// The node's subnet.
        subnet: Ipv4Net,
    },
    /// An underlay MTU that leaves pods less than IPv4's minimum.
    #[error(
        "underlay MTU {underlay_mtu} leaves less than {MIN_POD_MTU} bytes for pods \
         after the {backend} backend's {overhead} bytes (it must be at least {})",
        MIN_POD_MTU + overhead
    )]
    UnderlayMtuTooSmall {
        /// The underlay MTU (configured or detected).
        underlay_mtu: u32,
        /// The backend.
        backend: BackendType,
        /// Its overhead.
        overhead: u32,
    },
}

impl NodePlan {
    /// The plan for `cfg` (which must hold a subnet and a net-conf: a
    /// static configuration, or one completed by [`NodeConfig::leased`]),
    /// on an underlay of `underlay_mtu` bytes, with `vtep_mac` as the
    /// router's and VTEP's MAC.
    pub fn new(
        cfg: &NodeConfig,
        underlay_mtu: u32,
        vtep_mac: MacAddr,
    ) -> Result<NodePlan, PlanError> {
        let (Some(subnet), Some(net_conf)) = (cfg.subnet, cfg.net_conf.as_ref()) else {
            return Err(PlanError::NotLeased);
        };
        let too_small = PlanError::SubnetTooSmall { subnet };
        let net = cidr(subnet)?;
        let cluster = cidr(net_conf.network)?;
        let (Some(gateway), Some(host_ip)) = (net.nth(1), net.nth(2)) else {
            return Err(too_small);
        };
        if host_ip == net.broadcast() {
            return Err(too_small);
        }

        let backend = net_conf.backend.kind();
        // In BGP mode nothing is encapsulated: pods get the underlay's MTU.
        let overhead = if cfg.bgp.is_some() {
            0
        } else {
            net_conf.backend.overhead()
        };
        let mtu = underlay_mtu
            .checked_sub(overhead)
            .filter(|m| *m >= MIN_POD_MTU)
            .ok_or(PlanError::UnderlayMtuTooSmall {
                underlay_mtu,
                backend,
                overhead,
            })?;
        let switch = SwitchConfig {
            subnet: net,
            gateway,
            cluster,
            router_mac: vtep_mac,
            backend: match net_conf.backend {
                NetBackend::Vxlan { vni, .. } => Backend::Vxlan { vni },
                NetBackend::Udp { .. } => Backend::Udp,
                NetBackend::HostGw => Backend::HostGw,
            },
            // The pod MTU is the largest inner packet: the overhead counts
            // every byte the tunnel adds (for vxlan, the inner Ethernet
            // header too).
            tunnel_mtu: mtu as usize,
            mac: MacTableConfig::default(),
            neighbor_capacity: NEIGHBOR_CAPACITY,
            neighbor_aging: NEIGHBOR_AGING,
            conntrack: vswitch::core::config::ConntrackConfig::default(),
            icmp: Default::default(),
            storm: Default::default(),
        };
        let info = NodeInfo {
            name: cfg.name.clone(),
            public_ip: cfg.public_ip,
            subnet: net,
            cluster,
            gateway,
            vtep_mac,
            backend: backend.as_str(),
            port: net_conf.backend.port(),
            mtu,
            underlay_mtu,
            host_port: cfg.host_port.clone(),
            socket: cfg.socket.clone(),
        };
        Ok(NodePlan {
            info,
            host: PortConfig {
                kind: PortKind::Host,
                mac: mac_for_ip(host_ip),
                ip: host_ip,
            },
            backend,
            overhead,
            switch,
        })
    }

    /// Where the tunnel sockets listen: the public IP and the backend's port.
    pub fn tunnel_addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.info.public_ip, self.info.port)
    }
}

/// The switch's table of the other nodes, tunnelled to on `port` (the
/// nodes some are routed to are the route keeper's, `hostroutes`).
pub fn remote_nodes(peers: &[Peer], port: u16) -> Result<Vec<RemoteNode>, PlanError> {
    peers
        .iter()
        .map(|p| remote_node(p, port, vswitch::core::Via::Tunnel))
        .collect()
}

/// The switch's entry for `p`, reached `via`, tunnelled to on `port`.
pub fn remote_node(p: &Peer, port: u16, via: vswitch::core::Via) -> Result<RemoteNode, PlanError> {
    Ok(RemoteNode {
        subnet: cidr(p.subnet)?,
        endpoint: SocketAddrV4::new(p.public_ip, port),
        vtep_mac: p.vtep_mac.unwrap_or(MacAddr::ZERO),
        via,
    })
}

/// `n` as the switch's prefix type.
fn cidr(n: Ipv4Net) -> Result<Cidr, PlanError> {
    Cidr::new(n.network(), n.prefix_len()).ok_or(PlanError::BadPrefix(n))
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
