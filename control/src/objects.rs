//! Cluster objects in the control plane: Kubernetes objects (Services,
//! EndpointSlices, Pods, Namespaces, NetworkPolicies) and twill's own
//! PodAddresses, stored as the JSON `kubectl get -o json` prints, under one
//! key layout for every kind, and followed by the node agents with the same
//! list, then watch-by-revision as the lease table.
//!
//! Key layout (etcd and the controller alike), beside flannel's keys:
//!
//! ```text
//! <prefix>/<resource>/<namespace>/<name>      e.g. /twill/objects/services/default/web
//! <prefix>/<resource>/<name>                  e.g. /twill/objects/namespaces/prod
//! ```
//!
//! `<resource>` is the kind's plural resource name as the API server spells
//! it (`services`, `endpointslices`, `pods`, `namespaces`,
//! `networkpolicies`, `podaddresses`). Cluster-scoped kinds (Namespace)
//! have no namespace segment, and their [`ObjectKey::namespace`] is empty.
//! A value is the object's JSON, stored as given (unknown fields kept),
//! after it parsed as its kind.
//!
//! Whoever writes objects (`twill service apply`, a later watcher of a real
//! API server) writes through [`ObjectStore`]; every agent reads through
//! it. Nothing here is on the packet path.

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::store::StoreError;

/// The default key prefix of cluster objects in etcd.
pub const DEFAULT_OBJECTS_PREFIX: &str = "/twill/objects";

