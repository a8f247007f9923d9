//! Parallel block compression for the squashfs writer.
//!
//! backhand 0.25 compresses one block at a time on the calling thread. We
//! predict the exact sequence of data and fragment blocks it will ask to
//! compress (same file order, same fragment packing, [`plan_blocks`]), and
//! compress them ahead on worker threads, or take them from the
//! [`BlockCache`], then hand the results back through a custom
//! [`CompressionAction`]. A block whose bytes differ from the prediction is
//! compressed inline, so a wrong prediction costs time, never correctness.
//!
//! Every block, predicted or not, data or metadata, goes through
//! [`BlockCompressor`]: one zstd context per thread, reused from block to
//! block. zstd's output depends on the input, the level and the library
//! version alone, so the bytes do not depend on which thread compressed a
//! block, nor on whether it came from the cache.

use std::cell::RefCell;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use backhand::compression::{CompressionAction, Compressor, DefaultCompressor};
use backhand::kind::Kind as BackhandKind;
use backhand::{BackhandError, FilesystemCompressor, SuperBlock};

use super::cache::{BlockCache, Lookup};
use crate::util::hash::{sha256, Sha256};

/// `Result` with backhand's error, generic over the value.
pub(super) type Compressed<T = Vec<u8>> = Result<T, BackhandError>;

/// Counters from one write, for tests, logs and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CompressStats {
    /// Predicted blocks that backhand asked for and got precompressed.
    pub hits: usize,
    /// Data or fragment blocks that did not match the prediction.
    pub misses: usize,
    /// Blocks predicted in all.
    pub planned: usize,
    /// Predicted blocks taken from the block cache instead of compressed.
    pub cache_hits: usize,
    /// Cache entries that failed verification and were recompressed.
    pub cache_rejected: usize,
}

/// zstd at one level with one context, reused for every block.
///
/// backhand's `DefaultCompressor` creates a context per block. Reuse saves
/// that allocation, but measured CPU-neutral at 128 KiB blocks (zstd
/// re-clears its tables either way); its point is that workers, misses and
/// metadata all compress through this one type.
pub(super) struct BlockCompressor {
    ctx: zstd::bulk::Compressor<'static>,
}

impl BlockCompressor {
    pub(super) fn new(level: u32) -> io::Result<Self> {
        // `validate` keeps the level in 1..=22.
        let level = i32::try_from(level).map_err(io::Error::other)?;
        Ok(BlockCompressor {
            ctx: zstd::bulk::Compressor::new(level)?,
        })
    }

    /// One zstd frame holding `bytes`, with its content size: the same frame
    /// backhand's own zstd writes, and its reader expects.
    pub(super) fn compress(&mut self, bytes: &[u8]) -> io::Result<Vec<u8>> {
        self.ctx.compress(bytes)
    }
}

/// `stored` is a zstd frame whose content is exactly `block`.
fn decompresses_to(stored: &[u8], block: &[u8]) -> bool {
    zstd::bulk::decompress(stored, block.len()).is_ok_and(|d| d == block)
}

/// Compresses with the context in `slot`, creating it on first use.
fn compress_with(
    slot: &mut Option<BlockCompressor>,
    level: u32,
    bytes: &[u8],
) -> io::Result<Vec<u8>> {
    let ctx = match slot {
        Some(c) => c,
        None => slot.insert(BlockCompressor::new(level)?),
    };
    ctx.compress(bytes)
}

