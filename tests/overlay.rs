//! Two twill nodes in network namespaces, two pods each, for both backends:
//! every path of the issue (pod↔pod on one node and across nodes, host↔pod,
//! host→other node's pod, pod→gateway) with ping, a byte-verified TCP
//! transfer and a UDP exchange; detach/re-attach; and tunnel packets from an
//! unknown underlay sender or with a wrong VNI, which must not be delivered.
// Helpers outside #[test] functions panic on failure too: this is a test crate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use common::*;
use vswitch::stats::{Report, TunnelStats};

fn all_paths(backend: &str, offload: bool) {
    // With offloads: the default, one worker per CPU. Without: a single
    // worker, so both the multi-queue and the single-queue set-ups run.
    let args: &[&str] = if offload {
        &[]
    } else {
        &["--no-offload", "--workers", "1"]
    };
    let c = Cluster::with_node_args(backend, args).unwrap();
    let host_a = c.node_a.config().host_ip();
    let host_b = c.node_b.config().host_ip();
    let mtu = 1500 - c.node_a.config().net_conf.backend.overhead();
    for pod in [&c.a1, &c.a2, &c.b1, &c.b2] {
        assert_eq!(pod.info().unwrap().mtu, mtu, "pod MTU for {backend}");
    }
    let (a1, a2, b1, b2) = (c.a1.netns(), c.a2.netns(), c.b1.netns(), c.b2.netns());
    let (ia1, ia2, ib1, ib2) = (c.a1.ip(), c.a2.ip(), c.b1.ip(), c.b2.ip());

    check_path("pod a1 -> pod a2 (same node)", a1, ia1, a2, ia2).unwrap();
    check_path("pod b2 -> pod b1 (same node)", b2, ib2, b1, ib1).unwrap();
    check_path("pod a1 -> pod b1 (across)", a1, ia1, b1, ib1).unwrap();
    check_path("pod b1 -> pod a1 (across)", b1, ib1, a1, ia1).unwrap();
    check_path("pod b2 -> pod a2 (across)", b2, ib2, a2, ia2).unwrap();
    check_path("host A -> pod a1 (own pod)", &c.ns_a, host_a, a1, ia1).unwrap();
    check_path("host B -> pod b2 (own pod)", &c.ns_b, host_b, b2, ib2).unwrap();
    check_path("host A -> pod b1 (other node)", &c.ns_a, host_a, b1, ib1).unwrap();
    check_path("host B -> pod a2 (other node)", &c.ns_b, host_b, a2, ia2).unwrap();
    check_path("pod a2 -> host A (.2)", a2, ia2, &c.ns_a, host_a).unwrap();
    check_path("pod b1 -> host B (.2)", b1, ib1, &c.ns_b, host_b).unwrap();
    ping(a1, c.node_a.config().gateway(), 3).unwrap();
    ping(b2, c.node_b.config().gateway(), 3).unwrap();

    // Which path carried the verified bytes: with offloads the pods' TCP
    // left as super-frames, cut into segments sent with UDP_SEGMENT.
    for node in [&c.node_a, &c.node_b] {
        let v = node.counters().unwrap();
        let t = &v.tunnel;
        assert_eq!(t.tx_offload_errors, 0, "{v:?}");
        assert_eq!(
            v.drops.unsupported_offload + v.drops.gso_segment_too_big,
            0,
            "{v:?}"
        );
        let port_offloads: u64 = v.ports.iter().map(|p| u64::from(p.offloads)).sum();
        let cpus = std::thread::available_parallelism()
            .map(|c| c.get())
            .unwrap_or(1)
            .min(16) as u64;
        let want_workers = match (offload, twill_lab::lab_workers().unwrap()) {
            (false, _) => 1,
            (true, Some(n)) => n as u64,
            (true, None) => cpus,
        };
        assert_eq!(v.workers as u64, want_workers, "worker threads: {v:?}");
        // Small datagrams (pings, ACKs, the UDP exchange; every frame
        // without offloads) leave in sendmmsg batches.
        assert!(t.tx_mmsg_sends > 0, "no sendmmsg batch: {v:?}");
        // The default busy poll is adaptive: the pings' sparse small packets
        // were followed by polls (the bulk TCP transfers held them).
        assert!(v.busy_polls > 0, "no busy poll after sparse traffic: {v:?}");
        // Every tunnel message came through recvmmsg, with or without
        // UDP_GRO (each message one datagram or a batch of them).
        let (calls, msgs) = (t.rx_mmsg_calls, t.rx_mmsg_messages);
        assert!(calls > 0 && msgs >= calls, "{v:?}");
        assert!(t.rx_packets >= msgs, "{v:?}");
        eprintln!(
            "tunnel tx: {} datagrams, {} sendmmsg batches, {} UDP_SEGMENT sends; \
             rx: {} datagrams in {msgs} messages, {calls} recvmmsg calls",
            t.tx_packets, t.tx_mmsg_sends, t.tx_gso_sends, t.rx_packets,
        );
        if offload {
            assert!(t.tx_gso_packets > 0, "no super-packet was segmented: {v:?}");
            assert!(t.tx_gso_sends > 0, "no UDP_SEGMENT send: {v:?}");
            assert!(port_offloads > 0, "no TAP accepted offloads: {v:?}");
            assert!(
                t.rx_coalesced_frames > 0,
                "no received segments were coalesced into a super-frame: {v:?}"
            );
        } else {
            assert_eq!(t.tx_gso_packets, 0, "{v:?}");
            assert_eq!(port_offloads, 0, "{v:?}");
            assert_eq!(t.rx_coalesced_frames, 0, "{v:?}");
        }
    }
}

