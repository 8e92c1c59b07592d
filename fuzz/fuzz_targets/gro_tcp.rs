//! The TCP coalescer (`encap::gro::Coalescer`): arbitrary frames and
//! generated flows, every take checked, super-frames segmented back into
//! the frames that went in (see `twill_fuzz::gro`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| twill_fuzz::gro::run::<encap::gro::Coalescer>(data));
