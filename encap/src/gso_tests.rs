//! Tests of the segmentation (GSO) and checksum completion: every segment
//! checked field by field with etherparse.

use super::*;
use etherparse::{
    Ipv4HeaderSlice, PacketBuilder, TcpHeaderSlice, TcpOptionElement, UdpHeaderSlice,
};

const SRC: [u8; 4] = [10, 244, 1, 3];
const DST: [u8; 4] = [10, 244, 2, 7];
/// A fake VXLAN header (8) + inner Ethernet header (14).
const PREFIX_LEN: usize = 22;
const MSS: usize = 1410;
/// Chosen so that identifications and sequence numbers wrap.
const IDENT: u16 = 0xfffd;
const SEQ: u32 = 0xffff_f000;

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn prefix(n: usize) -> Vec<u8> {
    (0..n).map(|i| 0xa0 ^ i as u8).collect()
}

/// Sets the IP identification and makes the header checksum right again.
fn set_ident(ip: &mut [u8], ident: u16) {
    ip[4..6].copy_from_slice(&ident.to_be_bytes());
    ip[10..12].copy_from_slice(&[0, 0]);
    let hl = usize::from(ip[0] & 0xf) * 4;
    let c = checksum::checksum(&ip[..hl]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
}

fn tcp_packet(prefix_len: usize, payload: &[u8], cwr: bool) -> Vec<u8> {
    tcp_packet_seq(prefix_len, payload, cwr, SEQ)
}

/// `prefix_len` pattern bytes, then a TCP/IPv4 packet with timestamps,
/// PSH|ACK|FIN (and CWR if `cwr`), sequence number `seq` and `payload`.
fn tcp_packet_seq(prefix_len: usize, payload: &[u8], cwr: bool, seq: u32) -> Vec<u8> {
    let mut b = PacketBuilder::ipv4(SRC, DST, 63)
        .tcp(40000, 5201, seq, 502)
        .options(&[
            TcpOptionElement::Noop,
            TcpOptionElement::Noop,
            TcpOptionElement::Timestamp(0x1234_5678, 0x9abc_def0),
        ])
        .unwrap()
        .psh()
        .ack(0x0102_0304)
        .fin();
    if cwr {
        b = b.cwr();
    }
    let mut v = prefix(prefix_len);
    b.write(&mut v, payload).unwrap();
    set_ident(&mut v[prefix_len..], IDENT);
    v
}

fn udp_packet(prefix_len: usize, payload: &[u8]) -> Vec<u8> {
    let mut v = prefix(prefix_len);
    PacketBuilder::ipv4(SRC, DST, 63)
        .udp(40000, 4789)
        .write(&mut v, payload)
        .unwrap();
    set_ident(&mut v[prefix_len..], IDENT);
    v
}

/// Checks the IP header of datagram `i` and returns it with the L4 bytes.
fn check_ip<'a>(orig: &[u8], l3: usize, i: usize, d: &'a [u8]) -> (Ipv4HeaderSlice<'a>, &'a [u8]) {
    assert_eq!(d[..l3], orig[..l3], "prefix of segment {i}");
    let ip = Ipv4HeaderSlice::from_slice(&d[l3..]).unwrap();
    let oip = Ipv4HeaderSlice::from_slice(&orig[l3..]).unwrap();
    assert_eq!(usize::from(ip.total_len()), d.len() - l3);
    assert_eq!(
        ip.identification(),
        oip.identification().wrapping_add(i as u16)
    );
    assert_eq!(ip.header_checksum(), ip.to_header().calc_header_checksum());
    assert_eq!(checksum::checksum(ip.slice()), 0);
    assert_eq!(
        (ip.source(), ip.destination(), ip.ttl(), ip.protocol()),
        (oip.source(), oip.destination(), oip.ttl(), oip.protocol())
    );
    assert!(!ip.more_fragments() && ip.fragments_offset().value() == 0);
    (ip, &d[l3 + ip.slice().len()..])
}

/// Checks the datagram lengths and returns each datagram.
fn datagrams<'a>(segs: &Segments, out: &'a [u8]) -> Vec<&'a [u8]> {
    let v: Vec<&[u8]> = (0..segs.count)
        .map(|i| &out[segs.datagram(i).unwrap()])
        .collect();
    assert!(segs.datagram(segs.count).is_none());
    for d in &v[..v.len() - 1] {
        assert_eq!(d.len(), segs.seg_len);
    }
    assert!(v[v.len() - 1].len() <= segs.seg_len);
    assert_eq!(v.iter().map(|d| d.len()).sum::<usize>(), segs.total_len);
    v
}

