//! twill's node configuration file: who this node is, the flannel net-conf
//! it runs, and where the node table comes from: a static table of the
//! other nodes (`peers`), or a control plane (`controller` or `etcd`, see
//! [`crate::plane`]) that leases the subnet and serves the table.
//!
//! ```json
//! { "name": "node-a", "public_ip": "192.168.100.1", "subnet": "10.244.1.0/24",
//!   "net_conf": { "Network": "10.244.0.0/16", "Backend": { "Type": "vxlan" } },
//!   "vtep_mac": "0a:58:0a:f4:01:01", "underlay_mtu": 1500,
//!   "socket": "/run/twill/twill.sock", "state_dir": "/var/lib/twill", "host_port": "twill0",
//!   "peers": [ { "name": "node-b", "public_ip": "192.168.100.2",
//!                "subnet": "10.244.2.0/24", "vtep_mac": "0a:58:0a:f4:02:01" } ] }
//! ```
//!
//! Our own keys are snake_case and exact: the document is read into
//! `#[derive(Deserialize)]` structs that deny unknown fields, so a typo
//! cannot silently drop a setting, and every error names the field by its
//! path (`strictjson.rs`); [`NodeConfig::parse`] then checks the
//! values. `null` counts as an absent optional key. The `net_conf` object
//! (or the file `net_conf_file` names) is flannel's and is read with
//! flannel's rules ([`crate::netconf`]). A control plane excludes the static
//! keys (`subnet`, `net_conf`, `net_conf_file`, `peers`); its leases become
//! the same [`Peer`] values ([`Peer::from_lease`]). An optional `bgp` block
//! routes to the other nodes by BGP instead ([`crate::bgp`]). Only
//! [`NodeConfig::load`] and a `net_conf_file` touch the file system.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use encap::MacAddr;
use ipnet::Ipv4Net;
use serde::Deserialize;
use serde_json::Value;

use crate::backend::Backend;
use crate::bgp::{BgpConfig, RawBgp};
use crate::error::{ConfigError, Doc};
use crate::lease::{parse_mac, LeaseAttrs, LeaseBackend};
use crate::netconf::NetConf;
use crate::plane::{ControlPlane, LeaseOptions, RawController, RawEtcd, RawLease};
use crate::strictjson;

/// Default API socket.
pub const DEFAULT_SOCKET: &str = "/run/twill/twill.sock";
/// Default state directory (holds e.g. the generated VTEP MAC).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/twill";
/// Default name of the host-side TAP.
pub const DEFAULT_HOST_PORT: &str = "twill0";
/// The smallest pod MTU accepted: IPv4's minimum reassembly size.
pub const MIN_POD_MTU: u32 = 576;
/// The largest underlay MTU accepted: an IPv4 packet's size limit.
pub const MAX_UNDERLAY_MTU: u32 = 65535;

/// The document as written (every key twill defines, and no other).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: String,
    public_ip: String,
    subnet: Option<String>,
    net_conf: Option<Value>,
    net_conf_file: Option<String>,
    vtep_mac: Option<String>,
    underlay_mtu: Option<u32>,
    socket: Option<String>,
    state_dir: Option<String>,
    host_port: Option<String>,
    peers: Option<Vec<RawPeer>>,
    controller: Option<RawController>,
    etcd: Option<RawEtcd>,
    lease_ttl_secs: Option<u64>,
    renew_margin_secs: Option<u64>,
    subnet_env: Option<String>,
    ip_masq: Option<bool>,
    objects_dir: Option<String>,
    service_cidr: Option<String>,
    bgp: Option<RawBgp>,
}

/// One entry of `peers`, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    name: String,
    public_ip: String,
    subnet: String,
    vtep_mac: Option<String>,
}

/// Another node: where its pod subnet lives and how to tunnel to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Peer {
    /// Node name.
    pub name: String,
    /// Underlay address: tunnels to the node go there.
    pub public_ip: Ipv4Addr,
    /// The node's pod subnet.
    pub subnet: Ipv4Net,
    /// The node's VTEP MAC (vxlan; `None` or ignored for udp).
    pub vtep_mac: Option<MacAddr>,
}

