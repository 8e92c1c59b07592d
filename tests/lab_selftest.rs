//! Self-tests of the namespace lab's guards and traffic helpers, independent
//! of the `twill` binary (a shell script stands in for it where needed).
// Helpers outside #[test] functions panic on failure too: this is a test crate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::unix::fs::PermissionsExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::kill;
use nix::unistd::Pid;

#[test]
fn netns_exists_until_dropped() {
    if !require_root("netns_exists_until_dropped") {
        return;
    }
    let ns = Netns::new("twl-st").unwrap();
    let name = ns.name().to_owned();
    assert!(Netns::exists(&name));
    // lo is up: the namespace can reach itself.
    ping(&ns, Ipv4Addr::LOCALHOST, 1).unwrap();
    drop(ns);
    assert!(!Netns::exists(&name), "{name} survived its guard");
}

#[test]
fn netns_is_deleted_when_the_test_body_panics() {
    if !require_root("netns_is_deleted_when_the_test_body_panics") {
        return;
    }
    let names = Mutex::new(Vec::new());
    let r = catch_unwind(AssertUnwindSafe(|| {
        let a = Netns::new("twl-st-p").unwrap();
        let b = Netns::new("twl-st-p").unwrap();
        Underlay::pair(
            &a,
            &b,
            Ipv4Addr::new(192, 168, 7, 1),
            Ipv4Addr::new(192, 168, 7, 2),
            24,
        )
        .unwrap();
        names
            .lock()
            .unwrap()
            .extend([a.name().to_owned(), b.name().to_owned()]);
        panic!("deliberate panic inside a lab test body");
    }));
    assert!(r.is_err());
    let names = names.into_inner().unwrap();
    assert_eq!(names.len(), 2);
    for n in names {
        assert!(!Netns::exists(&n), "{n} survived a panic");
    }
}

#[test]
fn run_in_enters_the_namespace() {
    if !require_root("run_in_enters_the_namespace") {
        return;
    }
    let ns = Netns::new("twl-st-r").unwrap();
    let dev = unique_ifname("twlst");
    ns.ip(&["link", "add", &dev, "type", "bridge"]).unwrap();
    let inside = ns
        .run_in(|| nix::net::if_::if_nametoindex(dev.as_str()))
        .unwrap();
    assert!(inside.is_ok(), "{dev} not visible inside the namespace");
    assert!(
        nix::net::if_::if_nametoindex(dev.as_str()).is_err(),
        "{dev} leaked into the caller's namespace"
    );
    // A panic inside run_in reaches the caller.
    let r = catch_unwind(AssertUnwindSafe(|| ns.run_in(|| panic!("inside")).ok()));
    assert!(r.is_err());
}

#[test]
fn traffic_helpers_over_a_plain_veth() {
    if !require_root("traffic_helpers_over_a_plain_veth") {
        return;
    }
    let a = Netns::new("twl-st-ta").unwrap();
    let b = Netns::new("twl-st-tb").unwrap();
    let (ia, ib) = (Ipv4Addr::new(192, 168, 8, 1), Ipv4Addr::new(192, 168, 8, 2));
    let ul = Underlay::pair(&a, &b, ia, ib, 24).unwrap();
    assert_eq!(a.iface_with_addr(ia).unwrap(), ul.a_if());
    let p = ping(&a, ib, 3).unwrap();
    assert_eq!(p.received, 3);
    let r = tcp_transfer(&b, ib, &a, 16 << 20).unwrap();
    assert_eq!(r.bytes, 16 << 20);
    assert!(r.gbit_per_s > 0.0);
    let r = tcp_transfer(&a, ia, &b, 1).unwrap();
    assert_eq!(r.bytes, 1);
    udp_exchange(&a, ia, &b, ib, 50).unwrap();
    // A capped transfer stops early and still verifies what it sent.
    let capped = tcp_transfer_with(
        &b,
        ib,
        &a,
        TransferOptions {
            bytes: usize::MAX,
            max_time: Some(Duration::from_millis(300)),
            stall_timeout: Duration::from_secs(5),
        },
    )
    .unwrap();
    assert!(capped.bytes > 0 && capped.secs < 5.0);
    // Nothing listens at .3: every helper fails, and says so in time.
    let t = Instant::now();
    let dead = Ipv4Addr::new(192, 168, 8, 3);
    ping_unanswered(&a, dead).unwrap();
    assert!(ping(&a, dead, 1).is_err());
    assert!(ping_unanswered(&a, ib).is_err());
    let e = tcp_transfer_with(
        &b,
        dead,
        &a,
        TransferOptions {
            bytes: 10,
            max_time: None,
            stall_timeout: Duration::from_secs(1),
        },
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("binding"), "{e:#}");
    assert!(t.elapsed() < Duration::from_secs(30));
}

/// Writes an executable shell script standing in for `twill`.
fn fake_twill(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("fake-twill");
    fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p
}

const FAKE_STATUS: &str = r#"{"name":"fake","subnet":"10.244.1.0/24","public_ip":"192.168.9.1","vtep_mac":"0a:58:0a:f4:01:01","backend":"vxlan","gateway":"10.244.1.1"}"#;

fn fake_config() -> NodeConfig {
    NodeConfig::new("fake", Ipv4Addr::new(192, 168, 9, 1), subnet(1), "vxlan")
}

