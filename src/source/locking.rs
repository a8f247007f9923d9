//! `nodeimg lock`: read the signed archive, resolve every image's package
//! closure, and pin the result in a [`Lock`].

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::source::cache::Cache;
use crate::source::debian::packages::{packages_index_path, parse_packages};
use crate::source::debian::release::{verify_inrelease, Release, ReleaseError};
use crate::source::debian::resolve::{resolve, Index, ResolveError};
use crate::source::fetch::{FetchError, Fetcher};
use crate::source::lock::{Inputs, Lock, LockSource, LockedImage, LockedIndex, LockedPackage};
use crate::spec::Plan;
use crate::util::hash;

/// The InRelease file is a few hundred KiB; anything far larger is not one.
const MAX_INRELEASE: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LockingError {
    #[error(
        "images disagree on the Debian source: {a} uses {sa}, {b} uses {sb}; lock them separately"
    )]
    MixedSources {
        a: String,
        sa: String,
        b: String,
        sb: String,
    },
    #[error("cannot read the archive keyring {path}")]
    Keyring {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("fetching InRelease of suite {suite}")]
    FetchRelease {
        suite: String,
        #[source]
        source: FetchError,
    },
    #[error("InRelease of suite {suite} failed verification against {keyring}")]
    Verify {
        suite: String,
        keyring: PathBuf,
        #[source]
        source: Box<ReleaseError>,
    },
    #[error("index {path}")]
    Index {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("resolving the packages of image `{image}` ({spec})")]
    Resolve {
        image: String,
        spec: PathBuf,
        #[source]
        source: Box<ResolveError>,
    },
}

/// Resolves `plans` against the signed index of their (shared) suite.
pub fn lock_images(
    plans: &[Plan],
    tools: &[String],
    fetcher: &Fetcher,
    cache: &Cache,
    keyring: &Path,
) -> Result<Lock, LockingError> {
    let Some(first) = plans.first() else {
        return Ok(Lock::default());
    };
    for p in plans {
        if p.debian != first.debian || p.arch != first.arch {
            return Err(LockingError::MixedSources {
                a: first.name.clone(),
                sa: format!("{:?}/{}", first.debian, first.arch),
                b: p.name.clone(),
                sb: format!("{:?}/{}", p.debian, p.arch),
            });
        }
    }
    let suite = first.debian.suite.clone();
    let keyring_bytes = std::fs::read(keyring).map_err(|e| LockingError::Keyring {
        path: keyring.into(),
        source: e,
    })?;
    tracing::info!(suite, "fetching and verifying InRelease");
    let inrelease = fetcher
        .get(&format!("dists/{suite}/InRelease"), MAX_INRELEASE)
        .map_err(|e| LockingError::FetchRelease {
            suite: suite.clone(),
            source: e,
        })?;
    let release =
        verify_inrelease(&inrelease, &keyring_bytes).map_err(|e| LockingError::Verify {
            suite: suite.clone(),
            keyring: keyring.into(),
            source: Box::new(e),
        })?;
    let mut source = LockSource {
        suite: suite.clone(),
        codename: release.codename.clone(),
        date: release.date.clone(),
        inrelease_sha256: hash::sha256_hex(&inrelease),
        indexes: Vec::new(),
    };
    let mut all = Vec::new();
    for component in &first.debian.components {
        let rel = packages_index_path(component, &first.arch);
        let (pkgs, locked) = fetch_index(fetcher, cache, &release, &suite, &rel)?;
        source.indexes.push(locked);
        all.extend(pkgs);
    }
    let index = Index::new([all]);
    let mut lock = Lock {
        source,
        tools: tools.to_vec(),
        ..Lock::default()
    };
    for name in tools {
        let p =
            only_package(&index, name, &Default::default()).map_err(|e| LockingError::Resolve {
                image: "tools".into(),
                spec: crate::spec::TOOLS_FILE.into(),
                source: Box::new(e),
            })?;
        lock.packages.push(locked_package(&p));
    }
    for plan in plans {
        let inputs = Inputs::from_plan(plan);
        let roots: Vec<String> = inputs.roots.iter().cloned().collect();
        let res = resolve(&index, &roots, &inputs.excludes).map_err(|e| LockingError::Resolve {
            image: plan.name.clone(),
            spec: plan.image_path.clone(),
            source: Box::new(e),
        })?;
        tracing::info!(image = plan.name, packages = res.packages.len(), "resolved");
        for (by, dep) in &res.dropped {
            tracing::debug!(
                image = plan.name,
                by,
                dep,
                "dependency dropped by an exclude"
            );
        }
        let kernel = match &inputs.kernel {
            Some(k) => {
                kernel_packages(&index, k, &inputs.excludes).map_err(|e| LockingError::Resolve {
                    image: plan.name.clone(),
                    spec: plan.image_path.clone(),
                    source: Box::new(e),
                })?
            }
            None => Vec::new(),
        };
        let uefi = match &inputs.uefi {
            Some(u) => vec![only_package(&index, u, &inputs.excludes).map_err(|e| {
                LockingError::Resolve {
                    image: plan.name.clone(),
                    spec: plan.image_path.clone(),
                    source: Box::new(e),
                }
            })?],
            None => Vec::new(),
        };
        lock.images.insert(
            plan.name.clone(),
            LockedImage {
                inputs: inputs.digest(),
                roots,
                excludes: inputs.excludes.iter().cloned().collect(),
                packages: res.packages.iter().map(|p| p.name.clone()).collect(),
                kernel: kernel.iter().map(|p| p.name.clone()).collect(),
                uefi: uefi.iter().map(|p| p.name.clone()).collect(),
            },
        );
        for p in res.packages.iter().chain(&kernel).chain(&uefi) {
            lock.packages.push(locked_package(p));
        }
    }
    Ok(lock)
}

