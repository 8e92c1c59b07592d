use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use super::*;
use crate::node::NodeConfig;

fn with_controller() -> Value {
    json!({
        "name": "node-a", "public_ip": "192.168.100.1",
        "controller": { "url": "http://10.0.0.1:8765/", "token_file": "token" },
    })
}

fn parse(v: &Value) -> Result<NodeConfig, ConfigError> {
    NodeConfig::parse(&v.to_string(), "/etc/twill")
}

fn fails(f: impl FnOnce(&mut Value)) -> String {
    let mut v = with_controller();
    f(&mut v);
    match parse(&v) {
        Ok(c) => panic!("accepted {v}: {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn controller_config_parses_with_defaults() {
    let c = parse(&with_controller()).unwrap();
    assert_eq!(
        c.control,
        Some(ControlPlane::Controller {
            url: "http://10.0.0.1:8765".into(),
            token_file: PathBuf::from("/etc/twill/token"),
            tls: crate::ClientTls::default(),
        })
    );
    assert_eq!(c.subnet, None);
    assert_eq!(c.net_conf, None);
    assert_eq!(c.lease, LeaseOptions::default());
    assert_eq!(c.lease.ttl, Duration::from_secs(86400));
    assert_eq!(c.lease.renew_margin, Duration::from_secs(3600));
    assert_eq!(c.lease.subnet_env, PathBuf::from("/run/flannel/subnet.env"));
}

#[test]
fn etcd_config_parses() {
    let c = parse(&json!({
        "name": "n", "public_ip": "192.168.100.1",
        "etcd": { "endpoints": ["http://127.0.0.1:2379", "https://10.0.0.2:2379"],
                  "cafile": "ca.pem" },
        "lease_ttl_secs": 20, "subnet_env": "run/subnet.env", "ip_masq": true,
    }))
    .unwrap();
    assert_eq!(
        c.control,
        Some(ControlPlane::Etcd {
            endpoints: vec![
                "http://127.0.0.1:2379".into(),
                "https://10.0.0.2:2379".into()
            ],
            prefix: "/coreos.com/network".into(),
            tls: crate::ClientTls {
                ca_file: Some(PathBuf::from("/etc/twill/ca.pem")),
                ..crate::ClientTls::default()
            },
        })
    );
    assert_eq!(c.lease.ttl, Duration::from_secs(20));
    // The default margin is capped at half a short TTL.
    assert_eq!(c.lease.renew_margin, Duration::from_secs(10));
    assert_eq!(
        c.lease.subnet_env,
        PathBuf::from("/etc/twill/run/subnet.env")
    );
    assert!(c.lease.ip_masq);
    assert_eq!(
        c.control.unwrap().to_string(),
        "etcd http://127.0.0.1:2379,https://10.0.0.2:2379 /coreos.com/network"
    );
}

#[test]
fn control_plane_excludes_the_static_keys() {
    for (k, v) in [
        ("subnet", json!("10.244.1.0/24")),
        ("net_conf", json!({"Network": "10.244.0.0/16"})),
        ("net_conf_file", json!("net-conf.json")),
        ("peers", json!([])),
        ("etcd", json!({"endpoints": ["http://127.0.0.1:2379"]})),
    ] {
        let msg = fails(|c| c[k] = v);
        assert!(
            msg.contains(&format!("{k} cannot be combined with")),
            "{msg}"
        );
    }
}

#[test]
fn bad_control_plane_values_are_clear_errors() {
    type Edit = Box<dyn FnOnce(&mut Value)>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|c| c["controller"]["url"] = json!("10.0.0.1:8765")),
            "controller.url",
        ),
        (
            Box::new(|c| c["controller"]["token"] = json!("x")),
            "unknown key \"token\" in controller (expected one of: url, token_file, cafile, certfile, keyfile)",
        ),
        (
            Box::new(|c| {
                c["controller"]
                    .as_object_mut()
                    .unwrap()
                    .remove("token_file");
            }),
            "controller.token_file",
        ),
        (
            Box::new(|c| c["controller"] = json!("http://x")),
            "controller",
        ),
        (
            Box::new(|c| c["lease_ttl_secs"] = json!(0)),
            "lease_ttl_secs",
        ),
        (
            Box::new(|c| c["lease_ttl_secs"] = json!(86_401)),
            "lease_ttl_secs 86401 is invalid: is above the maximum of 86400",
        ),
        (
            Box::new(|c| c["lease_ttl_secs"] = json!("1h")),
            "lease_ttl_secs",
        ),
        (
            Box::new(|c| {
                c["lease_ttl_secs"] = json!(60);
                c["renew_margin_secs"] = json!(60);
            }),
            "renew_margin_secs",
        ),
        (
            Box::new(|c| c["ip_masq"] = json!("yes")),
            "ip_masq \"yes\" is invalid: must be a boolean, not a string",
        ),
        (
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("controller");
                c["etcd"] = json!({"endpoints": ["http://a:1"], "prefix": 1});
            }),
            "etcd.prefix 1 is invalid: must be a string, not a number",
        ),
        (Box::new(|c| c["subnet_env"] = json!("")), "subnet_env"),
    ];
    for (f, want) in cases {
        let msg = fails(f);
        assert!(msg.contains(want), "{want:?} not in {msg:?}");
    }
    let msg = parse(&json!({
        "name": "n", "public_ip": "192.168.100.1", "etcd": { "endpoints": [] }
    }))
    .unwrap_err()
    .to_string();
    assert!(msg.contains("etcd.endpoints"), "{msg}");
    let msg = parse(&json!({
        "name": "n", "public_ip": "192.168.100.1",
        "etcd": { "endpoints": ["http://a:1"], "prefix": "coreos.com" }
    }))
    .unwrap_err()
    .to_string();
    assert!(msg.contains("etcd.prefix"), "{msg}");
}

