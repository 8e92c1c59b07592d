//! The CNI plugin run exactly as a container runtime runs it (environment,
//! stdin, stdout, exit status; see `twill_lab::CniRuntime`) against real
//! `twill node` agents in network namespaces: ADD gives a working interface,
//! CHECK, DEL (repeated, unknown, without namespace), GC, STATUS, VERSION,
//! every malformed input, restarts, many parallel ADD/DEL, and an agent
//! killed at random moments — after which no address is leaked or doubled.
// Helpers outside #[test] functions panic on failure too: this is a test crate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use common::cni::*;
use common::*;

#[test]
fn add_check_del_across_nodes() {
    if !require_root("add_check_del_across_nodes") {
        return;
    }
    let ns_a = Netns::new("twl-c-a").unwrap();
    let ns_b = Netns::new("twl-c-b").unwrap();
    let _underlay = Underlay::pair(&ns_a, &ns_b, UNDERLAY_A, UNDERLAY_B, 24).unwrap();
    let mut cfg_a = NodeConfig::new("node-a", UNDERLAY_A, subnet(1), "vxlan");
    let mut cfg_b = NodeConfig::new("node-b", UNDERLAY_B, subnet(2), "vxlan");
    cfg_a.peers.push(cfg_b.as_peer());
    cfg_b.peers.push(cfg_a.as_peer());
    let node_a = NodeProcess::start_args(&twill_bin(), &ns_a, cfg_a, NODE_ARGS).unwrap();
    let node_b = NodeProcess::start_args(&twill_bin(), &ns_b, cfg_b, NODE_ARGS).unwrap();
    let (_ia, rt_a) = runtime(&node_a);
    let (_ib, rt_b) = runtime(&node_b);
    let pa = Netns::new("twl-c-pa").unwrap();
    let pb = Netns::new("twl-c-pb").unwrap();

    let out = rt_a.add("ctr-a", &path(&pa), "eth0").unwrap();
    let ra = out.ok().unwrap().json().unwrap();
    assert_eq!(ra["cniVersion"], rt_a.version(), "{ra}");
    assert_eq!(ra["interfaces"][0]["name"], "eth0");
    assert_eq!(ra["interfaces"][0]["sandbox"], path(&pa).as_str());
    assert_eq!(
        ra["interfaces"][0]["mac"],
        pa.link_mac("eth0").unwrap().as_str()
    );
    assert_eq!(ra["ips"][0]["gateway"], "10.244.1.1");
    assert_eq!(ra["ips"][0]["interface"], 0);
    assert_eq!(ra["routes"][0]["dst"], "0.0.0.0/0");
    assert_eq!(ra["routes"][0]["gw"], "10.244.1.1");
    assert_eq!(if_addr(&pa, "eth0"), Some(address(&ra)));
    let rb = rt_b
        .add("ctr-b", &path(&pb), "eth0")
        .unwrap()
        .ok()
        .unwrap()
        .json()
        .unwrap();
    assert!(address(&rb).starts_with("10.244.2."), "{rb}");
    ping(&pa, ip_of(&rb), 3).unwrap();
    ping(&pb, ip_of(&ra), 3).unwrap();

    let chk = rt_a.check("ctr-a", &path(&pa), "eth0", &ra).unwrap();
    assert_eq!((chk.exit, chk.stdout.as_str()), (0, ""), "{chk:?}");
    // The same ADD again: the same result.
    let again = rt_a.add("ctr-a", &path(&pa), "eth0").unwrap();
    assert_eq!(again.ok().unwrap().json().unwrap(), ra);
    // CHECK against a result that is not the agent's.
    let mut wrong = ra.clone();
    wrong["ips"][0]["address"] = "10.244.1.200/24".into();
    let chk = rt_a.check("ctr-a", &path(&pa), "eth0", &wrong).unwrap();
    assert_eq!(chk.error_code(), Some(102), "{chk:?}");
    // CHECK notices an interface that went down.
    pa.ip(&["link", "set", "eth0", "down"]).unwrap();
    let chk = rt_a.check("ctr-a", &path(&pa), "eth0", &ra).unwrap();
    assert_eq!(chk.error_code(), Some(102), "{chk:?}");
    pa.ip(&["link", "set", "eth0", "up"]).unwrap();

    let del = rt_a
        .del("ctr-a", Some(&path(&pa)), "eth0", Some(&ra))
        .unwrap();
    assert_eq!((del.exit, del.stdout.as_str()), (0, ""), "{del:?}");
    assert_eq!(if_addr(&pa, "eth0"), None, "DEL left the interface");
    assert!(list(&node_a).is_empty());
    ping_unanswered(&pb, ip_of(&ra)).unwrap();
    // DEL is idempotent, needs no namespace and accepts unknown containers.
    for (ctr, netns) in [
        ("ctr-a", Some(path(&pa))),
        ("ctr-a", None),
        ("never-added", Some(path(&pa))),
    ] {
        let del = rt_a.del(ctr, netns.as_deref(), "eth0", None).unwrap();
        assert_eq!(del.exit, 0, "{ctr} {netns:?}: {del:?}");
    }
    let chk = rt_a.check("ctr-a", &path(&pa), "eth0", &ra).unwrap();
    assert_eq!(chk.error_code(), Some(3), "CHECK after DEL: {chk:?}");
    // Pod B still works after all that.
    ping(&pb, Ipv4Addr::new(10, 244, 2, 1), 1).unwrap();
}

