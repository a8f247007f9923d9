//! Narrow syscall traits for the agent's logic, and [`Real`], their one
//! implementation over rustix. Logic takes `&mut impl Mounts` (or `Files`,
//! `Modules`) so tests pass a recording fake (`fake.rs`) and check the exact
//! sequence of privileged calls without root. Power and signals are not here:
//! only `main.rs` and `events.rs` touch them.

use std::io;
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags};
use rustix::mount::MountFlags;

/// One mount(2) call with a file system type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: String,
    pub target: PathBuf,
    pub fstype: String,
    pub flags: MountFlags,
    pub data: String,
}

impl Mount {
    pub fn new(
        source: &str,
        target: impl Into<PathBuf>,
        fstype: &str,
        flags: MountFlags,
        data: &str,
    ) -> Mount {
        Mount {
            source: source.to_string(),
            target: target.into(),
            fstype: fstype.to_string(),
            flags,
            data: data.to_string(),
        }
    }
}

pub trait Mounts {
    fn mount(&mut self, m: &Mount) -> io::Result<()>;
    /// `mount --move from to`.
    fn move_mount(&mut self, from: &Path, to: &Path) -> io::Result<()>;
    fn chdir(&mut self, dir: &Path) -> io::Result<()>;
    fn chroot(&mut self, dir: &Path) -> io::Result<()>;
    /// Delete every file of the initramfs (the `/` file system only, never
    /// crossing into another mount). Refuses when `/` is not ramfs or tmpfs.
    fn free_initramfs(&mut self) -> io::Result<()>;
    /// umount(2) without flags.
    fn unmount(&mut self, target: &Path) -> io::Result<()>;
}

pub trait Files {
    fn read(&mut self, path: &Path) -> io::Result<Vec<u8>>;
    fn write(&mut self, path: &Path, data: &[u8]) -> io::Result<()>;
    /// `mkdir -p` with mode 0755.
    fn mkdir_all(&mut self, path: &Path) -> io::Result<()>;
    fn is_dir(&mut self, path: &Path) -> bool;
    /// File names in a directory, sorted; a missing directory is empty.
    fn list(&mut self, dir: &Path) -> io::Result<Vec<String>>;
    /// Whether anything (file, directory, symlink) is at `path`.
    fn exists(&mut self, path: &Path) -> bool;
    /// rename(2) that fails with EEXIST instead of replacing `to`.
    fn rename_noreplace(&mut self, from: &Path, to: &Path) -> io::Result<()>;
    /// fsync(2) on a directory, so renames in it are durable.
    fn sync_dir(&mut self, dir: &Path) -> io::Result<()>;
}

/// Result of one module load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    New,
    /// EEXIST: built in, or loaded earlier (stage 1 loaded it).
    Already,
    /// ENODEV: a driver for hardware this machine lacks (crc32c-intel on a
    /// CPU without SSE4.2, say). Not an error: the generic module serves.
    NoDevice,
}

pub trait Modules {
    fn load(&mut self, path: &Path) -> io::Result<Loaded>;
}

/// The running system.
#[derive(Debug, Default)]
pub struct Real;

const RAMFS_MAGIC: u64 = 0x8584_58f6;
const TMPFS_MAGIC: u64 = 0x0102_1994;

/// `true` when `/` is the initramfs (ramfs or tmpfs), where stage 1 may delete files.
pub fn root_is_initramfs() -> io::Result<bool> {
    let st = rustix::fs::statfs("/")?;
    // f_type is a signed or unsigned word depending on the arch; compare as u64
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    let t = st.f_type as u64;
    Ok(t == RAMFS_MAGIC || t == TMPFS_MAGIC)
}

/// Removes `dir`'s contents that live on device `dev`, without following
/// symlinks or crossing mount points; best effort, first error returned.
fn remove_on_device(dir: &Path, dev: u64) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut first: io::Result<()> = Ok(());
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.dev() != dev {
            continue; // a mount point: /sysroot
        }
        let r = if meta.is_dir() {
            remove_on_device(&path, dev).and_then(|()| std::fs::remove_dir(&path))
        } else {
            std::fs::remove_file(&path)
        };
        if first.is_ok() {
            first = r;
        }
    }
    first
}

impl Mounts for Real {
    fn mount(&mut self, m: &Mount) -> io::Result<()> {
        let data =
            std::ffi::CString::new(m.data.as_str()).map_err(|_| io::ErrorKind::InvalidInput)?;
        let data = if m.data.is_empty() {
            None
        } else {
            Some(data.as_c_str())
        };
        Ok(rustix::mount::mount(
            m.source.as_str(),
            &m.target,
            m.fstype.as_str(),
            m.flags,
            data,
        )?)
    }

    fn move_mount(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        Ok(rustix::mount::mount_move(from, to)?)
    }

    fn chdir(&mut self, dir: &Path) -> io::Result<()> {
        Ok(rustix::process::chdir(dir)?)
    }

    fn chroot(&mut self, dir: &Path) -> io::Result<()> {
        Ok(rustix::process::chroot(dir)?)
    }

