use super::*;
use serde_json::json;
use std::sync::atomic::{AtomicU32, Ordering};

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn example() -> Value {
    json!({
        "name": "node-a", "public_ip": "192.168.100.1", "subnet": "10.244.1.0/24",
        "net_conf": { "Network": "10.244.0.0/16", "Backend": { "Type": "vxlan" } },
        "vtep_mac": "0a:58:0a:f4:01:01",
        "underlay_mtu": 1500,
        "peers": [
            { "name": "node-b", "public_ip": "192.168.100.2", "subnet": "10.244.2.0/24", "vtep_mac": "aa:bb:cc:dd:ee:02" },
            { "name": "node-c", "public_ip": "192.168.100.3", "subnet": "10.244.3.0/24", "vtep_mac": "aa:bb:cc:dd:ee:03" }
        ]
    })
}

fn parse(v: &Value) -> Result<NodeConfig, ConfigError> {
    NodeConfig::parse(&v.to_string(), "/etc/twill")
}

/// `example()` with `f` applied, expected to fail.
fn fails(f: impl FnOnce(&mut Value)) -> ConfigError {
    let mut v = example();
    f(&mut v);
    match parse(&v) {
        Ok(c) => panic!("accepted {v}: {c:?}"),
        Err(e) => e,
    }
}

fn invalid_field(e: &ConfigError) -> &str {
    match e {
        ConfigError::Invalid { field, .. } => field,
        other => panic!("not Invalid: {other}"),
    }
}

#[test]
fn valid_example() {
    let c = parse(&example()).unwrap();
    assert_eq!(c.name, "node-a");
    assert_eq!(c.public_ip, Ipv4Addr::new(192, 168, 100, 1));
    assert_eq!(c.subnet, Some(net("10.244.1.0/24")));
    assert_eq!(
        c.net_conf.as_ref().unwrap().backend,
        Backend::Vxlan {
            vni: 1,
            port: 8472,
            direct_routing: false
        }
    );
    assert_eq!(c.net_conf_file, None);
    assert_eq!(
        c.vtep_mac,
        Some(MacAddr([0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x01]))
    );
    assert_eq!(c.underlay_mtu, Some(1500));
    assert_eq!(c.pod_mtu(), Some(1450));
    assert_eq!(c.socket, PathBuf::from(DEFAULT_SOCKET));
    assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
    assert_eq!(c.host_port, DEFAULT_HOST_PORT);
    assert_eq!(c.peers.len(), 2);
    assert_eq!(
        c.peers[0],
        Peer {
            name: "node-b".into(),
            public_ip: Ipv4Addr::new(192, 168, 100, 2),
            subnet: net("10.244.2.0/24"),
            vtep_mac: Some(MacAddr([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x02])),
        }
    );
}

#[test]
fn optional_fields_and_paths() {
    let c = parse(&json!({
        "name": "n", "public_ip": "192.168.1.1", "subnet": "10.5.0.64/26",
        "net_conf": { "Network": "10.5.0.0/24" },
        "socket": "run/twill.sock", "state_dir": "/srv/twill", "host_port": "tw-host",
        "vtep_mac": null, "underlay_mtu": null, "peers": null
    }))
    .unwrap();
    assert_eq!(c.net_conf.as_ref().unwrap().subnet_len, 26);
    assert_eq!(
        c.net_conf.as_ref().unwrap().backend,
        Backend::Udp { port: 8285 }
    );
    assert_eq!(
        (c.vtep_mac, c.underlay_mtu, c.pod_mtu()),
        (None, None, None)
    );
    assert_eq!(c.socket, PathBuf::from("/etc/twill/run/twill.sock"));
    assert_eq!(c.state_dir, PathBuf::from("/srv/twill"));
    assert_eq!(c.host_port, "tw-host");
    assert!(c.peers.is_empty());
}