impl Peer {
    /// The peer a flannel lease describes: `subnet` is the lease key's
    /// subnet, `name` whatever names the node (flannel leases carry none).
    pub fn from_lease(subnet: Ipv4Net, attrs: &LeaseAttrs, name: impl Into<String>) -> Peer {
        Peer {
            name: name.into(),
            public_ip: attrs.public_ip,
            subnet,
            vtep_mac: attrs.backend.vtep_mac(),
        }
    }

    /// The lease value flannel would store for this peer under `backend`
    /// (the VNI comes from the net-conf, as a flannel node writes it). A
    /// vxlan peer needs a VTEP MAC.
    pub fn to_lease(&self, backend: &Backend) -> Result<LeaseAttrs, ConfigError> {
        let backend = match (*backend, self.vtep_mac) {
            (Backend::Udp { .. }, _) => LeaseBackend::Udp,
            (Backend::HostGw, _) => LeaseBackend::HostGw,
            (Backend::Vxlan { vni, .. }, Some(vtep_mac)) => LeaseBackend::Vxlan {
                vni: Some(vni),
                vtep_mac,
            },
            (Backend::Vxlan { .. }, None) => {
                return Err(ConfigError::VtepMacRequired {
                    field: "vtep_mac".into(),
                    peer: self.name.clone(),
                })
            }
        };
        Ok(LeaseAttrs {
            public_ip: self.public_ip,
            backend,
        })
    }
}

/// A node's configuration, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeConfig {
    /// This node's name.
    pub name: String,
    /// This node's underlay address: tunnels bind to it, peers send to it.
    pub public_ip: Ipv4Addr,
    /// This node's pod subnet (a `/SubnetLen` inside the Network); `None`
    /// with a control plane until the lease is known ([`NodeConfig::leased`]).
    pub subnet: Option<Ipv4Net>,
    /// The cluster's flannel network configuration; `None` with a control
    /// plane until read from the store ([`NodeConfig::leased`]).
    pub net_conf: Option<NetConf>,
    /// Where `net_conf` was read from, if from a file (resolved path).
    pub net_conf_file: Option<PathBuf>,
    /// A fixed VTEP/router MAC; `None`: the agent generates and persists one.
    pub vtep_mac: Option<MacAddr>,
    /// The underlay MTU; `None`: the agent detects it.
    pub underlay_mtu: Option<u32>,
    /// The agent's API socket.
    pub socket: PathBuf,
    /// The agent's state directory.
    pub state_dir: PathBuf,
    /// Name of the host-side TAP.
    pub host_port: String,
    /// The other nodes (the static node table; empty with a control plane).
    pub peers: Vec<Peer>,
    /// Where the lease and the node table come from; `None`: static.
    pub control: Option<ControlPlane>,
    /// Lease timing and `subnet.env`.
    pub lease: LeaseOptions,
    /// A directory of Kubernetes manifests (Services, EndpointSlices) that
    /// a static node follows; with a control plane the objects come from
    /// its store instead.
    pub objects_dir: Option<PathBuf>,
    /// The cluster's Service IP range (kube-apiserver's
    /// `--service-cluster-ip-range`): routed from the host into the switch,
    /// so that the node's own processes reach ClusterIPs.
    pub service_cidr: Option<Ipv4Net>,
    /// Routing by BGP instead of tunnels (`bgp`, [`crate::bgp`]); `None`:
    /// the backend decides.
    pub bgp: Option<BgpConfig>,
}

