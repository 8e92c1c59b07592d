//! The etcd store's watches: one etcd watch on a key prefix, from revision
//! `after + 1`, turned into events of a [`Feed`]: [`Leases`] watches
//! `<prefix>/subnets/` and yields [`WatchEvent`]s; the cluster objects'
//! feed (`super::objects`) watches the objects prefix. Everything below
//! but the first point holds for both.
//!
//! - A PUT is [`LeaseEvent::Added`], its expiration from the remaining TTL
//!   of the key's etcd lease when the event is read (one `LeaseTimeToLive`
//!   call, as flannel does): an event read after its etcd lease was
//!   replaced by a renewal, or expired, shows as expired (`now`), and the
//!   renewal's or the expiry's own event follows. A DELETE, whether
//!   a release or an etcd lease expiring, is [`LeaseEvent::Removed`]. A PUT
//!   whose value is no lease is reported as Removed (and logged): a list at
//!   that revision does not show the subnet either, so a table built from
//!   a list and then the watch always equals a later list. Keys that name
//!   no subnet are skipped and logged.
//! - The revision of an event is its key's `mod_revision` (for a DELETE,
//!   etcd sets it to the revision of the deletion). Changes made in one
//!   etcd transaction (a prefix deleted by hand, one etcd lease holding
//!   several keys) share a revision; they come in one etcd response and
//!   the stream yields them back to back, and it never ends between two
//!   of them, so resuming from the last revision seen misses nothing.
//! - History that is gone: [`watch`](crate::LeaseStore::watch) checks
//!   before it returns that revision `after + 1` is still there (a range at
//!   that revision), and fails with [`StoreError::Compacted`] if not;
//!   etcd compacting past a slow watch later ends the stream with the same
//!   error. A revision above the store's (etcd was replaced or restored
//!   from a backup) is reported as Compacted too, with `oldest: 0`: the
//!   remedy, a re-list, is the same.
//! - Liveness: a stream that heard nothing from etcd for
//!   [`EtcdOptions::watch_progress_interval`](super::EtcdOptions) sends a
//!   progress request (etcd ≥ 3.4 answers it at once, even with nothing to
//!   report) and ends with [`StoreError::Unavailable`] when no answer comes
//!   within `watch_progress_timeout`. A stopped, hung or unreachable etcd
//!   is so noticed within a few seconds; a closed connection at once.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use etcd_client::{GetOptions, KeyValue, WatchOptions, WatchResponse};
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt};
use tokio::time::timeout;
use tracing::warn;

use super::conn::{is_compacted, is_future_revision, map_err, Keys, Shared};
use super::{expiration_at, parse_lease_value, NO_LEASE_HORIZON};
use crate::store::{unix_secs, Lease, LeaseEvent, StoreError, WatchEvent};

/// etcd's event types (mvccpb.Event.EventType).
const PUT: i32 = 0;
const DELETE: i32 = 1;

/// What one watch follows: a key prefix, and how an etcd event under it
/// becomes an event of its own.
pub(super) trait Feed: Send + Sync + 'static {
    /// The events yielded.
    type Event: Send + 'static;

    /// The key prefix watched.
    fn prefix(keys: &Keys) -> &str;

    /// The revision of an event.
    fn revision(event: &Self::Event) -> u64;

    /// The event for an etcd PUT (`put`) or DELETE of `kv` at `revision`;
    /// `None` to skip it (the feed logs why).
    fn decode<'a>(
        shared: &'a Shared,
        put: bool,
        kv: &'a KeyValue,
        revision: u64,
    ) -> BoxFuture<'a, Result<Option<Self::Event>, StoreError>>;
}

/// The lease table's feed: `<prefix>/subnets/` as [`WatchEvent`]s.
pub(super) struct Leases;

impl Feed for Leases {
    type Event = WatchEvent;

    fn prefix(keys: &Keys) -> &str {
        &keys.subnets
    }

    fn revision(event: &WatchEvent) -> u64 {
        event.revision
    }

