//! The `twill` package: the node agent, its local API, the CNI plugin, the
//! CLI's reports and the controller benchmark (`twill bench-control`).
//!
//! The agent turns its configuration, or the leases and node table of a
//! control plane (`twill controller` or etcd), into switch tables; it owns
//! no forwarding rule itself (those live in `vswitch::core`).
//!
//! The network-namespace lab behind `twill demo`, `twill bench` and the
//! integration tests is the separate crate `twill-lab`, used by the binary
//! (feature `lab`, on by default) and the tests, never by this library. It
//! talks to `twill` over the command line and its JSON; `api`'s tests hold
//! the attachment against the lab's view of it.
#![deny(unsafe_code)]

pub mod agent;
pub mod api;
pub mod cni;
pub mod ctlbench;
pub mod fsutil;
pub mod report;
pub mod rlimit;
pub mod views_cmd;
