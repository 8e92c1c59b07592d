//! The node agent's side of the control plane: acquire this node's lease,
//! keep it renewed, and turn every other node's lease into the dataplane's
//! node table, live.
//!
//! The table follows the store by revision: a full list, then a watch from
//! the list's revision; after a broken connection the watch resumes from the
//! last revision applied, and only when the store has compacted that history
//! is the table listed again and replaced whole. While the store is
//! unreachable the dataplane keeps forwarding on the last table; the state
//! (`connected`, `disconnected` with the error, the revision) is logged and
//! shown by `twill status`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result};
use control::{
    AcquireRequest, Lease, LeaseEvent, LeaseOptions, LeaseStore, NetConf, NodeConfig, Peer,
    StoreError,
};
use futures::StreamExt;
use ipnet::Ipv4Net;

use super::backoff::{Backoff, BACKOFF_MIN};
use super::lograte::{LogRate, RETRY_REPORT_INTERVAL};
use super::Agent;

/// What the node asks its store for: its lease value and the subnet it held
/// before (from `<state_dir>/subnet`, else from flannel's `subnet.env`).
pub fn acquire_request(
    cfg: &NodeConfig,
    net_conf: &NetConf,
    vtep_mac: encap::MacAddr,
) -> AcquireRequest {
    AcquireRequest {
        attrs: cfg.lease_attrs(&net_conf.backend, vtep_mac),
        previous: previous_subnet(cfg),
        ttl_secs: cfg.lease.ttl.as_secs(),
    }
}

fn previous_subnet(cfg: &NodeConfig) -> Option<Ipv4Net> {
    let kept = std::fs::read_to_string(cfg.state_dir.join("subnet"))
        .ok()
        .and_then(|s| s.trim().parse::<Ipv4Net>().ok());
    kept.or_else(|| {
        std::fs::read_to_string(&cfg.lease.subnet_env)
            .ok()
            .and_then(|t| control::plane::subnet_from_env(&t))
    })
}

/// Keeps the leased subnet in the state directory, for the next start.
pub fn remember_subnet(state_dir: &Path, subnet: Ipv4Net) -> Result<()> {
    super::write_atomic(&state_dir.join("subnet"), format!("{subnet}\n").as_bytes())
}

/// The node table a set of leases gives: every lease but ours, of our
/// backend type.
pub fn peers_from(
    leases: &BTreeMap<Ipv4Net, Lease>,
    own: Ipv4Net,
    backend: control::BackendType,
) -> Vec<Peer> {
    leases
        .values()
        .filter(|l| l.subnet != own)
        .filter(|l| {
            let same = l.attrs.backend.kind() == backend;
            if !same {
                // flannel's backends ignore other backends' leases too.
                tracing::debug!(subnet = %l.subnet, "ignoring a lease of another backend type");
            }
            same
        })
        .map(|l| Peer::from_lease(l.subnet, &l.attrs, l.attrs.public_ip.to_string()))
        .collect()
}

/// The running control loop's shared view.
#[derive(Debug)]
pub struct Control {
    agent: Arc<Agent>,
    store: Arc<dyn LeaseStore>,
    source: String,
    opts: LeaseOptions,
    /// Set when our lease was lost and could not be taken back: the node
    /// must stop (its pods' addresses belong to another node now).
    pub lease_lost: Arc<AtomicBool>,
}

/// The control plane as `twill status` shows it (its `control` part) and
/// the metrics read it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ControlStatus {
    /// Where leases come from (the controller's URL, or etcd's endpoints).
    pub source: String,
    /// `connecting`, `connected` or `disconnected`.
    pub state: &'static str,
    /// The store's revision last applied.
    pub revision: u64,
    /// Remote nodes in the table.
    pub nodes: usize,
    /// This node's lease.
    pub lease: Option<LeaseStatus>,
    /// The last error talking to the store.
    pub last_error: Option<String>,
    /// When `state` last changed (Unix seconds).
    pub since: u64,
}

