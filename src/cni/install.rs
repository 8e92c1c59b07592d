//! `twill cni install`: puts the plugin where runtimes look for it
//! (`<bin_dir>/twill-cni`) and the network configuration where they read it
//! (`<conf_dir>/10-twill.conflist`, twill first and portmap after it, as
//! flannel's). Both are written to a temporary name in the same directory
//! and renamed into place, so a runtime never runs a half-written plugin or
//! reads a half-written list.

use std::fs::{self, File};
use std::io;

use crate::fsutil::FileError;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::PLUGIN_NAME;

/// The example network configuration list (`examples/10-twill.conflist`).
pub const EXAMPLE_CONFLIST: &str = include_str!("../../examples/10-twill.conflist");
/// The file name of the installed list.
pub const CONFLIST_NAME: &str = "10-twill.conflist";

/// What to install where.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// The plugin executable to install (normally this very program).
    pub source: PathBuf,
    /// Where runtimes look for plugins (`/opt/cni/bin`).
    pub bin_dir: PathBuf,
    /// Where runtimes read network configurations (`/etc/cni/net.d`).
    pub conf_dir: PathBuf,
    /// The agent's socket to write into the configuration (default: the
    /// example's, `/run/twill/twill.sock`).
    pub socket: Option<PathBuf>,
    /// Install a symbolic link to `source` instead of a copy (development:
    /// the copy is what survives an upgrade or a different mount namespace).
    pub symlink: bool,
}

/// What was installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// `<bin_dir>/twill-cni`.
    pub plugin: PathBuf,
    /// `<conf_dir>/10-twill.conflist`.
    pub conflist: PathBuf,
}

/// Why installing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// A file operation failed.
    #[error(transparent)]
    Io(#[from] FileError),
    /// The embedded example configuration is not what this code expects.
    #[error("the example configuration: {0}")]
    Example(String),
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> InstallError {
    let path = path.to_owned();
    move |source| InstallError::Io(FileError { op, path, source })
}

/// The configuration list to install: the example with `socket` set.
pub fn conflist(socket: Option<&Path>) -> Result<String, InstallError> {
    let mut v: Value =
        serde_json::from_str(EXAMPLE_CONFLIST).map_err(|e| InstallError::Example(e.to_string()))?;
    if let Some(socket) = socket {
        let plugin = v
            .get_mut("plugins")
            .and_then(|p| p.get_mut(0))
            .and_then(Value::as_object_mut)
            .ok_or_else(|| InstallError::Example("no plugins[0]".into()))?;
        plugin.insert("socket".into(), socket.display().to_string().into());
    }
    let mut s =
        serde_json::to_string_pretty(&v).map_err(|e| InstallError::Example(e.to_string()))?;
    s.push('\n');
    Ok(s)
}

/// Installs the plugin and the configuration list.
pub fn install(opts: &InstallOptions) -> Result<Installed, InstallError> {
    let text = conflist(opts.socket.as_deref())?;
    for d in [&opts.bin_dir, &opts.conf_dir] {
        fs::create_dir_all(d).map_err(io_err("creating", d))?;
    }
    let plugin = opts.bin_dir.join(PLUGIN_NAME);
    let tmp = opts
        .bin_dir
        .join(format!(".{PLUGIN_NAME}.tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let placed = if opts.symlink {
        std::os::unix::fs::symlink(&opts.source, &tmp).map_err(io_err("linking", &tmp))
    } else {
        copy_executable(&opts.source, &tmp)
    };
    if let Err(e) =
        placed.and_then(|()| fs::rename(&tmp, &plugin).map_err(io_err("renaming to", &plugin)))
    {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    let conflist = opts.conf_dir.join(CONFLIST_NAME);
    crate::fsutil::write_atomic(&conflist, text.as_bytes())?;
    fs::set_permissions(&conflist, fs::Permissions::from_mode(0o644))
        .map_err(io_err("setting the mode of", &conflist))?;
    Ok(Installed { plugin, conflist })
}

fn copy_executable(from: &Path, to: &Path) -> Result<(), InstallError> {
    fs::copy(from, to).map_err(io_err("copying the plugin to", to))?;
    fs::set_permissions(to, fs::Permissions::from_mode(0o755))
        .map_err(io_err("setting the mode of", to))?;
    File::open(to)
        .and_then(|f| f.sync_all())
        .map_err(io_err("syncing", to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_is_twill_then_portmap() {
        let v: Value = serde_json::from_str(EXAMPLE_CONFLIST).unwrap();
        assert_eq!(v["plugins"][0]["type"], PLUGIN_NAME);
        assert_eq!(v["plugins"][0]["socket"], crate::api::DEFAULT_SOCKET);
        assert_eq!(v["plugins"][1]["type"], "portmap");
        assert_eq!(v["plugins"][1]["capabilities"]["portMappings"], true);
        let cv = v["cniVersion"].as_str().unwrap();
        assert!(super::super::spec::SUPPORTED_VERSIONS.contains(&cv));
        for cv in v["cniVersions"].as_array().unwrap() {
            assert!(super::super::spec::SUPPORTED_VERSIONS.contains(&cv.as_str().unwrap()));
        }
        let with: Value =
            serde_json::from_str(&conflist(Some(Path::new("/x/y.sock"))).unwrap()).unwrap();
        assert_eq!(with["plugins"][0]["socket"], "/x/y.sock");
        assert_eq!(with["plugins"][1], v["plugins"][1]);
    }
}
