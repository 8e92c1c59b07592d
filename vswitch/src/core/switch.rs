//! The switch: one L2 segment (pods and the host port) with MAC learning, its
//! router (the gateway), and the tunnel to the other nodes.
//!
//! `process_port` and `process_tunnel` take a frame in a [`PacketBuf`], may
//! rewrite it in place (MACs, TTL, a pushed VXLAN header, a reply built over
//! it) and return the one [`Action`] the driver performs with the buffer's
//! data. Nothing here reads a clock, a socket or an fd.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use encap::{arp, ethernet, flow, icmp, ipv4, vnet, vxlan, Cidr, MacAddr, PacketBuf};

use super::counters::{Counters, DropReason};
use super::mac_table::{Learn, MacTable, MacTableConfig};
use super::tables::{NeighborTable, NeighborUpdate, RemoteNode, RemoteTable};
use super::PortId;

/// How frames cross to other nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// VXLAN with this VNI: the inner Ethernet frame goes from this node's
    /// VTEP MAC to the remote node's (flannel's vxlan backend).
    Vxlan {
        /// VXLAN network identifier.
        vni: u32,
    },
    /// The bare IPv4 packet as the UDP payload (flannel's udp backend).
    Udp,
}

/// The switch's fixed configuration.
#[derive(Debug, Clone)]
pub struct SwitchConfig {
    /// This node's pod subnet.
    pub subnet: Cidr,
    /// The gateway address (the subnet's .1), owned by the router.
    pub gateway: Ipv4Addr,
    /// The whole cluster network.
    pub cluster: Cidr,
    /// The router's MAC, which is also this node's VTEP MAC.
    pub router_mac: MacAddr,
    /// The tunnel.
    pub backend: Backend,
    /// The largest inner IPv4 packet the tunnel carries (underlay MTU minus
    /// the backend's overhead plus, for vxlan, the inner Ethernet header's 14
    /// bytes that the overhead already counted).
    pub tunnel_mtu: usize,
    /// MAC learning limits and aging.
    pub mac: MacTableConfig,
    /// Learned neighbors kept at most.
    pub neighbor_capacity: usize,
    /// Learned neighbors' aging.
    pub neighbor_aging: Duration,
    /// Seed of the flow hash (outer source port, worker choice).
    pub flow_seed: u32,
}

/// What a port is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    /// A pod's TAP.
    Pod,
    /// The host-side TAP: traffic for the outside leaves the segment here.
    Host,
}

/// An attached port: its MAC and address are known (the agent assigned them)
/// and become static entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortConfig {
    /// What it is.
    pub kind: PortKind,
    /// The MAC of the interface at the far end (in the pod or the host).
    pub mac: MacAddr,
    /// Its address on the subnet.
    pub ip: Ipv4Addr,
}

/// What the driver does with the buffer after a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Action {
    /// Write the frame to this port.
    Output(PortId),
    /// Write the frame to every port of the segment except `except`.
    Flood {
        /// The port it came from, if any.
        except: Option<PortId>,
    },
    /// Send the buffer's data as one UDP datagram to `dst`; `hash` is the
    /// inner flow's hash (choose the source socket/port with it). When the
    /// buffer's `offload` says GSO, the data is a super-packet: cut it into
    /// segments of `offload.gso_size` behind copies of `data[..l3]`.
    Tunnel {
        /// Remote node's underlay address and port.
        dst: SocketAddrV4,
        /// Flow hash of the inner packet.
        hash: u32,
        /// Offset of the inner IPv4 header in the data (22 for vxlan: VXLAN
        /// and inner Ethernet headers; 0 for udp).
        l3: usize,
    },
    /// Taken by the router; nothing to send.
    Consumed,
    /// Dropped and counted.
    Drop(DropReason),
}

/// Where a packet entered the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ingress {
    Port(PortId),
    Tunnel,
    /// Built by the router itself (replies and errors).
    Router,
}

/// The forwarding core of one node.
#[derive(Debug)]
pub struct Switch {
    cfg: SwitchConfig,
    ports: Vec<Option<PortConfig>>,
    host_port: Option<PortId>,
    macs: MacTable,
    neighbors: NeighborTable,
    remotes: RemoteTable,
    counters: Counters,
}

