//! [`Service`]: a long-running server inside a lab namespace (`twill
//! controller`, etcd), with its files in its own directory. It can be
//! killed without warning and started again on the same files, which is how
//! the tests check that the control plane survives a crash.

use std::fs;
use std::net::{SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cmd;
use crate::netns::Netns;
use crate::node::tail_file;
use crate::tempdir::TempDir;

/// How long a service gets to accept connections after it starts.
const SERVICE_READY: Duration = Duration::from_secs(20);

/// A server process in a namespace; stopped, and its directory removed, on
/// drop.
#[derive(Debug)]
pub struct Service {
    name: String,
    netns: String,
    program: PathBuf,
    args: Vec<String>,
    ready_at: SocketAddrV4,
    child: Option<Child>,
    log: PathBuf,
    dir: TempDir,
}

impl Service {
    /// `twill controller` in `ns` on `listen`, with the network config
    /// `net_conf` (flannel's JSON) and the bearer `token`.
    pub fn controller(
        twill_bin: &Path,
        ns: &Netns,
        listen: SocketAddrV4,
        net_conf: &str,
        token: &str,
    ) -> Result<Service> {
        Service::controller_args(twill_bin, ns, listen, net_conf, token, &[])
    }

    /// [`Service::controller`] with more arguments for `twill controller`.
    pub fn controller_args(
        twill_bin: &Path,
        ns: &Netns,
        listen: SocketAddrV4,
        net_conf: &str,
        token: &str,
        extra: &[&str],
    ) -> Result<Service> {
        let dir = TempDir::new("controller")?;
        let p = dir.path();
        fs::write(p.join("token"), format!("{token}\n"))?;
        fs::write(p.join("net-conf.json"), net_conf)?;
        let arg = |x: &Path| x.display().to_string();
        let args: Vec<String> = vec![
            "controller".to_owned(),
            "--listen".to_owned(),
            listen.to_string(),
            "--state-file".to_owned(),
            arg(&p.join("state.json")),
            "--token-file".to_owned(),
            arg(&p.join("token")),
            "--net-conf".to_owned(),
            arg(&p.join("net-conf.json")),
        ]
        .into_iter()
        .chain(extra.iter().map(|a| (*a).to_owned()))
        .collect();
        Service::start("controller", ns, twill_bin, args, listen, dir)
    }

    /// etcd in `ns`, clients on `client`, with flannel's network config put
    /// at `<prefix>/config`.
    pub fn etcd(ns: &Netns, client: SocketAddrV4, prefix: &str, net_conf: &str) -> Result<Service> {
        let dir = TempDir::new("etcd")?;
        let peer = SocketAddrV4::new(*client.ip(), client.port() + 1);
        let args = vec![
            "--name".to_owned(),
            "lab".to_owned(),
            "--data-dir".to_owned(),
            dir.path().join("data").display().to_string(),
            "--listen-client-urls".to_owned(),
            format!("http://{client}"),
            "--advertise-client-urls".to_owned(),
            format!("http://{client}"),
            "--listen-peer-urls".to_owned(),
            format!("http://{peer}"),
            "--initial-advertise-peer-urls".to_owned(),
            format!("http://{peer}"),
            "--initial-cluster".to_owned(),
            format!("lab=http://{peer}"),
        ];
        let s = Service::start("etcd", ns, Path::new("etcd"), args, client, dir)?;
        s.etcdctl(&["put", &format!("{prefix}/config"), net_conf])
            .context("putting the network config into etcd")?;
        Ok(s)
    }

    fn start(
        name: &str,
        ns: &Netns,
        program: &Path,
        args: Vec<String>,
        ready_at: SocketAddrV4,
        dir: TempDir,
    ) -> Result<Service> {
        let log = dir.path().join(format!("{name}.log"));
        let mut s = Service {
            name: name.to_owned(),
            netns: ns.name().to_owned(),
            program: program.to_owned(),
            args,
            ready_at,
            child: None,
            log,
            dir,
        };
        s.launch(ns)?;
        Ok(s)
    }

    fn launch(&mut self, ns: &Netns) -> Result<()> {
        self.child = Some(cmd::spawn_in_netns(
            ns.name(),
            "KILL",
            &self.program,
            &self.args,
            &self.log,
        )?);
        let deadline = Instant::now() + SERVICE_READY;
        let addr = self.ready_at;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(st) = child.try_wait()? {
                    self.child = None;
                    bail!(
                        "{} exited early ({st}); log tail:\n{}",
                        self.name,
                        tail_file(&self.log, 30)
                    );
                }
            }
            let up = ns.run_in(|| {
                TcpStream::connect_timeout(&addr.into(), Duration::from_millis(300)).is_ok()
            })?;
            if up {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} not accepting on {addr} after {SERVICE_READY:?}; log tail:\n{}",
                    self.name,
                    tail_file(&self.log, 30)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the server with SIGKILL (no chance to flush anything) and
    /// starts it again on the same files.
    pub fn kill_and_restart(&mut self, ns: &Netns) -> Result<()> {
        self.kill_hard();
        self.launch(ns)
    }

    /// Kills the server with SIGKILL and reaps it.
    pub fn kill_hard(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                // The process group: `ip netns exec` and `setpriv` exec into
                // the server, but kill the group in case one did not.
                let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs `etcdctl` (v3 API) against this etcd, from its namespace.
    pub fn etcdctl(&self, args: &[&str]) -> Result<String> {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns, "etcdctl"])
            .arg(format!("--endpoints=http://{}", self.ready_at))
            .args(args)
            .env("ETCDCTL_API", "3");
        cmd::run_checked(c, Duration::from_secs(10))
    }

    /// The address clients use.
    pub fn addr(&self) -> SocketAddrV4 {
        self.ready_at
    }

    /// The service's directory (state file, token, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail_file(&self.log, lines)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill_hard();
        if thread::panicking() {
            cmd::note(format_args!(
                "---- log of {} ----\n{}\n---- end of log ----",
                self.name,
                self.log_tail(40)
            ));
        }
    }
}