#[test]
fn every_result_version_and_every_malformed_input() {
    if !require_root("every_result_version_and_every_malformed_input") {
        return;
    }
    let n = one_node(3);
    let (inst, rt) = runtime(&n.node);
    let pods: Vec<Netns> = (0..5).map(|_| Netns::new("twl-c-v").unwrap()).collect();

    let ver = rt.version_cmd().unwrap().ok().unwrap().json().unwrap();
    assert_eq!(
        ver["supportedVersions"],
        serde_json::json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );
    for (v, pod) in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
        .iter()
        .zip(&pods)
    {
        let rtv = rt.with_version(v);
        let ctr = format!("ctr-{}", v.replace('.', "-"));
        let r = rtv
            .add(&ctr, &path(pod), "eth0")
            .unwrap()
            .ok()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(r["cniVersion"], *v);
        let has_version = r["ips"][0].get("version").is_some();
        assert_eq!(has_version, v.starts_with("0."), "{v}: {r}");
        assert_eq!(
            r["interfaces"][0].get("mtu").is_some(),
            *v == "1.1.0",
            "{v}: {r}"
        );
        assert_eq!(if_addr(pod, "eth0"), Some(address(&r)), "{v}");
        if *v != "0.3.0" && *v != "0.3.1" {
            assert_eq!(
                rtv.check(&ctr, &path(pod), "eth0", &r).unwrap().exit,
                0,
                "{v}"
            );
        }
        assert_eq!(
            rtv.del(&ctr, Some(&path(pod)), "eth0", Some(&r))
                .unwrap()
                .exit,
            0
        );
    }

    let p = &pods[0];
    let conf = rt.conf(&[]);
    let code = |out: CniOutput| {
        let v = out.json().unwrap();
        assert_ne!(out.exit, 0, "{v}");
        assert!(v["msg"].is_string() && v["cniVersion"].is_string(), "{v}");
        out.error_code().unwrap()
    };
    let exec = |cmd: &str, c: Option<&str>, ns: Option<&str>, i: Option<&str>, a: Option<&str>| {
        rt.exec(cmd, c, ns, i, a, &conf).unwrap()
    };
    let p_path = path(p);
    let pp = Some(p_path.as_str());
    // Missing or invalid environment: 4.
    assert_eq!(code(exec("ADD", None, pp, Some("eth0"), None)), 4);
    assert_eq!(code(exec("ADD", Some("c"), None, Some("eth0"), None)), 4);
    assert_eq!(code(exec("ADD", Some("c"), pp, None, None)), 4);
    assert_eq!(code(exec("DEL", Some("c"), pp, None, None)), 4);
    assert_eq!(code(exec("ADD", Some("c/1"), pp, Some("eth0"), None)), 4);
    assert_eq!(
        code(exec("ADD", Some("c"), pp, Some("way-too-long-name"), None)),
        4
    );
    assert_eq!(
        code(exec("ADD", Some("c"), pp, Some("eth0"), Some("FOO=1"))),
        4
    );
    assert_eq!(code(exec("FROB", Some("c"), pp, Some("eth0"), None)), 4);
    let no_command = run_plugin(&inst.plugin, &[("CNI_CONTAINERID", "c")], b"{}").unwrap();
    assert_eq!(code(no_command), 4);
    // Bad JSON: 6; invalid configuration: 7; unsupported version: 1; ipam: 2.
    let env = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c"),
        ("CNI_NETNS", p_path.as_str()),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
    ];
    assert_eq!(
        code(run_plugin(&inst.plugin, &env, b"{\"cniVersion\":").unwrap()),
        6
    );
    let mut bad = conf.clone();
    bad.as_object_mut().unwrap().remove("name");
    assert_eq!(
        code(run_plugin(&inst.plugin, &env, bad.to_string().as_bytes()).unwrap()),
        7
    );
    for v in ["0.2.0", "2.0.0"] {
        let mut old = conf.clone();
        old["cniVersion"] = v.into();
        let out = run_plugin(&inst.plugin, &env, old.to_string().as_bytes()).unwrap();
        assert_eq!(code(out), 1, "{v}");
    }
    let mut ipam = conf.clone();
    ipam["ipam"] = serde_json::json!({ "type": "host-local" });
    assert_eq!(
        code(run_plugin(&inst.plugin, &env, ipam.to_string().as_bytes()).unwrap()),
        2
    );
    // CHECK without prevResult: 7; before 0.4.0: 1.
    assert_eq!(code(exec("CHECK", Some("c"), pp, Some("eth0"), None)), 7);
    let old = rt.with_version("0.3.1");
    let out = old
        .check("c", &path(p), "eth0", &serde_json::json!({}))
        .unwrap();
    assert_eq!(code(out), 1);
    // An absent namespace: 3; a path that is not a namespace: 4.
    let absent = format!("/run/netns/twl-absent-{}", unique_suffix());
    assert_eq!(code(rt.add("c", &absent, "eth0").unwrap()), 3);
    let not_ns = inst.dir().join("not-a-netns");
    std::fs::write(&not_ns, "x").unwrap();
    assert_eq!(
        code(rt.add("c", not_ns.to_str().unwrap(), "eth0").unwrap()),
        4
    );
    // IP=: outside the pod range 4, taken 100, free: granted.
    let want = "IP=10.244.3.77";
    let r = rt.add_args("fixed", &path(p), "eth0", Some(want)).unwrap();
    assert_eq!(address(&r.ok().unwrap().json().unwrap()), "10.244.3.77/24");
    for (args, want_code) in [("IP=10.244.9.5", 4), ("IP=10.244.3.1", 4), (want, 100)] {
        let out = rt
            .add_args("c2", &path(&pods[1]), "eth0", Some(args))
            .unwrap();
        assert_eq!(code(out), want_code, "{args}");
    }
    // The same interface for another container: 101.
    assert_eq!(code(rt.add("other", &path(p), "eth0").unwrap()), 101);
    // Not one failed ADD left an address or an interface behind.
    let ids: Vec<String> = ipam_state(&n.node).into_keys().collect();
    assert_eq!(ids, vec!["cni/twill/fixed/eth0".to_owned()]);
    assert_eq!(if_addr(&pods[1], "eth0"), None);
}

