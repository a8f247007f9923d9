//! dm-verity hash tree (format 1, sha256), as `veritysetup format` writes it.
//!
//! Takes the data device's bytes (a `Read` of a known size, a whole number
//! of data blocks), produces the hash device's bytes and the root hash. Never
//! touches a device, never needs root, never reads the clock: the salt is a
//! parameter (see [`salt_for`] for a deterministic one).
//!
//! Format, from cryptsetup `lib/verity/verity_hash.c` and the kernel's
//! `dm-verity-target.c`:
//! - each block's digest is `sha256(salt || block)` (format 1; format 0,
//!   Chrome OS, appends the salt instead);
//! - digests are packed `hash_block_size / 32` to a hash block; the last
//!   block of a level is zero-padded;
//! - level 0 hashes the data blocks, level n+1 the blocks of level n, until a
//!   level fits one block; the root hash is the digest of that block. With a
//!   single data block there are no levels: the root is that block's digest;
//! - the hash device holds the levels top level first; with a superblock,
//!   the 512-byte superblock sits at offset 0 and the tree starts at the next
//!   hash block (offset 4096), which is where `veritysetup` expects it with
//!   `--hash-offset 0` (the default).
//!
//! With the superblock, `veritysetup verify DATA HASH ROOT_HEX` needs no
//! other flag. Without it, pass `--no-superblock --format=1
//! --hash=sha256 --data-block-size=4096 --hash-block-size=4096
//! --data-blocks=N --salt=HEX`. The kernel table is [`VerityInfo::dm_table`].
//!
//! Speed: the salt is hashed once and its state cloned for every block.
//! Level 0 (all but 1/128 of the work) is read on the calling thread while
//! one helper per core hashes what is already read, in 1 MiB jobs; ring's
//! SHA-256 uses the CPU's SHA extensions where it has them.

use std::io::{self, Read, Seek, Write};
use std::sync::{mpsc, Mutex};

use ring::digest::{Context, SHA256};

/// Digest size of sha256; a power of two, so digests need no padding.
const DIGEST: usize = 32;
/// Size of the on-disk verity superblock.
pub const SUPERBLOCK_SIZE: usize = 512;
/// `veritysetup` refuses longer salts.
pub const MAX_SALT: usize = 256;
/// Data bytes per hashing job: big enough that a job costs far more than
/// handing it to a thread, small enough that the cores finish together.
const JOB_BYTES: usize = 1 << 20;
/// Below this much data, threads cost more than they save.
const PARALLEL_MIN: u64 = 4 << 20;

/// Block sizes and salt of one hash tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerityParams {
    pub data_block_size: u32,
    pub hash_block_size: u32,
    pub salt: Vec<u8>,
}

impl VerityParams {
    /// 4096-byte data and hash blocks with `salt`.
    pub fn new(salt: Vec<u8>) -> Self {
        VerityParams {
            data_block_size: 4096,
            hash_block_size: 4096,
            salt,
        }
    }
}

impl Default for VerityParams {
    fn default() -> Self {
        VerityParams::new(Vec::new())
    }
}

/// What the kernel and `veritysetup` need to use the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerityInfo {
    pub root_hash: [u8; 32],
    /// Salt as lower-case hex ("" when empty).
    pub salt: String,
    pub data_blocks: u64,
    /// Where the hash area starts in the hash file: always 0 here (the tree
    /// is its own file or partition). With a superblock, the superblock is
    /// at 0 and the first tree block at `hash_block_size`.
    pub hash_offset: u64,
    pub hash_algorithm: &'static str,
    pub data_block_size: u32,
    pub hash_block_size: u32,
    /// Bytes written to the hash output, superblock included.
    pub hash_size: u64,
    /// The superblock's UUID, when one was written.
    pub uuid: Option<String>,
}

impl VerityInfo {
    pub fn root_hash_hex(&self) -> String {
        hex::encode(self.root_hash)
    }

    /// First tree block on the hash device, in hash blocks (1 after a
    /// superblock): the kernel table's `hash_start_block`.
    pub fn hash_start_block(&self) -> u64 {
        u64::from(self.uuid.is_some())
    }

    /// Size of the data device in 512-byte sectors.
    pub fn data_sectors(&self) -> u64 {
        self.data_blocks * u64::from(self.data_block_size) / 512
    }

