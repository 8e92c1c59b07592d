//! A packet buffer with headroom, allocated once per worker and reused for
//! every packet: headers are pushed into the headroom in front of the data
//! and pulled off it, never copied around (OVS's `dp_packet_push_uninit`).
//!
//! One receive may also land many datagrams back to back in the buffer
//! (`UDP_GRO`); [`Datagrams`] walks them in place, each in turn being the
//! buffer's packet, so that none is copied out to be processed.

use crate::{vnet, Error};

/// A fixed-capacity buffer holding one packet at `data()`, with free space
/// in front of it (headroom) and behind it (tailroom).
#[derive(Debug)]
pub struct PacketBuf {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// End of the space the packet may use: the buffer's length, but
    /// while [`Datagrams`] walks a receive, the end of the current
    /// datagram's slack (the bytes after it belong to the next one).
    limit: usize,
    /// Offload state of the packet (GSO type and size, checksum to
    /// complete), as the vnet header of a TAP read gave it: the packet's
    /// `skb_shinfo`. All zero for a plain packet; [`PacketBuf::reset`]
    /// clears it, and so must whoever builds a new packet in the buffer.
    pub offload: vnet::Header,
}

impl PacketBuf {
    /// A zeroed buffer of `capacity` bytes with an empty packet at `headroom`.
    pub fn new(capacity: usize, headroom: usize) -> PacketBuf {
        let headroom = headroom.min(capacity);
        PacketBuf {
            buf: vec![0; capacity].into_boxed_slice(),
            start: headroom,
            end: headroom,
            limit: capacity,
            offload: vnet::Header::default(),
        }
    }

    /// Empties the packet, puts its start at `headroom` and returns the
    /// space from there to the end, for a read; then call [`PacketBuf::set_len`].
    pub fn reset(&mut self, headroom: usize) -> &mut [u8] {
        self.offload = vnet::Header::default();
        self.limit = self.buf.len();
        self.start = headroom.min(self.buf.len());
        self.end = self.start;
        &mut self.buf[self.start..]
    }

    /// Sets the packet's length after a read into [`PacketBuf::reset`]'s space.
    /// Clamped to the capacity.
    pub fn set_len(&mut self, len: usize) {
        self.end = (self.start + len).min(self.limit);
    }

    /// The packet.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// The packet, mutable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }

    /// The packet's length.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// The packet is empty.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// Free bytes in front of the packet.
    pub fn headroom(&self) -> usize {
        self.start
    }

    /// Grows the packet by `n` bytes at the front and returns them.
    pub fn push_front(&mut self, n: usize) -> Result<&mut [u8], Error> {
        if n > self.start {
            return Err(Error::NoRoom);
        }
        self.start -= n;
        Ok(&mut self.buf[self.start..self.start + n])
    }

    /// Drops `n` bytes from the front of the packet.
    pub fn pull_front(&mut self, n: usize) -> Result<(), Error> {
        if n > self.len() {
            return Err(Error::Truncated);
        }
        self.start += n;
        Ok(())
    }

    /// Shortens the packet to `len` bytes (no-op if already shorter).
    pub fn truncate(&mut self, len: usize) {
        self.end = self.end.min(self.start + len);
    }

    /// The whole buffer and the packet's offset in it, for builders that work
    /// in place beyond the packet's end (ICMP errors quote the packet behind
    /// a new header). Follow with [`PacketBuf::set_bounds`].
    pub fn raw_mut(&mut self) -> (&mut [u8], usize) {
        (&mut self.buf[..self.limit], self.start)
    }

    /// Sets the packet to `buf[start..end]`.
    pub fn set_bounds(&mut self, start: usize, end: usize) -> Result<(), Error> {
        if start > end || end > self.limit {
            return Err(Error::NoRoom);
        }
        self.start = start;
        self.end = end;
        Ok(())
    }

