//! `v1 Service`: the fields twill balances by, read and checked from the
//! object as `kubectl get -o json` prints it (the module doc of
//! [`crate::k8s`] lists what is refused and what ignored).

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use serde_json::Value;

use super::{
    describe, dns_label, invalid, read_meta, read_protocol, require_api_version, unsupported, At,
    FResult, K8sError, Protocol,
};
use crate::objects::Kind;

/// The default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT: Duration = Duration::from_secs(10800);
/// The largest affinity timeout the API server accepts (1 day).
pub const MAX_AFFINITY_TIMEOUT_SECS: i64 = 86400;

/// A checked `v1 Service`.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    value: Value,
    namespace: String,
    name: String,
    spec: ServiceSpec,
}

/// `spec.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceType {
    /// `ClusterIP` (the default).
    ClusterIp,
    /// `NodePort`.
    NodePort,
    /// `LoadBalancer`.
    LoadBalancer,
    /// `ExternalName`: a DNS alias, nothing to balance.
    ExternalName,
}

/// `spec.internalTrafficPolicy` / `spec.externalTrafficPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TrafficPolicy {
    /// Every endpoint of the cluster (the default).
    #[default]
    Cluster,
    /// Endpoints on the receiving node only.
    Local,
}

/// `spec.clusterIP` / `spec.clusterIPs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterIp {
    /// Not given (a manifest before the API server allocated one, or an
    /// ExternalName Service). kube-proxy skips such a Service.
    Unset,
    /// `None`: a headless Service (DNS only, nothing to balance).
    Headless,
    /// The cluster IPs, `clusterIPs` order (one: IPv4 only).
    Ips(Vec<IpAddr>),
}

/// `spec.ports[].targetPort`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetPort {
    /// A port number.
    Number(u16),
    /// A container port name (resolved per Pod by the EndpointSlice
    /// controller; the slices carry the numbers).
    Name(String),
}

/// One of `spec.ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServicePort {
    /// `name` (empty when unnamed; required when there are several).
    pub name: String,
    /// `protocol` (default TCP).
    pub protocol: Protocol,
    /// `port`.
    pub port: u16,
    /// `targetPort` (default: `port`).
    pub target_port: TargetPort,
    /// `nodePort`, NodePort and LoadBalancer Services only.
    pub node_port: Option<u16>,
}

/// The part of a Service twill balances by.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServiceSpec {
    /// `type`.
    pub service_type: ServiceType,
    /// `clusterIP` / `clusterIPs`.
    pub cluster_ip: ClusterIp,
    /// `ports`.
    pub ports: Vec<ServicePort>,
    /// `selector` (`None`: a selectorless Service, whose EndpointSlices
    /// someone else writes).
    pub selector: Option<BTreeMap<String, String>>,
    /// `externalIPs`.
    pub external_ips: Vec<IpAddr>,
    /// `sessionAffinity: ClientIP` with its timeout; `None` for no affinity.
    pub affinity_timeout: Option<Duration>,
    /// `internalTrafficPolicy`.
    pub internal_traffic_policy: TrafficPolicy,
    /// `externalTrafficPolicy`.
    pub external_traffic_policy: TrafficPolicy,
    /// `externalName` of an ExternalName Service.
    pub external_name: Option<String>,
    /// `status.loadBalancer.ingress[].ip` whose `ipMode` is `VIP` (or
    /// absent), IPv4 only (read whatever the type, as kube-proxy does).
    pub load_balancer_ips: Vec<IpAddr>,
}

