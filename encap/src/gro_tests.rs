use super::*;
use crate::gso;
use etherparse::{Ipv4HeaderSlice, PacketBuilder, TcpHeaderSlice, TcpOptionElement};
use proptest::prelude::*;

const CAPACITY: usize = 65_536 + 128;
const MSS: usize = 1398;
/// Chosen so that sequence numbers and identifications wrap.
const SEQ: u32 = 0xffff_8000;
const IDENT: u16 = 0xfff0;

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// The fields a test varies in a segment.
#[derive(Debug, Clone, Copy)]
struct Spec {
    sport: u16,
    ack: u32,
    window: u16,
    tsval: u32,
    ttl: u8,
    tos: u8,
    src_mac: [u8; 6],
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
    ttl: 63,
    tos: 0,
    src_mac: [2, 0, 0, 0, 0, 1],
    dont_frag: true,
    ident: IDENT,
    psh: false,
    fin: false,
    syn: false,
    rst: false,
    urg: false,
};

/// Rewrites an IPv4 header checksum.
fn fix_ip(ip: &mut [u8]) {
    ip[10..12].copy_from_slice(&[0, 0]);
    let hl = usize::from(ip[0] & 0xf) * 4;
    let c = checksum::checksum(&ip[..hl]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Ethernet + IPv4 + TCP with timestamps, ACK, the flags of `s`,
/// sequence number `seq` and `payload`, all checksums right.
fn frame(s: &Spec, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(s.src_mac, [2, 0, 0, 0, 0, 2])
        .ipv4([10, 244, 1, 3], [10, 244, 2, 7], s.ttl)
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
    // The IP header is not part of the TCP checksum: patch it freely.
    let ip = &mut v[ETH_LEN..L4];
    ip[1] = s.tos;
    ip[4..6].copy_from_slice(&s.ident.to_be_bytes());
    ip[6] = if s.dont_frag { 0x40 } else { 0 };
    fix_ip(ip);
    v
}

/// `lens.len()` consecutive segments of one byte stream, identifications
/// counting up, PSH on the last one if `psh`.
fn stream(s: &Spec, lens: &[usize], psh: bool) -> Vec<Vec<u8>> {
    let data = pattern(lens.iter().sum());
    let (mut at, mut v) = (0, Vec::new());
    for (i, &len) in lens.iter().enumerate() {
        let spec = Spec {
            ident: s.ident.wrapping_add(i as u16),
            psh: psh && i + 1 == lens.len(),
            ..*s
        };
        v.push(frame(
            &spec,
            SEQ.wrapping_add(at as u32),
            &data[at..at + len],
        ));
        at += len;
    }
    v
}

/// The TCP payload of a coalescable frame.
fn payload_of(f: &[u8]) -> &[u8] {
    let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
    let tcp_hl = usize::from(f[L4 + 12] >> 4) * 4;
    &f[L4 + tcp_hl..ETH_LEN + total]
}

/// Checks a super-frame and its vnet header, completes its checksum and
/// segments it back; returns the segments.
fn resegment(hdr: &vnet::Header, sf: &[u8]) -> Vec<Vec<u8>> {
    let ip = Ipv4HeaderSlice::from_slice(&sf[ETH_LEN..]).unwrap();
    assert_eq!(usize::from(ip.total_len()), sf.len() - ETH_LEN);
    assert_eq!(checksum::checksum(ip.slice()), 0);
    let tcp = TcpHeaderSlice::from_slice(&sf[L4..]).unwrap();
    let tcp_hl = tcp.slice().len();
    assert_eq!(hdr.flags, vnet::F_NEEDS_CSUM);
    assert_eq!(hdr.gso_type, vnet::GSO_TCPV4);
    assert!(hdr.is_gso() && !hdr.is_plain());
    assert_eq!(usize::from(hdr.hdr_len), L4 + tcp_hl);
    assert_eq!((hdr.csum_start, hdr.csum_offset), (34, 16));
    let pseudo = checksum::pseudo_header(
        ip.source_addr(),
        ip.destination_addr(),
        6,
        (sf.len() - L4) as u16,
    );
    assert_eq!(tcp.checksum(), checksum::fold(pseudo));

    let mut full = sf.to_vec();
    gso::complete_checksum(
        &mut full,
        usize::from(hdr.csum_start),
        usize::from(hdr.csum_offset),
    )
    .unwrap();
    let tcp = TcpHeaderSlice::from_slice(&full[L4..]).unwrap();
    let want = tcp.calc_checksum_ipv4(&ip, &full[L4 + tcp_hl..]).unwrap();
    assert_eq!(tcp.checksum(), want);

    let mss = usize::from(hdr.gso_size);
    let mut out = vec![0; 2 * full.len() + 64 * 1024];
    let segs = gso::segment_tcp4(&full, ETH_LEN, mss, &mut out).unwrap();
    (0..segs.count)
        .map(|i| out[segs.datagram(i).unwrap()].to_vec())
        .collect()
}

#[test]
fn coalesces_a_stream_and_segments_back() {
    let mut lens = vec![MSS; 30];
    lens.push(500);
    let frames = stream(&BASE, &lens, true);
    let mut c = Coalescer::new(CAPACITY);
    assert!(c.is_empty());
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(c.push(f), Push::Merged, "frame {i}");
        assert_eq!(c.segments(), i + 1);
    }
    let (hdr, sf) = c.take().unwrap();
    let sf = sf.to_vec();
    assert!(c.is_empty() && c.segments() == 0 && c.take().is_none());
    assert_eq!(usize::from(hdr.gso_size), MSS);
    assert_eq!(usize::from(hdr.hdr_len), L4 + 32);
    assert_eq!(sf.len(), L4 + 32 + 30 * MSS + 500);
    let tcp = TcpHeaderSlice::from_slice(&sf[L4..]).unwrap();
    assert!(tcp.psh() && tcp.ack() && !tcp.fin());
    assert_eq!(tcp.sequence_number(), SEQ);
    // Headers of the first frame but lengths and checksums.
    assert_eq!(sf[..ETH_LEN + 2], frames[0][..ETH_LEN + 2]);
    assert_eq!(
        sf[ETH_LEN + 4..ETH_LEN + 10],
        frames[0][ETH_LEN + 4..ETH_LEN + 10]
    );
    let payload: Vec<u8> = frames.iter().flat_map(|f| payload_of(f).to_vec()).collect();
    assert_eq!(sf[L4 + 32..], payload[..]);

    // Segmentation gives back exactly the frames that went in.
    let segs = resegment(&hdr, &sf);
    assert_eq!(segs.len(), frames.len());
    for (i, (s, f)) in segs.iter().zip(&frames).enumerate() {
        assert_eq!(s, f, "segment {i}");
    }
}

#[test]
fn splits_at_the_64k_limit() {
    // 46 segments are 64 360 bytes of IP; a 47th would exceed 65 535.
    // A capacity beyond the largest frame: the IP length is the limit.
    let frames = stream(&BASE, &[MSS; 50], false);
    let mut c = Coalescer::new(80_000);
    for f in &frames[..46] {
        assert_eq!(c.push(f), Push::Merged);
    }
    assert_eq!(c.push(&frames[46]), Push::Flush);
    assert_eq!(c.segments(), 46);
    let (hdr, sf) = c.take().unwrap();
    assert_eq!(sf.len(), ETH_LEN + 20 + 32 + 46 * MSS);
    assert_eq!(resegment(&hdr, sf), frames[..46]);
    for f in &frames[46..] {
        assert_eq!(c.push(f), Push::Merged);
    }
    let (hdr, sf) = c.take().unwrap();
    assert_eq!(resegment(&hdr, sf), frames[46..]);

    // Exactly 65 535 bytes of IP: 52 + 11 · 5953.
    let big = stream(&BASE, &[5953; 12], false);
    for f in &big[..11] {
        assert_eq!(c.push(f), Push::Merged);
    }
    assert_eq!(c.push(&big[11]), Push::Flush);
    let (hdr, sf) = c.take().unwrap();
    assert_eq!(sf.len(), ETH_LEN + 65_535);
    assert_eq!(resegment(&hdr, sf), big[..11]);

    // The capacity bounds a super-frame too.
    let mut c = Coalescer::new(L4 + 32 + 3 * MSS);
    for f in &frames[..3] {
        assert_eq!(c.push(f), Push::Merged);
    }
    assert_eq!(c.push(&frames[3]), Push::Flush);
    // A frame larger than the capacity can never be held.
    let mut c = Coalescer::new(frames[0].len() - 1);
    assert_eq!(c.push(&frames[0]), Push::Bypass);
    assert!(c.is_empty());
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
        frame(
            &Spec {
                ident: IDENT + 1,
                ..s
            },
            SEQ.wrapping_add(MSS as u32),
            payload_of(&frames[1]),
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
        let mut c = Coalescer::new(CAPACITY);
        assert_eq!(c.push(&frames[0]), Push::Merged);
        assert_eq!(c.push(&second(s)), Push::Flush, "{what}");
        assert_eq!(c.push(&frames[1]), Push::Merged, "{what}");
    }
    // Options of another length: none (and a 1-byte payload, shorter
    // than the first segment's headers), or the same ones and 4 NOPs.
    use TcpOptionElement::{Noop, Timestamp};
    let ts = Timestamp(BASE.tsval, 0x9abc_def0);
    let options: [&[TcpOptionElement]; 2] = [&[], &[Noop, Noop, ts, Noop, Noop, Noop, Noop]];
    for (opts, len) in options.into_iter().zip([1, MSS]) {
        let mut c = Coalescer::new(CAPACITY);
        assert_eq!(c.push(&frames[0]), Push::Merged);
        let mut v = Vec::new();
        PacketBuilder::ethernet2(BASE.src_mac, [2, 0, 0, 0, 0, 2])
            .ipv4([10, 244, 1, 3], [10, 244, 2, 7], BASE.ttl)
            .tcp(BASE.sport, 5201, SEQ.wrapping_add(MSS as u32), BASE.window)
            .options(opts)
            .unwrap()
            .ack(BASE.ack)
            .write(&mut v, &pattern(len))
            .unwrap();
        v[ETH_LEN + 4..ETH_LEN + 6].copy_from_slice(&(IDENT + 1).to_be_bytes());
        fix_ip(&mut v[ETH_LEN..L4]);
        assert_eq!(c.push(&v), Push::Flush, "{} option bytes", v[L4 + 12] >> 4);
    }
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
    let mut same_id = frames[1].clone();
    same_id[18..20].copy_from_slice(&IDENT.to_be_bytes());
    fix_ip(&mut same_id[ETH_LEN..L4]);
    assert_eq!(c.push(&same_id), Push::Flush);
    assert_eq!(c.push(&frames[1]), Push::Merged);
    assert_eq!(c.push(&frames[2]), Push::Merged);
    let (hdr, sf) = c.take().unwrap();
    assert_eq!(resegment(&hdr, sf), frames);
    // With DF any identification will do (Linux sends them all 0).
    let frames = stream(&BASE, &[MSS; 2], false);
    assert_eq!(c.push(&frames[0]), Push::Merged);
    assert_eq!(c.push(&same_id_df(&frames[1])), Push::Merged);
}

fn same_id_df(f: &[u8]) -> Vec<u8> {
    let mut f = f.to_vec();
    f[18..20].copy_from_slice(&IDENT.to_be_bytes());
    fix_ip(&mut f[ETH_LEN..L4]);
    f
}

#[test]
fn unusual_flags_bypass() {
    let frames = stream(&BASE, &[MSS; 2], false);
    let next = SEQ.wrapping_add(MSS as u32);
    let p = payload_of(&frames[1]);
    let cases = [
        ("fin", frame(&Spec { fin: true, ..BASE }, next, p)),
        ("syn", frame(&Spec { syn: true, ..BASE }, next, p)),
        ("rst", frame(&Spec { rst: true, ..BASE }, next, p)),
        ("urg", frame(&Spec { urg: true, ..BASE }, next, p)),
        (
            "fin psh",
            frame(
                &Spec {
                    fin: true,
                    psh: true,
                    ..BASE
                },
                next,
                p,
            ),
        ),
        ("pure ack", frame(&BASE, next, &[])),
    ];
    for (what, f) in cases {
        let mut c = Coalescer::new(CAPACITY);
        assert_eq!(c.push(&f), Push::Bypass, "{what} alone");
        assert!(c.is_empty());
        assert_eq!(c.push(&frames[0]), Push::Merged);
        assert_eq!(c.push(&f), Push::Bypass, "{what}");
        assert_eq!(c.segments(), 1);
        assert_eq!(c.push(&frames[1]), Push::Merged);
    }
    // ECE and CWR, set by hand with the checksum fixed.
    for bit in [0x40u8, 0x80] {
        let mut f = frames[1].clone();
        f[L4 + 13] |= bit;
        fix_tcp(&mut f);
        let mut c = Coalescer::new(CAPACITY);
        assert_eq!(c.push(&frames[0]), Push::Merged);
        assert_eq!(c.push(&f), Push::Bypass, "{bit:#x}");
    }
    // No ACK at all.
    let mut f = frames[1].clone();
    f[L4 + 13] = 0;
    fix_tcp(&mut f);
    assert_eq!(Coalescer::new(CAPACITY).push(&f), Push::Bypass);
}

/// Recomputes the TCP checksum of a frame with a 20-byte IP header.
fn fix_tcp(f: &mut [u8]) {
    let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
    let end = ETH_LEN + total;
    let pseudo = checksum::pseudo_header(
        Ipv4Addr::new(f[26], f[27], f[28], f[29]),
        Ipv4Addr::new(f[30], f[31], f[32], f[33]),
        6,
        (end - L4) as u16,
    );
    f[L4 + 16..L4 + 18].copy_from_slice(&[0, 0]);
    let c = !checksum::fold(checksum::sum(pseudo, &f[L4..end]));
    f[L4 + 16..L4 + 18].copy_from_slice(&c.to_be_bytes());
}

#[test]
fn bad_checksums_bypass() {
    let frames = stream(&BASE, &[MSS; 2], false);
    let mut corrupt = frames[1].clone();
    corrupt[L4 + 32 + 700] ^= 0x10; // one payload bit
    let mut bad_field = frames[1].clone();
    bad_field[L4 + 17] ^= 1;
    let mut bad_ip = frames[1].clone();
    bad_ip[ETH_LEN + 11] ^= 1;
    for (what, f) in [("payload", corrupt), ("field", bad_field), ("ip", bad_ip)] {
        let mut c = Coalescer::new(CAPACITY);
        assert_eq!(c.push(&f), Push::Bypass, "{what} alone");
        assert_eq!(c.push(&frames[0]), Push::Merged);
        assert_eq!(c.push(&f), Push::Bypass, "{what}");
        assert_eq!(c.push(&frames[1]), Push::Merged);
    }
}

#[test]
fn nothing_follows_a_short_or_psh_segment() {
    let frames = stream(&BASE, &[MSS, 1000, MSS], false);
    let mut c = Coalescer::new(CAPACITY);
    assert_eq!(c.push(&frames[0]), Push::Merged);
    assert_eq!(c.push(&frames[1]), Push::Merged);
    assert_eq!(c.push(&frames[2]), Push::Flush);
    let (hdr, sf) = c.take().unwrap();
    assert_eq!(resegment(&hdr, sf), frames[..2]);

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
    assert_eq!(resegment(&hdr, sf), frames);
    assert_eq!(c.push(&frames[1]), Push::Merged); // PSH first: alone
    assert_eq!(c.push(&more), Push::Flush);
}

#[test]
fn a_single_frame_comes_back_unchanged() {
    let f = stream(&BASE, &[MSS], true).remove(0);
    let mut c = Coalescer::new(CAPACITY);
    assert_eq!(c.push(&f), Push::Merged);
    assert!(!c.is_empty());
    assert_eq!(c.take(), Some((vnet::Header::default(), &f[..])));
    assert!(c.take().is_none());

    // Ethernet padding is kept for a lone frame and dropped once merged.
    let frames = stream(&BASE, &[1, 1], false);
    let mut padded = frames[0].clone();
    padded.extend_from_slice(&[0xee; 5]);
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
fn what_is_not_plain_tcp_ipv4_bypasses() {
    let f = stream(&BASE, &[MSS], false).remove(0);
    let with = |g: &dyn Fn(&mut Vec<u8>)| {
        let mut v = f.clone();
        g(&mut v);
        v
    };
    let cases = [
        // IP options: a 4-byte NOP row after the header.
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
            "udp",
            with(&|v| {
                v[23] = 17;
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
            "short total",
            with(&|v| {
                v[17] = v[17].wrapping_sub(1);
                fix_ip(&mut v[ETH_LEN..L4])
            }),
        ),
        (
            "doff 4",
            with(&|v| {
                v[L4 + 12] = 0x40;
                fix_tcp(v)
            }),
        ),
        (
            // 60 bytes of TCP header in a 42-byte segment.
            "doff too big",
            {
                let mut v = stream(&BASE, &[10], false).remove(0);
                v[L4 + 12] = 0xf0;
                fix_tcp(&mut v);
                v
            },
        ),
        (
            "tcp reserved",
            with(&|v| {
                v[L4 + 12] |= 1;
                fix_tcp(v)
            }),
        ),
        ("truncated", f[..f.len() - 1].to_vec()),
        ("headers only", f[..L4 + 20].to_vec()),
        ("empty", Vec::new()),
    ];
    for (what, v) in cases {
        let mut c = Coalescer::new(CAPACITY);
        assert_eq!(c.push(&v), Push::Bypass, "{what}");
        assert!(c.is_empty(), "{what}");
    }
    // The control: the unchanged frame, and one whose checksums were
    // recomputed without change, merge.
    let mut c = Coalescer::new(CAPACITY);
    assert_eq!(c.push(&with(&|v| fix_tcp(v))), Push::Merged);
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

/// Pushes `frames` as the switch does, and checks every super-frame
/// against the frames reported merged into it.
fn drive(c: &mut Coalescer, frames: &[Vec<u8>]) -> Result<(), TestCaseError> {
    let mut merged: Vec<&[u8]> = Vec::new();
    let check = |c: &mut Coalescer, merged: &mut Vec<&[u8]>| {
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
                let want: Vec<u8> = merged.iter().flat_map(|f| payload_of(f).to_vec()).collect();
                prop_assert_eq!(&b[usize::from(h.hdr_len)..], &want[..]);
                let segs = resegment(&h, &b);
                prop_assert_eq!(segs.len(), n);
                for (s, f) in segs.iter().zip(merged.iter()) {
                    prop_assert_eq!(payload_of(s), payload_of(f));
                    prop_assert_eq!(&s[L4 + 4..L4 + 8], &f[L4 + 4..L4 + 8]);
                }
                merged.clear();
                Ok(())
            }
            (n, got) => Err(TestCaseError::fail(format!("{n} merged, took {got:?}"))),
        }
    };
    for f in frames {
        match c.push(f) {
            Push::Merged => merged.push(f),
            Push::Bypass => check(c, &mut merged)?,
            Push::Flush => {
                check(c, &mut merged)?;
                prop_assert_eq!(c.push(f), Push::Merged);
                merged.push(f);
            }
        }
        prop_assert_eq!(c.segments(), merged.len());
    }
    check(c, &mut merged)
}

proptest! {
    #[test]
    fn garbage_never_panics(
        frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 0..8),
        ipv4 in any::<bool>(),
        capacity in 0usize..200,
    ) {
        let mut frames = frames;
        for f in &mut frames {
            if ipv4 && f.len() >= L4 + 20 {
                f[12..14].copy_from_slice(&[8, 0]);
                f[ETH_LEN] = 0x45;
                f[ETH_LEN + 9] = 6;
                fix_ip(&mut f[ETH_LEN..L4]);
                f[L4 + 13] = 0x10;
            }
        }
        drive(&mut Coalescer::new(capacity), &frames)?;
        drive(&mut Coalescer::new(CAPACITY), &frames)?;
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
        let n = frames.len();
        for (i, at, x, fix) in mutations {
            let f = &mut frames[i % n];
            let at = at % f.len();
            f[at] ^= x;
            if fix && f.len() >= L4 + 20 && f[ETH_LEN] == 0x45 {
                fix_ip(&mut f[ETH_LEN..L4]);
                let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
                if (L4 - ETH_LEN + 18..=f.len() - ETH_LEN).contains(&total) {
                    fix_tcp(f);
                }
            }
        }
        for (a, b) in swaps {
            frames.swap(a % n, b % n);
        }
        drive(&mut Coalescer::new(capacity), &frames)?;
    }
}
