//! The build pipeline: runs the stages in order, each a function from the
//! inputs it reads to a typed result, and hands each stage's result to the
//! next. No stage's own code lives here: the stages call the writers of
//! `rootfs`, `boot`, `fs`, `output` and `sign`.
//!
//! plan + lock -> packages (`source::locked`) -> root tree ([`tree`]) ->
//! boot files ([`boot_files`]: kernel, modules, initramfs) -> root image and
//! dm-verity tree ([`root_image`]) -> bootable outputs ([`bootable`]: UKI,
//! disk, disk formats, PXE bundle) -> SBOM and manifest ([`record`]) ->
//! signature. Every artifact is written under a temporary name and renamed
//! into place; `manifest.json` goes last, so a failed build leaves no
//! manifest behind.

pub mod boot_files;
pub mod bootable;
pub mod record;
pub mod root_image;
pub mod tree;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::fs::squashfs::SquashfsOptions;
use crate::manifest::{Manifest, MANIFEST_FILE};
use crate::progress::Progress;
use crate::rootfs::assemble::{Artifacts, AssembleError};
use crate::rootfs::usrmerge::UsrMergeError;
use crate::sign::authenticode::PeSigner;
use crate::sign::bundle::{sign_manifest, BUNDLE_FILE};
use crate::sign::keys::SigningKey;
use crate::source::cache::Cache;
use crate::source::deb::DebError;
use crate::source::fetch::Mirrors;
use crate::source::lock::{ImagePackages, Lock, LockError};
use crate::source::locked::{fetch_packages, PackageError};
use crate::spec::Plan;
use crate::util::date;

