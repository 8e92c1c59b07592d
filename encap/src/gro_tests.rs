use super::test_support::*;
use super::*;
use crate::gso;
use etherparse::{Ipv4HeaderSlice, PacketBuilder, TcpHeaderSlice, TcpOptionElement};
use proptest::prelude::*;

const MSS: usize = 1398;
/// Chosen so that sequence numbers wrap.
const SEQ: u32 = 0xffff_8000;

impl Coalesce for Coalescer {
    const PROTO: u8 = ipv4::PROTO_TCP;
    const GSO_TYPE: u8 = vnet::GSO_TCPV4;
    const CSUM: usize = tcp_field::CHECKSUM.start;
    const L4_MIN: usize = TCP_MIN_LEN;
    const ZERO_MEANS_NONE: bool = false;

    forward!(segments);
    fn l4_len(f: &[u8]) -> usize {
        usize::from(f[L4 + 12] >> 4) * 4
    }
    fn check_l4(_: &[u8]) {}
    fn etherparse_checksum(f: &[u8]) -> u16 {
        let ip = Ipv4HeaderSlice::from_slice(&f[ETH_LEN..]).unwrap();
        let tcp = TcpHeaderSlice::from_slice(&f[L4..]).unwrap();
        let payload = &f[L4 + tcp.slice().len()..];
        // A sum that comes out 0 is written 0xffff, as the kernel's
        // skb_checksum_help and gso::complete_checksum write it (the same
        // ones'-complement value); etherparse gives 0.
        match tcp.calc_checksum_ipv4(&ip, payload).unwrap() {
            0 => 0xffff,
            c => c,
        }
    }
    fn segment(full: &[u8], mss: usize, out: &mut [u8]) -> Result<gso::Segments, crate::Error> {
        gso::segment_tcp4(full, ETH_LEN, mss, out)
    }
    /// The payloads are equal; so must the sequence numbers be (the IP
    /// identifications and PSH may differ).
    fn check_segment(s: &[u8], f: &[u8]) -> Result<(), TestCaseError> {
        prop_assert_eq!(&s[L4 + 4..L4 + 8], &f[L4 + 4..L4 + 8]);
        Ok(())
    }
}

/// Recomputes the TCP checksum of a frame with a 20-byte IP header.
fn fix_tcp(f: &mut [u8]) {
    fix_l4::<Coalescer>(f);
}

/// The fields a test varies in a segment.
#[derive(Debug, Clone, Copy)]
struct Spec {
    sport: u16,
    ack: u32,
    window: u16,
    tsval: u32,
    dont_frag: bool,
    ident: u16,
    psh: bool,
    fin: bool,
    syn: bool,
    rst: bool,
    urg: bool,
}

const BASE: Spec = Spec {
    sport: 40000,
    ack: 0x0102_0304,
    window: 502,
    tsval: 0x1234_5678,
    dont_frag: true,
    ident: IDENT,
    psh: false,
    fin: false,
    syn: false,
    rst: false,
    urg: false,
};

/// Ethernet + IPv4 + TCP with timestamps, ACK, the flags of `s`,
/// sequence number `seq` and `payload`, all checksums right.
fn frame(s: &Spec, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv4(SRC_IP, DST_IP, TTL)
        .tcp(s.sport, 5201, seq, s.window)
        .options(&[
            TcpOptionElement::Noop,
            TcpOptionElement::Noop,
            TcpOptionElement::Timestamp(s.tsval, 0x9abc_def0),
        ])
        .unwrap()
        .ack(s.ack);
    if s.psh {
        b = b.psh();
    }
    if s.fin {
        b = b.fin();
    }
    if s.syn {
        b = b.syn();
    }
    if s.rst {
        b = b.rst();
    }
    if s.urg {
        b = b.urg(3);
    }
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    set_ip(&mut v, s.ident, s.dont_frag);
    v
}

/// `lens.len()` consecutive segments of one byte stream, identifications
/// counting up, PSH on the last one if `psh`.
fn stream(s: &Spec, lens: &[usize], psh: bool) -> Vec<Vec<u8>> {
    consecutive(lens, |i, at, payload| {
        let spec = Spec {
            ident: s.ident.wrapping_add(i as u16),
            psh: psh && i + 1 == lens.len(),
            ..*s
        };
        frame(&spec, SEQ.wrapping_add(at as u32), payload)
    })
}

