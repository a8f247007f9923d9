//! Compressed-block cache for the squashfs writer.
//!
//! Maps the sha256 of a block's uncompressed bytes to its compressed bytes,
//! for one compressor, library version, level and block size (the file's
//! `params`), so that a rebuild compresses only the blocks that changed.
//! The cache never decides what goes into an image: an entry replaces a
//! compression whose output would be the same bytes, and an entry that does
//! not verify is treated as absent.
//!
//! One file, `blocks.v1`, in the cache directory:
//!
//! ```text
//! magic "nodeimg squashfs blocks v1\n"
//! u32 LE n, then n bytes of params ("zstd 10507 level 6 block 131072")
//! records until the end of the file, each:
//!     key   [32]  sha256 of the uncompressed block
//!     len   u32 LE
//!     check [32]  sha256(params || key || len || bytes)
//!     bytes [len] the compressed block
//! ```
//!
//! `check` binds each record to its key and to the params, so a flipped bit
//! anywhere (header included) makes the record fail [`BlockCache::get`].
//! A truncated tail is ignored. The file is replaced whole (temp file, then
//! rename) and holds only the blocks of the last write, which bounds its
//! size to about one compressed image. It is not fsynced: after a crash it
//! may be stale or torn, and verification turns that into misses.

use std::collections::HashMap;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use ring::digest::{Context, SHA256};

use crate::util::hash::Sha256;

/// The cache file inside the cache directory.
pub(super) const CACHE_FILE: &str = "blocks.v1";
const MAGIC: &[u8] = b"nodeimg squashfs blocks v1\n";
/// Temp files of [`BlockCache::save`], before the rename.
const TEMP_PREFIX: &str = ".blocks.v1.";
/// A temp file this much older than a new one is a leftover.
const STALE_TEMP: std::time::Duration = std::time::Duration::from_secs(600);
/// key + len + check.
const RECORD_HEADER: usize = 32 + 4 + 32;

/// Why the cache could not be read or replaced. Never fatal to a write: the
/// image comes out the same without the cache, only slower.
#[derive(Debug, thiserror::Error)]
pub(super) enum BlockCacheError {
    #[error("cannot read the squashfs block cache {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the squashfs block cache {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What the cache holds for a key.
pub(super) enum Lookup<'a> {
    /// Verified compressed bytes.
    Hit(&'a [u8]),
    Absent,
    /// An entry exists but fails its check: never use it.
    Corrupt,
}

/// Where a record's parts sit in the loaded file.
#[derive(Debug, Clone, Copy)]
struct Record {
    /// Offset of the compressed bytes.
    start: usize,
    len: u32,
    check: Sha256,
}

/// A loaded cache file: read once, looked up from many threads.
pub(super) struct BlockCache {
    dir: PathBuf,
    params: Vec<u8>,
    file: Vec<u8>,
    index: HashMap<Sha256, Record>,
}

impl BlockCache {
    /// Loads the cache in `dir` for blocks compressed with zstd at `level`
    /// in `block_size` blocks. A missing, foreign or damaged file gives an
    /// empty cache; only an unreadable one is an error.
    pub(super) fn open(dir: &Path, level: u32, block_size: u32) -> Result<Self, BlockCacheError> {
        let params = format!(
            "zstd {} level {level} block {block_size}",
            zstd::zstd_safe::version_number()
        )
        .into_bytes();
        let path = dir.join(CACHE_FILE);
        let file = match std::fs::read(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(BlockCacheError::Read { path, source }),
        };
        let mut cache = BlockCache {
            dir: dir.to_path_buf(),
            params,
            file,
            index: HashMap::new(),
        };
        cache.index = cache.parse().unwrap_or_default();
        if cache.index.is_empty() {
            cache.file = Vec::new();
        }
        Ok(cache)
    }

    /// The records of a file written with our params, up to the first
    /// truncated one; `None` if the header does not match.
    fn parse(&self) -> Option<HashMap<Sha256, Record>> {
        let rest = self.file.strip_prefix(MAGIC)?;
        let (n, rest) = split_u32(rest)?;
        let (params, mut rest) = rest.split_at_checked(n as usize)?;
        if params != self.params {
            return None;
        }
        let mut index = HashMap::new();
        while let Some((head, tail)) = rest.split_at_checked(RECORD_HEADER) {
            let key = to_hash(&head[..32]);
            let (len, _) = split_u32(&head[32..36])?;
            let check = to_hash(&head[36..]);
            let Some((_, after)) = tail.split_at_checked(len as usize) else {
                break;
            };
            let start = self.file.len() - tail.len();
            index.entry(key).or_insert(Record { start, len, check });
            rest = after;
        }
        Some(index)
    }

