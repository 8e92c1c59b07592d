use super::super::test_support::*;
use super::*;
use crate::gso;
use etherparse::{Ipv4HeaderSlice, PacketBuilder, UdpHeaderSlice};
use proptest::prelude::*;

/// The benchmark's datagrams: 64 bytes of payload.
const SIZE: usize = 64;

impl Coalesce for UdpCoalescer {
    const PROTO: u8 = ipv4::PROTO_UDP;
    const GSO_TYPE: u8 = vnet::GSO_UDP_L4;
    const CSUM: usize = udp_field::CHECKSUM.start;
    const L4_MIN: usize = UDP_LEN;
    const ZERO_MEANS_NONE: bool = true;

    forward!(datagrams);
    fn l4_len(_: &[u8]) -> usize {
        UDP_LEN
    }
    /// The UDP length is the whole UDP part's.
    fn check_l4(sf: &[u8]) {
        let udp = UdpHeaderSlice::from_slice(&sf[L4..]).unwrap();
        assert_eq!(usize::from(udp.length()), sf.len() - L4);
    }
    fn etherparse_checksum(f: &[u8]) -> u16 {
        let ip = Ipv4HeaderSlice::from_slice(&f[ETH_LEN..]).unwrap();
        let udp = UdpHeaderSlice::from_slice(&f[L4..]).unwrap().to_header();
        udp.calc_checksum_ipv4(&ip.to_header(), &f[HDR_LEN..])
            .unwrap()
    }
    fn segment(full: &[u8], mss: usize, out: &mut [u8]) -> Result<gso::Segments, crate::Error> {
        let segs = gso::segment_udp4(full, ETH_LEN, mss, out)?;
        assert!(segs.count <= MAX_DATAGRAMS);
        Ok(segs)
    }
    /// Segmentation gives back the very datagrams, byte for byte.
    fn check_segment(s: &[u8], f: &[u8]) -> Result<(), TestCaseError> {
        prop_assert_eq!(s, f);
        Ok(())
    }
}

/// Recomputes the UDP checksum of a frame with a 20-byte IP header, over
/// the IP payload (0 sent as 0xffff).
fn fix_udp(f: &mut [u8]) {
    fix_l4::<UdpCoalescer>(f);
}

/// The fields a test varies in a datagram.
#[derive(Debug, Clone, Copy)]
struct Spec {
    sport: u16,
    dport: u16,
    dst: [u8; 4],
    dont_frag: bool,
    ident: u16,
}

const BASE: Spec = Spec {
    sport: 40000,
    dport: 5201,
    dst: DST_IP,
    dont_frag: true,
    ident: IDENT,
};

/// Ethernet + IPv4 + UDP with `payload`, all checksums right.
fn frame(s: &Spec, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv4(SRC_IP, s.dst, TTL)
        .udp(s.sport, s.dport)
        .write(&mut v, payload)
        .unwrap();
    set_ip(&mut v, s.ident, s.dont_frag);
    v
}

/// Consecutive datagrams of one flow with payloads of `lens`,
/// identifications counting up.
fn flow(s: &Spec, lens: &[usize]) -> Vec<Vec<u8>> {
    consecutive(lens, |i, _, payload| {
        let ident = s.ident.wrapping_add(i as u16);
        frame(&Spec { ident, ..*s }, payload)
    })
}

#[test]
fn coalesces_a_flow_and_segments_back() {
    // The identifications wrap on the way.
    let mut lens = vec![SIZE; 20];
    lens.push(30);
    let (hdr, sf) = assert_coalesces::<UdpCoalescer>(&flow(&BASE, &lens));
    assert_eq!(usize::from(hdr.gso_size), SIZE);
    assert_eq!(sf.len(), HDR_LEN + 20 * SIZE + 30);
}

