//! The build pipeline: plan + lock -> packages -> root tree -> squashfs +
//! dm-verity -> manifest. Every artifact is written under a temporary name
//! and renamed into place; `manifest.json` goes last, so a failed build
//! leaves no manifest behind.

mod boot_stage;
pub mod outputs;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Seek};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::fs::squashfs::{write_squashfs, SquashfsError, SquashfsOptions};
use crate::fs::verity::{build_hash_tree, salt_for, VerityError, VerityParams};
use crate::progress::Progress;
use crate::rootfs::assemble::{assemble, Artifacts, AssembleError};
use crate::rootfs::usrmerge::{add_merged_symlinks, UsrMergeError};
use crate::rootfs::Tree;
use crate::sign::bundle::{sign_manifest, BUNDLE_FILE};
use crate::sign::keys::SigningKey;
use crate::sign::manifest::{
    Artifact, BootRecord, BuildInfo, InputRecord, Manifest, PackageRecord, VerityRecord,
    MANIFEST_FILE, MANIFEST_SCHEMA,
};
use crate::sign::sbom::{write_sbom, SbomExtras};
use crate::source::cache::Cache;
use crate::source::deb::{to_plain, unpack_into, DebError};
use crate::source::fetch::{FetchError, Fetcher};
use crate::source::lock::{Lock, LockError, LockedPackage};
use crate::source::mirror::MirrorError;
use crate::spec::Plan;
use crate::util::{atomic, date, hash};

