//! Tests of the Internet checksum: known headers, RFC 1624 updates, and the
//! fast [`sum`] against a plain 16-bit big-endian loop.

use super::*;
use proptest::prelude::*;

// The IPv4 header example of RFC 1071's companion literature: a header
// whose checksum field is 0xb861.
static HDR: [u8; 20] = [
    0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01,
    0xc0, 0xa8, 0x00, 0xc7,
];

/// The textbook loop, as the reference: big-endian 16-bit words, an odd last
/// byte padded with zero, a 64-bit accumulator folded once at the end.
fn reference(acc: u32, data: &[u8]) -> u16 {
    let mut a = u64::from(acc);
    for c in data.chunks(2) {
        let hi = c[0];
        let lo = c.get(1).copied().unwrap_or(0);
        a += u64::from(u16::from_be_bytes([hi, lo]));
    }
    while a >> 16 != 0 {
        a = (a & 0xffff) + (a >> 16);
    }
    a as u16
}

/// Checks `sum(acc, data)` against the reference and the bound it promises.
fn check(acc: u32, data: &[u8]) {
    let s = sum(acc, data);
    assert!(s <= 0xffff, "sum({acc:#x}, {} bytes) = {s:#x}", data.len());
    assert_eq!(
        fold(s),
        reference(acc, data),
        "acc {acc:#x}, {} bytes",
        data.len()
    );
}

/// Lengths at and around every step of the loop and its tail: 1, 2, 4, 8
/// and 16 bytes, and a few multiples of 16.
fn boundary_lengths() -> impl Iterator<Item = usize> {
    (0..=80).chain([
        127, 128, 129, 1449, 1450, 1451, 4095, 4096, 4097, 65_535, 65_536,
    ])
}

#[test]
fn verifies_known_header() {
    assert_eq!(checksum(&HDR), 0);
    let mut h = HDR;
    h[10] = 0;
    h[11] = 0;
    assert_eq!(checksum(&h), 0xb861);
}

#[test]
fn odd_length_pads_with_zero() {
    assert_eq!(checksum(&[0x01]), !0x0100);
    assert_eq!(checksum(&[0x01, 0x02, 0x03]), !(0x0102u16 + 0x0300));
}

#[test]
fn empty_input_is_the_folded_accumulator() {
    assert_eq!(sum(0, &[]), 0);
    for acc in [1, 0xffff, 0x1_0000, 0x1234_5678, u32::MAX] {
        assert_eq!(fold(sum(acc, &[])), fold(acc));
        assert!(sum(acc, &[]) <= 0xffff);
    }
}

#[test]
fn zero_only_for_all_zero_input() {
    // 0 and 0xffff are the same ones'-complement number but not the same
    // checksum result: only an all-zero input may sum to 0.
    let zeros = [0u8; 100];
    for len in 0..zeros.len() {
        assert_eq!(sum(0, &zeros[..len]), 0);
    }
    assert_eq!(sum(0, &[0xff, 0xff]), 0xffff);
    assert_eq!(sum(0xffff, &zeros), 0xffff);
    assert_eq!(sum(0, &[0x80, 0x00, 0x80, 0x00]), 1);
}

#[test]
fn single_bytes() {
    for b in 0..=255u8 {
        check(0, &[b]);
        check(0xfedc_ba98, &[b]);
        assert_eq!(fold(sum(0, &[b])), u16::from(b) << 8);
    }
}

#[test]
fn all_ones_at_every_boundary() {
    // Every add carries: the case that catches a lost carry.
    let ones = vec![0xffu8; 65_536 + 8];
    for len in boundary_lengths() {
        for off in 0..8 {
            let data = &ones[off..off + len];
            check(0, data);
            check(u32::MAX, data);
            check(0xffff, data);
        }
    }
}

#[test]
fn patterns_at_every_boundary() {
    let data: Vec<u8> = (0..65_536u32 + 8)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    for len in boundary_lengths() {
        for off in 0..8 {
            check(0, &data[off..off + len]);
            check(0x8000_0001, &data[off..off + len]);
        }
    }
}

#[test]
fn long_input_does_not_overflow() {
    let data = vec![0xffu8; 1 << 20];
    assert_eq!(checksum(&data), 0);
    check(u32::MAX, &data);
}