#[test]
fn node_process_starts_waits_and_stops() {
    if !require_root("node_process_starts_waits_and_stops") {
        return;
    }
    let tmp = TempDir::new("selftest").unwrap();
    let calls = tmp.path().join("calls");
    let up = tmp.path().join("up");
    // Like the real agent, the fake is ready only once `node` has started
    // (here: has logged its line), so the log check below cannot race.
    let bin = fake_twill(
        tmp.path(),
        &format!(
            "echo \"$@\" >> {calls}\ncase \"$1\" in\n  node) echo fake agent up; touch {up}; exec sleep 1000 ;;\n  status) [ -f {up} ] || exit 1; echo '{FAKE_STATUS}' ;;\n  *) exit 2 ;;\nesac",
            calls = calls.display(),
            up = up.display()
        ),
    );
    let ns = Netns::new("twl-st-n").unwrap();
    let node = NodeProcess::start(&bin, &ns, fake_config()).unwrap();
    let st = node.ready_status().unwrap();
    assert_eq!(st.vtep_mac.as_deref(), Some("0a:58:0a:f4:01:01"));
    let pid = Pid::from_raw(node.pid().unwrap() as i32);
    let cfg: NodeConfig = serde_json::from_str(
        &fs::read_to_string(node.socket().with_file_name("node.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(&cfg, node.config());
    let dir = node.socket().parent().unwrap().to_owned();
    assert!(node.log_tail(5).contains("fake agent up"));
    let log = fs::read_to_string(&calls).unwrap();
    assert!(log.contains("node --config"), "{log}");
    assert!(log.contains("status --socket"), "{log}");
    drop(node);
    assert!(kill(pid, None).is_err(), "agent still alive after drop");
    assert!(!dir.exists(), "{} survived the guard", dir.display());
}

#[test]
fn node_process_reports_an_agent_that_never_gets_ready() {
    if !require_root("node_process_reports_an_agent_that_never_gets_ready") {
        return;
    }
    let tmp = TempDir::new("selftest").unwrap();
    let bin = fake_twill(
        tmp.path(),
        "case \"$1\" in\n  node) echo 'fake: cannot open TAP'; exec sleep 1000 ;;\n  *) exit 1 ;;\nesac",
    );
    let ns = Netns::new("twl-st-n").unwrap();
    let t = Instant::now();
    let e =
        NodeProcess::start_timeout(&bin, &ns, fake_config(), Duration::from_secs(1)).unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("not ready"), "{msg}");
    assert!(msg.contains("fake: cannot open TAP"), "{msg}");
    assert!(t.elapsed() < Duration::from_secs(8));

    let bin = fake_twill(tmp.path(), "echo 'fake: bad config' >&2; exit 3");
    let e = NodeProcess::start(&bin, &ns, fake_config()).unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("exited early") && msg.contains("fake: bad config"),
        "{msg}"
    );
}

#[test]
fn pod_guard_detaches_and_deletes_its_namespace() {
    if !require_root("pod_guard_detaches_and_deletes_its_namespace") {
        return;
    }
    let tmp = TempDir::new("selftest").unwrap();
    let calls = tmp.path().join("calls");
    let attach = r#"{"id":"p1","netns":"x","ifname":"eth0","mac":"0a:58:0a:f4:01:03","ip":"10.244.1.3/24","gateway":"10.244.1.1","mtu":1450}"#;
    let bin = fake_twill(
        tmp.path(),
        &format!(
            "echo \"$@\" >> {calls}\ncase \"$2\" in\n  attach) echo '{attach}' ;;\n  detach) exit 0 ;;\n  *) exit 2 ;;\nesac",
            calls = calls.display()
        ),
    );
    let sock = tmp.path().join("api.sock");
    let pod = Pod::attach_to(&bin, &sock, "twl-st-pod", None).unwrap();
    let name = pod.netns().name().to_owned();
    assert_eq!(pod.ip(), Ipv4Addr::new(10, 244, 1, 3));
    assert_eq!(pod.info().unwrap().mtu, 1450);
    drop(pod);
    assert!(!Netns::exists(&name));
    let log = fs::read_to_string(&calls).unwrap();
    assert!(
        log.contains(&format!(
            "pod attach --socket {} --netns {name} --ifname eth0",
            sock.display()
        )),
        "{log}"
    );
    assert!(
        log.contains("pod detach --socket") && log.contains("--id p1"),
        "{log}"
    );
}

#[test]
fn udp_socket_binds_inside_a_namespace() {
    if !require_root("udp_socket_binds_inside_a_namespace") {
        return;
    }
    let a = Netns::new("twl-st-u").unwrap();
    let b = Netns::new("twl-st-u").unwrap();
    let (ia, ib) = (
        Ipv4Addr::new(192, 168, 10, 1),
        Ipv4Addr::new(192, 168, 10, 2),
    );
    Underlay::pair(&a, &b, ia, ib, 24).unwrap();
    let rx = udp_socket(&b, SocketAddrV4::new(ib, 0)).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let tx = udp_socket(&a, SocketAddrV4::new(ia, 0)).unwrap();
    tx.send_to(b"hello", rx.local_addr().unwrap()).unwrap();
    let mut buf = [0u8; 16];
    let (n, from) = rx.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello");
    assert_eq!(from, tx.local_addr().unwrap());
}

#[test]
fn leftovers_of_dead_runs_are_removed() {
    if !require_root("leftovers_of_dead_runs_are_removed") {
        return;
    }
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let ns = format!("twl-st-stale-{dead}-0-beef");
    let dir = PathBuf::from(LAB_RUN_DIR).join(format!("node-x-{dead}-1-beef"));
    std::process::Command::new("ip")
        .args(["netns", "add", &ns])
        .status()
        .unwrap();
    fs::create_dir_all(&dir).unwrap();
    let live = Netns::new("twl-st-live").unwrap();
    let removed = cleanup_stale();
    assert!(!Netns::exists(&ns), "{ns} was not removed: {removed:?}");
    assert!(!dir.exists());
    assert!(
        Netns::exists(live.name()),
        "a live run's namespace was removed"
    );
}
