//! Process resource limits shared by the long-running commands (`twill
//! node`, `twill controller`).

/// Lifts the soft limit on open files to the hard one (many sockets: API
/// clients, watchers) and logs both values; a failure is logged, not fatal.
pub fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::info!(from = soft, to = hard, "raised the open-file limit"),
            Err(e) => tracing::warn!(soft, hard, error = %e, "cannot raise the open-file limit"),
        },
        Ok((soft, hard)) => tracing::info!(soft, hard, "open-file limit already at its hard limit"),
        Err(e) => tracing::warn!(error = %e, "cannot read the open-file limit"),
    }
}
