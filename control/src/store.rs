//! The lease store: one interface in front of the two places a cluster
//! keeps its network config and subnet leases, twill's embedded controller
//! (`crate::client`) and etcd in flannel's layout (`crate::etcd`).
//!
//! The model is flannel's `subnet.Manager`: get the network config, acquire
//! a lease for this node, renew it before it expires, release it, and watch
//! every node's lease. What twill adds is a revision on every change, so
//! that a watcher that lost its connection resumes where it stopped
//! ([`LeaseStore::watch`] from its last revision) instead of re-reading the
//! world and guessing what it missed; when the store no longer has that
//! history ([`StoreError::Compacted`]) the watcher re-lists
//! ([`LeaseStore::list`]) and replaces its table.
//!
//! The futures are boxed so that the node agent can hold either store as an
//! `Arc<dyn LeaseStore>`; nothing here is on the packet path.

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::lease::LeaseAttrs;
use crate::netconf::NetConf;

/// flannel's lease time to live (`subnetTTL` in pkg/subnet/etcd/registry.go).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(24 * 3600);
/// The longest lease time to live the controller grants (and a node may be
/// configured with): flannel's, 24 h. Longer requests are refused.
pub const MAX_LEASE_TTL: Duration = DEFAULT_LEASE_TTL;
/// flannel's default renewal margin (`--subnet-lease-renew-margin`, 60 min):
/// a lease is renewed this long before it expires.
pub const DEFAULT_RENEW_MARGIN: Duration = Duration::from_secs(3600);
/// flannel's default etcd prefix.
pub const DEFAULT_ETCD_PREFIX: &str = "/coreos.com/network";

/// A subnet lease as every store hands it out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The leased subnet (a `/SubnetLen` of the Network).
    pub subnet: Ipv4Net,
    /// flannel's lease value: public IP, backend type and data.
    pub attrs: LeaseAttrs,
    /// When the lease expires unless renewed, in whole seconds since the
    /// Unix epoch (the store's clock).
    pub expiration: u64,
}

impl Lease {
    /// The expiration as a [`SystemTime`]. An expiration too far in the
    /// future for `SystemTime` (it comes from the network) reads as a time
    /// still thousands of years ahead, instead of overflowing (a panic).
    pub fn expires_at(&self) -> SystemTime {
        let mut secs = self.expiration;
        loop {
            if let Some(t) = UNIX_EPOCH.checked_add(Duration::from_secs(secs)) {
                return t;
            }
            secs /= 2;
        }
    }

    /// Whether the lease has expired at `now`.
    pub fn expired(&self, now: SystemTime) -> bool {
        // Whole seconds: floor(now) >= expiration exactly when now >= it.
        unix_secs(now) >= self.expiration
    }
}

/// Seconds since the Unix epoch of `t` (0 before the epoch).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What changed in the lease table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LeaseEvent {
    /// A lease was created or changed (acquired, renewed, taken over).
    Added {
        /// The lease as it now is.
        lease: Lease,
    },
    /// A lease was released or expired; its subnet left the table.
    Removed {
        /// The subnet that is no longer leased.
        subnet: Ipv4Net,
    },
}

impl LeaseEvent {
    /// The subnet the event is about.
    pub fn subnet(&self) -> Ipv4Net {
        match self {
            LeaseEvent::Added { lease } => lease.subnet,
            LeaseEvent::Removed { subnet } => *subnet,
        }
    }
}

/// One change, with the revision the store gave it. Revisions grow by at
/// least one per change, except that changes the store made at once (in
/// etcd, one transaction: a prefix deleted by hand, an etcd lease holding
/// several keys) share one revision; a stream yields those back to back and
/// never ends between them. A watch from revision `r` yields exactly the
/// changes with a revision above `r`, in order, each once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// The store's revision after this change.
    pub revision: u64,
    /// The change.
    #[serde(flatten)]
    pub event: LeaseEvent,
}

/// The whole lease table at one revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The store's revision the table is at; watch from here.
    pub revision: u64,
    /// Every live lease, in subnet order.
    pub leases: Vec<Lease>,
}

/// What a node asks for when it acquires a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcquireRequest {
    /// The lease value to store (its `public_ip` identifies the node: a
    /// live lease with the same public IP is reused, as flannel does).
    pub attrs: LeaseAttrs,
    /// The subnet this node held before (kept on its disk), tried second.
    pub previous: Option<Ipv4Net>,
    /// Time to live of the lease.
    pub ttl_secs: u64,
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store could not be reached or broke the connection; retry later
    /// (with backoff). The dataplane keeps its last table meanwhile.
    #[error("store unreachable: {0}")]
    Unavailable(String),
    /// The store refused our credentials.
    #[error("store refused the credentials: {0}")]
    Unauthorized(String),
    /// Every subnet between SubnetMin and SubnetMax is leased.
    #[error("out of subnets: all {count} subnets of {network} (/{subnet_len}) are leased")]
    OutOfSubnets {
        /// The cluster network.
        network: Ipv4Net,
        /// The subnet length.
        subnet_len: u8,
        /// How many subnets there are between SubnetMin and SubnetMax.
        count: u64,
    },
    /// The lease to renew or release is not (or no longer) ours: it
    /// expired, or another node holds the subnet now.
    #[error("lease for {subnet} not found or held by another node")]
    LeaseLost {
        /// The subnet.
        subnet: Ipv4Net,
    },
    /// The store no longer has the history from this revision: re-list.
    #[error("revision {requested} is compacted (oldest available {oldest}); re-list")]
    Compacted {
        /// The revision asked for.
        requested: u64,
        /// The oldest revision a watch can start from now.
        oldest: u64,
    },
    /// The store holds no network config yet (etcd: `<prefix>/config`).
    #[error("the lease store holds no network config")]
    NoConfig,
    /// A stored or received document is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A cluster object was refused: its value does not match its key, or
    /// is not what its kind must be (the message says why).
    #[error("object refused: {0}")]
    InvalidObject(String),
    /// The store holds as many cluster objects as it may; delete some, or
    /// raise the limit.
    #[error("too many objects: the store holds at most {limit}")]
    TooManyObjects {
        /// The limit.
        limit: u64,
    },
    /// The store answered something this client cannot read.
    #[error("store protocol error: {0}")]
    Protocol(String),
    /// TLS with the store failed (a certificate refused on either side,
    /// or a TLS file that cannot be used): the message says which and
    /// what to check. Not retried: it needs a new file or config.
    #[error("TLS: {0}")]
    Tls(String),
}

