//! Writes the seed corpora `fuzz/seeds/<target>/` from the repository's
//! fixtures (`encap/src/fixtures/*.bin`, Linux VXLAN captures) and
//! handwritten valid inputs, in each target's input format.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example mkseeds` (from the
//! repository root); the output is committed, so this runs only when a
//! format or a fixture changes.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use encap::{vnet, MacAddr};
use twill_fuzz::frames::{
    arp, echo, eth, ipv4, pattern, tcp, udp, GATEWAY, PORTS, REMOTES, ROUTER_MAC,
};

const BCAST: MacAddr = MacAddr::BROADCAST;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = root().join("fuzz/seeds").join(target);
    fs::create_dir_all(&dir).expect("mkdir");
    fs::write(dir.join(name), bytes).expect("write seed");
}

fn frame(out: &mut Vec<u8>, f: &[u8]) {
    out.extend_from_slice(&(f.len() as u16).to_le_bytes());
    out.extend_from_slice(f);
}

/// `switch` events.
struct Prog(Vec<u8>);

impl Prog {
    fn new(sel: u8) -> Prog {
        Prog(vec![sel])
    }
    fn port(mut self, port: u16, fix: bool, offload: Option<vnet::Header>, f: &[u8]) -> Prog {
        self.0.extend_from_slice(&[
            0,
            1,
            port as u8,
            u8::from(fix) | (u8::from(offload.is_some()) << 1),
        ]);
        if let Some(h) = offload {
            let mut b = [0; 12];
            h.emit(&mut b).expect("12");
            self.0.extend_from_slice(&b);
        }
        frame(&mut self.0, f);
        self
    }
    fn tunnel(mut self, sender: u8, d: &[u8]) -> Prog {
        self.0.extend_from_slice(&[3, 1, sender, 1]);
        frame(&mut self.0, d);
        self
    }
    fn batch(mut self, sender: u8, seg: u16, d: &[u8]) -> Prog {
        self.0.extend_from_slice(&[5, 1, sender, 1]);
        self.0.extend_from_slice(&seg.to_le_bytes());
        frame(&mut self.0, d);
        self
    }
    fn run(mut self, dt: u8) -> Prog {
        self.0.extend_from_slice(&[6, dt]);
        self
    }
    fn remotes(mut self, mask: u8) -> Prog {
        self.0.extend_from_slice(&[7, 0, mask << 1]);
        self
    }
}

fn pod(i: usize) -> (MacAddr, Ipv4Addr) {
    (PORTS[i].mac, PORTS[i].ip)
}