#[test]
fn stops_at_64_datagrams_and_at_64k() {
    let frames = flow(&BASE, &[SIZE; 70]);
    let mut c = UdpCoalescer::new(CAPACITY);
    fill(&mut c, &frames, MAX_DATAGRAMS);
    fill(&mut c, &frames[MAX_DATAGRAMS..], 70 - MAX_DATAGRAMS);

    // 1472-byte payloads: 44 are 64 796 bytes of IP, a 45th would exceed
    // 65 535. A capacity beyond the largest frame: the IP length is the limit.
    let big = flow(&BASE, &[1472; 46]);
    let mut c = UdpCoalescer::new(80_000);
    assert_eq!(fill(&mut c, &big, 44), ETH_LEN + 28 + 44 * 1472);
    // Exactly 65 535 bytes of IP: 28 + 13 · 5039.
    let exact = flow(&BASE, &[5039; 14]);
    assert_eq!(fill(&mut c, &exact, 13), ETH_LEN + 65_535);
    assert_capacity_bounds::<UdpCoalescer>(&frames);
}

#[test]
fn identifications_must_count_up() {
    // With DF or without: segmentation numbers the datagrams id, id + 1, …
    for dont_frag in [true, false] {
        let frames = flow(&Spec { dont_frag, ..BASE }, &[SIZE; 4]);
        let mut c = UdpCoalescer::new(CAPACITY);
        assert_eq!(c.push(&frames[0]), Push::Merged);
        assert_eq!(c.push(&frames[2]), Push::Flush, "gap");
        assert_eq!(c.push(&frames[0]), Push::Flush, "repeat");
        let same_id = with_ident(&frames[1], IDENT);
        assert_eq!(c.push(&same_id), Push::Flush, "same id");
        for f in &frames[1..] {
            assert_eq!(c.push(f), Push::Merged);
        }
        let (hdr, sf) = c.take().unwrap();
        assert_eq!(resegment::<UdpCoalescer>(&hdr, sf), frames);
    }
}

#[test]
fn different_headers_flush() {
    let frames = flow(&BASE, &[SIZE; 2]);
    let second = |s: Spec| {
        let s = Spec {
            ident: IDENT + 1,
            ..s
        };
        frame(&s, payload_of::<UdpCoalescer>(&frames[1]))
    };
    // The unchanged second datagram is the control: it merges.
    assert_eq!(second(BASE), frames[1]);
    let variants = [
        (
            "source port",
            Spec {
                sport: 40001,
                ..BASE
            },
        ),
        ("destination port", Spec { dport: 53, ..BASE }),
        (
            "address",
            Spec {
                dst: [10, 244, 2, 8],
                ..BASE
            },
        ),
    ];
    let mut cases = header_variants(&frames[1]);
    cases.extend(variants.map(|(what, s)| (what, second(s))));
    assert_answers::<UdpCoalescer>(Push::Flush, &frames[0], &frames[1], cases);
}

#[test]
fn only_the_last_datagram_may_be_shorter() {
    let mut c = UdpCoalescer::new(CAPACITY);
    fill(&mut c, &flow(&BASE, &[SIZE, 40, SIZE]), 2);
    // Nor a shorter one after a shorter one.
    fill(&mut c, &flow(&BASE, &[SIZE, 40, 40]), 2);
    // A datagram longer than the first one.
    let frames = flow(&BASE, &[40, SIZE]);
    assert_eq!(c.push(&frames[0]), Push::Merged);
    assert_eq!(c.push(&frames[1]), Push::Flush);
}

