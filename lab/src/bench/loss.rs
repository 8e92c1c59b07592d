//! Where the UDP test's lost packets went, and where the TCP tests'
//! retransmitted segments were dropped: drop counters of every namespace
//! of a system (and of twill's agents), sampled before and after each
//! iperf3 run, and their deltas grouped by place. Reading only: it never changes a
//! namespace, and a counter it cannot read is recorded as missing, never an
//! error of the benchmark.

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use crate::netns::Netns;
use crate::node::NodeProcess;

/// The `Udp:` counters of /proc/net/snmp that count lost datagrams; `None`:
/// not read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct UdpSnmp {
    /// Datagrams dropped on receive, for any reason. The kernel charges a
    /// full receive buffer twice, here and in `rcvbuf_errors`.
    pub(super) in_errors: Option<u64>,
    pub(super) rcvbuf_errors: Option<u64>,
    /// Datagrams whose send failed with ENOBUFS (e.g. the qdisc was full);
    /// the kernel tells the sender "sent" unless IP_RECVERR is set.
    pub(super) sndbuf_errors: Option<u64>,
}

/// Reads the first `Udp:` header/value line pair of /proc/net/snmp
/// (`UdpLite:` is another protocol). Fails only when there is no such pair;
/// a counter missing from it is `None`.
pub(super) fn parse_snmp_udp(text: &str) -> Result<UdpSnmp> {
    let mut udp = text.lines().filter_map(|l| l.strip_prefix("Udp:"));
    let (names, values) = match (udp.next(), udp.next()) {
        (Some(n), Some(v)) => (n, v),
        _ => bail!("no `Udp:` lines"),
    };
    let get = |want: &str| {
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == want)
            .and_then(|(_, v)| v.parse().ok())
    };
    Ok(UdpSnmp {
        in_errors: get("InErrors"),
        rcvbuf_errors: get("RcvbufErrors"),
        sndbuf_errors: get("SndbufErrors"),
    })
}

/// Dropped packets summed over a namespace's interfaces but `lo`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct LinkDrops {
    pub(super) rx: u64,
    pub(super) tx: u64,
}

/// Reads `ip -s -j link show` (its `stats64.{rx,tx}.dropped`).
pub(super) fn parse_link_drops(json: &str) -> Result<LinkDrops> {
    let v: serde_json::Value = serde_json::from_str(json).context("not JSON")?;
    let links = v.as_array().ok_or_else(|| anyhow!("not a JSON array"))?;
    let mut sum = LinkDrops::default();
    for l in links {
        if l.get("ifname").and_then(|n| n.as_str()) == Some("lo") {
            continue;
        }
        let dropped = |dir: &str| {
            l.pointer(&format!("/stats64/{dir}/dropped"))
                .and_then(|d| d.as_u64())
                .ok_or_else(|| anyhow!("an interface without stats64.{dir}.dropped"))
        };
        sum.rx += dropped("rx")?;
        sum.tx += dropped("tx")?;
    }
    Ok(sum)
}

/// One namespace's counters at one moment.
#[derive(Debug, Clone, Default)]
struct NsCounters {
    udp: UdpSnmp,
    links: Option<LinkDrops>,
}

/// Every counter of one system at one moment.
#[derive(Debug, Clone)]
pub(super) struct Sample {
    pod_a: NsCounters,
    nodes: Vec<NsCounters>,
    pod_b: NsCounters,
    /// Each agent's [`crate::Counters::dropped_packets`]; empty for a
    /// system without agents.
    agents: Vec<Option<u64>>,
    /// What could not be read, as `where: error`.
    unreadable: Vec<String>,
}

/// The namespaces and agents of one system.
#[derive(Debug, Clone, Copy)]
pub(super) struct Probe<'a> {
    pub(super) pod_a: &'a Netns,
    pub(super) nodes: [&'a Netns; 2],
    pub(super) pod_b: &'a Netns,
    /// twill's agents; empty for the kernel's systems.
    pub(super) agents: &'a [NodeProcess],
}