impl Service {
    /// Reads and checks a Service.
    pub fn from_value(value: Value) -> Result<Service, K8sError> {
        let root = At::root(&value);
        let read = || -> FResult<_> {
            root.object()?;
            require_api_version(&root, Kind::Service)?;
            let (namespace, name) = read_meta(&root)?;
            let spec = read_spec(&root)?;
            Ok((namespace, name, spec))
        };
        match read() {
            Ok((namespace, name, spec)) => Ok(Service {
                value,
                namespace,
                name,
                spec,
            }),
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

    /// What twill balances by.
    pub fn spec(&self) -> &ServiceSpec {
        &self.spec
    }

    /// The object as given (`null` after [`Self::into_typed`]).
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// The object as given, taken.
    pub fn into_value(self) -> Value {
        self.value
    }

    /// The typed fields alone, without the JSON it was read from: for
    /// holders of many objects (a node agent's view of every Service)
    /// that need only what twill implements.
    pub fn into_typed(mut self) -> Self {
        self.value = Value::Null;
        self
    }
}

fn read_spec(root: &At<'_>) -> FResult<ServiceSpec> {
    let empty = Value::Object(Default::default());
    let spec = root.get("spec").unwrap_or(At {
        value: &empty,
        path: "spec".into(),
    });
    spec.object()?;

    let service_type = match spec.opt_str("type")? {
        None | Some("ClusterIP") => ServiceType::ClusterIp,
        Some("NodePort") => ServiceType::NodePort,
        Some("LoadBalancer") => ServiceType::LoadBalancer,
        Some("ExternalName") => ServiceType::ExternalName,
        Some(t) => {
            return Err(invalid(
                "spec.type",
                format_args!("{t:?} is not ClusterIP, NodePort, LoadBalancer or ExternalName"),
            ))
        }
    };

    check_families(&spec)?;
    let cluster_ip = read_cluster_ip(&spec)?;
    let external_name = spec.opt_str("externalName")?.map(str::to_owned);
    if service_type == ServiceType::ExternalName {
        if external_name.as_deref().unwrap_or_default().is_empty() {
            return Err(invalid(
                "spec.externalName",
                "is required for type ExternalName",
            ));
        }
        if cluster_ip != ClusterIp::Unset {
            return Err(invalid(
                "spec.clusterIP",
                "may not be set for type ExternalName",
            ));
        }
    }

    if cluster_ip == ClusterIp::Headless
        && matches!(
            service_type,
            ServiceType::NodePort | ServiceType::LoadBalancer
        )
    {
        return Err(invalid(
            "spec.clusterIP",
            "may not be None for type NodePort or LoadBalancer",
        ));
    }
    let node_ports_allowed = matches!(
        service_type,
        ServiceType::NodePort | ServiceType::LoadBalancer
    );
    let ports = read_ports(&spec, node_ports_allowed)?;
    let needs_ports =
        service_type != ServiceType::ExternalName && cluster_ip != ClusterIp::Headless;
    if needs_ports && ports.is_empty() {
        return Err(invalid("spec.ports", "is required (at least one port)"));
    }

    let selector = match spec.get("selector") {
        None => None,
        Some(sel) => {
            let mut map = BTreeMap::new();
            for (k, _) in sel.object()? {
                let v = sel.opt_str(k)?.unwrap_or_default();
                map.insert(k.clone(), v.to_owned());
            }
            Some(map)
        }
    };

    let mut external_ips = Vec::new();
    for item in spec.opt_items("externalIPs")? {
        external_ips.push(ipv4_only(&item)?);
    }

    let affinity_timeout = match spec.opt_str("sessionAffinity")? {
        None | Some("None") => None,
        Some("ClientIP") => Some(read_affinity_timeout(&spec)?),
        Some(a) => {
            return Err(invalid(
                "spec.sessionAffinity",
                format_args!("{a:?} is not None or ClientIP"),
            ))
        }
    };

    let policy = |key: &str| -> FResult<TrafficPolicy> {
        match spec.opt_str(key)? {
            None | Some("Cluster") => Ok(TrafficPolicy::Cluster),
            Some("Local") => Ok(TrafficPolicy::Local),
            Some(p) => Err(invalid(
                &spec.join(key),
                format_args!("{p:?} is not Cluster or Local"),
            )),
        }
    };
    let internal_traffic_policy = policy("internalTrafficPolicy")?;
    let external_traffic_policy = policy("externalTrafficPolicy")?;

    check_source_ranges(&spec)?;

    let load_balancer_ips = read_ingress(root)?;

    Ok(ServiceSpec {
        service_type,
        cluster_ip,
        ports,
        selector,
        external_ips,
        affinity_timeout,
        internal_traffic_policy,
        external_traffic_policy,
        external_name,
        load_balancer_ips,
    })
}

/// `ipFamilies` and `ipFamilyPolicy`: IPv4 single-stack only.
fn check_families(spec: &At<'_>) -> FResult<()> {
    for fam in spec.opt_items("ipFamilies")? {
        match fam.str()? {
            "IPv4" => {}
            "IPv6" => {
                return Err(unsupported(
                    &fam.path,
                    "IPv6 is not supported (twill's pod network is IPv4)",
                ))
            }
            f => {
                return Err(invalid(
                    &fam.path,
                    format_args!("{f:?} is not IPv4 or IPv6"),
                ))
            }
        }
    }
    match spec.opt_str("ipFamilyPolicy")? {
        None | Some("SingleStack") | Some("PreferDualStack") => Ok(()),
        Some("RequireDualStack") => Err(unsupported(
            "spec.ipFamilyPolicy",
            "RequireDualStack is not supported (twill's pod network is IPv4)",
        )),
        Some(p) => Err(invalid(
            "spec.ipFamilyPolicy",
            format_args!("{p:?} is not SingleStack, PreferDualStack or RequireDualStack"),
        )),
    }
}

/// `loadBalancerSourceRanges`: refused unless empty or allowing any source
/// (a zero-masked CIDR, as kube-proxy reads it). Whitespace around a range
/// is allowed (API validation lets it through; kube-proxy trims it).
fn check_source_ranges(spec: &At<'_>) -> FResult<()> {
    let ranges = spec.opt_items("loadBalancerSourceRanges")?;
    let mut any = ranges.is_empty();
    for r in &ranges {
        let s = r.str()?.trim();
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| invalid(&r.path, format_args!("{s:?} is not a CIDR")))?;
        let (Ok(_), Ok(len)) = (addr.parse::<IpAddr>(), len.parse::<u8>()) else {
            return Err(invalid(&r.path, format_args!("{s:?} is not a CIDR")));
        };
        any |= len == 0;
    }
    if any {
        return Ok(());
    }
    Err(unsupported(
        "spec.loadBalancerSourceRanges",
        "is not supported (a firewall twill does not enforce; remove it or allow 0.0.0.0/0)",
    ))
}

/// An IP address that must be IPv4.
fn ipv4_only(at: &At<'_>) -> FResult<IpAddr> {
    let s = at.str()?;
    let ip: IpAddr = s
        .parse()
        .map_err(|_| invalid(&at.path, format_args!("{s:?} is not an IP address")))?;
    if ip.is_ipv6() {
        return Err(unsupported(
            &at.path,
            format_args!("{ip} is IPv6, which is not supported (twill's pod network is IPv4)"),
        ));
    }
    Ok(ip)
}

fn read_cluster_ip(spec: &At<'_>) -> FResult<ClusterIp> {
    let parse = |at: &At<'_>| -> FResult<ClusterIp> {
        match at.str()? {
            "" => Ok(ClusterIp::Unset),
            "None" => Ok(ClusterIp::Headless),
            _ => Ok(ClusterIp::Ips(vec![ipv4_only(at)?])),
        }
    };
    let single = match spec.get("clusterIP") {
        Some(at) => parse(&at)?,
        None => ClusterIp::Unset,
    };
    let list = spec.opt_items("clusterIPs")?;
    let Some(first) = list.first() else {
        return Ok(single);
    };
    let from_list = parse(first)?;
    if single != ClusterIp::Unset && single != from_list {
        return Err(invalid(
            "spec.clusterIPs[0]",
            format_args!(
                "{:?} must equal spec.clusterIP {:?}",
                first.value.as_str().unwrap_or_default(),
                spec.opt_str("clusterIP")?.unwrap_or_default()
            ),
        ));
    }
    if let Some(second) = list.get(1) {
        // A second cluster IP is the other family's: an IPv6 one is refused
        // by ipv4_only, a second IPv4 one is invalid in Kubernetes too.
        ipv4_only(second)?;
        return Err(invalid(
            &second.path,
            "a second cluster IP must be of the other family",
        ));
    }
    Ok(from_list)
}

