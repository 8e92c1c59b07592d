//! The [`Pod`] guard: a pod namespace attached to a running `twill node`
//! through `twill pod attach`.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, Context, Result};
use ipnet::Ipv4Net;

use super::cmd::{self, SHORT};
use super::netns::Netns;
use super::node::NodeProcess;

/// What `twill pod attach` prints (JSON): the API's attachment.
pub type PodInfo = crate::api::Attachment;

/// A pod: its own namespace holding an `eth0` created by the agent. Drop runs
/// `twill pod detach` (errors ignored: the agent may be gone already) and
/// then deletes the namespace.
#[derive(Debug)]
pub struct Pod {
    info: Option<PodInfo>,
    ip: Ipv4Addr,
    twill_bin: PathBuf,
    socket: PathBuf,
    // Dropped last: detach needs the namespace to exist.
    ns: Netns,
}

impl Pod {
    /// Creates a namespace `PREFIX-…` and attaches it to `node` as `eth0`.
    pub fn attach(node: &NodeProcess, prefix: &str) -> Result<Pod> {
        Pod::attach_to(node.twill_bin(), node.socket(), prefix, None)
    }

    /// Like [`Pod::attach`] with an explicit binary, socket and optional fixed IP.
    pub fn attach_to(
        twill_bin: &Path,
        socket: &Path,
        prefix: &str,
        ip: Option<Ipv4Addr>,
    ) -> Result<Pod> {
        let ns = Netns::new(prefix)?;
        let mut pod = Pod {
            info: None,
            ip: Ipv4Addr::UNSPECIFIED,
            twill_bin: twill_bin.to_owned(),
            socket: socket.to_owned(),
            ns,
        };
        pod.reattach(ip)?;
        Ok(pod)
    }

    /// Runs `twill pod attach` for this pod's namespace (again, after a detach).
    pub fn reattach(&mut self, ip: Option<Ipv4Addr>) -> Result<&PodInfo> {
        let mut c = Command::new(&self.twill_bin);
        c.args(["pod", "attach", "--socket"])
            .arg(&self.socket)
            .args(["--netns", self.ns.name(), "--ifname", "eth0"]);
        if let Some(ip) = ip {
            c.args(["--ip", &ip.to_string()]);
        }
        let out = cmd::run_checked(c, SHORT)
            .with_context(|| format!("attaching pod {}", self.ns.name()))?;
        let info: PodInfo = serde_json::from_str(&out)
            .with_context(|| format!("parsing `twill pod attach` output: {out}"))?;
        let net: Ipv4Net = info
            .ip
            .parse()
            .or_else(|_| info.ip.parse::<Ipv4Addr>().map(Ipv4Net::from))
            .map_err(|e| anyhow!("pod ip {:?} from `twill pod attach`: {e}", info.ip))?;
        self.ip = net.addr();
        Ok(self.info.insert(info))
    }

    /// Runs `twill pod detach --id ID`; the namespace stays.
    pub fn detach(&mut self) -> Result<()> {
        let Some(info) = self.info.take() else {
            return Ok(());
        };
        let mut c = Command::new(&self.twill_bin);
        c.args(["pod", "detach", "--socket"])
            .arg(&self.socket)
            .args(["--id", &info.id]);
        cmd::run_checked(c, SHORT)
            .with_context(|| format!("detaching pod {} ({})", info.id, self.ns.name()))?;
        Ok(())
    }

    /// The pod's namespace.
    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    /// The pod's address (the last one assigned, also after a detach).
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// What the agent reported at the last attach (None while detached).
    pub fn info(&self) -> Option<&PodInfo> {
        self.info.as_ref()
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        // The agent may already be gone; the namespace is deleted regardless.
        let _ = self.detach();
    }
}
