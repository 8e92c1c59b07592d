//! The embedded controller's lease table: sans-IO.
//!
//! A [`Registry`] holds the cluster's [`NetConf`], the live leases, a
//! revision counter and a bounded log of the latest changes, and applies
//! acquire / renew / release / expire to them. It knows no sockets, no files
//! and no clock: every call that depends on time takes `now`, and
//! [`Registry::next_expiry`] tells the caller when to call
//! [`Registry::expire`] next. The controller (`crate::controller`) wraps it
//! with HTTP, persistence and an expiry timer; the tests drive it with
//! explicit time.
//!
//! Revisions: every change (a lease added or changed, a lease removed) adds
//! one to the revision and is logged as a [`WatchEvent`] carrying the new
//! revision, so that [`Registry::events_after`] can hand a watcher exactly
//! the changes it missed. The log keeps the last `log_capacity` changes
//! (default [`DEFAULT_LOG_CAPACITY`]); older history is compacted, and a
//! watcher asking for it gets [`StoreError::Compacted`] and re-lists. A
//! revision *above* the current one (a watcher that saw a future this
//! registry never had: its state file was replaced or lost) is answered the
//! same way, since re-listing is the only safe answer; treating it as
//! "nothing yet" would silently skip the changes up to that revision.
//!
//! Expiry: a lease is live until `now >= expiration`. Every mutating call
//! first expires what is due at its `now`, so a subnet is re-issued only
//! after its previous lease expired (or was released), never before, however
//! late the caller's timer fires. [`Registry::list`] does not expire: it
//! shows the table as of the last mutating call.
//!
//! Cluster objects ([`crate::objects`]) live in the same registry and the
//! same revision space: a put or a delete of an object adds one to the one
//! revision, so the state file keeps one number and a lease watcher and an
//! object watcher agree on what a revision means. Object changes have their
//! own bounded log ([`Registry::object_events_after`]): its revisions have
//! gaps (the lease changes between them), so it remembers the revision up
//! to which it is complete instead of deriving it from its first entry. A
//! put of the value already stored changes nothing (no revision, no event);
//! the table holds at most [`Registry::with_max_objects`] objects.
//!
//! Durable state: [`Registry::to_json`] writes the config, the revision,
//! the leases and the objects (not the logs); [`Registry::from_json`] reads
//! them back with empty logs, so after a restart the revision carries on
//! from where it was and a watch from before the restart is
//! [`StoreError::Compacted`]. A state file without objects (written before
//! they existed) reads as one with none.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::lease::LeaseAttrs;
use crate::netconf::NetConf;
use crate::objects::{ObjectChange, ObjectEvent, ObjectKey, ObjectList, StoredObject};
use crate::store::{
    choose_subnet, AcquireRequest, Lease, LeaseEvent, Snapshot, StoreError, WatchEvent,
};

/// How many changes the log keeps for resuming watches, by default.
pub const DEFAULT_LOG_CAPACITY: usize = 10_000;

/// How many cluster objects a registry holds at most, by default.
pub const DEFAULT_MAX_OBJECTS: usize = 20_000;

/// The longest time to live a lease gets (ten years); longer requests are
/// cut to it, which keeps every expiration far from overflowing a
/// [`SystemTime`].
pub const MAX_TTL_SECS: u64 = 10 * 365 * 24 * 3600;

/// The version of the state document [`Registry::to_json`] writes.
const STATE_VERSION: u32 = 1;

/// A state document that cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// Not JSON, or not the state document's shape (serde's message names
    /// the field, line and column).
    #[error("controller state: {0}")]
    Json(serde_json::Error),
    /// A document written by a newer twill.
    #[error(
        "controller state: version {0} is not supported (this twill reads version {STATE_VERSION})"
    )]
    Version(u32),
    /// Two leases of one subnet.
    #[error("controller state: subnet {0} is leased twice")]
    DuplicateLease(Ipv4Net),
    /// Two objects with one key.
    #[error("controller state: object {0} is stored twice")]
    DuplicateObject(ObjectKey),
}

/// The durable part of a [`Registry`], as stored.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateDoc {
    version: u32,
    config: NetConf,
    revision: u64,
    leases: Vec<Lease>,
    /// Absent in state files written before objects were stored.
    #[serde(default)]
    objects: Vec<StoredObject>,
}

/// The lease table of one controller. See the module docs.
#[derive(Debug, Clone)]
pub struct Registry {
    conf: NetConf,
    revision: u64,
    leases: BTreeMap<Ipv4Net, Lease>,
    /// (expiration, subnet) of every lease: the next to expire first.
    by_expiry: BTreeSet<(u64, Ipv4Net)>,
    log: EventLog<WatchEvent>,
    objects: BTreeMap<ObjectKey, StoredObject>,
    object_log: EventLog<ObjectEvent>,
    max_objects: usize,
}