impl NodeConfig {
    /// Reads and validates the file at `path`. Relative paths in it
    /// (`net_conf_file`, `socket`, `state_dir`) are taken relative to the
    /// file's directory.
    pub fn load(path: impl AsRef<Path>) -> Result<NodeConfig, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Io {
            path: path.into(),
            error,
        })?;
        let base = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        NodeConfig::parse(&text, base).map_err(|e| e.in_file(path))
    }

    /// Parses and validates configuration text; relative paths in it are
    /// taken relative to `base_dir` (a `net_conf_file` is read from there).
    pub fn parse(json: &str, base_dir: impl AsRef<Path>) -> Result<NodeConfig, ConfigError> {
        let v: Value = serde_json::from_str(json).map_err(|error| ConfigError::Json {
            doc: Doc::NodeConfig,
            error,
        })?;
        let raw: RawNode = strictjson::from_value(Doc::NodeConfig, &v)?;
        NodeConfig::from_raw(raw, base_dir.as_ref())
    }

    /// Turns the document as written into a checked configuration.
    fn from_raw(raw: RawNode, base_dir: &Path) -> Result<NodeConfig, ConfigError> {
        let control = ControlPlane::from_raw(raw.controller, raw.etcd, base_dir)?;
        if let Some(cp) = &control {
            let static_keys = [
                ("subnet", raw.subnet.is_some()),
                ("net_conf", raw.net_conf.is_some()),
                ("net_conf_file", raw.net_conf_file.is_some()),
                ("peers", raw.peers.is_some()),
                ("objects_dir", raw.objects_dir.is_some()),
            ];
            if let Some((k, _)) = static_keys.iter().find(|(_, set)| *set) {
                return Err(ConfigError::ControlPlaneConflict {
                    field: (*k).into(),
                    with: cp.key().into(),
                });
            }
        }
        let net_conf_file = raw
            .net_conf_file
            .map(|f| path_in(base_dir, "net_conf_file", &f))
            .transpose()?;
        let (net_conf, net_conf_file) = match (raw.net_conf, net_conf_file) {
            (None, None) if control.is_some() => (None, None),
            (Some(_), Some(_)) => return Err(ConfigError::NetConfSource { both: true }),
            (None, None) => return Err(ConfigError::NetConfSource { both: false }),
            (Some(v), None) => (Some(NetConf::from_value(&v)?), None),
            (None, Some(file)) => {
                let text = std::fs::read_to_string(&file).map_err(|error| ConfigError::Io {
                    path: file.clone(),
                    error,
                })?;
                (
                    Some(NetConf::parse(&text).map_err(|e| e.in_file(&file))?),
                    Some(file),
                )
            }
        };
        let peers = raw
            .peers
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, p)| p.check(&format!("peers[{i}]")))
            .collect::<Result<_, _>>()?;
        let subnet = match (&control, raw.subnet) {
            (Some(_), _) => None,
            (None, None) => return Err(ConfigError::missing(Doc::NodeConfig, "subnet")),
            (None, Some(s)) => Some(parse_subnet(&s, "subnet")?),
        };

        let public_ip = parse_ip(&raw.public_ip, "public_ip")?;
        let bgp = raw.bgp.map(|b| b.check(base_dir, public_ip)).transpose()?;
        let cfg = NodeConfig {
            name: raw.name,
            public_ip,
            bgp,
            subnet,
            net_conf,
            net_conf_file,
            vtep_mac: raw
                .vtep_mac
                .map(|m| parse_mac_field(&m, "vtep_mac"))
                .transpose()?,
            underlay_mtu: raw.underlay_mtu,
            socket: path_in(
                base_dir,
                "socket",
                raw.socket.as_deref().unwrap_or(DEFAULT_SOCKET),
            )?,
            state_dir: path_in(
                base_dir,
                "state_dir",
                raw.state_dir.as_deref().unwrap_or(DEFAULT_STATE_DIR),
            )?,
            host_port: raw.host_port.unwrap_or_else(|| DEFAULT_HOST_PORT.into()),
            peers,
            service_cidr: raw
                .service_cidr
                .map(|s| parse_subnet(&s, "service_cidr"))
                .transpose()?,
            objects_dir: raw
                .objects_dir
                .map(|d| path_in(base_dir, "objects_dir", &d))
                .transpose()?,
            lease: LeaseOptions::from_raw(
                RawLease {
                    lease_ttl_secs: raw.lease_ttl_secs,
                    renew_margin_secs: raw.renew_margin_secs,
                    subnet_env: raw.subnet_env,
                    ip_masq: raw.ip_masq,
                },
                base_dir,
            )?,
            control,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks everything [`NodeConfig::parse`] checks beyond syntax: our
    /// subnet is a `/SubnetLen` inside the Network; addresses are unicast
    /// and outside the Network; peers have unique names, public IPs and VTEP
    /// MACs, distinct from ours, and subnets inside the Network that overlap
    /// neither each other nor ours; vxlan peers have a unicast VTEP MAC.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let (nc, subnet) = match (&self.net_conf, self.subnet) {
            (Some(nc), Some(subnet)) => (nc, subnet),
            (None, None) if self.control.is_some() => return self.validate_own(None),
            (None, _) => return Err(ConfigError::NetConfSource { both: false }),
            (Some(_), None) => return Err(ConfigError::missing(Doc::NodeConfig, "subnet")),
        };
        self.validate_static(nc, subnet)
    }

    /// This configuration with the subnet and net-conf a control plane
    /// gave it, checked as a static one would be.
    pub fn leased(&self, subnet: Ipv4Net, net_conf: NetConf) -> Result<NodeConfig, ConfigError> {
        let mut c = self.clone();
        c.subnet = Some(subnet);
        c.net_conf = Some(net_conf);
        c.validate()?;
        Ok(c)
    }

    /// The checks that need no net-conf.
    fn validate_own(&self, nc: Option<&NetConf>) -> Result<(), ConfigError> {
        check_name(&self.name, "name")?;
        if let Some(s) = self.service_cidr {
            if s.trunc() != s {
                return Err(ConfigError::invalid(
                    Doc::NodeConfig,
                    "service_cidr",
                    s.to_string(),
                    "has host bits set",
                ));
            }
            if nc.is_some_and(|nc| nc.network.contains(&s) || s.contains(&nc.network)) {
                return Err(ConfigError::invalid(
                    Doc::NodeConfig,
                    "service_cidr",
                    s.to_string(),
                    "overlaps the cluster Network",
                ));
            }
        }
        if let Some(nc) = nc {
            check_public_ip(self.public_ip, "public_ip", nc.network)?;
        }
        if let Some(m) = self.vtep_mac {
            check_unicast(m, "vtep_mac")?;
        }
        check_ifname(&self.host_port)?;
        for (field, p) in [
            ("socket", &self.socket),
            ("state_dir", &self.state_dir),
            ("subnet_env", &self.lease.subnet_env),
        ] {
            if p.as_os_str().is_empty() {
                return Err(ConfigError::invalid(
                    Doc::NodeConfig,
                    field,
                    "\"\"",
                    "must not be empty",
                ));
            }
        }
        if self.control.is_some() && !self.peers.is_empty() {
            return Err(ConfigError::ControlPlaneConflict {
                field: "peers".into(),
                with: "a control plane".into(),
            });
        }
        Ok(())
    }

    fn validate_static(&self, nc: &NetConf, subnet: Ipv4Net) -> Result<(), ConfigError> {
        nc.validate()?;
        self.validate_own(Some(nc))?;
        let network = nc.network;
        let vxlan = matches!(nc.backend, Backend::Vxlan { .. });

        check_subnet(subnet, "subnet", network)?;
        if subnet.prefix_len() != nc.subnet_len {
            return Err(ConfigError::SubnetLenMismatch {
                field: "subnet".into(),
                subnet,
                subnet_len: nc.subnet_len,
            });
        }
        if let Some(mtu) = self.underlay_mtu {
            let min = MIN_POD_MTU + nc.backend.overhead();
            if !(min..=MAX_UNDERLAY_MTU).contains(&mtu) {
                return Err(ConfigError::invalid(
                    Doc::NodeConfig,
                    "underlay_mtu",
                    mtu.to_string(),
                    format!(
                        "must be {min} to {MAX_UNDERLAY_MTU}: pods need {MIN_POD_MTU} bytes after the {} backend's {} bytes",
                        nc.backend.kind(),
                        nc.backend.overhead()
                    ),
                ));
            }
        }

        let mut names: HashMap<&str, String> =
            HashMap::from([(self.name.as_str(), "name".to_owned())]);
        let mut ips: HashMap<Ipv4Addr, String> =
            HashMap::from([(self.public_ip, "public_ip".to_owned())]);
        let mut macs: HashMap<MacAddr, String> = HashMap::new();
        if let (true, Some(m)) = (vxlan, self.vtep_mac) {
            macs.insert(m, "vtep_mac".to_owned());
        }
        let mut subnets = vec![(subnet, "subnet".to_owned())];
        for (i, p) in self.peers.iter().enumerate() {
            let at = |f: &str| format!("peers[{i}].{f}");
            check_name(&p.name, &at("name"))?;
            unique(
                &mut names,
                p.name.as_str(),
                at("name"),
                format!("{:?}", p.name),
            )?;
            check_public_ip(p.public_ip, &at("public_ip"), network)?;
            unique(
                &mut ips,
                p.public_ip,
                at("public_ip"),
                format!("\"{}\"", p.public_ip),
            )?;
            check_subnet(p.subnet, &at("subnet"), network)?;
            subnets.push((p.subnet, at("subnet")));
            if vxlan {
                let m = p.vtep_mac.ok_or_else(|| ConfigError::VtepMacRequired {
                    field: at("vtep_mac"),
                    peer: p.name.clone(),
                })?;
                check_unicast(m, &at("vtep_mac"))?;
                unique(&mut macs, m, at("vtep_mac"), format!("\"{m}\""))?;
            }
        }
        check_overlaps(subnets)
    }

    /// The pod MTU: the underlay MTU minus the backend's overhead, when the
    /// underlay MTU is configured.
    pub fn pod_mtu(&self) -> Option<u32> {
        let overhead = self.net_conf.as_ref()?.backend.overhead();
        self.underlay_mtu.map(|m| m.saturating_sub(overhead))
    }

    /// This node's lease value under `backend` (the net-conf's), given its
    /// VTEP MAC (configured or generated).
    pub fn lease_attrs(&self, backend: &Backend, vtep_mac: MacAddr) -> LeaseAttrs {
        let backend = match *backend {
            Backend::Vxlan { vni, .. } => LeaseBackend::Vxlan {
                vni: Some(vni),
                vtep_mac,
            },
            Backend::Udp { .. } => LeaseBackend::Udp,
            Backend::HostGw => LeaseBackend::HostGw,
        };
        LeaseAttrs {
            public_ip: self.public_ip,
            backend,
        }
    }
}

