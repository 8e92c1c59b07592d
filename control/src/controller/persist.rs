//! The state file: loading it at start, and the persister task that writes
//! the registry after every change before anyone is told about it.
//!
//! A write is crash-safe: the new state goes to `<state-file>.tmp`, is
//! fsynced, renamed over the state file, and the directory is fsynced, so
//! that after `kill -9` or a power cut the file holds either the old state
//! or the new one, whole. Writes are grouped: the persister writes the
//! latest state, so that changes made while one write runs share the next
//! one (one fsync for many concurrent acquires). A request is answered only
//! once the persister reports a durable revision at least as high as its
//! change's ([`Persist::wait_durable`]); a failed write fails the requests
//! waiting on it with 503 and is retried.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use super::hub::Hubs;
use super::telemetry::Telemetry;
use super::{lock, ControllerError};
use crate::registry::Registry;

/// How long the persister waits before retrying a failed write.
const RETRY: Duration = Duration::from_secs(1);

/// What is on disk.
#[derive(Debug, Clone, Default)]
pub(crate) struct Durable {
    /// Every change up to this revision is written.
    pub(crate) revision: u64,
    /// The last write failed: the revision it tried to write, and why.
    pub(crate) failure: Option<(u64, Arc<str>)>,
}

/// Why a change is not known to be durable.
#[derive(Debug)]
pub(crate) enum NotDurable {
    /// The write failed (the message says why); it is retried.
    WriteFailed(Arc<str>),
    /// The controller stopped before writing it.
    Stopped,
}

/// The persister's side that request handlers see.
#[derive(Debug)]
pub(crate) struct Persist {
    path: PathBuf,
    wake: Notify,
    status: watch::Sender<Durable>,
}

impl Persist {
    /// A persister for `path`, where revision `durable` is already written.
    pub(crate) fn new(path: PathBuf, durable: u64) -> Persist {
        Persist {
            path,
            wake: Notify::new(),
            status: watch::Sender::new(Durable {
                revision: durable,
                failure: None,
            }),
        }
    }

    /// Why the last write failed, while it has not been written since.
    pub(crate) fn failure(&self) -> Option<String> {
        self.status
            .borrow()
            .failure
            .as_ref()
            .map(|(revision, why)| format!("revision {revision} not written: {why}"))
    }

    /// Tells the persister that the registry changed.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Waits until `revision` is on disk.
    pub(crate) async fn wait_durable(&self, revision: u64) -> Result<(), NotDurable> {
        let mut rx = self.status.subscribe();
        loop {
            {
                let d = rx.borrow_and_update();
                if d.revision >= revision {
                    return Ok(());
                }
                if let Some((tried, why)) = &d.failure {
                    if *tried >= revision {
                        return Err(NotDurable::WriteFailed(why.clone()));
                    }
                }
            }
            if rx.changed().await.is_err() {
                return Err(NotDurable::Stopped);
            }
        }
    }

    /// The persister task: writes the registry whenever it is ahead of the
    /// disk, then publishes the written changes to the watchers. On `stop`
    /// it writes what is left and returns.
    pub(crate) async fn run(
        &self,
        registry: &Mutex<Registry>,
        hubs: &Hubs,
        telemetry: &Telemetry,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            // A dropped sender stops too.
            let stopping = *stop.borrow() || stop.has_changed().is_err();
            let durable = self.status.borrow().revision;
            let pending = {
                let reg = lock(registry);
                (reg.revision() > durable).then(|| (reg.revision(), reg.to_json()))
            };
            let Some((revision, doc)) = pending else {
                if stopping {
                    return;
                }
                tokio::select! {
                    () = self.wake.notified() => {}
                    _ = stop.changed() => {}
                }
                continue;
            };
            let path = self.path.clone();
            let started = std::time::Instant::now();
            let written = match doc {
                Ok(bytes) => tokio::task::spawn_blocking(move || write_atomic(&path, &bytes))
                    .await
                    .unwrap_or_else(|e| Err(io::Error::other(e))),
                Err(e) => Err(io::Error::other(e)),
            };
            telemetry.state_written(started.elapsed().as_secs_f64(), written.is_ok());
            match written {
                Ok(()) => {
                    hubs.publish(registry, revision);
                    self.status.send_replace(Durable {
                        revision,
                        failure: None,
                    });
                }
                Err(e) => {
                    let why: Arc<str> =
                        format!("cannot write state file {}: {e}", self.path.display()).into();
                    tracing::error!(revision, "{why}");
                    self.status
                        .send_modify(|d| d.failure = Some((revision, why)));
                    if stopping {
                        return;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(RETRY) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        }
    }
}

/// Reads the state file; `None` when there is none.
pub(crate) fn load(path: &Path) -> Result<Option<Registry>, ControllerError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(ControllerError::Io {
                what: "reading the state file",
                path: path.to_owned(),
                error,
            })
        }
    };
    Registry::from_json(&bytes)
        .map(Some)
        .map_err(|error| ControllerError::State {
            path: path.to_owned(),
            error,
        })
}

/// Replaces `path` with `bytes`, crash-safely (see the module docs).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = temp_path(path);
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

/// `<path>.tmp`, beside it (a rename stays in one file system).
fn temp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}