fn switch_seeds() {
    let vx =
        std::fs::read(root().join("encap/src/fixtures/linux_vxlan_icmp.bin")).expect("fixture");
    let vx_udp =
        std::fs::read(root().join("encap/src/fixtures/linux_vxlan_udp.bin")).expect("fixture");
    let (hmac, hip) = pod(0);
    let (p3mac, p3ip) = pod(1);
    let (p4mac, p4ip) = pod(2);
    let r1 = Ipv4Addr::new(10, 244, 1, 7);
    let r3 = Ipv4Addr::new(10, 244, 3, 9);
    let outside = Ipv4Addr::new(8, 8, 8, 8);
    let arp_gw = eth(
        BCAST,
        p3mac,
        0x0806,
        &arp(1, p3mac, p3ip, MacAddr::ZERO, GATEWAY),
    );
    let ping_gw = eth(
        ROUTER_MAC,
        p3mac,
        0x0800,
        &ipv4(p3ip, GATEWAY, 1, 64, 1, &echo(7, 1, &pattern(56, 1))),
    );
    let pod_pod = eth(
        p4mac,
        p3mac,
        0x0800,
        &ipv4(p3ip, p4ip, 17, 64, 2, &udp(1000, 2000, b"hello")),
    );
    let routed_local = eth(
        ROUTER_MAC,
        p3mac,
        0x0800,
        &ipv4(p3ip, p4ip, 6, 64, 3, &tcp(1, 2, 3, 0x10, b"x")),
    );
    let to_remote = eth(
        ROUTER_MAC,
        p3mac,
        0x0800,
        &ipv4(p3ip, r1, 17, 64, 4, &udp(5, 6, &pattern(100, 2))),
    );
    let ttl1 = eth(
        ROUTER_MAC,
        p3mac,
        0x0800,
        &ipv4(p3ip, r3, 17, 1, 5, &udp(5, 6, b"ttl")),
    );
    let big = eth(
        ROUTER_MAC,
        p3mac,
        0x0800,
        &ipv4(p3ip, r1, 17, 64, 6, &udp(5, 6, &pattern(1500, 3))),
    );
    let outbound = eth(
        ROUTER_MAC,
        p4mac,
        0x0800,
        &ipv4(p4ip, outside, 6, 64, 7, &tcp(9, 443, 1, 0x10, b"out")),
    );
    let from_host = eth(
        ROUTER_MAC,
        hmac,
        0x0800,
        &ipv4(hip, r3, 1, 64, 8, &echo(1, 2, b"hi")),
    );
    let unknown_local = eth(
        ROUTER_MAC,
        p3mac,
        0x0800,
        &ipv4(
            p3ip,
            Ipv4Addr::new(10, 244, 2, 77),
            17,
            64,
            9,
            &udp(1, 2, b"?"),
        ),
    );
    let arp_reply = eth(
        ROUTER_MAC,
        p4mac,
        0x0806,
        &arp(2, p4mac, p4ip, ROUTER_MAC, GATEWAY),
    );
    // A TSO super-frame of 3 segments to a remote pod; a USO one.
    let tso = eth(
        ROUTER_MAC,
        p3mac,
        0x0800,
        &ipv4(
            p3ip,
            r1,
            6,
            64,
            10,
            &tcp(40000, 5201, 1000, 0x18, &pattern(3 * 1398, 4)),
        ),
    );
    let tso_hdr = vnet::Header {
        flags: vnet::F_NEEDS_CSUM,
        gso_type: vnet::GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1398,
        csum_start: 34,
        csum_offset: 16,
    };
    let uso = eth(
        ROUTER_MAC,
        p3mac,
        0x0800,
        &ipv4(
            p3ip,
            r3,
            17,
            64,
            11,
            &udp(4000, 5000, &pattern(4 * 1000, 5)),
        ),
    );
    let uso_hdr = vnet::Header {
        flags: vnet::F_NEEDS_CSUM,
        gso_type: vnet::GSO_UDP_L4,
        hdr_len: 42,
        gso_size: 1000,
        csum_start: 34,
        csum_offset: 6,
    };
    let csum_partial = vnet::Header {
        flags: vnet::F_NEEDS_CSUM,
        csum_start: 34,
        csum_offset: 6,
        ..vnet::Header::default()
    };

    for (sel, name) in [(0u8, "vxlan"), (1, "udp")] {
        let decap = if sel == 0 {
            vx.clone()
        } else {
            vx[22..].to_vec()
        };
        let decap_udp = if sel == 0 {
            vx_udp.clone()
        } else {
            vx_udp[22..].to_vec()
        };
        // A tunnel packet with TTL 1 to a local pod: an ICMP error goes back.
        let mut ttl1_in = decap.clone();
        let l3 = if sel == 0 { 22 } else { 0 };
        ttl1_in[l3 + 8] = 1;
        twill_fuzz::net::fix_ipv4_and_l4(&mut ttl1_in[l3..]);
        let mut two = decap_udp.clone();
        let seg = two.len() as u16;
        two.extend_from_slice(&decap_udp);
        two.extend_from_slice(&decap[..40]);

        write(
            "switch",
            &format!("{name}-arp-ping"),
            &Prog::new(sel)
                .port(1, false, None, &arp_gw)
                .port(1, false, None, &ping_gw)
                .0,
        );
        write(
            "switch",
            &format!("{name}-pods"),
            &Prog::new(sel)
                .port(1, false, None, &pod_pod)
                .port(1, false, None, &routed_local)
                .port(1, false, None, &unknown_local)
                .port(2, false, None, &arp_reply)
                .0,
        );
        write(
            "switch",
            &format!("{name}-to-remote"),
            &Prog::new(sel)
                .port(1, false, None, &to_remote)
                .port(1, false, None, &ttl1)
                .port(1, false, None, &big)
                .0,
        );
        write(
            "switch",
            &format!("{name}-host"),
            &Prog::new(sel)
                .port(2, false, None, &outbound)
                .port(0, false, None, &from_host)
                .0,
        );
        write(
            "switch",
            &format!("{name}-gso"),
            &Prog::new(sel)
                .port(1, false, Some(tso_hdr), &tso)
                .port(1, false, Some(uso_hdr), &uso)
                .port(1, false, Some(csum_partial), &to_remote)
                .0,
        );
        write(
            "switch",
            &format!("{name}-mtu576-gso"),
            &Prog::new(sel | 4)
                .port(1, false, Some(tso_hdr), &tso)
                .port(1, false, None, &big)
                .0,
        );
        write(
            "switch",
            &format!("{name}-linux-capture"),
            &Prog::new(sel)
                .tunnel(0, &decap)
                .tunnel(0, &decap_udp)
                .tunnel(2, &decap)
                .tunnel(1, &ttl1_in)
                .0,
        );
        write(
            "switch",
            &format!("{name}-gro-batch"),
            &Prog::new(sel).batch(0, seg, &two).0,
        );
        write(
            "switch",
            &format!("{name}-aging"),
            &Prog::new(sel)
                .port(1, false, None, &pod_pod)
                .tunnel(0, &decap)
                .run(0xff)
                .remotes(1)
                .tunnel(1, &decap)
                .run(10)
                .0,
        );
    }
}

