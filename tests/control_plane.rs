//! The control plane end to end, in network namespaces: nodes get their
//! subnets and node table from `twill controller` or from a real etcd, a
//! node joins and everybody reaches its pods, the store is killed and
//! restarted while traffic flows (not one ping lost, leases intact), and a
//! stopped node's lease expires and its subnet leaves every table.

mod common;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use common::*;

/// The hub's address on the underlay LAN: the controller or etcd runs there.
const HUB: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 254);
/// Lease time to live in these tests; renewal at half of it.
const TTL_SECS: u64 = 6;
const TOKEN: &str = "lab-token-0123456789";
const NET_CONF: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;

#[derive(Debug, Clone, Copy)]
enum Store {
    Controller,
    Etcd,
}

fn underlay_ip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 100, i)
}

/// A node on the LAN with one pod. Drops pod, node, then namespace.
struct Member {
    pod: Pod,
    node: NodeProcess,
    _ns: Netns,
}

fn member(lan: &Lan, plane: &PlaneConfig, i: u8) -> Result<Member> {
    let ns = Netns::new(&format!("twl-cp-n{i}"))?;
    lan.join(&ns, underlay_ip(i))?;
    let mut cfg = NodeConfig::leased(&format!("node-{i}"), underlay_ip(i), plane.clone());
    cfg.lease_ttl_secs = Some(TTL_SECS);
    let node = NodeProcess::start(&twill_bin(), &ns, cfg)?;
    let pod = Pod::attach(&node, &format!("twl-cp-p{i}"))?;
    Ok(Member { pod, node, _ns: ns })
}

fn control(m: &Member) -> Result<serde_json::Value> {
    Ok(m.node.status()?.control)
}