impl Registry {
    /// An empty table at revision 0.
    pub fn new(conf: NetConf) -> Registry {
        Registry {
            conf,
            revision: 0,
            leases: BTreeMap::new(),
            by_expiry: BTreeSet::new(),
            log: EventLog::new(0, DEFAULT_LOG_CAPACITY),
            objects: BTreeMap::new(),
            object_log: EventLog::new(0, DEFAULT_LOG_CAPACITY),
            max_objects: DEFAULT_MAX_OBJECTS,
        }
    }

    /// Keeps the last `capacity` changes (at least one) for resuming
    /// watches instead of [`DEFAULT_LOG_CAPACITY`].
    pub fn with_log_capacity(mut self, capacity: usize) -> Registry {
        self.log.set_capacity(capacity);
        self.object_log.set_capacity(capacity);
        self
    }

    /// Holds at most `max` cluster objects (a put of a new one beyond that
    /// fails with [`StoreError::TooManyObjects`]) instead of
    /// [`DEFAULT_MAX_OBJECTS`]. Objects already stored are kept.
    pub fn with_max_objects(mut self, max: usize) -> Registry {
        self.max_objects = max;
        self
    }

    /// The network config.
    pub fn config(&self) -> &NetConf {
        &self.conf
    }

    /// The revision of the last change (0 before the first).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The lease of `subnet`, if it is in the table.
    pub fn get(&self, subnet: &Ipv4Net) -> Option<&Lease> {
        self.leases.get(subnet)
    }

    /// How many leases the table holds.
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// Whether the table holds no lease.
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// Acquires a lease for `req.attrs.public_ip` as [`crate::LeaseStore::acquire`]
    /// describes (the subnet is chosen by [`choose_subnet`]), expiring
    /// what is due at `now` first. The lease runs `req.ttl_secs` (at least
    /// one second, at most [`MAX_TTL_SECS`]) from `now`.
    pub fn acquire(&mut self, req: &AcquireRequest, now: SystemTime) -> Result<Lease, StoreError> {
        self.expire(now);
        let leased: Vec<(Ipv4Net, Ipv4Addr)> = self
            .leases
            .values()
            .map(|l| (l.subnet, l.attrs.public_ip))
            .collect();
        let subnet =
            choose_subnet(&self.conf, &leased, req.attrs.public_ip, req.previous)?.subnet();
        let lease = Lease {
            subnet,
            attrs: req.attrs,
            expiration: expiration(now, req.ttl_secs),
        };
        self.put(lease.clone());
        Ok(lease)
    }

    /// Extends the lease of `subnet` held by `public_ip` to `ttl_secs` from
    /// `now` (clamped as in [`Registry::acquire`]) and, when `attrs` are
    /// given, replaces its value with them (as flannel's renewal rewrites
    /// the lease). Fails with [`StoreError::LeaseLost`] when the subnet is
    /// not leased to `public_ip` at `now`, or when `attrs` carry another
    /// public IP (a renewal cannot move a lease to another node).
    pub fn renew(
        &mut self,
        subnet: Ipv4Net,
        public_ip: Ipv4Addr,
        attrs: Option<LeaseAttrs>,
        ttl_secs: u64,
        now: SystemTime,
    ) -> Result<Lease, StoreError> {
        self.expire(now);
        let lost = || StoreError::LeaseLost { subnet };
        let old = self.leases.get(&subnet).ok_or_else(lost)?;
        if old.attrs.public_ip != public_ip || attrs.is_some_and(|a| a.public_ip != public_ip) {
            return Err(lost());
        }
        let lease = Lease {
            subnet,
            attrs: attrs.unwrap_or(old.attrs),
            expiration: expiration(now, ttl_secs),
        };
        self.put(lease.clone());
        Ok(lease)
    }

    /// Removes the lease of `subnet` if `public_ip` holds it at `now`;
    /// returns whether it did. A lease that is gone, or held by another
    /// node, is left alone: releasing is idempotent.
    pub fn release(&mut self, subnet: Ipv4Net, public_ip: Ipv4Addr, now: SystemTime) -> bool {
        self.expire(now);
        match self.leases.get(&subnet) {
            Some(l) if l.attrs.public_ip == public_ip => {
                self.remove(subnet);
                true
            }
            _ => false,
        }
    }

    /// Every lease in subnet order, at the current revision.
    pub fn list(&self) -> Snapshot {
        Snapshot {
            revision: self.revision,
            leases: self.leases.values().cloned().collect(),
        }
    }

    /// The oldest revision a watch can start from: changes after it are
    /// all in the log.
    pub fn oldest_revision(&self) -> u64 {
        self.log.floor
    }

