//! `networking.k8s.io/v1 NetworkPolicy`: which pods a policy isolates and
//! what it allows, read and checked from the object as `kubectl get -o
//! json` prints it, with `policyTypes` defaulted and validated as the API
//! server does (k8s.io/api networking/v1/types.go, and
//! pkg/apis/networking/validation). What the rules mean for traffic is the
//! policy compiler's; this module only reads them.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

use super::selector::{read_selector, LabelSelector};
use super::{
    describe, iana_svc_name, invalid, read_meta, read_protocol_or_sctp, require_api_version,
    unsupported, At, FResult, K8sError, Protocol,
};
use crate::objects::Kind;

/// A checked `networking.k8s.io/v1 NetworkPolicy`.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkPolicy {
    value: Value,
    namespace: String,
    name: String,
    pod_selector: LabelSelector,
    ingress: Option<Vec<PolicyRule>>,
    egress: Option<Vec<PolicyRule>>,
}

/// One rule of `spec.ingress` or `spec.egress`: traffic is allowed when it
/// matches one of `ports` and comes from (ingress) or goes to (egress) one
/// of `peers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRule {
    /// `ports`; empty (or absent) means every port of every protocol.
    pub ports: Vec<PolicyPort>,
    /// `from` (ingress) or `to` (egress); empty (or absent) means every
    /// peer: any source or destination, in the cluster or outside it.
    pub peers: Vec<Peer>,
}

/// One of a rule's `ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyPort {
    /// `protocol` (default TCP; SCTP is refused).
    pub protocol: Protocol,
    /// `port`; `None` means every port of `protocol`.
    pub port: Option<PortRef>,
    /// `endPort`: with a numeric `port`, the range `port..=end_port`
    /// (never below `port`).
    pub end_port: Option<u16>,
}

/// A `port` of a [`PolicyPort`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PortRef {
    /// A port number.
    Number(u16),
    /// A named container port (an IANA service name), resolved per pod
    /// (see [`crate::k8s::Pod::named_port`]).
    Name(String),
}

/// One of a rule's `from` or `to`.
///
/// What a [`Peer::Pods`] selects, for the compiler:
/// - `pod_selector` alone: the matching pods of the policy's namespace;
/// - `namespace_selector` alone: every pod of the matching namespaces;
/// - both: the matching pods in the matching namespaces.
///
/// (An empty selector matches everything, so `namespace_selector: {}`
/// alone is every pod of the cluster.) The API server refuses a peer with
/// neither, and one with an `ipBlock` beside a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// Pods by label (at least one selector is `Some`).
    Pods {
        /// `podSelector`.
        pod_selector: Option<LabelSelector>,
        /// `namespaceSelector`.
        namespace_selector: Option<LabelSelector>,
    },
    /// Addresses.
    IpBlock(IpBlock),
}

/// An `ipBlock`: the addresses in `cidr` but in none of `except`.
///
/// The networks are stored with their host bits cleared (the API server
/// reads `10.0.0.1/24` as `10.0.0.0/24`). An IPv6 block is accepted, as
/// the API server does, and matches nothing on twill's IPv4 pod network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpBlock {
    /// `cidr`.
    pub cidr: IpNet,
    /// `except`: each of the same family and strictly inside `cidr`.
    pub except: Vec<IpNet>,
}

/// Which directions `policyTypes` names.
#[derive(Debug, Clone, Copy, Default)]
struct Directions {
    ingress: bool,
    egress: bool,
}

impl NetworkPolicy {
    /// Reads and checks a NetworkPolicy.
    pub fn from_value(value: Value) -> Result<NetworkPolicy, K8sError> {
        let root = At::root(&value);
        let read = || -> FResult<_> {
            root.object()?;
            require_api_version(&root, Kind::NetworkPolicy)?;
            let (namespace, name) = read_meta(&root)?;
            let spec = read_spec(&root)?;
            Ok((namespace, name, spec))
        };
        match read() {
            Ok((namespace, name, (pod_selector, ingress, egress))) => Ok(NetworkPolicy {
                value,
                namespace,
                name,
                pod_selector,
                ingress,
                egress,
            }),
            Err(e) => Err(e.into_k8s(describe(&value))),
        }
    }