#[test]
fn udp_peers_need_no_mac() {
    let c = parse(&json!({
        "name": "a", "public_ip": "192.168.1.1", "subnet": "10.244.1.0/24",
        "net_conf": { "Network": "10.244.0.0/16", "Backend": { "Type": "udp" } },
        "peers": [ { "name": "b", "public_ip": "192.168.1.2", "subnet": "10.244.2.0/24" },
                   { "name": "c", "public_ip": "192.168.1.3", "subnet": "10.244.3.0/24", "vtep_mac": "01:00:5e:00:00:01" } ]
    }))
    .unwrap();
    assert_eq!(c.peers[0].vtep_mac, None);
    assert_eq!(
        c.lease_attrs(
            &c.net_conf.as_ref().unwrap().backend,
            MacAddr([2, 0, 0, 0, 0, 1])
        )
        .backend,
        LeaseBackend::Udp
    );
    assert_eq!(
        c.peers[0]
            .to_lease(&c.net_conf.as_ref().unwrap().backend)
            .unwrap()
            .to_json(),
        r#"{"PublicIP":"192.168.1.2","PublicIPv6":null}"#
    );
}

#[test]
fn lab_contract_shape_parses() {
    // The JSON the lab writes (lab/src/node.rs).
    let c = parse(&json!({
        "name": "node-a", "public_ip": "192.168.100.1", "subnet": "10.244.1.0/24",
        "net_conf": { "Network": "10.244.0.0/16", "SubnetLen": 24,
                      "Backend": { "Type": "vxlan", "VNI": 1, "Port": 8472 } },
        "vtep_mac": "0a:58:0a:f4:01:01",
        "socket": "/run/x/a.sock", "state_dir": "/run/x/a", "host_port": "twill0",
        "peers": [ { "name": "node-b", "public_ip": "192.168.100.2",
                     "subnet": "10.244.2.0/24", "vtep_mac": "0a:58:0a:f4:02:01" } ]
    }))
    .unwrap();
    assert_eq!(c.socket, PathBuf::from("/run/x/a.sock"));
}

#[test]
fn structure_errors() {
    let e = fails(|v| v["peer"] = json!([]));
    assert!(
        matches!(&e, ConfigError::UnknownKey { key, within, .. } if key == "peer" && within.is_empty())
    );
    assert!(
        e.to_string()
            .starts_with("node config: unknown key \"peer\" (expected one of: name, public_ip"),
        "{e}"
    );
    let e = fails(|v| v["peers"][1]["vtepmac"] = json!("aa:bb:cc:dd:ee:03"));
    assert!(
        matches!(&e, ConfigError::UnknownKey { key, within, .. } if key == "vtepmac" && within == "peers[1]")
    );
    let e = fails(|v| v["net_conf_file"] = json!("/etc/kube-flannel/net-conf.json"));
    assert!(matches!(e, ConfigError::NetConfSource { both: true }));
    let e = fails(|v| v["net_conf"] = Value::Null);
    assert!(matches!(e, ConfigError::NetConfSource { both: false }));
    for key in ["name", "public_ip", "subnet"] {
        let e = fails(|v| {
            v.as_object_mut().unwrap().remove(key);
        });
        assert!(
            matches!(&e, ConfigError::Missing { field, .. } if field == key),
            "{key}: {e}"
        );
    }
    let e = fails(|v| {
        v["peers"][0].as_object_mut().unwrap().remove("subnet");
    });
    assert!(matches!(&e, ConfigError::Missing { field, .. } if field == "peers[0].subnet"));
    assert_eq!(invalid_field(&fails(|v| v["name"] = json!(5))), "name");
    assert_eq!(invalid_field(&fails(|v| v["peers"] = json!({}))), "peers");
    assert_eq!(
        invalid_field(&fails(|v| v["peers"][1] = json!("node-c"))),
        "peers[1]"
    );
    assert_eq!(
        invalid_field(&fails(|v| v["underlay_mtu"] = json!("1500"))),
        "underlay_mtu"
    );
    assert_eq!(
        invalid_field(&fails(|v| v["underlay_mtu"] = json!(-1))),
        "underlay_mtu"
    );
    assert!(matches!(
        NodeConfig::parse("{", "/"),
        Err(ConfigError::Json {
            doc: Doc::NodeConfig,
            ..
        })
    ));
    assert!(matches!(
        NodeConfig::parse("[]", "/"),
        Err(ConfigError::Invalid { .. })
    ));
    // Errors inside net_conf are net-conf's.
    let e = fails(|v| v["net_conf"]["SubnetLen"] = json!(16));
    assert!(matches!(e, ConfigError::SubnetLenTooShort { .. }));
}