impl Probe<'_> {
    /// Reads every counter now: per namespace, /proc/net/snmp from a thread
    /// inside it and one `ip -s -j link show`; per agent, `twill counters`.
    pub(super) fn sample(&self) -> Sample {
        let mut unreadable = Vec::new();
        let mut ns = |what: &str, ns: &Netns| {
            let udp = read_snmp(ns).unwrap_or_else(|e| {
                unreadable.push(format!("{what} /proc/net/snmp: {e:#}"));
                UdpSnmp::default()
            });
            let links = ns
                .ip(&["-s", "-j", "link", "show"])
                .and_then(|out| parse_link_drops(&out))
                .map_err(|e| unreadable.push(format!("{what} interface drops: {e:#}")))
                .ok();
            NsCounters { udp, links }
        };
        let pod_a = ns("pod A", self.pod_a);
        let nodes = vec![ns("node A", self.nodes[0]), ns("node B", self.nodes[1])];
        let pod_b = ns("pod B", self.pod_b);
        let agents = self
            .agents
            .iter()
            .map(|a| match a.counters() {
                Ok(c) => Some(c.dropped_packets()),
                Err(e) => {
                    unreadable.push(format!("agent in {}: {e:#}", a.netns()));
                    None
                }
            })
            .collect();
        Sample {
            pod_a,
            nodes,
            pod_b,
            agents,
            unreadable,
        }
    }
}

/// /proc/net/snmp as seen from a thread that joined `ns` (the calling
/// process's own /proc/net is that of its main thread's namespace).
fn read_snmp(ns: &Netns) -> Result<UdpSnmp> {
    let text = ns
        .run_in(|| std::fs::read_to_string("/proc/thread-self/net/snmp"))?
        .context("reading /proc/thread-self/net/snmp")?;
    parse_snmp_udp(&text)
}

/// Where the UDP test's lost packets went, in packets counted between the
/// samples around the iperf3 run. `None` (null in results.json, `?` in the
/// text) where a counter could not be read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(super) struct UdpLoss {
    /// iperf3's own count (the server's, from gaps in sequence numbers).
    pub(super) iperf3_lost: Option<u64>,
    /// Pod A: its interface's TX drops (the queue towards the node was
    /// full) plus `Udp SndbufErrors`.
    pub(super) sender_queue: Option<u64>,
    /// Pod A: of which `Udp SndbufErrors`.
    pub(super) sender_sndbuf_errors: Option<u64>,
    /// Both node namespaces: `Udp InErrors` (twill's tunnel sockets; the
    /// kernel's VXLAN socket counts little here, its drops show on the
    /// vxlan device).
    pub(super) node_sockets: Option<u64>,
    /// Both node namespaces: of which `Udp RcvbufErrors`.
    pub(super) node_rcvbuf_errors: Option<u64>,
    /// Both node namespaces: interfaces' RX + TX drops.
    pub(super) node_interfaces: Option<u64>,
    /// Both agents' own drop counters; absent for a system without twill.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) twill: Option<Option<u64>>,
    /// Pod B: its interface's RX drops.
    pub(super) receiver_interface: Option<u64>,
    /// Pod B: `Udp InErrors` (the iperf3 server did not read fast enough).
    pub(super) receiver_socket: Option<u64>,
    /// Pod B: of which `Udp RcvbufErrors`.
    pub(super) receiver_rcvbuf_errors: Option<u64>,
    /// `iperf3_lost` minus the places above. Approximate: iperf3 counts gaps
    /// in sequence numbers, so drops after the last packet it read (the
    /// queues still draining when it stops) are not in its count and make
    /// this negative, reordering skews it too, and the counters also see
    /// packets other than the test's. Small values of either sign are noise.
    pub(super) unaccounted: Option<i64>,
    /// What could not be read, as `where: error`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) unreadable: Vec<String>,
}

/// `after - before`; `None` if either is missing or the counter went
/// backwards (e.g. an interface was replaced).
fn delta(before: Option<u64>, after: Option<u64>) -> Option<u64> {
    after?.checked_sub(before?)
}

/// The sum, or `None` if any part is missing.
fn sum(parts: impl IntoIterator<Item = Option<u64>>) -> Option<u64> {
    parts.into_iter().sum()
}

/// The places both tests share, between two samples.
struct Places {
    sender_queue: Option<u64>,
    sender_sndbuf_errors: Option<u64>,
    node_sockets: Option<u64>,
    node_rcvbuf_errors: Option<u64>,
    node_interfaces: Option<u64>,
    twill: Option<Option<u64>>,
    receiver_interface: Option<u64>,
    unreadable: Vec<String>,
}

