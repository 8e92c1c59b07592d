//! The switch: one L2 segment (pods and the host port) with MAC learning, its
//! router (the gateway), and the tunnel to the other nodes.
//!
//! `process_port` and `process_tunnel` take a frame in a [`PacketBuf`], may
//! rewrite it in place (MACs, TTL, a pushed VXLAN header, a reply built over
//! it) and return the one [`Action`] the driver performs with the buffer's
//! data. Nothing here reads a clock, a socket or an fd.
//!
//! A node runs one [`Switch`] per worker, all over one [`SwitchState`]: the
//! configured tables and the Service table as snapshots each switch caches,
//! the learning tables and the connection table shared. A switch's own
//! state is its counters.
//!
//! Routed packets go through Service NAT (`service_nat.rs`) between the
//! IPv4 header checks and the next hop; bridged frames of a translated
//! connection are routed to get there.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::{ArcSwap, Cache};
use encap::{arp, ethernet, flow, gso, icmp, ipv4, vnet, vxlan, MacAddr, PacketBuf};

use super::config::{Backend, PortConfig, PortKind, SwitchConfig};
use super::counters::{Counters, DropReason};
use super::learning::{SharedMacTable, SharedNeighbors};
use super::mac_table::Learn;
use super::policy::PolicyTable;
use super::ratelimit::FloodClass;
use super::service::ServiceTable;
use super::state::{SwitchState, Tables};
use super::tables::{NeighborUpdate, RemoteNode, Via};
use super::PortId;

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
        /// Symmetric flow hash of the inner packet
        /// ([`encap::flow::symmetric_ipv4`]): its lane picks the send
        /// socket, hence the source port.
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

/// The forwarding core as one worker runs it: the node's shared state, this
/// worker's cached snapshot of its tables, and this worker's counters.
#[derive(Debug)]
pub struct Switch {
    state: Arc<SwitchState>,
    tables: Cache<Arc<ArcSwap<Tables>>, Arc<Tables>>,
    services: Cache<Arc<ArcSwap<ServiceTable>>, Arc<ServiceTable>>,
    policy: Cache<Arc<ArcSwap<PolicyTable>>, Arc<PolicyTable>>,
    counters: Counters,
}

impl Switch {
    /// A switch with no ports and no remote nodes, and a state of its own.
    pub fn new(cfg: SwitchConfig) -> Switch {
        Switch::shared(Arc::new(SwitchState::new(cfg)))
    }

    /// A switch over a node's shared state (one per worker).
    pub fn shared(state: Arc<SwitchState>) -> Switch {
        Switch {
            tables: Cache::new(Arc::clone(state.tables())),
            services: Cache::new(Arc::clone(state.services())),
            policy: Cache::new(Arc::clone(state.policy())),
            state,
            counters: Counters::default(),
        }
    }

    /// The state this switch shares with the node's other workers.
    pub fn state(&self) -> &Arc<SwitchState> {
        &self.state
    }

    /// Attaches a port (see [`SwitchState::add_port`]).
    pub fn add_port(&mut self, id: PortId, p: PortConfig, now: Instant) {
        self.state.add_port(id, p, now);
    }

    /// Detaches a port and forgets everything learned on it.
    pub fn remove_port(&mut self, id: PortId) -> Option<PortConfig> {
        self.state.remove_port(id)
    }

    /// Replaces the table of remote nodes.
    pub fn set_remotes(&mut self, nodes: &[RemoteNode]) {
        self.state.set_remotes(nodes);
    }

    /// The MAC table (node-wide).
    pub fn macs(&self) -> &SharedMacTable {
        self.state.macs()
    }

    /// The neighbor table (node-wide).
    pub fn neighbors(&self) -> &SharedNeighbors {
        self.state.neighbors()
    }

    /// This switch's counters (one worker's share).
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Ages MAC and neighbor entries and sweeps a step of the connection
    /// table (see [`SwitchState::run`]); returns when to call again.
    pub fn run(&mut self, now: Instant) -> Option<Instant> {
        self.state.run(now)
    }