#[test]
fn own_fields_are_checked() {
    for (key, value) in [
        ("name", json!("")),
        ("public_ip", json!("192.168.100")),
        ("public_ip", json!("0.0.0.0")),
        ("public_ip", json!("224.0.0.1")),
        ("public_ip", json!("10.244.9.9")),
        ("subnet", json!("10.244.1.0")),
        ("subnet", json!("10.244.1.1/24")),
        ("vtep_mac", json!("0a:58:0a:f4:01")),
        ("vtep_mac", json!("01:00:5e:00:00:01")),
        ("vtep_mac", json!("00:00:00:00:00:00")),
        ("underlay_mtu", json!(625)),
        ("underlay_mtu", json!(65536)),
        ("host_port", json!("")),
        ("host_port", json!("a-very-long-name0")),
        ("host_port", json!("tw 0")),
        ("host_port", json!("tw:0")),
        ("host_port", json!("tw%d")),
        ("host_port", json!("..")),
        ("socket", json!("")),
        ("state_dir", json!("")),
    ] {
        let e = fails(|v| v[key] = value.clone());
        assert_eq!(invalid_field(&e), key, "{e}");
    }
    assert!(parse(&{
        let mut v = example();
        v["underlay_mtu"] = json!(626);
        v
    })
    .is_ok());
    let e = fails(|v| v["subnet"] = json!("10.245.1.0/24"));
    assert!(matches!(&e, ConfigError::SubnetOutsideNetwork { field, .. } if field == "subnet"));
    assert_eq!(
        e.to_string(),
        "node config: subnet 10.245.1.0/24 is not inside Network 10.244.0.0/16"
    );
    let e = fails(|v| v["subnet"] = json!("10.244.1.0/25"));
    assert!(matches!(
        e,
        ConfigError::SubnetLenMismatch { subnet_len: 24, .. }
    ));
    let e = fails(|v| v["public_ip"] = json!("10.244.9.9"));
    assert_eq!(
        e.to_string(),
        "node config: public_ip \"10.244.9.9\" is invalid: is inside the pod Network 10.244.0.0/16; \
         the underlay address must be outside it"
    );
}

