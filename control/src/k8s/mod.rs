//! Kubernetes objects as `kubectl get -o json|yaml` prints them: the
//! shapes twill reads ([`Service`], [`EndpointSlice`], [`Pod`],
//! [`Namespace`], [`NetworkPolicy`], and twill's own [`PodAddress`]),
//! label selectors ([`LabelSelector`]), manifests of many documents
//! ([`parse_manifests`]), what a Service resolves to for the dataplane
//! ([`resolve()`]), and a directory of manifests as an
//! [`ObjectStore`](crate::objects::ObjectStore) ([`DirStore`]).
//!
//! This is the control plane's configuration layer: no I/O except the
//! [`DirStore`]'s files, no switch types (the node agent maps a
//! [`ResolvedPort`] onto the switch's service table).
//!
//! # What is read, refused and ignored
//!
//! Unknown fields are ignored, as API clients do, and kept in the stored
//! JSON ([`Object::value`]). A field twill does not implement and that
//! would change what traffic goes where is refused with a
//! [`K8sError::Unsupported`] naming it; a field that does not change the
//! forwarding is accepted and ignored. Per field:
//!
//! | field | decision | why |
//! |---|---|---|
//! | `ports[].protocol: SCTP` (Service and EndpointSlice) | refused | twill balances TCP and UDP only |
//! | `spec.ipFamilies` with `IPv6`, `ipFamilyPolicy: RequireDualStack`, an IPv6 `clusterIP(s)` or `externalIPs` | refused | the pod network is IPv4 (`PreferDualStack` is accepted: on an IPv4 cluster it is single-stack) |
//! | `spec.loadBalancerSourceRanges` | refused unless empty or holding a zero-masked CIDR (`0.0.0.0/0`: any source, as kube-proxy reads it) | a firewall twill does not enforce; accepting it would open what the user closed |
//! | the `service.beta.kubernetes.io/load-balancer-source-ranges` annotation | ignored | read by cloud load balancers, not by kube-proxy |
//! | EndpointSlice `addressType` other than `IPv4` | refused | IPv4 pod network; `FQDN` has no defined semantics (kube-proxy ignores it) |
//! | `status.loadBalancer.ingress[].ipMode: Proxy` | that IP gets no frontend | kube-proxy's rule: the load balancer proxies, traffic arrives for the node, not the VIP |
//! | `status.loadBalancer.ingress[].ip` of IPv6 | dropped | kube-proxy on a single-stack IPv4 node ignores the other family's IPs; it is status, written by a controller, not the user's intent |
//! | `status.loadBalancer.ingress[].hostname` | ignored | no IP to give a frontend |
//! | `spec.healthCheckNodePort` | ignored | the cloud's health check port; twill serves no health check (yet) |
//! | `spec.publishNotReadyAddresses` | ignored | the EndpointSlice controller applies it (it marks those endpoints ready); a consumer reads the conditions |
//! | `ports[].appProtocol`, `spec.trafficDistribution`, endpoint `hints`, `zone` | ignored | hints for L7 proxies and topology-aware routing; balancing over every endpoint is correct, only less local |
//! | `spec.loadBalancerIP`, `loadBalancerClass`, `allocateLoadBalancerNodePorts` | ignored | requests to the load-balancer controller; what it did shows in `status` and `nodePort` |
//! | `spec.selector` | kept, not used to resolve | endpoints come from EndpointSlices, also for selectorless Services |
//! | `spec.sessionAffinityConfig` with `sessionAffinity: None` | ignored | the API server ignores it too |
//! | NetworkPolicy `ports[].protocol: SCTP` | refused | twill enforces TCP and UDP only; accepting it would leave a port open the user meant to close (or closed) |
//! | NetworkPolicy `ipBlock` of IPv6 (`cidr`, `except`) | accepted, matches nothing | valid in the API; the pod network is IPv4, so no IPv6 traffic reaches a pod |
//! | NetworkPolicy `ipBlock.cidr`/`except` with host bits (`10.0.0.1/24`) | read as the network (`10.0.0.0/24`) | as the API server's `ParseCIDRSloppy`; octets with leading zeros are refused (as its strict validation) |
//! | NetworkPolicy `status` | ignored | conditions written by a controller |
//! | Pod `spec.containers[].ports[]` with `protocol: SCTP` | dropped from the pod's ports | a declaration only; no TCP/UDP rule can name it |
//! | Pod `spec.initContainers[].ports[]` | read only for sidecars (`restartPolicy: Always`) | what `podutil.FindPort` resolves named ports against |
//! | Pod `status.podIPs[]`/`podIP` of IPv6 | dropped | written by the kubelet; the pod network is IPv4 |
//! | Pod `hostPort`, `hostIP`, every other Pod field | ignored | no bearing on which pod an address or named port is |
//! | Namespace label `kubernetes.io/metadata.name` | always the name | the API server sets it on every Namespace, whatever the manifest says |
//!
//! Validated as the API server validates what twill relies on: names and
//! namespaces ([`valid_segment`], namespace
//! `default` when absent); ports 1 to 65535 (also `nodePort`, whose range
//! is cluster configuration and not enforced); `targetPort` a number or a
//! name (default: `port`); more than one port ⇒ every port named, names
//! and port/protocol pairs unique; `type` one of ClusterIP, NodePort,
//! LoadBalancer, ExternalName; traffic policies Cluster or Local (default
//! Cluster); `sessionAffinity` None or ClientIP, its timeout 1 to 86400 s
//! (default 10800); `clusterIPs[0] == clusterIP` when both are given;
//! `nodePort` only on NodePort and LoadBalancer Services; an EndpointSlice
//! carries the label `kubernetes.io/service-name` (without it, it belongs
//! to no Service).
//!
//! Pods, Namespaces and NetworkPolicies are validated as the API server
//! validates the fields twill reads: labels and selectors
//! (`ValidateLabelSelector`: keys qualified names, values label values,
//! `In`/`NotIn` with values, `Exists`/`DoesNotExist` without); a Namespace
//! is cluster-scoped, named by a DNS label; container ports 1 to 65535,
//! names IANA service names unique per container; NetworkPolicy
//! `policyTypes` at most two of `Ingress`/`Egress` (absent or empty:
//! Ingress, plus Egress when there are egress rules), a port a number or
//! an IANA service name, `endPort` only with a numeric `port` and not
//! below it, a peer exactly an `ipBlock` or one or two selectors, every
//! `except` a strict subset of its `cidr`.
//!
//! Endpoint conditions are defaulted as the API reference says
//! (k8s.io/api discovery/v1/types.go, `EndpointConditions`): `ready`
//! absent ⇒ true, `serving` absent ⇒ true (not "same as ready": the
//! reference says true, and kube-proxy's endpointslicecache.go reads it
//! so), `terminating` absent ⇒ false.

