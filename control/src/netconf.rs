//! flannel's `net-conf.json` (the value of `<prefix>/config` in etcd, or
//! `/etc/kube-flannel/net-conf.json`), read with flannel's semantics.
//!
//! The rules are copied from flannel's source:
//! - `pkg/subnet/config.go`, `ParseConfig`: keys are matched as Go's
//!   `encoding/json` does (case-insensitively, unknown keys ignored); a
//!   missing `Backend` object means the `udp` backend (`parseBackendType`).
//! - `pkg/subnet/config.go`, `CheckNetworkConfig` (IPv4 half): the defaults
//!   and checks of `SubnetLen`, `SubnetMin` and `SubnetMax`.
//! - `pkg/backend/manager.go`, `GetBackend`: the backend type is lower-cased.
//! - `pkg/backend/vxlan/vxlan.go`, `RegisterNetwork`: a `Port` of 0 leaves
//!   the default, `DirectRouting` (a bool) routes to nodes on this node's
//!   own network instead of encapsulating; the backends' defaults are
//!   [`crate::backend`]'s table.
//! - `pkg/backend/hostgw/hostgw.go`: `host-gw` takes no options.
//!
//! IPv6 keys (`EnableIPv6`, `IPv6Network`, …), `Networks`, and backend
//! options twill has no use for (`GBP`, `Learning`, `MTU`…) are ignored, as
//! are unknown keys. This module does no I/O.

use std::iter::FusedIterator;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::backend::{Backend, BackendType, DEFAULT_VNI, MAX_VNI};
use crate::error::{ConfigError, Doc};
use crate::gojson::Obj;

impl FromStr for BackendType {
    type Err = ConfigError;

    /// Case-insensitive, as flannel's `GetBackend` lower-cases the type.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "vxlan" => Ok(BackendType::Vxlan),
            "udp" => Ok(BackendType::Udp),
            "host-gw" => Ok(BackendType::HostGw),
            _ => Err(ConfigError::UnsupportedBackend {
                doc: Doc::NetConf,
                ty: s.to_owned(),
            }),
        }
    }
}

impl Backend {
    /// Checks the VNI and port of a hand-built value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Backend::Vxlan { vni, .. } = *self {
            if vni > MAX_VNI {
                return Err(ConfigError::VniOutOfRange {
                    doc: Doc::NetConf,
                    vni: i64::from(vni),
                });
            }
        }
        if self.has_tunnel() && self.port() == 0 {
            return Err(ConfigError::PortOutOfRange {
                backend: self.kind(),
                port: 0,
            });
        }
        Ok(())
    }

    /// Reads the `Backend` value of net-conf (`None`: the key is absent).
    fn from_json(v: Option<&Value>) -> Result<Backend, ConfigError> {
        // parseBackendType: only an absent Backend defaults to udp. A `null`
        // Backend reaches Go as the raw text "null", whose Type is "".
        let Some(v) = v else {
            return Ok(BackendType::Udp.default_backend());
        };
        if v.is_null() {
            return Err(ConfigError::missing(Doc::NetConf, "Backend.Type"));
        }
        let obj = Obj::new(Doc::NetConf, "Backend.", "Backend", v)?;
        let ty = match obj.string("Type")? {
            None | Some("") => return Err(ConfigError::missing(Doc::NetConf, "Backend.Type")),
            Some(t) => t.parse::<BackendType>()?,
        };
        let default = ty.default_backend();
        let backend = match ty {
            BackendType::Vxlan => {
                // Options flannel's vxlan reads and twill ignores; Go would
                // still refuse them with the wrong type.
                for opt in ["GBP", "Learning"] {
                    obj.bool(opt)?;
                }
                let direct_routing = obj.bool("DirectRouting")?.unwrap_or(false);
                let vni = obj.int("VNI")?.unwrap_or(i64::from(DEFAULT_VNI));
                let vni = u32::try_from(vni).ok().filter(|v| *v <= MAX_VNI).ok_or(
                    ConfigError::VniOutOfRange {
                        doc: Doc::NetConf,
                        vni,
                    },
                )?;
                // Port 0 (Go's zero value) leaves the kernel default.
                let port = match obj.int("Port")?.unwrap_or(0) {
                    0 => default.port(),
                    p => port_from(ty, p)?,
                };
                Backend::Vxlan {
                    vni,
                    port,
                    direct_routing,
                }
            }
            BackendType::Udp => {
                // An explicit 0 would make flannel bind an ephemeral port its
                // peers cannot know; refuse it.
                let port = port_from(ty, obj.int("Port")?.unwrap_or(i64::from(default.port())))?;
                Backend::Udp { port }
            }
            BackendType::HostGw => Backend::HostGw,
        };
        Ok(backend)
    }
}