/// The kernel meta-package and the `linux-image-*` packages it pulls in.
/// The kernel's other dependencies (kmod, initramfs-tools, …) exist for
/// its maintainer scripts, which never run: they stay out of the image.
fn kernel_packages(
    index: &Index,
    kernel: &str,
    excludes: &std::collections::BTreeSet<String>,
) -> Result<Vec<crate::source::debian::packages::Package>, ResolveError> {
    let res = resolve(index, &[kernel.to_string()], excludes)?;
    let root = kernel.split([' ', '(', '=']).next().unwrap_or(kernel);
    Ok(res
        .packages
        .into_iter()
        .filter(|p| p.name == root || p.name.starts_with("linux-image-"))
        .collect())
}

fn locked_package(p: &crate::source::debian::packages::Package) -> LockedPackage {
    LockedPackage {
        name: p.name.clone(),
        version: p.version.clone(),
        architecture: p.architecture.clone(),
        filename: p.filename.clone(),
        size: p.size,
        sha256: hex::encode(p.sha256),
        source: p.source.clone(),
        maintainer: p.maintainer.clone(),
    }
}

/// One package without its dependencies: the build reads files from it
/// and installs nothing, so what it depends on at run time never matters.
fn only_package(
    index: &Index,
    name: &str,
    excludes: &std::collections::BTreeSet<String>,
) -> Result<crate::source::debian::packages::Package, ResolveError> {
    let res = resolve(index, &[name.to_string()], excludes)?;
    let root = name.split([' ', '(', '=']).next().unwrap_or(name);
    res.packages
        .into_iter()
        .find(|p| p.name == root)
        .ok_or_else(|| ResolveError::UnknownRoot {
            name: root.to_string(),
            suggestions: Vec::new(),
        })
}

/// Fetches one Packages index by its signed hash (by-hash path when the
/// archive offers it, so a mirror update mid-lock cannot mix versions).
fn fetch_index(
    fetcher: &Fetcher,
    cache: &Cache,
    release: &Release,
    suite: &str,
    rel: &str,
) -> Result<(Vec<crate::source::debian::packages::Package>, LockedIndex), LockingError> {
    let err = |e: Box<dyn std::error::Error + Send + Sync>| LockingError::Index {
        path: rel.to_string(),
        source: e,
    };
    let (size, sha) = release.index_entry(rel).map_err(|e| err(Box::new(e)))?;
    let dir = rel.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    let archive_path = if release.acquire_by_hash {
        format!("dists/{suite}/{dir}/by-hash/SHA256/{}", hex::encode(sha))
    } else {
        format!("dists/{suite}/{rel}")
    };
    tracing::info!(index = rel, size, "fetching index");
    let xz = fetcher
        .cached(cache, &archive_path, size, &sha)
        .map_err(|e| err(Box::new(e)))?;
    let mut text = String::new();
    liblzma::read::XzDecoder::new(&xz[..])
        .read_to_string(&mut text)
        .map_err(|e| err(Box::new(e)))?;
    let pkgs = parse_packages(&text).map_err(|e| err(Box::new(e)))?;
    Ok((
        pkgs,
        LockedIndex {
            path: rel.to_string(),
            size,
            sha256: hex::encode(sha),
        },
    ))
}
