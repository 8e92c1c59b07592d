use super::*;

const MAC: MacAddr = MacAddr([0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x01]);

/// A static node config with `backend` ("vxlan" or "udp") on 10.244.1.0/24
/// (the udp backend ignores the VNI, as flannel's does).
fn config(backend: &str) -> NodeConfig {
    let json = serde_json::json!({
        "name": "node-a", "public_ip": "192.168.100.1", "subnet": "10.244.1.0/24",
        "net_conf": { "Network": "10.244.0.0/16", "Backend": { "Type": backend, "VNI": 7 } },
        "host_port": "tw0", "socket": "/run/t/a.sock", "state_dir": "/run/t/a",
        "peers": [ { "name": "node-b", "public_ip": "192.168.100.2",
                     "subnet": "10.244.2.0/24", "vtep_mac": "0a:58:0a:f4:02:01" } ]
    });
    NodeConfig::parse(&json.to_string(), "/").unwrap()
}

fn with_subnet(mut cfg: NodeConfig, subnet: &str) -> NodeConfig {
    cfg.subnet = Some(subnet.parse().unwrap());
    cfg
}

#[test]
fn vxlan_plan() {
    let p = NodePlan::new(&config("vxlan"), 1500, MAC).unwrap();
    let i = &p.info;
    assert_eq!(i.gateway, Ipv4Addr::new(10, 244, 1, 1));
    assert_eq!(p.host.ip, Ipv4Addr::new(10, 244, 1, 2));
    assert_eq!(p.host.mac, MacAddr([0x0a, 0x58, 10, 244, 1, 2]));
    assert_eq!(p.host.kind, PortKind::Host);
    assert_eq!((i.backend, i.port, p.overhead), ("vxlan", 8472, 50));
    assert_eq!(
        (i.mtu, i.underlay_mtu, p.switch.tunnel_mtu),
        (1450, 1500, 1450)
    );
    assert_eq!(i.subnet.to_string(), "10.244.1.0/24");
    assert_eq!(i.cluster.to_string(), "10.244.0.0/16");
    assert_eq!((i.vtep_mac, p.switch.router_mac), (MAC, MAC));
    assert_eq!((i.name.as_str(), i.host_port.as_str()), ("node-a", "tw0"));
    assert_eq!(i.socket, PathBuf::from("/run/t/a.sock"));
    assert_eq!(p.tunnel_addr().to_string(), "192.168.100.1:8472");

    let s = &p.switch;
    assert_eq!(s.backend, Backend::Vxlan { vni: 7 });
    assert_eq!(
        (s.subnet, s.cluster, s.gateway),
        (i.subnet, i.cluster, i.gateway)
    );
    assert_eq!(s.neighbor_capacity, 4096);
    assert_eq!(s.neighbor_aging, Duration::from_secs(300));
    assert_eq!(s.mac.max_entries, MacTableConfig::default().max_entries);
}

#[test]
fn udp_plan() {
    let p = NodePlan::new(&config("udp"), 9000, MAC).unwrap();
    assert_eq!(p.switch.backend, Backend::Udp);
    assert_eq!((p.info.backend, p.info.port, p.overhead), ("udp", 8285, 28));
    assert_eq!((p.info.mtu, p.switch.tunnel_mtu), (8972, 8972));
}

#[test]
fn the_pod_mtu_is_the_underlay_minus_the_backends_overhead() {
    for (backend, overhead) in [("vxlan", 50), ("udp", 28)] {
        let cfg = config(backend);
        let min = MIN_POD_MTU + overhead;
        let p = NodePlan::new(&cfg, min, MAC).unwrap();
        assert_eq!(p.info.mtu, MIN_POD_MTU, "{backend}");
        assert_eq!(p.switch.tunnel_mtu, 576, "{backend}");
        // The config's own view of the same arithmetic agrees.
        let mut c = cfg.clone();
        c.underlay_mtu = Some(min);
        assert_eq!(c.pod_mtu(), Some(p.info.mtu));

        for too_small in [min - 1, overhead, 0] {
            let e = NodePlan::new(&cfg, too_small, MAC).unwrap_err();
            assert!(
                matches!(e, PlanError::UnderlayMtuTooSmall { underlay_mtu, overhead: o, .. }
                    if underlay_mtu == too_small && o == overhead),
                "{backend} {too_small}: {e}"
            );
        }
    }
    let e = NodePlan::new(&config("vxlan"), 600, MAC).unwrap_err();
    assert_eq!(
        e.to_string(),
        "underlay MTU 600 leaves less than 576 bytes for pods after the vxlan backend's \
         50 bytes (it must be at least 626)"
    );
}

#[test]
fn small_subnets() {
    // A /30 holds .1 and .2 (and .3, the broadcast).
    let p = NodePlan::new(&with_subnet(config("vxlan"), "10.244.1.4/30"), 1500, MAC).unwrap();
    assert_eq!(p.info.gateway, Ipv4Addr::new(10, 244, 1, 5));
    assert_eq!(p.host.ip, Ipv4Addr::new(10, 244, 1, 6));
    for s in ["10.244.1.4/31", "10.244.1.4/32"] {
        let e = NodePlan::new(&with_subnet(config("vxlan"), s), 1500, MAC).unwrap_err();
        assert_eq!(
            e,
            PlanError::SubnetTooSmall {
                subnet: s.parse().unwrap()
            }
        );
        assert!(e.to_string().contains("need a /30 or larger"), "{e}");
    }
}

#[test]
fn a_node_without_a_lease_has_no_plan() {
    let mut cfg = config("vxlan");
    cfg.subnet = None;
    assert_eq!(
        NodePlan::new(&cfg, 1500, MAC).unwrap_err(),
        PlanError::NotLeased
    );
    let mut cfg = config("vxlan");
    cfg.net_conf = None;
    assert_eq!(
        NodePlan::new(&cfg, 1500, MAC).unwrap_err(),
        PlanError::NotLeased
    );
}

#[test]
fn peers_become_remote_nodes() {
    let cfg = config("vxlan");
    let p = NodePlan::new(&cfg, 1500, MAC).unwrap();
    let r = remote_nodes(&cfg.peers, p.info.port).unwrap();
    assert_eq!(
        r,
        vec![RemoteNode {
            subnet: Cidr::new(Ipv4Addr::new(10, 244, 2, 0), 24).unwrap(),
            endpoint: "192.168.100.2:8472".parse().unwrap(),
            vtep_mac: MacAddr([0x0a, 0x58, 0x0a, 0xf4, 0x02, 0x01]),
            via: vswitch::core::Via::Tunnel,
        }]
    );
    let udp_peer = Peer {
        vtep_mac: None,
        ..cfg.peers[0].clone()
    };
    assert_eq!(
        remote_nodes(&[udp_peer], 8285).unwrap()[0].vtep_mac,
        MacAddr::ZERO
    );
}
