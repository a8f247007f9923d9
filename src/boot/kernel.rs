//! The kernel image: Debian's `vmlinuz`, an x86 bzImage that is also an
//! EFI-stub PE file, already Authenticode-signed by Debian.
//!
//! Contract: [`inspect`] reads it (never changes a byte), refuses anything
//! that is not an x86-64 PE with a Linux boot-protocol setup header, and
//! returns the release string from the setup header. [`find_kernel`] picks
//! the one `boot/vmlinuz-<kver>` in a tree and checks that its header agrees
//! with `<kver>`. [`extract_vmlinux`] decompresses the payload (the kernel
//! ELF), which QEMU boots through PVH faster than the bzImage under TCG.
//!
//! Setup header offsets follow the kernel's `Documentation/arch/x86/boot.rst`.

use std::io::Read;
use std::sync::Arc;

use crate::pe::{PeHeaders, MACHINE_X86_64};

use crate::rootfs::{Kind, Tree};

/// `boot_flag` at 0x1FE: the classic boot sector signature.
const BOOT_FLAG_OFFSET: usize = 0x1FE;
const BOOT_FLAG: u16 = 0xAA55;
/// `header` at 0x202: "HdrS" marks a boot protocol >= 2.00 setup header.
const HDRS_OFFSET: usize = 0x202;
const HDRS_MAGIC: &[u8; 4] = b"HdrS";
/// `setup_sects` at 0x1F1: size of the real-mode setup in 512-byte sectors
/// (0 means 4); the protected-mode kernel starts after `(setup_sects+1)*512`.
const SETUP_SECTS_OFFSET: usize = 0x1F1;
/// `version` at 0x206: boot protocol version, major in the high byte.
const PROTOCOL_OFFSET: usize = 0x206;
/// `kernel_version` at 0x20E: pointer to a NUL-terminated string, minus 0x200.
const KERNEL_VERSION_OFFSET: usize = 0x20E;
/// `payload_offset` at 0x248 (protocol >= 2.08): offset of the compressed
/// kernel from the start of the protected-mode code.
const PAYLOAD_OFFSET_OFFSET: usize = 0x248;
/// `payload_length` at 0x24C (protocol >= 2.08).
const PAYLOAD_LENGTH_OFFSET: usize = 0x24C;
/// A decompressed kernel bigger than this is refused (Debian's is ~60 MiB).
const MAX_VMLINUX: usize = 512 << 20;

const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];
const ELF_MAGIC: &[u8] = b"\x7fELF";

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("kernel image is too short ({len} bytes) for a bzImage setup header")]
    TooShort { len: usize },
    #[error("kernel image is not a PE file (no EFI stub)")]
    NotPe {
        #[source]
        source: crate::pe::PeError,
    },
    #[error("kernel image is a PE file for machine {machine:#06x}, not x86-64")]
    WrongMachine { machine: u16 },
    #[error("kernel image has no x86 boot setup header ({what})")]
    NoSetupHeader { what: &'static str },
    #[error("kernel boot protocol {major}.{minor:02} is too old (need 2.08 for payload fields)")]
    OldProtocol { major: u8, minor: u8 },
    #[error("kernel version string at offset {offset:#x} is missing or not text")]
    BadVersionString { offset: usize },
    #[error(
        "kernel payload (offset {offset:#x}, length {length}) lies outside the {len}-byte image"
    )]
    PayloadOutOfRange {
        offset: usize,
        length: usize,
        len: usize,
    },
    #[error("kernel payload compression {magic} is not supported (zstd, xz, gzip are)")]
    UnsupportedCompression { magic: String },
    #[error("decompressing the {compression} kernel payload failed")]
    Decompress {
        compression: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("decompressed kernel is {got} bytes, the payload trailer says {expected}")]
    SizeMismatch { expected: usize, got: usize },
    #[error("decompressed kernel payload is not an ELF file")]
    NotElf,
    #[error("no kernel in the tree: expected a file boot/vmlinuz-<version>")]
    NoKernel,
    #[error("the tree holds several kernels ({found:?}); an image ships exactly one")]
    SeveralKernels { found: Vec<String> },
    #[error("{path} says it is kernel {header_release:?} but its file name says {kver:?}")]
    VersionMismatch {
        path: String,
        kver: String,
        header_release: String,
    },
    #[error("{path}")]
    Inspect {
        path: String,
        #[source]
        source: Box<KernelError>,
    },
}

