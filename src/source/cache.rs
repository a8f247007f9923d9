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

    /// Marks the product of `kind` for `source` as just used, so
    /// [`Cache::prune_derived`] keeps it over older ones. Best effort: a
    /// link that cannot be touched only ages sooner.
    pub fn touch_derived(&self, kind: &str, source: &hash::Sha256) {
        let link = self.derived_link(kind, source);
        let touched = fs::OpenOptions::new()
            .write(true)
            .open(&link)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        if let Err(e) = touched {
            tracing::debug!(path = %link.display(), error = %e, "cannot touch a derived-cache link");
        }
    }

    /// Keeps the `keep` most recently written (or touched) products of
    /// `kind` and removes the others: their links, and their entries unless
    /// a kept link names the same bytes. Returns how many were removed.
    pub fn prune_derived(&self, kind: &str, keep: usize) -> Result<usize, CacheError> {
        let dir = self.root.join("derived");
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CacheError::Io { path, source }
        };
        let read = match fs::read_dir(&dir) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_err(&dir)(e)),
        };
        let prefix = format!("{kind}-");
        let mut links = Vec::new();
        for entry in read {
            let entry = entry.map_err(io_err(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_ours = name
                .strip_prefix(&prefix)
                .is_some_and(|rest| hash::parse_sha256(rest).is_some());
            if !is_ours {
                continue;
            }
            let path = entry.path();
            let modified = match entry.metadata().and_then(|m| m.modified()) {
                Ok(t) => t,
                // Removed by a concurrent prune: nothing left to weigh.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&path)(e)),
            };
            let target = fs::read_to_string(&path)
                .ok()
                .and_then(|t| hash::parse_sha256(t.trim()));
            links.push((modified, name, path, target));
        }
        // Newest first; the name breaks ties so the choice is stable.
        links.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let split = keep.min(links.len());
        let (kept, old) = links.split_at(split);
        for (_, _, link, target) in old {
            remove_if_present(link)?;
            let shared = kept.iter().any(|(_, _, _, t)| t.is_some() && t == target);
            if let (Some(sha), false) = (target, shared) {
                remove_if_present(&self.path_for(sha))?;
            }
        }
        Ok(old.len())
    }

    fn derived_link(&self, kind: &str, source: &hash::Sha256) -> PathBuf {
        self.root
            .join("derived")
            .join(format!("{kind}-{}", hex::encode(source)))
    }
}

/// Removes `path`; one already gone is fine.
fn remove_if_present(path: &Path) -> Result<(), CacheError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(CacheError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
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

    #[test]
    fn prune_keeps_the_most_recently_used_products() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::new(d.path());
        let srcs: Vec<_> = (0u8..4).map(|i| hash::sha256(&[i])).collect();
        let set_age = |src: &hash::Sha256, secs: u64| {
            let link = c.derived_link("parts", src);
            let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs);
            fs::File::options()
                .write(true)
                .open(link)
                .unwrap()
                .set_modified(t)
                .unwrap();
        };
        for (i, src) in srcs.iter().enumerate() {
            c.put_derived("parts", src, format!("product {i}").as_bytes())
                .unwrap();
            set_age(src, 1_000 + i as u64);
        }
        // Another kind is never pruned; a product shared by a kept link
        // keeps its entry.
        c.put_derived("other", &srcs[0], b"product 0").unwrap();
        c.put_derived("parts", &hash::sha256(b"shared"), b"product 3")
            .unwrap();
        set_age(&hash::sha256(b"shared"), 500);
        // Used just now: the oldest write is kept over younger ones.
        c.touch_derived("parts", &srcs[0]);

        assert_eq!(c.prune_derived("parts", 3).unwrap(), 2);
        let has = |src| c.get_derived("parts", src).unwrap().is_some();
        assert!(has(&srcs[0]) && has(&srcs[2]) && has(&srcs[3]));
        assert!(!has(&srcs[1]) && !has(&hash::sha256(b"shared")));
        assert!(!c.path_for(&hash::sha256(b"product 1")).exists());
        assert!(c.path_for(&hash::sha256(b"product 3")).exists());
        assert!(c.get_derived("other", &srcs[0]).unwrap().is_some());
        assert_eq!(c.prune_derived("parts", 3).unwrap(), 0);
    }
}