    /// A device-mapper table line for `dmsetup create --table` or the
    /// DM_TABLE_LOAD ioctl: `0 SECTORS verity 1 DATA HASH ...`.
    pub fn dm_table(&self, data_dev: &str, hash_dev: &str) -> String {
        let salt = if self.salt.is_empty() {
            "-"
        } else {
            &self.salt
        };
        format!(
            "0 {} verity 1 {data_dev} {hash_dev} {} {} {} {} {} {} {salt}",
            self.data_sectors(),
            self.data_block_size,
            self.hash_block_size,
            self.data_blocks,
            self.hash_start_block(),
            self.hash_algorithm,
            self.root_hash_hex(),
        )
    }
}

/// Why a hash tree could not be built.
#[derive(Debug, thiserror::Error)]
pub enum VerityError {
    #[error("invalid verity {which} block size {size}: want a power of two in 512..=65536")]
    InvalidBlockSize { which: &'static str, size: u32 },
    #[error("verity salt is {len} bytes; at most {MAX_SALT} fit the superblock")]
    SaltTooLong { len: usize },
    #[error(
        "data size {data_size} is not a positive multiple of the {block_size}-byte data block"
    )]
    UnalignedData { data_size: u64, block_size: u32 },
    #[error("cannot read data block {block} of {blocks}")]
    ReadData {
        block: u64,
        blocks: u64,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the verity hash tree")]
    WriteHash {
        #[source]
        source: io::Error,
    },
}

/// A deterministic salt for an image: the first 32 bytes of
/// `sha256("nodeimg verity salt" || data_digest)`, where `data_digest` is
/// normally the image's sha256. Same image, same salt, same root hash.
pub fn salt_for(data_digest: &[u8]) -> Vec<u8> {
    let mut ctx = Context::new(&SHA256);
    ctx.update(b"nodeimg verity salt");
    ctx.update(data_digest);
    ctx.finish().as_ref()[..32].to_vec()
}

/// Hashes `data_size` bytes of `data` and writes the hash device into `out`
/// at its current position: the superblock if `superblock`, then the tree.
/// The whole tree (about 1/128 of the data) is held in memory.
pub fn build_hash_tree<R: Read>(
    mut data: R,
    data_size: u64,
    params: &VerityParams,
    mut out: impl Write + Seek,
    superblock: bool,
) -> Result<VerityInfo, VerityError> {
    validate(data_size, params)?;
    let dbs = params.data_block_size as usize;
    let hbs = params.hash_block_size as usize;
    let data_blocks = data_size / dbs as u64;
    // Every digest starts from the salt: hash it once, clone the state.
    let mut salted = Context::new(&SHA256);
    salted.update(&params.salt);

    // Level 0: digests of the data blocks, padded to whole hash blocks.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut level = vec![0u8; blocks_to_bytes(data_blocks, hbs)];
    let digests = &mut level[..data_blocks as usize * DIGEST];
    if threads < 2 || data_size < PARALLEL_MIN {
        hash_data_serial(&mut data, dbs, &salted, digests)?;
    } else {
        hash_data_parallel(&mut data, dbs, &salted, threads, digests)?;
    }

    // One data block: no tree, the root is that block's digest.
    let mut levels: Vec<Vec<u8>> = Vec::new();
    let root: [u8; 32] = if data_blocks == 1 {
        digest_array(&level)
    } else {
        while level.len() > hbs {
            let mut next = Vec::with_capacity(blocks_to_bytes((level.len() / hbs) as u64, hbs));
            hash_blocks(&salted, &level, hbs, threads, &mut next);
            pad_to(&mut next, hbs);
            levels.push(std::mem::replace(&mut level, next));
        }
        let mut top = salted.clone();
        top.update(&level);
        levels.push(level);
        digest_array(top.finish().as_ref())
    };

    let uuid = superblock.then(|| uuid_from_root(&root));
    let mut hash_size = 0u64;
    let mut put = |bytes: &[u8]| -> Result<(), VerityError> {
        out.write_all(bytes)
            .map_err(|source| VerityError::WriteHash { source })?;
        hash_size += bytes.len() as u64;
        Ok(())
    };
    if let Some(uuid) = &uuid {
        let mut block = vec![0u8; hbs.max(SUPERBLOCK_SIZE)];
        block[..SUPERBLOCK_SIZE].copy_from_slice(&superblock_bytes(params, data_blocks, uuid));
        put(&block)?;
    }
    for level in levels.iter().rev() {
        put(level)?;
    }
    out.flush()
        .map_err(|source| VerityError::WriteHash { source })?;

    Ok(VerityInfo {
        root_hash: root,
        salt: hex::encode(&params.salt),
        data_blocks,
        hash_offset: 0,
        hash_algorithm: "sha256",
        data_block_size: params.data_block_size,
        hash_block_size: params.hash_block_size,
        hash_size,
        uuid: uuid.map(|u| format_uuid(&u)),
    })
}

