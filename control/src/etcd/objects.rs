//! Cluster objects in etcd: the [`ObjectStore`] of an [`EtcdStore`].
//!
//! # Layout
//!
//! `<objects-prefix>/<resource>/<namespace>/<name>` (e.g.
//! `/twill/objects/services/default/web`; `<objects-prefix>/<resource>/<name>`
//! for a cluster-scoped kind, `/twill/objects/namespaces/prod`), the value
//! the object's JSON as given, without an etcd lease. The prefix is
//! [`EtcdOptions::objects_prefix`](super::EtcdOptions::objects_prefix)
//! ([`DEFAULT_OBJECTS_PREFIX`](crate::objects::DEFAULT_OBJECTS_PREFIX) by
//! default), beside flannel's `/coreos.com/network`.
//!
//! # Operations
//!
//! - list: one range read over the prefix; the list's revision is the
//!   response header's, an object's its key's `mod_revision`.
//! - watch: an etcd watch over the prefix from `after + 1`, with the lease
//!   watch's guarantees (`watch.rs`): in order, each once, a compacted start
//!   is [`StoreError::Compacted`].
//! - put: checked with [`crate::k8s::check_stored`] ([`StoreError::InvalidObject`]),
//!   then one etcd put; the revision is the response header's. Unlike the
//!   controller, etcd gives a put of an unchanged value a new revision (and
//!   watchers an event).
//! - delete: one etcd delete; whether it deleted a key.
//!
//! Keys under the prefix that name no object (another resource, a bad
//! name, a deeper path) are skipped with a warning. So are values that are
//! not JSON or do not match their key (written by hand): a list leaves them
//! out and a watch reports them as deleted, so that a table built from a
//! list and then the watch always equals a later list.

use std::sync::Arc;

use etcd_client::{GetOptions, KeyValue};
use futures::future::BoxFuture;
use tracing::warn;

use super::conn::{Keys, Shared};
use super::watch::{self, Feed};
use super::EtcdStore;
use crate::objects::{
    validate_object, ObjectChange, ObjectEvent, ObjectKey, ObjectList, ObjectStore, ObjectWatch,
    StoredObject,
};
use crate::store::StoreError;

/// The feed of object changes.
pub(super) struct Objects;

/// A key and value read under the objects prefix: the key it names and, if
/// the value is a valid object of that key, the object (both logged when
/// not). `None` for a key that names no object.
fn decode(keys: &Keys, kv: &KeyValue) -> Option<(ObjectKey, Option<serde_json::Value>)> {
    let raw = String::from_utf8_lossy(kv.key());
    let key = match keys.parse_object(kv.key()) {
        Ok(k) => k,
        Err(e) => {
            warn!(key = %raw, error = %e, "etcd: ignoring a key that names no object");
            return None;
        }
    };
    let object = match serde_json::from_slice::<serde_json::Value>(kv.value()) {
        Ok(v) => match validate_object(&key, &v) {
            Ok(()) => Some(v),
            Err(e) => {
                warn!(key = %raw, error = %e, "etcd: ignoring an object that does not match its key");
                None
            }
        },
        Err(e) => {
            warn!(key = %raw, error = %e, "etcd: ignoring a value that is not JSON");
            None
        }
    };
    Some((key, object))
}

impl Feed for Objects {
    type Event = ObjectEvent;

    fn prefix(keys: &Keys) -> &str {
        &keys.objects
    }

    fn revision(event: &ObjectEvent) -> u64 {
        event.revision
    }

    fn decode<'a>(
        shared: &'a Shared,
        put: bool,
        kv: &'a KeyValue,
        revision: u64,
    ) -> BoxFuture<'a, Result<Option<ObjectEvent>, StoreError>> {
        let change = if put {
            decode(&shared.keys, kv).map(|(key, object)| match object {
                Some(object) => ObjectChange::Put {
                    object: StoredObject {
                        key,
                        revision,
                        object,
                    },
                },
                // Not in a list either (see the module docs).
                None => ObjectChange::Deleted { key },
            })
        } else {
            match shared.keys.parse_object(kv.key()) {
                Ok(key) => Some(ObjectChange::Deleted { key }),
                Err(e) => {
                    let raw = String::from_utf8_lossy(kv.key());
                    warn!(key = %raw, error = %e, "etcd watch: ignoring a key that names no object");
                    None
                }
            }
        };
        Box::pin(std::future::ready(Ok(
            change.map(|change| ObjectEvent { revision, change })
        )))
    }
}

impl EtcdStore {
    async fn list_objects(&self) -> Result<ObjectList, StoreError> {
        let prefix = self.shared.keys.objects.as_str();
        let mut resp = self
            .shared
            .call("list objects", |c| async move {
                c.kv_client()
                    .get(prefix, Some(GetOptions::new().with_prefix()))
                    .await
            })
            .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let mut objects: Vec<StoredObject> = resp
            .take_kvs()
            .iter()
            .filter_map(|kv| {
                let (key, object) = decode(&self.shared.keys, kv)?;
                Some(StoredObject {
                    key,
                    revision: u64::try_from(kv.mod_revision()).unwrap_or(0),
                    object: object?,
                })
            })
            .collect();
        // etcd's order is the keys' bytes; ours is ObjectKey's.
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(ObjectList {
            revision: u64::try_from(revision).unwrap_or(0),
            objects,
        })
    }

    async fn put_object(
        &self,
        key: ObjectKey,
        object: serde_json::Value,
    ) -> Result<u64, StoreError> {
        crate::k8s::check_stored(&key, &object).map_err(StoreError::InvalidObject)?;
        let value = serde_json::to_string(&object)
            .map_err(|e| StoreError::InvalidObject(format!("{key}: {e}")))?;
        let etcd_key = self.shared.keys.object(&key);
        let (k, v) = (etcd_key.as_str(), value.as_str());
        let resp = self
            .shared
            .call("put object", |c| async move {
                c.kv_client().put(k, v, None).await
            })
            .await?;
        revision_of(resp.header())
    }

    async fn delete_object(&self, key: ObjectKey) -> Result<bool, StoreError> {
        let etcd_key = self.shared.keys.object(&key);
        let k = etcd_key.as_str();
        let resp = self
            .shared
            .call("delete object", |c| async move {
                c.kv_client().delete(k, None).await
            })
            .await?;
        Ok(resp.deleted() > 0)
    }
}

/// The revision of an etcd response's header.
fn revision_of(header: Option<&etcd_client::ResponseHeader>) -> Result<u64, StoreError> {
    header
        .and_then(|h| u64::try_from(h.revision()).ok())
        .ok_or_else(|| StoreError::Protocol("etcd answered without a revision".into()))
}

impl ObjectStore for EtcdStore {
    fn list(&self) -> BoxFuture<'_, Result<ObjectList, StoreError>> {
        Box::pin(self.list_objects())
    }

    fn watch(&self, after: u64) -> BoxFuture<'_, Result<ObjectWatch, StoreError>> {
        Box::pin(watch::open::<Objects>(Arc::clone(&self.shared), after))
    }

    fn put(
        &self,
        key: ObjectKey,
        object: serde_json::Value,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(self.put_object(key, object))
    }

    fn delete(&self, key: ObjectKey) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(self.delete_object(key))
    }
}
