//! The network-namespace lab: the cluster's machines played by Linux network
//! namespaces on one host, for the demo (`twill demo`), the end-to-end
//! benchmarks (`twill bench`, `twill bench-services`) and the integration
//! tests.
//!
//! This is test infrastructure, not the product, and must not be used by the
//! node agent, the controller or the CNI plugin: it is built into the `twill`
//! binary only for `demo` and `bench` (the `twill` package's default feature
//! `lab`; `--no-default-features` builds the agent without it). It drives
//! `twill` processes only through their command line and the JSON they
//! read and print, in types of its own ([`NodeConfig`], the node
//! configuration it writes; [`PodInfo`], its view of an attachment), never
//! through the `twill` library, on which it does not depend.
//!
//! It shells out to `ip`, `bridge`, `sysctl`, `ethtool`, `setpriv` and
//! `ping` (the agent itself uses netlink). Everything it creates is owned by
//! a guard whose `Drop` removes it, also while a test panics: [`Netns`] (a
//! namespace), [`NodeProcess`] (a running `twill node` and its files),
//! [`Pod`] (a pod attached through `twill pod attach`), [`KernelPod`],
//! [`Lan`] (a bridged underlay), [`Service`] (a controller or etcd),
//! [`FrrRouter`] (FRR's zebra and bgpd as a BGP router),
//! [`CniInstall`] (the CNI plugin installed in a temporary directory), and
//! what a killed run left behind goes at the next start
//! ([`cleanup_stale`]). Devices are created directly inside lab namespaces,
//! and traffic only flows between them: the caller's own namespace is never
//! touched.
//!
//! Everything here needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN).
#![deny(unsafe_code)]

#[macro_use]
mod out;

pub mod bench;
pub mod bench_services;
mod cmd;
mod cni;
pub mod demo;
mod frr;
mod http;
mod kernel;
mod lan;
mod link;
mod manifests;
mod names;
mod netns;
mod node;
mod pod;
mod service;
pub mod soak;
mod tempdir;
mod traffic;

pub use cmd::{describe, run_checked, run_timeout, Reaped};
pub use cni::{run_plugin, CniInstall, CniOutput, CniRuntime, PLUGIN_TIMEOUT};
pub use frr::{FrrConfig, FrrNeighbor, FrrRouter, FRR_DIR};
pub use http::{http_get, HttpResponse};
pub use kernel::{KernelPod, KernelVxlanNode, BRIDGE_DEV, VXLAN_DEV};
pub use lan::Lan;
pub use link::{addr_up, finish_checksums, unique_ifname, Underlay, Veth};
pub use names::{cleanup_stale, unique_suffix, LAB_RUN_DIR};
pub use netns::Netns;
pub use node::{
    lab_workers, nth_host, tail_file, vtep_mac_for, BackendConf, NetConf, NodeConfig, NodeProcess,
    NodeStatus, PeerConfig, PlaneConfig, READY_TIMEOUT,
};
pub use pod::{Pod, PodInfo};
pub use service::Service;
pub use tempdir::TempDir;
pub use traffic::{
    ping, ping_rtts, ping_unanswered, tcp_transfer, tcp_transfer_with, udp_exchange, udp_socket,
    PingReport, TransferOptions, TransferReport,
};

/// Whether this process runs with effective uid 0 (the lab needs root).
/// Read from `/proc/self/status` (nix's `user` feature is not enabled).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Uid:"))?;
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}
