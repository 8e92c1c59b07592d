//! The embedded controller (`twill controller`): one process that hands out
//! subnet leases to the nodes over HTTP/JSON and streams every change to
//! them, the simple alternative to running etcd.
//!
//! The lease table is a sans-IO [`Registry`]; this module adds the server
//! (tokio + axum), the state file and the timers. The client side is
//! [`crate::client::ControllerClient`], a [`crate::LeaseStore`].
//!
//! # API
//!
//! Every endpoint requires `Authorization: Bearer <token>` (compared in
//! constant time); without it the answer is 401 and nothing is done. With
//! [`ControllerConfig::tls`] the API is served over HTTPS only (rustls),
//! the token still required, and client certificates too when a client CA
//! is given. Bodies
//! are JSON; lease values (`attrs`) are flannel's (`{"PublicIP":…}`), and a
//! lease is `{"subnet":"10.244.1.0/24","attrs":{…},"expiration":UNIX_SECS}`.
//! A `{subnet-key}` is flannel's `10.244.1.0-24`.
//!
//! | request | success | body |
//! |---|---|---|
//! | `GET /v1/config` | 200 | flannel's net-conf.json |
//! | `POST /v1/leases` with an [`AcquireRequest`](crate::AcquireRequest) | 200 | the [`Lease`](crate::Lease) |
//! | `PUT /v1/leases/{subnet-key}` with a [`RenewRequest`](wire::RenewRequest) | 200 | the renewed lease |
//! | `DELETE /v1/leases/{subnet-key}?public_ip=IP` | 204 | (released if IP held it; idempotent) |
//! | `GET /v1/leases` | 200 | a [`Snapshot`](crate::Snapshot): `{"revision":R,"leases":[…]}` |
//! | `GET /v1/watch?after=R` | 200 | a stream of lines (below) |
//! | `GET /v1/objects` | 200 | an [`ObjectList`](crate::objects::ObjectList): `{"revision":R,"objects":[…]}` |
//! | `GET /v1/objects/watch?after=R` | 200 | a stream of lines (below) of [`ObjectEvent`](crate::objects::ObjectEvent)s |
//! | `PUT /v1/objects/{resource}/{namespace}/{name}` with the object's JSON | 200 | [`PutAnswer`](wire::PutAnswer): `{"revision":R}` |
//! | `DELETE /v1/objects/{resource}/{namespace}/{name}` | 204 | (404 `not_found` with `key` if there was none) |
//! | `PUT`/`DELETE /v1/objects/namespaces/{name}` | as above | the same for a Namespace (cluster-scoped: no namespace segment) |
//!
//! Errors are `{"error":"message","code":"…"}` ([`wire::ErrorBody`]) with
//! the status: 400 `bad_request` (malformed body, key or query; a field
//! that cannot be a node's, such as a `PublicIP` of 0.0.0.0 or a
//! `ttl_secs` above [`MAX_LEASE_TTL`](crate::store::MAX_LEASE_TTL), with
//! `field` naming it: see `check.rs`), 401
//! `unauthorized`, 404 `not_found` (no such endpoint), 408 (a body too
//! slow), 409 `lease_lost`
//! (renewing a lease that expired or another node holds; with `subnet`),
//! 410 `compacted` (watch history gone; with `requested` and `oldest`), 503
//! `unavailable` (the change could not be written to disk, or the
//! controller is stopping; retry), 507 `out_of_subnets` (with `network`,
//! `subnet_len`, `count`). The client maps each back to its
//! [`StoreError`](crate::StoreError).
//!
//! Cluster objects ([`crate::objects`]): the key is the object's path below
//! the prefix (`services/default/web`, `namespaces/prod`; an unknown
//! resource or a name that is no DNS subdomain is 400 `bad_request`). A put's body is the object as
//! `kubectl get -o json` prints it, at most
//! [`MAX_OBJECT_BYTES`](wire::MAX_OBJECT_BYTES) (413 above), stored as
//! given; its `kind`, `metadata.name` and `metadata.namespace` (absent:
//! `default`; none for a Namespace) must match the key (400 `invalid_object`, see
//! [`validate_object`](crate::objects::validate_object)). A put of the value
//! already stored changes nothing and answers the stored revision. A new
//! object beyond [`ControllerConfig::max_objects`] is 507
//! `too_many_objects` (with `limit`). Objects and leases share one revision
//! counter: an object watch's revisions have gaps, and its heartbeats
//! report the shared revision.
//!
//! The watch streams (`application/x-ndjson`) are one JSON document per line:
//! first `{"heartbeat":R}` with the current revision, then every change
//! after `after` as a [`WatchEvent`](crate::WatchEvent)
//! (`{"revision":7,"type":"added","lease":{…}}` or
//! `{"revision":8,"type":"removed","subnet":"10.244.1.0/24"}`) in order,
//! each once, as they happen, and another heartbeat every
//! [`ControllerConfig::heartbeat`] so that a client notices a dead
//! controller. A change is sent only once it is on disk. A watcher that
//! lags more than [`ControllerConfig::watch_buffer`] lines behind has its
//! stream ended; it resumes from its last revision.
//!
//! # Limits
//!
//! A connection that does not send a whole request head within
//! [`ControllerConfig::header_timeout`] (also while idle between
//! requests) is closed; a body that does not arrive within
//! [`ControllerConfig::body_timeout`] is 408. At most
//! [`ControllerConfig::max_connections`] connections are served at once,
//! watch streams included; further ones wait to be accepted (they are not
//! closed) until one ends. See `serve.rs`.
//!
//! # State and restarts
//!
//! After every change the state (config, revision, leases, objects) is
//! written to
//! the state file — temp file, fsync, rename, fsync of the directory —
//! before the request is answered and before watchers see it, so `kill -9`
//! loses nothing that was acknowledged. At start the file is loaded and
//! leases that expired meanwhile are removed at once (watchers get their
//! Removed events). The revision is stored, so it never goes back; the event
//! log is not, so a watch from before the restart's revision gets 410 and
//! the client re-lists (a watch from exactly the stored revision resumes).
//!
//! The network config is given on first start ([`ControllerConfig::net_conf`])
//! and stored; later starts use the stored one. Giving a different one is
//! an error unless [`ControllerConfig::replace_net_conf`] is set, which
//! replaces it and removes the leases it no longer allows (nodes must be
//! restarted to read it). Only one controller may use a state file at a
//! time; nothing checks that.

