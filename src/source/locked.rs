//! Getting the locked .debs of a build: each one from the derived cache
//! (members already decompressed), else the .deb from the content cache or
//! the mirror of the archive its suite belongs to (the security archive for
//! `<suite>-security`), converted and cached. A mirror is contacted only
//! when a package it serves is missing from both caches.

use super::cache::{Cache, Lookup};
use super::deb::{to_plain, DebError};
use super::fetch::{FetchError, Fetcher, Mirrors};
use super::lock::{LockSource, LockedPackage};
use super::mirror::{Archive, MirrorError};
use crate::progress::Progress;

/// Derived-cache kind of decompressed .debs.
const PLAIN_DEB: &str = "plain-deb-v1";

/// Why a locked package could not be had; each names the package.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("no mirror to fetch {package} from (suite {suite}; it is not in the cache)")]
    Mirror {
        package: String,
        suite: String,
        #[source]
        source: MirrorError,
    },
    #[error("package {package} {version}: its suite {suite} is not one of the lock's sources")]
    UnknownSuite {
        package: String,
        version: String,
        suite: String,
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
}

/// Each locked .deb with its members decompressed (see
/// [`crate::source::deb::to_plain`]), from the cache when an earlier build
/// made it; else the .deb from the cache or the mirror of its suite's
/// archive (`sources` are the lock's), converted and cached.
pub fn fetch_packages(
    packages: &[&LockedPackage],
    sources: &[LockSource],
    cache: &Cache,
    mirrors: &Mirrors,
    progress: &Progress,
) -> Result<Vec<Vec<u8>>, PackageError> {
    let mut fetchers: Vec<(Archive, Fetcher)> = Vec::new();
    let bar = progress.bar(packages.len() as u64, "fetching");
    let mut out = Vec::with_capacity(packages.len());
    for p in packages {
        let sha = p.sha256_bytes().ok_or_else(|| PackageError::LockedHash {
            package: p.name.clone(),
            version: p.version.clone(),
        })?;
        let fetch_err = |e| PackageError::Fetch {
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
            Lookup::Hit(d) => d,
            _ => {
                let archive = sources
                    .iter()
                    .find(|s| s.suite == p.suite)
                    .map(|s| s.archive)
                    .ok_or_else(|| PackageError::UnknownSuite {
                        package: p.name.clone(),
                        version: p.version.clone(),
                        suite: p.suite.clone(),
                    })?;
                let i = match fetchers.iter().position(|(a, _)| *a == archive) {
                    Some(i) => i,
                    None => {
                        let f = mirrors(archive).map_err(|e| PackageError::Mirror {
                            package: p.name.clone(),
                            suite: p.suite.clone(),
                            source: e,
                        })?;
                        fetchers.push((archive, f));
                        fetchers.len() - 1
                    }
                };
                bar.set_message(p.name.clone());
                fetchers[i]
                    .1
                    .cached(cache, &p.filename, p.size, &sha)
                    .map_err(fetch_err)?
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
