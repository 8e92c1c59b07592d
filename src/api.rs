//! The node agent's local API: newline-delimited JSON over a Unix socket,
//! one request and one response per line. Used by the CLI (`twill pod`,
//! `twill status`, `twill counters`) and, later, by the CNI plugin.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Where `twill node` listens unless its config says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/twill/twill.sock";

/// A request to the agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Create a pod interface.
    Attach(AttachRequest),
    /// Remove a pod interface.
    Detach {
        /// The attachment's id (default id: `<netns>:<ifname>`).
        id: String,
    },
    /// List attachments.
    List,
    /// The agent's identity and readiness.
    Status,
    /// Every counter.
    Counters,
}

/// What `attach` needs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AttachRequest {
    /// Network namespace: a name under /run/netns or a path.
    pub netns: String,
    /// Interface name inside it.
    pub ifname: String,
    /// Attachment id; default `<netns>:<ifname>`. The same id attached
    /// twice returns the first attachment.
    #[serde(default)]
    pub id: Option<String>,
    /// A specific address of the node's subnet.
    #[serde(default)]
    pub ip: Option<std::net::Ipv4Addr>,
}

/// An attachment, as `attach` and `list` return it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Attachment {
    /// Its id.
    pub id: String,
    /// Namespace as given.
    pub netns: String,
    /// Interface name in the namespace.
    pub ifname: String,
    /// The interface's MAC.
    pub mac: String,
    /// Address with prefix, e.g. `10.244.1.3/24`.
    pub ip: String,
    /// The gateway (the subnet's .1).
    pub gateway: String,
    /// The interface MTU.
    pub mtu: u32,
}

/// One response line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// The result when `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// What went wrong when not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    /// A success carrying `v`.
    pub fn ok(v: impl Serialize) -> Response {
        match serde_json::to_value(v) {
            Ok(v) => Response {
                ok: true,
                result: Some(v),
                error: None,
            },
            Err(e) => Response::err(format!("cannot encode result: {e}")),
        }
    }

    /// A failure.
    pub fn err(msg: impl Into<String>) -> Response {
        Response {
            ok: false,
            result: None,
            error: Some(msg.into()),
        }
    }
}

/// Sends one request and returns the result, or the agent's error.
pub fn call(socket: &Path, req: &Request) -> Result<serde_json::Value> {
    let mut s = UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot reach the twill agent at {} (is `twill node` running?)",
            socket.display()
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut line = serde_json::to_string(req)?;
    line.push('\n');
    s.write_all(line.as_bytes())?;
    let mut r = BufReader::new(s);
    let mut out = String::new();
    r.read_line(&mut out)
        .context("reading the agent's response")?;
    if out.is_empty() {
        bail!("the agent closed the connection without answering");
    }
    let resp: Response =
        serde_json::from_str(&out).context("the agent's response is not valid JSON")?;
    if resp.ok {
        Ok(resp.result.unwrap_or(serde_json::Value::Null))
    } else {
        bail!("{}", resp.error.unwrap_or_else(|| "unknown error".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format() {
        let r = Request::Attach(AttachRequest {
            netns: "pod1".into(),
            ifname: "eth0".into(),
            id: None,
            ip: None,
        });
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"op":"attach","netns":"pod1","ifname":"eth0","id":null,"ip":null}"#
        );
        let back: Request =
            serde_json::from_str(r#"{"op":"attach","netns":"pod1","ifname":"eth0"}"#).unwrap();
        assert_eq!(back, r);
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"op":"detach","id":"x"}"#).unwrap(),
            Request::Detach { id: "x".into() }
        );
        assert!(serde_json::from_str::<Request>(
            r#"{"op":"attach","netns":"p","ifname":"e","bogus":1}"#
        )
        .is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"explode"}"#).is_err());
    }
}