mod check;
mod http;
mod hub;
mod persist;
pub(crate) mod serve;
mod telemetry;
pub mod wire;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::netconf::NetConf;
use crate::registry::{Registry, StateError, DEFAULT_LOG_CAPACITY, DEFAULT_MAX_OBJECTS};
use crate::tls::{ServerTls, TlsError};
use hub::Hubs;
use persist::Persist;

/// The longest the expiry task sleeps, so that a jump of the wall clock is
/// noticed within this time.
const MAX_EXPIRY_SLEEP: Duration = Duration::from_secs(30);

/// How long a stop waits for open connections to finish.
const DRAIN: Duration = Duration::from_secs(5);

/// What a controller runs with.
#[derive(Clone)]
pub struct ControllerConfig {
    /// The address to listen on (port 0: any free port; see
    /// [`Controller::local_addr`]).
    pub listen: SocketAddr,
    /// The state file (created on first start; its directory must exist).
    pub state_file: PathBuf,
    /// The network config: required on first start, optional later (see
    /// the module docs).
    pub net_conf: Option<NetConf>,
    /// Replace a stored network config that differs from `net_conf`
    /// instead of refusing to start.
    pub replace_net_conf: bool,
    /// The bearer token every request must carry.
    pub token: String,
    /// How often every watch stream gets a heartbeat line.
    pub heartbeat: Duration,
    /// How many changes are kept for resuming watches.
    pub log_capacity: usize,
    /// How many lines a watcher may lag behind before its stream is ended.
    pub watch_buffer: usize,
    /// How many cluster objects the controller stores at most.
    pub max_objects: usize,
    /// How many connections are served at once (watch streams included);
    /// further ones wait to be accepted until one closes.
    pub max_connections: usize,
    /// How long a connection may take to send a request's head, and how
    /// long it may stay idle between requests; then it is closed.
    pub header_timeout: Duration,
    /// How long a request's body may take to arrive once its head has;
    /// then the answer is 408.
    pub body_timeout: Duration,
    /// Serve HTTPS with this certificate (and ask clients for theirs when
    /// it names a client CA); `None`: plain HTTP.
    pub tls: Option<ServerTls>,
    /// Serve `/metrics`, `/healthz` and `/readyz` (plain HTTP, no token)
    /// on this address; `None`: not at all.
    pub metrics: Option<SocketAddr>,
}

