//! Stages: the root image (squashfs) and its dm-verity hash tree, written
//! to temporary names in the output directory and committed together, so
//! a failure leaves neither half-written.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Seek};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::fs::squashfs::{write_squashfs, SquashfsError, SquashfsOptions};
use crate::fs::verity::{build_hash_tree, salt_for, VerityError, VerityParams};
use crate::manifest::{Artifact, VerityRecord};
use crate::rootfs::Tree;
use crate::source::cache::Cache;
use crate::util::{atomic, hash};

pub const ROOTFS_FILE: &str = "rootfs.squashfs";
pub const VERITY_FILE: &str = "rootfs.verity";

/// Errors of the root image stages; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum RootImageError {
    #[error("output directory {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the root image {path}")]
    Squashfs {
        path: PathBuf,
        #[source]
        source: SquashfsError,
    },
    #[error("writing the verity hash tree {path}")]
    Verity {
        path: PathBuf,
        #[source]
        source: VerityError,
    },
}

fn io_at(path: &Path) -> impl Fn(std::io::Error) -> RootImageError {
    let path = path.to_path_buf();
    move |source| RootImageError::Io {
        path: path.clone(),
        source,
    }
}

/// The squashfs options of a build: compressed blocks of the last build
/// live next to the package cache, so a rebuild recompresses only what
/// changed (same bytes either way).
pub fn squashfs_options(given: &SquashfsOptions, cache: &Cache) -> SquashfsOptions {
    SquashfsOptions {
        block_cache: (given.block_cache.clone())
            .or_else(|| Some(cache.root().join("squashfs-blocks"))),
        ..given.clone()
    }
}

/// Writes `out/rootfs.squashfs` and `out/rootfs.verity` from `tree`;
/// returns the verity record the command line and the manifest carry, and
/// the manifest's entries for the two files.
pub fn write_root_image(
    tree: &Tree,
    mtime: u32,
    squashfs: &SquashfsOptions,
    out: &Path,
) -> Result<(VerityRecord, Vec<Artifact>), RootImageError> {
    let t = Instant::now();
    let rootfs_tmp = atomic::temp_path(&out.join(ROOTFS_FILE));
    let verity_tmp = atomic::temp_path(&out.join(VERITY_FILE));
    let result = write_squashfs_file(tree, mtime, squashfs, &rootfs_tmp)
        .and_then(|(file, size)| write_verity_file(file, &rootfs_tmp, size, &verity_tmp));
    let (verity, rootfs_sha256, rootfs_size) = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = fs::remove_file(&rootfs_tmp);
            let _ = fs::remove_file(&verity_tmp);
            return Err(e);
        }
    };
    let out_err = io_at(out);
    atomic::commit(&rootfs_tmp, &out.join(ROOTFS_FILE)).map_err(&out_err)?;
    atomic::commit(&verity_tmp, &out.join(VERITY_FILE)).map_err(&out_err)?;
    // The image was read back from its file for the salt's sha256: the
    // manifest takes its entry from there rather than reading it again.
    let artifacts = vec![
        Artifact {
            kind: "rootfs".into(),
            path: ROOTFS_FILE.into(),
            sha256: hex::encode(rootfs_sha256),
            size: rootfs_size,
        },
        Artifact::of_file("verity", out, VERITY_FILE).map_err(&out_err)?,
    ];
    tracing::info!(
        secs = t.elapsed().as_secs_f32(),
        root_hash = verity.root_hash,
        "root image and verity tree written"
    );
    Ok((verity, artifacts))
}

/// The squashfs at `path`, synced; returns the open file and the image size.
fn write_squashfs_file(
    tree: &Tree,
    mtime: u32,
    squashfs: &SquashfsOptions,
    path: &Path,
) -> Result<(File, u64), RootImageError> {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(io_at(path))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let info =
        write_squashfs(tree, mtime, squashfs, &mut w).map_err(|e| RootImageError::Squashfs {
            path: path.to_path_buf(),
            source: e,
        })?;
    let file = w
        .into_inner()
        .map_err(|e| e.into_error())
        .map_err(io_at(path))?;
    file.sync_all().map_err(io_at(path))?;
    Ok((file, info.size))
}

/// The dm-verity hash tree of the `size`-byte image in `root` (at
/// `root_path`; salted by the image's own sha256), written to `path`.
/// Returns the record, and the sha256 and length of the file as read back.
fn write_verity_file(
    mut root: File,
    root_path: &Path,
    size: u64,
    path: &Path,
) -> Result<(VerityRecord, hash::Sha256, u64), RootImageError> {
    root.rewind().map_err(io_at(root_path))?;
    let (digest, read) =
        hash::sha256_reader(BufReader::with_capacity(1 << 20, &root)).map_err(io_at(root_path))?;
    root.rewind().map_err(io_at(root_path))?;
    let params = VerityParams::new(salt_for(&digest));
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path).map_err(io_at(path))?);
    let v = build_hash_tree(
        BufReader::with_capacity(1 << 20, root),
        size,
        &params,
        &mut out,
        true,
    )
    .map_err(|e| RootImageError::Verity {
        path: path.to_path_buf(),
        source: e,
    })?;
    out.into_inner()
        .map_err(|e| e.into_error())
        .map_err(io_at(path))?
        .sync_all()
        .map_err(io_at(path))?;
    let record = VerityRecord {
        root_hash: v.root_hash_hex(),
        salt: v.salt.clone(),
        hash_algorithm: v.hash_algorithm.to_string(),
        data_block_size: v.data_block_size,
        hash_block_size: v.hash_block_size,
        data_blocks: v.data_blocks,
        hash_offset: v.hash_offset,
        hash_start_block: v.hash_start_block(),
        uuid: v.uuid.clone(),
    };
    Ok((record, digest, read))
}
