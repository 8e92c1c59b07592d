//! flannel's subnet lease, as stored in etcd: the key
//! `<prefix>/subnets/10.244.1.0-24` and the value
//!
//! ```json
//! {"PublicIP":"192.168.100.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}}
//! ```
//!
//! Copied from flannel's source:
//! - `pkg/lease/lease.go`, `LeaseAttrs`: `PublicIP`, then `PublicIPv6` (a
//!   pointer without `omitempty`, so IPv4-only nodes write `null`), then
//!   `BackendType`, `BackendData` and `BackendV6Data`, all `omitempty`.
//!   Leases written before flannel had IPv6 lack `PublicIPv6`; both read.
//! - `pkg/backend/vxlan/vxlan_network.go`, `vxlanLeaseAttrs`: `VNI` then
//!   `VtepMAC` (`net.HardwareAddr` text, lower-case, colon-separated).
//!   Older flannel wrote only `VtepMAC`; `vni` is then `None`.
//! - `pkg/backend/udp/udp_amd64.go`, `RegisterNetwork`: the udp backend sets
//!   no `BackendType` and no `BackendData`, so a udp lease is
//!   `{"PublicIP":"…","PublicIPv6":null}`. A lease without `BackendType` (or
//!   with `"udp"`) reads as udp.
//! - `pkg/backend/hostgw/hostgw.go`, `RegisterNetwork`: `BackendType`
//!   `"host-gw"` and no `BackendData`.
//! - `pkg/subnet/subnet.go`, `MakeSubnetKey` / `ParseSubnetKey`.
//!
//! IPv6 data (`PublicIPv6`, `BackendV6Data`, the `&fc00::-64` half of a
//! dual-stack key) is accepted and ignored. This module does no I/O.

use std::net::{Ipv4Addr, Ipv6Addr};

use encap::MacAddr;
use ipnet::Ipv4Net;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::backend::{BackendType, MAX_VNI};
use crate::error::{ConfigError, Doc};
use crate::gojson::{kind, Obj};

/// The backend part of a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaseBackend {
    /// `"BackendType":"vxlan"` with its `BackendData`.
    Vxlan {
        /// The VNI the node was configured with; `None` in leases from
        /// flannel versions that wrote only the MAC. flannel never reads it
        /// (the VNI is cluster-wide, from net-conf); note that flannel's
        /// field is a `uint16`, so VNIs above 65535 do not survive a flannel
        /// node.
        vni: Option<u32>,
        /// The node's VTEP MAC: the inner destination MAC toward it.
        vtep_mac: MacAddr,
    },
    /// The udp backend: no `BackendType`, no `BackendData`.
    Udp,
    /// `"BackendType":"host-gw"`, no `BackendData`.
    HostGw,
}

impl LeaseBackend {
    /// Which backend.
    pub fn kind(&self) -> BackendType {
        match self {
            LeaseBackend::Vxlan { .. } => BackendType::Vxlan,
            LeaseBackend::Udp => BackendType::Udp,
            LeaseBackend::HostGw => BackendType::HostGw,
        }
    }

    /// The VTEP MAC, for vxlan.
    pub fn vtep_mac(&self) -> Option<MacAddr> {
        match *self {
            LeaseBackend::Vxlan { vtep_mac, .. } => Some(vtep_mac),
            LeaseBackend::Udp | LeaseBackend::HostGw => None,
        }
    }
}

/// The value of a flannel subnet lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseAttrs {
    /// The node's underlay address, where tunnels to it are sent.
    pub public_ip: Ipv4Addr,
    /// Backend type and data.
    pub backend: LeaseBackend,
}

impl LeaseAttrs {
    /// Parses a lease value.
    pub fn parse(json: &str) -> Result<LeaseAttrs, ConfigError> {
        let v: Value = serde_json::from_str(json).map_err(|error| ConfigError::Json {
            doc: Doc::Lease,
            error,
        })?;
        LeaseAttrs::from_value(&v)
    }