impl ControllerConfig {
    /// A config with the defaults: no net-conf, a heartbeat every 5 s, the
    /// last 10,000 changes kept, watchers ended 4,096 lines behind, at most
    /// 20,000 objects, 8,192 connections, 10 s for a request's head and
    /// 10 s for its body.
    pub fn new(listen: SocketAddr, state_file: PathBuf, token: String) -> ControllerConfig {
        ControllerConfig {
            listen,
            state_file,
            net_conf: None,
            replace_net_conf: false,
            token,
            heartbeat: Duration::from_secs(5),
            log_capacity: DEFAULT_LOG_CAPACITY,
            watch_buffer: 4096,
            max_objects: DEFAULT_MAX_OBJECTS,
            max_connections: 8192,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            tls: None,
            metrics: None,
        }
    }
}

impl std::fmt::Debug for ControllerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerConfig")
            .field("listen", &self.listen)
            .field("state_file", &self.state_file)
            .field("net_conf", &self.net_conf)
            .field("replace_net_conf", &self.replace_net_conf)
            .field("token", &"<redacted>")
            .field("heartbeat", &self.heartbeat)
            .field("log_capacity", &self.log_capacity)
            .field("watch_buffer", &self.watch_buffer)
            .field("max_objects", &self.max_objects)
            .field("max_connections", &self.max_connections)
            .field("header_timeout", &self.header_timeout)
            .field("body_timeout", &self.body_timeout)
            .field("tls", &self.tls)
            .finish()
    }
}

/// Why a controller could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControllerError {
    /// The token is empty.
    #[error("the controller's token is empty")]
    EmptyToken,
    /// First start without a network config.
    #[error("no state file at {} yet, so a network config (net-conf) is required", path.display())]
    NoNetConf {
        /// The state file.
        path: PathBuf,
    },
    /// The given network config differs from the stored one.
    #[error(
        "the network config given differs from the one stored in {}: stored {}, given {}; \
         leave it out to keep the stored one, or replace it explicitly",
        path.display(), stored.to_json(), given.to_json()
    )]
    NetConfDiffers {
        /// The state file.
        path: PathBuf,
        /// The stored config.
        stored: Box<NetConf>,
        /// The given config.
        given: Box<NetConf>,
    },
    /// The state file cannot be read.
    #[error("{}: {error}", path.display())]
    State {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        error: StateError,
    },
    /// A file operation failed.
    #[error("{what} {}: {error}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the OS said.
        error: std::io::Error,
    },
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        error: std::io::Error,
    },
    /// The server failed.
    #[error("controller server: {0}")]
    Serve(std::io::Error),
    /// The TLS certificate, key or client CA cannot be used.
    #[error("controller TLS: {0}")]
    Tls(#[from] TlsError),
}

/// What every task and handler shares.
#[derive(Debug)]
struct Shared {
    registry: Mutex<Registry>,
    hubs: Hubs,
    persist: Persist,
    /// Wakes the expiry task when the table changed.
    expiry: Notify,
    token: Vec<u8>,
    /// How long a request body may take to arrive.
    body_timeout: Duration,
    /// The metrics.
    telemetry: Arc<telemetry::Telemetry>,
}