fn port_from(backend: BackendType, p: i64) -> Result<u16, ConfigError> {
    u16::try_from(p)
        .ok()
        .filter(|p| *p != 0)
        .ok_or(ConfigError::PortOutOfRange { backend, port: p })
}

/// flannel's network configuration, with every default resolved.
///
/// Invariants after [`NetConf::parse`], [`NetConf::new`] or a successful
/// [`NetConf::validate`]: `network` is IPv4 with no host bits and a prefix of
/// at most 28; `network.prefix_len() + 2 <= subnet_len <= 30`;
/// `subnet_min` and `subnet_max` are `/subnet_len` subnets inside `network`
/// with `subnet_min <= subnet_max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NetConf {
    /// The cluster's pod network (`Network`).
    pub network: Ipv4Net,
    /// The prefix length of each node's subnet (`SubnetLen`).
    pub subnet_len: u8,
    /// The lowest subnet to lease (`SubnetMin`, as a `/subnet_len`).
    pub subnet_min: Ipv4Net,
    /// The highest subnet to lease (`SubnetMax`, as a `/subnet_len`).
    pub subnet_max: Ipv4Net,
    /// The tunnel between nodes (`Backend`).
    pub backend: Backend,
}

impl NetConf {
    /// `network` with flannel's default SubnetLen, SubnetMin and SubnetMax.
    /// Host bits of `network` are cleared, as Go's `net.ParseCIDR` does.
    pub fn new(network: Ipv4Net, backend: Backend) -> Result<NetConf, ConfigError> {
        backend.validate()?;
        resolve(network.trunc(), 0, None, None, backend)
    }

    /// Parses net-conf.json text.
    pub fn parse(json: &str) -> Result<NetConf, ConfigError> {
        let v: Value = serde_json::from_str(json).map_err(|error| ConfigError::Json {
            doc: Doc::NetConf,
            error,
        })?;
        NetConf::from_value(&v)
    }

    /// Reads net-conf from a JSON value (e.g. embedded in another document).
    pub fn from_value(v: &Value) -> Result<NetConf, ConfigError> {
        let obj = Obj::new(Doc::NetConf, "", "the document", v)?;

        // ParseConfig sets EnableIPv4 = true before decoding.
        if !obj.bool("EnableIPv4")?.unwrap_or(true) {
            return Err(ConfigError::Ipv4Disabled);
        }
        let network = match obj.get("Network")? {
            None => return Err(ConfigError::NetworkMissing),
            Some(v) => parse_network(v)?,
        };
        // SubnetLen is a Go uint: 0, null and absent all mean "default".
        let subnet_len = match obj.int("SubnetLen")? {
            None => 0,
            Some(n) => u64::try_from(n).map_err(|_| {
                ConfigError::invalid(
                    Doc::NetConf,
                    "SubnetLen",
                    n.to_string(),
                    "must not be negative",
                )
            })?,
        };
        let min = obj.ipv4("SubnetMin")?;
        let max = obj.ipv4("SubnetMax")?;
        let backend = Backend::from_json(obj.get("Backend")?)?;
        resolve(network, subnet_len, min, max, backend)
    }

