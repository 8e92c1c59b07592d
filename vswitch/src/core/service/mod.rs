//! Kubernetes Services in the switch: the table of service frontends
//! (ClusterIPs, NodePorts, external and load-balancer IPs) and their
//! backends, compiled by the control side from Service and EndpointSlice
//! objects, and read by the workers without a lock.
//!
//! A connection's first packet to a frontend picks a backend here
//! ([`ServicePort::pick`], Maglev over the usable endpoints); the
//! connection table then keeps the choice for the connection's life.
//!
//! Which endpoints are usable follows kube-proxy
//! (`pkg/proxy/topology.go`, `CategorizeEndpoints`):
//! - traffic to a ClusterIP follows `internalTrafficPolicy`, traffic to a
//!   NodePort, external IP or load-balancer IP `externalTrafficPolicy`;
//!   `Local` means only endpoints on this node, with no fallback;
//! - among those, the ready endpoints; if none is ready, the serving ones
//!   that are terminating (KEP-1669); if none, the service rejects.

pub mod conntrack;
pub mod maglev;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

pub use maglev::Maglev;

use super::mac_table::MacHashBuilder;

/// A transport protocol a Service port may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (IP protocol 17).
    Udp,
}

impl Proto {
    /// The IP protocol number.
    pub const fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }

    /// The protocol with this IP protocol number, if a Service can carry it.
    pub const fn from_number(n: u8) -> Option<Proto> {
        match n {
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            _ => None,
        }
    }
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
        })
    }
}

/// Which traffic policy a frontend's traffic follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// A ClusterIP: `internalTrafficPolicy`.
    Internal,
    /// A NodePort, an external IP or a load-balancer IP:
    /// `externalTrafficPolicy`; with `Cluster`, the client's address is
    /// replaced by this node's (SNAT) so that replies come back here.
    External,
}

/// One address, port and protocol a service port is reached at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Frontend {
    /// The address (ClusterIP, external IP, load-balancer IP, or this
    /// node's gateway address for a NodePort steered into the switch).
    pub ip: IpAddr,
    /// The port (the Service port, or the NodePort).
    pub port: u16,
    /// The protocol.
    pub proto: Proto,
    /// Which traffic policy applies.
    pub scope: Scope,
}

/// One endpoint of a service port, from an EndpointSlice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// The endpoint's address and the port traffic goes to.
    pub addr: SocketAddr,
    /// On this node (the endpoint's `nodeName` is this node's).
    pub local: bool,
    /// `conditions.ready` (absent reads as true).
    pub ready: bool,
    /// `conditions.serving` (absent reads as `ready`).
    pub serving: bool,
    /// `conditions.terminating` (absent reads as false).
    pub terminating: bool,
}

/// What the control side compiles one port of one Service into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePortSpec {
    /// `namespace/service:port-name` (`namespace/service` for an unnamed
    /// port): names the port in logs and views.
    pub name: String,
    /// The protocol.
    pub proto: Proto,
    /// Where it is reached.
    pub frontends: Vec<Frontend>,
    /// Its endpoints.
    pub endpoints: Vec<Endpoint>,
    /// `sessionAffinity: ClientIP` and its timeout.
    pub affinity: Option<Duration>,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    /// `externalTrafficPolicy: Local`.
    pub external_local: bool,
}

/// The backends one scope of a service port balances over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// The usable endpoints, sorted (so every node builds the same table).
    pub backends: Vec<SocketAddr>,
    maglev: Option<Maglev>,
}

impl Pool {
    fn new(endpoints: &[Endpoint], local_only: bool) -> Pool {
        let candidates = || endpoints.iter().filter(|e| !local_only || e.local);
        let mut backends: Vec<SocketAddr> =
            candidates().filter(|e| e.ready).map(|e| e.addr).collect();
        if backends.is_empty() {
            backends = candidates()
                .filter(|e| e.serving && e.terminating)
                .map(|e| e.addr)
                .collect();
        }
        backends.sort();
        backends.dedup();
        let maglev = Maglev::new(&backends, maglev::size_for(backends.len()));
        Pool { backends, maglev }
    }

