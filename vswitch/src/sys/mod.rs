//! The system layer of the switch's drivers: the only module of the crate
//! that makes system calls of its own and the only one allowed `unsafe`
//! (ioctls and `setns`; every block says why it is sound in a `// SAFETY:`
//! comment). File descriptors are held as `OwnedFd`/`File` and are never
//! closed by hand.
//!
//! - [`tap`]: TAP devices with a virtio-net header (`IFF_VNET_HDR`),
//!   offload flags and multi-queue; reads and writes of whole frames.
//! - [`netns`]: network namespaces by name or path, and running a closure
//!   inside one on a dedicated thread.
//! - [`netlink`]: synchronous rtnetlink helpers for links, addresses and
//!   routes, and for moving a link into a namespace. Never shells out.
//! - [`udp`]: the underlay UDP sockets (non-blocking, `SO_REUSEPORT`, buffer
//!   sizes).
//! - [`steer`]: CPU-aligned steering: workers pinned one per CPU, the
//!   tunnel's reuseport group and the TAPs' queues chosen by the CPU (BPF).
//! - [`poll`]: a level-triggered epoll wrapper and an eventfd [`poll::Waker`].
//! - [`child`]: child processes started with no blocked signal and a
//!   parent-death signal.
//!
//! This layer knows no forwarding rules: it moves bytes and configures the
//! kernel, and reports every errno as an error (`EAGAIN` as
//! [`std::io::ErrorKind::WouldBlock`], so that callers can end a loop on it).

pub mod child;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod poll;
pub mod steer;
pub mod tap;
pub mod udp;

/// Helpers for the tests that need root and network namespaces.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod testutil {
    use std::io::Write;
    use std::process::Command;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::netns::NetNs;

    static COUNTER: AtomicU32 = AtomicU32::new(0);

    /// A number unique within this test process.
    pub(crate) fn unique() -> u32 {
        COUNTER.fetch_add(1, Ordering::Relaxed)
    }

    /// True if the effective uid is 0.
    pub(crate) fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }

    /// True if the test may go on. Without root it prints a loud skip line
    /// and returns false, unless `TWILL_REQUIRE_ROOT=1`, where it panics.
    pub(crate) fn need_root(test: &str) -> bool {
        if is_root() {
            return true;
        }
        if std::env::var("TWILL_REQUIRE_ROOT").as_deref() == Ok("1") {
            panic!("{test}: needs root, and TWILL_REQUIRE_ROOT=1 forbids skipping");
        }
        // Straight to the stderr handle: libtest captures `eprintln!`.
        let _ = writeln!(
            std::io::stderr(),
            "!!!!!!!! {test}: SKIPPED (needs root) !!!!!!!!"
        );
        false
    }

    /// Runs a command (test set-up only) and panics with its output if it
    /// fails.
    pub(crate) fn run(args: &[&str]) -> String {
        let out = Command::new(args[0])
            .args(&args[1..])
            .output()
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert!(
            out.status.success(),
            "{args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A named network namespace made with `ip netns add`, deleted on drop
    /// (also when the test panics).
    #[derive(Debug)]
    pub(crate) struct TestNs {
        pub(crate) name: String,
        pub(crate) ns: NetNs,
    }

    impl TestNs {
        pub(crate) fn new() -> TestNs {
            let name = format!("twt-{}-{}", std::process::id(), unique());
            run(&["ip", "netns", "add", &name]);
            // From here on Drop removes it, even if open fails.
            let mut guard = TestNs {
                name,
                ns: NetNs::current().unwrap(),
            };
            guard.ns = NetNs::open(&guard.name).unwrap();
            guard
        }

        /// `ip -n <ns> args...`
        pub(crate) fn ip(&self, args: &[&str]) -> String {
            let mut all = vec!["ip", "-n", &self.name];
            all.extend_from_slice(args);
            run(&all)
        }
    }

    impl Drop for TestNs {
        fn drop(&mut self) {
            let out = Command::new("ip")
                .args(["netns", "del", &self.name])
                .output();
            match out {
                Ok(o) if o.status.success() => {}
                Ok(o) => eprintln!(
                    "ip netns del {}: {}",
                    self.name,
                    String::from_utf8_lossy(&o.stderr)
                ),
                Err(e) => eprintln!("ip netns del {}: {e}", self.name),
            }
        }
    }
}