#[test]
fn coalesces_a_stream_and_segments_back() {
    let mut lens = vec![MSS; 30];
    lens.push(500);
    let frames = stream(&BASE, &lens, true);
    let (hdr, sf) = assert_coalesces::<Coalescer>(&frames);
    assert_eq!(usize::from(hdr.gso_size), MSS);
    assert_eq!(usize::from(hdr.hdr_len), L4 + 32);
    assert_eq!(sf.len(), L4 + 32 + 30 * MSS + 500);
    let tcp = TcpHeaderSlice::from_slice(&sf[L4..]).unwrap();
    assert!(tcp.psh() && tcp.ack() && !tcp.fin());
    assert_eq!(tcp.sequence_number(), SEQ);
}

#[test]
fn splits_at_the_64k_limit() {
    // 46 segments are 64 360 bytes of IP; a 47th would exceed 65 535.
    // A capacity beyond the largest frame: the IP length is the limit.
    let frames = stream(&BASE, &[MSS; 50], false);
    let mut c = Coalescer::new(80_000);
    assert_eq!(fill(&mut c, &frames, 46), ETH_LEN + 20 + 32 + 46 * MSS);
    fill(&mut c, &frames[46..], 4);
    // Exactly 65 535 bytes of IP: 52 + 11 · 5953.
    let big = stream(&BASE, &[5953; 12], false);
    assert_eq!(fill(&mut c, &big, 11), ETH_LEN + 65_535);
    assert_capacity_bounds::<Coalescer>(&frames);
}

#[test]
fn a_sequence_gap_flushes() {
    let frames = stream(&BASE, &[MSS; 4], false);
    let mut c = Coalescer::new(CAPACITY);
    assert_eq!(c.push(&frames[0]), Push::Merged);
    assert_eq!(c.push(&frames[2]), Push::Flush); // lost segment
    assert_eq!(c.push(&frames[0]), Push::Flush); // retransmission
    assert_eq!(c.push(&frames[1]), Push::Merged);
    assert_eq!(c.segments(), 2);
    assert_eq!(c.push(&frames[3]), Push::Flush);
    // A segment starting one byte late.
    let late = frame(
        &Spec {
            ident: IDENT + 2,
            ..BASE
        },
        SEQ.wrapping_add(2 * MSS as u32 + 1),
        &pattern(MSS),
    );
    assert_eq!(c.push(&late), Push::Flush);
    assert_eq!(c.push(&frames[2]), Push::Merged);
}

#[test]
fn different_headers_flush() {
    let frames = stream(&BASE, &[MSS; 2], false);
    let second = |s: Spec| {
        let s = Spec {
            ident: IDENT + 1,
            ..s
        };
        frame(
            &s,
            SEQ.wrapping_add(MSS as u32),
            payload_of::<Coalescer>(&frames[1]),
        )
    };
    // The unchanged second segment is the control: it merges.
    assert_eq!(second(BASE), frames[1]);
    let variants = [
        (
            "port",
            Spec {
                sport: 40001,
                ..BASE
            },
        ),
        (
            "ack",
            Spec {
                ack: BASE.ack + 1,
                ..BASE
            },
        ),
        (
            "window",
            Spec {
                window: 503,
                ..BASE
            },
        ),
        (
            "timestamp",
            Spec {
                tsval: BASE.tsval + 1,
                ..BASE
            },
        ),
    ];
    let mut cases = header_variants(&frames[1]);
    cases.extend(variants.map(|(what, s)| (what, second(s))));
    // Options of another length: none (and a 1-byte payload, shorter
    // than the first segment's headers), or the same ones and 4 NOPs.
    use TcpOptionElement::{Noop, Timestamp};
    let ts = Timestamp(BASE.tsval, 0x9abc_def0);
    let options: [(_, &[TcpOptionElement], _); 2] = [
        ("no options", &[], 1),
        (
            "4 more option bytes",
            &[Noop, Noop, ts, Noop, Noop, Noop, Noop],
            MSS,
        ),
    ];
    for (what, opts, len) in options {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
            .ipv4(SRC_IP, DST_IP, TTL)
            .tcp(BASE.sport, 5201, SEQ.wrapping_add(MSS as u32), BASE.window)
            .options(opts)
            .unwrap()
            .ack(BASE.ack)
            .write(&mut v, &pattern(len))
            .unwrap();
        cases.push((what, with_ident(&v, IDENT + 1)));
    }
    assert_answers::<Coalescer>(Push::Flush, &frames[0], &frames[1], cases);
}

