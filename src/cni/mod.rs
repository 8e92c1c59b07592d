//! twill's CNI plugin (`twill-cni`): what a container runtime (containerd,
//! CRI-O, podman) runs to attach a pod. It implements CNI spec 1.1.0 (ADD,
//! DEL, CHECK, STATUS, VERSION, GC) with the result formats of 0.3.0 to
//! 1.1.0, and does nothing itself: every request goes to the node agent's
//! local API (the Unix socket named by the configuration's `socket` key,
//! default `/run/twill/twill.sock`), which owns the TAPs and the addresses.
//!
//! The plugin is the `twill` executable itself, run under the name
//! `twill-cni` (`twill cni install` puts a copy there): one build, one
//! binary to ship, and the plugin can never speak another API version than
//! the agent it was installed with.
//!
//! An attachment's id is [`crate::api::cni_id`]`(network, CNI_CONTAINERID,
//! CNI_IFNAME)`, the spec's key: the same ADD twice returns the same result,
//! DEL finds it without the namespace, GC knows which are CNI's.
//!
//! "Agent not reachable" (not started yet, restarting) is "try again" (11)
//! for ADD, DEL, CHECK and GC, and "not available" (50) for STATUS: a
//! runtime that calls too early gets a clear, retryable answer.

mod install;
pub mod result;
pub mod spec;

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::Value;

pub use install::{install, InstallError, InstallOptions, Installed, EXAMPLE_CONFLIST};
use spec::{code, CniError, Command, Env, NetConf};

use crate::api::{self, CallError, CniAttachment, CniOwner, ErrorKind, Request};

/// The plugin executable's name (the `type` in the network configuration).
pub const PLUGIN_NAME: &str = "twill-cni";

/// How long the plugin waits for the agent's answer. Attaches are
/// serialized in the agent, so under a burst of ADDs an answer can take a
/// while; runtimes have their own, longer deadlines.
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Most bytes read from stdin (a network configuration with a long
/// `prevResult` or attachment list is still far smaller).
const MAX_STDIN: u64 = 16 << 20;

/// Whether this process was started as the plugin (its name is
/// [`PLUGIN_NAME`]).
pub fn invoked_as_plugin() -> bool {
    std::env::args_os()
        .next()
        .as_deref()
        .map(std::path::Path::new)
        .and_then(|p| p.file_name())
        .is_some_and(|n| n == PLUGIN_NAME)
}

/// What one invocation prints on stdout and exits with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Everything for stdout (may be empty).
    pub stdout: String,
    /// The exit status: 0 on success, 1 with an error object on stdout.
    pub exit: i32,
}

/// Runs the plugin on this process's environment and stdin; returns the
/// exit status after printing the outcome.
pub fn plugin_main() -> i32 {
    let env = Env::from_lookup(|k| std::env::var(k).ok());
    let mut stdin = Vec::new();
    let read = std::io::stdin()
        .lock()
        .take(MAX_STDIN)
        .read_to_end(&mut stdin);
    let out = match read {
        Ok(_) => run(&env, &stdin),
        Err(e) => failure(
            spec::CURRENT_VERSION,
            &CniError::new(code::IO_FAILURE, "cannot read stdin").details(e.to_string()),
        ),
    };
    let mut so = std::io::stdout().lock();
    // If stdout is gone, the runtime cannot read anything anyway.
    let _ = so.write_all(out.stdout.as_bytes());
    let _ = so.flush();
    out.exit
}

fn failure(version: &str, e: &CniError) -> Outcome {
    Outcome {
        stdout: format!("{}\n", e.to_json(version)),
        exit: 1,
    }
}

fn success(v: Option<Value>) -> Outcome {
    Outcome {
        stdout: v.map(|v| format!("{v}\n")).unwrap_or_default(),
        exit: 0,
    }
}

