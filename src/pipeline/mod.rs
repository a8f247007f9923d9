//! The build pipeline: runs the stages in order, each a function from the
//! inputs it reads to a typed result, and hands each stage's result to the
//! next. No stage's own code lives here: the stages call the writers of
//! `rootfs`, `boot`, `fs`, `output` and `sign`.
//!
//! plan + lock -> packages (`source::locked`) -> root tree ([`tree`]) and,
//! beside it, boot files ([`boot_files`]: kernel, modules, initramfs; read
//! from [`boot_cache`] when their inputs did not change) -> root image and
//! dm-verity tree ([`root_image`]) -> bootable outputs ([`bootable`]: UKI,
//! disk, disk formats, PXE bundle) -> SBOM and manifest ([`record`]) ->
//! signature. Every artifact is written under a temporary name and renamed
//! into place; `manifest.json` goes last, so a failed build leaves no
//! manifest behind.

pub mod boot_cache;
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
use crate::source::lock::{ImagePackages, Lock, LockError, LockedPackage};
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

/// The plain .debs of each package group, in the lock's order (`kernel`
/// is empty when the boot stage's cache made them unnecessary).
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

    let agent = inputs.artifacts.get("nodeagent").map(Vec::as_slice);
    let (cached, mut debs) = fetch_and_look_up(plan, &locked, inputs, agent, mtime)?;
    let t = Instant::now();
    let uefi_debs = std::mem::take(&mut debs.uefi);
    let (
        tree::RootTree {
            mut tree,
            copyrights,
        },
        boot,
    ) = root_and_boot(plan, &locked, debs, cached, inputs, agent, mtime)?;
    if let Some(parts) = &boot {
        boot_files::add_root_files(&mut tree, parts);
    }
    tracing::info!(
        entries = tree.len(),
        bytes = tree.file_bytes(),
        secs = t.elapsed().as_secs_f32(),
        "root tree assembled"
    );

    let squashfs = root_image::squashfs_options(&inputs.squashfs, inputs.cache);
    let (verity, mut artifacts) = root_image::write_root_image(&tree, mtime, &squashfs, out)?;
    let booted = match &boot {
        Some(parts) => {
            artifacts.extend(boot_files::write_boot_files(out, parts)?);
            let uefi_deb = locked
                .uefi
                .first()
                .zip(uefi_debs.first())
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

/// The root tree (from `debs.rootfs`, each dropped once unpacked) and,
/// beside it, the boot parts: the cache's when its lookup found them, else
/// built from `debs.kernel` and stored. The boot stage reads no tree; its
/// root files join the tree afterwards.
fn root_and_boot(
    plan: &Plan,
    locked: &ImagePackages,
    debs: Debs,
    cached: Option<boot_cache::Lookup>,
    inputs: &BuildInputs,
    agent: Option<&[u8]>,
    mtime: u32,
) -> Result<(tree::RootTree, Option<boot_files::BootParts>), BuildError> {
    let cache = inputs.cache;
    let Debs {
        rootfs: root_debs,
        kernel: kernel_debs,
        ..
    } = debs;
    let (root, boot) = std::thread::scope(|s| {
        let boot = s.spawn(|| match cached {
            None => Ok(None),
            Some(boot_cache::Lookup {
                parts: Some(parts), ..
            }) => Ok(Some(parts)),
            Some(boot_cache::Lookup { key, parts: None }) => {
                let parts = boot_files::prepare(plan, &locked.kernel, &kernel_debs, agent, mtime)?;
                if let Some(key) = &key {
                    boot_cache::store(cache, key, &parts);
                }
                Ok::<_, BuildError>(Some(parts))
            }
        });
        let root = tree::assemble_tree(
            plan,
            &locked.rootfs,
            root_debs,
            &inputs.artifacts,
            inputs.signing_key,
            &inputs.progress,
        );
        let boot = boot.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        (root, boot)
    });
    Ok((root?, boot?))
}

/// The plain .debs of every locked package, from the cache or the mirror,
/// and the boot-parts cache's answer (`None`: the plan names no kernel),
/// looked up beside the fetch. The kernel's .debs are fetched only when
/// the boot stage needs them: its cache missed.
fn fetch_and_look_up(
    plan: &Plan,
    locked: &ImagePackages,
    inputs: &BuildInputs,
    agent: Option<&[u8]>,
    mtime: u32,
) -> Result<(Option<boot_cache::Lookup>, Debs), BuildError> {
    let t = Instant::now();
    let cache = inputs.cache;
    let (cached, rootfs, uefi) = std::thread::scope(|s| {
        let lookup = plan.kernel_package.as_ref().map(|_| {
            s.spawn(|| {
                let builder = boot_cache::builder_identity();
                boot_cache::lookup(cache, builder.as_ref(), plan, &locked.kernel, agent, mtime)
            })
        });
        let rootfs = fetch_group(&locked.rootfs, inputs);
        let uefi = fetch_group(&locked.uefi, inputs);
        let cached = lookup.map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
        (cached, rootfs, uefi)
    });
    let (rootfs, uefi) = (rootfs?, uefi?);
    let boot_missed = cached.as_ref().is_some_and(|c| c.parts.is_none());
    let kernel = if boot_missed {
        fetch_group(&locked.kernel, inputs)?
    } else {
        Vec::new()
    };
    tracing::info!(
        packages = rootfs.len(),
        kernel = boot_missed,
        secs = t.elapsed().as_secs_f32(),
        "packages ready"
    );
    let debs = Debs {
        rootfs,
        kernel,
        uefi,
    };
    Ok((cached, debs))
}

fn fetch_group(
    packages: &[&LockedPackage],
    inputs: &BuildInputs,
) -> Result<Vec<Vec<u8>>, BuildError> {
    Ok(fetch_packages(
        packages,
        &inputs.lock.sources,
        inputs.cache,
        inputs.mirrors,
        &inputs.progress,
    )?)
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
