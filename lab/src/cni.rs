//! Playing the container runtime: install the CNI plugin with `twill cni
//! install` into a temporary directory ([`CniInstall`]) and run it exactly
//! as containerd or CRI-O do ([`CniRuntime`]): a clean environment with the
//! `CNI_*` variables, the plugin's network configuration (the list's `name`
//! and `cniVersion` merged in, `prevResult` or `cni.dev/valid-attachments`
//! added) on stdin, the result or the error object read from stdout, the
//! exit status.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Map, Value};

use crate::cmd;
use crate::tempdir::TempDir;

/// Deadline of one plugin run (an ADD may wait behind others in the agent).
pub const PLUGIN_TIMEOUT: Duration = Duration::from_secs(90);

/// The plugin and its configuration list installed by `twill cni install`
/// into `DIR/bin` and `DIR/net.d`; the directory goes on drop.
#[derive(Debug)]
pub struct CniInstall {
    /// `DIR/bin/TYPE`, TYPE being the list's first plugin's `type`
    /// (`twill-cni`), as a runtime finds it.
    pub plugin: PathBuf,
    /// `DIR/net.d/10-twill.conflist`.
    pub conflist: PathBuf,
    /// `DIR/bin` (the runtime's `CNI_PATH`).
    pub bin_dir: PathBuf,
    dir: TempDir,
}

impl CniInstall {
    /// Runs `TWILL_BIN cni install` into a fresh directory, with `socket`
    /// in the configuration; `symlink` links the plugin instead of copying
    /// the (large, in debug builds) executable.
    pub fn new(twill_bin: &Path, socket: &Path, symlink: bool) -> Result<CniInstall> {
        let dir = TempDir::new("twl-cni")?;
        let bin_dir = dir.path().join("bin");
        let conf_dir = dir.path().join("net.d");
        let mut c = Command::new(twill_bin);
        c.args(["cni", "install", "--bin-dir"])
            .arg(&bin_dir)
            .arg("--conf-dir")
            .arg(&conf_dir)
            .arg("--socket")
            .arg(socket);
        if symlink {
            c.arg("--symlink");
        }
        cmd::run_checked(c, cmd::SHORT).context("twill cni install")?;
        let conflist = conf_dir.join("10-twill.conflist");
        let mut inst = CniInstall {
            plugin: PathBuf::new(),
            conflist,
            bin_dir,
            dir,
        };
        // Found as a runtime finds it: the first plugin's `type`, in CNI_PATH.
        inst.plugin = inst.bin_dir.join(plugin_type(&inst.list()?)?);
        Ok(inst)
    }