/// One invocation: the environment and stdin in, stdout and exit status out.
pub fn run(env: &Env, stdin: &[u8]) -> Outcome {
    let cmd = match env
        .command
        .as_deref()
        .ok_or_else(|| {
            CniError::new(code::INVALID_ENV, "CNI_COMMAND is not set")
                .details("one of ADD, DEL, CHECK, STATUS, VERSION, GC")
        })
        .and_then(Command::parse)
    {
        Ok(c) => c,
        Err(e) => return failure(&spec::error_version(stdin), &e),
    };
    if cmd == Command::Version {
        return success(Some(serde_json::json!({
            "cniVersion": spec::CURRENT_VERSION,
            "supportedVersions": spec::SUPPORTED_VERSIONS,
        })));
    }
    let conf = match NetConf::parse(stdin) {
        Ok(c) => c,
        Err(e) => return failure(&spec::error_version(stdin), &e),
    };
    match dispatch(cmd, env, &conf) {
        Ok(v) => success(v),
        Err(e) => failure(&conf.cni_version, &e),
    }
}

fn dispatch(cmd: Command, env: &Env, conf: &NetConf) -> Result<Option<Value>, CniError> {
    let name = env.command.as_deref().unwrap_or_default();
    if !spec::version_at_least(&conf.cni_version, cmd.since()) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "{name} needs cniVersion {} or later, the configuration has {}",
                cmd.since(),
                conf.cni_version
            ),
        ));
    }
    match cmd {
        Command::Add => add(env, conf, name).map(Some),
        Command::Del => del(env, conf, name).map(|()| None),
        Command::Check => check(env, conf, name).map(|()| None),
        Command::Status => status(conf).map(|()| None),
        Command::Gc => gc(conf).map(|()| None),
        Command::Version => Ok(None), // answered before the configuration is read
    }
}

/// The agent's answer to `req`, with its failures as CNI errors.
fn call(conf: &NetConf, req: &Request, status: bool) -> Result<Value, CniError> {
    api::call_typed(&conf.socket, req, AGENT_TIMEOUT).map_err(|e| agent_error(&e, status))
}

/// Maps a failed call to a CNI error. `status`: for STATUS, where every
/// "cannot serve" is 50.
fn agent_error(e: &CallError, status: bool) -> CniError {
    let unavailable = if status {
        code::NOT_AVAILABLE
    } else {
        code::TRY_AGAIN
    };
    match e {
        CallError::Unreachable { socket, source } => CniError::new(
            unavailable,
            if status {
                "the twill agent is not running".to_owned()
            } else {
                "the twill agent is not running (or starting, or restarting): try again".to_owned()
            },
        )
        .details(format!("no answer on {socket}: {source}")),
        CallError::Protocol(m) => {
            CniError::new(code::INTERNAL, "the twill agent's answer is not understood")
                .details(m.clone())
        }
        CallError::Agent { kind, msg } => {
            let code = match kind {
                Some(ErrorKind::NotReady) => unavailable,
                Some(ErrorKind::NetnsNotFound) | Some(ErrorKind::NotFound) => {
                    code::UNKNOWN_CONTAINER
                }
                Some(ErrorKind::NetnsInvalid) | Some(ErrorKind::InvalidArgument) => {
                    code::INVALID_ENV
                }
                Some(ErrorKind::AddressUnavailable) => code::ADDRESS_UNAVAILABLE,
                Some(ErrorKind::Conflict) => code::CONFLICT,
                Some(ErrorKind::CheckFailed) => code::CHECK_FAILED,
                _ => code::INTERNAL,
            };
            CniError::new(code, msg.clone())
        }
    }
}

fn owner(env: &Env, conf: &NetConf, cmd: &str) -> Result<CniOwner, CniError> {
    Ok(CniOwner {
        network: conf.name.clone(),
        container_id: env.container_id(cmd)?.to_owned(),
    })
}

