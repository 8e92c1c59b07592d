//! NetworkPolicy in the switch: for every local pod that some policy
//! selects, which peers it may talk to, compiled by the control side into
//! a form a connection's first packet is judged against without walking
//! policies, and read by the workers without a lock.
//!
//! The control side (the node agent) resolves everything Kubernetes-shaped
//! before it gets here: selectors become peer addresses, named ports
//! become numbers (an ingress rule's names against the local pod's
//! container ports; an egress rule's against each destination pod's), and
//! the rules of every policy that selects a pod in a direction are merged
//! into one [`RuleSet`], their union. What remains is addresses, protocols
//! and port ranges.
//!
//! **Isolation.** A pod is isolated in a direction when its [`PodPolicy`]
//! has a rule set for it (any policy selecting it for that direction);
//! an isolated pod's traffic in that direction passes only if its rule set
//! allows the peer, protocol and destination port. Egress is judged for a
//! local source pod, ingress for a local destination pod, so a node judges
//! exactly its own pods' halves: the source's node egress, the
//! destination's node ingress, both for two pods of one node. Traffic from
//! the pod's own node (see [`PolicyTable::verdict`]) is always let in, as
//! the NetworkPolicy reference requires.
//!
//! **Statefulness.** Only a connection's first packet is judged; the
//! connection table remembers the verdict with the table's
//! [`PolicyTable::generation`], and a packet of a connection judged under an
//! older generation is judged again, once (see `policy_step.rs`).
//!
//! **Protocols.** A rule with ports allows the TCP and UDP ports it names;
//! a rule without ports allows everything from its peers, ICMP included.
//! Packets without ports (ICMP, other protocols, IP fragments after the
//! first) are judged with port 0, which only a port-less rule allows.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use encap::ipv4::Cidr;

use super::mac_table::MacHashBuilder;

/// IP protocol numbers a rule's ports are about.
pub const TCP: u8 = 6;
/// UDP's protocol number.
pub const UDP: u8 = 17;

/// A range of destination ports of one protocol, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    /// IP protocol number (TCP or UDP).
    pub proto: u8,
    /// First port.
    pub first: u16,
    /// Last port (`first` for one port).
    pub last: u16,
}

impl PortRange {
    /// One port.
    pub fn one(proto: u8, port: u16) -> PortRange {
        PortRange {
            proto,
            first: port,
            last: port,
        }
    }

    /// Every port of `proto`.
    pub fn all(proto: u8) -> PortRange {
        PortRange {
            proto,
            first: 0,
            last: u16::MAX,
        }
    }

    fn contains(&self, proto: u8, port: u16) -> bool {
        self.proto == proto && self.first <= port && port <= self.last
    }
}

/// What a rule lets through from (or to) its peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ports {
    /// Everything: every protocol and port (a rule without `ports`).
    All,
    /// These ranges (sorted, merged; none: nothing).
    Some(Vec<PortRange>),
}

impl Default for Ports {
    fn default() -> Self {
        Ports::Some(Vec::new())
    }
}

impl Ports {
    /// Whether a packet of `proto` to port `port` passes.
    #[inline]
    pub fn allows(&self, proto: u8, port: u16) -> bool {
        match self {
            Ports::All => true,
            Ports::Some(r) => r.iter().any(|r| r.contains(proto, port)),
        }
    }

    /// The same set with its ranges sorted and merged.
    pub fn normalized(self) -> Ports {
        match self {
            Ports::All => Ports::All,
            Ports::Some(r) => Ports::Some(merge(r)),
        }
    }

    /// Adds what `other` lets through.
    pub fn extend(&mut self, other: &Ports) {
        match (&mut *self, other) {
            (Ports::All, _) => {}
            (_, Ports::All) => *self = Ports::All,
            (Ports::Some(a), Ports::Some(b)) => {
                a.extend_from_slice(b);
                *a = merge(std::mem::take(a));
            }
        }
    }
}

/// Sorts ranges and merges the overlapping or adjacent ones of a protocol.
fn merge(mut r: Vec<PortRange>) -> Vec<PortRange> {
    r.sort_unstable();
    let mut out: Vec<PortRange> = Vec::with_capacity(r.len());
    for x in r {
        match out.last_mut() {
            Some(l) if l.proto == x.proto && u32::from(x.first) <= u32::from(l.last) + 1 => {
                l.last = l.last.max(x.last);
            }
            _ => out.push(x),
        }
    }
    out
}

/// An `ipBlock` peer: addresses in `net` but in none of `except`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The block.
    pub net: Cidr,
    /// Holes in it.
    pub except: Vec<Cidr>,
    /// What it may send or be sent.
    pub ports: Ports,
}

impl Block {
    fn contains(&self, ip: Ipv4Addr) -> bool {
        self.net.contains(ip) && !self.except.iter().any(|e| e.contains(ip))
    }
}

/// One direction of one pod: the union of the rules of every policy that
/// selects it for that direction.
#[derive(Debug, Clone)]
pub struct RuleSet {
    /// Rules whose peers are everyone.
    any: Option<Ports>,
    /// Peers by address (pods the selectors resolved to).
    peers: HashMap<u32, Ports, MacHashBuilder>,
    /// `ipBlock` peers, in the order given.
    blocks: Vec<Block>,
}

impl Default for RuleSet {
    fn default() -> Self {
        RuleSet::deny_all()
    }
}

