//! The `twill` package: the node agent, its local API, the CNI plugin, the
//! CLI's reports and the network-namespace lab used by the demo and the
//! integration tests.
//!
//! The agent turns configuration (later: control-plane leases) into switch
//! tables; it owns no forwarding rule itself (those live in `vswitch::core`).
#![deny(unsafe_code)]

pub mod agent;
pub mod api;
pub mod cni;
pub mod ctlbench;
pub mod fsutil;
pub mod lab;
pub mod report;
