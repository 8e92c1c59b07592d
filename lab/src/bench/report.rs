//! The report of `twill bench`: the table on stdout and `results.json`, and
//! the figures handed to [`super::plot`]. Formatting only: no I/O but
//! reading the machine's description.

use std::fmt::Write as _;
use std::process::Command;
use std::thread;
use std::time::Duration;

use serde_json::{json, Value};

use super::loss::{TcpLoss, UdpLoss};
use super::policy::{self, PolicySetup};
use super::{plot, BenchOptions, SystemResult, RR_ROUNDS, RR_WARMUP, UDP_LEN};
use crate::cmd;

/// `value (ratio×)` against the anchor, or `-` when missing.
fn with_ratio(v: Option<f64>, anchor: Option<f64>, fmt: impl Fn(f64) -> String) -> String {
    match (v, anchor) {
        (Some(v), Some(a)) if a > 0.0 => format!("{} ({:.2}×)", fmt(v), v / a),
        (Some(v), _) => fmt(v),
        (None, _) => "-".into(),
    }
}

pub(super) fn table(results: &[SystemResult]) -> String {
    let anchor = results.iter().find(|r| r.system == "kernel-vxlan");
    let a = |f: &dyn Fn(&SystemResult) -> Option<f64>| anchor.and_then(f);
    let tcp1 = |r: &SystemResult| r.tcp1.as_ref().map(|t| t.gbit_per_s);
    let tcp4 = |r: &SystemResult| r.tcp4.as_ref().map(|t| t.gbit_per_s);
    let pps = |r: &SystemResult| r.udp64.as_ref().map(|u| u.received_pps);
    let cpu1 = |r: &SystemResult| r.tcp1.as_ref().map(|t| t.cpu_s_per_gbit);
    let cpu4 = |r: &SystemResult| r.tcp4.as_ref().map(|t| t.cpu_s_per_gbit);
    let conn = |r: &SystemResult| r.conn.as_ref().map(|c| c.conn_per_s);
    let gbit = |v: f64| format!("{v:.2}");
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n{:<15} {:>16} {:>16} {:>24} {:>20} {:>16} {:>22}",
        "system",
        "TCP1 Gbit/s",
        "TCP4 Gbit/s",
        "UDP64 kpps rx (loss)",
        "RR µs mean/p50/p99",
        "conn/s",
        "CPU s/Gbit TCP1/TCP4"
    );
    for r in results {
        let udp = match (pps(r), a(&pps), &r.udp64) {
            (Some(v), an, Some(u)) => {
                let base = with_ratio(Some(v), an, |x| format!("{:.0}", x / 1e3));
                format!("{base} {:.0}%", u.lost_percent)
            }
            _ => "-".into(),
        };
        let rr =
            r.rr.as_ref()
                .map(|l| format!("{:.0} / {:.0} / {:.0}", l.mean_us, l.p50_us, l.p99_us))
                .unwrap_or_else(|| "-".into());
        let cpu = match (cpu1(r), cpu4(r)) {
            (None, None) => "-".into(),
            (c1, c4) => format!(
                "{} / {}",
                c1.map_or("-".into(), |v| format!("{v:.2}")),
                c4.map_or("-".into(), |v| format!("{v:.2}"))
            ),
        };
        let _ = writeln!(
            s,
            "{:<15} {:>16} {:>16} {:>24} {:>20} {:>16} {:>22}{}",
            r.system,
            with_ratio(tcp1(r), a(&tcp1), gbit),
            with_ratio(tcp4(r), a(&tcp4), gbit),
            udp,
            rr,
            with_ratio(conn(r), a(&conn), |v| format!("{v:.0}")),
            cpu,
            if r.errors.is_empty() {
                ""
            } else {
                "  (errors)"
            }
        );
    }
    s.push_str(&paced_table(results));
    let same_run: Vec<String> = [service_ratios(results), policy_ratios(results)]
        .into_iter()
        .flatten()
        .collect();
    if !same_run.is_empty() {
        let _ = write!(s, "\n{}\n", same_run.join("\n"));
    }
    if let Some(line) = policy_line(results) {
        let _ = write!(s, "\n{line}\n");
    }
    let losses: Vec<String> = results
        .iter()
        .flat_map(|r| {
            let tcp = [("TCP1", &r.tcp1_loss), ("TCP4", &r.tcp4_loss)]
                .into_iter()
                .filter_map(|(test, l)| {
                    let l = l.as_ref().filter(|l| l.any())?;
                    Some(format!("{} {test}: {}", r.system, tcp_loss_places(l)))
                });
            tcp.chain(r.udp64_loss.as_ref().map(|l| loss_line(r.system, l)))
        })
        .collect();
    if !losses.is_empty() {
        let _ = write!(s, "\n{}\n", losses.join("\n"));
    }
    s.push_str(
        "\n(×) = ratio to kernel-vxlan in this run. UDP64: packets/s received by the iperf3 \
         server, 64-byte payloads sent at full speed, loss in %.\nUDP64 loss: packets dropped \
         during that test, by place: sender queue = pod A's interface TX drops + UDP send \
         errors; node sockets, node interfaces = UDP receive errors and interface drops in \
         the node namespaces; twill = the agents' own drop counters; receiver = pod B's \
         interface RX drops and UDP receive errors (the iperf3 server too slow); \
         unaccounted = iperf3's lost count minus these (approximate: iperf3 counts gaps in \
         sequence numbers, so drops after the last packet it read make it negative). \
         TCP1/TCP4 (shown when not all 0): the segments iperf3 retransmitted and the drops \
         in the same places during that test (a drop may be a whole super-packet: twill's \
         tunnel batches and the kernel's GSO packets carry up to 46 segments).\nCPU s/Gbit: busy CPU time \
         of the whole machine (all CPUs, from /proc/stat: user+system+irq+softirq, so the \
         kernel's softirq work, twill's processes and iperf3 itself all count) per Gbit \
         received.\nRR: 1-byte TCP ping-pong between blocking threads; on a small or busy \
         machine it includes scheduler wake-up latency (p50 is the steadiest figure).\nconn/s: \
         new TCP connections per second, one at a time: connect, 1 byte each way, the server \
         closes, the client closes (to the ClusterIP for twill-vxlan-svc); for twill-vxlan-pol \
         the first-packet rate under 1,001 policies: a connection's SYN is judged against them \
         on both nodes, except when it reuses the 4-tuple of a closed connection still tracked \
         (TIME_WAIT), which it reopens under the verdict kept (compare first packets judged \
         with the connections).\n",
    );
    s
}