#[test]
fn peers_are_checked() {
    let e = fails(|v| v["peers"][1]["name"] = json!("node-b"));
    assert!(
        matches!(&e, ConfigError::Duplicate { field, first, .. } if field == "peers[1].name" && first == "peers[0].name")
    );
    assert_eq!(
        e.to_string(),
        "node config: peers[1].name \"node-b\" is already used by peers[0].name"
    );
    let e = fails(|v| v["peers"][0]["name"] = json!("node-a"));
    assert!(matches!(&e, ConfigError::Duplicate { first, .. } if first == "name"));
    let e = fails(|v| v["peers"][1]["public_ip"] = json!("192.168.100.2"));
    assert!(matches!(&e, ConfigError::Duplicate { field, .. } if field == "peers[1].public_ip"));
    let e = fails(|v| v["peers"][0]["public_ip"] = json!("192.168.100.1"));
    assert!(matches!(&e, ConfigError::Duplicate { first, .. } if first == "public_ip"));
    let e = fails(|v| v["peers"][1]["vtep_mac"] = json!("aa:bb:cc:dd:ee:02"));
    assert!(matches!(&e, ConfigError::Duplicate { field, .. } if field == "peers[1].vtep_mac"));
    let e = fails(|v| v["peers"][0]["vtep_mac"] = json!("0a:58:0a:f4:01:01"));
    assert!(matches!(&e, ConfigError::Duplicate { first, .. } if first == "vtep_mac"));
    let e = fails(|v| v["peers"][1]["subnet"] = json!("10.0.3.0/24"));
    assert!(
        matches!(&e, ConfigError::SubnetOutsideNetwork { field, .. } if field == "peers[1].subnet")
    );
    let e = fails(|v| v["peers"][1]["subnet"] = json!("10.244.1.0/24"));
    assert!(
        matches!(&e, ConfigError::SubnetOverlap { field, other_field, .. }
        if field == "peers[1].subnet" && other_field == "subnet")
    );
    assert_eq!(
        e.to_string(),
        "node config: peers[1].subnet 10.244.1.0/24 overlaps subnet 10.244.1.0/24"
    );
    // Nested subnets.
    let e = fails(|v| {
        v["peers"][0]["subnet"] = json!("10.244.32.0/19");
        v["peers"][1]["subnet"] = json!("10.244.40.0/24");
    });
    assert!(
        matches!(&e, ConfigError::SubnetOverlap { field, other_field, .. }
        if field == "peers[1].subnet" && other_field == "peers[0].subnet"),
        "{e}"
    );
    let e = fails(|v| {
        v["peers"][0]["subnet"] = json!("10.244.0.0/20");
        v["peers"][1]["subnet"] = json!("10.244.16.0/24");
    });
    assert!(
        matches!(&e, ConfigError::SubnetOverlap { field, other_field, .. }
        if field == "peers[0].subnet" && other_field == "subnet"),
        "{e}"
    );
    let e = fails(|v| {
        v["peers"][0].as_object_mut().unwrap().remove("vtep_mac");
    });
    assert!(
        matches!(&e, ConfigError::VtepMacRequired { field, peer } if field == "peers[0].vtep_mac" && peer == "node-b")
    );
    for (field, f) in [
        ("peers[0].name", json!({"name": ""})),
        (
            "peers[0].public_ip",
            json!({"public_ip": "255.255.255.255"}),
        ),
        ("peers[0].public_ip", json!({"public_ip": "10.244.2.7"})),
        ("peers[0].subnet", json!({"subnet": "10.244.2.1/24"})),
        (
            "peers[0].vtep_mac",
            json!({"vtep_mac": "ff:ff:ff:ff:ff:ff"}),
        ),
        ("peers[0].vtep_mac", json!({"vtep_mac": "nope"})),
    ] {
        let e = fails(|v| {
            for (k, x) in f.as_object().unwrap() {
                v["peers"][0][k] = x.clone();
            }
        });
        assert_eq!(invalid_field(&e), field, "{e}");
    }
    // Peer subnets need not be /SubnetLen (kube-assigned podCIDRs).
    let mut v = example();
    v["peers"][0]["subnet"] = json!("10.244.128.0/23");
    assert!(parse(&v).is_ok());
}

#[test]
fn peers_map_to_and_from_leases() {
    let c = parse(&example()).unwrap();
    let p = &c.peers[0];
    let lease = p.to_lease(&c.net_conf.as_ref().unwrap().backend).unwrap();
    assert_eq!(
        lease.to_json(),
        r#"{"PublicIP":"192.168.100.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:02"}}"#
    );
    assert_eq!(&Peer::from_lease(p.subnet, &lease, "node-b"), p);
    let mine = c.lease_attrs(
        &c.net_conf.as_ref().unwrap().backend,
        MacAddr([0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x01]),
    );
    assert_eq!(mine.public_ip, c.public_ip);
    let no_mac = Peer {
        vtep_mac: None,
        ..p.clone()
    };
    assert!(matches!(
        no_mac.to_lease(&c.net_conf.as_ref().unwrap().backend),
        Err(ConfigError::VtepMacRequired { .. })
    ));
}

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "twill-control-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn net_conf_file_is_resolved_next_to_the_config() {
    let dir = TempDir::new();
    std::fs::create_dir_all(dir.0.join("flannel")).unwrap();
    std::fs::write(
        dir.0.join("flannel/net-conf.json"),
        r#"{ "Network": "10.244.0.0/16", "Backend": { "Type": "vxlan", "VNI": 7 } }"#,
    )
    .unwrap();
    let mut v = example();
    v.as_object_mut().unwrap().remove("net_conf");
    v["net_conf_file"] = json!("flannel/net-conf.json");
    v["state_dir"] = json!("state");
    let path = dir.0.join("node.json");
    std::fs::write(&path, v.to_string()).unwrap();

    let c = NodeConfig::load(&path).unwrap();
    assert_eq!(
        c.net_conf.as_ref().unwrap().backend,
        Backend::Vxlan {
            vni: 7,
            port: 8472,
            direct_routing: false
        }
    );
    assert_eq!(c.net_conf_file, Some(dir.0.join("flannel/net-conf.json")));
    assert_eq!(c.state_dir, dir.0.join("state"));

    // A bad net-conf file: the error names both files.
    std::fs::write(
        dir.0.join("flannel/net-conf.json"),
        r#"{ "Network": "10.244.0.0/16", "SubnetLen": 31 }"#,
    )
    .unwrap();
    let e = NodeConfig::load(&path).unwrap_err();
    assert!(matches!(
        e.root(),
        ConfigError::SubnetLenTooLong { subnet_len: 31 }
    ));
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "{}: {}: net-conf:",
            path.display(),
            dir.0.join("flannel/net-conf.json").display()
        )),
        "{msg}"
    );

    // A missing net-conf file, and a missing config file.
    std::fs::remove_file(dir.0.join("flannel/net-conf.json")).unwrap();
    let e = NodeConfig::load(&path).unwrap_err();
    assert!(
        matches!(e.root(), ConfigError::Io { path, .. } if path.ends_with("flannel/net-conf.json")),
        "{e}"
    );
    let e = NodeConfig::load(dir.0.join("absent.json")).unwrap_err();
    assert!(
        matches!(&e, ConfigError::Io { path, .. } if path.ends_with("absent.json")),
        "{e}"
    );
    assert!(e.to_string().starts_with("cannot read "), "{e}");
}

