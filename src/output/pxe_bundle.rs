//! The PXE bundle: a folder a node boots from over TFTP or HTTP alone.
//!
//! Takes the kernel and the image's initramfs (bytes), the root image and
//! its verity tree (files), the image's kernel command line and
//! SOURCE_DATE_EPOCH; writes `vmlinuz` (Debian's bzImage, unchanged),
//! `initrd.img` and `boot.ipxe` into one folder and returns each file's
//! sha256 and size for the manifest. Never needs root, a network or a
//! clock; the same inputs give the same bytes.
//!
//! `initrd.img` is the image's initramfs, unchanged, then NUL padding to a
//! 4-byte boundary, then a second, uncompressed cpio `newc` archive holding
//! [`ROOT_IN_INITRD`] and [`VERITY_IN_INITRD`]. The kernel unpacks
//! concatenated archives in order (a `newc` header must start 4-byte
//! aligned; NULs between archives are skipped). The second archive stays
//! uncompressed: the root is squashfs, already zstd-compressed, and zstd
//! shrinks the archive by 0.2 % (level 3) to 0.9 % (level 19) only, measured
//! on the worker image (61,604,352 bytes), while the kernel would have to
//! inflate all of it under TCG. The agent attaches both files to read-only
//! loop devices (`nodeimg.root=file:...`) and verifies them with dm-verity
//! like disks.
//!
//! `boot.ipxe` names the kernel and initrd by relative paths, so one script
//! serves TFTP (`tftp://server/boot.ipxe`) and HTTP (`http://server/dir/boot.ipxe`)
//! alike: iPXE resolves them against the script's own URI.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ring::digest::{Context, SHA256};

use crate::boot::initramfs::{self, InitramfsError};
use crate::util::atomic;
use contract::cmdline::{DeviceRef, KernelCmdline};

/// The bundle's folder name in a build's output directory.
pub const PXE_DIR: &str = "pxe";
pub const KERNEL_FILE: &str = "vmlinuz";
pub const INITRD_FILE: &str = "initrd.img";
pub const SCRIPT_FILE: &str = "boot.ipxe";
/// Where the root image sits inside the initrd (what `nodeimg.root` names).
pub const ROOT_IN_INITRD: &str = contract::paths::PXE_ROOT_IMAGE;
/// Where the verity tree sits inside the initrd (what `nodeimg.hash` names).
pub const VERITY_IN_INITRD: &str = contract::paths::PXE_ROOT_VERITY;
/// Manifest kinds of the three files.
pub const KIND_KERNEL: &str = "pxe-kernel";
pub const KIND_INITRD: &str = "pxe-initrd";
pub const KIND_SCRIPT: &str = "pxe-script";

/// Characters iPXE's script parser gives a meaning (settings expansion,
/// `||`/`&&` chains, quoting): a command line holding one would not reach
/// the kernel as written.
const IPXE_SPECIAL: &[char] = &['$', '|', '&', ';', '"', '\'', '\\', '#', '\n', '\r'];

#[derive(Debug, thiserror::Error)]
pub enum PxeError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the root archive of the initrd")]
    Cpio(#[source] InitramfsError),
    #[error("kernel command line contains {found:?}, which iPXE scripts interpret")]
    ScriptUnsafe { found: char },
    #[error("the image's command line already names `{key}`; the bundle sets it")]
    DeviceGiven { key: &'static str },
    #[error("the image's kernel command line")]
    Cmdline(#[source] contract::cmdline::CmdlineError),
}

/// What a bundle is made from.
#[derive(Debug, Clone, Copy)]
pub struct PxeParts<'a> {
    /// The bzImage, as Debian signed it.
    pub kernel: &'a [u8],
    /// The image's initramfs (compressed cpio), copied unchanged.
    pub initramfs: &'a [u8],
    /// The root image file (squashfs).
    pub root: &'a Path,
    /// The verity hash tree file (with its superblock).
    pub verity: &'a Path,
    /// The image's command line: verity parameters, no devices.
    pub cmdline: &'a str,
    /// Every cpio mtime (saturated to u32).
    pub source_date_epoch: u64,
}

/// One file of a written bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PxeFile {
    /// [`KIND_KERNEL`], [`KIND_INITRD`] or [`KIND_SCRIPT`].
    pub kind: &'static str,
    /// File name inside the bundle folder.
    pub name: &'static str,
    pub sha256: String,
    pub size: u64,
}

/// A written bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PxeBundle {
    pub dir: PathBuf,
    /// Kernel, initrd, script: in the order they were written.
    pub files: Vec<PxeFile>,
    /// The kernel command line the script passes.
    pub cmdline: String,
}

/// The bundle's kernel command line: the image's line and the root and hash
/// as files of the initrd.
pub fn pxe_cmdline(image_cmdline: &str) -> Result<String, PxeError> {
    let mut line = KernelCmdline::parse(image_cmdline).map_err(PxeError::Cmdline)?;
    for (key, given) in [
        ("nodeimg.root", line.nodeimg.root.is_some()),
        ("nodeimg.hash", line.nodeimg.hash.is_some()),
    ] {
        if given {
            return Err(PxeError::DeviceGiven { key });
        }
    }
    line.nodeimg.root = Some(DeviceRef::File(ROOT_IN_INITRD.into()));
    line.nodeimg.hash = Some(DeviceRef::File(VERITY_IN_INITRD.into()));
    Ok(line.to_string())
}