/// twill-vxlan-svc's figures as ratios to twill-vxlan's in the same run
/// (the cost of the Service: DNAT and the connection table), or None when
/// either is missing. Latencies as ratios too: above 1 is slower.
pub(super) fn service_ratios(results: &[SystemResult]) -> Option<String> {
    same_run_ratios(results, "twill-vxlan-svc")
}

/// twill-vxlan-pol's figures as ratios to twill-vxlan's in the same run
/// (the cost of 1,001 policies: established flows after the first packet,
/// and the first-packet rate in conn/s), or None when either is missing.
pub(super) fn policy_ratios(results: &[SystemResult]) -> Option<String> {
    same_run_ratios(results, "twill-vxlan-pol")
}

/// `system`'s figures as ratios to twill-vxlan's in the same run.
fn same_run_ratios(results: &[SystemResult], system: &str) -> Option<String> {
    let other = results.iter().find(|r| r.system == system)?;
    let base = results.iter().find(|r| r.system == "twill-vxlan")?;
    let ratio = |f: &dyn Fn(&SystemResult) -> Option<f64>| match (f(other), f(base)) {
        (Some(v), Some(b)) if b > 0.0 => format!("{:.2}×", v / b),
        _ => "-".into(),
    };
    Some(format!(
        "{system} / twill-vxlan (same run): TCP1 {}, TCP4 {}, UDP64 {}, RR p50 {} \
         (latency: above 1× is slower), conn/s {}",
        ratio(&|r| r.tcp1.as_ref().map(|t| t.gbit_per_s)),
        ratio(&|r| r.tcp4.as_ref().map(|t| t.gbit_per_s)),
        ratio(&|r| r.udp64.as_ref().map(|u| u.received_pps)),
        ratio(&|r| r.rr.as_ref().map(|l| l.p50_us)),
        ratio(&|r| r.conn.as_ref().map(|c| c.conn_per_s)),
    ))
}

/// The policy drops (ingress, egress) of the agents' `counters` since
/// `setup` was complete: the tests' own.
pub(super) fn test_policy_drops(setup: &PolicySetup, counters: &[Value]) -> [u64; 2] {
    let after = policy::policy_drops(counters);
    [
        after[0].saturating_sub(setup.drops_before[0]),
        after[1].saturating_sub(setup.drops_before[1]),
    ]
}

