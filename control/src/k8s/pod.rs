//! `v1 Pod`: what NetworkPolicy enforcement needs of a pod (its labels,
//! node, addresses and named container ports), read and checked from the
//! object as `kubectl get -o json` prints it.

use std::net::{IpAddr, Ipv4Addr};

use serde_json::Value;

use super::selector::{read_labels, Labels};
use super::{
    describe, iana_svc_name, invalid, read_meta, read_protocol_or_sctp, require_api_version, At,
    FResult, K8sError, Protocol,
};
use crate::objects::Kind;

/// A checked `v1 Pod`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pod {
    value: Value,
    namespace: String,
    name: String,
    labels: Labels,
    node_name: Option<String>,
    host_network: bool,
    ips: Vec<Ipv4Addr>,
    ports: Vec<ContainerPort>,
}

/// One of a container's `ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPort {
    /// `name`, an IANA service name, if given.
    pub name: Option<String>,
    /// `containerPort`.
    pub port: u16,
    /// `protocol` (default TCP).
    pub protocol: Protocol,
}

impl Pod {
    /// Reads and checks a Pod. What is read is validated as the API
    /// server validates it; the rest of the (large) Pod spec is ignored.
    pub fn from_value(value: Value) -> Result<Pod, K8sError> {
        let root = At::root(&value);
        let read = || -> FResult<_> {
            root.object()?;
            require_api_version(&root, Kind::Pod)?;
            let (namespace, name) = read_meta(&root)?;
            let labels = read_labels(&root)?;
            let spec = root.get("spec");
            let node_name = match spec.as_ref().map(|s| s.opt_str("nodeName")).transpose()? {
                Some(Some(n)) if !n.is_empty() => Some(n.to_owned()),
                _ => None,
            };
            let host_network = match spec.as_ref().and_then(|s| s.get("hostNetwork")) {
                Some(b) => b.bool()?,
                None => false,
            };
            let ports = match &spec {
                Some(s) => read_ports(s)?,
                None => Vec::new(),
            };
            let ips = read_ips(&root)?;
            Ok(Pod {
                value: Value::Null,
                namespace,
                name,
                labels,
                node_name,
                host_network,
                ips,
                ports,
            })
        };
        match read() {
            Ok(pod) => Ok(Pod { value, ..pod }),
            Err(e) => Err(e.into_k8s(describe(&value))),
        }
    }

    /// `metadata.namespace` (`default` when absent).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `metadata.labels`.
    pub fn labels(&self) -> &Labels {
        &self.labels
    }

    /// `spec.nodeName`: the node it is scheduled to (`None` before the
    /// scheduler placed it).
    pub fn node_name(&self) -> Option<&str> {
        self.node_name.as_deref()
    }

    /// `spec.hostNetwork`: the pod uses its node's network namespace and
    /// addresses (NetworkPolicies do not apply to it).
    pub fn host_network(&self) -> bool {
        self.host_network
    }

    /// The pod's IPv4 addresses: `status.podIPs[].ip`, or `status.podIP`
    /// when there is no `podIPs`. IPv6 addresses are left out (status is
    /// written by the kubelet, not the user: on an IPv4 pod network they
    /// are not an error). Empty before the pod has an address.
    pub fn ips(&self) -> &[Ipv4Addr] {
        &self.ips
    }

    /// Every TCP and UDP port of `spec.containers[].ports[]`, then of the
    /// sidecars (`spec.initContainers[]` with `restartPolicy: Always`), in
    /// that order: the containers `podutil.FindPort` searches for a named
    /// port. SCTP ports are left out: the pod may declare them, but no
    /// rule twill enforces (TCP and UDP only) can name them.
    pub fn container_ports(&self) -> &[ContainerPort] {
        &self.ports
    }

    /// The number of the first port named `name` with `protocol`, in
    /// [`Pod::container_ports`] order (as `podutil.FindPort`).
    pub fn named_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.protocol == protocol && p.name.as_deref() == Some(name))
            .map(|p| p.port)
    }

    /// The object as given.
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// The object as given, taken.
    pub fn into_value(self) -> Value {
        self.value
    }
}

/// The ports of the containers and then of the sidecar init containers.
fn read_ports(spec: &At<'_>) -> FResult<Vec<ContainerPort>> {
    let mut ports = Vec::new();
    for c in spec.opt_items("containers")? {
        c.object()?;
        read_container_ports(&c, &mut ports)?;
    }
    for c in spec.opt_items("initContainers")? {
        c.object()?;
        if c.opt_str("restartPolicy")? == Some("Always") {
            read_container_ports(&c, &mut ports)?;
        }
    }
    Ok(ports)
}

/// One container's ports: `containerPort` 1 to 65535, `name` an IANA
/// service name unique in the container (`validateContainerPorts`).
fn read_container_ports(container: &At<'_>, out: &mut Vec<ContainerPort>) -> FResult<()> {
    let mut names: Vec<&str> = Vec::new();
    for p in container.opt_items("ports")? {
        p.object()?;
        let port = p
            .get("containerPort")
            .ok_or_else(|| invalid(&p.join("containerPort"), "is missing"))?
            .port()?;
        let name = p.opt_str("name")?.filter(|n| !n.is_empty());
        if let Some(n) = name {
            if !iana_svc_name(n) {
                return Err(invalid(
                    &p.join("name"),
                    format_args!("{n:?} is not an IANA service name (at most 15 lower-case letters, digits and '-', with a letter)"),
                ));
            }
            if names.contains(&n) {
                return Err(invalid(
                    &p.join("name"),
                    format_args!("{n:?} names two ports of the container"),
                ));
            }
            names.push(n);
        }
        if let Some(protocol) = read_protocol_or_sctp(&p)? {
            out.push(ContainerPort {
                name: name.map(str::to_owned),
                port,
                protocol,
            });
        }
    }
    Ok(())
}

/// `status.podIPs[].ip`, else `status.podIP`; IPv6 dropped.
fn read_ips(root: &At<'_>) -> FResult<Vec<Ipv4Addr>> {
    let Some(status) = root.get("status") else {
        return Ok(Vec::new());
    };
    status.object()?;
    let mut fields = Vec::new();
    for item in status.opt_items("podIPs")? {
        item.object()?;
        if let Some(ip) = item.get("ip") {
            fields.push(ip);
        }
    }
    if fields.is_empty() {
        fields.extend(status.get("podIP"));
    }
    let mut ips = Vec::new();
    for f in fields {
        let s = f.str()?;
        if s.is_empty() {
            continue;
        }
        match s.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) if !ips.contains(&ip) => ips.push(ip),
            Ok(_) => {}
            Err(_) => return Err(invalid(&f.path, format_args!("{s:?} is not an IP address"))),
        }
    }
    Ok(ips)
}

#[cfg(test)]
#[path = "pod_tests.rs"]
mod tests;
