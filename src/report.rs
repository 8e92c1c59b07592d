//! Human-readable renderings of the agent's JSON answers.

use std::fmt::Write;

/// The counters as a table: non-zero drops by reason, events, ports, tunnel.
pub fn counters_table(v: &serde_json::Value) -> String {
    let mut s = String::new();
    let num = |x: &serde_json::Value| x.as_u64().unwrap_or(0);
    let _ = writeln!(s, "drops (non-zero):");
    let mut any = false;
    if let Some(d) = v.get("drops").and_then(|d| d.as_object()) {
        for (k, x) in d {
            if num(x) > 0 {
                any = true;
                let _ = writeln!(s, "  {k:<24} {}", num(x));
            }
        }
    }
    if !any {
        let _ = writeln!(s, "  none");
    }
    let _ = writeln!(s, "events:");
    if let Some(d) = v.get("events").and_then(|d| d.as_object()) {
        for (k, x) in d {
            let _ = writeln!(s, "  {k:<24} {}", num(x));
        }
    }
    let _ = writeln!(s, "ports:");
    let _ = writeln!(
        s,
        "  {:>4} {:<10} {:>12} {:>14} {:>12} {:>14} {:>9} {:>9}",
        "id", "name", "rx_pkts", "rx_bytes", "tx_pkts", "tx_bytes", "tx_drop", "tx_err"
    );
    if let Some(ports) = v.get("ports").and_then(|p| p.as_array()) {
        for p in ports {
            let _ = writeln!(
                s,
                "  {:>4} {:<10} {:>12} {:>14} {:>12} {:>14} {:>9} {:>9}",
                num(&p["id"]),
                p["name"].as_str().unwrap_or(""),
                num(&p["rx_packets"]),
                num(&p["rx_bytes"]),
                num(&p["tx_packets"]),
                num(&p["tx_bytes"]),
                num(&p["tx_dropped"]),
                num(&p["tx_errors"]),
            );
        }
    }
    let t = &v["tunnel"];
    // One counter summed over the ports.
    let port_sum = |field: &str| -> u64 {
        v["ports"]
            .as_array()
            .map(|ps| ps.iter().map(|p| num(&p[field])).sum())
            .unwrap_or(0)
    };
    let _ = writeln!(
        s,
        "tunnel: rx {} pkts {} bytes ({} errors), tx {} pkts {} bytes ({} dropped, {} errors; {} sendmmsg batches)",
        num(&t["rx_packets"]),
        num(&t["rx_bytes"]),
        num(&t["rx_errors"]),
        num(&t["tx_packets"]),
        num(&t["tx_bytes"]),
        num(&t["tx_dropped"]),
        num(&t["tx_errors"]),
        num(&t["tx_mmsg_sends"]),
    );
    let _ = writeln!(
        s,
        "offload: tunnel tx {} super-packets -> {} segments in {} UDP_SEGMENT sends ({} errors{}); tunnel rx {} partial checksums passed on; ports rx {} super-frames, {} partial checksums",
        num(&t["tx_gso_packets"]),
        num(&t["tx_gso_segments"]),
        num(&t["tx_gso_sends"]),
        num(&t["tx_offload_errors"]),
        if num(&t["tx_gso_unsupported"]) > 0 { ", UDP_SEGMENT refused by the kernel" } else { "" },
        num(&t["rx_csum_partial"]),
        port_sum("rx_gso"),
        port_sum("rx_csum_partial"),
    );
    let _ = writeln!(
        s,
        "receive: {} messages in {} recvmmsg calls; UDP_GRO {}, {} multi-datagram messages; {} TCP segments coalesced into {} super-frames, {} UDP datagrams into {} USO frames",
        num(&t["rx_mmsg_messages"]),
        num(&t["rx_mmsg_calls"]),
        if t["rx_gro"].as_bool().unwrap_or(false) { "on" } else { "off" },
        num(&t["rx_gro_batches"]),
        num(&t["rx_coalesced_segments"]),
        num(&t["rx_coalesced_frames"]),
        num(&t["rx_coalesced_udp_datagrams"]),
        num(&t["rx_coalesced_udp_frames"]),
    );
    let _ = writeln!(
        s,
        "workers: {}, {} wake-ups, {} empty busy polls, {} busy-poll back-offs",
        num(&v["workers"]),
        num(&v["wakeups"]),
        num(&v["busy_polls"]),
        num(&v["busy_poll_backoffs"]),
    );
    let m = &v["mac"];
    let _ = writeln!(
        s,
        "mac table: {} entries; learned {} expired {} evicted {} moved {}",
        num(&m["entries"]),
        num(&m["learned"]),
        num(&m["expired"]),
        num(&m["evicted"]),
        num(&m["moved"])
    );
    if let Some(nodes) = v["nodes"].as_array().filter(|n| !n.is_empty()) {
        let _ = writeln!(s, "nodes (how each is reached, and why):");
        for n in nodes {
            let _ = writeln!(
                s,
                "  {:<16} {:<18} {:<15} {:<6} {}",
                n["node"].as_str().unwrap_or(""),
                n["subnet"].as_str().unwrap_or(""),
                n["public_ip"].as_str().unwrap_or(""),
                n["via"].as_str().unwrap_or(""),
                n["reason"].as_str().unwrap_or(""),
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