#[test]
fn key_and_type_errors_name_the_field() {
    let e = fails(|v| v["undelay_mtu"] = json!(1400));
    assert_eq!(
        e.to_string(),
        "node config: unknown key \"undelay_mtu\" (expected one of: name, public_ip, subnet, \
         net_conf, net_conf_file, vtep_mac, underlay_mtu, socket, state_dir, host_port, peers, \
         controller, etcd, lease_ttl_secs, renew_margin_secs, subnet_env, ip_masq, objects_dir, service_cidr, bgp)"
    );
    let e = fails(|v| v["peers"][1]["publicip"] = json!("192.168.100.3"));
    assert_eq!(
        e.to_string(),
        "node config: unknown key \"publicip\" in peers[1] \
         (expected one of: name, public_ip, subnet, vtep_mac)"
    );
    let e = fails(|v| v["underlay_mtu"] = json!("1500"));
    assert_eq!(
        e.to_string(),
        "node config: underlay_mtu \"1500\" is invalid: must be u32, not a string"
    );
    let e = fails(|v| v["peers"][1]["vtep_mac"] = json!(7));
    assert_eq!(
        e.to_string(),
        "node config: peers[1].vtep_mac 7 is invalid: must be a string, not a number"
    );
    let e = fails(|v| v["peers"][1]["name"] = Value::Null);
    assert_eq!(invalid_field(&e), "peers[1].name");
    let e = fails(|v| v["host_port"] = json!(["twill0"]));
    assert_eq!(invalid_field(&e), "host_port");
    // The net_conf object is flannel's and keeps Go's rules: unknown keys
    // pass.
    let mut v = example();
    v["net_conf"]["SomethingNew"] = json!(true);
    assert!(parse(&v).is_ok());
}

#[test]
fn objects_dir_is_a_static_key_relative_to_the_file() {
    let mut v = example();
    v["objects_dir"] = json!("manifests");
    let c = parse(&v).unwrap();
    assert_eq!(c.objects_dir, Some(PathBuf::from("/etc/twill/manifests")));
    assert_eq!(parse(&example()).unwrap().objects_dir, None);
    // With a control plane the objects come from its store.
    let mut v = json!({ "name": "node-a", "public_ip": "192.168.100.1",
        "controller": { "url": "http://10.0.0.1:8765", "token_file": "/etc/twill/token" },
        "objects_dir": "/srv/manifests" });
    let e = parse(&v).unwrap_err();
    assert!(e.to_string().contains("objects_dir"), "{e}");
    v.as_object_mut().unwrap().remove("objects_dir");
    assert!(parse(&v).is_ok());
}

#[test]
fn service_cidr_is_a_range_outside_the_network() {
    let mut v = example();
    v["service_cidr"] = json!("10.96.0.0/12");
    assert_eq!(parse(&v).unwrap().service_cidr, Some(net("10.96.0.0/12")));
    let e = fails(|v| v["service_cidr"] = json!("10.244.128.0/17"));
    assert_eq!(invalid_field(&e), "service_cidr", "{e}");
    let e = fails(|v| v["service_cidr"] = json!("10.96.0.1/12"));
    assert_eq!(invalid_field(&e), "service_cidr", "{e}");
}

