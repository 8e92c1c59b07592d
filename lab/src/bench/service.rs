//! `twill bench`'s `twill-vxlan-svc`: the Service `default/bench` in front
//! of pod B (written into the agents' `objects_dir`) and the wait until
//! both agents balance its every port. Test infrastructure: writes only
//! into the lab's directory and talks only to the lab's agents.

use std::net::Ipv4Addr;
use std::sync::atomic::AtomicBool;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::{check, CLUSTER_IP, SVC_PORTS, SVC_READY};
use crate::manifests::{self, SvcEndpoint};
use crate::node::NodeProcess;

/// Writes Service `default/bench` (ClusterIP [`CLUSTER_IP`], [`SVC_PORTS`])
/// and its EndpointSlice (pod B at `pod_b` on `node`) into `dir`.
pub(super) fn add_bench_service(dir: &std::path::Path, pod_b: Ipv4Addr, node: &str) -> Result<()> {
    let endpoint = SvcEndpoint {
        ip: pod_b,
        node: node.to_owned(),
    };
    let doc = manifests::list(vec![
        manifests::service("default", "bench", CLUSTER_IP, &SVC_PORTS),
        manifests::endpoint_slice("default", "bench", &SVC_PORTS, &[endpoint]),
    ]);
    manifests::write(dir, "bench.json", &doc)
}

/// Waits until every agent balances every port of [`SVC_PORTS`] to a backend
/// (`twill service list --json`).
pub(super) fn wait_for_service(nodes: &[NodeProcess], stop: &AtomicBool) -> Result<()> {
    let want: Vec<String> = SVC_PORTS
        .iter()
        .map(|p| format!("default/bench:{}", p.name))
        .collect();
    let deadline = Instant::now() + SVC_READY;
    for node in nodes {
        loop {
            check(stop)?;
            let last = node.service_backends();
            if let Ok(list) = &last {
                let ready = want.iter().all(|w| {
                    list.iter()
                        .any(|(name, backends)| name == w && !backends.is_empty())
                });
                if ready {
                    break;
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "node {}: the Service's ports {want:?} have no backends after {SVC_READY:?} \
                     (last `twill service list`: {last:?}); log tail:\n{}",
                    node.config().name,
                    node.log_tail(30)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}
