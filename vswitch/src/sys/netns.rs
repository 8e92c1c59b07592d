//! Network namespaces: a handle on one ([`NetNs`]), opened by name or path,
//! and running code inside it.
//!
//! The calling thread never changes namespace: [`NetNs::run`] spawns a
//! dedicated thread, `setns(CLONE_NEWNET)`s it and runs the closure there.
//! Whatever that closure creates that belongs to a namespace (a netlink
//! socket, a UDP socket, a TAP) belongs to the target one, and keeps doing
//! so after the thread is gone. No forwarding rules here.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;

/// Where `ip netns add` puts its bind mounts.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// An open network namespace. Holding it keeps the namespace alive, even
/// after its bind mount is removed.
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

impl NetNs {
    /// Opens a namespace: a value containing '/' is a path (e.g.
    /// `/proc/1234/ns/net`, `/var/run/netns/x`), anything else a name under
    /// [`NETNS_RUN_DIR`]. Fails with `InvalidInput` if the file is not a
    /// network namespace.
    pub fn open(name_or_path: &str) -> io::Result<NetNs> {
        let path = if name_or_path.contains('/') {
            PathBuf::from(name_or_path)
        } else {
            if name_or_path.is_empty() || name_or_path == "." || name_or_path == ".." {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("bad network namespace name {name_or_path:?}"),
                ));
            }
            Path::new(NETNS_RUN_DIR).join(name_or_path)
        };
        let file = File::open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", path.display())))?;
        NetNs::checked(file, path)
    }

    /// The calling thread's network namespace.
    pub fn current() -> io::Result<NetNs> {
        NetNs::open("/proc/thread-self/ns/net")
    }

    /// Takes an fd already open on a namespace (e.g. from a CNI runtime).
    pub fn from_fd(fd: OwnedFd) -> io::Result<NetNs> {
        let path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        NetNs::checked(File::from(fd), path)
    }

    fn checked(file: File, path: PathBuf) -> io::Result<NetNs> {
        // SAFETY: NS_GET_NSTYPE takes no argument and only returns a value;
        // the fd is open for the duration of the call.
        let kind = unsafe { libc::ioctl(file.as_raw_fd(), libc::NS_GET_NSTYPE) };
        if kind != libc::CLONE_NEWNET {
            let why = if kind < 0 {
                io::Error::last_os_error().to_string()
            } else {
                format!("namespace type {kind:#x}")
            };
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a network namespace ({why})", path.display()),
            ));
        }
        Ok(NetNs { file, path })
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The namespace fd, e.g. for `IFLA_NET_NS_FD`.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// The namespace's inode number (what `ip netns identify` and
    /// `/proc/<pid>/ns/net` show as `net:[N]`).
    pub fn inode(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.ino())
    }

    /// True if the calling thread is in this namespace (same device and
    /// inode as `/proc/thread-self/ns/net`); false also when that cannot
    /// be read.
    pub fn same_as_current(&self) -> bool {
        let (Ok(mine), Ok(cur)) = (
            self.file.metadata(),
            std::fs::metadata("/proc/thread-self/ns/net"),
        ) else {
            return false;
        };
        (mine.dev(), mine.ino()) == (cur.dev(), cur.ino())
    }

    /// Runs `f` on a new thread that has entered this namespace, waits for
    /// it and returns its result. The calling thread stays where it is. A
    /// panic in `f` is resumed on the calling thread. Fails only if the
    /// thread cannot be spawned or cannot enter the namespace.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> io::Result<R> {
        let fd = self.fd();
        let path = &self.path;
        std::thread::scope(|s| {
            let thread = std::thread::Builder::new()
                .name("twill-netns".into())
                .spawn_scoped(s, move || -> io::Result<R> {
                    nix::sched::setns(fd, CloneFlags::CLONE_NEWNET).map_err(|e| {
                        io::Error::new(
                            io::Error::from(e).kind(),
                            format!("setns {}: {e}", path.display()),
                        )
                    })?;
                    Ok(f())
                })?;
            match thread.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl AsRawFd for NetNs {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::sys::testutil::{need_root, TestNs};

    #[test]
    fn current_is_current() {
        let cur = NetNs::current().unwrap();
        assert!(cur.same_as_current());
        let by_path = NetNs::open("/proc/self/ns/net").unwrap();
        assert_eq!(by_path.inode().unwrap(), cur.inode().unwrap());
    }

    #[test]
    fn open_rejects_what_is_not_a_netns() {
        let e = NetNs::open("/proc/self/ns/uts").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        let e = NetNs::open("/etc/hostname").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        let e = NetNs::open("twt-no-such-namespace").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        assert!(
            e.to_string().contains("/run/netns/twt-no-such-namespace"),
            "{e}"
        );
        assert_eq!(
            NetNs::open("..").unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            NetNs::open("").unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn run_enters_the_namespace_and_leaves_the_caller_alone() {
        if !need_root("netns::run_enters_the_namespace_and_leaves_the_caller_alone") {
            return;
        }
        let before = NetNs::current().unwrap().inode().unwrap();
        let t = TestNs::new();
        let want = t.ns.inode().unwrap();
        assert_ne!(want, before);
        assert!(!t.ns.same_as_current());

        let (inside, same) =
            t.ns.run(|| {
                let cur = NetNs::current().unwrap();
                (cur.inode().unwrap(), t.ns.same_as_current())
            })
            .unwrap();
        assert_eq!(inside, want);
        assert!(same);
        assert_eq!(NetNs::current().unwrap().inode().unwrap(), before);

        // By path, and through an fd.
        let by_path = NetNs::open(&format!("/run/netns/{}", t.name)).unwrap();
        assert_eq!(by_path.inode().unwrap(), want);
        let dup = NetNs::from_fd(t.ns.fd().try_clone_to_owned().unwrap()).unwrap();
        assert_eq!(
            dup.run(|| NetNs::current().unwrap().inode().unwrap())
                .unwrap(),
            want
        );
    }

    #[test]
    fn run_resumes_a_panic() {
        let cur = NetNs::current().unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // Entering one's own namespace needs CAP_SYS_ADMIN too; without
            // root the error path is taken, which is fine for this test.
            match cur.run(|| panic!("boom")) {
                Ok(()) => {}
                Err(_) => panic!("boom"),
            }
        }));
        let msg = r.unwrap_err();
        assert_eq!(msg.downcast_ref::<&str>(), Some(&"boom"));
    }
}