#[test]
fn bad_or_missing_checksums_bypass() {
    let frames = flow(&BASE, &[SIZE; 3]);
    let with = |g: fn(&mut Vec<u8>)| changed(&frames[1], g);
    let cases = [
        ("payload", with(|v| v[HDR_LEN + 10] ^= 0x10)),
        ("field", with(|v| v[L4 + 7] ^= 1)),
        ("ip", with(|v| v[ETH_LEN + 11] ^= 1)),
        // Sent without a checksum: valid, but the super-frame would give it one.
        ("zero", with(|v| v[L4 + 6..L4 + 8].copy_from_slice(&[0, 0]))),
    ];
    assert_answers::<UdpCoalescer>(Push::Bypass, &frames[0], &frames[1], cases);
    // A checksum that computes to 0 travels as 0xffff: it merges, and comes
    // back so. Look for a payload whose datagram has it.
    let found = (0..=u16::MAX).find(|&sport| {
        let f = frame(&Spec { sport, ..BASE }, &pattern(SIZE));
        f[L4 + 6..L4 + 8] == [0xff, 0xff]
    });
    let s = Spec {
        sport: found.unwrap(),
        ..BASE
    };
    let frames = flow(&s, &[SIZE; 2]);
    assert_eq!(frames[0][L4 + 6..L4 + 8], [0xff, 0xff]);
    let mut c = UdpCoalescer::new(CAPACITY);
    fill(&mut c, &frames, 2);
    // That datagram sent without a checksum verifies too (0 and 0xffff are
    // the same sum): only the rule about 0 keeps it out.
    let mut none = frames[0].clone();
    none[L4 + 6..L4 + 8].copy_from_slice(&[0, 0]);
    assert_eq!(c.push(&none), Push::Bypass);
}

#[test]
fn a_single_frame_comes_back_unchanged() {
    let f = flow(&BASE, &[SIZE]).remove(0);
    assert_single_unchanged::<UdpCoalescer>(&f, &flow(&BASE, &[1, 1]), 17);
}

#[test]
fn what_is_not_plain_udp_ipv4_bypasses() {
    let frames = flow(&BASE, &[SIZE; 2]);
    let f = &frames[0];
    let udp = |g: fn(&mut Vec<u8>)| {
        changed(f, |v| {
            g(v);
            fix_udp(v)
        })
    };
    let mut cases = ip_breakages(f, ipv4::PROTO_TCP);
    cases.extend([
        // The IP packet ends a byte early: the UDP length says more.
        (
            "short total, udp checksum right",
            udp(|v| edit_ip(v, |ip| add16(&mut ip[2..4], -1))),
        ),
        (
            "short udp length",
            udp(|v| add16(&mut v[L4 + 4..L4 + 6], -1)),
        ),
        ("long udp length", udp(|v| add16(&mut v[L4 + 4..L4 + 6], 1))),
        // Zero (EOL) options keep the first 20 bytes' checksum valid, and
        // the bytes after them are made to read as a valid UDP header and
        // checksum: only the IHL tells.
        (
            "options read as udp",
            changed(f, |v| {
                add_ip_options(v, [0, 0, 0, 0]);
                let end = ip_end(v);
                v[L4 + 4..L4 + 6].copy_from_slice(&((end - L4) as u16).to_be_bytes());
                v[L4 + 10..L4 + 12].copy_from_slice(&[0, 0]);
                let c = l4_checksum(v, ipv4::PROTO_UDP, L4..end);
                v[L4 + 10..L4 + 12].copy_from_slice(&c.to_be_bytes());
            }),
        ),
        ("no payload", frame(&BASE, &[])),
        ("headers only", f[..HDR_LEN].to_vec()),
    ]);
    assert_answers::<UdpCoalescer>(Push::Bypass, f, &frames[1], cases);
    // The control: one whose checksums were recomputed without change
    // merges.
    let mut c = UdpCoalescer::new(CAPACITY);
    assert_eq!(c.push(&udp(|v| edit_ip(v, |_| {}))), Push::Merged);
}

/// The rules a datagram can break, one at a time, in
/// `a_broken_rule_never_ends_in_a_frame`.
const RULES: usize = 9;

