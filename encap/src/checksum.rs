//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).

use core::net::Ipv4Addr;

/// Adds `data` to a running 32-bit ones'-complement accumulator.
///
/// Bytes are taken as big-endian 16-bit words; an odd last byte is padded
/// with zero. Accumulators from several calls may be added together (or one
/// passed as the next call's `acc`) as long as every call but the last covers
/// an even number of bytes.
///
/// The result is `acc` plus the words of `data`, folded to 16 bits: it is at
/// most `0xffff`, so a handful of results and a pseudo-header sum can be added
/// in a `u32` without overflow, and it is 0 only if `acc` and every byte are 0
/// (so [`fold`] of it keeps the ones'-complement distinction between 0 and
/// `0xffff`). [`fold`] of the result is what a 16-bit loop would give.
///
/// This is the hot loop of the dataplane (every TCP payload is summed when a
/// super-frame is segmented and again when a segment is verified before
/// coalescing), so it is written for speed without `unsafe` or SIMD:
///
/// - The sum is byte-order independent (RFC 1071 §2(B)): summing native-endian
///   words and swapping the bytes of the folded result gives the big-endian
///   sum, so no per-word byte swap.
/// - A 64-bit word is four 16-bit words and 2¹⁶ ≡ 1 (mod 2¹⁶−1), so adding
///   whole 64-bit words with their carries counted apart (a carry out of bit
///   63 is worth 2⁶⁴ ≡ 1) is the same sum, eight bytes per add; LLVM turns
///   `overflowing_add` plus the carry count into `add`/`adc`.
/// - Two independent 64-bit chains per 16 bytes, so that the adds of one
///   step do not wait on each other's result and carry. Four chains, `u128`
///   accumulators and auto-vectorised (baseline SSE2) lanes of 16- or 32-bit
///   words measured no faster on x86-64; the old big-endian loop, 8 bytes
///   per step with a fold check, was 6 to 7 times slower.
pub fn sum(acc: u32, data: &[u8]) -> u32 {
    let (mut s0, mut s1, mut carries) = (0u64, 0u64, 0u64);
    let mut chunks = data.chunks_exact(16);
    for c in &mut chunks {
        let (r0, o0) = s0.overflowing_add(word64(&c[..8]));
        let (r1, o1) = s1.overflowing_add(word64(&c[8..]));
        s0 = r0;
        s1 = r1;
        carries += u64::from(o0) + u64::from(o1);
    }
    // Into one native-endian total: `acc` byte-swapped into the same word
    // order (a 32-bit swap is the sum of its two swapped halves), each chain
    // split into 32-bit halves, then the carries (at most two per 16 bytes)
    // and the tail. Far below 2⁶⁴ for any slice.
    let mut a = u64::from(u32::from_be(acc))
        + (s0 >> 32)
        + (s0 & 0xffff_ffff)
        + (s1 >> 32)
        + (s1 & 0xffff_ffff)
        + carries;
    let mut rest = chunks.remainder();
    if rest.len() >= 8 {
        let w = word64(rest);
        a += (w >> 32) + (w & 0xffff_ffff);
        rest = &rest[8..];
    }
    if rest.len() >= 4 {
        a += u64::from(u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]));
        rest = &rest[4..];
    }
    if rest.len() >= 2 {
        a += u64::from(u16::from_ne_bytes([rest[0], rest[1]]));
        rest = &rest[2..];
    }
    if let [last] = rest {
        // The padding zero follows the byte in memory, whatever the order.
        a += u64::from(u16::from_ne_bytes([*last, 0]));
    }
    while a >> 16 != 0 {
        a = (a & 0xffff) + (a >> 16);
    }
    // The native-endian sum's bytes, read big-endian (a swap on
    // little-endian). Swapping keeps 0 and 0xffff apart.
    u32::from(u16::from_be_bytes((a as u16).to_ne_bytes()))
}

/// The native-endian 64-bit word at the start of `c` (at least 8 bytes long).
#[inline]
fn word64(c: &[u8]) -> u64 {
    u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
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

/// Updates a *partial* checksum field (what a sender that offloads the
/// checksum leaves in the TCP/UDP header, `NEEDS_CSUM` / Linux's
/// `CHECKSUM_PARTIAL`: the folded pseudo-header sum, not inverted) for a
/// 32-bit pseudo-header field (an address) that changed from `old` to `new`.
/// Linux's `inet_proto_csum_replace4` with `pseudohdr` does the same:
/// `~csum_fold(csum_add(csum_sub(csum_unfold(sum), from), to))`. A port
/// change needs nothing: ports are not in the pseudo-header.
pub fn update_partial32(partial: u16, old: u32, new: u32) -> u16 {
    !update32(!partial, old, new)
}

/// A computed UDP checksum as it goes on the wire: 0 means "no checksum"
/// in UDP over IPv4 (RFC 768), so a sum that comes out as 0 is sent as
/// `0xffff`, its other ones'-complement form.
pub fn udp_wire(check: u16) -> u16 {
    if check == 0 {
        0xffff
    } else {
        check
    }
}

#[cfg(test)]
#[path = "checksum_tests.rs"]
mod tests;