#[test]
fn bgp_block_parses_with_defaults_and_a_relative_bird() {
    let mut v = example();
    v["bgp"] = json!({ "asn": 64512, "peers": [
        { "address": "192.168.100.254", "asn": 65000, "password": "s3cret" } ] });
    let b = parse(&v).unwrap().bgp.unwrap();
    assert_eq!(b.asn, 64512);
    assert!(!b.mesh);
    assert_eq!(b.hold_time_secs, crate::bgp::DEFAULT_HOLD_TIME_SECS);
    assert_eq!(b.bird, PathBuf::from("/usr/sbin/bird"));
    assert_eq!(
        b.peers,
        vec![crate::BgpPeer {
            address: "192.168.100.254".parse().unwrap(),
            asn: 65000,
            password: Some("s3cret".into()),
        }]
    );
    v["bgp"] = json!({ "asn": 4_200_000_000u64, "mesh": true, "hold_time_secs": 9,
        "bird": "bin/bird" });
    let b = parse(&v).unwrap().bgp.unwrap();
    assert!(b.mesh && b.peers.is_empty());
    assert_eq!((b.asn, b.hold_time_secs), (4_200_000_000, 9));
    assert_eq!(b.bird, PathBuf::from("/etc/twill/bin/bird"));
    assert_eq!(parse(&example()).unwrap().bgp, None);
}

#[test]
fn bgp_block_errors_name_the_field() {
    let peer = |address: &str, asn: u64| json!({ "address": address, "asn": asn });
    for (bgp, field) in [
        (json!({ "asn": 0, "mesh": true }), "bgp.asn"),
        (json!({ "asn": 4_294_967_295u64, "mesh": true }), "bgp.asn"),
        (json!({ "asn": 64512 }), "bgp.peers"),
        (
            json!({ "asn": 64512, "mesh": true, "hold_time_secs": 2 }),
            "bgp.hold_time_secs",
        ),
        (
            json!({ "asn": 64512, "mesh": true, "hold_time_secs": 70000 }),
            "bgp.hold_time_secs",
        ),
        (
            json!({ "asn": 64512, "peers": [peer("10.0.0.300", 1)] }),
            "bgp.peers[0].address",
        ),
        (
            json!({ "asn": 64512, "peers": [peer("224.0.0.5", 1)] }),
            "bgp.peers[0].address",
        ),
        // This node's own address.
        (
            json!({ "asn": 64512, "peers": [peer("192.168.100.1", 1)] }),
            "bgp.peers[0].address",
        ),
        (
            json!({ "asn": 64512, "peers": [peer("10.0.0.1", 1), peer("10.0.0.2", 0)] }),
            "bgp.peers[1].asn",
        ),
        (
            json!({ "asn": 64512, "peers": [{ "address": "10.0.0.1", "asn": 1, "password": "a\"b" }] }),
            "bgp.peers[0].password",
        ),
        (
            json!({ "asn": 64512, "mesh": true, "bird": "" }),
            "bgp.bird",
        ),
    ] {
        let e = fails(|v| v["bgp"] = bgp.clone());
        assert_eq!(invalid_field(&e), field, "{bgp}: {e}");
        assert!(
            !e.to_string().contains("a\"b"),
            "a password is never shown: {e}"
        );
    }
    let e = fails(|v| {
        v["bgp"] = json!({ "asn": 64512, "peers": [peer("10.0.0.1", 1), peer("10.0.0.1", 2)] })
    });
    assert!(
        matches!(&e, ConfigError::Duplicate { field, .. } if field == "bgp.peers[1].address"),
        "{e}"
    );
    // Unknown keys are refused by path.
    let e = fails(|v| v["bgp"] = json!({ "asn": 64512, "mesh": true, "holdtime": 9 }));
    assert!(e.to_string().contains("holdtime"), "{e}");
    let e = fails(|v| {
        v["bgp"] =
            json!({ "asn": 64512, "peers": [{ "address": "10.0.0.1", "asn": 1, "pass": "x" }] })
    });
    assert!(e.to_string().contains("pass"), "{e}");
}
