//! Squashfs root image writer on top of `backhand`.
//!
//! Takes a [`Tree`] and SOURCE_DATE_EPOCH; writes a zstd squashfs 4.0 image
//! into an `impl Write`, padded with zeros to a multiple of 4096 bytes so
//! that dm-verity sees whole data blocks. Never reads the clock, the
//! environment or the host file system.
//!
//! Every inode, the root included, carries `mtime`, the entry's uid, gid and
//! mode. The same tree and `mtime` give the same bytes.
//!
//! Speed: backhand compresses one block at a time on the calling thread. We
//! predict the exact sequence of data and fragment blocks it will ask to
//! compress (same file order, same fragment packing), compress them ahead on
//! worker threads with backhand's own zstd code, and hand the results back
//! through a custom [`CompressionAction`]. A block whose bytes differ from
//! the prediction is simply compressed inline, so a wrong prediction costs
//! time, never correctness.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt;
use std::io::{self, Cursor, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use backhand::compression::{
    CompressionAction, CompressionOptions, Compressor, DefaultCompressor, Zstd,
};
use backhand::kind::Kind as BackhandKind;
use backhand::{
    BackhandError, FilesystemCompressor, FilesystemReader, FilesystemWriter, Id, NodeHeader,
    SuperBlock,
};

use crate::rootfs::{Entry, Kind, Tree};

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
}

