//! The metrics endpoints of real agents and a real controller, in network
//! namespaces, scraped over HTTP and read with a parser that is not ours
//! (`prometheus-parse`): exact counts after known traffic, series that go
//! with a detached pod, the controller's leases, watchers and latencies, and
//! the probes, including a node that is not ready while its lease has
//! expired.
//!
//! IPv6 is off in every namespace here, so that the only frames on the
//! pods' ports are the test's pings (and ARP, settled before counting).

mod common;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use common::*;
use prometheus_parse::{Sample, Scrape, Value};

const HUB: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 254);
const CONTROLLER: SocketAddrV4 = SocketAddrV4::new(HUB, 8765);
const CONTROLLER_METRICS: SocketAddr = SocketAddr::V4(SocketAddrV4::new(HUB, 9476));
/// Every node serves its metrics on its own namespace's loopback.
const NODE_METRICS: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9475));
const TOKEN: &str = "lab-token-0123456789";
const NET_CONF: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;
const TTL_SECS: u64 = 6;

/// A leasing node on the LAN with one pod. Drops pod, node, then namespace.
struct Member {
    pod: Pod,
    node: NodeProcess,
    ns: Netns,
}

fn no_ipv6(ns: &Netns) -> Result<()> {
    for k in ["all", "default"] {
        ns.sysctl(&format!("net.ipv6.conf.{k}.disable_ipv6"), "1")?;
    }
    Ok(())
}

fn member(lan: &Lan, plane: &PlaneConfig, i: u8) -> Result<Member> {
    let ns = Netns::new(&format!("twl-mx-n{i}"))?;
    no_ipv6(&ns)?;
    lan.join(&ns, Ipv4Addr::new(192, 168, 100, i))?;
    let mut cfg = NodeConfig::leased(
        &format!("node-{i}"),
        Ipv4Addr::new(192, 168, 100, i),
        plane.clone(),
    );
    cfg.lease_ttl_secs = Some(TTL_SECS);
    let addr = NODE_METRICS.to_string();
    let node = NodeProcess::start_args(&twill_bin(), &ns, cfg, &["--metrics-addr", &addr])?;
    let pod = Pod::attach(&node, &format!("twl-mx-p{i}"))?;
    no_ipv6(pod.netns())?;
    Ok(Member { pod, node, ns })
}

fn controller(lan: &Lan) -> Result<(Service, PlaneConfig)> {
    let metrics = CONTROLLER_METRICS.to_string();
    let s = Service::controller_args(
        &twill_bin(),
        lan.hub(),
        CONTROLLER,
        NET_CONF,
        TOKEN,
        &["--metrics-addr", &metrics],
    )?;
    let plane = PlaneConfig::Controller {
        url: format!("http://{CONTROLLER}"),
        token_file: s.dir().join("token"),
    };
    Ok((s, plane))
}

/// A scrape of `addr` in `ns`, checked to be OpenMetrics text.
fn scrape(ns: &Netns, addr: SocketAddr) -> Result<Scrape> {
    let r = http_get(ns, addr, "/metrics")?;
    ensure!(r.status == 200, "GET /metrics: {} {}", r.status, r.body);
    ensure!(
        r.content_type.as_deref()
            == Some("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "content type {:?}",
        r.content_type
    );
    ensure!(r.body.ends_with("# EOF\n"), "no # EOF at the end");
    Ok(Scrape::parse(r.body.lines().map(|l| Ok(l.to_owned())))?)
}

fn number(v: &Value) -> f64 {
    match v {
        Value::Counter(x) | Value::Gauge(x) | Value::Untyped(x) => *x,
        _ => f64::NAN,
    }
}

/// The samples of `metric` whose labels include `labels`.
fn samples<'a>(s: &'a Scrape, metric: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    s.samples
        .iter()
        .filter(|x| x.metric == metric)
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .collect()
}

/// The one value of `metric` with `labels`; panics naming it when there
/// is none or more than one.
fn value(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let found = samples(s, metric, labels);
    assert_eq!(
        found.len(),
        1,
        "{metric}{labels:?}: {} series (of {} samples)",
        found.len(),
        s.samples.len()
    );
    number(&found[0].value)
}

/// The pod ports' names in a scrape (every `port` label but the host port's).
fn pod_ports(s: &Scrape, host_port: &str) -> Vec<String> {
    let mut v: Vec<String> = samples(s, "twill_port_rx_packets_total", &[])
        .iter()
        .filter_map(|x| x.labels.get("port").map(str::to_owned))
        .filter(|p| p != host_port)
        .collect();
    v.sort();
    v
}

fn host_port(m: &Member) -> Result<String> {
    let v = m.node.status_json()?;
    v["host_port"]
        .as_str()
        .map(str::to_owned)
        .context("no host_port in status")
}