mod dirstore;
mod endpointslice;
mod manifest;
mod namespace;
mod networkpolicy;
mod pod;
mod podaddress;
mod resolve;
mod selector;
mod service;

use std::fmt;

use serde_json::{Map, Value};

use crate::objects::{valid_segment, Kind, ObjectKey};

pub use dirstore::DirStore;
pub use endpointslice::{Endpoint, EndpointPort, EndpointSlice, SERVICE_NAME_LABEL};
pub use manifest::{parse_manifests, Manifests};
pub use namespace::{default_labels, Namespace, NAMESPACE_NAME_LABEL};
pub use networkpolicy::{IpBlock, NetworkPolicy, Peer, PolicyPort, PolicyRule, PortRef};
pub use pod::{ContainerPort, Pod};
pub use podaddress::PodAddress;
pub use resolve::{resolve, Protocol, ResolvedEndpoint, ResolvedPort};
pub use selector::{LabelSelector, Labels, Operator, Requirement};
pub use service::{
    ClusterIp, Service, ServicePort, ServiceSpec, ServiceType, TargetPort, TrafficPolicy,
};

/// What a store checks before it keeps `value` under `key`: the key is the
/// object's ([`crate::objects::validate_object`]) and the object reads as
/// its kind, with every field twill does not implement refused. A message
/// for people otherwise.
pub fn check_stored(
    key: &crate::objects::ObjectKey,
    value: &serde_json::Value,
) -> Result<(), String> {
    crate::objects::validate_object(key, value)?;
    Object::from_value(value.clone()).map_err(|e| e.to_string())?;
    Ok(())
}