    /// Reads a lease value from JSON, as Go's `encoding/json` fills flannel's
    /// `LeaseAttrs` (keys case-insensitive, unknown keys ignored).
    pub fn from_value(v: &Value) -> Result<LeaseAttrs, ConfigError> {
        let obj = Obj::new(Doc::Lease, "", "the document", v)?;
        let public_ip = obj
            .ipv4("PublicIP")?
            .ok_or_else(|| ConfigError::missing(Doc::Lease, "PublicIP"))?;
        let backend = match obj.string("BackendType")? {
            None | Some("") | Some("udp") => LeaseBackend::Udp,
            Some("vxlan") => vxlan_data(obj.get("BackendData")?)?,
            Some("host-gw") => LeaseBackend::HostGw,
            // flannel's vxlan backend compares "vxlan" exactly.
            Some(other) => {
                return Err(ConfigError::UnsupportedBackend {
                    doc: Doc::Lease,
                    ty: other.to_owned(),
                })
            }
        };
        Ok(LeaseAttrs { public_ip, backend })
    }

    /// The lease value exactly as flannel writes it (`json.Marshal` of its
    /// `LeaseAttrs`): compact, flannel's key order, `"PublicIPv6":null`.
    pub fn to_json(&self) -> String {
        let backend = match self.backend {
            LeaseBackend::Udp => String::new(),
            LeaseBackend::HostGw => ",\"BackendType\":\"host-gw\"".to_owned(),
            LeaseBackend::Vxlan { vni, vtep_mac } => {
                let vni = vni.map(|v| format!("\"VNI\":{v},")).unwrap_or_default();
                format!(",\"BackendType\":\"vxlan\",\"BackendData\":{{{vni}\"VtepMAC\":\"{vtep_mac}\"}}")
            }
        };
        format!(
            "{{\"PublicIP\":\"{}\",\"PublicIPv6\":null{backend}}}",
            self.public_ip
        )
    }
}

/// `BackendData` of a vxlan lease (flannel's `vxlanLeaseAttrs`).
fn vxlan_data(v: Option<&Value>) -> Result<LeaseBackend, ConfigError> {
    let v = match v {
        None | Some(Value::Null) => return Err(ConfigError::missing(Doc::Lease, "BackendData")),
        Some(v) => v,
    };
    let obj = Obj::new(Doc::Lease, "BackendData.", "BackendData", v)?;
    let vni = match obj.int("VNI")? {
        None => None,
        Some(n) => Some(u32::try_from(n).ok().filter(|v| *v <= MAX_VNI).ok_or(
            ConfigError::VniOutOfRange {
                doc: Doc::Lease,
                vni: n,
            },
        )?),
    };
    let vtep_mac = match obj.get("VtepMAC")? {
        None => return Err(ConfigError::missing(Doc::Lease, "BackendData.VtepMAC")),
        Some(v @ Value::String(s)) => parse_mac(s).ok_or_else(|| {
            ConfigError::invalid(
                Doc::Lease,
                "BackendData.VtepMAC",
                v.to_string(),
                "is not a MAC address",
            )
        })?,
        Some(v) => {
            return Err(ConfigError::invalid(
                Doc::Lease,
                "BackendData.VtepMAC",
                v.to_string(),
                format!("must be a MAC address string, not {}", kind(v)),
            ))
        }
    };
    Ok(LeaseBackend::Vxlan { vni, vtep_mac })
}

/// A 48-bit MAC in the forms Go's `net.ParseMAC` reads: `aa:bb:…` or
/// `aa-bb-…` (flannel itself writes the first).
pub(crate) fn parse_mac(s: &str) -> Option<MacAddr> {
    s.parse().ok().or_else(|| s.replace('-', ":").parse().ok())
}

