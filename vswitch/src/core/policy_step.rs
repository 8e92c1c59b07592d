//! NetworkPolicy on the packet path: the router's step (with Service NAT,
//! `service_nat.rs`, which shares its connection-table lookup) and the
//! bridge's, for frames between two ports of the segment.
//!
//! A packet is looked at only when it concerns an isolated local pod
//! ([`PolicyTable::concerns`]: two lookups by address), or belongs to a
//! Service connection. Then:
//! - TCP and UDP, and ICMP echo (tracked by its identifier, so that the
//!   reply of an allowed ping passes): a packet of a tracked connection
//!   passes on the verdict the connection got, judged again once after a
//!   policy change; a first packet is judged ([`PolicyTable::verdict`]),
//!   and if allowed the connection is tracked. A TCP segment that is not a
//!   SYN and finds no connection (one that began before a policy concerned
//!   it) is allowed if the connection would be allowed opened from either
//!   end, and is then tracked in that direction; a UDP datagram is judged
//!   in the direction it goes.
//! - ICMP errors about a tracked connection pass (they are related to
//!   it); other ICMP, other protocols and IP fragments after the first are
//!   judged alone, with port 0 (only a rule without ports allows them).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Instant;

use encap::{ethernet, icmp, ipv4, nat, PacketBuf};

use super::{Action, Ingress, Step};
use crate::core::counters::DropReason;
use crate::core::policy::{PolicyTable, Verdict};
use crate::core::service::conntrack::{
    Conn, ConnMeta, Conntrack, Dir, FlowKey, InsertError, Seen, NO_SERVICE,
};

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;

/// A packet `seen` of tracked connection `c`, direction `dir`: the
/// connection's verdict under `policy` (judged again if it was judged under
/// another generation; whether it was), and, if allowed, the packet
/// followed in `ct` (state, expiry).
#[inline]
pub(super) fn follow_conn(
    policy: &PolicyTable,
    ct: &Conntrack,
    c: &Conn,
    dir: Dir,
    seen: Seen,
    now: Instant,
) -> (Verdict, bool) {
    let v = conn_verdict(policy, c);
    if v.0 == Verdict::Allow {
        ct.observe(c, dir, seen, now);
    }
    v
}

/// The verdict a tracked connection has under `policy`, judged again if it
/// was judged under another generation; whether it was.
#[inline]
fn conn_verdict(policy: &PolicyTable, c: &Conn) -> (Verdict, bool) {
    let g = policy.generation();
    if let Some(v) = c.policy_verdict(g) {
        return (v, false);
    }
    // The connection as its first packet left: from the client to the
    // backend (`reply.src`, the original destination when untranslated).
    let (SocketAddr::V4(s), SocketAddr::V4(d)) = (c.orig.src, c.reply.src) else {
        return (Verdict::Allow, false);
    };
    let port = match c.orig.proto {
        ipv4::PROTO_TCP | ipv4::PROTO_UDP => d.port(),
        _ => 0,
    };
    let v = policy.verdict(*s.ip(), *d.ip(), c.orig.proto, port, c.from_node);
    c.set_policy_verdict(g, v);
    (v, true)
}