/// A Kubernetes object that cannot be read or is not accepted.
///
/// Messages name the object (`Service default/web`, or the document when
/// the name is not known yet) and the field path, and read on their own
/// in a log line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum K8sError {
    /// A field is missing, of the wrong type or out of range.
    #[error("{object}: {}{reason}", field_prefix(field))]
    Invalid {
        /// `Service default/web`.
        object: String,
        /// The field path, `spec.ports[1].port` (empty: the object itself).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A valid field whose behaviour twill does not implement.
    #[error("{object}: {}{reason}", field_prefix(field))]
    Unsupported {
        /// `Service default/web`.
        object: String,
        /// The field path.
        field: String,
        /// What is not supported, and why.
        reason: String,
    },
    /// An object of a kind twill does not read (given to
    /// [`Object::from_value`]; [`parse_manifests`] skips those).
    #[error("{object}: not a kind twill reads (it reads v1 Service, Pod and Namespace, discovery.k8s.io/v1 EndpointSlice, networking.k8s.io/v1 NetworkPolicy and networking.twill.dev/v1 PodAddress)")]
    OtherKind {
        /// `Deployment default/web`.
        object: String,
    },
    /// Not JSON (serde_json's message, with line and column).
    #[error("JSON: {0}")]
    Json(serde_json::Error),
    /// Not YAML (the parser's message, with line and column).
    #[error("document {index}: YAML: {error}")]
    Yaml {
        /// The document, counting from 1.
        index: usize,
        /// The parser's error (in the message, not a `source()`).
        error: serde_norway::Error,
    },
    /// An error in one document of a manifest file.
    #[error("document {index}: {error}")]
    Document {
        /// The document, counting from 1.
        index: usize,
        /// The error in it.
        error: Box<K8sError>,
    },
    /// An error in one item of a `kind: List`.
    #[error("items[{index}]: {error}")]
    Item {
        /// The item, counting from 0 as in the field path.
        index: usize,
        /// The error in it.
        error: Box<K8sError>,
    },
}

fn field_prefix(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!("{field}: ")
    }
}

/// A Kubernetes object twill reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    /// A `v1 Service`.
    Service(Service),
    /// A `discovery.k8s.io/v1 EndpointSlice`.
    EndpointSlice(EndpointSlice),
    /// A `v1 Pod`.
    Pod(Pod),
    /// A `v1 Namespace`.
    Namespace(Namespace),
    /// A `networking.k8s.io/v1 NetworkPolicy`.
    NetworkPolicy(NetworkPolicy),
    /// A `networking.twill.dev/v1 PodAddress`.
    PodAddress(PodAddress),
}

impl Object {
    /// Reads an object of a kind twill reads; [`K8sError::OtherKind`] for
    /// any other (also a `Service` of another API group, such as
    /// Knative's).
    pub fn from_value(value: Value) -> Result<Object, K8sError> {
        match kind_of(&value) {
            Some(Kind::Service) => Service::from_value(value).map(Object::Service),
            Some(Kind::EndpointSlice) => {
                EndpointSlice::from_value(value).map(Object::EndpointSlice)
            }
            Some(Kind::Pod) => Pod::from_value(value).map(Object::Pod),
            Some(Kind::Namespace) => Namespace::from_value(value).map(Object::Namespace),
            Some(Kind::NetworkPolicy) => {
                NetworkPolicy::from_value(value).map(Object::NetworkPolicy)
            }
            Some(Kind::PodAddress) => PodAddress::from_value(value).map(Object::PodAddress),
            None => Err(K8sError::OtherKind {
                object: describe(&value),
            }),
        }
    }

    /// A stored object read as its kind, with its key; the key and why (for
    /// people) if it does not parse or is not the object its key names.
    pub fn from_stored(
        object: crate::objects::StoredObject,
    ) -> Result<(ObjectKey, Object), (ObjectKey, String)> {
        let key = object.key;
        match Object::from_value(object.object) {
            Ok(o) if o.key() == key => Ok((key, o)),
            Ok(o) => {
                let why = format!("stored under the key of {key} but is {}", o.key());
                Err((key, why))
            }
            Err(e) => Err((key, e.to_string())),
        }
    }

