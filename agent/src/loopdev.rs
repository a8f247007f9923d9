//! Loop devices through their ioctls on `/dev/loop-control` and `/dev/loopN`:
//! just what a root shipped as files inside the initramfs needs (the PXE
//! bundle). A file is attached read-only, with autoclear, to a free loop
//! device; nothing is ever detached by hand. No losetup, no libc wrappers
//! beyond `ioctl(2)`: the request structs are laid out as
//! `linux/loop.h` says and their sizes are checked in the tests.
//!
//! Lifetime: the loop device holds its own reference to the open backing
//! file, so the file's inode (and its page-cache pages on the initramfs)
//! stays alive when stage 1 deletes the initramfs' files before switch
//! root. With `LO_FLAGS_AUTOCLEAR` the device detaches itself at its last
//! close; [`Attached`] keeps one descriptor open until dm-verity holds the
//! device (it is `O_CLOEXEC`, so the exec of stage 2 closes it).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use crate::sys::Real;

pub const LOOP_CONTROL: &str = "/dev/loop-control";

/// `LOOP_CTL_GET_FREE`: returns the number of a free (or new) loop device.
const LOOP_CTL_GET_FREE: u32 = 0x4C82;
/// `LOOP_CONFIGURE` (Linux 5.8): fd, block size and status in one call.
const LOOP_CONFIGURE: u32 = 0x4C0A;
/// The two-step fallback for kernels without `LOOP_CONFIGURE`.
const LOOP_SET_FD: u32 = 0x4C00;
const LOOP_SET_STATUS64: u32 = 0x4C04;
const LOOP_CLR_FD: u32 = 0x4C01;

const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;
/// Another opener may take the device `LOOP_CTL_GET_FREE` named (EBUSY).
const TRIES: u32 = 8;

/// `struct loop_info64` (232 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    /// Bytes; 0 is the whole file.
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    /// Shown by `losetup`; the kernel's sysfs `backing_file` uses the open file.
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

/// `struct loop_config` (304 bytes), the argument of `LOOP_CONFIGURE`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    /// 0: the default logical block size (512).
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("open {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("LOOP_CTL_GET_FREE on {LOOP_CONTROL}")]
    GetFree(#[source] io::Error),
    #[error("{op} of {device} with {file}")]
    Configure {
        op: &'static str,
        device: PathBuf,
        file: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no free loop device for {file} after {TRIES} tries")]
    NoneFree { file: PathBuf },
}

/// A file attached to a loop device.
#[derive(Debug)]
pub struct Attached {
    pub file: PathBuf,
    /// `/dev/loopN`.
    pub device: PathBuf,
    /// Keeps the autoclear device attached until something else opens it.
    _hold: Option<OwnedFd>,
}

impl Attached {
    /// A handle with nothing held open (for test fakes).
    #[cfg(test)]
    pub fn detached(file: &Path, device: &Path) -> Attached {
        Attached {
            file: file.to_path_buf(),
            device: device.to_path_buf(),
            _hold: None,
        }
    }
}

/// Attaching files to loop devices; [`Real`] does it, tests pass a fake.
pub trait Loops {
    /// Attaches `file` read-only with autoclear to a free loop device.
    fn attach(&mut self, file: &Path) -> Result<Attached, LoopError>;
}

fn info_for(file: &Path) -> LoopInfo64 {
    let mut name = [0u8; LO_NAME_SIZE];
    let bytes = file.as_os_str().as_encoded_bytes();
    // NUL-terminated and truncated like losetup does; informational only
    for (dst, src) in name
        .iter_mut()
        .zip(bytes.iter().take(LO_NAME_SIZE.saturating_sub(1)))
    {
        *dst = *src;
    }
    LoopInfo64 {
        lo_device: 0,
        lo_inode: 0,
        lo_rdevice: 0,
        lo_offset: 0,
        lo_sizelimit: 0,
        lo_number: 0,
        lo_encrypt_type: 0,
        lo_encrypt_key_size: 0,
        lo_flags: LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR,
        lo_file_name: name,
        lo_crypt_name: [0; LO_NAME_SIZE],
        lo_encrypt_key: [0; LO_KEY_SIZE],
        lo_init: [0; 2],
    }
}

fn last_error() -> io::Error {
    io::Error::last_os_error()
}

/// Number of a free loop device (the kernel creates one when none is free).
fn get_free(control: &OwnedFd) -> Result<u32, LoopError> {
    // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns the device
    // number (or -1 with errno) as the ioctl's result; `control` is an open
    // descriptor of /dev/loop-control for the duration of the call.
    let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
    u32::try_from(n).map_err(|_| LoopError::GetFree(last_error()))
}

/// `LOOP_CONFIGURE`, or `LOOP_SET_FD` + `LOOP_SET_STATUS64` where the kernel
/// predates it (ENOTTY/EINVAL). Errors are raw so EBUSY can be retried.
fn configure(dev: &OwnedFd, backing: &OwnedFd, file: &Path) -> Result<(), (&'static str, i32)> {
    let fd = u32::try_from(backing.as_raw_fd()).map_err(|_| ("LOOP_CONFIGURE", libc::EBADF))?;
    let config = LoopConfig {
        fd,
        block_size: 0,
        info: info_for(file),
        reserved: [0; 8],
    };
    // SAFETY: LOOP_CONFIGURE reads one `struct loop_config` from the pointer;
    // `config` is a live, initialised #[repr(C)] value of exactly that layout
    // (size checked in the tests), borrowed immutably for the call, and the
    // kernel keeps no pointer to it. `dev` is an open loop device.
    let r = unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            LOOP_CONFIGURE as _,
            std::ptr::from_ref(&config),
        )
    };
    if r == 0 {
        return Ok(());
    }
    let errno = last_error().raw_os_error().unwrap_or(libc::EIO);
    if errno != libc::ENOTTY && errno != libc::EINVAL {
        return Err(("LOOP_CONFIGURE", errno));
    }
    // SAFETY: LOOP_SET_FD takes the backing file's descriptor as an integer
    // argument, not a pointer; both descriptors are open for the call.
    let r = unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            LOOP_SET_FD as _,
            libc::c_ulong::from(config.fd),
        )
    };
    if r != 0 {
        return Err((
            "LOOP_SET_FD",
            last_error().raw_os_error().unwrap_or(libc::EIO),
        ));
    }
    // Read-only already follows from the O_RDONLY backing descriptor
    // (LOOP_SET_STATUS64 cannot set it); this adds autoclear and the name.
    let info = config.info;
    // SAFETY: LOOP_SET_STATUS64 reads one `struct loop_info64` from the
    // pointer; `info` is a live #[repr(C)] value of that layout (size checked
    // in the tests), borrowed for the call only.
    let r = unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            LOOP_SET_STATUS64 as _,
            std::ptr::from_ref(&info),
        )
    };
    if r != 0 {
        let errno = last_error().raw_os_error().unwrap_or(libc::EIO);
        // SAFETY: LOOP_CLR_FD takes no argument; it undoes the LOOP_SET_FD above.
        unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD as _) };
        return Err(("LOOP_SET_STATUS64", errno));
    }
    Ok(())
}