    /// Looks `key` up and verifies the entry.
    pub(super) fn get(&self, key: &Sha256) -> Lookup<'_> {
        let Some(r) = self.index.get(key) else {
            return Lookup::Absent;
        };
        let bytes = &self.file[r.start..r.start + r.len as usize];
        if check(&self.params, key, bytes) == r.check {
            Lookup::Hit(bytes)
        } else {
            Lookup::Corrupt
        }
    }

    /// Entries in the loaded file.
    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    /// The stored bytes for `key`, unverified: for copying an entry that
    /// [`BlockCache::get`] verified earlier into the next file.
    fn stored(&self, key: &Sha256) -> Option<&[u8]> {
        let r = self.index.get(key)?;
        Some(&self.file[r.start..r.start + r.len as usize])
    }

    /// Replaces the cache file with `blocks`: `(key, Some(bytes))` for a
    /// block compressed in this run, `(key, None)` for one to carry over
    /// from this cache. Keys seen before are skipped; a carried-over key
    /// missing from the cache is skipped.
    pub(super) fn save<'a>(
        &self,
        blocks: impl Iterator<Item = (Sha256, Option<&'a [u8]>)>,
    ) -> Result<(), BlockCacheError> {
        let path = self.dir.join(CACHE_FILE);
        let write_err = |source| BlockCacheError::Write {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(write_err)?;
        let tmp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(&self.dir)
            .map_err(write_err)?;
        let mut w = BufWriter::with_capacity(1 << 20, tmp);
        w.write_all(MAGIC).map_err(write_err)?;
        let n = u32::try_from(self.params.len()).map_err(io::Error::other);
        w.write_all(&n.map_err(write_err)?.to_le_bytes())
            .map_err(write_err)?;
        w.write_all(&self.params).map_err(write_err)?;
        let mut seen = std::collections::HashSet::new();
        for (key, fresh) in blocks {
            if !seen.insert(key) {
                continue;
            }
            let Some(bytes) = fresh.or_else(|| self.stored(&key)) else {
                continue;
            };
            let len = u32::try_from(bytes.len()).map_err(io::Error::other);
            w.write_all(&key).map_err(write_err)?;
            w.write_all(&len.map_err(write_err)?.to_le_bytes())
                .map_err(write_err)?;
            w.write_all(&check(&self.params, &key, bytes))
                .map_err(write_err)?;
            w.write_all(bytes).map_err(write_err)?;
        }
        let tmp = w.into_inner().map_err(|e| write_err(e.into_error()))?;
        self.remove_stale_temp_files(tmp.path());
        tmp.persist(&path).map_err(|e| write_err(e.error))?;
        Ok(())
    }

    /// Removes temp files that a killed write left behind: those at least
    /// [`STALE_TEMP`] older than `ours`, the one just written (its mtime is
    /// the file system's "now"; a concurrent write's temp file is younger).
    fn remove_stale_temp_files(&self, ours: &Path) {
        let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let Some(now) = mtime(ours) else { return };
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let temp = e.file_name().to_string_lossy().starts_with(TEMP_PREFIX);
            let stale = mtime(&p).is_some_and(|t| t + STALE_TEMP < now);
            if temp && stale && p != ours {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
}

fn check(params: &[u8], key: &Sha256, bytes: &[u8]) -> Sha256 {
    let mut ctx = Context::new(&SHA256);
    ctx.update(params);
    ctx.update(key);
    // Lengths fit u32: blocks are at most 1 MiB plus zstd's bound.
    ctx.update(&(bytes.len() as u32).to_le_bytes());
    ctx.update(bytes);
    to_hash(ctx.finish().as_ref())
}

fn to_hash(b: &[u8]) -> Sha256 {
    let mut out = [0u8; 32];
    out.copy_from_slice(&b[..32]);
    out
}

fn split_u32(b: &[u8]) -> Option<(u32, &[u8])> {
    let (n, rest) = b.split_first_chunk::<4>()?;
    Some((u32::from_le_bytes(*n), rest))
}