/// How the policies were put in place: apply, compile, probe.
pub(super) fn policy_setup(p: &PolicySetup) -> String {
    let ms: Vec<String> = p.policy_ms.iter().map(|m| format!("{m:.1}")).collect();
    let full: Vec<String> = p
        .compiles
        .iter()
        .filter(|c| c.policies == p.policies as u64)
        .map(|c| format!("{} {:.1} ms", c.node, c.ms))
        .collect();
    format!(
        "{} NetworkPolicies: `twill apply` {:.1} s, both agents compiled after {:.1} s \
         (policy_ms {} ms; {} compiles logged, those of all {}: {}), A -> B open after {:.1} s more",
        p.policies,
        p.apply_s,
        p.ready_s,
        ms.join(" / "),
        p.compiles.len(),
        p.policies,
        if full.is_empty() {
            "none".into()
        } else {
            full.join(", ")
        },
        p.probe_s,
    )
}

/// twill-vxlan-pol's setup and the policy counters of its tests.
fn policy_line(results: &[SystemResult]) -> Option<String> {
    let r = results.iter().find(|r| r.system == "twill-vxlan-pol")?;
    let p = r.policy.as_ref()?;
    let counters = if r.agent_counters.is_empty() {
        "agent counters not read".into()
    } else {
        let [i, e] = test_policy_drops(p, &r.agent_counters);
        let judged: Vec<String> = r
            .agent_counters
            .iter()
            .map(|c| {
                c["events"]["policy_judged"]
                    .as_u64()
                    .map_or("?".into(), |v| v.to_string())
            })
            .collect();
        let conns = r.conn.as_ref().map_or(0, |c| c.completed);
        format!(
            "during the tests: policy drops ingress {i}, egress {e}; first packets judged {} \
             (per agent, since its start) for {conns} short connections",
            judged.join(" / ")
        )
    };
    Some(format!("twill-vxlan-pol: {}; {counters}", policy_setup(p)))
}

/// One system's [`UdpLoss`] as one line of the report.
pub(super) fn loss_line(system: &str, l: &UdpLoss) -> String {
    format!("{system} UDP64 loss: {}", loss_places(l))
}

/// A counter of a loss line: `?` where it could not be read.
fn n<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "?".into(), |v| v.to_string())
}

/// The agents' drops as a loss line's place: `, twill N`, nothing for a
/// system without agents.
fn twill_place(twill: Option<Option<u64>>) -> String {
    twill
        .map(|t| format!(", twill {}", n(t)))
        .unwrap_or_default()
}

/// The places of a [`UdpLoss`]: `?` where a counter could not be read, no
/// `twill` for a system without agents.
pub(super) fn loss_places(l: &UdpLoss) -> String {
    let twill = twill_place(l.twill);
    format!(
        "sender queue {}, node sockets {}, node interfaces {}{twill}, \
         receiver interface {}, receiver socket {}, unaccounted {} (iperf3 lost {})",
        n(l.sender_queue),
        n(l.node_sockets),
        n(l.node_interfaces),
        n(l.receiver_interface),
        n(l.receiver_socket),
        n(l.unaccounted),
        n(l.iperf3_lost),
    )
}

/// The places of a [`TcpLoss`], after the retransmissions: `?` where a
/// counter could not be read, no `twill` for a system without agents.
pub(super) fn tcp_loss_places(l: &TcpLoss) -> String {
    let twill = twill_place(l.twill);
    format!(
        "{} segments retransmitted; dropped: sender queue {}, node sockets {} ({} for a full \
         buffer), node interfaces {}{twill}, receiver interface {}",
        n(l.retransmits),
        n(l.sender_queue),
        n(l.node_sockets),
        n(l.node_rcvbuf_errors),
        n(l.node_interfaces),
        n(l.receiver_interface),
    )
}

/// The chart's panels: the table's figures, one bar per system.
pub(super) fn panels(results: &[SystemResult]) -> Vec<plot::Panel> {
    let panel = |title: &str, f: &dyn Fn(&SystemResult) -> Option<f64>| plot::Panel {
        title: title.to_owned(),
        bars: results
            .iter()
            .map(|r| (r.system.to_owned(), f(r)))
            .collect(),
    };
    vec![
        panel("TCP, 1 stream (Gbit/s, higher is better)", &|r| {
            r.tcp1.as_ref().map(|t| t.gbit_per_s)
        }),
        panel("TCP, 4 streams (Gbit/s, higher is better)", &|r| {
            r.tcp4.as_ref().map(|t| t.gbit_per_s)
        }),
        panel(
            "UDP, 64-byte payloads (kpackets/s received, higher is better)",
            &|r| r.udp64.as_ref().map(|u| u.received_pps / 1e3),
        ),
        panel(
            "TCP 1-byte request/response (mean µs, lower is better)",
            &|r| r.rr.as_ref().map(|l| l.mean_us),
        ),
        panel("New TCP connections (per second, higher is better)", &|r| {
            r.conn.as_ref().map(|c| c.conn_per_s)
        }),
    ]
}

