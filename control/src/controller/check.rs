//! What the controller accepts from a node, field by field, before the
//! registry sees it: the checks behind every 400 that names a field. No
//! I/O, no clock.
//!
//! The lease value is already well-formed when it gets here (the parser
//! refuses a VNI beyond 24 bits, a MAC that is no MAC, an unknown backend);
//! these checks refuse what parses but cannot be a node's:
//!
//! - a public IP in 0.0.0.0/8, 127.0.0.0/8, 224.0.0.0/4 (multicast) or
//!   240.0.0.0/4 (reserved, and 255.255.255.255): no other node can send a
//!   tunnel there. Loopback is refused too: nothing in twill's tests or lab
//!   leases one, and a node that did would make every peer tunnel to
//!   itself. Link-local (169.254.0.0/16) is accepted: nodes on one link
//!   can reach each other at such an address.
//! - a VTEP MAC that is multicast (group bit set, which includes the
//!   broadcast address) or all zero: inner frames to it would flood;
//! - a TTL of 0 or above [`MAX_LEASE_TTL`] (flannel's own lease lives
//!   24 h, and an expiration years away would outlive a dead node).
//!
//! `previous` is not checked: a subnet from an older network config is
//! legitimately ignored by the registry. The `public_ip` of a release is
//! not either: it is only compared with the holder, never stored, and a
//! lease stored before these checks must still be releasable.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::error::{ConfigError, Doc};
use crate::lease::{LeaseAttrs, LeaseBackend};
use crate::store::{AcquireRequest, MAX_LEASE_TTL};

use super::wire::RenewRequest;

/// Checks a `POST /v1/leases` body.
pub(crate) fn acquire(req: &AcquireRequest) -> Result<(), ConfigError> {
    attrs(&req.attrs, "attrs")?;
    ttl(req.ttl_secs)
}

/// Checks a `PUT /v1/leases/{key}` body.
pub(crate) fn renew(req: &RenewRequest) -> Result<(), ConfigError> {
    if let Some(a) = &req.attrs {
        attrs(a, "attrs")?;
    }
    if let Some(ip) = req.public_ip {
        public_ip(ip, "public_ip")?;
    }
    ttl(req.ttl_secs)
}

/// Checks a lease value; `at` is where it is in the body.
fn attrs(a: &LeaseAttrs, at: &str) -> Result<(), ConfigError> {
    public_ip(a.public_ip, &format!("{at}.PublicIP"))?;
    if let LeaseBackend::Vxlan { vtep_mac, .. } = a.backend {
        let why = if vtep_mac.is_multicast() {
            Some("is a multicast MAC (its group bit is set): a VTEP MAC must be unicast")
        } else if vtep_mac == encap::MacAddr::ZERO {
            Some("is the all-zero MAC: a VTEP MAC must be unicast")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(invalid(
                &format!("{at}.BackendData.VtepMAC"),
                format!("\"{vtep_mac}\""),
                why,
            ));
        }
    }
    Ok(())
}

/// Why `ip` cannot be the underlay address of a node, if it cannot.
pub(crate) fn not_a_node_address(ip: Ipv4Addr) -> Option<&'static str> {
    let first = ip.octets()[0];
    if first == 0 {
        Some("is in 0.0.0.0/8 (\"this host\"), which no other node can reach")
    } else if ip.is_loopback() {
        Some("is a loopback address: every peer would tunnel to itself")
    } else if ip.is_multicast() {
        Some("is a multicast address")
    } else if ip.is_broadcast() {
        Some("is the broadcast address")
    } else if first >= 240 {
        Some("is in the reserved range 240.0.0.0/4")
    } else {
        None
    }
}

fn public_ip(ip: Ipv4Addr, field: &str) -> Result<(), ConfigError> {
    match not_a_node_address(ip) {
        Some(why) => Err(invalid(
            field,
            format!("\"{ip}\""),
            format!("{why}; a node's public IP must be a unicast address other nodes can reach"),
        )),
        None => Ok(()),
    }
}

