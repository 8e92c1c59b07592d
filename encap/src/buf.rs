//! A packet buffer with headroom, allocated once per worker and reused for
//! every packet: headers are pushed into the headroom in front of the data
//! and pulled off it, never copied around (OVS's `dp_packet_push_uninit`).

use crate::{vnet, Error};

/// A fixed-capacity buffer holding one packet at `data()`, with free space
/// in front of it (headroom) and behind it (tailroom).
#[derive(Debug)]
pub struct PacketBuf {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
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
            offload: vnet::Header::default(),
        }
    }

    /// Empties the packet, puts its start at `headroom` and returns the
    /// space from there to the end, for a read; then call [`PacketBuf::set_len`].
    pub fn reset(&mut self, headroom: usize) -> &mut [u8] {
        self.offload = vnet::Header::default();
        self.start = headroom.min(self.buf.len());
        self.end = self.start;
        &mut self.buf[self.start..]
    }

    /// Sets the packet's length after a read into [`PacketBuf::reset`]'s space.
    /// Clamped to the capacity.
    pub fn set_len(&mut self, len: usize) {
        self.end = (self.start + len).min(self.buf.len());
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
        (&mut self.buf, self.start)
    }

    /// Sets the packet to `buf[start..end]`.
    pub fn set_bounds(&mut self, start: usize, end: usize) -> Result<(), Error> {
        if start > end || end > self.buf.len() {
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
}
