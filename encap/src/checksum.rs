//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).

use core::net::Ipv4Addr;

/// Adds `data` to a running 32-bit ones'-complement accumulator.
///
/// Bytes are taken as big-endian 16-bit words; an odd last byte is padded
/// with zero. Accumulators from several calls may be added together as long as
/// every call but the last covers an even number of bytes.
pub fn sum(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc = acc.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
        // Fold early so that the accumulator can never overflow, whatever the length.
        if acc & 0x8000_0000 != 0 {
            acc = (acc & 0xffff) + (acc >> 16);
        }
    }
    if let [last] = chunks.remainder() {
        acc = acc.wrapping_add(u32::from(*last) << 8);
    }
    acc
}

/// Folds an accumulator to 16 bits (ones' complement sum, not yet inverted).
pub fn fold(mut acc: u32) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The checksum of `data`: the inverted folded sum, ready to be written.
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(0, data))
}

/// The IPv4 pseudo-header sum used by UDP and TCP (RFC 768, RFC 793).
pub fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, l4_len: u16) -> u32 {
    let mut acc = sum(0, &src.octets());
    acc = sum(acc, &dst.octets());
    acc + u32::from(protocol) + u32::from(l4_len)
}

/// Updates checksum `check` for a 16-bit field that changed from `old` to
/// `new` (RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m')).
pub fn update16(check: u16, old: u16, new: u16) -> u16 {
    let acc = u32::from(!check) + u32::from(!old) + u32::from(new);
    !fold(acc)
}

/// Updates checksum `check` for a 32-bit field (e.g. an IPv4 address).
pub fn update32(check: u16, old: u32, new: u32) -> u16 {
    let c = update16(check, (old >> 16) as u16, (new >> 16) as u16);
    update16(c, old as u16, new as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The IPv4 header example of RFC 1071's companion literature: a header
    // whose checksum field is 0xb861.
    static HDR: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    #[test]
    fn verifies_known_header() {
        assert_eq!(checksum(&HDR), 0);
        let mut h = HDR;
        h[10] = 0;
        h[11] = 0;
        assert_eq!(checksum(&h), 0xb861);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(checksum(&[0x01]), !0x0100);
        assert_eq!(checksum(&[0x01, 0x02, 0x03]), !(0x0102u16 + 0x0300));
    }

    #[test]
    fn incremental_update_matches_full_recompute() {
        // Decrement TTL (byte 8, high half of the TTL/protocol word).
        let mut h = HDR;
        let old = u16::from_be_bytes([h[8], h[9]]);
        h[8] -= 1;
        let new = u16::from_be_bytes([h[8], h[9]]);
        let c = update16(u16::from_be_bytes([h[10], h[11]]), old, new);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(checksum(&h), 0);

        // Rewrite the destination address.
        let old = u32::from_be_bytes([h[16], h[17], h[18], h[19]]);
        let new: u32 = 0x0a0b_0c0d;
        h[16..20].copy_from_slice(&new.to_be_bytes());
        let c = update32(u16::from_be_bytes([h[10], h[11]]), old, new);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(checksum(&h), 0);
    }

    #[test]
    fn long_input_does_not_overflow() {
        let data = vec![0xffu8; 1 << 20];
        assert_eq!(checksum(&data), 0);
    }

    proptest::proptest! {
        #[test]
        fn incremental_equals_recompute(mut h in proptest::array::uniform20(0u8..), at in 0usize..10, new in 0u16..) {
            h[0] = 0x45;
            h[10] = 0; h[11] = 0;
            let c = checksum(&h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            let at = if at == 5 { 4 } else { at }; // never the checksum word itself
            let old = u16::from_be_bytes([h[2 * at], h[2 * at + 1]]);
            h[2 * at..2 * at + 2].copy_from_slice(&new.to_be_bytes());
            let c2 = update16(c, old, new);
            h[10..12].copy_from_slice(&c2.to_be_bytes());
            proptest::prop_assert_eq!(checksum(&h), 0);
        }
    }
}