    /// Its key in the object store (the namespace is empty for a
    /// cluster-scoped kind).
    pub fn key(&self) -> ObjectKey {
        let (kind, namespace, name) = match self {
            Object::Service(s) => (Kind::Service, s.namespace(), s.name()),
            Object::EndpointSlice(e) => (Kind::EndpointSlice, e.namespace(), e.name()),
            Object::Pod(p) => (Kind::Pod, p.namespace(), p.name()),
            Object::Namespace(n) => (Kind::Namespace, "", n.name()),
            Object::NetworkPolicy(p) => (Kind::NetworkPolicy, p.namespace(), p.name()),
            Object::PodAddress(a) => (Kind::PodAddress, a.namespace(), a.name()),
        };
        ObjectKey {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// The object as given, unknown fields kept: what gets stored.
    pub fn value(&self) -> &Value {
        match self {
            Object::Service(s) => s.value(),
            Object::EndpointSlice(e) => e.value(),
            Object::Pod(p) => p.value(),
            Object::Namespace(n) => n.value(),
            Object::NetworkPolicy(p) => p.value(),
            Object::PodAddress(a) => a.value(),
        }
    }

    /// [`Object::value`], taken.
    pub fn into_value(self) -> Value {
        match self {
            Object::Service(s) => s.into_value(),
            Object::EndpointSlice(e) => e.into_value(),
            Object::Pod(p) => p.into_value(),
            Object::Namespace(n) => n.into_value(),
            Object::NetworkPolicy(p) => p.into_value(),
            Object::PodAddress(a) => a.into_value(),
        }
    }
}

/// The kind twill reads this object as, if any: `kind` and `apiVersion`
/// both match (an object without `apiVersion` is read by its `kind` and
/// then refused for the missing field).
fn kind_of(value: &Value) -> Option<Kind> {
    let kind = Kind::from_name(value.get("kind")?.as_str()?)?;
    match value.get("apiVersion") {
        None | Some(Value::Null) => Some(kind),
        Some(v) if v.as_str() == Some(kind.api_version()) => Some(kind),
        Some(_) => None,
    }
}

/// How an object is named in messages and in [`Manifests::skipped`]:
/// `Deployment default/web`; the `apiVersion` too when the kind is one of
/// twill's in another group (`serving.knative.dev/v1 Service default/web`);
/// no namespace for a cluster-scoped kind of twill's (`Namespace prod`).
pub(crate) fn describe(value: &Value) -> String {
    let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
    let mut kind = s(value.get("kind"));
    if kind.is_empty() {
        kind = "object without kind".into();
    } else if Kind::from_name(&kind).is_some() && kind_of(value).is_none() {
        kind = format!("{} {kind}", s(value.get("apiVersion")));
    }
    let meta = value.get("metadata");
    let mut ns = s(meta.and_then(|m| m.get("namespace")));
    match kind_of(value) {
        Some(k) if !k.namespaced() => ns.clear(),
        Some(_) if ns.is_empty() => ns = "default".into(),
        _ => {}
    }
    let name = s(meta.and_then(|m| m.get("name")));
    match (ns.is_empty(), name.is_empty()) {
        (_, true) => format!("{kind} without a name"),
        (true, false) => format!("{kind} {name}"),
        (false, false) => format!("{kind} {ns}/{name}"),
    }
}

/// A field error before the object's name is attached.
#[derive(Debug)]
pub(crate) struct FieldError {
    field: String,
    reason: String,
    unsupported: bool,
}

impl FieldError {
    fn into_k8s(self, object: String) -> K8sError {
        let FieldError {
            field,
            reason,
            unsupported,
        } = self;
        if unsupported {
            K8sError::Unsupported {
                object,
                field,
                reason,
            }
        } else {
            K8sError::Invalid {
                object,
                field,
                reason,
            }
        }
    }
}

pub(crate) type FResult<T> = Result<T, FieldError>;

pub(crate) fn invalid(field: &str, reason: impl fmt::Display) -> FieldError {
    FieldError {
        field: field.to_owned(),
        reason: reason.to_string(),
        unsupported: false,
    }
}

pub(crate) fn unsupported(field: &str, reason: impl fmt::Display) -> FieldError {
    FieldError {
        field: field.to_owned(),
        reason: reason.to_string(),
        unsupported: true,
    }
}

/// A value inside an object with the path that leads to it, for messages.
#[derive(Debug, Clone)]
pub(crate) struct At<'a> {
    pub value: &'a Value,
    pub path: String,
}

impl<'a> At<'a> {
    pub fn root(value: &'a Value) -> At<'a> {
        At {
            value,
            path: String::new(),
        }
    }

    /// The path of `key` below this value.
    pub fn join(&self, key: &str) -> String {
        let simple = key
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
        match (self.path.is_empty(), simple) {
            (true, true) => key.to_owned(),
            (false, true) => format!("{}.{key}", self.path),
            (_, false) => format!("{}[{key:?}]", self.path),
        }
    }

    /// The child `key`; `None` when absent or `null` (as Go's decoder
    /// reads a `null` field: the zero value).
    pub fn get(&self, key: &str) -> Option<At<'a>> {
        let value = self.value.as_object()?.get(key)?;
        (!value.is_null()).then(|| At {
            value,
            path: self.join(key),
        })
    }

