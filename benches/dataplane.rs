//! Micro-benchmarks of the forwarding path: wire formats, table lookups and
//! the whole sans-IO core per frame. Throughput is reported in bytes (GB/s)
//! or elements (frames, lookups) per second.
//!
//! `cargo bench --bench dataplane` (add `-- --quick` for a short run).
//! Each "core" case copies the frame into the worker's buffer first, as the
//! TAP or socket read does; `copy_only` measures that copy alone.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use encap::{checksum, flow, gso, ipv4, vxlan, Cidr, MacAddr, PacketBuf};
use vswitch::core::{
    Action, Backend, MacTable, MacTableConfig, PortConfig, PortId, PortKind, RemoteNode,
    RemoteTable, SharedMacTable, Switch, SwitchConfig,
};

const HEADROOM: usize = 64;
const ROUTER: MacAddr = MacAddr([0x0e, 0, 0, 0, 0, 1]);
const REMOTE_VTEP: MacAddr = MacAddr([0x0e, 0, 0, 0, 0, 2]);

fn pod_mac(i: u8) -> MacAddr {
    MacAddr([0x0a, 0x58, 10, 244, 1, i])
}

/// An Ethernet/IPv4/UDP frame with `payload` bytes of data.
fn udp_frame(src: MacAddr, dst: MacAddr, sip: Ipv4Addr, dip: Ipv4Addr, payload: usize) -> Vec<u8> {
    let mut v = Vec::new();
    etherparse::PacketBuilder::ethernet2(src.0, dst.0)
        .ipv4(sip.octets(), dip.octets(), 64)
        .udp(40000, 5201)
        .write(&mut v, &vec![0x5a; payload])
        .unwrap();
    v
}

/// A switch for 10.244.1.0/24 with two pods, a host port and `remotes` nodes.
fn switch(backend: Backend, remotes: usize) -> (Switch, Instant) {
    let now = Instant::now();
    let mut sw = Switch::new(SwitchConfig {
        subnet: Cidr::new(Ipv4Addr::new(10, 244, 1, 0), 24).unwrap(),
        gateway: Ipv4Addr::new(10, 244, 1, 1),
        cluster: Cidr::new(Ipv4Addr::new(10, 0, 0, 0), 8).unwrap(),
        router_mac: ROUTER,
        backend,
        tunnel_mtu: 1450,
        mac: MacTableConfig::default(),
        neighbor_capacity: 4096,
        neighbor_aging: Duration::from_secs(300),
        conntrack: vswitch::core::config::ConntrackConfig::default(),
        icmp: Default::default(),
        storm: Default::default(),
    });
    sw.add_port(
        PortId(0),
        PortConfig {
            kind: PortKind::Host,
            mac: pod_mac(2),
            ip: Ipv4Addr::new(10, 244, 1, 2),
        },
        now,
    );
    sw.add_port(
        PortId(1),
        PortConfig {
            kind: PortKind::Pod,
            mac: pod_mac(3),
            ip: Ipv4Addr::new(10, 244, 1, 3),
        },
        now,
    );
    sw.add_port(
        PortId(2),
        PortConfig {
            kind: PortKind::Pod,
            mac: pod_mac(4),
            ip: Ipv4Addr::new(10, 244, 1, 4),
        },
        now,
    );
    sw.set_remotes(&remote_nodes(remotes));
    (sw, now)
}

/// `n` remote nodes: 10.(n>>8).(n&255).0/24 style subnets under 10.0.0.0/8,
/// node 0 holding 10.244.2.0/24.
fn remote_nodes(n: usize) -> Vec<RemoteNode> {
    (0..n)
        .map(|i| {
            let net = if i == 0 {
                Ipv4Addr::new(10, 244, 2, 0)
            } else {
                Ipv4Addr::new(10, (i >> 8) as u8, (i & 255) as u8, 0)
            };
            RemoteNode {
                subnet: Cidr::new(net, 24).unwrap(),
                endpoint: SocketAddrV4::new(
                    Ipv4Addr::new(192, 168, (i >> 8) as u8, (i & 255) as u8 | 1),
                    8472,
                ),
                vtep_mac: REMOTE_VTEP,
                via: vswitch::core::Via::Tunnel,
            }
        })
        .collect()
}