    /// The per-frame view: the current tables, the shared learning tables,
    /// this switch's counters.
    fn step(&mut self, now: Instant) -> Step<'_> {
        Step {
            t: self.tables.load(),
            services: self.services.load(),
            policy: self.policy.load(),
            state: &self.state,
            counters: &mut self.counters,
            now,
            replying: false,
        }
    }

    /// A frame read from a port of the segment.
    pub fn process_port(&mut self, in_port: PortId, pkt: &mut PacketBuf, now: Instant) -> Action {
        self.step(now).port(in_port, pkt)
    }

    /// A UDP datagram received on the tunnel socket from `src`.
    pub fn process_tunnel(
        &mut self,
        src: SocketAddrV4,
        pkt: &mut PacketBuf,
        now: Instant,
    ) -> Action {
        #[cfg(debug_assertions)]
        let before = self.counters.tunnel_rx_outcomes_total();
        let a = self.step(now).tunnel(src, pkt);
        #[cfg(debug_assertions)]
        debug_assert_eq!(
            self.counters.tunnel_rx_outcomes_total(),
            before + 1,
            "a tunnel packet must end in exactly one outcome counter ({a:?})"
        );
        a
    }
}

/// The next hop of a routed packet.
#[derive(Debug, Clone, Copy)]
enum Hop {
    /// A host of the local subnet, by its MAC.
    Local(MacAddr),
    /// Another node's subnet.
    Remote(RemoteNode),
    /// Out of the cluster, through the host port.
    Host(PortId, MacAddr),
}

/// What routing reads of an IPv4 header.
#[derive(Debug, Clone, Copy)]
struct IpFields {
    dst: Ipv4Addr,
    ttl: u8,
    total: usize,
    df: bool,
    /// Service NAT changed the destination (a translated reply may then
    /// leave toward the host even when it came from the tunnel).
    nat_dst: bool,
    /// A reply of a connection that came in through the host port: it goes
    /// back there whatever its destination.
    to_host: bool,
}

/// One frame's trip through the core.
struct Step<'a> {
    t: &'a Tables,
    services: &'a ServiceTable,
    policy: &'a PolicyTable,
    state: &'a SwitchState,
    counters: &'a mut Counters,
    now: Instant,
    /// Routing a reply the router built (echo reply, ICMP error): the
    /// packet it answers was counted already, so the reply's own fate is
    /// no second outcome (see [`Step::reply`]).
    replying: bool,
}