/// The iPXE script. `initrd=` on the kernel line names the initrd for the
/// kernel's EFI stub (iPXE's EFI build needs it; BIOS ignores it).
pub fn script(cmdline: &str) -> Result<String, PxeError> {
    if let Some(found) = cmdline.chars().find(|c| IPXE_SPECIAL.contains(c)) {
        return Err(PxeError::ScriptUnsafe { found });
    }
    Ok(format!(
        "#!ipxe\n\
         kernel {KERNEL_FILE} initrd={INITRD_FILE} {cmdline}\n\
         initrd {INITRD_FILE}\n\
         boot\n"
    ))
}

/// Writes the initrd: `initramfs`, NULs to a 4-byte boundary, then the
/// uncompressed root archive.
pub fn write_initrd<W: Write>(
    initramfs: &[u8],
    root: Arc<[u8]>,
    verity: Arc<[u8]>,
    mtime: u32,
    mut out: W,
) -> Result<W, InitramfsError> {
    let write = |source| InitramfsError::Write { source };
    out.write_all(initramfs).map_err(write)?;
    let pad = (4 - initramfs.len() % 4) % 4;
    out.write_all(&[0u8; 3][..pad]).map_err(write)?;
    let files = [
        (ROOT_IN_INITRD.trim_start_matches('/').to_string(), root),
        (VERITY_IN_INITRD.trim_start_matches('/').to_string(), verity),
    ];
    initramfs::write_files_cpio(&files, mtime, out)
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    ctx: Context,
    size: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.ctx.update(buf.get(..n).unwrap_or_default());
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes one bundle file through a temporary name; returns its digest and size.
fn write_file(
    dir: &Path,
    kind: &'static str,
    name: &'static str,
    fill: impl FnOnce(&mut dyn Write) -> Result<(), PxeError>,
) -> Result<PxeFile, PxeError> {
    let path = dir.join(name);
    let tmp = atomic::temp_path(&path);
    let werr = |p: &Path| {
        let p = p.to_path_buf();
        move |source| PxeError::Write { path: p, source }
    };
    let result = (|| {
        let file = File::create(&tmp).map_err(werr(&tmp))?;
        let mut w = Hashing {
            inner: BufWriter::with_capacity(1 << 20, file),
            ctx: Context::new(&SHA256),
            size: 0,
        };
        fill(&mut w)?;
        let file = w
            .inner
            .into_inner()
            .map_err(|e| e.into_error())
            .map_err(werr(&tmp))?;
        file.sync_all().map_err(werr(&tmp))?;
        drop(file);
        atomic::commit(&tmp, &path).map_err(werr(&path))?;
        Ok(PxeFile {
            kind,
            name,
            sha256: hex::encode(w.ctx.finish()),
            size: w.size,
        })
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn read(path: &Path) -> Result<Arc<[u8]>, PxeError> {
    fs::read(path)
        .map(Arc::from)
        .map_err(|source| PxeError::Read {
            path: path.to_path_buf(),
            source,
        })
}

/// Writes the bundle into `dir` (created if missing): kernel, initrd, and
/// the script last, each through a temporary name and a rename.
pub fn write_pxe_bundle(dir: &Path, parts: &PxeParts) -> Result<PxeBundle, PxeError> {
    let cmdline = pxe_cmdline(parts.cmdline)?;
    let script = script(&cmdline)?;
    fs::create_dir_all(dir).map_err(|source| PxeError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let mtime = u32::try_from(parts.source_date_epoch).unwrap_or(u32::MAX);
    let root = read(parts.root)?;
    let verity = read(parts.verity)?;
    let io_err = |name: &str| {
        let path = dir.join(name);
        move |source| PxeError::Write { path, source }
    };
    let files = vec![
        write_file(dir, KIND_KERNEL, KERNEL_FILE, |w| {
            w.write_all(parts.kernel).map_err(io_err(KERNEL_FILE))
        })?,
        write_file(dir, KIND_INITRD, INITRD_FILE, |w| {
            write_initrd(parts.initramfs, root, verity, mtime, w)
                .map(drop)
                .map_err(|e| match e {
                    InitramfsError::Write { source } => io_err(INITRD_FILE)(source),
                    e => PxeError::Cpio(e),
                })
        })?,
        write_file(dir, KIND_SCRIPT, SCRIPT_FILE, |w| {
            w.write_all(script.as_bytes()).map_err(io_err(SCRIPT_FILE))
        })?,
    ];
    tracing::debug!(dir = %dir.display(), "PXE bundle written");
    Ok(PxeBundle {
        dir: dir.to_path_buf(),
        files,
        cmdline,
    })
}

#[cfg(test)]
#[path = "pxe_bundle_tests.rs"]
mod tests;
