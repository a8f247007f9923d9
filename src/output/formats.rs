//! Disk formats for clouds and hypervisors, converted from the raw GPT disk.
//!
//! Takes a finished raw disk image file, a [`Format`] and SOURCE_DATE_EPOCH
//! (in [`ConvertOptions`]); writes one output file through a temporary name
//! in the output's directory, renames it into place, syncs the directory, and
//! returns its [`Output`] (path, size, sha256). It never reads the clock, the
//! environment or the network, and never holds the disk in memory.
//!
//! | format       | written by | reproducible |
//! |--------------|------------|--------------|
//! | `vhd`        | this module: fixed VHD (Azure) | yes, byte for byte |
//! | `gce`        | this module: `disk.raw` in an old-GNU tar, gzip | yes, byte for byte |
//! | `disk-qcow2` | `qemu-img convert -O qcow2` | yes (qemu-img writes no time or random id) |
//! | `vmdk`       | [`super::vmdk`]: stream-optimised sparse extent | yes, byte for byte, whatever the file is called |
//!
//! Why qemu-img for qcow2: its writer (refcount tables, L1/L2 tables) is
//! thousands of lines in qemu, and qemu-img is the reference every
//! hypervisor and cloud importer is tested against; a native writer would
//! buy no capability, only risk. The others are written natively because
//! they are small and it pays: VHD is a footer behind the data and the GCE
//! archive one tar header, and the stream-optimised VMDK is append-only
//! (deflated grains, then their tables, then the directory and a footer).
//! qemu-img deflated that one on a single thread and wrote a random `CID`
//! and the output's file name into its descriptor; [`super::vmdk`] deflates
//! on every core and writes neither. The gzip and VMDK writers share
//! `map_in_order` (work on every core, results in order) and
//! `deflate_piece`.
//!
//! What differs from the raw disk, and why:
//! - Padding: a fixed VHD must be a whole number of MiB and GCE imports a
//!   `disk.raw` of whole GiB; padding appends zeros *after* the GPT backup
//!   header, which then no longer sits on the last LBA. The agent repairs
//!   that when it grows the disk, but a raw disk built to a whole GiB avoids
//!   it entirely (padding is then a no-op).

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use flate2::{Compress, Compression};
use ring::digest::{Context, SHA256};

use super::deflate::{deflate_piece, map_in_order};
use super::vmdk::{self, VmdkError};
/// The format enum lives with the spec that names it; converting is ours.
pub use crate::spec::Format;
use crate::util::atomic;
use crate::util::hash::{sha256_reader, Sha256};

/// Bytes per sector in every format here.
pub const SECTOR: u64 = 512;
/// A fixed VHD's virtual size is a whole number of these (Azure rejects others).
pub const MIB: u64 = 1 << 20;
/// GCE import requires `disk.raw` in whole GB increments (Google's "import
/// existing image" page; rancher/os#1998, rancher/elemental-toolkit#406), and
/// an old-GNU tar (google/netbsd-gce#4: other formats fail with "The tar
/// archive is not a valid image"). `disk.raw` is padded to a multiple of this.
pub const GIB: u64 = 1 << 30;
/// The one member of a GCE image archive, as GCE's import requires.
pub const GCE_MEMBER: &str = "disk.raw";
/// gzip level of the GCE archive (flate2's default). Level 1 was measured
/// at 17 % larger archives for the worker (88.6 vs 75.8 MB).
const GZIP_LEVEL: u32 = 6;
/// Read size when streaming the raw disk.
const CHUNK: usize = 1 << 20;
/// Seconds from the Unix epoch to 2000-01-01 00:00:00 UTC (the VHD epoch).
const VHD_EPOCH: u64 = 946_684_800;
/// `apt-get install` hint for a missing `qemu-img`.
const QEMU_IMG_HINT: &str = "install qemu-utils (Debian: apt-get install qemu-utils)";