    /// Checks the invariants of a hand-built value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.network != self.network.trunc() {
            return Err(ConfigError::invalid(
                Doc::NetConf,
                "Network",
                format!("\"{}\"", self.network),
                format!(
                    "has host bits set (the network is {})",
                    self.network.trunc()
                ),
            ));
        }
        self.backend.validate()?;
        for (field, s) in [
            ("SubnetMin", self.subnet_min),
            ("SubnetMax", self.subnet_max),
        ] {
            if s.prefix_len() != self.subnet_len {
                return Err(ConfigError::invalid(
                    Doc::NetConf,
                    field,
                    format!("\"{s}\""),
                    format!("must be a /{} (SubnetLen)", self.subnet_len),
                ));
            }
        }
        let resolved = resolve(
            self.network,
            u64::from(self.subnet_len),
            Some(self.subnet_min.addr()),
            Some(self.subnet_max.addr()),
            self.backend,
        )?;
        // Only a 0.0.0.0 bound can differ: resolve() reads it as "default".
        if resolved != *self {
            return Err(ConfigError::invalid(
                Doc::NetConf,
                "SubnetMin",
                format!("\"{}\"", self.subnet_min.addr()),
                "0.0.0.0 means \"default\" to flannel and cannot be a bound",
            ));
        }
        Ok(())
    }

    /// net-conf.json text with flannel's keys and every default written out;
    /// [`NetConf::parse`] reads it back to the same value.
    pub fn to_json(&self) -> String {
        // Plain fields and strings: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Every leasable subnet, SubnetMin to SubnetMax inclusive, in order.
    pub fn subnets(&self) -> Subnets {
        Subnets {
            base: u64::from(u32::from(self.subnet_min.addr())),
            step: self.step(),
            len: self.subnet_len,
            next: 0,
            count: self.subnet_count(),
        }
    }

    /// How many subnets [`NetConf::subnets`] yields:
    /// `((max - min) >> (32 - SubnetLen)) + 1`.
    pub fn subnet_count(&self) -> u64 {
        let (min, max) = (
            u32::from(self.subnet_min.addr()),
            u32::from(self.subnet_max.addr()),
        );
        match (max.checked_sub(min), self.step()) {
            (Some(d), step) if step > 0 => u64::from(d) / step + 1,
            _ => 0,
        }
    }

    /// Whether `s` is a subnet a node may lease: a `/SubnetLen` on its own
    /// boundary between SubnetMin and SubnetMax (flannel's
    /// `isSubnetConfigCompat` in `pkg/subnet/etcd/local_manager.go`, plus the
    /// alignment check flannel leaves to its allocator).
    pub fn contains_subnet(&self, s: &Ipv4Net) -> bool {
        s.prefix_len() == self.subnet_len
            && s.addr() == s.network()
            && self.subnet_min.addr() <= s.addr()
            && s.addr() <= self.subnet_max.addr()
    }

    /// The size of one subnet (0 if `subnet_len` is not a prefix length).
    fn step(&self) -> u64 {
        32u32
            .checked_sub(u32::from(self.subnet_len))
            .map_or(0, |b| 1u64 << b)
    }
}

/// Parses the `Network` value like flannel's `IP4Net.UnmarshalJSON`
/// (`net.ParseCIDR`, host bits cleared).
fn parse_network(v: &Value) -> Result<Ipv4Net, ConfigError> {
    let bad = |reason: &str| ConfigError::invalid(Doc::NetConf, "Network", v.to_string(), reason);
    let Value::String(s) = v else {
        return Err(bad("must be an IPv4 CIDR string such as \"10.244.0.0/16\""));
    };
    match s.parse::<Ipv4Net>() {
        Ok(n) => Ok(n.trunc()),
        Err(_) if s.parse::<ipnet::Ipv6Net>().is_ok() => Err(bad(
            "is an IPv6 network; Network must be IPv4 (flannel's IPv6Network is not supported)",
        )),
        Err(_) => Err(bad("is not an IPv4 CIDR such as \"10.244.0.0/16\"")),
    }
}

