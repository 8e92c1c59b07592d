//! [`TempDir`]: a uniquely named directory under [`crate::LAB_RUN_DIR`],
//! removed with its contents on drop.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::names::{unique_suffix, LAB_RUN_DIR};

/// A directory `/run/twill-lab/PREFIX-PID-N-RAND`, removed on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates the directory (and `/run/twill-lab` if needed).
    pub fn new(prefix: &str) -> Result<TempDir> {
        let path = PathBuf::from(LAB_RUN_DIR).join(format!("{prefix}-{}", unique_suffix()));
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}