/// Errors of the format converters; each names the file or tool that failed.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("cannot read raw disk {}", path.display())]
    ReadRaw {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("raw disk {} is empty", path.display())]
    EmptyRaw { path: PathBuf },
    #[error("raw disk {} changed size while it was read (expected {expected} bytes, read {read})", path.display())]
    RawChanged {
        path: PathBuf,
        expected: u64,
        read: u64,
    },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("SOURCE_DATE_EPOCH {epoch} is past the last VHD timestamp (2136-02-07)")]
    VhdTimestamp { epoch: u64 },
    #[error("`{tool}` was not found; {hint}")]
    ToolMissing {
        tool: &'static str,
        hint: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot run `{tool}`")]
    ToolSpawn {
        tool: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("`{tool} {args}` failed ({status}): {stderr}")]
    ToolFailed {
        tool: &'static str,
        args: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("cannot write vmdk {}", path.display())]
    Vmdk {
        path: PathBuf,
        #[source]
        source: VmdkError,
    },
}

/// Inputs of a conversion besides the raw disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertOptions {
    /// SOURCE_DATE_EPOCH: the VHD timestamp and the tar member's mtime.
    pub source_date_epoch: u64,
    /// Pad GCE's `disk.raw` to a whole GiB (default `true`).
    pub gce_round_to_gib: bool,
}

impl ConvertOptions {
    pub fn new(source_date_epoch: u64) -> Self {
        ConvertOptions {
            source_date_epoch,
            gce_round_to_gib: true,
        }
    }
}

/// A written output file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: Sha256,
}

/// Converts the raw disk `raw` to `format` at `out`, atomically.
pub fn convert(
    raw: &Path,
    format: Format,
    out: &Path,
    opts: &ConvertOptions,
) -> Result<Output, FormatError> {
    match format {
        Format::Vhd => write_native(raw, out, |src, len, dst| {
            write_vhd(src, len, dst, opts.source_date_epoch)
        }),
        Format::Gce => {
            let size = if opts.gce_round_to_gib {
                round_up(raw_len(raw)?, GIB)
            } else {
                raw_len(raw)?
            };
            write_native(raw, out, |src, len, dst| {
                write_gce(src, len, size, dst, opts.source_date_epoch)
            })
        }
        Format::DiskQcow2 => qemu_img_convert(raw, out, &["-O", "qcow2"]),
        Format::Vmdk => write_vmdk(raw, out, workers()),
    }
}

/// Threads for the deflating writers: every core.
fn workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `value` rounded up to a multiple of `unit`.
pub fn round_up(value: u64, unit: u64) -> u64 {
    value.div_ceil(unit) * unit
}

fn open_raw(raw: &Path) -> Result<File, FormatError> {
    File::open(raw).map_err(|source| FormatError::ReadRaw {
        path: raw.to_owned(),
        source,
    })
}

fn raw_len(raw: &Path) -> Result<u64, FormatError> {
    let len = fs::metadata(raw)
        .map_err(|source| FormatError::ReadRaw {
            path: raw.to_owned(),
            source,
        })?
        .len();
    if len == 0 {
        return Err(FormatError::EmptyRaw {
            path: raw.to_owned(),
        });
    }
    Ok(len)
}

/// Why a native writer stopped: the source or the sink.
#[derive(Debug)]
enum StreamError {
    Read(io::Error),
    Write(io::Error),
    Short { read: u64 },
    Vhd(FormatError),
}

/// Streams `raw` through `fill` into a temporary sibling of `out`, hashing
/// what is written, then renames it into place.
fn write_native(
    raw: &Path,
    out: &Path,
    fill: impl FnOnce(&mut dyn Read, u64, &mut HashWriter<File>) -> Result<(), StreamError>,
) -> Result<Output, FormatError> {
    let len = raw_len(raw)?;
    let src = open_raw(raw)?;
    let mut src = BufReader::with_capacity(CHUNK, src.take(len));
    commit_new_file(out, |file| {
        let mut dst = HashWriter::new(file);
        fill(&mut src, len, &mut dst).map_err(|e| match e {
            StreamError::Read(source) => FormatError::ReadRaw {
                path: raw.to_owned(),
                source,
            },
            StreamError::Write(source) => write_error(out, source),
            StreamError::Short { read } => FormatError::RawChanged {
                path: raw.to_owned(),
                expected: len,
                read,
            },
            StreamError::Vhd(e) => e,
        })?;
        dst.finish().map_err(|e| write_error(out, e))
    })
}

