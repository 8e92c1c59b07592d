use super::*;
use crate::gso;
use core::net::Ipv4Addr;
use etherparse::{Ipv4HeaderSlice, PacketBuilder, UdpHeaderSlice};
use proptest::prelude::*;

const CAPACITY: usize = 65_536 + 128;
/// The benchmark's datagrams: 64 bytes of payload.
const SIZE: usize = 64;
/// Chosen so that identifications wrap.
const IDENT: u16 = 0xfff0;

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// The fields a test varies in a datagram.
#[derive(Debug, Clone, Copy)]
struct Spec {
    sport: u16,
    dport: u16,
    dst: [u8; 4],
    ttl: u8,
    tos: u8,
    src_mac: [u8; 6],
    dont_frag: bool,
    ident: u16,
}

const BASE: Spec = Spec {
    sport: 40000,
    dport: 5201,
    dst: [10, 244, 2, 7],
    ttl: 63,
    tos: 0,
    src_mac: [2, 0, 0, 0, 0, 1],
    dont_frag: true,
    ident: IDENT,
};

/// Rewrites an IPv4 header checksum.
fn fix_ip(ip: &mut [u8]) {
    ip[10..12].copy_from_slice(&[0, 0]);
    let hl = usize::from(ip[0] & 0xf) * 4;
    let c = checksum::checksum(&ip[..hl]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Recomputes the UDP checksum of a frame with a 20-byte IP header, over
/// the IP payload (0 sent as 0xffff).
fn fix_udp(f: &mut [u8]) {
    let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
    let end = ETH_LEN + total;
    let pseudo = checksum::pseudo_header(
        Ipv4Addr::new(f[26], f[27], f[28], f[29]),
        Ipv4Addr::new(f[30], f[31], f[32], f[33]),
        17,
        (end - L4) as u16,
    );
    f[L4 + 6..L4 + 8].copy_from_slice(&[0, 0]);
    let c = match !checksum::fold(checksum::sum(pseudo, &f[L4..end])) {
        0 => 0xffff,
        c => c,
    };
    f[L4 + 6..L4 + 8].copy_from_slice(&c.to_be_bytes());
}

/// Ethernet + IPv4 + UDP with `payload`, all checksums right.
fn frame(s: &Spec, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(s.src_mac, [2, 0, 0, 0, 0, 2])
        .ipv4([10, 244, 1, 3], s.dst, s.ttl)
        .udp(s.sport, s.dport)
        .write(&mut v, payload)
        .unwrap();
    // The IP header but addresses is not part of the UDP checksum.
    let ip = &mut v[ETH_LEN..L4];
    ip[1] = s.tos;
    ip[4..6].copy_from_slice(&s.ident.to_be_bytes());
    ip[6] = if s.dont_frag { 0x40 } else { 0 };
    fix_ip(ip);
    v
}

/// Consecutive datagrams of one flow with payloads of `lens`,
/// identifications counting up.
fn flow(s: &Spec, lens: &[usize]) -> Vec<Vec<u8>> {
    let data = pattern(lens.iter().sum());
    let (mut at, mut v) = (0, Vec::new());
    for (i, &len) in lens.iter().enumerate() {
        let spec = Spec {
            ident: s.ident.wrapping_add(i as u16),
            ..*s
        };
        v.push(frame(&spec, &data[at..at + len]));
        at += len;
    }
    v
}

/// The UDP payload of a coalescable frame.
fn payload_of(f: &[u8]) -> &[u8] {
    let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
    &f[HDR_LEN..ETH_LEN + total]
}

/// Checks a super-frame and its vnet header as the kernel will take them,
/// completes its checksum and segments it back with the software USO;
/// returns the datagrams.
fn resegment(hdr: &vnet::Header, sf: &[u8]) -> Vec<Vec<u8>> {
    let ip = Ipv4HeaderSlice::from_slice(&sf[ETH_LEN..]).unwrap();
    assert_eq!(usize::from(ip.total_len()), sf.len() - ETH_LEN);
    assert_eq!(checksum::checksum(ip.slice()), 0);
    let udp = UdpHeaderSlice::from_slice(&sf[L4..]).unwrap();
    assert_eq!(usize::from(udp.length()), sf.len() - L4);
    assert_eq!(hdr.flags, vnet::F_NEEDS_CSUM);
    assert_eq!(hdr.gso_type, vnet::GSO_UDP_L4);
    assert!(hdr.is_gso() && !hdr.is_plain());
    assert_eq!(usize::from(hdr.hdr_len), HDR_LEN);
    assert_eq!((hdr.csum_start, hdr.csum_offset), (34, 6));
    let pseudo = checksum::pseudo_header(
        ip.source_addr(),
        ip.destination_addr(),
        17,
        (sf.len() - L4) as u16,
    );
    assert_eq!(udp.checksum(), checksum::fold(pseudo));
    // More than one segment's worth, or the kernel would not segment it.
    assert!(sf.len() - HDR_LEN > usize::from(hdr.gso_size));

    let mut full = sf.to_vec();
    gso::complete_checksum(
        &mut full,
        usize::from(hdr.csum_start),
        usize::from(hdr.csum_offset),
    )
    .unwrap();
    let udp = UdpHeaderSlice::from_slice(&full[L4..]).unwrap();
    let want = udp
        .to_header()
        .calc_checksum_ipv4(&ip.to_header(), &full[HDR_LEN..])
        .unwrap();
    assert_eq!(udp.checksum(), want);

    let mss = usize::from(hdr.gso_size);
    let mut out = vec![0; 2 * full.len() + 64 * HDR_LEN];
    let segs = gso::segment_udp4(&full, ETH_LEN, mss, &mut out).unwrap();
    assert!(segs.count <= MAX_DATAGRAMS);
    (0..segs.count)
        .map(|i| out[segs.datagram(i).unwrap()].to_vec())
        .collect()
}

#[test]
fn coalesces_a_flow_and_segments_back() {
    let mut lens = vec![SIZE; 20];
    lens.push(30);
    let frames = flow(&BASE, &lens);
    let mut c = UdpCoalescer::new(CAPACITY);
    assert!(c.is_empty());
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(c.push(f), Push::Merged, "frame {i}");
        assert_eq!(c.datagrams(), i + 1);
    }
    let (hdr, sf) = c.take().unwrap();
    let sf = sf.to_vec();
    assert!(c.is_empty() && c.datagrams() == 0 && c.take().is_none());
    assert_eq!(usize::from(hdr.gso_size), SIZE);
    assert_eq!(sf.len(), HDR_LEN + 20 * SIZE + 30);
    // Headers of the first frame but lengths and checksums.
    assert_eq!(sf[..ETH_LEN + 2], frames[0][..ETH_LEN + 2]);
    assert_eq!(
        sf[ETH_LEN + 4..ETH_LEN + 10],
        frames[0][ETH_LEN + 4..ETH_LEN + 10]
    );
    assert_eq!(sf[L4..L4 + 4], frames[0][L4..L4 + 4]);
    let payload: Vec<u8> = frames.iter().flat_map(|f| payload_of(f).to_vec()).collect();
    assert_eq!(sf[HDR_LEN..], payload[..]);

    // Segmentation gives back exactly the frames that went in (the
    // identifications wrapped on the way).
    let segs = resegment(&hdr, &sf);
    assert_eq!(segs.len(), frames.len());
    for (i, (s, f)) in segs.iter().zip(&frames).enumerate() {
        assert_eq!(s, f, "datagram {i}");
    }
}

#[test]
fn stops_at_64_datagrams_and_at_64k() {
    let frames = flow(&BASE, &[SIZE; 70]);
    let mut c = UdpCoalescer::new(CAPACITY);
    for f in &frames[..MAX_DATAGRAMS] {
        assert_eq!(c.push(f), Push::Merged);
    }
    assert_eq!(c.push(&frames[MAX_DATAGRAMS]), Push::Flush);
    let (hdr, sf) = c.take().unwrap();
    assert_eq!(resegment(&hdr, sf), frames[..MAX_DATAGRAMS]);
    for f in &frames[MAX_DATAGRAMS..] {
        assert_eq!(c.push(f), Push::Merged);
    }
    let (hdr, sf) = c.take().unwrap();
    assert_eq!(resegment(&hdr, sf), frames[MAX_DATAGRAMS..]);

    // 1472-byte payloads: 44 are 64 796 bytes of IP, a 45th would exceed
    // 65 535. A capacity beyond the largest frame: the IP length is the limit.
    let big = flow(&BASE, &[1472; 46]);
    let mut c = UdpCoalescer::new(80_000);
    for f in &big[..44] {
        assert_eq!(c.push(f), Push::Merged);
    }
    assert_eq!(c.push(&big[44]), Push::Flush);
    let (hdr, sf) = c.take().unwrap();
    assert_eq!(sf.len(), ETH_LEN + 28 + 44 * 1472);
    assert_eq!(resegment(&hdr, sf), big[..44]);
    // Exactly 65 535 bytes of IP: 28 + 13 · 5039.
    let exact = flow(&BASE, &[5039; 14]);
    for f in &exact[..13] {
        assert_eq!(c.push(f), Push::Merged);
    }
    assert_eq!(c.push(&exact[13]), Push::Flush);
    let (hdr, sf) = c.take().unwrap();
    assert_eq!(sf.len(), ETH_LEN + 65_535);
    assert_eq!(resegment(&hdr, sf), exact[..13]);

    // The capacity bounds a super-frame too.
    let mut c = UdpCoalescer::new(HDR_LEN + 3 * SIZE);
    for f in &frames[..3] {
        assert_eq!(c.push(f), Push::Merged);
    }
    assert_eq!(c.push(&frames[3]), Push::Flush);
    // A frame larger than the capacity can never be held.
    let mut c = UdpCoalescer::new(frames[0].len() - 1);
    assert_eq!(c.push(&frames[0]), Push::Bypass);
    assert!(c.is_empty());
}

#[test]
fn identifications_must_count_up() {
    // With DF or without: segmentation numbers the datagrams id, id + 1, …
    for dont_frag in [true, false] {
        let s = Spec { dont_frag, ..BASE };
        let frames = flow(&s, &[SIZE; 4]);
        let mut c = UdpCoalescer::new(CAPACITY);
        assert_eq!(c.push(&frames[0]), Push::Merged);
        assert_eq!(c.push(&frames[2]), Push::Flush, "gap");
        assert_eq!(c.push(&frames[0]), Push::Flush, "repeat");
        let mut same_id = frames[1].clone();
        same_id[18..20].copy_from_slice(&IDENT.to_be_bytes());
        fix_ip(&mut same_id[ETH_LEN..L4]);
        assert_eq!(c.push(&same_id), Push::Flush, "same id");
        assert_eq!(c.push(&frames[1]), Push::Merged);
        assert_eq!(c.push(&frames[2]), Push::Merged);
        assert_eq!(c.push(&frames[3]), Push::Merged);
        let (hdr, sf) = c.take().unwrap();
        assert_eq!(resegment(&hdr, sf), frames);
    }
}

#[test]
fn different_headers_flush() {
    let frames = flow(&BASE, &[SIZE; 2]);
    let second = |s: Spec| {
        frame(
            &Spec {
                ident: IDENT + 1,
                ..s
            },
            payload_of(&frames[1]),
        )
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
        ("ttl", Spec { ttl: 62, ..BASE }),
        ("tos", Spec { tos: 3, ..BASE }),
        (
            "mac",
            Spec {
                src_mac: [2, 0, 0, 0, 0, 9],
                ..BASE
            },
        ),
        (
            "df",
            Spec {
                dont_frag: false,
                ..BASE
            },
        ),
    ];
    for (what, s) in variants {
        let mut c = UdpCoalescer::new(CAPACITY);
        assert_eq!(c.push(&frames[0]), Push::Merged);
        assert_eq!(c.push(&second(s)), Push::Flush, "{what}");
        assert_eq!(c.push(&frames[1]), Push::Merged, "{what}");
    }
}

#[test]
fn only_the_last_datagram_may_be_shorter() {
    let frames = flow(&BASE, &[SIZE, 40, SIZE]);
    let mut c = UdpCoalescer::new(CAPACITY);
    assert_eq!(c.push(&frames[0]), Push::Merged);
    assert_eq!(c.push(&frames[1]), Push::Merged);
    assert_eq!(c.push(&frames[2]), Push::Flush);
    let (hdr, sf) = c.take().unwrap();
    assert_eq!(resegment(&hdr, sf), frames[..2]);
    // Nor a shorter one after a shorter one.
    let frames = flow(&BASE, &[SIZE, 40, 40]);
    assert_eq!(c.push(&frames[0]), Push::Merged);
    assert_eq!(c.push(&frames[1]), Push::Merged);
    assert_eq!(c.push(&frames[2]), Push::Flush);
    let _ = c.take();
    // A datagram longer than the first one.
    let frames = flow(&BASE, &[40, SIZE]);
    assert_eq!(c.push(&frames[0]), Push::Merged);
    assert_eq!(c.push(&frames[1]), Push::Flush);
}

#[test]
fn bad_or_missing_checksums_bypass() {
    let frames = flow(&BASE, &[SIZE; 3]);
    let with = |g: &dyn Fn(&mut Vec<u8>)| {
        let mut v = frames[1].clone();
        g(&mut v);
        v
    };
    let cases = [
        ("payload", with(&|v| v[HDR_LEN + 10] ^= 0x10)),
        ("field", with(&|v| v[L4 + 7] ^= 1)),
        ("ip", with(&|v| v[ETH_LEN + 11] ^= 1)),
        // Sent without a checksum: valid, but the super-frame would give it one.
        (
            "zero",
            with(&|v| v[L4 + 6..L4 + 8].copy_from_slice(&[0, 0])),
        ),
    ];
    for (what, f) in cases {
        let mut c = UdpCoalescer::new(CAPACITY);
        assert_eq!(c.push(&f), Push::Bypass, "{what} alone");
        assert!(c.is_empty());
        assert_eq!(c.push(&frames[0]), Push::Merged);
        assert_eq!(c.push(&f), Push::Bypass, "{what}");
        assert_eq!(c.datagrams(), 1);
        assert_eq!(c.push(&frames[1]), Push::Merged);
    }
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
    assert_eq!(c.push(&frames[0]), Push::Merged);
    assert_eq!(c.push(&frames[1]), Push::Merged);
    let (hdr, sf) = c.take().unwrap();
    assert_eq!(resegment(&hdr, sf), frames);
    // That datagram sent without a checksum verifies too (0 and 0xffff are
    // the same sum): only the rule about 0 keeps it out.
    let mut none = frames[0].clone();
    none[L4 + 6..L4 + 8].copy_from_slice(&[0, 0]);
    assert_eq!(c.push(&none), Push::Bypass);
}

#[test]
fn a_single_frame_comes_back_unchanged() {
    let f = flow(&BASE, &[SIZE]).remove(0);
    let mut c = UdpCoalescer::new(CAPACITY);
    assert_eq!(c.push(&f), Push::Merged);
    assert!(!c.is_empty());
    assert_eq!(c.take(), Some((vnet::Header::default(), &f[..])));
    assert!(c.take().is_none());

    // Ethernet padding is kept for a lone frame and dropped once merged.
    let frames = flow(&BASE, &[1, 1]);
    let mut padded = frames[0].clone();
    padded.extend_from_slice(&[0xee; 17]);
    assert_eq!(c.push(&padded), Push::Merged);
    let (hdr, b) = c.take().unwrap();
    assert!(hdr.is_plain());
    assert_eq!(b, &padded[..]);
    assert_eq!(c.push(&padded), Push::Merged);
    assert_eq!(c.push(&frames[1]), Push::Merged);
    let (hdr, sf) = c.take().unwrap();
    assert_eq!(resegment(&hdr, sf), frames);
}

#[test]
fn what_is_not_plain_udp_ipv4_bypasses() {
    let f = flow(&BASE, &[SIZE]).remove(0);
    let with = |g: &dyn Fn(&mut Vec<u8>)| {
        let mut v = f.clone();
        g(&mut v);
        v
    };
    let cases = [
        // IP options: a 4-byte NOP row after the header (not in the UDP sum).
        (
            "ip options",
            with(&|v| {
                v.splice(L4..L4, [1, 1, 1, 0]);
                v[ETH_LEN] = 0x46;
                let total = u16::from_be_bytes([v[16], v[17]]) + 4;
                v[16..18].copy_from_slice(&total.to_be_bytes());
                fix_ip(&mut v[ETH_LEN..ETH_LEN + 24]);
            }),
        ),
        (
            "mf",
            with(&|v| {
                v[20] |= 0x20;
                fix_ip(&mut v[ETH_LEN..L4])
            }),
        ),
        (
            "offset",
            with(&|v| {
                v[21] = 1;
                fix_ip(&mut v[ETH_LEN..L4])
            }),
        ),
        (
            "reserved",
            with(&|v| {
                v[20] |= 0x80;
                fix_ip(&mut v[ETH_LEN..L4])
            }),
        ),
        ("vlan", with(&|v| v[12..14].copy_from_slice(&[0x81, 0]))),
        (
            "tcp",
            with(&|v| {
                v[23] = 6;
                fix_ip(&mut v[ETH_LEN..L4])
            }),
        ),
        (
            "ipv6 version",
            with(&|v| {
                v[14] = 0x65;
                fix_ip(&mut v[ETH_LEN..L4])
            }),
        ),
        (
            // The IP packet ends a byte early: the UDP length says more.
            "short total",
            with(&|v| {
                v[17] = v[17].wrapping_sub(1);
                fix_ip(&mut v[ETH_LEN..L4]);
                fix_udp(v);
            }),
        ),
        (
            "short udp length",
            with(&|v| {
                v[L4 + 5] -= 1;
                fix_udp(v);
            }),
        ),
        (
            "long udp length",
            with(&|v| {
                v[L4 + 5] += 1;
                fix_udp(v);
            }),
        ),
        (
            // Zero (EOL) options keep the first 20 bytes' checksum valid, and
            // the bytes after them are made to read as a valid UDP header
            // and checksum: only the IHL tells.
            "options read as udp",
            with(&|v| {
                v.splice(L4..L4, [0, 0, 0, 0]);
                v[ETH_LEN] = 0x46;
                let total = u16::from_be_bytes([v[16], v[17]]) + 4;
                v[16..18].copy_from_slice(&total.to_be_bytes());
                fix_ip(&mut v[ETH_LEN..ETH_LEN + 24]);
                v[L4 + 4..L4 + 6].copy_from_slice(&(total - 20).to_be_bytes());
                v[L4 + 10..L4 + 12].copy_from_slice(&[0, 0]);
                let end = ETH_LEN + usize::from(total);
                let pseudo = checksum::pseudo_header(
                    Ipv4Addr::new(v[26], v[27], v[28], v[29]),
                    Ipv4Addr::new(v[30], v[31], v[32], v[33]),
                    17,
                    total - 20,
                );
                let c = !checksum::fold(checksum::sum(pseudo, &v[L4..end]));
                v[L4 + 10..L4 + 12].copy_from_slice(&c.to_be_bytes());
            }),
        ),
        ("no payload", frame(&BASE, &[])),
        ("truncated", f[..f.len() - 1].to_vec()),
        ("headers only", f[..HDR_LEN].to_vec()),
        ("empty", Vec::new()),
    ];
    for (what, v) in cases {
        let mut c = UdpCoalescer::new(CAPACITY);
        assert_eq!(c.push(&v), Push::Bypass, "{what}");
        assert!(c.is_empty(), "{what}");
    }
    // The control: the unchanged frame, and one whose checksums were
    // recomputed without change, merge.
    let mut c = UdpCoalescer::new(CAPACITY);
    assert_eq!(
        c.push(&with(&|v| {
            fix_ip(&mut v[ETH_LEN..L4]);
            fix_udp(v)
        })),
        Push::Merged
    );
}

/// Pushes `frames` as the switch does, and checks that every super-frame
/// segments back into exactly the frames reported merged into it, byte for
/// byte; returns the number of super-frames of several datagrams.
fn drive(c: &mut UdpCoalescer, frames: &[Vec<u8>]) -> Result<usize, TestCaseError> {
    let mut merged: Vec<&[u8]> = Vec::new();
    let mut joined = 0;
    let check = |c: &mut UdpCoalescer, merged: &mut Vec<&[u8]>, joined: &mut usize| {
        let got = c.take().map(|(h, b)| (h, b.to_vec()));
        match (merged.len(), got) {
            (0, None) => Ok(()),
            (1, Some((h, b))) => {
                prop_assert!(h.is_plain());
                prop_assert_eq!(&b[..], merged[0]);
                merged.clear();
                Ok(())
            }
            (n, Some((h, b))) if n > 1 => {
                prop_assert!(n <= MAX_DATAGRAMS);
                let segs = resegment(&h, &b);
                prop_assert_eq!(segs.len(), n);
                for (s, f) in segs.iter().zip(merged.iter()) {
                    prop_assert_eq!(&s[..], *f);
                }
                merged.clear();
                *joined += 1;
                Ok(())
            }
            (n, got) => Err(TestCaseError::fail(format!("{n} merged, took {got:?}"))),
        }
    };
    for f in frames {
        match c.push(f) {
            Push::Merged => merged.push(f),
            Push::Bypass => check(c, &mut merged, &mut joined)?,
            Push::Flush => {
                check(c, &mut merged, &mut joined)?;
                prop_assert_eq!(c.push(f), Push::Merged);
                merged.push(f);
            }
        }
        prop_assert_eq!(c.datagrams(), merged.len());
    }
    check(c, &mut merged, &mut joined)?;
    Ok(joined)
}

/// The rules a datagram can break, one at a time, in
/// `a_broken_rule_never_ends_in_a_frame`.
const RULES: usize = 9;

/// Datagram `f` of a flow with rule `rule` broken (checksums made right
/// again where the rule is not about them); whether it must bypass (else
/// flush, the rule being about its place in the flow).
fn break_rule(f: &mut Vec<u8>, rule: usize) -> bool {
    match rule {
        0 => {
            f[HDR_LEN] ^= 0x01; // a payload bit: UDP checksum wrong
            true
        }
        1 => {
            f[L4 + 6..L4 + 8].copy_from_slice(&[0, 0]); // no checksum
            true
        }
        2 => {
            f[ETH_LEN + 10] ^= 0x80; // IP checksum wrong
            true
        }
        3 => {
            // IP options.
            f.splice(L4..L4, [1, 1, 1, 0]);
            f[ETH_LEN] = 0x46;
            let total = u16::from_be_bytes([f[16], f[17]]) + 4;
            f[16..18].copy_from_slice(&total.to_be_bytes());
            fix_ip(&mut f[ETH_LEN..ETH_LEN + 24]);
            true
        }
        4 | 5 => {
            // A fragment: MF, or an offset.
            if rule == 4 {
                f[20] |= 0x20;
            } else {
                f[21] |= 0x08;
            }
            fix_ip(&mut f[ETH_LEN..L4]);
            true
        }
        6 => {
            // An identification gap.
            let id = u16::from_be_bytes([f[18], f[19]]).wrapping_add(1);
            f[18..20].copy_from_slice(&id.to_be_bytes());
            fix_ip(&mut f[ETH_LEN..L4]);
            false
        }
        7 => {
            // One byte longer than the others.
            f.push(0x5a);
            let total = u16::from_be_bytes([f[16], f[17]]) + 1;
            f[16..18].copy_from_slice(&total.to_be_bytes());
            fix_ip(&mut f[ETH_LEN..L4]);
            let udp_len = u16::from_be_bytes([f[L4 + 4], f[L4 + 5]]) + 1;
            f[L4 + 4..L4 + 6].copy_from_slice(&udp_len.to_be_bytes());
            fix_udp(f);
            false
        }
        _ => {
            // Another TTL.
            f[22] = f[22].wrapping_sub(1);
            fix_ip(&mut f[ETH_LEN..L4]);
            false
        }
    }
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
        for (i, at, x, fix) in mutations {
            let f = &mut frames[i % n];
            let at = at % f.len();
            f[at] ^= x;
            if fix && f.len() >= HDR_LEN && f[ETH_LEN] == 0x45 {
                fix_ip(&mut f[ETH_LEN..L4]);
                let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
                if (L4 - ETH_LEN + UDP_LEN..=f.len() - ETH_LEN).contains(&total) {
                    fix_udp(f);
                }
            }
        }
        for (a, b) in swaps {
            frames.swap(a % n, b % n);
        }
        drive(&mut UdpCoalescer::new(capacity), &frames)?;
    }

    #[test]
    fn garbage_never_panics(
        frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 0..8),
        ipv4 in any::<bool>(),
        capacity in 0usize..200,
    ) {
        let mut frames = frames;
        for f in &mut frames {
            if ipv4 && f.len() > HDR_LEN {
                f[12..14].copy_from_slice(&[8, 0]);
                f[ETH_LEN] = 0x45;
                f[ETH_LEN + 9] = 17;
                fix_ip(&mut f[ETH_LEN..L4]);
            }
        }
        drive(&mut UdpCoalescer::new(capacity), &frames)?;
        drive(&mut UdpCoalescer::new(CAPACITY), &frames)?;
    }
}
