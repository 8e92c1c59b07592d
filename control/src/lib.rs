//! twill control plane: the configuration layer.
//!
//! This crate turns configuration documents into checked values: flannel's
//! `net-conf.json` ([`NetConf`]) and its tunnel backends ([`backend`]), flannel's subnet leases as stored in etcd
//! ([`LeaseAttrs`], [`subnet_key`]), and twill's own node configuration file
//! with its static node table ([`NodeConfig`], [`Peer`]). Flannel's formats
//! are read and written with flannel's semantics, so that its tooling and its
//! etcd layout read the same; each module cites the flannel source it copies.
//!
//! The [`store`] module is the control plane as a node agent sees it: the
//! [`LeaseStore`] interface in front of the embedded controller and etcd,
//! and the subnet choice both make ([`choose_subnet`]).
//!
//! The embedded controller (`twill controller`) is [`controller`] around
//! the sans-IO lease table [`registry`]; its client, a [`LeaseStore`], is
//! [`client::ControllerClient`].
//!
//! What it must not do: know anything about the dataplane (no switch types,
//! no packets; the node agent in the binary maps leases onto switch
//! tables).

#![deny(unsafe_code)]

pub mod backend;
pub mod bgp;
pub mod client;
pub mod controller;
pub mod error;
pub mod etcd;
mod gojson;
pub mod k8s;
pub mod lease;
pub mod metrics;
pub mod netconf;
pub mod node;
pub mod objects;
pub mod plane;
pub mod registry;
pub mod store;
mod strictjson;
pub mod tls;

pub use backend::{Backend, BackendSpec, BackendType};
pub use bgp::{BgpConfig, BgpPeer};
pub use error::{ConfigError, Doc};
pub use etcd::{Credentials, EtcdOptions, EtcdStore};
pub use lease::{parse_subnet_key, subnet_key, LeaseAttrs, LeaseBackend};
pub use netconf::{NetConf, Subnets};
pub use node::{NodeConfig, Peer};
pub use plane::{ControlPlane, LeaseOptions};
pub use store::{
    choose_subnet, AcquireRequest, Choice, Lease, LeaseEvent, LeaseStore, Snapshot, StoreError,
    WatchEvent, WatchStream,
};
pub use tls::{ClientTls, ServerTls, TlsError};
