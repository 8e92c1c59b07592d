//! Port security end to end: a pod that sends from an address that is not
//! its own (a second address added to its eth0, or frames built by hand on a
//! raw socket, as an attacker with CAP_NET_ADMIN in its pod would) reaches
//! nobody, and each drop is counted; ARP that claims another pod's or the
//! gateway's address poisons no neighbour table and costs the victim no
//! packet, where the same frames on a plain Linux bridge do poison; what a
//! pod may send (its own address, an RFC 5227 probe, what its attachment
//! allows) still goes through.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use vswitch::core::DropReason;

fn udp_arrives(from: &Pod, src: Ipv4Addr, to: &Pod) -> bool {
    let rx = udp_socket(to.netns(), SocketAddrV4::new(to.ip(), 7100)).unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let tx = udp_socket(from.netns(), SocketAddrV4::new(src, 0)).unwrap();
    for _ in 0..5 {
        tx.send_to(b"spoof?", SocketAddrV4::new(to.ip(), 7100))
            .unwrap();
    }
    let mut buf = [0u8; 16];
    rx.recv_from(&mut buf).is_ok()
}

#[test]
fn a_pod_sending_from_another_pods_or_the_gateways_address_reaches_nobody() {
    if !require_root("a_pod_sending_from_another_pods_or_the_gateways_address_reaches_nobody") {
        return;
    }
    let c = Cluster::new("vxlan").unwrap();
    let attacker = &c.a2;
    // Its own address works, to a pod on this node and on the other.
    assert!(udp_arrives(attacker, attacker.ip(), &c.a1));
    assert!(udp_arrives(attacker, attacker.ip(), &c.b1));
    for forged in [c.a1.ip(), c.node_a.config().gateway(), c.b2.ip()] {
        attacker
            .netns()
            .ip(&["addr", "add", &format!("{forged}/32"), "dev", "eth0"])
            .unwrap();
        for victim in [&c.a1, &c.b1] {
            if victim.ip() != forged {
                assert!(
                    !udp_arrives(attacker, forged, victim),
                    "{forged} reached {}",
                    victim.ip()
                );
            }
        }
    }
    let drops = c.node_a.counters().unwrap().drops.ip_spoof;
    assert!(drops >= 5, "ip_spoof {drops}");
}

/// Forged frames of each kind sent in one test.
const FORGED: u64 = 50;
/// Pings to the victim during the attack, from each side (0.2 s apart).
const PINGS: u32 = 20;

/// A pod's namespace, address and MAC.
#[derive(Debug, Clone, Copy)]
struct Host<'a> {
    ns: &'a Netns,
    ip: Ipv4Addr,
    mac: [u8; 6],
}

impl<'a> Host<'a> {
    fn pod(p: &'a Pod) -> Host<'a> {
        let mac = parse_mac(&p.info().unwrap().mac).unwrap();
        Host {
            ns: p.netns(),
            ip: p.ip(),
            mac,
        }
    }

    fn kernel(p: &'a KernelPod) -> Host<'a> {
        Host {
            ns: p.netns(),
            ip: p.ip(),
            mac: parse_mac(p.mac()).unwrap(),
        }
    }
}

/// One Ethernet segment: the `attacker` forges ARP about the `victim` (or
/// about the `gateway`, towards the victim); `third` is another pod there.
#[derive(Debug, Clone, Copy)]
struct Segment<'a> {
    attacker: Host<'a>,
    victim: Host<'a>,
    third: Host<'a>,
    gateway: Ipv4Addr,
}

impl Segment<'_> {
    /// Fills the neighbour tables the forgeries would overwrite (Linux
    /// updates an existing entry from an unsolicited reply or a gratuitous
    /// ARP, where it would not create one): the third pod's entry for the
    /// victim and the victim's for the gateway.
    fn prime(&self) {
        ping(self.third.ns, self.victim.ip, 1).unwrap();
        ping(self.victim.ns, self.gateway, 1).unwrap();
    }
}

