//! How the lab names what it creates, and where it puts it: namespaces
//! `/run/netns/twl-…` and directories under [`LAB_RUN_DIR`], each name
//! ending in `PID-N-RAND` ([`unique_suffix`]). The creator's pid in the
//! name is what lets [`cleanup_stale`] remove what a killed run left
//! behind, while the guards of a running one keep theirs.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::cmd;

/// Where the lab keeps its per-guard directories (nodes' files,
/// [`crate::TempDir`]s).
pub const LAB_RUN_DIR: &str = "/run/twill-lab";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A process-unique, hard-to-guess suffix: pid, a counter and 16 random bits.
pub fn unique_suffix() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut h = RandomState::new().build_hasher();
    h.write_u32(n);
    let rand = h.finish() as u16;
    format!("{}-{n}-{rand:04x}", std::process::id())
}

/// The pid embedded in a lab name `PREFIX-PID-N-RAND`, if it has that shape.
fn owner_pid(name: &str) -> Option<i32> {
    let mut parts = name.rsplit('-');
    let rand = parts.next()?;
    let n = parts.next()?;
    let pid = parts.next()?;
    let shaped = rand.len() == 4
        && rand.bytes().all(|b| b.is_ascii_hexdigit())
        && n.bytes().all(|b| b.is_ascii_digit());
    shaped.then(|| pid.parse().ok()).flatten()
}

/// Deletes lab namespaces (`twl-…`) and lab directories whose creating
/// process is gone — leftovers of a run that was killed before its guards
/// could drop. Returns what was removed.
pub fn cleanup_stale() -> Vec<String> {
    // A zombie (state Z, not yet reaped) counts as gone.
    let alive = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|st| {
            st.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state != "Z")
        })
    };
    let mut removed = Vec::new();
    let entries = |dir: &str| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    for name in entries("/run/netns") {
        if !name.starts_with("twl-") {
            continue;
        }
        if owner_pid(&name).is_some_and(|pid| !alive(pid))
            && cmd::ip(&["netns", "del", &name]).is_ok()
        {
            removed.push(format!("/run/netns/{name}"));
        }
    }
    for name in entries(LAB_RUN_DIR) {
        if owner_pid(&name).is_some_and(|pid| !alive(pid)) {
            let path = PathBuf::from(LAB_RUN_DIR).join(&name);
            if std::fs::remove_dir_all(&path).is_ok() {
                removed.push(path.display().to_string());
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_reads_lab_names_only() {
        assert_eq!(owner_pid("twl-t-a-1234-7-0f3a"), Some(1234));
        assert_eq!(
            owner_pid(&format!("twl-x-{}", unique_suffix())),
            Some(std::process::id() as i32)
        );
        assert_eq!(owner_pid("twl-t-a"), None);
        assert_eq!(owner_pid("cni-1234-7-zzzz"), None);
    }
}