#[test]
fn results_add_without_overflow() {
    // What segmentation does: several results and a pseudo-header sum added
    // in a u32.
    let ones = [0xffu8; 64];
    let pseudo = pseudo_header(
        Ipv4Addr::new(255, 255, 255, 255),
        Ipv4Addr::new(255, 255, 255, 255),
        255,
        0xffff,
    );
    // Debug builds panic on overflow; each term is ≡ 0 (mod 0xffff) but the
    // protocol byte, so the total is 0xff.
    let total = sum(u32::MAX, &ones) + sum(u32::MAX, &ones) + sum(0, &ones) + pseudo;
    assert_eq!(fold(total), 0x00ff);
}

#[test]
fn incremental_update_matches_full_recompute() {
    // Decrement TTL (byte 8, high half of the TTL/protocol word).
    let mut h = HDR;
    let old = u16::from_be_bytes([h[8], h[9]]);
    h[8] -= 1;
    let new = u16::from_be_bytes([h[8], h[9]]);
    let c = update16(u16::from_be_bytes([h[10], h[11]]), old, new);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    assert_eq!(checksum(&h), 0);

    // Rewrite the destination address.
    let old = u32::from_be_bytes([h[16], h[17], h[18], h[19]]);
    let new: u32 = 0x0a0b_0c0d;
    h[16..20].copy_from_slice(&new.to_be_bytes());
    let c = update32(u16::from_be_bytes([h[10], h[11]]), old, new);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    assert_eq!(checksum(&h), 0);
}

/// `len` pseudo-random bytes from `seed`, in one of three mixes: uniform;
/// biased towards 0x00 and 0xff, where carries and the 0/0xffff distinction
/// live; and mostly 0xff. Built from a seed rather than byte by byte so that
/// 9000-byte cases stay cheap in debug builds.
fn bytes(len: usize, seed: u64, mix: u8) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let r = (x >> 32) as u8;
            match (mix, x % 4) {
                (0, _) => r,
                (1, 0) => 0,
                (1, 1 | 2) => 0xff,
                (2, 0..=2) => 0xff,
                _ => r,
            }
        })
        .collect()
}

proptest! {
    #[test]
    fn sum_equals_the_16_bit_reference(
        len in 0usize..=9000,
        off in 0usize..8,
        seed in any::<u64>(),
        mix in 0u8..3,
        acc in any::<u32>(),
    ) {
        // A subslice at any alignment.
        let buf = bytes(off + len, seed, mix);
        let data = &buf[off..];
        let s = sum(acc, data);
        prop_assert!(s <= 0xffff);
        prop_assert_eq!(fold(s), reference(acc, data));
    }

    #[test]
    fn chained_and_added_calls_equal_one(
        len in 0usize..=9000,
        seed in any::<u64>(),
        mix in 0u8..3,
        acc in any::<u32>(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..5),
    ) {
        let data = bytes(len, seed, mix);
        // Split at even offsets: every piece but the last has an even length.
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(data.len() + 1) & !1).collect();
        at.sort_unstable();
        let pieces: Vec<&[u8]> = core::iter::once(0)
            .chain(at.iter().copied())
            .zip(at.iter().copied().chain(core::iter::once(data.len())))
            .map(|(a, b)| &data[a..b])
            .collect();
        let want = reference(acc, &data);
        // Each result passed as the next call's accumulator.
        let chained = pieces.iter().fold(acc, |a, p| sum(a, p));
        prop_assert!(chained <= 0xffff);
        prop_assert_eq!(fold(chained), want);
        // Results of separate calls added together, as segmentation does.
        let added = u32::from(fold(acc)) + pieces.iter().map(|p| sum(0, p)).sum::<u32>();
        prop_assert_eq!(fold(added), want);
    }

    #[test]
    fn incremental_equals_recompute(mut h in proptest::array::uniform20(0u8..), at in 0usize..10, new in 0u16..) {
        h[0] = 0x45;
        h[10] = 0; h[11] = 0;
        let c = checksum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        let at = if at == 5 { 4 } else { at }; // never the checksum word itself
        let old = u16::from_be_bytes([h[2 * at], h[2 * at + 1]]);
        h[2 * at..2 * at + 2].copy_from_slice(&new.to_be_bytes());
        let c2 = update16(c, old, new);
        h[10..12].copy_from_slice(&c2.to_be_bytes());
        prop_assert_eq!(checksum(&h), 0);
    }
}

