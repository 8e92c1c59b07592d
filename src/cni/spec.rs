//! The CNI spec's side of the plugin: versions, error codes and the error
//! object, the network configuration twill reads, the environment and
//! `CNI_ARGS`. Pure functions of their input: no agent, no I/O.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::api::DEFAULT_SOCKET;

/// The spec versions this plugin speaks, oldest first (0.1.0 and 0.2.0,
/// whose results had no interfaces, are not among them).
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// The newest, used where no configuration says which.
pub const CURRENT_VERSION: &str = "1.1.0";

/// The spec's well-known error codes, and twill's own (100 and up).
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in the network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content.
    pub const DECODE: u32 = 6;
    /// Invalid network configuration.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later.
    pub const TRY_AGAIN: u32 = 11;
    /// STATUS: the plugin is not available.
    pub const NOT_AVAILABLE: u32 = 50;
    /// STATUS: not available, existing containers may have limited connectivity.
    pub const LIMITED_CONNECTIVITY: u32 = 51;
    /// twill: the requested address is taken, or none is left.
    pub const ADDRESS_UNAVAILABLE: u32 = 100;
    /// twill: the interface or attachment exists differently.
    pub const CONFLICT: u32 = 101;
    /// twill: CHECK found the attachment not as it should be.
    pub const CHECK_FAILED: u32 = 102;
    /// Anything else (libcni's "internal error").
    pub const INTERNAL: u32 = 999;
}

/// A CNI error: printed on stdout as `{cniVersion, code, msg, details}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CNI error {code}: {msg}{}", if details.is_empty() { String::new() } else { format!(" ({details})") })]
pub struct CniError {
    /// One of [`code`].
    pub code: u32,
    /// Short message.
    pub msg: String,
    /// Longer explanation (may be empty).
    pub details: String,
}

impl CniError {
    /// An error without details.
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// Adds details.
    pub fn details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    /// The error object of `version`.
    pub fn to_json(&self, version: &str) -> Value {
        let mut m = Map::new();
        m.insert("cniVersion".into(), version.into());
        m.insert("code".into(), self.code.into());
        m.insert("msg".into(), self.msg.clone().into());
        if !self.details.is_empty() {
            m.insert("details".into(), self.details.clone().into());
        }
        Value::Object(m)
    }
}

/// `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Add the container to the network.
    Add,
    /// Remove it.
    Del,
    /// Verify it is as ADD left it.
    Check,
    /// Is the plugin ready for ADD?
    Status,
    /// Which versions does the plugin speak?
    Version,
    /// Release what the valid attachments do not name.
    Gc,
}

impl Command {
    /// Parses `CNI_COMMAND`.
    pub fn parse(s: &str) -> Result<Command, CniError> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "VERSION" => Command::Version,
            "GC" => Command::Gc,
            other => {
                return Err(CniError::new(
                    code::INVALID_ENV,
                    format!("unknown CNI_COMMAND {other:?}"),
                )
                .details("one of ADD, DEL, CHECK, STATUS, VERSION, GC"))
            }
        })
    }

    /// The oldest spec version that has this command.
    pub fn since(self) -> &'static str {
        match self {
            Command::Add | Command::Del | Command::Version => "0.3.0",
            Command::Check => "0.4.0",
            Command::Status | Command::Gc => "1.1.0",
        }
    }
}

/// Compares two supported versions by their place in [`SUPPORTED_VERSIONS`].
pub fn version_at_least(v: &str, min: &str) -> bool {
    let pos = |x: &str| SUPPORTED_VERSIONS.iter().position(|s| *s == x);
    matches!((pos(v), pos(min)), (Some(a), Some(b)) if a >= b)
}

/// Whether results of `v` carry `ips[].version` (0.3.x and 0.4.0 do, 1.x not).
pub fn ips_have_version(v: &str) -> bool {
    !version_at_least(v, "1.0.0")
}

/// What twill reads of the network configuration on stdin. Other keys
/// (`args`, `runtimeConfig`, `capabilities`, `dns` …) are the runtime's and
/// are ignored, as the spec allows.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    /// `cniVersion`, one of [`SUPPORTED_VERSIONS`].
    pub cni_version: String,
    /// `name`: the network's name.
    pub name: String,
    /// `type` (the plugin's executable name).
    pub kind: String,
    /// `socket`: the agent's API socket.
    pub socket: PathBuf,
    /// The whole object (for `prevResult` and GC's attachments).
    pub raw: Map<String, Value>,
}

/// The version an error about `stdin` should carry: the configuration's if
/// it is one this plugin speaks, else the newest.
pub fn error_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_owned))
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| CURRENT_VERSION.to_owned())
}