impl Places {
    fn between(before: &Sample, after: &Sample) -> Places {
        let udp = |b: &NsCounters, a: &NsCounters, f: fn(&UdpSnmp) -> Option<u64>| {
            delta(f(&b.udp), f(&a.udp))
        };
        let link = |b: &NsCounters, a: &NsCounters, f: fn(&LinkDrops) -> u64| {
            delta(b.links.as_ref().map(f), a.links.as_ref().map(f))
        };
        let nodes = || before.nodes.iter().zip(&after.nodes);
        let (pa, pa2) = (&before.pod_a, &after.pod_a);
        let sender_sndbuf_errors = udp(pa, pa2, |u| u.sndbuf_errors);
        let mut unreadable = before.unreadable.clone();
        for u in &after.unreadable {
            if !unreadable.contains(u) {
                unreadable.push(u.clone());
            }
        }
        Places {
            sender_queue: sum([link(pa, pa2, |l| l.tx), sender_sndbuf_errors]),
            sender_sndbuf_errors,
            node_sockets: sum(nodes().map(|(b, a)| udp(b, a, |u| u.in_errors))),
            node_rcvbuf_errors: sum(nodes().map(|(b, a)| udp(b, a, |u| u.rcvbuf_errors))),
            node_interfaces: sum(
                nodes().map(|(b, a)| sum([link(b, a, |l| l.rx), link(b, a, |l| l.tx)]))
            ),
            twill: (!before.agents.is_empty()).then(|| {
                sum(before
                    .agents
                    .iter()
                    .zip(&after.agents)
                    .map(|(b, a)| delta(*b, *a)))
            }),
            receiver_interface: link(&before.pod_b, &after.pod_b, |l| l.rx),
            unreadable,
        }
    }
}

impl UdpLoss {
    /// The deltas between two samples of the same system.
    pub(super) fn between(before: &Sample, after: &Sample, iperf3_lost: Option<u64>) -> UdpLoss {
        let p = Places::between(before, after);
        let udp = |f: fn(&UdpSnmp) -> Option<u64>| delta(f(&before.pod_b.udp), f(&after.pod_b.udp));
        let receiver_socket = udp(|u| u.in_errors);
        let accounted = sum([
            p.sender_queue,
            p.node_sockets,
            p.node_interfaces,
            p.twill.unwrap_or(Some(0)),
            p.receiver_interface,
            receiver_socket,
        ]);
        let unaccounted = match (iperf3_lost, accounted) {
            (Some(l), Some(a)) => Some(l as i64 - a as i64),
            _ => None,
        };
        UdpLoss {
            iperf3_lost,
            sender_queue: p.sender_queue,
            sender_sndbuf_errors: p.sender_sndbuf_errors,
            node_sockets: p.node_sockets,
            node_rcvbuf_errors: p.node_rcvbuf_errors,
            node_interfaces: p.node_interfaces,
            twill: p.twill,
            receiver_interface: p.receiver_interface,
            receiver_socket,
            receiver_rcvbuf_errors: udp(|u| u.rcvbuf_errors),
            unaccounted,
            unreadable: p.unreadable,
        }
    }
}

/// Where a TCP test's segments were dropped, in packets counted between the
/// samples around the iperf3 run, beside the segments the sender
/// retransmitted. One drop may be a whole super-packet (a `UDP_GRO` batch
/// on twill's tunnel socket, a GSO packet on the kernel's devices) of up
/// to 46 segments, so the places count fewer packets than were
/// retransmitted. `None` where a counter could not be read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(super) struct TcpLoss {
    /// iperf3's count (the client's `end.sum_sent.retransmits`).
    pub(super) retransmits: Option<u64>,
    /// Pod A: its interface's TX drops.
    pub(super) sender_queue: Option<u64>,
    /// Both node namespaces: `Udp InErrors` (twill's tunnel sockets).
    pub(super) node_sockets: Option<u64>,
    /// Both node namespaces: of which `Udp RcvbufErrors`.
    pub(super) node_rcvbuf_errors: Option<u64>,
    /// Both node namespaces: interfaces' RX + TX drops.
    pub(super) node_interfaces: Option<u64>,
    /// Both agents' own drop counters; absent for a system without twill.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) twill: Option<Option<u64>>,
    /// Pod B: its interface's RX drops.
    pub(super) receiver_interface: Option<u64>,
    /// What could not be read, as `where: error`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) unreadable: Vec<String>,
}

