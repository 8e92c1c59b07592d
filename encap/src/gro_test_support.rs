//! Test support shared by the tests of the two coalescers, TCP
//! (`gro_tests.rs`) and UDP (`gro_udp_tests.rs`): header fixing, the
//! IP-level breakages every coalescable frame must bypass on, resegmenting
//! a super-frame, driving a coalescer as the switch does, and the checks
//! both coalescers must pass alike. What is particular to one protocol
//! comes in through [`Coalesce`]; the protocol's own cases stay in its file.

use super::{addr, Push, ETH_LEN, IP_LEN, L4};
use crate::{checksum, gso, vnet};
use core::ops::Range;
use etherparse::Ipv4HeaderSlice;
use proptest::prelude::*;

/// Room for the largest IPv4 packet.
pub const CAPACITY: usize = 65_536 + 128;
/// First IP identification of a flow: chosen so that identifications wrap.
pub const IDENT: u16 = 0xfff0;
/// Addresses and TTL of the test flows.
pub const SRC_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
pub const DST_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
pub const SRC_IP: [u8; 4] = [10, 244, 1, 3];
pub const DST_IP: [u8; 4] = [10, 244, 2, 7];
pub const TTL: u8 = 63;

/// What the shared checks need to know of a coalescer and its protocol.
pub trait Coalesce: Sized {
    /// IP protocol number.
    const PROTO: u8;
    /// The vnet `gso_type` of its super-frames.
    const GSO_TYPE: u8;
    /// Offset of the checksum field in the L4 header.
    const CSUM: usize;
    /// Length of the L4 header without options.
    const L4_MIN: usize;
    /// A computed checksum of 0 is sent as 0xffff (0 means none, as in UDP).
    const ZERO_MEANS_NONE: bool;

    // The coalescer's own methods, for generic code: see `forward!`.
    fn new(capacity: usize) -> Self;
    fn push(&mut self, frame: &[u8]) -> Push;
    fn take(&mut self) -> Option<(vnet::Header, &[u8])>;
    /// Frames merged into the current super-frame.
    fn merged(&self) -> usize;

    /// Length of the L4 header of a coalescable frame, options included.
    fn l4_len(f: &[u8]) -> usize;
    /// Checks the protocol's own fields of a super-frame (as
    /// [`resegment`] finds it).
    fn check_l4(sf: &[u8]);
    /// The L4 checksum of a frame as etherparse computes it.
    fn etherparse_checksum(f: &[u8]) -> u16;
    /// The protocol's software segmentation.
    fn segment(full: &[u8], mss: usize, out: &mut [u8]) -> Result<gso::Segments, crate::Error>;
    /// Checks a segment `s` cut from a super-frame against the frame `f`
    /// merged there (their payloads are already known to be equal).
    fn check_segment(s: &[u8], f: &[u8]) -> Result<(), TestCaseError>;
}

/// The methods of a [`Coalesce`] impl that forward to the coalescer's own
/// (`new`, `push`, `take`, and `$merged` for `merged`).
macro_rules! forward {
    ($merged:ident) => {
        fn new(capacity: usize) -> Self {
            Self::new(capacity)
        }
        fn push(&mut self, frame: &[u8]) -> Push {
            Self::push(self, frame)
        }
        fn take(&mut self) -> Option<(vnet::Header, &[u8])> {
            Self::take(self)
        }
        fn merged(&self) -> usize {
            self.$merged()
        }
    };
}
pub(super) use forward;

/// `n` bytes of payload, no two neighbours alike.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// End of the IP packet in a frame (Ethernet + its total length).
pub fn ip_end(f: &[u8]) -> usize {
    ETH_LEN + usize::from(u16::from_be_bytes([f[16], f[17]]))
}

/// The L4 payload of a coalescable frame.
pub fn payload_of<C: Coalesce>(f: &[u8]) -> &[u8] {
    &f[L4 + C::l4_len(f)..ip_end(f)]
}

/// A copy of `f` changed by `g`.
pub fn changed(f: &[u8], g: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut v = f.to_vec();
    g(&mut v);
    v
}