fn validate(data_size: u64, params: &VerityParams) -> Result<(), VerityError> {
    for (which, size) in [
        ("data", params.data_block_size),
        ("hash", params.hash_block_size),
    ] {
        if !(512..=65536).contains(&size) || !size.is_power_of_two() {
            return Err(VerityError::InvalidBlockSize { which, size });
        }
    }
    if params.salt.len() > MAX_SALT {
        return Err(VerityError::SaltTooLong {
            len: params.salt.len(),
        });
    }
    let block_size = params.data_block_size;
    if data_size == 0 || !data_size.is_multiple_of(u64::from(block_size)) {
        return Err(VerityError::UnalignedData {
            data_size,
            block_size,
        });
    }
    Ok(())
}

/// Bytes of one level holding `blocks` digests, padded to whole hash blocks.
fn blocks_to_bytes(blocks: u64, hbs: usize) -> usize {
    (blocks as usize * DIGEST).div_ceil(hbs) * hbs
}

fn pad_to(level: &mut Vec<u8>, hbs: usize) {
    level.resize(level.len().div_ceil(hbs) * hbs, 0);
}

fn digest_array(bytes: &[u8]) -> [u8; 32] {
    let mut d = [0u8; 32];
    d.copy_from_slice(&bytes[..32]);
    d
}

/// `sha256(salt || block)` of every `block_size` block of `input` into
/// `digests`, 32 bytes each: one clone of the salted state per block.
fn hash_run(salted: &Context, input: &[u8], block_size: usize, digests: &mut [u8]) {
    for (block, d) in input
        .chunks_exact(block_size)
        .zip(digests.chunks_exact_mut(DIGEST))
    {
        let mut ctx = salted.clone();
        ctx.update(block);
        d.copy_from_slice(ctx.finish().as_ref());
    }
}

/// Data blocks per job, and how many of them `digests` asks for.
fn job_shape(block_size: usize, digests: &[u8]) -> (usize, u64) {
    let per_job = (JOB_BYTES / block_size).max(1);
    (per_job, (digests.len() / DIGEST) as u64)
}

/// Level 0 on this thread: read a job's worth of blocks, hash it, repeat.
fn hash_data_serial(
    data: &mut impl Read,
    block_size: usize,
    salted: &Context,
    digests: &mut [u8],
) -> Result<(), VerityError> {
    let (per_job, blocks) = job_shape(block_size, digests);
    let mut buf = vec![0u8; per_job.min(blocks as usize) * block_size];
    for (job, out) in digests.chunks_mut(per_job * DIGEST).enumerate() {
        let input = &mut buf[..out.len() / DIGEST * block_size];
        read_blocks(data, input, (job * per_job) as u64, blocks)?;
        hash_run(salted, input, block_size, out);
    }
    Ok(())
}

/// One job: `len` bytes of data blocks in `buf`, and where their digests go.
struct Job<'a> {
    buf: Vec<u8>,
    len: usize,
    digests: &'a mut [u8],
}

/// The reader's job buffers: up to `most` of `size` bytes, each reused once
/// a helper has hashed it and sent it back.
struct Buffers {
    back: mpsc::Receiver<Vec<u8>>,
    made: usize,
    most: usize,
    size: usize,
}

impl Buffers {
    /// A free buffer, waiting for one if all are in use; `None` if the
    /// helpers are gone.
    fn next(&mut self) -> Option<Vec<u8>> {
        if let Ok(b) = self.back.try_recv() {
            return Some(b);
        }
        if self.made < self.most {
            self.made += 1;
            return Some(vec![0u8; self.size]);
        }
        self.back.recv().ok()
    }
}

