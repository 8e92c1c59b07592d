//! `twill fdb`, `twill nodes`, `twill routes` and `twill ports`: ask the
//! agent for a view, then print its JSON (`--json`) or read it back through
//! its type ([`vswitch::views`]; an agent of another version fails to parse
//! and says so) and print it as a table.

use std::path::Path;

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use vswitch::views::{Fdb, FdbKind, Nodes, Ports, Routes};

use crate::api::{self, Request};

/// One of the views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// `twill fdb`.
    Fdb,
    /// `twill nodes`.
    Nodes,
    /// `twill routes`.
    Routes,
    /// `twill ports`.
    Ports,
}

/// Asks the agent at `socket` for `view` and prints it.
pub fn run(view: View, socket: &Path, json: bool) -> Result<()> {
    let (req, what) = match view {
        View::Fdb => (Request::Fdb, "MAC table"),
        View::Nodes => (Request::Nodes, "node table"),
        View::Routes => (Request::Routes, "routes"),
        View::Ports => (Request::Ports, "ports"),
    };
    let v = api::call(socket, &req)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let text = match view {
        View::Fdb => fdb_table(&read(v, what)?),
        View::Nodes => nodes_table(
            &read(v, what)?,
            control::store::unix_secs(std::time::SystemTime::now()),
        ),
        View::Routes => routes_table(&read(v, what)?),
        View::Ports => ports_table(&read(v, what)?),
    };
    print!("{text}");
    Ok(())
}

fn read<T: DeserializeOwned>(v: serde_json::Value, what: &str) -> Result<T> {
    serde_json::from_value(v)
        .with_context(|| format!("reading the agent's {what} (is it another twill version?)"))
}

