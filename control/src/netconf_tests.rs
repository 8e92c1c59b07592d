use super::*;
use proptest::prelude::*;

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn err(json: &str) -> ConfigError {
    NetConf::parse(json).unwrap_err()
}

#[test]
fn flannel_documented_vxlan_example() {
    let c = NetConf::parse(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#).unwrap();
    assert_eq!(c.network, net("10.244.0.0/16"));
    assert_eq!(c.subnet_len, 24);
    assert_eq!(c.subnet_min, net("10.244.1.0/24"));
    assert_eq!(c.subnet_max, net("10.244.255.0/24"));
    assert_eq!(
        c.backend,
        Backend::Vxlan {
            vni: 1,
            port: 8472,
            direct_routing: false
        }
    );
    assert_eq!(c.backend.kind(), BackendType::Vxlan);
    assert_eq!(c.backend.port(), 8472);
    assert_eq!(c.backend.overhead(), 50);
    assert_eq!(c.subnet_count(), 255);
}

#[test]
fn flannel_config_test_defaults_lowercase_key_and_udp() {
    // TestConfigDefaults in pkg/subnet/config_test.go: lower-case key.
    let c = NetConf::parse(r#"{ "network": "10.3.0.0/16" }"#).unwrap();
    assert_eq!(c.network, net("10.3.0.0/16"));
    assert_eq!(c.subnet_min.addr(), ip("10.3.1.0"));
    assert_eq!(c.subnet_max.addr(), ip("10.3.255.0"));
    assert_eq!(c.subnet_len, 24);
    // No Backend object: udp on 8285.
    assert_eq!(c.backend, Backend::Udp { port: 8285 });
    assert_eq!(c.backend.overhead(), 28);
}

#[test]
fn flannel_config_test_overrides() {
    // TestConfigOverrides in pkg/subnet/config_test.go.
    let c = NetConf::parse(
        r#"{ "Network": "10.3.0.0/16", "SubnetMin": "10.3.5.0", "SubnetMax": "10.3.8.0", "SubnetLen": 28 }"#,
    )
    .unwrap();
    assert_eq!(c.subnet_min, net("10.3.5.0/28"));
    assert_eq!(c.subnet_max, net("10.3.8.0/28"));
    assert_eq!(c.subnet_len, 28);
    assert_eq!(c.subnet_count(), ((0x0308 - 0x0305) << 8 >> 4) + 1);
}

#[test]
fn subnet_len_default_follows_network_size() {
    for (network, len, min, max) in [
        ("10.0.0.0/8", 24, "10.0.1.0", "10.255.255.0"),
        ("10.244.0.0/22", 24, "10.244.1.0", "10.244.3.0"),
        ("10.244.0.0/23", 25, "10.244.0.128", "10.244.1.128"),
        ("10.244.0.0/24", 26, "10.244.0.64", "10.244.0.192"),
        ("10.244.0.0/28", 30, "10.244.0.4", "10.244.0.12"),
        ("255.255.255.0/24", 26, "255.255.255.64", "255.255.255.192"),
    ] {
        let c = NetConf::parse(&format!(r#"{{"Network":"{network}"}}"#)).unwrap();
        assert_eq!(c.subnet_len, len, "{network}");
        assert_eq!(c.subnet_min.addr(), ip(min), "{network}");
        assert_eq!(c.subnet_max.addr(), ip(max), "{network}");
    }
    assert!(matches!(
        err(r#"{"Network":"10.244.0.0/29"}"#),
        ConfigError::NetworkTooSmall { .. }
    ));
    assert!(matches!(
        err(r#"{"Network":"10.244.0.1/32"}"#),
        ConfigError::NetworkTooSmall { .. }
    ));
}

#[test]
fn network_parsing() {
    // Host bits are cleared, as net.ParseCIDR does.
    let c = NetConf::parse(r#"{"Network":"10.244.7.9/16"}"#).unwrap();
    assert_eq!(c.network, net("10.244.0.0/16"));
    assert!(matches!(
        err(r#"{"SubnetLen":24}"#),
        ConfigError::NetworkMissing
    ));
    assert!(matches!(
        err(r#"{"Network":"0.0.0.0/0"}"#),
        ConfigError::NetworkMissing
    ));
    for bad in [
        r#""10.244.0.0""#,
        r#""fd00::/48""#,
        r#""10.244.0.0/33""#,
        "null",
        "16",
        r#""banana""#,
    ] {
        let e = err(&format!(r#"{{"Network":{bad}}}"#));
        assert!(
            matches!(&e, ConfigError::Invalid { field, .. } if field == "Network"),
            "{bad}: {e}"
        );
    }
    let e = err(r#"{"Network":"fd00::/48"}"#);
    assert!(e.to_string().contains("IPv6"), "{e}");
}

#[test]
fn subnet_len_checks() {
    let e = err(r#"{"Network":"10.244.0.0/16","SubnetLen":31}"#);
    assert!(matches!(
        e,
        ConfigError::SubnetLenTooLong { subnet_len: 31 }
    ));
    let e = err(r#"{"Network":"10.244.0.0/16","SubnetLen":16}"#);
    assert!(matches!(
        e,
        ConfigError::SubnetLenTooShort { subnet_len: 16, .. }
    ));
    assert_eq!(
        e.to_string(),
        "net-conf: SubnetLen 16 must be longer than Network 10.244.0.0/16's prefix by at least 2 \
         (so that it holds at least four subnets): use 18 to 30"
    );
    assert!(matches!(
        err(r#"{"Network":"10.244.0.0/16","SubnetLen":17}"#),
        ConfigError::SubnetLenTooShort { subnet_len: 17, .. }
    ));
    let c = NetConf::parse(r#"{"Network":"10.244.0.0/16","SubnetLen":18}"#).unwrap();
    assert_eq!(
        (c.subnet_min, c.subnet_max),
        (net("10.244.64.0/18"), net("10.244.192.0/18"))
    );
    // 0 and null mean "default", as for a Go uint.
    for v in ["0", "null"] {
        let c =
            NetConf::parse(&format!(r#"{{"Network":"10.244.0.0/16","SubnetLen":{v}}}"#)).unwrap();
        assert_eq!(c.subnet_len, 24);
    }
    for v in ["-1", "24.5", "\"24\"", "1e2", "99999999999999999999"] {
        let e = err(&format!(r#"{{"Network":"10.244.0.0/16","SubnetLen":{v}}}"#));
        assert!(
            matches!(&e, ConfigError::Invalid { field, .. } if field == "SubnetLen"),
            "{v}: {e}"
        );
    }
    assert!(matches!(
        err(r#"{"Network":"10.244.0.0/16","SubnetLen":300}"#),
        ConfigError::SubnetLenTooLong { subnet_len: 300 }
    ));
}

#[test]
fn subnet_min_max_checks() {
    let e = err(r#"{"Network":"10.244.0.0/16","SubnetMin":"10.245.0.0"}"#);
    assert!(matches!(
        e,
        ConfigError::BoundOutsideNetwork {
            field: "SubnetMin",
            ..
        }
    ));
    let e = err(r#"{"Network":"10.244.0.0/16","SubnetMax":"10.0.0.0"}"#);
    assert!(matches!(
        e,
        ConfigError::BoundOutsideNetwork {
            field: "SubnetMax",
            ..
        }
    ));
    let e = err(r#"{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.1"}"#);
    assert!(matches!(
        e,
        ConfigError::BoundUnaligned {
            field: "SubnetMin",
            subnet_len: 24,
            ..
        }
    ));
    assert_eq!(
        e.to_string(),
        "net-conf: SubnetMin 10.244.1.1 is not on a SubnetLen boundary (/24)"
    );
    let e = err(r#"{"Network":"10.244.0.0/16","SubnetMax":"10.244.9.128"}"#);
    assert!(matches!(
        e,
        ConfigError::BoundUnaligned {
            field: "SubnetMax",
            ..
        }
    ));
    let e = err(r#"{"Network":"10.244.0.0/16","SubnetMin":"10.244.9.0","SubnetMax":"10.244.8.0"}"#);
    assert!(matches!(e, ConfigError::EmptySubnetRange { .. }));
    // min == max: one subnet.
    let c = NetConf::parse(
        r#"{"Network":"10.244.0.0/16","SubnetMin":"10.244.9.0","SubnetMax":"10.244.9.0"}"#,
    )
    .unwrap();
    assert_eq!(c.subnets().collect::<Vec<_>>(), vec![net("10.244.9.0/24")]);
    // 0.0.0.0 means "default"; null is refused, as IP4.UnmarshalJSON does.
    let c = NetConf::parse(r#"{"Network":"10.244.0.0/16","SubnetMin":"0.0.0.0"}"#).unwrap();
    assert_eq!(c.subnet_min, net("10.244.1.0/24"));
    for v in ["null", "5", "\"10.244.1\"", "\"fd00::1\""] {
        let e = err(&format!(r#"{{"Network":"10.244.0.0/16","SubnetMax":{v}}}"#));
        assert!(
            matches!(&e, ConfigError::Invalid { field, .. } if field == "SubnetMax"),
            "{v}: {e}"
        );
    }
}

#[test]
fn backend_parsing() {
    let p = |b: &str| NetConf::parse(&format!(r#"{{"Network":"10.244.0.0/16","Backend":{b}}}"#));
    assert_eq!(
        p(r#"{"Type":"VXLAN"}"#).unwrap().backend,
        Backend::Vxlan {
            vni: 1,
            port: 8472,
            direct_routing: false
        }
    );
    assert_eq!(
        p(r#"{"type":"vxlan","vni":42,"port":4789,"DirectRouting":true,"GBP":false}"#)
            .unwrap()
            .backend,
        Backend::Vxlan {
            vni: 42,
            port: 4789,
            direct_routing: true
        }
    );
    assert_eq!(
        p(r#"{"Type":"vxlan","Port":0,"VNI":null}"#)
            .unwrap()
            .backend,
        Backend::Vxlan {
            vni: 1,
            port: 8472,
            direct_routing: false
        }
    );
    assert_eq!(
        p(r#"{"Type":"vxlan","VNI":16777215}"#)
            .unwrap()
            .backend
            .vni(),
        Some(MAX_VNI)
    );
    assert_eq!(
        p(r#"{"Type":"vxlan","VNI":0}"#).unwrap().backend.vni(),
        Some(0)
    );
    assert_eq!(
        p(r#"{"Type":"udp"}"#).unwrap().backend,
        Backend::Udp { port: 8285 }
    );
    assert_eq!(
        p(r#"{"Type":"udp","Port":9000}"#).unwrap().backend,
        Backend::Udp { port: 9000 }
    );

    // host-gw takes no options (a Port is ignored, as flannel ignores it).
    for b in [r#"{"Type":"host-gw"}"#, r#"{"Type":"HOST-GW","Port":9}"#] {
        assert_eq!(p(b).unwrap().backend, Backend::HostGw, "{b}");
    }
    let hg = p(r#"{"Type":"host-gw"}"#).unwrap();
    assert_eq!(NetConf::parse(&hg.to_json()).unwrap(), hg);
    assert!(!hg.to_json().contains("Port"), "{}", hg.to_json());
    let dr = p(r#"{"Type":"vxlan","DirectRouting":true}"#).unwrap();
    assert_eq!(NetConf::parse(&dr.to_json()).unwrap(), dr);
    let e = p(r#"{"Type":"vxlan","DirectRouting":"yes"}"#).unwrap_err();
    assert!(
        matches!(&e, ConfigError::Invalid { field, .. } if field == "Backend.DirectRouting"),
        "{e}"
    );
    let e = p(r#"{"Type":"ipip"}"#).unwrap_err();
    assert!(matches!(&e, ConfigError::UnsupportedBackend { ty, .. } if ty == "ipip"));
    assert_eq!(
        e.to_string(),
        r#"net-conf: backend type "ipip" is not supported (twill supports "vxlan", "udp" and "host-gw")"#
    );
    for b in ["{}", "null", r#"{"Type":""}"#, r#"{"VNI":1}"#] {
        let e = p(b).unwrap_err();
        assert!(
            matches!(&e, ConfigError::Missing { field, .. } if field == "Backend.Type"),
            "{b}: {e}"
        );
    }
    assert!(matches!(
        p(r#""vxlan""#).unwrap_err(),
        ConfigError::Invalid { .. }
    ));
    assert!(matches!(
        p(r#"{"Type":7}"#).unwrap_err(),
        ConfigError::Invalid { .. }
    ));
    for vni in ["16777216", "-1"] {
        let e = p(&format!(r#"{{"Type":"vxlan","VNI":{vni}}}"#)).unwrap_err();
        assert!(matches!(e, ConfigError::VniOutOfRange { .. }), "{vni}");
    }
    for (ty, port) in [
        ("vxlan", "65536"),
        ("vxlan", "-5"),
        ("udp", "0"),
        ("udp", "70000"),
    ] {
        let e = p(&format!(r#"{{"Type":"{ty}","Port":{port}}}"#)).unwrap_err();
        assert!(
            matches!(e, ConfigError::PortOutOfRange { .. }),
            "{ty} {port}: {e}"
        );
    }
    let e = p(r#"{"Type":"vxlan","DirectRouting":"yes"}"#).unwrap_err();
    assert!(matches!(&e, ConfigError::Invalid { field, .. } if field == "Backend.DirectRouting"));
}

#[test]
fn ignored_and_refused_keys() {
    let c = NetConf::parse(
        r#"{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/48","Foo":{"x":1},
            "Backend":{"Type":"vxlan","MTU":1400,"MacPrefix":"0E-2A"}}"#,
    )
    .unwrap();
    assert_eq!(c.subnet_len, 24);
    assert!(matches!(
        err(r#"{"Network":"10.244.0.0/16","EnableIPv4":false}"#),
        ConfigError::Ipv4Disabled
    ));
    let e = err(r#"{"Network":"10.244.0.0/16","network":"10.1.0.0/16"}"#);
    assert!(matches!(e, ConfigError::AmbiguousKey { .. }), "{e}");
    assert!(matches!(err("[1]"), ConfigError::Invalid { .. }));
    assert!(matches!(err("{"), ConfigError::Json { .. }));
}

#[test]
fn to_json_round_trips_with_flannel_keys() {
    let c = NetConf::parse(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#).unwrap();
    let j = c.to_json();
    assert_eq!(
        j,
        r#"{"Network":"10.244.0.0/16","SubnetLen":24,"SubnetMin":"10.244.1.0","SubnetMax":"10.244.255.0","Backend":{"Type":"vxlan","VNI":1,"Port":8472}}"#
    );
    assert_eq!(NetConf::parse(&j).unwrap(), c);
    assert_eq!(serde_json::to_string(&c).unwrap(), j);
    let u = NetConf::parse(r#"{"Network":"10.5.0.0/16","SubnetLen":26}"#).unwrap();
    assert!(u
        .to_json()
        .ends_with(r#""Backend":{"Type":"udp","Port":8285}}"#));
    assert_eq!(serde_json::from_str::<NetConf>(&u.to_json()).unwrap(), u);
    assert_eq!(serde_json::to_string(&u).unwrap(), u.to_json());
}

#[test]
fn new_and_validate() {
    let c = NetConf::new(net("10.244.3.3/16"), BackendType::Vxlan.default_backend()).unwrap();
    assert_eq!(
        c,
        NetConf::parse(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#).unwrap()
    );
    c.validate().unwrap();
    let mut bad = c;
    bad.subnet_min = net("10.244.1.0/25");
    assert!(bad.validate().is_err());
    let mut bad = c;
    bad.network = net("10.244.3.3/16");
    assert!(bad.validate().is_err());
    let mut bad = c;
    bad.backend = Backend::Vxlan {
        vni: MAX_VNI + 1,
        port: 1,
        direct_routing: false,
    };
    assert!(matches!(
        bad.validate(),
        Err(ConfigError::VniOutOfRange { .. })
    ));
    let mut bad = c;
    bad.subnet_max = net("10.244.0.0/24");
    assert!(matches!(
        bad.validate(),
        Err(ConfigError::EmptySubnetRange { .. })
    ));
}

#[test]
fn contains_subnet() {
    let c = NetConf::parse(
        r#"{"Network":"10.244.0.0/16","SubnetMin":"10.244.4.0","SubnetMax":"10.244.8.0"}"#,
    )
    .unwrap();
    assert!(c.contains_subnet(&net("10.244.4.0/24")));
    assert!(c.contains_subnet(&net("10.244.8.0/24")));
    assert!(!c.contains_subnet(&net("10.244.3.0/24")));
    assert!(!c.contains_subnet(&net("10.244.9.0/24")));
    assert!(!c.contains_subnet(&net("10.244.5.0/25")));
    assert!(!c.contains_subnet(&net("10.244.5.1/24")));
}

#[test]
fn backend_type_names() {
    assert_eq!(BackendType::Vxlan.to_string(), "vxlan");
    assert_eq!("UDP".parse::<BackendType>().unwrap(), BackendType::Udp);
    assert_eq!(serde_json::to_string(&BackendType::Udp).unwrap(), "\"udp\"");
    assert_eq!(
        serde_json::from_str::<BackendType>("\"vxlan\"").unwrap(),
        BackendType::Vxlan
    );
}

proptest! {
    #[test]
    fn subnets_are_aligned_distinct_in_range(
        addr in any::<u32>(),
        prefix in 1u8..=28,
        extra in 2u8..=12,
        a in any::<u32>(),
        b in any::<u32>(),
    ) {
        let len = (prefix + extra).min(30);
        let network = Ipv4Net::new(Ipv4Addr::from(addr), prefix).unwrap().trunc();
        let n = 1u32 << (len - prefix);
        let at = |i: u32| Ipv4Addr::from(u32::from(network.network()) + (i % n) * (1u32 << (32 - len)));
        let (lo, hi) = if at(a) <= at(b) { (at(a), at(b)) } else { (at(b), at(a)) };
        // 0.0.0.0 as a bound means "default"; skip that corner.
        prop_assume!(!lo.is_unspecified());
        let c = NetConf::parse(&format!(
            r#"{{"Network":"{network}","SubnetLen":{len},"SubnetMin":"{lo}","SubnetMax":"{hi}","Backend":{{"Type":"vxlan"}}}}"#
        ))
        .unwrap();
        let all: Vec<Ipv4Net> = c.subnets().collect();
        let want = ((u32::from(hi) - u32::from(lo)) >> (32 - len)) as usize + 1;
        prop_assert_eq!(all.len(), want);
        prop_assert_eq!(c.subnets().len(), want);
        prop_assert_eq!(c.subnet_count(), want as u64);
        for w in all.windows(2) {
            prop_assert!(w[0].addr() < w[1].addr());
        }
        for s in &all {
            prop_assert_eq!(s.prefix_len(), len);
            prop_assert_eq!(s.addr(), s.network());
            prop_assert!(lo <= s.addr() && s.addr() <= hi);
            prop_assert!(network.contains(s));
            prop_assert!(c.contains_subnet(s));
        }
        prop_assert_eq!(all.first().map(|s| s.addr()), Some(lo));
        prop_assert_eq!(all.last().map(|s| s.addr()), Some(hi));
    }
}
