//! Files written so that a reader, or a crash, sees the old content or the
//! new, never a part: a temporary file in the same directory, fsync, rename
//! over the old one, fsync of the directory.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A step of [`write_atomic`] that failed.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {source}", path.display())]
pub struct FileError {
    /// What was being done ("creating", "writing", …).
    pub op: &'static str,
    /// The file or directory.
    pub path: PathBuf,
    /// What the system said.
    #[source]
    pub source: io::Error,
}

fn at(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FileError {
    let path = path.to_owned();
    move |source| FileError { op, path, source }
}

/// Replaces `path` with `data`, atomically and durably: when this returns
/// Ok, the new content survives a crash. The directory is created if
/// missing; a failed write leaves the old file and removes the temporary
/// one.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), FileError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).map_err(at("creating", dir))?;
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(name);
    let written = File::create(&tmp)
        .map_err(at("creating", &tmp))
        .and_then(|mut f| {
            f.write_all(data).map_err(at("writing", &tmp))?;
            f.sync_all().map_err(at("syncing", &tmp))
        })
        .and_then(|()| fs::rename(&tmp, path).map_err(at("renaming into place", path)));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(at("syncing", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("twill-fsutil-{}", std::process::id()));
        let path = dir.join("sub").join("f.txt");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.join("sub")).unwrap().collect();
        assert_eq!(names.len(), 1, "{names:?}");
        // A directory in the way: the error names the step and the path.
        let e = write_atomic(&dir.join("sub"), b"x").unwrap_err();
        assert_eq!(e.op, "renaming into place", "{e}");
        assert!(fs::read_dir(&dir).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains(".tmp-")));
        fs::remove_dir_all(&dir).unwrap();
    }
}
