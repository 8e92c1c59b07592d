//! Child processes a long-running agent keeps (BIRD): started with no
//! signal blocked and with a parent-death signal.
//!
//! The agent blocks SIGTERM and SIGINT in every thread to wait for them in
//! one, and a blocked mask survives `exec`: a child started plainly would
//! ignore the SIGTERM that should stop it. The parent-death signal stops
//! the child when the thread that started it ends, also when the agent is
//! killed.

use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sys::signal::{SigSet, Signal};

/// Makes `cmd`'s process start with an empty signal mask and get `signal`
/// when the calling thread ends (`PR_SET_PDEATHSIG`; keep that thread for
/// the child's lifetime).
pub fn unblocked_with_parent_death(cmd: &mut Command, signal: Signal) -> &mut Command {
    // SAFETY: the closure runs in the child between fork and exec, where
    // only async-signal-safe calls are allowed: it makes two system calls
    // (rt_sigprocmask, prctl) on values on its stack, allocates nothing
    // and takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            SigSet::empty()
                .thread_set_mask()
                .map_err(std::io::Error::from)?;
            nix::sys::prctl::set_pdeathsig(signal).map_err(std::io::Error::from)?;
            Ok(())
        })
    }
}
