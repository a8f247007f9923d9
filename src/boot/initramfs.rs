//! The initramfs: a compressed cpio `newc` archive holding only the static
//! `nodeagent` as `/init`, `/dev/console`, the mount points the agent uses,
//! the early kernel modules (bytes as Debian shipped them) and
//! [`MODULES_ORDER_PATH`](super::modules::MODULES_ORDER_PATH).
//!
//! Contract: the output is a function of the arguments only. Entries are
//! sorted by path (parents first), inode numbers count up from 1 in that
//! order, owners are 0:0, every mtime is the `mtime` argument
//! (SOURCE_DATE_EPOCH), and the compressors write no time or name. No
//! busybox, no shell, no symlinks.
//!
//! Compression: zstd (level 19) by default. Measured with trixie's 6.12
//! kernel and the root-path modules (already `.ko.xz`, so they barely shrink
//! again), zstd is smaller than gzip -9 and the kernel inflates it faster
//! under TCG; Debian's kernel has `CONFIG_RD_ZSTD=y` and `CONFIG_RD_GZIP=y`.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::sync::Arc;

use super::modules::MODULES_ORDER_PATH;

/// The agent's path in the archive (the kernel runs `/init`).
pub const INIT_PATH: &str = contract::paths::relative(contract::paths::INIT);
/// Empty directories the agent mounts on.
const MOUNT_POINTS: [&str; 4] = ["dev", "proc", "run", "sys"];
const ZSTD_LEVEL: i32 = 19;
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
/// cpio `newc` magic (no CRC).
const NEWC_MAGIC: &[u8] = b"070701";

#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error("initramfs path {path:?} is not a plain relative path")]
    BadPath { path: String },
    #[error("initramfs path {path:?} is given twice or clashes with a built-in entry")]
    Duplicate { path: String },
    #[error("initramfs file {path} is {size} bytes; cpio newc holds at most 4 GiB - 1")]
    TooBig { path: String, size: usize },
    #[error("writing the cpio archive failed")]
    Write {
        #[source]
        source: io::Error,
    },
    #[error("{compression} compression of the initramfs failed")]
    Compress {
        compression: Compression,
        #[source]
        source: io::Error,
    },
    #[error("initramfs is neither zstd, gzip nor plain cpio (starts with {magic})")]
    UnknownFormat { magic: String },
    #[error("reading the cpio archive failed at entry {index}")]
    Read {
        index: usize,
        #[source]
        source: io::Error,
    },
}

/// How the cpio archive is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    Gzip,
    #[default]
    Zstd,
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        })
    }
}

#[derive(Debug, Clone)]
enum Node {
    Dir,
    File { data: Arc<[u8]>, mode: u32 },
    CharDevice { major: u32, minor: u32, mode: u32 },
}

/// Builds the compressed initramfs with the default [`Compression`].
/// `modules` are `(path in the initramfs, bytes)`; `modules_order` is the
/// text for [`MODULES_ORDER_PATH`].
pub fn build(
    agent: &[u8],
    modules: &[(String, Arc<[u8]>)],
    modules_order: &str,
    mtime: u32,
) -> Result<Vec<u8>, InitramfsError> {
    build_with(agent, modules, modules_order, mtime, Compression::default())
}

/// [`build`] with a chosen compression.
pub fn build_with(
    agent: &[u8],
    modules: &[(String, Arc<[u8]>)],
    modules_order: &str,
    mtime: u32,
    compression: Compression,
) -> Result<Vec<u8>, InitramfsError> {
    let cpio = write_cpio(agent, modules, modules_order, mtime, Vec::new())?;
    compress(&cpio, compression)
}

fn layout(
    agent: &[u8],
    modules: &[(String, Arc<[u8]>)],
    modules_order: &str,
) -> Result<BTreeMap<String, Node>, InitramfsError> {
    let mut nodes = BTreeMap::new();
    for dir in MOUNT_POINTS {
        nodes.insert(dir.to_string(), Node::Dir);
    }
    nodes.insert(
        "dev/console".into(),
        Node::CharDevice {
            major: 5,
            minor: 1,
            mode: 0o600,
        },
    );
    nodes.insert(
        INIT_PATH.into(),
        Node::File {
            data: agent.into(),
            mode: 0o755,
        },
    );
    let order = Node::File {
        data: modules_order.as_bytes().into(),
        mode: 0o644,
    };
    let mut files = vec![(MODULES_ORDER_PATH.to_string(), order)];
    for (path, data) in modules {
        files.push((
            path.clone(),
            Node::File {
                data: Arc::clone(data),
                mode: 0o644,
            },
        ));
    }
    for (raw, node) in files {
        insert_node(&mut nodes, &raw, node)?;
    }
    Ok(nodes)
}

/// Adds `node` at `raw` (normalised) and any missing parent directories.
fn insert_node(
    nodes: &mut BTreeMap<String, Node>,
    raw: &str,
    node: Node,
) -> Result<(), InitramfsError> {
    let path = crate::util::path::normalize(raw)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| InitramfsError::BadPath {
            path: raw.to_string(),
        })?;
    let mut end = 0;
    while let Some(pos) = path[end..].find('/') {
        let parent = &path[..end + pos];
        if !matches!(
            nodes.entry(parent.to_string()).or_insert(Node::Dir),
            Node::Dir
        ) {
            return Err(InitramfsError::Duplicate {
                path: parent.to_string(),
            });
        }
        end += pos + 1;
    }
    if nodes.insert(path.clone(), node).is_some() {
        return Err(InitramfsError::Duplicate { path });
    }
    Ok(())
}