    /// Every change with a revision above `after`, in order. Fails with
    /// [`StoreError::Compacted`] when some of them left the log, and when
    /// `after` is above the current revision (see the module docs).
    pub fn events_after(&self, after: u64) -> Result<Vec<WatchEvent>, StoreError> {
        self.log.after(after, self.revision)
    }

    /// Removes every lease that has expired at `now` (in order of
    /// expiration), logging a [`LeaseEvent::Removed`] for each; returns how
    /// many.
    pub fn expire(&mut self, now: SystemTime) -> usize {
        let now = crate::store::unix_secs(now);
        let mut n = 0;
        while let Some(&(exp, subnet)) = self.by_expiry.first() {
            // Expired when now >= expiration (whole seconds: floor(now)
            // compares the same as now itself).
            if exp > now {
                break;
            }
            self.remove(subnet);
            n += 1;
        }
        n
    }

    /// When the next lease expires, if any: call [`Registry::expire`] then.
    pub fn next_expiry(&self) -> Option<SystemTime> {
        self.by_expiry
            .first()
            .map(|&(exp, _)| UNIX_EPOCH + Duration::from_secs(exp))
    }

    /// Replaces the network config. Leases the new config does not allow
    /// (outside its SubnetMin..=SubnetMax or of another length) are removed,
    /// each with a [`LeaseEvent::Removed`]; returns how many.
    pub fn replace_config(&mut self, conf: NetConf) -> usize {
        self.conf = conf;
        let gone: Vec<Ipv4Net> = self
            .leases
            .keys()
            .filter(|s| !conf.contains_subnet(s))
            .copied()
            .collect();
        for s in &gone {
            self.remove(*s);
        }
        gone.len()
    }

    /// The durable state (config, revision, leases, objects; not the logs)
    /// as JSON.
    pub fn to_json(&self) -> Result<Vec<u8>, StateError> {
        #[derive(Serialize)]
        struct Doc<'a> {
            version: u32,
            config: &'a NetConf,
            revision: u64,
            leases: Vec<&'a Lease>,
            objects: Vec<&'a StoredObject>,
        }
        let doc = Doc {
            version: STATE_VERSION,
            config: &self.conf,
            revision: self.revision,
            leases: self.leases.values().collect(),
            objects: self.objects.values().collect(),
        };
        let mut out = serde_json::to_vec_pretty(&doc).map_err(StateError::Json)?;
        out.push(b'\n');
        Ok(out)
    }

    /// Reads the durable state written by [`Registry::to_json`], with
    /// empty logs (a state without objects has none). Leases are kept as stored, expired or not: call
    /// [`Registry::expire`] next.
    pub fn from_json(bytes: &[u8]) -> Result<Registry, StateError> {
        let doc: StateDoc = serde_json::from_slice(bytes).map_err(StateError::Json)?;
        if doc.version != STATE_VERSION {
            return Err(StateError::Version(doc.version));
        }
        let mut reg = Registry::new(doc.config);
        reg.revision = doc.revision;
        reg.log.floor = doc.revision;
        reg.object_log.floor = doc.revision;
        for obj in doc.objects {
            if reg.objects.contains_key(&obj.key) {
                return Err(StateError::DuplicateObject(obj.key));
            }
            reg.objects.insert(obj.key.clone(), obj);
        }
        for mut lease in doc.leases {
            if reg.leases.contains_key(&lease.subnet) {
                return Err(StateError::DuplicateLease(lease.subnet));
            }
            lease.expiration = lease.expiration.min(max_expiration());
            reg.by_expiry.insert((lease.expiration, lease.subnet));
            reg.leases.insert(lease.subnet, lease);
        }
        Ok(reg)
    }

    /// How many cluster objects the table holds.
    pub fn object_count(&self) -> usize {
        self.objects.len()
    }

    /// The object stored under `key`.
    pub fn get_object(&self, key: &ObjectKey) -> Option<&StoredObject> {
        self.objects.get(key)
    }

    /// Every object in key order, at the current revision.
    pub fn list_objects(&self) -> ObjectList {
        ObjectList {
            revision: self.revision,
            objects: self.objects.values().cloned().collect(),
        }
    }

    /// Stores `object` under `key` after [`crate::k8s::check_stored`]
    /// ([`StoreError::InvalidObject`]) and returns the revision of the
    /// change. The value already stored changes nothing: its revision is
    /// returned. A new key beyond the limit fails with
    /// [`StoreError::TooManyObjects`].
    pub fn put_object(
        &mut self,
        key: ObjectKey,
        object: serde_json::Value,
    ) -> Result<u64, StoreError> {
        crate::k8s::check_stored(&key, &object).map_err(StoreError::InvalidObject)?;
        match self.objects.get(&key) {
            Some(old) if old.object == object => return Ok(old.revision),
            Some(_) => {}
            None if self.objects.len() >= self.max_objects => {
                return Err(StoreError::TooManyObjects {
                    limit: u64::try_from(self.max_objects).unwrap_or(u64::MAX),
                })
            }
            None => {}
        }
        self.revision += 1;
        let stored = StoredObject {
            key: key.clone(),
            revision: self.revision,
            object,
        };
        self.objects.insert(key, stored.clone());
        self.record_object(ObjectChange::Put { object: stored });
        Ok(self.revision)
    }

    /// Deletes the object under `key`; whether there was one.
    pub fn delete_object(&mut self, key: &ObjectKey) -> bool {
        if self.objects.remove(key).is_none() {
            return false;
        }
        self.revision += 1;
        self.record_object(ObjectChange::Deleted { key: key.clone() });
        true
    }

    /// The oldest revision an object watch can start from: every object
    /// change after it is in the object log.
    pub fn oldest_object_revision(&self) -> u64 {
        self.object_log.floor
    }

    /// Every object change with a revision above `after`, in order. Fails
    /// with [`StoreError::Compacted`] when some of them left the object
    /// log, and when `after` is above the current revision.
    pub fn object_events_after(&self, after: u64) -> Result<Vec<ObjectEvent>, StoreError> {
        self.object_log.after(after, self.revision)
    }

    /// Logs an object change made at the current revision.
    fn record_object(&mut self, change: ObjectChange) {
        self.object_log.push(ObjectEvent {
            revision: self.revision,
            change,
        });
    }

    /// Inserts or replaces a lease, logging the change (none if nothing
    /// changed).
    fn put(&mut self, lease: Lease) {
        if let Some(old) = self.leases.get(&lease.subnet) {
            if *old == lease {
                return;
            }
            self.by_expiry.remove(&(old.expiration, old.subnet));
        }
        self.by_expiry.insert((lease.expiration, lease.subnet));
        self.leases.insert(lease.subnet, lease.clone());
        self.record(LeaseEvent::Added { lease });
    }

    /// Removes a lease, logging the change.
    fn remove(&mut self, subnet: Ipv4Net) {
        if let Some(old) = self.leases.remove(&subnet) {
            self.by_expiry.remove(&(old.expiration, subnet));
            self.record(LeaseEvent::Removed { subnet });
        }
    }

    fn record(&mut self, event: LeaseEvent) {
        self.revision += 1;
        self.log.push(WatchEvent {
            revision: self.revision,
            event,
        });
    }
}