    /// The backend for a flow hash; `None` if there is none (the service
    /// rejects the connection).
    #[inline]
    pub fn pick(&self, hash: u64) -> Option<SocketAddr> {
        let i = self.maglev.as_ref()?.pick(hash);
        self.backends.get(i).copied()
    }

    /// Whether `addr` is one of the usable backends.
    pub fn contains(&self, addr: SocketAddr) -> bool {
        self.backends.binary_search(&addr).is_ok()
    }
}

/// A compiled service port: its spec and one backend pool per scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// A number unique among the ports of one table's lifetime: keys the
    /// session-affinity entries, so that a port replaced by another of the
    /// same name starts afresh only if its id changes (it does not).
    pub id: u32,
    /// What it was compiled from.
    pub spec: ServicePortSpec,
    internal: Arc<Pool>,
    /// The same pool as `internal` when both policies choose the same
    /// endpoints or there is no external frontend (one Maglev table, not
    /// two: the table is most of a port's memory).
    external: Arc<Pool>,
}

impl ServicePort {
    fn new(id: u32, spec: ServicePortSpec) -> ServicePort {
        let internal = Arc::new(Pool::new(&spec.endpoints, spec.internal_local));
        let has_external = spec.frontends.iter().any(|f| f.scope == Scope::External);
        let external = if !has_external || spec.external_local == spec.internal_local {
            Arc::clone(&internal)
        } else {
            Arc::new(Pool::new(&spec.endpoints, spec.external_local))
        };
        ServicePort {
            id,
            internal,
            external,
            spec,
        }
    }

    /// The pool traffic of `scope` balances over.
    #[inline]
    pub fn pool(&self, scope: Scope) -> &Pool {
        match scope {
            Scope::Internal => &self.internal,
            Scope::External => &self.external,
        }
    }

    /// The backend for a new connection of `scope` with flow hash `hash`.
    #[inline]
    pub fn pick(&self, scope: Scope, hash: u64) -> Option<SocketAddr> {
        self.pool(scope).pick(hash)
    }

    /// Whether external traffic keeps the client's address (`Local`), or
    /// is SNATed to this node so that replies return here (`Cluster`).
    #[inline]
    pub fn keeps_client_address(&self, scope: Scope) -> bool {
        scope == Scope::Internal || self.spec.external_local
    }
}

/// The key a frontend is found by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrontendKey {
    /// Destination address.
    pub ip: IpAddr,
    /// Destination port.
    pub port: u16,
    /// Protocol.
    pub proto: Proto,
}

/// One word for an IPv4 frontend: a single multiply with the table's
/// hasher (SipHash over the derived fields cost most of the ~20 ns a packet
/// paid per lookup).
impl Hash for FrontendKey {
    #[inline]
    fn hash<H: Hasher>(&self, h: &mut H) {
        AddrKey(self.ip).hash(h);
        h.write_u64((u64::from(self.port) << 8) | u64::from(self.proto.number()));
    }
}

/// An address as a hash key: one word for IPv4, two for IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AddrKey(IpAddr);

impl Hash for AddrKey {
    #[inline]
    fn hash<H: Hasher>(&self, h: &mut H) {
        match self.0 {
            IpAddr::V4(a) => h.write_u64(u64::from(u32::from(a))),
            IpAddr::V6(a) => {
                let x = u128::from(a);
                h.write_u64((x >> 64) as u64 | (1 << 63));
                h.write_u64(x as u64);
            }
        }
    }
}

/// The hasher of the table's maps (keyed folded multiply, as the MAC
/// table's; the keys come from the control plane, not from packets).
fn hasher() -> MacHashBuilder {
    MacHashBuilder::new(0x7477_696c_6c5f_7376)
}

impl From<&Frontend> for FrontendKey {
    fn from(f: &Frontend) -> FrontendKey {
        FrontendKey {
            ip: f.ip,
            port: f.port,
            proto: f.proto,
        }
    }
}

