//! `networking.twill.dev/v1 PodAddress`: twill's own kind. A node agent
//! writes one per pod it runs, to publish where the pod lives, so that
//! every node can resolve NetworkPolicy selectors to addresses without
//! reading Pods from an API server (as Calico's WorkloadEndpoint does):
//!
//! ```json
//! {"apiVersion":"networking.twill.dev/v1","kind":"PodAddress",
//!  "metadata":{"name":"web-0","namespace":"prod"},
//!  "spec":{"node":"node-a","ip":"10.244.1.5"}}
//! ```
//!
//! Its namespace and name are the pod's. IPv4 only (the pod network is).

use std::net::Ipv4Addr;

use serde_json::{json, Value};

use super::{describe, invalid, read_meta, require_api_version, At, FResult, K8sError};
use crate::objects::{valid_segment, Kind};

/// A checked PodAddress.
#[derive(Debug, Clone, PartialEq)]
pub struct PodAddress {
    value: Value,
    namespace: String,
    name: String,
    node: String,
    ip: Ipv4Addr,
}

impl PodAddress {
    /// The PodAddress of pod `namespace/name` on `node` at `ip`. The names
    /// are the caller's to check (a store refuses an object whose names
    /// are not valid, see [`crate::k8s::check_stored`]).
    pub fn new(namespace: &str, name: &str, node: &str, ip: Ipv4Addr) -> PodAddress {
        let value = json!({
            "apiVersion": Kind::PodAddress.api_version(),
            "kind": Kind::PodAddress.name(),
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"node": node, "ip": ip.to_string()},
        });
        PodAddress {
            value,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            node: node.to_owned(),
            ip,
        }
    }

    /// Reads and checks a PodAddress: `spec.node` a node name (a DNS
    /// subdomain), `spec.ip` an IPv4 address.
    pub fn from_value(value: Value) -> Result<PodAddress, K8sError> {
        let root = At::root(&value);
        let read = || -> FResult<_> {
            root.object()?;
            require_api_version(&root, Kind::PodAddress)?;
            let (namespace, name) = read_meta(&root)?;
            let spec = root
                .get("spec")
                .ok_or_else(|| invalid("spec", "is missing"))?;
            spec.object()?;
            let node = spec
                .opt_str("node")?
                .ok_or_else(|| invalid("spec.node", "is missing"))?;
            if !valid_segment(node) {
                return Err(invalid(
                    "spec.node",
                    format_args!("{node:?} is not a node name"),
                ));
            }
            let ip = spec
                .opt_str("ip")?
                .ok_or_else(|| invalid("spec.ip", "is missing"))?;
            let ip: Ipv4Addr = ip.parse().map_err(|_| {
                invalid(
                    "spec.ip",
                    format_args!("{ip:?} is not an IPv4 address (the pod network is IPv4)"),
                )
            })?;
            Ok((namespace, name, node.to_owned(), ip))
        };
        match read() {
            Ok((namespace, name, node, ip)) => Ok(PodAddress {
                value,
                namespace,
                name,
                node,
                ip,
            }),
            Err(e) => Err(e.into_k8s(describe(&value))),
        }
    }

    /// `metadata.namespace`: the pod's.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// `metadata.name`: the pod's.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `spec.node`: the node the pod runs on.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// `spec.ip`: the pod's address.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The object as given (or as [`PodAddress::new`] made it).
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// The object, taken.
    pub fn into_value(self) -> Value {
        self.value
    }
}

#[cfg(test)]
#[path = "podaddress_tests.rs"]
mod tests;