/// How the kernel inside the bzImage is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadCompression {
    Zstd,
    Xz,
    Gzip,
    Other,
}

/// What the manifest records about a kernel.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KernelInfo {
    /// The uname release, e.g. `6.12.117+deb13-amd64` (first word of `version`).
    pub release: String,
    /// The whole `kernel_version` string from the setup header.
    pub version: String,
    /// Always `x86_64` (anything else is refused).
    pub arch: &'static str,
    /// Boot protocol version as `(major, minor)`, e.g. `(2, 15)`.
    pub boot_protocol: (u8, u8),
    /// The PE file carries an Authenticode certificate table (Debian signs it).
    pub signed: bool,
    pub payload_compression: PayloadCompression,
    pub size: usize,
}

fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Reads the setup header and PE headers of a bzImage; changes nothing.
pub fn inspect(bzimage: &[u8]) -> Result<KernelInfo, KernelError> {
    if bzimage.len() < 0x250 {
        return Err(KernelError::TooShort { len: bzimage.len() });
    }
    let pe = PeHeaders::parse(bzimage).map_err(|source| KernelError::NotPe { source })?;
    let machine = pe.machine;
    if machine != MACHINE_X86_64 {
        return Err(KernelError::WrongMachine { machine });
    }
    let signed = pe.certificate_table().is_some_and(|dd| dd.size > 0);
    let (major, minor) = setup_header(bzimage)?;
    let version = version_string(bzimage)?;
    let release = version
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    let payload = payload(bzimage)?;
    Ok(KernelInfo {
        release,
        version,
        arch: "x86_64",
        boot_protocol: (major, minor),
        signed,
        payload_compression: compression_of(payload),
        size: bzimage.len(),
    })
}

/// Checks the boot flag and "HdrS"; returns the boot protocol version.
fn setup_header(b: &[u8]) -> Result<(u8, u8), KernelError> {
    if le16(b, BOOT_FLAG_OFFSET) != BOOT_FLAG {
        return Err(KernelError::NoSetupHeader {
            what: "boot_flag is not 0xaa55",
        });
    }
    if &b[HDRS_OFFSET..HDRS_OFFSET + 4] != HDRS_MAGIC {
        return Err(KernelError::NoSetupHeader {
            what: "no HdrS magic at 0x202",
        });
    }
    let [minor, major] = le16(b, PROTOCOL_OFFSET).to_le_bytes();
    if (major, minor) < (2, 8) {
        return Err(KernelError::OldProtocol { major, minor });
    }
    Ok((major, minor))
}

fn version_string(b: &[u8]) -> Result<String, KernelError> {
    let offset = le16(b, KERNEL_VERSION_OFFSET) as usize + 0x200;
    let bad = KernelError::BadVersionString { offset };
    let tail = b
        .get(offset..)
        .ok_or(KernelError::BadVersionString { offset })?;
    let end = tail.iter().take(512).position(|&c| c == 0).ok_or(bad)?;
    match std::str::from_utf8(&tail[..end]) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        _ => Err(KernelError::BadVersionString { offset }),
    }
}

/// The compressed kernel: `payload_length` bytes at `payload_offset` after
/// the real-mode setup.
fn payload(b: &[u8]) -> Result<&[u8], KernelError> {
    let setup_sects = match b[SETUP_SECTS_OFFSET] {
        0 => 4,
        n => n as usize,
    };
    let offset = (setup_sects + 1) * 512 + le32(b, PAYLOAD_OFFSET_OFFSET) as usize;
    let length = le32(b, PAYLOAD_LENGTH_OFFSET) as usize;
    offset
        .checked_add(length)
        .and_then(|end| b.get(offset..end))
        .filter(|p| !p.is_empty())
        .ok_or(KernelError::PayloadOutOfRange {
            offset,
            length,
            len: b.len(),
        })
}

fn compression_of(payload: &[u8]) -> PayloadCompression {
    if payload.starts_with(ZSTD_MAGIC) {
        PayloadCompression::Zstd
    } else if payload.starts_with(XZ_MAGIC) {
        PayloadCompression::Xz
    } else if payload.starts_with(GZIP_MAGIC) {
        PayloadCompression::Gzip
    } else {
        PayloadCompression::Other
    }
}