    pub fn object(&self) -> FResult<&'a Map<String, Value>> {
        self.value
            .as_object()
            .ok_or_else(|| self.wrong_type("an object"))
    }

    pub fn str(&self) -> FResult<&'a str> {
        self.value
            .as_str()
            .ok_or_else(|| self.wrong_type("a string"))
    }

    pub fn bool(&self) -> FResult<bool> {
        self.value
            .as_bool()
            .ok_or_else(|| self.wrong_type("true or false"))
    }

    pub fn int(&self) -> FResult<i64> {
        self.value
            .as_i64()
            .ok_or_else(|| self.wrong_type("an integer"))
    }

    /// A port number, 1 to 65535.
    pub fn port(&self) -> FResult<u16> {
        let n = self.int()?;
        u16::try_from(n)
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| invalid(&self.path, format_args!("{n} is not a port (1 to 65535)")))
    }

    /// The items of an array, each with its `[i]` path.
    pub fn items(&self) -> FResult<Vec<At<'a>>> {
        let items = self
            .value
            .as_array()
            .ok_or_else(|| self.wrong_type("a list"))?;
        Ok(items
            .iter()
            .enumerate()
            .map(|(i, value)| At {
                value,
                path: format!("{}[{i}]", self.path),
            })
            .collect())
    }

    /// An optional child string.
    pub fn opt_str(&self, key: &str) -> FResult<Option<&'a str>> {
        self.get(key).map(|a| a.str()).transpose()
    }

    /// An optional child list (absent: empty).
    pub fn opt_items(&self, key: &str) -> FResult<Vec<At<'a>>> {
        Ok(match self.get(key) {
            Some(a) => a.items()?,
            None => Vec::new(),
        })
    }
}

impl At<'_> {
    fn wrong_type(&self, expected: &str) -> FieldError {
        let got = match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "a list",
            Value::Object(_) => "an object",
        };
        invalid(&self.path, format_args!("expected {expected}, found {got}"))
    }
}

/// `metadata.name` and `metadata.namespace` (default `default`), checked.
pub(crate) fn read_meta(root: &At<'_>) -> FResult<(String, String)> {
    let meta = metadata(root)?;
    let name = read_name(&meta)?;
    let namespace = match meta.opt_str("namespace")? {
        None | Some("") => "default",
        Some(ns) if valid_segment(ns) => ns,
        Some(ns) => {
            return Err(invalid(
                "metadata.namespace",
                format_args!("{ns:?} is not a valid namespace"),
            ))
        }
    };
    Ok((namespace.to_owned(), name))
}