/// The stream-optimised VMDK of `raw` (see [`super::vmdk`]). Its writer
/// seeks back to put the descriptor, whose `CID` needs every grain, in
/// front; so the file is hashed once written, from the page cache.
fn write_vmdk(raw: &Path, out: &Path, workers: usize) -> Result<Output, FormatError> {
    let len = raw_len(raw)?;
    let mut src = open_raw(raw)?.take(len);
    commit_new_file(out, |file| {
        let mut dst = io::BufWriter::with_capacity(CHUNK, file);
        vmdk::write(&mut src, len, &mut dst, workers).map_err(|e| match e {
            VmdkError::Read(source) => FormatError::ReadRaw {
                path: raw.to_owned(),
                source,
            },
            VmdkError::Short { read, expected } => FormatError::RawChanged {
                path: raw.to_owned(),
                expected,
                read,
            },
            VmdkError::Empty => FormatError::EmptyRaw {
                path: raw.to_owned(),
            },
            VmdkError::Write(source) => write_error(out, source),
            source @ (VmdkError::Deflate { .. } | VmdkError::TooLarge { .. }) => {
                FormatError::Vmdk {
                    path: out.to_owned(),
                    source,
                }
            }
        })?;
        let mut file = dst
            .into_inner()
            .map_err(|e| write_error(out, e.into_error()))?;
        file.seek(io::SeekFrom::Start(0))
            .map_err(|e| write_error(out, e))?;
        let (sha256, size) = sha256_reader(BufReader::with_capacity(CHUNK, &file))
            .map_err(|e| write_error(out, e))?;
        Ok((file, sha256, size))
    })
}

fn write_error(out: &Path, source: io::Error) -> FormatError {
    FormatError::Write {
        path: out.to_owned(),
        source,
    }
}

