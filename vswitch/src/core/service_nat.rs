//! Service NAT, the router's step between the IPv4 header checks and the
//! next-hop lookup: packets of a known connection are translated (DNAT
//! toward the backend, the reverse on replies, SNAT to the node where
//! needed), a first packet to a Service frontend creates the connection,
//! and ICMP errors about a translated packet are translated back.
//!
//! When there is no Service and no connection, the whole step is one
//! branch. Otherwise a TCP/UDP packet costs one connection-table lookup
//! (and, on a miss, one lookup of its destination among the frontend
//! addresses).

use std::net::{IpAddr, SocketAddr, SocketAddrV4};

use encap::nat::{self, L4Checksum};
use encap::{ethernet, icmp, ipv4, vnet, PacketBuf};

use super::policy_step;
use super::{Action, Ingress, IpFields, Step};
use crate::core::counters::DropReason;
use crate::core::service::conntrack::{ConnMeta, Dir, FlowKey, InsertError, Seen};
use crate::core::service::maglev::{client_hash, flow_hash};
use crate::core::service::{Proto, Scope, ServicePort};

/// Source ports an SNAT picks from when the client's own is taken
/// (Linux's default `ip_local_port_range`).
const SNAT_PORTS: std::ops::Range<u16> = 32768..61000;
/// Source ports tried before giving up.
const SNAT_TRIES: u32 = 128;

