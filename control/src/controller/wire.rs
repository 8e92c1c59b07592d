//! The controller's HTTP API as data: the bodies that are not already
//! store types, shared by the server (`super::http`) and the client
//! (`crate::client`). See the module docs of [`crate::controller`] for the
//! endpoints.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::lease::LeaseAttrs;

/// The path prefix of every endpoint.
pub const PREFIX: &str = "/v1";

/// The content type of the watch stream: one JSON document per line.
pub const NDJSON: &str = "application/x-ndjson";

/// The largest body `PUT /v1/objects/…` takes, and the largest object as
/// stored (compact JSON, which can be longer than the body: `1e9` is
/// stored as `1000000000.0`); 413 above it.
pub const MAX_OBJECT_BYTES: usize = 1 << 20;

/// Answer of `PUT /v1/objects/{resource}/{namespace}/{name}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutAnswer {
    /// The revision of the change (of the stored object's last change,
    /// when the value was already stored).
    pub revision: u64,
}

/// Body of `PUT /v1/leases/{subnet-key}`: extend the lease and, with
/// `attrs`, rewrite its value. Give `attrs` or `public_ip` (the holder);
/// with both, they must name the same public IP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewRequest {
    /// The lease's new value (its public IP names the holder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attrs: Option<LeaseAttrs>,
    /// The holder's public IP, when the value stays as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_ip: Option<Ipv4Addr>,
    /// The new time to live, from now.
    pub ttl_secs: u64,
}

impl RenewRequest {
    /// The lease's holder the request names: `attrs`' public IP or
    /// `public_ip`; an error message (a 400) when it names none, or two
    /// that differ.
    pub fn holder(&self) -> Result<Ipv4Addr, String> {
        match (self.attrs, self.public_ip) {
            (Some(a), Some(ip)) if a.public_ip != ip => Err(format!(
                "attrs.PublicIP {} and public_ip {ip} differ",
                a.public_ip
            )),
            (Some(a), _) => Ok(a.public_ip),
            (None, Some(ip)) => Ok(ip),
            (None, None) => Err("give attrs or public_ip: the lease's holder".to_owned()),
        }
    }
}

/// Query of `DELETE /v1/leases/{subnet-key}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseQuery {
    /// The holder: the lease is removed only if this public IP holds it.
    pub public_ip: Ipv4Addr,
}

/// Query of `GET /v1/watch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchQuery {
    /// Stream the changes with a revision above this one.
    pub after: u64,
}

/// What kind of error an error body reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// 400: the request is malformed.
    BadRequest,
    /// 401: missing or wrong bearer token.
    Unauthorized,
    /// 404: no such endpoint, or (with `key`) no such object.
    NotFound,
    /// 400: a cluster object does not match its key (or its kind).
    InvalidObject,
    /// 507: the controller holds as many cluster objects as it may (with
    /// `limit`).
    TooManyObjects,
    /// 409: the lease is not (or no longer) held by that public IP.
    LeaseLost,
    /// 410: the history to watch from is gone; re-list.
    Compacted,
    /// 500: a bug.
    Internal,
    /// 503: the change could not be made durable, or the controller is
    /// stopping; retry.
    Unavailable,
    /// 507: every subnet is leased.
    OutOfSubnets,
    /// A code this client does not know.
    #[serde(other)]
    Unknown,
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A message for people.
    pub error: String,
    /// What kind of error.
    pub code: ErrorCode,
    /// `lease_lost`: the subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<Ipv4Net>,
    /// `out_of_subnets`: the cluster network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Ipv4Net>,
    /// `out_of_subnets`: the subnet length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_len: Option<u8>,
    /// `out_of_subnets`: how many subnets there are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// `compacted`: the revision asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<u64>,
    /// `compacted`: the oldest revision a watch can start from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest: Option<u64>,
    /// `not_found` of an object: its key below the prefix
    /// (`services/default/web`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `too_many_objects`: the limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// `bad_request` about one field of the body: its path
    /// (`attrs.PublicIP`, `ttl_secs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ErrorBody {
    /// A body with only a message and a code.
    pub fn new(code: ErrorCode, error: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: error.into(),
            code,
            subnet: None,
            network: None,
            subnet_len: None,
            count: None,
            requested: None,
            oldest: None,
            key: None,
            limit: None,
            field: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::LeaseBackend;

    #[test]
    fn a_renewal_names_one_holder() {
        let ip = Ipv4Addr::new(192, 168, 100, 2);
        let other = Ipv4Addr::new(192, 168, 100, 3);
        let attrs = LeaseAttrs {
            public_ip: ip,
            backend: LeaseBackend::Udp,
        };
        let req = |attrs, public_ip| RenewRequest {
            attrs,
            public_ip,
            ttl_secs: 60,
        };
        assert_eq!(req(Some(attrs), None).holder(), Ok(ip));
        assert_eq!(req(None, Some(other)).holder(), Ok(other));
        assert_eq!(req(Some(attrs), Some(ip)).holder(), Ok(ip));
        assert!(req(Some(attrs), Some(other)).holder().is_err());
        assert!(req(None, None).holder().is_err());
    }
}
