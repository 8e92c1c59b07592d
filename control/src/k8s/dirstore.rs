//! A directory of manifests as an [`ObjectStore`]: the cluster objects of a
//! node with a static configuration (no controller, no etcd).
//!
//! Every `*.json`, `*.yaml` and `*.yml` file directly in the directory
//! (not below it; hidden files, such as the store's own temporary files,
//! skipped) is read with [`parse_manifests`], in file name order. The
//! same object in two files: the later file by name wins (logged).
//!
//! A file that does not parse is logged (`tracing::warn!`, once per new
//! error) and, if an earlier scan read it, its last good version is kept:
//! on a running node a half-saved edit or a typo must not take a Service's
//! frontends away. A file that never parsed contributes nothing. A file
//! that is removed takes its objects with it. Write files by rename (as
//! most editors, `put` and Kubernetes' ConfigMap volumes do): a file
//! truncated and rewritten in place can be read half-written by a poll,
//! and an empty file is a valid file without objects.
//!
//! Revisions are the store's own: 1 at the first scan, one more per scan
//! that changed something (the changes of one scan share it, as one etcd
//! transaction does). The store keeps its current state and a bounded log
//! of the latest changes; a watch from a revision the log no longer
//! covers (or from before the first scan, or from the future, such as a
//! revision of an earlier process) fails with [`StoreError::Compacted`]:
//! re-list. Scans happen on [`ObjectStore::list`], on writes, and every
//! `poll` while a watch runs.
//!
//! [`ObjectStore::put`] writes `<resource>.<namespace>.<name>.json`
//! (`<resource>.<name>.json` for a cluster-scoped kind, such as
//! `namespaces.prod.json`; temporary file, then rename);
//! [`ObjectStore::delete`] removes that file. An object defined in another file (written by hand) is changed
//! there: put and delete refuse it, naming the file.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::StreamExt;
use serde_json::Value;

use super::{parse_manifests, Object};
use crate::objects::{
    ObjectChange, ObjectEvent, ObjectKey, ObjectList, ObjectStore, ObjectWatch, StoredObject,
};
use crate::store::StoreError;

/// How many changes the store remembers for watches that fall behind. A
/// change is a key and a shared text, so even a directory rewritten whole
/// (10,000 Services and their slices) fits, and a watcher gets it as
/// changes rather than a re-list.
const LOG_LIMIT: usize = 1 << 16;

/// A directory of manifests as an [`ObjectStore`] (see the module doc).
#[derive(Debug, Clone)]
pub struct DirStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    poll: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// 0 before the first scan.
    revision: u64,
    /// The objects of every readable file, its last good version, and
    /// the file's stamp when that was read.
    files: BTreeMap<String, FileObjects>,
    /// The merged objects.
    current: BTreeMap<ObjectKey, Entry>,
    /// Every change with a revision above `log_base`.
    log: VecDeque<Change>,
    log_base: u64,
    /// The last error logged per file, to log each new one once.
    errors: BTreeMap<String, String>,
    /// Keys defined twice, as last logged: (key, loser file, winner file).
    duplicates: BTreeSet<(ObjectKey, String, String)>,
}

#[derive(Debug)]
struct Entry {
    text: Text,
    revision: u64,
}

/// An object as compact JSON text, shared by the file that defines it, the
/// merged state and the log. serde_json's `Value` of an EndpointSlice with
/// ten endpoints takes about ten times its text: held as text, 10,000
/// Services and their slices cost tens of MiB instead of hundreds. Maps
/// serialize with sorted keys, so equal objects have equal text.
type Text = Arc<str>;

/// One logged change: the object's new text, or `None` for a deletion.
#[derive(Debug, Clone)]
struct Change {
    revision: u64,
    key: ObjectKey,
    text: Option<Text>,
}

