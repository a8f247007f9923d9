//! Write-then-rename: a reader never sees a half-written file, and a failed
//! write leaves the old file (or nothing) in place.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Temporary sibling name for `path` (same directory, so rename is atomic).
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes `data` to `path` atomically: temp file, fsync, rename, fsync dir.
pub fn write(path: &Path, data: &[u8]) -> io::Result<()> {
    write_with(path, |f| f.write_all(data))
}

/// Like [`write`], but the caller fills the file through `fill`.
pub fn write_with(path: &Path, fill: impl FnOnce(&mut File) -> io::Result<()>) -> io::Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = File::create(&tmp)?;
        fill(&mut f)?;
        f.sync_all()?;
        drop(f);
        commit(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Renames a finished temp file into place and syncs the directory entry.
pub fn commit(tmp: &Path, path: &Path) -> io::Result<()> {
    fs::rename(tmp, path)?;
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_fill_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x");
        let err = write_with(&p, |_| Err(io::Error::other("boom")));
        assert!(err.is_err());
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0);
        write(&p, b"ok").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"ok");
    }
}
