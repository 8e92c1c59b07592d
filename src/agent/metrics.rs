//! The agent's metrics and probes (`twill node --metrics-addr`), served by
//! [`control::metrics`].
//!
//! Every metric is read from [`Report`] (what `twill counters` shows) and
//! the agent's own state at each scrape, into a registry made for that
//! scrape: a counter is a copy of the dataplane's, so nothing is counted
//! twice, and a port that detached is simply absent from the next scrape
//! (a churning node does not grow series without bound). Names follow the
//! report's fields: `ports[].rx_packets` is `twill_port_rx_packets_total`,
//! `tunnel.tx_gso_segments` is `twill_tunnel_tx_gso_segments_total`; so a
//! counter added to the report is exported without a line here.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use control::metrics::{Check, Source};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use vswitch::stats::{Reach, Report};

use super::leases::ControlStatus;
use super::Agent;

/// A metric's labels: (name, value) pairs.
type Labels = Vec<(&'static str, String)>;

/// What the report does not hold: the agent's own state.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The backend's name (`vxlan`, `udp`, `host-gw`).
    pub backend: String,
    /// Pods attached.
    pub pods: usize,
    /// The control plane's state; `None` for a static node table.
    pub control: Option<ControlStatus>,
    /// The ports as `twill ports` shows them: what pod each port is.
    pub ports: Vec<vswitch::views::PortEntry>,
}

/// A registry filled for one scrape.
struct Exposition {
    registry: Registry,
}

impl Exposition {
    fn new() -> Exposition {
        Exposition {
            registry: Registry::with_prefix("twill"),
        }
    }

    /// A counter family `name` (`_total` is added), one series per label set.
    fn counters(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (Labels, u64)>,
    ) {
        let family = Family::<Labels, Counter>::default();
        for (labels, v) in series {
            family.get_or_create(&labels).inc_by(v);
        }
        self.registry.register(name, help, family);
    }

    fn counter(&mut self, name: &str, help: &str, v: u64) {
        let c = Counter::<u64>::default();
        c.inc_by(v);
        self.registry.register(name, help, c);
    }

    /// A gauge family `name`, one series per label set.
    fn gauges(&mut self, name: &str, help: &str, series: impl IntoIterator<Item = (Labels, i64)>) {
        let family = Family::<Labels, Gauge>::default();
        for (labels, v) in series {
            family.get_or_create(&labels).set(v);
        }
        self.registry.register(name, help, family);
    }

    fn gauge(&mut self, name: &str, help: &str, v: i64) {
        let g = Gauge::<i64>::default();
        g.set(v);
        self.registry.register(name, help, g);
    }

    fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

fn int(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// The numeric and boolean fields of a serialized struct, in order: the
/// report's field names are the metrics' names.
fn fields(v: &impl serde::Serialize) -> Vec<(String, serde_json::Value)> {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::Object(m)) => m
            .into_iter()
            .filter(|(_, v)| v.is_u64() || v.is_boolean())
            .collect(),
        _ => Vec::new(),
    }
}

/// Every metric of the node, in OpenMetrics text.
pub fn render(r: &Report, facts: &Facts) -> Result<String, std::fmt::Error> {
    let mut e = Exposition::new();
    e.registry.register(
        "build",
        "The agent's version and backend",
        Info::new(vec![
            ("version", env!("CARGO_PKG_VERSION").to_owned()),
            ("backend", facts.backend.clone()),
        ]),
    );
    e.counters(
        "dropped_packets",
        "Packets the switch dropped, by reason (`drops` in twill counters; README, \"Drop reasons\")",
        vswitch::core::DropReason::ALL
            .iter()
            .map(|&d| (vec![("reason", d.name().to_owned())], r.drops.get(d))),
    );
    e.counters(
        "events",
        "The forwarding core's events by name (`events` in twill counters)",
        fields(&r.events)
            .into_iter()
            .filter_map(|(k, v)| v.as_u64().map(|n| (vec![("event", k)], n))),
    );
    ports(&mut e, r, facts);
    for (k, v) in fields(&r.tunnel) {
        let help = format!("`tunnel.{k}` of twill counters (the tunnel sockets, all workers)");
        match v {
            serde_json::Value::Bool(b) => e.gauge(&format!("tunnel_{k}"), &help, i64::from(b)),
            v => e.counter(&format!("tunnel_{k}"), &help, v.as_u64().unwrap_or(0)),
        }
    }
    e.gauge(
        "mac_entries",
        "Entries in the MAC table",
        int(r.mac.entries),
    );
    e.counter("mac_learned", "MACs learned", r.mac.learned);
    e.counter("mac_expired", "MAC entries aged out", r.mac.expired);
    e.counter(
        "mac_evicted",
        "MAC entries evicted for room (table or port cap)",
        r.mac.evicted,
    );
    e.counter("mac_moved", "MACs seen moving to another port", r.mac.moved);
    e.gauge(
        "conntrack_entries",
        "Connections in the Service NAT connection table",
        int(r.conntrack.entries),
    );
    e.gauge("pods", "Pods attached", int(facts.pods));
    e.counter(
        "pods_vanished",
        "Pods detached because their network namespace vanished without a CNI DEL",
        r.pods.vanished,
    );
    nodes(&mut e, r);
    workers(&mut e, r);
    control(&mut e, facts.control.as_ref());
    e.encode()
}