impl Default for SquashfsOptions {
    fn default() -> Self {
        SquashfsOptions {
            compression_level: DEFAULT_ZSTD_LEVEL,
            block_size: 128 * 1024,
            threads: 0,
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

/// Counters from one write, for tests and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CompressStats {
    /// Predicted blocks that backhand asked for and got precompressed.
    pub hits: usize,
    /// Data or fragment blocks that did not match the prediction.
    pub misses: usize,
    /// Blocks predicted in all.
    pub planned: usize,
}

/// Writes `tree` as a squashfs image into `out`,
/// padded with zeros to a multiple of [`IMAGE_ALIGN`]. The image is built in
/// memory and written to `out` in one `write_all`; `out` is not flushed.
pub fn write_squashfs<W: Write>(
    tree: &Tree,
    mtime: u32,
    opts: &SquashfsOptions,
    out: W,
) -> Result<SquashfsInfo, SquashfsError> {
    write_squashfs_with_stats(tree, mtime, opts, out).map(|(info, _)| info)
}

pub(crate) fn write_squashfs_with_stats<W: Write>(
    tree: &Tree,
    mtime: u32,
    opts: &SquashfsOptions,
    mut out: W,
) -> Result<(SquashfsInfo, CompressStats), SquashfsError> {
    validate(opts)?;
    let t0 = std::time::Instant::now();
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

    eprintln!(
        "TIMING pushed {:.3} {:?}",
        t0.elapsed().as_secs_f64(),
        std::time::SystemTime::now()
    );
    let jobs = plan_blocks(&files, opts.block_size as usize);
    let threads = match opts.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    // backhand writes a duplicate file's data, then seeks back over it: the
    // sink keeps those bytes past the image's end. Write into memory and
    // copy out the image alone, so a file sink holds no trailing garbage.
    let mut image = Cursor::new(Vec::with_capacity(tree.file_bytes() as usize / 2));
    let (written, stats) =
        run_precompressed(jobs, fc, opts.block_size, threads, || fs.write(&mut image));
    let (superblock, bytes_used): (SuperBlock, u64) =
        written.map_err(|e| SquashfsError::Write {
            source: BackhandCause(e),
        })?;

    eprintln!(
        "TIMING written {:.3} {:?}",
        t0.elapsed().as_secs_f64(),
        std::time::SystemTime::now()
    );
    let size = bytes_used.div_ceil(IMAGE_ALIGN) * IMAGE_ALIGN;
    let mut image = image.into_inner();
    image.resize(bytes_used as usize, 0);
    image.resize(size as usize, 0);
    out.write_all(&image)
        .map_err(|e| SquashfsError::Output { source: e })?;
    eprintln!("TIMING out {:.3}", t0.elapsed().as_secs_f64());
    Ok((
        SquashfsInfo {
            size,
            inodes: u64::from(superblock.inode_count),
        },
        stats,
    ))
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

// ---------------------------------------------------------------------------
// Parallel precompression

/// One block backhand will ask to compress.
enum Job {
    /// `data[start..end]` of one file.
    Slice {
        data: Arc<[u8]>,
        start: usize,
        end: usize,
    },
    /// A fragment block: tails of small files packed together.
    Fragment(Vec<u8>),
}

impl Job {
    fn bytes(&self) -> &[u8] {
        match self {
            Job::Slice { data, start, end } => &data[*start..*end],
            Job::Fragment(v) => v,
        }
    }
}

/// Predicts backhand 0.25's `DataWriter::add_bytes` calls to `compress`, in
/// order: a file shorter than a block joins the fragment block (which is
/// compressed first if the file does not fit); a longer file is cut into
/// blocks, all-zero blocks become holes and are not compressed; empty files
/// store nothing. The fragment block is compressed once more at the end,
/// even when empty.
fn plan_blocks(files: &[Arc<[u8]>], block_size: usize) -> Vec<Job> {
    let mut jobs = Vec::new();
    let mut fragment: Vec<u8> = Vec::with_capacity(block_size);
    for data in files {
        let len = data.len();
        if len == 0 {
            continue;
        }
        if len < block_size {
            if len + fragment.len() > block_size {
                jobs.push(Job::Fragment(std::mem::take(&mut fragment)));
            }
            fragment.extend_from_slice(data);
            continue;
        }
        for start in (0..len).step_by(block_size) {
            let end = (start + block_size).min(len);
            if data[start..end].iter().any(|b| *b != 0) {
                jobs.push(Job::Slice {
                    data: Arc::clone(data),
                    start,
                    end,
                });
            }
        }
    }
    jobs.push(Job::Fragment(fragment));
    jobs
}

/// How many finished blocks may wait for the writer: bounds memory.
const WINDOW: usize = 512;

struct Shared {
    jobs: Vec<Job>,
    fc: FilesystemCompressor,
    block_size: u32,
    next: AtomicUsize,
    state: Mutex<State>,
    changed: Condvar,
}

struct State {
    results: Vec<Option<Compressed>>,
    /// Jobs the writer has taken; workers stay within `WINDOW` of it.
    consumed: usize,
    /// Set when the writer is done or a worker died: everyone stops waiting.
    stop: bool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means a worker panicked; the data is a list
        // of finished results and stays usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stop(&self) {
        self.lock().stop = true;
        self.changed.notify_all();
    }

    fn worker(&self) {
        // If this thread unwinds, wake the writer so it compresses inline.
        struct StopOnPanic<'a>(&'a Shared);
        impl Drop for StopOnPanic<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.stop();
                }
            }
        }
        let _guard = StopOnPanic(self);
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.jobs.len() {
                return;
            }
            {
                let mut st = self.lock();
                while !st.stop && i >= st.consumed + WINDOW {
                    st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
                }
                if st.stop {
                    return;
                }
            }
            let out = DefaultCompressor.compress(self.jobs[i].bytes(), self.fc, self.block_size);
            self.lock().results[i] = Some(out);
            self.changed.notify_all();
        }
    }

    /// Waits for job `i` and takes its result; `None` if workers stopped.
    fn take(&self, i: usize) -> Option<Compressed> {
        let mut st = self.lock();
        loop {
            if let Some(r) = st.results[i].take() {
                st.consumed = i + 1;
                drop(st);
                self.changed.notify_all();
                return Some(r);
            }
            if st.stop {
                return None;
            }
            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// The writer thread's view: which job comes next.
struct PlanCursor {
    shared: Arc<Shared>,
    next: usize,
    stats: CompressStats,
}

thread_local! {
    /// Set on the thread running `FilesystemWriter::write` for its duration.
    static PLAN: RefCell<Option<PlanCursor>> = const { RefCell::new(None) };
}

/// backhand's zstd, fed from the precompressed plan when the bytes match.
struct Precompressed;
static PRECOMPRESSED: Precompressed = Precompressed;

impl CompressionAction for Precompressed {
    type Error = BackhandError;
    type Compressor = Compressor;
    type FilesystemCompressor = FilesystemCompressor;
    type SuperBlock = SuperBlock;

    fn decompress(&self, bytes: &[u8], out: &mut Vec<u8>, c: Compressor) -> Compressed<()> {
        DefaultCompressor.decompress(bytes, out, c)
    }

    fn compress(&self, bytes: &[u8], fc: FilesystemCompressor, block_size: u32) -> Compressed {
        let planned = PLAN.with(|plan| {
            let mut plan = plan.borrow_mut();
            let cur = plan.as_mut()?;
            let job = cur.shared.jobs.get(cur.next)?;
            if job.bytes() != bytes {
                cur.stats.misses += 1;
                return None;
            }
            let got = cur.shared.take(cur.next);
            cur.next += 1;
            if cur.next == cur.shared.jobs.len() {
                eprintln!("TIMING last job {:?}", std::time::SystemTime::now());
            }
            if got.is_some() {
                cur.stats.hits += 1;
            }
            got
        });
        match planned {
            Some(result) => result,
            None => DefaultCompressor.compress(bytes, fc, block_size),
        }
    }

    fn compression_options(
        &self,
        superblock: &mut SuperBlock,
        kind: &BackhandKind,
        fc: FilesystemCompressor,
    ) -> Compressed<Option<Vec<u8>>> {
        DefaultCompressor.compression_options(superblock, kind, fc)
    }
}

/// `Result` with backhand's error, generic over the value.
type Compressed<T = Vec<u8>> = Result<T, BackhandError>;

/// Runs `write` on this thread while `threads` workers compress `jobs`.
fn run_precompressed<T>(
    jobs: Vec<Job>,
    fc: FilesystemCompressor,
    block_size: u32,
    threads: usize,
    write: impl FnOnce() -> T,
) -> (T, CompressStats) {
    let planned = jobs.len();
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            results: (0..planned).map(|_| None).collect(),
            consumed: 0,
            stop: false,
        }),
        jobs,
        fc,
        block_size,
        next: AtomicUsize::new(0),
        changed: Condvar::new(),
    });
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            let shared = Arc::clone(&shared);
            scope.spawn(move || shared.worker());
        }
        // Stops the workers and clears the plan however `write` ends: a
        // panic must not leave workers waiting, or the scope never joins.
        struct Finish(Arc<Shared>);
        impl Drop for Finish {
            fn drop(&mut self) {
                PLAN.with(|p| p.borrow_mut().take());
                self.0.stop();
            }
        }
        let finish = Finish(Arc::clone(&shared));
        PLAN.with(|p| {
            *p.borrow_mut() = Some(PlanCursor {
                shared: Arc::clone(&shared),
                next: 0,
                stats: Default::default(),
            })
        });
        let result = write();
        eprintln!(
            "TIMING data+meta done; next job {}",
            PLAN.with(|p| p.borrow().as_ref().map(|c| c.next).unwrap_or(0))
        );
        let mut stats = PLAN
            .with(|p| p.borrow().as_ref().map(|c| c.stats))
            .unwrap_or_default();
        stats.planned = planned;
        drop(finish);
        (result, stats)
    })
}

#[cfg(test)]
#[path = "squashfs_tests.rs"]
mod tests;
