//! The in-memory root file system tree: what `.deb` extraction and layers
//! produce, and what the file system writers consume.
//!
//! Paths are relative to the root, `/`-separated, with no leading `/`, no
//! `.` or `..` components and no trailing slash (the root itself is `""`).
//! A `BTreeMap` keeps entries sorted, so every walk is deterministic.

use std::collections::BTreeMap;
use std::sync::Arc;

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    /// File contents, shared so that hard links and copies cost nothing.
    File(Arc<[u8]>),
    /// Symlink target exactly as stored (relative or absolute inside the image).
    Symlink(String),
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
}

/// One node of the tree with normalised metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// Permission bits and setuid/setgid/sticky (`0o7777` mask), no type bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Entry {
    pub fn dir(mode: u32) -> Self {
        Entry {
            kind: Kind::Dir,
            mode,
            uid: 0,
            gid: 0,
        }
    }
    pub fn file(data: impl Into<Arc<[u8]>>, mode: u32) -> Self {
        Entry {
            kind: Kind::File(data.into()),
            mode,
            uid: 0,
            gid: 0,
        }
    }
    pub fn symlink(target: impl Into<String>) -> Self {
        Entry {
            kind: Kind::Symlink(target.into()),
            mode: 0o777,
            uid: 0,
            gid: 0,
        }
    }
}

/// A whole root file system. Every ancestor of an entry exists as a `Dir`
/// (`insert` creates missing ones with mode 0755, root-owned).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    entries: BTreeMap<String, Entry>,
}

impl Tree {
    pub fn new() -> Self {
        let mut entries = BTreeMap::new();
        entries.insert(String::new(), Entry::dir(0o755));
        Tree { entries }
    }

    /// Inserts or replaces `path`, creating missing parent directories.
    /// The caller has already normalised `path` (see
    /// [`crate::util::path::normalize`]).
    pub fn insert(&mut self, path: &str, entry: Entry) {
        let mut end = 0;
        while let Some(pos) = path[end..].find('/') {
            let parent = &path[..end + pos];
            self.entries
                .entry(parent.to_string())
                .or_insert_with(|| Entry::dir(0o755));
            end += pos + 1;
        }
        self.entries
            .entry(String::new())
            .or_insert_with(|| Entry::dir(0o755));
        self.entries.insert(path.to_string(), entry);
    }

    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(path)
    }

    pub fn get_mut(&mut self, path: &str) -> Option<&mut Entry> {
        self.entries.get_mut(path)
    }

    /// Removes `path` and everything below it; returns how many entries went.
    pub fn remove_all(&mut self, path: &str) -> usize {
        let prefix = format!("{path}/");
        let below: Vec<String> = self
            .entries
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        let mut n = below.len();
        for k in below {
            self.entries.remove(&k);
        }
        if !path.is_empty() && self.entries.remove(path).is_some() {
            n += 1;
        }
        n
    }

    /// Entries in sorted path order (parents before children).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.len() <= 1
    }

    /// Total bytes of regular file contents.
    pub fn file_bytes(&self) -> u64 {
        self.entries
            .values()
            .map(|e| match &e.kind {
                Kind::File(d) => d.len() as u64,
                _ => 0,
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_creates_parents_in_sorted_order() {
        let mut t = Tree::new();
        t.insert("usr/bin/x", Entry::file(b"hi".to_vec(), 0o755));
        let paths: Vec<&str> = t.iter().map(|(p, _)| p).collect();
        assert_eq!(paths, ["", "usr", "usr/bin", "usr/bin/x"]);
    }

    #[test]
    fn remove_all_removes_subtree_only() {
        let mut t = Tree::new();
        t.insert("usr/share/doc/a", Entry::file(b"a".to_vec(), 0o644));
        t.insert("usr/share/doc-base", Entry::file(b"b".to_vec(), 0o644));
        assert_eq!(t.remove_all("usr/share/doc"), 2);
        assert!(t.get("usr/share/doc-base").is_some());
    }
}