/// `gro_*` programs: raw first frame, then generated continuations.
fn gro_prog(cap: u8, first: &[u8], next: &[(u16, u8)]) -> Vec<u8> {
    let mut p = vec![cap, 0, 0];
    frame(&mut p, first);
    for &(len, flags) in next {
        p.push(1);
        p.extend_from_slice(&len.to_le_bytes());
        p.extend_from_slice(&[flags, 9]);
    }
    p.push(3);
    p
}

fn gro_seeds() {
    let (a, b) = (Ipv4Addr::new(10, 244, 1, 3), Ipv4Addr::new(10, 244, 2, 3));
    let (ma, mb) = (REMOTES[0].vtep, ROUTER_MAC);
    let t = eth(
        mb,
        ma,
        0x0800,
        &ipv4(
            a,
            b,
            6,
            63,
            100,
            &tcp(40000, 5201, 0xffff_f000, 0x10, &pattern(1398, 1)),
        ),
    );
    write(
        "gro_tcp",
        "stream",
        &gro_prog(0, &t, &[(1398, 0), (1398, 0), (700, 0)]),
    );
    write("gro_tcp", "psh", &gro_prog(0, &t, &[(1398, 1), (1398, 0)]));
    write(
        "gro_tcp",
        "small-capacity",
        &gro_prog(2, &t, &[(1398, 0); 8]),
    );
    write(
        "gro_tcp",
        "ident-no-inc",
        &gro_prog(0, &t, &[(1398, 2), (1398, 0)]),
    );
    let mut t_nodf = t.clone();
    t_nodf[20] = 0;
    twill_fuzz::net::fix_frame(&mut t_nodf);
    write(
        "gro_tcp",
        "no-df",
        &gro_prog(0, &t_nodf, &[(1398, 0), (1398, 2), (10, 0)]),
    );
    let u = eth(
        mb,
        ma,
        0x0800,
        &ipv4(a, b, 17, 63, 200, &udp(4000, 5000, &pattern(64, 2))),
    );
    write(
        "gro_udp",
        "flow",
        &gro_prog(0, &u, &[(64, 0), (64, 0), (10, 0)]),
    );
    write("gro_udp", "long-flow", &gro_prog(0, &u, &[(64, 0); 70]));
    write(
        "gro_udp",
        "ident-gap",
        &gro_prog(0, &u, &[(64, 2), (64, 0)]),
    );
    write("gro_udp", "big", &gro_prog(0, &u, &[(1400, 0), (1400, 0)]));
    // The Linux captures' inner frames, as they come out of decapsulation.
    for (f, n) in [
        ("linux_vxlan_udp.bin", "gro_udp"),
        ("linux_vxlan_icmp.bin", "gro_tcp"),
    ] {
        let d = std::fs::read(root().join("encap/src/fixtures").join(f)).expect("fixture");
        write(
            n,
            "linux-capture",
            &gro_prog(0, &d[8..], &[(18, 0), (18, 0)]),
        );
    }
}

