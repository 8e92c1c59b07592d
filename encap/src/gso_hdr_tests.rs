//! Tests of the header-only segmentation: header `i` followed by payload `i`
//! must be exactly datagram `i` of the copying segmentation (the oracle),
//! and every datagram must verify (the oracle's etherparse checks).

use super::*;

/// A TCP/IPv4 packet behind `prefix_len` bytes, built by hand so that every
/// field can be anything: IP and TCP options (multiples of 4 bytes), the
/// TCP flags byte (FIN, PSH, CWR, SYN, … in any mix), the bits next to the
/// data offset, identification and sequence number. Checksums are left
/// wrong: segmentation recomputes them.
#[allow(clippy::too_many_arguments)]
fn raw_tcp(
    prefix_len: usize,
    ip_opts: &[u8],
    tcp_opts: &[u8],
    flags: u8,
    doff_low: u8,
    ident: u16,
    seq: u32,
    payload: &[u8],
) -> Vec<u8> {
    let (ip_hl, tcp_hl) = (20 + ip_opts.len(), 20 + tcp_opts.len());
    let total = (ip_hl + tcp_hl + payload.len()) as u16;
    let mut v = prefix(prefix_len);
    v.push(0x40 | (ip_hl / 4) as u8);
    v.push(0x02);
    v.extend_from_slice(&total.to_be_bytes());
    v.extend_from_slice(&ident.to_be_bytes());
    v.extend_from_slice(&[0x40, 0, 64, 6, 0xde, 0xad]);
    v.extend_from_slice(&SRC);
    v.extend_from_slice(&DST);
    v.extend_from_slice(ip_opts);
    v.extend_from_slice(&40000u16.to_be_bytes());
    v.extend_from_slice(&5201u16.to_be_bytes());
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&0x0102_0304u32.to_be_bytes());
    v.push(((tcp_hl / 4) as u8) << 4 | (doff_low & 0x0f));
    v.push(flags);
    v.extend_from_slice(&[0x01, 0xf6, 0xbe, 0xef, 0, 0]);
    v.extend_from_slice(tcp_opts);
    v.extend_from_slice(payload);
    v
}

/// A UDP/IPv4 packet behind `prefix_len` bytes with IP options, by hand.
fn raw_udp(prefix_len: usize, ip_opts: &[u8], ident: u16, payload: &[u8]) -> Vec<u8> {
    let ip_hl = 20 + ip_opts.len();
    let total = (ip_hl + 8 + payload.len()) as u16;
    let mut v = prefix(prefix_len);
    v.push(0x40 | (ip_hl / 4) as u8);
    v.push(0);
    v.extend_from_slice(&total.to_be_bytes());
    v.extend_from_slice(&ident.to_be_bytes());
    v.extend_from_slice(&[0, 0, 64, 17, 0xde, 0xad]);
    v.extend_from_slice(&SRC);
    v.extend_from_slice(&DST);
    v.extend_from_slice(ip_opts);
    v.extend_from_slice(&[0x9c, 0x40, 0x12, 0xb5, 0xff, 0xff, 0xbe, 0xef]);
    v.extend_from_slice(payload);
    v
}

/// Segments `pkt` both ways, checks that header `i` + payload `i` is the
/// oracle's datagram `i`, that payloads are slices of `pkt` (not copies),
/// that nothing is written past the headers, and that every datagram
/// verifies. Returns the concatenation.
fn check_same(pkt: &[u8], l3: usize, mss: usize, tcp: bool) -> Vec<u8> {
    let (copying, headers): (SegmentFn, HeadersFn) = if tcp {
        (segment_tcp4, segment_tcp4_headers)
    } else {
        (segment_udp4, segment_udp4_headers)
    };
    let want_segs = segmented_len(pkt, l3, mss).unwrap();
    let mut out = vec![0u8; want_segs.total_len];
    assert_eq!(copying(pkt, l3, mss, &mut out), Ok(want_segs));

    let mut hdrs = vec![0x55u8; want_segs.count * 200 + 64];
    let hs = headers(pkt, l3, mss, &mut hdrs).unwrap();
    assert_eq!(hs.segs, want_segs);
    assert_eq!(hs.headers_len(), want_segs.count * hs.hdr_len);
    assert!(hdrs[hs.headers_len()..].iter().all(|&b| b == 0x55));
    assert!(hs.parts(hs.segs.count, &hdrs, pkt).is_none());
    assert!(hs.header(hs.segs.count).is_none() && hs.payload(hs.segs.count).is_none());

    let pkt_range = pkt.as_ptr_range();
    let mut cat = Vec::with_capacity(want_segs.total_len);
    for i in 0..hs.segs.count {
        let (h, p) = hs.parts(i, &hdrs, pkt).unwrap();
        assert_eq!(h.len(), hs.hdr_len);
        assert!(p.len() <= mss);
        if !p.is_empty() {
            assert!(
                pkt_range.contains(&p.as_ptr()),
                "payload {i} is not in the packet"
            );
        }
        let d = want_segs.datagram(i).unwrap();
        assert_eq!(h.len() + p.len(), d.len(), "length of datagram {i}");
        cat.extend_from_slice(h);
        cat.extend_from_slice(p);
        assert_eq!(cat[d.clone()], out[d], "datagram {i}");
    }
    assert_eq!(cat, out);
    if tcp {
        verify_tcp(pkt, l3, mss, &hs.segs, &cat);
    } else {
        verify_udp(pkt, l3, mss, &hs.segs, &cat);
    }
    cat
}

type SegmentFn = fn(&[u8], usize, usize, &mut [u8]) -> Result<Segments, Error>;
type HeadersFn = fn(&[u8], usize, usize, &mut [u8]) -> Result<HeaderSegments, Error>;