/// Creates a temporary sibling of `out` (readable and writable), lets `fill`
/// write it and return it with its digest and size, then syncs it and
/// renames it into place. On any error the temporary file is removed.
fn commit_new_file(
    out: &Path,
    fill: impl FnOnce(File) -> Result<(File, Sha256, u64), FormatError>,
) -> Result<Output, FormatError> {
    let tmp = atomic::temp_path(out);
    let result = (|| {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| write_error(out, e))?;
        let (file, sha256, size) = fill(file)?;
        file.sync_all().map_err(|e| write_error(out, e))?;
        drop(file);
        atomic::commit(&tmp, out).map_err(|e| write_error(out, e))?;
        Ok(Output {
            path: out.to_owned(),
            size,
            sha256,
        })
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Copies exactly `len` bytes of `src` into `dst`.
fn copy_exact(src: &mut dyn Read, len: u64, dst: &mut dyn Write) -> Result<(), StreamError> {
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    while done < len {
        let k = src.read(&mut buf).map_err(StreamError::Read)?;
        if k == 0 {
            return Err(StreamError::Short { read: done });
        }
        dst.write_all(&buf[..k]).map_err(StreamError::Write)?;
        done += k as u64;
    }
    Ok(())
}

/// Writes `n` zero bytes, in blocks large enough to become holes.
fn write_zeros(dst: &mut dyn Write, n: u64) -> io::Result<()> {
    let block = vec![0u8; CHUNK];
    let mut left = n;
    while left > 0 {
        let k = left.min(CHUNK as u64) as usize;
        dst.write_all(&block[..k])?;
        left -= k as u64;
    }
    Ok(())
}

/// The fixed VHD: the raw data, zeros up to a whole MiB, then the footer.
fn write_vhd(
    src: &mut dyn Read,
    len: u64,
    dst: &mut HashWriter<File>,
    source_date_epoch: u64,
) -> Result<(), StreamError> {
    let timestamp = vhd_timestamp(source_date_epoch).map_err(StreamError::Vhd)?;
    let size = round_up(len, MIB);
    copy_exact(src, len, dst)?;
    write_zeros(dst, size - len).map_err(StreamError::Write)?;
    // The data's digest, taken before the footer, names the disk.
    let unique_id = uuid_from_digest(&dst.digest_so_far());
    let footer = VhdFooter::fixed(size, timestamp, unique_id);
    dst.write_all(&footer.to_bytes())
        .map_err(StreamError::Write)
}

/// VHD time stamp: seconds since 2000-01-01 UTC. Epochs before 2000 give 0.
pub fn vhd_timestamp(source_date_epoch: u64) -> Result<u32, FormatError> {
    u32::try_from(source_date_epoch.saturating_sub(VHD_EPOCH)).map_err(|_| {
        FormatError::VhdTimestamp {
            epoch: source_date_epoch,
        }
    })
}

/// An RFC 9562 version-8 (custom) UUID from the first 16 bytes of a sha256.
pub fn uuid_from_digest(digest: &Sha256) -> [u8; 16] {
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id[6] = (id[6] & 0x0f) | 0x80;
    id[8] = (id[8] & 0x3f) | 0x80;
    id
}

/// The GCE archive: one old-GNU tar member `disk.raw` (the raw disk padded
/// with zeros to `size`), gzip'd as one member.
///
/// Written by hand rather than through `tar::Builder` + `GzEncoder`: the
/// padded disk is mostly zeros (a GiB for a ~450 MB image) and one deflate
/// stream over it took ~6 s. Here the tar stream is cut into 1 MiB chunks,
/// each deflated on its own and ended with a sync flush (an empty stored
/// block, so the pieces join into one valid deflate stream, as pigz does);
/// a chunk of zeros reuses one precomputed piece, and the others are
/// deflated on every core. The bytes depend only on the input.
fn write_gce(
    src: &mut dyn Read,
    len: u64,
    size: u64,
    dst: &mut HashWriter<File>,
    source_date_epoch: u64,
) -> Result<(), StreamError> {
    let mut header = gce_header(size, source_date_epoch).map_err(StreamError::Write)?;
    header.set_cksum();
    // header, data, zero padding, then tar's end: two zero blocks.
    let stream_len = 512 + size + 1024;
    let mut data = CountingReader {
        inner: io::Cursor::new(header.as_bytes().to_vec())
            .chain(src.take(len))
            .chain(io::repeat(0).take(size - len + 1024)),
        count: 0,
        error: None,
    };
    // gzip header: deflate, no flags, mtime 0, no extra flags, OS unknown.
    dst.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255])
        .map_err(StreamError::Write)?;
    let zero_piece =
        deflate_piece(gzip_deflate(), &vec![0u8; CHUNK], false).map_err(StreamError::Write)?;
    let mut crc = flate2::Crc::new();
    let workers = workers();
    let batch_len = 4 * workers;
    let mut done = 0u64;
    while done < stream_len {
        let mut batch: Vec<Vec<u8>> = Vec::with_capacity(batch_len);
        while batch.len() < batch_len && done < stream_len {
            let k = (stream_len - done).min(CHUNK as u64) as usize;
            let mut chunk = vec![0u8; k];
            if let Err(e) = data.read_exact(&mut chunk) {
                return Err(match data.error.take() {
                    Some(read) => StreamError::Read(read),
                    None if e.kind() == io::ErrorKind::UnexpectedEof => StreamError::Short {
                        read: data.count.saturating_sub(512).min(len),
                    },
                    None => StreamError::Read(e),
                });
            }
            crc.update(&chunk);
            done += k as u64;
            batch.push(chunk);
        }
        let last_index = if done == stream_len {
            Some(batch.len() - 1)
        } else {
            None
        };
        let pieces =
            deflate_batch(&batch, last_index, &zero_piece, workers).map_err(StreamError::Write)?;
        for piece in pieces {
            match piece {
                Piece::Zero => dst.write_all(&zero_piece),
                Piece::Data(d) => dst.write_all(&d),
            }
            .map_err(StreamError::Write)?;
        }
    }
    let mut trailer = [0u8; 8];
    trailer[..4].copy_from_slice(&crc.sum().to_le_bytes());
    trailer[4..].copy_from_slice(&(stream_len as u32).to_le_bytes());
    dst.write_all(&trailer).map_err(StreamError::Write)
}

/// A deflated chunk: the shared piece for a whole chunk of zeros, or its own.
enum Piece {
    Zero,
    Data(Vec<u8>),
}

/// The gzip member's raw deflate (no zlib header) at [`GZIP_LEVEL`].
fn gzip_deflate() -> Compress {
    Compress::new(Compression::new(GZIP_LEVEL), false)
}