impl Serialize for LeaseAttrs {
    /// flannel's JSON, as [`LeaseAttrs::to_json`].
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Wire {
            #[serde(rename = "PublicIP")]
            public_ip: Ipv4Addr,
            #[serde(rename = "PublicIPv6")]
            public_ipv6: Option<Ipv6Addr>,
            #[serde(skip_serializing_if = "Option::is_none")]
            backend_type: Option<&'static str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            backend_data: Option<WireVxlan>,
        }
        #[derive(Serialize)]
        struct WireVxlan {
            #[serde(rename = "VNI", skip_serializing_if = "Option::is_none")]
            vni: Option<u32>,
            #[serde(rename = "VtepMAC")]
            vtep_mac: String,
        }
        let (backend_type, backend_data) = match self.backend {
            LeaseBackend::Udp => (None, None),
            LeaseBackend::HostGw => (Some("host-gw"), None),
            LeaseBackend::Vxlan { vni, vtep_mac } => (
                Some("vxlan"),
                Some(WireVxlan {
                    vni,
                    vtep_mac: vtep_mac.to_string(),
                }),
            ),
        };
        Wire {
            public_ip: self.public_ip,
            public_ipv6: None,
            backend_type,
            backend_data,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for LeaseAttrs {
    /// flannel's semantics, as [`LeaseAttrs::parse`].
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        LeaseAttrs::from_value(&v).map_err(serde::de::Error::custom)
    }
}

/// The etcd key segment of a subnet lease: `10.244.1.0/24` → `10.244.1.0-24`
/// (flannel's `MakeSubnetKey` for an IPv4-only lease). Host bits of `s` are
/// cleared first, so the result always reads back with [`parse_subnet_key`].
pub fn subnet_key(s: &Ipv4Net) -> String {
    format!("{}-{}", s.network(), s.prefix_len())
}

/// Parses a subnet lease key: `10.244.1.0-24`, the full etcd key
/// `/coreos.com/network/subnets/10.244.1.0-24`, or a dual-stack key
/// `10.244.1.0-24&fc00:0:0:1::-64` (the IPv6 half is checked and dropped).
///
/// As flannel's `ParseSubnetKey`, the prefix length must fit in 5 bits
/// (0 to 31). Unlike it, a key with host bits set is refused.
pub fn parse_subnet_key(key: &str) -> Result<Ipv4Net, ConfigError> {
    let bad =
        |reason: &str| ConfigError::invalid(Doc::Lease, "subnet key", format!("{key:?}"), reason);
    let last = key.rsplit('/').next().unwrap_or(key);
    let (v4, v6) = match last.split_once('&') {
        Some((v4, v6)) => (v4, Some(v6)),
        None => (last, None),
    };
    let (addr, len) = v4
        .rsplit_once('-')
        .ok_or_else(|| bad("want <IPv4 address>-<prefix length>"))?;
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| bad("does not start with an IPv4 address"))?;
    let len = prefix_len(len, 31).ok_or_else(|| bad("prefix length must be 0 to 31"))?;
    if let Some(v6) = v6 {
        let ok = v6
            .rsplit_once('-')
            .is_some_and(|(a, l)| a.parse::<Ipv6Addr>().is_ok() && prefix_len(l, 127).is_some());
        if !ok {
            return Err(bad(
                "the part after '&' is not <IPv6 address>-<prefix length>",
            ));
        }
    }
    let net = Ipv4Net::new(addr, len).map_err(|_| bad("prefix length must be 0 to 31"))?;
    if net.addr() != net.network() {
        return Err(bad(&format!(
            "host bits are set (the subnet would be {})",
            net.trunc()
        )));
    }
    Ok(net)
}