#[test]
fn tcp_64k_super_packet_through_vxlan() {
    let pkt = tcp_packet(PREFIX_LEN, &pattern(65_535 - 52), true);
    for mss in [1448, 1410, 1377, 536] {
        check_same(&pkt, PREFIX_LEN, mss, true);
    }
    let mut hdrs = [0u8; 64 * 120];
    let hs = segment_tcp4_headers(&pkt, PREFIX_LEN, 1410, &mut hdrs).unwrap();
    assert_eq!((hs.segs.count, hs.hdr_len), (47, PREFIX_LEN + 52));
    assert_eq!(hs.segs.seg_len, PREFIX_LEN + 52 + 1410);
    assert_eq!(hs.payload(0), Some(PREFIX_LEN + 52..PREFIX_LEN + 52 + 1410));
    assert_eq!(hs.payload(46), Some(PREFIX_LEN + 52 + 46 * 1410..pkt.len()));
}

#[test]
fn edge_sizes_both_protocols() {
    for (len, mss) in [
        (0, MSS),
        (1, MSS),
        (700, MSS),
        (5 * MSS, MSS),
        (7, 2),
        (3000, 1),
    ] {
        check_same(
            &tcp_packet(PREFIX_LEN, &pattern(len), false),
            PREFIX_LEN,
            mss,
            true,
        );
        check_same(
            &udp_packet(PREFIX_LEN, &pattern(len)),
            PREFIX_LEN,
            mss,
            false,
        );
        check_same(&udp_packet(0, &pattern(len)), 0, mss, false);
    }
}

#[test]
fn header_buffer_too_small_writes_nothing() {
    let pkt = tcp_packet(PREFIX_LEN, &pattern(10_000), true);
    let need = 8 * (PREFIX_LEN + 52);
    let mut hdrs = vec![0x55u8; need - 1];
    assert_eq!(
        segment_tcp4_headers(&pkt, PREFIX_LEN, MSS, &mut hdrs),
        Err(Error::NoRoom)
    );
    assert!(hdrs.iter().all(|&b| b == 0x55));
    let mut hdrs = vec![0x55u8; need];
    assert!(segment_tcp4_headers(&pkt, PREFIX_LEN, MSS, &mut hdrs).is_ok());
    let udp = udp_packet(0, &pattern(10_000));
    assert_eq!(
        segment_udp4_headers(&udp, 0, MSS, &mut hdrs[..8 * 28 - 1]),
        Err(Error::NoRoom)
    );
    assert_eq!(
        segment_udp4_headers(&udp, 0, 0, &mut hdrs),
        Err(Error::Malformed)
    );
    assert_eq!(
        segment_tcp4_headers(&udp, 0, MSS, &mut hdrs),
        Err(Error::Unsupported)
    );
}

/// Options of 0 to 40 bytes, whole 32-bit words.
fn options() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::strategy::Strategy;
    (0usize..=10).prop_flat_map(|words| proptest::collection::vec(0u8.., words * 4))
}

proptest::proptest! {
    #[test]
    fn tcp_headers_plus_payloads_are_the_copied_segments(
        len in 0usize..66_000,
        mss in 1usize..3000,
        l3 in 0usize..40,
        ip_opts in options(),
        tcp_opts in options(),
        flags in 0u8..,
        doff_low in 0u8..16,
        ident in 0u16..,
        seq in 0u32..,
    ) {
        let len = len.min(65_535 - 40 - ip_opts.len() - tcp_opts.len());
        // Keep the number of segments (each checked with etherparse) sane.
        let mss = if len > 8000 { mss.max(500) } else { mss };
        let pkt = raw_tcp(l3, &ip_opts, &tcp_opts, flags, doff_low, ident, seq, &pattern(len));
        check_same(&pkt, l3, mss, true);
    }

    #[test]
    fn udp_headers_plus_payloads_are_the_copied_datagrams(
        len in 0usize..66_000,
        mss in 1usize..3000,
        l3 in 0usize..40,
        ip_opts in options(),
        ident in 0u16..,
    ) {
        let len = len.min(65_535 - 28 - ip_opts.len());
        let mss = if len > 8000 { mss.max(500) } else { mss };
        let pkt = raw_udp(l3, &ip_opts, ident, &pattern(len));
        check_same(&pkt, l3, mss, false);
    }

    /// Whatever the bytes, both ways agree (same result, same error) and
    /// neither panics.
    #[test]
    fn garbage_gives_the_same_answer_both_ways(
        bytes in proptest::collection::vec(0u8.., 0..400),
        l3 in 0usize..64,
        mss in 0usize..300,
        hdr_len in 0usize..2000,
        v4 in proptest::bool::ANY,
    ) {
        let mut bytes = bytes;
        super::likely_ipv4(&mut bytes, l3, v4);
        let mut out = vec![0u8; 1 << 16];
        let mut hdrs = vec![0u8; 1 << 16];
        let pairs: [(SegmentFn, HeadersFn); 2] = [
            (segment_tcp4, segment_tcp4_headers),
            (segment_udp4, segment_udp4_headers),
        ];
        for (copying, headers) in pairs {
            let want = copying(&bytes, l3, mss, &mut out);
            let got = headers(&bytes, l3, mss, &mut hdrs).map(|h| h.segs);
            proptest::prop_assert_eq!(got, want);
            if let Ok(h) = headers(&bytes, l3, mss, &mut hdrs[..hdr_len]) {
                proptest::prop_assert!(h.headers_len() <= hdr_len);
                for i in 0..=h.segs.count {
                    proptest::prop_assert_eq!(h.parts(i, &hdrs, &bytes).is_some(), i < h.segs.count);
                }
            }
        }
    }
}