/// Decompresses the kernel ELF (`vmlinux`) out of a bzImage. zstd and xz
/// payloads end with a 4-byte little-endian uncompressed size (the kernel's
/// `*_with_size` Makefile rules); it is checked against what came out.
pub fn extract_vmlinux(bzimage: &[u8]) -> Result<Vec<u8>, KernelError> {
    if bzimage.len() < 0x250 {
        return Err(KernelError::TooShort { len: bzimage.len() });
    }
    setup_header(bzimage)?;
    let payload = payload(bzimage)?;
    let decompress_err = |compression| {
        move |source| KernelError::Decompress {
            compression,
            source,
        }
    };
    let out = match compression_of(payload) {
        PayloadCompression::Zstd | PayloadCompression::Xz if payload.len() < 8 => {
            return Err(KernelError::PayloadOutOfRange {
                offset: 0,
                length: payload.len(),
                len: bzimage.len(),
            })
        }
        PayloadCompression::Zstd => {
            let (frame, expected) = split_size_trailer(payload)?;
            let out = zstd::bulk::Decompressor::new()
                .and_then(|mut d| d.decompress(frame, expected))
                .map_err(decompress_err("zstd"))?;
            check_size(expected, out)?
        }
        PayloadCompression::Xz => {
            let (stream, expected) = split_size_trailer(payload)?;
            let mut out = Vec::with_capacity(expected);
            liblzma::read::XzDecoder::new(stream)
                .take(MAX_VMLINUX as u64 + 1)
                .read_to_end(&mut out)
                .map_err(decompress_err("xz"))?;
            check_size(expected, out)?
        }
        PayloadCompression::Gzip => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(payload)
                .take(MAX_VMLINUX as u64 + 1)
                .read_to_end(&mut out)
                .map_err(decompress_err("gzip"))?;
            out
        }
        PayloadCompression::Other => {
            let magic = hex::encode(&payload[..payload.len().min(6)]);
            return Err(KernelError::UnsupportedCompression { magic });
        }
    };
    if !out.starts_with(ELF_MAGIC) {
        return Err(KernelError::NotElf);
    }
    Ok(out)
}

fn split_size_trailer(payload: &[u8]) -> Result<(&[u8], usize), KernelError> {
    let (data, trailer) = payload.split_at(payload.len() - 4);
    let expected = le32(trailer, 0) as usize;
    if expected > MAX_VMLINUX {
        return Err(KernelError::SizeMismatch { expected, got: 0 });
    }
    Ok((data, expected))
}

fn check_size(expected: usize, out: Vec<u8>) -> Result<Vec<u8>, KernelError> {
    if out.len() != expected {
        return Err(KernelError::SizeMismatch {
            expected,
            got: out.len(),
        });
    }
    Ok(out)
}

/// Finds the one kernel of a tree (`boot/vmlinuz-<kver>`, a regular file),
/// inspects it and checks that the setup header's release is `<kver>`.
/// Returns `(kver, image bytes)`; the bytes are shared, not copied.
pub fn find_kernel(tree: &Tree) -> Result<(String, Arc<[u8]>), KernelError> {
    let found: Vec<(&str, &Arc<[u8]>)> = tree
        .iter()
        .filter_map(
            |(path, entry)| match (&entry.kind, path.strip_prefix("boot/vmlinuz-")) {
                (Kind::File(data), Some(kver)) if !kver.contains('/') && !kver.is_empty() => {
                    Some((path, data))
                }
                _ => None,
            },
        )
        .collect();
    let (path, data) = match found.as_slice() {
        [] => return Err(KernelError::NoKernel),
        [one] => *one,
        _ => {
            let found = found.iter().map(|(p, _)| p.to_string()).collect();
            return Err(KernelError::SeveralKernels { found });
        }
    };
    let kver = path.trim_start_matches("boot/vmlinuz-").to_string();
    let info = inspect(data).map_err(|e| KernelError::Inspect {
        path: path.to_string(),
        source: Box::new(e),
    })?;
    if info.release != kver {
        return Err(KernelError::VersionMismatch {
            path: path.to_string(),
            kver,
            header_release: info.release,
        });
    }
    Ok((kver, Arc::clone(data)))
}

#[cfg(test)]
#[path = "kernel_tests.rs"]
mod tests;
