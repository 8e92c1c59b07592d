//! ARP for IPv4 over Ethernet (RFC 826), the only kind a pod network carries.

use core::net::Ipv4Addr;

use crate::{Error, MacAddr};

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;
/// ARP request.
pub const OP_REQUEST: u16 = 1;
/// ARP reply.
pub const OP_REPLY: u16 = 2;

mod field {
    use core::ops::Range;
    pub const HTYPE: Range<usize> = 0..2;
    pub const PTYPE: Range<usize> = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Range<usize> = 6..8;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
}

/// A view of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buf`, checking its length and that it is Ethernet/IPv4 ARP
    /// (htype 1, ptype 0x0800, hlen 6, plen 4); anything else is
    /// [`Error::Unsupported`].
    pub fn new_checked(buf: T) -> Result<Self, Error> {
        let b = buf.as_ref();
        if b.len() < PACKET_LEN {
            return Err(Error::Truncated);
        }
        if b[field::HTYPE] != [0, 1]
            || b[field::PTYPE] != [0x08, 0]
            || b[field::HLEN] != 6
            || b[field::PLEN] != 4
        {
            return Err(Error::Unsupported);
        }
        Ok(Packet { buf })
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    /// Operation: [`OP_REQUEST`] or [`OP_REPLY`] (others possible).
    pub fn operation(&self) -> u16 {
        let b = &self.b()[field::OPER];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Sender hardware address.
    pub fn sender_mac(&self) -> MacAddr {
        MacAddr::from_slice(&self.b()[field::SHA]).unwrap_or_default()
    }

    /// Sender protocol address.
    pub fn sender_ip(&self) -> Ipv4Addr {
        ip_at(self.b(), field::SPA.start)
    }

    /// Target hardware address.
    pub fn target_mac(&self) -> MacAddr {
        MacAddr::from_slice(&self.b()[field::THA]).unwrap_or_default()
    }

    /// Target protocol address.
    pub fn target_ip(&self) -> Ipv4Addr {
        ip_at(self.b(), field::TPA.start)
    }
}

fn ip_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

/// An ARP packet's meaning, for building one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// [`OP_REQUEST`] or [`OP_REPLY`].
    pub operation: u16,
    /// Sender hardware address.
    pub sender_mac: MacAddr,
    /// Sender protocol address.
    pub sender_ip: Ipv4Addr,
    /// Target hardware address (zero in a request).
    pub target_mac: MacAddr,
    /// Target protocol address.
    pub target_ip: Ipv4Addr,
}

impl Repr {
    /// Reads the meaning of a checked packet.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Repr {
        Repr {
            operation: p.operation(),
            sender_mac: p.sender_mac(),
            sender_ip: p.sender_ip(),
            target_mac: p.target_mac(),
            target_ip: p.target_ip(),
        }
    }

    /// Bytes [`Repr::emit`] writes.
    pub const fn buffer_len(&self) -> usize {
        PACKET_LEN
    }

    /// Writes the packet into the first [`PACKET_LEN`] bytes of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), Error> {
        let b = buf.get_mut(..PACKET_LEN).ok_or(Error::Truncated)?;
        b[field::HTYPE].copy_from_slice(&[0, 1]);
        b[field::PTYPE].copy_from_slice(&[0x08, 0]);
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
        b[field::OPER].copy_from_slice(&self.operation.to_be_bytes());
        b[field::SHA].copy_from_slice(&self.sender_mac.0);
        b[field::SPA].copy_from_slice(&self.sender_ip.octets());
        b[field::THA].copy_from_slice(&self.target_mac.0);
        b[field::TPA].copy_from_slice(&self.target_ip.octets());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Who has 10.244.1.1? Tell 10.244.1.3 — as a Linux pod sends it.
    static REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x03, 10,
        244, 1, 3, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 10, 244, 1, 1,
    ];

    fn repr() -> Repr {
        Repr {
            operation: OP_REQUEST,
            sender_mac: MacAddr([0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x03]),
            sender_ip: Ipv4Addr::new(10, 244, 1, 3),
            target_mac: MacAddr::ZERO,
            target_ip: Ipv4Addr::new(10, 244, 1, 1),
        }
    }

    #[test]
    fn parse() {
        let p = Packet::new_checked(&REQUEST[..]).unwrap();
        assert_eq!(Repr::parse(&p), repr());
    }

    #[test]
    fn emit() {
        let mut b = [0xeeu8; 28];
        repr().emit(&mut b).unwrap();
        assert_eq!(b, REQUEST);
    }

    #[test]
    fn rejects() {
        assert_eq!(
            Packet::new_checked(&REQUEST[..27]).unwrap_err(),
            Error::Truncated
        );
        let mut b = REQUEST;
        b[5] = 16; // IPv6-sized protocol address
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::Unsupported);
        let mut b = REQUEST;
        b[1] = 6; // IEEE 802 hardware type
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::Unsupported);
        assert_eq!(repr().emit(&mut [0u8; 27]), Err(Error::Truncated));
    }
}
