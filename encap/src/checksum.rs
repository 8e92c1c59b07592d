//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).

use core::net::Ipv4Addr;

/// Adds `data` to a running 32-bit ones'-complement accumulator.
///
/// Bytes are taken as big-endian 16-bit words; an odd last byte is padded
/// with zero. Accumulators from several calls may be added together as long as
/// every call but the last covers an even number of bytes.
///
/// Eight bytes at a time: a big-endian 64-bit word is two 32-bit words, and a
/// 32-bit word `hi·2¹⁶ + lo` is `hi + lo` modulo 2¹⁶−1, so summing 32-bit
/// halves into a 64-bit accumulator and folding at the end gives the same
/// ones'-complement sum as 16-bit words (RFC 1071 §2(B)).
pub fn sum(acc: u32, data: &[u8]) -> u32 {
    let mut a = u64::from(acc);
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        a += (w >> 32) + (w & 0xffff_ffff);
        // Each step adds less than 2³³; fold long before the top bit is reached.
        if a >> 62 != 0 {
            a = (a & 0xffff_ffff) + (a >> 32);
        }
    }
    let mut rest = chunks.remainder().chunks_exact(2);
    for c in &mut rest {
        a += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = rest.remainder() {
        a += u64::from(*last) << 8;
    }
    while a >> 32 != 0 {
        a = (a & 0xffff_ffff) + (a >> 32);
    }
    a as u32
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

    /// The textbook 16-bit loop, as the reference.
    fn reference(acc: u32, data: &[u8]) -> u16 {
        let mut a = u64::from(acc);
        for c in data.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from(c[0]) << 8
            };
            a += u64::from(w);
            a = (a & 0xffff) + (a >> 16);
        }
        while a >> 16 != 0 {
            a = (a & 0xffff) + (a >> 16);
        }
        a as u16
    }

    proptest::proptest! {
        #[test]
        fn wide_sum_equals_the_16_bit_reference(
            data in proptest::collection::vec(0u8.., 0..3000),
            acc in 0u32..,
            split in 0usize..1500,
        ) {
            proptest::prop_assert_eq!(fold(sum(acc, &data)), reference(acc, &data));
            // Two calls (the first over an even length) equal one.
            let split = (split.min(data.len())) & !1;
            let two = sum(sum(acc, &data[..split]), &data[split..]);
            proptest::prop_assert_eq!(fold(two), reference(acc, &data));
        }

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