impl Step<'_> {
    /// Counts and returns the drop for a denying verdict.
    pub(super) fn deny(&mut self, v: Verdict) -> Action {
        match v {
            Verdict::DenyEgress => self.drop(DropReason::PolicyEgress),
            _ => self.drop(DropReason::PolicyIngress),
        }
    }

    /// Whether a packet from `src` that came in at `ingress` comes from
    /// this node itself: the router's own, or the host's through the host
    /// port with the host port's address.
    pub(super) fn is_from_node(&self, ingress: Ingress, src: Ipv4Addr) -> bool {
        match ingress {
            Ingress::Router => true,
            Ingress::Tunnel => false,
            Ingress::Port(p) => {
                self.t.host_port == Some(p) && self.t.port(p).is_some_and(|h| h.ip == src)
            }
        }
    }

    /// Judges a connection's first packet; the drop if it is denied.
    pub(super) fn judge(
        &mut self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        proto: u8,
        port: u16,
        from_node: bool,
    ) -> Result<(), Action> {
        self.counters.policy_judged += 1;
        match self.policy.verdict(src, dst, proto, port, from_node) {
            Verdict::Allow => Ok(()),
            v => Err(self.deny(v)),
        }
    }

    /// Whether a packet of a tracked connection passes on its verdict
    /// ([`conn_verdict`]'s); the drop if not.
    #[inline]
    pub(super) fn follow_verdict(&mut self, v: (Verdict, bool)) -> Result<(), Action> {
        self.counters.policy_rejudged += u64::from(v.1);
        match v.0 {
            Verdict::Allow => Ok(()),
            d => Err(self.deny(d)),
        }
    }

    /// A bridged IPv4 frame (from one port of the segment to another):
    /// `Ok(true)` if it belongs to a Service connection and must be routed
    /// to be translated, `Ok(false)` to switch it on, the drop if a policy
    /// denies it.
    #[inline(never)]
    pub(super) fn bridged_ipv4(
        &mut self,
        in_port: super::PortId,
        pkt: &PacketBuf,
    ) -> Result<bool, Action> {
        let Some(l3) = pkt.data().get(ethernet::HEADER_LEN..) else {
            return Ok(false);
        };
        if l3.len() < ipv4::MIN_HEADER_LEN {
            return Ok(false);
        }
        let (src, dst) = {
            let p = ipv4::Packet::new_unchecked(l3);
            (p.src(), p.dst())
        };
        if !self.policy.concerns(src, dst) {
            return Ok(!self.state.conntrack().is_empty() && self.tracked(pkt));
        }
        self.policy_packet(Ingress::Port(in_port), pkt, src, dst)
    }

    /// A packet that concerns an isolated pod and that Service NAT did not
    /// take: `Ok(true)` if it belongs to a Service connection after all
    /// (bridged: route it), `Ok(false)` if it passes.
    pub(super) fn policy_packet(
        &mut self,
        ingress: Ingress,
        pkt: &PacketBuf,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) -> Result<bool, Action> {
        let l3 = &pkt.data()[ethernet::HEADER_LEN..];
        let p = ipv4::Packet::new_unchecked(l3);
        let proto = p.protocol();
        let from_node = self.is_from_node(ingress, src);
        let (key, seen) = match proto {
            ipv4::PROTO_TCP | ipv4::PROTO_UDP => match flow(l3) {
                Some(f) => f,
                // A later fragment: no ports.
                None => return self.judge(src, dst, proto, 0, from_node).map(|()| false),
            },
            ipv4::PROTO_ICMP => match self.icmp_flow(l3, src, dst) {
                IcmpFlow::Echo(key) => (key, Seen::Udp),
                IcmpFlow::Related(nat) => return Ok(nat),
                IcmpFlow::Other => {
                    return self.judge(src, dst, proto, 0, from_node).map(|()| false)
                }
            },
            _ => return self.judge(src, dst, proto, 0, from_node).map(|()| false),
        };
        let ct = self.state.conntrack();
        if !ct.is_empty() {
            let (policy, now) = (self.policy, self.now);
            let hit = ct.with(&key, now, |c, dir| {
                (follow_conn(policy, ct, c, dir, seen, now), c.is_nat())
            });
            if let Some((v, nat)) = hit {
                self.follow_verdict(v)?;
                return Ok(nat);
            }
        }
        self.policy_new(key, seen, from_node).map(|()| false)
    }

    /// The first packet of a connection no Service concerns: judged, and
    /// tracked when allowed (see the module documentation for TCP picked
    /// up mid-stream).
    pub(super) fn policy_new(
        &mut self,
        key: FlowKey,
        seen: Seen,
        from_node: bool,
    ) -> Result<(), Action> {
        let (SocketAddr::V4(s), SocketAddr::V4(d)) = (key.src, key.dst) else {
            return Ok(());
        };
        let port = if key.proto == ipv4::PROTO_ICMP {
            0
        } else {
            d.port()
        };
        self.counters.policy_judged += 1;
        let mut orig = key;
        let mut v = self
            .policy
            .verdict(*s.ip(), *d.ip(), key.proto, port, from_node);
        let midstream = matches!(seen, Seen::Tcp(f) if !f.syn || f.ack);
        if v != Verdict::Allow && midstream {
            let rport = s.port();
            let back = self
                .policy
                .verdict(*d.ip(), *s.ip(), key.proto, rport, false);
            if back == Verdict::Allow {
                (v, orig) = (back, key.reversed());
            }
        }
        if v != Verdict::Allow {
            return Err(self.deny(v));
        }
        let meta = ConnMeta {
            service: NO_SERVICE,
            via_host: false,
            from_node: from_node && orig == key,
            judged: Some(self.policy.generation()),
        };
        let ct = self.state.conntrack();
        match ct.insert_with(orig, orig.reversed(), meta, seen, self.now) {
            Ok(early) => {
                self.counters.conntrack_new += 1;
                self.counters.conntrack_early_drop += u64::from(early);
                Ok(())
            }
            // Another worker tracked it meanwhile, with the same verdict.
            Err(InsertError::Exists | InsertError::ReplyTaken) => Ok(()),
            Err(InsertError::Full) => Err(self.drop(DropReason::ConntrackFull)),
        }
    }

    /// What an ICMP packet is to policy.
    fn icmp_flow(&self, l3: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> IcmpFlow {
        let p = ipv4::Packet::new_unchecked(l3);
        if p.is_fragment() {
            return IcmpFlow::Other;
        }
        let Some(h) = l3.get(p.header_len()..p.header_len() + icmp::HEADER_LEN) else {
            return IcmpFlow::Other;
        };
        match h[0] {
            ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY => {
                // Request and reply carry one identifier: the flow's "ports".
                // (a reply's key is the request's, reversed).
                let id = u16::from_be_bytes([h[4], h[5]]);
                IcmpFlow::Echo(FlowKey {
                    proto: ipv4::PROTO_ICMP,
                    src: SocketAddrV4::new(src, id).into(),
                    dst: SocketAddrV4::new(dst, id).into(),
                })
            }
            _ => match self.related(l3) {
                Some(nat) => IcmpFlow::Related(nat),
                None => IcmpFlow::Other,
            },
        }
    }

    /// For an ICMP error quoting a packet of a tracked connection (as it
    /// was sent or as it was translated), whether that connection is a
    /// Service's; `None` if it quotes no tracked connection.
    fn related(&self, l3: &[u8]) -> Option<bool> {
        let q = nat::icmp_error_quote(l3)?;
        let (proto, es, ed) = nat::endpoints(&l3[q..]).ok()?;
        let quoted = FlowKey {
            proto,
            src: es.into(),
            dst: ed.into(),
        };
        let ct = self.state.conntrack();
        [quoted, quoted.reversed()]
            .iter()
            .find_map(|k| ct.with(k, self.now, |c, _| c.is_nat()))
    }
}

/// What an ICMP packet is to policy.
enum IcmpFlow {
    /// An echo request or reply, tracked under this key.
    Echo(FlowKey),
    /// An error about a tracked connection (a Service's if `true`).
    Related(bool),
    /// Anything else: judged alone.
    Other,
}

/// The flow key and what conntrack reads of a TCP/UDP packet; `None` for a
/// later fragment or a packet cut before its ports (or, for TCP, its
/// flags).
pub(super) fn flow(l3: &[u8]) -> Option<(FlowKey, Seen)> {
    let (proto, src, dst) = nat::endpoints(l3).ok()?;
    let seen = match proto {
        ipv4::PROTO_TCP => {
            let hl = ipv4::Packet::new_unchecked(l3).header_len();
            l3.get(hl + 13)
                .filter(|_| l3.len() >= hl + 20)
                .map(|b| Seen::Tcp(crate::core::service::conntrack::TcpFlags::from_byte(*b)))?
        }
        _ => Seen::Udp,
    };
    Some((
        FlowKey {
            proto,
            src: src.into(),
            dst: dst.into(),
        },
        seen,
    ))
}