fn ports(e: &mut Exposition, r: &Report, facts: &Facts) {
    let label = |p: &vswitch::stats::PortStats| vec![("port", p.name.clone())];
    let Some(first) = r.ports.first() else {
        return;
    };
    for (k, v) in fields(first) {
        if v.is_boolean() || k == "id" || k == "offloads" {
            continue;
        }
        let series: Vec<(Labels, u64)> = r
            .ports
            .iter()
            .map(|p| {
                let n = fields(p)
                    .into_iter()
                    .find(|(f, _)| *f == k)
                    .and_then(|(_, v)| v.as_u64())
                    .unwrap_or(0);
                (label(p), n)
            })
            .collect();
        e.counters(
            &format!("port_{k}"),
            &format!("`ports[].{k}` of twill counters, by port (its host-side name)"),
            series,
        );
    }
    e.gauges(
        "port_info",
        "One series per port (value 1) naming what it is: join on `port` to label the port_* series with the pod",
        facts.ports.iter().map(|p| {
            let kind = match p.kind {
                vswitch::views::PortRole::Pod => "pod",
                vswitch::views::PortRole::Host => "host",
            };
            (
                vec![
                    ("port", p.tap.clone()),
                    ("kind", kind.to_owned()),
                    ("attachment", p.pod_id.clone().unwrap_or_default()),
                    ("pod", p.pod.clone().unwrap_or_default()),
                    ("ip", p.ip.clone()),
                    ("mac", p.mac.clone()),
                ],
                1,
            )
        }),
    );
    e.gauges(
        "port_up",
        "1 while the port is polled; 0 once a read failed for good (its namespace went)",
        r.ports.iter().map(|p| (label(p), i64::from(!p.dead))),
    );
}

fn nodes(e: &mut Exposition, r: &Report) {
    let via = |v: Reach| match v {
        Reach::Tunnel => "tunnel",
        Reach::Route => "route",
        Reach::None => "none",
    };
    e.gauges(
        "remote_nodes",
        "Remote nodes in the table, by how they are reached",
        [Reach::Tunnel, Reach::Route, Reach::None].map(|v| {
            let n = r.nodes.iter().filter(|n| n.via == v).count();
            (vec![("via", via(v).to_owned())], int(n))
        }),
    );
    e.gauges(
        "remote_node",
        "One series per remote node (value 1): its subnet, public IP and how it is reached",
        r.nodes.iter().map(|n| {
            (
                vec![
                    ("peer", n.node.clone()),
                    ("subnet", n.subnet.to_string()),
                    ("public_ip", n.public_ip.to_string()),
                    ("via", via(n.via).to_owned()),
                ],
                1,
            )
        }),
    );
}

fn workers(e: &mut Exposition, r: &Report) {
    let w = |i: usize| vec![("worker", i.to_string())];
    e.counters(
        "worker_wakeups",
        "Times each worker woke up from epoll_wait with work",
        r.per_worker.iter().map(|s| (w(s.worker), s.wakeups)),
    );
    e.counters(
        "worker_busy_polls",
        "Busy polls that found nothing, by worker",
        r.per_worker.iter().map(|s| (w(s.worker), s.busy_polls)),
    );
    e.counters(
        "worker_busy_poll_backoffs",
        "Times a worker stopped busy polling for being kept off its CPU",
        r.per_worker
            .iter()
            .map(|s| (w(s.worker), s.busy_poll_backoffs)),
    );
    e.counters(
        "worker_port_rx_packets",
        "Frames each worker read from the pods' TAP queues",
        r.per_worker
            .iter()
            .map(|s| (w(s.worker), s.port_rx_packets)),
    );
    e.counters(
        "worker_tunnel_rx_packets",
        "Datagrams each worker received from the tunnel",
        r.per_worker
            .iter()
            .map(|s| (w(s.worker), s.tunnel_rx_packets)),
    );
    e.counters(
        "worker_tunnel_tx_packets",
        "Datagrams each worker sent to the tunnel",
        r.per_worker
            .iter()
            .map(|s| (w(s.worker), s.tunnel_tx_packets)),
    );
}

/// The control plane's states, each a series (1 for the current one).
const STATES: [&str; 3] = ["connecting", "connected", "disconnected"];

fn control(e: &mut Exposition, c: Option<&ControlStatus>) {
    let Some(c) = c else {
        return;
    };
    e.gauges(
        "control_plane_state",
        "1 for the state the connection to the controller or etcd is in, 0 for the others",
        STATES.map(|s| (vec![("state", s.to_owned())], i64::from(c.state == s))),
    );
    e.gauge(
        "control_plane_state_since_seconds",
        "When the control plane's state last changed (Unix time)",
        int(c.since),
    );
    e.gauge(
        "control_plane_revision",
        "The store's revision last applied to the node table",
        int(c.revision),
    );
    if let Some(l) = &c.lease {
        e.gauge(
            "lease_expiry_seconds",
            "When this node's subnet lease expires unless renewed (Unix time, the store's clock)",
            int(l.expiration),
        );
    }
}

