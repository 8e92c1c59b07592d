//! twill wire formats: Ethernet, ARP, IPv4 and ICMP views, VXLAN framing, the
//! vnet header of TAP devices, Internet checksums, flow hashing and the packet
//! buffer everything is built in; and [`lograte`], the rate limit of a
//! repeated log line, here because every crate needs it and all of them
//! depend on this one.
//!
//! This crate is the bottom layer. It does no I/O, reads no clock and allocates
//! nothing on the forwarding path: every function works on the caller's bytes.
//! Views (`Packet<T: AsRef<[u8]>>`) read fields at fixed offsets after one
//! length check; nothing derived from a packet can make them panic.
#![deny(unsafe_code)]

pub mod arp;
pub mod buf;
pub mod checksum;
pub mod ethernet;
pub mod flow;
pub mod gro;
pub mod gso;
pub mod icmp;
pub mod ipv4;
pub mod lograte;
pub mod mac;
pub mod nat;
pub mod vnet;
pub mod vxlan;

pub use buf::PacketBuf;
pub use ipv4::Cidr;
pub use mac::{MacAddr, ParseMacError};

/// Why bytes could not be read or written as a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Fewer bytes than the header (or the length it declares) needs.
    #[error("truncated")]
    Truncated,
    /// A field has a value the format forbids.
    #[error("malformed header")]
    Malformed,
    /// A checksum does not verify.
    #[error("bad checksum")]
    Checksum,
    /// Well-formed but not a kind this code handles.
    #[error("unsupported")]
    Unsupported,
    /// No head- or tailroom left in the buffer.
    #[error("no room in buffer")]
    NoRoom,
}