impl Change {
    /// The change as a watcher sees it.
    fn event(&self) -> Result<ObjectEvent, StoreError> {
        let change = match &self.text {
            Some(text) => ObjectChange::Put {
                object: stored(&self.key, self.revision, text)?,
            },
            None => ObjectChange::Deleted {
                key: self.key.clone(),
            },
        };
        Ok(ObjectEvent {
            revision: self.revision,
            change,
        })
    }
}

/// The stored object of a logged or current text.
fn stored(key: &ObjectKey, revision: u64, text: &str) -> Result<StoredObject, StoreError> {
    let object = serde_json::from_str(text)
        .map_err(|e| StoreError::Protocol(format!("{key}: stored text does not read back: {e}")))?;
    Ok(StoredObject {
        key: key.clone(),
        revision,
        object,
    })
}

/// What one file defined. The values are shared with `current`: a
/// directory of 10,000 Services is held once, not once per table.
#[derive(Debug, Clone)]
struct FileObjects {
    stamp: Option<Stamp>,
    objects: Vec<(ObjectKey, Text)>,
}

/// What says a file is unchanged since it was read: a poll reads and
/// parses only files whose stamp moved (a write by rename gives a new
/// inode; one in place a new size or modification time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

impl DirStore {
    /// A store over `dir`, rescanned every `poll` while watched. Nothing is
    /// read until the first call.
    pub fn new(dir: impl Into<PathBuf>, poll: Duration) -> DirStore {
        DirStore {
            inner: Arc::new(Inner {
                dir: dir.into(),
                poll,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The file [`ObjectStore::put`] writes `key` to:
    /// `<resource>.<namespace>.<name>.json`, or `<resource>.<name>.json`
    /// for a cluster-scoped kind (`namespaces.prod.json`).
    pub fn file_name(key: &ObjectKey) -> String {
        if key.kind.namespaced() {
            format!(
                "{}.{}.{}.json",
                key.kind.resource(),
                key.namespace,
                key.name
            )
        } else {
            format!("{}.{}.json", key.kind.resource(), key.name)
        }
    }
}

/// Whether a directory entry is a manifest to read.
fn is_manifest(name: &str) -> bool {
    let temp = name.starts_with('.') || name.starts_with('#') || name.ends_with('~');
    let ext = [".json", ".yaml", ".yml"]
        .iter()
        .any(|e| name.len() > e.len() && name.ends_with(e));
    ext && !temp
}

fn unavailable(what: &str, path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{what} {}: {e}", path.display()))
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the directory, updates the state, logs the changes.
    fn scan(&self, st: &mut State) -> Result<(), StoreError> {
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| unavailable("cannot read directory", &self.dir, e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| unavailable("cannot read directory", &self.dir, e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            // metadata follows symlinks (a ConfigMap volume is made of them).
            let meta = std::fs::metadata(entry.path()).ok();
            if let Some(m) = meta.filter(|m| m.is_file()) {
                if is_manifest(&name) {
                    names.push((name, Stamp::of(&m)));
                }
            }
        }
        names.sort_by(|a, b| a.0.cmp(&b.0));

        let mut files = BTreeMap::new();
        let mut errors = BTreeMap::new();
        for (name, stamp) in names {
            if let Some(f) = st.files.get(&name).filter(|f| f.stamp == Some(stamp)) {
                // Unchanged since it was read (and parsed, or kept).
                files.insert(name.clone(), f.clone());
                if let Some(e) = st.errors.get(&name) {
                    errors.insert(name, e.clone());
                }
                continue;
            }
            let path = self.dir.join(&name);
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => Ok(t),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => Err(format!("cannot read it: {e}")),
            };
            match text.and_then(|t| parse_manifests(&t).map_err(|e| e.to_string())) {
                Ok(m) => {
                    let objects = m
                        .objects
                        .iter()
                        .map(|o| (o.key(), Text::from(o.value().to_string())))
                        .collect();
                    let stamp = Some(stamp);
                    files.insert(name, FileObjects { stamp, objects });
                }
                Err(error) => {
                    let kept = st.files.get(&name).cloned();
                    if st.errors.get(&name) != Some(&error) {
                        let file = path.display().to_string();
                        match kept {
                            Some(_) => {
                                tracing::warn!(%file, %error, "manifest does not parse; keeping its last good version")
                            }
                            None => {
                                tracing::warn!(%file, %error, "manifest does not parse; its objects are left out")
                            }
                        }
                    }
                    // The stamp that failed: the file is not read again
                    // until it changes.
                    let objects = kept.map(|k| k.objects).unwrap_or_default();
                    let stamp = Some(stamp);
                    files.insert(name.clone(), FileObjects { stamp, objects });
                    errors.insert(name, error);
                }
            }
        }

        let mut merged: BTreeMap<ObjectKey, (Text, String)> = BTreeMap::new();
        let mut duplicates = BTreeSet::new();
        for (file, f) in &files {
            for (key, value) in &f.objects {
                if let Some((_, earlier)) =
                    merged.insert(key.clone(), (Arc::clone(value), file.clone()))
                {
                    duplicates.insert((key.clone(), earlier, file.clone()));
                }
            }
        }
        for dup in duplicates.difference(&st.duplicates) {
            let (key, earlier, later) = dup;
            tracing::warn!(object = %key, %earlier, %later, "object defined twice in the manifest directory; the later file wins");
        }

        let first = st.revision == 0;
        let revision = if first { 1 } else { st.revision + 1 };
        let mut events = Vec::new();
        for (key, (value, _)) in &merged {
            if st.current.get(key).is_none_or(|e| !same(&e.text, value)) {
                events.push(Change {
                    revision,
                    key: key.clone(),
                    text: Some(Text::clone(value)),
                });
            }
        }
        for key in st.current.keys().filter(|k| !merged.contains_key(*k)) {
            events.push(Change {
                revision,
                key: key.clone(),
                text: None,
            });
        }

        let old = std::mem::take(&mut st.current);
        st.current = merged
            .into_iter()
            .map(|(key, (value, _file))| {
                let revision = match old.get(&key) {
                    Some(e) if same(&e.text, &value) => e.revision,
                    _ => revision,
                };
                let entry = Entry {
                    text: value,
                    revision,
                };
                (key, entry)
            })
            .collect();
        st.files = files;
        st.errors = errors;
        st.duplicates = duplicates;
        if first {
            st.revision = 1;
            st.log_base = 1;
        } else if !events.is_empty() {
            st.revision = revision;
            st.log.extend(events);
            while st.log.len() > LOG_LIMIT {
                if let Some(ev) = st.log.pop_front() {
                    st.log_base = ev.revision;
                }
            }
            // Never keep half of a revision's changes.
            while st.log.front().is_some_and(|e| e.revision == st.log_base) {
                st.log.pop_front();
            }
        }
        Ok(())
    }

    /// The changes after `after`, scanning first.
    fn poll_once(&self, after: u64) -> Result<Vec<Change>, StoreError> {
        let mut st = self.lock();
        self.scan(&mut st)?;
        check_from(&st, after)?;
        Ok(st
            .log
            .iter()
            .filter(|c| c.revision > after)
            .cloned()
            .collect())
    }

    fn list(&self) -> Result<ObjectList, StoreError> {
        let mut st = self.lock();
        self.scan(&mut st)?;
        Ok(ObjectList {
            revision: st.revision,
            objects: st
                .current
                .iter()
                .map(|(key, e)| stored(key, e.revision, &e.text))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Refuses a write to an object another file defines (also one that
    /// loses to the store's own file: deleting ours would bring it back).
    fn check_owner(&self, st: &State, key: &ObjectKey, verb: &str) -> Result<(), StoreError> {
        let own = DirStore::file_name(key);
        let other = st
            .files
            .iter()
            .rev()
            .find(|(file, f)| **file != own && f.objects.iter().any(|(k, _)| k == key));
        match other {
            Some((file, _)) => Err(StoreError::InvalidObject(format!(
                "cannot {verb} {key}: it is defined in {}, not in {own}; edit that file",
                self.dir.join(file).display()
            ))),
            None => Ok(()),
        }
    }

    fn put(&self, key: &ObjectKey, value: Value) -> Result<u64, StoreError> {
        let object = Object::from_value(value.clone())
            .map_err(|e| StoreError::InvalidObject(format!("cannot store {key}: {e}")))?;
        if object.key() != *key {
            return Err(StoreError::InvalidObject(format!(
                "cannot store {key}: the object is {}",
                object.key()
            )));
        }
        let mut st = self.lock();
        self.scan(&mut st)?;
        self.check_owner(&st, key, "replace")?;
        let name = DirStore::file_name(key);
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!(".{name}.tmp.{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut text = serde_json::to_vec_pretty(&value).map_err(std::io::Error::other)?;
            text.push(b'\n');
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            // Best effort: the temporary file is hidden, never read.
            let _ = std::fs::remove_file(&tmp);
            return Err(unavailable("cannot write", &path, e));
        }
        self.scan(&mut st)?;
        Ok(st.revision)
    }

    fn delete(&self, key: &ObjectKey) -> Result<bool, StoreError> {
        let mut st = self.lock();
        self.scan(&mut st)?;
        if !st.current.contains_key(key) {
            return Ok(false);
        }
        self.check_owner(&st, key, "delete")?;
        let path = self.dir.join(DirStore::file_name(key));
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(unavailable("cannot remove", &path, e)),
        }
        self.scan(&mut st)?;
        Ok(true)
    }
}

/// Whether two shared values are equal (the same allocation when the
/// file that holds them was not read again).
fn same(a: &Text, b: &Text) -> bool {
    Arc::ptr_eq(a, b) || a == b
}

/// Whether a watch can start after `after`.
fn check_from(st: &State, after: u64) -> Result<(), StoreError> {
    if after < st.log_base || after > st.revision {
        return Err(StoreError::Compacted {
            requested: after,
            oldest: st.log_base,
        });
    }
    Ok(())
}

struct WatchState {
    inner: Arc<Inner>,
    cursor: u64,
    /// Changes not yet yielded, as text: each becomes an event (a parsed
    /// object) only when the watcher takes it.
    pending: VecDeque<Change>,
    first: bool,
    done: bool,
}

impl ObjectStore for DirStore {
    fn list(&self) -> BoxFuture<'_, Result<ObjectList, StoreError>> {
        Box::pin(async move { self.inner.list() })
    }

    fn watch(&self, after: u64) -> BoxFuture<'_, Result<ObjectWatch, StoreError>> {
        Box::pin(async move {
            {
                let mut st = self.inner.lock();
                if st.revision == 0 {
                    self.inner.scan(&mut st)?;
                }
                check_from(&st, after)?;
            }
            let state = WatchState {
                inner: self.inner.clone(),
                cursor: after,
                pending: VecDeque::new(),
                first: true,
                done: false,
            };
            let stream = futures::stream::unfold(state, |mut w| async move {
                loop {
                    if w.done {
                        return None;
                    }
                    if let Some(c) = w.pending.pop_front() {
                        let ev = c.event();
                        w.done = ev.is_err();
                        return Some((ev, w));
                    }
                    if !w.first {
                        tokio::time::sleep(w.inner.poll).await;
                    }
                    w.first = false;
                    match w.inner.poll_once(w.cursor) {
                        Ok(events) => {
                            if let Some(last) = events.last() {
                                w.cursor = last.revision;
                            }
                            w.pending.extend(events);
                        }
                        Err(e) => {
                            w.done = true;
                            return Some((Err(e), w));
                        }
                    }
                }
            });
            Ok(stream.boxed())
        })
    }

    fn put(&self, key: ObjectKey, object: Value) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move { self.inner.put(&key, object) })
    }

    fn delete(&self, key: ObjectKey) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move { self.inner.delete(&key) })
    }
}

#[cfg(test)]
#[path = "dirstore_tests.rs"]
mod tests;