    /// The packet with the `n` bytes in front of it (e.g. a vnet header the
    /// caller wrote into the headroom), without moving the packet's start.
    pub fn with_front(&self, n: usize) -> Result<&[u8], Error> {
        if n > self.start {
            return Err(Error::NoRoom);
        }
        Ok(&self.buf[self.start - n..self.end])
    }

    /// The `n` bytes in front of the packet, mutable.
    pub fn front_mut(&mut self, n: usize) -> Result<&mut [u8], Error> {
        if n > self.start {
            return Err(Error::NoRoom);
        }
        Ok(&mut self.buf[self.start - n..self.start])
    }
}

/// Bytes past its end that a datagram's processing may write (an ICMP
/// error built in place grows the packet by up to 28 bytes, an ARP request
/// replacing a tiny frame by up to 8): [`Datagrams`] saves them from the
/// next datagram and puts them back.
pub const DATAGRAM_SLACK: usize = 64;

/// A walk over datagrams received back to back into a [`PacketBuf`], each
/// made in turn the buffer's packet, in place: the bytes in front of it
/// (the previous datagram's, done with) serve as headroom, and up to
/// [`DATAGRAM_SLACK`] bytes behind it as tailroom, saved from the next
/// datagram before and restored after. The buffer refuses to grow a
/// datagram further ([`PacketBuf::set_bounds`] and [`PacketBuf::raw_mut`]
/// stop there), so no processing can damage a datagram not yet seen.
///
/// ```text
/// let mut d = pkt.datagrams(n, seg);
/// while d.next(&mut pkt) { /* process pkt, done with it before next() */ }
/// ```
#[derive(Debug)]
pub struct Datagrams {
    /// Buffer offset of the next datagram.
    at: usize,
    /// Buffer offset of the end of the received bytes.
    end: usize,
    /// Length of every datagram but the last.
    seg: usize,
    /// Saved first bytes of the datagram after the current one.
    saved: [u8; DATAGRAM_SLACK],
    /// Where they go back, and how many there are.
    saved_at: usize,
    saved_len: usize,
}

impl PacketBuf {
    /// After a receive of `n` bytes into [`PacketBuf::reset`]'s space,
    /// holding datagrams of `seg` bytes back to back (the last may be
    /// shorter; `seg` 0 means one datagram): the walk over them.
    pub fn datagrams(&self, n: usize, seg: usize) -> Datagrams {
        let end = self.start.saturating_add(n).min(self.buf.len());
        Datagrams {
            at: self.start,
            end,
            seg: if seg == 0 { n.max(1) } else { seg },
            saved: [0; DATAGRAM_SLACK],
            saved_at: 0,
            saved_len: 0,
        }
    }
}

