//! Squashfs root image writer on top of `backhand`.
//!
//! Takes a [`Tree`] and SOURCE_DATE_EPOCH; writes a zstd squashfs 4.0 image
//! into an `impl Write + Seek`, padded with zeros to a multiple of 4096
//! bytes so that dm-verity sees whole data blocks. Never reads the clock or
//! the environment; touches the host file system only for the optional
//! block cache ([`SquashfsOptions::block_cache`]), which cannot change the
//! bytes.
//!
//! Every inode, the root included, carries `mtime`, the entry's uid, gid and
//! mode. The same tree and `mtime` give the same bytes, whatever the thread
//! count and whatever the cache holds.
//!
//! Speed: backhand compresses one block at a time on the calling thread;
//! `blocks` compresses them ahead on worker threads with reused zstd
//! contexts, `sink` writes the image out while they do, and `cache` lets a
//! rebuild skip the blocks that did not change.

use std::collections::BTreeSet;
use std::fmt;
use std::io::{self, Cursor, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use backhand::compression::{CompressionOptions, Compressor, Zstd};
use backhand::kind::Kind as BackhandKind;
use backhand::{
    BackhandError, FilesystemCompressor, FilesystemReader, FilesystemWriter, Id, NodeHeader,
    SuperBlock,
};

use crate::rootfs::{Entry, Kind, Tree};

mod blocks;
mod cache;
mod sink;

pub(crate) use blocks::CompressStats;
use blocks::{plan_blocks, run_precompressed, PRECOMPRESSED};
use cache::BlockCache;
use sink::Streamed;

/// Alignment of the finished image: one dm-verity data block.
pub const IMAGE_ALIGN: u64 = 4096;

/// Default zstd level: the knee of the size/time curve (see
/// [`SquashfsOptions::compression_level`]).
pub const DEFAULT_ZSTD_LEVEL: u32 = 6;

/// How the image is compressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SquashfsOptions {
    /// zstd level, 1..=22. Default 6: on 150 MB of /usr (2 cores) level 6
    /// takes 3.4 s for 58.3 MB, level 15 (mksquashfs' default) 37 s for
    /// 54.7 MB, level 19 about 3x longer again for 1 % less. Pass 15 or 19
    /// for release images if the minutes are worth it.
    pub compression_level: u32,
    /// Data block size: a power of two from 4 KiB to 1 MiB.
    pub block_size: u32,
    /// Compression threads; 0 means one per available core.
    pub threads: usize,
    /// Directory of the compressed-block cache, or `None` for no cache.
    /// With a cache, a block whose bytes were in the previous write is not
    /// compressed again; the image is the same bytes either way. A cache
    /// that cannot be read or written is logged and ignored.
    pub block_cache: Option<PathBuf>,
}

impl Default for SquashfsOptions {
    fn default() -> Self {
        SquashfsOptions {
            compression_level: DEFAULT_ZSTD_LEVEL,
            block_size: 128 * 1024,
            threads: 0,
            block_cache: None,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SquashfsInfo {
    /// Bytes written, padding included (a multiple of [`IMAGE_ALIGN`]).
    pub size: u64,
    /// Inodes in the image, the root included.
    pub inodes: u64,
}

/// Why an image could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SquashfsError {
    #[error("invalid squashfs block size {block_size}: want a power of two in 4096..=1048576")]
    InvalidBlockSize { block_size: u32 },
    #[error("invalid zstd compression level {level}: want 1..=22")]
    InvalidLevel { level: u32 },
    #[error("{path}: device number {major}:{minor} does not fit squashfs (major < 4096, minor < 1048576)")]
    DeviceNumber {
        path: String,
        major: u32,
        minor: u32,
    },
    #[error("tree has {count} distinct uids and gids; squashfs holds at most 65536")]
    TooManyIds { count: usize },
    #[error("cannot prepare the squashfs writer")]
    Prepare {
        #[source]
        source: BackhandCause,
    },
    #[error("cannot add {path} to the squashfs image")]
    Add {
        path: String,
        #[source]
        source: BackhandCause,
    },
    #[error("cannot write the squashfs image")]
    Write {
        #[source]
        source: BackhandCause,
    },
    #[error("cannot write the squashfs image to its output")]
    Output {
        #[source]
        source: io::Error,
    },
}

/// A `backhand` error with a message. backhand is built without its
/// `error-strings` feature, so its own `Display` is empty: name the variant.
pub struct BackhandCause(pub BackhandError);

impl fmt::Display for BackhandCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use BackhandError as E;
        let text = match &self.0 {
            E::StdIo(_) => "i/o error",
            E::Deku(_) => "on-disk structure encoding error",
            E::StringUtf8(_) | E::StrUtf8(_) => "name is not utf-8",
            E::UnsupportedCompression(_) => "unsupported compression",
            E::MissingCompressor => "missing compressor",
            E::FileNotFound => "file not found",
            E::InvalidFilePath => "invalid path (missing parent or not a directory)",
            E::UndefineFileName => "entry has no name",
            E::DuplicatedFileName => "duplicate path",
            E::InvalidIdTable | E::IdNotFoundInTable => "uid/gid missing from id table",
            E::NumericConversion(_) => "value too large for squashfs",
            E::InvalidCompressionOption => "invalid compression options",
            E::CompressionInit(_) => "compressor failed",
            E::CorruptedOrInvalidSquashfs => "corrupted or invalid squashfs",
            _ => "internal backhand error",
        };
        f.write_str("backhand: ")?;
        f.write_str(text)
    }
}