/// A change that carries the revision the registry gave it.
pub(crate) trait Revisioned {
    /// The registry's revision after the change.
    fn revision(&self) -> u64;
}

impl Revisioned for WatchEvent {
    fn revision(&self) -> u64 {
        self.revision
    }
}

impl Revisioned for ObjectEvent {
    fn revision(&self) -> u64 {
        self.revision
    }
}

/// A bounded log of the latest changes of one kind, in revision order.
/// Its revisions may have gaps (changes of the other kind share the
/// revision space), so it keeps the revision up to which history is gone
/// (`floor`) rather than deriving it from its first entry.
#[derive(Debug, Clone)]
struct EventLog<E> {
    events: VecDeque<E>,
    /// Every change of this kind after this revision is in `events`.
    floor: u64,
    capacity: usize,
}

impl<E: Revisioned + Clone> EventLog<E> {
    fn new(floor: u64, capacity: usize) -> EventLog<E> {
        EventLog {
            events: VecDeque::new(),
            floor,
            capacity: capacity.max(1),
        }
    }

    fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
        self.trim();
    }

    fn push(&mut self, e: E) {
        self.events.push_back(e);
        self.trim();
    }

    fn trim(&mut self) {
        while self.events.len() > self.capacity {
            if let Some(e) = self.events.pop_front() {
                self.floor = e.revision();
            }
        }
    }

    /// The changes above `after`; Compacted when some left the log or
    /// `after` is above `current`.
    fn after(&self, after: u64, current: u64) -> Result<Vec<E>, StoreError> {
        if after < self.floor || after > current {
            return Err(StoreError::Compacted {
                requested: after,
                oldest: self.floor,
            });
        }
        let skip = self.events.partition_point(|e| e.revision() <= after);
        Ok(self.events.iter().skip(skip).cloned().collect())
    }
}

/// The expiration of a lease granted at `now` for `ttl_secs`: `now`
/// rounded up to the whole second, so that the lease lives at least its TTL.
fn expiration(now: SystemTime, ttl_secs: u64) -> u64 {
    let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.saturating_add(ttl_secs.clamp(1, MAX_TTL_SECS))
        .min(max_expiration())
}

/// No expiration goes beyond this (about the year 4000): `UNIX_EPOCH + it` never
/// overflows a [`SystemTime`].
fn max_expiration() -> u64 {
    u64::from(u32::MAX) * 15
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