#[test]
fn vxlan_all_paths() {
    if require_root("vxlan_all_paths") {
        all_paths("vxlan", true);
    }
}

#[test]
fn vxlan_all_paths_without_offload() {
    if require_root("vxlan_all_paths_without_offload") {
        all_paths("vxlan", false);
    }
}

#[test]
fn udp_all_paths() {
    if require_root("udp_all_paths") {
        all_paths("udp", true);
    }
}

/// Busy polling changes only when a worker sleeps: paths across and within
/// a node still carry verified bytes whether workers always poll or never
/// do (the other tests run the default, adaptive).
#[test]
fn vxlan_busy_poll() {
    if !require_root("vxlan_busy_poll") {
        return;
    }
    for args in [
        &["--busy-poll", "always", "--busy-poll-us", "500"][..],
        &["--busy-poll", "off"][..],
    ] {
        let c = Cluster::with_node_args("vxlan", args).unwrap();
        check_path(
            "pod a1 -> pod b1 (across)",
            c.a1.netns(),
            c.a1.ip(),
            c.b1.netns(),
            c.b1.ip(),
        )
        .unwrap();
        check_path(
            "pod a2 -> pod a1 (same node)",
            c.a2.netns(),
            c.a2.ip(),
            c.a1.netns(),
            c.a1.ip(),
        )
        .unwrap();
        let r = ping(c.b2.netns(), c.a2.ip(), 5).unwrap();
        assert_eq!(r.received, 5, "{args:?}: {r:?}");
        let polls = |node: &twill_lab::NodeProcess| node.counters().unwrap().busy_polls;
        let polls = polls(&c.node_a) + polls(&c.node_b);
        if args[1] == "off" {
            assert_eq!(polls, 0, "{args:?}");
        } else {
            assert!(polls > 0, "{args:?}");
        }
    }
}

/// Bytes of each datagram of [`udp_burst`]: the benchmark's packet size.
const BURST_LEN: usize = 64;

/// Datagram `seq` of [`udp_burst`]: the sequence number, then bytes that
/// depend on it.
fn burst_datagram(seq: u32) -> Vec<u8> {
    let mut d = seq.to_be_bytes().to_vec();
    d.extend((4..BURST_LEN).map(|i| (seq as usize * 7 + i) as u8));
    d
}