pub(super) fn caption(doc: &Value) -> String {
    let m = &doc["machine"];
    let kernel = m["uname"].as_str().unwrap_or("?");
    // `uname -srvm`: keep "Linux RELEASE".
    let kernel: Vec<&str> = kernel.split_whitespace().take(2).collect();
    format!(
        "twill bench: pod A -> pod B across two nodes, {} s per test; (×) = ratio to \
         kernel-vxlan; {}, {} CPUs, {}",
        doc["duration_s"],
        m["cpu_model"].as_str().unwrap_or("?"),
        m["nproc"],
        kernel.join(" ")
    )
}

fn machine() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let uname = {
        let mut c = Command::new("uname");
        c.arg("-srvm");
        cmd::run_checked(c, Duration::from_secs(5))
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| read("/proc/sys/kernel/osrelease").trim().to_owned())
    };
    let cpuinfo = read("/proc/cpuinfo");
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let nproc = thread::available_parallelism().map_or(0, |n| n.get());
    json!({ "uname": uname, "cpu_model": cpu_model, "nproc": nproc })
}

pub(super) fn results_json(
    opts: &BenchOptions,
    iperf_version: &str,
    results: &[SystemResult],
    total: Duration,
) -> Value {
    let secs = opts.duration.as_secs().max(1);
    json!({
        "machine": machine(),
        "iperf3": iperf_version,
        "twill_bin": opts.twill_bin.display().to_string(),
        "observe": opts.observe,
        "duration_s": secs,
        "wall_time_s": total.as_secs_f64(),
        "topology": "two node namespaces joined by a veth underlay (192.168.77.1/24 <-> \
                     .2, MTU 1500), one pod namespace per node (10.244.1.0/24, 10.244.2.0/24); \
                     client in pod A, server in pod B; twill-vxlan-svc: the client connects \
                     to ClusterIP 10.96.0.10 (one endpoint: pod B), the servers bind pod B; \
                     twill-vxlan-pol: pods bench/a and bench/b selected by 1,001 \
                     NetworkPolicies (Ingress and Egress), one allowing A -> B on the tests' \
                     ports, none B -> A",
        "methods": {
            "tcp1": format!("iperf3 -c POD_B -t {secs} --json; end.sum_received.bits_per_second"),
            "paced": "ping -n -c N -i I POD_B from pod A, each reply's time=; p50/p99 for \
                      I = 200 ms (N = 25), 10 ms (200), 1 ms (1000); wakeups_per_rt: both \
                      agents' worker wake-ups during the pings / N",
            "tcp4": format!("iperf3 -c POD_B -t {secs} --json -P 4; end.sum_received.bits_per_second"),
            "udp64": format!("iperf3 -c POD_B -t {secs} --json -u -l {UDP_LEN} -b 0; \
                              (end.sum_received.packets - lost_packets) / seconds"),
            "udp64_loss": "deltas of drop counters across the UDP run, in packets (null: not \
                           read): sender_queue = pod A's interfaces' tx_dropped + Udp \
                           SndbufErrors; node_sockets = Udp InErrors (includes RcvbufErrors) \
                           of both node namespaces; node_interfaces = their interfaces' rx+tx \
                           dropped; twill = both agents' drops (reasons, ports, tunnel); \
                           receiver_interface = pod B's rx_dropped; receiver_socket = pod B's \
                           Udp InErrors; unaccounted = iperf3's lost_packets (sequence-number \
                           gaps, approximate) minus those",
            "tcp1_loss": "deltas of drop counters across the TCP run, in packets (null: not \
                          read), beside iperf3's end.sum_sent.retransmits: sender_queue = pod \
                          A's interfaces' tx_dropped; node_sockets, node_rcvbuf_errors, \
                          node_interfaces, twill as for udp64_loss; receiver_interface = pod \
                          B's rx_dropped. One drop may be a whole super-packet (a twill \
                          tunnel batch, a kernel GSO packet) of up to 46 segments",
            "tcp4_loss": "as tcp1_loss, for the 4-stream run",
            "rr": format!("in-process TCP, 1-byte request and response, TCP_NODELAY, \
                           {RR_WARMUP} warm-up + {RR_ROUNDS} timed rounds"),
            "conn": format!("in-process, one connection at a time for {secs} s: connect, \
                             1 byte each way, the server closes first (TIME_WAIT on the \
                             server, none on the client), the client reads EOF and closes; \
                             conn_per_s = completed / seconds; p50/p99 per connection"),
            "cpu": "busy jiffies (user+nice+system+irq+softirq+steal) of the `cpu` line of \
                    /proc/stat across the iperf3 client run, / 100 Hz; whole machine, so \
                    the kernel's softirq work, twill's processes and iperf3 all count; \
                    cpu_s_per_gbit = cpu_busy_s / Gbit received",
        },
        "anchor": "kernel-vxlan",
        "service_ratios": service_ratios(results),
        "policy_ratios": policy_ratios(results),
        "systems": results,
    })
}

