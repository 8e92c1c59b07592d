//! Counters of the forwarding core: one per drop reason, one per event.
//! Plain integers owned by the core's thread; the driver hands out copies.

/// Defines [`DropReason`] and [`Drops`] from one list, so that a reason
/// cannot be added, renamed or removed in one and not the other: the
/// report's field names are the counters' names everywhere (the API's
/// JSON, `twill counters`, the tests, the metrics).
macro_rules! drop_reasons {
    ($( $(#[doc = $doc:literal])* $variant:ident => $name:ident, )*) => {
        /// Why the core dropped a frame. Every drop has exactly one reason.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        #[repr(u8)]
        pub enum DropReason {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl DropReason {
            /// Number of reasons.
            pub const COUNT: usize = [$(DropReason::$variant),*].len();

            /// All reasons, in counter order.
            pub const ALL: [DropReason; Self::COUNT] = [$(DropReason::$variant),*];

            /// The counter's name, as the CLI and metrics show it.
            pub fn name(self) -> &'static str {
                match self {
                    $( DropReason::$variant => stringify!($name), )*
                }
            }
        }

        /// Drops by reason, a named field each: the report's `drops`.
        /// Reading one that does not exist fails to compile; a report
        /// missing one fails to parse.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Drops {
            $( $(#[doc = $doc])* pub $name: u64, )*
        }

        impl Drops {
            /// From the core's array, indexed by `DropReason as usize`.
            pub fn from_counts(c: &[u64; DropReason::COUNT]) -> Drops {
                Drops { $( $name: c[DropReason::$variant as usize], )* }
            }

            /// Drops for one reason.
            pub fn get(&self, r: DropReason) -> u64 {
                match r {
                    $( DropReason::$variant => self.$name, )*
                }
            }

            /// Every drop, whatever its reason.
            pub fn total(&self) -> u64 {
                0 $( + self.$name )*
            }
        }
    };
}

drop_reasons! {
    /// Shorter than the headers it claims.
    Truncated => truncated,
    /// Source MAC is multicast or zero.
    BadSrcMac => bad_src_mac,
    /// Source MAC belongs to another port (a pod's, the host port's or the router's).
    MacSpoof => mac_spoof,
    /// Destination was learned on the port the frame came from.
    SamePort => same_port,
    /// Encapsulated packet from an underlay address that is no known node.
    UnknownSender => unknown_sender,
    /// VXLAN header with flags other than I, or reserved bits set.
    BadVxlanHeader => bad_vxlan_header,
    /// VXLAN network identifier other than the configured one.
    BadVni => bad_vni,
    /// Decapsulated frame not addressed to this node's VTEP MAC.
    NotForVtep => not_for_vtep,
    /// Decapsulated frame that is not IPv4.
    BadInner => bad_inner,
    /// IPv4 header malformed (version, IHL, lengths).
    BadIpHeader => bad_ip_header,
    /// IPv4 header checksum wrong.
    BadIpChecksum => bad_ip_checksum,
    /// TTL would reach zero (an ICMP time-exceeded goes back when allowed).
    TtlExceeded => ttl_exceeded,
    /// No route: inside the cluster network but no node holds the subnet,
    /// outside it from a port that cannot reach the outside, or tunnel to tunnel.
    NoRoute => no_route,
    /// Larger than the tunnel MTU with DF set (an ICMP fragmentation-needed
    /// goes back when allowed).
    MtuFragNeeded => mtu_frag_needed,
    /// Larger than the tunnel MTU without DF: twill does not fragment (see
    /// the README): pods' MTU is set so that this cannot happen.
    MtuNoFragment => mtu_no_fragment,
    /// Destination on the local subnet whose MAC is not known yet; an ARP
    /// request was sent (rate-limited) instead.
    NeighborUnresolved => neighbor_unresolved,
    /// Sent to the gateway address but not an ICMP echo request.
    ToGatewayUnsupported => to_gateway_unsupported,
    /// Sent to the router MAC for the subnet's network or broadcast address.
    SubnetBroadcast => subnet_broadcast,
    /// An EtherType other than IPv4 or ARP sent to the router.
    UnsupportedEthertype => unsupported_ethertype,
    /// ARP that is not Ethernet/IPv4, or truncated.
    BadArp => bad_arp,
    /// ICMP echo request to the gateway with a bad checksum or truncated.
    BadIcmp => bad_icmp,
    /// No headroom or tailroom left to build the outgoing packet.
    NoRoom => no_room,
    /// The port the frame came in on is not attached (any more).
    UnknownPort => unknown_port,
    /// A GSO super-frame whose segments would not fit the tunnel MTU.
    GsoSegmentTooBig => gso_segment_too_big,
    /// A GSO super-frame of a kind that cannot be segmented here (not
    /// TCP/IPv4 or UDP/IPv4), bound for the tunnel.
    UnsupportedOffload => unsupported_offload,
    /// A new connection to a Service port with no usable endpoint (an ICMP
    /// port unreachable goes back when allowed, as kube-proxy's REJECT).
    ServiceNoEndpoints => service_no_endpoints,
    /// A new Service connection refused: the connection table is full of
    /// assured connections.
    ConntrackFull => conntrack_full,
    /// A new Service connection needing SNAT found no free source port.
    SnatPortsExhausted => snat_ports_exhausted,
    /// An IP fragment sent to a Service address (not reassembled here).
    ServiceFragment => service_fragment,
    /// An IPv4 packet from a pod port whose source address is neither the
    /// port's nor one its attachment allows (port security).
    IpSpoof => ip_spoof,
    /// An ARP packet from a pod port whose sender address is neither the
    /// port's, 0.0.0.0 (a probe) nor one its attachment allows, or whose
    /// sender MAC is not the frame's source (port security).
    ArpSpoof => arp_spoof,
    /// A NetworkPolicy selecting the source pod for egress does not allow
    /// the connection (or no longer does).
    PolicyEgress => policy_egress,
    /// A NetworkPolicy selecting the destination pod for ingress does not
    /// allow the connection (or no longer does).
    PolicyIngress => policy_ingress,
    /// An IPv6 packet from a pod claiming another port's link-local
    /// address, or neighbour discovery carrying a link-layer address that
    /// is not the frame's source.
    NdSpoof => nd_spoof,
    /// A bridged frame larger than the ports' MTU (from a pod that raised
    /// its own): dropped as a bridge does, not delivered.
    PortMtuExceeded => port_mtu_exceeded,
    /// A pod's broadcast, multicast or unknown-unicast flood over its
    /// storm-control rate.
    StormControl => storm_control,
}

/// The core's counters. Serialized, they are the report's `events`: the
/// drops go separately, by name ([`Drops`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counters {
    /// Drops, indexed by `DropReason as usize`.
    #[serde(skip, default = "no_drops")]
    pub drops: [u64; DropReason::COUNT],
    /// Frames switched to one known port.
    pub switched: u64,
    /// Frames flooded to the segment.
    pub flooded: u64,
    /// Packets routed (TTL decremented) to a local port (not the router's
    /// own replies: those are counted as `icmp_*`).
    pub routed_local: u64,
    /// Packets routed to the host port for the outside (likewise).
    pub routed_host: u64,
    /// Of those, packets to another node's subnet by the host's route to
    /// it (host-gw, DirectRouting, BGP), not encapsulated.
    pub routed_direct: u64,
    /// Packets encapsulated towards another node.
    pub encapsulated: u64,
    /// Packets accepted from the tunnel.
    pub decapsulated: u64,
    /// Of those, TCP/UDP packets whose L4 checksum the sender left
    /// unfinished (a kernel peer on a virtual underlay): passed on with
    /// `NEEDS_CSUM` (a TCP super-packet as one TSO frame).
    pub tunnel_csum_partial: u64,
    /// ARP replies the router sent for the gateway.
    pub arp_replies: u64,
    /// ARP requests the router sent to resolve a neighbor.
    pub arp_requests: u64,
    /// Neighbors learned from ARP.
    pub neighbors_learned: u64,
    /// ICMP echo replies from the gateway.
    pub icmp_echo_replies: u64,
    /// ICMP errors sent (time exceeded, fragmentation needed).
    pub icmp_errors: u64,
    /// Echo replies and ICMP errors the router built that could not be
    /// routed (no route back, …): counted here, not as a drop, since the
    /// packet they answer is counted already.
    pub replies_dropped: u64,
    /// Service connections created.
    pub conntrack_new: u64,
    /// Unassured connections dropped to make room for a new one.
    pub conntrack_early_drop: u64,
    /// Connections removed on expiry (node-wide: the driver reads it from
    /// the shared table, a worker's own count stays 0).
    pub conntrack_expired: u64,
    /// Packets translated by Service NAT (ICMP errors included).
    pub nat_translated: u64,
    /// Connections' first packets judged by NetworkPolicy.
    pub policy_judged: u64,
    /// Tracked connections judged again after a policy change.
    pub policy_rejudged: u64,
    /// ICMP errors not sent because of the rate limits.
    pub icmp_errors_suppressed: u64,
}

/// All zero (`Default` is derived only for arrays of up to 32).
impl Default for Counters {
    fn default() -> Self {
        Counters {
            drops: [0; DropReason::COUNT],
            switched: 0,
            flooded: 0,
            routed_local: 0,
            routed_host: 0,
            routed_direct: 0,
            encapsulated: 0,
            decapsulated: 0,
            tunnel_csum_partial: 0,
            arp_replies: 0,
            arp_requests: 0,
            neighbors_learned: 0,
            icmp_echo_replies: 0,
            icmp_errors: 0,
            replies_dropped: 0,
            conntrack_new: 0,
            conntrack_early_drop: 0,
            conntrack_expired: 0,
            nat_translated: 0,
            policy_judged: 0,
            policy_rejudged: 0,
            icmp_errors_suppressed: 0,
        }
    }
}

fn no_drops() -> [u64; DropReason::COUNT] {
    [0; DropReason::COUNT]
}

impl Counters {
    /// Counts one drop.
    pub fn drop(&mut self, r: DropReason) {
        self.drops[r as usize] += 1;
    }

    /// Adds another core's counters (another worker's) to these.
    pub fn merge(&mut self, o: &Counters) {
        for (a, b) in self.drops.iter_mut().zip(o.drops.iter()) {
            *a += b;
        }
        self.switched += o.switched;
        self.flooded += o.flooded;
        self.routed_local += o.routed_local;
        self.routed_host += o.routed_host;
        self.routed_direct += o.routed_direct;
        self.encapsulated += o.encapsulated;
        self.decapsulated += o.decapsulated;
        self.tunnel_csum_partial += o.tunnel_csum_partial;
        self.arp_replies += o.arp_replies;
        self.arp_requests += o.arp_requests;
        self.neighbors_learned += o.neighbors_learned;
        self.icmp_echo_replies += o.icmp_echo_replies;
        self.icmp_errors += o.icmp_errors;
        self.replies_dropped += o.replies_dropped;
        self.conntrack_new += o.conntrack_new;
        self.conntrack_early_drop += o.conntrack_early_drop;
        self.conntrack_expired += o.conntrack_expired;
        self.nat_translated += o.nat_translated;
        self.policy_judged += o.policy_judged;
        self.policy_rejudged += o.policy_rejudged;
        self.icmp_errors_suppressed += o.icmp_errors_suppressed;
    }

    /// Drops for one reason.
    pub fn drops_for(&self, r: DropReason) -> u64 {
        self.drops[r as usize]
    }

    /// Drops for every reason, with names.
    pub fn drops_named(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(|r| (r.name(), self.drops[*r as usize]))
    }

    /// The counters that end a packet received from the tunnel, with
    /// names: every drop reason, and the events of a packet that was not
    /// dropped (routed to a local port or the host port, answered by the
    /// gateway). The core counts each packet given to
    /// `Switch::process_tunnel` in exactly one of them (debug builds
    /// assert it on every call), so over a switch that received nothing
    /// but tunnel packets they sum to the packets received; the driver's
    /// `Stats::tunnel_rx_outcomes` adds what it drops itself. Port traffic
    /// shares the drop reasons and `routed_*`. A new way for a tunnel
    /// packet to end must be added here (the debug assertion says so).
    pub fn tunnel_rx_outcomes(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        let delivered = [
            ("routed_local", self.routed_local),
            ("routed_host", self.routed_host),
            ("icmp_echo_replies", self.icmp_echo_replies),
        ];
        self.drops_named().chain(delivered)
    }

    /// The sum of [`Counters::tunnel_rx_outcomes`].
    pub fn tunnel_rx_outcomes_total(&self) -> u64 {
        self.tunnel_rx_outcomes().map(|(_, n)| n).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_complete_and_in_order() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?}");
        }
        let names: std::collections::HashSet<_> =
            DropReason::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), DropReason::COUNT);
    }
}
