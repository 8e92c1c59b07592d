//! The control-plane part of a node's configuration: where its lease and
//! the node table come from (twill's controller or etcd), how long leases
//! live, and where flannel's `subnet.env` is written.
//!
//! ```json
//! "controller": { "url": "http://10.0.0.1:8765", "token_file": "/etc/twill/token" },
//! "etcd": { "endpoints": ["http://10.0.0.1:2379"], "prefix": "/coreos.com/network" },
//! "lease_ttl_secs": 86400, "renew_margin_secs": 3600,
//! "subnet_env": "/run/flannel/subnet.env", "ip_masq": false
//! ```
//!
//! `controller` and `etcd` exclude each other and exclude the static keys
//! (`subnet`, `net_conf`, `net_conf_file`, `peers`): with a control plane,
//! the subnet comes from the lease and the net-conf from the store.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::error::{ConfigError, Doc};
use crate::gojson::kind;
use crate::node::{check_keys, invalid};
use crate::store::{DEFAULT_ETCD_PREFIX, DEFAULT_LEASE_TTL, DEFAULT_RENEW_MARGIN};

/// flannel's default `subnet.env` path (`--subnet-file`).
pub const DEFAULT_SUBNET_ENV: &str = "/run/flannel/subnet.env";

const CONTROLLER_KEYS: &[&str] = &["url", "token_file"];
const ETCD_KEYS: &[&str] = &["endpoints", "prefix"];

/// Where a node's lease and node table come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlPlane {
    /// `twill controller`, over HTTP.
    Controller {
        /// Its base URL, e.g. `http://10.0.0.1:8765`.
        url: String,
        /// A file holding the shared bearer token.
        token_file: PathBuf,
    },
    /// An etcd cluster, with flannel's keys.
    Etcd {
        /// Client URLs.
        endpoints: Vec<String>,
        /// Key prefix (flannel's `--etcd-prefix`).
        prefix: String,
    },
}

impl std::fmt::Display for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlPlane::Controller { url, .. } => write!(f, "controller {url}"),
            ControlPlane::Etcd { endpoints, prefix } => {
                write!(f, "etcd {} {prefix}", endpoints.join(","))
            }
        }
    }
}

/// Lease timing and flannel's `subnet.env`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseOptions {
    /// Lease time to live.
    pub ttl: Duration,
    /// Renew this long before expiry.
    pub renew_margin: Duration,
    /// Where `subnet.env` is written.
    pub subnet_env: PathBuf,
    /// `FLANNEL_IPMASQ`: whether this node masquerades pod traffic leaving
    /// the cluster network (twill leaves that to the host; the flag is only
    /// reported to tools that read `subnet.env`).
    pub ip_masq: bool,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        LeaseOptions {
            ttl: DEFAULT_LEASE_TTL,
            renew_margin: DEFAULT_RENEW_MARGIN,
            subnet_env: PathBuf::from(DEFAULT_SUBNET_ENV),
            ip_masq: false,
        }
    }
}

fn string<'a>(
    map: &'a Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<Option<&'a str>, ConfigError> {
    match map.get(key).filter(|v| !v.is_null()) {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s)),
        Some(v @ Value::String(_)) => Err(invalid(field, v, "must not be empty")),
        Some(v) => Err(invalid(
            field,
            v,
            format!("must be a string, not {}", kind(v)),
        )),
    }
}

fn url(s: &str, field: &str) -> Result<String, ConfigError> {
    let ok = (s.starts_with("http://") || s.starts_with("https://"))
        && s.split("://").nth(1).is_some_and(|rest| !rest.is_empty());
    if ok {
        Ok(s.trim_end_matches('/').to_owned())
    } else {
        Err(ConfigError::invalid(
            Doc::NodeConfig,
            field,
            format!("{s:?}"),
            "must be an http:// or https:// URL",
        ))
    }
}