#[test]
fn status_and_add_while_the_agent_is_away() {
    if !require_root("status_and_add_while_the_agent_is_away") {
        return;
    }
    let mut n = one_node(4);
    let (_inst, rt) = runtime(&n.node);
    let rt10 = rt.with_version("1.1.0");
    let p = Netns::new("twl-c-s").unwrap();
    let st = rt10.status().unwrap();
    assert_eq!((st.exit, st.stdout.as_str()), (0, ""), "{st:?}");
    let away = |what: &str| {
        let st = rt10.status().unwrap();
        assert_eq!(st.error_code(), Some(50), "{what}: {st:?}");
        let add = rt10.add("c1", &path(&p), "eth0").unwrap();
        assert_eq!(add.error_code(), Some(11), "{what}: {add:?}");
        assert!(add.stdout.contains("try again"), "{add:?}");
        let del = rt10.del("c1", Some(&path(&p)), "eth0", None).unwrap();
        assert_eq!(del.error_code(), Some(11), "{what}: {del:?}");
    };
    n.node.stop(); // clean stop: the socket file is gone
    away("stopped");
    n.node.restart().unwrap();
    assert_eq!(rt10.status().unwrap().exit, 0);
    n.node.kill(); // crash: a stale socket file nobody listens on
    away("killed");
    n.node.restart().unwrap();
    let r = rt10.add("c1", &path(&p), "eth0").unwrap();
    r.ok().unwrap();
    assert_eq!(rt10.status().unwrap().exit, 0);
}