impl fmt::Debug for BackhandCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for BackhandCause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0 {
            BackhandError::StdIo(e) => Some(e),
            _ => None,
        }
    }
}

/// Writes `tree` as a squashfs image into `out` from its current position,
/// padded with zeros to a multiple of [`IMAGE_ALIGN`], and leaves `out` just
/// past it. The image goes out while it is being compressed; at the end the
/// superblock is written over its first bytes, which is why `out` must
/// seek. `out` is not flushed.
pub fn write_squashfs<W: Write + Seek>(
    tree: &Tree,
    mtime: u32,
    opts: &SquashfsOptions,
    out: W,
) -> Result<SquashfsInfo, SquashfsError> {
    write_squashfs_with_stats(tree, mtime, opts, out).map(|(info, _)| info)
}

pub(crate) fn write_squashfs_with_stats<W: Write + Seek>(
    tree: &Tree,
    mtime: u32,
    opts: &SquashfsOptions,
    mut out: W,
) -> Result<(SquashfsInfo, CompressStats), SquashfsError> {
    validate(opts)?;
    let fc = zstd_compressor(opts.compression_level).map_err(|e| SquashfsError::Prepare {
        source: BackhandCause(e),
    })?;

    // backhand keeps nodes sorted by `Path` order (component-wise), which
    // differs from the tree's string order ("a-b" < "a/c" but a/c < a-b).
    // Pushing in backhand's order appends instead of inserting mid-vector,
    // and is the order in which it will compress file data.
    let mut entries: Vec<(&str, &Entry)> = tree.iter().filter(|(p, _)| !p.is_empty()).collect();
    entries.sort_by(|a, b| Path::new(a.0).cmp(Path::new(b.0)));
    let root = tree.get("").cloned().unwrap_or_else(|| Entry::dir(0o755));

    let bootstrap = bootstrap_reader(&root, mtime, &entries, fc)?;
    let mut fs =
        FilesystemWriter::from_fs_reader(&bootstrap).map_err(|e| SquashfsError::Prepare {
            source: BackhandCause(e),
        })?;
    fs.set_kind(BackhandKind::new_v4(&PRECOMPRESSED));
    fs.set_compressor(fc);
    fs.set_block_size(opts.block_size);
    fs.set_time(mtime);
    fs.set_no_duplicate_files(true);
    fs.set_no_padding();

    let mut files: Vec<Arc<[u8]>> = Vec::new();
    for (path, entry) in &entries {
        let header = header(entry, mtime);
        let added = match &entry.kind {
            Kind::Dir => fs.push_dir(path, header),
            Kind::File(data) => {
                files.push(Arc::clone(data));
                fs.push_file(Cursor::new(Arc::clone(data)), path, header)
            }
            Kind::Symlink(target) => fs.push_symlink(target.as_str(), path, header),
            Kind::CharDevice { major, minor } => {
                fs.push_char_device(device_number(path, *major, *minor)?, path, header)
            }
            Kind::BlockDevice { major, minor } => {
                fs.push_block_device(device_number(path, *major, *minor)?, path, header)
            }
            Kind::Fifo => fs.push_fifo(path, header),
        };
        added.map_err(|e| SquashfsError::Add {
            path: path.to_string(),
            source: BackhandCause(e),
        })?;
    }

    let jobs = plan_blocks(&files, opts.block_size as usize);
    let threads = match opts.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let cache = opts
        .block_cache
        .as_deref()
        .and_then(|dir| open_cache(dir, opts));
    let output = |source| SquashfsError::Output { source };
    let mut sink = Streamed::new(&mut out).map_err(output)?;
    let (written, stats, shared) =
        run_precompressed(jobs, cache, opts.compression_level, threads, || {
            fs.write(&mut sink)
        });
    let (superblock, bytes_used): (SuperBlock, u64) = match written {
        Ok(w) => w,
        // backhand saw the output's error as its own: report the output's.
        Err(e) => {
            return Err(match sink.take_error() {
                Some(source) => SquashfsError::Output { source },
                None => SquashfsError::Write {
                    source: BackhandCause(e),
                },
            })
        }
    };
    let size = bytes_used.div_ceil(IMAGE_ALIGN) * IMAGE_ALIGN;
    sink.finish(bytes_used, size).map_err(output)?;
    if let Some(cache) = shared.cache() {
        save_cache(cache, shared.take_kept(), &stats);
    }
    Ok((
        SquashfsInfo {
            size,
            inodes: u64::from(superblock.inode_count),
        },
        stats,
    ))
}