    /// The installed configuration list.
    pub fn list(&self) -> Result<Value> {
        let text = std::fs::read_to_string(&self.conflist)
            .with_context(|| format!("reading {}", self.conflist.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", self.conflist.display()))
    }

    /// A runtime using the installed plugin and list.
    pub fn runtime(&self) -> Result<CniRuntime> {
        CniRuntime::new(&self.plugin, &self.bin_dir, &self.list()?)
    }

    /// The temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The executable a runtime runs for `list`: its first plugin's `type`,
/// a file name looked up in `CNI_PATH`.
fn plugin_type(list: &Value) -> Result<&str> {
    let ty = list
        .get("plugins")
        .and_then(|p| p.get(0))
        .and_then(|p| p.get("type"))
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("configuration list without a first plugin's type: {list}"))?;
    if ty.is_empty() || ty.contains('/') || ty == "." || ty == ".." {
        bail!("plugin type {ty:?} is not a file name");
    }
    Ok(ty)
}

/// What one plugin run gave.
#[derive(Debug, Clone)]
pub struct CniOutput {
    /// Exit status (-1 if killed by a signal).
    pub exit: i32,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

impl CniOutput {
    /// Stdout as JSON.
    pub fn json(&self) -> Result<Value> {
        serde_json::from_str(&self.stdout).with_context(|| {
            format!(
                "plugin stdout is not JSON: {:?} (stderr {:?})",
                self.stdout, self.stderr
            )
        })
    }

    /// The error object's `code` when the run failed with one.
    pub fn error_code(&self) -> Option<u64> {
        (self.exit != 0)
            .then(|| self.json().ok()?.get("code")?.as_u64())
            .flatten()
    }

    /// The result, if the run succeeded; else an error showing the output.
    pub fn ok(&self) -> Result<&Self> {
        if self.exit == 0 {
            Ok(self)
        } else {
            Err(anyhow!(
                "plugin failed (exit {}): {} {}",
                self.exit,
                self.stdout.trim(),
                self.stderr.trim()
            ))
        }
    }
}

/// Runs `plugin` with exactly `env` (nothing inherited) and `stdin`;
/// kills it after [`PLUGIN_TIMEOUT`].
pub fn run_plugin(plugin: &Path, env: &[(&str, &str)], stdin: &[u8]) -> Result<CniOutput> {
    let mut c = Command::new(plugin);
    c.env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c
        .spawn()
        .with_context(|| format!("running {}", plugin.display()))?;
    let out = child.stdout.take().map(cmd::drain);
    let err = child.stderr.take().map(cmd::drain);
    if let Some(mut si) = child.stdin.take() {
        // The plugin may exit before reading (e.g. a bad environment).
        let _ = si.write_all(stdin);
    }
    let status = cmd::wait_deadline(&mut child, PLUGIN_TIMEOUT)?;
    let stdout = out.map(cmd::join_drain).unwrap_or_default();
    let stderr = err.map(cmd::join_drain).unwrap_or_default();
    let status = status.ok_or_else(|| {
        anyhow!(
            "{} did not finish within {PLUGIN_TIMEOUT:?}",
            plugin.display()
        )
    })?;
    Ok(CniOutput {
        exit: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

/// A container runtime's view of one network: the plugin, `CNI_PATH`, the
/// list's name and version and the twill plugin's entry.
#[derive(Debug, Clone)]
pub struct CniRuntime {
    plugin: PathBuf,
    cni_path: String,
    name: String,
    version: String,
    entry: Map<String, Value>,
}

impl CniRuntime {
    /// A runtime for `list` (a configuration list whose first plugin is twill's).
    pub fn new(plugin: &Path, bin_dir: &Path, list: &Value) -> Result<CniRuntime> {
        let s = |k: &str| {
            list.get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("configuration list without {k:?}: {list}"))
        };
        let entry = list
            .get("plugins")
            .and_then(|p| p.get(0))
            .and_then(Value::as_object)
            .cloned()
            .ok_or_else(|| anyhow!("configuration list without plugins: {list}"))?;
        Ok(CniRuntime {
            plugin: plugin.to_owned(),
            cni_path: bin_dir.display().to_string(),
            name: s("name")?,
            version: s("cniVersion")?,
            entry,
        })
    }

    /// The same runtime speaking `version` (as a list with that
    /// `cniVersion` would make it).
    pub fn with_version(&self, version: &str) -> CniRuntime {
        CniRuntime {
            version: version.to_owned(),
            ..self.clone()
        }
    }

    /// The same runtime with another network name.
    pub fn with_name(&self, name: &str) -> CniRuntime {
        CniRuntime {
            name: name.to_owned(),
            ..self.clone()
        }
    }

    /// The version it speaks.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The plugin's stdin as libcni builds it: the plugin's entry with the
    /// list's `name` and `cniVersion`, plus `extra` keys.
    pub fn conf(&self, extra: &[(&str, Value)]) -> Value {
        let mut m = self.entry.clone();
        m.insert("name".into(), self.name.clone().into());
        m.insert("cniVersion".into(), self.version.clone().into());
        for (k, v) in extra {
            m.insert((*k).to_owned(), v.clone());
        }
        Value::Object(m)
    }

    /// Runs the plugin for `command` on a container (`None`s are left unset).
    pub fn exec(
        &self,
        command: &str,
        container: Option<&str>,
        netns: Option<&str>,
        ifname: Option<&str>,
        args: Option<&str>,
        conf: &Value,
    ) -> Result<CniOutput> {
        let mut env: Vec<(&str, &str)> = vec![
            ("CNI_COMMAND", command),
            ("CNI_PATH", &self.cni_path),
            ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        ];
        for (k, v) in [
            ("CNI_CONTAINERID", container),
            ("CNI_NETNS", netns),
            ("CNI_IFNAME", ifname),
            ("CNI_ARGS", args),
        ] {
            if let Some(v) = v {
                env.push((k, v));
            }
        }
        let stdin = serde_json::to_vec(conf)?;
        run_plugin(&self.plugin, &env, &stdin)
    }

    /// ADD.
    pub fn add(&self, container: &str, netns: &str, ifname: &str) -> Result<CniOutput> {
        self.add_args(container, netns, ifname, None)
    }

    /// ADD with `CNI_ARGS`.
    pub fn add_args(
        &self,
        container: &str,
        netns: &str,
        ifname: &str,
        args: Option<&str>,
    ) -> Result<CniOutput> {
        let conf = self.conf(&[]);
        self.exec(
            "ADD",
            Some(container),
            Some(netns),
            Some(ifname),
            args,
            &conf,
        )
    }

    /// DEL (`netns` None: the runtime no longer has it), with `prevResult`
    /// when given.
    pub fn del(
        &self,
        container: &str,
        netns: Option<&str>,
        ifname: &str,
        prev: Option<&Value>,
    ) -> Result<CniOutput> {
        let conf = match prev {
            Some(p) => self.conf(&[("prevResult", p.clone())]),
            None => self.conf(&[]),
        };
        self.exec("DEL", Some(container), netns, Some(ifname), None, &conf)
    }

    /// CHECK against the result of the ADD.
    pub fn check(
        &self,
        container: &str,
        netns: &str,
        ifname: &str,
        prev: &Value,
    ) -> Result<CniOutput> {
        let conf = self.conf(&[("prevResult", prev.clone())]);
        self.exec(
            "CHECK",
            Some(container),
            Some(netns),
            Some(ifname),
            None,
            &conf,
        )
    }

    /// GC keeping `valid` (container ID, interface) pairs.
    pub fn gc(&self, valid: &[(&str, &str)]) -> Result<CniOutput> {
        let list: Vec<Value> = valid
            .iter()
            .map(|(c, i)| json!({ "containerID": c, "ifname": i }))
            .collect();
        let conf = self.conf(&[("cni.dev/valid-attachments", Value::Array(list))]);
        self.exec("GC", None, None, None, None, &conf)
    }

    /// STATUS.
    pub fn status(&self) -> Result<CniOutput> {
        let conf = self.conf(&[]);
        self.exec("STATUS", None, None, None, None, &conf)
    }

    /// VERSION.
    pub fn version_cmd(&self) -> Result<CniOutput> {
        let conf = json!({ "cniVersion": self.version });
        self.exec("VERSION", None, None, None, None, &conf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_type_is_the_first_plugins_file_name() {
        let list = json!({ "name": "twill", "cniVersion": "1.0.0", "plugins": [
            { "type": "twill-cni", "socket": "/run/twill/twill.sock" },
            { "type": "portmap" } ] });
        assert_eq!(plugin_type(&list).ok(), Some("twill-cni"));
        for bad in [
            json!({ "plugins": [] }),
            json!({ "plugins": [{ "type": 1 }] }),
            json!({ "plugins": [{ "type": "../bin/sh" }] }),
            json!({ "plugins": [{ "type": ".." }] }),
            json!({ "plugins": [{ "type": "" }] }),
        ] {
            assert!(plugin_type(&bad).is_err(), "{bad}");
        }
    }
}
