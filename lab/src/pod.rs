//! The [`Pod`] guard: a pod namespace attached to a running `twill node`
//! through `twill pod attach`.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, Context, Result};
use ipnet::Ipv4Net;
use serde::Deserialize;

use crate::cmd::{self, SHORT};
use crate::netns::Netns;
use crate::node::NodeProcess;

/// The fields the lab reads of what `twill pod attach` prints (JSON: the
/// agent API's attachment). The lab's own view of that output, so that it
/// does not depend on the `twill` package: other fields are ignored, and a
/// renamed or retyped field fails the parse with the text in the error.
/// `twill`'s tests hold the agent's type against this view.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PodInfo {
    /// The attachment's id (what `twill pod detach --id` takes).
    pub id: String,
    /// The interface's MAC.
    pub mac: String,
    /// Address with prefix, e.g. `10.244.1.3/24`.
    pub ip: String,
    /// The interface MTU.
    pub mtu: u32,
}

/// A pod: its own namespace holding an `eth0` created by the agent. Drop runs
/// `twill pod detach` (errors ignored: the agent may be gone already) and
/// then deletes the namespace.
#[derive(Debug)]
pub struct Pod {
    info: Option<PodInfo>,
    ip: Ipv4Addr,
    twill_bin: PathBuf,
    socket: PathBuf,
    /// More `twill pod attach` arguments (e.g. port-security exceptions).
    args: Vec<String>,
    // Dropped last: detach needs the namespace to exist.
    ns: Netns,
}

impl Pod {
    /// Creates a namespace `PREFIX-…` and attaches it to `node` as `eth0`.
    pub fn attach(node: &NodeProcess, prefix: &str) -> Result<Pod> {
        Pod::attach_to(node.twill_bin(), node.socket(), prefix, None)
    }

    /// [`Pod::attach`] with more `twill pod attach` arguments, used again
    /// by [`Pod::reattach`] (e.g. `--allow-mac M --allow-ip P`).
    pub fn attach_args(node: &NodeProcess, prefix: &str, args: &[&str]) -> Result<Pod> {
        let ns = Netns::new(prefix)?;
        let mut pod = Pod {
            info: None,
            ip: Ipv4Addr::UNSPECIFIED,
            twill_bin: node.twill_bin().to_owned(),
            socket: node.socket().to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            ns,
        };
        pod.reattach(None)?;
        Ok(pod)
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
            args: Vec::new(),
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
        c.args(&self.args);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `twill pod attach` output as the agent prints it (pretty JSON, every
    /// field of its attachment, a CNI owner the lab does not read).
    const ATTACH_OUTPUT: &str = r#"{
  "id": "cni/twill/c0ffee/eth0",
  "netns": "/run/netns/twl-pod-a-1234-0-beef",
  "ifname": "eth0",
  "mac": "0a:58:0a:f4:01:03",
  "ip": "10.244.1.3/24",
  "gateway": "10.244.1.1",
  "mtu": 1450,
  "cni": { "network": "twill", "container_id": "c0ffee" }
}"#;

    #[test]
    fn reads_the_fields_it_needs_and_ignores_the_rest() {
        let info: PodInfo = serde_json::from_str(ATTACH_OUTPUT).unwrap();
        assert_eq!(
            info,
            PodInfo {
                id: "cni/twill/c0ffee/eth0".into(),
                mac: "0a:58:0a:f4:01:03".into(),
                ip: "10.244.1.3/24".into(),
                mtu: 1450,
            }
        );
    }

    #[test]
    fn a_missing_or_retyped_field_is_an_error() {
        let mut v: serde_json::Value = serde_json::from_str(ATTACH_OUTPUT).unwrap();
        v["mtu"] = "1450".into();
        assert!(serde_json::from_value::<PodInfo>(v.clone()).is_err());
        v.as_object_mut().unwrap().remove("mtu");
        assert!(serde_json::from_value::<PodInfo>(v).is_err());
    }
}
