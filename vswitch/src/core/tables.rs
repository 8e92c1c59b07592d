//! The router's tables: remote nodes by subnet (longest prefix first) and by
//! underlay address, and the neighbor (IP → MAC) table of the local subnet.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use encap::{Cidr, MacAddr};

/// Another node of the cluster, as the control plane describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteNode {
    /// Its pod subnet.
    pub subnet: Cidr,
    /// Its underlay address and tunnel port.
    pub endpoint: SocketAddrV4,
    /// Its VTEP MAC (vxlan); unused by the udp backend.
    pub vtep_mac: MacAddr,
    /// How its subnet is reached.
    pub via: Via,
}

/// How the router reaches a remote node's subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Via {
    /// Encapsulated, through the tunnel socket.
    #[default]
    Tunnel,
    /// Unencapsulated, out the host port: the host's routing table holds a
    /// route to the subnet (via the node's address: host-gw, DirectRouting;
    /// or learned by BGP), and the host kernel forwards it, super-frames
    /// whole.
    Host,
}

/// Remote nodes, indexed for the two lookups of the data path.
#[derive(Debug, Default, Clone)]
pub struct RemoteTable {
    nodes: Vec<RemoteNode>,
    /// (prefix length, masked network → node index), longest prefix first.
    by_prefix: Vec<(u8, HashMap<u32, u32>)>,
    by_ip: HashMap<Ipv4Addr, u32>,
}

impl RemoteTable {
    /// Builds the table. A later node with the same subnet or underlay
    /// address replaces an earlier one (the control plane guarantees
    /// uniqueness; this only keeps the table consistent if it did not).
    pub fn new(nodes: &[RemoteNode]) -> RemoteTable {
        let mut t = RemoteTable {
            nodes: nodes.to_vec(),
            ..Default::default()
        };
        for (i, n) in t.nodes.iter().enumerate() {
            let i = i as u32;
            let len = n.subnet.prefix();
            let slot = match t.by_prefix.iter().position(|(l, _)| *l == len) {
                Some(p) => p,
                None => {
                    t.by_prefix.push((len, HashMap::new()));
                    t.by_prefix.len() - 1
                }
            };
            t.by_prefix[slot].1.insert(u32::from(n.subnet.addr()), i);
            t.by_ip.insert(*n.endpoint.ip(), i);
        }
        t.by_prefix.sort_by_key(|e| std::cmp::Reverse(e.0));
        t
    }

    /// The node whose subnet holds `ip` (longest prefix).
    pub fn route(&self, ip: Ipv4Addr) -> Option<&RemoteNode> {
        let a = u32::from(ip);
        for (len, map) in &self.by_prefix {
            let m = if *len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(*len))
            };
            if let Some(&i) = map.get(&(a & m)) {
                return self.nodes.get(i as usize);
            }
        }
        None
    }

    /// The node with this underlay address.
    pub fn by_underlay(&self, ip: Ipv4Addr) -> Option<&RemoteNode> {
        self.by_ip
            .get(&ip)
            .and_then(|&i| self.nodes.get(i as usize))
    }

    /// All nodes.
    pub fn nodes(&self) -> &[RemoteNode] {
        &self.nodes
    }
}

#[derive(Debug, Clone, Copy)]
struct Neighbor {
    mac: MacAddr,
    fixed: bool,
    seen: Instant,
}

/// What an ARP observation did to the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighborUpdate {
    /// New or changed entry.
    Learned,
    /// Same MAC as before (timestamp refreshed).
    Refreshed,
    /// Refused: the address is held by an attached port with another MAC, or
    /// the table is full.
    Refused,
}

/// IP → MAC on the local subnet. Attached ports are fixed entries; others
/// are learned from ARP and age out.
#[derive(Debug)]
pub struct NeighborTable {
    map: HashMap<Ipv4Addr, Neighbor>,
    /// When an ARP request was last sent for an address (rate limit).
    asked: HashMap<Ipv4Addr, Instant>,
    capacity: usize,
    aging: Duration,
}

/// At most one ARP request per address per this interval.
pub const ARP_RETRY: Duration = Duration::from_secs(1);

impl NeighborTable {
    /// An empty table holding at most `capacity` learned entries.
    pub fn new(capacity: usize, aging: Duration) -> NeighborTable {
        NeighborTable {
            map: HashMap::new(),
            asked: HashMap::new(),
            capacity,
            aging,
        }
    }

    /// A fixed entry (an attached port): never ages, never overwritten by ARP.
    pub fn insert_fixed(&mut self, ip: Ipv4Addr, mac: MacAddr, now: Instant) {
        self.map.insert(
            ip,
            Neighbor {
                mac,
                fixed: true,
                seen: now,
            },
        );
        self.asked.remove(&ip);
    }

    /// Removes an entry, fixed or learned.
    pub fn remove(&mut self, ip: Ipv4Addr) {
        self.map.remove(&ip);
    }

    /// Records what ARP said.
    pub fn observe(&mut self, ip: Ipv4Addr, mac: MacAddr, now: Instant) -> NeighborUpdate {
        match self.map.get_mut(&ip) {
            Some(n) if n.fixed => {
                if n.mac == mac {
                    NeighborUpdate::Refreshed
                } else {
                    NeighborUpdate::Refused
                }
            }
            Some(n) => {
                n.seen = now;
                if n.mac == mac {
                    NeighborUpdate::Refreshed
                } else {
                    n.mac = mac;
                    NeighborUpdate::Learned
                }
            }
            None => {
                if self.map.len() >= self.capacity {
                    return NeighborUpdate::Refused;
                }
                self.map.insert(
                    ip,
                    Neighbor {
                        mac,
                        fixed: false,
                        seen: now,
                    },
                );
                self.asked.remove(&ip);
                NeighborUpdate::Learned
            }
        }
    }