/// This node's lease in a [`ControlStatus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct LeaseStatus {
    /// The leased subnet.
    pub subnet: Ipv4Net,
    /// When it expires unless renewed (Unix seconds, the store's clock).
    pub expiration: u64,
}

#[derive(Debug, Default)]
struct View {
    state: &'static str,
    revision: u64,
    nodes: usize,
    /// The node table last applied, to log only changes of it (a renewal
    /// moves only a lease's expiry).
    applied: Vec<Peer>,
    lease: Option<Lease>,
    last_error: Option<String>,
    since: u64,
}

impl Control {
    /// A control loop for `agent`, holding `lease`, fed by `store`.
    pub fn new(
        agent: Arc<Agent>,
        store: Arc<dyn LeaseStore>,
        source: String,
        cfg: &NodeConfig,
    ) -> Control {
        Control {
            agent,
            store,
            source,
            opts: cfg.lease.clone(),
            lease_lost: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Renews the lease and follows the node table until the runtime stops
    /// or the lease is lost for good.
    pub async fn run(self, lease: Lease) {
        let view = std::sync::Mutex::new(View {
            state: "connecting",
            lease: Some(lease.clone()),
            since: control::store::unix_secs(SystemTime::now()),
            ..View::default()
        });
        self.publish(&view);
        let renew = self.renew_loop(lease, &view);
        let watch = self.watch_loop(&view);
        tokio::select! {
            () = renew => {}
            () = watch => {}
        }
    }

    fn publish(&self, view: &std::sync::Mutex<View>) {
        let Ok(v) = view.lock() else { return };
        self.agent.set_control_status(ControlStatus {
            source: self.source.clone(),
            state: v.state,
            revision: v.revision,
            nodes: v.nodes,
            lease: v.lease.as_ref().map(|l| LeaseStatus {
                subnet: l.subnet,
                expiration: l.expiration,
            }),
            last_error: v.last_error.clone(),
            since: v.since,
        });
    }

    fn set_state(
        &self,
        view: &std::sync::Mutex<View>,
        state: &'static str,
        err: Option<&StoreError>,
    ) {
        if let Ok(mut v) = view.lock() {
            if v.state != state {
                v.since = control::store::unix_secs(SystemTime::now());
                match (state, err) {
                    (_, Some(e)) => {
                        tracing::warn!(source = %self.source, error = %e, "control plane {state}")
                    }
                    _ => {
                        tracing::info!(source = %self.source, revision = v.revision, "control plane {state}")
                    }
                }
            }
            v.state = state;
            if let Some(e) = err {
                v.last_error = Some(e.to_string());
            }
        }
        self.publish(view);
    }

    async fn renew_loop(&self, mut lease: Lease, view: &std::sync::Mutex<View>) {
        let own = lease.subnet;
        let mut backoff = Backoff::default();
        let mut failures = LogRate::new(RETRY_REPORT_INTERVAL);
        loop {
            let due = lease
                .expires_at()
                .checked_sub(self.opts.renew_margin)
                .and_then(|t| t.duration_since(SystemTime::now()).ok())
                .unwrap_or_default();
            tokio::time::sleep(due).await;
            let renewed = match self.store.renew(&lease, self.opts.ttl).await {
                Err(StoreError::LeaseLost { .. }) => {
                    tracing::warn!(subnet = %own, "lease lost; acquiring it again");
                    let req = AcquireRequest {
                        attrs: lease.attrs,
                        previous: Some(own),
                        ttl_secs: self.opts.ttl.as_secs(),
                    };
                    self.store.acquire(req).await
                }
                r => r,
            };
            match renewed {
                Ok(l) if l.subnet == own => {
                    tracing::debug!(subnet = %own, expiration = l.expiration, "lease renewed");
                    lease = l;
                    backoff.reset();
                    if let Ok(mut v) = view.lock() {
                        v.lease = Some(lease.clone());
                    }
                    self.publish(view);
                }
                Ok(l) => {
                    tracing::error!(had = %own, got = %l.subnet,
                        "lease lost and another subnet given: this node must restart");
                    let _ = self.store.release(&l).await;
                    self.lease_lost.store(true, Ordering::SeqCst);
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::this(),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                    return;
                }
                Err(e) => {
                    // Retry well before expiry; the dataplane keeps going.
                    let wait = backoff
                        .next_delay()
                        .min(self.opts.renew_margin / 4)
                        .max(BACKOFF_MIN);
                    if let Some(s) = failures.hit(Instant::now()) {
                        tracing::warn!(subnet = %own, error = %e, retry_in = ?wait,
                            suppressed = s.count, "lease renewal failed");
                    }
                    self.set_state(view, "disconnected", Some(&e));
                    tokio::time::sleep(wait).await;
                    // Try again now rather than at the next due time.
                    lease.expiration =
                        control::store::unix_secs(SystemTime::now() + self.opts.renew_margin);
                }
            }
        }
    }

    async fn watch_loop(&self, view: &std::sync::Mutex<View>) {
        let own = self.agent_subnet();
        let backend = self.agent.backend();
        let mut backoff = Backoff::default();
        'resync: loop {
            let snap = match self.store.list().await {
                Ok(s) => s,
                Err(e) => {
                    self.set_state(view, "disconnected", Some(&e));
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            };
            let mut table: BTreeMap<Ipv4Net, Lease> =
                snap.leases.into_iter().map(|l| (l.subnet, l)).collect();
            let mut revision = snap.revision;
            self.apply(&table, own, backend, revision, view);
            loop {
                let stream = match self.store.watch(revision).await {
                    Ok(s) => s,
                    Err(StoreError::Compacted { .. }) => {
                        tracing::info!(revision, "watch history compacted; listing again");
                        continue 'resync;
                    }
                    Err(e) => {
                        self.set_state(view, "disconnected", Some(&e));
                        tokio::time::sleep(backoff.next_delay()).await;
                        continue;
                    }
                };
                self.set_state(view, "connected", None);
                backoff.reset();
                // Everything that arrived together is applied as one table change.
                let mut batches = stream.ready_chunks(1024);
                let broke = loop {
                    let Some(batch) = batches.next().await else {
                        break StoreError::Unavailable("watch ended".into());
                    };
                    let mut failed = None;
                    for item in batch {
                        match item {
                            Ok(ev) => {
                                revision = ev.revision;
                                apply_event(&mut table, ev.event, own);
                            }
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        }
                    }
                    self.apply(&table, own, backend, revision, view);
                    if let Some(e) = failed {
                        break e;
                    }
                };
                if let StoreError::Compacted { .. } = broke {
                    continue 'resync;
                }
                self.set_state(view, "disconnected", Some(&broke));
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }

    fn apply(
        &self,
        table: &BTreeMap<Ipv4Net, Lease>,
        own: Ipv4Net,
        backend: control::BackendType,
        revision: u64,
        view: &std::sync::Mutex<View>,
    ) {
        let peers = peers_from(table, own, backend);
        let changed = view.lock().map_or(true, |v| v.applied != peers);
        match self.agent.set_peers(&peers) {
            Ok(()) if changed => {
                tracing::info!(revision, nodes = peers.len(), "node table applied")
            }
            Ok(()) => tracing::debug!(revision, nodes = peers.len(), "node table applied"),
            Err(e) => tracing::error!(error = %format!("{e:#}"), "cannot apply the node table"),
        }
        if let Ok(mut v) = view.lock() {
            v.revision = revision;
            v.nodes = peers.len();
            v.applied = peers;
        }
        self.publish(view);
    }

    fn agent_subnet(&self) -> Ipv4Net {
        let s = self.agent.info.subnet;
        Ipv4Net::new(s.addr(), s.prefix()).unwrap_or_default()
    }
}

fn apply_event(table: &mut BTreeMap<Ipv4Net, Lease>, ev: LeaseEvent, own: Ipv4Net) {
    match ev {
        LeaseEvent::Added { lease } => {
            table.insert(lease.subnet, lease);
        }
        LeaseEvent::Removed { subnet } => {
            if subnet == own {
                tracing::warn!(%subnet, "our own lease was removed from the store; renewing will take it back");
            }
            table.remove(&subnet);
        }
    }
}

/// Runs a node whose lease and node table come from a control plane, until
/// SIGTERM or SIGINT (blocked in `stop` by the caller before any thread
/// started). While the store is unreachable at start-up the node keeps
/// trying, with backoff, and stops cleanly on a signal meanwhile.
pub fn run_node(
    cfg: &NodeConfig,
    plane: &control::ControlPlane,
    run: &super::RunOptions,
    stop: nix::sys::signal::SigSet,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("twill-control")
        .enable_all()
        .build()
        .context("starting the control-plane runtime")?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    std::thread::Builder::new()
        .name("twill-signals".into())
        .spawn(move || {
            if let Ok(sig) = stop.wait() {
                tracing::info!(signal = ?sig, "stopping");
            }
            let _ = tx.send(true);
        })
        .context("starting the signal thread")?;
    let stopped = || {
        let mut rx = rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let source = plane.to_string();
    let vtep_mac = super::vtep_mac(cfg)?;

    let started = rt.block_on(async {
        let mut backoff = Backoff::default();
        let mut failures = LogRate::new(RETRY_REPORT_INTERVAL);
        loop {
            let attempt = async {
                let store = super::lease_store::open(plane).await?;
                let net_conf = store.config().await?;
                let lease = store
                    .acquire(acquire_request(cfg, &net_conf, vtep_mac))
                    .await?;
                Ok::<_, StoreError>((store, net_conf, lease))
            };
            tokio::select! {
                () = stopped() => return Ok(None),
                r = attempt => match r {
                    Ok(x) => return Ok(Some(x)),
                    Err(e) if e.is_transient() => {
                        if let Some(s) = failures.hit(Instant::now()) {
                            tracing::warn!(source, error = %e, suppressed = s.count,
                                "cannot acquire a lease yet; retrying");
                        }
                    }
                    Err(e) => return Err(anyhow::Error::new(e)
                        .context(format!("acquiring a lease from {source}"))),
                },
            }
            tokio::select! {
                () = stopped() => return Ok(None),
                () = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    })?;
    let Some((store, net_conf, lease)) = started else {
        return Ok(());
    };
    tracing::info!(subnet = %lease.subnet, expiration = lease.expiration, source, "lease acquired");
    let leased = cfg
        .leased(lease.subnet, net_conf)
        .context("the leased subnet does not fit the network config")?;
    remember_subnet(&cfg.state_dir, lease.subnet)?;
    let agent = Arc::new(Agent::start(&leased, run)?);
    agent.set_node_source(plane);
    agent
        .write_subnet_env(&cfg.lease.subnet_env, cfg.lease.ip_masq)
        .context("writing subnet.env")?;
    super::serve_all(&agent, run)?;

    let objects = super::lease_store::ObjectSource::Plane(plane.clone());
    rt.spawn(super::services::follow(agent.clone(), objects));
    let control = Control::new(agent.clone(), store, source, cfg);
    let lost = control.lease_lost.clone();
    rt.spawn(control.run(lease));
    rt.block_on(stopped());
    agent.shutdown();
    let _ = std::fs::remove_file(&cfg.socket);
    rt.shutdown_background();
    if lost.load(Ordering::SeqCst) {
        anyhow::bail!("this node's lease was lost to another node; restart it to get a new one");
    }
    Ok(())
}