/// A string-valued key, `None` if absent.
fn opt_str(m: &Map<String, Value>, key: &str) -> Result<Option<String>, CniError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(CniError::new(
            code::INVALID_CONFIG,
            format!("network configuration: {key:?} must be a string, not {other}"),
        )),
    }
}

/// A network name or container ID as the spec has them: an alphanumeric
/// character, then alphanumerics, '_', '.' or '-'.
pub fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl NetConf {
    /// Parses the configuration on stdin.
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        let v: Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                code::DECODE,
                "cannot decode the network configuration on stdin",
            )
            .details(e.to_string())
        })?;
        let Value::Object(raw) = v else {
            return Err(CniError::new(
                code::DECODE,
                "the network configuration on stdin is not a JSON object",
            ));
        };
        let cni_version = opt_str(&raw, "cniVersion")?.unwrap_or_default();
        if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
            let shown = if cni_version.is_empty() {
                "none (0.1.0)".to_owned()
            } else {
                format!("{cni_version:?}")
            };
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!("incompatible CNI version: the configuration has {shown}"),
            )
            .details(format!("twill supports {}", SUPPORTED_VERSIONS.join(", "))));
        }
        let name = opt_str(&raw, "name")?.ok_or_else(|| {
            CniError::new(
                code::INVALID_CONFIG,
                "network configuration: \"name\" is missing",
            )
        })?;
        if !valid_name(&name) {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                format!("network configuration: invalid network name {name:?}"),
            )
            .details("an alphanumeric character, then alphanumerics, '_', '.' or '-'"));
        }
        let kind = opt_str(&raw, "type")?.ok_or_else(|| {
            CniError::new(
                code::INVALID_CONFIG,
                "network configuration: \"type\" is missing",
            )
        })?;
        if raw.get("ipam").is_some_and(|v| !v.is_null()) {
            return Err(CniError::new(
                code::UNSUPPORTED_FIELD,
                "network configuration: unsupported field \"ipam\"",
            )
            .details("the twill agent assigns addresses itself (IP= in CNI_ARGS asks for one)"));
        }
        let socket = opt_str(&raw, "socket")?.unwrap_or_else(|| DEFAULT_SOCKET.to_owned());
        if socket.is_empty() {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "network configuration: \"socket\" is empty",
            ));
        }
        Ok(NetConf {
            cni_version,
            name,
            kind,
            socket: PathBuf::from(socket),
            raw,
        })
    }
}

/// The `CNI_*` environment of one invocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    /// `CNI_COMMAND`.
    pub command: Option<String>,
    /// `CNI_CONTAINERID`.
    pub container_id: Option<String>,
    /// `CNI_NETNS`.
    pub netns: Option<String>,
    /// `CNI_IFNAME`.
    pub ifname: Option<String>,
    /// `CNI_ARGS`.
    pub args: Option<String>,
    /// `CNI_PATH` (read, not used: twill delegates to no other plugin).
    pub path: Option<String>,
}

impl Env {
    /// Reads the variables through `get` (empty counts as unset).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Env {
        let v = |k: &str| get(k).filter(|s| !s.is_empty());
        Env {
            command: v("CNI_COMMAND"),
            container_id: v("CNI_CONTAINERID"),
            netns: v("CNI_NETNS"),
            ifname: v("CNI_IFNAME"),
            args: v("CNI_ARGS"),
            path: v("CNI_PATH"),
        }
    }

    /// A required variable.
    pub fn required<'a>(
        &self,
        name: &str,
        v: &'a Option<String>,
        cmd: &str,
    ) -> Result<&'a str, CniError> {
        v.as_deref().ok_or_else(|| {
            CniError::new(code::INVALID_ENV, format!("{name} is not set"))
                .details(format!("{cmd} needs it"))
        })
    }

    /// `CNI_CONTAINERID`, required and checked.
    pub fn container_id(&self, cmd: &str) -> Result<&str, CniError> {
        let id = self.required("CNI_CONTAINERID", &self.container_id, cmd)?;
        if !valid_name(id) {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!("CNI_CONTAINERID {id:?} is not a valid container ID"),
            )
            .details("an alphanumeric character, then alphanumerics, '_', '.' or '-'"));
        }
        Ok(id)
    }

    /// `CNI_IFNAME`, required and checked.
    pub fn ifname(&self, cmd: &str) -> Result<&str, CniError> {
        let n = self.required("CNI_IFNAME", &self.ifname, cmd)?;
        if n.len() > 15
            || n == "."
            || n == ".."
            || n.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
        {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!("CNI_IFNAME {n:?} is not a valid interface name"),
            )
            .details("1 to 15 characters, not '.' or '..', no '/', ':' or white space"));
        }
        Ok(n)
    }
}

