//! Human-readable renderings of the agent's JSON answers.

use std::fmt::Write;

use vswitch::core::DropReason;
use vswitch::stats::{Reach, Report};

/// The counters as a table: non-zero drops by reason, events, ports,
/// tunnel, MAC table, and how each node is reached.
pub fn counters_table(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "drops (non-zero):");
    let drops: Vec<_> = DropReason::ALL
        .iter()
        .map(|d| (d.name(), r.drops.get(*d)))
        .filter(|(_, n)| *n > 0)
        .collect();
    if drops.is_empty() {
        let _ = writeln!(s, "  none");
    }
    for (k, n) in drops {
        let _ = writeln!(s, "  {k:<24} {n}");
    }
    let _ = writeln!(s, "events:");
    if let Ok(serde_json::Value::Object(events)) = serde_json::to_value(&r.events) {
        for (k, x) in events {
            let _ = writeln!(s, "  {k:<24} {}", x.as_u64().unwrap_or(0));
        }
    }
    let _ = writeln!(s, "ports:");
    let _ = writeln!(
        s,
        "  {:>4} {:<10} {:>12} {:>14} {:>12} {:>14} {:>9} {:>9} {:>9}",
        "id", "name", "rx_pkts", "rx_bytes", "tx_pkts", "tx_bytes", "tx_drop", "tx_err", "storm"
    );
    for p in &r.ports {
        let _ = writeln!(
            s,
            "  {:>4} {:<10} {:>12} {:>14} {:>12} {:>14} {:>9} {:>9} {:>9}",
            p.id,
            p.name,
            p.rx_packets,
            p.rx_bytes,
            p.tx_packets,
            p.tx_bytes,
            p.tx_dropped,
            p.tx_errors,
            p.storm_dropped,
        );
    }
    let t = &r.tunnel;
    let port_sum =
        |f: fn(&vswitch::stats::PortStats) -> u64| -> u64 { r.ports.iter().map(f).sum() };
    let _ = writeln!(
        s,
        "tunnel: rx {} pkts {} bytes ({} errors), tx {} pkts {} bytes ({} dropped, {} errors; {} sendmmsg batches)",
        t.rx_packets, t.rx_bytes, t.rx_errors, t.tx_packets, t.tx_bytes, t.tx_dropped, t.tx_errors,
        t.tx_mmsg_sends,
    );
    let _ = writeln!(
        s,
        "offload: tunnel tx {} super-packets -> {} segments in {} UDP_SEGMENT sends, {} system calls ({} errors{}); tunnel rx {} partial checksums passed on; ports rx {} super-frames, {} partial checksums",
        t.tx_gso_packets,
        t.tx_gso_segments,
        t.tx_gso_sends,
        t.tx_gso_calls,
        t.tx_offload_errors,
        if t.tx_gso_unsupported > 0 { ", UDP_SEGMENT refused by the kernel" } else { "" },
        r.events.tunnel_csum_partial,
        port_sum(|p| p.rx_gso),
        port_sum(|p| p.rx_csum_partial),
    );
    let _ = writeln!(
        s,
        "receive: {} messages in {} recvmmsg calls; UDP_GRO {}, {} multi-datagram messages; {} TCP segments coalesced into {} super-frames, {} UDP datagrams into {} USO frames",
        t.rx_mmsg_messages,
        t.rx_mmsg_calls,
        if t.rx_gro { "on" } else { "off" },
        t.rx_gro_batches,
        t.rx_coalesced_segments,
        t.rx_coalesced_frames,
        t.rx_coalesced_udp_datagrams,
        t.rx_coalesced_udp_frames,
    );
    let _ = writeln!(
        s,
        "workers: {}, {} wake-ups, {} empty busy polls, {} busy-poll back-offs",
        r.workers, r.wakeups, r.busy_polls, r.busy_poll_backoffs,
    );
    let m = &r.mac;
    let _ = writeln!(
        s,
        "mac table: {} entries; learned {} expired {} evicted {} moved {}",
        m.entries, m.learned, m.expired, m.evicted, m.moved
    );
    let _ = writeln!(
        s,
        "conntrack: {} entries; pods vanished: {}",
        r.conntrack.entries, r.pods.vanished
    );
    if !r.nodes.is_empty() {
        let _ = writeln!(s, "nodes (how each is reached, and why):");
        for n in &r.nodes {
            let via = match n.via {
                Reach::Tunnel => "tunnel",
                Reach::Route => "route",
                Reach::None => "none",
            };
            let _ = writeln!(
                s,
                "  {:<16} {:<18} {:<15} {:<6} {}",
                n.node, n.subnet, n.public_ip, via, n.reason
            );
        }
    }
    s
}

/// `twill service list`'s table: one line per service port with its
/// frontends and the backends new connections go to.
pub fn services_table(v: &serde_json::Value) -> String {
    let mut s = String::new();
    let strs = |x: &serde_json::Value| -> Vec<String> {
        x.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let ports = v.as_array().map(Vec::as_slice).unwrap_or_default();
    if ports.is_empty() {
        let _ = writeln!(s, "no service ports");
        return s;
    }
    let _ = writeln!(
        s,
        "{:<32} {:<5} {:<40} BACKENDS",
        "SERVICE PORT", "PROTO", "FRONTENDS"
    );
    for p in ports {
        let frontends: Vec<String> = p["frontends"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|f| {
                        let ext = if f["scope"] == "external" {
                            " (ext)"
                        } else {
                            ""
                        };
                        format!("{}{ext}", f["address"].as_str().unwrap_or("?"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let backends = strs(&p["backends"]);
        let _ = writeln!(
            s,
            "{:<32} {:<5} {:<40} {}",
            p["name"].as_str().unwrap_or("?"),
            p["protocol"].as_str().unwrap_or("?"),
            frontends.join(","),
            if backends.is_empty() {
                "none (rejects)".to_owned()
            } else {
                backends.join(",")
            }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_table_shows_frontends_and_backends_or_that_it_rejects() {
        let v = serde_json::json!([
            {"name": "default/web:http", "protocol": "TCP",
             "frontends": [{"address": "10.96.0.10:80", "scope": "internal"},
                           {"address": "10.244.1.1:30080", "scope": "external"}],
             "backends": ["10.244.1.3:8080", "10.244.2.3:8080"]},
            {"name": "default/empty", "protocol": "UDP",
             "frontends": [{"address": "10.96.0.11:53", "scope": "internal"}], "backends": []}
        ]);
        let t = services_table(&v);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[1].starts_with("default/web:http"), "{t}");
        assert!(
            lines[1].contains("10.96.0.10:80,10.244.1.1:30080 (ext)"),
            "{t}"
        );
        assert!(lines[1].ends_with("10.244.1.3:8080,10.244.2.3:8080"), "{t}");
        assert!(lines[2].ends_with("none (rejects)"), "{t}");
        assert_eq!(services_table(&serde_json::json!([])), "no service ports\n");
    }
}
