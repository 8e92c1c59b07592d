//! [`FrrRouter`]: FRR (Debian's `frr`: `zebra` and `bgpd`) in a lab
//! namespace, playing a top-of-rack router that the nodes peer with by
//! BGP. Its files (configuration, pid files, the zebra and vty sockets,
//! logs) are in its own directory, so that several run at once; it is
//! stopped, and the directory removed, on drop.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
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

/// Where Debian installs FRR's daemons.
pub const FRR_DIR: &str = "/usr/lib/frr";
/// How long the daemons get to answer `vtysh`.
const FRR_READY: Duration = Duration::from_secs(15);

/// A BGP neighbor of the router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrrNeighbor {
    /// Its address.
    pub address: Ipv4Addr,
    /// Its AS number.
    pub asn: u32,
    /// A TCP MD5 password.
    pub password: Option<String>,
}

/// The router's BGP settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrrConfig {
    /// Router id.
    pub router_id: Ipv4Addr,
    /// Its AS number.
    pub asn: u32,
    /// Keepalive and hold time, seconds, set on every neighbor.
    pub timers: (u16, u16),
    /// The neighbors.
    pub neighbors: Vec<FrrNeighbor>,
}

impl FrrConfig {
    /// `frr.conf` for bgpd: eBGP without the RFC 8212 policy requirement
    /// (so it takes and passes on the nodes' routes), every neighbor
    /// activated for IPv4 unicast.
    pub fn render(&self) -> String {
        let mut s = format!(
            "frr defaults traditional\nhostname lab-router\nlog stdout\n!\n\
             router bgp {}\n bgp router-id {}\n no bgp ebgp-requires-policy\n \
             no bgp network import-check\n",
            self.asn, self.router_id
        );
        for n in &self.neighbors {
            let a = n.address;
            let _ = writeln!(s, " neighbor {a} remote-as {}", n.asn);
            let _ = writeln!(
                s,
                " neighbor {a} timers {} {}",
                self.timers.0, self.timers.1
            );
            let _ = writeln!(s, " neighbor {a} timers connect 1");
            if let Some(pw) = &n.password {
                let _ = writeln!(s, " neighbor {a} password {pw}");
            }
        }
        s.push_str(" address-family ipv4 unicast\n");
        for n in &self.neighbors {
            let _ = writeln!(s, "  neighbor {} activate", n.address);
        }
        s.push_str(" exit-address-family\n!\n");
        s
    }
}

/// `zebra` and `bgpd` running in a namespace.
#[derive(Debug)]
pub struct FrrRouter {
    netns: String,
    /// bgpd, then zebra (stopped in that order).
    children: Vec<Child>,
    dir: TempDir,
}

impl FrrRouter {
    /// Starts zebra and bgpd in `ns` with `cfg`, and waits until bgpd
    /// answers `vtysh`. The daemons run as Debian's `frr` user (zebra
    /// refuses root without the `frrvty` group), which owns the directory.
    pub fn start(ns: &Netns, cfg: &FrrConfig) -> Result<FrrRouter> {
        let dir = TempDir::new("frr")?;
        let d = dir.path();
        std::fs::write(d.join("frr.conf"), cfg.render())?;
        let mut chown = Command::new("chown");
        chown.arg("-R").arg("frr:frr").arg(d);
        crate::run_checked(chown, Duration::from_secs(10))
            .context("giving FRR's directory to the frr user")?;
        let mut r = FrrRouter {
            netns: ns.name().to_owned(),
            children: Vec::new(),
            dir,
        };
        let p = |f: &str| r.dir.path().join(f).display().to_string();
        let common = |daemon: &str| {
            vec![
                "-u".to_owned(),
                "frr".to_owned(),
                "-g".to_owned(),
                "frr".to_owned(),
                "-i".to_owned(),
                p(&format!("{daemon}.pid")),
                "-z".to_owned(),
                p("zserv.api"),
                "--vty_socket".to_owned(),
                r.dir.path().display().to_string(),
                "-P".to_owned(),
                "0".to_owned(),
                "--log".to_owned(),
                format!("file:{}", p(&format!("{daemon}.log"))),
            ]
        };
        let mut zebra = common("zebra");
        zebra.extend(["-f".to_owned(), "/dev/null".to_owned()]);
        let z = cmd::spawn_in_netns(
            ns.name(),
            "TERM",
            &Path::new(FRR_DIR).join("zebra"),
            &zebra,
            &r.dir.path().join("zebra.out"),
        )?;
        r.children.insert(0, z);
        r.wait_for_file("zserv.api")?;
        let mut bgpd = common("bgpd");
        bgpd.extend(["-f".to_owned(), p("frr.conf")]);
        let b = cmd::spawn_in_netns(
            ns.name(),
            "TERM",
            &Path::new(FRR_DIR).join("bgpd"),
            &bgpd,
            &r.dir.path().join("bgpd.out"),
        )?;
        r.children.insert(0, b);
        let deadline = Instant::now() + FRR_READY;
        while r.vtysh("show bgp summary").is_err() {
            if Instant::now() > deadline {
                bail!(
                    "FRR's bgpd did not answer vtysh within {FRR_READY:?}:\n{}",
                    r.log_tail(30)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
        Ok(r)
    }

    fn wait_for_file(&self, name: &str) -> Result<()> {
        let deadline = Instant::now() + FRR_READY;
        while !self.dir.path().join(name).exists() {
            if Instant::now() > deadline {
                bail!(
                    "FRR did not create {name} within {FRR_READY:?}:\n{}",
                    self.log_tail(30)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// `vtysh -c CMD` against this router's daemons.
    pub fn vtysh(&self, command: &str) -> Result<String> {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns, "vtysh", "--vty_socket"])
            .arg(self.dir.path())
            .args(["-c", command]);
        crate::run_checked(c, Duration::from_secs(10))
    }

    /// `show ip route bgp`: the routes bgpd installed.
    pub fn bgp_routes(&self) -> Result<String> {
        self.vtysh("show ip route bgp")
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last lines of zebra's and bgpd's logs.
    pub fn log_tail(&self, lines: usize) -> String {
        let f = |n: &str| -> PathBuf { self.dir.path().join(n) };
        format!(
            "--- bgpd\n{}{}--- zebra\n{}{}",
            tail_file(&f("bgpd.out"), lines),
            tail_file(&f("bgpd.log"), lines),
            tail_file(&f("zebra.out"), lines),
            tail_file(&f("zebra.log"), lines),
        )
    }
}

impl Drop for FrrRouter {
    fn drop(&mut self) {
        for mut c in self.children.drain(..) {
            // The daemon is the child: `ip netns exec` and `setpriv` exec.
            if let Ok(pid) = i32::try_from(c.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