/// The paced pings: p50 / p99 µs per interval, and the agents' wake-ups
/// per round trip.
fn paced_table(results: &[SystemResult]) -> String {
    let intervals: Vec<f64> = super::PACED
        .iter()
        .map(|(d, _)| d.as_secs_f64() * 1e3)
        .collect();
    if results.iter().all(|r| r.paced.is_empty()) {
        return String::new();
    }
    let mut s = String::new();
    let _ = write!(s, "\n{:<15}", "paced ping");
    for ms in &intervals {
        let _ = write!(s, " {:>28}", format!("every {ms} ms: p50/p99 µs (wk)"));
    }
    s.push('\n');
    for r in results {
        let _ = write!(s, "{:<15}", r.system);
        for ms in &intervals {
            let cell = r
                .paced
                .iter()
                .find(|p| (p.interval_ms - ms).abs() < 1e-6)
                .map_or("-".to_owned(), |p| {
                    let wk = p
                        .wakeups_per_rt
                        .map_or(String::new(), |w| format!(" ({w:.1})"));
                    format!("{:.0} / {:.0}{wk}", p.p50_us, p.p99_us)
                });
            let _ = write!(s, " {cell:>28}");
        }
        s.push('\n');
    }
    s.push_str("(wk) = the agents' worker wake-ups per round trip, both nodes.\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_need_an_anchor() {
        let f = |v: f64| format!("{v:.2}");
        assert_eq!(with_ratio(Some(1.0), Some(2.0), f), "1.00 (0.50×)");
        assert_eq!(with_ratio(Some(1.0), None, f), "1.00");
        assert_eq!(with_ratio(None, Some(2.0), f), "-");
    }

    #[test]
    fn loss_line_names_every_place_and_marks_the_missing() {
        let l = UdpLoss {
            iperf3_lost: Some(578_806),
            sender_queue: Some(400_123),
            node_sockets: Some(16_703),
            node_interfaces: Some(0),
            twill: Some(Some(0)),
            receiver_interface: Some(0),
            receiver_socket: Some(160_746),
            unaccounted: Some(1234),
            ..UdpLoss::default()
        };
        assert_eq!(
            loss_line("twill-vxlan", &l),
            "twill-vxlan UDP64 loss: sender queue 400123, node sockets 16703, node interfaces 0, \
             twill 0, receiver interface 0, receiver socket 160746, unaccounted 1234 \
             (iperf3 lost 578806)"
        );
        let k = UdpLoss {
            twill: None,
            receiver_socket: None,
            unaccounted: None,
            ..l.clone()
        };
        assert_eq!(
            loss_line("kernel-vxlan", &k),
            "kernel-vxlan UDP64 loss: sender queue 400123, node sockets 16703, node interfaces 0, \
             receiver interface 0, receiver socket ?, unaccounted ? (iperf3 lost 578806)"
        );
        let missing = UdpLoss {
            twill: Some(None),
            ..k
        };
        assert!(loss_line("twill-udp", &missing).contains(", twill ?, "));
    }

    #[test]
    fn tcp_loss_names_the_retransmits_then_every_place() {
        let l = TcpLoss {
            retransmits: Some(3_422),
            sender_queue: Some(0),
            node_sockets: Some(120),
            node_rcvbuf_errors: Some(120),
            node_interfaces: Some(0),
            twill: Some(Some(0)),
            receiver_interface: None,
            unreadable: vec![],
        };
        assert_eq!(
            tcp_loss_places(&l),
            "3422 segments retransmitted; dropped: sender queue 0, node sockets 120 (120 for a \
             full buffer), node interfaces 0, twill 0, receiver interface ?"
        );
        let kernel = TcpLoss { twill: None, ..l };
        assert!(!tcp_loss_places(&kernel).contains("twill"));
    }
}
