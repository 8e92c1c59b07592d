//! The node agent's local API: newline-delimited JSON over a Unix socket,
//! one request and one response per line. Used by the CLI (`twill pod`,
//! `twill status`, `twill counters`) and by the CNI plugin (`twill-cni`).
//!
//! A failed request says what went wrong in words (`error`) and, for the
//! callers that must react differently, in kind (`kind`, an [`ErrorKind`]).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
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
    /// BGP's sessions (BGP mode), as `twill bgp status` shows them.
    Bgp,
    /// The MAC table (`vswitch::views::Fdb`).
    Fdb,
    /// The remote nodes (`vswitch::views::Nodes`).
    Nodes,
    /// The router's table (`vswitch::views::Routes`).
    Routes,
    /// The ports (`vswitch::views::Ports`).
    Ports,
    /// The service ports the dataplane balances.
    Services,
    /// Verifies an attachment against the system: the agent still holds it,
    /// its namespace is the one attached and holds the interface with the
    /// MAC, the address and the link up. Returns the attachment.
    Check {
        /// The attachment's id.
        id: String,
    },
    /// Releases every attachment made through CNI for `network` whose
    /// (container ID, interface) is not in `valid` (the CNI GC command).
    /// Attachments made without CNI are never touched. Returns the ids
    /// released.
    Gc {
        /// The CNI network name.
        network: String,
        /// The attachments to keep.
        valid: Vec<CniAttachment>,
    },
    /// Copies a port's frames or the tunnel's datagrams (`twill capture`).
    /// Root or the socket file's owner only. After the OK line the
    /// connection carries the pcap stream in [`capture_frame`]s, until
    /// `count` records or the client closes (or shuts down its sending
    /// half), then an empty frame and one [`CaptureEnd`] line.
    Capture {
        /// What to copy.
        target: CaptureTarget,
        /// Stop after this many records (none: until the client closes).
        #[serde(default)]
        count: Option<u64>,
        /// Bytes kept of each frame (1 to 262144).
        snaplen: u32,
    },
}

/// Who made an attachment through CNI: the network and container of the
/// spec's key (network name, container ID, interface name).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
pub struct CniOwner {
    /// The CNI network name (`name` of the network configuration).
    pub network: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
}

/// One entry of CNI's `cni.dev/valid-attachments`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
pub struct CniAttachment {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
}

/// The attachment id of a CNI attachment: `cni/<network>/<container>/<ifname>`.
/// None of the three may contain '/' (the spec's character sets for network
/// names, container IDs and interface names exclude it), so the id is
/// unambiguous and never equals a default id (`<netns>:<ifname>`) of an
/// attachment whose namespace is a name.
pub fn cni_id(network: &str, container_id: &str, ifname: &str) -> String {
    format!("cni/{network}/{container_id}/{ifname}")
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
    /// Set when a CNI plugin attaches: the id is then [`cni_id`] (an `id`
    /// given as well must equal it), and `gc` may release the attachment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni: Option<CniOwner>,
    /// Port security's exceptions (none: the pod's own MAC and address only).
    #[serde(default, skip_serializing_if = "PortSecurity::is_empty")]
    pub port_security: PortSecurity,
    /// The Kubernetes pod this is (its labels and NetworkPolicies apply;
    /// other nodes learn its address): `K8S_POD_NAMESPACE` and
    /// `K8S_POD_NAME` through CNI, `--pod NS/NAME` by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
}

/// A Kubernetes pod's namespace and name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(deny_unknown_fields)]
pub struct PodRef {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl PodRef {
    /// Reads `NAMESPACE/NAME`; both must be valid Kubernetes names.
    pub fn parse(s: &str) -> Result<PodRef, String> {
        let (ns, name) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not NAMESPACE/NAME"))?;
        PodRef::new(ns, name)
    }

