//! Flow hashing of inner IPv4 packets: which worker carries a flow on every
//! node, and from which source port the tunnel sends it.
//!
//! The hash is symmetric (a packet and its reply hash alike) and the same
//! function on every node, so that one worker of a node carries both
//! directions of a flow: the sender's TAP steering program and the
//! receiver's reuseport program both pick the worker from it (see
//! `vswitch::sys::steer`), the TAP program computing it in eBPF and the
//! tunnel side reading it back from the outer UDP source port, which the
//! sender chose by [`lane`]. Keep [`symmetric_ipv4`] and the eBPF program
//! in step: a test loads the program and compares.

use crate::ipv4;

/// The multiplier of the hash (2³² / φ, Fibonacci hashing).
pub const HASH_MULTIPLIER: u32 = 0x9e37_79b1;

/// Lanes of a flow: a flow's lane is the top four bits of its hash, a
/// node's tunnel sends it from the send socket of that lane (whose source
/// port is the lane modulo [`LANES`]), and a node with `n` workers carries
/// lane `l` on worker `l % n`.
pub const LANES: usize = 16;

/// The symmetric flow key of the IPv4 packet at the front of `ip`, hashed:
/// the product of `src ^ dst ^ protocol`, and for TCP and UDP that are not
/// fragments `^ (sport ^ dport)`, with [`HASH_MULTIPLIER`] (wrapping, 32
/// bits). Swapping the addresses and the ports gives the same value. A
/// fragment (MF set or an offset) has no ports: every fragment of a flow
/// hashes alike, but apart from its unfragmented packets, as in Linux's
/// flow dissector. Anything that is not IPv4 with a whole header hashes
/// to 0; never panics.
pub fn symmetric_ipv4(ip: &[u8]) -> u32 {
    if ip.len() < ipv4::MIN_HEADER_LEN || ip[0] >> 4 != 4 {
        return 0;
    }
    let word = |at: usize| u32::from_be_bytes([ip[at], ip[at + 1], ip[at + 2], ip[at + 3]]);
    let proto = ip[9];
    let mut k = word(12) ^ word(16) ^ u32::from(proto);
    let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
    if matches!(proto, 6 | 17) && !frag {
        let hl = usize::from(ip[0] & 0x0f) * 4;
        if let Some(p) = ip.get(hl..hl + 4) {
            k ^= u32::from(u16::from_be_bytes([p[0], p[1]]) ^ u16::from_be_bytes([p[2], p[3]]));
        }
    }
    k.wrapping_mul(HASH_MULTIPLIER)
}

/// The lane of a hash from [`symmetric_ipv4`]: its top four bits, below
/// [`LANES`].
pub fn lane(hash: u32) -> usize {
    (hash >> 28) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ipv4(src, dst, 64)
            .udp(sport, dport)
            .write(&mut v, b"q")
            .unwrap();
        v
    }

    fn tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ipv4(src, dst, 64)
            .tcp(sport, dport, 1, 1000)
            .write(&mut v, b"q")
            .unwrap();
        v
    }

    const A: [u8; 4] = [10, 244, 1, 3];
    const B: [u8; 4] = [10, 244, 2, 3];

    #[test]
    fn a_packet_and_its_reply_hash_alike() {
        for (sport, dport) in [(1000, 53), (40000, 80), (53, 53)] {
            assert_eq!(
                symmetric_ipv4(&udp(A, B, sport, dport)),
                symmetric_ipv4(&udp(B, A, dport, sport))
            );
            assert_eq!(
                symmetric_ipv4(&tcp(A, B, sport, dport)),
                symmetric_ipv4(&tcp(B, A, dport, sport))
            );
        }
        // Not a constant: other flows hash otherwise.
        assert_ne!(
            symmetric_ipv4(&udp(A, B, 1000, 53)),
            symmetric_ipv4(&udp(A, B, 1001, 53))
        );
        assert_ne!(
            symmetric_ipv4(&udp(A, B, 1000, 53)),
            symmetric_ipv4(&tcp(A, B, 1000, 53))
        );
    }

    #[test]
    fn the_hash_is_the_documented_product() {
        let k = u32::from_be_bytes(A) ^ u32::from_be_bytes(B) ^ 17 ^ (1000 ^ 53);
        assert_eq!(
            symmetric_ipv4(&udp(A, B, 1000, 53)),
            k.wrapping_mul(HASH_MULTIPLIER)
        );
        // A fragment has no ports.
        let mut frag = udp(A, B, 1000, 53);
        frag[6] |= 0x20; // MF
        let k = u32::from_be_bytes(A) ^ u32::from_be_bytes(B) ^ 17;
        assert_eq!(symmetric_ipv4(&frag), k.wrapping_mul(HASH_MULTIPLIER));
    }

    #[test]
    fn flows_spread_over_the_lanes() {
        // Connections from one client to one server port: the source port
        // is all that changes.
        let mut per_lane = [0u32; LANES];
        for s in 0..512 {
            per_lane[lane(symmetric_ipv4(&tcp(A, B, 32768 + s, 80)))] += 1;
        }
        assert!(
            per_lane.iter().all(|&n| (16..=48).contains(&n)),
            "{per_lane:?}"
        );
        // Pods of a /24 pinging one another: the addresses.
        let mut per_lane = [0u32; LANES];
        for a in 0..64u8 {
            for b in 0..8u8 {
                let mut v = Vec::new();
                PacketBuilder::ipv4([10, 244, 1, a], [10, 244, 2, b], 64)
                    .icmpv4_echo_request(1, 1)
                    .write(&mut v, b"q")
                    .unwrap();
                per_lane[lane(symmetric_ipv4(&v))] += 1;
            }
        }
        assert!(
            per_lane.iter().all(|&n| (8..=64).contains(&n)),
            "{per_lane:?}"
        );
    }

    #[test]
    fn garbage_never_panics() {
        for n in 0..40 {
            let _ = symmetric_ipv4(&vec![0x4f; n]);
            let _ = symmetric_ipv4(&vec![0x45; n]);
        }
    }
}