impl RawPeer {
    /// The peer at `at` (`peers[1]`), its values parsed.
    fn check(self, at: &str) -> Result<Peer, ConfigError> {
        let f = |k: &str| format!("{at}.{k}");
        Ok(Peer {
            name: self.name,
            public_ip: parse_ip(&self.public_ip, &f("public_ip"))?,
            subnet: parse_subnet(&self.subnet, &f("subnet"))?,
            vtep_mac: self
                .vtep_mac
                .map(|m| parse_mac_field(&m, &f("vtep_mac")))
                .transpose()?,
        })
    }
}

/// A path, relative ones joined to `base`.
fn path_in(base: &Path, field: &str, s: &str) -> Result<PathBuf, ConfigError> {
    if s.is_empty() {
        return Err(ConfigError::invalid(
            Doc::NodeConfig,
            field,
            "\"\"",
            "must not be empty",
        ));
    }
    Ok(base.join(s))
}

fn parse_ip(s: &str, field: &str) -> Result<Ipv4Addr, ConfigError> {
    s.parse().map_err(|_| {
        ConfigError::invalid(
            Doc::NodeConfig,
            field,
            format!("{s:?}"),
            "is not an IPv4 address",
        )
    })
}

fn parse_subnet(s: &str, field: &str) -> Result<Ipv4Net, ConfigError> {
    s.parse().map_err(|_| {
        ConfigError::invalid(
            Doc::NodeConfig,
            field,
            format!("{s:?}"),
            "is not an IPv4 CIDR such as \"10.244.1.0/24\"",
        )
    })
}