/// Columns padded to their widest cell, two spaces apart; the columns
/// whose index is in `right` aligned right.
fn table(header: &[&str], rows: &[Vec<String>], right: &[usize]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(&width).enumerate() {
            let last = i + 1 == cells.len();
            let cell = if right.contains(&i) {
                format!("{c:>w$}")
            } else if last {
                (*c).to_owned()
            } else {
                format!("{c:<w$}")
            };
            out.push_str(&cell);
            if !last {
                out.push_str("  ");
            }
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    };
    let mut s = line(header.to_vec());
    for r in rows {
        s.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    s
}

fn or_dash(s: Option<impl ToString>) -> String {
    s.map_or_else(|| "-".to_owned(), |s| s.to_string())
}

/// `twill fdb` as OVS's `ovs-appctl fdb/show` prints it, with the segment
/// (the node's one untagged L2 segment, named by its subnet) where OVS has
/// the VLAN, and what is behind each port.
pub fn fdb_table(f: &Fdb) -> String {
    let rows: Vec<Vec<String>> = f
        .entries
        .iter()
        .map(|e| {
            vec![
                e.port
                    .map_or_else(|| "router".to_owned(), |p| p.to_string()),
                f.segment.to_string(),
                e.mac.clone(),
                match (e.kind, e.age_secs) {
                    (FdbKind::Learned, Some(a)) => a.to_string(),
                    _ => "static".to_owned(),
                },
                e.name.clone(),
            ]
        })
        .collect();
    let mut s = table(&["port", "segment", "MAC", "Age", "on"], &rows, &[0, 3]);
    s.push_str(&format!(
        "(learned entries age out after {} s idle)\n",
        f.aging_secs
    ));
    s
}

/// `twill nodes`; `now` (Unix seconds) dates the changes.
pub fn nodes_table(n: &Nodes, now: u64) -> String {
    let rows: Vec<Vec<String>> = n
        .nodes
        .iter()
        .map(|e| {
            vec![
                e.name.clone(),
                e.public_ip.to_string(),
                e.subnet.to_string(),
                or_dash(e.vtep_mac.as_ref()),
                format!("{:?}", e.reach).to_lowercase(),
                e.source.name().to_owned(),
                format!("{}s ago", now.saturating_sub(e.changed_unix)),
                e.reason.clone(),
            ]
        })
        .collect();
    let mut s = table(
        &[
            "name",
            "public IP",
            "subnet",
            "VTEP MAC",
            "reach",
            "source",
            "changed",
            "why",
        ],
        &rows,
        &[],
    );
    s.push_str(&format!("node table from: {}\n", n.source));
    s
}

/// `twill routes`, in the router's order.
pub fn routes_table(r: &Routes) -> String {
    let rows: Vec<Vec<String>> = r
        .routes
        .iter()
        .map(|r| {
            let node = match (&r.node, &r.vtep_mac) {
                (Some(n), Some(m)) => format!("{n} (VTEP {m})"),
                (Some(n), None) => n.clone(),
                (None, _) => "-".to_owned(),
            };
            vec![
                r.destination.to_string(),
                format!("{:?}", r.via).to_lowercase(),
                or_dash(r.next_hop.as_ref()),
                or_dash(r.port),
                node,
            ]
        })
        .collect();
    table(
        &["destination", "via", "next hop", "port", "node"],
        &rows,
        &[],
    )
}

/// `twill ports`.
pub fn ports_table(p: &Ports) -> String {
    let rows: Vec<Vec<String>> = p
        .ports
        .iter()
        .map(|e| {
            let offloads = if e.offloads.is_empty() {
                "none".to_owned()
            } else {
                e.offloads.join(",")
            };
            vec![
                e.id.to_string(),
                format!("{:?}", e.kind).to_lowercase() + if e.dead { " (dead)" } else { "" },
                e.tap.clone(),
                or_dash(e.pod_id.as_ref()),
                or_dash(e.pod.as_ref()),
                or_dash(e.netns.as_ref()),
                e.ifname.clone(),
                e.ip.clone(),
                e.mac.clone(),
                e.mtu.to_string(),
                e.queues.to_string(),
                offloads,
            ]
        })
        .collect();
    table(
        &[
            "id", "kind", "tap", "pod id", "pod", "netns", "ifname", "IP", "MAC", "MTU", "queues",
            "offloads",
        ],
        &rows,
        &[0, 9, 10],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use vswitch::stats::Reach;
    use vswitch::views::{FdbEntry, NodeEntry, NodeSource, PortEntry, PortRole, Route, RouteVia};

    #[test]
    fn fdb_reads_like_ovs_with_a_segment_and_static_ages() {
        let e = |port, mac: &str, kind, age_secs, name: &str| FdbEntry {
            port,
            name: name.into(),
            mac: mac.into(),
            kind,
            age_secs,
        };
        let f = Fdb {
            segment: "10.244.1.0/24".parse().unwrap(),
            aging_secs: 300,
            entries: vec![
                e(None, "0e:00:00:00:00:01", FdbKind::Static, None, "router"),
                e(Some(0), "0a:58:0a:f4:01:02", FdbKind::Static, None, "twh0"),
                e(
                    Some(12),
                    "0a:58:0a:f4:01:c8",
                    FdbKind::Learned,
                    Some(3),
                    "ns:eth0",
                ),
            ],
        };
        assert_eq!(
            fdb_table(&f),
            "  port  segment        MAC                   Age  on\n\
             router  10.244.1.0/24  0e:00:00:00:00:01  static  router\n\
             \x20    0  10.244.1.0/24  0a:58:0a:f4:01:02  static  twh0\n\
             \x20   12  10.244.1.0/24  0a:58:0a:f4:01:c8       3  ns:eth0\n\
             (learned entries age out after 300 s idle)\n"
        );
    }

    #[test]
    fn nodes_show_source_and_how_long_ago_they_changed() {
        let n = Nodes {
            source: "config".into(),
            nodes: vec![NodeEntry {
                name: "node-b".into(),
                public_ip: [192, 168, 100, 2].into(),
                subnet: "10.244.2.0/24".parse().unwrap(),
                vtep_mac: None,
                source: NodeSource::Config,
                changed_unix: 1000,
                reach: Reach::Tunnel,
                reason: "udp backend".into(),
            }],
        };
        assert_eq!(
            nodes_table(&n, 1042),
            "name    public IP      subnet         VTEP MAC  reach   source  changed  why\n\
             node-b  192.168.100.2  10.244.2.0/24  -         tunnel  config  42s ago  udp backend\n\
             node table from: config\n"
        );
    }

    #[test]
    fn routes_name_the_node_and_its_vtep() {
        let r = Routes {
            routes: vec![
                Route {
                    destination: "10.244.2.0/24".parse().unwrap(),
                    via: RouteVia::Tunnel,
                    next_hop: Some("192.168.100.2:8472".into()),
                    port: None,
                    node: Some("node-b".into()),
                    vtep_mac: Some("0e:00:00:00:00:02".into()),
                },
                Route {
                    destination: "0.0.0.0/0".parse().unwrap(),
                    via: RouteVia::Host,
                    next_hop: Some("10.244.1.2".into()),
                    port: Some(0),
                    node: None,
                    vtep_mac: None,
                },
            ],
        };
        assert_eq!(
            routes_table(&r),
            "destination    via     next hop            port  node\n\
             10.244.2.0/24  tunnel  192.168.100.2:8472  -     node-b (VTEP 0e:00:00:00:00:02)\n\
             0.0.0.0/0      host    10.244.1.2          0     -\n"
        );
    }

    #[test]
    fn ports_show_pod_netns_addresses_queues_and_offloads() {
        let p = Ports {
            ports: vec![PortEntry {
                id: 1,
                kind: PortRole::Pod,
                tap: "twp1".into(),
                pod_id: Some("ns1:eth0".into()),
                pod: Some("default/web".into()),
                netns: Some("ns1".into()),
                ifname: "eth0".into(),
                ip: "10.244.1.3/24".into(),
                mac: "0a:58:0a:f4:01:03".into(),
                mtu: 1450,
                offloads: vec!["csum".into(), "tso4".into()],
                queues: 2,
                dead: false,
            }],
        };
        assert_eq!(
            ports_table(&p),
            "id  kind  tap   pod id    pod          netns  ifname  IP             MAC                 MTU  queues  offloads\n\
             \x201  pod   twp1  ns1:eth0  default/web  ns1    eth0    10.244.1.3/24  0a:58:0a:f4:01:03  1450       2  csum,tso4\n"
        );
    }
}