impl Loops for Real {
    fn attach(&mut self, file: &Path) -> Result<Attached, LoopError> {
        let open = |path: &Path, flags: OFlags| {
            rustix::fs::open(path, flags | OFlags::CLOEXEC, Mode::empty()).map_err(|e| {
                LoopError::Open {
                    path: path.to_path_buf(),
                    source: e.into(),
                }
            })
        };
        // O_RDONLY: the loop device can then never write to the file.
        let backing = open(file, OFlags::RDONLY)?;
        let control = open(Path::new(LOOP_CONTROL), OFlags::RDWR)?;
        for _ in 0..TRIES {
            let n = get_free(&control)?;
            let device = PathBuf::from(format!("/dev/loop{n}"));
            let dev = open(&device, OFlags::RDONLY)?;
            match configure(&dev, &backing, file) {
                Ok(()) => {
                    return Ok(Attached {
                        file: file.to_path_buf(),
                        device,
                        _hold: Some(dev),
                    })
                }
                // taken between GET_FREE and CONFIGURE: ask again
                Err((_, libc::EBUSY)) => continue,
                Err((op, errno)) => {
                    return Err(LoopError::Configure {
                        op,
                        device,
                        file: file.to_path_buf(),
                        source: io::Error::from_raw_os_error(errno),
                    })
                }
            }
        }
        Err(LoopError::NoneFree {
            file: file.to_path_buf(),
        })
    }
}

/// The loop device whose backing file is `file` (from sysfs), if any.
pub fn find_attached(file: &Path) -> Option<PathBuf> {
    let want = file.as_os_str().as_encoded_bytes();
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/block")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("loop"))
        .collect();
    names.sort();
    names.into_iter().find_map(|n| {
        let path = Path::new("/sys/class/block")
            .join(&n)
            .join("loop/backing_file");
        let text = std::fs::read(path).ok()?;
        let text = text.strip_suffix(b"\n").unwrap_or(&text);
        (text == want).then(|| Path::new("/dev").join(&n))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_linux_loop_h() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
        assert_eq!(std::mem::offset_of!(LoopInfo64, lo_flags), 52);
        assert_eq!(std::mem::offset_of!(LoopInfo64, lo_file_name), 56);
        assert_eq!(std::mem::offset_of!(LoopConfig, info), 8);
    }

    #[test]
    fn info_is_read_only_autoclear_with_a_terminated_name() {
        let i = info_for(Path::new("/nodeimg/root.img"));
        assert_eq!(i.lo_flags, LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR);
        assert_eq!(&i.lo_file_name[..17], b"/nodeimg/root.img");
        assert_eq!(i.lo_file_name[17], 0);
        let long = format!("/{}", "x".repeat(100));
        let i = info_for(Path::new(&long));
        assert_eq!(i.lo_file_name[LO_NAME_SIZE - 1], 0);
        assert_eq!(i.lo_sizelimit, 0);
    }

    #[test]
    fn nothing_is_attached_to_a_file_that_does_not_exist() {
        assert_eq!(find_attached(Path::new("/nodeimg-test/none.img")), None);
    }
}