/// Sends `bursts` bursts of `per_burst` datagrams of [`BURST_LEN`] bytes,
/// 5 ms apart, from a connected socket in `from` (as iperf3 does: the IP
/// identifications count up) to a socket in `to`; returns the sequence
/// numbers that arrived, in arrival order, after checking each datagram's
/// bytes. With `gso`, each burst is one send with `UDP_SEGMENT` (the pod's
/// kernel hands its TAP one USO super-frame per burst).
fn udp_burst(
    from: &Netns,
    from_ip: Ipv4Addr,
    to: &Netns,
    to_ip: Ipv4Addr,
    bursts: u32,
    per_burst: u32,
    gso: bool,
) -> Result<Vec<u32>> {
    use nix::sys::socket::{setsockopt, sockopt};
    let rx = udp_socket(to, SocketAddrV4::new(to_ip, 0))?;
    setsockopt(&rx, sockopt::RcvBufForce, &(8 << 20))?;
    rx.set_read_timeout(Some(Duration::from_millis(1000)))?;
    let tx = udp_socket(from, SocketAddrV4::new(from_ip, 0))?;
    tx.connect(rx.local_addr()?)?;
    if gso {
        setsockopt(&tx, sockopt::UdpGsoSegment, &(BURST_LEN as i32))?;
    }
    let total = bursts * per_burst;
    let reader = std::thread::spawn(move || -> Result<Vec<u32>> {
        let (mut got, mut buf) = (Vec::new(), [0u8; 2048]);
        while got.len() < total as usize {
            let n = match rx.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) => return Err(e.into()),
            };
            let seq = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
            if buf[..n] != burst_datagram(seq)[..] {
                bail!("datagram {seq} arrived corrupted ({n} bytes)");
            }
            got.push(seq);
        }
        Ok(got)
    });
    for b in 0..bursts {
        let seqs = b * per_burst..(b + 1) * per_burst;
        if gso {
            tx.send(&seqs.flat_map(burst_datagram).collect::<Vec<u8>>())?;
        } else {
            for seq in seqs {
                tx.send(&burst_datagram(seq))?;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))?
}

/// A burst of same-size datagrams from a pod on one node to a pod on the
/// other arrives whole and in order; on the way in, node A received it with
/// recvmmsg and wrote it to the pod as USO frames.
fn udp_burst_is_coalesced(backend: &str) {
    let c = Cluster::new(backend).unwrap();
    // Warm up: ARP and MAC learning on both nodes.
    ping(c.b1.netns(), c.a1.ip(), 2).unwrap();
    let before = c.node_a.counters().unwrap();
    let (bursts, per_burst) = (30, 64);
    let got = udp_burst(
        c.b1.netns(),
        c.b1.ip(),
        c.a1.netns(),
        c.a1.ip(),
        bursts,
        per_burst,
        false,
    )
    .unwrap();
    let want: Vec<u32> = (0..bursts * per_burst).collect();
    assert!(
        got == want,
        "{} of {} datagrams arrived; first out of place: {:?}",
        got.len(),
        want.len(),
        got.iter().zip(&want).position(|(a, b)| a != b)
    );
    let v = c.node_a.counters().unwrap();
    let grew = |k: fn(&TunnelStats) -> u64| k(&v.tunnel) - k(&before.tunnel);
    let uso = v.ports.iter().all(|p| p.offloads & 0x20 != 0);
    assert!(uso, "a port did not accept USO: {v:?}");
    eprintln!(
        "{backend}: {} datagrams in {} messages, {} recvmmsg calls; {} coalesced into {} USO frames",
        grew(|t| t.rx_packets),
        grew(|t| t.rx_mmsg_messages),
        grew(|t| t.rx_mmsg_calls),
        grew(|t| t.rx_coalesced_udp_datagrams),
        grew(|t| t.rx_coalesced_udp_frames),
    );
    assert!(grew(|t| t.rx_mmsg_calls) > 0, "{v:?}");
    assert!(
        grew(|t| t.rx_mmsg_messages) > grew(|t| t.rx_mmsg_calls),
        "never more than one message per recvmmsg: {v:?}"
    );
    assert!(
        grew(|t| t.rx_coalesced_udp_frames) > 0,
        "no USO frame: {v:?}"
    );
    assert!(
        grew(|t| t.rx_coalesced_udp_datagrams) > 2 * grew(|t| t.rx_coalesced_udp_frames),
        "{v:?}"
    );
}

#[test]
fn vxlan_udp_burst_is_coalesced() {
    if require_root("vxlan_udp_burst_is_coalesced") {
        udp_burst_is_coalesced("vxlan");
    }
}

