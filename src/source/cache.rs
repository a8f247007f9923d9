//! Content-addressed download cache: `<root>/sha256/<hex>`.
//!
//! Every read is hash-checked; an entry whose bytes do not match its name
//! is deleted and reported as missing, so the caller fetches it again and a
//! corrupt entry is never used. Writes go through a temp file and rename.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::util::{atomic, hash};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache directory {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("refusing to cache {what}: its sha256 is {actual}, expected {expected}")]
    Mismatch {
        what: String,
        expected: String,
        actual: String,
    },
}

#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    Hit(Vec<u8>),
    Miss,
    /// The entry existed but its bytes did not match; it has been removed.
    Corrupt {
        path: PathBuf,
    },
}

impl Cache {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Cache { root: root.into() }
    }

    /// `$NODEIMG_CACHE`, else `$XDG_CACHE_HOME/nodeimg`, else `~/.cache/nodeimg`.
    pub fn default_root(explicit: Option<&Path>) -> PathBuf {
        if let Some(p) = explicit {
            return p.to_path_buf();
        }
        let xdg = std::env::var_os("XDG_CACHE_HOME")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);
        let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache"));
        xdg.or(home)
            .unwrap_or_else(|| PathBuf::from(".cache"))
            .join("nodeimg")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path_for(&self, sha256: &hash::Sha256) -> PathBuf {
        self.root.join("sha256").join(hex::encode(sha256))
    }

    pub fn get(&self, sha256: &hash::Sha256) -> Result<Lookup, CacheError> {
        let path = self.path_for(sha256);
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Lookup::Miss),
            Err(e) => return Err(CacheError::Io { path, source: e }),
        };
        if hash::sha256(&data) == *sha256 {
            Ok(Lookup::Hit(data))
        } else {
            tracing::warn!(path = %path.display(), "cache entry does not match its sha256; discarding it");
            fs::remove_file(&path).map_err(|e| CacheError::Io {
                path: path.clone(),
                source: e,
            })?;
            Ok(Lookup::Corrupt { path })
        }
    }

    /// Stores `data` under its sha256 after checking it equals `expected`.
    pub fn put(
        &self,
        what: &str,
        expected: &hash::Sha256,
        data: &[u8],
    ) -> Result<PathBuf, CacheError> {
        let actual = hash::sha256(data);
        if actual != *expected {
            return Err(CacheError::Mismatch {
                what: what.to_string(),
                expected: hex::encode(expected),
                actual: hex::encode(actual),
            });
        }
        let path = self.path_for(expected);
        let dir = self.root.join("sha256");
        fs::create_dir_all(&dir).map_err(|e| CacheError::Io {
            path: dir,
            source: e,
        })?;
        atomic::write(&path, data).map_err(|e| CacheError::Io {
            path: path.clone(),
            source: e,
        })?;
        Ok(path)
    }
}

impl Cache {
    /// A product derived from the entry `source` (e.g. a .deb with its
    /// members decompressed), if cached and intact. The product is stored
    /// content-addressed like any entry; `derived/<kind>-<source>` names it.
    pub fn get_derived(
        &self,
        kind: &str,
        source: &hash::Sha256,
    ) -> Result<Option<Vec<u8>>, CacheError> {
        let link = self.derived_link(kind, source);
        let text = match fs::read_to_string(&link) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(CacheError::Io {
                    path: link,
                    source: e,
                })
            }
        };
        let Some(sha) = hash::parse_sha256(text.trim()) else {
            tracing::warn!(path = %link.display(), "unreadable derived-cache link; rebuilding it");
            return Ok(None);
        };
        match self.get(&sha)? {
            Lookup::Hit(d) => Ok(Some(d)),
            Lookup::Miss | Lookup::Corrupt { .. } => Ok(None),
        }
    }

    pub fn put_derived(
        &self,
        kind: &str,
        source: &hash::Sha256,
        data: &[u8],
    ) -> Result<(), CacheError> {
        let sha = hash::sha256(data);
        self.put(kind, &sha, data)?;
        let link = self.derived_link(kind, source);
        let dir = self.root.join("derived");
        fs::create_dir_all(&dir).map_err(|e| CacheError::Io {
            path: dir,
            source: e,
        })?;
        atomic::write(&link, hex::encode(sha).as_bytes()).map_err(|e| CacheError::Io {
            path: link,
            source: e,
        })
    }

    fn derived_link(&self, kind: &str, source: &hash::Sha256) -> PathBuf {
        self.root
            .join("derived")
            .join(format!("{kind}-{}", hex::encode(source)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_entry_is_discarded_not_used() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::new(d.path());
        let h = hash::sha256(b"deb");
        assert!(matches!(c.get(&h).unwrap(), Lookup::Miss));
        c.put("x.deb", &h, b"deb").unwrap();
        assert!(matches!(c.get(&h).unwrap(), Lookup::Hit(ref v) if v == b"deb"));
        fs::write(c.path_for(&h), b"dEb").unwrap();
        assert!(matches!(c.get(&h).unwrap(), Lookup::Corrupt { .. }));
        assert!(!c.path_for(&h).exists());
        assert!(matches!(
            c.put("x.deb", &h, b"bad").unwrap_err(),
            CacheError::Mismatch { .. }
        ));
    }

    #[test]
    fn derived_entries_are_hash_checked() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::new(d.path());
        let src = hash::sha256(b"deb");
        assert_eq!(c.get_derived("plain", &src).unwrap(), None);
        c.put_derived("plain", &src, b"plain deb").unwrap();
        assert_eq!(
            c.get_derived("plain", &src).unwrap().as_deref(),
            Some(&b"plain deb"[..])
        );
        fs::write(c.path_for(&hash::sha256(b"plain deb")), b"tampered").unwrap();
        assert_eq!(c.get_derived("plain", &src).unwrap(), None);
    }
}