fn read_ports(spec: &At<'_>, node_ports_allowed: bool) -> FResult<Vec<ServicePort>> {
    let items = spec.opt_items("ports")?;
    let mut ports = Vec::with_capacity(items.len());
    let mut names = HashSet::new();
    let mut pairs = HashSet::new();
    for item in &items {
        item.object()?;
        let name = item.opt_str("name")?.unwrap_or_default();
        if items.len() > 1 && name.is_empty() {
            return Err(invalid(
                &item.join("name"),
                "is required when a Service has more than one port",
            ));
        }
        if !name.is_empty() && !dns_label(name) {
            return Err(invalid(
                &item.join("name"),
                format_args!(
                    "{name:?} is not a DNS label (lower-case letters, digits and '-', at most 63)"
                ),
            ));
        }
        if !names.insert(name) {
            return Err(invalid(
                &item.join("name"),
                format_args!("{name:?} is used by two ports"),
            ));
        }
        let protocol = read_protocol(item)?;
        let port = item
            .get("port")
            .ok_or_else(|| invalid(&item.join("port"), "is missing"))?
            .port()?;
        if !pairs.insert((port, protocol)) {
            return Err(invalid(
                &item.join("port"),
                format_args!("{port}/{protocol} is used by two ports"),
            ));
        }
        let target_port = match item.get("targetPort") {
            None => TargetPort::Number(port),
            Some(t) => match &t.value {
                Value::String(s) if s.parse::<u16>().is_ok() => {
                    // IntOrString from YAML `targetPort: "8080"` stays a
                    // string in Go, a name; a name of digits is invalid.
                    return Err(invalid(
                        &t.path,
                        format_args!("{s:?} is a number in quotes: write it without them"),
                    ));
                }
                Value::String(s) if !s.is_empty() => TargetPort::Name(s.clone()),
                Value::String(_) => TargetPort::Number(port),
                _ => TargetPort::Number(t.port()?),
            },
        };
        let node_port = match item.get("nodePort") {
            None => None,
            Some(n) if n.value.as_i64() == Some(0) => None,
            Some(n) if !node_ports_allowed => {
                return Err(invalid(
                    &n.path,
                    "may only be set for type NodePort or LoadBalancer",
                ))
            }
            Some(n) => Some(n.port()?),
        };
        ports.push(ServicePort {
            name: name.to_owned(),
            protocol,
            port,
            target_port,
            node_port,
        });
    }
    Ok(ports)
}

