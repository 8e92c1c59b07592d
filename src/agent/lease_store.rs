//! Opens the lease store a node's configuration names.

use std::sync::Arc;

use control::client::ControllerClient;
use control::etcd::{EtcdOptions, EtcdStore};
use control::{ControlPlane, LeaseStore, StoreError};

/// Connects to the controller or to etcd. A token file that cannot be read
/// is not worth retrying: it is reported as a protocol error.
pub async fn open(plane: &ControlPlane) -> Result<Arc<dyn LeaseStore>, StoreError> {
    match plane {
        ControlPlane::Controller { url, token_file } => {
            let token = std::fs::read_to_string(token_file).map_err(|e| {
                StoreError::Protocol(format!(
                    "cannot read the token file {}: {e}",
                    token_file.display()
                ))
            })?;
            Ok(Arc::new(ControllerClient::new(url, token.trim())?))
        }
        ControlPlane::Etcd { endpoints, prefix } => Ok(Arc::new(
            EtcdStore::connect(endpoints, prefix, EtcdOptions::default()).await?,
        )),
    }
}