/// Waits until every running member's table holds exactly `n` other nodes
/// and its control plane is connected.
fn wait_tables(members: &[&Member], n: u64, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let mut waiting = Vec::new();
        for m in members {
            let c = control(m)?;
            if c["nodes"].as_u64() != Some(n) || c["state"] != "connected" {
                waiting.push(format!("{}: {c}", m.node.config().name));
            }
        }
        if waiting.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "tables did not reach {n} nodes within {within:?}:\n{}",
                waiting.join("\n")
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// Every pod pings every other pod.
fn all_ping(members: &[&Member]) -> Result<()> {
    for a in members {
        for b in members {
            if a.node.config().name != b.node.config().name {
                ping(a.pod.netns(), b.pod.ip(), 2).with_context(|| {
                    format!(
                        "pod on {} -> pod on {}",
                        a.node.config().name,
                        b.node.config().name
                    )
                })?;
            }
        }
    }
    Ok(())
}

fn scenario(kind: Store) -> Result<()> {
    let lan = Lan::new("twl-cp-hub", HUB, 24)?;
    let (mut store, plane) = match kind {
        Store::Controller => {
            let s = Service::controller(
                &twill_bin(),
                lan.hub(),
                SocketAddrV4::new(HUB, 8765),
                NET_CONF,
                TOKEN,
            )?;
            let plane = PlaneConfig::Controller {
                url: format!("http://{HUB}:8765"),
                token_file: s.dir().join("token"),
            };
            (s, plane)
        }
        Store::Etcd => {
            let s = Service::etcd(
                lan.hub(),
                SocketAddrV4::new(HUB, 2379),
                "/coreos.com/network",
                NET_CONF,
            )?;
            let plane = PlaneConfig::Etcd {
                endpoints: vec![format!("http://{HUB}:2379")],
                prefix: None,
            };
            (s, plane)
        }
    };

    // Three nodes; each gets its own subnet and learns the other two.
    let m1 = member(&lan, &plane, 1)?;
    let m2 = member(&lan, &plane, 2)?;
    let m3 = member(&lan, &plane, 3)?;
    let subnets: BTreeSet<_> = [&m1, &m2, &m3]
        .iter()
        .map(|m| m.node.config().subnet)
        .collect();
    ensure!(subnets.len() == 3, "subnets not distinct: {subnets:?}");
    wait_tables(&[&m1, &m2, &m3], 2, Duration::from_secs(15))?;
    all_ping(&[&m1, &m2, &m3])?;

    // flannel's subnet.env, written by each node.
    let env = std::fs::read_to_string(&m1.node.config().subnet_env)?;
    let want_subnet = format!("FLANNEL_SUBNET={}/24", nth_host(m1.node.config().subnet, 1));
    ensure!(
        env.contains("FLANNEL_NETWORK=10.244.0.0/16") && env.contains(&want_subnet),
        "subnet.env: {env}"
    );

    // A fourth node joins: everybody reaches its pod, and it reaches theirs.
    let m4 = member(&lan, &plane, 4)?;
    wait_tables(&[&m1, &m2, &m3, &m4], 3, Duration::from_secs(15))?;
    all_ping(&[&m1, &m2, &m3, &m4])?;

    // The store dies without warning and comes back, while a pod pings
    // another node's pod: not one ping may be lost, and the leases survive.
    let before = control(&m1)?["revision"].as_u64().unwrap_or(0);
    let traffic = thread::scope(|s| -> Result<PingReport> {
        let h = s.spawn(|| ping(m1.pod.netns(), m2.pod.ip(), 40));
        thread::sleep(Duration::from_secs(1));
        store.kill_hard();
        thread::sleep(Duration::from_secs(2));
        store.kill_and_restart(lan.hub())?;
        h.join()
            .map_err(|_| anyhow::anyhow!("ping thread panicked"))?
    })?;
    ensure!(
        traffic.transmitted == traffic.received,
        "pings lost while the store restarted: {traffic:?}"
    );
    wait_tables(&[&m1, &m2, &m3, &m4], 3, Duration::from_secs(20))?;
    for m in [&m1, &m2, &m3, &m4] {
        let st = m.node.status()?;
        ensure!(
            st.subnet == m.node.config().subnet.to_string(),
            "{} changed subnet: {} -> {}",
            m.node.config().name,
            m.node.config().subnet,
            st.subnet
        );
    }
    let after = control(&m1)?["revision"].as_u64().unwrap_or(0);
    ensure!(after >= before, "revision went back: {before} -> {after}");
    all_ping(&[&m1, &m2, &m3, &m4])?;

    // Node 4 stops (without releasing its lease): when the lease expires,
    // its subnet leaves every table.
    let gone = m4.node.config().subnet;
    drop(m4);
    wait_tables(&[&m1, &m2, &m3], 2, Duration::from_secs(TTL_SECS * 3))?;
    ping_unanswered(m1.pod.netns(), nth_host(gone, 3))?;
    if let Store::Etcd = kind {
        let keys = store.etcdctl(&["get", "--prefix", "--keys-only", "/coreos.com/network"])?;
        let key = format!("/coreos.com/network/subnets/{}-24", gone.network());
        ensure!(!keys.contains(&key), "{key} still in etcd:\n{keys}");
        ensure!(
            keys.lines().filter(|l| l.contains("/subnets/")).count() == 3,
            "etcd keys:\n{keys}"
        );
    }
    all_ping(&[&m1, &m2, &m3])?;

    // A restarted node keeps its subnet and its VTEP MAC.
    let mut m3 = m3;
    let mac = m3.node.status()?.vtep_mac;
    let subnet = m3.node.config().subnet;
    m3.node.restart()?;
    let st = m3.node.status()?;
    ensure!(
        st.subnet == subnet.to_string() && st.vtep_mac == mac,
        "after restart: {st:?}, before {subnet} {mac:?}"
    );
    let ip = m3.pod.ip();
    m3.pod.reattach(Some(ip))?;
    wait_tables(&[&m1, &m2, &m3], 2, Duration::from_secs(15))?;
    all_ping(&[&m1, &m2, &m3])?;
    Ok(())
}

#[test]
fn controller_cluster_lifecycle() {
    if !require_root("controller_cluster_lifecycle") {
        return;
    }
    scenario(Store::Controller).unwrap();
}

#[test]
fn etcd_cluster_lifecycle() {
    if !require_root("etcd_cluster_lifecycle") {
        return;
    }
    scenario(Store::Etcd).unwrap();
}

/// A node whose controller does not answer retries with backoff (0.25 s
/// doubling to 10 s) and says so once a minute with the count it held
/// back, not once per attempt: six attempts in 9 s, one log line.
#[test]
fn a_node_that_cannot_reach_its_controller_reports_it_once_a_minute() {
    if !require_root("a_node_that_cannot_reach_its_controller_reports_it_once_a_minute") {
        return;
    }
    let ns = Netns::new("twl-cp-norea").unwrap();
    ns.ip(&["link", "set", "lo", "up"]).unwrap();
    let dir = TempDir::new("twl-cp-norea").unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    // Port 9 on loopback: nothing listens, connect is refused at once.
    let plane = PlaneConfig::Controller {
        url: "http://127.0.0.1:9".into(),
        token_file: token,
    };
    let mut cfg = NodeConfig::leased("node-norea", Ipv4Addr::LOCALHOST, plane);
    cfg.socket = dir.path().join("api.sock");
    cfg.state_dir = dir.path().join("state");
    cfg.subnet_env = dir.path().join("subnet.env");
    let cfg_path = dir.path().join("node.json");
    std::fs::write(&cfg_path, cfg.to_json().unwrap()).unwrap();
    let log = dir.path().join("node.log");
    let mut cmd = ns.command(twill_bin());
    cmd.args(["node", "--config"])
        .arg(&cfg_path)
        .env("RUST_LOG", "info")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap());
    let mut node = Reaped(cmd.spawn().unwrap());
    thread::sleep(Duration::from_secs(9));
    assert!(
        node.0.try_wait().unwrap().is_none(),
        "the node keeps retrying"
    );
    drop(node);
    let text = std::fs::read_to_string(&log).unwrap()
        + &std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    let reports = text.matches("cannot acquire a lease yet").count();
    assert_eq!(reports, 1, "one report for six attempts; the log:\n{text}");
}