/// One block backhand will ask to compress.
pub(super) enum Job {
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
    pub(super) fn bytes(&self) -> &[u8] {
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
pub(super) fn plan_blocks(files: &[Arc<[u8]>], block_size: usize) -> Vec<Job> {
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

/// A finished job, kept for the block cache once backhand has taken the
/// compressed bytes.
pub(super) struct Kept {
    /// sha256 of the job's uncompressed bytes.
    pub key: Sha256,
    /// The compressed bytes when they were made in this run; `None` when
    /// they came from the cache (and are still there).
    pub fresh: Option<Vec<u8>>,
}

pub(super) struct Shared {
    jobs: Vec<Job>,
    level: u32,
    cache: Option<BlockCache>,
    next: AtomicUsize,
    state: Mutex<State>,
    changed: Condvar,
}

struct State {
    results: Vec<Option<Compressed>>,
    /// Per job, what the cache needs to remember it (cache runs only).
    kept: Vec<Option<Kept>>,
    /// Jobs the writer has taken; workers stay within `WINDOW` of it.
    consumed: usize,
    /// Set when the writer is done or a worker died: everyone stops waiting.
    stop: bool,
    cache_hits: usize,
    cache_rejected: usize,
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
        let mut ctx = None;
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
            let (out, kept, from) = self.run_job(&self.jobs[i], &mut ctx);
            let mut st = self.lock();
            st.results[i] = Some(out);
            if let Some(slot) = st.kept.get_mut(i) {
                *slot = kept;
            }
            match from {
                Source::Cache => st.cache_hits += 1,
                Source::Rejected => st.cache_rejected += 1,
                Source::Compressed => {}
            }
            drop(st);
            self.changed.notify_all();
        }
    }

    /// Compresses one job, or takes it from the cache.
    fn run_job(
        &self,
        job: &Job,
        ctx: &mut Option<BlockCompressor>,
    ) -> (Compressed, Option<Kept>, Source) {
        let bytes = job.bytes();
        let compress = |ctx: &mut Option<BlockCompressor>| {
            compress_with(ctx, self.level, bytes).map_err(BackhandError::from)
        };
        let Some(cache) = &self.cache else {
            return (compress(ctx), None, Source::Compressed);
        };
        let key = sha256(bytes);
        let from = match cache.get(&key) {
            // The entry's checksum only proves it is the record that was
            // written; decompressing it proves it holds this block, so a
            // stale or planted record never reaches the image.
            Lookup::Hit(stored) if decompresses_to(stored, bytes) => {
                let kept = Kept { key, fresh: None };
                return (Ok(stored.to_vec()), Some(kept), Source::Cache);
            }
            Lookup::Hit(_) => Source::Rejected,
            Lookup::Absent => Source::Compressed,
            Lookup::Corrupt => Source::Rejected,
        };
        match compress(ctx) {
            Ok(out) => {
                let fresh = Some(out.clone());
                (Ok(out), Some(Kept { key, fresh }), from)
            }
            Err(e) => (Err(e), None, from),
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

    /// The cache this run read from, if any.
    pub(super) fn cache(&self) -> Option<&BlockCache> {
        self.cache.as_ref()
    }

    /// Every job's cache record, in plan order; `None` for a job no worker
    /// finished. Empty unless the run had a cache.
    pub(super) fn take_kept(&self) -> Vec<Option<Kept>> {
        std::mem::take(&mut self.lock().kept)
    }
}

/// Where a job's compressed bytes came from.
enum Source {
    Compressed,
    Cache,
    /// Compressed after the cache's entry failed verification.
    Rejected,
}

/// The writer thread's view: which job comes next.
struct PlanCursor {
    shared: Arc<Shared>,
    next: usize,
    stats: CompressStats,
    /// For blocks compressed on this thread: misses and metadata.
    inline: Option<BlockCompressor>,
}

thread_local! {
    /// Set on the thread running `FilesystemWriter::write` for its duration.
    static PLAN: RefCell<Option<PlanCursor>> = const { RefCell::new(None) };
}

/// zstd for backhand, fed from the precompressed plan when the bytes match.
pub(super) struct Precompressed;
pub(super) static PRECOMPRESSED: Precompressed = Precompressed;

impl CompressionAction for Precompressed {
    type Error = BackhandError;
    type Compressor = Compressor;
    type FilesystemCompressor = FilesystemCompressor;
    type SuperBlock = SuperBlock;

    fn decompress(&self, bytes: &[u8], out: &mut Vec<u8>, c: Compressor) -> Compressed<()> {
        DefaultCompressor.decompress(bytes, out, c)
    }

    fn compress(&self, bytes: &[u8], fc: FilesystemCompressor, block_size: u32) -> Compressed {
        let done = PLAN.with(|plan| {
            let mut plan = plan.borrow_mut();
            let cur = plan.as_mut()?;
            let planned = match cur.shared.jobs.get(cur.next) {
                Some(job) if job.bytes() == bytes => {
                    let got = cur.shared.take(cur.next);
                    cur.next += 1;
                    if got.is_some() {
                        cur.stats.hits += 1;
                    }
                    got
                }
                Some(_) => {
                    cur.stats.misses += 1;
                    None
                }
                // Past the plan: metadata blocks.
                None => None,
            };
            Some(planned.unwrap_or_else(|| {
                compress_with(&mut cur.inline, cur.shared.level, bytes).map_err(Into::into)
            }))
        });
        // Outside a run (never, in this crate) backhand's own zstd does it.
        done.unwrap_or_else(|| DefaultCompressor.compress(bytes, fc, block_size))
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

/// Runs `write` on this thread while `threads` workers compress `jobs` at
/// zstd `level` (or take them from `cache`). Returns what `write` returned,
/// the counters, and the shared state for [`Shared::take_kept`].
pub(super) fn run_precompressed<T>(
    jobs: Vec<Job>,
    cache: Option<BlockCache>,
    level: u32,
    threads: usize,
    write: impl FnOnce() -> T,
) -> (T, CompressStats, Arc<Shared>) {
    let planned = jobs.len();
    let keep = cache.is_some();
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            results: (0..planned).map(|_| None).collect(),
            kept: (0..if keep { planned } else { 0 }).map(|_| None).collect(),
            consumed: 0,
            stop: false,
            cache_hits: 0,
            cache_rejected: 0,
        }),
        jobs,
        level,
        cache,
        next: AtomicUsize::new(0),
        changed: Condvar::new(),
    });
    let (result, mut stats) = std::thread::scope(|scope| {
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
                inline: None,
            })
        });
        let result = write();
        let stats = PLAN
            .with(|p| p.borrow().as_ref().map(|c| c.stats))
            .unwrap_or_default();
        drop(finish);
        (result, stats)
    });
    stats.planned = planned;
    {
        let st = shared.lock();
        stats.cache_hits = st.cache_hits;
        stats.cache_rejected = st.cache_rejected;
    }
    (result, stats, shared)
}