#[test]
fn gc_releases_exactly_the_unlisted_cni_attachments() {
    if !require_root("gc_releases_exactly_the_unlisted_cni_attachments") {
        return;
    }
    let n = one_node(5);
    let (_inst, rt) = runtime(&n.node);
    let rt = rt.with_version("1.1.0");
    let cli_pod = Pod::attach(&n.node, "twl-c-gcli").unwrap();
    let pods: Vec<Netns> = (0..4).map(|_| Netns::new("twl-c-g").unwrap()).collect();
    let mut ips = Vec::new();
    for (i, p) in pods.iter().take(3).enumerate() {
        let r = rt
            .add(&format!("c{i}"), &path(p), "eth0")
            .unwrap()
            .ok()
            .unwrap()
            .json()
            .unwrap();
        ips.push(ip_of(&r));
    }
    let other_net = rt.with_name("othernet");
    other_net
        .add("c9", &path(&pods[3]), "eth0")
        .unwrap()
        .ok()
        .unwrap();

    let gc = rt.gc(&[("c0", "eth0"), ("c2", "net9")]).unwrap();
    assert_eq!((gc.exit, gc.stdout.as_str()), (0, ""), "{gc:?}");
    let ids: BTreeSet<String> = ipam_state(&n.node).into_keys().collect();
    let want: BTreeSet<String> = [
        "cni/twill/c0/eth0".to_owned(),
        "cni/othernet/c9/eth0".to_owned(),
        cli_pod.info().unwrap().id.clone(),
    ]
    .into();
    assert_eq!(ids, want);
    assert!(if_addr(&pods[0], "eth0").is_some());
    assert_eq!(if_addr(&pods[1], "eth0"), None);
    assert_eq!(if_addr(&pods[2], "eth0"), None);
    assert!(if_addr(&pods[3], "eth0").is_some());
    assert!(if_addr(cli_pod.netns(), "eth0").is_some());
    // The freed addresses are handed out again, lowest first.
    let r = rt
        .add("c5", &path(&pods[1]), "eth0")
        .unwrap()
        .ok()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(ip_of(&r), ips[1].min(ips[2]));
    // A GC without the list is refused, not taken as "release everything".
    let conf = rt.conf(&[]);
    let out = rt.exec("GC", None, None, None, None, &conf).unwrap();
    assert_eq!(out.error_code(), Some(7), "{out:?}");
    assert_eq!(ipam_state(&n.node).len(), 4);
}

