//! Writing files whole: each under a temporary name beside it, created
//! with its final mode (so a private key is never readable by others, not
//! even for an instant), synced, then moved into place and the directory
//! synced. A set of files is written in two phases, all staged before any
//! is placed, so a failure while making them leaves nothing behind.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::ClusterError;

/// One file's content and mode, to be written to `path`.
pub struct NewFile {
    pub path: PathBuf,
    pub data: Vec<u8>,
    pub mode: u32,
}

/// A file written and synced under a temporary name, not yet in place.
/// Dropped unplaced, its temporary file is removed.
struct Staged {
    path: PathBuf,
    tmp: PathBuf,
}

impl Drop for Staged {
    fn drop(&mut self) {
        // after a placement the temporary name is gone: nothing to do
        let _ = std::fs::remove_file(&self.tmp);
    }
}

fn dir_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn stage(file: &NewFile) -> Result<Staged, ClusterError> {
    let err = |source| ClusterError::Write {
        path: file.path.clone(),
        source,
    };
    let name = file.path.file_name().map(|n| n.to_string_lossy());
    let tmp = dir_of(&file.path).join(format!(
        ".{}.{}.tmp",
        name.unwrap_or_default(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(file.mode)
        .open(&tmp)
        .map_err(err)?;
    let staged = Staged {
        path: file.path.clone(),
        tmp,
    };
    f.write_all(&file.data)
        .and_then(|()| f.sync_all())
        .map_err(err)?;
    Ok(staged)
}

impl Staged {
    /// Moves the file into place. Without `force` an existing file is
    /// refused (by `link`, which never replaces: no race with a file that
    /// appears meanwhile).
    fn place(&self, force: bool) -> Result<(), ClusterError> {
        let placed = if force {
            std::fs::rename(&self.tmp, &self.path)
        } else {
            std::fs::hard_link(&self.tmp, &self.path).and_then(|()| std::fs::remove_file(&self.tmp))
        };
        match placed {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(ClusterError::Exists {
                path: self.path.clone(),
            }),
            Err(source) => Err(ClusterError::Write {
                path: self.path.clone(),
                source,
            }),
            Ok(()) => std::fs::File::open(dir_of(&self.path))
                .and_then(|d| d.sync_all())
                .map_err(|source| ClusterError::Write {
                    path: self.path.clone(),
                    source,
                }),
        }
    }
}

/// Writes every file or, without `force`, none: an existing one is named
/// before anything is written, and a failure part-way removes the files
/// this call placed. With `force` existing files are replaced.
pub fn write_all(files: &[NewFile], force: bool) -> Result<(), ClusterError> {
    if !force {
        if let Some(f) = files.iter().find(|f| f.path.exists()) {
            return Err(ClusterError::Exists {
                path: f.path.clone(),
            });
        }
    }
    let staged = files.iter().map(stage).collect::<Result<Vec<_>, _>>()?;
    for (i, s) in staged.iter().enumerate() {
        if let Err(e) = s.place(force) {
            if !force {
                for placed in staged.iter().take(i) {
                    let _ = std::fs::remove_file(&placed.path);
                }
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Writes one file (see [`write_all`]).
pub fn write_file(path: &Path, data: &[u8], mode: u32, force: bool) -> Result<(), ClusterError> {
    write_all(
        &[NewFile {
            path: path.to_path_buf(),
            data: data.to_vec(),
            mode,
        }],
        force,
    )
}