    /// A pod reference, checked: both parts DNS subdomains as Kubernetes
    /// names them.
    pub fn new(namespace: &str, name: &str) -> Result<PodRef, String> {
        for (what, v) in [("namespace", namespace), ("name", name)] {
            if !control::objects::valid_segment(v) {
                return Err(format!(
                    "pod {what} {v:?} is not a valid Kubernetes name (lower-case letters, digits, '-' and '.')"
                ));
            }
        }
        Ok(PodRef {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl std::fmt::Display for PodRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl std::str::FromStr for PodRef {
    type Err = String;
    fn from_str(s: &str) -> Result<PodRef, String> {
        PodRef::parse(s)
    }
}

/// Port security's exceptions for one attachment: the further source MACs
/// and IPv4 prefixes a pod may send from, for a pod that bridges or routes
/// for others (OVN's `port_security` addresses, Calico's
/// `allowedSourcePrefixes`). Without them a pod sends only from its own MAC
/// and address.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PortSecurity {
    /// Further source MACs, `aa:bb:cc:dd:ee:ff`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_macs: Vec<String>,
    /// Further IPv4 source prefixes, `10.244.1.200/32`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_ips: Vec<String>,
}

impl PortSecurity {
    /// No exception.
    pub fn is_empty(&self) -> bool {
        self.allowed_macs.is_empty() && self.allowed_ips.is_empty()
    }
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
    /// The CNI network and container, for attachments made through CNI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni: Option<CniOwner>,
    /// Port security's exceptions.
    #[serde(default, skip_serializing_if = "PortSecurity::is_empty")]
    pub port_security: PortSecurity,
    /// The Kubernetes pod it is, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
}

/// What kind of failure an error response is, for callers that react to
/// it (the CNI plugin maps it to the spec's error codes).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The agent is not ready to attach yet: ask again later.
    NotReady,
    /// The network namespace does not exist.
    NetnsNotFound,
    /// The path exists but is not a network namespace.
    NetnsInvalid,
    /// A bad argument (interface name, address outside the pod range …).
    InvalidArgument,
    /// The requested address is taken, or no address is left.
    AddressUnavailable,
    /// The id or the interface is already attached differently.
    Conflict,
    /// No attachment by that id.
    NotFound,
    /// `check` found the attachment not as it should be.
    CheckFailed,
    /// Anything else (netlink, the state file, the dataplane).
    Internal,
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
    /// What kind of failure, when not `ok` (absent: unclassified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ErrorKind>,
}

impl Response {
    /// A success carrying `v`.
    pub fn ok(v: impl Serialize) -> Response {
        match serde_json::to_value(v) {
            Ok(v) => Response {
                ok: true,
                result: Some(v),
                error: None,
                kind: None,
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
            kind: None,
        }
    }

    /// A failure of a known kind.
    pub fn err_kind(kind: ErrorKind, msg: impl Into<String>) -> Response {
        Response {
            kind: Some(kind),
            ..Response::err(msg)
        }
    }
}

/// Why [`call_typed`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// Nobody answered: no socket, nobody listening, or the agent closed
    /// the connection (it stopped or crashed) before answering.
    #[error("cannot reach the twill agent at {socket}: {source} (is `twill node` running?)")]
    Unreachable {
        /// The socket tried.
        socket: String,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The agent answered something that is not a response.
    #[error("the agent's answer is not a valid response: {0}")]
    Protocol(String),
    /// The agent refused or failed the request.
    #[error("{msg}")]
    Agent {
        /// The failure's kind, if the agent said.
        kind: Option<ErrorKind>,
        /// The agent's message.
        msg: String,
    },
}

/// Sends one request and returns the result, or the agent's error.
pub fn call(socket: &Path, req: &Request) -> Result<serde_json::Value> {
    call_typed(socket, req, Duration::from_secs(60)).map_err(|e| match e {
        CallError::Agent { msg, .. } => anyhow::anyhow!("{msg}"),
        other => anyhow::Error::new(other),
    })
}

/// [`call`] with a typed error and a deadline for the answer.
pub fn call_typed(
    socket: &Path,
    req: &Request,
    timeout: Duration,
) -> Result<serde_json::Value, CallError> {
    let unreachable = |source| CallError::Unreachable {
        socket: socket.display().to_string(),
        source,
    };
    let mut s = UnixStream::connect(socket).map_err(unreachable)?;
    s.set_read_timeout(Some(timeout)).map_err(unreachable)?;
    let mut line = serde_json::to_string(req).map_err(|e| CallError::Protocol(e.to_string()))?;
    line.push('\n');
    // An agent that refuses the connection (too many) answers and closes
    // at once, maybe before the request is written: read its answer anyway.
    let written = s.write_all(line.as_bytes());
    let mut r = BufReader::new(s);
    let mut out = String::new();
    let read = r.read_line(&mut out);
    if out.is_empty() {
        written.map_err(unreachable)?;
    }
    read.map_err(unreachable)?;
    if out.is_empty() {
        return Err(unreachable(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the agent closed the connection without answering",
        )));
    }
    let resp: Response =
        serde_json::from_str(&out).map_err(|e| CallError::Protocol(e.to_string()))?;
    if resp.ok {
        Ok(resp.result.unwrap_or(serde_json::Value::Null))
    } else {
        Err(CallError::Agent {
            kind: resp.kind,
            msg: resp.error.unwrap_or_else(|| "unknown error".into()),
        })
    }
}

/// What `twill capture` copies.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CaptureTarget {
    /// A port by its name as `twill counters` shows it (`twp3`, the host port's name).
    Port(String),
    /// A pod's port by its attachment id.
    Pod(String),
    /// The tunnel sockets' datagrams, behind synthesized outer headers.
    Tunnel,
}

/// The last line of a capture: records sent, and records the capture's
/// queue had no room for.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct CaptureEnd {
    /// Records sent to the client.
    pub captured: u64,
    /// Frames dropped because the capture's queue was full.
    pub dropped: u64,
}

/// Writes one frame of a capture stream: a little-endian `u32` length and
/// that many bytes of pcap (the file header, or one record: header and
/// data). Length 0 ends the stream.
pub fn capture_frame(w: &mut impl Write, parts: &[&[u8]]) -> std::io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let len = u32::try_from(len).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    w.write_all(&len.to_le_bytes())?;
    for p in parts {
        w.write_all(p)?;
    }
    Ok(())
}