/// Datagram `f` of a flow with rule `rule` broken (checksums made right
/// again where the rule is not about them); whether it must bypass (else
/// flush, the rule being about its place in the flow).
fn break_rule(f: &mut Vec<u8>, rule: usize) -> bool {
    match rule {
        0 => f[HDR_LEN] ^= 0x01, // a payload bit: UDP checksum wrong
        1 => f[L4 + 6..L4 + 8].copy_from_slice(&[0, 0]), // no checksum
        2 => f[ETH_LEN + 10] ^= 0x80, // IP checksum wrong
        3 => add_ip_options(f, [1, 1, 1, 0]),
        // A fragment: MF, or an offset.
        4 => edit_ip(f, |ip| ip[6] |= 0x20),
        5 => edit_ip(f, |ip| ip[7] |= 0x08),
        // An identification gap.
        6 => edit_ip(f, |ip| add16(&mut ip[4..6], 1)),
        7 => {
            // One byte longer than the others.
            f.push(0x5a);
            edit_ip(f, |ip| add16(&mut ip[2..4], 1));
            add16(&mut f[L4 + 4..L4 + 6], 1);
            fix_udp(f);
        }
        // Another TTL.
        _ => edit_ip(f, |ip| ip[8] = ip[8].wrapping_sub(1)),
    }
    rule < 6
}

proptest! {
    #[test]
    fn valid_flows_coalesce_and_segment_back(
        size in 1usize..1473,
        flows in proptest::collection::vec((0usize..3, 1usize..80, any::<bool>()), 1..6),
        ident in any::<u16>(),
        dont_frag in any::<bool>(),
        capacity in prop_oneof![Just(CAPACITY), 100usize..20_000],
    ) {
        // Runs of one of three flows, each run a flow of `n` datagrams of
        // `size` bytes, with a shorter last one if `short`.
        let mut frames = Vec::new();
        let mut joinable = false;
        for (which, n, short) in flows {
            let s = Spec {
                sport: 40000 + which as u16,
                ident: ident.wrapping_add(frames.len() as u16),
                dont_frag,
                ..BASE
            };
            let mut lens = vec![size; n];
            if short && size > 1 {
                lens[n - 1] = size / 2;
            }
            joinable |= n > 1 && HDR_LEN + 2 * size <= capacity;
            frames.extend(flow(&s, &lens));
        }
        let joined = drive(&mut UdpCoalescer::new(capacity), &frames)?;
        prop_assert!(!joinable || joined > 0, "nothing was joined");
    }

    #[test]
    fn a_broken_rule_never_ends_in_a_frame(
        size in 1usize..1473,
        n in 2usize..70,
        at in 0usize..70,
        rule in 0usize..RULES,
    ) {
        let mut frames = flow(&BASE, &vec![size; n]);
        let at = at % n;
        let bypass = break_rule(&mut frames[at], rule);
        let mut c = UdpCoalescer::new(CAPACITY);
        for (i, f) in frames.iter().enumerate() {
            let was_empty = c.is_empty();
            let r = c.push(f);
            if i == at {
                if bypass {
                    prop_assert_eq!(r, Push::Bypass, "rule {}", rule);
                } else if !was_empty {
                    prop_assert_eq!(r, Push::Flush, "rule {}", rule);
                }
            }
            if r != Push::Merged {
                let _ = c.take();
                if r == Push::Flush {
                    prop_assert_eq!(c.push(f), Push::Merged);
                }
            }
        }
        // And driven as the switch does, every super-frame segments back
        // into exactly what was merged.
        drive(&mut UdpCoalescer::new(CAPACITY), &frames)?;
    }

    #[test]
    fn mutated_flows_merge_only_what_they_report(
        size in 1usize..1473,
        n in 1usize..70,
        mutations in proptest::collection::vec(
            (0usize..70, 0usize..1600, 1u8.., any::<bool>()), 0..6),
        swaps in proptest::collection::vec((0usize..70, 0usize..70), 0..3),
        capacity in prop_oneof![Just(CAPACITY), 100usize..20_000],
    ) {
        let mut frames = flow(&BASE, &vec![size; n]);
        mutate::<UdpCoalescer>(&mut frames, &mutations, &swaps);
        drive(&mut UdpCoalescer::new(capacity), &frames)?;
    }

    #[test]
    fn garbage_never_panics(
        frames in garbage_frames(),
        ipv4 in any::<bool>(),
        capacity in 0usize..200,
    ) {
        garbage::<UdpCoalescer>(frames, ipv4, capacity, |_| {})?;
    }
}
