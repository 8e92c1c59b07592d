//! The restart window (issue 13): while the agent is down, any local user
//! may bind its tunnel port and receive the pods' tunnel traffic. The
//! agent cannot start then, and it says who holds the port.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

#[test]
fn a_node_whose_tunnel_port_is_taken_refuses_to_start_and_names_the_holder() {
    if !require_root("a_node_whose_tunnel_port_is_taken_refuses_to_start_and_names_the_holder") {
        return;
    }
    let ns_a = Netns::new("twl-rw-a").unwrap();
    let ns_b = Netns::new("twl-rw-b").unwrap();
    let _underlay = Underlay::pair(&ns_a, &ns_b, UNDERLAY_A, UNDERLAY_B, 24).unwrap();
    let cfg = NodeConfig::new("node-a", UNDERLAY_A, subnet(1), "vxlan");
    let port = cfg.net_conf.backend.udp_port();
    // The squatter: this test process, on every address of node A.
    let squatter = ns_a
        .run_in(move || std::net::UdpSocket::bind(("0.0.0.0", port)))
        .unwrap()
        .unwrap();
    let err = NodeProcess::start(&twill_bin(), &ns_a, cfg).expect_err("started on a taken port");
    let msg = format!("{err:#}");
    assert!(msg.contains("the tunnel port is held by uid 0"), "{msg}");
    assert!(
        msg.contains(&format!("pid {}", std::process::id())),
        "{msg}"
    );
    drop(squatter);
}