fn gso_seeds() {
    let (a, b) = (Ipv4Addr::new(10, 244, 2, 3), Ipv4Addr::new(10, 244, 1, 7));
    let tcp_sf = eth(
        REMOTES[0].vtep,
        ROUTER_MAC,
        0x0800,
        &ipv4(a, b, 6, 63, 1, &tcp(1, 2, 3, 0x19, &pattern(3000, 1))),
    );
    let udp_sf = eth(
        REMOTES[0].vtep,
        ROUTER_MAC,
        0x0800,
        &ipv4(a, b, 17, 63, 1, &udp(1, 2, &pattern(2500, 2))),
    );
    let mut vx = vec![8, 0, 0, 0, 0, 0, 1, 0];
    vx.extend_from_slice(&tcp_sf);
    for (name, sel, l3, mss, pkt) in [
        ("tcp", 0u8, 14u8, 1398u16, &tcp_sf),
        ("tcp-vxlan", 0, 22, 1000, &vx),
        ("udp", 1, 14, 1000, &udp_sf),
        ("udp-small-mss", 1, 14, 7, &udp_sf),
    ] {
        let mut s = vec![sel, l3];
        s.extend_from_slice(&mss.to_le_bytes());
        s.extend_from_slice(pkt);
        write("gso", name, &s);
    }
}

fn cni_seeds() {
    let env = |vals: [Option<&str>; 6], stdin: &str| {
        let mut p = Vec::new();
        for v in vals {
            p.push(u8::from(v.is_some()));
            frame(&mut p, v.unwrap_or("").as_bytes());
        }
        p.extend_from_slice(stdin.as_bytes());
        p
    };
    let conf =
        r#"{"cniVersion":"1.0.0","name":"twill","type":"twill","socket":"/run/twill/agent.sock"}"#;
    write(
        "cni_spec",
        "add",
        &env(
            [
                Some("ADD"),
                Some("abc123"),
                Some("/var/run/netns/x"),
                Some("eth0"),
                Some("IgnoreUnknown=1;K8S_POD_NAME=p;IP=10.244.2.9"),
                Some("/opt/cni/bin"),
            ],
            conf,
        ),
    );
    write(
        "cni_spec",
        "del-0.4",
        &env(
            [Some("DEL"), Some("c-1.x"), None, Some("eth0"), None, None],
            r#"{"cniVersion":"0.4.0","name":"net.1","type":"twill","prevResult":{"ips":[]}}"#,
        ),
    );
    write(
        "cni_spec",
        "version",
        &env(
            [Some("VERSION"), None, None, None, None, None],
            r#"{"cniVersion":"1.1.0"}"#,
        ),
    );
    write(
        "cni_spec",
        "bad",
        &env(
            [
                Some("GC"),
                Some("-bad"),
                None,
                Some("a/b"),
                Some("IP=::1"),
                None,
            ],
            r#"{"cniVersion":"0.2.0","name":"x","type":"twill","ipam":{}}"#,
        ),
    );
    write(
        "cni_spec",
        "conflist-entry",
        &env(
            [
                Some("CHECK"),
                Some("id"),
                Some("/proc/1/ns/net"),
                Some("net0"),
                Some("K8S_POD_NAMESPACE=default;K8S_POD_INFRA_CONTAINER_ID=id"),
                None,
            ],
            r#"{"cniVersion":"1.1.0","name":"k8s-pod-network","type":"twill","runtimeConfig":{"portMappings":[]},"dns":{"nameservers":["10.96.0.10"]}}"#,
        ),
    );
}