/// Rewrites an IPv4 header checksum.
pub fn fix_ip(ip: &mut [u8]) {
    ip[10..12].copy_from_slice(&[0, 0]);
    let hl = usize::from(ip[0] & 0xf) * 4;
    let c = checksum::checksum(&ip[..hl]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Changes the 20-byte IP header of frame `f` with `g`, then fixes its
/// checksum.
pub fn edit_ip(f: &mut [u8], g: impl FnOnce(&mut [u8])) {
    g(&mut f[ETH_LEN..L4]);
    fix_ip(&mut f[ETH_LEN..L4]);
}

/// Sets identification and DF of a frame just built (the IP header but
/// the addresses is not part of the L4 checksum).
pub fn set_ip(f: &mut [u8], ident: u16, dont_frag: bool) {
    edit_ip(f, |ip| {
        ip[4..6].copy_from_slice(&ident.to_be_bytes());
        ip[6] = if dont_frag { 0x40 } else { 0 };
    });
}

/// `f` with identification `id`.
pub fn with_ident(f: &[u8], id: u16) -> Vec<u8> {
    changed(f, |v| {
        edit_ip(v, |ip| ip[4..6].copy_from_slice(&id.to_be_bytes()))
    })
}

/// Inserts `opts` as IP options after the 20-byte header of `f` (IHL 6,
/// total length 4 more, IP checksum right; the L4 checksum is not
/// concerned).
pub fn add_ip_options(f: &mut Vec<u8>, opts: [u8; 4]) {
    f.splice(L4..L4, opts);
    f[ETH_LEN] = 0x46;
    add16(&mut f[16..18], 4);
    fix_ip(&mut f[ETH_LEN..L4 + 4]);
}

/// Frames of one flow carrying consecutive slices of one `pattern`, of
/// `lens`: `make(i, offset, payload)` builds the `i`-th.
pub fn consecutive(
    lens: &[usize],
    mut make: impl FnMut(usize, usize, &[u8]) -> Vec<u8>,
) -> Vec<Vec<u8>> {
    let data = pattern(lens.iter().sum());
    let mut at = 0;
    let mut v = Vec::new();
    for (i, &len) in lens.iter().enumerate() {
        v.push(make(i, at, &data[at..at + len]));
        at += len;
    }
    v
}

/// The inverted sum of `f[l4]` under the pseudo-header of `f`'s addresses
/// (20-byte IP header) and protocol `proto`: what its checksum field must
/// hold for it to verify, if the field is 0 in it.
pub fn l4_checksum(f: &[u8], proto: u8, l4: Range<usize>) -> u16 {
    let (src, dst) = (addr(&f[26..30]), addr(&f[30..34]));
    let pseudo = checksum::pseudo_header(src, dst, proto, l4.len() as u16);
    !checksum::fold(checksum::sum(pseudo, &f[l4]))
}

/// Recomputes the L4 checksum of a frame with a 20-byte IP header, over
/// the IP payload.
pub fn fix_l4<C: Coalesce>(f: &mut [u8]) {
    let at = L4 + C::CSUM;
    f[at..at + 2].copy_from_slice(&[0, 0]);
    let c = match l4_checksum(f, C::PROTO, L4..ip_end(f)) {
        0 if C::ZERO_MEANS_NONE => 0xffff,
        c => c,
    };
    f[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// Adds `n` (wrapping) to the 16-bit big-endian field `b`.
pub fn add16(b: &mut [u8], n: i16) {
    let x = u16::from_be_bytes([b[0], b[1]]).wrapping_add_signed(n);
    b.copy_from_slice(&x.to_be_bytes());
}

/// The 16-bit big-endian field at `at` of `b`.
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The IP-level breakages of the coalescable frame `f` (20-byte IP header,
/// no padding) that must make it bypass, `other` being a protocol number
/// other than its own. Checksums are right again but the L4 one where the
/// IP length changes.
pub fn ip_breakages(f: &[u8], other: u8) -> Vec<(&'static str, Vec<u8>)> {
    let ip = |g: fn(&mut [u8])| changed(f, |v| edit_ip(v, g));
    vec![
        // A 4-byte NOP row after the header (not in the L4 sum).
        (
            "ip options",
            changed(f, |v| add_ip_options(v, [1, 1, 1, 0])),
        ),
        ("mf", ip(|ip| ip[6] |= 0x20)),
        ("offset", ip(|ip| ip[7] = 1)),
        ("reserved", ip(|ip| ip[6] |= 0x80)),
        (
            "vlan",
            changed(f, |v| v[12..14].copy_from_slice(&[0x81, 0])),
        ),
        (
            "other protocol",
            changed(f, |v| edit_ip(v, |ip| ip[9] = other)),
        ),
        ("ipv6 version", ip(|ip| ip[0] = 0x65)),
        ("short total", ip(|ip| add16(&mut ip[2..4], -1))),
        ("truncated", f[..f.len() - 1].to_vec()),
        ("empty", Vec::new()),
    ]
}

/// The frame `f` of a flow with another TTL, TOS or source MAC, or with DF
/// flipped: none of them continues the flow (all checksums stay right:
/// none of these is in the L4 sum).
pub fn header_variants(f: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let ip = |g: fn(&mut [u8])| changed(f, |v| edit_ip(v, g));
    vec![
        ("ttl", ip(|ip| ip[8] = ip[8].wrapping_sub(1))),
        ("tos", ip(|ip| ip[1] ^= 3)),
        ("mac", changed(f, |v| v[11] ^= 8)),
        ("df", ip(|ip| ip[6] ^= 0x40)),
    ]
}

/// Each of `cases` gets the answer `want` from a coalescer holding
/// `first`, which it then still holds alone, and `second`, which continues
/// `first`, merges after it. A case that must bypass also bypasses an empty
/// coalescer, leaving it empty.
pub fn assert_answers<C: Coalesce>(
    want: Push,
    first: &[u8],
    second: &[u8],
    cases: impl IntoIterator<Item = (&'static str, Vec<u8>)>,
) {
    for (what, f) in cases {
        let mut c = C::new(CAPACITY);
        if want == Push::Bypass {
            assert_eq!(c.push(&f), Push::Bypass, "{what} alone");
            assert_eq!(c.merged(), 0, "{what} alone");
        }
        assert_eq!(c.push(first), Push::Merged, "{what}");
        assert_eq!(c.push(&f), want, "{what}");
        assert_eq!(c.merged(), 1, "{what}");
        assert_eq!(c.push(second), Push::Merged, "{what}");
    }
}

/// Pushes the first `k` of `frames` into `c` (empty), which merges them, and
/// the next, which it flushes (if there is one); checks that the
/// super-frame segments back into those `k`; returns its length.
pub fn fill<C: Coalesce>(c: &mut C, frames: &[Vec<u8>], k: usize) -> usize {
    for (i, f) in frames[..k].iter().enumerate() {
        assert_eq!(c.push(f), Push::Merged, "frame {i}");
    }
    if let Some(f) = frames.get(k) {
        assert_eq!(c.push(f), Push::Flush, "frame {k}");
    }
    assert_eq!(c.merged(), k);
    let (hdr, sf) = c.take().unwrap();
    assert_eq!(resegment::<C>(&hdr, sf), frames[..k]);
    sf.len()
}

/// `frames` (a flow) all merge, and the super-frame keeps
/// the first frame's headers but lengths and checksums, carries all the
/// payloads and segments back into exactly `frames`; returns it.
pub fn assert_coalesces<C: Coalesce>(frames: &[Vec<u8>]) -> (vnet::Header, Vec<u8>) {
    let mut c = C::new(CAPACITY);
    assert!(c.take().is_none() && c.merged() == 0);
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(c.push(f), Push::Merged, "frame {i}");
        assert_eq!(c.merged(), i + 1);
    }
    let (hdr, sf) = c.take().map(|(h, b)| (h, b.to_vec())).unwrap();
    assert!(c.merged() == 0 && c.take().is_none());
    let first = &frames[0];
    assert_eq!(sf[..ETH_LEN + 2], first[..ETH_LEN + 2]);
    assert_eq!(
        sf[ETH_LEN + 4..ETH_LEN + 10],
        first[ETH_LEN + 4..ETH_LEN + 10]
    );
    assert_eq!(sf[L4..L4 + 4], first[L4..L4 + 4]);
    let payload: Vec<u8> = frames
        .iter()
        .flat_map(|f| payload_of::<C>(f).to_vec())
        .collect();
    assert_eq!(sf[usize::from(hdr.hdr_len)..], payload[..]);
    let segs = resegment::<C>(&hdr, &sf);
    assert_eq!(segs.len(), frames.len());
    for (i, (s, f)) in segs.iter().zip(frames).enumerate() {
        assert_eq!(s, f, "segment {i}");
    }
    (hdr, sf)
}

/// The capacity bounds a super-frame: one for the first of `frames` (a
/// flow of equal payloads) and two more payloads takes three and flushes
/// the fourth, and one too small for a frame never takes it.
pub fn assert_capacity_bounds<C: Coalesce>(frames: &[Vec<u8>]) {
    let payload = payload_of::<C>(&frames[0]).len();
    let mut c = C::new(frames[0].len() + 2 * payload);
    fill(&mut c, &frames[..4], 3);
    let mut c = C::new(frames[0].len() - 1);
    assert_eq!(c.push(&frames[0]), Push::Bypass);
    assert_eq!(c.merged(), 0);
}

/// A lone frame `f` comes back unchanged with a plain header; Ethernet
/// padding (`pad` bytes) is kept for a lone frame, and dropped once the
/// padded first of `two` (a flow) is merged with the second.
pub fn assert_single_unchanged<C: Coalesce>(f: &[u8], two: &[Vec<u8>], pad: usize) {
    let mut c = C::new(CAPACITY);
    assert_eq!(c.push(f), Push::Merged);
    assert_eq!(c.merged(), 1);
    assert_eq!(c.take(), Some((vnet::Header::default(), f)));
    assert!(c.take().is_none());

    let padded = changed(&two[0], |v| v.resize(v.len() + pad, 0xee));
    assert_eq!(c.push(&padded), Push::Merged);
    let (hdr, b) = c.take().unwrap();
    assert!(hdr.is_plain());
    assert_eq!(b, &padded[..]);
    assert_eq!(c.push(&padded), Push::Merged);
    assert_eq!(c.push(&two[1]), Push::Merged);
    let (hdr, sf) = c.take().unwrap();
    assert_eq!(resegment::<C>(&hdr, sf), two);
}

/// Checks a super-frame and its vnet header as the kernel will take them,
/// completes its checksum and segments it back with the software GSO;
/// returns the segments.
pub fn resegment<C: Coalesce>(hdr: &vnet::Header, sf: &[u8]) -> Vec<Vec<u8>> {
    let ip = Ipv4HeaderSlice::from_slice(&sf[ETH_LEN..]).unwrap();
    assert_eq!(usize::from(ip.total_len()), sf.len() - ETH_LEN);
    assert_eq!(checksum::checksum(ip.slice()), 0);
    C::check_l4(sf);
    assert_eq!(hdr.flags, vnet::F_NEEDS_CSUM);
    assert_eq!(hdr.gso_type, C::GSO_TYPE);
    assert!(hdr.is_gso() && !hdr.is_plain());
    assert_eq!(usize::from(hdr.hdr_len), L4 + C::l4_len(sf));
    assert_eq!((hdr.csum_start, hdr.csum_offset), (34, C::CSUM as u16));
    let l4_len = (sf.len() - L4) as u16;
    let pseudo = checksum::pseudo_header(ip.source_addr(), ip.destination_addr(), C::PROTO, l4_len);
    assert_eq!(be16(sf, L4 + C::CSUM), checksum::fold(pseudo));
    // More than one segment's worth, or the kernel would not segment it.
    assert!(sf.len() - usize::from(hdr.hdr_len) > usize::from(hdr.gso_size));

    let mut full = sf.to_vec();
    let (start, offset) = (usize::from(hdr.csum_start), usize::from(hdr.csum_offset));
    gso::complete_checksum(&mut full, start, offset).unwrap();
    assert_eq!(be16(&full, L4 + C::CSUM), C::etherparse_checksum(&full));

    let mut out = vec![0; 2 * full.len() + 64 * 1024];
    let segs = C::segment(&full, usize::from(hdr.gso_size), &mut out).unwrap();
    (0..segs.count)
        .map(|i| out[segs.datagram(i).unwrap()].to_vec())
        .collect()
}

/// Takes what `c` holds and checks it against `merged`, the frames
/// reported merged into it: one comes back unchanged; several come back
/// with their payloads in a super-frame that segments back into as many
/// (see [`Coalesce::check_segment`]). Clears `merged`; 1 if there were
/// several.
fn take_merged<C: Coalesce>(c: &mut C, merged: &mut Vec<&[u8]>) -> Result<usize, TestCaseError> {
    let got = c.take().map(|(h, b)| (h, b.to_vec()));
    let n = merged.len();
    match (n, got) {
        (0, None) => {}
        (1, Some((h, b))) => {
            prop_assert!(h.is_plain());
            prop_assert_eq!(&b[..], merged[0]);
        }
        (n, Some((h, b))) if n > 1 => {
            let want: Vec<u8> = merged
                .iter()
                .flat_map(|f| payload_of::<C>(f).to_vec())
                .collect();
            prop_assert_eq!(&b[usize::from(h.hdr_len)..], &want[..]);
            let segs = resegment::<C>(&h, &b);
            prop_assert_eq!(segs.len(), n);
            for (s, f) in segs.iter().zip(merged.iter()) {
                prop_assert_eq!(payload_of::<C>(s), payload_of::<C>(f));
                C::check_segment(s, f)?;
            }
        }
        (n, got) => return Err(TestCaseError::fail(format!("{n} merged, took {got:?}"))),
    }
    merged.clear();
    Ok(usize::from(n > 1))
}

/// Pushes `frames` as the switch does, and checks every super-frame against
/// the frames reported merged into it; returns the number of super-frames
/// of several frames.
pub fn drive<C: Coalesce>(c: &mut C, frames: &[Vec<u8>]) -> Result<usize, TestCaseError> {
    let mut merged: Vec<&[u8]> = Vec::new();
    let mut joined = 0;
    for f in frames {
        match c.push(f) {
            Push::Merged => merged.push(f),
            Push::Bypass => joined += take_merged(c, &mut merged)?,
            Push::Flush => {
                joined += take_merged(c, &mut merged)?;
                prop_assert_eq!(c.push(f), Push::Merged);
                merged.push(f);
            }
        }
        prop_assert_eq!(c.merged(), merged.len());
    }
    Ok(joined + take_merged(c, &mut merged)?)
}

/// The frames of `garbage_never_panics`.
pub fn garbage_frames() -> impl Strategy<Value = Vec<Vec<u8>>> {
    proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 0..8)
}

/// `garbage_never_panics`: random `frames`, made to look like IPv4 of the
/// protocol (and then changed by `dress`) if `ipv4` and long enough,
/// driven into a coalescer of `capacity` and into a large one.
pub fn garbage<C: Coalesce>(
    mut frames: Vec<Vec<u8>>,
    ipv4: bool,
    capacity: usize,
    dress: fn(&mut [u8]),
) -> Result<(), TestCaseError> {
    for f in &mut frames {
        if ipv4 && f.len() >= L4 + C::L4_MIN {
            f[12..14].copy_from_slice(&[8, 0]);
            f[ETH_LEN] = 0x45;
            edit_ip(f, |ip| ip[9] = C::PROTO);
            dress(f);
        }
    }
    drive(&mut C::new(capacity), &frames)?;
    drive(&mut C::new(CAPACITY), &frames)?;
    Ok(())
}

/// Applies the mutations of a `mutated_…` property test to `frames` (a
/// flow): each XORs byte `at` of frame `i` with `x` and, if `fix`, makes
/// the checksums right again where the headers still allow it; then swaps
/// frames.
pub fn mutate<C: Coalesce>(
    frames: &mut [Vec<u8>],
    mutations: &[(usize, usize, u8, bool)],
    swaps: &[(usize, usize)],
) {
    let n = frames.len();
    for &(i, at, x, fix) in mutations {
        let f = &mut frames[i % n];
        let at = at % f.len();
        f[at] ^= x;
        if fix && f.len() >= L4 + C::L4_MIN && f[ETH_LEN] == 0x45 {
            fix_ip(&mut f[ETH_LEN..L4]);
            let total = ip_end(f) - ETH_LEN;
            if (IP_LEN + C::CSUM + 2..=f.len() - ETH_LEN).contains(&total) {
                fix_l4::<C>(f);
            }
        }
    }
    for &(a, b) in swaps {
        frames.swap(a % n, b % n);
    }
}