impl Datagrams {
    /// Restores what the previous datagram's processing may have
    /// overwritten, then makes the next datagram `pkt`'s packet (plain, no
    /// offload state). False when there is none left; `pkt` may then use
    /// its whole buffer again. `pkt` must be the buffer the walk came from.
    pub fn next(&mut self, pkt: &mut PacketBuf) -> bool {
        if self.saved_len > 0 {
            let n = self.saved_len;
            self.saved_len = 0;
            if let Some(dst) = pkt.buf.get_mut(self.saved_at..self.saved_at + n) {
                dst.copy_from_slice(&self.saved[..n]);
            }
        }
        pkt.limit = pkt.buf.len();
        if self.at >= self.end || self.end > pkt.buf.len() {
            return false;
        }
        let start = self.at;
        let stop = start.saturating_add(self.seg).min(self.end);
        self.at = stop;
        let following = (self.end - stop).min(DATAGRAM_SLACK);
        if following > 0 {
            self.saved[..following].copy_from_slice(&pkt.buf[stop..stop + following]);
            self.saved_at = stop;
            self.saved_len = following;
            pkt.limit = (stop + DATAGRAM_SLACK).min(pkt.buf.len());
        }
        pkt.start = start;
        pkt.end = stop;
        pkt.offload = vnet::Header::default();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_pull() {
        let mut p = PacketBuf::new(64, 16);
        let room = p.reset(16);
        room[..4].copy_from_slice(b"data");
        p.set_len(4);
        assert_eq!(p.data(), b"data");
        p.push_front(2).unwrap().copy_from_slice(b"hd");
        assert_eq!(p.data(), b"hddata");
        assert_eq!(p.headroom(), 14);
        p.pull_front(3).unwrap();
        assert_eq!(p.data(), b"ata");
        assert_eq!(p.pull_front(4), Err(Error::Truncated));
        assert_eq!(p.headroom(), 17);
        assert_eq!(p.push_front(17).map(|_| ()), Ok(()));
        assert_eq!(p.push_front(1).map(|_| ()), Err(Error::NoRoom));
        p.truncate(2);
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn front_access() {
        let mut p = PacketBuf::new(32, 8);
        p.reset(8)[0] = 7;
        p.set_len(1);
        p.front_mut(2).unwrap().copy_from_slice(&[1, 2]);
        assert_eq!(p.with_front(2).unwrap(), &[1, 2, 7]);
        assert!(p.with_front(9).is_err());
        assert!(p.set_bounds(4, 40).is_err());
        p.set_bounds(6, 9).unwrap();
        assert_eq!(p.data(), &[1, 2, 7]);
        p.set_len(1000);
        assert_eq!(p.len(), 26);
    }

    /// Datagrams of 10 bytes (the last 4), each filled with its index + 1.
    fn received(p: &mut PacketBuf, sizes: &[usize]) -> usize {
        let room = p.reset(8);
        let mut off = 0;
        for (i, n) in sizes.iter().enumerate() {
            room[off..off + n].fill(i as u8 + 1);
            off += n;
        }
        off
    }

    #[test]
    fn walks_datagrams_in_place() {
        let mut p = PacketBuf::new(100, 8);
        let n = received(&mut p, &[10, 10, 10, 4]);
        let mut d = p.datagrams(n, 10);
        let mut seen = Vec::new();
        while d.next(&mut p) {
            seen.push(p.data().to_vec());
            let i = seen.len() as u8;
            assert!(p.offload.is_plain());
            // Scribble over everything the packet may reach: headroom
            // (the previous datagram) and all the tailroom it is given.
            p.push_front(8).unwrap().fill(0xee);
            let (raw, start) = p.raw_mut();
            let limit = raw.len();
            raw[start..].fill(0xdd);
            assert!(p.set_bounds(start, limit).is_ok());
            assert_eq!(p.set_bounds(start, limit + 1), Err(Error::NoRoom));
            if i < 4 {
                // Not the last: 64 bytes past its end, no more.
                assert_eq!(limit, (8 + 10 * usize::from(i) + DATAGRAM_SLACK).min(100));
            } else {
                assert_eq!(limit, 100);
            }
            p.offload.gso_size = 7;
        }
        let want: Vec<Vec<u8>> = [(1u8, 10), (2, 10), (3, 10), (4, 4)]
            .iter()
            .map(|&(b, n)| vec![b; n])
            .collect();
        assert_eq!(seen, want);
        assert!(!d.next(&mut p));
        // The whole buffer is usable again.
        assert!(p.set_bounds(0, 100).is_ok());
    }

    #[test]
    fn one_datagram_and_odd_inputs() {
        let mut p = PacketBuf::new(100, 8);
        let n = received(&mut p, &[30]);
        for seg in [0, 30, 64, 1000] {
            let mut d = p.datagrams(n, seg);
            assert!(d.next(&mut p));
            assert_eq!(p.data(), &[1u8; 30][..]);
            assert!(!d.next(&mut p));
        }
        // Nothing received; more than the buffer holds; a foreign buffer.
        assert!(!p.datagrams(0, 10).next(&mut p));
        let mut d = p.datagrams(10_000, 50);
        assert!(d.next(&mut p) && d.next(&mut p));
        assert_eq!(p.len(), 100 - 8 - 50);
        assert!(!d.next(&mut p));
        let mut d = p.datagrams(90, 10);
        assert!(!d.next(&mut PacketBuf::new(16, 0)));
    }
}
