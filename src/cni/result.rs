//! CNI results: the ADD result in the format of each supported version, and
//! the comparison of CHECK's `prevResult` with what the agent holds.
//!
//! The formats differ little: 0.3.0 to 0.4.0 give every `ips` entry a
//! `version` ("4"), 1.0.0 drops it, 1.1.0 adds the optional `mtu` of an
//! interface. twill's result has one interface (the pod's, in its sandbox),
//! one address with the gateway, and the default route via the gateway.

use serde_json::{json, Map, Value};

use super::spec::{code, ips_have_version, version_at_least, CniError};
use crate::api::Attachment;

/// The ADD result for `att` in the format of `version`.
pub fn add_result(version: &str, att: &Attachment) -> Value {
    let mut iface = Map::new();
    iface.insert("name".into(), att.ifname.clone().into());
    iface.insert("mac".into(), att.mac.clone().into());
    iface.insert("sandbox".into(), att.netns.clone().into());
    if version_at_least(version, "1.1.0") {
        iface.insert("mtu".into(), att.mtu.into());
    }
    let mut ip = Map::new();
    if ips_have_version(version) {
        ip.insert("version".into(), "4".into());
    }
    ip.insert("address".into(), att.ip.clone().into());
    ip.insert("gateway".into(), att.gateway.clone().into());
    ip.insert("interface".into(), 0.into());
    json!({
        "cniVersion": version,
        "interfaces": [Value::Object(iface)],
        "ips": [Value::Object(ip)],
        "routes": [ { "dst": "0.0.0.0/0", "gw": att.gateway } ],
        "dns": {},
    })
}

/// Checks that `prev` (CHECK's `prevResult`) lists the interface and the
/// address the agent holds for `att`. Other entries (a later plugin's) and
/// routes (a later plugin may change them) are not judged.
pub fn check_prev_result(prev: &Value, att: &Attachment) -> Result<(), CniError> {
    let fail = |why: String| CniError::new(code::CHECK_FAILED, why);
    let ifaces = prev
        .get("interfaces")
        .and_then(Value::as_array)
        .ok_or_else(|| fail("prevResult lists no interfaces".into()))?;
    let idx = ifaces
        .iter()
        .position(|i| {
            i.get("name").and_then(Value::as_str) == Some(att.ifname.as_str())
                && i.get("sandbox")
                    .and_then(Value::as_str)
                    .is_some_and(|s| s.is_empty() || s == att.netns)
        })
        .ok_or_else(|| {
            fail(format!(
                "prevResult has no interface {} in {}",
                att.ifname, att.netns
            ))
        })?;
    let mac = ifaces[idx].get("mac").and_then(Value::as_str);
    if let Some(mac) = mac.filter(|m| !m.eq_ignore_ascii_case(&att.mac)) {
        return Err(fail(format!(
            "prevResult says {} has MAC {mac}, the agent {}",
            att.ifname, att.mac
        )));
    }
    let ips = prev
        .get("ips")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let listed = ips.iter().any(|ip| {
        ip.get("address").and_then(Value::as_str) == Some(att.ip.as_str())
            && ip
                .get("interface")
                .and_then(Value::as_u64)
                .is_none_or(|i| i == idx as u64)
    });
    if !listed {
        return Err(fail(format!(
            "prevResult does not list {} on {}: the agent holds that address for it",
            att.ip, att.ifname
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn att() -> Attachment {
        Attachment {
            id: "cni/twill/c1/eth0".into(),
            netns: "/run/netns/p1".into(),
            ifname: "eth0".into(),
            mac: "0a:58:0a:f4:01:03".into(),
            ip: "10.244.1.3/24".into(),
            gateway: "10.244.1.1".into(),
            mtu: 1450,
            cni: None,
            port_security: crate::api::PortSecurity::default(),
            pod: None,
        }
    }

    #[test]
    fn result_per_version() {
        let v031 = add_result("0.3.1", &att());
        assert_eq!(
            v031,
            json!({
                "cniVersion": "0.3.1",
                "interfaces": [{ "name": "eth0", "mac": "0a:58:0a:f4:01:03", "sandbox": "/run/netns/p1" }],
                "ips": [{ "version": "4", "address": "10.244.1.3/24", "gateway": "10.244.1.1", "interface": 0 }],
                "routes": [{ "dst": "0.0.0.0/0", "gw": "10.244.1.1" }],
                "dns": {}
            })
        );
        for v in ["0.3.0", "0.4.0"] {
            assert_eq!(add_result(v, &att())["ips"][0]["version"], "4");
            assert!(add_result(v, &att())["interfaces"][0].get("mtu").is_none());
        }
        let v100 = add_result("1.0.0", &att());
        assert!(v100["ips"][0].get("version").is_none(), "{v100}");
        assert!(v100["interfaces"][0].get("mtu").is_none(), "{v100}");
        let v110 = add_result("1.1.0", &att());
        assert!(v110["ips"][0].get("version").is_none(), "{v110}");
        assert_eq!(v110["interfaces"][0]["mtu"], 1450);
        assert_eq!(v110["cniVersion"], "1.1.0");
    }

    #[test]
    fn check_accepts_own_result_and_chained_additions() {
        for v in ["0.4.0", "1.0.0", "1.1.0"] {
            let mut prev = add_result(v, &att());
            check_prev_result(&prev, &att()).unwrap();
            // A later plugin added a host-side interface and a route.
            prev["interfaces"]
                .as_array_mut()
                .unwrap()
                .insert(0, json!({ "name": "cni0", "mac": "aa:bb:cc:dd:ee:ff" }));
            prev["ips"][0]["interface"] = 1.into();
            prev["routes"]
                .as_array_mut()
                .unwrap()
                .push(json!({ "dst": "10.96.0.0/12" }));
            check_prev_result(&prev, &att()).unwrap();
        }
    }

    #[test]
    fn check_rejects_what_differs() {
        let good = add_result("1.0.0", &att());
        let mut other_ip = good.clone();
        other_ip["ips"][0]["address"] = "10.244.1.9/24".into();
        let mut other_mac = good.clone();
        other_mac["interfaces"][0]["mac"] = "0a:58:0a:f4:01:09".into();
        let mut other_ns = good.clone();
        other_ns["interfaces"][0]["sandbox"] = "/run/netns/p2".into();
        let no_ifaces = json!({ "cniVersion": "1.0.0", "ips": [] });
        for bad in [other_ip, other_mac, other_ns, no_ifaces] {
            let e = check_prev_result(&bad, &att()).unwrap_err();
            assert_eq!(e.code, code::CHECK_FAILED, "{bad}");
        }
        // MAC case does not matter.
        let mut upper = good;
        upper["interfaces"][0]["mac"] = "0A:58:0A:F4:01:03".into();
        check_prev_result(&upper, &att()).unwrap();
    }
}