    /// `metadata.namespace` (`default` when absent): the policy selects
    /// pods of this namespace only.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `spec.podSelector`: the pods of [`NetworkPolicy::namespace`] the
    /// policy applies to (empty: all of them).
    pub fn pod_selector(&self) -> &LabelSelector {
        &self.pod_selector
    }

    /// The ingress rules, `None` when the policy does not apply to ingress
    /// (after `policyTypes` defaulting: absent or empty `policyTypes` means
    /// Ingress, plus Egress when `spec.egress` has a rule). `Some(&[])`
    /// isolates the selected pods for ingress and allows nothing.
    pub fn ingress(&self) -> Option<&[PolicyRule]> {
        self.ingress.as_deref()
    }

    /// The egress rules, `None` when the policy does not apply to egress;
    /// as [`NetworkPolicy::ingress`].
    pub fn egress(&self) -> Option<&[PolicyRule]> {
        self.egress.as_deref()
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

type Spec = (
    LabelSelector,
    Option<Vec<PolicyRule>>,
    Option<Vec<PolicyRule>>,
);

fn read_spec(root: &At<'_>) -> FResult<Spec> {
    let empty = Value::Object(Default::default());
    let spec = root.get("spec").unwrap_or(At {
        value: &empty,
        path: "spec".into(),
    });
    spec.object()?;
    let pod_selector = match spec.get("podSelector") {
        Some(s) => read_selector(&s)?,
        None => LabelSelector::everything(),
    };
    let ingress = read_rules(&spec, "ingress", "from")?;
    let egress = read_rules(&spec, "egress", "to")?;
    let types = match read_policy_types(&spec)? {
        Some(t) => t,
        // networking/v1 defaults: Ingress always, Egress when there are
        // egress rules.
        None => Directions {
            ingress: true,
            egress: !egress.is_empty(),
        },
    };
    Ok((
        pod_selector,
        types.ingress.then_some(ingress),
        types.egress.then_some(egress),
    ))
}

/// `policyTypes`: `None` when absent or empty (defaulted by the caller);
/// at most two entries, each `Ingress` or `Egress`.
fn read_policy_types(spec: &At<'_>) -> FResult<Option<Directions>> {
    let items = spec.opt_items("policyTypes")?;
    if items.is_empty() {
        return Ok(None);
    }
    if items.len() > 2 {
        return Err(invalid(
            &spec.join("policyTypes"),
            "may not specify more than two policyTypes",
        ));
    }
    let mut d = Directions::default();
    for item in items {
        match item.str()? {
            "Ingress" => d.ingress = true,
            "Egress" => d.egress = true,
            t => {
                return Err(invalid(
                    &item.path,
                    format_args!("{t:?} is not Ingress or Egress"),
                ))
            }
        }
    }
    Ok(Some(d))
}

fn read_rules(spec: &At<'_>, key: &str, peers_key: &str) -> FResult<Vec<PolicyRule>> {
    spec.opt_items(key)?
        .iter()
        .map(|rule| {
            rule.object()?;
            let ports = rule
                .opt_items("ports")?
                .iter()
                .map(read_port)
                .collect::<FResult<_>>()?;
            let peers = rule
                .opt_items(peers_key)?
                .iter()
                .map(read_peer)
                .collect::<FResult<_>>()?;
            Ok(PolicyRule { ports, peers })
        })
        .collect()
}

/// A `NetworkPolicyPort`, validated as `ValidateNetworkPolicyPort`.
fn read_port(at: &At<'_>) -> FResult<PolicyPort> {
    at.object()?;
    let protocol = read_protocol_or_sctp(at)?.ok_or_else(|| {
        unsupported(
            &at.join("protocol"),
            "SCTP is not supported (twill enforces NetworkPolicy for TCP and UDP only)",
        )
    })?;
    let port = match at.get("port") {
        None => None,
        Some(p) if p.value.is_string() => {
            let name = p.str()?;
            if !iana_svc_name(name) {
                return Err(invalid(
                    &p.path,
                    format_args!(
                        "{name:?} is neither a port number nor an IANA service name \
                         (at most 15 lower-case letters, digits and '-', with a letter)"
                    ),
                ));
            }
            Some(PortRef::Name(name.to_owned()))
        }
        Some(p) => Some(PortRef::Number(p.port()?)),
    };
    let end_port = match (at.get("endPort"), &port) {
        (None, _) => None,
        (Some(e), None) => {
            return Err(invalid(
                &e.path,
                "may not be specified when `port` is not specified",
            ))
        }
        (Some(e), Some(PortRef::Name(_))) => {
            return Err(invalid(
                &e.path,
                "may not be specified when `port` is non-numeric",
            ))
        }
        (Some(e), Some(PortRef::Number(start))) => {
            let end = e.port()?;
            if end < *start {
                return Err(invalid(
                    &e.path,
                    format_args!("{end} must be greater than or equal to `port` ({start})"),
                ));
            }
            Some(end)
        }
    };
    Ok(PolicyPort {
        protocol,
        port,
        end_port,
    })
}

/// A `NetworkPolicyPeer`, validated as `ValidateNetworkPolicyPeer`.
fn read_peer(at: &At<'_>) -> FResult<Peer> {
    at.object()?;
    let pod_selector = at
        .get("podSelector")
        .map(|s| read_selector(&s))
        .transpose()?;
    let namespace_selector = at
        .get("namespaceSelector")
        .map(|s| read_selector(&s))
        .transpose()?;
    let ip_block = at.get("ipBlock").map(|b| read_ip_block(&b)).transpose()?;
    match (pod_selector, namespace_selector, ip_block) {
        (None, None, None) => Err(invalid(
            &at.path,
            "must specify a peer (podSelector, namespaceSelector or ipBlock)",
        )),
        (None, None, Some(b)) => Ok(Peer::IpBlock(b)),
        (_, _, Some(_)) => Err(invalid(
            &at.path,
            "may not specify both ipBlock and another peer",
        )),
        (pod_selector, namespace_selector, None) => Ok(Peer::Pods {
            pod_selector,
            namespace_selector,
        }),
    }
}

/// An `IPBlock`, validated as `ValidateIPBlock`: `cidr` required, every
/// `except` a strict subset of it.
fn read_ip_block(at: &At<'_>) -> FResult<IpBlock> {
    at.object()?;
    let cidr_field = at.get("cidr").filter(|c| c.value.as_str() != Some(""));
    let cidr = read_cidr(&cidr_field.ok_or_else(|| invalid(&at.join("cidr"), "is missing"))?)?;
    let mut except = Vec::new();
    for e in at.opt_items("except")? {
        let net = read_cidr(&e)?;
        let inside = cidr.contains(&net.network()) && net.prefix_len() > cidr.prefix_len();
        if !inside {
            return Err(invalid(
                &e.path,
                format_args!("{net} must be a strict subset of `cidr` ({cidr})"),
            ));
        }
        except.push(net);
    }
    Ok(IpBlock { cidr, except })
}

/// A CIDR (`10.0.0.0/8`), host bits cleared.
fn read_cidr(at: &At<'_>) -> FResult<IpNet> {
    let s = at.str()?;
    let net: IpNet = s.parse().map_err(|_| {
        invalid(
            &at.path,
            format_args!("{s:?} is not a CIDR (such as 10.0.0.0/8)"),
        )
    })?;
    Ok(net.trunc())
}

impl IpBlock {
    /// Whether `ip` is in `cidr` and in none of `except` (an address of
    /// the other family is in no block).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.cidr.contains(&ip) && !self.except.iter().any(|e| e.contains(&ip))
    }
}

#[cfg(test)]
#[path = "networkpolicy_tests.rs"]
mod tests;
