//! The sans-IO forwarding core: ports, MAC learning, the router and the
//! forwarding decision. It reads no socket, fd or clock: the caller passes the
//! frame, the input port and `now`, and performs the returned [`Action`].

pub mod config;
pub mod counters;
pub mod learning;
pub mod mac_table;
pub mod policy;
pub mod ratelimit;
pub mod service;
pub mod state;
pub mod switch;
pub mod tables;

pub use config::{Allowance, Backend, ConntrackConfig, PortConfig, PortKind, SwitchConfig};
pub use counters::{Counters, DropReason, Drops};
pub use learning::{SharedMacTable, SharedNeighbors};
pub use mac_table::{MacTable, MacTableConfig};
pub use state::{SwitchState, Tables};
pub use switch::{Action, Switch};
pub use tables::{NeighborTable, RemoteNode, RemoteTable, Via};

/// A port of the L2 segment (a pod TAP, the host port).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortId(pub u16);