fn parse_mac_field(s: &str, field: &str) -> Result<MacAddr, ConfigError> {
    parse_mac(s).ok_or_else(|| {
        ConfigError::invalid(
            Doc::NodeConfig,
            field,
            format!("{s:?}"),
            "is not a MAC address such as \"0a:58:0a:f4:01:01\"",
        )
    })
}

fn check_name(name: &str, field: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err(ConfigError::invalid(
            Doc::NodeConfig,
            field,
            format!("{name:?}"),
            "must be non-empty, without control characters",
        ));
    }
    Ok(())
}

fn check_public_ip(ip: Ipv4Addr, field: &str, network: Ipv4Net) -> Result<(), ConfigError> {
    let bad =
        |reason: String| ConfigError::invalid(Doc::NodeConfig, field, format!("\"{ip}\""), reason);
    if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
        return Err(bad("is not a unicast host address".into()));
    }
    if network.contains(&ip) {
        return Err(bad(format!(
            "is inside the pod Network {network}; the underlay address must be outside it"
        )));
    }
    Ok(())
}

fn check_subnet(subnet: Ipv4Net, field: &str, network: Ipv4Net) -> Result<(), ConfigError> {
    if subnet.addr() != subnet.network() {
        return Err(ConfigError::invalid(
            Doc::NodeConfig,
            field,
            format!("\"{subnet}\""),
            format!("has host bits set (did you mean {}?)", subnet.trunc()),
        ));
    }
    if !network.contains(&subnet) {
        return Err(ConfigError::SubnetOutsideNetwork {
            field: field.into(),
            subnet,
            network,
        });
    }
    Ok(())
}