impl Switch {
    /// A switch with no ports and no remote nodes.
    pub fn new(cfg: SwitchConfig) -> Switch {
        Switch {
            macs: MacTable::new(cfg.mac),
            neighbors: NeighborTable::new(cfg.neighbor_capacity, cfg.neighbor_aging),
            cfg,
            ports: Vec::new(),
            host_port: None,
            remotes: RemoteTable::default(),
            counters: Counters::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SwitchConfig {
        &self.cfg
    }

    /// Attaches a port: its MAC becomes a static MAC entry and its address a
    /// fixed neighbor. Replaces whatever had the same id.
    pub fn add_port(&mut self, id: PortId, p: PortConfig, now: Instant) {
        self.remove_port(id);
        let i = usize::from(id.0);
        if self.ports.len() <= i {
            self.ports.resize(i + 1, None);
        }
        self.ports[i] = Some(p);
        if p.kind == PortKind::Host {
            self.host_port = Some(id);
        }
        let _ = self.macs.insert_static(p.mac, id);
        self.neighbors.insert_fixed(p.ip, p.mac, now);
    }

    /// Detaches a port and forgets everything learned on it.
    pub fn remove_port(&mut self, id: PortId) -> Option<PortConfig> {
        let p = self.ports.get_mut(usize::from(id.0))?.take()?;
        if self.host_port == Some(id) {
            self.host_port = None;
        }
        self.macs.flush_port(id);
        if self.neighbors.lookup(p.ip) == Some(p.mac) {
            self.neighbors.remove(p.ip);
        }
        Some(p)
    }

    /// The attached ports, for flooding.
    pub fn ports(&self) -> impl Iterator<Item = (PortId, &PortConfig)> + '_ {
        self.ports
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.as_ref().map(|p| (PortId(i as u16), p)))
    }

    /// Replaces the table of remote nodes.
    pub fn set_remotes(&mut self, nodes: &[RemoteNode]) {
        self.remotes = RemoteTable::new(nodes);
    }

    /// The remote nodes.
    pub fn remotes(&self) -> &RemoteTable {
        &self.remotes
    }

    /// The MAC table, for inspection.
    pub fn macs(&self) -> &MacTable {
        &self.macs
    }

