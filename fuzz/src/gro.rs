//! The coalescer targets' program and property (`gro_tcp`, `gro_udp`).
//!
//! Input: byte 0 picks the coalescer's capacity; then ops until the input
//! ends (at most 256 frames):
//! - `0`: a raw frame (`flags`, u16 length, bytes); flag bit 0: fix its
//!   IPv4 and L4 checksums first;
//! - `1`, `2`: the next frame of the last one's flow: `len` (u16, payload
//!   bytes mod 2048), `flags`, `seed`: the last frame's headers with the
//!   sequence number (TCP) or nothing advanced, identification + 1 (flag bit
//!   1 leaves it), PSH toggled (bit 0, TCP), lengths set, checksums fixed
//!   (bit 2 leaves them);
//! - `3`: end of a batch: take what is held.
//!
//! Frames are pushed as the switch does it (on `Flush` take and push again,
//! on `Bypass` take and write the frame as it is), and every take is checked
//! against the frames reported merged into it: a single one comes back
//! unchanged with a plain vnet header; several come back as a super-frame
//! with consistent headers (IP length and checksum, the pseudo-header sum
//! in the L4 checksum field, the vnet header the kernel needs), whose
//! payload is the merged payloads in order, and which the software GSO
//! (`encap::gso`, as a pod's kernel would) cuts back into the very frames
//! that went in (UDP: byte for byte; TCP: but the IP identification where
//! DF is set, and the checksum's representation of zero).

use encap::gro::Push;
use encap::{checksum, gso, vnet};

use crate::{addr, be16, ip_header_valid, net, Reader};

const ETH: usize = 14;
const L4: usize = 34;

/// One of the two coalescers.
pub trait Coalesce {
    /// IP protocol.
    const PROTO: u8;
    /// vnet `gso_type` of its super-frames.
    const GSO_TYPE: u8;
    /// Offset of the checksum in the L4 header.
    const CSUM: usize;
    /// A coalescer of `capacity` bytes.
    fn new(capacity: usize) -> Self;
    /// `push`.
    fn push(&mut self, frame: &[u8]) -> Push;
    /// `take`.
    fn take(&mut self) -> Option<(vnet::Header, &[u8])>;
    /// Frames merged so far.
    fn merged(&self) -> usize;
    /// L4 header length of a frame whose headers are in place.
    fn l4_len(f: &[u8]) -> usize;
    /// The software GSO of this protocol.
    fn segment(full: &[u8], mss: usize, out: &mut [u8]) -> Result<gso::Segments, encap::Error>;
    /// A segment `s` is what frame `f` (cut to its IP length) was.
    fn same_frame(s: &[u8], f: &[u8]);
    /// Advances the flow's per-frame fields of `f` (a copy of the last
    /// frame, payload length already set) past `last`'s payload.
    fn advance(f: &mut [u8], last_payload: usize, flags: u8);
}

impl Coalesce for encap::gro::Coalescer {
    const PROTO: u8 = 6;
    const GSO_TYPE: u8 = vnet::GSO_TCPV4;
    const CSUM: usize = 16;
    fn new(capacity: usize) -> Self {
        encap::gro::Coalescer::new(capacity)
    }
    fn push(&mut self, frame: &[u8]) -> Push {
        encap::gro::Coalescer::push(self, frame)
    }
    fn take(&mut self) -> Option<(vnet::Header, &[u8])> {
        encap::gro::Coalescer::take(self)
    }
    fn merged(&self) -> usize {
        self.segments()
    }
    fn l4_len(f: &[u8]) -> usize {
        usize::from(f.get(L4 + 12).copied().unwrap_or(0x50) >> 4) * 4
    }
    fn segment(full: &[u8], mss: usize, out: &mut [u8]) -> Result<gso::Segments, encap::Error> {
        gso::segment_tcp4(full, ETH, mss, out)
    }
    fn same_frame(s: &[u8], f: &[u8]) {
        assert_eq!(s.len(), f.len(), "segment length");
        let df = f[ETH + 6] & 0x40 != 0;
        let mut s = s.to_vec();
        let mut f = f.to_vec();
        assert!(tcp_checksum_valid(&s), "segment's TCP checksum");
        for x in [&mut s, &mut f] {
            x[L4 + 16..L4 + 18].fill(0);
            if df {
                // Segmentation numbers the segments; with DF the
                // coalescer did not ask the originals to count up.
                x[ETH + 4..ETH + 6].fill(0);
                x[ETH + 10..ETH + 12].fill(0);
            }
        }
        assert_eq!(s, f, "a segment is not the frame that went in");
    }
    fn advance(f: &mut [u8], last_payload: usize, flags: u8) {
        if f.len() >= L4 + 14 {
            let seq = u32::from_be_bytes([f[L4 + 4], f[L4 + 5], f[L4 + 6], f[L4 + 7]]);
            let seq = seq.wrapping_add(last_payload as u32);
            f[L4 + 4..L4 + 8].copy_from_slice(&seq.to_be_bytes());
            if flags & 1 != 0 {
                f[L4 + 13] ^= 0x08;
            }
        }
    }
}