/// Segments `orig` and checks every TCP segment; returns the result.
fn check_tcp(orig: &[u8], l3: usize, mss: usize) -> Segments {
    let mut out = vec![0x55u8; segmented_len(orig, l3, mss).unwrap().total_len + 64];
    let segs = segment_tcp4(orig, l3, mss, &mut out).unwrap();
    assert_eq!(segmented_len(orig, l3, mss), Ok(segs));
    verify_tcp(orig, l3, mss, &segs, &out);
    assert!(out[segs.total_len..].iter().all(|&b| b == 0x55));
    segs
}

/// Checks every TCP segment of `orig` in `out` (`segs` describes them).
fn verify_tcp(orig: &[u8], l3: usize, mss: usize, segs: &Segments, out: &[u8]) {
    let (oip, otcp) = {
        let oip = Ipv4HeaderSlice::from_slice(&orig[l3..]).unwrap();
        let otcp = TcpHeaderSlice::from_slice(&orig[l3 + oip.slice().len()..]).unwrap();
        (oip, otcp)
    };
    let opayload =
        &orig[l3 + oip.slice().len() + otcp.slice().len()..l3 + usize::from(oip.total_len())];
    assert_eq!(segs.count, opayload.len().div_ceil(mss).max(1));
    let mut payload = Vec::new();
    let dgrams = datagrams(segs, out);
    for (i, d) in dgrams.iter().enumerate() {
        let last = i + 1 == segs.count;
        let (ip, l4) = check_ip(orig, l3, i, d);
        let tcp = TcpHeaderSlice::from_slice(l4).unwrap();
        let p = &l4[tcp.slice().len()..];
        assert!(p.len() <= mss);
        assert_eq!(
            tcp.sequence_number(),
            otcp.sequence_number().wrapping_add(payload.len() as u32)
        );
        assert_eq!(tcp.fin(), otcp.fin() && last, "FIN on {i}");
        assert_eq!(tcp.psh(), otcp.psh() && last, "PSH on {i}");
        assert_eq!(tcp.cwr(), otcp.cwr() && i == 0, "CWR on {i}");
        assert_eq!(
            (tcp.ack(), tcp.syn(), tcp.rst(), tcp.ece(), tcp.urg()),
            (otcp.ack(), otcp.syn(), otcp.rst(), otcp.ece(), otcp.urg())
        );
        assert_eq!(tcp.acknowledgment_number(), otcp.acknowledgment_number());
        assert_eq!(tcp.window_size(), otcp.window_size());
        assert_eq!(tcp.options(), otcp.options());
        assert_eq!(
            (tcp.source_port(), tcp.destination_port()),
            (otcp.source_port(), otcp.destination_port())
        );
        let want = tcp.calc_checksum_ipv4(&ip, p).unwrap();
        assert_eq!(tcp.checksum(), want, "TCP checksum of segment {i}");
        payload.extend_from_slice(p);
    }
    assert_eq!(payload, opayload);
}

fn check_udp(orig: &[u8], l3: usize, mss: usize) -> Segments {
    let mut out = vec![0x55u8; segmented_len(orig, l3, mss).unwrap().total_len + 64];
    let segs = segment_udp4(orig, l3, mss, &mut out).unwrap();
    assert_eq!(segmented_len(orig, l3, mss), Ok(segs));
    verify_udp(orig, l3, mss, &segs, &out);
    assert!(out[segs.total_len..].iter().all(|&b| b == 0x55));
    segs
}

/// Checks every UDP datagram of `orig` in `out` (`segs` describes them).
fn verify_udp(orig: &[u8], l3: usize, mss: usize, segs: &Segments, out: &[u8]) {
    let oip = Ipv4HeaderSlice::from_slice(&orig[l3..]).unwrap();
    let oudp = UdpHeaderSlice::from_slice(&orig[l3 + oip.slice().len()..]).unwrap();
    let opayload = &orig[l3 + oip.slice().len() + 8..l3 + usize::from(oip.total_len())];
    assert_eq!(segs.count, opayload.len().div_ceil(mss).max(1));
    let mut payload = Vec::new();
    for (i, d) in datagrams(segs, out).iter().enumerate() {
        let (ip, l4) = check_ip(orig, l3, i, d);
        let udp = UdpHeaderSlice::from_slice(l4).unwrap();
        let p = &l4[8..];
        assert!(p.len() <= mss);
        assert_eq!(usize::from(udp.length()), l4.len());
        assert_eq!(
            (udp.source_port(), udp.destination_port()),
            (oudp.source_port(), oudp.destination_port())
        );
        let want = udp
            .to_header()
            .calc_checksum_ipv4(&ip.to_header(), p)
            .unwrap();
        assert_eq!(udp.checksum(), want, "UDP checksum of datagram {i}");
        assert_ne!(udp.checksum(), 0);
        payload.extend_from_slice(p);
    }
    assert_eq!(payload, opayload);
}