    fn free_initramfs(&mut self) -> io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        if !root_is_initramfs()? {
            return Err(io::Error::other(
                "/ is not an initramfs; refusing to delete it",
            ));
        }
        let dev = std::fs::symlink_metadata("/")?.dev();
        remove_on_device(Path::new("/"), dev)
    }

    fn unmount(&mut self, target: &Path) -> io::Result<()> {
        Ok(rustix::mount::unmount(
            target,
            rustix::mount::UnmountFlags::empty(),
        )?)
    }
}

impl Files for Real {
    fn read(&mut self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn write(&mut self, path: &Path, data: &[u8]) -> io::Result<()> {
        // sysctl and similar files: no create, no truncate games, one write
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
        f.write_all(data)
    }

    fn mkdir_all(&mut self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn is_dir(&mut self, path: &Path) -> bool {
        path.is_dir()
    }

    fn list(&mut self, dir: &Path) -> io::Result<Vec<String>> {
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut names = Vec::new();
        for e in rd {
            names.push(e?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn exists(&mut self, path: &Path) -> bool {
        std::fs::symlink_metadata(path).is_ok()
    }

    fn rename_noreplace(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        use rustix::fs::{renameat_with, RenameFlags, CWD};
        match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
            // a file system without RENAME_NOREPLACE: check, then rename
            Err(rustix::io::Errno::INVAL) => {
                if std::fs::symlink_metadata(to).is_ok() {
                    return Err(io::ErrorKind::AlreadyExists.into());
                }
                std::fs::rename(from, to)
            }
            r => Ok(r?),
        }
    }

    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
}

/// Compressed modules need `MODULE_INIT_COMPRESSED_FILE` (the kernel decompresses).
fn is_compressed(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("xz" | "zst" | "gz")
    )
}

/// Kernel flag for `finit_module`: the file is compressed, decompress it in-kernel.
const MODULE_INIT_COMPRESSED_FILE: i32 = 4;

impl Modules for Real {
    fn load(&mut self, path: &Path) -> io::Result<Loaded> {
        let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
        let flags = if is_compressed(path) {
            MODULE_INIT_COMPRESSED_FILE
        } else {
            0
        };
        match rustix::system::finit_module(&fd, c"", flags) {
            Ok(()) => Ok(Loaded::New),
            Err(rustix::io::Errno::EXIST) => Ok(Loaded::Already),
            Err(rustix::io::Errno::NODEV) => Ok(Loaded::NoDevice),
            Err(e) => Err(e.into()),
        }
    }
}

/// Creates a block device node (mode 0600); an existing node is fine.
pub fn mknod_block(path: &Path, major: u32, minor: u32) -> io::Result<()> {
    let dev = rustix::fs::makedev(major, minor);
    match rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        FileType::BlockDevice,
        Mode::RUSR | Mode::WUSR,
        dev,
    ) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Milliseconds since boot (CLOCK_BOOTTIME: kernel time included).
pub fn uptime_ms() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let ms = u64::try_from(t.tv_nsec).unwrap_or(0) / 1_000_000;
    secs.saturating_mul(1000).saturating_add(ms)
}

pub fn sleep_ms(ms: u64) {
    std::thread::sleep(std::time::Duration::from_millis(ms));
}

/// Replaces `path` with `data` atomically: written to
/// `<path>.nodeagent-tmp` (created exclusively, never through a symlink,
/// with `mode`), synced, renamed over `path` (a symlink at `path` is
/// replaced, not written through), then the directory is synced. The one
/// way the agent writes a file that must be whole after a power cut.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".nodeagent-tmp");
    let tmp = std::path::PathBuf::from(tmp);
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::File::open(dir)?.sync_all()
}

/// This process's resident set (`VmRSS` in `/proc/self/status`), KiB.
pub fn rss_kib() -> Option<u64> {
    rss_kib_at("/proc/self/status")
}

/// Another process's resident memory (KiB), `None` once it is gone.
pub fn rss_kib_of(pid: i32) -> Option<u64> {
    rss_kib_at(&format!("/proc/{pid}/status"))
}

/// CPU time a process has used (user + system), milliseconds; `None`
/// once it is gone.
pub fn cpu_ms_of(pid: i32) -> Option<u64> {
    cpu_ms_in(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// utime and stime of a `/proc/PID/stat` line, in ms. The fields are
/// counted after the command name's closing parenthesis (the name may
/// hold spaces); the unit is USER_HZ, 100 on every Linux this runs on.
fn cpu_ms_in(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) * 10)
}

fn rss_kib_at(path: &str) -> Option<u64> {
    let status = std::fs::read_to_string(path).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_past_a_name_with_spaces() {
        let stat = "249 (kube apiserver) S 1 249 249 0 -1 4194560 52 0 0 0 1234 566 0 0 20 0 12 0";
        assert_eq!(cpu_ms_in(stat), Some(18_000));
        assert_eq!(cpu_ms_in("garbage"), None);
        assert!(cpu_ms_of(std::process::id() as i32).is_some());
    }

    #[test]
    fn compression_is_by_extension() {
        assert!(is_compressed(Path::new("/x/dm-mod.ko.xz")));
        assert!(is_compressed(Path::new("/x/dm-mod.ko.zst")));
        assert!(!is_compressed(Path::new("/x/dm-mod.ko")));
    }
}
