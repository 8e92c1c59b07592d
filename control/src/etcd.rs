//! The etcd lease store: [`LeaseStore`] over etcd v3, in flannel's layout,
//! so that flannel nodes, `etcdctl` and twill nodes share one lease table;
//! and the [`ObjectStore`](crate::objects::ObjectStore) of cluster objects
//! beside it (see `etcd/objects.rs`: `<objects-prefix>/<resource>/<namespace>/<name>`,
//! [`EtcdOptions::objects_prefix`], by default `/twill/objects`).
//!
//! # Layout (flannel's `pkg/subnet/etcd/registry.go`)
//!
//! - `<prefix>/config`: net-conf.json, written by the operator
//!   (`etcdctl put /coreos.com/network/config '{"Network":"10.244.0.0/16"}'`
//!   or [`EtcdStore::put_config`]).
//! - `<prefix>/subnets/10.244.1.0-24`: one lease, its value exactly as
//!   [`LeaseAttrs::to_json`] writes it, the key attached to an etcd lease
//!   whose TTL is the lease's time to live: etcd deletes the key when it
//!   expires.
//!
//! The prefix defaults to [`DEFAULT_ETCD_PREFIX`]; trailing slashes are
//! dropped, as Go's `path.Join` does.
//!
//! # Operations
//!
//! - acquire: read the config and the subnets, [`choose_subnet`], then claim
//!   with one transaction: a free subnet with "create if absent"
//!   (`version(key) == 0`), the lease carrying our public IP with "unchanged
//!   since read" (`mod_revision(key) == read`), each put under a freshly
//!   granted etcd lease. A lost race re-reads and chooses again, at most
//!   [`EtcdOptions::attempts`] times.
//! - renew: **grant a new etcd lease and re-put the value with it**, under
//!   "unchanged since read", after checking that the key still carries our
//!   public IP; the old etcd lease (now holding no key) is revoked. This is
//!   what flannel does (a new lease per renewal), and unlike a keep-alive of
//!   the same etcd lease it takes the TTL asked for, and it fails
//!   ([`StoreError::LeaseLost`]) when another node took the subnet, where a
//!   keep-alive would go on succeeding for a lease that holds nothing.
//! - release: delete the key under "unchanged since read" if it still
//!   carries our public IP; idempotent.
//! - list: one range over the subnets prefix; the snapshot's revision is the
//!   response header's. Keys that name no subnet and values that are no
//!   lease are skipped and logged (flannel does the same); a subnet whose
//!   value is no lease is still never handed out.
//! - watch: an etcd watch on the subnets prefix from revision `after + 1`;
//!   an event's revision is its key's `mod_revision`. A compacted start is
//!   [`StoreError::Compacted`]; a silent etcd is asked for a progress
//!   report, and a stream whose etcd does not answer ends with
//!   [`StoreError::Unavailable`] (details in `etcd/watch.rs`).
//!
//! The etcd lease ids this process granted are kept in the store (subnet →
//! key and lease id), since [`Lease`] has no field for them; after a
//! restart, re-acquiring reuses the lease by public IP and grants a new one.
//!
//! # Expiration
//!
//! `Lease::expiration` is derived, never stored: for our own leases it is
//! the local clock when the etcd lease was granted plus its granted TTL
//! (etcd raises TTLs below its minimum, about 2 s); for other nodes' leases
//! (list, watch) it is the local clock plus the remaining TTL etcd reports
//! (one `LeaseTimeToLive` call per key, as flannel does). A key without an
//! etcd lease (written by hand) never expires; it is reported as expiring
//! in 100 years.
//!
//! # Failures
//!
//! Each request goes to one endpoint at a time, the last one that answered
//! first, and moves on to the next when that one refuses the connection,
//! reports no leader, or does not answer within
//! [`EtcdOptions::request_timeout`]; when none answers the call fails with
//! [`StoreError::Unavailable`]. Refused credentials are
//! [`StoreError::Unauthorized`]. A connection reconnects by itself when its
//! etcd comes back. Retrying a transaction on another endpoint is safe:
//! every one compares what it read, so one that did apply before its answer
//! was lost makes the retry re-read and find the lease already ours. A lease
//! granted for a call that then failed is revoked (unless etcd is
//! unreachable: it then expires by its TTL).
//!
//! Not supported: TLS (`https://` endpoints), IPv6 leases (dual-stack keys
//! of other nodes are read as their IPv4 half).

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use etcd_client::{Client, Compare, CompareOp, GetOptions, KeyValue, PutOptions, TxnOp};
use futures::future::BoxFuture;
use futures::stream::{self, StreamExt, TryStreamExt};
use ipnet::Ipv4Net;
use tracing::{debug, warn};