fn ttl(secs: u64) -> Result<(), ConfigError> {
    let max = MAX_LEASE_TTL.as_secs();
    if secs == 0 {
        Err(invalid("ttl_secs", "0", "must be at least 1"))
    } else if Duration::from_secs(secs) > MAX_LEASE_TTL {
        Err(invalid(
            "ttl_secs",
            secs.to_string(),
            format!("is above the maximum of {max} (24 h, flannel's lease time)"),
        ))
    } else {
        Ok(())
    }
}

fn invalid(field: &str, value: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::invalid(Doc::Lease, field, value, reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use encap::MacAddr;

    fn req(ip: [u8; 4], mac: [u8; 6], ttl_secs: u64) -> AcquireRequest {
        AcquireRequest {
            attrs: LeaseAttrs {
                public_ip: Ipv4Addr::from(ip),
                backend: LeaseBackend::Vxlan {
                    vni: Some(1),
                    vtep_mac: MacAddr(mac),
                },
            },
            previous: None,
            ttl_secs,
        }
    }

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

    fn field(e: ConfigError) -> String {
        match e {
            ConfigError::Invalid { field, .. } => field,
            other => panic!("{other}"),
        }
    }

    #[test]
    fn node_addresses_pass() {
        for ip in [
            [192, 168, 100, 1],
            [10, 0, 0, 1],
            [172, 16, 0, 1],
            [169, 254, 1, 2],
            [1, 1, 1, 1],
            [223, 255, 255, 254],
        ] {
            assert_eq!(acquire(&req(ip, MAC, 86_400)).ok(), Some(()), "{ip:?}");
        }
    }

    #[test]
    fn addresses_no_node_can_have_are_refused() {
        for ip in [
            [0, 0, 0, 0],
            [0, 1, 2, 3],
            [127, 0, 0, 1],
            [224, 0, 0, 1],
            [239, 1, 1, 1],
            [240, 0, 0, 1],
            [255, 255, 255, 255],
        ] {
            let e = acquire(&req(ip, MAC, 60)).unwrap_err();
            assert!(e.to_string().starts_with("lease: attrs.PublicIP \""), "{e}");
            assert_eq!(field(e), "attrs.PublicIP", "{ip:?}");
        }
    }

    #[test]
    fn ttls_beyond_the_maximum_are_refused() {
        for t in [0, 86_401, u64::MAX] {
            assert_eq!(
                field(acquire(&req([10, 0, 0, 1], MAC, t)).unwrap_err()),
                "ttl_secs"
            );
        }
        assert!(acquire(&req([10, 0, 0, 1], MAC, 1)).is_ok());
    }

    #[test]
    fn group_and_zero_vtep_macs_are_refused() {
        for mac in [[0xff; 6], [1, 0, 0x5e, 0, 0, 1], [0; 6]] {
            let e = acquire(&req([10, 0, 0, 1], mac, 60)).unwrap_err();
            assert_eq!(field(e), "attrs.BackendData.VtepMAC", "{mac:?}");
        }
    }

    #[test]
    fn a_renewal_is_checked_field_by_field() {
        let ok = RenewRequest {
            attrs: Some(req([10, 0, 0, 1], MAC, 60).attrs),
            public_ip: None,
            ttl_secs: 60,
        };
        assert!(renew(&ok).is_ok());
        let bare = RenewRequest {
            attrs: None,
            public_ip: Some(Ipv4Addr::UNSPECIFIED),
            ttl_secs: 60,
        };
        assert_eq!(field(renew(&bare).unwrap_err()), "public_ip");
        let long = RenewRequest {
            ttl_secs: u64::MAX,
            ..ok.clone()
        };
        assert_eq!(field(renew(&long).unwrap_err()), "ttl_secs");
        let zero_ip = RenewRequest {
            attrs: Some(req([0, 0, 0, 0], MAC, 60).attrs),
            ..ok
        };
        assert_eq!(field(renew(&zero_ip).unwrap_err()), "attrs.PublicIP");
    }
}
