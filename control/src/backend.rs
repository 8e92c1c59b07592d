//! The backends between nodes, flannel's `vxlan`, `udp` and `host-gw`: what
//! each is called, the port a node listens on when net-conf names none,
//! and the bytes its encapsulation adds to every packet. [`BackendType::spec`]
//! is the one table of these facts; everything else reads it.
//!
//! The values are flannel's:
//! - `pkg/backend/vxlan/vxlan.go`, `RegisterNetwork`: `VNI` defaults to 1 and
//!   `Port` to 0, which leaves the kernel's default VXLAN port, 8472.
//! - `pkg/backend/udp/udp_amd64.go`, `RegisterNetwork`: `Port` defaults to 8285.
//! - `encapOverhead` in `pkg/backend/vxlan/vxlan_network.go` (50) and
//!   `pkg/backend/udp/udp_network_amd64.go` (28).
//! - `pkg/backend/hostgw/hostgw.go`: no tunnel, no port; the pods get the
//!   external interface's MTU, and a remote subnet is a route via the
//!   node's public IP.
//!
//! This module knows no document and no error: reading a backend from
//! net-conf, with its checks, is [`crate::netconf`]'s.

use std::fmt;

use serde::{Deserialize, Serialize};

/// flannel's default VXLAN network identifier (`defaultVNI`).
pub const DEFAULT_VNI: u32 = 1;
/// The largest VNI: VXLAN carries 24 bits.
pub const MAX_VNI: u32 = 0x00ff_ffff;

/// The kind of tunnel between nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendType {
    /// VXLAN (flannel's `vxlan`).
    Vxlan,
    /// Bare IP in UDP (flannel's `udp`).
    Udp,
    /// No encapsulation: routes via the other nodes' addresses on one L2
    /// network (flannel's `host-gw`).
    #[serde(rename = "host-gw")]
    HostGw,
}

/// What one backend is: a row of [`BackendType::spec`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendSpec {
    /// flannel's name (`Backend.Type` in net-conf, `BackendType` in a lease).
    pub name: &'static str,
    /// The UDP port every node listens on when net-conf gives none (0:
    /// the backend has no tunnel).
    pub default_port: u16,
    /// Bytes of encapsulation per packet: the pod MTU is the underlay MTU
    /// minus this.
    pub overhead: u32,
}

impl BackendType {
    /// The table of the backends.
    pub const fn spec(self) -> BackendSpec {
        match self {
            BackendType::Vxlan => BackendSpec {
                name: "vxlan",
                // The Linux kernel's default VXLAN port (IANA's is 4789).
                default_port: 8472,
                // Outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14.
                overhead: 50,
            },
            BackendType::Udp => BackendSpec {
                name: "udp",
                default_port: 8285,
                // Outer IPv4 20 + UDP 8.
                overhead: 28,
            },
            BackendType::HostGw => BackendSpec {
                name: "host-gw",
                default_port: 0,
                overhead: 0,
            },
        }
    }

    /// flannel's name: `"vxlan"`, `"udp"` or `"host-gw"`.
    pub const fn as_str(self) -> &'static str {
        self.spec().name
    }

    /// Bytes of encapsulation per packet (50 for vxlan, 28 for udp).
    pub const fn overhead(self) -> u32 {
        self.spec().overhead
    }

    /// The backend with flannel's defaults.
    pub const fn default_backend(self) -> Backend {
        let port = self.spec().default_port;
        match self {
            BackendType::Vxlan => Backend::Vxlan {
                vni: DEFAULT_VNI,
                port,
                direct_routing: false,
            },
            BackendType::Udp => Backend::Udp { port },
            BackendType::HostGw => Backend::HostGw,
        }
    }
}

impl fmt::Display for BackendType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `Backend` object of net-conf, with defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// VXLAN: the VNI and the UDP port every node listens on.
    Vxlan {
        /// VXLAN network identifier (24 bits).
        vni: u32,
        /// UDP port.
        port: u16,
        /// flannel's `DirectRouting`: a node whose public IP is on this
        /// node's own network is reached by a route, as with host-gw, and
        /// only the others by VXLAN.
        direct_routing: bool,
    },
    /// IP in UDP.
    Udp {
        /// UDP port.
        port: u16,
    },
    /// Routes via the nodes' public IPs, no tunnel.
    HostGw,
}

impl Backend {
    /// Which backend.
    pub const fn kind(&self) -> BackendType {
        match self {
            Backend::Vxlan { .. } => BackendType::Vxlan,
            Backend::Udp { .. } => BackendType::Udp,
            Backend::HostGw => BackendType::HostGw,
        }
    }

    /// The UDP port every node listens on (0 for host-gw, which has none).
    pub const fn port(&self) -> u16 {
        match *self {
            Backend::Vxlan { port, .. } | Backend::Udp { port } => port,
            Backend::HostGw => 0,
        }
    }

    /// Whether nodes are joined by a tunnel (all but host-gw).
    pub const fn has_tunnel(&self) -> bool {
        !matches!(self, Backend::HostGw)
    }

    /// Whether some remote subnets are reached by a route via the node's
    /// public IP: all of them with host-gw, those on this node's network
    /// with vxlan's `DirectRouting`.
    pub const fn routes_directly(&self) -> bool {
        matches!(
            self,
            Backend::HostGw
                | Backend::Vxlan {
                    direct_routing: true,
                    ..
                }
        )
    }

    /// The VNI, for vxlan.
    pub const fn vni(&self) -> Option<u32> {
        match *self {
            Backend::Vxlan { vni, .. } => Some(vni),
            Backend::Udp { .. } | Backend::HostGw => None,
        }
    }

    /// Bytes of encapsulation per packet (the kind's [`BackendSpec::overhead`]).
    pub const fn overhead(&self) -> u32 {
        self.kind().overhead()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_flannels() {
        assert_eq!(
            BackendType::Vxlan.default_backend(),
            Backend::Vxlan {
                vni: 1,
                port: 8472,
                direct_routing: false
            }
        );
        assert_eq!(BackendType::HostGw.default_backend(), Backend::HostGw);
        assert_eq!(BackendType::HostGw.overhead(), 0);
        assert_eq!(
            BackendType::Udp.default_backend(),
            Backend::Udp { port: 8285 }
        );
        assert_eq!(BackendType::Vxlan.overhead(), 50);
        assert_eq!(Backend::Udp { port: 1 }.overhead(), 28);
        for t in [BackendType::Vxlan, BackendType::Udp, BackendType::HostGw] {
            assert_eq!(t.default_backend().kind(), t);
            assert_eq!(t.to_string(), t.spec().name);
            assert_eq!(
                serde_json::to_string(&t).ok(),
                Some(format!("\"{}\"", t.as_str()))
            );
        }
    }
}
