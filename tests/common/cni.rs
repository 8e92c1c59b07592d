//! Helpers of the CNI tests (`tests/cni.rs`): a node on its own, the plugin
//! installed for it, and readings of interfaces and of the agent's IPAM.
//! They panic on failure, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde_json::Value;
use twill::api::Attachment;

use super::*;

/// One worker per agent: tests run in parallel on small machines.
pub const NODE_ARGS: &[&str] = &["--workers", "1"];

/// One node on a veth underlay leading nowhere. Fields drop in order:
/// agent, then namespace.
pub struct OneNode {
    pub node: NodeProcess,
    _ns: Netns,
}

/// Starts a node with subnet 10.244.N.0/24 (vxlan, one worker).
pub fn one_node(subnet_n: u8) -> OneNode {
    let ns = Netns::new("twl-c-n").unwrap();
    // The underlay: one end of a veth pair whose other end stays unused.
    Veth::create(&ns, "ul0", &ns, "ul1").unwrap();
    addr_up(&ns, "ul0", UNDERLAY_A, 24).unwrap();
    let cfg = NodeConfig::new("node-a", UNDERLAY_A, subnet(subnet_n), "vxlan");
    let node = NodeProcess::start_args(&twill_bin(), &ns, cfg, NODE_ARGS).unwrap();
    OneNode { node, _ns: ns }
}

/// Installs the plugin (a symlink) for `node` and a runtime using it.
pub fn runtime(node: &NodeProcess) -> (CniInstall, CniRuntime) {
    let inst = CniInstall::new(&twill_bin(), node.socket(), true).unwrap();
    let rt = inst.runtime().unwrap();
    (inst, rt)
}

/// The namespace's path, as a runtime passes it in `CNI_NETNS`.
pub fn path(ns: &Netns) -> String {
    ns.path().display().to_string()
}

/// The IPv4 address (with prefix) of `ifname` in `ns`; None if there is no
/// such interface.
pub fn if_addr(ns: &Netns, ifname: &str) -> Option<String> {
    let out = ns
        .exec("ip", &["-j", "-4", "addr", "show", "dev", ifname])
        .unwrap();
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let a = &v[0]["addr_info"][0];
    Some(format!(
        "{}/{}",
        a["local"].as_str()?,
        a["prefixlen"].as_u64()?
    ))
}

/// The agent's attachments (`twill pod list`).
pub fn list(node: &NodeProcess) -> Vec<Attachment> {
    let out = node
        .cli(&["pod", "list", "--socket", node.socket().to_str().unwrap()])
        .unwrap();
    serde_json::from_str(&out).unwrap()
}

/// Attachment id → address, from the agent and from its state file, which
/// must agree.
pub fn ipam_state(node: &NodeProcess) -> BTreeMap<String, String> {
    let live: BTreeMap<String, String> = list(node)
        .into_iter()
        .map(|a| (a.id, a.ip.split('/').next().unwrap().to_owned()))
        .collect();
    let text = std::fs::read_to_string(node.state_dir().join("attachments.json")).unwrap();
    let file: Value = serde_json::from_str(&text).unwrap();
    let on_disk: BTreeMap<String, String> = file["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().into(),
                r["ip"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(live, on_disk, "the agent and its state file disagree");
    let distinct: BTreeSet<&String> = live.values().collect();
    assert_eq!(
        distinct.len(),
        live.len(),
        "an address is doubled: {live:?}"
    );
    live
}

/// The first address of a CNI result, with prefix.
pub fn address(result: &Value) -> String {
    result["ips"][0]["address"].as_str().unwrap().to_owned()
}

/// The first address of a CNI result.
pub fn ip_of(result: &Value) -> Ipv4Addr {
    address(result).split('/').next().unwrap().parse().unwrap()
}

/// Random numbers without a crate: xorshift seeded from the clock.
pub struct Rng(u64);

impl Rng {
    pub fn new() -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Rng(t | 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}
