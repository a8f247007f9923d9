//! Writing a file whole: a temporary name beside it, created with its
//! final mode (so a private key is never readable by others, not even
//! for an instant), synced, then moved into place and the directory
//! synced.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::ClusterError;

/// Writes `data` to `path` with `mode`. Without `force`, an existing
/// `path` is refused (by `link`, which never replaces: no race with a
/// file that appears meanwhile).
pub fn write_file(path: &Path, data: &[u8], mode: u32, force: bool) -> Result<(), ClusterError> {
    let err = |source| ClusterError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.unwrap_or_default(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    let done = f.write_all(data).and_then(|()| f.sync_all());
    drop(f);
    let placed = done.and_then(|()| {
        if force {
            std::fs::rename(&tmp, path)
        } else {
            std::fs::hard_link(&tmp, path).and_then(|()| std::fs::remove_file(&tmp))
        }
    });
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            return Err(ClusterError::Exists {
                path: path.to_path_buf(),
            });
        }
        return Err(err(e));
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err)
}
