//! The sans-IO forwarding core: ports, MAC learning, the router and the
//! forwarding decision. It reads no socket, fd or clock: the caller passes the
//! frame, the input port and `now`, and performs the returned action.

pub mod mac_table;

/// A port of the L2 segment (a pod TAP, the host port) or the tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortId(pub u16);