#[test]
fn identifications_must_count_up_without_df() {
    let s = Spec {
        dont_frag: false,
        ..BASE
    };
    let frames = stream(&s, &[MSS; 3], false);
    let mut c = Coalescer::new(CAPACITY);
    assert_eq!(c.push(&frames[0]), Push::Merged);
    assert_eq!(c.push(&frames[2]), Push::Flush);
    assert_eq!(c.push(&with_ident(&frames[1], IDENT)), Push::Flush);
    assert_eq!(c.push(&frames[1]), Push::Merged);
    assert_eq!(c.push(&frames[2]), Push::Merged);
    let (hdr, sf) = c.take().unwrap();
    assert_eq!(resegment::<Coalescer>(&hdr, sf), frames);
    // With DF any identification will do (Linux sends them all 0).
    let frames = stream(&BASE, &[MSS; 2], false);
    assert_eq!(c.push(&frames[0]), Push::Merged);
    assert_eq!(c.push(&with_ident(&frames[1], IDENT)), Push::Merged);
}

#[test]
fn unusual_flags_bypass() {
    let frames = stream(&BASE, &[MSS; 2], false);
    let next = SEQ.wrapping_add(MSS as u32);
    let p = payload_of::<Coalescer>(&frames[1]);
    let flags = |what, g: fn(&mut Spec)| {
        let mut s = BASE;
        g(&mut s);
        (what, frame(&s, next, p))
    };
    // Set by hand, with the checksum fixed.
    let by_hand = |what, g: fn(&mut u8)| {
        (
            what,
            changed(&frames[1], |v| {
                g(&mut v[L4 + 13]);
                fix_tcp(v)
            }),
        )
    };
    let cases = [
        flags("fin", |s| s.fin = true),
        flags("syn", |s| s.syn = true),
        flags("rst", |s| s.rst = true),
        flags("urg", |s| s.urg = true),
        flags("fin psh", |s| (s.fin, s.psh) = (true, true)),
        ("pure ack", frame(&BASE, next, &[])),
        by_hand("ece", |f| *f |= 0x40),
        by_hand("cwr", |f| *f |= 0x80),
        by_hand("no ack", |f| *f = 0),
    ];
    assert_answers::<Coalescer>(Push::Bypass, &frames[0], &frames[1], cases);
}

#[test]
fn bad_checksums_bypass() {
    let frames = stream(&BASE, &[MSS; 2], false);
    let cases = [
        ("payload", changed(&frames[1], |v| v[L4 + 32 + 700] ^= 0x10)),
        ("field", changed(&frames[1], |v| v[L4 + 17] ^= 1)),
        ("ip", changed(&frames[1], |v| v[ETH_LEN + 11] ^= 1)),
    ];
    assert_answers::<Coalescer>(Push::Bypass, &frames[0], &frames[1], cases);
}

#[test]
fn nothing_follows_a_short_or_psh_segment() {
    let mut c = Coalescer::new(CAPACITY);
    fill(&mut c, &stream(&BASE, &[MSS, 1000, MSS], false), 2);

    // A segment longer than the first one.
    let frames = stream(&BASE, &[1000, MSS], false);
    assert_eq!(c.push(&frames[0]), Push::Merged);
    assert_eq!(c.push(&frames[1]), Push::Flush);
    let _ = c.take();

    // PSH ends a super-frame, even on a full-sized segment.
    let frames = stream(&BASE, &[MSS, MSS], true);
    let more = frame(
        &Spec {
            ident: IDENT + 2,
            ..BASE
        },
        SEQ.wrapping_add(2 * MSS as u32),
        &pattern(MSS),
    );
    assert_eq!(c.push(&frames[0]), Push::Merged);
    assert_eq!(c.push(&frames[1]), Push::Merged);
    assert_eq!(c.push(&more), Push::Flush);
    let (hdr, sf) = c.take().unwrap();
    assert!(TcpHeaderSlice::from_slice(&sf[L4..]).unwrap().psh());
    assert_eq!(resegment::<Coalescer>(&hdr, sf), frames);
    assert_eq!(c.push(&frames[1]), Push::Merged); // PSH first: alone
    assert_eq!(c.push(&more), Push::Flush);
}

#[test]
fn a_single_frame_comes_back_unchanged() {
    let f = stream(&BASE, &[MSS], true).remove(0);
    assert_single_unchanged::<Coalescer>(&f, &stream(&BASE, &[1, 1], false), 5);
}

