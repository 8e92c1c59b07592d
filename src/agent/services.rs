//! Services: the agent follows the cluster objects (Services and
//! EndpointSlices) in the object store, compiles them into the switch's
//! [`ServiceTable`] and publishes it to the dataplane.
//!
//! The store is followed as the node table is: list, then watch from the
//! list's revision, re-list when the history is compacted, back off while
//! the store is unreachable (the dataplane keeps its last table meanwhile).
//! Everything that arrives together is published as one table.
//!
//! Compiling is incremental: a change to a Service or to one of its
//! EndpointSlices recompiles that Service's ports alone (their Maglev
//! tables included), and publishing clones two maps of `Arc`s. The cost of
//! a change grows with the number of service ports only by that clone, not
//! by re-evaluating every rule as kube-proxy's iptables mode does.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use control::k8s::{self, EndpointSlice, Object, Protocol, ResolvedPort, Service};
use control::objects::{Kind, ObjectChange, ObjectKey, ObjectStore, StoredObject};
use control::StoreError;
use futures::{FutureExt, StreamExt};
use vswitch::core::service::{Endpoint, Frontend, Proto, Scope, ServicePortSpec, ServiceTable};

use super::backoff::Backoff;
use super::lease_store::{open_objects, ObjectSource};
use super::lograte::{LogRate, RETRY_REPORT_INTERVAL};
use super::policy::{is_policy_kind, PolicyBook};
use super::Agent;
use crate::api::PodRef;

/// A Service's namespace and name.
type SvcName = (String, String);

/// What the node knows of the cluster's Services, and the table compiled
/// from them. Pure: no I/O, no clock.
#[derive(Debug)]
pub struct Catalog {
    node: String,
    gateway: IpAddr,
    services: BTreeMap<SvcName, Service>,
    slices: BTreeMap<ObjectKey, EndpointSlice>,
    /// The slices of each service, by the service they name.
    slices_of: BTreeMap<SvcName, BTreeSet<ObjectKey>>,
    /// The service ports each service compiled to.
    compiled: BTreeMap<SvcName, Vec<String>>,
    /// Objects in the store that do not parse, with why.
    rejected: BTreeMap<ObjectKey, String>,
    table: ServiceTable,
}

impl Catalog {
    /// An empty catalog for node `node`, whose gateway address is where
    /// NodePorts are steered to.
    pub fn new(node: &str, gateway: Ipv4Addr) -> Catalog {
        Catalog::empty(node.to_owned(), IpAddr::V4(gateway))
    }

    fn empty(node: String, gateway: IpAddr) -> Catalog {
        Catalog {
            node,
            gateway,
            services: BTreeMap::new(),
            slices: BTreeMap::new(),
            slices_of: BTreeMap::new(),
            compiled: BTreeMap::new(),
            rejected: BTreeMap::new(),
            table: ServiceTable::default(),
        }
    }

    /// The compiled table.
    pub fn table(&self) -> &ServiceTable {
        &self.table
    }

    /// Objects that were refused, with the reason.
    pub fn rejected(&self) -> &BTreeMap<ObjectKey, String> {
        &self.rejected
    }

    /// Number of Services known.
    pub fn services(&self) -> usize {
        self.services.len()
    }

    /// Replaces everything with a store's full list.
    pub fn reset(&mut self, objects: Vec<StoredObject>) {
        *self = Catalog::empty(std::mem::take(&mut self.node), self.gateway);
        for o in objects {
            self.apply(ObjectChange::Put { object: o });
        }
    }

    /// Applies one change and recompiles what it touches.
    pub fn apply(&mut self, change: ObjectChange) {
        match change {
            ObjectChange::Put { object } => match Object::from_stored(object) {
                Ok((key, o)) => {
                    self.rejected.remove(&key);
                    self.put(key, o);
                }
                Err((key, why)) => self.refuse(key, why),
            },
            ObjectChange::Deleted { key } => {
                self.rejected.remove(&key);
                self.forget(&key);
            }
        }
    }

