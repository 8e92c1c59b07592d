//! The agent's attachments on disk: `<state_dir>/attachments.json`, the one
//! record of which address belongs to which pod. IPAM is derived from it, so
//! an agent that restarts neither forgets an address nor hands it out twice.
//!
//! ```json
//! { "version": 1, "subnet": "10.244.1.0/24",
//!   "attachments": [ { "id": "cni/twill/4f2a…/eth0", "netns": "/run/netns/cni-…",
//!                      "netns_inode": 4026532551, "ifname": "eth0", "ip": "10.244.1.3",
//!                      "cni": { "network": "twill", "container_id": "4f2a…" } } ] }
//! ```
//!
//! Crash safety: the whole file is rewritten for every change (a node holds
//! at most a few hundred attachments), into `attachments.json.tmp`, fsynced,
//! renamed over the old file, and the directory fsynced. A crash at any
//! moment leaves either the old or the new file, never a mix. The agent
//! writes the file *before* it acknowledges an attach or a detach (see
//! `pods`), so an acknowledged change is never lost. This module does only
//! the file; it knows no netns, TAP or dataplane.

use std::fs;
use std::io;

use crate::fsutil::FileError;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use encap::Cidr;
use serde::{Deserialize, Serialize};

use crate::api::{CniOwner, PodRef, PortSecurity};

/// The file's name inside the state directory.
pub const STATE_FILE: &str = "attachments.json";
/// The format this agent writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// One attachment as persisted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// The attachment id.
    pub id: String,
    /// The namespace as the caller named it (name or path).
    pub netns: String,
    /// The namespace's inode when it was attached: a path that names a
    /// different namespace after a restart is not the pod's any more.
    pub netns_inode: u64,
    /// Interface name inside the namespace.
    pub ifname: String,
    /// The pod's address.
    pub ip: Ipv4Addr,
    /// Set for attachments made through CNI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni: Option<CniOwner>,
    /// Port security's exceptions, as attached.
    #[serde(default, skip_serializing_if = "PortSecurity::is_empty")]
    pub port_security: PortSecurity,
    /// The Kubernetes pod, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    subnet: String,
    attachments: Vec<Record>,
}

/// What the state file held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The subnet the addresses were taken from (as written: `a.b.c.d/n`).
    pub subnet: String,
    /// The attachments.
    pub records: Vec<Record>,
}

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Reading, writing, syncing or renaming failed.
    #[error(transparent)]
    Io(#[from] FileError),
    /// The file is not a state file this agent can read. The agent refuses
    /// to start rather than guess which addresses are free.
    #[error(
        "{path}: not a twill attachment file ({why}); move it away to start with no attachments"
    )]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// The state file of one state directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store in `state_dir` (created on the first save).
    pub fn new(state_dir: &Path) -> Store {
        Store {
            dir: state_dir.to_owned(),
        }
    }

    /// `<state_dir>/attachments.json`.
    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// The persisted attachments; `None` when there is no file yet.
    pub fn load(&self) -> Result<Option<Loaded>, StoreError> {
        let path = self.path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(FileError {
                    op: "reading",
                    path,
                    source,
                }
                .into())
            }
        };
        let f: StateFile = serde_json::from_str(&text).map_err(|e| StoreError::Invalid {
            path: path.clone(),
            why: e.to_string(),
        })?;
        if f.version != FORMAT_VERSION {
            return Err(StoreError::Invalid {
                path,
                why: format!(
                    "format version {}, this twill reads {FORMAT_VERSION}",
                    f.version
                ),
            });
        }
        Ok(Some(Loaded {
            subnet: f.subnet,
            records: f.attachments,
        }))
    }

    /// Replaces the file with `records` (sorted by id), atomically and
    /// durably: when this returns Ok the new content survives a crash.
    pub fn save(&self, subnet: Cidr, records: &[Record]) -> Result<(), StoreError> {
        let mut sorted: Vec<&Record> = records.iter().collect();
        sorted.sort_by(|a, b| a.id.cmp(&b.id));
        let file = serde_json::json!({
            "version": FORMAT_VERSION,
            "subnet": subnet.to_string(),
            "attachments": sorted,
        });
        let mut text = serde_json::to_string_pretty(&file).map_err(|e| StoreError::Invalid {
            path: self.path(),
            why: format!("cannot encode: {e}"),
        })?;
        text.push('\n');
        Ok(crate::fsutil::write_atomic(&self.path(), text.as_bytes())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "twill-store-{}-{name}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn rec(id: &str, ip: [u8; 4]) -> Record {
        Record {
            id: id.into(),
            netns: format!("/run/netns/{id}"),
            netns_inode: 4026532000,
            ifname: "eth0".into(),
            ip: ip.into(),
            cni: None,
            port_security: PortSecurity::default(),
            pod: None,
        }
    }

    #[test]
    fn missing_file_is_no_attachments_and_save_load_round_trips() {
        let d = dir("roundtrip");
        let s = Store::new(&d);
        assert_eq!(s.load().unwrap(), None);
        let subnet = Cidr::new(Ipv4Addr::new(10, 244, 1, 0), 24).unwrap();
        let mut b = rec("b", [10, 244, 1, 4]);
        b.cni = Some(CniOwner {
            network: "twill".into(),
            container_id: "c1".into(),
        });
        s.save(subnet, &[b.clone(), rec("a", [10, 244, 1, 3])])
            .unwrap();
        let l = s.load().unwrap().unwrap();
        assert_eq!(l.subnet, "10.244.1.0/24");
        assert_eq!(l.records, vec![rec("a", [10, 244, 1, 3]), b]);
        assert!(!d.join("attachments.json.tmp").exists());
        s.save(subnet, &[]).unwrap();
        assert_eq!(s.load().unwrap().unwrap().records, vec![]);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_bad_file_is_an_error_naming_it() {
        let d = dir("bad");
        fs::create_dir_all(&d).unwrap();
        let s = Store::new(&d);
        for text in [
            "{",
            r#"{"version":2,"subnet":"10.244.1.0/24","attachments":[]}"#,
            r#"{"version":1,"subnet":"10.244.1.0/24","attachments":[],"x":1}"#,
        ] {
            fs::write(s.path(), text).unwrap();
            let e = s.load().unwrap_err().to_string();
            assert!(e.contains("attachments.json"), "{e}");
            assert!(e.contains("move it away"), "{e}");
        }
        fs::remove_dir_all(&d).unwrap();
    }
}
