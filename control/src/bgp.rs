//! The node configuration's `bgp` block: routing without encapsulation by
//! BGP, Calico's model. The node announces its pod subnet to its BGP peers
//! and learns the other nodes' subnets from them: either a full iBGP mesh
//! between the nodes of the node table (`mesh`), or sessions with
//! configured routers (a top-of-rack router, a route reflector), or both.
//!
//! ```json
//! "bgp": { "asn": 64512, "mesh": false, "hold_time_secs": 90,
//!          "peers": [ { "address": "192.168.1.254", "asn": 65000,
//!                       "password": "optional" } ] }
//! ```
//!
//! Only the values live here; the agent turns them into BIRD's
//! configuration (`src/agent/bgp.rs`).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{ConfigError, Doc};

/// The hold time when none is configured: RFC 4271's suggested value,
/// also FRR's and most routers' default (BIRD's own is 240 s). A cleanly
/// stopped node is withdrawn at once (BIRD closes its sessions); the hold
/// time bounds how long a crashed node's subnet is still announced.
pub const DEFAULT_HOLD_TIME_SECS: u16 = 90;
/// The BIRD executable when none is configured (Debian's `bird2`).
pub const DEFAULT_BIRD: &str = "/usr/sbin/bird";
/// The longest TCP MD5 key Linux takes (`TCP_MD5SIG_MAXKEYLEN`).
pub const MAX_PASSWORD_LEN: usize = 80;

/// `bgp` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBgp {
    asn: u64,
    mesh: Option<bool>,
    peers: Option<Vec<RawBgpPeer>>,
    hold_time_secs: Option<u64>,
    bird: Option<String>,
}

/// One of `bgp.peers`, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBgpPeer {
    address: String,
    asn: u64,
    password: Option<String>,
}

/// The BGP settings, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BgpConfig {
    /// This node's AS number (the mesh's too: it is internal BGP).
    pub asn: u32,
    /// A session with every other node of the node table, at its public
    /// IP, kept in step with the table.
    pub mesh: bool,
    /// Configured routers.
    pub peers: Vec<BgpPeer>,
    /// The hold time proposed to every peer (the session uses the smaller
    /// of both sides').
    pub hold_time_secs: u16,
    /// The BIRD executable.
    pub bird: PathBuf,
}

/// A configured BGP peer (a router, not a node of the table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpPeer {
    /// Its address.
    pub address: Ipv4Addr,
    /// Its AS number: ours makes the session internal.
    pub asn: u32,
    /// The TCP MD5 password (RFC 2385), if the peer wants one.
    pub password: Option<String>,
}

fn bad(field: &str, value: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::invalid(Doc::NodeConfig, field, value, reason)
}

/// An AS number: 1 to 4294967294 (0 and 4294967295 are reserved, RFC
/// 7300), a 4-octet one allowed.
fn check_asn(asn: u64, field: &str) -> Result<u32, ConfigError> {
    u32::try_from(asn)
        .ok()
        .filter(|a| (1..=4_294_967_294).contains(a))
        .ok_or_else(|| {
            bad(
                field,
                asn.to_string(),
                "must be an AS number, 1 to 4294967294",
            )
        })
}

impl RawBgp {
    /// Checks the block; `public_ip` is this node's (it cannot be its own
    /// peer).
    pub(crate) fn check(self, base: &Path, public_ip: Ipv4Addr) -> Result<BgpConfig, ConfigError> {
        let asn = check_asn(self.asn, "bgp.asn")?;
        let hold_time_secs = match self.hold_time_secs {
            None => DEFAULT_HOLD_TIME_SECS,
            // RFC 4271 4.2: zero (no keepalives) or at least three seconds.
            Some(h) => u16::try_from(h).ok().filter(|h| *h >= 3).ok_or_else(|| {
                bad(
                    "bgp.hold_time_secs",
                    h.to_string(),
                    "must be 3 to 65535 (RFC 4271)",
                )
            })?,
        };
        let mut peers: Vec<BgpPeer> = Vec::new();
        for (i, p) in self.peers.unwrap_or_default().into_iter().enumerate() {
            let at = |k: &str| format!("bgp.peers[{i}].{k}");
            let address: Ipv4Addr = p.address.parse().map_err(|_| {
                bad(
                    &at("address"),
                    format!("{:?}", p.address),
                    "is not an IPv4 address",
                )
            })?;
            if address.is_unspecified()
                || address.is_broadcast()
                || address.is_multicast()
                || address.is_loopback()
            {
                return Err(bad(
                    &at("address"),
                    format!("\"{address}\""),
                    "is not a unicast address of another host",
                ));
            }
            if address == public_ip {
                return Err(bad(
                    &at("address"),
                    format!("\"{address}\""),
                    "is this node's own public_ip",
                ));
            }
            if let Some(j) = peers.iter().position(|q| q.address == address) {
                return Err(ConfigError::Duplicate {
                    field: at("address"),
                    value: format!("\"{address}\""),
                    first: format!("bgp.peers[{j}].address"),
                });
            }
            let asn = check_asn(p.asn, &at("asn"))?;
            if let Some(pw) = &p.password {
                // It goes into BIRD's configuration between quotes.
                if pw.is_empty()
                    || pw.len() > MAX_PASSWORD_LEN
                    || pw.chars().any(|c| c.is_control() || c == '"' || c == '\\')
                {
                    return Err(bad(
                        &at("password"),
                        "(not shown)",
                        format!(
                            "must be 1 to {MAX_PASSWORD_LEN} bytes without quotes, \
                             backslashes or control characters"
                        ),
                    ));
                }
            }
            peers.push(BgpPeer {
                address,
                asn,
                password: p.password,
            });
        }
        let mesh = self.mesh.unwrap_or(false);
        if !mesh && peers.is_empty() {
            return Err(bad(
                "bgp.peers",
                "[]",
                "names no peer and `bgp.mesh` is off: the node would announce its subnet to nobody",
            ));
        }
        let bird = match self.bird {
            None => PathBuf::from(DEFAULT_BIRD),
            Some(b) if b.is_empty() => return Err(bad("bgp.bird", "\"\"", "must not be empty")),
            Some(b) => base.join(b),
        };
        Ok(BgpConfig {
            asn,
            mesh,
            peers,
            hold_time_secs,
            bird,
        })
    }
}
