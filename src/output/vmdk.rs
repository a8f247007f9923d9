//! The stream-optimised VMDK (VMware "Virtual Disk Format 5.0", section
//! "Stream-Optimized Compressed Sparse Extents"): one sparse extent whose
//! grains are deflated and appended in disk order, each behind a marker, and
//! whose grain tables, grain directory and a footer follow the data.
//!
//! [`write`] takes the raw disk as a reader and writes into `impl Write +
//! Seek`; it never reads the clock, the environment or the file system, and
//! holds one batch of grains in memory, never the disk. The grains of a
//! batch that hold data are deflated on `workers` threads and written in
//! order, so the bytes depend only on the raw disk: not on the worker count,
//! nor on the output's file name (the descriptor names the extent
//! [`EXTENT_NAME`] whatever the file is called).
//!
//! Layout, in 512-byte sectors:
//!
//! | sectors        | content |
//! |----------------|---------|
//! | 0              | sparse extent header; `gdOffset` = [`GD_AT_END`] |
//! | 1 ..= 20       | embedded descriptor, NUL-padded (20 sectors, as qemu) |
//! | 21 .. 128      | zeros: `overHead` is one grain, so data starts grain-aligned (as VMware and VirtualBox write it) |
//! | 128 ..         | each grain holding a non-zero byte: a grain marker (LBA, size) and its zlib stream, padded to a sector; after every 512 grains, unless none of them was written, a grain-table marker and the grain table (4 sectors) |
//! | then           | grain-directory marker and the grain directory |
//! | last 3 sectors | footer marker, footer (the header with the real `gdOffset`), end-of-stream marker |
//!
//! Grains of zeros are holes (grain-table entry 0), and a grain table with
//! no grain at all is not written (grain-directory entry 0), as VMware does;
//! qemu and VirtualBox read both as zeros. The last grain is padded with
//! zeros to a whole grain, as VirtualBox writes it. The descriptor is
//! qemu-img's, but its `CID` (content id) is derived from the content (see
//! [`ContentId`]) rather than random, and it is written last: the writer seeks
//! back to sector 0 once every grain is known.

use std::io::{self, Read, Seek, SeekFrom, Write};

use flate2::{Compress, Compression, Crc};
use ring::digest::{Context, SHA256};

use super::deflate::{deflate_piece, map_in_order};
use super::gpt::SECTOR;

/// `KDMV`: the magic number 0x564d444b, little-endian.
pub const MAGIC: &[u8; 4] = b"KDMV";
/// Version 3: what VMware writes for stream-optimised extents (qemu and
/// VirtualBox too).
pub const VERSION: u32 = 3;
/// Flag bit 0: the newline-detection characters in the header are valid.
pub const FLAG_NL_DETECT: u32 = 1 << 0;
/// Flag bit 16: grains are compressed.
pub const FLAG_COMPRESSED: u32 = 1 << 16;
/// Flag bit 17: markers are used.
pub const FLAG_MARKERS: u32 = 1 << 17;
/// `compressAlgorithm` 1: deflate, as a zlib (RFC 1950) stream per grain.
pub const COMPRESSION_DEFLATE: u16 = 1;
/// `gdOffset` of a header whose real offsets are in the footer.
pub const GD_AT_END: u64 = u64::MAX;
/// Sectors per grain: 64 KiB grains, the default of every writer.
pub const GRAIN_SECTORS: u64 = 128;
/// Bytes per grain.
pub const GRAIN_BYTES: usize = (GRAIN_SECTORS * SECTOR) as usize;
/// Grain-table entries per grain table.
pub const GTES_PER_GT: u64 = 512;
/// Sectors of one grain table (512 entries of 4 bytes).
pub const GT_SECTORS: u64 = GTES_PER_GT * 4 / SECTOR;
/// Sector of the embedded descriptor.
pub const DESCRIPTOR_OFFSET: u64 = 1;
/// Sectors reserved for the embedded descriptor (qemu reads 20).
pub const DESCRIPTOR_SECTORS: u64 = 20;
/// Sectors before the first grain.
pub const OVERHEAD_SECTORS: u64 = GRAIN_SECTORS;
/// The extent's file name in the descriptor. Readers take a monolithic
/// extent's data from the file itself, and OVF imports rename the file
/// anyway; a fixed name keeps the bytes independent of the output's name.
/// It is the name the build gives the file.
pub const EXTENT_NAME: &str = "disk.vmdk";
/// zlib level of the grains: zlib's default, as qemu-img and VirtualBox
/// compress. Fixed, so the output is reproducible.
pub const DEFLATE_LEVEL: u32 = 6;