/// flannel's `CheckNetworkConfig`, IPv4 half (`pkg/subnet/config.go`), plus
/// twill's `SubnetMin <= SubnetMax`. `subnet_len` 0 and a bound of `None` or
/// 0.0.0.0 mean "default", as there.
fn resolve(
    network: Ipv4Net,
    subnet_len: u64,
    min: Option<Ipv4Addr>,
    max: Option<Ipv4Addr>,
    backend: Backend,
) -> Result<NetConf, ConfigError> {
    // Network.Empty(): IP 0 and prefix 0.
    if network.addr().is_unspecified() && network.prefix_len() == 0 {
        return Err(ConfigError::NetworkMissing);
    }
    let prefix = u64::from(network.prefix_len());
    let subnet_len = if subnet_len > 0 {
        // SubnetLen needs to allow for a tunnel and bridge device on each host.
        if subnet_len > 30 {
            return Err(ConfigError::SubnetLenTooLong { subnet_len });
        }
        // The Network must hold more than two subnets: the first is skipped.
        if subnet_len < prefix + 2 {
            return Err(ConfigError::SubnetLenTooShort {
                subnet_len,
                network,
            });
        }
        subnet_len
    } else if prefix > 28 {
        // Four subnets of at least four addresses: /28 is the smallest.
        return Err(ConfigError::NetworkTooSmall { network });
    } else if prefix <= 22 {
        // Big enough to give each host a /24.
        24
    } else {
        // Otherwise split the network into four.
        prefix + 2
    };
    let len = u8::try_from(subnet_len).map_err(|_| ConfigError::SubnetLenTooLong { subnet_len })?;
    let size = 1u64 << (32 - subnet_len);
    let net_ip = u64::from(u32::from(network.network()));
    let to_addr = |a: u64| Ipv4Addr::from(u32::try_from(a).unwrap_or(u32::MAX));

    let min = match min.filter(|a| !a.is_unspecified()) {
        // Skip the first subnet: its .0 is the Network's own address.
        None => to_addr(net_ip + size),
        Some(a) if !network.contains(&a) => {
            return Err(ConfigError::BoundOutsideNetwork {
                field: "SubnetMin",
                addr: a,
                network,
            })
        }
        Some(a) => a,
    };
    let max = match max.filter(|a| !a.is_unspecified()) {
        // Network.Next().IP - subnetSize: the last subnet.
        None => to_addr(net_ip + (1u64 << (32 - prefix)) - size),
        Some(a) if !network.contains(&a) => {
            return Err(ConfigError::BoundOutsideNetwork {
                field: "SubnetMax",
                addr: a,
                network,
            })
        }
        Some(a) => a,
    };
    // Both bounds on a SubnetLen boundary: flannel errors, it does not mask.
    let mask = u32::MAX << (32 - subnet_len);
    for (field, addr) in [("SubnetMin", min), ("SubnetMax", max)] {
        if u32::from(addr) & mask != u32::from(addr) {
            return Err(ConfigError::BoundUnaligned {
                field,
                addr,
                subnet_len: len,
            });
        }
    }
    // Not checked by flannel (its allocator just finds nothing).
    if min > max {
        return Err(ConfigError::EmptySubnetRange { min, max });
    }
    let net = |a: Ipv4Addr| {
        Ipv4Net::new(a, len).map_err(|_| ConfigError::SubnetLenTooLong { subnet_len })
    };
    Ok(NetConf {
        network,
        subnet_len: len,
        subnet_min: net(min)?,
        subnet_max: net(max)?,
        backend,
    })
}

/// The iterator of [`NetConf::subnets`].
#[derive(Debug, Clone)]
pub struct Subnets {
    base: u64,
    step: u64,
    len: u8,
    next: u64,
    count: u64,
}

impl Iterator for Subnets {
    type Item = Ipv4Net;

    fn next(&mut self) -> Option<Ipv4Net> {
        while self.next < self.count {
            let addr = self.base + self.next * self.step;
            self.next += 1;
            if let Some(n) = u32::try_from(addr)
                .ok()
                .and_then(|a| Ipv4Net::new(Ipv4Addr::from(a), self.len).ok())
            {
                return Some(n);
            }
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::try_from(self.count - self.next).unwrap_or(usize::MAX);
        (n, Some(n))
    }
}

impl ExactSizeIterator for Subnets {}
impl FusedIterator for Subnets {}

impl Serialize for NetConf {
    /// flannel's keys, as [`NetConf::to_json`].
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Wire {
            network: String,
            subnet_len: u8,
            subnet_min: Ipv4Addr,
            subnet_max: Ipv4Addr,
            backend: WireBackend,
        }
        #[derive(Serialize)]
        struct WireBackend {
            #[serde(rename = "Type")]
            ty: BackendType,
            #[serde(rename = "VNI", skip_serializing_if = "Option::is_none")]
            vni: Option<u32>,
            #[serde(rename = "Port", skip_serializing_if = "Option::is_none")]
            port: Option<u16>,
            #[serde(rename = "DirectRouting", skip_serializing_if = "std::ops::Not::not")]
            direct_routing: bool,
        }
        Wire {
            network: self.network.to_string(),
            subnet_len: self.subnet_len,
            subnet_min: self.subnet_min.addr(),
            subnet_max: self.subnet_max.addr(),
            backend: WireBackend {
                ty: self.backend.kind(),
                vni: self.backend.vni(),
                port: self.backend.has_tunnel().then_some(self.backend.port()),
                direct_routing: matches!(
                    self.backend,
                    Backend::Vxlan {
                        direct_routing: true,
                        ..
                    }
                ),
            },
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for NetConf {
    /// flannel's semantics, as [`NetConf::parse`].
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        NetConf::from_value(&v).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[path = "netconf_tests.rs"]
mod tests;
