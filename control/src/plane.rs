//! The control-plane part of a node's configuration: where its lease and
//! the node table come from (twill's controller or etcd), how long leases
//! live, and where flannel's `subnet.env` is written.
//!
//! ```json
//! "controller": { "url": "http://10.0.0.1:8765", "token_file": "/etc/twill/token" },
//! "etcd": { "endpoints": ["http://10.0.0.1:2379"], "prefix": "/coreos.com/network" },
//! "etcd": { "endpoints": ["https://10.0.0.1:2379"], "cafile": "ca.pem",
//!           "certfile": "node.pem", "keyfile": "node-key.pem" },
//! "lease_ttl_secs": 86400, "renew_margin_secs": 3600,
//! "subnet_env": "/run/flannel/subnet.env", "ip_masq": false
//! ```
//!
//! TLS: both blocks take `cafile`, `certfile` and `keyfile`, flannel's
//! `-etcd-cafile`, `-etcd-certfile` and `-etcd-keyfile` without the `etcd-`
//! (they stand in the block already). An `https://` URL needs `cafile`:
//! that CA is the only one trusted, the system's roots are not read.
//! `certfile` and `keyfile`, the node's client certificate, go together.
//! Relative paths are taken relative to the config file's directory.
//!
//! `controller` and `etcd` exclude each other and exclude the static keys
//! (`subnet`, `net_conf`, `net_conf_file`, `peers`): with a control plane,
//! the subnet comes from the lease and the net-conf from the store.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{ConfigError, Doc};
use crate::store::{DEFAULT_ETCD_PREFIX, DEFAULT_LEASE_TTL, DEFAULT_RENEW_MARGIN, MAX_LEASE_TTL};
use crate::tls::ClientTls;

/// flannel's default `subnet.env` path (`--subnet-file`).
pub const DEFAULT_SUBNET_ENV: &str = "/run/flannel/subnet.env";

/// The `controller` object as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawController {
    url: String,
    token_file: String,
    cafile: Option<String>,
    certfile: Option<String>,
    keyfile: Option<String>,
}

/// The TLS keys of `controller` and `etcd`, as written. (Not a
/// `#[serde(flatten)]`ed field of theirs: serde's `deny_unknown_fields`
/// does not work with one.)
struct RawTls {
    cafile: Option<String>,
    certfile: Option<String>,
    keyfile: Option<String>,
}

/// The `etcd` object as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEtcd {
    endpoints: Option<Vec<String>>,
    prefix: Option<String>,
    cafile: Option<String>,
    certfile: Option<String>,
    keyfile: Option<String>,
}

/// The lease keys of the node config, as written (they stand at its top
/// level, beside the node's own keys).
pub(crate) struct RawLease {
    pub(crate) lease_ttl_secs: Option<u64>,
    pub(crate) renew_margin_secs: Option<u64>,
    pub(crate) subnet_env: Option<String>,
    pub(crate) ip_masq: Option<bool>,
}

/// Where a node's lease and node table come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlPlane {
    /// `twill controller`, over HTTP or HTTPS.
    Controller {
        /// Its base URL, e.g. `http://10.0.0.1:8765`.
        url: String,
        /// A file holding the shared bearer token.
        token_file: PathBuf,
        /// The CA to trust and the client certificate (for `https://`).
        tls: ClientTls,
    },
    /// An etcd cluster, with flannel's keys.
    Etcd {
        /// Client URLs.
        endpoints: Vec<String>,
        /// Key prefix (flannel's `--etcd-prefix`).
        prefix: String,
        /// The CA to trust and the client certificate (for the `https://`
        /// endpoints).
        tls: ClientTls,
    },
}

impl std::fmt::Display for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlPlane::Controller { url, .. } => write!(f, "controller {url}"),
            ControlPlane::Etcd {
                endpoints, prefix, ..
            } => {
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

impl ControlPlane {
    /// The node config key that selects it.
    pub fn key(&self) -> &'static str {
        match self {
            ControlPlane::Controller { .. } => "controller",
            ControlPlane::Etcd { .. } => "etcd",
        }
    }

    /// Checks `controller` / `etcd` of the node config; `None` when neither
    /// is there. Relative `token_file`s are taken relative to `base`.
    pub(crate) fn from_raw(
        controller: Option<RawController>,
        etcd: Option<RawEtcd>,
        base: &Path,
    ) -> Result<Option<ControlPlane>, ConfigError> {
        match (controller, etcd) {
            (None, None) => Ok(None),
            (Some(_), Some(_)) => Err(ConfigError::ControlPlaneConflict {
                field: "etcd".into(),
                with: "controller".into(),
            }),
            (Some(c), None) => {
                let url = url(&c.url, "controller.url")?;
                let tls = RawTls {
                    cafile: c.cafile,
                    certfile: c.certfile,
                    keyfile: c.keyfile,
                }
                .check("controller", std::slice::from_ref(&url), base)?;
                Ok(Some(ControlPlane::Controller {
                    url,
                    token_file: base.join(non_empty(&c.token_file, "controller.token_file")?),
                    tls,
                }))
            }
            (None, Some(e)) => {
                let endpoints = match e.endpoints {
                    None => return Err(ConfigError::missing(Doc::NodeConfig, "etcd.endpoints")),
                    Some(list) if list.is_empty() => {
                        return Err(invalid(
                            "etcd.endpoints",
                            "[]",
                            "must be a non-empty array of URLs",
                        ))
                    }
                    Some(list) => list
                        .iter()
                        .enumerate()
                        .map(|(i, s)| url(s, &format!("etcd.endpoints[{i}]")))
                        .collect::<Result<Vec<_>, _>>()?,
                };
                let prefix = e.prefix.as_deref().unwrap_or(DEFAULT_ETCD_PREFIX);
                if !prefix.starts_with('/') {
                    return Err(invalid(
                        "etcd.prefix",
                        format!("{prefix:?}"),
                        "must start with /",
                    ));
                }
                let tls = RawTls {
                    cafile: e.cafile,
                    certfile: e.certfile,
                    keyfile: e.keyfile,
                }
                .check("etcd", &endpoints, base)?;
                Ok(Some(ControlPlane::Etcd {
                    endpoints,
                    prefix: prefix.trim_end_matches('/').to_owned(),
                    tls,
                }))
            }
        }
    }
}

