//! twill's switch: the sans-IO forwarding core (`core`) and the drivers that
//! feed it (`sys`: TAP devices, UDP sockets, netlink, network namespaces,
//! worker threads). The core knows no sockets, fds or threads; the drivers know
//! no forwarding rules.
#![deny(unsafe_code)]

pub mod busy_poll;
pub mod capture;
pub mod core;
pub mod dataplane;
mod gso_tx;
pub mod stats;
#[allow(unsafe_code)]
pub mod sys;
mod txbatch;
pub mod views;
