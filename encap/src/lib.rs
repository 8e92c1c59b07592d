//! twill wire formats: Ethernet, ARP, IPv4, ICMP, UDP and TCP views, VXLAN and
//! flannel-UDP framing, Internet checksums.
//!
//! This crate is the bottom layer. It does no I/O, reads no clock and allocates
//! nothing on the forwarding path: every function works on the caller's bytes.
//! Views (`Packet<T: AsRef<[u8]>>`) read fields at fixed offsets after one
//! length check; nothing derived from a packet can make them panic.
#![deny(unsafe_code)]

pub mod mac;

pub use mac::{MacAddr, ParseMacError};