/// The agent as the endpoint sees it.
#[derive(Debug)]
struct Endpoint(Arc<Agent>);

impl Source for Endpoint {
    fn metrics(&self) -> Result<String, String> {
        let a = &self.0;
        let report = a.report().map_err(|e| format!("{e:#}"))?;
        let facts = Facts {
            backend: a.info.backend.to_owned(),
            pods: a.list().map(|l| l.len()).unwrap_or(0),
            control: a.control_status(),
            ports: a
                .ports_of(&report.ports)
                .map(|p| p.ports)
                .unwrap_or_default(),
        };
        render(&report, &facts).map_err(|e| format!("encoding the metrics: {e}"))
    }

    fn healthz(&self) -> Vec<Check> {
        vec![self.0.workers_check()]
    }

    fn readyz(&self) -> Vec<Check> {
        self.0.readiness()
    }
}

/// Serves the endpoint on `addr` (from a thread of its own), if given.
pub fn serve(agent: &Arc<Agent>, addr: Option<SocketAddr>) -> Result<()> {
    let Some(addr) = addr else {
        return Ok(());
    };
    let (bound, _thread) =
        control::metrics::serve_in_thread(addr, Arc::new(Endpoint(agent.clone())))
            .context("starting the metrics endpoint")?;
    tracing::info!(url = %format!("http://{bound}/metrics"), "metrics endpoint listening");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vswitch::core::DropReason;
    use vswitch::stats::{PodReport, PortStats, Stats, WorkerReport};

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    /// Every counter of the report is a series named after its field, and
    /// the exposition is OpenMetrics (a `# EOF`, no empty label sets).
    #[test]
    fn the_report_s_fields_are_the_metrics_names() {
        let mut s = Stats::default();
        s.core.drop(DropReason::StormControl);
        s.core.drop(DropReason::StormControl);
        s.core.switched = 9;
        s.tunnel.tx_gso_segments = 44;
        s.tunnel.rx_gro = true;
        s.ports.push(PortStats {
            id: 1,
            name: "twp1".into(),
            rx_packets: 5,
            tx_bytes: 700,
            dead: true,
            ..PortStats::default()
        });
        s.per_worker.push(WorkerReport {
            worker: 0,
            wakeups: 3,
            ..WorkerReport::default()
        });
        let r = Report::new(&s, PodReport { vanished: 1 }, Vec::new());
        let text = render(&r, &Facts::default()).unwrap();
        for want in [
            "twill_dropped_packets_total{reason=\"storm_control\"} 2",
            "twill_dropped_packets_total{reason=\"no_route\"} 0",
            "twill_events_total{event=\"switched\"} 9",
            "twill_tunnel_tx_gso_segments_total 44",
            "twill_tunnel_rx_gro 1",
            "twill_port_rx_packets_total{port=\"twp1\"} 5",
            "twill_port_tx_bytes_total{port=\"twp1\"} 700",
            "twill_port_up{port=\"twp1\"} 0",
            "twill_worker_wakeups_total{worker=\"0\"} 3",
            "twill_pods_vanished_total 1",
            "# TYPE twill_port_rx_packets counter",
        ] {
            assert!(text.lines().any(|l| l == want), "no {want:?} in:\n{text}");
        }
        assert!(line(&text, "twill_control_plane").is_none(), "static table");
        assert!(!text.contains("{}"), "{text}");
        assert!(text.ends_with("# EOF\n"));
        // Every drop reason is a series, whatever its count.
        let drops = text
            .lines()
            .filter(|l| l.starts_with("twill_dropped_packets_total{"))
            .count();
        assert_eq!(drops, DropReason::COUNT);
    }

    #[test]
    fn the_control_plane_s_state_is_one_series_per_state() {
        let c = ControlStatus {
            source: "http://ctl".into(),
            state: "disconnected",
            revision: 12,
            nodes: 3,
            lease: Some(super::super::leases::LeaseStatus {
                subnet: "10.244.1.0/24".parse().unwrap(),
                expiration: 1_700_000_000,
            }),
            last_error: Some("refused".into()),
            since: 1_699_999_000,
        };
        let facts = Facts {
            control: Some(c),
            ..Facts::default()
        };
        let text = render(&Report::default(), &facts).unwrap();
        for want in [
            "twill_control_plane_state{state=\"disconnected\"} 1",
            "twill_control_plane_state{state=\"connected\"} 0",
            "twill_control_plane_state{state=\"connecting\"} 0",
            "twill_control_plane_revision 12",
            "twill_lease_expiry_seconds 1700000000",
        ] {
            assert!(text.lines().any(|l| l == want), "no {want:?} in:\n{text}");
        }
    }
}
