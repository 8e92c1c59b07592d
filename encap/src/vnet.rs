//! The `virtio_net_hdr_v1` that a TAP opened with `IFF_VNET_HDR` puts in
//! front of every frame (12 bytes with `TUNSETVNETHDRSZ` 12). Without
//! offloads it is all zero; with them it carries checksum and GSO requests.

use crate::Error;

/// Length of the header this project configures on its TAPs.
pub const HEADER_LEN: usize = 12;
/// `flags`: the checksum at `csum_start + csum_offset` is to be completed.
pub const F_NEEDS_CSUM: u8 = 1;
/// `flags`: the checksum is known good.
pub const F_DATA_VALID: u8 = 2;
/// `gso_type`: not a GSO frame.
pub const GSO_NONE: u8 = 0;
/// `gso_type`: TCP over IPv4 (TSO).
pub const GSO_TCPV4: u8 = 1;
/// `gso_type`: UDP, segmented per datagram (USO).
pub const GSO_UDP_L4: u8 = 5;
/// `gso_type` flag: the TCP segments carry ECN (CWR on the first only).
pub const GSO_ECN: u8 = 0x80;

/// The fields of a vnet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    /// `F_*` flags.
    pub flags: u8,
    /// `GSO_*` type.
    pub gso_type: u8,
    /// Length of the headers to copy into each segment.
    pub hdr_len: u16,
    /// Segment payload size.
    pub gso_size: u16,
    /// Where checksumming starts.
    pub csum_start: u16,
    /// Where the checksum goes, from `csum_start`.
    pub csum_offset: u16,
}

impl Header {
    /// Reads a header (little-endian fields, as virtio 1.0 TAPs use).
    pub fn parse(b: &[u8]) -> Result<Header, Error> {
        let h = b.get(..HEADER_LEN).ok_or(Error::Truncated)?;
        let le = |i: usize| u16::from_le_bytes([h[i], h[i + 1]]);
        Ok(Header {
            flags: h[0],
            gso_type: h[1],
            hdr_len: le(2),
            gso_size: le(4),
            csum_start: le(6),
            csum_offset: le(8),
        })
    }

    /// Writes the header into the front of `b` (`num_buffers` zero).
    pub fn emit(&self, b: &mut [u8]) -> Result<(), Error> {
        let h = b.get_mut(..HEADER_LEN).ok_or(Error::Truncated)?;
        h[0] = self.flags;
        h[1] = self.gso_type;
        h[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        h[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        h[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        h[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        h[10..12].copy_from_slice(&[0, 0]);
        Ok(())
    }

    /// A GSO super-frame: `gso_size` bytes of payload per segment.
    pub fn is_gso(&self) -> bool {
        self.gso_type & !GSO_ECN != GSO_NONE
    }

    /// A plain frame: no checksum or segmentation work is asked for.
    pub fn is_plain(&self) -> bool {
        self.flags & F_NEEDS_CSUM == 0 && self.gso_type == GSO_NONE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = Header {
            flags: F_NEEDS_CSUM,
            gso_type: 1,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let mut b = [0xffu8; 12];
        h.emit(&mut b).unwrap();
        assert_eq!(b, [1, 1, 54, 0, 0xa8, 0x05, 34, 0, 16, 0, 0, 0]);
        assert_eq!(Header::parse(&b), Ok(h));
        assert!(!h.is_plain());
        assert!(Header::parse(&[0; 12]).unwrap().is_plain());
        assert_eq!(Header::parse(&[0; 11]), Err(Error::Truncated));
    }
}