fn netconf_seeds() {
    for (name, text) in [
        (
            "flannel-default",
            r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#,
        ),
        (
            "full",
            r#"{"Network":"10.244.0.0/16","SubnetLen":24,"SubnetMin":"10.244.1.0","SubnetMax":"10.244.200.0","Backend":{"Type":"vxlan","VNI":1,"Port":8472}}"#,
        ),
        (
            "udp",
            r#"{"network":"10.1.0.0/20","subnetlen":26,"backend":{"type":"udp","port":8285}}"#,
        ),
        (
            "ipv4-disabled",
            r#"{"EnableIPv4":false,"Network":"10.0.0.0/8"}"#,
        ),
        (
            "lease-vxlan",
            r#"{"PublicIP":"192.168.100.2","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:58:0a:f4:02:01"}}"#,
        ),
        ("lease-udp", r#"{"PublicIP":"192.168.100.3"}"#),
    ] {
        write("netconf", name, text.as_bytes());
    }
}

fn controller_seeds() {
    let t = 1_764_900_000u64.to_le_bytes();
    let attrs = r#"{"PublicIP":"192.168.100.2","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:58:0a:f4:02:01"}}"#;
    let acquire = format!(r#"{{"attrs":{attrs},"previous":"10.244.7.0/24","ttl_secs":86400}}"#);
    let renew = format!(r#"{{"attrs":{attrs},"public_ip":"192.168.100.2","ttl_secs":60}}"#);
    let state = format!(
        r#"{{"version":1,"config":{{"Network":"10.244.0.0/16","SubnetLen":24,"SubnetMin":"10.244.1.0","SubnetMax":"10.244.255.0","Backend":{{"Type":"vxlan","VNI":1,"Port":8472}}}},"revision":3,"leases":[{{"subnet":"10.244.1.0/24","attrs":{attrs},"expiration":1764990000}}]}}"#
    );
    let snapshot = format!(
        r#"{{"revision":3,"leases":[{{"subnet":"10.244.1.0/24","attrs":{attrs},"expiration":1764990000}}]}}"#
    );
    for (name, sel, body) in [
        ("acquire", 0u8, acquire.as_str()),
        (
            "acquire-small-net",
            8,
            r#"{"attrs":{"PublicIP":"10.1.1.1"},"previous":null,"ttl_secs":0}"#,
        ),
        ("renew", 1, renew.as_str()),
        (
            "renew-ip-only",
            1,
            r#"{"public_ip":"192.168.100.9","ttl_secs":5}"#,
        ),
        (
            "error",
            2,
            r#"{"error":"all subnets leased","code":"out_of_subnets","network":"10.244.0.0/16","subnet_len":24,"count":256}"#,
        ),
        ("subnet-key", 3, "10.244.1.0-24"),
        ("state", 4, state.as_str()),
        ("snapshot", 5, snapshot.as_str()),
        (
            "release-query",
            7,
            r#"{"public_ip":"192.168.100.2","after":42}"#,
        ),
    ] {
        let mut s = vec![sel];
        s.extend_from_slice(&t);
        s.extend_from_slice(body.as_bytes());
        write("controller_body", name, &s);
    }
}

fn main() {
    let _ = fs::remove_dir_all(root().join("fuzz/seeds"));
    switch_seeds();
    gro_seeds();
    gso_seeds();
    cni_seeds();
    netconf_seeds();
    controller_seeds();
}
