//! The [`Netns`] guard: a named network namespace that exists exactly as long
//! as the guard does.

use std::ffi::OsStr;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::thread;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use nix::sched::CloneFlags;

use crate::cmd::{self, SHORT};
use crate::names::unique_suffix;

/// A network namespace `/run/netns/NAME` with `lo` up. Dropping the guard
/// deletes the namespace (also while unwinding from a panic); interfaces in it
/// go with it. Processes still running inside are not killed: their owners
/// (e.g. [`crate::NodeProcess`]) must stop them first.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `PREFIX-PID-N-RAND` and brings its loopback up.
    pub fn new(prefix: &str) -> Result<Netns> {
        let name = format!("{prefix}-{}", unique_suffix());
        cmd::ip(&["netns", "add", &name])
            .with_context(|| format!("creating network namespace {name}"))?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name (as `ip netns` knows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// A `Command` for `ip netns exec NAME PROGRAM`; add arguments and run it.
    pub fn command<S: AsRef<OsStr>>(&self, program: S) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs `PROGRAM ARGS…` inside the namespace and returns its output
    /// whatever the exit status (deadline: 15 s).
    pub fn exec<S: AsRef<OsStr>>(&self, program: S, args: &[&str]) -> Result<Output> {
        let mut c = self.command(program);
        c.args(args);
        cmd::run_timeout(c, SHORT)
    }

    /// Runs `PROGRAM ARGS…` inside the namespace; fails on a non-zero exit.
    pub fn run<S: AsRef<OsStr>>(&self, program: S, args: &[&str]) -> Result<String> {
        let mut c = self.command(program);
        c.args(args);
        cmd::run_checked(c, SHORT)
    }

    /// `ip -n NAME ARGS…`, checked.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        cmd::ip(&all)
    }

    /// `sysctl -w KEY=VALUE` inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.run("sysctl", &["-q", "-w", &format!("{key}={value}")])?;
        Ok(())
    }

    /// Runs `f` on a fresh thread that has joined this namespace (setns), and
    /// returns its result. Sockets created inside `f` belong to the namespace
    /// and may be used from any thread afterwards. A panic in `f` propagates.
    pub fn run_in<F, T>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let path = self.path();
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        thread::scope(|s| {
            let h = s.spawn(move || -> Result<T> {
                nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("setns into {}", path.display()))?;
                Ok(f())
            });
            match h.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// The MAC address of `ifname` inside the namespace.
    pub fn link_mac(&self, ifname: &str) -> Result<String> {
        let out = self.ip(&["-j", "link", "show", "dev", ifname])?;
        let v: serde_json::Value = serde_json::from_str(&out)
            .with_context(|| format!("parsing `ip -j link show {ifname}`"))?;
        v.get(0)
            .and_then(|l| l.get("address"))
            .and_then(|a| a.as_str())
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no MAC address for {ifname} in {}", self.name))
    }

    /// The interface holding `addr` inside the namespace.
    pub fn iface_with_addr(&self, addr: std::net::Ipv4Addr) -> Result<String> {
        let out = self.ip(&["-j", "-4", "addr", "show"])?;
        let v: serde_json::Value =
            serde_json::from_str(&out).context("parsing `ip -j addr show`")?;
        let want = addr.to_string();
        for link in v.as_array().into_iter().flatten() {
            let has = link
                .get("addr_info")
                .and_then(|a| a.as_array())
                .into_iter()
                .flatten()
                .any(|ai| ai.get("local").and_then(|l| l.as_str()) == Some(want.as_str()));
            if has {
                if let Some(name) = link.get("ifname").and_then(|n| n.as_str()) {
                    return Ok(name.to_owned());
                }
            }
        }
        Err(anyhow!("no interface holds {addr} in {}", self.name))
    }

    /// Whether `/run/netns/NAME` still exists (for tests of the guards).
    pub fn exists(name: &str) -> bool {
        PathBuf::from("/run/netns").join(name).exists()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // `ip netns del` can race with a device still being torn down; retry briefly.
        for attempt in 0..5 {
            match cmd::ip(&["netns", "del", &self.name]) {
                Ok(_) => return,
                Err(e) if attempt == 4 => cmd::note(format_args!(
                    "lab: could not delete network namespace {}: {e:#}",
                    self.name
                )),
                Err(_) => thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}