/// Reads `controller` / `etcd` from the node config object; `None` when
/// neither is there. Relative `token_file`s are taken relative to `base`.
pub(crate) fn parse_control_plane(
    map: &Map<String, Value>,
    base: &Path,
) -> Result<Option<ControlPlane>, ConfigError> {
    let controller = map.get("controller").filter(|v| !v.is_null());
    let etcd = map.get("etcd").filter(|v| !v.is_null());
    match (controller, etcd) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(ConfigError::ControlPlaneConflict {
            field: "etcd".into(),
            with: "controller".into(),
        }),
        (Some(v), None) => {
            let m = v.as_object().ok_or_else(|| {
                invalid(
                    "controller",
                    v,
                    format!("must be a JSON object, not {}", kind(v)),
                )
            })?;
            check_keys(m, "controller", CONTROLLER_KEYS)?;
            let u = string(m, "url", "controller.url")?
                .ok_or_else(|| ConfigError::missing(Doc::NodeConfig, "controller.url"))?;
            let token = string(m, "token_file", "controller.token_file")?
                .ok_or_else(|| ConfigError::missing(Doc::NodeConfig, "controller.token_file"))?;
            Ok(Some(ControlPlane::Controller {
                url: url(u, "controller.url")?,
                token_file: base.join(token),
            }))
        }
        (None, Some(v)) => {
            let m = v.as_object().ok_or_else(|| {
                invalid("etcd", v, format!("must be a JSON object, not {}", kind(v)))
            })?;
            check_keys(m, "etcd", ETCD_KEYS)?;
            let endpoints = match m.get("endpoints") {
                Some(Value::Array(items)) if !items.is_empty() => items
                    .iter()
                    .enumerate()
                    .map(|(i, e)| {
                        let field = format!("etcd.endpoints[{i}]");
                        match e {
                            Value::String(s) => url(s, &field),
                            other => Err(invalid(&field, other, "must be a URL string")),
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                None | Some(Value::Null) => {
                    return Err(ConfigError::missing(Doc::NodeConfig, "etcd.endpoints"))
                }
                Some(other) => {
                    return Err(invalid(
                        "etcd.endpoints",
                        other,
                        "must be a non-empty array of URLs",
                    ))
                }
            };
            let prefix = string(m, "prefix", "etcd.prefix")?.unwrap_or(DEFAULT_ETCD_PREFIX);
            if !prefix.starts_with('/') {
                return Err(invalid(
                    "etcd.prefix",
                    &Value::String(prefix.into()),
                    "must start with /",
                ));
            }
            Ok(Some(ControlPlane::Etcd {
                endpoints,
                prefix: prefix.trim_end_matches('/').to_owned(),
            }))
        }
    }
}

fn secs(map: &Map<String, Value>, key: &str, default: Duration) -> Result<Duration, ConfigError> {
    match map.get(key).filter(|v| !v.is_null()) {
        None => Ok(default),
        Some(v) => match v.as_u64() {
            Some(s) if s > 0 => Ok(Duration::from_secs(s)),
            _ => Err(invalid(key, v, "must be a whole number of seconds above 0")),
        },
    }
}

/// Reads the lease options (all optional).
pub(crate) fn parse_lease_options(
    map: &Map<String, Value>,
    base: &Path,
) -> Result<LeaseOptions, ConfigError> {
    let d = LeaseOptions::default();
    let ttl = secs(map, "lease_ttl_secs", d.ttl)?;
    let renew_margin = secs(map, "renew_margin_secs", d.renew_margin.min(ttl / 2))?;
    if renew_margin >= ttl {
        return Err(ConfigError::invalid(
            Doc::NodeConfig,
            "renew_margin_secs",
            renew_margin.as_secs().to_string(),
            format!("must be below lease_ttl_secs ({})", ttl.as_secs()),
        ));
    }
    let subnet_env = match string(map, "subnet_env", "subnet_env")? {
        Some(s) => base.join(s),
        None => d.subnet_env,
    };
    let ip_masq = match map.get("ip_masq").filter(|v| !v.is_null()) {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => return Err(invalid("ip_masq", v, "must be true or false")),
    };
    Ok(LeaseOptions {
        ttl,
        renew_margin,
        subnet_env,
        ip_masq,
    })
}

/// flannel's `subnet.env` (what `WriteSubnetFile` in flannel's main.go
/// writes): the cluster network, this node's subnet as the gateway address
/// with the subnet's length, the pod MTU and the masquerade flag.
pub fn subnet_env(
    network: ipnet::Ipv4Net,
    subnet: ipnet::Ipv4Net,
    mtu: u32,
    ip_masq: bool,
) -> String {
    // flannel writes the subnet's first address (".1") with its length.
    let first = u32::from(subnet.network()).wrapping_add(1);
    format!(
        "FLANNEL_NETWORK={network}\nFLANNEL_SUBNET={}/{}\nFLANNEL_MTU={mtu}\nFLANNEL_IPMASQ={ip_masq}\n",
        std::net::Ipv4Addr::from(first),
        subnet.prefix_len()
    )
}

/// Reads `FLANNEL_SUBNET` back from a `subnet.env` text: the subnet it
/// names (flannel keeps a node's previous subnet this way).
pub fn subnet_from_env(text: &str) -> Option<ipnet::Ipv4Net> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("FLANNEL_SUBNET="))
        .and_then(|v| v.trim().parse::<ipnet::Ipv4Net>().ok())
        .map(|n| n.trunc())
}

#[cfg(test)]
#[path = "plane_tests.rs"]
mod tests;