/// Level 0 on `threads` helpers: this thread reads jobs (a few buffers
/// ahead of the hashing at most), the helpers hash them as they come, and
/// this thread joins them once the data is read. Reading and hashing
/// overlap, and each job's digests land in their own slice of `digests`.
fn hash_data_parallel(
    data: &mut impl Read,
    block_size: usize,
    salted: &Context,
    threads: usize,
    digests: &mut [u8],
) -> Result<(), VerityError> {
    let (per_job, blocks) = job_shape(block_size, digests);
    let (job_tx, job_rx) = mpsc::channel::<Job<'_>>();
    let job_rx = Mutex::new(job_rx);
    // Hashes jobs until the queue is closed and empty, and sends each
    // buffer `back` if given.
    let work = |back: Option<&mpsc::Sender<Vec<u8>>>| loop {
        // A poisoned lock means a helper panicked; the scope re-raises it.
        let job = match job_rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        hash_run(salted, &job.buf[..job.len], block_size, job.digests);
        if let Some(back) = back {
            // The reader may have stopped (read error): drop the buffer.
            let _ = back.send(job.buf);
        }
    };
    std::thread::scope(|s| {
        let (back_tx, back_rx) = mpsc::channel::<Vec<u8>>();
        for _ in 0..threads {
            let back = back_tx.clone();
            let work = &work;
            s.spawn(move || work(Some(&back)));
        }
        // Only the helpers hold senders now: should they all die, waiting
        // for a buffer fails instead of hanging.
        drop(back_tx);
        let mut buffers = Buffers {
            back: back_rx,
            made: 0,
            most: 2 * threads + 2,
            size: per_job * block_size,
        };
        let mut read = Ok(());
        for (job, out) in digests.chunks_mut(per_job * DIGEST).enumerate() {
            let Some(mut buf) = buffers.next() else { break };
            let len = out.len() / DIGEST * block_size;
            read = read_blocks(data, &mut buf[..len], (job * per_job) as u64, blocks);
            if read.is_err() {
                break;
            }
            let job = Job {
                buf,
                len,
                digests: out,
            };
            if job_tx.send(job).is_err() {
                break;
            }
        }
        drop(job_tx);
        work(None);
        read
    })
}

/// Fills `buf` with whole data blocks, the first of which is `first`.
fn read_blocks(
    data: &mut impl Read,
    buf: &mut [u8],
    first: u64,
    blocks: u64,
) -> Result<(), VerityError> {
    data.read_exact(buf)
        .map_err(|source| VerityError::ReadData {
            block: first,
            blocks,
            source,
        })
}

/// Appends `sha256(salt || block)` of every `block_size` block of `input` to
/// `out`, splitting the work across `threads` (each takes a contiguous run).
fn hash_blocks(
    salted: &Context,
    input: &[u8],
    block_size: usize,
    threads: usize,
    out: &mut Vec<u8>,
) {
    let blocks = input.len() / block_size;
    let start = out.len();
    out.resize(start + blocks * DIGEST, 0);
    let digests = &mut out[start..];
    let run = |input: &[u8], digests: &mut [u8]| hash_run(salted, input, block_size, digests);
    if threads < 2 || (input.len() as u64) < PARALLEL_MIN {
        run(input, digests);
        return;
    }
    let per = blocks.div_ceil(threads);
    std::thread::scope(|s| {
        let mut runs = input
            .chunks(per * block_size)
            .zip(digests.chunks_mut(per * DIGEST));
        let mine = runs.next();
        for (inp, dig) in runs {
            s.spawn(move || run(inp, dig));
        }
        if let Some((inp, dig)) = mine {
            run(inp, dig);
        }
    });
}

/// A version-4-shaped UUID from the root hash's last 16 bytes: the same
/// tree always gets the same UUID.
fn uuid_from_root(root: &[u8; 32]) -> [u8; 16] {
    let mut u = [0u8; 16];
    u.copy_from_slice(&root[16..]);
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}

fn format_uuid(u: &[u8; 16]) -> String {
    let h = hex::encode(u);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// `struct verity_sb` of cryptsetup `lib/verity/verity.c`, little-endian:
/// signature "verity\0\0", version 1, hash_type 1, uuid[16],
/// algorithm[32], data_block_size, hash_block_size, data_blocks (u64),
/// salt_size (u16), pad[6], salt[256], pad[168].
fn superblock_bytes(params: &VerityParams, data_blocks: u64, uuid: &[u8; 16]) -> [u8; 512] {
    let mut sb = [0u8; SUPERBLOCK_SIZE];
    sb[0..8].copy_from_slice(b"verity\0\0");
    sb[8..12].copy_from_slice(&1u32.to_le_bytes());
    sb[12..16].copy_from_slice(&1u32.to_le_bytes());
    sb[16..32].copy_from_slice(uuid);
    sb[32..38].copy_from_slice(b"sha256");
    sb[64..68].copy_from_slice(&params.data_block_size.to_le_bytes());
    sb[68..72].copy_from_slice(&params.hash_block_size.to_le_bytes());
    sb[72..80].copy_from_slice(&data_blocks.to_le_bytes());
    // validate() caps the salt at 256 bytes.
    sb[80..82].copy_from_slice(&(params.salt.len() as u16).to_le_bytes());
    sb[88..88 + params.salt.len()].copy_from_slice(&params.salt);
    sb
}

#[cfg(test)]
#[path = "verity_tests.rs"]
mod tests;