/// The forgeries, each sent from the attacker's own MAC.
#[derive(Debug, Clone, Copy)]
enum Forgery {
    /// A broadcast request for the third pod's address "from" the victim's.
    RequestAsVictim,
    /// A reply to the third pod claiming the victim's address.
    ReplyAsVictim,
    /// A gratuitous ARP: a broadcast request whose sender and target
    /// address are both the victim's.
    GratuitousAsVictim,
    /// A reply to the victim claiming the gateway's address.
    ReplyAsGateway,
    /// A broadcast request for the third pod's address from the attacker's
    /// own address, but naming the victim's MAC as the sender's.
    ForeignSenderMac,
}

/// What a forgery would make `told` believe: `ip` is at `mac`.
#[derive(Debug, Clone, Copy)]
struct Lie<'a> {
    told: Host<'a>,
    ip: Ipv4Addr,
    mac: [u8; 6],
}

impl Forgery {
    const ALL: [Forgery; 5] = [
        Forgery::RequestAsVictim,
        Forgery::ReplyAsVictim,
        Forgery::GratuitousAsVictim,
        Forgery::ReplyAsGateway,
        Forgery::ForeignSenderMac,
    ];

    fn frame(self, s: &Segment) -> Vec<u8> {
        let (a, v, t) = (s.attacker, s.victim, s.third);
        let arp = |op, sender_mac, sender_ip, target_mac, target_ip| Arp {
            op,
            sender_mac,
            sender_ip,
            target_mac,
            target_ip,
        };
        let (dst, arp) = match self {
            Forgery::RequestAsVictim => (BROADCAST, arp(ARP_REQUEST, a.mac, v.ip, [0; 6], t.ip)),
            Forgery::ReplyAsVictim => (t.mac, arp(ARP_REPLY, a.mac, v.ip, t.mac, t.ip)),
            Forgery::GratuitousAsVictim => (BROADCAST, arp(ARP_REQUEST, a.mac, v.ip, [0; 6], v.ip)),
            Forgery::ReplyAsGateway => (v.mac, arp(ARP_REPLY, a.mac, s.gateway, v.mac, v.ip)),
            Forgery::ForeignSenderMac => (BROADCAST, arp(ARP_REQUEST, v.mac, a.ip, [0; 6], t.ip)),
        };
        arp.frame(a.mac, dst)
    }

    fn lie<'a>(self, s: &Segment<'a>) -> Lie<'a> {
        let (told, ip, mac) = match self {
            Forgery::RequestAsVictim | Forgery::ReplyAsVictim | Forgery::GratuitousAsVictim => {
                (s.third, s.victim.ip, s.attacker.mac)
            }
            Forgery::ReplyAsGateway => (s.victim, s.gateway, s.attacker.mac),
            Forgery::ForeignSenderMac => (s.third, s.attacker.ip, s.victim.mac),
        };
        Lie { told, ip, mac }
    }
}

/// The MAC `ns` maps `ip` to on eth0, if it has one.
fn neighbour(ns: &Netns, ip: Ipv4Addr) -> Option<String> {
    let out = ns
        .ip(&["-j", "neigh", "show", "to", &ip.to_string(), "dev", "eth0"])
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.get(0)?.get("lladdr")?.as_str().map(str::to_owned)
}