#[test]
fn udp_backend_udp_burst_is_coalesced() {
    if require_root("udp_backend_udp_burst_is_coalesced") {
        udp_burst_is_coalesced("udp");
    }
}

/// A pod's `UDP_SEGMENT` sends reach its TAP as USO super-frames: to a pod
/// on the same node they pass whole, to another node they are cut into
/// datagrams sent with `UDP_SEGMENT`; every datagram arrives, in order, with
/// its bytes.
#[test]
fn vxlan_pod_udp_gso_sends() {
    if !require_root("vxlan_pod_udp_gso_sends") {
        return;
    }
    let c = Cluster::new("vxlan").unwrap();
    ping(c.b1.netns(), c.a1.ip(), 2).unwrap();
    ping(c.b1.netns(), c.b2.ip(), 2).unwrap();
    let (bursts, per_burst) = (20, 40);
    let want: Vec<u32> = (0..bursts * per_burst).collect();
    for (what, to) in [("other node", &c.a1), ("same node", &c.b2)] {
        let before = c.node_b.counters().unwrap();
        let got = udp_burst(
            c.b1.netns(),
            c.b1.ip(),
            to.netns(),
            to.ip(),
            bursts,
            per_burst,
            true,
        )
        .unwrap();
        assert!(
            got == want,
            "{what}: {} of {} datagrams arrived; first out of place: {:?}",
            got.len(),
            want.len(),
            got.iter().zip(&want).position(|(a, b)| a != b)
        );
        let v = c.node_b.counters().unwrap();
        let ports_rx_gso = |v: &Report| -> u64 { v.ports.iter().map(|p| p.rx_gso).sum() };
        assert!(
            ports_rx_gso(&v) >= ports_rx_gso(&before) + u64::from(bursts),
            "{what}: the pod's sends did not reach the TAP as super-frames: {v:?}"
        );
        let t_grew = |k: fn(&TunnelStats) -> u64| k(&v.tunnel) - k(&before.tunnel);
        if what == "other node" {
            assert!(t_grew(|t| t.tx_gso_packets) >= u64::from(bursts), "{v:?}");
            assert_eq!(t_grew(|t| t.tx_offload_errors), 0, "{v:?}");
        } else {
            assert_eq!(t_grew(|t| t.tx_gso_packets), 0, "{v:?}");
        }
    }
}

fn detach_reattach(backend: &str) {
    let mut c = Cluster::new(backend).unwrap();
    ping(c.a1.netns(), c.a2.ip(), 2).unwrap();
    ping(c.b1.netns(), c.a2.ip(), 2).unwrap();
    let old_ip = c.a2.ip();
    c.a2.detach().unwrap();
    ping_unanswered(c.a1.netns(), old_ip).unwrap();
    ping_unanswered(c.b1.netns(), old_ip).unwrap();
    let listed = c
        .node_a
        .cli(&[
            "pod",
            "list",
            "--socket",
            &c.node_a.socket().to_string_lossy(),
        ])
        .unwrap();
    let pods: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(pods.as_array().map(Vec::len), Some(1), "pod list: {listed}");

    c.a2.reattach(None).unwrap();
    // a1's kernel may still hold a2's old MAC in its ARP cache (the new TAP
    // may have a new MAC); that is the pod kernel's business, not the switch's.
    c.a1.netns().ip(&["neigh", "flush", "all"]).unwrap();
    let (a2, ia2) = (c.a2.netns(), c.a2.ip());
    check_path("pod a1 -> re-attached a2", c.a1.netns(), c.a1.ip(), a2, ia2).unwrap();
    // Across nodes the router on node A must resolve the new attachment.
    check_path("pod b1 -> re-attached a2", c.b1.netns(), c.b1.ip(), a2, ia2).unwrap();
}

#[test]
fn vxlan_detach_reattach() {
    if require_root("vxlan_detach_reattach") {
        detach_reattach("vxlan");
    }
}

#[test]
fn udp_detach_reattach() {
    if require_root("udp_detach_reattach") {
        detach_reattach("udp");
    }
}

/// UDP port of the listener in pod a1 that crafted tunnel packets aim at.
const POD_PORT: u16 = 7777;
/// A second address on node B's underlay interface, unknown to node A.
const STRANGER: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 99);

