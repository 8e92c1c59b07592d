//! Opens the lease store and the object store a node's configuration
//! names.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use control::client::{ClientOptions, ControllerClient};
use control::etcd::{EtcdOptions, EtcdStore};
use control::k8s::DirStore;
use control::objects::ObjectStore;
use control::{ClientTls, ControlPlane, LeaseStore, StoreError};

/// How often a directory of manifests is read for changes.
pub const DIR_POLL: Duration = Duration::from_secs(1);

/// Connects to the controller or to etcd. A token file that cannot be read
/// is not worth retrying: it is reported as a protocol error; a TLS file
/// that cannot be used, as a TLS error.
pub async fn open(plane: &ControlPlane) -> Result<Arc<dyn LeaseStore>, StoreError> {
    match plane {
        ControlPlane::Controller {
            url,
            token_file,
            tls,
        } => Ok(Arc::new(controller(url, token_file, tls)?)),
        ControlPlane::Etcd {
            endpoints,
            prefix,
            tls,
        } => Ok(Arc::new(etcd(endpoints, prefix, tls).await?)),
    }
}

async fn etcd(
    endpoints: &[String],
    prefix: &str,
    tls: &ClientTls,
) -> Result<EtcdStore, StoreError> {
    let opts = EtcdOptions {
        tls: tls.clone(),
        ..EtcdOptions::default()
    };
    EtcdStore::connect(endpoints, prefix, opts).await
}

fn controller(
    url: &str,
    token_file: &Path,
    tls: &ClientTls,
) -> Result<ControllerClient, StoreError> {
    let token = std::fs::read_to_string(token_file).map_err(|e| {
        StoreError::Protocol(format!(
            "cannot read the token file {}: {e}",
            token_file.display()
        ))
    })?;
    ControllerClient::with_tls(url, token.trim(), ClientOptions::default(), tls)
}

/// Where cluster objects are kept.
#[derive(Debug, Clone)]
pub enum ObjectSource {
    /// The control plane's store (the controller, or etcd under the
    /// objects prefix).
    Plane(ControlPlane),
    /// A directory of manifests (a static node's `objects_dir`).
    Dir(PathBuf),
}

impl std::fmt::Display for ObjectSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ObjectSource::Plane(p) => p.fmt(f),
            ObjectSource::Dir(d) => write!(f, "directory {}", d.display()),
        }
    }
}

/// Opens the object store at `source`.
pub async fn open_objects(source: &ObjectSource) -> Result<Arc<dyn ObjectStore>, StoreError> {
    match source {
        ObjectSource::Plane(ControlPlane::Controller {
            url,
            token_file,
            tls,
        }) => Ok(Arc::new(controller(url, token_file, tls)?)),
        ObjectSource::Plane(ControlPlane::Etcd {
            endpoints,
            prefix,
            tls,
        }) => Ok(Arc::new(etcd(endpoints, prefix, tls).await?)),
        ObjectSource::Dir(dir) => Ok(Arc::new(DirStore::new(dir, DIR_POLL))),
    }
}