/// Sends `forgery` from the attacker's eth0, 50 ms apart, and looks after
/// each whether the lie is believed: the first neighbour entry that shows
/// it, if any. [`FORGED`] frames, or fewer with `until_believed`.
fn forge(s: &Segment, raw: &RawLink, forgery: Forgery, until_believed: bool) -> Option<String> {
    let (frame, lie) = (forgery.frame(s), forgery.lie(s));
    let believed = || {
        let mac = neighbour(lie.told.ns, lie.ip)?;
        let entry = format!("{} believes {} lladdr {mac}", lie.told.ns.name(), lie.ip);
        (mac == mac_str(lie.mac)).then_some(entry)
    };
    let mut first = None;
    for _ in 0..FORGED {
        raw.send(&frame).unwrap();
        first = first.or_else(believed);
        if until_believed && first.is_some() {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    first.or_else(believed)
}

/// `drops.<reason>` of `node` once it reaches `want`, or after 5 s.
fn drops_reaching(node: &NodeProcess, reason: DropReason, want: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = node.counters().unwrap().drops.get(reason);
        if n >= want || Instant::now() >= deadline {
            return n;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The issue's scene on twill: a2 attacks, a1 is the victim, a3 (a third
/// pod on node A) pings it on the same node and b1 across nodes while
/// [`FORGED`] frames of `forgery` go out. Each is dropped and counted as
/// `arp_spoof`, nobody believes the lie, and no ping is lost.
fn forgery_is_dropped_and_the_victim_loses_nothing(test: &str, forgery: Forgery) {
    if !require_root(test) {
        return;
    }
    let c = Cluster::new("vxlan").unwrap();
    let a3 = Pod::attach(&c.node_a, "twl-t-a3").unwrap();
    let s = Segment {
        attacker: Host::pod(&c.a2),
        victim: Host::pod(&c.a1),
        third: Host::pod(&a3),
        gateway: c.node_a.config().gateway(),
    };
    s.prime();
    ping(c.b1.netns(), s.victim.ip, 1).unwrap();
    let raw = RawLink::open(s.attacker.ns, "eth0").unwrap();
    let before = c.node_a.counters().unwrap().drops.arp_spoof;

    let (believed, pings) = thread::scope(|sc| {
        let same = sc.spawn(|| ping(s.third.ns, s.victim.ip, PINGS));
        let across = sc.spawn(|| ping(c.b1.netns(), s.victim.ip, PINGS));
        let believed = forge(&s, &raw, forgery, false);
        (believed, [("a3", same.join()), ("b1", across.join())])
    });

    // Everything that went wrong, in one message.
    let mut harm: Vec<String> = believed.into_iter().collect();
    for (from, r) in pings {
        match r.unwrap() {
            Ok(r) if r.received == r.transmitted => {}
            Ok(r) => harm.push(format!(
                "{} of {} pings from {from} lost",
                r.transmitted - r.received,
                r.transmitted
            )),
            Err(e) => harm.push(format!("{from}: {e:#}")),
        }
    }
    assert!(harm.is_empty(), "{forgery:?}: {}", harm.join("; "));
    let after = drops_reaching(&c.node_a, DropReason::ArpSpoof, before + FORGED);
    assert_eq!(after - before, FORGED, "{forgery:?}: arp_spoof");
}

#[test]
fn an_arp_request_sent_as_another_pod_is_dropped_and_the_victim_loses_nothing() {
    forgery_is_dropped_and_the_victim_loses_nothing(
        "an_arp_request_sent_as_another_pod_is_dropped_and_the_victim_loses_nothing",
        Forgery::RequestAsVictim,
    );
}

#[test]
fn an_arp_reply_claiming_another_pods_address_is_dropped_and_the_victim_loses_nothing() {
    forgery_is_dropped_and_the_victim_loses_nothing(
        "an_arp_reply_claiming_another_pods_address_is_dropped_and_the_victim_loses_nothing",
        Forgery::ReplyAsVictim,
    );
}

#[test]
fn a_gratuitous_arp_for_another_pods_address_is_dropped_and_the_victim_loses_nothing() {
    forgery_is_dropped_and_the_victim_loses_nothing(
        "a_gratuitous_arp_for_another_pods_address_is_dropped_and_the_victim_loses_nothing",
        Forgery::GratuitousAsVictim,
    );
}

#[test]
fn an_arp_reply_claiming_the_gateway_towards_a_pod_is_dropped_and_it_keeps_its_gateway() {
    forgery_is_dropped_and_the_victim_loses_nothing(
        "an_arp_reply_claiming_the_gateway_towards_a_pod_is_dropped_and_it_keeps_its_gateway",
        Forgery::ReplyAsGateway,
    );
}

#[test]
fn an_arp_whose_sender_mac_is_not_the_frames_source_is_dropped() {
    forgery_is_dropped_and_the_victim_loses_nothing(
        "an_arp_whose_sender_mac_is_not_the_frames_source_is_dropped",
        Forgery::ForeignSenderMac,
    );
}

/// The control: on a Linux bridge (flannel's `cni0`), which has no port
/// security, every forgery above is believed. So the frames are the attack
/// the twill tests say they are, and those tests can fail.
#[test]
fn the_same_forgeries_poison_neighbour_tables_on_a_plain_linux_bridge() {
    if !require_root("the_same_forgeries_poison_neighbour_tables_on_a_plain_linux_bridge") {
        return;
    }
    let node = Netns::new("twl-t-lbr").unwrap();
    // The node's "NIC": a veth whose other end stays unused.
    node.ip(&[
        "link", "add", "nic0", "type", "veth", "peer", "name", "nic1",
    ])
    .unwrap();
    node.ip(&["addr", "add", &format!("{UNDERLAY_A}/24"), "dev", "nic0"])
        .unwrap();
    node.ip(&["link", "set", "nic0", "up"]).unwrap();
    let bridge = KernelVxlanNode::new_among_kernels(&node, UNDERLAY_A, subnet(1), 1, 8472).unwrap();
    let pods = [(); 3].map(|()| bridge.add_pod().unwrap());
    let s = Segment {
        attacker: Host::kernel(&pods[0]),
        victim: Host::kernel(&pods[1]),
        third: Host::kernel(&pods[2]),
        gateway: bridge.gateway(),
    };
    let raw = RawLink::open(s.attacker.ns, "eth0").unwrap();
    for forgery in Forgery::ALL {
        for p in &pods {
            p.netns().ip(&["neigh", "flush", "dev", "eth0"]).unwrap();
        }
        s.prime();
        let lie = forgery.lie(&s);
        match forge(&s, &raw, forgery, true) {
            Some(entry) => eprintln!("Linux bridge, {forgery:?}: {entry}"),
            None => panic!(
                "{forgery:?}: {} never mapped {} to {} on a Linux bridge",
                lie.told.ns.name(),
                lie.ip,
                mac_str(lie.mac)
            ),
        }
    }
}

/// Each IPv4 packet a pod sends from the gateway's or the host port's
/// address (frames built by hand, so that no ARP of the attacker's kernel
/// stands in the way or gets counted) is dropped and counted as `ip_spoof`,
/// towards a pod on the same node and on the other; the same frame from the
/// pod's own address arrives, before and after.
#[test]
fn forged_gateway_and_host_port_sources_are_dropped_and_counted_one_by_one() {
    if !require_root("forged_gateway_and_host_port_sources_are_dropped_and_counted_one_by_one") {
        return;
    }
    const EACH: u64 = 20;
    let c = Cluster::new("vxlan").unwrap();
    let attacker = Host::pod(&c.a2);
    let router = parse_mac(c.node_a.config().vtep_mac.as_deref().unwrap()).unwrap();
    let cfg = c.node_a.config();
    let forged = [cfg.gateway(), cfg.host_ip()];
    let raw = RawLink::open(attacker.ns, "eth0").unwrap();
    let mut buf = [0u8; 64];
    for (victim, next_hop) in [(&c.a1, Host::pod(&c.a1).mac), (&c.b1, router)] {
        let to = SocketAddrV4::new(victim.ip(), 7200);
        let rx = udp_socket(victim.netns(), to).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let frame = |src: Ipv4Addr, payload: &[u8]| {
            let from = SocketAddrV4::new(src, 7300);
            ethernet_udp(attacker.mac, next_hop, from, to, payload).unwrap()
        };
        let mut next = || {
            let (n, from) = rx.recv_from(&mut buf).unwrap();
            (from.ip().to_string(), buf[..n].to_vec())
        };
        let own = (attacker.ip.to_string(), b"own".to_vec());
        raw.send(&frame(attacker.ip, b"own")).unwrap();
        assert_eq!(next(), own, "the well-formed frame to {to}");

        let before = c.node_a.counters().unwrap().drops.ip_spoof;
        for src in forged {
            for _ in 0..EACH {
                raw.send(&frame(src, b"forged")).unwrap();
            }
        }
        raw.send(&frame(attacker.ip, b"own")).unwrap();
        assert_eq!(next(), own, "forged sources reached {to}");
        rx.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        if let Ok((n, from)) = rx.recv_from(&mut buf) {
            panic!("{n} bytes from {from} reached {to}");
        }
        let sent = EACH * forged.len() as u64;
        let after = drops_reaching(&c.node_a, DropReason::IpSpoof, before + sent);
        assert_eq!(after - before, sent, "ip_spoof towards {to}");
    }
}

/// An ARP probe (RFC 5227: sender address 0.0.0.0) is how a pod checks an
/// address before taking it: it goes through, uncounted, and the owner of
/// the address answers each one.
#[test]
fn an_rfc5227_probe_is_not_spoofing_and_gets_its_answer() {
    if !require_root("an_rfc5227_probe_is_not_spoofing_and_gets_its_answer") {
        return;
    }
    const PROBES: u32 = 10;
    let c = Cluster::new("vxlan").unwrap();
    let (prober, owner) = (Host::pod(&c.a2), Host::pod(&c.a1));
    let raw = RawLink::open(prober.ns, "eth0").unwrap();
    let probe = Arp {
        op: ARP_REQUEST,
        sender_mac: prober.mac,
        sender_ip: Ipv4Addr::UNSPECIFIED,
        target_mac: [0; 6],
        target_ip: owner.ip,
    };
    let before = c.node_a.counters().unwrap();
    for i in 0..PROBES {
        raw.send(&probe.frame(prober.mac, BROADCAST)).unwrap();
        let answered = raw
            .wait_for(Duration::from_secs(2), |f| {
                Arp::parse(f).is_some_and(|(dst, a)| {
                    dst == prober.mac
                        && a.op == ARP_REPLY
                        && (a.sender_mac, a.sender_ip) == (owner.mac, owner.ip)
                })
            })
            .unwrap();
        assert!(answered, "probe {i} for {} got no answer", owner.ip);
    }
    let after = c.node_a.counters().unwrap();
    for reason in [DropReason::ArpSpoof, DropReason::MacSpoof] {
        assert_eq!(
            after.drops.get(reason),
            before.drops.get(reason),
            "{reason:?}"
        );
    }
}

/// A pod attached with `--allow-mac M --allow-ip P/32` may claim P at M in
/// ARP (a pod that bridges a VM does): the target learns it and answers.
/// The next address is still someone else's: claiming it is counted as
/// `arp_spoof`, and nobody learns it.
#[test]
fn a_pod_may_claim_in_arp_what_its_attachment_allows_and_no_more() {
    if !require_root("a_pod_may_claim_in_arp_what_its_attachment_allows_and_no_more") {
        return;
    }
    let c = Cluster::new("vxlan").unwrap();
    let (allowed, beyond) = (nth_host(subnet(1), 200), nth_host(subnet(1), 201));
    let mac = [0x0a, 0x58, 0x0a, 0xf4, 0x01, 0xc8];
    let prefix = format!("{allowed}/32");
    let args = ["--allow-mac", &mac_str(mac), "--allow-ip", &prefix];
    let br = Pod::attach_args(&c.node_a, "twl-t-br", &args).unwrap();
    let target = Host::pod(&c.a1);
    let raw = RawLink::open(br.netns(), "eth0").unwrap();
    let claim = |ip| {
        let arp = Arp {
            op: ARP_REQUEST,
            sender_mac: mac,
            sender_ip: ip,
            target_mac: [0; 6],
            target_ip: target.ip,
        };
        arp.frame(mac, BROADCAST)
    };

    let before = c.node_a.counters().unwrap();
    raw.send(&claim(allowed)).unwrap();
    let answered = raw
        .wait_for(Duration::from_secs(2), |f| {
            Arp::parse(f).is_some_and(|(dst, a)| {
                dst == mac
                    && a.op == ARP_REPLY
                    && a.sender_ip == target.ip
                    && a.target_ip == allowed
            })
        })
        .unwrap();
    assert!(
        answered,
        "{} did not answer {allowed} at {}",
        target.ip,
        mac_str(mac)
    );
    assert_eq!(neighbour(target.ns, allowed), Some(mac_str(mac)));
    let after = c.node_a.counters().unwrap();
    for reason in [DropReason::ArpSpoof, DropReason::MacSpoof] {
        assert_eq!(
            after.drops.get(reason),
            before.drops.get(reason),
            "{reason:?}"
        );
    }

    for _ in 0..FORGED {
        raw.send(&claim(beyond)).unwrap();
    }
    let want = before.drops.arp_spoof + FORGED;
    let counted = drops_reaching(&c.node_a, DropReason::ArpSpoof, want);
    assert_eq!(counted, want, "arp_spoof after claiming {beyond}");
    assert_eq!(neighbour(target.ns, beyond), None, "{beyond} was learned");
}