/// Deflates a batch of chunks on `workers` threads, in order; chunk
/// `last` (if any) ends the deflate stream.
fn deflate_batch(
    batch: &[Vec<u8>],
    last: Option<usize>,
    zero_piece: &[u8],
    workers: usize,
) -> io::Result<Vec<Piece>> {
    let is_zero = |i: usize, c: &[u8]| {
        c.len() == CHUNK && last != Some(i) && !zero_piece.is_empty() && c.iter().all(|&b| b == 0)
    };
    map_in_order(batch, workers, |i, c| {
        Ok(if is_zero(i, c) {
            Piece::Zero
        } else {
            Piece::Data(deflate_piece(gzip_deflate(), c, last == Some(i))?)
        })
    })
}

/// The tar header of `disk.raw`: GNU magic (`ustar  \0`), which is what
/// `tar --format=oldgnu` writes for a short name; sizes past 8 GiB use GNU's
/// base-256 size field, as GNU tar does.
fn gce_header(size: u64, mtime: u64) -> io::Result<tar::Header> {
    let mut h = tar::Header::new_gnu();
    h.set_path(GCE_MEMBER)?;
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    Ok(h)
}

/// Runs `qemu-img convert -f raw <args> RAW TMP` into a fresh directory
/// beside `out` (qemu-img creates the file itself), then renames it into
/// place.
fn qemu_img_convert(raw: &Path, out: &Path, args: &[&str]) -> Result<Output, FormatError> {
    raw_len(raw)?;
    let write_err = |source| FormatError::Write {
        path: out.to_owned(),
        source,
    };
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = out.file_name().ok_or_else(|| {
        write_err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "output path has no file name",
        ))
    })?;
    // Dropped (and removed) on every path; on success it is empty.
    let stage = tempfile::Builder::new()
        .prefix(".formats-")
        .tempdir_in(dir)
        .map_err(write_err)?;
    let tmp = stage.path().join(name);
    let mut full: Vec<&std::ffi::OsStr> = vec!["convert".as_ref(), "-f".as_ref(), "raw".as_ref()];
    full.extend(args.iter().map(|a| std::ffi::OsStr::new(*a)));
    full.push(raw.as_os_str());
    full.push(tmp.as_os_str());
    run_qemu_img(&full)?;
    let file = File::open(&tmp).map_err(write_err)?;
    file.sync_all().map_err(write_err)?;
    let (sha256, size) = sha256_reader(BufReader::with_capacity(CHUNK, file)).map_err(write_err)?;
    atomic::commit(&tmp, out).map_err(write_err)?;
    Ok(Output {
        path: out.to_owned(),
        size,
        sha256,
    })
}