/// The block cache in `dir`, or `None` (logged) if it cannot be read.
fn open_cache(dir: &Path, opts: &SquashfsOptions) -> Option<BlockCache> {
    match BlockCache::open(dir, opts.compression_level, opts.block_size) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!("{}; compressing every block", crate::util::error::chain(&e));
            None
        }
    }
}

/// Replaces the cache with this write's blocks, unless it holds exactly
/// them already. A failure is logged: the image is already written.
fn save_cache(cache: &BlockCache, kept: Vec<Option<blocks::Kept>>, stats: &CompressStats) {
    let fresh = kept.iter().flatten().filter(|k| k.fresh.is_some()).count();
    let keys: BTreeSet<_> = kept.iter().flatten().map(|k| k.key).collect();
    tracing::debug!(
        planned = stats.planned,
        reused = stats.cache_hits,
        rejected = stats.cache_rejected,
        "squashfs block cache"
    );
    if fresh == 0 && keys.len() == cache.len() {
        return;
    }
    let blocks = kept.iter().flatten().map(|k| (k.key, k.fresh.as_deref()));
    if let Err(e) = cache.save(blocks) {
        tracing::warn!("{}", crate::util::error::chain(&e));
    }
}

fn validate(opts: &SquashfsOptions) -> Result<(), SquashfsError> {
    let bs = opts.block_size;
    if !(4096..=1 << 20).contains(&bs) || !bs.is_power_of_two() {
        return Err(SquashfsError::InvalidBlockSize { block_size: bs });
    }
    if !(1..=22).contains(&opts.compression_level) {
        return Err(SquashfsError::InvalidLevel {
            level: opts.compression_level,
        });
    }
    Ok(())
}

fn zstd_compressor(level: u32) -> Result<FilesystemCompressor, BackhandError> {
    FilesystemCompressor::new(
        Compressor::Zstd,
        Some(CompressionOptions::Zstd(Zstd {
            compression_level: level,
        })),
    )
}

fn header(entry: &Entry, mtime: u32) -> NodeHeader {
    // `Entry::mode` is 0o7777 at most, so it fits squashfs' 16-bit field.
    NodeHeader::new((entry.mode & 0o7777) as u16, entry.uid, entry.gid, mtime)
}

/// Linux `new_encode_dev`, which the kernel's squashfs decodes with
/// `new_decode_dev`: minor's low byte, major, then minor's high bits.
fn device_number(path: &str, major: u32, minor: u32) -> Result<u32, SquashfsError> {
    if major > 0xfff || minor > 0xf_ffff {
        return Err(SquashfsError::DeviceNumber {
            path: path.to_string(),
            major,
            minor,
        });
    }
    Ok((minor & 0xff) | (major << 8) | ((minor & !0xff) << 12))
}

/// backhand gives the root node a fixed header (mtime 0) and offers no
/// setter for its mtime. `FilesystemWriter::from_fs_reader` copies the root
/// header and the id table from a reader whose fields are public, so build
/// an empty image, read it, and set its root header and id table.
fn bootstrap_reader(
    root: &Entry,
    mtime: u32,
    entries: &[(&str, &Entry)],
    fc: FilesystemCompressor,
) -> Result<FilesystemReader<'static>, SquashfsError> {
    let prepare = |e| SquashfsError::Prepare {
        source: BackhandCause(e),
    };
    let mut empty = FilesystemWriter::default();
    empty.set_compressor(fc);
    let mut image = Cursor::new(Vec::new());
    empty.write(&mut image).map_err(prepare)?;
    image.set_position(0);
    let mut reader = FilesystemReader::from_reader(image).map_err(prepare)?;

    // Every uid and gid, in first-seen order, root's first: deterministic,
    // and complete, so backhand never has to look one up for the root.
    let mut seen = BTreeSet::new();
    let mut ids = Vec::new();
    let all = std::iter::once(root).chain(entries.iter().map(|(_, e)| *e));
    for id in all.flat_map(|e| [e.uid, e.gid]) {
        if seen.insert(id) {
            ids.push(Id::new(id));
        }
    }
    if ids.len() > 65536 {
        return Err(SquashfsError::TooManyIds { count: ids.len() });
    }
    reader.id_table = ids;
    let node = reader.root.root_mut();
    node.header = header(root, mtime);
    Ok(reader)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod cache_tests;
