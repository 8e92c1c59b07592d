//! `v1 Namespace`: its name and labels, which NetworkPolicies'
//! `namespaceSelector`s match. Cluster-scoped: its key has no namespace.

use serde_json::Value;

use super::selector::{read_labels, Labels};
use super::{
    describe, dns_label, invalid, read_cluster_meta, require_api_version, At, FResult, K8sError,
};
use crate::objects::Kind;

/// The label the API server sets on every Namespace to its name
/// (`kubernetes.io/metadata.name`, `v1.LabelMetadataName`), whatever the
/// manifest says: a `namespaceSelector` can always select by name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A checked `v1 Namespace`.
#[derive(Debug, Clone, PartialEq)]
pub struct Namespace {
    value: Value,
    name: String,
    labels: Labels,
}

/// The labels of a namespace that has no Namespace object (one that pods
/// name but nobody stored): only [`NAMESPACE_NAME_LABEL`], as the API
/// server would give it.
pub fn default_labels(name: &str) -> Labels {
    Labels::from([(NAMESPACE_NAME_LABEL.to_owned(), name.to_owned())])
}

impl Namespace {
    /// Reads and checks a Namespace: `metadata.name` a DNS label (as the
    /// API server's `ValidateNamespaceName`), no `metadata.namespace`,
    /// valid labels.
    pub fn from_value(value: Value) -> Result<Namespace, K8sError> {
        let root = At::root(&value);
        let read = || -> FResult<_> {
            root.object()?;
            require_api_version(&root, Kind::Namespace)?;
            let name = read_cluster_meta(&root, Kind::Namespace)?;
            if !dns_label(&name) {
                return Err(invalid(
                    "metadata.name",
                    format_args!(
                        "{name:?} is not a valid namespace name (a DNS label: at most 63 \
                         lower-case letters, digits and '-')"
                    ),
                ));
            }
            let mut labels = read_labels(&root)?;
            labels.insert(NAMESPACE_NAME_LABEL.to_owned(), name.clone());
            Ok((name, labels))
        };
        match read() {
            Ok((name, labels)) => Ok(Namespace {
                value,
                name,
                labels,
            }),
            Err(e) => Err(e.into_k8s(describe(&value))),
        }
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `metadata.labels`, with [`NAMESPACE_NAME_LABEL`] set to the name
    /// (also when the manifest lacks it or gives another value: the API
    /// server overwrites it).
    pub fn labels(&self) -> &Labels {
        &self.labels
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

#[cfg(test)]
#[path = "namespace_tests.rs"]
mod tests;
