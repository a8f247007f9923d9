//! The merged-/usr layout of Debian trixie.
//!
//! In a /usr-merged system `/bin`, `/sbin`, `/lib`, `/lib32`, `/lib64` and
//! `/libx32` are symlinks to their counterparts under `/usr`. Packages may
//! still ship paths under the old top-level directories (and trixie's
//! `base-files` ships the links themselves), so every path that goes into a
//! [`Tree`] is first mapped by [`canonical_path`], and
//! [`add_merged_symlinks`] writes the top-level links once the tree is full.
//!
//! Paths here are tree paths (see [`crate::util::path::normalize`]): relative,
//! `/`-separated, no `.` or `..` components.

use super::tree::{Entry, Kind, Tree};

/// Top-level directories that are symlinks into `usr/` on a merged system.
pub const MERGED_DIRS: [&str; 6] = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// Merged directories whose top-level link is created even when the tree has
/// no counterpart under `usr/` (the counterpart is then created empty).
const ALWAYS_LINKED: [&str; 3] = ["bin", "sbin", "lib"];

/// Errors of [`add_merged_symlinks`].
#[derive(Debug, thiserror::Error)]
pub enum UsrMergeError {
    /// A top-level merged name holds something other than the expected link.
    #[error("top-level {path} is {found}, not a symlink to usr/{path}")]
    Unmerged { path: String, found: String },
}

/// Whether `name` (one path component) is a top-level directory that the
/// merged layout replaces with a symlink into `usr/`.
pub fn is_merged_dir(name: &str) -> bool {
    MERGED_DIRS.contains(&name)
}

/// Maps a tree path to its place in the merged layout: `bin/x` becomes
/// `usr/bin/x`, `lib` becomes `usr/lib`; every other path is unchanged
/// (`binx`, `usr/bin/x`, `etc/lib/x`).
pub fn canonical_path(path: &str) -> String {
    let first = path.split('/').next().unwrap_or_default();
    if is_merged_dir(first) {
        format!("usr/{path}")
    } else {
        path.to_string()
    }
}

/// Whether a symlink target stored at top-level `name` agrees with the merged
/// layout (`usr/bin`, `/usr/bin`, `./usr/bin/` for `bin`).
pub fn is_merged_link_target(name: &str, target: &str) -> bool {
    crate::util::path::normalize(target).is_some_and(|t| t == format!("usr/{name}"))
}

/// Creates the top-level links `bin -> usr/bin`, `sbin -> usr/sbin` and
/// `lib -> usr/lib` (creating an empty `usr/<dir>` when missing), and
/// `lib32`, `lib64`, `libx32` only where `usr/<dir>` exists as a directory.
///
/// A link that is already there with the right target is kept. Anything else
/// at a merged name (a directory, a file, a link elsewhere) is an error: the
/// stages before this one map such paths with [`canonical_path`], so finding
/// one means a stage bypassed it.
pub fn add_merged_symlinks(tree: &mut Tree) -> Result<(), UsrMergeError> {
    for name in MERGED_DIRS {
        let usr = format!("usr/{name}");
        let usr_is_dir = matches!(tree.get(&usr).map(|e| &e.kind), Some(Kind::Dir));
        let always = ALWAYS_LINKED.contains(&name);
        match tree.get(name).map(|e| &e.kind) {
            Some(Kind::Symlink(t)) if is_merged_link_target(name, t) => continue,
            Some(other) => {
                return Err(UsrMergeError::Unmerged {
                    path: name.to_string(),
                    found: describe(other),
                })
            }
            None => {}
        }
        if !usr_is_dir && !always {
            continue;
        }
        if !usr_is_dir {
            if let Some(other) = tree.get(&usr) {
                return Err(UsrMergeError::Unmerged {
                    path: name.to_string(),
                    found: format!("linked to {usr}, which is {}", describe(&other.kind)),
                });
            }
            tree.insert(&usr, Entry::dir(0o755));
        }
        tree.insert(name, Entry::symlink(usr));
    }
    Ok(())
}

fn describe(kind: &Kind) -> String {
    match kind {
        Kind::Dir => "a directory".to_string(),
        Kind::File(_) => "a regular file".to_string(),
        Kind::Symlink(t) => format!("a symlink to {t}"),
        Kind::CharDevice { .. } | Kind::BlockDevice { .. } => "a device node".to_string(),
        Kind::Fifo => "a fifo".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_path_maps_only_merged_top_level_dirs() {
        assert_eq!(canonical_path("bin/sh"), "usr/bin/sh");
        assert_eq!(canonical_path("sbin"), "usr/sbin");
        assert_eq!(
            canonical_path("lib/x86_64-linux-gnu/libc.so.6"),
            "usr/lib/x86_64-linux-gnu/libc.so.6"
        );
        assert_eq!(
            canonical_path("lib64/ld-linux-x86-64.so.2"),
            "usr/lib64/ld-linux-x86-64.so.2"
        );
        assert_eq!(canonical_path("lib32/x"), "usr/lib32/x");
        assert_eq!(canonical_path("binx/y"), "binx/y");
        assert_eq!(canonical_path("library"), "library");
        assert_eq!(canonical_path("etc/lib/x"), "etc/lib/x");
        assert_eq!(canonical_path("usr/bin/x"), "usr/bin/x");
        assert_eq!(canonical_path(""), "");
    }

    #[test]
    fn merged_link_target_accepts_spellings_of_usr_dir() {
        assert!(is_merged_link_target("bin", "usr/bin"));
        assert!(is_merged_link_target("bin", "/usr/bin/"));
        assert!(is_merged_link_target("lib64", "./usr/lib64"));
        assert!(!is_merged_link_target("bin", "usr/sbin"));
        assert!(!is_merged_link_target("bin", "usr"));
        assert!(!is_merged_link_target("bin", "../usr/bin"));
    }

    #[test]
    fn adds_links_for_always_dirs_and_present_ones() {
        let mut t = Tree::new();
        t.insert(
            "usr/lib64/ld-linux-x86-64.so.2",
            Entry::symlink("../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
        );
        t.insert("usr/bin/sh", Entry::file(b"".to_vec(), 0o755));
        add_merged_symlinks(&mut t).expect("merge");
        for name in ["bin", "sbin", "lib", "lib64"] {
            assert_eq!(
                t.get(name),
                Some(&Entry::symlink(format!("usr/{name}"))),
                "{name}"
            );
        }
        assert_eq!(t.get("usr/sbin").map(|e| &e.kind), Some(&Kind::Dir));
        assert!(t.get("lib32").is_none());
        assert!(t.get("libx32").is_none());
        // idempotent
        let before = t.clone();
        add_merged_symlinks(&mut t).expect("second merge");
        assert_eq!(t, before);
    }

    #[test]
    fn rejects_unmerged_top_level_dir_and_wrong_link() {
        let mut t = Tree::new();
        t.insert("bin/sh", Entry::file(b"".to_vec(), 0o755));
        let err = add_merged_symlinks(&mut t).expect_err("bin is a dir");
        assert_eq!(
            err.to_string(),
            "top-level bin is a directory, not a symlink to usr/bin"
        );

        let mut t = Tree::new();
        t.insert("sbin", Entry::symlink("usr/bin"));
        assert!(add_merged_symlinks(&mut t).is_err());
    }
}