fn run_qemu_img(args: &[&std::ffi::OsStr]) -> Result<(), FormatError> {
    let result = Command::new("qemu-img").args(args).output();
    let output = match result {
        Ok(o) => o,
        Err(source) if source.kind() == io::ErrorKind::NotFound => {
            return Err(FormatError::ToolMissing {
                tool: "qemu-img",
                hint: QEMU_IMG_HINT,
                source,
            })
        }
        Err(source) => {
            return Err(FormatError::ToolSpawn {
                tool: "qemu-img",
                source,
            })
        }
    };
    if !output.status.success() {
        return Err(FormatError::ToolFailed {
            tool: "qemu-img",
            args: join_args(args),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

fn join_args(args: &[&std::ffi::OsStr]) -> String {
    args.iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// VHD disk geometry (spec appendix "CHS Calculation").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chs {
    pub cylinders: u16,
    pub heads: u8,
    pub sectors_per_track: u8,
}

impl Chs {
    /// The spec's algorithm, verbatim: capped at 65535×16×255 sectors.
    pub fn for_sectors(total_sectors: u64) -> Chs {
        let total = total_sectors.min(65535 * 16 * 255);
        let (spt, heads, cth) = if total >= 65535 * 16 * 63 {
            (255, 16, total / 255)
        } else {
            let mut spt = 17;
            let mut cth = total / spt;
            let mut heads = cth.div_ceil(1024).max(4);
            if cth >= heads * 1024 || heads > 16 {
                spt = 31;
                heads = 16;
                cth = total / spt;
            }
            if cth >= heads * 1024 {
                spt = 63;
                heads = 16;
                cth = total / spt;
            }
            (spt, heads, cth)
        };
        // In range by construction: cth / heads <= 65535, heads <= 16, spt <= 255.
        Chs {
            cylinders: (cth / heads) as u16,
            heads: heads as u8,
            sectors_per_track: spt as u8,
        }
    }
}

/// The 512-byte hard disk footer (Microsoft "Virtual Hard Disk Image Format
/// Specification" 1.0). All integers big-endian; a fixed disk has it only
/// at the end of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhdFooter {
    /// Bit 1 is reserved and must be set: 2.
    pub features: u32,
    /// 0x00010000 (1.0).
    pub format_version: u32,
    /// Offset of the dynamic header; all ones for a fixed disk.
    pub data_offset: u64,
    /// Seconds since 2000-01-01 00:00:00 UTC.
    pub timestamp: u32,
    /// Application that created the image.
    pub creator_app: [u8; 4],
    /// Its version, major.minor in the high and low halves.
    pub creator_version: u32,
    /// `Wi2k` (Windows) or `Mac `.
    pub creator_host_os: [u8; 4],
    /// Size at creation, bytes.
    pub original_size: u64,
    /// Current virtual size, bytes.
    pub current_size: u64,
    pub geometry: Chs,
    /// 2 fixed, 3 dynamic, 4 differencing.
    pub disk_type: u32,
    /// One's complement of the byte sum of the footer with this field zero.
    pub checksum: u32,
    pub unique_id: [u8; 16],
    pub saved_state: u8,
}

/// `conectix`: the footer cookie.
pub const VHD_COOKIE: &[u8; 8] = b"conectix";
pub const VHD_FOOTER_SIZE: usize = 512;
pub const VHD_DISK_FIXED: u32 = 2;
/// Creator `win ` / `Wi2k` / 10.0, as Hyper-V writes. Readers pick the
/// virtual size by creator: Azure and Hyper-V use `current_size`; qemu up
/// to 8.x uses `current_size` only for a fixed list of creators (`win `,
/// `qem2`, `d2v `, `CTXS`, `tap\0`) and otherwise the CHS geometry, which is
/// smaller than a whole-MiB size. A creator of our own would make qemu (and
/// the lab) see a truncated disk.
pub const VHD_CREATOR_APP: &[u8; 4] = b"win ";
pub const VHD_CREATOR_VERSION: u32 = 0x000a_0000;
pub const VHD_CREATOR_HOST_OS: &[u8; 4] = b"Wi2k";

impl VhdFooter {
    /// The footer of a fixed disk of `size` bytes (a multiple of 512).
    pub fn fixed(size: u64, timestamp: u32, unique_id: [u8; 16]) -> Self {
        VhdFooter {
            features: 2,
            format_version: 0x0001_0000,
            data_offset: u64::MAX,
            timestamp,
            creator_app: *VHD_CREATOR_APP,
            creator_version: VHD_CREATOR_VERSION,
            creator_host_os: *VHD_CREATOR_HOST_OS,
            original_size: size,
            current_size: size,
            geometry: Chs::for_sectors(size / SECTOR),
            disk_type: VHD_DISK_FIXED,
            checksum: 0,
            unique_id,
            saved_state: 0,
        }
    }

    /// The on-disk bytes, with the checksum computed (the field is ignored).
    pub fn to_bytes(&self) -> [u8; VHD_FOOTER_SIZE] {
        let mut b = [0u8; VHD_FOOTER_SIZE];
        b[0..8].copy_from_slice(VHD_COOKIE);
        b[8..12].copy_from_slice(&self.features.to_be_bytes());
        b[12..16].copy_from_slice(&self.format_version.to_be_bytes());
        b[16..24].copy_from_slice(&self.data_offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.timestamp.to_be_bytes());
        b[28..32].copy_from_slice(&self.creator_app);
        b[32..36].copy_from_slice(&self.creator_version.to_be_bytes());
        b[36..40].copy_from_slice(&self.creator_host_os);
        b[40..48].copy_from_slice(&self.original_size.to_be_bytes());
        b[48..56].copy_from_slice(&self.current_size.to_be_bytes());
        b[56..58].copy_from_slice(&self.geometry.cylinders.to_be_bytes());
        b[58] = self.geometry.heads;
        b[59] = self.geometry.sectors_per_track;
        b[60..64].copy_from_slice(&self.disk_type.to_be_bytes());
        b[68..84].copy_from_slice(&self.unique_id);
        b[84] = self.saved_state;
        let sum = vhd_checksum(&b);
        b[64..68].copy_from_slice(&sum.to_be_bytes());
        b
    }

    /// Reads a footer; `None` unless the cookie and checksum are right.
    pub fn parse(b: &[u8; VHD_FOOTER_SIZE]) -> Option<Self> {
        let u32_at = |at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let u64_at = |at: usize| (u64::from(u32_at(at)) << 32) | u64::from(u32_at(at + 4));
        let four = |at: usize| [b[at], b[at + 1], b[at + 2], b[at + 3]];
        if &b[0..8] != VHD_COOKIE || vhd_checksum(b) != u32_at(64) {
            return None;
        }
        let mut unique_id = [0u8; 16];
        unique_id.copy_from_slice(&b[68..84]);
        Some(VhdFooter {
            features: u32_at(8),
            format_version: u32_at(12),
            data_offset: u64_at(16),
            timestamp: u32_at(24),
            creator_app: four(28),
            creator_version: u32_at(32),
            creator_host_os: four(36),
            original_size: u64_at(40),
            current_size: u64_at(48),
            geometry: Chs {
                cylinders: u16::from_be_bytes([b[56], b[57]]),
                heads: b[58],
                sectors_per_track: b[59],
            },
            disk_type: u32_at(60),
            checksum: u32_at(64),
            unique_id,
            saved_state: b[84],
        })
    }
}

/// One's complement of the sum of the footer's bytes, the checksum field
/// (bytes 64..68) counted as zero.
pub fn vhd_checksum(footer: &[u8; VHD_FOOTER_SIZE]) -> u32 {
    let sum = footer
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .fold(0u32, |s, (_, b)| s.wrapping_add(u32::from(*b)));
    !sum
}

/// A writer that hashes and counts what passes through it.
struct HashWriter<W> {
    inner: W,
    ctx: Context,
    count: u64,
    /// Bytes of zeros hashed and counted but not yet written: they become a
    /// hole (a seek) when more data follows, or the file's length at the end.
    pending_zeros: u64,
}

impl HashWriter<File> {
    fn new(inner: File) -> Self {
        HashWriter {
            inner,
            ctx: Context::new(&SHA256),
            count: 0,
            pending_zeros: 0,
        }
    }

    fn digest_so_far(&self) -> Sha256 {
        digest_bytes(self.ctx.clone())
    }

    /// The file (with trailing zeros as a hole), its digest and length.
    fn finish(self) -> io::Result<(File, Sha256, u64)> {
        if self.pending_zeros > 0 {
            self.inner.set_len(self.count)?;
        }
        Ok((self.inner, digest_bytes(self.ctx), self.count))
    }
}

fn digest_bytes(ctx: Context) -> Sha256 {
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Whole zero blocks of this size are skipped, not written: a raw disk is
/// mostly holes (slot B, padding), and writing them as zeros cost seconds
/// per format while a sparse file reads back the same.
const HOLE_BLOCK: usize = 64 << 10;

impl Write for HashWriter<File> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(HOLE_BLOCK);
        let part = &buf[..n];
        if n == HOLE_BLOCK && part.iter().all(|&b| b == 0) {
            self.ctx.update(part);
            self.count += n as u64;
            self.pending_zeros += n as u64;
            return Ok(n);
        }
        if self.pending_zeros > 0 {
            self.inner
                .seek(io::SeekFrom::Current(self.pending_zeros as i64))?;
            self.pending_zeros = 0;
        }
        let k = self.inner.write(part)?;
        self.ctx.update(&part[..k]);
        self.count += k as u64;
        Ok(k)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that counts the bytes it yields and keeps its first error, so a
/// failed copy can tell a read error from a write error.
struct CountingReader<R> {
    inner: R,
    count: u64,
    error: Option<io::Error>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(k) => {
                self.count += k as u64;
                Ok(k)
            }
            Err(e) => {
                let again = io::Error::new(e.kind(), e.to_string());
                self.error.get_or_insert(e);
                Err(again)
            }
        }
    }
}

#[cfg(test)]
#[path = "formats_tests.rs"]
mod tests;
