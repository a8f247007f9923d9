//! A recording stand-in for [`crate::sys`]'s traits, passed in by tests. It keeps
//! an in-memory file tree and a log of every privileged call in order, and can be
//! told to fail one call.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::loopdev::{Attached, LoopError, Loops};
use crate::sys::{Files, Loaded, Modules, Mount, Mounts};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Mount(Mount),
    Move(PathBuf, PathBuf),
    Chdir(PathBuf),
    Chroot(PathBuf),
    FreeInitramfs,
    Mkdir(PathBuf),
    Write(PathBuf, String),
    Load(PathBuf),
    Unmount(PathBuf),
    Rename(PathBuf, PathBuf),
    SyncDir(PathBuf),
    AttachLoop(PathBuf),
}

#[derive(Debug, Default)]
pub struct Fake {
    pub calls: Vec<Call>,
    pub files: BTreeMap<PathBuf, Vec<u8>>,
    pub dirs: Vec<PathBuf>,
    /// Modules that answer EEXIST.
    pub builtin: Vec<PathBuf>,
    /// Modules that answer ENODEV (no such hardware).
    pub absent_hardware: Vec<PathBuf>,
    /// A call that fails with EIO (compared after it is recorded).
    pub fail: Option<Call>,
    /// Writes go through a filter: (path, written) -> what a later read returns.
    pub kernel_rewrites: BTreeMap<PathBuf, String>,
}

impl Fake {
    pub fn new() -> Fake {
        Fake::default()
    }

    pub fn with_file(mut self, path: &str, text: &str) -> Fake {
        self.files
            .insert(PathBuf::from(path), text.as_bytes().to_vec());
        self
    }

    pub fn with_dir(mut self, path: &str) -> Fake {
        self.dirs.push(PathBuf::from(path));
        self
    }

    fn record(&mut self, c: Call) -> io::Result<()> {
        let failed = self.fail.as_ref() == Some(&c);
        self.calls.push(c);
        if failed {
            return Err(io::Error::from_raw_os_error(5));
        }
        Ok(())
    }
}

impl Mounts for Fake {
    fn mount(&mut self, m: &Mount) -> io::Result<()> {
        self.record(Call::Mount(m.clone()))
    }
    fn move_mount(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        self.record(Call::Move(from.into(), to.into()))
    }
    fn chdir(&mut self, dir: &Path) -> io::Result<()> {
        self.record(Call::Chdir(dir.into()))
    }
    fn chroot(&mut self, dir: &Path) -> io::Result<()> {
        self.record(Call::Chroot(dir.into()))
    }
    fn free_initramfs(&mut self) -> io::Result<()> {
        self.record(Call::FreeInitramfs)
    }
    fn unmount(&mut self, target: &Path) -> io::Result<()> {
        self.record(Call::Unmount(target.into()))
    }
}

impl Files for Fake {
    fn read(&mut self, path: &Path) -> io::Result<Vec<u8>> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
    fn write(&mut self, path: &Path, data: &[u8]) -> io::Result<()> {
        self.record(Call::Write(
            path.into(),
            String::from_utf8_lossy(data).into_owned(),
        ))?;
        if !self.files.contains_key(path) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        let stored = match self.kernel_rewrites.get(path) {
            Some(s) => s.as_bytes().to_vec(),
            None => data.to_vec(),
        };
        self.files.insert(path.into(), stored);
        Ok(())
    }
    fn mkdir_all(&mut self, path: &Path) -> io::Result<()> {
        self.dirs.push(path.into());
        self.record(Call::Mkdir(path.into()))
    }
    fn is_dir(&mut self, path: &Path) -> bool {
        self.dirs.iter().any(|d| d == path)
    }
    fn exists(&mut self, path: &Path) -> bool {
        self.files.contains_key(path) || self.dirs.iter().any(|d| d == path)
    }
    /// Moves a file of the tree; ENOENT without `from`, EEXIST with `to`.
    fn rename_noreplace(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        self.record(Call::Rename(from.into(), to.into()))?;
        if !self.files.contains_key(from) {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        if self.files.contains_key(to) {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        if let Some(data) = self.files.remove(from) {
            self.files.insert(to.into(), data);
        }
        Ok(())
    }
    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        self.record(Call::SyncDir(dir.into()))
    }
    fn list(&mut self, dir: &Path) -> io::Result<Vec<String>> {
        let names = self
            .files
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        Ok(names) // BTreeMap keys: already sorted
    }
}

impl Loops for Fake {
    /// Attaches to `/dev/loopN`, N counting the attach calls so far.
    fn attach(&mut self, file: &Path) -> Result<Attached, LoopError> {
        let n = self
            .calls
            .iter()
            .filter(|c| matches!(c, Call::AttachLoop(_)))
            .count();
        let device = PathBuf::from(format!("/dev/loop{n}"));
        self.record(Call::AttachLoop(file.into()))
            .map_err(|source| LoopError::Configure {
                op: "LOOP_CONFIGURE",
                device: device.clone(),
                file: file.into(),
                source,
            })?;
        Ok(Attached::detached(file, &device))
    }
}

impl Modules for Fake {
    fn load(&mut self, path: &Path) -> io::Result<Loaded> {
        self.record(Call::Load(path.into()))?;
        Ok(if self.builtin.iter().any(|b| b == path) {
            Loaded::Already
        } else if self.absent_hardware.iter().any(|b| b == path) {
            Loaded::NoDevice
        } else {
            Loaded::New
        })
    }
}