/// Every service port of the node, by name and by frontend. Immutable once
/// published; the control side builds the next one with [`ServiceTable::upsert`]
/// and [`ServiceTable::remove`] on a clone (cost: one clone of two maps of
/// `Arc`s, plus the changed port's Maglev tables).
#[derive(Debug, Clone)]
pub struct ServiceTable {
    ports: HashMap<String, Arc<ServicePort>>,
    frontends: HashMap<FrontendKey, (Arc<ServicePort>, Scope), MacHashBuilder>,
    /// Every address some frontend uses: the first check on the packet path.
    addrs: HashMap<AddrKey, u32, MacHashBuilder>,
    next_id: u32,
}

impl Default for ServiceTable {
    fn default() -> ServiceTable {
        ServiceTable {
            ports: HashMap::new(),
            frontends: HashMap::with_hasher(hasher()),
            addrs: HashMap::with_hasher(hasher()),
            next_id: 0,
        }
    }
}

/// A frontend claimed by two service ports; the later one holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontendConflict {
    /// The frontend.
    pub frontend: Frontend,
    /// The port that held it before.
    pub previous: String,
}

impl ServiceTable {
    /// Whether there are no service ports (the packet path skips all
    /// service work).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.frontends.is_empty()
    }

    /// Whether some frontend uses address `ip`.
    #[inline]
    pub fn has_addr(&self, ip: IpAddr) -> bool {
        self.addrs.contains_key(&AddrKey(ip))
    }

    /// The service port and scope reached at `(ip, port, proto)`.
    #[inline]
    pub fn lookup(
        &self,
        ip: IpAddr,
        port: u16,
        proto: Proto,
    ) -> Option<(&Arc<ServicePort>, Scope)> {
        let (p, s) = self.frontends.get(&FrontendKey { ip, port, proto })?;
        Some((p, *s))
    }

    /// The service port named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<ServicePort>> {
        self.ports.get(name)
    }

    /// Every service port, in no order.
    pub fn ports(&self) -> impl Iterator<Item = &Arc<ServicePort>> + '_ {
        self.ports.values()
    }

    /// Number of service ports.
    pub fn len(&self) -> usize {
        self.ports.len()
    }

    /// Adds or replaces the port `spec.name`. A frontend another port held
    /// moves to this one and is reported.
    pub fn upsert(&mut self, spec: ServicePortSpec) -> Vec<FrontendConflict> {
        let id = match self.ports.get(&spec.name) {
            Some(old) if old.spec == spec => return Vec::new(),
            Some(old) => old.id,
            None => {
                self.next_id = self.next_id.wrapping_add(1);
                self.next_id
            }
        };
        self.remove(&spec.name);
        let port = Arc::new(ServicePort::new(id, spec));
        let mut conflicts = Vec::new();
        for f in &port.spec.frontends {
            let key = FrontendKey::from(f);
            let old = self.frontends.insert(key, (Arc::clone(&port), f.scope));
            match old {
                Some((other, _)) => conflicts.push(FrontendConflict {
                    frontend: *f,
                    previous: other.spec.name.clone(),
                }),
                None => *self.addrs.entry(AddrKey(f.ip)).or_insert(0) += 1,
            }
        }
        self.ports.insert(port.spec.name.clone(), port);
        conflicts
    }

    /// Removes the port `name`, and the frontends it holds. Whether it was there.
    pub fn remove(&mut self, name: &str) -> bool {
        let Some(port) = self.ports.remove(name) else {
            return false;
        };
        for f in &port.spec.frontends {
            let key = FrontendKey::from(f);
            if self
                .frontends
                .get(&key)
                .is_some_and(|(p, _)| Arc::ptr_eq(p, &port))
            {
                self.frontends.remove(&key);
                if let Some(n) = self.addrs.get_mut(&AddrKey(f.ip)) {
                    *n -= 1;
                    if *n == 0 {
                        self.addrs.remove(&AddrKey(f.ip));
                    }
                }
            }
        }
        true
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