fn load(buf: &mut PacketBuf, frame: &[u8]) {
    buf.reset(HEADROOM)[..frame.len()].copy_from_slice(frame);
    buf.set_len(frame.len());
}

/// One frame through the core: from pod port 1, or from the tunnel peer.
fn once(
    sw: &mut Switch,
    buf: &mut PacketBuf,
    frame: &[u8],
    from_tunnel: Option<SocketAddrV4>,
    now: Instant,
) -> Action {
    load(buf, frame);
    match from_tunnel {
        Some(peer) => sw.process_tunnel(peer, buf, now),
        None => sw.process_port(PortId(1), buf, now),
    }
}

fn wire(c: &mut Criterion) {
    let frame = udp_frame(
        pod_mac(3),
        ROUTER,
        Ipv4Addr::new(10, 244, 1, 3),
        Ipv4Addr::new(10, 244, 2, 5),
        1422,
    );
    let ip = frame[14..].to_vec();
    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Bytes(ip.len() as u64));
    g.bench_function("checksum_1450B", |b| {
        b.iter(|| checksum::checksum(black_box(&ip)))
    });
    // A whole super-frame's payload: the size segmentation and coalescing sum.
    let big: Vec<u8> = (0..65_536u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    g.throughput(Throughput::Bytes(big.len() as u64));
    g.bench_function("checksum_64KiB", |b| {
        b.iter(|| checksum::checksum(black_box(&big)))
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("ipv4_check_and_ttl", |b| {
        // A lone 20-byte header (total length 20) with a valid checksum,
        // restored before every round.
        let mut orig = ip[..20].to_vec();
        orig[2..4].copy_from_slice(&20u16.to_be_bytes());
        orig[10..12].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&orig);
        orig[10..12].copy_from_slice(&c.to_be_bytes());
        let mut h = orig.clone();
        b.iter(|| {
            h.copy_from_slice(&orig);
            let mut p = ipv4::Packet::new_checked(black_box(&mut h[..])).unwrap();
            p.decrement_ttl();
        })
    });
    g.bench_function("vxlan_emit_parse", |b| {
        let mut h = [0u8; 8];
        b.iter(|| {
            vxlan::emit(black_box(&mut h), 1).unwrap();
            vxlan::parse(black_box(&h)).unwrap()
        })
    });
    g.bench_function("flow_hash", |b| {
        b.iter(|| flow::symmetric_ipv4(black_box(&ip)))
    });
    g.finish();
}

fn tables(c: &mut Criterion) {
    let mut g = c.benchmark_group("lookup");
    g.throughput(Throughput::Elements(1));
    let now = Instant::now();
    let mut mt = MacTable::new(MacTableConfig::default());
    let macs: Vec<MacAddr> = (0..4096u32)
        .map(|i| MacAddr([0x0a, 0, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8]))
        .collect();
    for (i, m) in macs.iter().enumerate() {
        let _ = mt.learn(*m, PortId((i % 64) as u16), now);
    }
    let mut i = 0usize;
    g.bench_function("mac_lookup_4096", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            mt.lookup(black_box(macs[i]))
        })
    });
    g.bench_function("mac_learn_refresh_4096", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            mt.learn(black_box(macs[i]), PortId((i % 64) as u16), now)
        })
    });
    for n in [16usize, 1000, 5000] {
        let t = RemoteTable::new(&remote_nodes(n));
        let dsts: Vec<Ipv4Addr> = (0..n)
            .map(|k| Ipv4Addr::new(10, (k >> 8) as u8, (k & 255) as u8, 9))
            .collect();
        let mut k = 0usize;
        g.bench_function(format!("route_{n}_nodes"), |b| {
            b.iter(|| {
                k = (k + 1) % n;
                t.route(black_box(dsts[k])).map(|r| r.endpoint)
            })
        });
    }
    g.finish();
}