impl Step<'_> {
    fn drop(&mut self, r: DropReason) -> Action {
        self.count_drop(r);
        Action::Drop(r)
    }

    /// Counts a drop: under its reason, or, for a reply of the router's,
    /// as `replies_dropped`. Every drop is counted here, so that a packet
    /// ends in exactly one outcome counter (see
    /// [`Counters::tunnel_rx_outcomes`]).
    fn count_drop(&mut self, r: DropReason) {
        if self.replying {
            self.counters.replies_dropped += 1;
        } else {
            self.counters.drop(r);
        }
    }

    /// Routes a reply the router built in place of the packet it answers
    /// (already counted): its routing counts neither a drop reason nor
    /// `routed_*`.
    fn reply(&mut self, pkt: &mut PacketBuf) -> Action {
        let was = core::mem::replace(&mut self.replying, true);
        let a = self.route(Ingress::Router, pkt);
        self.replying = was;
        a
    }

    fn cfg(&self) -> &SwitchConfig {
        &self.t.cfg
    }

    /// The port a MAC is pinned to or was learned on.
    #[inline]
    fn port_of(&self, mac: MacAddr) -> Option<PortId> {
        let pinned = self.t.port_with_mac(mac);
        pinned.or_else(|| self.state.macs().lookup(mac))
    }

    fn port(&mut self, in_port: PortId, pkt: &mut PacketBuf) -> Action {
        if self.t.port(in_port).is_none() {
            return self.drop(DropReason::UnknownPort);
        }
        let (src, dst, ethertype) = match ethernet::Frame::new_checked(pkt.data()) {
            Ok(f) => (f.src(), f.dst(), f.ethertype()),
            Err(_) => return self.drop(DropReason::Truncated),
        };
        if !src.is_unicast() {
            return self.drop(DropReason::BadSrcMac);
        }
        if src == self.cfg().router_mac {
            return self.drop(DropReason::MacSpoof);
        }
        if let Some(&PortConfig {
            kind: PortKind::Pod,
            mac,
            ip,
        }) = self.t.port(in_port)
        {
            if let Err(r) = self.port_security(in_port, mac, ip, src, ethertype, pkt) {
                return self.drop(r);
            }
        }
        // An attached port's MAC is pinned to it (a static entry): nothing to
        // learn. Any other source is learned.
        let pinned = match self.t.port_with_mac(src) {
            Some(port) => Some(port),
            None => match self.state.macs().learn(src, in_port, self.now) {
                Learn::Static { port } => Some(port),
                _ => None,
            },
        };
        if pinned.is_some_and(|port| port != in_port) {
            return self.drop(DropReason::MacSpoof);
        }
        if dst == self.cfg().router_mac {
            return match ethertype {
                ethernet::ETHERTYPE_IPV4 => self.route(Ingress::Port(in_port), pkt),
                ethernet::ETHERTYPE_ARP => self.router_arp(in_port, pkt),
                _ => self.drop(DropReason::UnsupportedEthertype),
            };
        }
        // Every port has the pods' MTU: a larger frame (from a pod that
        // raised its own) is dropped, as a bridge drops what its egress
        // port cannot carry.
        if !self.fits_ports(pkt) {
            return self.drop(DropReason::PortMtuExceeded);
        }
        if dst.is_multicast() {
            if ethertype == ethernet::ETHERTYPE_ARP {
                // Broadcast ARP: the router answers for the gateway (and
                // learns the sender there); anything else is learned from
                // and floods as on any bridge.
                if let Ok(p) = arp::Packet::new_checked(&pkt.data()[ethernet::HEADER_LEN..]) {
                    if p.target_ip() == self.cfg().gateway {
                        return self.router_arp(in_port, pkt);
                    }
                    self.snoop_arp(&arp::Repr::parse(&p));
                }
            }
            let class = if dst == MacAddr::BROADCAST {
                FloodClass::Broadcast
            } else {
                FloodClass::Multicast
            };
            return self.flood_from(in_port, class);
        }
        // A bridged packet of a translated connection (a backend's reply to
        // a client on the segment) is routed, to be translated: what
        // br_netfilter does for kube-proxy on a Linux bridge. Policy judges
        // bridged packets that concern an isolated pod here.
        if ethertype == ethernet::ETHERTYPE_IPV4
            && !(self.state.conntrack().is_empty() && self.policy.is_empty())
        {
            match self.bridged_ipv4(in_port, pkt) {
                Ok(true) => return self.route(Ingress::Port(in_port), pkt),
                Ok(false) => {}
                Err(a) => return a,
            }
        }
        match self.port_of(dst) {
            Some(p) if p == in_port => self.drop(DropReason::SamePort),
            Some(p) => {
                self.counters.switched += 1;
                Action::Output(p)
            }
            None => self.flood_from(in_port, FloodClass::UnknownUnicast),
        }
    }

    /// Floods a frame from `in_port` to the rest of the segment, within
    /// the port's storm-control rate if it is a pod's.
    fn flood_from(&mut self, in_port: PortId, class: FloodClass) -> Action {
        let pod = matches!(self.t.port(in_port), Some(p) if p.kind == PortKind::Pod);
        if pod && !self.state.flood_allowed(in_port, class, self.now) {
            return self.drop(DropReason::StormControl);
        }
        self.counters.flooded += 1;
        Action::Flood {
            except: Some(in_port),
        }
    }

    /// Whether a bridged frame fits the ports' MTU (each segment of a
    /// super-frame, as the tunnel checks them).
    #[inline]
    fn fits_ports(&self, pkt: &PacketBuf) -> bool {
        let mtu = self.cfg().tunnel_mtu;
        if pkt.offload.is_gso() {
            return gso_segment_len(pkt).is_none_or(|seg| seg <= mtu);
        }
        pkt.len() <= ethernet::HEADER_LEN + mtu
    }

    /// Port security of a pod port: its frames carry its MAC (or one its
    /// attachment allows), and its IPv4 packets and ARP senders its
    /// address (or 0.0.0.0, an RFC 5227 probe, or one its attachment
    /// allows). IPv6 (whose addresses the pod chooses itself) is checked
    /// where another port's identity can be recognised: see
    /// [`nd_spoof`]. Other EtherTypes get the MAC rule only.
    #[inline]
    fn port_security(
        &self,
        port: PortId,
        mac: MacAddr,
        ip: Ipv4Addr,
        src: MacAddr,
        ethertype: u16,
        pkt: &PacketBuf,
    ) -> Result<(), DropReason> {
        let allow = || self.t.allowance(port);
        if src != mac && !allow().is_some_and(|a| a.allows_mac(src)) {
            return Err(DropReason::MacSpoof);
        }
        let allowed_ip =
            |a: Ipv4Addr| a == ip || a.is_unspecified() || allow().is_some_and(|x| x.allows_ip(a));
        match ethertype {
            ethernet::ETHERTYPE_IPV4 => {
                let Some(b) = pkt
                    .data()
                    .get(ethernet::HEADER_LEN + 12..ethernet::HEADER_LEN + 16)
                else {
                    return Err(DropReason::Truncated);
                };
                if allowed_ip(Ipv4Addr::new(b[0], b[1], b[2], b[3])) {
                    Ok(())
                } else {
                    Err(DropReason::IpSpoof)
                }
            }
            ethernet::ETHERTYPE_ARP => {
                let Ok(p) = arp::Packet::new_checked(&pkt.data()[ethernet::HEADER_LEN..]) else {
                    return Err(DropReason::BadArp);
                };
                let a = arp::Repr::parse(&p);
                if a.sender_mac == src && allowed_ip(a.sender_ip) {
                    Ok(())
                } else {
                    Err(DropReason::ArpSpoof)
                }
            }
            ethernet::ETHERTYPE_IPV6 => {
                let l3 = pkt.data().get(ethernet::HEADER_LEN..).unwrap_or_default();
                let other_port = |m: MacAddr| self.t.port_with_mac(m).is_some_and(|p| p != port);
                if nd_spoof(l3, src, other_port) {
                    Err(DropReason::NdSpoof)
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    fn tunnel(&mut self, src: SocketAddrV4, pkt: &mut PacketBuf) -> Action {
        if self.t.remotes.by_underlay(*src.ip()).is_none() {
            return self.drop(DropReason::UnknownSender);
        }
        match self.cfg().backend {
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
                if dst != self.cfg().router_mac {
                    return self.drop(DropReason::NotForVtep);
                }
                if ethertype != ethernet::ETHERTYPE_IPV4 {
                    return self.drop(DropReason::BadInner);
                }
            }
            Backend::Udp => {
                let router = self.cfg().router_mac;
                match pkt.push_front(ethernet::HEADER_LEN) {
                    Ok(h) => {
                        let _ = ethernet::emit(h, router, router, ethernet::ETHERTYPE_IPV4);
                    }
                    Err(_) => return self.drop(DropReason::NoRoom),
                }
            }
            // No tunnel: nothing is to arrive through one.
            Backend::HostGw => return self.drop(DropReason::UnknownSender),
        }
        self.counters.decapsulated += 1;
        self.route(Ingress::Tunnel, pkt)
    }

    /// Learns the sender of an ARP packet seen on the segment if it is on
    /// the local subnet (attached ports' addresses cannot be taken over).
    fn snoop_arp(&mut self, a: &arp::Repr) {
        let (ip, cfg) = (a.sender_ip, self.cfg());
        if cfg.subnet.contains(ip)
            && ip != cfg.gateway
            && ip != cfg.subnet.addr()
            && ip != cfg.subnet.broadcast()
            && a.sender_mac.is_unicast()
            && self.state.neighbors().observe(ip, a.sender_mac, self.now) == NeighborUpdate::Learned
        {
            self.counters.neighbors_learned += 1;
        }
    }

    /// ARP addressed to the router (or a broadcast request for the gateway).
    fn router_arp(&mut self, in_port: PortId, pkt: &mut PacketBuf) -> Action {
        let a = match arp::Packet::new_checked(&pkt.data()[ethernet::HEADER_LEN..]) {
            Ok(p) => arp::Repr::parse(&p),
            Err(_) => return self.drop(DropReason::BadArp),
        };
        self.snoop_arp(&a);
        let (gateway, router_mac) = (self.cfg().gateway, self.cfg().router_mac);
        if a.operation != arp::OP_REQUEST || a.target_ip != gateway {
            return Action::Consumed;
        }
        let reply = arp::Repr {
            operation: arp::OP_REPLY,
            sender_mac: router_mac,
            sender_ip: gateway,
            target_mac: a.sender_mac,
            target_ip: a.sender_ip,
        };
        let d = pkt.data_mut();
        if ethernet::emit(d, a.sender_mac, router_mac, ethernet::ETHERTYPE_ARP).is_err()
            || reply.emit(&mut d[ethernet::HEADER_LEN..]).is_err()
        {
            return self.drop(DropReason::BadArp);
        }
        pkt.truncate(ethernet::HEADER_LEN + arp::PACKET_LEN);
        pkt.offload = vnet::Header::default();
        self.counters.arp_replies += 1;
        Action::Output(in_port)
    }

    /// Routes the IPv4 packet behind the Ethernet header at the front of
    /// `pkt`: header checks, next hop, TTL, the tunnel's MTU, then out.
    fn route(&mut self, ingress: Ingress, pkt: &mut PacketBuf) -> Action {
        let mut ip = match self.ip_fields(pkt) {
            Ok(ip) => ip,
            Err(a) => return a,
        };
        if ingress == Ingress::Tunnel {
            self.mark_unfinished_checksum(pkt, &ip);
        }
        if let Some(a) = self.service_nat(ingress, pkt, &mut ip) {
            return a;
        }
        if ip.dst == self.cfg().gateway {
            return self.for_gateway(pkt);
        }
        // A reply un-SNATed toward a client outside the cluster came back
        // through the tunnel: it leaves through the host port like a
        // packet of the router's own.
        let from = if ip.nat_dst && ingress == Ingress::Tunnel {
            Ingress::Router
        } else {
            ingress
        };
        let hop = if ip.to_host {
            self.host_hop()
        } else {
            self.next_hop(from, ip.dst, pkt)
        };
        let hop = match hop {
            Ok(hop) => hop,
            Err(a) => return a,
        };
        let forwarding = ingress != Ingress::Router;
        if forwarding && ip.ttl <= 1 {
            self.count_drop(DropReason::TtlExceeded);
            let (t, c) = (icmp::TYPE_TIME_EXCEEDED, icmp::CODE_TTL_EXCEEDED);
            return self
                .icmp_error(pkt, t, c, 0)
                .unwrap_or(Action::Drop(DropReason::TtlExceeded));
        }
        // Every hop has the pods' MTU: the tunnel's, and the ports' (a
        // packet from a pod that raised its own gets "fragmentation
        // needed", as from any router).
        if let Err(a) = self.fits_tunnel(pkt, &ip) {
            return a;
        }
        if forwarding {
            let d = pkt.data_mut();
            ipv4::Packet::new_unchecked(&mut d[ethernet::HEADER_LEN..]).decrement_ttl();
        }
        self.forward(hop, pkt)
    }

    /// A segment from the tunnel whose L4 checksum a kernel peer left
    /// unfinished (`CHECKSUM_PARTIAL` on a virtual underlay, see
    /// [`encap::ipv4::unfinished_l4`]) carries on as a pod's own
    /// partial one does: `NEEDS_CSUM` in its offload state, so that Service
    /// NAT updates only the pseudo-header part, a TAP hands it to the pod's
    /// kernel to trust (what a virtio guest of a kernel VXLAN node gets),
    /// the coalescer leaves it alone and the tunnel send path would finish
    /// it. One pseudo-header sum and one compare; the payload is not read.
    ///
    /// Such a peer's underlay veth also carries its TSO super-packets
    /// whole, and the kernel hands one to the tunnel socket as one datagram
    /// (no `UDP_GRO` segment size: the MSS is lost). A TCP one larger than
    /// the pods' MTU becomes a `GSO_TCPV4` super-frame whose segments fit
    /// it, as the kernel VXLAN receiver would hand it to its own pods; a
    /// UDP one (`UDP_SEGMENT` on the peer) cannot be cut without the sizes
    /// the sender chose and is dropped by the MTU check as before.
    fn mark_unfinished_checksum(&mut self, pkt: &mut PacketBuf, ip: &IpFields) {
        let d = pkt.data();
        let Some(u) = d
            .get(ethernet::HEADER_LEN..)
            .and_then(encap::ipv4::unfinished_l4)
        else {
            return;
        };
        let l4 = ethernet::HEADER_LEN + u.start;
        let mut h = vnet::Header {
            flags: vnet::F_NEEDS_CSUM,
            // IPv4 and TCP/UDP headers are short: the offsets fit.
            csum_start: l4 as u16,
            csum_offset: u.offset as u16,
            ..vnet::Header::default()
        };
        let mtu = self.cfg().tunnel_mtu;
        if ip.total > mtu && u.offset == 16 {
            let tcp_hl = d.get(l4 + 12).map_or(0, |b| usize::from(b >> 4) * 4);
            let flags = d.get(l4 + 13).copied().unwrap_or(0);
            let mss = mtu.saturating_sub(u.start + tcp_hl);
            if tcp_hl >= 20 && mss > 0 {
                h.gso_type = vnet::GSO_TCPV4 | if flags & 0x80 != 0 { vnet::GSO_ECN } else { 0 };
                h.hdr_len = (l4 + tcp_hl) as u16;
                // Below the MTU, itself below 64 KiB.
                h.gso_size = mss as u16;
            }
        }
        pkt.offload = h;
        self.counters.tunnel_csum_partial += 1;
    }

    /// Checks the IPv4 header and drops the Ethernet padding: the packet is
    /// exactly its total length afterwards.
    fn ip_fields(&mut self, pkt: &mut PacketBuf) -> Result<IpFields, Action> {
        let l3 = &pkt.data()[ethernet::HEADER_LEN..];
        let ip = match ipv4::Packet::new_checked(l3) {
            Ok(p) => IpFields {
                dst: p.dst(),
                ttl: p.ttl(),
                total: p.total_len(),
                df: p.dont_frag(),
                nat_dst: false,
                to_host: false,
            },
            Err(encap::Error::Checksum) => return Err(self.drop(DropReason::BadIpChecksum)),
            Err(encap::Error::Truncated) => return Err(self.drop(DropReason::Truncated)),
            Err(_) => return Err(self.drop(DropReason::BadIpHeader)),
        };
        pkt.truncate(ethernet::HEADER_LEN + ip.total);
        Ok(ip)
    }

    /// Where `dst` goes: a local host (an ARP request instead when its MAC
    /// is unknown), another node, or out through the host port.
    fn next_hop(
        &mut self,
        ingress: Ingress,
        dst: Ipv4Addr,
        pkt: &mut PacketBuf,
    ) -> Result<Hop, Action> {
        let cfg = self.cfg();
        if cfg.subnet.contains(dst) {
            if dst == cfg.subnet.addr() || dst == cfg.subnet.broadcast() {
                return Err(self.drop(DropReason::SubnetBroadcast));
            }
            let neighbor = self.t.mac_of_port_ip(dst);
            return match neighbor.or_else(|| self.state.neighbors().lookup(dst)) {
                Some(mac) => Ok(Hop::Local(mac)),
                None => Err(self.resolve(dst, pkt)),
            };
        }
        if let Some(n) = self.t.remotes.route(dst) {
            return match (n.via, ingress) {
                // No tunnel-to-tunnel transit.
                (Via::Tunnel, Ingress::Tunnel) => Err(self.drop(DropReason::NoRoute)),
                (Via::Tunnel, _) => Ok(Hop::Remote(*n)),
                // The host routes it; what came from the host (its route
                // missing) or the tunnel goes no further.
                (Via::Host, Ingress::Port(p)) if Some(p) == self.t.host_port => {
                    Err(self.drop(DropReason::NoRoute))
                }
                (Via::Host, Ingress::Tunnel) => Err(self.drop(DropReason::NoRoute)),
                (Via::Host, _) => {
                    self.counters.routed_direct += u64::from(!self.replying);
                    self.host_hop()
                }
            };
        }
        if cfg.cluster.contains(dst) {
            return Err(self.drop(DropReason::NoRoute));
        }
        match (ingress, self.t.host_port) {
            (Ingress::Tunnel, _) | (_, None) => Err(self.drop(DropReason::NoRoute)),
            (Ingress::Port(p), Some(h)) if p == h => Err(self.drop(DropReason::NoRoute)),
            (_, Some(h)) => match self.t.port(h) {
                Some(hp) => Ok(Hop::Host(h, hp.mac)),
                None => Err(self.drop(DropReason::NoRoute)),
            },
        }
    }

    /// The host port, as a next hop.
    fn host_hop(&mut self) -> Result<Hop, Action> {
        let host = self.t.host_port;
        match host.and_then(|h| self.t.port(h).map(|p| (h, p.mac))) {
            Some((h, mac)) => Ok(Hop::Host(h, mac)),
            None => Err(self.drop(DropReason::NoRoute)),
        }
    }

    /// Whether the packet (each segment of a super-frame) fits the tunnel;
    /// an ICMP fragmentation-needed back to the sender when it does not and
    /// may not be fragmented.
    fn fits_tunnel(&mut self, pkt: &mut PacketBuf, ip: &IpFields) -> Result<(), Action> {
        let mtu = self.cfg().tunnel_mtu;
        if pkt.offload.is_gso() {
            return match gso_segment_len(pkt) {
                None => Err(self.drop(DropReason::UnsupportedOffload)),
                Some(seg) if seg > mtu => Err(self.drop(DropReason::GsoSegmentTooBig)),
                Some(_) => Ok(()),
            };
        }
        if ip.total <= mtu {
            return Ok(());
        }
        if !ip.df {
            return Err(self.drop(DropReason::MtuNoFragment));
        }
        self.count_drop(DropReason::MtuFragNeeded);
        let (t, c) = (icmp::TYPE_DEST_UNREACHABLE, icmp::CODE_FRAG_NEEDED);
        Err(self
            .icmp_error(pkt, t, c, mtu as u32)
            .unwrap_or(Action::Drop(DropReason::MtuFragNeeded)))
    }

    /// Sends the routed packet to its next hop.
    fn forward(&mut self, hop: Hop, pkt: &mut PacketBuf) -> Action {
        let router = self.cfg().router_mac;
        match hop {
            Hop::Local(mac) => {
                set_macs(pkt, mac, router);
                self.counters.routed_local += u64::from(!self.replying);
                match self.port_of(mac) {
                    Some(p) => Action::Output(p),
                    None => Action::Flood { except: None },
                }
            }
            Hop::Host(port, mac) => {
                set_macs(pkt, mac, router);
                self.counters.routed_host += u64::from(!self.replying);
                Action::Output(port)
            }
            Hop::Remote(n) => self.encapsulate(n, pkt),
        }
    }

    /// Wraps the packet for node `n`'s tunnel.
    fn encapsulate(&mut self, n: RemoteNode, pkt: &mut PacketBuf) -> Action {
        let hash = flow::symmetric_ipv4(&pkt.data()[ethernet::HEADER_LEN..]);
        let l3 = match self.cfg().backend {
            Backend::Vxlan { vni } => {
                set_macs(pkt, n.vtep_mac, self.cfg().router_mac);
                let pushed = pkt.push_front(vxlan::HEADER_LEN);
                if !pushed.is_ok_and(|h| vxlan::emit(h, vni).is_ok()) {
                    return self.drop(DropReason::NoRoom);
                }
                vxlan::HEADER_LEN + ethernet::HEADER_LEN
            }
            Backend::Udp => {
                if pkt.pull_front(ethernet::HEADER_LEN).is_err() {
                    return self.drop(DropReason::Truncated);
                }
                0
            }
            // Every remote node of a host-gw switch is reached by route.
            Backend::HostGw => return self.drop(DropReason::NoRoute),
        };
        self.counters.encapsulated += 1;
        Action::Tunnel {
            dst: n.endpoint,
            hash,
            l3,
        }
    }

    /// A packet for the gateway address itself: only ICMP echo is answered.
    fn for_gateway(&mut self, pkt: &mut PacketBuf) -> Action {
        match icmp::echo_reply_in_place(&mut pkt.data_mut()[ethernet::HEADER_LEN..]) {
            Ok(()) => {
                pkt.offload = vnet::Header::default();
                self.counters.icmp_echo_replies += 1;
                self.reply(pkt)
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
    ) -> Option<Action> {
        {
            let p = ipv4::Packet::new_checked(&pkt.data()[ethernet::HEADER_LEN..]).ok()?;
            if !icmp::may_send_error(&p) {
                return None;
            }
            // Rate-limited as Linux does: per destination (not the PMTU
            // discovery's "fragmentation needed") and node-wide.
            let frag = icmp_type == icmp::TYPE_DEST_UNREACHABLE && code == icmp::CODE_FRAG_NEEDED;
            if !self.state.icmp_allowed(p.src(), !frag, self.now) {
                self.counters.icmp_errors_suppressed += 1;
                return None;
            }
        }
        let e = icmp::ErrorRepr {
            icmp_type,
            code,
            rest,
            src: self.cfg().gateway,
        };
        let (buf, start) = pkt.raw_mut();
        let n = icmp::error_in_place(buf, start + ethernet::HEADER_LEN, &e).ok()?;
        pkt.set_bounds(start, start + ethernet::HEADER_LEN + n)
            .ok()?;
        pkt.offload = vnet::Header::default();
        self.counters.icmp_errors += 1;
        Some(self.reply(pkt))
    }

    /// No MAC known for a local address: replace the packet by an ARP
    /// request for it (at most one per address per second) and drop it.
    fn resolve(&mut self, target: Ipv4Addr, pkt: &mut PacketBuf) -> Action {
        self.count_drop(DropReason::NeighborUnresolved);
        if !self.state.neighbors().may_ask(target, self.now) {
            return Action::Drop(DropReason::NeighborUnresolved);
        }
        let (router_mac, gateway) = (self.cfg().router_mac, self.cfg().gateway);
        let req = arp::Repr {
            operation: arp::OP_REQUEST,
            sender_mac: router_mac,
            sender_ip: gateway,
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
        if ethernet::emit(d, MacAddr::BROADCAST, router_mac, ethernet::ETHERTYPE_ARP).is_err()
            || req.emit(&mut d[ethernet::HEADER_LEN..]).is_err()
        {
            return Action::Drop(DropReason::NeighborUnresolved);
        }
        pkt.offload = vnet::Header::default();
        self.counters.arp_requests += 1;
        Action::Flood { except: None }
    }
}

/// The IP length of each segment of a GSO super-frame (IP header, L4
/// header, `gso_size` payload), or `None` if it is not TCP/IPv4 or
/// UDP/IPv4 GSO or the driver's segmentation would refuse it (a TCP data
/// offset below 5, a fragment, headers beyond the total length, `gso_size`
/// 0): a super-packet sent to the tunnel is one the driver can cut.
fn gso_segment_len(pkt: &PacketBuf) -> Option<usize> {
    let ip = pkt.data().get(ethernet::HEADER_LEN..)?;
    let p = ipv4::Packet::new_checked(ip).ok()?;
    let hl = p.header_len();
    let l4 = match (pkt.offload.gso_type & !vnet::GSO_ECN, p.protocol()) {
        (vnet::GSO_TCPV4, ipv4::PROTO_TCP) => usize::from(ip.get(hl + 12)? >> 4) * 4,
        (vnet::GSO_UDP_L4, ipv4::PROTO_UDP) => 8,
        _ => return None,
    };
    let mss = usize::from(pkt.offload.gso_size);
    gso::segmented_len(pkt.data(), ethernet::HEADER_LEN, mss).ok()?;
    Some(hl + l4 + mss)
}

/// Whether an IPv6 packet sent from MAC `src` claims another port's
/// identity (`other_port` says which MACs are another port's):
/// - a link-local source address whose EUI-64 interface id is another
///   port's MAC (the address Linux gives that port by default);
/// - a neighbour advertisement for such an address;
/// - neighbour discovery (RS, RA, NS, NA, redirect) carrying a source or
///   target link-layer address option that is not `src`, which would
///   point the receivers' neighbour caches elsewhere.
///
/// Packets too short to hold what is read are not judged here (the
/// receiver drops them).
fn nd_spoof(l3: &[u8], src: MacAddr, other_port: impl Fn(MacAddr) -> bool) -> bool {
    const ICMPV6: u8 = 58;
    let Some(h) = l3.get(..40) else {
        return false;
    };
    let eui64_of_other = |a: &[u8]| {
        a.len() == 16
            && a[..8] == [0xfe, 0x80, 0, 0, 0, 0, 0, 0]
            && a[11] == 0xff
            && a[12] == 0xfe
            && other_port(MacAddr([a[8] ^ 0x02, a[9], a[10], a[13], a[14], a[15]]))
    };
    if eui64_of_other(&h[8..24]) {
        return true;
    }
    if h[6] != ICMPV6 {
        return false;
    }
    let msg = &l3[40..];
    let options_at = match msg.first() {
        Some(133) => 8,  // router solicitation
        Some(134) => 16, // router advertisement
        Some(135) => 24, // neighbour solicitation
        Some(136) => {
            // neighbour advertisement: its target too
            if msg.get(8..24).is_some_and(eui64_of_other) {
                return true;
            }
            24
        }
        Some(137) => 40, // redirect
        _ => return false,
    };
    let mut opts = msg.get(options_at..).unwrap_or_default();
    while let [kind, len, ..] = *opts {
        let n = usize::from(len) * 8;
        if n == 0 || opts.len() < n {
            return false;
        }
        if (kind == 1 || kind == 2) && n >= 8 && opts[2..8] != src.0 {
            return true;
        }
        opts = &opts[n..];
    }
    false
}

fn set_macs(pkt: &mut PacketBuf, dst: MacAddr, src: MacAddr) {
    if let Ok(mut f) = ethernet::Frame::new_checked(pkt.data_mut()) {
        f.set_dst(dst);
        f.set_src(src);
    }
}

#[path = "service_nat.rs"]
mod service_nat;

#[path = "policy_step.rs"]
mod policy_step;

#[cfg(test)]
#[path = "switch_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "service_switch_tests.rs"]
mod service_tests;