    /// The neighbor table, for inspection.
    pub fn neighbors(&self) -> &NeighborTable {
        &self.neighbors
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Ages MAC and neighbor entries; returns when to call again.
    pub fn run(&mut self, now: Instant) -> Option<Instant> {
        let a = self.macs.run(now);
        let b = self.neighbors.run(now);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn drop(&mut self, r: DropReason) -> Action {
        self.counters.drop(r);
        Action::Drop(r)
    }

    /// A frame read from a port of the segment.
    pub fn process_port(&mut self, in_port: PortId, pkt: &mut PacketBuf, now: Instant) -> Action {
        if self
            .ports
            .get(usize::from(in_port.0))
            .is_none_or(|p| p.is_none())
        {
            return self.drop(DropReason::UnknownPort);
        }
        let (src, dst, ethertype) = match ethernet::Frame::new_checked(pkt.data()) {
            Ok(f) => (f.src(), f.dst(), f.ethertype()),
            Err(_) => return self.drop(DropReason::Truncated),
        };
        if !src.is_unicast() {
            return self.drop(DropReason::BadSrcMac);
        }
        if src == self.cfg.router_mac {
            return self.drop(DropReason::MacSpoof);
        }
        if let Learn::Static { port } = self.macs.learn(src, in_port, now) {
            if port != in_port {
                return self.drop(DropReason::MacSpoof);
            }
        }
        if dst == self.cfg.router_mac {
            return match ethertype {
                ethernet::ETHERTYPE_IPV4 => self.route(Ingress::Port(in_port), pkt, now),
                ethernet::ETHERTYPE_ARP => self.router_arp(in_port, pkt, now),
                _ => self.drop(DropReason::UnsupportedEthertype),
            };
        }
        if dst.is_multicast() {
            if ethertype == ethernet::ETHERTYPE_ARP {
                // Broadcast ARP: the router answers for the gateway (and
                // learns the sender there); anything else is learned from
                // and floods as on any bridge.
                if let Ok(p) = arp::Packet::new_checked(&pkt.data()[ethernet::HEADER_LEN..]) {
                    if p.target_ip() == self.cfg.gateway {
                        return self.router_arp(in_port, pkt, now);
                    }
                    self.snoop_arp(&arp::Repr::parse(&p), now);
                }
            }
            self.counters.flooded += 1;
            return Action::Flood {
                except: Some(in_port),
            };
        }
        match self.macs.lookup(dst) {
            Some(p) if p == in_port => self.drop(DropReason::SamePort),
            Some(p) => {
                self.counters.switched += 1;
                Action::Output(p)
            }
            None => {
                self.counters.flooded += 1;
                Action::Flood {
                    except: Some(in_port),
                }
            }
        }
    }

    /// A UDP datagram received on the tunnel socket from `src`.
    pub fn process_tunnel(
        &mut self,
        src: SocketAddrV4,
        pkt: &mut PacketBuf,
        now: Instant,
    ) -> Action {
        if self.remotes.by_underlay(*src.ip()).is_none() {
            return self.drop(DropReason::UnknownSender);
        }
        match self.cfg.backend {
            Backend::Vxlan { vni } => {
                match vxlan::parse(pkt.data()) {
                    Ok(v) if v == vni => {}
                    Ok(_) => return self.drop(DropReason::BadVni),
                    Err(encap::Error::Truncated) => return self.drop(DropReason::Truncated),
                    Err(_) => return self.drop(DropReason::BadVxlanHeader),
                }
                if pkt.pull_front(vxlan::HEADER_LEN).is_err() {
                    return self.drop(DropReason::Truncated);
                }
                let (dst, ethertype) = match ethernet::Frame::new_checked(pkt.data()) {
                    Ok(f) => (f.dst(), f.ethertype()),
                    Err(_) => return self.drop(DropReason::Truncated),
                };
                if dst != self.cfg.router_mac {
                    return self.drop(DropReason::NotForVtep);
                }
                if ethertype != ethernet::ETHERTYPE_IPV4 {
                    return self.drop(DropReason::BadInner);
                }
            }
            Backend::Udp => {
                let router = self.cfg.router_mac;
                match pkt.push_front(ethernet::HEADER_LEN) {
                    Ok(h) => {
                        let _ = ethernet::emit(h, router, router, ethernet::ETHERTYPE_IPV4);
                    }
                    Err(_) => return self.drop(DropReason::NoRoom),
                }
            }
        }
        self.counters.decapsulated += 1;
        self.route(Ingress::Tunnel, pkt, now)
    }

    /// Learns the sender of an ARP packet seen on the segment if it is on
    /// the local subnet (attached ports' addresses cannot be taken over).
    fn snoop_arp(&mut self, a: &arp::Repr, now: Instant) {
        let ip = a.sender_ip;
        if self.cfg.subnet.contains(ip)
            && ip != self.cfg.gateway
            && ip != self.cfg.subnet.addr()
            && ip != self.cfg.subnet.broadcast()
            && a.sender_mac.is_unicast()
            && self.neighbors.observe(ip, a.sender_mac, now) == NeighborUpdate::Learned
        {
            self.counters.neighbors_learned += 1;
        }
    }

    /// ARP addressed to the router (or a broadcast request for the gateway).
    fn router_arp(&mut self, in_port: PortId, pkt: &mut PacketBuf, now: Instant) -> Action {
        let a = match arp::Packet::new_checked(&pkt.data()[ethernet::HEADER_LEN..]) {
            Ok(p) => arp::Repr::parse(&p),
            Err(_) => return self.drop(DropReason::BadArp),
        };
        self.snoop_arp(&a, now);
        if a.operation != arp::OP_REQUEST || a.target_ip != self.cfg.gateway {
            return Action::Consumed;
        }
        let reply = arp::Repr {
            operation: arp::OP_REPLY,
            sender_mac: self.cfg.router_mac,
            sender_ip: self.cfg.gateway,
            target_mac: a.sender_mac,
            target_ip: a.sender_ip,
        };
        let d = pkt.data_mut();
        if ethernet::emit(
            d,
            a.sender_mac,
            self.cfg.router_mac,
            ethernet::ETHERTYPE_ARP,
        )
        .is_err()
            || reply.emit(&mut d[ethernet::HEADER_LEN..]).is_err()
        {
            return self.drop(DropReason::BadArp);
        }
        pkt.truncate(ethernet::HEADER_LEN + arp::PACKET_LEN);
        pkt.offload = vnet::Header::default();
        self.counters.arp_replies += 1;
        Action::Output(in_port)
    }

    /// Routes the IPv4 packet behind the Ethernet header at the front of `pkt`.
    fn route(&mut self, ingress: Ingress, pkt: &mut PacketBuf, now: Instant) -> Action {
        let l3 = &pkt.data()[ethernet::HEADER_LEN..];
        let (src, dst, ttl, total, df) = match ipv4::Packet::new_checked(l3) {
            Ok(p) => (p.src(), p.dst(), p.ttl(), p.total_len(), p.dont_frag()),
            Err(encap::Error::Checksum) => return self.drop(DropReason::BadIpChecksum),
            Err(encap::Error::Truncated) => return self.drop(DropReason::Truncated),
            Err(_) => return self.drop(DropReason::BadIpHeader),
        };
        // Drop Ethernet padding: the packet is exactly its total length now.
        pkt.truncate(ethernet::HEADER_LEN + total);
        let _ = src;

        if dst == self.cfg.gateway {
            return self.for_gateway(pkt, now);
        }
        let forwarding = ingress != Ingress::Router;

        enum Hop {
            Local(MacAddr),
            Remote(RemoteNode),
            Host(PortId, MacAddr),
        }
        let hop = if self.cfg.subnet.contains(dst) {
            if dst == self.cfg.subnet.addr() || dst == self.cfg.subnet.broadcast() {
                return self.drop(DropReason::SubnetBroadcast);
            }
            match self.neighbors.lookup(dst) {
                Some(mac) => Hop::Local(mac),
                None => return self.resolve(dst, pkt, now),
            }
        } else if let Some(n) = self.remotes.route(dst) {
            if ingress == Ingress::Tunnel {
                return self.drop(DropReason::NoRoute); // no tunnel-to-tunnel transit
            }
            Hop::Remote(*n)
        } else if self.cfg.cluster.contains(dst) {
            return self.drop(DropReason::NoRoute);
        } else {
            match (ingress, self.host_port) {
                (Ingress::Tunnel, _) | (_, None) => return self.drop(DropReason::NoRoute),
                (Ingress::Port(p), Some(h)) if p == h => return self.drop(DropReason::NoRoute),
                (_, Some(h)) => match self.ports.get(usize::from(h.0)).copied().flatten() {
                    Some(hp) => Hop::Host(h, hp.mac),
                    None => return self.drop(DropReason::NoRoute),
                },
            }
        };

        if forwarding && ttl <= 1 {
            self.counters.drop(DropReason::TtlExceeded);
            return self
                .icmp_error(
                    pkt,
                    icmp::TYPE_TIME_EXCEEDED,
                    icmp::CODE_TTL_EXCEEDED,
                    0,
                    now,
                )
                .unwrap_or(Action::Drop(DropReason::TtlExceeded));
        }
        if let Hop::Remote(_) = hop {
            if pkt.offload.is_gso() {
                // A super-frame: what must fit is each segment.
                let seg = match self.gso_segment_len(pkt) {
                    Some(n) => n,
                    None => return self.drop(DropReason::UnsupportedOffload),
                };
                if seg > self.cfg.tunnel_mtu {
                    return self.drop(DropReason::GsoSegmentTooBig);
                }
            } else if total > self.cfg.tunnel_mtu {
                if !df {
                    return self.drop(DropReason::MtuNoFragment);
                }
                self.counters.drop(DropReason::MtuFragNeeded);
                let mtu = self.cfg.tunnel_mtu as u32;
                return self
                    .icmp_error(
                        pkt,
                        icmp::TYPE_DEST_UNREACHABLE,
                        icmp::CODE_FRAG_NEEDED,
                        mtu,
                        now,
                    )
                    .unwrap_or(Action::Drop(DropReason::MtuFragNeeded));
            }
        }
        let router = self.cfg.router_mac;
        {
            let d = pkt.data_mut();
            if forwarding {
                ipv4::Packet::new_unchecked(&mut d[ethernet::HEADER_LEN..]).decrement_ttl();
            }
        }
        match hop {
            Hop::Local(mac) => {
                self.set_macs(pkt, mac, router);
                self.counters.routed_local += 1;
                match self.macs.lookup(mac) {
                    Some(p) => Action::Output(p),
                    None => Action::Flood { except: None },
                }
            }
            Hop::Host(port, mac) => {
                self.set_macs(pkt, mac, router);
                self.counters.routed_host += 1;
                Action::Output(port)
            }
            Hop::Remote(n) => {
                let hash = flow::hash_ipv4(&pkt.data()[ethernet::HEADER_LEN..], self.cfg.flow_seed);
                match self.cfg.backend {
                    Backend::Vxlan { vni } => {
                        self.set_macs(pkt, n.vtep_mac, router);
                        match pkt.push_front(vxlan::HEADER_LEN) {
                            Ok(h) => {
                                if vxlan::emit(h, vni).is_err() {
                                    return self.drop(DropReason::NoRoom);
                                }
                            }
                            Err(_) => return self.drop(DropReason::NoRoom),
                        }
                    }
                    Backend::Udp => {
                        if pkt.pull_front(ethernet::HEADER_LEN).is_err() {
                            return self.drop(DropReason::Truncated);
                        }
                    }
                }
                self.counters.encapsulated += 1;
                let l3 = match self.cfg.backend {
                    Backend::Vxlan { .. } => vxlan::HEADER_LEN + ethernet::HEADER_LEN,
                    Backend::Udp => 0,
                };
                Action::Tunnel {
                    dst: n.endpoint,
                    hash,
                    l3,
                }
            }
        }
    }

    /// The IP length of each segment of a GSO super-frame (IP header, L4
    /// header, `gso_size` payload), or `None` if it is not TCP/IPv4 or
    /// UDP/IPv4 GSO or its headers are short.
    fn gso_segment_len(&self, pkt: &PacketBuf) -> Option<usize> {
        let ip = pkt.data().get(ethernet::HEADER_LEN..)?;
        let p = ipv4::Packet::new_checked(ip).ok()?;
        let hl = p.header_len();
        let l4 = match (pkt.offload.gso_type & !vnet::GSO_ECN, p.protocol()) {
            (vnet::GSO_TCPV4, ipv4::PROTO_TCP) => usize::from(ip.get(hl + 12)? >> 4) * 4,
            (vnet::GSO_UDP_L4, ipv4::PROTO_UDP) => 8,
            _ => return None,
        };
        Some(hl + l4 + usize::from(pkt.offload.gso_size))
    }

    fn set_macs(&self, pkt: &mut PacketBuf, dst: MacAddr, src: MacAddr) {
        if let Ok(mut f) = ethernet::Frame::new_checked(pkt.data_mut()) {
            f.set_dst(dst);
            f.set_src(src);
        }
    }

    /// A packet for the gateway address itself: only ICMP echo is answered.
    fn for_gateway(&mut self, pkt: &mut PacketBuf, now: Instant) -> Action {
        match icmp::echo_reply_in_place(&mut pkt.data_mut()[ethernet::HEADER_LEN..]) {
            Ok(()) => {
                pkt.offload = vnet::Header::default();
                self.counters.icmp_echo_replies += 1;
                self.route(Ingress::Router, pkt, now)
            }
            Err(encap::Error::Unsupported) => self.drop(DropReason::ToGatewayUnsupported),
            Err(_) => self.drop(DropReason::BadIcmp),
        }
    }

    /// Replaces the packet with an ICMP error about it from the gateway and
    /// routes that back. `None` if no error may be sent (RFC 1122) or it did
    /// not fit; the caller has counted the original's drop.
    fn icmp_error(
        &mut self,
        pkt: &mut PacketBuf,
        icmp_type: u8,
        code: u8,
        rest: u32,
        now: Instant,
    ) -> Option<Action> {
        {
            let p = ipv4::Packet::new_checked(&pkt.data()[ethernet::HEADER_LEN..]).ok()?;
            if !icmp::may_send_error(&p) {
                return None;
            }
        }
        let e = icmp::ErrorRepr {
            icmp_type,
            code,
            rest,
            src: self.cfg.gateway,
        };
        let (buf, start) = pkt.raw_mut();
        let n = icmp::error_in_place(buf, start + ethernet::HEADER_LEN, &e).ok()?;
        pkt.set_bounds(start, start + ethernet::HEADER_LEN + n)
            .ok()?;
        pkt.offload = vnet::Header::default();
        self.counters.icmp_errors += 1;
        Some(self.route(Ingress::Router, pkt, now))
    }

    /// No MAC known for a local address: replace the packet by an ARP
    /// request for it (at most one per address per second) and drop it.
    fn resolve(&mut self, target: Ipv4Addr, pkt: &mut PacketBuf, now: Instant) -> Action {
        self.counters.drop(DropReason::NeighborUnresolved);
        if !self.neighbors.may_ask(target, now) {
            return Action::Drop(DropReason::NeighborUnresolved);
        }
        let req = arp::Repr {
            operation: arp::OP_REQUEST,
            sender_mac: self.cfg.router_mac,
            sender_ip: self.cfg.gateway,
            target_mac: MacAddr::ZERO,
            target_ip: target,
        };
        let start = pkt.headroom();
        if pkt
            .set_bounds(start, start + ethernet::HEADER_LEN + arp::PACKET_LEN)
            .is_err()
        {
            return Action::Drop(DropReason::NeighborUnresolved);
        }
        let d = pkt.data_mut();
        if ethernet::emit(
            d,
            MacAddr::BROADCAST,
            self.cfg.router_mac,
            ethernet::ETHERTYPE_ARP,
        )
        .is_err()
            || req.emit(&mut d[ethernet::HEADER_LEN..]).is_err()
        {
            return Action::Drop(DropReason::NeighborUnresolved);
        }
        pkt.offload = vnet::Header::default();
        self.counters.arp_requests += 1;
        Action::Flood { except: None }
    }
}

#[cfg(test)]
#[path = "switch_tests.rs"]
mod tests;
