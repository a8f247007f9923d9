//! Downloads from the mirror into the cache, each checked against the hash
//! the lock or the signed index gives before it is stored or used.

use std::time::Duration;

use crate::source::cache::{Cache, CacheError, Lookup};
use crate::source::mirror::{Archive, MirrorError};
use crate::util::hash::Sha256;

/// A client for each archive's mirror (see [`crate::source::mirror`]).
/// Called only when that archive is needed, so a mirror nothing reads
/// from (no `security` pocket, every package cached) is never looked up.
pub type Mirrors<'a> = dyn Fn(Archive) -> Result<Fetcher, MirrorError> + 'a;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("download of {url} failed")]
    Http {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("{url}: got {actual} bytes, expected {expected}")]
    Size {
        url: String,
        expected: u64,
        actual: u64,
    },
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// A blocking HTTP client for one mirror.
pub struct Fetcher {
    agent: ureq::Agent,
    mirror: String,
}

impl Fetcher {
    pub fn new(mirror: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(20)))
            .timeout_global(Some(Duration::from_secs(600)))
            .user_agent(concat!("nodeimg/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Fetcher {
            agent,
            mirror: mirror.trim_end_matches('/').to_string(),
        }
    }

    pub fn url(&self, archive_path: &str) -> String {
        format!("{}/{}", self.mirror, archive_path.trim_start_matches('/'))
    }

    /// GETs `archive_path` (relative to the mirror root) with a size cap.
    pub fn get(&self, archive_path: &str, max_size: u64) -> Result<Vec<u8>, FetchError> {
        let url = self.url(archive_path);
        tracing::debug!(%url, "fetching");
        let http = |e| FetchError::Http {
            url: url.clone(),
            source: Box::new(e),
        };
        let resp = self.agent.get(&url).call().map_err(http)?;
        resp.into_body()
            .into_with_config()
            .limit(max_size)
            .read_to_vec()
            .map_err(http)
    }

    /// Returns the bytes for `sha256`: from the cache when present and
    /// intact, else downloaded, checked, and stored.
    pub fn cached(
        &self,
        cache: &Cache,
        archive_path: &str,
        size: u64,
        sha256: &Sha256,
    ) -> Result<Vec<u8>, FetchError> {
        match cache.get(sha256)? {
            Lookup::Hit(data) => return Ok(data),
            Lookup::Corrupt { path } => {
                tracing::warn!(path = %path.display(), archive_path, "corrupt cache entry removed; fetching again")
            }
            Lookup::Miss => {}
        }
        let data = self.get(archive_path, size)?;
        if data.len() as u64 != size {
            return Err(FetchError::Size {
                url: self.url(archive_path),
                expected: size,
                actual: data.len() as u64,
            });
        }
        cache.put(archive_path, sha256, &data)?;
        Ok(data)
    }
}