/// Marker types (the `type` field of a metadata marker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum MarkerType {
    EndOfStream = 0,
    GrainTable = 1,
    GrainDirectory = 2,
    Footer = 3,
}

/// Why [`write`] stopped. The caller, which knows the paths, names them.
#[derive(Debug, thiserror::Error)]
pub enum VmdkError {
    #[error("cannot read the raw disk")]
    Read(#[source] io::Error),
    #[error("the raw disk ended after {read} of {expected} bytes")]
    Short { read: u64, expected: u64 },
    #[error("the raw disk is empty")]
    Empty,
    #[error("cannot deflate the grains at {first_grain}..")]
    Deflate {
        first_grain: u64,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the stream")]
    Write(#[source] io::Error),
    #[error("the vmdk passes 2 TiB at byte {offset}; grain tables hold 32-bit sector numbers")]
    TooLarge { offset: u64 },
}

/// The sparse extent header, also the footer ("Hosted Sparse Extent
/// Header"): 512 bytes, integers little-endian, sizes and offsets in
/// sectors. The magic and the newline-detection characters are implied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseHeader {
    /// 3 for a stream-optimised extent.
    pub version: u32,
    /// [`FLAG_NL_DETECT`] | [`FLAG_COMPRESSED`] | [`FLAG_MARKERS`].
    pub flags: u32,
    /// Virtual size of the extent.
    pub capacity: u64,
    /// Sectors per grain.
    pub grain_size: u64,
    /// Where the embedded descriptor starts (0: none).
    pub descriptor_offset: u64,
    /// Sectors of the embedded descriptor.
    pub descriptor_size: u64,
    /// Entries per grain table.
    pub num_gtes_per_gt: u32,
    /// Redundant grain directory (0: none, as in every stream).
    pub rgd_offset: u64,
    /// Grain directory, or [`GD_AT_END`] when the footer holds it.
    pub gd_offset: u64,
    /// Sectors before the first grain.
    pub overhead: u64,
    /// Set while a writer has the extent open; never set by us.
    pub unclean_shutdown: bool,
    /// [`COMPRESSION_DEFLATE`].
    pub compress_algorithm: u16,
}

/// `singleEndLineChar`, `nonEndLineChar`, `doubleEndLineChar1` and `2` at
/// bytes 73..77: a transfer that rewrote newlines would change them.
const NL_CHECK: [u8; 4] = [b'\n', b' ', b'\r', b'\n'];

impl SparseHeader {
    /// The header of a stream-optimised extent of `capacity` sectors.
    pub fn stream(capacity: u64, gd_offset: u64) -> Self {
        SparseHeader {
            version: VERSION,
            flags: FLAG_NL_DETECT | FLAG_COMPRESSED | FLAG_MARKERS,
            capacity,
            grain_size: GRAIN_SECTORS,
            descriptor_offset: DESCRIPTOR_OFFSET,
            descriptor_size: DESCRIPTOR_SECTORS,
            num_gtes_per_gt: GTES_PER_GT as u32,
            rgd_offset: 0,
            gd_offset,
            overhead: OVERHEAD_SECTORS,
            unclean_shutdown: false,
            compress_algorithm: COMPRESSION_DEFLATE,
        }
    }

    /// The on-disk sector.
    pub fn to_bytes(&self) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[0..4].copy_from_slice(MAGIC);
        b[4..8].copy_from_slice(&self.version.to_le_bytes());
        b[8..12].copy_from_slice(&self.flags.to_le_bytes());
        b[12..20].copy_from_slice(&self.capacity.to_le_bytes());
        b[20..28].copy_from_slice(&self.grain_size.to_le_bytes());
        b[28..36].copy_from_slice(&self.descriptor_offset.to_le_bytes());
        b[36..44].copy_from_slice(&self.descriptor_size.to_le_bytes());
        b[44..48].copy_from_slice(&self.num_gtes_per_gt.to_le_bytes());
        b[48..56].copy_from_slice(&self.rgd_offset.to_le_bytes());
        b[56..64].copy_from_slice(&self.gd_offset.to_le_bytes());
        b[64..72].copy_from_slice(&self.overhead.to_le_bytes());
        b[72] = u8::from(self.unclean_shutdown);
        b[73..77].copy_from_slice(&NL_CHECK);
        b[77..79].copy_from_slice(&self.compress_algorithm.to_le_bytes());
        b
    }

    /// Reads a header; `None` unless the magic and newline checks match.
    pub fn parse(b: &[u8; 512]) -> Option<Self> {
        let u32_at = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let u64_at = |at: usize| u64::from(u32_at(at)) | (u64::from(u32_at(at + 4)) << 32);
        if &b[0..4] != MAGIC || b[73..77] != NL_CHECK {
            return None;
        }
        Some(SparseHeader {
            version: u32_at(4),
            flags: u32_at(8),
            capacity: u64_at(12),
            grain_size: u64_at(20),
            descriptor_offset: u64_at(28),
            descriptor_size: u64_at(36),
            num_gtes_per_gt: u32_at(44),
            rgd_offset: u64_at(48),
            gd_offset: u64_at(56),
            overhead: u64_at(64),
            unclean_shutdown: b[72] != 0,
            compress_algorithm: u16::from_le_bytes([b[77], b[78]]),
        })
    }
}

/// A metadata marker sector: `val` sectors of metadata follow (0 for the
/// end of the stream), `size` 0, then the type.
pub fn marker(val: u64, kind: MarkerType) -> [u8; 512] {
    let mut b = [0u8; 512];
    b[0..8].copy_from_slice(&val.to_le_bytes());
    b[12..16].copy_from_slice(&(kind as u32).to_le_bytes());
    b
}

/// The embedded descriptor: qemu-img's (IDE adapter, 16 heads, 63 sectors,
/// hardware version 4), with our `CID` and the fixed extent name.
pub fn descriptor(cid: u32, capacity: u64) -> String {
    let cylinders = capacity / (16 * 63);
    format!(
        "# Disk DescriptorFile\n\
         version=1\n\
         CID={cid:08x}\n\
         parentCID=ffffffff\n\
         createType=\"streamOptimized\"\n\
         \n\
         # Extent description\n\
         RW {capacity} SPARSE \"{EXTENT_NAME}\"\n\
         \n\
         # The Disk Data Base\n\
         #DDB\n\
         \n\
         ddb.virtualHWVersion = \"4\"\n\
         ddb.geometry.cylinders = \"{cylinders}\"\n\
         ddb.geometry.heads = \"16\"\n\
         ddb.geometry.sectors = \"63\"\n\
         ddb.adapterType = \"ide\"\n\
         ddb.toolsVersion = \"2147483647\"\n"
    )
}

/// The content id of a disk: the first 4 bytes, big-endian, of the SHA-256
/// of its capacity in sectors (u64 LE) followed by the CRC-32 (u32 LE) of
/// each grain, the last one zero-padded. A function of the raw disk's bytes
/// only, and nearly free: the CRCs are taken where the grains are deflated.
pub struct ContentId(Context);

impl ContentId {
    pub fn new(capacity: u64) -> Self {
        let mut ctx = Context::new(&SHA256);
        ctx.update(&capacity.to_le_bytes());
        ContentId(ctx)
    }