use crate::error::{ConfigError, Doc};
use crate::lease::LeaseAttrs;
use crate::netconf::NetConf;
use crate::objects::DEFAULT_OBJECTS_PREFIX;
use crate::store::{
    choose_subnet, unix_secs, AcquireRequest, Choice, Lease, LeaseStore, Snapshot, StoreError,
    WatchStream, DEFAULT_ETCD_PREFIX,
};
use crate::tls::ClientTls;

mod conn;
mod objects;
mod watch;

use conn::{Keys, Shared};

/// How long a key without an etcd lease is reported to live.
const NO_LEASE_HORIZON: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// At most this many `LeaseTimeToLive` calls of one list run at once.
const TTL_LOOKUPS_IN_FLIGHT: usize = 16;

/// A user name and password for etcd's authentication.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The etcd user.
    pub user: String,
    /// Its password (never printed).
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Connection and behaviour settings of an [`EtcdStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdOptions {
    /// etcd user and password, when etcd has authentication enabled.
    pub credentials: Option<Credentials>,
    /// For `https://` endpoints: the CA that signed etcd's certificate
    /// (required; the system's roots are not used) and the client
    /// certificate etcd's `--client-cert-auth` asks for: flannel's
    /// `-etcd-cafile`, `-etcd-certfile`, `-etcd-keyfile`.
    pub tls: ClientTls,
    /// Bound on every request (and on opening a watch).
    pub request_timeout: Duration,
    /// Bound on opening a TCP connection to one endpoint.
    pub connect_timeout: Duration,
    /// HTTP/2 keep-alive ping interval while a request or watch is open.
    /// etcd answers pings more frequent than its `--grpc-keepalive-min-time`
    /// (5 s by default) by closing the connection, so keep this above it.
    pub keepalive_interval: Duration,
    /// How long an HTTP/2 ping may go unanswered before the connection is
    /// dropped.
    pub keepalive_timeout: Duration,
    /// A watch that heard nothing from etcd for this long asks for a
    /// progress report (etcd's `WatchProgressRequest`)…
    pub watch_progress_interval: Duration,
    /// …and ends with [`StoreError::Unavailable`] when that report does not
    /// come within this time. A dead or hung etcd is so noticed within the
    /// sum of the two.
    pub watch_progress_timeout: Duration,
    /// How many times acquire, renew and release read and try again when a
    /// concurrent change wins the transaction.
    pub attempts: u32,
    /// The key prefix of cluster objects ([`crate::objects`]); trailing
    /// slashes are dropped, empty means [`DEFAULT_OBJECTS_PREFIX`].
    pub objects_prefix: String,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            credentials: None,
            tls: ClientTls::default(),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(5),
            watch_progress_interval: Duration::from_secs(2),
            watch_progress_timeout: Duration::from_secs(3),
            attempts: 10,
            objects_prefix: DEFAULT_OBJECTS_PREFIX.to_owned(),
        }
    }
}

/// An etcd lease this process granted and a key attached to it.
#[derive(Debug, Clone)]
struct Held {
    key: String,
    lease_id: i64,
}

/// One key under the subnets prefix, as read.
#[derive(Debug, Clone)]
struct Entry {
    key: String,
    subnet: Ipv4Net,
    /// `None` when the value is not a lease (logged).
    attrs: Option<LeaseAttrs>,
    mod_revision: i64,
    etcd_lease: i64,
}