/// What twill takes from `CNI_ARGS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    /// `IP=`: a specific address of the node's subnet.
    pub ip: Option<Ipv4Addr>,
    /// `K8S_POD_NAMESPACE=` and `K8S_POD_NAME=` (both, or neither): the
    /// Kubernetes pod being attached.
    pub pod: Option<crate::api::PodRef>,
}

/// Keys known without `IgnoreUnknown` (Kubernetes' runtimes send these).
const KNOWN_ARGS: &[&str] = &[
    "IP",
    "IgnoreUnknown",
    "K8S_POD_NAMESPACE",
    "K8S_POD_NAME",
    "K8S_POD_INFRA_CONTAINER_ID",
    "K8S_POD_UID",
];

/// Parses `CNI_ARGS` (`K=V;K=V`). Unknown keys are an error unless
/// `IgnoreUnknown=1` (or `true`) is among them, as libcni's convention has it.
pub fn parse_args(s: Option<&str>) -> Result<CniArgs, CniError> {
    let bad = |msg: String| CniError::new(code::INVALID_ENV, msg);
    let mut pairs = Vec::new();
    for part in s.unwrap_or("").split(';').filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| bad(format!("CNI_ARGS: {part:?} is not KEY=VALUE")))?;
        if k.is_empty() {
            return Err(bad(format!("CNI_ARGS: {part:?} has an empty key")));
        }
        pairs.push((k, v));
    }
    let ignore_unknown = pairs
        .iter()
        .any(|(k, v)| *k == "IgnoreUnknown" && (*v == "1" || v.eq_ignore_ascii_case("true")));
    let mut out = CniArgs::default();
    let (mut pod_ns, mut pod_name) = (None, None);
    for (k, v) in pairs {
        match k {
            "K8S_POD_NAMESPACE" => pod_ns = Some(v),
            "K8S_POD_NAME" => pod_name = Some(v),
            "IP" => {
                let ip = v.parse::<Ipv4Addr>().map_err(|_| {
                    bad(format!(
                        "CNI_ARGS: IP={v:?} is not an IPv4 address (twill is IPv4 only)"
                    ))
                })?;
                out.ip = Some(ip);
            }
            k if KNOWN_ARGS.contains(&k) || ignore_unknown => {}
            k => {
                return Err(bad(format!(
                    "CNI_ARGS: unknown key {k:?} (add IgnoreUnknown=1 to pass it anyway)"
                )))
            }
        }
    }
    out.pod = match (pod_ns, pod_name) {
        (Some(ns), Some(name)) => {
            Some(crate::api::PodRef::new(ns, name).map_err(|e| bad(format!("CNI_ARGS: {e}")))?)
        }
        (None, None) => None,
        (Some(_), None) => {
            return Err(bad(
                "CNI_ARGS: K8S_POD_NAMESPACE without K8S_POD_NAME".into()
            ))
        }
        (None, Some(_)) => {
            return Err(bad(
                "CNI_ARGS: K8S_POD_NAME without K8S_POD_NAMESPACE".into()
            ))
        }
    };
    Ok(out)
}

/// Port security's exceptions from the network configuration's runtime
/// arguments, `"args": {"cni": {"portSecurity": {"allowedMacs": [..],
/// "allowedIPs": [..]}}}` (the CNI convention for per-attachment
/// arguments, which a runtime or a meta-plugin such as Multus fills in per
/// pod). Absent: none. The agent checks the values.
pub fn port_security(conf: &NetConf) -> Result<crate::api::PortSecurity, CniError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    struct Wire {
        #[serde(default)]
        allowed_macs: Vec<String>,
        #[serde(default, rename = "allowedIPs")]
        allowed_ips: Vec<String>,
    }
    let v = conf
        .raw
        .get("args")
        .and_then(|a| a.get("cni"))
        .and_then(|c| c.get("portSecurity"));
    let Some(v) = v else {
        return Ok(crate::api::PortSecurity::default());
    };
    let w: Wire = serde_json::from_value(v.clone()).map_err(|e| {
        CniError::new(
            code::INVALID_CONFIG,
            format!("network configuration: args.cni.portSecurity: {e}"),
        )
        .details("expected {\"allowedMacs\": [\"aa:bb:cc:dd:ee:ff\"], \"allowedIPs\": [\"10.244.1.200/32\"]}")
    })?;
    Ok(crate::api::PortSecurity {
        allowed_macs: w.allowed_macs,
        allowed_ips: w.allowed_ips,
    })
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
