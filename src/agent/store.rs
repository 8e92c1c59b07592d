//! Opens the lease store a node's configuration names.

use std::sync::Arc;

use control::{ControlPlane, LeaseStore, StoreError};

/// Connects to the controller or to etcd.
pub async fn open(plane: &ControlPlane) -> Result<Arc<dyn LeaseStore>, StoreError> {
    match plane {
        ControlPlane::Controller { .. } | ControlPlane::Etcd { .. } => Err(StoreError::Protocol(
            format!("{plane}: this build has no client for it yet"),
        )),
    }
}