/// A kind of cluster object twill stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    /// `v1 Service`.
    Service,
    /// `discovery.k8s.io/v1 EndpointSlice`.
    EndpointSlice,
    /// `v1 Pod`.
    Pod,
    /// `v1 Namespace` (cluster-scoped).
    Namespace,
    /// `networking.k8s.io/v1 NetworkPolicy`.
    NetworkPolicy,
    /// `networking.twill.dev/v1 PodAddress`: twill's own, where a pod
    /// lives (written by node agents).
    PodAddress,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 6] = [
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Pod,
        Kind::Namespace,
        Kind::NetworkPolicy,
        Kind::PodAddress,
    ];

    /// The plural resource name (the key segment).
    pub const fn resource(self) -> &'static str {
        match self {
            Kind::Service => "services",
            Kind::EndpointSlice => "endpointslices",
            Kind::Pod => "pods",
            Kind::Namespace => "namespaces",
            Kind::NetworkPolicy => "networkpolicies",
            Kind::PodAddress => "podaddresses",
        }
    }

    /// The `kind` field's value.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Pod => "Pod",
            Kind::Namespace => "Namespace",
            Kind::NetworkPolicy => "NetworkPolicy",
            Kind::PodAddress => "PodAddress",
        }
    }

    /// The `apiVersion` twill reads the kind in.
    pub const fn api_version(self) -> &'static str {
        match self {
            Kind::Service | Kind::Pod | Kind::Namespace => "v1",
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            Kind::NetworkPolicy => "networking.k8s.io/v1",
            Kind::PodAddress => "networking.twill.dev/v1",
        }
    }

    /// Whether objects of this kind live in a namespace (false for
    /// cluster-scoped kinds: Namespace).
    pub const fn namespaced(self) -> bool {
        !matches!(self, Kind::Namespace)
    }

    /// The kind with this plural resource name.
    pub fn from_resource(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.resource() == s)
    }

    /// The kind with this `kind` field value.
    pub fn from_name(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which object: kind, namespace, name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectKey {
    /// Its kind.
    pub kind: Kind,
    /// `metadata.namespace` (`default` when the manifest has none); empty
    /// for a cluster-scoped kind ([`Kind::namespaced`]).
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl ObjectKey {
    /// The key below the prefix: `services/default/web`, or
    /// `namespaces/prod` for a cluster-scoped kind (whose `namespace` is
    /// not part of the path).
    pub fn path(&self) -> String {
        if self.kind.namespaced() {
            format!("{}/{}/{}", self.kind.resource(), self.namespace, self.name)
        } else {
            format!("{}/{}", self.kind.resource(), self.name)
        }
    }

    /// The key of a path made by [`ObjectKey::path`]; `None` if it is not
    /// one (three segments for a namespaced kind, two for a cluster-scoped
    /// one).
    pub fn from_path(path: &str) -> Option<ObjectKey> {
        let mut it = path.split('/');
        let kind = Kind::from_resource(it.next()?)?;
        let namespace = if kind.namespaced() {
            it.next().filter(|s| valid_segment(s))?
        } else {
            ""
        };
        let name = it.next().filter(|s| valid_segment(s))?;
        if it.next().is_some() {
            return None;
        }
        Some(ObjectKey {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.kind.namespaced() {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        } else {
            write!(f, "{} {}", self.kind, self.name)
        }
    }
}

/// Whether `s` may be a namespace or a name in a key: what Kubernetes
/// allows (a DNS subdomain: lower-case alphanumerics, `-` and `.`, at most
/// 253 characters, starting and ending alphanumeric).
pub fn valid_segment(s: &str) -> bool {
    let ok = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !s.is_empty()
        && s.len() <= 253
        && s.bytes().all(|c| ok(c) || c == b'-' || c == b'.')
        && s.bytes().next().is_some_and(ok)
        && s.bytes().last().is_some_and(ok)
}

/// The checks every store makes before it stores `object` under `key`:
/// the value is a JSON object whose `kind` is the key's kind and whose
/// `metadata.name` and `metadata.namespace` (absent: `default`) are the
/// key's; for a cluster-scoped kind, the key's namespace is empty and the
/// object has no (or an empty) `metadata.namespace`. An error message (for
/// people) otherwise.
///
/// This is the hook for the stores' own validation; the full Kubernetes
/// validation of each kind happens in the writer and in the reader.
pub fn validate_object(key: &ObjectKey, object: &serde_json::Value) -> Result<(), String> {
    let obj = object
        .as_object()
        .ok_or_else(|| format!("{key}: the value is not a JSON object"))?;
    match obj.get("kind").and_then(serde_json::Value::as_str) {
        Some(k) if k == key.kind.name() => {}
        Some(k) => return Err(format!("{key}: kind {k:?} is not {:?}", key.kind.name())),
        None => return Err(format!("{key}: no kind")),
    }
    let meta = obj
        .get("metadata")
        .and_then(serde_json::Value::as_object)
        .ok_or_else(|| format!("{key}: no metadata"))?;
    match meta.get("name").and_then(serde_json::Value::as_str) {
        Some(n) if n == key.name => {}
        Some(n) => return Err(format!("{key}: metadata.name {n:?} is not {:?}", key.name)),
        None => return Err(format!("{key}: no metadata.name")),
    }
    // Absent, null or "" all mean `default`, as they do for the parser
    // (and for kubectl).
    let ns = match meta.get("namespace") {
        Some(serde_json::Value::String(ns)) if ns.is_empty() => None,
        other => other,
    };
    if !key.kind.namespaced() {
        return check_cluster_scoped(key, ns);
    }
    match ns {
        None | Some(serde_json::Value::Null) if key.namespace == "default" => Ok(()),
        Some(serde_json::Value::String(ns)) if *ns == key.namespace => Ok(()),
        None | Some(serde_json::Value::Null) => Err(format!(
            "{key}: no metadata.namespace (default) but the key's is {:?}",
            key.namespace
        )),
        Some(other) => Err(format!(
            "{key}: metadata.namespace {other} is not {:?}",
            key.namespace
        )),
    }
}

/// [`validate_object`]'s namespace check for a cluster-scoped kind: the
/// key's namespace and the object's (`""` already read as absent) are
/// both empty.
fn check_cluster_scoped(key: &ObjectKey, ns: Option<&serde_json::Value>) -> Result<(), String> {
    if !key.namespace.is_empty() {
        return Err(format!(
            "{key}: a {} is cluster-scoped, but the key has namespace {:?}",
            key.kind, key.namespace
        ));
    }
    match ns {
        None | Some(serde_json::Value::Null) => Ok(()),
        Some(other) => Err(format!(
            "{key}: a {} is cluster-scoped; metadata.namespace {other} must be empty",
            key.kind
        )),
    }
}

/// An object as stored, with the revision that last changed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredObject {
    /// Which object.
    pub key: ObjectKey,
    /// The store's revision of its last change.
    pub revision: u64,
    /// The object as `kubectl get -o json` prints it.
    pub object: serde_json::Value,
}

/// Every stored object at one revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectList {
    /// The store's revision; watch from here.
    pub revision: u64,
    /// Every object, in key order.
    pub objects: Vec<StoredObject>,
}

/// One change to the stored objects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ObjectChange {
    /// Created or replaced.
    Put {
        /// The object as it now is.
        object: StoredObject,
    },
    /// Deleted.
    Deleted {
        /// Which.
        key: ObjectKey,
    },
}

/// A change with the revision the store gave it; the same ordering rules
/// as [`crate::WatchEvent`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectEvent {
    /// The store's revision after the change.
    pub revision: u64,
    /// The change.
    #[serde(flatten)]
    pub change: ObjectChange,
}

/// A stream of object changes, ending with an error item when the
/// connection breaks.
pub type ObjectWatch = BoxStream<'static, Result<ObjectEvent, StoreError>>;

