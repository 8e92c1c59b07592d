//! A Service and its EndpointSlices → what the dataplane balances, one
//! [`ResolvedPort`] per Service port, with kube-proxy's semantics
//! (pkg/proxy/servicechangetracker.go for the Service side,
//! endpointslicecache.go for the endpoints): the node agent maps these
//! onto the switch's service table.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::{ClusterIp, EndpointSlice, Service, ServiceType, TrafficPolicy};

/// A transport protocol twill balances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        })
    }
}

/// One Service port as the dataplane balances it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedPort {
    /// `ns/svc:portname`, or `ns/svc` when the port is unnamed.
    pub name: String,
    /// The protocol.
    pub protocol: Protocol,
    /// The Service port.
    pub port: u16,
    /// The cluster IPs (never empty here: Services without one resolve to
    /// no ports).
    pub cluster_ips: Vec<IpAddr>,
    /// The node port (NodePort and LoadBalancer Services).
    pub node_port: Option<u16>,
    /// `spec.externalIPs`, then `status.loadBalancer.ingress[].ip` (not
    /// `ipMode: Proxy`).
    pub external_ips: Vec<IpAddr>,
    /// The endpoints, by address; each address:port once.
    pub endpoints: Vec<ResolvedEndpoint>,
    /// `Some` for `sessionAffinity: ClientIP`.
    pub affinity_timeout: Option<Duration>,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    /// `externalTrafficPolicy: Local` (false when the Service has no
    /// external frontend, as kube-proxy's `ExternalPolicyLocal`).
    pub external_local: bool,
}

/// One endpoint of a [`ResolvedPort`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedEndpoint {
    /// The endpoint's address and the slice port's number.
    pub addr: SocketAddr,
    /// `nodeName`.
    pub node_name: Option<String>,
    /// `conditions.ready`.
    pub ready: bool,
    /// `conditions.serving`.
    pub serving: bool,
    /// `conditions.terminating`.
    pub terminating: bool,
}

impl ResolvedEndpoint {
    /// Which of two copies of one address:port to keep (higher wins):
    /// kube-proxy keeps a non-terminating copy over a terminating one
    /// (endpointslicecache.go `addEndpoints`: a reused pod IP); among the
    /// rest, a ready copy, then a serving one. Ties keep the first.
    fn rank(&self) -> (bool, bool, bool) {
        (!self.terminating, self.ready, self.serving)
    }
}

/// What `svc` balances, given EndpointSlices (slices of other Services
/// are ignored: a slice belongs to a Service by its
/// `kubernetes.io/service-name` label and namespace, selector or not).
///
/// Headless and ExternalName Services, and Services without a cluster IP,
/// resolve to no ports (kube-proxy skips them). A Service port takes the
/// endpoints of the slice ports with its name (both empty when unnamed)
/// and protocol, at the slice port's number; a slice port without a number
/// is ignored; a Service port no slice port matches has no endpoints (the
/// dataplane rejects its connections).
pub fn resolve(svc: &Service, slices: &[&EndpointSlice]) -> Vec<ResolvedPort> {
    let spec = svc.spec();
    let ClusterIp::Ips(cluster_ips) = &spec.cluster_ip else {
        return Vec::new();
    };
    if spec.service_type == ServiceType::ExternalName {
        return Vec::new();
    }
    let mine: Vec<&EndpointSlice> = slices
        .iter()
        .copied()
        .filter(|s| s.namespace() == svc.namespace() && s.service_name() == svc.name())
        .collect();
    let mut external_ips = spec.external_ips.clone();
    for ip in &spec.load_balancer_ips {
        if !external_ips.contains(ip) {
            external_ips.push(*ip);
        }
    }
    let external_local = spec.external_traffic_policy == TrafficPolicy::Local
        && (matches!(
            spec.service_type,
            ServiceType::NodePort | ServiceType::LoadBalancer
        ) || !spec.external_ips.is_empty());
    let node_port_type = matches!(
        spec.service_type,
        ServiceType::NodePort | ServiceType::LoadBalancer
    );

    spec.ports
        .iter()
        .map(|port| {
            let mut by_addr: BTreeMap<SocketAddr, ResolvedEndpoint> = BTreeMap::new();
            for slice in &mine {
                for sp in slice.ports() {
                    let Some(number) = sp.port else { continue };
                    if sp.name != port.name || sp.protocol != port.protocol {
                        continue;
                    }
                    for ep in slice.endpoints() {
                        let new = ResolvedEndpoint {
                            addr: SocketAddr::new(ep.address, number),
                            node_name: ep.node_name.clone(),
                            ready: ep.ready,
                            serving: ep.serving,
                            terminating: ep.terminating,
                        };
                        match by_addr.get(&new.addr) {
                            Some(old) if old.rank() >= new.rank() => {}
                            _ => {
                                by_addr.insert(new.addr, new);
                            }
                        }
                    }
                }
            }
            let name = if port.name.is_empty() {
                format!("{}/{}", svc.namespace(), svc.name())
            } else {
                format!("{}/{}:{}", svc.namespace(), svc.name(), port.name)
            };
            ResolvedPort {
                name,
                protocol: port.protocol,
                port: port.port,
                cluster_ips: cluster_ips.clone(),
                node_port: port.node_port.filter(|_| node_port_type),
                external_ips: external_ips.clone(),
                endpoints: by_addr.into_values().collect(),
                affinity_timeout: spec.affinity_timeout,
                internal_local: spec.internal_traffic_policy == TrafficPolicy::Local,
                external_local,
            }
        })
        .collect()
}

#[cfg(test)]
#[path = "resolve_tests.rs"]
mod tests;