/// `metadata.name` of a cluster-scoped object, which has no (or an empty)
/// `metadata.namespace`.
pub(crate) fn read_cluster_meta(root: &At<'_>, kind: Kind) -> FResult<String> {
    let meta = metadata(root)?;
    let name = read_name(&meta)?;
    match meta.opt_str("namespace")? {
        None | Some("") => Ok(name),
        Some(ns) => Err(invalid(
            "metadata.namespace",
            format_args!("a {kind} is cluster-scoped; {ns:?} must be empty"),
        )),
    }
}

fn metadata<'a>(root: &At<'a>) -> FResult<At<'a>> {
    let meta = root
        .get("metadata")
        .ok_or_else(|| invalid("metadata", "is missing"))?;
    meta.object()?;
    Ok(meta)
}

fn read_name(meta: &At<'_>) -> FResult<String> {
    let name = match meta.opt_str("name")? {
        Some(n) => n,
        None if meta.get("generateName").is_some() => {
            return Err(invalid(
                "metadata.name",
                "is missing (generateName needs an API server to pick the name)",
            ))
        }
        None => return Err(invalid("metadata.name", "is missing")),
    };
    if !valid_segment(name) {
        return Err(invalid(
            "metadata.name",
            format_args!("{name:?} is not a valid name (lower-case letters, digits, '-' and '.')"),
        ));
    }
    Ok(name.to_owned())
}

/// `apiVersion` must be given (kind_of let a missing one through).
pub(crate) fn require_api_version(root: &At<'_>, kind: Kind) -> FResult<()> {
    match root.opt_str("apiVersion")? {
        Some(v) if v == kind.api_version() => Ok(()),
        Some(v) => Err(invalid(
            "apiVersion",
            format_args!("{v:?} is not {:?}", kind.api_version()),
        )),
        None => Err(invalid(
            "apiVersion",
            format_args!("is missing (expected {:?})", kind.api_version()),
        )),
    }
}

/// A label value of `metadata.labels`, if present.
pub(crate) fn label<'a>(root: &At<'a>, key: &str) -> FResult<Option<&'a str>> {
    match root.get("metadata").and_then(|m| m.get("labels")) {
        Some(labels) => {
            labels.object()?;
            labels.opt_str(key)
        }
        None => Ok(None),
    }
}

/// Whether `s` is a DNS label (a port name): at most 63 lower-case
/// alphanumerics or `-`, starting and ending alphanumeric.
pub(crate) fn dns_label(s: &str) -> bool {
    let ok = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|c| ok(c) || c == b'-')
        && s.bytes().next().is_some_and(ok)
        && s.bytes().last().is_some_and(ok)
}

/// A protocol field that may be SCTP: absent ⇒ TCP; `None` for SCTP
/// (valid, but not one twill handles: the caller refuses or drops it).
pub(crate) fn read_protocol_or_sctp(parent: &At<'_>) -> FResult<Option<Protocol>> {
    match parent.opt_str("protocol")? {
        None | Some("TCP") => Ok(Some(Protocol::Tcp)),
        Some("UDP") => Ok(Some(Protocol::Udp)),
        Some("SCTP") => Ok(None),
        Some(p) => Err(invalid(
            &parent.join("protocol"),
            format_args!("{p:?} is not a protocol (TCP, UDP or SCTP)"),
        )),
    }
}

/// Whether `s` is an IANA service name (a named port:
/// `validation.IsValidPortName`): at most 15 lower-case alphanumerics or
/// `-`, at least one letter, no `-` at either end nor two in a row.
pub(crate) fn iana_svc_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && s.bytes().any(|c| c.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

/// A protocol field: absent ⇒ TCP, SCTP refused.
pub(crate) fn read_protocol(parent: &At<'_>) -> FResult<Protocol> {
    let field = parent.join("protocol");
    match parent.opt_str("protocol")? {
        None | Some("TCP") => Ok(Protocol::Tcp),
        Some("UDP") => Ok(Protocol::Udp),
        Some("SCTP") => Err(unsupported(
            &field,
            "SCTP is not supported (twill balances TCP and UDP)",
        )),
        Some(p) => Err(invalid(
            &field,
            format_args!("{p:?} is not a protocol (TCP, UDP or SCTP)"),
        )),
    }
}