impl From<crate::tls::TlsError> for StoreError {
    fn from(e: crate::tls::TlsError) -> StoreError {
        StoreError::Tls(e.to_string())
    }
}

impl StoreError {
    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// A stream of lease changes, ending (with an error item, usually
/// [`StoreError::Unavailable`]) when the connection breaks.
pub type WatchStream = BoxStream<'static, Result<WatchEvent, StoreError>>;

/// The control plane as a node agent sees it.
pub trait LeaseStore: Send + Sync + std::fmt::Debug {
    /// The cluster's network config (flannel's net-conf.json).
    fn config(&self) -> BoxFuture<'_, Result<NetConf, StoreError>>;

    /// Acquires a lease: the live lease carrying `req.attrs.public_ip` if
    /// there is one (its value is updated), else `req.previous` if it is
    /// free and still within SubnetMin..=SubnetMax, else a free subnet,
    /// claimed atomically so that no two nodes ever hold one subnet.
    fn acquire(&self, req: AcquireRequest) -> BoxFuture<'_, Result<Lease, StoreError>>;

    /// Extends `lease` by `ttl`; fails with [`StoreError::LeaseLost`] if
    /// the subnet is no longer leased to `lease.attrs.public_ip`.
    fn renew(&self, lease: &Lease, ttl: Duration) -> BoxFuture<'_, Result<Lease, StoreError>>;

    /// Gives the lease up now (its subnet leaves every table). Releasing a
    /// lease that is already gone is not an error.
    fn release(&self, lease: &Lease) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Every live lease and the revision they are at.
    fn list(&self) -> BoxFuture<'_, Result<Snapshot, StoreError>>;

    /// Every change after `after` (a revision from [`LeaseStore::list`] or
    /// from the last event seen). Fails with [`StoreError::Compacted`] when
    /// that history is gone.
    fn watch(&self, after: u64) -> BoxFuture<'_, Result<WatchStream, StoreError>>;
}

/// How a subnet was chosen by [`choose_subnet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// A live lease already carries this node's public IP: reuse it.
    Existing(Ipv4Net),
    /// The subnet this node held before is free: take it back.
    Previous(Ipv4Net),
    /// A free subnet.
    Fresh(Ipv4Net),
}

impl Choice {
    /// The chosen subnet.
    pub fn subnet(self) -> Ipv4Net {
        match self {
            Choice::Existing(s) | Choice::Previous(s) | Choice::Fresh(s) => s,
        }
    }
}

/// Chooses the subnet for a node with `public_ip`, given the live leases
/// (`leased`: subnet and holder's public IP), flannel's order of
/// preference: the lease already carrying this public IP, then the subnet
/// held before, then a free one. A free subnet is searched from a start
/// derived from the public IP, so that nodes joining at once mostly try
/// different subnets (a store that claims atomically still has to check the
/// claim). Leases outside SubnetMin..=SubnetMax (a config change) are
/// neither reused nor handed out.
pub fn choose_subnet(
    conf: &NetConf,
    leased: &[(Ipv4Net, Ipv4Addr)],
    public_ip: Ipv4Addr,
    previous: Option<Ipv4Net>,
) -> Result<Choice, StoreError> {
    if let Some(&(s, _)) = leased
        .iter()
        .find(|(s, ip)| *ip == public_ip && conf.contains_subnet(s))
    {
        return Ok(Choice::Existing(s));
    }
    let taken: std::collections::HashSet<Ipv4Net> = leased.iter().map(|(s, _)| *s).collect();
    if let Some(p) = previous.filter(|p| conf.contains_subnet(p) && !taken.contains(p)) {
        return Ok(Choice::Previous(p));
    }
    let count = conf.subnet_count();
    let out = || StoreError::OutOfSubnets {
        network: conf.network,
        subnet_len: conf.subnet_len,
        count,
    };
    if count == 0 || taken.len() as u64 >= count {
        return Err(out());
    }
    let start = spread(public_ip) % count;
    let start = usize::try_from(start).unwrap_or(0);
    conf.subnets()
        .skip(start)
        .chain(conf.subnets().take(start))
        .find(|s| !taken.contains(s))
        .map(Choice::Fresh)
        .ok_or_else(out)
}

/// A well-mixed 64-bit value from an address (splitmix64's finaliser).
fn spread(ip: Ipv4Addr) -> u64 {
    let mut z = u64::from(u32::from(ip)).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