/// Decimal digits only (`\d+` in flannel's regex), at most `max`.
fn prefix_len(s: &str, max: u8) -> Option<u8> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u8>().ok().filter(|l| *l <= max)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddr = MacAddr([0xc6, 0xd2, 0x32, 0x6f, 0x8f, 0x44]);

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn vxlan_lease_round_trips_byte_for_byte() {
        // etcdctl output of flannel v0.2x (Documentation/building.md).
        let text = r#"{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#;
        let l = LeaseAttrs::parse(text).unwrap();
        assert_eq!(
            l,
            LeaseAttrs {
                public_ip: Ipv4Addr::new(192, 168, 64, 3),
                backend: LeaseBackend::Vxlan {
                    vni: Some(1),
                    vtep_mac: MAC
                },
            }
        );
        assert_eq!(l.to_json(), text);
        assert_eq!(serde_json::to_string(&l).unwrap(), text);
        assert_eq!(serde_json::from_str::<LeaseAttrs>(text).unwrap(), l);
        assert_eq!(l.backend.kind(), BackendType::Vxlan);
        assert_eq!(l.backend.vtep_mac(), Some(MAC));
    }

    #[test]
    fn udp_lease_round_trips_byte_for_byte() {
        let text = r#"{"PublicIP":"10.168.0.95","PublicIPv6":null}"#;
        let l = LeaseAttrs::parse(text).unwrap();
        assert_eq!(
            l,
            LeaseAttrs {
                public_ip: Ipv4Addr::new(10, 168, 0, 95),
                backend: LeaseBackend::Udp
            }
        );
        assert_eq!(l.to_json(), text);
        assert_eq!(serde_json::to_string(&l).unwrap(), text);
        let l = LeaseAttrs::parse(
            r#"{"PublicIP":"10.168.0.95","BackendType":"udp","BackendData":null}"#,
        )
        .unwrap();
        assert_eq!(l.backend, LeaseBackend::Udp);
        assert_eq!(l.backend.vtep_mac(), None);
    }

    #[test]
    fn older_flannel_leases_read() {
        // Before IPv6: no PublicIPv6.
        let l = LeaseAttrs::parse(
            r#"{"PublicIP":"192.168.100.1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}}"#,
        )
        .unwrap();
        assert_eq!(l.public_ip, Ipv4Addr::new(192, 168, 100, 1));
        assert_eq!(
            l.backend.vtep_mac(),
            Some("aa:bb:cc:dd:ee:ff".parse().unwrap())
        );
        // Before the VNI was in the lease: only VtepMAC; written back as is.
        let old = r#"{"PublicIP":"10.0.77.17","BackendType":"vxlan","BackendData":{"VtepMAC":"8e:97:d5:fa:36:ef"}}"#;
        let l = LeaseAttrs::parse(old).unwrap();
        assert!(matches!(l.backend, LeaseBackend::Vxlan { vni: None, .. }));
        assert_eq!(
            l.to_json(),
            r#"{"PublicIP":"10.0.77.17","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VtepMAC":"8e:97:d5:fa:36:ef"}}"#
        );
        assert_eq!(serde_json::to_string(&l).unwrap(), l.to_json());
    }

    #[test]
    fn dual_stack_and_case_insensitive_leases_read() {
        let l = LeaseAttrs::parse(
            r#"{"publicip":"192.168.1.2","PublicIPv6":"fd00::2","backendtype":"vxlan",
                "backenddata":{"vni":1,"vtepmac":"0A-58-0A-F4-01-01"},
                "BackendV6Data":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}}"#,
        )
        .unwrap();
        assert_eq!(l.public_ip, Ipv4Addr::new(192, 168, 1, 2));
        assert_eq!(
            l.backend.vtep_mac(),
            Some(MacAddr([0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x01]))
        );
    }

    #[test]
    fn a_host_gw_lease_is_flannels_without_backend_data() {
        let text = r#"{"PublicIP":"192.168.1.2","PublicIPv6":null,"BackendType":"host-gw"}"#;
        let l = LeaseAttrs::parse(text).unwrap();
        assert_eq!(l.backend, LeaseBackend::HostGw);
        assert_eq!(l.backend.vtep_mac(), None);
        assert_eq!(l.to_json(), text);
        assert_eq!(serde_json::to_string(&l).unwrap(), text);
    }

    #[test]
    fn bad_leases_are_refused() {
        let e = |s: &str| LeaseAttrs::parse(s).unwrap_err();
        assert!(matches!(
            e(r#"{"BackendType":"udp"}"#),
            ConfigError::Missing { .. }
        ));
        assert!(matches!(
            e(r#"{"PublicIP":null}"#),
            ConfigError::Invalid { .. }
        ));
        assert!(matches!(
            e(r#"{"PublicIP":"fd00::1"}"#),
            ConfigError::Invalid { .. }
        ));
        let other = e(r#"{"PublicIP":"1.2.3.4","BackendType":"ipip"}"#);
        assert!(
            matches!(&other, ConfigError::UnsupportedBackend { doc: Doc::Lease, ty } if ty == "ipip")
        );
        assert!(
            other
                .to_string()
                .starts_with("lease: backend type \"ipip\""),
            "{other}"
        );
        assert!(matches!(
            e(r#"{"PublicIP":"1.2.3.4","BackendType":"vxlan"}"#),
            ConfigError::Missing { .. }
        ));
        assert!(matches!(
            e(r#"{"PublicIP":"1.2.3.4","BackendType":"vxlan","BackendData":{"VNI":1}}"#),
            ConfigError::Missing { .. }
        ));
        for data in [
            r#"{"VtepMAC":"aa:bb"}"#,
            r#"{"VtepMAC":null}"#,
            r#"{"VtepMAC":7}"#,
            "[]",
        ] {
            let err = e(&format!(
                r#"{{"PublicIP":"1.2.3.4","BackendType":"vxlan","BackendData":{data}}}"#
            ));
            assert!(matches!(err, ConfigError::Invalid { .. }), "{data}: {err}");
        }
        let err = e(
            r#"{"PublicIP":"1.2.3.4","BackendType":"vxlan","BackendData":{"VNI":16777216,"VtepMAC":"aa:bb:cc:dd:ee:ff"}}"#,
        );
        assert!(matches!(
            err,
            ConfigError::VniOutOfRange {
                doc: Doc::Lease,
                ..
            }
        ));
        assert!(matches!(
            e("not json"),
            ConfigError::Json {
                doc: Doc::Lease,
                ..
            }
        ));
    }

    #[test]
    fn subnet_key_round_trip() {
        for s in [
            "10.244.1.0/24",
            "10.0.0.0/8",
            "192.168.100.64/26",
            "0.0.0.0/0",
            "10.1.2.4/30",
            "10.1.2.4/31",
        ] {
            let n = net(s);
            let k = subnet_key(&n);
            assert_eq!(parse_subnet_key(&k).unwrap(), n, "{k}");
        }
        assert_eq!(subnet_key(&net("10.244.1.0/24")), "10.244.1.0-24");
        assert_eq!(subnet_key(&net("10.244.1.9/24")), "10.244.1.0-24");
        assert_eq!(
            parse_subnet_key("/coreos.com/network/subnets/10.244.1.0-24").unwrap(),
            net("10.244.1.0/24")
        );
        assert_eq!(
            parse_subnet_key("10.244.1.0-24&fc00:0:0:1::-64").unwrap(),
            net("10.244.1.0/24")
        );
    }

    #[test]
    fn bad_subnet_keys_are_refused() {
        for k in [
            "",
            "10.244.1.0",
            "10.244.1.0/24",
            "10.244.1-24",
            "10.244.1.0-",
            "10.244.1.0-+24",
            "10.244.1.0-32",
            "10.244.1.0-99",
            "10.244.1.5-24",
            "fc00::-64",
            "10.244.1.0-24&fc00::",
            "10.244.1.0-24&fc00::-200",
        ] {
            let e = parse_subnet_key(k).unwrap_err();
            assert!(
                matches!(&e, ConfigError::Invalid { doc: Doc::Lease, field, .. } if field == "subnet key"),
                "{k}"
            );
        }
        let e = parse_subnet_key("10.244.1.5-24").unwrap_err();
        assert_eq!(
            e.to_string(),
            "lease: subnet key \"10.244.1.5-24\" is invalid: host bits are set (the subnet would be 10.244.1.0/24)"
        );
    }
}