impl Step<'_> {
    /// Translates the packet if a Service or a connection concerns it,
    /// updating `ip` (its destination may change); `Some` if it was dropped
    /// or replaced by a reject instead. With no Service and no connection,
    /// one branch.
    #[inline(always)]
    pub(super) fn service_nat(
        &mut self,
        ingress: Ingress,
        pkt: &mut PacketBuf,
        ip: &mut IpFields,
    ) -> Option<Action> {
        if self.services.is_empty() && self.state.conntrack().is_empty() && self.policy.is_empty() {
            return None;
        }
        match self.nat_slow(ingress, pkt, *ip) {
            Ok(next) => {
                *ip = next;
                None
            }
            Err(a) => Some(a),
        }
    }

    #[inline(never)]
    fn nat_slow(
        &mut self,
        ingress: Ingress,
        pkt: &mut PacketBuf,
        mut ip: IpFields,
    ) -> Result<IpFields, Action> {
        let l3 = &pkt.data()[ethernet::HEADER_LEN..];
        let (proto, fragment, src) = {
            let p = ipv4::Packet::new_unchecked(l3);
            (p.protocol(), p.is_fragment(), p.src())
        };
        if proto != ipv4::PROTO_TCP && proto != ipv4::PROTO_UDP {
            if proto == ipv4::PROTO_ICMP {
                ip = self.nat_icmp_error(pkt, ip);
            }
            if self.policy.concerns(src, ip.dst) {
                self.policy_packet(ingress, pkt, src, ip.dst)?;
            }
            return Ok(ip);
        }
        let concerned = self.policy.concerns(src, ip.dst);
        let to_frontend = |s: &Self| s.services.has_addr(IpAddr::V4(ip.dst));
        if fragment && to_frontend(self) {
            return Err(self.drop(DropReason::ServiceFragment));
        }
        let ct = self.state.conntrack();
        if ct.is_empty() && !to_frontend(self) && !concerned {
            return Ok(ip);
        }
        let Some((key, seen)) = policy_step::flow(l3) else {
            if to_frontend(self) {
                return Err(self.drop(DropReason::Truncated));
            }
            if concerned {
                self.policy_packet(ingress, pkt, src, ip.dst)?;
            }
            return Ok(ip);
        };
        let FlowKey {
            src: SocketAddr::V4(src),
            dst: SocketAddr::V4(dst),
            ..
        } = key
        else {
            return Ok(ip);
        };
        let now = self.now;
        if !ct.is_empty() {
            let policy = self.policy;
            let out = ct.with(&key, now, |c, dir| {
                let v = policy_step::follow_conn(policy, ct, c, dir, seen, now);
                (v, c.is_nat(), c.out(dir), dir == Dir::Reply && c.via_host)
            });
            if let Some((v, nat, out, to_host)) = out {
                self.follow_verdict(v)?;
                if !nat {
                    return Ok(ip);
                }
                ip.to_host = to_host;
                return self.translate(pkt, ip, out);
            }
        }
        let from_node = self.is_from_node(ingress, *src.ip());
        if !matches!(ingress, Ingress::Port(_)) || !to_frontend(self) {
            if concerned {
                self.policy_new(key, seen, from_node)?;
            }
            return Ok(ip);
        }
        let services = self.services;
        let Some((port, scope)) = Proto::from_number(proto)
            .and_then(|p| services.lookup(IpAddr::V4(*dst.ip()), dst.port(), p))
        else {
            if concerned {
                self.policy_new(key, seen, from_node)?;
            }
            return Ok(ip);
        };
        if matches!(seen, Seen::Tcp(f) if f.rst) {
            return Ok(ip); // an RST opens nothing
        }
        let backend = match self.pick_backend(port, scope, proto, src, dst) {
            Some(SocketAddr::V4(b)) => b,
            _ => return Err(self.reject(pkt)),
        };
        self.connect(ingress, pkt, ip, key, port, scope, backend, seen)
    }

    /// The backend of a new connection from `client` to `dst`: by its flow
    /// hash, or with `sessionAffinity: ClientIP` the client's pinned one
    /// while it is usable (else a new pick: by the client's hash the first
    /// time, by the flow's when the pin went stale).
    fn pick_backend(
        &mut self,
        port: &ServicePort,
        scope: Scope,
        proto: u8,
        client: SocketAddrV4,
        dst: SocketAddrV4,
    ) -> Option<SocketAddr> {
        let hash = flow_hash(proto, client.into(), dst.into());
        let Some(timeout) = port.spec.affinity else {
            return port.pick(scope, hash);
        };
        let ct = self.state.conntrack();
        let cip = IpAddr::V4(*client.ip());
        let pinned = ct.affinity(cip, port.id, self.now);
        let b = match pinned {
            Some(b) if port.pool(scope).contains(b) => b,
            Some(_) => port.pick(scope, hash)?,
            None => port.pick(scope, client_hash(cip))?,
        };
        ct.set_affinity(cip, port.id, b, timeout, self.now);
        Some(b)
    }

    /// Whether a bridged IPv4 frame belongs to a translated connection (or
    /// is an ICMP error about one). No state changes.
    #[inline(never)]
    pub(super) fn tracked(&self, pkt: &PacketBuf) -> bool {
        let Some(l3) = pkt.data().get(ethernet::HEADER_LEN..) else {
            return false;
        };
        let (at, reverse) = match nat::icmp_error_quote(l3) {
            Some(q) => (q, true),
            None => (0, false),
        };
        let Ok((proto, src, dst)) = nat::endpoints(&l3[at..]) else {
            return false;
        };
        let (src, dst) = if reverse { (dst, src) } else { (src, dst) };
        let key = FlowKey {
            proto,
            src: src.into(),
            dst: dst.into(),
        };
        self.state
            .conntrack()
            .with(&key, self.now, |c, _| c.is_nat())
            .unwrap_or(false)
    }

    /// Creates the connection `key` to `backend` (with SNAT to the node for
    /// hairpin and external `Cluster` traffic) and translates its first
    /// packet.
    #[allow(clippy::too_many_arguments)]
    fn connect(
        &mut self,
        ingress: Ingress,
        pkt: &mut PacketBuf,
        ip: IpFields,
        key: FlowKey,
        port: &ServicePort,
        scope: Scope,
        backend: SocketAddrV4,
        seen: Seen,
    ) -> Result<IpFields, Action> {
        let SocketAddr::V4(client) = key.src else {
            return Ok(ip);
        };
        let snat = backend.ip() == client.ip() || !port.keeps_client_address(scope);
        let src_ip = if snat {
            self.cfg().gateway
        } else {
            *client.ip()
        };
        // Policy judges the connection as the backend gets it (after the
        // translation, as in Kubernetes): an SNATed one comes from the node.
        let from_node = snat || self.is_from_node(ingress, *client.ip());
        if self.policy.concerns(*client.ip(), *backend.ip()) {
            let (c, b) = (*client.ip(), *backend.ip());
            self.judge(c, b, key.proto, backend.port(), from_node)?;
        }
        let via_host = self
            .t
            .host_port
            .is_some_and(|h| ingress == Ingress::Port(h));
        let meta = ConnMeta {
            service: port.id,
            via_host,
            from_node,
            judged: Some(self.policy.generation()),
        };
        let ct = self.state.conntrack();
        let h = flow_hash(key.proto, key.src, key.dst);
        let span = u32::from(SNAT_PORTS.end - SNAT_PORTS.start);
        let candidates = std::iter::once(client.port()).chain((0..SNAT_TRIES).map(|i| {
            let off = (h as u32).wrapping_add(i.wrapping_mul(7919)) % span;
            SNAT_PORTS.start + off as u16
        }));
        for sport in candidates {
            let reply = FlowKey {
                proto: key.proto,
                src: backend.into(),
                dst: SocketAddrV4::new(src_ip, sport).into(),
            };
            match ct.insert_with(key, reply, meta, seen, self.now) {
                Ok(early) => {
                    self.counters.conntrack_new += 1;
                    self.counters.conntrack_early_drop += u64::from(early);
                    return self.translate(pkt, ip, reply.reversed());
                }
                Err(InsertError::ReplyTaken) => continue,
                Err(InsertError::Full) => return Err(self.drop(DropReason::ConntrackFull)),
                Err(InsertError::Exists) => {
                    // Another worker created it meanwhile: follow that one.
                    let out = ct.with(&key, self.now, |c, dir| c.out(dir));
                    return match out {
                        Some(out) => self.translate(pkt, ip, out),
                        None => Err(self.drop(DropReason::ConntrackFull)),
                    };
                }
            }
        }
        Err(self.drop(DropReason::SnatPortsExhausted))
    }

    /// Rewrites the packet to leave as `out`.
    fn translate(
        &mut self,
        pkt: &mut PacketBuf,
        mut ip: IpFields,
        out: FlowKey,
    ) -> Result<IpFields, Action> {
        let (SocketAddr::V4(s), SocketAddr::V4(d)) = (out.src, out.dst) else {
            return Ok(ip);
        };
        let csum = if pkt.offload.flags & vnet::F_NEEDS_CSUM != 0 {
            L4Checksum::Partial
        } else {
            L4Checksum::Full
        };
        if nat::rewrite(&mut pkt.data_mut()[ethernet::HEADER_LEN..], s, d, csum).is_err() {
            return Err(self.drop(DropReason::Truncated));
        }
        self.counters.nat_translated += 1;
        ip.nat_dst |= ip.dst != *d.ip();
        ip.dst = *d.ip();
        Ok(ip)
    }

    /// A Service with no usable endpoint: the connection is refused with an
    /// ICMP port unreachable (kube-proxy's REJECT).
    fn reject(&mut self, pkt: &mut PacketBuf) -> Action {
        self.count_drop(DropReason::ServiceNoEndpoints);
        let (t, c) = (icmp::TYPE_DEST_UNREACHABLE, icmp::CODE_PORT_UNREACHABLE);
        self.icmp_error(pkt, t, c, 0)
            .unwrap_or(Action::Drop(DropReason::ServiceNoEndpoints))
    }

    /// An ICMP error quoting a packet of a translated connection is
    /// translated to match what the quoted packet's sender sent: the quote
    /// (addresses, ports, checksums), the outer destination, and the outer
    /// source if it was the quoted packet's destination. Anything else
    /// passes unchanged.
    fn nat_icmp_error(&mut self, pkt: &mut PacketBuf, mut ip: IpFields) -> IpFields {
        let ct = self.state.conntrack();
        if ct.is_empty() {
            return ip;
        }
        let l3 = &pkt.data()[ethernet::HEADER_LEN..];
        let Some(q) = nat::icmp_error_quote(l3) else {
            return ip;
        };
        let Ok((proto, es, ed)) = nat::endpoints(&l3[q..]) else {
            return ip;
        };
        let outer_src = ipv4::Packet::new_unchecked(l3).src();
        // The quote is a packet that left translated; its reverse is the
        // key of the other direction, whose input is what the quote was.
        let back = FlowKey {
            proto,
            src: ed.into(),
            dst: es.into(),
        };
        let Some(out) = ct.with(&back, self.now, |c, dir| c.out(dir)) else {
            return ip;
        };
        let (SocketAddr::V4(new_ed), SocketAddr::V4(new_es)) = (out.src, out.dst) else {
            return ip;
        };
        let outer_dst = if ip.dst == *es.ip() {
            *new_es.ip()
        } else {
            ip.dst
        };
        let outer_src = if outer_src == *ed.ip() {
            *new_ed.ip()
        } else {
            outer_src
        };
        let d = &mut pkt.data_mut()[ethernet::HEADER_LEN..];
        if nat::rewrite_icmp_error(d, q, outer_src, outer_dst, new_es, new_ed).is_ok() {
            self.counters.nat_translated += 1;
            ip.dst = outer_dst;
        }
        ip
    }
}