pub use boot_files::{INITRAMFS_FILE, KERNEL_FILE};
pub use record::SBOM_FILE;
pub use root_image::{ROOTFS_FILE, VERITY_FILE};
pub use tree::{WrongPackage, UPDATE_KEY_PATH};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("output directory {path}")]
    Out {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Packages(#[from] PackageError),
    #[error(transparent)]
    Deb(#[from] DebError),
    #[error(transparent)]
    UsrMerge(#[from] UsrMergeError),
    #[error(transparent)]
    Assemble(#[from] AssembleError),
    #[error(transparent)]
    Identity(#[from] WrongPackage),
    #[error(transparent)]
    RootImage(#[from] root_image::RootImageError),
    #[error(transparent)]
    Boot(#[from] boot_files::BootStageError),
    #[error(transparent)]
    Output(#[from] bootable::OutputError),
    #[error(transparent)]
    Record(#[from] record::RecordError),
    #[error("signing the manifest")]
    Sign(#[source] crate::sign::bundle::BundleError),
    #[error("the lock's date `{date}` (suite {suite}) is not a Debian Release date; set SOURCE_DATE_EPOCH")]
    NoEpoch { suite: String, date: String },
    #[error("the lock records no archive source to take a date from; set SOURCE_DATE_EPOCH")]
    NoSource,
}

/// Everything a build reads besides the plan.
pub struct BuildInputs<'a> {
    pub lock: &'a Lock,
    /// Signs the manifest and becomes the image's update trust root.
    pub signing_key: Option<&'a SigningKey>,
    /// Signs systemd-boot and the UKI for Secure Boot (the db key).
    pub pe_signer: Option<&'a PeSigner>,
    pub lock_path: &'a Path,
    pub cache: &'a Cache,
    /// Called only when a package is missing from the cache, for the
    /// archive of the package's suite.
    pub mirrors: &'a Mirrors<'a>,
    /// SOURCE_DATE_EPOCH; else the lock's archive date.
    pub source_date_epoch: Option<u64>,
    pub artifacts: Artifacts,
    pub squashfs: SquashfsOptions,
    pub progress: Progress,
}

/// The plain .debs of each package group, in the lock's order.
pub struct Debs {
    pub rootfs: Vec<Vec<u8>>,
    pub kernel: Vec<Vec<u8>>,
    pub uefi: Vec<Vec<u8>>,
}

/// Builds `plan` into `out`, returning the manifest it wrote.
pub fn build(plan: &Plan, inputs: &BuildInputs, out: &Path) -> Result<Manifest, BuildError> {
    fs::create_dir_all(out).map_err(|source| BuildError::Out {
        path: out.to_path_buf(),
        source,
    })?;
    let epoch = source_date_epoch(inputs)?;
    let mtime = u32::try_from(epoch).unwrap_or(u32::MAX);
    let locked = inputs.lock.packages_for(inputs.lock_path, plan)?;
    // Inputs are valid: from here on a manifest from an earlier build must
    // not outlive the artifacts this build is about to replace.
    // So must a signature over the old manifest.
    remove_files(out, &[MANIFEST_FILE, BUNDLE_FILE, SBOM_FILE])?;

    let debs = fetch(&locked, inputs)?;
    let t = Instant::now();
    let tree::RootTree {
        mut tree,
        copyrights,
    } = tree::assemble_tree(
        plan,
        &locked.rootfs,
        &debs.rootfs,
        &inputs.artifacts,
        inputs.signing_key,
        &inputs.progress,
    )?;
    let boot = match plan.kernel_package {
        Some(_) => Some(boot_files::prepare(
            plan,
            &locked.kernel,
            &debs.kernel,
            inputs.artifacts.get("nodeagent").map(Vec::as_slice),
            &mut tree,
            mtime,
        )?),
        None => None,
    };
    tracing::info!(
        entries = tree.len(),
        bytes = tree.file_bytes(),
        secs = t.elapsed().as_secs_f32(),
        "root tree assembled"
    );

    let squashfs = root_image::squashfs_options(&inputs.squashfs, inputs.cache);
    let verity = root_image::write_root_image(&tree, mtime, &squashfs, out)?;
    let mut artifacts = root_image::artifacts(out)?;
    let booted = match &boot {
        Some(parts) => {
            artifacts.extend(boot_files::write_boot_files(out, parts)?);
            let uefi_deb = locked
                .uefi
                .first()
                .zip(debs.uefi.first())
                .map(|(p, d)| (p.name.as_str(), d.as_slice()));
            let cmdline = boot_files::cmdline(plan, &verity)?;
            let written = bootable::write_outputs(&bootable::OutputInputs {
                plan,
                out,
                source_date_epoch: epoch,
                tree: &tree,
                verity: &verity,
                boot: parts,
                cmdline: &cmdline,
                uefi_deb,
                pe_signer: inputs.pe_signer,
            })?;
            artifacts.extend(written.artifacts);
            Some((boot_files::record(parts, cmdline), written.uefi))
        }
        None => {
            // Boot files of an earlier build would sit unlisted beside this
            // manifest: remove them.
            bootable::remove_unrequested(plan, out)?;
            remove_files(out, &[KERNEL_FILE, INITRAMFS_FILE])?;
            None
        }
    };
    let (boot_record, uefi_record) = booted.unzip();
    let manifest = record::manifest(
        plan,
        &record::BuildFacts {
            lock: inputs.lock,
            inputs: &inputs.artifacts,
            source_date_epoch: epoch,
            images: tree::preloaded_images(&tree),
        },
        &locked,
        artifacts,
        verity,
        boot_record,
        uefi_record.flatten(),
    );
    let manifest = record::write_sbom(manifest, &locked, &copyrights, out)?;
    record::write_manifest(&manifest, out)?;
    if let Some(key) = inputs.signing_key {
        sign_manifest(out, key).map_err(BuildError::Sign)?;
    }
    Ok(manifest)
}

/// SOURCE_DATE_EPOCH as given, else the newest archive date the lock
/// records (a pocket's InRelease is newer than the base suite's, and the
/// packages from it are too).
fn source_date_epoch(inputs: &BuildInputs) -> Result<u64, BuildError> {
    if let Some(e) = inputs.source_date_epoch {
        return Ok(e);
    }
    let mut newest = None;
    for s in &inputs.lock.sources {
        let t = date::parse_release_date(&s.date).ok_or_else(|| BuildError::NoEpoch {
            suite: s.suite.clone(),
            date: s.date.clone(),
        })?;
        newest = newest.max(Some(t));
    }
    newest.ok_or(BuildError::NoSource)
}

/// The plain .debs of every locked package, from the cache or the mirror.
fn fetch(locked: &ImagePackages, inputs: &BuildInputs) -> Result<Debs, BuildError> {
    let t = Instant::now();
    let get = |packages| {
        fetch_packages(
            packages,
            &inputs.lock.sources,
            inputs.cache,
            inputs.mirrors,
            &inputs.progress,
        )
    };
    let debs = Debs {
        rootfs: get(&locked.rootfs)?,
        kernel: get(&locked.kernel)?,
        uefi: get(&locked.uefi)?,
    };
    tracing::info!(
        packages = debs.rootfs.len(),
        secs = t.elapsed().as_secs_f32(),
        "packages ready"
    );
    Ok(debs)
}

/// Removes files of an earlier build; a file that is not there is fine.
fn remove_files(out: &Path, names: &[&str]) -> Result<(), BuildError> {
    for name in names {
        let path = out.join(name);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(BuildError::Out {
                    path: out.to_path_buf(),
                    source: e,
                })
            }
            _ => {}
        }
    }
    Ok(())
}
