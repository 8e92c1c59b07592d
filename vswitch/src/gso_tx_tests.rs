//! `send_segments` over loopback: every datagram arrives byte for byte as
//! the copying segmentation would have built it, with `UDP_SEGMENT` and in
//! the segment-by-segment fallback, and the counters say what was sent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::sys::udp::{bind_udp, local_port, UdpOptions};
use encap::gso;
use std::net::Ipv4Addr;
use std::time::Duration;

const L3: usize = 22;
const LOCAL: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);

/// A VXLAN-like prefix, then a TCP/IPv4 (or UDP/IPv4) packet with
/// `payload` pattern bytes.
fn super_packet(payload: usize, tcp: bool) -> Vec<u8> {
    let data: Vec<u8> = (0..payload).map(|i| (i * 13 + i / 257) as u8).collect();
    let mut v: Vec<u8> = (0..L3).map(|i| 0xa0 ^ i as u8).collect();
    let b = etherparse::PacketBuilder::ipv4([10, 244, 1, 3], [10, 244, 2, 7], 63);
    if tcp {
        b.tcp(40000, 5201, 0xffff_f000, 502)
            .ack(1)
            .psh()
            .write(&mut v, &data)
            .unwrap();
    } else {
        b.udp(40000, 5201).write(&mut v, &data).unwrap();
    }
    v
}

/// Segments `pkt` both ways, sends the header-only result with
/// `send_segments` and checks what arrives against the copied one.
/// Returns the counters.
fn send_and_check(pkt: &[u8], mss: usize, tcp: bool, gso_on: bool) -> TunnelStats {
    let rx = bind_udp(
        LOCAL,
        UdpOptions {
            recv_buf: Some(4 << 20),
            ..Default::default()
        },
    )
    .unwrap();
    let to = SocketAddrV4::new(Ipv4Addr::LOCALHOST, local_port(&rx).unwrap());
    let tx = bind_udp(LOCAL, UdpOptions::default()).unwrap();

    let want_segs = gso::segmented_len(pkt, L3, mss).unwrap();
    let mut want = vec![0u8; want_segs.total_len];
    let mut hdrs = vec![0u8; 200 * want_segs.count];
    let hs = if tcp {
        gso::segment_tcp4(pkt, L3, mss, &mut want).unwrap();
        gso::segment_tcp4_headers(pkt, L3, mss, &mut hdrs).unwrap()
    } else {
        gso::segment_udp4(pkt, L3, mss, &mut want).unwrap();
        gso::segment_udp4_headers(pkt, L3, mss, &mut hdrs).unwrap()
    };
    let mut gso = GsoSender::new();
    gso.enabled = gso_on;
    let mut t = TunnelStats::default();
    send_segments(&tx, &hs, &hdrs, pkt, to, &mut gso, &mut t);
    assert_eq!(gso.enabled, gso_on);

    rx.set_nonblocking(false).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut got = vec![0u8; 65536];
    for i in 0..want_segs.count {
        let n = rx.recv(&mut got).unwrap();
        let d = want_segs.datagram(i).unwrap();
        assert_eq!(&got[..n], &want[d], "datagram {i}");
    }
    assert_eq!(t.tx_packets, want_segs.count as u64);
    assert_eq!(t.tx_bytes, want_segs.total_len as u64);
    assert_eq!((t.tx_dropped, t.tx_errors, t.tx_offload_errors), (0, 0, 0));
    t
}

#[test]
fn more_than_64_segments_take_two_gso_sends() {
    // 6550 bytes at MSS 100: 66 segments, 64 + 2 (small, so that they fit
    // an unprivileged receive buffer).
    let pkt = super_packet(6550, true);
    let t = send_and_check(&pkt, 100, true, true);
    assert_eq!(t.tx_gso_sends, 2);
    assert_eq!(t.tx_gso_calls, 1, "both sends in one sendmmsg");
}

#[test]
fn more_sends_than_one_sendmmsg_takes_go_in_several() {
    // 30 000 bytes at MSS 100: 300 segments, five sends of up to 64: four
    // in the first sendmmsg, one in the next.
    let pkt = super_packet(30_000, true);
    let t = send_and_check(&pkt, 100, true, true);
    assert_eq!(t.tx_gso_sends, 5);
    assert_eq!(t.tx_gso_calls, 2);
}

#[test]
fn fallback_sends_each_segment_alone() {
    let pkt = super_packet(6550, true);
    let t = send_and_check(&pkt, 100, true, false);
    assert_eq!((t.tx_gso_sends, t.tx_gso_calls), (0, 0));
}

#[test]
fn udp_datagrams_and_a_single_segment() {
    let pkt = super_packet(10_000, false);
    assert_eq!(send_and_check(&pkt, 1400, false, true).tx_gso_sends, 1);
    let pkt = super_packet(900, true);
    assert_eq!(send_and_check(&pkt, 1400, true, true).tx_gso_sends, 0);
    let pkt = super_packet(0, true);
    assert_eq!(send_and_check(&pkt, 1400, true, true).tx_gso_sends, 0);
}

#[test]
fn segments_too_large_to_share_a_send_go_without_gso() {
    // Two segments of 40 000 bytes payload: no two fit in 64 KiB.
    let pkt = super_packet(65_535 - 40, true);
    let t = send_and_check(&pkt, 40_000, true, true);
    assert_eq!(t.tx_gso_sends, 0);
}