/// Waits until both nodes know each other through a connected control plane.
fn wait_connected(members: &[&Member]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ok = members.iter().all(|m| {
            m.node.status().is_ok_and(|s| {
                s.control["state"] == "connected" && s.control["nodes"].as_u64() == Some(1)
            })
        });
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the nodes did not connect and learn each other within 20 s");
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// Per-port, per-tunnel and per-worker counters after exactly `N` pings
/// (and after an attach and a detach); the control plane's gauges; the
/// controller's leases, watchers and latencies; every probe passing.
#[test]
fn a_scrape_counts_exactly_the_pings_and_their_replies_on_both_ports() {
    if !require_root("a_scrape_counts_exactly_the_pings_and_their_replies_on_both_ports") {
        return;
    }
    const N: u32 = 7;
    let lan = Lan::new("twl-mx-hub", HUB, 24).unwrap();
    let (_controller, plane) = controller(&lan).unwrap();
    let a = member(&lan, &plane, 1).unwrap();
    let b = member(&lan, &plane, 2).unwrap();
    wait_connected(&[&a, &b]).unwrap();
    // ARP on both sides settled, and the tunnel's first packets sent.
    ping(a.pod.netns(), b.pod.ip(), 1).unwrap();
    thread::sleep(Duration::from_millis(300));

    let (host_a, host_b) = (host_port(&a).unwrap(), host_port(&b).unwrap());
    let before_a = scrape(&a.ns, NODE_METRICS).unwrap();
    let before_b = scrape(&b.ns, NODE_METRICS).unwrap();
    let port_a = pod_ports(&before_a, &host_a);
    let port_b = pod_ports(&before_b, &host_b);
    assert_eq!(port_a.len(), 1, "{port_a:?}");
    assert_eq!(port_b.len(), 1, "{port_b:?}");
    ping(a.pod.netns(), b.pod.ip(), N).unwrap();
    let after_a = scrape(&a.ns, NODE_METRICS).unwrap();
    let after_b = scrape(&b.ns, NODE_METRICS).unwrap();

    let delta = |before: &Scrape, after: &Scrape, metric: &str, labels: &[(&str, &str)]| {
        value(after, metric, labels) - value(before, metric, labels)
    };
    let n = f64::from(N);
    // a's pod sent N requests and got N replies; b's the other way round.
    for (before, after, port) in [
        (&before_a, &after_a, &port_a[0]),
        (&before_b, &after_b, &port_b[0]),
    ] {
        for m in ["twill_port_rx_packets_total", "twill_port_tx_packets_total"] {
            assert_eq!(
                delta(before, after, m, &[("port", port.as_str())]),
                n,
                "{m} on {port}"
            );
        }
        assert!(
            delta(
                before,
                after,
                "twill_port_rx_bytes_total",
                &[("port", port.as_str())]
            ) >= n * 98.0
        );
        for m in [
            "twill_tunnel_rx_packets_total",
            "twill_tunnel_tx_packets_total",
        ] {
            assert_eq!(delta(before, after, m, &[]), n, "{m}");
        }
        // The workers' shares add up to the node's.
        let per_worker: f64 = samples(after, "twill_worker_tunnel_tx_packets_total", &[])
            .iter()
            .map(|s| number(&s.value))
            .sum();
        assert_eq!(
            per_worker,
            value(after, "twill_tunnel_tx_packets_total", &[]),
            "workers' tunnel tx"
        );
        // Nothing dropped for any reason, and every reason is a series.
        let drops = samples(after, "twill_dropped_packets_total", &[]);
        assert!(drops.len() >= 20, "{} drop reasons", drops.len());
        assert!(drops.iter().all(|d| number(&d.value) == 0.0), "{drops:?}");
        assert_eq!(
            value(after, "twill_events_total", &[("event", "encapsulated")])
                - value(before, "twill_events_total", &[("event", "encapsulated")]),
            n,
        );
        assert_eq!(value(after, "twill_pods", &[]), 1.0);
        assert!(value(after, "twill_mac_entries", &[]) >= 1.0);
        assert_eq!(
            value(after, "twill_port_up", &[("port", port.as_str())]),
            1.0
        );
    }

    // What pod each port is.
    let ip_a = format!("{}/24", a.pod.ip());
    assert_eq!(
        value(
            &after_a,
            "twill_port_info",
            &[
                ("port", port_a[0].as_str()),
                ("kind", "pod"),
                ("ip", ip_a.as_str())
            ]
        ),
        1.0
    );
    assert_eq!(
        value(
            &after_a,
            "twill_port_info",
            &[("port", host_a.as_str()), ("kind", "host")]
        ),
        1.0
    );

    // The node table, the control plane and the build.
    assert_eq!(
        value(
            &after_a,
            "twill_remote_node",
            &[("peer", "192.168.100.2"), ("via", "tunnel")]
        ),
        1.0,
        "{:?}",
        samples(&after_a, "twill_remote_node", &[])
    );
    assert_eq!(
        value(&after_a, "twill_remote_nodes", &[("via", "tunnel")]),
        1.0
    );
    assert_eq!(
        value(
            &after_a,
            "twill_control_plane_state",
            &[("state", "connected")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &after_a,
            "twill_control_plane_state",
            &[("state", "disconnected")]
        ),
        0.0
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;
    let expiry = value(&after_a, "twill_lease_expiry_seconds", &[]);
    assert!(
        expiry > now && expiry <= now + TTL_SECS as f64 + 2.0,
        "{expiry} vs {now}"
    );
    assert_eq!(
        value(
            &after_a,
            "twill_build_info",
            &[("version", env!("CARGO_PKG_VERSION")), ("backend", "vxlan")]
        ),
        1.0
    );

    // A second pod's series come with it and go with it.
    let mut extra = Pod::attach(&a.node, "twl-mx-x").unwrap();
    let with = scrape(&a.ns, NODE_METRICS).unwrap();
    let ports = pod_ports(&with, &host_a);
    assert_eq!(ports.len(), 2, "{ports:?}");
    let new_port = ports.iter().find(|p| **p != port_a[0]).unwrap().clone();
    assert_eq!(value(&with, "twill_pods", &[]), 2.0);
    extra.detach().unwrap();
    let without = scrape(&a.ns, NODE_METRICS).unwrap();
    let left: Vec<&Sample> = without
        .samples
        .iter()
        .filter(|s| s.labels.get("port") == Some(new_port.as_str()))
        .collect();
    assert!(
        left.is_empty(),
        "the detached port's series remain: {left:?}"
    );
    assert_eq!(pod_ports(&without, &host_a), port_a);

    // The controller: two leases, both nodes watching, their requests timed.
    let c = scrape(lan.hub(), CONTROLLER_METRICS).unwrap();
    assert_eq!(value(&c, "twill_controller_leases", &[]), 2.0);
    assert!(value(&c, "twill_controller_revision", &[]) >= 2.0);
    assert!(value(&c, "twill_controller_watchers", &[("stream", "leases")]) >= 2.0);
    let acquired: f64 = samples(
        &c,
        "twill_controller_request_duration_seconds_count",
        &[("method", "POST"), ("route", "/v1/leases")],
    )
    .iter()
    .map(|s| number(&s.value))
    .sum();
    assert!(acquired >= 2.0, "lease acquisitions timed: {acquired}");
    // Renewals go by route, not by key: one series for every node's lease.
    let renew = samples(
        &c,
        "twill_controller_request_duration_seconds_count",
        &[("method", "PUT"), ("route", "/v1/leases/{key}")],
    );
    assert!(renew.len() <= 2, "{renew:?}");
    assert!(
        value(
            &c,
            "twill_controller_state_write_duration_seconds_count",
            &[]
        ) >= 2.0
    );

    for (ns, addr) in [
        (&a.ns, NODE_METRICS),
        (&b.ns, NODE_METRICS),
        (lan.hub(), CONTROLLER_METRICS),
    ] {
        for probe in ["/healthz", "/readyz"] {
            let r = http_get(ns, addr, probe).unwrap();
            assert_eq!(r.status, 200, "{probe}: {}", r.body);
            assert!(r.body.ends_with("check passed\n"), "{probe}: {}", r.body);
        }
    }
}

/// `/readyz` fails, naming the lease, while the node's lease has expired
/// with its controller down, and `twill status` (what CNI STATUS reads)
/// says not ready; both recover once the controller is back.
#[test]
fn readyz_fails_while_the_lease_has_expired_and_recovers_with_the_controller() {
    if !require_root("readyz_fails_while_the_lease_has_expired_and_recovers_with_the_controller") {
        return;
    }
    let lan = Lan::new("twl-mx-hub", HUB, 24).unwrap();
    let (mut ctl, plane) = controller(&lan).unwrap();
    let a = member(&lan, &plane, 1).unwrap();
    let ready = || http_get(&a.ns, NODE_METRICS, "/readyz").unwrap();
    assert_eq!(ready().status, 200, "{}", ready().body);
    assert_eq!(a.node.status_json().unwrap()["ready"], true);

    ctl.kill_hard();
    let wait = |want: u16, within: Duration| -> Result<String> {
        let deadline = Instant::now() + within;
        loop {
            let r = ready();
            if r.status == want {
                return Ok(r.body);
            }
            if Instant::now() > deadline {
                bail!("/readyz still {} after {within:?}: {}", r.status, r.body);
            }
            thread::sleep(Duration::from_millis(250));
        }
    };
    let body = wait(503, Duration::from_secs(TTL_SECS + 10)).unwrap();
    assert!(
        body.contains("[-]lease failed: the lease of 10.244."),
        "{body}"
    );
    assert!(body.contains("[+]workers ok"), "{body}");
    assert!(body.ends_with("readyz check failed\n"), "{body}");
    assert_eq!(a.node.status_json().unwrap()["ready"], false);
    // Alive all the same: liveness is not readiness.
    assert_eq!(
        http_get(&a.ns, NODE_METRICS, "/healthz").unwrap().status,
        200
    );

    ctl.kill_and_restart(lan.hub()).unwrap();
    wait(200, Duration::from_secs(30)).unwrap();
    assert_eq!(a.node.status_json().unwrap()["ready"], true);
}