/// Writes the uncompressed cpio `newc` archive into `out`.
pub fn write_cpio<W: Write>(
    agent: &[u8],
    modules: &[(String, Arc<[u8]>)],
    modules_order: &str,
    mtime: u32,
    out: W,
) -> Result<W, InitramfsError> {
    let nodes = layout(agent, modules, modules_order)?;
    write_nodes(&nodes, mtime, out)
}

/// A plain cpio `newc` archive of `files` (`(path, bytes)`, mode 0644) and
/// their parent directories, laid out like the initramfs: sorted, inodes
/// from 1, owners 0:0, every mtime `mtime`. The PXE bundle appends one,
/// uncompressed, to the initramfs to carry the root image.
pub fn write_files_cpio<W: Write>(
    files: &[(String, Arc<[u8]>)],
    mtime: u32,
    out: W,
) -> Result<W, InitramfsError> {
    let mut nodes = BTreeMap::new();
    for (path, data) in files {
        let node = Node::File {
            data: Arc::clone(data),
            mode: 0o644,
        };
        insert_node(&mut nodes, path, node)?;
    }
    write_nodes(&nodes, mtime, out)
}

fn write_nodes<W: Write>(
    nodes: &BTreeMap<String, Node>,
    mtime: u32,
    out: W,
) -> Result<W, InitramfsError> {
    let mut out = out;
    for (ino, (path, node)) in (1u32..).zip(nodes) {
        let entry = cpio::NewcBuilder::new(path)
            .ino(ino)
            .uid(0)
            .gid(0)
            .mtime(mtime);
        let (entry, data): (_, &[u8]) = match node {
            Node::Dir => (entry.mode(0o040_755).nlink(2), &[]),
            Node::File { data, mode } => (entry.mode(0o100_000 | mode).nlink(1), data),
            Node::CharDevice { major, minor, mode } => {
                let e = entry.mode(0o020_000 | mode).nlink(1);
                (e.rdev_major(*major).rdev_minor(*minor), &[])
            }
        };
        let size = u32::try_from(data.len()).map_err(|_| InitramfsError::TooBig {
            path: path.clone(),
            size: data.len(),
        })?;
        let mut writer = entry.write(out, size);
        writer
            .write_all(data)
            .map_err(|source| InitramfsError::Write { source })?;
        out = writer
            .finish()
            .map_err(|source| InitramfsError::Write { source })?;
    }
    cpio::newc::trailer(out).map_err(|source| InitramfsError::Write { source })
}

/// Compresses a cpio archive; neither compressor records a time or name.
pub fn compress(cpio: &[u8], compression: Compression) -> Result<Vec<u8>, InitramfsError> {
    let err = |source| InitramfsError::Compress {
        compression,
        source,
    };
    match compression {
        Compression::Zstd => zstd::bulk::compress(cpio, ZSTD_LEVEL).map_err(err),
        Compression::Gzip => {
            let mut gz = flate2::GzBuilder::new()
                .mtime(0)
                .write(Vec::new(), flate2::Compression::best());
            gz.write_all(cpio).map_err(err)?;
            gz.finish().map_err(err)
        }
    }
}

/// Undoes [`compress`] (or passes a plain cpio through), by magic number.
pub fn decompress(initramfs: &[u8]) -> Result<Vec<u8>, InitramfsError> {
    let mut out = Vec::new();
    let (compression, res) = if initramfs.starts_with(ZSTD_MAGIC) {
        let res =
            zstd::stream::read::Decoder::new(initramfs).and_then(|mut d| d.read_to_end(&mut out));
        (Compression::Zstd, res)
    } else if initramfs.starts_with(GZIP_MAGIC) {
        (
            Compression::Gzip,
            flate2::read::GzDecoder::new(initramfs).read_to_end(&mut out),
        )
    } else if initramfs.starts_with(NEWC_MAGIC) {
        return Ok(initramfs.to_vec());
    } else {
        let magic = hex::encode(&initramfs[..initramfs.len().min(6)]);
        return Err(InitramfsError::UnknownFormat { magic });
    };
    res.map_err(|source| InitramfsError::Compress {
        compression,
        source,
    })?;
    Ok(out)
}

/// One entry as read back from an archive (our own reader, for tests and
/// `nodeimg inspect`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveEntry {
    pub name: String,
    pub ino: u32,
    /// Type and permission bits, as in `st_mode`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: u32,
    pub rdev: (u32, u32),
    pub data: Vec<u8>,
}

/// Reads every entry of an uncompressed cpio `newc` archive up to the trailer.
pub fn read_cpio(mut archive: &[u8]) -> Result<Vec<ArchiveEntry>, InitramfsError> {
    let mut entries = Vec::new();
    loop {
        let index = entries.len();
        let err = |source| InitramfsError::Read { index, source };
        let mut reader = cpio::NewcReader::new(archive).map_err(err)?;
        let e = reader.entry().clone();
        if e.is_trailer() {
            return Ok(entries);
        }
        let mut data = Vec::new();
        (&mut reader)
            .take(u64::from(e.file_size()))
            .read_to_end(&mut data)
            .map_err(err)?;
        if data.len() != e.file_size() as usize {
            return Err(err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "truncated file data",
            )));
        }
        archive = reader.finish().map_err(err)?;
        entries.push(ArchiveEntry {
            name: e.name().to_string(),
            ino: e.ino(),
            mode: e.mode(),
            uid: e.uid(),
            gid: e.gid(),
            nlink: e.nlink(),
            mtime: e.mtime(),
            rdev: (e.rdev_major(), e.rdev_minor()),
            data,
        });
    }
}

#[cfg(test)]
#[path = "initramfs_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "initramfs_props.rs"]
mod props;