fn read_affinity_timeout(spec: &At<'_>) -> FResult<Duration> {
    let Some(t) = spec
        .get("sessionAffinityConfig")
        .and_then(|c| c.get("clientIP"))
        .and_then(|c| c.get("timeoutSeconds"))
    else {
        return Ok(DEFAULT_AFFINITY_TIMEOUT);
    };
    let secs = t.int()?;
    if !(1..=MAX_AFFINITY_TIMEOUT_SECS).contains(&secs) {
        return Err(invalid(
            &t.path,
            format_args!("{secs} is out of range (1 to {MAX_AFFINITY_TIMEOUT_SECS})"),
        ));
    }
    Ok(Duration::from_secs(secs.unsigned_abs()))
}

/// `status.loadBalancer.ingress[].ip` that get a frontend: `ipMode` VIP or
/// absent (kube-proxy's rule; `Proxy` means the load balancer delivers to
/// the node, not to the VIP), IPv4 (the other family is ignored).
fn read_ingress(root: &At<'_>) -> FResult<Vec<IpAddr>> {
    let Some(lb) = root.get("status").and_then(|s| s.get("loadBalancer")) else {
        return Ok(Vec::new());
    };
    let mut ips = Vec::new();
    for ing in lb.opt_items("ingress")? {
        ing.object()?;
        let vip = match ing.opt_str("ipMode")? {
            None | Some("VIP") => true,
            Some("Proxy") => false,
            Some(m) => {
                return Err(invalid(
                    &ing.join("ipMode"),
                    format_args!("{m:?} is not VIP or Proxy"),
                ))
            }
        };
        let Some(ip) = ing.get("ip") else { continue };
        let s = ip.str()?;
        let addr: IpAddr = s
            .parse()
            .map_err(|_| invalid(&ip.path, format_args!("{s:?} is not an IP address")))?;
        if vip && addr.is_ipv4() && !ips.contains(&addr) {
            ips.push(addr);
        }
    }
    Ok(ips)
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