#[test]
fn restart_keeps_addresses_and_restores_interfaces() {
    if !require_root("restart_keeps_addresses_and_restores_interfaces") {
        return;
    }
    let mut n = one_node(6);
    let (_inst, rt) = runtime(&n.node);
    let p1 = Netns::new("twl-c-r").unwrap();
    let p2 = Netns::new("twl-c-r").unwrap();
    let r1 = rt
        .add_args(
            "c1",
            &path(&p1),
            "eth0",
            Some("IP=10.244.6.77;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1"),
        )
        .unwrap();
    let r1 = r1.ok().unwrap().json().unwrap();
    let r2 = rt
        .add("c2", &path(&p2), "eth0")
        .unwrap()
        .ok()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(address(&r1), "10.244.6.77/24");

    // A crash, and pod 2's namespace goes while the agent is down.
    n.node.kill();
    assert_eq!(if_addr(&p1, "eth0"), None, "the TAP died with the agent");
    drop(p2);
    n.node.restart().unwrap();
    let state = ipam_state(&n.node);
    assert_eq!(
        state,
        [("cni/twill/c1/eth0".to_owned(), "10.244.6.77".to_owned())].into()
    );
    assert_eq!(if_addr(&p1, "eth0"), Some(address(&r1)), "not re-created");
    // The pod's Kubernetes identity (for NetworkPolicy) came from CNI_ARGS
    // and was kept.
    let socket = n.node.socket().to_str().unwrap().to_owned();
    let list: serde_json::Value =
        serde_json::from_str(&n.node.cli(&["pod", "list", "--socket", &socket]).unwrap()).unwrap();
    let c1 = list
        .as_array()
        .and_then(|a| a.iter().find(|p| p["id"] == "cni/twill/c1/eth0"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        c1["pod"],
        serde_json::json!({"namespace": "shop", "name": "web-1"}),
        "{list}"
    );
    ping(&p1, Ipv4Addr::new(10, 244, 6, 1), 2).unwrap();
    let chk = rt.check("c1", &path(&p1), "eth0", &r1).unwrap();
    assert_eq!(chk.exit, 0, "{chk:?}");
    let again = rt
        .add("c1", &path(&p1), "eth0")
        .unwrap()
        .ok()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(again, r1);
    // A clean stop forgets nothing either.
    n.node.stop();
    n.node.restart().unwrap();
    assert_eq!(ipam_state(&n.node).len(), 1);
    assert_eq!(if_addr(&p1, "eth0"), Some(address(&r1)));
    // c2's address was released with its namespace; .77 stays taken.
    let p3 = Netns::new("twl-c-r").unwrap();
    let r3 = rt
        .add("c3", &path(&p3), "eth0")
        .unwrap()
        .ok()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(address(&r3), address(&r2));
    assert_eq!(ipam_state(&n.node).len(), 2);
}

/// Checks the agent's addresses against the namespaces: every pod in
/// `attached` has its address on eth0, no other pod has an eth0, the agent
/// holds exactly those attachments, and no address is doubled.
fn verify(node: &NodeProcess, pods: &[Netns], attached: &BTreeMap<usize, String>) -> Result<()> {
    let state = ipam_state(node);
    let want: BTreeMap<String, String> = attached
        .iter()
        .map(|(i, a)| {
            (
                format!("cni/twill/ctr-{i}/eth0"),
                a.split('/').next().unwrap_or("").to_owned(),
            )
        })
        .collect();
    anyhow::ensure!(state == want, "agent {state:?}\nexpected {want:?}");
    for (i, p) in pods.iter().enumerate() {
        let have = if_addr(p, "eth0");
        anyhow::ensure!(
            have.as_ref() == attached.get(&i),
            "pod {i}: eth0 {have:?}, expected {:?}",
            attached.get(&i)
        );
    }
    Ok(())
}

/// Plugin runs that the agent did not answer (it was down or died mid-way).
static UNANSWERED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
/// Of those, the ones where the agent died while handling the request.
static MID_FLIGHT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn count_unanswered(out: &CniOutput) {
    use std::sync::atomic::Ordering::Relaxed;
    UNANSWERED.fetch_add(1, Relaxed);
    if out.stdout.contains("without answering") || out.stdout.contains("reset by peer") {
        MID_FLIGHT.fetch_add(1, Relaxed);
    }
}

/// A runtime's loop for one pod: ADD, or DEL if attached; a failed ADD is
/// followed by DELs until one succeeds (as runtimes do); a failed DEL is
/// retried. Returns the pod's address if it ends attached.
fn cycle(
    rt: &CniRuntime,
    i: usize,
    netns: &str,
    attached: Option<String>,
) -> Result<Option<String>> {
    let ctr = format!("ctr-{i}");
    let del_until_ok = || -> Result<()> {
        for _ in 0..600 {
            let d = rt.del(&ctr, Some(netns), "eth0", None)?;
            if d.exit == 0 {
                return Ok(());
            }
            anyhow::ensure!(d.error_code() == Some(11), "DEL {ctr}: {d:?}");
            count_unanswered(&d);
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        anyhow::bail!("DEL {ctr} never succeeded")
    };
    if attached.is_some() {
        del_until_ok()?;
        return Ok(None);
    }
    let out = rt.add(&ctr, netns, "eth0")?;
    if out.exit == 0 {
        return Ok(Some(address(&out.json()?)));
    }
    anyhow::ensure!(out.error_code() == Some(11), "ADD {ctr}: {out:?}");
    count_unanswered(&out);
    del_until_ok()?;
    Ok(None)
}

#[test]
fn many_parallel_adds_and_dels() {
    if !require_root("many_parallel_adds_and_dels") {
        return;
    }
    let n = one_node(7);
    let (_inst, rt) = runtime(&n.node);
    const PODS: usize = 24;
    const THREADS: usize = 6;
    let pods: Vec<Netns> = (0..PODS).map(|_| Netns::new("twl-c-p").unwrap()).collect();
    let paths: Vec<String> = pods.iter().map(path).collect();
    // Three rounds: all attach, all detach, all attach — each in parallel.
    let mut attached: BTreeMap<usize, String> = BTreeMap::new();
    for round in 0..3 {
        let results: Vec<(usize, Option<String>)> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..THREADS)
                .map(|t| {
                    let (rt, paths, attached) = (&rt, &paths, &attached);
                    s.spawn(move || {
                        (t..PODS)
                            .step_by(THREADS)
                            .map(|i| {
                                let now = attached.get(&i).cloned();
                                (i, cycle(rt, i, &paths[i], now).unwrap())
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        attached = results
            .into_iter()
            .filter_map(|(i, a)| a.map(|a| (i, a)))
            .collect();
        assert_eq!(
            attached.len(),
            if round == 1 { 0 } else { PODS },
            "round {round}"
        );
        verify(&n.node, &pods, &attached)
            .with_context(|| format!("round {round}"))
            .unwrap();
    }
    ping(&pods[0], Ipv4Addr::new(10, 244, 7, 1), 1).unwrap();
}

#[test]
fn agent_killed_at_random_during_add_and_del() {
    if !require_root("agent_killed_at_random_during_add_and_del") {
        return;
    }
    let n = one_node(8);
    let (_inst, rt) = runtime(&n.node);
    const PODS: usize = 8;
    const KILLS: usize = 8;
    let pods: Vec<Netns> = (0..PODS).map(|_| Netns::new("twl-c-k").unwrap()).collect();
    let paths: Vec<String> = pods.iter().map(path).collect();
    let node = std::sync::Mutex::new(n.node);
    let done = std::sync::atomic::AtomicBool::new(false);
    let attached: BTreeMap<usize, String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..PODS)
            .map(|i| {
                let (rt, paths, done) = (&rt, &paths, &done);
                s.spawn(move || {
                    // One thread per pod: a runtime never runs two
                    // operations on one container at once. After the last
                    // kill, even pods end attached and odd ones detached.
                    let mut now = None;
                    let mut ops = 0u32;
                    while !done.load(std::sync::atomic::Ordering::Relaxed)
                        || ops < 2
                        || now.is_some() != (i % 2 == 0)
                    {
                        now = cycle(rt, i, &paths[i], now).unwrap();
                        ops += 1;
                    }
                    (i, now)
                })
            })
            .collect();
        let mut rng = Rng::new();
        for k in 0..KILLS {
            std::thread::sleep(std::time::Duration::from_millis(100 + rng.below(400)));
            let mut node = node.lock().unwrap();
            node.kill();
            // Sometimes the agent stays away a while, so that runtimes retry.
            std::thread::sleep(std::time::Duration::from_millis(rng.below(3) * 100));
            node.restart().with_context(|| format!("kill {k}")).unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        workers
            .into_iter()
            .filter_map(|h| {
                let (i, a) = h.join().unwrap();
                a.map(|a| (i, a))
            })
            .collect()
    });
    let mut node = node.into_inner().unwrap();
    let unanswered = UNANSWERED.load(std::sync::atomic::Ordering::Relaxed);
    let mid_flight = MID_FLIGHT.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "after {KILLS} kills: {unanswered} ADD/DEL unanswered ({mid_flight} cut off mid-way), \
         {} of {PODS} pods attached",
        attached.len()
    );
    assert_eq!(attached.len(), PODS / 2);
    assert!(unanswered > 0, "no kill hit an ADD or a DEL");
    verify(&node, &pods, &attached).unwrap();
    // And once more after a last crash: the record and the interfaces return.
    node.kill();
    node.restart().unwrap();
    verify(&node, &pods, &attached).unwrap();
    if let Some((&i, _)) = attached.iter().next() {
        ping(&pods[i], Ipv4Addr::new(10, 244, 8, 1), 1).unwrap();
    }
}

#[test]
fn install_puts_a_copy_and_the_conflist_in_place() {
    if !require_root("install_puts_a_copy_and_the_conflist_in_place") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let sock = std::path::Path::new("/run/twill-test/other.sock");
    let inst = CniInstall::new(&twill_bin(), sock, false).unwrap();
    let meta = std::fs::symlink_metadata(&inst.plugin).unwrap();
    assert!(meta.file_type().is_file(), "not a copy: {meta:?}");
    assert_ne!(meta.permissions().mode() & 0o111, 0, "not executable");
    assert_eq!(meta.len(), std::fs::metadata(twill_bin()).unwrap().len());
    let list = inst.list().unwrap();
    assert_eq!(list["name"], "twill");
    assert_eq!(list["plugins"][0]["type"], "twill-cni");
    assert_eq!(list["plugins"][0]["socket"], "/run/twill-test/other.sock");
    assert_eq!(list["plugins"][1]["type"], "portmap");
    let v = inst.runtime().unwrap().version_cmd().unwrap();
    assert_eq!(v.ok().unwrap().json().unwrap()["cniVersion"], "1.1.0");
    // No agent behind that socket: STATUS says "not available".
    let st = inst
        .runtime()
        .unwrap()
        .with_version("1.1.0")
        .status()
        .unwrap();
    assert_eq!(st.error_code(), Some(50), "{st:?}");
    // Installing again replaces both in place.
    let mut c = std::process::Command::new(twill_bin());
    c.args(["cni", "install", "--symlink", "--bin-dir"])
        .arg(&inst.bin_dir)
        .arg("--conf-dir")
        .arg(inst.conflist.parent().unwrap());
    run_checked(c, std::time::Duration::from_secs(30)).unwrap();
    assert!(std::fs::symlink_metadata(&inst.plugin)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        inst.list().unwrap()["plugins"][0]["socket"],
        "/run/twill/twill.sock"
    );
}