    fn decode<'a>(
        shared: &'a Shared,
        put: bool,
        kv: &'a KeyValue,
        revision: u64,
    ) -> BoxFuture<'a, Result<Option<WatchEvent>, StoreError>> {
        Box::pin(async move {
            let key = String::from_utf8_lossy(kv.key());
            let subnet = match shared.keys.parse_subnet(kv.key()) {
                Ok(s) => s,
                Err(e) => {
                    warn!(%key, error = %e, "etcd watch: ignoring a key that names no subnet");
                    return Ok(None);
                }
            };
            if !put {
                return Ok(Some(WatchEvent {
                    revision,
                    event: LeaseEvent::Removed { subnet },
                }));
            }
            let event = match parse_lease_value(kv.value()) {
                Ok(attrs) => {
                    let now = SystemTime::now();
                    let expiration = match shared.remaining_ttl(kv.lease()).await? {
                        None => unix_secs(now + NO_LEASE_HORIZON),
                        Some(t) => expiration_at(now, t),
                    };
                    LeaseEvent::Added {
                        lease: Lease {
                            subnet,
                            attrs,
                            expiration,
                        },
                    }
                }
                Err(e) => {
                    warn!(%key, error = %e, "etcd watch: the value is no lease; reported as removed");
                    LeaseEvent::Removed { subnet }
                }
            };
            Ok(Some(WatchEvent { revision, event }))
        })
    }
}

/// Opens a watch of feed `F` (see the module docs).
pub(super) async fn open<F: Feed>(
    shared: Arc<Shared>,
    after: u64,
) -> Result<BoxStream<'static, Result<F::Event, StoreError>>, StoreError> {
    let start = i64::try_from(after)
        .ok()
        .and_then(|a| a.checked_add(1))
        .ok_or_else(|| StoreError::Protocol(format!("watch: revision {after} is out of range")))?;
    let prefix = F::prefix(&shared.keys);
    let opts = WatchOptions::new().with_prefix().with_start_revision(start);
    let mut ws = shared
        .call("watch", |c| {
            let opts = opts.clone();
            async move { c.watch_client().watch(prefix, Some(opts)).await }
        })
        .await?;
    // etcd answers the create request first.
    let first = receive_within(&mut ws, shared.opts.request_timeout).await?;
    let mut state = State::<F> {
        shared: Arc::clone(&shared),
        ws,
        pending: VecDeque::new(),
        last: after,
        failed: None,
        done: false,
    };
    state.absorb(first).await?;
    state.check_history(start).await?;
    Ok(stream::unfold(state, State::next).boxed())
}

/// The next message on `ws`, or `None` when none came within `within`.
async fn message_within(
    ws: &mut etcd_client::WatchStream,
    within: Duration,
) -> Option<Result<WatchResponse, StoreError>> {
    let r = timeout(within, ws.message()).await.ok()?;
    Some(match r {
        Ok(Some(resp)) => Ok(resp),
        Ok(None) => Err(StoreError::Unavailable(
            "watch: etcd closed the watch stream".into(),
        )),
        Err(e) => Err(map_err("watch", &e)),
    })
}

/// The next message on `ws` within `within`, else Unavailable.
async fn receive_within(
    ws: &mut etcd_client::WatchStream,
    within: Duration,
) -> Result<WatchResponse, StoreError> {
    message_within(ws, within).await.unwrap_or_else(|| {
        Err(StoreError::Unavailable(format!(
            "watch: no answer from etcd within {within:?}"
        )))
    })
}

struct State<F: Feed> {
    shared: Arc<Shared>,
    ws: etcd_client::WatchStream,
    /// Events of whole etcd responses, not yet yielded.
    pending: VecDeque<F::Event>,
    /// The revision of the last event taken in (`after` at first).
    last: u64,
    /// The error that ends the stream once `pending` is drained.
    failed: Option<StoreError>,
    done: bool,
}