// --- complete_checksum ---

/// Replaces the L4 checksum by the pseudo-header sum, as a sender with
/// checksum offload leaves it.
fn make_partial(pkt: &mut [u8], l3: usize, csum_offset: usize) -> u16 {
    let ip = ipv4::Packet::new_checked(&pkt[l3..]).unwrap();
    let (hl, l4_len) = (ip.header_len(), ip.total_len() - ip.header_len());
    let pseudo = checksum::pseudo_header(ip.src(), ip.dst(), ip.protocol(), l4_len as u16);
    let at = l3 + hl + csum_offset;
    let orig = u16::from_be_bytes([pkt[at], pkt[at + 1]]);
    pkt[at..at + 2].copy_from_slice(&checksum::fold(pseudo).to_be_bytes());
    assert_ne!(orig, checksum::fold(pseudo));
    orig
}

#[test]
fn completes_tcp_checksum() {
    for l3 in [0, 14, PREFIX_LEN] {
        let mut pkt = tcp_packet(l3, &pattern(1001), false);
        let want = make_partial(&mut pkt, l3, 16);
        complete_checksum(&mut pkt, l3 + 20, 16).unwrap();
        assert_eq!(pkt[l3 + 20 + 16..l3 + 20 + 18], want.to_be_bytes());
        let tcp = TcpHeaderSlice::from_slice(&pkt[l3 + 20..]).unwrap();
        let ip = Ipv4HeaderSlice::from_slice(&pkt[l3..]).unwrap();
        let calc = tcp.calc_checksum_ipv4(&ip, &pkt[l3 + 20 + 32..]).unwrap();
        assert_eq!(tcp.checksum(), calc);
    }
}

#[test]
fn completes_udp_checksum() {
    for len in [0, 1, 2, 999, 1400] {
        let mut pkt = udp_packet(PREFIX_LEN, &pattern(len));
        let want = make_partial(&mut pkt, PREFIX_LEN, 6);
        complete_checksum(&mut pkt, PREFIX_LEN + 20, 6).unwrap();
        let at = PREFIX_LEN + 20 + 6;
        assert_eq!(pkt[at..at + 2], want.to_be_bytes(), "payload {len}");
    }
}

#[test]
fn complete_checksum_writes_zero_as_ffff() {
    // The bytes sum to 0xffff: the inverted sum is 0.
    let mut b = [0xff, 0xff, 0x00, 0x00];
    complete_checksum(&mut b, 0, 2).unwrap();
    assert_eq!(b, [0xff, 0xff, 0xff, 0xff]);
    let mut b = [0x12, 0x34, 0x00, 0x00];
    complete_checksum(&mut b, 0, 2).unwrap();
    assert_eq!(b, [0x12, 0x34, 0xed, 0xcb]);
}

#[test]
fn complete_checksum_rejects_bad_offsets() {
    let pkt = tcp_packet(0, &pattern(100), false);
    let len = pkt.len();
    let cases = [
        (len, 0, Error::Truncated),
        (len + 10, 0, Error::Truncated),
        (len - 1, 0, Error::Truncated),
        (20, len - 20 - 1, Error::Malformed),
        (20, len - 20, Error::Truncated),
        (20, 17, Error::Malformed),
        (usize::MAX, 2, Error::Truncated),
        (usize::MAX - 1, 0, Error::Truncated),
        (2, usize::MAX - 1, Error::Truncated),
    ];
    for (start, offset, err) in cases {
        let mut b = pkt.clone();
        assert_eq!(
            complete_checksum(&mut b, start, offset),
            Err(err),
            "{start} {offset}"
        );
        assert_eq!(b, pkt);
    }
    // The last two bytes are the last place a field fits.
    let mut b = pkt.clone();
    assert_eq!(complete_checksum(&mut b, len - 2, 0), Ok(()));
}

// --- segment_tcp4 ---

#[test]
fn tcp_super_packet_through_vxlan() {
    let pkt = tcp_packet(PREFIX_LEN, &pattern(10_000), true);
    let segs = check_tcp(&pkt, PREFIX_LEN, MSS);
    let hdr = PREFIX_LEN + 20 + 32;
    assert_eq!(segs.count, 8);
    assert_eq!(segs.seg_len, hdr + MSS);
    assert_eq!(segs.total_len, 8 * hdr + 10_000);
}