/// The lease store in etcd, in flannel's layout (see the module docs).
pub struct EtcdStore {
    shared: Arc<Shared>,
    held: Mutex<HashMap<Ipv4Net, Held>>,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field(
                "endpoints",
                &self
                    .shared
                    .endpoints
                    .iter()
                    .map(|e| &e.url)
                    .collect::<Vec<_>>(),
            )
            .field("config_key", &self.shared.keys.config)
            .field("objects_prefix", &self.shared.keys.objects)
            .field("opts", &self.shared.opts)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// A store on the etcd cluster at `endpoints` (`http://host:port` or
    /// `host:port`), under `prefix` ([`DEFAULT_ETCD_PREFIX`] if empty);
    /// its cluster objects under [`EtcdOptions::objects_prefix`].
    ///
    /// A call tries the endpoints in turn, starting with the last one that
    /// answered, each within [`EtcdOptions::request_timeout`]. Connections
    /// are made on first use, so this succeeds while etcd is down; given
    /// credentials, each endpoint that answers checks them here
    /// ([`StoreError::Unauthorized`]). An endpoint that is no URL is a
    /// [`StoreError::Protocol`] error. An `https://` endpoint without
    /// [`EtcdOptions::tls`]'s CA file, TLS files without an `https://`
    /// endpoint, a TLS file that cannot be used, or a handshake that fails
    /// (the CA, or the client certificate etcd wants) is [`StoreError::Tls`].
    pub async fn connect(
        endpoints: &[String],
        prefix: &str,
        options: EtcdOptions,
    ) -> Result<EtcdStore, StoreError> {
        if endpoints.is_empty() {
            return Err(StoreError::Protocol("no etcd endpoint given".into()));
        }
        let prefix = if prefix.is_empty() {
            DEFAULT_ETCD_PREFIX
        } else {
            prefix
        };
        let objects_prefix = match options.objects_prefix.as_str() {
            "" => DEFAULT_OBJECTS_PREFIX.to_owned(),
            p => p.to_owned(),
        };
        let tls = conn::tls_options(endpoints, &options.tls)?;
        let shared = Shared::new(endpoints, Keys::new(prefix, &objects_prefix), options, tls);
        for idx in 0..endpoints.len() {
            match shared.client(idx).await {
                Ok(_) => {}
                Err(e) if e.is_transient() => debug!(error = %e, "etcd: connecting later"),
                Err(e) => return Err(e),
            }
        }
        Ok(EtcdStore {
            shared: Arc::new(shared),
            held: Mutex::new(HashMap::new()),
        })
    }

    /// Writes `<prefix>/config` after checking that `json` is a valid
    /// net-conf; the text is stored as given. Returns the parsed config.
    pub async fn put_config(&self, json: &str) -> Result<NetConf, StoreError> {
        let conf = NetConf::parse(json)?;
        let key = self.shared.keys.config.as_str();
        self.shared
            .call("put config", |c| async move {
                c.kv_client().put(key, json, None).await
            })
            .await?;
        Ok(conf)
    }

    fn held(&self) -> MutexGuard<'_, HashMap<Ipv4Net, Held>> {
        // A panic elsewhere while holding the lock leaves a plain map behind.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key of our lease on `subnet` (the key acquire wrote).
    fn key_of(&self, subnet: &Ipv4Net) -> String {
        self.held()
            .get(subnet)
            .map_or_else(|| self.shared.keys.subnet(subnet), |h| h.key.clone())
    }

    /// Grants an etcd lease of `ttl_secs`; returns its id and the time it
    /// expires at (local clock before the grant + granted TTL).
    async fn grant(&self, ttl_secs: u64) -> Result<(i64, u64), StoreError> {
        let before = SystemTime::now();
        let ttl = i64::try_from(ttl_secs).unwrap_or(i64::MAX);
        let resp = self
            .shared
            .call("lease grant", |c| async move {
                c.lease_client().grant(ttl, None).await
            })
            .await?;
        Ok((resp.id(), expiration_at(before, resp.ttl())))
    }