    /// The MAC of `ip`, if known.
    pub fn lookup(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        self.map.get(&ip).map(|n| n.mac)
    }

    /// Whether an ARP request for `ip` may be sent now; records it if so.
    pub fn may_ask(&mut self, ip: Ipv4Addr, now: Instant) -> bool {
        match self.asked.get(&ip) {
            Some(t) if now.saturating_duration_since(*t) < ARP_RETRY => false,
            _ => {
                if self.asked.len() >= self.capacity {
                    self.asked
                        .retain(|_, t| now.saturating_duration_since(*t) < ARP_RETRY);
                    if self.asked.len() >= self.capacity {
                        return false;
                    }
                }
                self.asked.insert(ip, now);
                true
            }
        }
    }

    /// Expires learned entries idle for the aging time; returns the next
    /// deadline, if any learned entry remains.
    pub fn run(&mut self, now: Instant) -> Option<Instant> {
        self.expire(now, |_| {})
    }

    /// [`NeighborTable::run`], telling `gone` each address that expired.
    pub fn expire(&mut self, now: Instant, mut gone: impl FnMut(Ipv4Addr)) -> Option<Instant> {
        let aging = self.aging;
        self.map.retain(|ip, n| {
            let keep = n.fixed || now.saturating_duration_since(n.seen) < aging;
            if !keep {
                gone(*ip);
            }
            keep
        });
        self.asked
            .retain(|_, t| now.saturating_duration_since(*t) < ARP_RETRY);
        self.map
            .values()
            .filter(|n| !n.fixed)
            .map(|n| n.seen + aging)
            .min()
    }

    /// Entries (ip, mac, fixed).
    pub fn iter(&self) -> impl Iterator<Item = (Ipv4Addr, MacAddr, bool)> + '_ {
        self.map.iter().map(|(ip, n)| (*ip, n.mac, n.fixed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(net: [u8; 4], len: u8, ip: [u8; 4]) -> RemoteNode {
        RemoteNode {
            subnet: Cidr::new(net.into(), len).unwrap(),
            endpoint: SocketAddrV4::new(ip.into(), 8472),
            vtep_mac: MacAddr([2, 0, 0, 0, 0, ip[3]]),
            via: Via::Tunnel,
        }
    }

    #[test]
    fn longest_prefix_wins() {
        let t = RemoteTable::new(&[
            node([10, 244, 0, 0], 16, [192, 168, 0, 9]),
            node([10, 244, 2, 0], 24, [192, 168, 0, 2]),
        ]);
        assert_eq!(
            t.route([10, 244, 2, 7].into()).unwrap().endpoint.ip(),
            &Ipv4Addr::new(192, 168, 0, 2)
        );
        assert_eq!(
            t.route([10, 244, 3, 7].into()).unwrap().endpoint.ip(),
            &Ipv4Addr::new(192, 168, 0, 9)
        );
        assert!(t.route([10, 245, 0, 1].into()).is_none());
        assert!(t.by_underlay([192, 168, 0, 2].into()).is_some());
        assert!(t.by_underlay([192, 168, 0, 3].into()).is_none());
    }

    #[test]
    fn neighbors_fixed_learned_aging() {
        let t0 = Instant::now();
        let mut n = NeighborTable::new(2, Duration::from_secs(10));
        let a = Ipv4Addr::new(10, 244, 1, 3);
        let b = Ipv4Addr::new(10, 244, 1, 4);
        let c = Ipv4Addr::new(10, 244, 1, 5);
        n.insert_fixed(a, MacAddr([2, 0, 0, 0, 0, 3]), t0);
        assert_eq!(
            n.observe(a, MacAddr([2, 0, 0, 0, 0, 9]), t0),
            NeighborUpdate::Refused
        );
        assert_eq!(n.lookup(a), Some(MacAddr([2, 0, 0, 0, 0, 3])));
        assert_eq!(
            n.observe(b, MacAddr([2, 0, 0, 0, 0, 4]), t0),
            NeighborUpdate::Learned
        );
        assert_eq!(
            n.observe(c, MacAddr([2, 0, 0, 0, 0, 5]), t0),
            NeighborUpdate::Refused
        ); // full
        assert_eq!(
            n.run(t0 + Duration::from_secs(5)),
            Some(t0 + Duration::from_secs(10))
        );
        assert_eq!(n.run(t0 + Duration::from_secs(10)), None);
        assert_eq!(n.lookup(b), None);
        assert!(n.lookup(a).is_some());
    }

    #[test]
    fn arp_requests_are_rate_limited() {
        let t0 = Instant::now();
        let mut n = NeighborTable::new(8, Duration::from_secs(10));
        let a = Ipv4Addr::new(10, 244, 1, 3);
        assert!(n.may_ask(a, t0));
        assert!(!n.may_ask(a, t0 + Duration::from_millis(500)));
        assert!(n.may_ask(a, t0 + ARP_RETRY));
    }
}
