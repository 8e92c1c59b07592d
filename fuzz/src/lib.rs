//! Shared pieces of twill's fuzz targets: a reader that turns the fuzzer's
//! bytes into structured choices, checksum fixers (so that mutated frames
//! still reach past the checksum checks), the switch fixture and the
//! builders the seed corpora are made with (`examples/mkseeds.rs`).
//!
//! Not part of the product: nothing here is used outside `fuzz/`.

use std::net::Ipv4Addr;

use encap::checksum;

pub mod frames;
pub mod gro;
pub mod net;

/// Reads the fuzzer's input front to back; past the end every read gives
/// zeros (an empty slice for `bytes`), so a short input is still a valid
/// program.
#[derive(Debug)]
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data }
    }

    /// Nothing left.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// One byte.
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// A little-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// Up to `n` bytes (fewer at the end).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (a, b) = self.data.split_at(n);
        self.data = b;
        a
    }

    /// `n` bytes, zero-padded at the end.
    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0; N];
        let b = self.bytes(N);
        a[..b.len()].copy_from_slice(b);
        a
    }

    /// A frame: a u16 length, then that many bytes (fewer at the end).
    pub fn frame(&mut self) -> &'a [u8] {
        let n = usize::from(self.u16());
        self.bytes(n)
    }
}

/// `TWILL_FUZZ_TRACE` is set: targets print what they do (to see which
/// paths a seed reaches).
pub fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("TWILL_FUZZ_TRACE").is_some())
}

/// The address in four bytes.
pub fn addr(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

/// The 16-bit big-endian field at `at`.
pub fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Whether the IPv4 header at the front of `ip` (its IHL within `ip`)
/// checksums to zero.
pub fn ip_header_valid(ip: &[u8]) -> bool {
    let hl = usize::from(ip.first().copied().unwrap_or(0) & 0x0f) * 4;
    hl >= 20 && ip.len() >= hl && checksum::checksum(&ip[..hl]) == 0
}