pub const ROOTFS_FILE: &str = "rootfs.squashfs";
pub const VERITY_FILE: &str = "rootfs.verity";
pub const KERNEL_FILE: &str = "vmlinuz";
pub const INITRAMFS_FILE: &str = "initramfs.img";
pub const SBOM_FILE: &str = "sbom.spdx.json";
/// Where the image keeps the public key its A/B updates must be signed
/// with (the build's `--sign-key`), PEM.
pub const UPDATE_KEY_PATH: &str = contract::paths::relative(contract::paths::UPDATE_SIGNING_KEY);
/// The workspace lock: the crates nodeagent is built from, for the SBOM.
const AGENT_CARGO_LOCK: &str = include_str!("../../Cargo.lock");
/// Derived-cache kind of decompressed .debs.
const PLAIN_DEB: &str = "plain-deb-v1";

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
    #[error("no mirror to fetch {package} from (it is not in the cache)")]
    Mirror {
        package: String,
        #[source]
        source: MirrorError,
    },
    #[error("package {package} {version}: lock entry has a bad sha256")]
    LockedHash { package: String, version: String },
    #[error("fetching package {package} {version}")]
    Fetch {
        package: String,
        version: String,
        #[source]
        source: FetchError,
    },
    #[error(transparent)]
    Deb(#[from] DebError),
    #[error(transparent)]
    UsrMerge(#[from] UsrMergeError),
    #[error(transparent)]
    Assemble(#[from] AssembleError),
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
    #[error(transparent)]
    Boot(#[from] boot_stage::BootStageError),
    #[error(transparent)]
    Output(#[from] outputs::OutputError),
    #[error("writing the SBOM")]
    Sbom(#[source] crate::sign::sbom::SbomError),
    #[error("signing the manifest")]
    Sign(#[source] crate::sign::bundle::BundleError),
    #[error("package {package} {version}: the cached or fetched .deb is {found}")]
    Identity {
        package: String,
        version: String,
        found: String,
    },
    #[error("writing the manifest")]
    Manifest(#[source] serde_json::Error),
    #[error("the lock's date `{date}` is not a Debian Release date; set SOURCE_DATE_EPOCH")]
    NoEpoch { date: String },
}

/// Everything a build reads besides the plan.
pub struct BuildInputs<'a> {
    pub lock: &'a Lock,
    /// Signs the manifest and becomes the image's update trust root.
    pub signing_key: Option<&'a SigningKey>,
    /// Signs systemd-boot and the UKI for Secure Boot (the db key).
    pub pe_signer: Option<&'a crate::sign::authenticode::PeSigner>,
    pub lock_path: &'a Path,
    pub cache: &'a Cache,
    /// Called only when a package is missing from the cache.
    pub fetcher: &'a dyn Fn() -> Result<Fetcher, MirrorError>,
    /// SOURCE_DATE_EPOCH; else the lock's archive date.
    pub source_date_epoch: Option<u64>,
    pub artifacts: Artifacts,
    pub squashfs: SquashfsOptions,
    pub progress: Progress,
}

/// Builds `plan` into `out`, returning the manifest it wrote.
pub fn build(plan: &Plan, inputs: &BuildInputs, out: &Path) -> Result<Manifest, BuildError> {
    let io_err = |e| BuildError::Out {
        path: out.to_path_buf(),
        source: e,
    };
    fs::create_dir_all(out).map_err(io_err)?;
    let epoch = match inputs.source_date_epoch {
        Some(e) => e,
        None => date::parse_release_date(&inputs.lock.source.date).ok_or_else(|| {
            BuildError::NoEpoch {
                date: inputs.lock.source.date.clone(),
            }
        })?,
    };
    let locked = inputs.lock.packages_for(inputs.lock_path, plan)?;
    let (packages, kernel_packages, uefi_packages) = (locked.rootfs, locked.kernel, locked.uefi);
    // Inputs are valid: from here on a manifest from an earlier build must
    // not outlive the artifacts this build is about to replace.
    // So must a signature over the old manifest.
    for stale in [MANIFEST_FILE, BUNDLE_FILE, SBOM_FILE] {
        match fs::remove_file(out.join(stale)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(e)),
            _ => {}
        }
    }

    let t = Instant::now();
    let debs = fetch_packages(&packages, inputs.cache, inputs.fetcher, &inputs.progress)?;
    let kernel_debs = fetch_packages(
        &kernel_packages,
        inputs.cache,
        inputs.fetcher,
        &inputs.progress,
    )?;
    let uefi_debs = fetch_packages(
        &uefi_packages,
        inputs.cache,
        inputs.fetcher,
        &inputs.progress,
    )?;
    tracing::info!(
        packages = debs.len(),
        secs = t.elapsed().as_secs_f32(),
        "packages ready"
    );

    let t = Instant::now();
    let mut tree = Tree::new();
    let mut owners = BTreeMap::new();
    let bar = inputs.progress.bar(debs.len() as u64, "unpacking");
    for (pkg, bytes) in packages.iter().zip(&debs) {
        bar.set_message(pkg.name.clone());
        let info = unpack_into(&pkg.name, bytes, &mut tree, &mut owners)?;
        check_identity(pkg, &info).map_err(|e| *e)?;
        for c in &info.conflicts {
            tracing::debug!(
                path = c.path,
                package = pkg.name,
                previous = c.previous_owner,
                "file replaced"
            );
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    add_merged_symlinks(&mut tree)?;
    assemble(&mut tree, plan, &inputs.artifacts, &owners)?;
    if let Some(key) = inputs.signing_key {
        // The trust root for A/B updates: the agent accepts an update only
        // when its manifest verifies with this key.
        tree.insert(
            UPDATE_KEY_PATH,
            crate::rootfs::Entry::file(key.public_key().to_pem().into_bytes(), 0o644),
        );
    }
    let mtime = u32::try_from(epoch).unwrap_or(u32::MAX);
    let boot = match plan.kernel_package {
        Some(_) => {
            let named: Vec<(&LockedPackage, &[u8])> = kernel_packages
                .iter()
                .zip(&kernel_debs)
                .map(|(p, d)| (*p, d.as_slice()))
                .collect();
            let agent = inputs.artifacts.get("nodeagent").map(Vec::as_slice);
            Some(boot_stage::prepare(plan, &named, agent, &mut tree, mtime)?)
        }
        None => None,
    };
    tracing::info!(
        entries = tree.len(),
        bytes = tree.file_bytes(),
        secs = t.elapsed().as_secs_f32(),
        "root tree assembled"
    );

    let t = Instant::now();
    let rootfs_tmp = atomic::temp_path(&out.join(ROOTFS_FILE));
    let verity_tmp = atomic::temp_path(&out.join(VERITY_FILE));
    let result = write_images(&tree, mtime, inputs, &rootfs_tmp, &verity_tmp);
    let verity = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = fs::remove_file(&rootfs_tmp);
            let _ = fs::remove_file(&verity_tmp);
            return Err(e);
        }
    };
    atomic::commit(&rootfs_tmp, &out.join(ROOTFS_FILE)).map_err(io_err)?;
    atomic::commit(&verity_tmp, &out.join(VERITY_FILE)).map_err(io_err)?;
    tracing::info!(
        secs = t.elapsed().as_secs_f32(),
        root_hash = verity.root_hash,
        "root image and verity tree written"
    );

    let mut artifacts = vec![
        Artifact::of_file("rootfs", out, ROOTFS_FILE).map_err(io_err)?,
        Artifact::of_file("verity", out, VERITY_FILE).map_err(io_err)?,
    ];
    let mut uefi_record = None;
    let boot_record = match &boot {
        Some(b) => {
            write_artifact(out, KERNEL_FILE, &b.kernel)?;
            write_artifact(out, INITRAMFS_FILE, &b.initramfs)?;
            artifacts.push(Artifact::of_file("kernel", out, KERNEL_FILE).map_err(io_err)?);
            artifacts.push(Artifact::of_file("initramfs", out, INITRAMFS_FILE).map_err(io_err)?);
            let cmdline = boot_stage::cmdline(plan, &verity)?;
            let written = outputs::write_outputs(&outputs::OutputInputs {
                plan,
                out,
                source_date_epoch: epoch,
                tree: &tree,
                verity: &verity,
                root_file: ROOTFS_FILE,
                verity_file: VERITY_FILE,
                kernel: &b.kernel,
                initramfs: &b.initramfs,
                kernel_release: &b.kernel_release,
                cmdline: &cmdline,
                uefi_deb: uefi_packages
                    .first()
                    .zip(uefi_debs.first())
                    .map(|(p, d)| (p.name.as_str(), d.as_slice())),
                pe_signer: inputs.pe_signer,
            })?;
            artifacts.extend(written.artifacts);
            uefi_record = written.uefi;
            Some(BootRecord {
                kernel_version: b.kernel_release.clone(),
                kernel_arch: b.kernel_info.arch.to_string(),
                kernel_signed: b.kernel_info.signed,
                cmdline,
                initramfs_modules: b.initramfs_modules.clone(),
                root_modules: b.root_modules.clone(),
                uefi_modules: b.uefi_modules.clone(),
                deferred_modules: b.deferred_modules.clone(),
            })
        }
        None => {
            // Boot files of an earlier build would sit unlisted beside this
            // manifest: remove them.
            outputs::remove_unrequested(plan, out)?;
            for stale in [KERNEL_FILE, INITRAMFS_FILE] {
                match fs::remove_file(out.join(stale)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(e)),
                    _ => {}
                }
            }
            None
        }
    };
    let manifest = Manifest {
        schema: MANIFEST_SCHEMA,
        name: plan.name.clone(),
        version: plan.version.clone(),
        arch: plan.arch.clone(),
        build: BuildInfo {
            nodeimg_version: env!("CARGO_PKG_VERSION").into(),
            inputs: inputs
                .artifacts
                .iter()
                .map(|(name, data)| InputRecord {
                    name: name.clone(),
                    sha256: hash::sha256_hex(data),
                    size: data.len() as u64,
                })
                .collect(),
            source_date_epoch: epoch,
            lock_checksum: inputs.lock.checksum.clone(),
            debian_suite: plan.debian.suite.clone(),
            layers: plan.layers.clone(),
        },
        artifacts,
        verity,
        boot: boot_record,
        uefi: uefi_record,
        packages: packages
            .iter()
            .map(|p| (p, "rootfs"))
            .chain(kernel_packages.iter().map(|p| (p, "kernel")))
            .chain(uefi_packages.iter().map(|p| (p, "uefi")))
            .map(|(p, role)| PackageRecord {
                name: p.name.clone(),
                version: p.version.clone(),
                sha256: p.sha256.clone(),
                origin: format!("debian:{}/{}", inputs.lock.source.suite, p.filename),
                role: role.into(),
            })
            .collect(),
    };
    // The SBOM describes the manifest's packages and artifacts and is then
    // listed in it, so the signature covers it too.
    let extras = SbomExtras {
        maintainers: packages
            .iter()
            .chain(&kernel_packages)
            .chain(&uefi_packages)
            .filter_map(|p| Some((p.name.clone(), p.maintainer.clone()?)))
            .collect(),
        licenses: BTreeMap::new(),
    };
    let mut sbom = Vec::new();
    write_sbom(&manifest, AGENT_CARGO_LOCK, &extras, &mut sbom).map_err(BuildError::Sbom)?;
    write_artifact(out, SBOM_FILE, &sbom)?;
    let mut manifest = manifest;
    manifest
        .artifacts
        .push(Artifact::of_file("sbom", out, SBOM_FILE).map_err(io_err)?);
    let json = manifest.to_json().map_err(BuildError::Manifest)?;
    atomic::write(&out.join(MANIFEST_FILE), &json).map_err(io_err)?;
    if let Some(key) = inputs.signing_key {
        sign_manifest(out, key).map_err(BuildError::Sign)?;
    }
    Ok(manifest)
}

/// The unpacked package is the one the lock names: guards the derived
/// cache (decompressed .debs are named by the .deb's hash, not checked
/// against it on every read).
fn check_identity(
    locked: &LockedPackage,
    info: &crate::source::deb::DebInfo,
) -> Result<(), Box<BuildError>> {
    if info.package != locked.name || info.version != locked.version {
        return Err(Box::new(BuildError::Identity {
            package: locked.name.clone(),
            version: locked.version.clone(),
            found: format!("{} {}", info.package, info.version),
        }));
    }
    Ok(())
}

fn write_artifact(out: &Path, name: &str, data: &[u8]) -> Result<(), BuildError> {
    let path = out.join(name);
    atomic::write(&path, data).map_err(|e| BuildError::Out { path, source: e })
}

/// Each locked .deb with its members decompressed (see
/// [`crate::source::deb::to_plain`]), from the cache when an earlier build
/// made it; else the .deb from the cache or the mirror, converted and cached.
pub fn fetch_packages(
    packages: &[&LockedPackage],
    cache: &Cache,
    fetch_from: &dyn Fn() -> Result<Fetcher, MirrorError>,
    progress: &Progress,
) -> Result<Vec<Vec<u8>>, BuildError> {
    let mut fetcher: Option<Fetcher> = None;
    let bar = progress.bar(packages.len() as u64, "fetching");
    let mut out = Vec::with_capacity(packages.len());
    for p in packages {
        let sha = p.sha256_bytes().ok_or_else(|| BuildError::LockedHash {
            package: p.name.clone(),
            version: p.version.clone(),
        })?;
        let fetch_err = |e| BuildError::Fetch {
            package: p.name.clone(),
            version: p.version.clone(),
            source: e,
        };
        if let Some(plain) = cache
            .get_derived(PLAIN_DEB, &sha)
            .map_err(|e| fetch_err(e.into()))?
        {
            out.push(plain);
            bar.inc(1);
            continue;
        }
        let data = match cache.get(&sha).map_err(|e| fetch_err(e.into()))? {
            crate::source::cache::Lookup::Hit(d) => d,
            _ => {
                let f = match fetcher.take() {
                    Some(f) => f,
                    None => fetch_from().map_err(|e| BuildError::Mirror {
                        package: p.name.clone(),
                        source: e,
                    })?,
                };
                bar.set_message(p.name.clone());
                let data = f
                    .cached(cache, &p.filename, p.size, &sha)
                    .map_err(fetch_err)?;
                fetcher = Some(f);
                data
            }
        };
        let plain = to_plain(&p.name, &data)?;
        cache
            .put_derived(PLAIN_DEB, &sha, &plain)
            .map_err(|e| fetch_err(e.into()))?;
        out.push(plain);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(out)
}

fn write_images(
    tree: &Tree,
    mtime: u32,
    inputs: &BuildInputs,
    rootfs: &Path,
    verity: &Path,
) -> Result<VerityRecord, BuildError> {
    let io_at = |path: &Path| {
        let path = path.to_path_buf();
        move |e| BuildError::Out {
            path: path.clone(),
            source: e,
        }
    };
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(rootfs)
        .map_err(io_at(rootfs))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    // Compressed blocks of the last build live next to the package cache,
    // so a rebuild recompresses only what changed (same bytes either way).
    let squashfs = SquashfsOptions {
        block_cache: (inputs.squashfs.block_cache.clone())
            .or_else(|| Some(inputs.cache.root().join("squashfs-blocks"))),
        ..inputs.squashfs.clone()
    };
    let info =
        write_squashfs(tree, mtime, &squashfs, &mut w).map_err(|e| BuildError::Squashfs {
            path: rootfs.to_path_buf(),
            source: e,
        })?;
    let mut file = w
        .into_inner()
        .map_err(|e| e.into_error())
        .map_err(io_at(rootfs))?;
    file.sync_all().map_err(io_at(rootfs))?;

    file.rewind().map_err(io_at(rootfs))?;
    let (digest, _) =
        hash::sha256_reader(BufReader::with_capacity(1 << 20, &file)).map_err(io_at(rootfs))?;
    file.rewind().map_err(io_at(rootfs))?;
    let params = VerityParams::new(salt_for(&digest));
    let mut out = BufWriter::with_capacity(1 << 20, File::create(verity).map_err(io_at(verity))?);
    let v = build_hash_tree(
        BufReader::with_capacity(1 << 20, file),
        info.size,
        &params,
        &mut out,
        true,
    )
    .map_err(|e| BuildError::Verity {
        path: verity.to_path_buf(),
        source: e,
    })?;
    out.into_inner()
        .map_err(|e| e.into_error())
        .map_err(io_at(verity))?
        .sync_all()
        .map_err(io_at(verity))?;
    Ok(VerityRecord {
        root_hash: v.root_hash_hex(),
        salt: v.salt.clone(),
        hash_algorithm: v.hash_algorithm.to_string(),
        data_block_size: v.data_block_size,
        hash_block_size: v.hash_block_size,
        data_blocks: v.data_blocks,
        hash_offset: v.hash_offset,
        hash_start_block: v.hash_start_block(),
        uuid: v.uuid.clone(),
    })
}