#[test]
fn tcp_payload_a_multiple_of_mss() {
    let pkt = tcp_packet(PREFIX_LEN, &pattern(5 * MSS), true);
    let segs = check_tcp(&pkt, PREFIX_LEN, MSS);
    assert_eq!(segs.count, 5);
    assert_eq!(segs.total_len, 5 * segs.seg_len);
}

#[test]
fn tcp_payload_below_mss_is_one_segment() {
    let pkt = tcp_packet(PREFIX_LEN, &pattern(700), true);
    let segs = check_tcp(&pkt, PREFIX_LEN, MSS);
    assert_eq!(segs.count, 1);
    assert_eq!((segs.seg_len, segs.total_len), (pkt.len(), pkt.len()));
    // Only the checksum may differ from the input (which was complete).
    let mut out = vec![0; pkt.len()];
    segment_tcp4(&pkt, PREFIX_LEN, MSS, &mut out).unwrap();
    assert_eq!(out, pkt);
}

#[test]
fn tcp_empty_payload_is_one_segment() {
    let pkt = tcp_packet(PREFIX_LEN, &[], false);
    let segs = check_tcp(&pkt, PREFIX_LEN, MSS);
    assert_eq!((segs.count, segs.total_len), (1, pkt.len()));
}

#[test]
fn tcp_without_prefix() {
    let pkt = tcp_packet_seq(0, &pattern(10_000), true, 0x1234_5678);
    let segs = check_tcp(&pkt, 0, 1448);
    assert_eq!((segs.count, segs.seg_len), (7, 52 + 1448));
}

#[test]
fn tcp_odd_mss_and_largest_packet() {
    let pkt = tcp_packet(PREFIX_LEN, &pattern(65_535 - 52), true);
    check_tcp(&pkt, PREFIX_LEN, 1377);
    check_tcp(&pkt, PREFIX_LEN, 1);
}

#[test]
fn ignores_bytes_after_the_ip_total_length() {
    let mut pkt = tcp_packet(PREFIX_LEN, &pattern(3000), false);
    pkt.extend_from_slice(&[0xee; 9]);
    let segs = check_tcp(&pkt, PREFIX_LEN, MSS);
    assert_eq!(segs.total_len, 3 * (PREFIX_LEN + 52) + 3000);
}

#[test]
fn tcp_out_too_small_writes_nothing() {
    let pkt = tcp_packet(PREFIX_LEN, &pattern(10_000), true);
    let need = segmented_len(&pkt, PREFIX_LEN, MSS).unwrap().total_len;
    let mut out = vec![0x55u8; need - 1];
    assert_eq!(
        segment_tcp4(&pkt, PREFIX_LEN, MSS, &mut out),
        Err(Error::NoRoom)
    );
    assert!(out.iter().all(|&b| b == 0x55));
    let mut out = vec![0x55u8; need];
    assert!(segment_tcp4(&pkt, PREFIX_LEN, MSS, &mut out).is_ok());
}

#[test]
fn rejects_what_it_cannot_segment() {
    let tcp = tcp_packet(PREFIX_LEN, &pattern(3000), false);
    let udp = udp_packet(PREFIX_LEN, &pattern(3000));
    let mut out = vec![0u8; 10_000];
    let l3 = PREFIX_LEN;
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut p = tcp.clone();
        f(&mut p);
        p
    };
    let cases: Vec<(Vec<u8>, usize, usize, Error)> = vec![
        (tcp.clone(), l3, 0, Error::Malformed),              // mss 0
        (tcp.clone(), tcp.len() + 1, MSS, Error::Truncated), // l3 past the end
        (tcp.clone(), tcp.len() - 19, MSS, Error::Truncated),
        (tcp[..tcp.len() - 1].to_vec(), l3, MSS, Error::Truncated), // total length
        (tcp[..l3 + 20 + 19].to_vec(), l3, MSS, Error::Truncated),  // TCP header
        (with(&|p| p[l3] = 0x65), l3, MSS, Error::Malformed),       // IPv6
        (with(&|p| p[l3] = 0x44), l3, MSS, Error::Malformed),       // IHL 4
        (
            {
                let mut p = tcp_packet(l3, &pattern(10), false);
                p[l3] = 0x4f;
                p
            },
            l3,
            MSS,
            Error::Truncated,
        ), // IHL 15: the options leave too little for TCP
        (with(&|p| p[l3 + 6] |= 0x20), l3, MSS, Error::Unsupported), // MF
        (with(&|p| p[l3 + 7] = 1), l3, MSS, Error::Unsupported),    // offset
        (with(&|p| p[l3 + 9] = 1), l3, MSS, Error::Unsupported),    // ICMP
        (with(&|p| p[l3 + 20 + 12] = 0x40), l3, MSS, Error::Malformed), // doff 4
        (
            with(&|p| p[l3 + 2..l3 + 4].copy_from_slice(&[0, 19])),
            l3,
            MSS,
            Error::Malformed,
        ),
        (
            with(&|p| p[l3 + 2..l3 + 4].copy_from_slice(&[0, 40])),
            l3,
            MSS,
            Error::Truncated,
        ),
        (udp.clone(), l3, MSS, Error::Unsupported), // UDP to the TCP function
    ];
    for (i, (p, l3, mss, err)) in cases.iter().enumerate() {
        assert_eq!(segment_tcp4(p, *l3, *mss, &mut out), Err(*err), "case {i}");
        if *p != udp {
            assert_eq!(segmented_len(p, *l3, *mss), Err(*err), "case {i}");
        }
    }
    assert_eq!(
        segment_udp4(&tcp, l3, MSS, &mut out),
        Err(Error::Unsupported)
    );
}