/// How the workers could share the MAC table, on the path every frame takes
/// (a source MAC already known on its port, and a destination lookup), alone
/// and with a second thread doing the same on the same table meanwhile:
/// the `papaya` mirror the switch uses, a `dashmap` in its place, and one
/// mutex around the policy table. `mac_table_*` is one worker's own table,
/// as before the tables were shared.
fn learning(c: &mut Criterion) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    const N: usize = 4096;
    let mut g = c.benchmark_group("learning");
    g.throughput(Throughput::Elements(1));
    let now = Instant::now();
    let macs: Arc<Vec<MacAddr>> = Arc::new(
        (0..N as u32)
            .map(|i| MacAddr([0x0a, 0, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8]))
            .collect(),
    );
    let port = |i: usize| PortId((i % 64) as u16);
    let key = |m: MacAddr| {
        let [a, b, c, d, e, f] = m.0;
        u64::from_be_bytes([0, 0, a, b, c, d, e, f])
    };

    let mut own = MacTable::new(MacTableConfig::default());
    let shared = Arc::new(SharedMacTable::new(MacTableConfig::default()));
    let locked = Arc::new(Mutex::new(MacTable::new(MacTableConfig::default())));
    let dash: Arc<dashmap::DashMap<u64, (PortId, AtomicU64)>> = Arc::new(Default::default());
    for (i, m) in macs.iter().enumerate() {
        let _ = own.learn(*m, port(i), now);
        let _ = shared.learn(*m, port(i), now);
        let _ = locked.lock().unwrap().learn(*m, port(i), now);
        dash.insert(key(*m), (port(i), AtomicU64::new(0)));
    }
    let mut i = 0usize;
    g.bench_function("mac_table_refresh_and_lookup", |b| {
        b.iter(|| {
            i = (i + 1) & (N - 1);
            let _ = own.learn(black_box(macs[i]), port(i), now);
            own.lookup(black_box(macs[(i * 7) & (N - 1)]))
        })
    });

    // Each candidate's per-frame work, as a function a second thread can
    // run too.
    type Op = Arc<dyn Fn(usize) -> Option<PortId> + Send + Sync>;
    let candidates: Vec<(&str, Op)> = vec![
        ("papaya", {
            let (t, macs) = (shared.clone(), macs.clone());
            Arc::new(move |i| {
                let _ = t.learn(black_box(macs[i]), port(i), now);
                t.lookup(black_box(macs[(i * 7) & (N - 1)]))
            })
        }),
        ("dashmap", {
            let (t, macs) = (dash.clone(), macs.clone());
            Arc::new(move |i| {
                if let Some(e) = t.get(&key(black_box(macs[i]))) {
                    if e.0 == port(i) && e.1.load(Ordering::Relaxed) == 0 {
                        black_box(());
                    }
                }
                t.get(&key(black_box(macs[(i * 7) & (N - 1)]))).map(|e| e.0)
            })
        }),
        ("mutex", {
            let (t, macs) = (locked.clone(), macs.clone());
            Arc::new(move |i| {
                let mut t = t.lock().unwrap();
                let _ = t.learn(black_box(macs[i]), port(i), now);
                t.lookup(black_box(macs[(i * 7) & (N - 1)]))
            })
        }),
    ];
    for (name, op) in candidates {
        let mut i = 0usize;
        g.bench_function(format!("{name}_refresh_and_lookup"), |b| {
            b.iter(|| {
                i = (i + 1) & (N - 1);
                op(i)
            })
        });
        let stop = Arc::new(AtomicBool::new(false));
        let other = {
            let (op, stop) = (op.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut j = N / 2;
                while !stop.load(Ordering::Relaxed) {
                    j = (j + 1) & (N - 1);
                    black_box(op(j));
                }
            })
        };
        g.bench_function(format!("{name}_refresh_and_lookup_contended"), |b| {
            b.iter(|| {
                i = (i + 1) & (N - 1);
                op(i)
            })
        });
        stop.store(true, Ordering::Relaxed);
        other.join().unwrap();
    }
    g.finish();
}