/// Ones'-complement equality: 0 and 0xffff are the same number.
fn oc_eq(a: u16, b: u16) -> bool {
    a == b || (a == 0 && b == 0xffff) || (a == 0xffff && b == 0)
}

proptest! {
    #[test]
    fn partial_update_equals_new_pseudo_header(
        src in any::<u32>(), dst in any::<u32>(), new in any::<u32>(), len in any::<u16>(), which in any::<bool>()
    ) {
        let (s, d) = (Ipv4Addr::from(src), Ipv4Addr::from(dst));
        let partial = fold(pseudo_header(s, d, 6, len));
        let (s2, d2, old) = if which {
            (Ipv4Addr::from(new), d, src)
        } else {
            (s, Ipv4Addr::from(new), dst)
        };
        let want = fold(pseudo_header(s2, d2, 6, len));
        let got = update_partial32(partial, old, new);
        prop_assert!(oc_eq(got, want), "{got:#x} vs {want:#x}");
    }
}

#[test]
fn udp_wire_never_zero() {
    assert_eq!(udp_wire(0), 0xffff);
    assert_eq!(udp_wire(0x1234), 0x1234);
}

/// An IPv4 packet of `proto` (TCP or UDP) with a complete checksum, and
/// the same with the checksum left unfinished as Linux leaves it.
fn complete_and_partial(proto: u8, payload: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let b = etherparse::PacketBuilder::ipv4([10, 244, 2, 3], [10, 244, 1, 3], 63);
    let mut v = Vec::new();
    match proto {
        6 => b.tcp(40000, 5201, 7, 64000).ack(9).write(&mut v, payload),
        _ => b.udp(40000, 53).write(&mut v, payload),
    }
    .unwrap();
    let (at, len) = (20 + if proto == 6 { 16 } else { 6 }, v.len() - 20);
    let mut p = v.clone();
    let pseudo = fold(pseudo_header(
        Ipv4Addr::new(10, 244, 2, 3),
        Ipv4Addr::new(10, 244, 1, 3),
        proto,
        len as u16,
    ));
    p[at..at + 2].copy_from_slice(&pseudo.to_be_bytes());
    (v, p)
}

#[test]
fn unfinished_l4_is_recognised_and_finishes_to_the_complete_checksum() {
    for (proto, offset) in [(6u8, 16usize), (17, 6)] {
        for payload in [&b""[..], b"x", b"hello, partial checksum", &[0xa5; 1400]] {
            let (full, mut partial) = complete_and_partial(proto, payload);
            let u = crate::ipv4::unfinished_l4(&partial);
            assert_eq!(
                u,
                Some(crate::ipv4::Unfinished { start: 20, offset }),
                "proto {proto}"
            );
            assert_eq!(
                crate::ipv4::unfinished_l4(&full),
                None,
                "a complete one is not (proto {proto})"
            );
            crate::gso::complete_checksum(&mut partial, 20, offset).unwrap();
            assert_eq!(partial, full, "proto {proto}, {} bytes", payload.len());
        }
    }
}

#[test]
fn unfinished_l4_leaves_fragments_other_protocols_and_no_checksum_alone() {
    let (_, partial) = complete_and_partial(6, b"data");
    let mut frag = partial.clone();
    frag[6] |= 0x20; // MF
    assert_eq!(crate::ipv4::unfinished_l4(&frag), None);
    let mut icmp = partial.clone();
    icmp[9] = 1;
    assert_eq!(crate::ipv4::unfinished_l4(&icmp), None);
    let (mut udp, _) = complete_and_partial(17, b"data");
    udp[26..28].copy_from_slice(&[0, 0]);
    assert_eq!(
        crate::ipv4::unfinished_l4(&udp),
        None,
        "UDP without checksum"
    );
    // Cut short anywhere: no answer, no panic.
    for n in 0..partial.len() {
        let _ = crate::ipv4::unfinished_l4(&partial[..n]);
    }
    assert_eq!(
        crate::ipv4::unfinished_l4(&partial[..39]),
        None,
        "TCP header cut"
    );
}

proptest! {
    #[test]
    fn unfinished_l4_never_panics(b in proptest::collection::vec(any::<u8>(), 0..80)) {
        let _ = crate::ipv4::unfinished_l4(&b);
    }
}
