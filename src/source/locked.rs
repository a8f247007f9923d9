//! Getting the locked .debs of a build: each one from the derived cache
//! (members already decompressed), else the .deb from the content cache or
//! the mirror, converted and cached. The mirror is contacted only when a
//! package is missing from both caches.

use super::cache::{Cache, Lookup};
use super::deb::{to_plain, DebError};
use super::fetch::{FetchError, Fetcher};
use super::lock::LockedPackage;
use super::mirror::MirrorError;
use crate::progress::Progress;

/// Derived-cache kind of decompressed .debs.
const PLAIN_DEB: &str = "plain-deb-v1";

/// Why a locked package could not be had; each names the package.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
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
}

/// Each locked .deb with its members decompressed (see
/// [`crate::source::deb::to_plain`]), from the cache when an earlier build
/// made it; else the .deb from the cache or the mirror, converted and cached.
pub fn fetch_packages(
    packages: &[&LockedPackage],
    cache: &Cache,
    fetch_from: &dyn Fn() -> Result<Fetcher, MirrorError>,
    progress: &Progress,
) -> Result<Vec<Vec<u8>>, PackageError> {
    let mut fetcher: Option<Fetcher> = None;
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
                let f = match fetcher.take() {
                    Some(f) => f,
                    None => fetch_from().map_err(|e| PackageError::Mirror {
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