fn core(c: &mut Criterion) {
    let mut g = c.benchmark_group("core");
    for size in [64usize, 1450] {
        let payload = size - 28;
        let to_remote = udp_frame(
            pod_mac(3),
            ROUTER,
            Ipv4Addr::new(10, 244, 1, 3),
            Ipv4Addr::new(10, 244, 2, 5),
            payload,
        );
        let same_node = udp_frame(
            pod_mac(3),
            pod_mac(4),
            Ipv4Addr::new(10, 244, 1, 3),
            Ipv4Addr::new(10, 244, 1, 4),
            payload,
        );
        let inner = udp_frame(
            REMOTE_VTEP,
            ROUTER,
            Ipv4Addr::new(10, 244, 2, 5),
            Ipv4Addr::new(10, 244, 1, 4),
            payload,
        );
        let from_remote = [&[0x08, 0, 0, 0, 0, 0, 1, 0][..], &inner].concat();
        let peer = SocketAddrV4::new(Ipv4Addr::new(192, 168, 0, 1), 40000);
        g.throughput(Throughput::Bytes(size as u64));
        let mut buf = PacketBuf::new(65536 + 2 * HEADROOM, HEADROOM);

        g.bench_function(format!("copy_only_{size}B"), |b| {
            b.iter(|| load(&mut buf, black_box(&to_remote)))
        });
        let (mut sw, now) = switch(Backend::Vxlan { vni: 1 }, 1000);
        // Each case is checked once, for real, before it is timed.
        assert_eq!(
            once(&mut sw, &mut buf, &same_node, None, now),
            Action::Output(PortId(2))
        );
        assert!(matches!(
            once(&mut sw, &mut buf, &to_remote, None, now),
            Action::Tunnel { .. }
        ));
        assert_eq!(
            once(&mut sw, &mut buf, &from_remote, Some(peer), now),
            Action::Output(PortId(2))
        );
        g.bench_function(format!("switch_same_node_{size}B"), |b| {
            b.iter(|| {
                load(&mut buf, black_box(&same_node));
                sw.process_port(PortId(1), &mut buf, now)
            })
        });
        g.bench_function(format!("encap_vxlan_{size}B"), |b| {
            b.iter(|| {
                load(&mut buf, black_box(&to_remote));
                sw.process_port(PortId(1), &mut buf, now)
            })
        });
        g.bench_function(format!("decap_vxlan_{size}B"), |b| {
            b.iter(|| {
                load(&mut buf, black_box(&from_remote));
                sw.process_tunnel(peer, &mut buf, now)
            })
        });
        let (mut su, now) = switch(Backend::Udp, 1000);
        let from_remote_udp = inner[14..].to_vec();
        assert!(matches!(
            once(&mut su, &mut buf, &to_remote, None, now),
            Action::Tunnel { .. }
        ));
        assert_eq!(
            once(&mut su, &mut buf, &from_remote_udp, Some(peer), now),
            Action::Output(PortId(2))
        );
        g.bench_function(format!("encap_udp_{size}B"), |b| {
            b.iter(|| {
                load(&mut buf, black_box(&to_remote));
                su.process_port(PortId(1), &mut buf, now)
            })
        });
        g.bench_function(format!("decap_udp_{size}B"), |b| {
            b.iter(|| {
                load(&mut buf, black_box(&from_remote_udp));
                su.process_tunnel(peer, &mut buf, now)
            })
        });
    }
    g.finish();
}