#[test]
fn what_is_not_plain_tcp_ipv4_bypasses() {
    let frames = stream(&BASE, &[MSS; 2], false);
    let f = &frames[0];
    let tcp = |g: fn(&mut [u8])| {
        changed(f, |v| {
            g(v);
            fix_tcp(v)
        })
    };
    let mut cases = ip_breakages(f, ipv4::PROTO_UDP);
    cases.extend([
        ("doff 4", tcp(|v| v[L4 + 12] = 0x40)),
        // 60 bytes of TCP header in a 42-byte segment.
        ("doff too big", {
            let mut v = stream(&BASE, &[10], false).remove(0);
            v[L4 + 12] = 0xf0;
            fix_tcp(&mut v);
            v
        }),
        ("tcp reserved", tcp(|v| v[L4 + 12] |= 1)),
        ("headers only", f[..L4 + 20].to_vec()),
    ]);
    assert_answers::<Coalescer>(Push::Bypass, f, &frames[1], cases);
    // The control: one whose checksums were recomputed without change
    // merges.
    let mut c = Coalescer::new(CAPACITY);
    assert_eq!(c.push(&tcp(|_| {})), Push::Merged);
}

#[test]
fn kind_looks_at_ethertype_and_protocol() {
    let tcp = stream(&BASE, &[MSS], false).remove(0);
    assert_eq!(kind(&tcp), Some(Kind::Tcp));
    let mut udp = tcp.clone();
    udp[23] = 17;
    assert_eq!(kind(&udp), Some(Kind::Udp));
    udp[23] = 1;
    assert_eq!(kind(&udp), None);
    let mut vlan = tcp.clone();
    vlan[12] = 0x81;
    assert_eq!(kind(&vlan), None);
    assert_eq!(kind(&tcp[..L4 - 1]), None);
    assert_eq!(kind(&[]), None);
}

proptest! {
    #[test]
    fn garbage_never_panics(
        frames in garbage_frames(),
        ipv4 in any::<bool>(),
        capacity in 0usize..200,
    ) {
        garbage::<Coalescer>(frames, ipv4, capacity, |f| f[L4 + 13] = 0x10)?;
    }

    #[test]
    fn mutated_streams_merge_only_what_they_report(
        mss in 1usize..1500,
        lens in proptest::collection::vec(0usize..4, 1..40),
        mutations in proptest::collection::vec(
            (0usize..40, 0usize..1600, 1u8.., any::<bool>()), 0..6),
        swaps in proptest::collection::vec((0usize..40, 0usize..40), 0..3),
        psh in any::<bool>(),
        capacity in prop_oneof![Just(CAPACITY), 100usize..20_000],
    ) {
        // Mostly full-sized segments, some short ones.
        let lens: Vec<usize> = lens.iter().map(|&k| if k == 0 { 1 + mss / 2 } else { mss }).collect();
        let mut frames = stream(&BASE, &lens, psh);
        mutate::<Coalescer>(&mut frames, &mutations, &swaps);
        drive(&mut Coalescer::new(capacity), &frames)?;
    }
}

/// A segment whose checksum its sender left unfinished (the pseudo-header
/// sum, as a kernel peer on a veth sends it) cannot be verified, so it is
/// never merged: a super-frame gets a fresh checksum and would otherwise
/// hide whether it was sound. (The dataplane does not even offer such a
/// segment: it passes on with `NEEDS_CSUM`.)
#[test]
fn unfinished_checksums_bypass() {
    let frames = stream(&BASE, &[MSS; 2], false);
    let unfinish = |f: &[u8]| {
        changed(f, |v| {
            let ip = &v[ETH_LEN..];
            let u = crate::ipv4::unfinished_l4(&ip[..ip_end(v) - ETH_LEN]);
            assert!(u.is_none(), "complete before");
            let addr = |i: usize| core::net::Ipv4Addr::new(ip[i], ip[i + 1], ip[i + 2], ip[i + 3]);
            let len = (ip_end(v) - L4) as u16;
            let p =
                crate::checksum::fold(crate::checksum::pseudo_header(addr(12), addr(16), 6, len));
            v[L4 + 16..L4 + 18].copy_from_slice(&p.to_be_bytes());
        })
    };
    let partial = unfinish(&frames[1]);
    assert!(crate::ipv4::unfinished_l4(&partial[ETH_LEN..ip_end(&partial)]).is_some());
    assert_answers::<Coalescer>(
        Push::Bypass,
        &frames[0],
        &frames[1],
        [("unfinished", partial)],
    );
    let mut c = Coalescer::new(CAPACITY);
    assert_eq!(
        c.push(&unfinish(&frames[0])),
        Push::Bypass,
        "nor starts one"
    );
}