    pub fn add_grain(&mut self, crc: u32) {
        self.0.update(&crc.to_le_bytes());
    }

    pub fn finish(self) -> u32 {
        let d = self.0.finish();
        let b = d.as_ref();
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }
}

/// The CRC-32 of a grain's bytes.
pub fn grain_crc(grain: &[u8]) -> u32 {
    let mut crc = Crc::new();
    crc.update(grain);
    crc.sum()
}

/// A data grain after its worker: its CRC and zlib stream.
struct Deflated {
    crc: u32,
    zlib: Vec<u8>,
}

fn is_zero(buf: &[u8]) -> bool {
    // OR-folding fixed blocks vectorises; a byte-wise `all` does not.
    buf.chunks(64)
        .all(|c| c.iter().fold(0u8, |a, b| a | b) == 0)
}

fn deflate_grain(grain: &[u8]) -> io::Result<Deflated> {
    let zlib = deflate_piece(
        Compress::new(Compression::new(DEFLATE_LEVEL), true),
        grain,
        true,
    )?;
    Ok(Deflated {
        crc: grain_crc(grain),
        zlib,
    })
}

/// Data grains per batch: enough per worker that the batches, each a
/// hand-out to the workers and a wait for the last of them, are few (a
/// loaded machine pays a scheduling delay at each); at most 64 MiB of data
/// (and its deflated copy) held at once.
fn batch_grains(workers: usize) -> usize {
    (128 * workers.max(1)).clamp(128, 1024)
}

/// Writes the stream-optimised VMDK of a raw disk of `len` bytes read from
/// `src` into `dst` (positioned at its start), deflating grains on `workers`
/// threads. Returns the descriptor's `CID` (see [`ContentId`]). A raw size
/// that is not a whole number of sectors is padded with zeros to one.
pub fn write<W: Write + Seek>(
    src: &mut dyn Read,
    len: u64,
    dst: &mut W,
    workers: usize,
) -> Result<u32, VmdkError> {
    if len == 0 {
        return Err(VmdkError::Empty);
    }
    let capacity = len.div_ceil(SECTOR);
    let mut out = Sink { dst, pos: 0 };
    // Header, descriptor and the gap before the first grain: written again
    // once the CID is known.
    out.put(&[0u8; (OVERHEAD_SECTORS * SECTOR) as usize])?;
    let (gd, cid) = write_grains(src, len, &mut out, workers)?;

    let gd_sectors = (gd.len() as u64 * 4).div_ceil(SECTOR);
    out.put(&marker(gd_sectors, MarkerType::GrainDirectory))?;
    let gd_offset = u64::from(out.sector()?);
    out.put(&le_words(&gd))?;
    out.pad()?;
    out.put(&marker(1, MarkerType::Footer))?;
    out.put(&SparseHeader::stream(capacity, gd_offset).to_bytes())?;
    out.put(&marker(0, MarkerType::EndOfStream))?;

    let mut front = SparseHeader::stream(capacity, GD_AT_END)
        .to_bytes()
        .to_vec();
    front.extend_from_slice(descriptor(cid, capacity).as_bytes());
    // The descriptor is fixed text and three numbers, far below 20 sectors.
    front.resize(
        ((DESCRIPTOR_OFFSET + DESCRIPTOR_SECTORS) * SECTOR) as usize,
        0,
    );
    let dst = out.dst;
    dst.seek(SeekFrom::Start(0)).map_err(VmdkError::Write)?;
    dst.write_all(&front).map_err(VmdkError::Write)?;
    dst.seek(SeekFrom::End(0)).map_err(VmdkError::Write)?;
    Ok(cid)
}

/// Reads, deflates and writes the grains in batches, each grain table
/// after its 512 grains; returns the grain directory and the CID. A batch
/// is the run of grains holding the next [`batch_grains`] data grains:
/// grains of zeros are found while reading and never reach the workers.
fn write_grains<W: Write>(
    src: &mut dyn Read,
    len: u64,
    out: &mut Sink<'_, W>,
    workers: usize,
) -> Result<(Vec<u32>, u32), VmdkError> {
    let capacity = len.div_ceil(SECTOR);
    let grains = capacity.div_ceil(GRAIN_SECTORS);
    let tables = usize::try_from(grains.div_ceil(GTES_PER_GT))
        .map_err(|_| VmdkError::TooLarge { offset: len })?;
    let mut gd = vec![0u32; tables];
    let mut gt = [0u32; GTES_PER_GT as usize];
    let mut content = ContentId::new(capacity);
    let zero_crc = grain_crc(&[0u8; GRAIN_BYTES]);
    let batch = batch_grains(workers);
    let mut grain = vec![0u8; GRAIN_BYTES];
    let mut data: Vec<u8> = Vec::with_capacity(batch * GRAIN_BYTES);
    let mut is_data: Vec<bool> = Vec::new();
    let mut read = 0u64;
    let mut next = 0u64;
    while next < grains {
        let first = next;
        data.clear();
        is_data.clear();
        while next < grains && data.len() < batch * GRAIN_BYTES {
            let want = (GRAIN_BYTES as u64).min(len - read) as usize;
            let got = read_full(src, &mut grain[..want]).map_err(VmdkError::Read)?;
            read += got as u64;
            if got < want {
                return Err(VmdkError::Short {
                    read,
                    expected: len,
                });
            }
            grain[want..].fill(0);
            let nonzero = !is_zero(&grain);
            if nonzero {
                data.extend_from_slice(&grain);
            }
            is_data.push(nonzero);
            next += 1;
        }
        let items: Vec<&[u8]> = data.chunks(GRAIN_BYTES).collect();
        let deflated =
            map_in_order(&items, workers, |_, g| deflate_grain(g)).map_err(|source| {
                VmdkError::Deflate {
                    first_grain: first,
                    source,
                }
            })?;
        // One result per data grain, in order.
        let mut deflated = deflated.into_iter();
        for (index, &nonzero) in (first..).zip(&is_data) {
            match if nonzero { deflated.next() } else { None } {
                Some(Deflated { crc, zlib }) => {
                    content.add_grain(crc);
                    gt[(index % GTES_PER_GT) as usize] = out.sector()?;
                    out.grain(index * GRAIN_SECTORS, &zlib)?;
                }
                None => content.add_grain(zero_crc),
            }
            let table_done = (index + 1) % GTES_PER_GT == 0 || index + 1 == grains;
            if table_done && gt.iter().any(|&e| e != 0) {
                out.put(&marker(GT_SECTORS, MarkerType::GrainTable))?;
                gd[(index / GTES_PER_GT) as usize] = out.sector()?;
                out.put(&le_words(&gt))?;
            }
            if table_done {
                gt = [0; GTES_PER_GT as usize];
            }
        }
    }
    Ok((gd, content.finish()))
}

/// Little-endian u32s.
fn le_words(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Reads until `buf` is full or the source ends; returns the count.
fn read_full(src: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match src.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The output and the byte count written to it.
struct Sink<'a, W> {
    dst: &'a mut W,
    pos: u64,
}

impl<W: Write> Sink<'_, W> {
    fn put(&mut self, b: &[u8]) -> Result<(), VmdkError> {
        self.dst.write_all(b).map_err(VmdkError::Write)?;
        self.pos += b.len() as u64;
        Ok(())
    }

    /// Zeros up to the next sector boundary.
    fn pad(&mut self) -> Result<(), VmdkError> {
        let rest = self.pos.next_multiple_of(SECTOR) - self.pos;
        self.put(&[0u8; SECTOR as usize][..rest as usize])
    }

    /// The current sector, as a grain table or directory holds it.
    fn sector(&self) -> Result<u32, VmdkError> {
        u32::try_from(self.pos / SECTOR).map_err(|_| VmdkError::TooLarge { offset: self.pos })
    }

    /// A compressed grain: its marker (LBA, size), the zlib stream, padding.
    fn grain(&mut self, lba: u64, zlib: &[u8]) -> Result<(), VmdkError> {
        // A zlib stream of one 64 KiB grain is at most a few bytes over it.
        let size = zlib.len() as u32;
        let mut head = [0u8; 12];
        head[..8].copy_from_slice(&lba.to_le_bytes());
        head[8..].copy_from_slice(&size.to_le_bytes());
        self.put(&head)?;
        self.put(zlib)?;
        self.pad()
    }
}

#[cfg(test)]
#[path = "vmdk_tests.rs"]
pub(crate) mod tests;