impl Coalesce for encap::gro::UdpCoalescer {
    const PROTO: u8 = 17;
    const GSO_TYPE: u8 = vnet::GSO_UDP_L4;
    const CSUM: usize = 6;
    fn new(capacity: usize) -> Self {
        encap::gro::UdpCoalescer::new(capacity)
    }
    fn push(&mut self, frame: &[u8]) -> Push {
        encap::gro::UdpCoalescer::push(self, frame)
    }
    fn take(&mut self) -> Option<(vnet::Header, &[u8])> {
        encap::gro::UdpCoalescer::take(self)
    }
    fn merged(&self) -> usize {
        self.datagrams()
    }
    fn l4_len(_: &[u8]) -> usize {
        8
    }
    fn segment(full: &[u8], mss: usize, out: &mut [u8]) -> Result<gso::Segments, encap::Error> {
        let segs = gso::segment_udp4(full, ETH, mss, out)?;
        assert!(segs.count <= encap::gro::MAX_DATAGRAMS);
        Ok(segs)
    }
    fn same_frame(s: &[u8], f: &[u8]) {
        assert_eq!(s, f, "a segment is not the datagram that went in");
    }
    fn advance(f: &mut [u8], _: usize, _: u8) {
        if f.len() >= L4 + 8 {
            let n = (f.len() - L4) as u16;
            f[L4 + 4..L4 + 6].copy_from_slice(&n.to_be_bytes());
        }
    }
}

fn tcp_checksum_valid(f: &[u8]) -> bool {
    let ip = &f[ETH..];
    let l4 = &ip[20..];
    let pseudo = checksum::pseudo_header(addr(&ip[12..16]), addr(&ip[16..20]), 6, l4.len() as u16);
    checksum::fold(checksum::sum(pseudo, l4)) == 0xffff
}

/// The frame cut to its IP total length (Ethernet padding off).
fn ip_part(f: &[u8]) -> &[u8] {
    &f[..ETH + usize::from(be16(f, ETH + 2))]
}

/// The state of one run: the coalescer, the frames merged into what it
/// holds, and buffers.
struct Run<C> {
    c: C,
    merged: Vec<Vec<u8>>,
    out: Vec<u8>,
}

impl<C: Coalesce> Run<C> {
    fn push(&mut self, f: &[u8]) {
        let answer = self.c.push(f);
        if crate::trace() {
            eprintln!("push {} bytes: {answer:?}", f.len());
        }
        match answer {
            Push::Merged => self.merged.push(f.to_vec()),
            Push::Bypass => self.take(),
            Push::Flush => {
                assert!(!self.merged.is_empty(), "Flush from an empty coalescer");
                self.take();
                assert_eq!(
                    self.c.push(f),
                    Push::Merged,
                    "an empty coalescer refused a Flush"
                );
                self.merged.push(f.to_vec());
            }
        }
        assert_eq!(self.c.merged(), self.merged.len());
    }

