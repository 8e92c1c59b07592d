//! Kubernetes objects as `kubectl get -o json|yaml` prints them: the
//! Service and EndpointSlice shapes twill reads ([`Service`],
//! [`EndpointSlice`]), manifests of many documents ([`parse_manifests`]),
//! what a Service resolves to for the dataplane ([`resolve()`]), and a
//! directory of manifests as an [`ObjectStore`](crate::objects::ObjectStore)
//! ([`DirStore`]).
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
//! Endpoint conditions are defaulted as the API reference says
//! (k8s.io/api discovery/v1/types.go, `EndpointConditions`): `ready`
//! absent ⇒ true, `serving` absent ⇒ true (not "same as ready": the
//! reference says true, and kube-proxy's endpointslicecache.go reads it
//! so), `terminating` absent ⇒ false.

mod dirstore;
mod endpointslice;
mod manifest;
mod resolve;
mod service;

use std::fmt;

use serde_json::{Map, Value};

use crate::objects::{valid_segment, Kind, ObjectKey};

pub use dirstore::DirStore;
pub use endpointslice::{Endpoint, EndpointPort, EndpointSlice, SERVICE_NAME_LABEL};
pub use manifest::{parse_manifests, Manifests};
pub use resolve::{resolve, Protocol, ResolvedEndpoint, ResolvedPort};
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
    #[error("{object}: not a kind twill reads (it reads v1 Service and discovery.k8s.io/v1 EndpointSlice)")]
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
            None => Err(K8sError::OtherKind {
                object: describe(&value),
            }),
        }
    }

    /// Its key in the object store.
    pub fn key(&self) -> ObjectKey {
        let (kind, namespace, name) = match self {
            Object::Service(s) => (Kind::Service, s.namespace(), s.name()),
            Object::EndpointSlice(e) => (Kind::EndpointSlice, e.namespace(), e.name()),
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
        }
    }

    /// [`Object::value`], taken.
    pub fn into_value(self) -> Value {
        match self {
            Object::Service(s) => s.into_value(),
            Object::EndpointSlice(e) => e.into_value(),
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
/// twill's in another group (`serving.knative.dev/v1 Service default/web`).
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
    if ns.is_empty() && kind_of(value).is_some() {
        ns = "default".into();
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
    let meta = root
        .get("metadata")
        .ok_or_else(|| invalid("metadata", "is missing"))?;
    meta.object()?;
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
    Ok((namespace.to_owned(), name.to_owned()))
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