/// Reads one [`capture_frame`] into `buf`; `false` at the stream's end
/// (the empty frame). A frame longer than `limit` is an error.
pub fn read_capture_frame(
    r: &mut impl std::io::Read,
    buf: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<bool> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("capture frame of {len} bytes (at most {limit})"),
        ));
    }
    buf.resize(len, 0);
    r.read_exact(buf)?;
    Ok(len > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_frames_round_trip() {
        let mut out = Vec::new();
        capture_frame(&mut out, &[b"ab", b"c"]).unwrap();
        capture_frame(&mut out, &[]).unwrap();
        let mut r = &out[..];
        let mut buf = Vec::new();
        assert!(read_capture_frame(&mut r, &mut buf, 10).unwrap());
        assert_eq!(buf, b"abc");
        assert!(!read_capture_frame(&mut r, &mut buf, 10).unwrap());
        let req = Request::Capture {
            target: CaptureTarget::Pod("p:eth0".into()),
            count: Some(4),
            snaplen: 96,
        };
        let text = serde_json::to_string(&req).unwrap();
        assert_eq!(
            text,
            r#"{"op":"capture","target":{"pod":"p:eth0"},"count":4,"snaplen":96}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), req);
    }

    #[test]
    fn wire_format() {
        let r = Request::Attach(AttachRequest {
            netns: "pod1".into(),
            ifname: "eth0".into(),
            id: None,
            ip: None,
            cni: None,
            port_security: PortSecurity::default(),
            pod: None,
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
        assert_eq!(
            serde_json::from_str::<Request>(
                r#"{"op":"gc","network":"n","valid":[{"container_id":"c","ifname":"eth0"}]}"#
            )
            .unwrap(),
            Request::Gc {
                network: "n".into(),
                valid: vec![CniAttachment {
                    container_id: "c".into(),
                    ifname: "eth0".into()
                }]
            }
        );
        let e = Response::err_kind(ErrorKind::NotReady, "wait");
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"ok":false,"error":"wait","kind":"not_ready"}"#
        );
    }

    /// The lab reads `twill pod attach`'s output through its own view of an
    /// attachment (it does not depend on this package): every field it
    /// reads must come out as the agent writes it.
    #[test]
    fn the_lab_reads_the_attachment() {
        let a = Attachment {
            id: cni_id("twill", "c0ffee", "eth0"),
            netns: "/run/netns/pod1".into(),
            ifname: "eth0".into(),
            mac: "0a:58:0a:f4:01:03".into(),
            ip: "10.244.1.3/24".into(),
            gateway: "10.244.1.1".into(),
            mtu: 1450,
            cni: Some(CniOwner {
                network: "twill".into(),
                container_id: "c0ffee".into(),
            }),
            port_security: PortSecurity::default(),
            pod: Some(PodRef::new("x", "a").unwrap()),
        };
        let printed = serde_json::to_string_pretty(&a).unwrap();
        let seen: twill_lab::PodInfo = serde_json::from_str(&printed).unwrap();
        assert_eq!(
            seen,
            twill_lab::PodInfo {
                id: a.id,
                mac: a.mac,
                ip: a.ip,
                mtu: a.mtu,
            }
        );
    }

    #[test]
    fn cni_ids_cannot_collide_with_default_ids() {
        assert_eq!(cni_id("twill", "abc", "eth0"), "cni/twill/abc/eth0");
        assert!(!cni_id("n", "c", "eth0").contains(':'));
    }
}