    /// An object the store holds but that does not parse: the last good
    /// version of it stays in force (a bad edit does not take a working
    /// Service down), and the refusal is reported.
    fn refuse(&mut self, key: ObjectKey, why: String) {
        tracing::warn!(object = %key, error = %why, "refusing a stored object");
        self.rejected.insert(key, why);
    }

    fn put(&mut self, key: ObjectKey, o: Object) {
        match o {
            Object::Service(s) => {
                let name = (key.namespace.clone(), key.name.clone());
                self.services.insert(name.clone(), s.into_typed());
                self.compile(&name);
            }
            Object::EndpointSlice(s) => {
                let owner = (s.namespace().to_owned(), s.service_name().to_owned());
                let before = self.unlink_slice(&key);
                self.slices_of
                    .entry(owner.clone())
                    .or_default()
                    .insert(key.clone());
                self.slices.insert(key, s.into_typed());
                if let Some(b) = before.filter(|b| *b != owner) {
                    self.compile(&b);
                }
                self.compile(&owner);
            }
            // Not a Service's business (NetworkPolicy enforcement reads them).
            Object::Pod(_)
            | Object::Namespace(_)
            | Object::NetworkPolicy(_)
            | Object::PodAddress(_) => {}
        }
    }

    fn forget(&mut self, key: &ObjectKey) {
        match key.kind {
            Kind::Service => {
                let name = (key.namespace.clone(), key.name.clone());
                self.services.remove(&name);
                self.compile(&name);
            }
            Kind::EndpointSlice => {
                if let Some(owner) = self.unlink_slice(key) {
                    self.compile(&owner);
                }
                self.slices.remove(key);
            }
            Kind::Pod | Kind::Namespace | Kind::NetworkPolicy | Kind::PodAddress => {}
        }
    }

    /// Removes a slice from its service's set; the service it belonged to.
    fn unlink_slice(&mut self, key: &ObjectKey) -> Option<SvcName> {
        let s = self.slices.get(key)?;
        let owner = (s.namespace().to_owned(), s.service_name().to_owned());
        if let Some(set) = self.slices_of.get_mut(&owner) {
            set.remove(key);
            if set.is_empty() {
                self.slices_of.remove(&owner);
            }
        }
        Some(owner)
    }

    /// Recompiles one Service's ports (removes them if it is gone).
    fn compile(&mut self, name: &SvcName) {
        for port in self.compiled.remove(name).unwrap_or_default() {
            self.table.remove(&port);
        }
        let Some(svc) = self.services.get(name) else {
            return;
        };
        let slices: Vec<&EndpointSlice> = self
            .slices_of
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|k| self.slices.get(k))
            .collect();
        let mut names = Vec::new();
        for r in k8s::resolve(svc, &slices) {
            let spec = self.spec(r);
            names.push(spec.name.clone());
            for c in self.table.upsert(spec) {
                tracing::warn!(frontend = ?c.frontend, previous = c.previous,
                    "two services claim one frontend; the later one holds it");
            }
        }
        self.compiled.insert(name.clone(), names);
    }

    /// One resolved port as the switch balances it.
    fn spec(&self, r: ResolvedPort) -> ServicePortSpec {
        let proto = match r.protocol {
            Protocol::Tcp => Proto::Tcp,
            Protocol::Udp => Proto::Udp,
        };
        let at = |ip, port, scope| Frontend {
            ip,
            port,
            proto,
            scope,
        };
        let mut frontends: Vec<Frontend> = r
            .cluster_ips
            .iter()
            .map(|&ip| at(ip, r.port, Scope::Internal))
            .collect();
        frontends.extend(r.node_port.map(|p| at(self.gateway, p, Scope::External)));
        frontends.extend(
            r.external_ips
                .iter()
                .map(|&ip| at(ip, r.port, Scope::External)),
        );
        let endpoints = r
            .endpoints
            .iter()
            .map(|e| Endpoint {
                addr: e.addr,
                local: e.node_name.as_deref() == Some(self.node.as_str()),
                ready: e.ready,
                serving: e.serving,
                terminating: e.terminating,
            })
            .collect();
        ServicePortSpec {
            name: r.name,
            proto,
            frontends,
            endpoints,
            affinity: r.affinity_timeout,
            internal_local: r.internal_local,
            external_local: r.external_local,
        }
    }
}

