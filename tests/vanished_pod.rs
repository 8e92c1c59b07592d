//! A pod whose network namespace vanishes without a CNI DEL (issue 13):
//! the agent used to keep its attachment and address until a restart or a
//! GC, logging only that the port stopped being polled. It now detaches
//! it within a couple of seconds, releases its address and counts it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn a_pod_whose_namespace_vanished_is_detached_and_its_address_released() {
    if !require_root("a_pod_whose_namespace_vanished_is_detached_and_its_address_released") {
        return;
    }
    let c = Cluster::new("vxlan").unwrap();
    let (name, ip) = (c.a2.netns().name().to_owned(), c.a2.ip());
    let socket = c.node_a.socket().to_str().unwrap().to_owned();
    let attached = |c: &Cluster| -> bool {
        c.node_a
            .cli(&["pod", "list", "--socket", &socket])
            .unwrap()
            .contains(&format!("\"{name}\""))
    };
    assert!(attached(&c));
    // The namespace goes away behind the agent's back (a runtime that
    // crashed before its CNI DEL), and traffic is sent towards the pod so
    // that its TAP is read.
    ip_cmd(&["netns", "del", &name]);
    let _ = ping(c.a1.netns(), ip, 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while attached(&c) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !attached(&c),
        "still attached 10 s after its namespace vanished"
    );
    assert_eq!(c.node_a.counters().unwrap().pods.vanished, 1);
    // The address is free again: a new pod may take exactly it.
    let fresh = Netns::new("twl-t-vp").unwrap();
    let out = c
        .node_a
        .cli(&[
            "pod",
            "attach",
            "--socket",
            &socket,
            "--netns",
            fresh.name(),
            "--ip",
            &ip.to_string(),
        ])
        .unwrap();
    assert!(out.contains(&format!("\"{ip}/24\"")), "{out}");
    c.node_a
        .cli(&[
            "pod",
            "detach",
            "--socket",
            &socket,
            "--netns",
            fresh.name(),
        ])
        .unwrap();
    // Give the pod's guard a namespace to delete again.
    ip_cmd(&["netns", "add", &name]);
}

fn ip_cmd(args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "ip {args:?}: {out:?}");
}