fn check_unicast(m: MacAddr, field: &str) -> Result<(), ConfigError> {
    if !m.is_unicast() {
        return Err(ConfigError::invalid(
            Doc::NodeConfig,
            field,
            format!("\"{m}\""),
            "is not a unicast MAC (group bit set, or all zero)",
        ));
    }
    Ok(())
}

/// Linux's `dev_valid_name` (net/core/dev.c): 1 to 15 bytes, not `.` or
/// `..`, no `/`, `:` or white space; twill also refuses `%` (a kernel name
/// template would leave the real name unknown).
fn check_ifname(name: &str) -> Result<(), ConfigError> {
    let reason = if name.is_empty() || name.len() > 15 {
        "must be 1 to 15 bytes long"
    } else if name == "." || name == ".." {
        "cannot be \".\" or \"..\""
    } else if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b == b'%' || b.is_ascii_whitespace() || b == 0x0b)
    {
        "cannot contain '/', ':', '%' or white space"
    } else {
        return Ok(());
    };
    Err(ConfigError::invalid(
        Doc::NodeConfig,
        "host_port",
        format!("{name:?}"),
        reason,
    ))
}

fn unique<K: std::hash::Hash + Eq>(
    seen: &mut HashMap<K, String>,
    key: K,
    field: String,
    value: String,
) -> Result<(), ConfigError> {
    if let Some(first) = seen.get(&key) {
        return Err(ConfigError::Duplicate {
            field,
            value,
            first: first.clone(),
        });
    }
    seen.insert(key, field);
    Ok(())
}

/// No two subnets overlap. CIDR blocks either nest or are disjoint, so after
/// sorting by first address an overlap always shows between neighbours.
fn check_overlaps(mut subnets: Vec<(Ipv4Net, String)>) -> Result<(), ConfigError> {
    // The list is in document order (ours first); keep that as tie-break so
    // the error names the later entry first.
    let mut order: Vec<usize> = (0..subnets.len()).collect();
    order.sort_by_key(|&i| (subnets[i].0.network(), subnets[i].0.prefix_len(), i));
    for w in order.windows(2) {
        let (a, b) = (w[0], w[1]);
        if subnets[a].0.contains(&subnets[b].0.network()) {
            let (first, later) = if a < b { (a, b) } else { (b, a) };
            let (other, other_field) = std::mem::take(&mut subnets[first]);
            let (subnet, field) = std::mem::take(&mut subnets[later]);
            return Err(ConfigError::SubnetOverlap {
                field,
                subnet,
                other_field,
                other,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
