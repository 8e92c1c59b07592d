//! The one error type of the configuration layer.
//!
//! Every message names the document it is about (`net-conf`, `lease`,
//! `node config`), the field, and the offending value, so that
//! it reads on its own in a log line. Errors found while reading a file are
//! wrapped in [`ConfigError::InFile`], which prefixes the path.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;

use crate::backend::BackendType;

/// The document an error is about; the first word of its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Doc {
    /// flannel's net-conf.json.
    NetConf,
    /// A flannel subnet lease: its key (`10.244.1.0-24`) or value.
    Lease,
    /// twill's node configuration file.
    NodeConfig,
}

impl fmt::Display for Doc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Doc::NetConf => "net-conf",
            Doc::Lease => "lease",
            Doc::NodeConfig => "node config",
        })
    }
}

/// A configuration document that cannot be read, parsed or accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A file could not be read.
    #[error("cannot read {}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said (in the message, not a `source()`, so that an
        /// error chain does not print it twice).
        error: std::io::Error,
    },

    /// An error inside the document read from `path`.
    #[error("{}: {error}", path.display())]
    InFile {
        /// The file the document came from.
        path: PathBuf,
        /// The error inside it (in the message, not a `source()`).
        error: Box<ConfigError>,
    },

    /// Not JSON (serde_json's message, with line and column). A document of
    /// the wrong shape is one of the errors below, which name the field.
    #[error("{doc}: {error}")]
    Json {
        /// The document.
        doc: Doc,
        /// serde_json's error (in the message, not a `source()`).
        error: serde_json::Error,
    },

    /// A required field is absent.
    #[error("{doc}: {field} is missing")]
    Missing {
        /// The document.
        doc: Doc,
        /// The field, as written in the document (`Network`, `peers[1].subnet`).
        field: String,
    },

    /// Two keys that differ only in case name the same field. Go's
    /// encoding/json (flannel) matches keys case-insensitively and lets the
    /// later one win; twill refuses the ambiguity instead.
    #[error("{doc}: keys {first:?} and {second:?} both set {field} (keys are matched case-insensitively, as flannel does)")]
    AmbiguousKey {
        /// The document.
        doc: Doc,
        /// The canonical field name.
        field: String,
        /// One key.
        first: String,
        /// The other key.
        second: String,
    },

    /// A key twill's own format does not define (typos are errors); the
    /// fields come from serde's `unknown_field`.
    #[error("{doc}: unknown key {key:?}{} (expected one of: {})", within_part(within), expected.join(", "))]
    UnknownKey {
        /// The document.
        doc: Doc,
        /// The object holding the key (`peers[1]`), empty at the top level.
        within: String,
        /// The key.
        key: String,
        /// The keys that object may hold.
        expected: &'static [&'static str],
    },

    /// A field's value cannot be used.
    #[error("{doc}: {field} {value} is invalid: {reason}")]
    Invalid {
        /// The document.
        doc: Doc,
        /// The field.
        field: String,
        /// The value, as JSON text (strings quoted).
        value: String,
        /// Why.
        reason: String,
    },

    /// `EnableIPv4` is false: nothing twill could run.
    #[error("net-conf: EnableIPv4 is false, but twill only runs IPv4 pod networks")]
    Ipv4Disabled,

    /// `Network` is absent, or `0.0.0.0/0`, which flannel treats as absent.
    #[error("net-conf: Network is missing (flannel also treats 0.0.0.0/0 as missing)")]
    NetworkMissing,

    /// No `SubnetLen` and a Network smaller than /28.
    #[error("net-conf: Network {network} is too small: flannel needs a /28 or larger network to pick a SubnetLen")]
    NetworkTooSmall {
        /// The Network.
        network: Ipv4Net,
    },

    /// `SubnetLen` above 30.
    #[error("net-conf: SubnetLen {subnet_len} is too long: flannel allows at most 30")]
    SubnetLenTooLong {
        /// The SubnetLen given.
        subnet_len: u64,
    },

    /// `SubnetLen` too short for the Network to hold four subnets.
    #[error(
        "net-conf: SubnetLen {subnet_len} must be longer than Network {network}'s prefix by at least 2 \
         (so that it holds at least four subnets): use {} to 30",
        u64::from(network.prefix_len()) + 2
    )]
    SubnetLenTooShort {
        /// The SubnetLen given.
        subnet_len: u64,
        /// The Network.
        network: Ipv4Net,
    },

    /// `SubnetMin` or `SubnetMax` outside the Network.
    #[error("net-conf: {field} {addr} is not inside Network {network}")]
    BoundOutsideNetwork {
        /// `SubnetMin` or `SubnetMax`.
        field: &'static str,
        /// Its value.
        addr: Ipv4Addr,
        /// The Network.
        network: Ipv4Net,
    },

    /// `SubnetMin` or `SubnetMax` not on a SubnetLen boundary.
    #[error("net-conf: {field} {addr} is not on a SubnetLen boundary (/{subnet_len})")]
    BoundUnaligned {
        /// `SubnetMin` or `SubnetMax`.
        field: &'static str,
        /// Its value.
        addr: Ipv4Addr,
        /// The SubnetLen.
        subnet_len: u8,
    },

    /// `SubnetMin` above `SubnetMax`.
    #[error("net-conf: SubnetMin {min} is above SubnetMax {max}: no subnet to lease")]
    EmptySubnetRange {
        /// SubnetMin.
        min: Ipv4Addr,
        /// SubnetMax.
        max: Ipv4Addr,
    },

    /// A backend type twill does not implement.
    #[error("{doc}: backend type {ty:?} is not supported (twill supports \"vxlan\", \"udp\" and \"host-gw\")")]
    UnsupportedBackend {
        /// The document.
        doc: Doc,
        /// The type as written (empty when absent).
        ty: String,
    },

    /// A VNI that does not fit VXLAN's 24 bits.
    #[error("{doc}: VNI {vni} does not fit in 24 bits (0 to 16777215)")]
    VniOutOfRange {
        /// The document.
        doc: Doc,
        /// The VNI given.
        vni: i64,
    },

    /// A backend port outside 1..=65535.
    #[error("net-conf: Backend.Port {port} is not a valid UDP port for the {backend} backend (1 to 65535)")]
    PortOutOfRange {
        /// The backend.
        backend: BackendType,
        /// The port given.
        port: i64,
    },

    /// Both or neither of `net_conf` and `net_conf_file`.
    #[error("node config: give exactly one of net_conf and net_conf_file ({})", if *both { "both are set" } else { "neither is set" })]
    NetConfSource {
        /// True when both were given, false when neither.
        both: bool,
    },

    /// Two keys that exclude each other (a control plane and a static
    /// table, or both control planes).
    #[error("node config: {field} cannot be combined with {with} (with a control plane, the subnet comes from the lease and the net-conf and node table from the store)")]
    ControlPlaneConflict {
        /// The key that should go.
        field: String,
        /// The key it conflicts with.
        with: String,
    },

    /// A pod subnet outside the cluster Network.
    #[error("node config: {field} {subnet} is not inside Network {network}")]
    SubnetOutsideNetwork {
        /// `subnet` or `peers[i].subnet`.
        field: String,
        /// The subnet.
        subnet: Ipv4Net,
        /// The Network.
        network: Ipv4Net,
    },

    /// The node's own subnet is not a /SubnetLen.
    #[error("node config: {field} {subnet} must be a /{subnet_len} (net-conf SubnetLen)")]
    SubnetLenMismatch {
        /// `subnet`.
        field: String,
        /// The subnet.
        subnet: Ipv4Net,
        /// The net-conf SubnetLen.
        subnet_len: u8,
    },

    /// A value that must be unique appears twice.
    #[error("node config: {field} {value} is already used by {first}")]
    Duplicate {
        /// The later field (`peers[2].name`).
        field: String,
        /// The value, as JSON text.
        value: String,
        /// The earlier field holding the same value.
        first: String,
    },

    /// Two pod subnets overlap.
    #[error("node config: {field} {subnet} overlaps {other_field} {other}")]
    SubnetOverlap {
        /// One field.
        field: String,
        /// Its subnet.
        subnet: Ipv4Net,
        /// The other field.
        other_field: String,
        /// Its subnet.
        other: Ipv4Net,
    },

    /// A vxlan peer without a VTEP MAC.
    #[error("node config: {field} is required with the vxlan backend (peer {peer:?})")]
    VtepMacRequired {
        /// `peers[i].vtep_mac`.
        field: String,
        /// The peer's name.
        peer: String,
    },
}

fn within_part(within: &str) -> String {
    if within.is_empty() {
        String::new()
    } else {
        format!(" in {within}")
    }
}

impl ConfigError {
    /// Wraps `self` with the file it came from.
    pub fn in_file(self, path: impl Into<PathBuf>) -> ConfigError {
        ConfigError::InFile {
            path: path.into(),
            error: Box::new(self),
        }
    }

    /// The innermost error, under any [`ConfigError::InFile`] wrappers.
    pub fn root(&self) -> &ConfigError {
        let mut e = self;
        while let ConfigError::InFile { error, .. } = e {
            e = error;
        }
        e
    }

    pub(crate) fn invalid(
        doc: Doc,
        field: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        ConfigError::Invalid {
            doc,
            field: field.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn missing(doc: Doc, field: impl Into<String>) -> Self {
        ConfigError::Missing {
            doc,
            field: field.into(),
        }
    }
}