impl RuleSet {
    /// A rule set that allows nothing (isolation with no rule).
    pub fn deny_all() -> RuleSet {
        RuleSet {
            any: None,
            peers: HashMap::with_hasher(MacHashBuilder::new(0x7477_696c_6c5f_7072)),
            blocks: Vec::new(),
        }
    }

    /// Also allows `ports` from (or to) every peer.
    pub fn allow_any(&mut self, ports: &Ports) {
        self.any.get_or_insert_with(Ports::default).extend(ports);
    }

    /// Also allows `ports` from (or to) the peer at `ip`.
    pub fn allow_peer(&mut self, ip: Ipv4Addr, ports: &Ports) {
        self.peers.entry(u32::from(ip)).or_default().extend(ports);
    }

    /// Also allows `ports` from (or to) the addresses of `net` outside
    /// `except`.
    pub fn allow_block(&mut self, net: Cidr, except: Vec<Cidr>, ports: Ports) {
        self.blocks.push(Block { net, except, ports });
    }

    /// Whether traffic with `peer` of `proto` to port `port` is allowed.
    pub fn allows(&self, peer: Ipv4Addr, proto: u8, port: u16) -> bool {
        self.any.as_ref().is_some_and(|p| p.allows(proto, port))
            || self
                .peers
                .get(&u32::from(peer))
                .is_some_and(|p| p.allows(proto, port))
            || self
                .blocks
                .iter()
                .any(|b| b.contains(peer) && b.ports.allows(proto, port))
    }

    /// Whether it allows nothing at all.
    pub fn is_deny_all(&self) -> bool {
        self.any.is_none() && self.peers.is_empty() && self.blocks.is_empty()
    }

    /// Peer addresses it names (views).
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }
}

/// What the policies selecting one local pod say: a rule set per direction
/// it is isolated in.
#[derive(Debug, Clone, Default)]
pub struct PodPolicy {
    /// Isolated for ingress: what may come in.
    pub ingress: Option<RuleSet>,
    /// Isolated for egress: what may go out.
    pub egress: Option<RuleSet>,
}

/// The verdict on a connection's first packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed (or no policy concerns it).
    Allow,
    /// The source pod's egress rules do not allow it.
    DenyEgress,
    /// The destination pod's ingress rules do not allow it.
    DenyIngress,
}

/// The compiled policies of a node's pods (see the module documentation).
#[derive(Debug, Clone)]
pub struct PolicyTable {
    pods: HashMap<u32, Arc<PodPolicy>, MacHashBuilder>,
    generation: u32,
}

impl Default for PolicyTable {
    fn default() -> Self {
        PolicyTable {
            pods: HashMap::with_hasher(MacHashBuilder::new(0x7477_696c_6c5f_706f)),
            generation: 0,
        }
    }
}

impl PolicyTable {
    /// An empty table (nothing isolated).
    pub fn new() -> PolicyTable {
        PolicyTable::default()
    }

    /// Sets what the policies say about the local pod at `ip`. A pod that
    /// is isolated in no direction is not kept.
    pub fn insert(&mut self, ip: Ipv4Addr, p: PodPolicy) {
        if p.ingress.is_none() && p.egress.is_none() {
            self.pods.remove(&u32::from(ip));
        } else {
            self.pods.insert(u32::from(ip), Arc::new(p));
        }
    }

    /// Whether no local pod is isolated.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// Isolated local pods.
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    /// The policy of the local pod at `ip`, if it is isolated.
    #[inline]
    pub fn pod(&self, ip: Ipv4Addr) -> Option<&PodPolicy> {
        self.pods.get(&u32::from(ip)).map(|p| &**p)
    }

    /// The isolated local pods.
    pub fn pods(&self) -> impl Iterator<Item = (Ipv4Addr, &PodPolicy)> + '_ {
        self.pods.iter().map(|(ip, p)| (Ipv4Addr::from(*ip), &**p))
    }

    /// Which publication this is: [`super::SwitchState::set_policy`]
    /// numbers them, so that connections judged under an older one are
    /// judged again.
    #[inline]
    pub fn generation(&self) -> u32 {
        self.generation
    }

    pub(crate) fn set_generation(&mut self, g: u32) {
        self.generation = g;
    }

    /// Whether a packet between `src` and `dst` concerns a policy: either
    /// end is an isolated local pod.
    #[inline]
    pub fn concerns(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        !self.pods.is_empty()
            && (self.pods.contains_key(&u32::from(src)) || self.pods.contains_key(&u32::from(dst)))
    }

    /// The verdict on a new connection from `src` to `dst:port` over
    /// `proto`: the source's egress rules if it is an isolated local pod,
    /// then the destination's ingress rules if it is one, unless
    /// `from_node` (traffic from the destination pod's own node, which
    /// the reference always allows in).
    pub fn verdict(
        &self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        proto: u8,
        port: u16,
        from_node: bool,
    ) -> Verdict {
        if let Some(rs) = self.pod(src).and_then(|p| p.egress.as_ref()) {
            if !rs.allows(dst, proto, port) {
                return Verdict::DenyEgress;
            }
        }
        if from_node {
            return Verdict::Allow;
        }
        match self.pod(dst).and_then(|p| p.ingress.as_ref()) {
            Some(rs) if !rs.allows(src, proto, port) => Verdict::DenyIngress,
            _ => Verdict::Allow,
        }
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