impl RawTls {
    /// Checks the TLS keys of `block` against its URLs: an `https://` one
    /// needs `cafile`; the keys are for `https://` URLs only; `certfile` and
    /// `keyfile` go together. Relative paths are taken relative to `base`.
    fn check(self, block: &str, urls: &[String], base: &Path) -> Result<ClientTls, ConfigError> {
        let path = |v: Option<String>, key: &str| -> Result<Option<PathBuf>, ConfigError> {
            v.map(|s| non_empty(&s, &format!("{block}.{key}")).map(|s| base.join(s)))
                .transpose()
        };
        let tls = ClientTls {
            ca_file: path(self.cafile, "cafile")?,
            cert_file: path(self.certfile, "certfile")?,
            key_file: path(self.keyfile, "keyfile")?,
        };
        match (&tls.cert_file, &tls.key_file) {
            (Some(_), None) => {
                return Err(ConfigError::missing(
                    Doc::NodeConfig,
                    format!("{block}.keyfile"),
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::missing(
                    Doc::NodeConfig,
                    format!("{block}.certfile"),
                ))
            }
            _ => {}
        }
        let https = urls.iter().find(|u| u.starts_with("https://"));
        match https {
            Some(u) if tls.ca_file.is_none() => Err(invalid(
                &format!("{block}.cafile"),
                "(none)",
                format!(
                    "is required for {u}: the CA that signed its certificate \
                     (the system's roots are not used)"
                ),
            )),
            None if !tls.is_empty() => Err(invalid(
                &format!("{block}.cafile"),
                "(given)",
                "TLS keys need an https:// URL",
            )),
            _ => Ok(tls),
        }
    }
}

impl LeaseOptions {
    /// Checks the lease keys (all optional); a relative `subnet_env` is
    /// taken relative to `base`.
    pub(crate) fn from_raw(raw: RawLease, base: &Path) -> Result<LeaseOptions, ConfigError> {
        let d = LeaseOptions::default();
        let ttl = secs(raw.lease_ttl_secs, "lease_ttl_secs")?.unwrap_or(d.ttl);
        if ttl > MAX_LEASE_TTL {
            // The controller would refuse every request.
            return Err(invalid(
                "lease_ttl_secs",
                ttl.as_secs().to_string(),
                format!(
                    "is above the maximum of {} (24 h, flannel's lease time)",
                    MAX_LEASE_TTL.as_secs()
                ),
            ));
        }
        let renew_margin = secs(raw.renew_margin_secs, "renew_margin_secs")?
            .unwrap_or(d.renew_margin.min(ttl / 2));
        if renew_margin >= ttl {
            return Err(invalid(
                "renew_margin_secs",
                renew_margin.as_secs().to_string(),
                format!("must be below lease_ttl_secs ({})", ttl.as_secs()),
            ));
        }
        let subnet_env = match raw.subnet_env {
            Some(s) => base.join(non_empty(&s, "subnet_env")?),
            None => d.subnet_env,
        };
        Ok(LeaseOptions {
            ttl,
            renew_margin,
            subnet_env,
            ip_masq: raw.ip_masq.unwrap_or(d.ip_masq),
        })
    }
}

fn invalid(field: &str, value: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::invalid(Doc::NodeConfig, field, value, reason)
}

fn non_empty<'a>(s: &'a str, field: &str) -> Result<&'a str, ConfigError> {
    if s.is_empty() {
        return Err(invalid(field, "\"\"", "must not be empty"));
    }
    Ok(s)
}

fn url(s: &str, field: &str) -> Result<String, ConfigError> {
    let ok = (s.starts_with("http://") || s.starts_with("https://"))
        && s.split("://").nth(1).is_some_and(|rest| !rest.is_empty());
    if ok {
        Ok(s.trim_end_matches('/').to_owned())
    } else {
        Err(invalid(
            field,
            format!("{s:?}"),
            "must be an http:// or https:// URL",
        ))
    }
}

/// A number of seconds above 0.
fn secs(v: Option<u64>, field: &str) -> Result<Option<Duration>, ConfigError> {
    match v {
        Some(0) => Err(invalid(
            field,
            "0",
            "must be a whole number of seconds above 0",
        )),
        v => Ok(v.map(Duration::from_secs)),
    }
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