// --- segment_udp4 ---

#[test]
fn udp_super_packet_through_vxlan() {
    let pkt = udp_packet(PREFIX_LEN, &pattern(10_000));
    let segs = check_udp(&pkt, PREFIX_LEN, MSS);
    let hdr = PREFIX_LEN + 28;
    assert_eq!((segs.count, segs.seg_len), (8, hdr + MSS));
    assert_eq!(segs.total_len, 8 * hdr + 10_000);
}

#[test]
fn udp_edge_sizes() {
    for (len, mss, count) in [(5 * MSS, MSS, 5), (700, MSS, 1), (0, MSS, 1), (7, 2, 4)] {
        let pkt = udp_packet(PREFIX_LEN, &pattern(len));
        assert_eq!(check_udp(&pkt, PREFIX_LEN, mss).count, count, "{len}/{mss}");
    }
    let pkt = udp_packet(0, &pattern(65_535 - 28));
    check_udp(&pkt, 0, 1472);
    check_udp(&pkt, 0, 1);
}

#[test]
fn udp_out_too_small_writes_nothing() {
    let pkt = udp_packet(0, &pattern(4000));
    let need = segmented_len(&pkt, 0, MSS).unwrap().total_len;
    let mut out = vec![0x55u8; need - 1];
    assert_eq!(segment_udp4(&pkt, 0, MSS, &mut out), Err(Error::NoRoom));
    assert!(out.iter().all(|&b| b == 0x55));
    assert_eq!(segment_udp4(&pkt, 0, 0, &mut out), Err(Error::Malformed));
}

/// Makes random bytes likely to reach the IPv4 paths: version and header
/// length, no fragment offset, TCP or UDP (when `v4` and there is room).
fn likely_ipv4(bytes: &mut [u8], l3: usize, v4: bool) {
    if v4 && bytes.len() > l3 + 10 {
        bytes[l3] = 0x45;
        bytes[l3 + 6] = 0;
        bytes[l3 + 7] = 0;
        bytes[l3 + 9] = if bytes[l3 + 8] & 1 == 0 { 6 } else { 17 };
    }
}

proptest::proptest! {
    #[test]
    fn garbage_never_panics(
        bytes in proptest::collection::vec(0u8.., 0..400),
        l3 in 0usize..64,
        mss in 0usize..300,
        out_len in 0usize..4000,
        v4 in proptest::bool::ANY,
    ) {
        let mut bytes = bytes;
        likely_ipv4(&mut bytes, l3, v4);
        let mut out = vec![0u8; out_len];
        let len = segmented_len(&bytes, l3, mss);
        let results = [
            segment_tcp4(&bytes, l3, mss, &mut out),
            segment_udp4(&bytes, l3, mss, &mut out),
        ];
        for s in results.into_iter().flatten() {
            proptest::prop_assert_eq!(Ok(s), len);
            proptest::prop_assert!(s.total_len <= out_len);
        }
        let _ = complete_checksum(&mut bytes, l3, mss);
    }

    #[test]
    fn any_size_segments_correctly(
        len in 0usize..5000,
        mss in 1usize..1600,
        l3 in 0usize..40,
        cwr in proptest::bool::ANY,
        seq in 0u32..,
    ) {
        check_tcp(&tcp_packet_seq(l3, &pattern(len), cwr, seq), l3, mss);
        check_udp(&udp_packet(l3, &pattern(len)), l3, mss);
    }
}

/// The header-only segmentation (`segment_*_headers`), checked against the
/// copying one.
#[path = "gso_hdr_tests.rs"]
mod headers;