/// A tunnel payload for `c`'s backend carrying a UDP datagram from pod b1 to
/// pod a1's [`POD_PORT`].
fn tunnel_packet(c: &Cluster, vni: u32, payload: &[u8]) -> Result<Vec<u8>> {
    let src = SocketAddrV4::new(c.b1.ip(), 5555);
    let dst = SocketAddrV4::new(c.a1.ip(), POD_PORT);
    if !c.node_a.config().net_conf.backend.is_vxlan() {
        return ipv4_udp(src, dst, payload);
    }
    let vtep_a = c
        .node_a
        .ready_status()
        .and_then(|s| s.vtep_mac.clone())
        .or_else(|| c.node_a.config().vtep_mac.clone())
        .unwrap_or_default();
    let vtep_b = c.node_b.config().vtep_mac.clone().unwrap_or_default();
    vxlan_udp(
        vni,
        parse_mac(&vtep_b)?,
        parse_mac(&vtep_a)?,
        src,
        dst,
        payload,
    )
}

/// Collects what arrives on `rx` for `window` and fails if `forbidden` does.
fn assert_not_received(rx: &UdpSocket, forbidden: &[u8], window: Duration) -> Result<()> {
    rx.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut buf = [0u8; 2048];
    let until = Instant::now() + window;
    while Instant::now() < until {
        if let Ok((n, from)) = rx.recv_from(&mut buf) {
            if &buf[..n] == forbidden {
                bail!(
                    "{:?} was delivered to the pod (from {from})",
                    String::from_utf8_lossy(forbidden)
                );
            }
        }
    }
    Ok(())
}

/// Sends `pkt` from `tx` to node A's tunnel port until `rx` receives `want`
/// (at most 10 tries, 300 ms apart).
fn assert_delivered(
    tx: &UdpSocket,
    to: SocketAddrV4,
    pkt: &[u8],
    rx: &UdpSocket,
    want: &[u8],
) -> Result<()> {
    rx.set_read_timeout(Some(Duration::from_millis(300)))?;
    let mut buf = [0u8; 2048];
    for _ in 0..10 {
        tx.send_to(pkt, to)?;
        if let Ok((n, _)) = rx.recv_from(&mut buf) {
            if &buf[..n] == want {
                return Ok(());
            }
        }
    }
    bail!("the well-formed tunnel packet from the real peer was never delivered")
}

fn rejects_foreign_tunnel_packets(backend: &str) {
    let c = Cluster::new(backend).unwrap();
    let port = c.node_a.config().net_conf.backend.udp_port();
    let node_a_tunnel = SocketAddrV4::new(UNDERLAY_A, port);
    let rx = udp_socket(c.a1.netns(), SocketAddrV4::new(c.a1.ip(), POD_PORT)).unwrap();

    // Control: the same packet from the real peer's address is delivered,
    // so the rejections below are not an artefact of a malformed packet.
    let real = udp_socket(&c.ns_b, SocketAddrV4::new(UNDERLAY_B, 0)).unwrap();
    let good = tunnel_packet(&c, 1, b"from-the-peer").unwrap();
    assert_delivered(&real, node_a_tunnel, &good, &rx, b"from-the-peer").unwrap();

    // An unknown underlay sender: a second address on node B's interface.
    let before = c.node_a.counters().unwrap().drops.unknown_sender;
    c.ns_b
        .ip(&[
            "addr",
            "add",
            &format!("{STRANGER}/24"),
            "dev",
            c.underlay.b_if(),
        ])
        .unwrap();
    let stranger = udp_socket(&c.ns_b, SocketAddrV4::new(STRANGER, 0)).unwrap();
    let bad = tunnel_packet(&c, 1, b"from-a-stranger").unwrap();
    for _ in 0..3 {
        stranger.send_to(&bad, node_a_tunnel).unwrap();
    }
    assert_not_received(&rx, b"from-a-stranger", Duration::from_secs(1)).unwrap();
    let after = c.node_a.counters().unwrap().drops.unknown_sender;
    assert!(
        after > before,
        "drops.unknown_sender did not grow ({before} -> {after})"
    );

    if backend == "vxlan" {
        let before = c.node_a.counters().unwrap().drops.bad_vni;
        let wrong = tunnel_packet(&c, 2, b"wrong-vni").unwrap();
        for _ in 0..3 {
            real.send_to(&wrong, node_a_tunnel).unwrap();
        }
        assert_not_received(&rx, b"wrong-vni", Duration::from_secs(1)).unwrap();
        let after = c.node_a.counters().unwrap().drops.bad_vni;
        assert!(
            after > before,
            "drops.bad_vni did not grow ({before} -> {after})"
        );
    }
}

