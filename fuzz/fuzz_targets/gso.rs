//! Software GSO (`encap::gso`) on arbitrary packets, prefixes and MSS.
//!
//! Input: `sel` (bit 0: UDP, else TCP; bit 1: fix the checksums first), the
//! tunnel prefix length `l3` (mod 64), the MSS (u16), then the packet.
//!
//! Checked: `segmented_len`, the copying and the header-only segmentation
//! agree (result or error); every segment is the prefix, then a valid IPv4
//! header (checksum, total length = the segment's) with the original's
//! fields but length, identification (original + i) and checksum, then an
//! L4 header with a valid checksum (TCP: sequence = original + i·mss); the
//! payloads in order are the original's; all segments but the last carry
//! exactly `mss` bytes. `complete_checksum` never panics and refuses an
//! odd offset.
#![no_main]

use encap::{checksum, gso};
use libfuzzer_sys::fuzz_target;
use twill_fuzz::{addr, be16, ip_header_valid, net, Reader};

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let sel = r.u8();
    let l3 = usize::from(r.u8() % 64);
    let mss = usize::from(r.u16());
    let udp = sel & 1 != 0;
    let mut pkt = r.bytes(usize::MAX).to_vec();
    if sel & 2 != 0 {
        if let Some(ip) = pkt.get_mut(l3..) {
            net::fix_ipv4_and_l4(ip);
        }
    }
    // complete_checksum at arbitrary places.
    {
        let mut p = pkt.clone();
        let (start, off) = (usize::from(sel >> 2), mss % 64);
        let res = gso::complete_checksum(&mut p, start, off);
        if off % 2 == 1 {
            assert!(res.is_err());
        }
    }

    BUFS.with(|b| {
        let (out, hdrs) = &mut *b.borrow_mut();
        check(&pkt, l3, mss, udp, out, hdrs);
    });
});

thread_local! {
    static BUFS: std::cell::RefCell<(Vec<u8>, Vec<u8>)> =
        std::cell::RefCell::new((vec![0; 1 << 20], vec![0; 1 << 20]));
}

fn check(pkt: &[u8], l3: usize, mss: usize, udp: bool, out: &mut [u8], hdrs: &mut [u8]) {
    let len = gso::segmented_len(pkt, l3, mss);
    let (full, hs) = if udp {
        (
            gso::segment_udp4(pkt, l3, mss, out),
            gso::segment_udp4_headers(pkt, l3, mss, hdrs),
        )
    } else {
        (
            gso::segment_tcp4(pkt, l3, mss, out),
            gso::segment_tcp4_headers(pkt, l3, mss, hdrs),
        )
    };
    let segs = match (full, hs) {
        (Ok(s), Ok(h)) => {
            assert_eq!(h.segs, s);
            assert_eq!(len, Ok(s));
            for i in 0..s.count {
                let (hd, p) = h.parts(i, hdrs, pkt).expect("parts");
                let seg = &out[s.datagram(i).expect("datagram")];
                assert_eq!(&seg[..hd.len()], hd);
                assert_eq!(&seg[hd.len()..], p);
            }
            s
        }
        (Err(encap::Error::NoRoom), _) | (_, Err(encap::Error::NoRoom)) => return,
        (Err(a), Err(b)) => {
            assert_eq!(a, b);
            // The protocol is the other one: then segmented_len succeeds.
            if a != encap::Error::Unsupported {
                assert_eq!(len, Err(a));
            }
            return;
        }
        (a, b) => panic!("copying {a:?} and header-only {b:?} disagree"),
    };

    // The segments, one by one.
    let ip = &pkt[l3..];
    let hl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(be16(ip, 2));
    let l4hl = if udp {
        8
    } else {
        usize::from(ip[hl + 12] >> 4) * 4
    };
    let payload = &ip[hl + l4hl..total];
    let mut joined = Vec::with_capacity(payload.len());
    for i in 0..segs.count {
        let seg = &out[segs.datagram(i).expect("datagram")];
        assert_eq!(&seg[..l3], &pkt[..l3], "prefix");
        let s = &seg[l3..];
        assert!(ip_header_valid(s), "segment {i}: IP header checksum");
        assert_eq!(usize::from(be16(s, 2)), s.len());
        assert_eq!(s[0], ip[0]);
        assert_eq!(s[1], ip[1]);
        assert_eq!(
            be16(s, 4),
            be16(ip, 4).wrapping_add(i as u16),
            "identification"
        );
        assert_eq!(s[6..10], ip[6..10]);
        assert_eq!(s[12..hl], ip[12..hl]);
        let l4 = &s[hl..];
        let pseudo =
            checksum::pseudo_header(addr(&s[12..16]), addr(&s[16..20]), s[9], l4.len() as u16);
        assert_eq!(
            checksum::fold(checksum::sum(pseudo, l4)),
            0xffff,
            "L4 checksum"
        );
        if udp {
            assert_eq!(usize::from(be16(l4, 4)), l4.len());
            assert_ne!(be16(l4, 6), 0);
        } else {
            let seq = |b: &[u8]| u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
            assert_eq!(seq(l4), seq(&ip[hl..]).wrapping_add((i * mss) as u32));
        }
        let p = &l4[l4hl..];
        if i + 1 < segs.count {
            assert_eq!(p.len(), mss);
        } else {
            assert!(p.len() <= mss);
        }
        joined.extend_from_slice(p);
    }
    assert_eq!(joined, payload);
}