/// Follows the object store and keeps the dataplane's service table.
#[derive(Debug)]
pub struct ServiceSync {
    agent: Arc<Agent>,
    store: Arc<dyn ObjectStore>,
    source: String,
    /// Failed writes of this node's objects (pod addresses), reported at
    /// most once per interval however many objects failed.
    write_failures: Mutex<LogRate>,
}

#[derive(Debug, Default)]
struct View {
    state: &'static str,
    revision: u64,
    services: usize,
    ports: usize,
    rejected: Vec<String>,
    last_error: Option<String>,
    since: u64,
    /// Milliseconds from receiving the last batch to publishing its table.
    publish_ms: f64,
    policies: usize,
    isolated_pods: usize,
    policy_ms: f64,
    rejected_policy: Vec<String>,
}

impl ServiceSync {
    /// A follower of `store` for `agent`.
    pub fn new(agent: Arc<Agent>, store: Arc<dyn ObjectStore>, source: String) -> ServiceSync {
        ServiceSync {
            agent,
            store,
            source,
            write_failures: Mutex::new(LogRate::new(RETRY_REPORT_INTERVAL)),
        }
    }

    /// Lists, then watches, until the runtime stops.
    pub async fn run(self) {
        let info = &self.agent.info;
        let mut catalog = Catalog::new(&info.name, info.gateway);
        let mut book = PolicyBook::new();
        if let Ok(net) = ipnet::Ipv4Net::new(info.subnet.addr(), info.subnet.prefix()) {
            book.set_own_subnet(net);
        }
        let mut local = self.agent.local_pods();
        let view = Mutex::new(View {
            state: "connecting",
            since: control::store::unix_secs(SystemTime::now()),
            ..View::default()
        });
        self.status(&view);
        let mut backoff = Backoff::default();
        'resync: loop {
            let list = match self.store.list().await {
                Ok(l) => l,
                Err(e) => {
                    self.set_state(&view, "disconnected", Some(&e));
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            };
            let t0 = Instant::now();
            let mut revision = list.revision;
            let (policy_objects, service_objects): (Vec<_>, Vec<_>) = list
                .objects
                .into_iter()
                .partition(|o| is_policy_kind(o.key.kind));
            catalog.reset(service_objects);
            book.reset(policy_objects);
            self.publish(&catalog, revision, t0, &view).await;
            let pods = local.borrow_and_update().clone();
            self.publish_policy(&book, &pods, &view).await;
            loop {
                let stream = match self.store.watch(revision).await {
                    Ok(s) => s,
                    Err(StoreError::Compacted { .. }) => {
                        tracing::info!(revision, "object history compacted; listing again");
                        continue 'resync;
                    }
                    Err(e) => {
                        self.set_state(&view, "disconnected", Some(&e));
                        tokio::time::sleep(backoff.next_delay()).await;
                        continue;
                    }
                };
                self.set_state(&view, "connected", None);
                backoff.reset();
                let mut batches = stream.ready_chunks(1024);
                let broke = loop {
                    let next = tokio::select! {
                        b = batches.next() => b,
                        changed = local.changed() => {
                            if changed.is_ok() {
                                let pods = local.borrow_and_update().clone();
                                self.publish_policy(&book, &pods, &view).await;
                            } else {
                                // The agent is gone: nothing more to follow.
                                std::future::pending::<()>().await;
                            }
                            continue;
                        }
                    };
                    let Some(mut batch) = next else {
                        break StoreError::Unavailable("watch ended".into());
                    };
                    let (mut services_changed, mut policy_changed) = (false, false);
                    let t0 = Instant::now();
                    // Everything the store has delivered is applied before
                    // one publish: a revision larger than a chunk (the
                    // changes of one transaction or one directory scan) is
                    // never published half-applied.
                    let failed = loop {
                        let mut failed = None;
                        for item in batch {
                            match item {
                                Ok(ev) => {
                                    revision = ev.revision;
                                    if is_policy_kind(change_kind(&ev.change)) {
                                        policy_changed = true;
                                        book.apply(ev.change);
                                    } else {
                                        services_changed = true;
                                        catalog.apply(ev.change);
                                    }
                                }
                                Err(e) => {
                                    failed = Some(e);
                                    break;
                                }
                            }
                        }
                        if failed.is_some() {
                            break failed;
                        }
                        match batches.next().now_or_never() {
                            Some(Some(more)) => batch = more,
                            Some(None) => {
                                break Some(StoreError::Unavailable("watch ended".into()))
                            }
                            None => break None,
                        }
                    };
                    if services_changed {
                        self.publish(&catalog, revision, t0, &view).await;
                    }
                    if policy_changed {
                        let pods = local.borrow().clone();
                        self.publish_policy(&book, &pods, &view).await;
                    }
                    if let Some(e) = failed {
                        break e;
                    }
                };
                if let StoreError::Compacted { .. } = broke {
                    continue 'resync;
                }
                self.set_state(&view, "disconnected", Some(&broke));
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }

    async fn publish(&self, catalog: &Catalog, revision: u64, t0: Instant, view: &Mutex<View>) {
        let table = catalog.table().clone();
        let ports = table.len();
        // Steering the host talks netlink, which blocks and runs its own
        // runtime: on a thread outside this one.
        let agent = self.agent.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("twill-steer".into())
            .spawn(move || {
                let _ = tx.send(agent.set_services(table));
            });
        let steered = match spawned {
            Ok(_) => rx
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the steering thread died"))),
            Err(e) => Err(anyhow::Error::new(e).context("starting the steering thread")),
        };
        if let Err(e) = steered {
            tracing::error!(error = %format!("{e:#}"),
                "cannot steer NodePorts and external IPs into the switch");
        }
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        tracing::info!(
            revision,
            services = catalog.services(),
            ports,
            ms,
            "service table applied"
        );
        if let Ok(mut v) = view.lock() {
            v.revision = revision;
            v.services = catalog.services();
            v.ports = ports;
            v.publish_ms = ms;
            v.rejected = catalog
                .rejected()
                .iter()
                .map(|(k, why)| format!("{k}: {why}"))
                .collect();
        }
        self.status(view);
    }

    /// Compiles and publishes the policy table for this node's pods
    /// `local`, and makes the store's `PodAddress` objects of this node
    /// match them (writes only what differs; a failed write is tried again
    /// at the next change or re-list).
    async fn publish_policy(
        &self,
        book: &PolicyBook,
        local: &[(PodRef, Ipv4Addr)],
        view: &Mutex<View>,
    ) {
        let t0 = Instant::now();
        let table = book.compile(local);
        let isolated = table.len();
        self.agent.set_policy(table);
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        // A pod coming or going recompiles the table: worth a line only
        // when what it holds changed in size (the pod's own line says the
        // rest).
        let before = view.lock().map(|v| (v.policies, v.isolated_pods)).ok();
        if before == Some((book.policies(), isolated)) {
            tracing::debug!(
                policies = book.policies(),
                isolated,
                ms,
                "policy table applied"
            );
        } else {
            tracing::info!(
                policies = book.policies(),
                isolated,
                ms,
                "policy table applied"
            );
        }
        let node = self.agent.info.name.as_str();
        let want: BTreeMap<(String, String), Ipv4Addr> = local
            .iter()
            .map(|(r, ip)| ((r.namespace.clone(), r.name.clone()), *ip))
            .collect();
        let have: BTreeMap<(String, String), (&str, Ipv4Addr)> = book
            .addresses()
            .map(|a| {
                (
                    (a.namespace().to_owned(), a.name().to_owned()),
                    (a.node(), a.ip()),
                )
            })
            .collect();
        for ((ns, name), ip) in &want {
            if have.get(&(ns.clone(), name.clone())) == Some(&(node, *ip)) {
                continue;
            }
            let key = ObjectKey {
                kind: Kind::PodAddress,
                namespace: ns.clone(),
                name: name.clone(),
            };
            let value = k8s::PodAddress::new(ns, name, node, *ip).into_value();
            if let Err(e) = self.store.put(key.clone(), value).await {
                self.write_failed(&key, &e, "cannot publish a pod's address");
            }
        }
        for ((ns, name), (owner, _)) in &have {
            if *owner != node || want.contains_key(&(ns.clone(), name.clone())) {
                continue;
            }
            let key = ObjectKey {
                kind: Kind::PodAddress,
                namespace: ns.clone(),
                name: name.clone(),
            };
            if let Err(e) = self.store.delete(key.clone()).await {
                self.write_failed(&key, &e, "cannot withdraw a pod's address");
            }
        }
        if let Ok(mut v) = view.lock() {
            v.policies = book.policies();
            v.isolated_pods = isolated;
            v.policy_ms = ms;
            v.rejected_policy = book
                .rejected()
                .iter()
                .map(|(k, why)| format!("{k}: {why}"))
                .collect();
        }
        self.status(view);
    }

    fn write_failed(&self, key: &ObjectKey, e: &StoreError, what: &str) {
        let report = self
            .write_failures
            .lock()
            .ok()
            .and_then(|mut r| r.hit(Instant::now()));
        if let Some(s) = report {
            tracing::warn!(object = %key, error = %e, suppressed = s.count, "{what}");
        }
    }

    fn set_state(&self, view: &Mutex<View>, state: &'static str, err: Option<&StoreError>) {
        if let Ok(mut v) = view.lock() {
            if v.state != state {
                v.since = control::store::unix_secs(SystemTime::now());
                match err {
                    Some(e) => {
                        tracing::warn!(source = %self.source, error = %e, "object store {state}")
                    }
                    None => tracing::info!(source = %self.source, "object store {state}"),
                }
            }
            v.state = state;
            if let Some(e) = err {
                v.last_error = Some(e.to_string());
            }
        }
        self.status(view);
    }

    fn status(&self, view: &Mutex<View>) {
        let Ok(v) = view.lock() else { return };
        self.agent.set_services_status(serde_json::json!({
            "source": self.source,
            "state": v.state,
            "revision": v.revision,
            "services": v.services,
            "ports": v.ports,
            "rejected": v.rejected,
            "last_error": v.last_error,
            "since": v.since,
            "publish_ms": v.publish_ms,
            "network_policies": v.policies,
            "isolated_pods": v.isolated_pods,
            "policy_ms": v.policy_ms,
            "rejected_policy_objects": v.rejected_policy,
        }));
    }
}

/// The kind of object a change is about.
fn change_kind(c: &ObjectChange) -> Kind {
    match c {
        ObjectChange::Put { object } => object.key.kind,
        ObjectChange::Deleted { key } => key.kind,
    }
}

/// Opens the object store at `source` (retrying while it is unreachable)
/// and follows it for `agent`, until the runtime stops.
pub async fn follow(agent: Arc<Agent>, source: ObjectSource) {
    let mut backoff = Backoff::default();
    let mut failures = LogRate::new(RETRY_REPORT_INTERVAL);
    let store = loop {
        match open_objects(&source).await {
            Ok(s) => break s,
            Err(e) => {
                if let Some(s) = failures.hit(Instant::now()) {
                    tracing::warn!(source = %source, error = %e, suppressed = s.count,
                        "cannot open the object store yet");
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    };
    ServiceSync::new(agent, store, source.to_string())
        .run()
        .await;
}

/// [`follow`] on a thread of its own with its own runtime, for a node
/// without a control-plane runtime (a static node with `objects_dir`).
/// The thread ends with the process.
pub fn follow_in_thread(
    agent: Arc<Agent>,
    source: ObjectSource,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    use anyhow::Context;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the service follower's runtime")?;
    std::thread::Builder::new()
        .name("twill-services".into())
        .spawn(move || rt.block_on(follow(agent, source)))
        .context("starting the service follower's thread")
}

#[cfg(test)]
#[path = "services_tests.rs"]
mod tests;