impl Shared {
    /// The registry changed: write it, and re-arm the expiry timer.
    fn changed(&self) {
        self.persist.wake();
        self.expiry.notify_one();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the registry consistent (a panic in
    // one would be a bug, not half an update): go on after it.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running controller. Dropping it stops it (without waiting); prefer
/// [`Controller::shutdown`].
#[derive(Debug)]
pub struct Controller {
    addr: SocketAddr,
    /// Where the metrics endpoint listens, if it does.
    metrics_addr: Option<SocketAddr>,
    /// Stops the server and the timers.
    stop: watch::Sender<bool>,
    /// Stops the persister, after a last write.
    flush: watch::Sender<bool>,
    server: Option<JoinHandle<Result<(), ControllerError>>>,
    background: Vec<JoinHandle<()>>,
}

impl Controller {
    /// Loads (or creates) the state, writes it back with expired leases
    /// removed, binds the listen address and starts serving.
    pub async fn start(cfg: ControllerConfig) -> Result<Controller, ControllerError> {
        let token = cfg.token.trim().as_bytes().to_vec();
        if token.is_empty() {
            return Err(ControllerError::EmptyToken);
        }
        // Before anything is written: a bad file is a start-up error.
        let tls = cfg
            .tls
            .as_ref()
            .map(|t| t.config().map(tokio_rustls::TlsAcceptor::from))
            .transpose()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let path = cfg.state_file.clone();
        let (net_conf, replace, cap) = (cfg.net_conf, cfg.replace_net_conf, cfg.log_capacity);
        let max_objects = cfg.max_objects;
        let registry = tokio::task::spawn_blocking(move || {
            open(&path, net_conf, replace, cap).map(|r| r.with_max_objects(max_objects))
        })
        .await
        .map_err(|e| ControllerError::Serve(std::io::Error::other(e)))??;
        let revision = registry.revision();
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|error| ControllerError::Bind {
                addr: cfg.listen,
                error,
            })?;
        let addr = listener.local_addr().map_err(ControllerError::Serve)?;
        let metrics_listener = match cfg.metrics {
            Some(m) => Some(
                tokio::net::TcpListener::bind(m)
                    .await
                    .map_err(|error| ControllerError::Bind { addr: m, error })?,
            ),
            None => None,
        };
        let metrics_addr = metrics_listener
            .as_ref()
            .map(tokio::net::TcpListener::local_addr)
            .transpose()
            .map_err(ControllerError::Serve)?;
        tracing::info!(
            url = %format!("{scheme}://{addr}"),
            client_certs = cfg.tls.as_ref().is_some_and(|t| t.client_ca_file.is_some()),
            state_file = %cfg.state_file.display(),
            revision,
            leases = registry.len(),
            objects = registry.object_count(),
            network = %registry.config().network,
            "controller listening"
        );
        let shared = Arc::new(Shared {
            registry: Mutex::new(registry),
            hubs: Hubs::new(revision, cfg.watch_buffer),
            persist: Persist::new(cfg.state_file.clone(), revision),
            expiry: Notify::new(),
            token,
            body_timeout: cfg.body_timeout,
            telemetry: Arc::new(telemetry::Telemetry::new()),
        });
        let (stop, _) = watch::channel(false);
        let (flush, _) = watch::channel(false);
        let mut background = vec![
            tokio::spawn({
                let (shared, flush) = (shared.clone(), flush.subscribe());
                async move {
                    shared
                        .persist
                        .run(&shared.registry, &shared.hubs, &shared.telemetry, flush)
                        .await
                }
            }),
            tokio::spawn(expirer(shared.clone(), stop.subscribe())),
            tokio::spawn(heartbeats(shared.clone(), cfg.heartbeat, stop.subscribe())),
        ];
        if let Some(l) = metrics_listener {
            tracing::info!(url = %format!("http://{}/metrics", metrics_addr.unwrap_or(addr)), "metrics endpoint listening");
            let endpoint = Arc::new(telemetry::Endpoint {
                shared: shared.clone(),
                stop: stop.subscribe(),
            });
            background.push(tokio::spawn(crate::metrics::serve(
                l,
                endpoint,
                stop.subscribe(),
            )));
        }
        let app = http::router(shared.clone());
        let limits = serve::Limits {
            max_connections: cfg.max_connections,
            header_timeout: cfg.header_timeout,
        };
        let stopped = stop.subscribe();
        let server = tokio::spawn(async move {
            // Ending the watch streams lets their connections close.
            serve::serve(listener, tls, app, limits, stopped, move || {
                shared.hubs.close()
            })
            .await;
            Ok(())
        });
        Ok(Controller {
            addr,
            metrics_addr,
            stop,
            flush,
            server: Some(server),
            background,
        })
    }

    /// Runs a controller until `shutdown` completes, then stops it.
    pub async fn run(
        cfg: ControllerConfig,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ControllerError> {
        let mut c = Controller::start(cfg).await?;
        let Some(mut server) = c.server.take() else {
            return Ok(());
        };
        let ended = tokio::select! {
            r = &mut server => Some(r),
            () = shutdown => None,
        };
        match ended {
            // The server stopped by itself: an error.
            Some(r) => {
                c.stop_tasks().await;
                r.map_err(|e| ControllerError::Serve(std::io::Error::other(e)))?
            }
            None => {
                c.server = Some(server);
                c.shutdown().await
            }
        }
    }

    /// The address the metrics endpoint listens on, if it does.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The address the controller listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving (open watch streams end, other requests get up to 5 s
    /// to finish), writes any last change and waits for every task.
    pub async fn shutdown(mut self) -> Result<(), ControllerError> {
        let _ = self.stop.send(true);
        let mut result = Ok(());
        if let Some(mut server) = self.server.take() {
            match tokio::time::timeout(DRAIN, &mut server).await {
                Ok(Ok(r)) => result = r,
                Ok(Err(e)) => result = Err(ControllerError::Serve(std::io::Error::other(e))),
                Err(_) => {
                    tracing::warn!("connections still open after {DRAIN:?}; closing them");
                    server.abort();
                }
            }
        }
        self.stop_tasks().await;
        tracing::info!("controller stopped");
        result
    }

    /// Stops the timers, then the persister (after the server, so that
    /// every request still in flight gets its change written).
    async fn stop_tasks(&mut self) {
        let _ = self.stop.send(true);
        let _ = self.flush.send(true);
        for t in self.background.drain(..) {
            let _ = t.await;
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        let _ = self.flush.send(true);
    }
}

/// Loads or creates the registry, reconciles the network config, expires
/// what expired while stopped, and writes the state (which also checks that
/// the file can be written).
fn open(
    path: &std::path::Path,
    net_conf: Option<NetConf>,
    replace: bool,
    log_capacity: usize,
) -> Result<Registry, ControllerError> {
    let mut registry = match (persist::load(path)?, net_conf) {
        (Some(mut reg), Some(given)) if *reg.config() != given => {
            if !replace {
                return Err(ControllerError::NetConfDiffers {
                    path: path.to_owned(),
                    stored: Box::new(*reg.config()),
                    given: Box::new(given),
                });
            }
            let removed = reg.replace_config(given);
            tracing::warn!(removed, net_conf = %given.to_json(), "network config replaced");
            reg
        }
        (Some(reg), _) => reg,
        (None, Some(conf)) => Registry::new(conf),
        (None, None) => {
            return Err(ControllerError::NoNetConf {
                path: path.to_owned(),
            })
        }
    }
    .with_log_capacity(log_capacity);
    let expired = registry.expire(SystemTime::now());
    if expired > 0 {
        tracing::info!(expired, "leases expired while the controller was stopped");
    }
    let io = |error| ControllerError::Io {
        what: "writing the state file",
        path: path.to_owned(),
        error,
    };
    let bytes = registry
        .to_json()
        .map_err(|e| io(std::io::Error::other(e)))?;
    persist::write_atomic(path, &bytes).map_err(io)?;
    Ok(registry)
}

/// Removes leases when they expire.
async fn expirer(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        let next = {
            let mut reg = lock(&shared.registry);
            let expired = reg.expire(SystemTime::now());
            if expired > 0 {
                tracing::info!(expired, "leases expired");
                shared.persist.wake();
            }
            reg.next_expiry()
        };
        let sleep = next
            .map_or(MAX_EXPIRY_SLEEP, |t| {
                t.duration_since(SystemTime::now()).unwrap_or_default()
            })
            .min(MAX_EXPIRY_SLEEP);
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = shared.expiry.notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Sends a heartbeat to every watcher every `every`.
async fn heartbeats(shared: Arc<Shared>, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => shared.hubs.heartbeat(),
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