/// The cluster objects as writers and agents see them.
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// Every object, and the revision they are at.
    fn list(&self) -> BoxFuture<'_, Result<ObjectList, StoreError>>;

    /// Every change after `after`; [`StoreError::Compacted`] when that
    /// history is gone (re-list).
    fn watch(&self, after: u64) -> BoxFuture<'_, Result<ObjectWatch, StoreError>>;

    /// Creates or replaces an object; returns the revision of the change.
    fn put(
        &self,
        key: ObjectKey,
        object: serde_json::Value,
    ) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Deletes an object; whether it existed.
    fn delete(&self, key: ObjectKey) -> BoxFuture<'_, Result<bool, StoreError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_their_path() {
        let k = ObjectKey {
            kind: Kind::EndpointSlice,
            namespace: "default".into(),
            name: "web-abc12".into(),
        };
        assert_eq!(k.path(), "endpointslices/default/web-abc12");
        assert_eq!(ObjectKey::from_path(&k.path()), Some(k));
        for bad in [
            "services/default",
            "deployments/a/b",
            "services/A/b",
            "services/a/b/c",
            "services/-a/b",
            "services/a/",
        ] {
            assert_eq!(ObjectKey::from_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_object_must_match_its_key() {
        let key = ObjectKey {
            kind: Kind::Service,
            namespace: "default".into(),
            name: "web".into(),
        };
        let ok = serde_json::json!({"kind": "Service", "metadata": {"name": "web"}});
        assert_eq!(validate_object(&key, &ok), Ok(()));
        let ok = serde_json::json!({"kind": "Service", "metadata": {"name": "web", "namespace": "default"}});
        assert_eq!(validate_object(&key, &ok), Ok(()));
        for bad in [
            serde_json::json!([]),
            serde_json::json!({"metadata": {"name": "web"}}),
            serde_json::json!({"kind": "EndpointSlice", "metadata": {"name": "web"}}),
            serde_json::json!({"kind": "Service"}),
            serde_json::json!({"kind": "Service", "metadata": {"name": "db"}}),
            serde_json::json!({"kind": "Service", "metadata": {"name": "web", "namespace": "kube-system"}}),
            serde_json::json!({"kind": "Service", "metadata": {"name": "web", "namespace": 7}}),
        ] {
            assert!(validate_object(&key, &bad).is_err(), "{bad}");
        }
        let other_ns = ObjectKey {
            namespace: "prod".into(),
            ..key
        };
        assert!(validate_object(&other_ns, &ok).is_err());
    }

    /// Fuzz finding (`manifests`): the parser reads `namespace: ""` as
    /// `default`, so the stores' key check must too.
    #[test]
    fn an_empty_namespace_is_the_default_one() {
        let k = ObjectKey {
            kind: Kind::Service,
            namespace: "default".into(),
            name: "web".into(),
        };
        let v =
            serde_json::json!({"kind": "Service", "metadata": {"name": "web", "namespace": ""}});
        assert_eq!(validate_object(&k, &v), Ok(()));
        let other = ObjectKey {
            namespace: "prod".into(),
            ..k
        };
        assert!(validate_object(&other, &v).is_err());
    }

    fn namespace_key(name: &str) -> ObjectKey {
        ObjectKey {
            kind: Kind::Namespace,
            namespace: String::new(),
            name: name.into(),
        }
    }

    #[test]
    fn every_kind_reads_back_from_its_resource_and_name() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_resource(k.resource()), Some(k));
            assert_eq!(Kind::from_name(k.name()), Some(k));
        }
        assert!(!Kind::Namespace.namespaced());
        assert!(Kind::Pod.namespaced() && Kind::NetworkPolicy.namespaced());
        assert_eq!(Kind::PodAddress.api_version(), "networking.twill.dev/v1");
    }

    #[test]
    fn cluster_scoped_keys_have_two_segments() {
        let k = namespace_key("prod");
        assert_eq!(k.path(), "namespaces/prod");
        assert_eq!(k.to_string(), "Namespace prod");
        assert_eq!(ObjectKey::from_path("namespaces/prod"), Some(k));
        for bad in [
            "namespaces",
            "namespaces/",
            "namespaces/a/b",
            "namespaces/A",
        ] {
            assert_eq!(ObjectKey::from_path(bad), None, "{bad}");
        }
        let pod = ObjectKey::from_path("pods/prod/web-0").unwrap();
        assert_eq!(pod.to_string(), "Pod prod/web-0");
        assert_eq!(ObjectKey::from_path("pods/web-0"), None);
    }

    #[test]
    fn a_namespace_has_no_namespace() {
        let key = namespace_key("prod");
        for ok in [
            serde_json::json!({"kind": "Namespace", "metadata": {"name": "prod"}}),
            serde_json::json!({"kind": "Namespace", "metadata": {"name": "prod", "namespace": ""}}),
            serde_json::json!({"kind": "Namespace", "metadata": {"name": "prod", "namespace": null}}),
        ] {
            assert_eq!(validate_object(&key, &ok), Ok(()), "{ok}");
        }
        let bad = serde_json::json!({"kind": "Namespace", "metadata": {"name": "prod", "namespace": "default"}});
        assert!(validate_object(&key, &bad).is_err());
        let ok = serde_json::json!({"kind": "Namespace", "metadata": {"name": "prod"}});
        let with_ns = ObjectKey {
            namespace: "default".into(),
            ..key
        };
        assert!(validate_object(&with_ns, &ok).is_err());
    }
}