fn add(env: &Env, conf: &NetConf, cmd: &str) -> Result<Value, CniError> {
    let owner = owner(env, conf, cmd)?;
    let netns = env.required("CNI_NETNS", &env.netns, cmd)?;
    let ifname = env.ifname(cmd)?;
    let args = spec::parse_args(env.args.as_deref())?;
    let v = call(
        conf,
        &Request::Attach(api::AttachRequest {
            netns: netns.to_owned(),
            ifname: ifname.to_owned(),
            id: None,
            ip: args.ip,
            cni: Some(owner),
            port_security: spec::port_security(conf)?,
            pod: args.pod,
        }),
        false,
    )?;
    let att = attachment(v)?;
    Ok(result::add_result(&conf.cni_version, &att))
}

/// The agent's answer to attach or check, read as an attachment.
fn attachment(v: serde_json::Value) -> Result<api::Attachment, CniError> {
    serde_json::from_value(v).map_err(|e| {
        CniError::new(
            code::INTERNAL,
            "the twill agent's attachment is not understood",
        )
        .details(e.to_string())
    })
}

fn del(env: &Env, conf: &NetConf, cmd: &str) -> Result<(), CniError> {
    // CNI_NETNS may be missing (the namespace is gone): the id is enough.
    let owner = owner(env, conf, cmd)?;
    let ifname = env.ifname(cmd)?;
    spec::parse_args(env.args.as_deref())?;
    let id = api::cni_id(&owner.network, &owner.container_id, ifname);
    // Unknown ids answer found=false: DEL of what is not there succeeds.
    call(conf, &Request::Detach { id }, false)?;
    Ok(())
}

fn check(env: &Env, conf: &NetConf, cmd: &str) -> Result<(), CniError> {
    let owner = owner(env, conf, cmd)?;
    let netns = env.required("CNI_NETNS", &env.netns, cmd)?;
    let ifname = env.ifname(cmd)?;
    spec::parse_args(env.args.as_deref())?;
    let prev = conf.raw.get("prevResult").ok_or_else(|| {
        CniError::new(
            code::INVALID_CONFIG,
            "network configuration: CHECK needs \"prevResult\"",
        )
    })?;
    let id = api::cni_id(&owner.network, &owner.container_id, ifname);
    let v = call(conf, &Request::Check { id }, false)?;
    let att = attachment(v)?;
    if att.netns != netns {
        return Err(CniError::new(
            code::CHECK_FAILED,
            format!(
                "{ifname} of {} is attached in {}, not in CNI_NETNS {netns}",
                owner.container_id, att.netns
            ),
        ));
    }
    result::check_prev_result(prev, &att)
}

fn status(conf: &NetConf) -> Result<(), CniError> {
    let v = call(conf, &Request::Status, true)?;
    if v.get("ready").and_then(Value::as_bool) == Some(true) {
        Ok(())
    } else {
        Err(CniError::new(
            code::NOT_AVAILABLE,
            "the twill agent is running but not ready",
        ))
    }
}

fn gc(conf: &NetConf) -> Result<(), CniError> {
    // libcni sends the list under both names (the spec's text once said
    // "cni.dev/attachments").
    let list = conf
        .raw
        .get("cni.dev/valid-attachments")
        .or_else(|| conf.raw.get("cni.dev/attachments"))
        .ok_or_else(|| {
            CniError::new(
                code::INVALID_CONFIG,
                "network configuration: GC needs \"cni.dev/valid-attachments\"",
            )
            .details("without it every attachment of the network would be released")
        })?;
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(rename = "containerID")]
        container_id: String,
        ifname: String,
    }
    let entries: Vec<Entry> = serde_json::from_value(list.clone()).map_err(|e| {
        CniError::new(
            code::INVALID_CONFIG,
            "network configuration: bad \"cni.dev/valid-attachments\"",
        )
        .details(e.to_string())
    })?;
    let valid = entries
        .into_iter()
        .map(|e| CniAttachment {
            container_id: e.container_id,
            ifname: e.ifname,
        })
        .collect();
    call(
        conf,
        &Request::Gc {
            network: conf.name.clone(),
            valid,
        },
        false,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests;