/// Issue 13's probe: a zero-length tunnel datagram was received and
/// appeared in no counter. It is a received packet, dropped as truncated.
#[test]
fn an_empty_tunnel_datagram_is_counted() {
    if !require_root("an_empty_tunnel_datagram_is_counted") {
        return;
    }
    let c = Cluster::new("vxlan").unwrap();
    let port = c.node_a.config().net_conf.backend.udp_port();
    let real = udp_socket(&c.ns_b, SocketAddrV4::new(UNDERLAY_B, 0)).unwrap();
    let read = |c: &Cluster| {
        let v = c.node_a.counters().unwrap();
        (v.drops.truncated, v.tunnel.rx_packets)
    };
    let (t0, r0) = read(&c);
    for _ in 0..3 {
        real.send_to(&[], SocketAddrV4::new(UNDERLAY_A, port))
            .unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while read(&c).0 < t0 + 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (t, r) = read(&c);
    assert_eq!(
        (t - t0, r - r0),
        (3, 3),
        "drops.truncated and tunnel.rx_packets"
    );
}

/// Issue 13's probe: forged TTL-1 packets that arrive through the tunnel
/// would make the router send one time-exceeded error each towards the
/// forged source, out of the host port. They are rate-limited as Linux
/// does (a burst of 6 per destination, then one a second), and the ones
/// not sent are counted.
#[test]
fn forged_ttl_1_packets_from_the_tunnel_get_rate_limited_icmp_errors() {
    if !require_root("forged_ttl_1_packets_from_the_tunnel_get_rate_limited_icmp_errors") {
        return;
    }
    let c = Cluster::new("vxlan").unwrap();
    let port = c.node_a.config().net_conf.backend.udp_port();
    let node_a_tunnel = SocketAddrV4::new(UNDERLAY_A, port);
    let real = udp_socket(&c.ns_b, SocketAddrV4::new(UNDERLAY_B, 0)).unwrap();
    let mut pkt = tunnel_packet(&c, 1, b"dying").unwrap();
    // The inner packet: from a forged victim outside, with TTL 1.
    let ip = 8 + 14;
    pkt[ip + 12..ip + 16].copy_from_slice(&[192, 0, 2, 9]);
    pkt[ip + 8] = 1;
    pkt[ip + 10..ip + 12].copy_from_slice(&[0, 0]);
    let sum = encap::checksum::checksum(&pkt[ip..ip + 20]);
    pkt[ip + 10..ip + 12].copy_from_slice(&sum.to_be_bytes());
    let events = |c: &Cluster| {
        let v = c.node_a.counters().unwrap();
        (
            v.events.icmp_errors,
            v.events.icmp_errors_suppressed,
            v.drops.ttl_exceeded,
        )
    };
    let (sent0, supp0, ttl0) = events(&c);
    for _ in 0..500 {
        real.send_to(&pkt, node_a_tunnel).unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let (sent, supp, ttl) = loop {
        let (s, p, t) = events(&c);
        if t - ttl0 >= 500 || std::time::Instant::now() > deadline {
            break (s - sent0, p - supp0, t - ttl0);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(ttl, 500, "every forged packet dropped as ttl_exceeded");
    assert!(
        sent <= 8,
        "{sent} time-exceeded errors sent towards one victim"
    );
    assert_eq!(sent + supp, 500, "each error sent or counted as suppressed");
}

#[test]
fn vxlan_rejects_unknown_sender_and_bad_vni() {
    if require_root("vxlan_rejects_unknown_sender_and_bad_vni") {
        rejects_foreign_tunnel_packets("vxlan");
    }
}

#[test]
fn udp_rejects_unknown_sender() {
    if require_root("udp_rejects_unknown_sender") {
        rejects_foreign_tunnel_packets("udp");
    }
}