impl TcpLoss {
    /// The deltas between two samples of the same system.
    pub(super) fn between(before: &Sample, after: &Sample, retransmits: Option<u64>) -> TcpLoss {
        let p = Places::between(before, after);
        TcpLoss {
            retransmits,
            // A TCP sender's queue drops show on its interface; it sends no UDP.
            sender_queue: delta(
                before.pod_a.links.as_ref().map(|l| l.tx),
                after.pod_a.links.as_ref().map(|l| l.tx),
            ),
            node_sockets: p.node_sockets,
            node_rcvbuf_errors: p.node_rcvbuf_errors,
            node_interfaces: p.node_interfaces,
            twill: p.twill,
            receiver_interface: p.receiver_interface,
            unreadable: p.unreadable,
        }
    }

    /// Whether anything was retransmitted or dropped (a counter that could
    /// not be read counts as something to show).
    pub(super) fn any(&self) -> bool {
        let places = [
            self.retransmits,
            self.sender_queue,
            self.node_sockets,
            self.node_interfaces,
            self.twill.unwrap_or(Some(0)),
            self.receiver_interface,
        ];
        places.iter().any(|p| p != &Some(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Udp lines of a 6.x kernel's /proc/net/snmp (abridged: Ip, Icmp
    /// and Tcp before them), with UdpLite after.
    static SNMP: &str = "\
Ip: Forwarding DefaultTTL InReceives
Ip: 1 64 7733
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens
Tcp: 1 200 120000 -1 12
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 1834211 0 160746 12 160740 17 6 0 0
UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
UdpLite: 0 0 99 0 99 99 0 0 0
";

    #[test]
    fn snmp_udp_counters_are_read_by_name() {
        let u = parse_snmp_udp(SNMP).unwrap();
        assert_eq!(
            u,
            UdpSnmp {
                in_errors: Some(160746),
                rcvbuf_errors: Some(160740),
                sndbuf_errors: Some(17),
            }
        );
    }

    #[test]
    fn snmp_without_a_counter_or_udp_lines() {
        let old = "Udp: InDatagrams NoPorts InErrors OutDatagrams\nUdp: 5 0 3 9\n";
        let u = parse_snmp_udp(old).unwrap();
        assert_eq!(u.in_errors, Some(3));
        assert_eq!(u.rcvbuf_errors, None);
        assert!(parse_snmp_udp("UdpLite: InErrors\nUdpLite: 1\n").is_err());
        assert!(parse_snmp_udp("Udp: InErrors\n").is_err());
    }

    #[test]
    fn link_drops_sum_all_interfaces_but_lo() {
        let json = r#"[
          {"ifname":"lo","stats64":{"rx":{"dropped":1000},"tx":{"dropped":1000}}},
          {"ifname":"eth0","stats64":{"rx":{"packets":9,"dropped":2},"tx":{"dropped":400123}}},
          {"ifname":"veth1","stats64":{"rx":{"dropped":5},"tx":{"dropped":0}}}
        ]"#;
        assert_eq!(
            parse_link_drops(json).unwrap(),
            LinkDrops { rx: 7, tx: 400123 }
        );
        assert!(parse_link_drops(r#"[{"ifname":"eth0"}]"#).is_err());
        assert!(parse_link_drops("Device not found").is_err());
    }

    fn ns(in_errors: u64, rcvbuf: u64, sndbuf: u64, rx: u64, tx: u64) -> NsCounters {
        NsCounters {
            udp: UdpSnmp {
                in_errors: Some(in_errors),
                rcvbuf_errors: Some(rcvbuf),
                sndbuf_errors: Some(sndbuf),
            },
            links: Some(LinkDrops { rx, tx }),
        }
    }

    /// A sample of two nodes with agents, everything read.
    fn sample(
        pod_a: NsCounters,
        nodes: [NsCounters; 2],
        pod_b: NsCounters,
        agents: [u64; 2],
    ) -> Sample {
        Sample {
            pod_a,
            nodes: nodes.to_vec(),
            pod_b,
            agents: agents.map(Some).to_vec(),
            unreadable: Vec::new(),
        }
    }

    #[test]
    fn loss_is_the_deltas_by_place() {
        let before = sample(
            ns(0, 0, 5, 0, 100),
            [ns(1, 1, 0, 0, 0), ns(10, 10, 0, 3, 0)],
            ns(7, 7, 0, 0, 0),
            [2, 4],
        );
        let after = sample(
            ns(0, 0, 6, 9, 400_222),
            [ns(1, 1, 0, 0, 0), ns(16_713, 16_700, 0, 4, 1)],
            ns(160_753, 160_750, 0, 0, 0),
            [2, 5],
        );
        let l = UdpLoss::between(&before, &after, Some(580_000));
        assert_eq!(l.sender_queue, Some(400_123));
        assert_eq!(l.sender_sndbuf_errors, Some(1));
        assert_eq!(l.node_sockets, Some(16_703));
        assert_eq!(l.node_rcvbuf_errors, Some(16_690));
        assert_eq!(l.node_interfaces, Some(2));
        assert_eq!(l.twill, Some(Some(1)));
        assert_eq!(l.receiver_interface, Some(0));
        assert_eq!(l.receiver_socket, Some(160_746));
        assert_eq!(l.receiver_rcvbuf_errors, Some(160_743));
        let accounted = 400_123 + 16_703 + 2 + 1 + 160_746;
        assert_eq!(l.unaccounted, Some(580_000 - accounted));
    }

    #[test]
    fn tcp_loss_is_the_deltas_by_place_beside_the_retransmits() {
        let before = sample(
            ns(0, 0, 5, 0, 100),
            [ns(1, 1, 0, 0, 0), ns(10, 10, 0, 3, 0)],
            ns(7, 7, 0, 2, 0),
            [2, 4],
        );
        // Pod A's UDP SndbufErrors moved (something else sent UDP): not the
        // TCP sender's.
        let after = sample(
            ns(0, 0, 9, 0, 104),
            [ns(1, 1, 0, 0, 0), ns(130, 130, 0, 3, 0)],
            ns(7, 7, 0, 3, 0),
            [2, 4],
        );
        let l = TcpLoss::between(&before, &after, Some(3_422));
        assert_eq!(
            l,
            TcpLoss {
                retransmits: Some(3_422),
                sender_queue: Some(4),
                node_sockets: Some(120),
                node_rcvbuf_errors: Some(120),
                node_interfaces: Some(0),
                twill: Some(Some(0)),
                receiver_interface: Some(1),
                unreadable: Vec::new(),
            }
        );
        assert!(l.any());
        let quiet = TcpLoss::between(&before, &before, Some(0));
        assert!(!quiet.any(), "{quiet:?}");
        let unread = TcpLoss::between(&before, &before, None);
        assert!(unread.any(), "an unread count is shown");
    }

    #[test]
    fn a_missing_counter_is_missing_not_zero() {
        let mut before = Sample {
            pod_a: ns(0, 0, 0, 0, 10),
            nodes: vec![ns(0, 0, 0, 0, 0), ns(0, 0, 0, 0, 0)],
            pod_b: ns(0, 0, 0, 0, 0),
            agents: Vec::new(),
            unreadable: vec!["pod B /proc/net/snmp: gone".into()],
        };
        before.pod_b.udp = UdpSnmp::default();
        let mut after = before.clone();
        after.pod_a.links = Some(LinkDrops { rx: 0, tx: 5 });
        let l = UdpLoss::between(&before, &after, Some(3));
        // The TX counter went backwards: not a delta.
        assert_eq!(l.sender_queue, None);
        assert_eq!(l.receiver_socket, None);
        assert_eq!(l.node_sockets, Some(0));
        assert_eq!(l.twill, None, "no agents: not applicable");
        assert_eq!(l.unaccounted, None);
        assert_eq!(l.unreadable, vec!["pod B /proc/net/snmp: gone".to_owned()]);
        let v = serde_json::to_value(&l).unwrap();
        assert!(v["receiver_socket"].is_null());
        assert!(v.get("twill").is_none());
        assert_eq!(v["node_sockets"], 0);
    }
}
