//! The UDP coalescer (`encap::gro::UdpCoalescer`): arbitrary frames and
//! generated flows, every take checked, super-frames segmented back into
//! the very datagrams that went in (see `twill_fuzz::gro`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| twill_fuzz::gro::run::<encap::gro::UdpCoalescer>(data));
