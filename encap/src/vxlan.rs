//! VXLAN (RFC 7348) headers, validated as strictly as Open vSwitch does:
//! flags exactly `I`, every reserved bit zero.

use crate::Error;

/// Length of the VXLAN header.
pub const HEADER_LEN: usize = 8;
/// The I flag: the VNI is valid.
const FLAG_I: u8 = 0x08;

/// Largest VNI (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;

/// Reads and validates the VXLAN header at the front of `b`; returns the VNI.
/// Anything but flags = I and zero reserved fields is [`Error::Malformed`].
pub fn parse(b: &[u8]) -> Result<u32, Error> {
    let h = b.get(..HEADER_LEN).ok_or(Error::Truncated)?;
    if h[0] != FLAG_I || h[1..4] != [0, 0, 0] || h[7] != 0 {
        return Err(Error::Malformed);
    }
    Ok(u32::from_be_bytes([0, h[4], h[5], h[6]]))
}

/// Writes a VXLAN header with `vni` into the front of `b`.
pub fn emit(b: &mut [u8], vni: u32) -> Result<(), Error> {
    if vni > MAX_VNI {
        return Err(Error::Malformed);
    }
    let h = b.get_mut(..HEADER_LEN).ok_or(Error::Truncated)?;
    let v = vni.to_be_bytes();
    h.copy_from_slice(&[FLAG_I, 0, 0, 0, v[1], v[2], v[3], 0]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut b = [0xffu8; 8];
        emit(&mut b, 0x00abcdef).unwrap();
        assert_eq!(b, [0x08, 0, 0, 0, 0xab, 0xcd, 0xef, 0]);
        assert_eq!(parse(&b), Ok(0xabcdef));
    }

    #[test]
    fn vni_one_as_flannel_sends_it() {
        assert_eq!(parse(&[0x08, 0, 0, 0, 0, 0, 1, 0]), Ok(1));
    }

    #[test]
    fn strict() {
        assert_eq!(parse(&[0x08, 0, 0, 0, 0, 0, 1]), Err(Error::Truncated));
        assert_eq!(parse(&[0x00, 0, 0, 0, 0, 0, 1, 0]), Err(Error::Malformed)); // no I flag
        assert_eq!(parse(&[0x0c, 0, 0, 0, 0, 0, 1, 0]), Err(Error::Malformed)); // extra flag
        assert_eq!(
            parse(&[0x08, 0, 0x01, 0, 0, 0, 1, 0]),
            Err(Error::Malformed)
        ); // GBP-style bits
        assert_eq!(parse(&[0x08, 0, 0, 0, 0, 0, 1, 1]), Err(Error::Malformed)); // reserved
        assert_eq!(emit(&mut [0u8; 8], MAX_VNI + 1), Err(Error::Malformed));
        assert_eq!(emit(&mut [0u8; 7], 1), Err(Error::Truncated));
    }
}

#[cfg(test)]
mod linux_fixtures {
    //! Packets exactly as a Linux vxlan device configured by flannel emits
    //! them (see fixtures/README.md for how they were captured).
    use super::*;
    use crate::{ethernet, ipv4, MacAddr};

    pub(crate) static ICMP: &[u8] = include_bytes!("fixtures/linux_vxlan_icmp.bin");
    pub(crate) static UDP: &[u8] = include_bytes!("fixtures/linux_vxlan_udp.bin");

    #[test]
    fn linux_frames_parse() {
        for (pkt, proto) in [(ICMP, ipv4::PROTO_ICMP), (UDP, ipv4::PROTO_UDP)] {
            assert_eq!(parse(pkt), Ok(1));
            let mut h = [0u8; HEADER_LEN];
            emit(&mut h, 1).unwrap();
            assert_eq!(&pkt[..HEADER_LEN], &h, "our header is the kernel's");
            let f = ethernet::Frame::new_checked(&pkt[HEADER_LEN..]).unwrap();
            assert_eq!(f.dst(), "0a:58:0a:f4:02:01".parse::<MacAddr>().unwrap());
            assert_eq!(f.src(), "0a:58:0a:f4:01:01".parse::<MacAddr>().unwrap());
            assert_eq!(f.ethertype(), ethernet::ETHERTYPE_IPV4);
            let ip = ipv4::Packet::new_checked(f.payload()).unwrap();
            assert_eq!(ip.protocol(), proto);
            assert_eq!(ip.total_len(), f.payload().len());
            assert_eq!(ip.dst(), core::net::Ipv4Addr::new(10, 244, 2, 3));
        }
    }
}
