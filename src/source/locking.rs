//! `nodeimg lock`: read the signed archive (the base suite and the pockets
//! the specs name, each from its archive's mirror), resolve every image's
//! package closure over all of them, and pin the result in a [`Lock`].

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::source::cache::Cache;
use crate::source::debian::packages::{packages_index_path, parse_packages, Package};
use crate::source::debian::release::{verify_inrelease, Release, ReleaseError};
use crate::source::debian::resolve::{resolve, Index, ResolveError};
use crate::source::fetch::{FetchError, Fetcher, Mirrors};
use crate::source::lock::{Inputs, Lock, LockSource, LockedImage, LockedIndex, LockedPackage};
use crate::source::mirror::{Archive, MirrorError};
use crate::spec::{DebianSource, Plan, Pocket};
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
    #[error("no mirror for suite {suite}")]
    Mirror {
        suite: String,
        #[source]
        source: MirrorError,
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
    #[error("InRelease served for suite {suite} is signed for suite `{signed_suite}` (codename `{signed_codename}`); the mirror serves the wrong file")]
    WrongSuite {
        suite: String,
        signed_suite: String,
        signed_codename: String,
    },
    #[error("InRelease of suite {suite} expired at its Valid-Until, {valid_until}: the mirror serves an old copy (stale, or replayed to hold back security fixes); try again later or use another mirror")]
    Expired { suite: String, valid_until: String },
    #[error("InRelease of suite {suite}")]
    Release {
        suite: String,
        #[source]
        source: Box<ReleaseError>,
    },
    #[error("suite {suite}: index {path}")]
    Index {
        suite: String,
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

/// The archive that publishes a suite: the security pocket has its own.
pub fn archive_of(pocket: Option<Pocket>) -> Archive {
    match pocket {
        Some(Pocket::Security) => Archive::Security,
        None | Some(Pocket::Updates) => Archive::Main,
    }
}

/// The verified archive state: one source per suite and every package of
/// them, each marked with its suite.
pub struct ArchiveState {
    pub sources: Vec<LockSource>,
    pub index: Index,
}

/// Resolves `plans` (and `tools`) against the signed indexes of their
/// shared suites.
pub fn lock_images(
    plans: &[Plan],
    tools: &[String],
    mirrors: &Mirrors,
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
    let state = read_archive(&first.debian, &first.arch, mirrors, cache, keyring)?;
    resolve_images(plans, tools, state)
}

/// Fetches and verifies the InRelease of every suite `debian` names (base
/// suite first), then, only once all of them verified, each component's
/// Packages index by its signed hash.
pub fn read_archive(
    debian: &DebianSource,
    arch: &str,
    mirrors: &Mirrors,
    cache: &Cache,
    keyring: &Path,
) -> Result<ArchiveState, LockingError> {
    let keyring_bytes = std::fs::read(keyring).map_err(|e| LockingError::Keyring {
        path: keyring.into(),
        source: e,
    })?;
    let mut fetchers: Vec<(Archive, Fetcher)> = Vec::new();
    let mut releases = Vec::new();
    for (suite, pocket) in debian.suites() {
        let archive = archive_of(pocket);
        let i = match fetchers.iter().position(|(a, _)| *a == archive) {
            Some(i) => i,
            None => {
                let f = mirrors(archive).map_err(|e| LockingError::Mirror {
                    suite: suite.clone(),
                    source: e,
                })?;
                fetchers.push((archive, f));
                fetchers.len() - 1
            }
        };
        let (source, release) =
            read_release(&fetchers[i].1, &suite, archive, &keyring_bytes, keyring)?;
        releases.push((i, source, release));
    }
    let mut sources = Vec::new();
    let mut lists = Vec::new();
    for (i, mut source, release) in releases {
        for component in &debian.components {
            let rel = packages_index_path(component, arch);
            let (mut pkgs, locked) =
                fetch_index(&fetchers[i].1, cache, &release, &source.suite, &rel)?;
            for p in &mut pkgs {
                p.suite = source.suite.clone();
            }
            source.indexes.push(locked);
            lists.push(pkgs);
        }
        sources.push(source);
    }
    // Base suite first: for equal versions its entry is the one kept.
    Ok(ArchiveState {
        sources,
        index: Index::new(lists),
    })
}

/// Fetches `dists/<suite>/InRelease`, verifies it against the keyring and
/// checks that it is signed for `suite` (a validly signed InRelease of
/// another suite must not stand in for it).
fn read_release(
    fetcher: &Fetcher,
    suite: &str,
    archive: Archive,
    keyring_bytes: &[u8],
    keyring: &Path,
) -> Result<(LockSource, Release), LockingError> {
    tracing::info!(suite, %archive, "fetching and verifying InRelease");
    let inrelease = fetcher
        .get(&format!("dists/{suite}/InRelease"), MAX_INRELEASE)
        .map_err(|e| LockingError::FetchRelease {
            suite: suite.to_string(),
            source: e,
        })?;
    let release =
        verify_inrelease(&inrelease, keyring_bytes).map_err(|e| LockingError::Verify {
            suite: suite.to_string(),
            keyring: keyring.into(),
            source: Box::new(e),
        })?;
    if release.suite != suite && release.codename != suite {
        return Err(LockingError::WrongSuite {
            suite: suite.to_string(),
            signed_suite: release.suite.clone(),
            signed_codename: release.codename.clone(),
        });
    }
    // apt's rule: past Valid-Until an index is not trusted, signed or not
    let until = release
        .valid_until_unix()
        .map_err(|e| LockingError::Release {
            suite: suite.to_string(),
            source: Box::new(e),
        })?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if until.is_some_and(|until| now > until) {
        return Err(LockingError::Expired {
            suite: suite.to_string(),
            valid_until: release.valid_until.clone().unwrap_or_default(),
        });
    }
    let source = LockSource {
        suite: suite.to_string(),
        archive,
        codename: release.codename.clone(),
        date: release.date.clone(),
        inrelease_sha256: hash::sha256_hex(&inrelease),
        indexes: Vec::new(),
    };
    Ok((source, release))
}

/// Resolves every plan's closure, the kernel's and UEFI packages, and each
/// tool alone, over `state`'s index.
pub fn resolve_images(
    plans: &[Plan],
    tools: &[String],
    state: ArchiveState,
) -> Result<Lock, LockingError> {
    let index = state.index;
    let mut lock = Lock {
        sources: state.sources,
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
        let resolve_err = |e: ResolveError| LockingError::Resolve {
            image: plan.name.clone(),
            spec: plan.image_path.clone(),
            source: Box::new(e),
        };
        let inputs = Inputs::from_plan(plan);
        let roots: Vec<String> = inputs.roots.iter().cloned().collect();
        let res = resolve(&index, &roots, &inputs.excludes).map_err(resolve_err)?;
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
            Some(k) => kernel_packages(&index, k, &inputs.excludes).map_err(resolve_err)?,
            None => Vec::new(),
        };
        let uefi = match &inputs.uefi {
            Some(u) => vec![only_package(&index, u, &inputs.excludes).map_err(resolve_err)?],
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
) -> Result<Vec<Package>, ResolveError> {
    let res = resolve(index, &[kernel.to_string()], excludes)?;
    let root = kernel.split([' ', '(', '=']).next().unwrap_or(kernel);
    Ok(res
        .packages
        .into_iter()
        .filter(|p| p.name == root || p.name.starts_with("linux-image-"))
        .collect())
}

fn locked_package(p: &Package) -> LockedPackage {
    LockedPackage {
        name: p.name.clone(),
        version: p.version.clone(),
        suite: p.suite.clone(),
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
) -> Result<Package, ResolveError> {
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
) -> Result<(Vec<Package>, LockedIndex), LockingError> {
    let err = |e: Box<dyn std::error::Error + Send + Sync>| LockingError::Index {
        suite: suite.to_string(),
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
    tracing::info!(suite, index = rel, size, "fetching index");
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