impl<F: Feed> State<F> {
    async fn next(mut self) -> Option<(Result<F::Event, StoreError>, State<F>)> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some((Ok(ev), self));
            }
            if self.done {
                return None;
            }
            if let Some(e) = self.failed.take() {
                self.done = true;
                return Some((Err(e), self));
            }
            let taken = match self.receive().await {
                Ok(resp) => self.absorb(resp).await,
                Err(e) => Err(e),
            };
            if let Err(e) = taken {
                self.failed = Some(e);
            }
        }
    }

    /// The next message, asking for a progress report after a silence.
    async fn receive(&mut self) -> Result<WatchResponse, StoreError> {
        let opts = &self.shared.opts;
        let (interval, grace) = (opts.watch_progress_interval, opts.watch_progress_timeout);
        if let Some(r) = message_within(&mut self.ws, interval).await {
            return r;
        }
        if let Err(e) = self.ws.request_progress().await {
            return Err(map_err("watch: progress request", &e));
        }
        message_within(&mut self.ws, grace)
            .await
            .unwrap_or_else(|| {
                Err(StoreError::Unavailable(format!(
                    "watch: etcd sent nothing for {interval:?} and did not answer a progress \
                 request within {grace:?}"
                )))
            })
    }

    /// Turns one etcd response into events; all of them or none.
    async fn absorb(&mut self, resp: WatchResponse) -> Result<(), StoreError> {
        if resp.canceled() {
            return Err(self.cancelled(&resp));
        }
        let header_rev = resp.header().map_or(0, |h| h.revision());
        let mut out = Vec::with_capacity(resp.events().len());
        for ev in resp.events() {
            let Some(kv) = ev.kv() else {
                warn!("etcd watch: an event without a key; ignored");
                continue;
            };
            let rev = if kv.mod_revision() > 0 {
                kv.mod_revision()
            } else {
                header_rev
            };
            let revision = u64::try_from(rev).unwrap_or(0);
            let put = match ev.0.r#type {
                PUT => true,
                DELETE => false,
                other => {
                    let key = String::from_utf8_lossy(kv.key());
                    warn!(%key, event_type = other, "etcd watch: unknown event type; ignored");
                    continue;
                }
            };
            if let Some(event) = F::decode(&self.shared, put, kv, revision).await? {
                out.push(event);
            }
        }
        if let Some(last) = out.last() {
            self.last = F::revision(last);
        }
        self.pending.extend(out);
        Ok(())
    }

    /// The error for a watch etcd cancelled.
    fn cancelled(&self, resp: &WatchResponse) -> StoreError {
        if resp.compact_revision() > 0 {
            return StoreError::Compacted {
                requested: self.last,
                oldest: u64::try_from(resp.compact_revision()).unwrap_or(0),
            };
        }
        let reason = resp.cancel_reason();
        if reason.contains("permission denied") {
            StoreError::Unauthorized(format!("watch: {reason}"))
        } else {
            StoreError::Unavailable(format!("watch: etcd cancelled the watch: {reason}"))
        }
    }

    /// Fails with Compacted if etcd no longer has revision `start` (or is
    /// behind `start - 1`, the revision the caller has seen).
    async fn check_history(&mut self, start: i64) -> Result<(), StoreError> {
        let after = self.last;
        let shared = Arc::clone(&self.shared);
        let prefix = F::prefix(&shared.keys);
        let count = GetOptions::new().with_prefix().with_count_only();
        let now = shared
            .call("watch: read revision", |c| {
                let count = count.clone();
                async move { c.kv_client().get(prefix, Some(count)).await }
            })
            .await?;
        let current = u64::try_from(now.header().map_or(0, |h| h.revision())).unwrap_or(0);
        if after > current {
            warn!(
                after,
                current, "etcd watch: the revision asked for is ahead of etcd's (replaced?)"
            );
            return Err(StoreError::Compacted {
                requested: after,
                oldest: 0,
            });
        }
        if after == current {
            // Nothing to replay; a compaction is at most at `current`.
            return Ok(());
        }
        let at_start = count.with_revision(start);
        let answer = shared
            .try_call("watch: check history", |c| {
                let at_start = at_start.clone();
                async move { c.kv_client().get(prefix, Some(at_start)).await }
            })
            .await?;
        match answer {
            Ok(_) => Ok(()),
            Err(e) if is_future_revision(&e) => Ok(()),
            Err(e) if is_compacted(&e) => {
                // etcd's own answer, with the compaction revision, follows
                // on the watch within its sync period (100 ms).
                let oldest = match receive_within(&mut self.ws, shared.opts.request_timeout).await {
                    Ok(r) if r.compact_revision() > 0 => {
                        u64::try_from(r.compact_revision()).unwrap_or(0)
                    }
                    _ => 0,
                };
                Err(StoreError::Compacted {
                    requested: after,
                    oldest,
                })
            }
            Err(e) => Err(map_err("watch: check history", &e)),
        }
    }
}
