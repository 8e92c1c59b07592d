//! The watch fan-out: every durable change is serialized once, as one
//! newline-terminated JSON line, and handed to every watcher through one
//! `tokio::sync::broadcast` channel (each receiver clones a refcounted
//! [`Bytes`], not the text).
//!
//! Only changes that are on disk are published (the persister calls
//! [`Hub::publish`] after each write), so a watcher never sees a revision
//! that a crash could take back. A new watcher is subscribed under the same
//! lock as publishing: its backlog (from the registry's log, up to the
//! published revision) and the channel together give every change after its
//! revision exactly once. A watcher that falls more than the channel's
//! capacity behind is lagged: its stream ends, and the client resumes from
//! its last revision (or re-lists).
//!
//! The hub is generic over the event type ([`Feed`]): the controller runs
//! one `Hub<WatchEvent>` for `/v1/watch` and one `Hub<ObjectEvent>` for
//! `/v1/objects/watch` ([`Hubs`]), each with its own channel, so that lease
//! watchers never wake for object changes (which can be large) and a burst
//! of object changes cannot make a lease watcher lag. Both share the one
//! revision space and are published together by the persister.

use std::convert::Infallible;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::{Bytes, BytesMut};
use futures::stream::{self, Stream};
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

use serde::Serialize;

use crate::objects::ObjectEvent;
use crate::registry::{Registry, Revisioned};
use crate::store::{StoreError, WatchEvent};

/// A kind of change the registry logs and a hub streams.
pub(crate) trait Feed: Revisioned + Serialize + Clone + Send + Sync + 'static {
    /// The registry's changes of this kind after `after`.
    fn events_after(reg: &Registry, after: u64) -> Result<Vec<Self>, StoreError>;
    /// The oldest revision a watch of this kind can start from.
    fn oldest(reg: &Registry) -> u64;
}

impl Feed for WatchEvent {
    fn events_after(reg: &Registry, after: u64) -> Result<Vec<Self>, StoreError> {
        reg.events_after(after)
    }
    fn oldest(reg: &Registry) -> u64 {
        reg.oldest_revision()
    }
}

impl Feed for ObjectEvent {
    fn events_after(reg: &Registry, after: u64) -> Result<Vec<Self>, StoreError> {
        reg.object_events_after(after)
    }
    fn oldest(reg: &Registry) -> u64 {
        reg.oldest_object_revision()
    }
}

/// The controller's two fan-outs: lease changes and object changes.
#[derive(Debug)]
pub(crate) struct Hubs {
    /// `/v1/watch`.
    pub(crate) leases: Hub<WatchEvent>,
    /// `/v1/objects/watch`.
    pub(crate) objects: Hub<ObjectEvent>,
}

impl Hubs {
    /// Both hubs, everything up to `published` durable.
    pub(crate) fn new(published: u64, capacity: usize) -> Hubs {
        Hubs {
            leases: Hub::new(published, capacity),
            objects: Hub::new(published, capacity),
        }
    }

    /// [`Hub::publish`] on both.
    pub(crate) fn publish(&self, registry: &Mutex<Registry>, upto: u64) {
        self.leases.publish(registry, upto);
        self.objects.publish(registry, upto);
    }

    /// [`Hub::heartbeat`] on both.
    pub(crate) fn heartbeat(&self) {
        self.leases.heartbeat();
        self.objects.heartbeat();
    }

    /// [`Hub::close`] on both.
    pub(crate) fn close(&self) {
        self.leases.close();
        self.objects.close();
    }
}

/// How many ready lines a stream joins into one write.
const BATCH: usize = 64;

/// One line of the watch stream.
#[derive(Debug, Clone)]
struct Line {
    /// The event's revision, or for a heartbeat the revision it reports.
    revision: u64,
    heartbeat: bool,
    bytes: Bytes,
}

/// Why a watch cannot start.
#[derive(Debug)]
pub(crate) enum SubscribeError {
    /// The history is gone (or the revision is from the future): re-list.
    Store(StoreError),
    /// The controller is stopping.
    Closed,
}

#[derive(Debug)]
struct Inner {
    /// `None` once closed.
    tx: Option<broadcast::Sender<Line>>,
    /// Every change up to this revision has been published.
    published: u64,
}

/// The fan-out of one kind of change. See the module docs.
#[derive(Debug)]
pub(crate) struct Hub<E> {
    inner: Mutex<Inner>,
    capacity: usize,
    kind: std::marker::PhantomData<fn() -> E>,
}