    /// Takes what the coalescer holds and checks it (module docs).
    fn take(&mut self) {
        let merged = std::mem::take(&mut self.merged);
        if crate::trace() && !merged.is_empty() {
            eprintln!("take {} frames", merged.len());
        }
        let got = self.c.take().map(|(h, b)| (h, b.to_vec()));
        assert_eq!(self.c.merged(), 0);
        let (hdr, sf) = match (merged.len(), got) {
            (0, None) => return,
            (1, Some((h, b))) => {
                assert!(h.is_plain() && h == vnet::Header::default());
                assert_eq!(b, merged[0], "a single frame came back changed");
                return;
            }
            (n, Some(g)) if n > 1 => g,
            (n, g) => panic!("{n} merged, took {g:?}"),
        };
        // The super-frame as the kernel takes it.
        let hdr_len = usize::from(hdr.hdr_len);
        assert_eq!(usize::from(be16(&sf, ETH + 2)), sf.len() - ETH);
        assert!(ip_header_valid(&sf[ETH..]));
        assert_eq!((hdr.flags, hdr.gso_type), (vnet::F_NEEDS_CSUM, C::GSO_TYPE));
        assert_eq!(hdr_len, L4 + C::l4_len(&sf));
        assert_eq!(
            (hdr.csum_start, hdr.csum_offset),
            (L4 as u16, C::CSUM as u16)
        );
        let pseudo = checksum::pseudo_header(
            addr(&sf[ETH + 12..]),
            addr(&sf[ETH + 16..]),
            C::PROTO,
            (sf.len() - L4) as u16,
        );
        assert_eq!(be16(&sf, L4 + C::CSUM), checksum::fold(pseudo));
        let payloads: Vec<u8> = merged
            .iter()
            .flat_map(|f| ip_part(f)[hdr_len..].to_vec())
            .collect();
        assert_eq!(&sf[hdr_len..], &payloads[..], "super-frame payload");
        assert_eq!(
            usize::from(hdr.gso_size),
            ip_part(&merged[0]).len() - hdr_len
        );
        // Segment it back.
        let mut full = sf.clone();
        gso::complete_checksum(&mut full, L4, C::CSUM).expect("complete the checksum");
        let segs = C::segment(&full, usize::from(hdr.gso_size), &mut self.out)
            .expect("the software GSO takes the super-frame");
        assert_eq!(segs.count, merged.len(), "segments ≠ frames merged");
        for (i, f) in merged.iter().enumerate() {
            let s = &self.out[segs.datagram(i).expect("datagram")];
            C::same_frame(s, ip_part(f));
        }
    }
}

/// Runs the program in `data` on coalescer `C`.
pub fn run<C: Coalesce>(data: &[u8]) {
    let mut r = Reader::new(data);
    let capacity = [65_536 + 128, 1514, 9000, 256][usize::from(r.u8() & 3)];
    let mut run = Run {
        c: C::new(capacity),
        merged: Vec::new(),
        out: OUT.with(|o| std::mem::take(&mut *o.borrow_mut())),
    };
    run.out.resize(192 * 1024, 0);
    let mut last: Option<Vec<u8>> = None;
    let mut frames = 0;
    while !r.is_empty() && frames < 256 {
        match r.u8() % 4 {
            0 => {
                let flags = r.u8();
                let mut f = r.frame().to_vec();
                if flags & 1 != 0 {
                    net::fix_frame(&mut f);
                }
                run.push(&f);
                last = Some(f);
                frames += 1;
            }
            1 | 2 => {
                let len = usize::from(r.u16() % 2048);
                let flags = r.u8();
                let seed = r.u8();
                let Some(prev) = last.as_ref() else { continue };
                let f = next_frame::<C>(prev, len, flags, seed);
                run.push(&f);
                last = Some(f);
                frames += 1;
            }
            _ => run.take(),
        }
    }
    run.take();
    OUT.with(|o| *o.borrow_mut() = run.out);
}

thread_local! {
    /// The segmentation buffer, kept from one run to the next.
    static OUT: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The frame after `prev` in its flow (see the module docs); `prev` itself
/// (a copy) if its headers are not all there.
fn next_frame<C: Coalesce>(prev: &[u8], len: usize, flags: u8, seed: u8) -> Vec<u8> {
    if prev.len() < L4 + 8 || prev[ETH] != 0x45 {
        return prev.to_vec();
    }
    let hdr_len = (L4 + C::l4_len(prev)).min(prev.len());
    let ip_end = (ETH + usize::from(be16(prev, ETH + 2))).clamp(hdr_len, prev.len());
    let last_payload = ip_end - hdr_len;
    let mut f = prev[..hdr_len].to_vec();
    f.extend((0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
    let total = (f.len() - ETH).min(65_535) as u16;
    f[ETH + 2..ETH + 4].copy_from_slice(&total.to_be_bytes());
    if flags & 2 == 0 {
        let id = be16(&f, ETH + 4).wrapping_add(1);
        f[ETH + 4..ETH + 6].copy_from_slice(&id.to_be_bytes());
    }
    C::advance(&mut f, last_payload, flags);
    if flags & 4 == 0 {
        net::fix_frame(&mut f);
    }
    f
}
