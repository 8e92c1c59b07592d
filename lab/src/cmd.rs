//! Running external commands (`ip`, `ping`, `twill …`) with a deadline and
//! errors that say what was run and what it printed.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::path::Path;

/// Default deadline for short administrative commands (`ip`, `bridge`, `twill status`).
pub const SHORT: Duration = Duration::from_secs(15);

/// Renders a command line for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion, capturing stdout and stderr, killing it after
/// `timeout`. A non-zero exit is not an error here (see [`run_checked`]).
pub fn run_timeout(mut cmd: Command, timeout: Duration) -> Result<Output> {
    let what = describe(&cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run `{what}`"))?;
    let out = child.stdout.take().map(drain);
    let err = child.stderr.take().map(drain);
    let status = wait_deadline(&mut child, timeout);
    let stdout = out.map(join_drain).unwrap_or_default();
    let stderr = err.map(join_drain).unwrap_or_default();
    match status? {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => bail!(
            "`{what}` did not finish within {timeout:?} (killed); stderr: {}",
            String::from_utf8_lossy(&stderr).trim()
        ),
    }
}

/// Runs `cmd` and fails unless it exits 0; returns its stdout.
pub fn run_checked(cmd: Command, timeout: Duration) -> Result<String> {
    let what = describe(&cmd);
    let out = run_timeout(cmd, timeout)?;
    if !out.status.success() {
        bail!(
            "`{what}` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Waits for `child` until `timeout`; on expiry kills and reaps it and returns `None`.
pub fn wait_deadline(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().context("waiting for a child process")? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            // Already gone is fine: the wait below reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

pub(super) fn drain<R: Read + Send + 'static>(mut r: R) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        // A read error just truncates what we report.
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

pub(super) fn join_drain(h: thread::JoinHandle<Vec<u8>>) -> Vec<u8> {
    h.join().unwrap_or_default()
}

/// Writes a line to stderr, ignoring errors: for Drop paths, where a
/// panicking `eprintln!` (closed pipe) during unwinding would abort the process
/// before the remaining guards run.
pub fn note(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{args}");
}

/// `ip ARGS…` in the current (caller's) namespace, checked.
pub fn ip(args: &[&str]) -> Result<String> {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    run_checked(cmd, SHORT)
}

/// Installs SIGINT/SIGTERM handlers that only set a flag, so that an
/// interruption unwinds through the guards instead of killing the process.
///
/// Handlers rather than blocking the signals and waiting for them in a
/// thread: a blocked mask is inherited by every child (ping, ip, the nodes),
/// while a handler is reset to the default action by exec. signal-hook
/// installs them without `unsafe` here (STYLE: unsafe only in vswitch::sys).
pub(crate) fn install_stop_handler() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .with_context(|| format!("installing a handler for signal {sig}"))?;
    }
    Ok(stop)
}

/// Starts `program args…` inside network namespace `netns` (`ip netns exec`)
/// under `setpriv --pdeathsig SIGNAL`, so it dies with this process, in its
/// own process group, with its output appended to `log` and `RUST_LOG=info`
/// unless the caller set one.
pub fn spawn_in_netns<I, S>(
    netns: &str,
    signal: &str,
    program: &Path,
    args: I,
    log: &Path,
) -> Result<Child>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let mut c = Command::new("ip");
    c.args([
        "netns",
        "exec",
        netns,
        "setpriv",
        "--pdeathsig",
        signal,
        "--",
    ])
    .arg(program)
    .args(args)
    .stdin(Stdio::null())
    .stdout(logf.try_clone()?)
    .stderr(logf)
    .process_group(0);
    if std::env::var_os("RUST_LOG").is_none() {
        c.env("RUST_LOG", "info");
    }
    let what = describe(&c);
    c.spawn().with_context(|| format!("starting `{what}`"))
}

/// A child process killed (SIGKILL) and reaped when dropped, also when a
/// test or a run fails half-way.
#[derive(Debug)]
pub struct Reaped(pub std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        // Already gone is fine: the wait reaps it either way.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