/// A new watcher: what it must be sent first, and the channel after that.
#[derive(Debug)]
pub(crate) struct Subscription<E> {
    published: u64,
    backlog: Vec<E>,
    rx: broadcast::Receiver<Line>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves consistent data here (every
    // critical section is a few assignments): go on.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<E: Feed> Hub<E> {
    /// A hub whose watchers may lag `capacity` lines behind; everything up
    /// to `published` is already durable.
    pub(crate) fn new(published: u64, capacity: usize) -> Hub<E> {
        let capacity = capacity.max(1);
        Hub {
            inner: Mutex::new(Inner {
                tx: Some(broadcast::channel(capacity).0),
                published,
            }),
            capacity,
            kind: std::marker::PhantomData,
        }
    }

    /// Publishes the registry's changes up to revision `upto` (now durable).
    pub(crate) fn publish(&self, registry: &Mutex<Registry>, upto: u64) {
        let mut inner = lock(&self.inner);
        if upto <= inner.published {
            return;
        }
        let events = E::events_after(&lock(registry), inner.published);
        match (events, inner.tx.as_ref()) {
            (Ok(events), Some(tx)) => {
                for e in events.into_iter().take_while(|e| e.revision() <= upto) {
                    let line = Line {
                        revision: e.revision(),
                        heartbeat: false,
                        bytes: json_line(&e),
                    };
                    // An error only says that nobody is watching.
                    let _ = tx.send(line);
                }
            }
            (Err(e), Some(_)) => {
                // More changes than the log holds happened during one write:
                // the watchers cannot be given them. End every stream; each
                // client resumes or re-lists.
                tracing::warn!(error = %e, "watch log overrun during a state write; restarting all watches");
                inner.tx = Some(broadcast::channel(self.capacity).0);
            }
            (_, None) => {}
        }
        inner.published = upto;
    }

    /// Sends `{"heartbeat":REV}` to every watcher.
    pub(crate) fn heartbeat(&self) {
        let inner = lock(&self.inner);
        if let Some(tx) = &inner.tx {
            let _ = tx.send(heartbeat_line(inner.published));
        }
    }

    /// Ends every stream (after what it was already sent) and refuses new
    /// ones.
    pub(crate) fn close(&self) {
        lock(&self.inner).tx = None;
    }

    /// How many watchers are connected.
    pub(crate) fn watchers(&self) -> usize {
        lock(&self.inner)
            .tx
            .as_ref()
            .map_or(0, |tx| tx.receiver_count())
    }

    /// Starts a watch of every change after `after`.
    pub(crate) fn subscribe(
        &self,
        registry: &Mutex<Registry>,
        after: u64,
    ) -> Result<Subscription<E>, SubscribeError> {
        let inner = lock(&self.inner);
        let tx = inner.tx.as_ref().ok_or(SubscribeError::Closed)?;
        let published = inner.published;
        let reg = lock(registry);
        if after > published {
            // Clients only ever see published revisions: this one comes from
            // a state this controller does not have.
            return Err(SubscribeError::Store(StoreError::Compacted {
                requested: after,
                oldest: E::oldest(&reg).min(published),
            }));
        }
        let mut backlog = E::events_after(&reg, after).map_err(SubscribeError::Store)?;
        backlog.retain(|e| e.revision() <= published);
        Ok(Subscription {
            published,
            backlog,
            rx: tx.subscribe(),
        })
    }
}

impl<E: Feed> Subscription<E> {
    /// The response body: a heartbeat with the published revision, the
    /// backlog, then every published line until the hub closes or this
    /// watcher lags.
    pub(crate) fn into_stream(self) -> impl Stream<Item = Result<Bytes, Infallible>> + Send {
        let mut first = BytesMut::new();
        first.extend_from_slice(&heartbeat_line(self.published).bytes);
        let last = self.backlog.last().map_or(self.published, |e| e.revision());
        for e in &self.backlog {
            first.extend_from_slice(&json_line(e));
        }
        let state = (Some(first.freeze()), self.rx, last.max(self.published));
        stream::unfold(state, |(first, mut rx, mut last)| async move {
            if let Some(first) = first {
                return Some((Ok(first), (None, rx, last)));
            }
            let mut out = BytesMut::new();
            let mut keep = |line: Line, out: &mut BytesMut| {
                if line.heartbeat || line.revision > last {
                    if !line.heartbeat {
                        last = line.revision;
                    }
                    out.extend_from_slice(&line.bytes);
                }
            };
            loop {
                match rx.recv().await {
                    Ok(line) => keep(line, &mut out),
                    Err(RecvError::Lagged(n)) => {
                        tracing::debug!(missed = n, "watcher lagged; ending its stream");
                        return None;
                    }
                    Err(RecvError::Closed) => return None,
                }
                for _ in 1..BATCH {
                    match rx.try_recv() {
                        Ok(line) => keep(line, &mut out),
                        Err(TryRecvError::Empty) => break,
                        // Send what we have; the next recv() ends the stream.
                        Err(_) => break,
                    }
                }
                if !out.is_empty() {
                    break;
                }
            }
            Some((Ok(out.freeze()), (None, rx, last)))
        })
    }
}

/// `event` as one JSON line.
fn json_line<E: Serialize>(event: &E) -> Bytes {
    let mut v = serde_json::to_vec(event).unwrap_or_else(|e| {
        // Cannot happen (plain structs); if it did, a line that no client
        // reads as an event makes it end the watch and re-list, instead of
        // missing the change silently.
        tracing::error!(error = %e, "cannot serialize a watch event");
        br#"{"error":"cannot serialize a watch event"}"#.to_vec()
    });
    v.push(b'\n');
    Bytes::from(v)
}

fn heartbeat_line(revision: u64) -> Line {
    let v = format!("{{\"heartbeat\":{revision}}}\n").into_bytes();
    Line {
        revision,
        heartbeat: true,
        bytes: Bytes::from(v),
    }
}

#[cfg(test)]
#[path = "hub_tests.rs"]
mod tests;
