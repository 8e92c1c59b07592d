//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable
//! Software Network Load Balancer", NSDI 2016, section 3.4).
//!
//! A lookup table of a prime size `M` is filled so that every backend owns
//! about `M / N` slots, and a flow's hash picks a slot. The table depends
//! only on the backends (their addresses, in sorted order) and `M`, never on
//! the node or the worker that builds it, so every worker of every node
//! picks the same backend for a flow with no shared state; removing one of
//! `N` backends moves only the slots it owned plus a few more (about `1/N`).
//!
//! Hashes are fixed functions (no per-process seed): the same table on
//! every node is the point.

use std::net::{IpAddr, SocketAddr};

/// Table sizes: primes, each about twice the one before. A backend set of
/// `N` gets the smallest with `M >= 100 * N` (the paper's "M much larger
/// than N" for a balance within about 1 %), the last one beyond.
pub const SIZES: [usize; 10] = [251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 65537];

/// The table size for `n` backends.
pub fn size_for(n: usize) -> usize {
    let want = n.saturating_mul(100);
    SIZES
        .iter()
        .copied()
        .find(|&m| m >= want)
        .unwrap_or(SIZES[SIZES.len() - 1])
}

/// A filled Maglev lookup table over `n` backends (indices into the
/// caller's backend list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maglev {
    slots: Box<[u16]>,
}

impl Maglev {
    /// Fills a table of `size` slots (a prime; see [`SIZES`]) for
    /// `backends`, in the order given (the caller sorts them, so that every
    /// node builds the same table). `None` if there are no backends or more
    /// than `u16::MAX`, or `size` is below 2.
    pub fn new(backends: &[SocketAddr], size: usize) -> Option<Maglev> {
        let n = backends.len();
        if n == 0 || n > usize::from(u16::MAX) || size < 2 {
            return None;
        }
        // Each backend's permutation of the slots: offset + j * skip.
        let perm: Vec<(usize, usize)> = backends
            .iter()
            .map(|b| {
                let k = addr_key(b);
                let offset = (mix(k ^ OFFSET_SEED) % size as u64) as usize;
                let skip = (mix(k ^ SKIP_SEED) % (size as u64 - 1)) as usize + 1;
                (offset, skip)
            })
            .collect();
        let mut next = vec![0usize; n];
        let mut slots = vec![u16::MAX; size];
        let mut filled = 0;
        'fill: loop {
            for (i, &(offset, skip)) in perm.iter().enumerate() {
                // Backend i's next preferred slot that is still free.
                let mut c = (offset + next[i] * skip) % size;
                while slots[c] != u16::MAX {
                    next[i] += 1;
                    c = (offset + next[i] * skip) % size;
                }
                slots[c] = i as u16;
                next[i] += 1;
                filled += 1;
                if filled == size {
                    break 'fill;
                }
            }
        }
        Some(Maglev {
            slots: slots.into_boxed_slice(),
        })
    }

    /// The backend index for a flow hash.
    #[inline]
    pub fn pick(&self, hash: u64) -> usize {
        usize::from(self.slots[(hash % self.slots.len() as u64) as usize])
    }

    /// The table's size `M`.
    pub fn size(&self) -> usize {
        self.slots.len()
    }

    /// The slots, each a backend index.
    pub fn slots(&self) -> &[u16] {
        &self.slots
    }
}

const OFFSET_SEED: u64 = 0x6d61_676c_6576_5f6f; // "maglev_o"
const SKIP_SEED: u64 = 0x6d61_676c_6576_5f73; // "maglev_s"
const FLOW_SEED: u64 = 0x7477_696c_6c5f_6662; // "twill_fb"

/// A backend's identity as one 64-bit value: address and port.
fn addr_key(a: &SocketAddr) -> u64 {
    let ip = match a.ip() {
        IpAddr::V4(v4) => u64::from(u32::from(v4)),
        IpAddr::V6(v6) => {
            let x = u128::from(v6);
            mix((x >> 64) as u64) ^ (x as u64)
        }
    };
    mix(ip ^ (u64::from(a.port()) << 48))
}

/// splitmix64's finaliser: a fixed, well-mixed 64-bit hash.
#[inline]
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn ip_key(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => u64::from(u32::from(v4)),
        IpAddr::V6(v6) => {
            let x = u128::from(v6);
            mix((x >> 64) as u64) ^ (x as u64)
        }
    }
}

/// The hash a connection's first packet is balanced by: its 5-tuple as the
/// client sent it, with a fixed seed (the same on every node).
#[inline]
pub fn flow_hash(proto: u8, src: SocketAddr, dst: SocketAddr) -> u64 {
    let ports = (u64::from(src.port()) << 16) | u64::from(dst.port()) | (u64::from(proto) << 32);
    mix(mix(mix(ip_key(src.ip()) ^ FLOW_SEED) ^ ip_key(dst.ip())) ^ ports)
}

/// The hash a `sessionAffinity: ClientIP` service balances a client by
/// the first time: the client's address alone.
#[inline]
pub fn client_hash(client: IpAddr) -> u64 {
    mix(ip_key(client) ^ FLOW_SEED)
}

#[cfg(test)]
#[path = "maglev_tests.rs"]
mod tests;