/// NetworkPolicy's cost: an established connection's packets (bridged
/// between two local pods, and from the tunnel) when 1,000 policies select
/// the destination pod, against the same frames with no policy; and the
/// verdict a new connection's first packet pays.
fn policy(c: &mut Criterion) {
    use vswitch::core::policy::{PodPolicy, PolicyTable, PortRange, Ports, RuleSet};
    let mut g = c.benchmark_group("policy");
    // 1,000 policies selecting pod .4, each allowing one peer on one port,
    // merged as the agent compiles them; one of them allows .3 and the
    // remote pod on UDP 5201 (the frames' port).
    let mut rs = RuleSet::deny_all();
    for i in 0..1000u32 {
        let peer = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 200, 0, 0)) + i);
        rs.allow_peer(peer, &Ports::Some(vec![PortRange::one(6, 1000 + i as u16)]));
    }
    let udp5201 = Ports::Some(vec![PortRange::one(17, 5201)]);
    rs.allow_peer(Ipv4Addr::new(10, 244, 1, 3), &udp5201);
    rs.allow_peer(Ipv4Addr::new(10, 244, 2, 5), &udp5201);
    let mut table = PolicyTable::new();
    table.insert(
        Ipv4Addr::new(10, 244, 1, 4),
        PodPolicy {
            ingress: Some(rs),
            egress: None,
        },
    );
    let size = 64usize;
    let same_node = udp_frame(
        pod_mac(3),
        pod_mac(4),
        Ipv4Addr::new(10, 244, 1, 3),
        Ipv4Addr::new(10, 244, 1, 4),
        size - 28,
    );
    let inner = udp_frame(
        REMOTE_VTEP,
        ROUTER,
        Ipv4Addr::new(10, 244, 2, 5),
        Ipv4Addr::new(10, 244, 1, 4),
        size - 28,
    );
    let from_remote = [&[0x08, 0, 0, 0, 0, 0, 1, 0][..], &inner].concat();
    let peer = SocketAddrV4::new(Ipv4Addr::new(192, 168, 0, 1), 40000);
    let mut buf = PacketBuf::new(65536 + 2 * HEADROOM, HEADROOM);
    g.throughput(Throughput::Elements(1));
    for with in [false, true] {
        let (mut sw, now) = switch(Backend::Vxlan { vni: 1 }, 1000);
        if with {
            sw.state().set_policy(table.clone());
        }
        let name = if with { "1000_policies" } else { "no_policy" };
        // Checked (and, with policy, the connections opened) once.
        assert_eq!(
            once(&mut sw, &mut buf, &same_node, None, now),
            Action::Output(PortId(2))
        );
        assert_eq!(
            once(&mut sw, &mut buf, &from_remote, Some(peer), now),
            Action::Output(PortId(2))
        );
        assert_eq!(sw.state().conntrack().len(), if with { 2 } else { 0 });
        g.bench_function(format!("established_same_node_64B_{name}"), |b| {
            b.iter(|| {
                load(&mut buf, black_box(&same_node));
                sw.process_port(PortId(1), &mut buf, now)
            })
        });
        g.bench_function(format!("established_decap_vxlan_64B_{name}"), |b| {
            b.iter(|| {
                load(&mut buf, black_box(&from_remote));
                sw.process_tunnel(peer, &mut buf, now)
            })
        });
    }
    let (src, dst) = (Ipv4Addr::new(10, 244, 2, 5), Ipv4Addr::new(10, 244, 1, 4));
    g.bench_function("first_packet_verdict_1000_policies", |b| {
        b.iter(|| table.verdict(black_box(src), black_box(dst), 17, black_box(5201), false))
    });
    g.finish();
}

/// Software segmentation of a 64 KiB TCP super-packet behind a VXLAN +
/// inner Ethernet prefix (what `Worker::send_tunnel` does to a pod's TSO
/// frame), at MSS 1410: the copying segmentation (headers and payload
/// into one buffer) against the header-only one (payload read once for
/// the checksums, left in place). Throughput is the payload, in bytes.
fn segmentation(c: &mut Criterion) {
    const L3: usize = 22;
    const MSS: usize = 1410;
    let payload = 65_535 - 20 - 32;
    let mut pkt = vec![0x11u8; L3];
    etherparse::PacketBuilder::ipv4([10, 244, 1, 3], [10, 244, 2, 5], 64)
        .tcp(40000, 5201, 0x1234_5678, 502)
        .options(&[
            etherparse::TcpOptionElement::Noop,
            etherparse::TcpOptionElement::Noop,
            etherparse::TcpOptionElement::Timestamp(1, 2),
        ])
        .unwrap()
        .ack(7)
        .psh()
        .write(&mut pkt, &vec![0x5a; payload])
        .unwrap();
    let mut out = vec![0u8; 65_536 + 64 * 160];
    let mut hdrs = vec![0u8; 64 * 160];
    let mut g = c.benchmark_group("gso");
    g.throughput(Throughput::Bytes(payload as u64));
    g.bench_function("tcp4_64KiB_copy", |b| {
        b.iter(|| gso::segment_tcp4(black_box(&pkt), L3, MSS, &mut out).unwrap())
    });
    g.bench_function("tcp4_64KiB_headers_only", |b| {
        b.iter(|| gso::segment_tcp4_headers(black_box(&pkt), L3, MSS, &mut hdrs).unwrap())
    });
    g.finish();
}

criterion_group!(benches, wire, tables, learning, core, policy, segmentation);
criterion_main!(benches);