    /// Revokes an etcd lease, logging a failure (it then expires by TTL).
    async fn revoke_quietly(&self, id: i64) {
        let revoke = |c: Client| async move { c.lease_client().revoke(id).await };
        if let Err(e) = self.shared.call("lease revoke", revoke).await {
            debug!(lease_id = id, error = %e, "etcd: revoking a lease failed; it expires by its TTL");
        }
    }

    /// Revokes the lease we granted for a call that failed with `e`.
    async fn undo_grant(&self, id: i64, e: &StoreError) {
        if !e.is_transient() {
            self.revoke_quietly(id).await;
        }
    }

    /// Forgets our etcd lease on `subnet` and revokes it: the key is gone
    /// or no longer ours, so the lease holds nothing.
    async fn forget(&self, subnet: &Ipv4Net) {
        let old = self.held().remove(subnet);
        if let Some(old) = old {
            self.revoke_quietly(old.lease_id).await;
        }
    }

    /// Every key under the subnets prefix and the revision read at. Keys
    /// that name no subnet are skipped; values that are no lease are kept
    /// with `attrs: None` (their subnet is taken all the same). Both logged.
    async fn read_subnets(&self) -> Result<(i64, Vec<Entry>), StoreError> {
        let keys = &self.shared.keys;
        let prefix = keys.subnets.as_str();
        let mut resp = self
            .shared
            .call("list subnets", |c| async move {
                c.kv_client()
                    .get(prefix, Some(GetOptions::new().with_prefix()))
                    .await
            })
            .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let mut entries = Vec::new();
        for kv in resp.take_kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let subnet = match keys.parse_subnet(kv.key()) {
                Ok(s) => s,
                Err(e) => {
                    warn!(key, error = %e, "etcd: ignoring a key that names no subnet");
                    continue;
                }
            };
            let attrs = match parse_lease_value(kv.value()) {
                Ok(a) => Some(a),
                Err(e) => {
                    warn!(key, error = %e, "etcd: ignoring a subnet whose value is no lease");
                    None
                }
            };
            entries.push(Entry {
                key,
                subnet,
                attrs,
                mod_revision: kv.mod_revision(),
                etcd_lease: kv.lease(),
            });
        }
        Ok((revision, entries))
    }

    async fn acquire_impl(&self, req: AcquireRequest) -> Result<Lease, StoreError> {
        let conf = self.config_impl().await?;
        let (lease_id, expiration) = self.grant(req.ttl_secs).await?;
        match self.claim(&conf, &req, lease_id).await {
            Ok((subnet, key, replaced)) => {
                self.held().insert(subnet, Held { key, lease_id });
                if let Some(old) = replaced {
                    self.revoke_quietly(old).await;
                }
                Ok(Lease {
                    subnet,
                    attrs: req.attrs,
                    expiration,
                })
            }
            Err(e) => {
                self.undo_grant(lease_id, &e).await;
                Err(e)
            }
        }
    }

    /// Claims a subnet for `req` with the etcd lease `lease_id`: the subnet,
    /// its key, and the etcd lease of ours the key was attached to before.
    async fn claim(
        &self,
        conf: &NetConf,
        req: &AcquireRequest,
        lease_id: i64,
    ) -> Result<(Ipv4Net, String, Option<i64>), StoreError> {
        let ip = req.attrs.public_ip;
        let value = req.attrs.to_json();
        let attempts = self.shared.opts.attempts.max(1);
        for attempt in 1..=attempts {
            let (_, entries) = self.read_subnets().await?;
            let leased: Vec<(Ipv4Net, Ipv4Addr)> = entries
                .iter()
                .map(|e| {
                    (
                        e.subnet,
                        e.attrs.map_or(Ipv4Addr::UNSPECIFIED, |a| a.public_ip),
                    )
                })
                .collect();
            let choice = choose_subnet(conf, &leased, ip, req.previous)?;
            let (key, cond, replaced) = match choice {
                Choice::Existing(s) => {
                    let e = entries
                        .iter()
                        .find(|e| e.subnet == s && e.attrs.is_some_and(|a| a.public_ip == ip))
                        .ok_or_else(|| StoreError::Protocol("chosen lease vanished".into()))?;
                    let cond =
                        Compare::mod_revision(e.key.as_str(), CompareOp::Equal, e.mod_revision);
                    let ours = self.held().get(&s).map(|h| h.lease_id);
                    (e.key.clone(), cond, ours.filter(|id| *id == e.etcd_lease))
                }
                Choice::Previous(s) | Choice::Fresh(s) => {
                    let key = self.shared.keys.subnet(&s);
                    (
                        key.clone(),
                        Compare::version(key, CompareOp::Equal, 0),
                        None,
                    )
                }
            };
            let put = TxnOp::put(
                key.as_str(),
                value.as_str(),
                Some(PutOptions::new().with_lease(lease_id)),
            );
            if self.shared.txn("acquire", cond, put).await? {
                debug!(subnet = %choice.subnet(), ?choice, attempt, "etcd: lease acquired");
                return Ok((choice.subnet(), key, replaced));
            }
            debug!(subnet = %choice.subnet(), attempt, "etcd: lost the race for a subnet; reading again");
        }
        Err(conflict("acquire", attempts))
    }

    async fn renew_impl(&self, lease: &Lease, ttl: Duration) -> Result<Lease, StoreError> {
        let key = self.key_of(&lease.subnet);
        let (lease_id, expiration) = self.grant(ttl.as_secs()).await?;
        let value = lease.attrs.to_json();
        let attempts = self.shared.opts.attempts.max(1);
        let mut outcome = Err(conflict("renew", attempts));
        for _ in 0..attempts {
            let kv = match self.shared.get(&key).await {
                Ok(kv) => kv,
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            };
            let Some(kv) = kv.filter(|kv| holds(kv, lease.attrs.public_ip)) else {
                outcome = Err(StoreError::LeaseLost {
                    subnet: lease.subnet,
                });
                break;
            };
            let cond = Compare::mod_revision(key.as_str(), CompareOp::Equal, kv.mod_revision());
            let put = TxnOp::put(
                key.as_str(),
                value.as_str(),
                Some(PutOptions::new().with_lease(lease_id)),
            );
            match self.shared.txn("renew", cond, put).await {
                Ok(true) => {
                    outcome = Ok(());
                    break;
                }
                Ok(false) => continue,
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        match outcome {
            Ok(()) => {
                let old = self.held().insert(lease.subnet, Held { key, lease_id });
                if let Some(old) = old.filter(|h| h.lease_id != lease_id) {
                    self.revoke_quietly(old.lease_id).await;
                }
                Ok(Lease {
                    subnet: lease.subnet,
                    attrs: lease.attrs,
                    expiration,
                })
            }
            Err(e) => {
                self.undo_grant(lease_id, &e).await;
                if matches!(e, StoreError::LeaseLost { .. }) {
                    self.forget(&lease.subnet).await;
                }
                Err(e)
            }
        }
    }

    async fn release_impl(&self, lease: &Lease) -> Result<(), StoreError> {
        let key = self.key_of(&lease.subnet);
        let attempts = self.shared.opts.attempts.max(1);
        let mut done = false;
        for _ in 0..attempts {
            let Some(kv) = self.shared.get(&key).await? else {
                done = true;
                break;
            };
            if !holds(&kv, lease.attrs.public_ip) {
                debug!(
                    key,
                    "etcd: release: the subnet is no longer ours; left alone"
                );
                done = true;
                break;
            }
            let cond = Compare::mod_revision(key.as_str(), CompareOp::Equal, kv.mod_revision());
            if self
                .shared
                .txn("release", cond, TxnOp::delete(key.as_str(), None))
                .await?
            {
                done = true;
                break;
            }
        }
        if !done {
            return Err(conflict("release", attempts));
        }
        self.forget(&lease.subnet).await;
        Ok(())
    }

    async fn config_impl(&self) -> Result<NetConf, StoreError> {
        let kv = self
            .shared
            .get(&self.shared.keys.config)
            .await?
            .ok_or(StoreError::NoConfig)?;
        let v = serde_json::from_slice(kv.value()).map_err(|error| ConfigError::Json {
            doc: Doc::NetConf,
            error,
        })?;
        Ok(NetConf::from_value(&v)?)
    }

    async fn list_impl(&self) -> Result<Snapshot, StoreError> {
        let (revision, entries) = self.read_subnets().await?;
        let now = SystemTime::now();
        let shared = &self.shared;
        let looked_up: Vec<(Entry, LeaseAttrs, Option<i64>)> =
            stream::iter(entries.into_iter().filter_map(|e| e.attrs.map(|a| (e, a))))
                .map(|(e, a)| async move {
                    let ttl = shared.remaining_ttl(e.etcd_lease).await?;
                    Ok::<_, StoreError>((e, a, ttl))
                })
                .buffered(TTL_LOOKUPS_IN_FLIGHT)
                .try_collect()
                .await?;
        let mut leases: Vec<Lease> = Vec::with_capacity(looked_up.len());
        for (e, attrs, ttl) in looked_up {
            let expiration = match ttl {
                None => unix_secs(now + NO_LEASE_HORIZON),
                // Expired: etcd is deleting the key at a later revision.
                Some(t) if t < 0 => continue,
                Some(t) => expiration_at(now, t),
            };
            leases.push(Lease {
                subnet: e.subnet,
                attrs,
                expiration,
            });
        }
        leases.sort_by_key(|l| l.subnet);
        leases.dedup_by(|b, a| {
            let dup = a.subnet == b.subnet;
            if dup {
                warn!(subnet = %a.subnet, "etcd: two keys lease one subnet; listing the first");
            }
            dup
        });
        Ok(Snapshot {
            revision: u64::try_from(revision).unwrap_or(0),
            leases,
        })
    }
}

impl LeaseStore for EtcdStore {
    fn config(&self) -> BoxFuture<'_, Result<NetConf, StoreError>> {
        Box::pin(self.config_impl())
    }

    fn acquire(&self, req: AcquireRequest) -> BoxFuture<'_, Result<Lease, StoreError>> {
        Box::pin(self.acquire_impl(req))
    }

    fn renew(&self, lease: &Lease, ttl: Duration) -> BoxFuture<'_, Result<Lease, StoreError>> {
        let lease = lease.clone();
        Box::pin(async move { self.renew_impl(&lease, ttl).await })
    }

    fn release(&self, lease: &Lease) -> BoxFuture<'_, Result<(), StoreError>> {
        let lease = lease.clone();
        Box::pin(async move { self.release_impl(&lease).await })
    }

    fn list(&self) -> BoxFuture<'_, Result<Snapshot, StoreError>> {
        Box::pin(self.list_impl())
    }

    fn watch(&self, after: u64) -> BoxFuture<'_, Result<WatchStream, StoreError>> {
        Box::pin(watch::open::<watch::Leases>(
            Arc::clone(&self.shared),
            after,
        ))
    }
}

/// A lease value (flannel's JSON) from etcd's bytes.
fn parse_lease_value(v: &[u8]) -> Result<LeaseAttrs, ConfigError> {
    let v = serde_json::from_slice(v).map_err(|error| ConfigError::Json {
        doc: Doc::Lease,
        error,
    })?;
    LeaseAttrs::from_value(&v)
}

/// Whether `kv` holds a lease carrying `ip`.
fn holds(kv: &KeyValue, ip: Ipv4Addr) -> bool {
    parse_lease_value(kv.value()).is_ok_and(|a| a.public_ip == ip)
}

/// Seconds since the epoch `ttl_secs` after `now` (`now` for a negative TTL).
fn expiration_at(now: SystemTime, ttl_secs: i64) -> u64 {
    unix_secs(now).saturating_add(u64::try_from(ttl_secs).unwrap_or(0))
}

fn conflict(what: &str, attempts: u32) -> StoreError {
    StoreError::Unavailable(format!(
        "{what}: gave up after {attempts} attempts lost to concurrent changes"
    ))
}

#[cfg(test)]
#[path = "etcd_tests.rs"]
mod tests;
