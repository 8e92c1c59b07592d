//! Flow hashing of inner IPv4 packets, for the outer UDP source port (as
//! Linux's `udp_flow_src_port` does, so that ECMP and multi-queue receivers
//! spread flows) and later for pinning a flow to a worker.

use crate::ipv4;

/// Hashes the flow of the IPv4 packet at the front of `ip`: addresses and
/// protocol, plus the ports for TCP, UDP, SCTP and UDP-Lite when this is the
/// first fragment or an unfragmented packet. Every fragment of a flow hashes
/// alike only if the flow is not fragmented; Linux's flow dissector behaves
/// the same. Short or non-IPv4 input hashes what is there, never panics.
pub fn hash_ipv4(ip: &[u8], seed: u32) -> u32 {
    if ip.len() < ipv4::MIN_HEADER_LEN || ip[0] >> 4 != 4 {
        return mix(seed ^ ip.len() as u32);
    }
    let hl = usize::from(ip[0] & 0x0f) * 4;
    let proto = ip[9];
    let src = u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]);
    let dst = u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]);
    let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
    let ports = match (proto, frag) {
        (6 | 17 | 132 | 136, false) => ip
            .get(hl..hl + 4)
            .map(|p| u32::from_be_bytes([p[0], p[1], p[2], p[3]]))
            .unwrap_or(0),
        _ => 0,
    };
    let mut h = seed ^ 0x9e37_79b9;
    for w in [src, dst, ports, u32::from(proto)] {
        h = mix(h ^ w);
    }
    h
}

/// A 32-bit finaliser (murmur3's fmix32): every input bit affects every
/// output bit.
fn mix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn udp(sport: u16) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ipv4([10, 244, 1, 3], [10, 244, 2, 3], 64)
            .udp(sport, 53)
            .write(&mut v, b"q")
            .unwrap();
        v
    }

    #[test]
    fn same_flow_same_hash_other_flow_other_hash() {
        assert_eq!(hash_ipv4(&udp(1000), 7), hash_ipv4(&udp(1000), 7));
        assert_ne!(hash_ipv4(&udp(1000), 7), hash_ipv4(&udp(1001), 7));
        assert_ne!(hash_ipv4(&udp(1000), 7), hash_ipv4(&udp(1000), 8));
    }

    #[test]
    fn flows_spread_over_the_send_sockets() {
        // The driver sends a flow from socket `hash % n` (8 of them).
        let mut per_socket = [0u32; 8];
        let mut seen = std::collections::HashSet::new();
        for s in 0..256 {
            let h = hash_ipv4(&udp(30000 + s), 1);
            per_socket[h as usize % 8] += 1;
            seen.insert(h);
        }
        assert_eq!(seen.len(), 256);
        assert!(
            per_socket.iter().all(|&n| (16..=48).contains(&n)),
            "{per_socket:?}"
        );
    }

    #[test]
    fn garbage_never_panics() {
        for n in 0..40 {
            let _ = hash_ipv4(&vec![0x4f; n], 0);
        }
    }
}
