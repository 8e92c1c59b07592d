use super::*;
use control::{BgpConfig, NodeConfig};

fn cfg(bgp: serde_json::Value) -> BgpConfig {
    let v = serde_json::json!({
        "name": "node-a", "public_ip": "192.168.130.1", "subnet": "10.244.1.0/24",
        "net_conf": { "Network": "10.244.0.0/16", "Backend": { "Type": "vxlan" } },
        "bgp": bgp,
    });
    NodeConfig::parse(&v.to_string(), "/etc/twill")
        .unwrap()
        .bgp
        .unwrap()
}

fn node(name: &str, ip: [u8; 4], subnet: &str) -> Peer {
    Peer {
        name: name.into(),
        public_ip: Ipv4Addr::from(ip),
        subnet: subnet.parse().unwrap(),
        vtep_mac: None,
    }
}

fn params(sessions: Vec<Session>) -> BirdParams {
    BirdParams {
        router_id: Ipv4Addr::new(192, 168, 130, 1),
        asn: 64512,
        subnet: "10.244.1.0/24".parse().unwrap(),
        network: "10.244.0.0/16".parse().unwrap(),
        host_port: "twill0".into(),
        hold_time_secs: 9,
        sessions,
    }
}

#[test]
fn sessions_are_the_routers_and_with_mesh_every_other_node_once() {
    let c = cfg(serde_json::json!({ "asn": 64512, "mesh": true,
        "peers": [{ "address": "192.168.130.254", "asn": 65000, "password": "pw" }] }));
    let me = Ipv4Addr::new(192, 168, 130, 1);
    let nodes = [
        node("node-c", [192, 168, 131, 3], "10.244.3.0/24"),
        node("node-a", [192, 168, 130, 1], "10.244.1.0/24"),
        node("node-b", [192, 168, 130, 2], "10.244.2.0/24"),
        // A router that is also in the node table is peered with once.
        node("rr", [192, 168, 130, 254], "10.244.9.0/24"),
    ];
    let s = sessions(&c, me, &nodes);
    let names: Vec<&str> = s.iter().map(|s| s.protocol.as_str()).collect();
    assert_eq!(
        names,
        [
            "router_192_168_130_254",
            "mesh_192_168_130_2",
            "mesh_192_168_131_3"
        ]
    );
    assert_eq!(s[0].password.as_deref(), Some("pw"));
    assert_eq!(s[1].asn, 64512);
    assert_eq!(
        s[1].kind,
        PeerKind::Mesh {
            node: "node-b".into()
        }
    );
    // Without mesh, the node table adds nobody.
    let c = cfg(serde_json::json!({ "asn": 64512,
        "peers": [{ "address": "192.168.130.254", "asn": 65000 }] }));
    assert_eq!(sessions(&c, me, &nodes).len(), 1);
}

#[test]
fn bird_conf_announces_the_subnet_to_bgp_only_and_learns_inside_the_network() {
    let c = cfg(
        serde_json::json!({ "asn": 64512, "mesh": true, "hold_time_secs": 9,
        "peers": [{ "address": "192.168.130.254", "asn": 65000, "password": "s3cret" }] }),
    );
    let nodes = [node("node-b", [192, 168, 130, 2], "10.244.2.0/24")];
    let conf = bird_conf(&params(sessions(
        &c,
        Ipv4Addr::new(192, 168, 130, 1),
        &nodes,
    )));
    for want in [
        "router id 192.168.130.1;",
        "route 10.244.1.0/24 blackhole;",
        "export where source = RTS_BGP;",
        "if net ~ [ 10.244.1.0/24+ ] then reject;",
        "if net ~ [ 10.244.0.0/16+ ] then accept;",
        "interface -\"twill0\", \"*\";",
        "protocol bgp router_192_168_130_254 {\n  description \"router\";\n  \
         local 192.168.130.1 as 64512;\n  neighbor 192.168.130.254 as 65000;\n  \
         hold time 9;\n  connect retry time 5;\n  error wait time 5, 60;\n  password \"s3cret\";\n  allow local as;\n",
        "protocol bgp mesh_192_168_130_2 {\n  description \"node node-b\";\n  \
         local 192.168.130.1 as 64512;\n  neighbor 192.168.130.2 as 64512;\n  hold time 9;\n  connect retry time 5;\n  error wait time 5, 60;\n  ipv4",
        "export where proto = \"twill_subnet\";\n    next hop self;",
    ] {
        assert!(conf.contains(want), "missing {want:?} in:\n{conf}");
    }
    // The mesh session is internal: no relaxed loop detection there.
    assert_eq!(conf.matches("allow local as").count(), 1, "{conf}");
    // BIRD itself accepts it, where it is installed (`bird -p` parses only).
    let bird = Path::new(control::bgp::DEFAULT_BIRD);
    if bird.exists() {
        let dir = std::env::temp_dir().join(format!("twill-bird-conf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("bird.conf");
        std::fs::write(&f, &conf).unwrap();
        let out = Command::new(bird)
            .arg("-p")
            .arg("-c")
            .arg(&f)
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            out.status.success(),
            "{}\n{conf}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn names_and_passwords_cannot_break_out_of_their_quotes() {
    let mut p = params(vec![Session {
        protocol: "mesh_10_0_0_2".into(),
        address: Ipv4Addr::new(10, 0, 0, 2),
        asn: 64512,
        kind: PeerKind::Mesh {
            node: "evil\"; protocol x {".into(),
        },
        password: None,
    }]);
    p.host_port = "tw\"0".into();
    let conf = bird_conf(&p);
    assert!(
        conf.contains("description \"node evil; protocol x {\";"),
        "{conf}"
    );
    assert!(conf.contains("interface -\"tw0\""), "{conf}");
}

#[test]
fn status_table_reads_like_calicoctl_node_status() {
    let v = serde_json::json!({
        "asn": 64512, "hold_time_secs": 9,
        "bird": { "running": true, "answering": true, "restarts": 0 },
        "peers": [
            { "address": "192.168.130.254", "type": "router", "node": null, "asn": 65000,
              "state": "up", "since": "2026-12-05T10:03:13", "info": "Established" },
            { "address": "192.168.130.2", "type": "node-to-node mesh", "node": "node-b",
              "asn": 64512, "state": "start", "since": "2026-12-05T10:03:10",
              "info": "Active Socket: Connection refused" },
        ],
    });
    let t = status_table(&v);
    assert!(
        t.starts_with("BIRD is running (AS 64512, hold time 9 s, restarts 0).\n"),
        "{t}"
    );
    assert!(t.contains("| PEER ADDRESS    | PEER TYPE"), "{t}");
    assert!(t.contains("| 192.168.130.254 | router "), "{t}");
    assert!(t.contains("node-to-node mesh (node-b)"), "{t}");
    assert!(t.contains("| Established "), "{t}");
    assert_eq!(t.lines().count(), 7, "{t}");
}
