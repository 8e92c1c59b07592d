//! The agent's pod errors that a caller reacts to, and the checks that
//! raise them before anything is created. Part of the agent: no I/O but
//! opening a namespace file.

use std::io;

use vswitch::sys::netns::NetNs;

use super::ipam::IpamError;
use super::store::StoreError;
use crate::api::ErrorKind;

/// Why a pod operation failed, for the failures a caller reacts to. Other
/// failures (netlink, the dataplane) are plain `anyhow` errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PodError {
    /// A port-security exception that is no MAC or no IPv4 prefix.
    #[error("port security: {0}")]
    BadPortSecurity(String),
    /// Not a usable Linux interface name.
    #[error("invalid interface name {0:?} (1 to 15 characters, no '/', ':' or spaces)")]
    BadIfname(String),
    /// The namespace does not exist.
    #[error("network namespace {netns:?} does not exist ({source})")]
    NetnsNotFound {
        /// As given.
        netns: String,
        /// What opening it said.
        #[source]
        source: io::Error,
    },
    /// The path is not a network namespace.
    #[error("{netns:?} is not a network namespace ({source})")]
    NetnsInvalid {
        /// As given.
        netns: String,
        /// What opening it said.
        #[source]
        source: io::Error,
    },
    /// The address could not be had.
    #[error(transparent)]
    Ipam(#[from] IpamError),
    /// The id is taken by an attachment of another namespace or interface.
    #[error("attachment id {id:?} is already used for {netns}:{ifname}")]
    IdTaken {
        /// The id.
        id: String,
        /// The existing attachment's namespace.
        netns: String,
        /// The existing attachment's interface.
        ifname: String,
    },
    /// The interface is attached under another id.
    #[error("{netns}:{ifname} is already attached as {id:?}")]
    AlreadyAttached {
        /// The namespace.
        netns: String,
        /// The interface.
        ifname: String,
        /// The existing id.
        id: String,
    },
    /// A CNI attach came with an id that is not its CNI id.
    #[error("a CNI attachment's id is {want:?}, not {given:?}")]
    IdMismatch {
        /// Given.
        given: String,
        /// What it must be.
        want: String,
    },
    /// No attachment by that id.
    #[error("no attachment {0:?}")]
    NotFound(String),
    /// `check` found the attachment not as it should be.
    #[error("attachment {id:?}: {why}")]
    CheckFailed {
        /// The id.
        id: String,
        /// What is wrong.
        why: String,
    },
    /// The state file could not be written: nothing was changed.
    #[error("recording the attachments: {0}")]
    Store(#[from] StoreError),
}

impl PodError {
    /// The API's kind of this failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            PodError::BadIfname(_) | PodError::BadPortSecurity(_) | PodError::IdMismatch { .. } => {
                ErrorKind::InvalidArgument
            }
            PodError::NetnsNotFound { .. } => ErrorKind::NetnsNotFound,
            PodError::NetnsInvalid { .. } => ErrorKind::NetnsInvalid,
            PodError::Ipam(IpamError::OutOfRange { .. }) => ErrorKind::InvalidArgument,
            PodError::Ipam(_) => ErrorKind::AddressUnavailable,
            PodError::IdTaken { .. } | PodError::AlreadyAttached { .. } => ErrorKind::Conflict,
            PodError::NotFound(_) => ErrorKind::NotFound,
            PodError::CheckFailed { .. } => ErrorKind::CheckFailed,
            PodError::Store(_) => ErrorKind::Internal,
        }
    }
}

/// A usable Linux interface name: 1 to 15 bytes, no '/', ':' or white space,
/// not "." or "..".
pub(super) fn check_ifname(n: &str) -> Result<(), PodError> {
    if n.is_empty()
        || n.len() > 15
        || n == "."
        || n == ".."
        || n.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(PodError::BadIfname(n.to_owned()));
    }
    Ok(())
}

/// Opens a namespace; "not found" and "not a namespace" as [`PodError`]s.
pub(super) fn open_netns(netns: &str) -> Result<NetNs, anyhow::Error> {
    NetNs::open(netns).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => PodError::NetnsNotFound {
            netns: netns.to_owned(),
            source,
        }
        .into(),
        io::ErrorKind::InvalidInput => PodError::NetnsInvalid {
            netns: netns.to_owned(),
            source,
        }
        .into(),
        _ => anyhow::Error::new(source).context(format!("opening network namespace {netns:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use encap::Cidr;
    use std::net::Ipv4Addr;

    #[test]
    fn interface_names() {
        for ok in ["eth0", "net1", "a", "abcdefghijklmno"] {
            assert!(check_ifname(ok).is_ok(), "{ok}");
        }
        for bad in ["", "abcdefghijklmnop", "a/b", "a:b", "a b", ".", ".."] {
            assert!(check_ifname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_have_the_api_kinds() {
        let subnet = Cidr::new(Ipv4Addr::new(10, 244, 1, 0), 24).unwrap();
        assert_eq!(
            PodError::Ipam(IpamError::Exhausted(subnet)).kind(),
            ErrorKind::AddressUnavailable
        );
        assert_eq!(
            PodError::Ipam(IpamError::InUse(Ipv4Addr::new(10, 244, 1, 9))).kind(),
            ErrorKind::AddressUnavailable
        );
        assert_eq!(
            PodError::Ipam(IpamError::OutOfRange {
                ip: Ipv4Addr::new(10, 0, 0, 1),
                subnet
            })
            .kind(),
            ErrorKind::InvalidArgument
        );
        let e = open_netns("twl-no-such-namespace-for-sure").unwrap_err();
        let kind = e.downcast_ref::<PodError>().map(PodError::kind);
        assert_eq!(kind, Some(ErrorKind::NetnsNotFound), "{e:#}");
        let e = open_netns("/proc/self/ns/uts").unwrap_err();
        let kind = e.downcast_ref::<PodError>().map(PodError::kind);
        assert_eq!(kind, Some(ErrorKind::NetnsInvalid), "{e:#}");
    }
}