#[test]
fn static_config_still_needs_subnet_and_net_conf() {
    let msg = parse(&json!({
        "name": "n", "public_ip": "192.168.100.1", "subnet": "10.244.1.0/24",
    }))
    .unwrap_err()
    .to_string();
    assert!(msg.contains("net_conf"), "{msg}");
    let msg = parse(&json!({
        "name": "n", "public_ip": "192.168.100.1", "net_conf": {"Network": "10.244.0.0/16"},
    }))
    .unwrap_err()
    .to_string();
    assert!(msg.contains("subnet"), "{msg}");
}

#[test]
fn leased_config_is_checked_like_a_static_one() {
    let c = parse(&with_controller()).unwrap();
    let nc = crate::NetConf::parse(r#"{"Network":"10.244.0.0/16"}"#).unwrap();
    let l = c.leased("10.244.7.0/24".parse().unwrap(), nc).unwrap();
    assert_eq!(l.subnet, Some("10.244.7.0/24".parse().unwrap()));
    assert_eq!(l.net_conf.as_ref(), Some(&nc));
    // A lease of the wrong length, or outside the network, is refused.
    assert!(c.leased("10.244.7.0/25".parse().unwrap(), nc).is_err());
    assert!(c.leased("10.99.7.0/24".parse().unwrap(), nc).is_err());
}

#[test]
fn subnet_env_is_flannels() {
    let text = subnet_env(
        "10.244.0.0/16".parse().unwrap(),
        "10.244.3.0/24".parse().unwrap(),
        1450,
        true,
    );
    assert_eq!(
        text,
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
    );
    assert_eq!(
        subnet_from_env(&text),
        Some("10.244.3.0/24".parse().unwrap())
    );
    assert_eq!(subnet_from_env("FLANNEL_NETWORK=10.244.0.0/16\n"), None);
    assert_eq!(subnet_from_env("FLANNEL_SUBNET=garbage\n"), None);
}

#[test]
fn tls_keys_parse_relative_to_the_config() {
    let c = parse(&json!({
        "name": "n", "public_ip": "192.168.100.1",
        "controller": { "url": "https://10.0.0.1:8765", "token_file": "token",
                        "cafile": "ca.pem", "certfile": "/pki/node.pem", "keyfile": "node-key.pem" },
    }))
    .unwrap();
    let Some(ControlPlane::Controller { tls, .. }) = c.control else {
        panic!("{:?}", c.control);
    };
    assert_eq!(tls.ca_file, Some(PathBuf::from("/etc/twill/ca.pem")));
    assert_eq!(tls.cert_file, Some(PathBuf::from("/pki/node.pem")));
    assert_eq!(tls.key_file, Some(PathBuf::from("/etc/twill/node-key.pem")));
}

#[test]
fn tls_keys_are_checked() {
    let e = fails(|v| v["controller"]["url"] = json!("https://10.0.0.1:8765"));
    assert!(
        e.contains("controller.cafile") && e.contains("system"),
        "{e}"
    );
    let e = fails(|v| v["controller"]["cafile"] = json!("ca.pem"));
    assert!(e.contains("https://"), "{e}");
    let e = fails(|v| {
        v["controller"]["url"] = json!("https://10.0.0.1:8765");
        v["controller"]["cafile"] = json!("ca.pem");
        v["controller"]["certfile"] = json!("node.pem");
    });
    assert!(e.contains("controller.keyfile"), "{e}");
    let e = fails(|v| {
        v.as_object_mut().unwrap().remove("controller");
        v["etcd"] = json!({ "endpoints": ["https://10.0.0.2:2379"], "keyfile": "k.pem",
                            "cafile": "ca.pem" });
    });
    assert!(e.contains("etcd.certfile"), "{e}");
    let e = fails(|v| v["controller"]["etcd-cafile"] = json!("ca.pem"));
    assert!(e.contains("etcd-cafile"), "{e}");
}
