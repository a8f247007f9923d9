//! `nodeimg lock --check`: what locking again would change. Takes the lock
//! on disk and a fresh lock resolved in memory from the current verified
//! indexes, and lists, image by image, each package whose version would
//! change (with the suite the new one comes from), each new dependency and
//! each package no longer needed. Pure: it reads and writes nothing.

use std::collections::BTreeMap;
use std::fmt;

use super::debian::version::compare;
use super::lock::{Lock, LockedPackage};

/// The pseudo-image of the test judges (`tools.toml`).
pub const TOOLS: &str = "tools";

/// A package as one lock pins it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    pub version: String,
    pub suite: String,
}

/// One difference between the lock and a fresh resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// An image name, or [`TOOLS`].
    pub image: String,
    pub package: String,
    /// `None`: a new dependency (a newer version of something needs it).
    pub locked: Option<Pinned>,
    /// `None`: no longer part of the closure.
    pub available: Option<Pinned>,
}

impl Change {
    /// A newer version of a locked package (the usual case).
    pub fn is_newer(&self) -> bool {
        match (&self.locked, &self.available) {
            (Some(l), Some(a)) => compare(&a.version, &l.version).is_gt(),
            _ => false,
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.package;
        match (&self.locked, &self.available) {
            (Some(l), Some(a)) => {
                let what = if self.is_newer() { "" } else { " (older)" };
                write!(
                    f,
                    "{p} {} ({}) -> {} ({}){what}",
                    l.version, l.suite, a.version, a.suite
                )
            }
            (None, Some(a)) => write!(f, "{p} new dependency {} ({})", a.version, a.suite),
            (Some(l), None) => write!(f, "{p} no longer needed ({}, {})", l.version, l.suite),
            (None, None) => write!(f, "{p} unchanged"),
        }
    }
}

/// Every change, image by image (sorted by image, then package), between
/// the packages `locked` pins for each image of `fresh` (and for the tools
/// both know) and those `fresh` pins. A package whose version is the same
/// is no change, whichever suite lists it now.
pub fn changes(locked: &Lock, fresh: &Lock) -> Vec<Change> {
    let mut out = Vec::new();
    for (image, new) in &fresh.images {
        let old = locked.images.get(image);
        let names = |img: &super::lock::LockedImage| {
            img.packages
                .iter()
                .chain(&img.kernel)
                .chain(&img.uefi)
                .cloned()
                .collect::<Vec<_>>()
        };
        let was = pins(locked, &old.map(names).unwrap_or_default());
        let now = pins(fresh, &names(new));
        out.extend(diff(image, &was, &now));
    }
    let tools: Vec<String> = fresh
        .tools
        .iter()
        .filter(|t| locked.tools.contains(t))
        .cloned()
        .collect();
    out.extend(diff(TOOLS, &pins(locked, &tools), &pins(fresh, &tools)));
    out
}

/// Name -> pin of each of `names` that `lock` has a package entry for.
fn pins(lock: &Lock, names: &[String]) -> BTreeMap<String, Pinned> {
    let by_name: BTreeMap<&str, &LockedPackage> =
        lock.packages.iter().map(|p| (p.name.as_str(), p)).collect();
    names
        .iter()
        .filter_map(|n| by_name.get(n.as_str()))
        .map(|p| {
            (
                p.name.clone(),
                Pinned {
                    version: p.version.clone(),
                    suite: p.suite.clone(),
                },
            )
        })
        .collect()
}

fn diff(
    image: &str,
    was: &BTreeMap<String, Pinned>,
    now: &BTreeMap<String, Pinned>,
) -> Vec<Change> {
    let mut names: Vec<&String> = was.keys().chain(now.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            let (l, a) = (was.get(name), now.get(name));
            let same =
                matches!((l, a), (Some(l), Some(a)) if compare(&l.version, &a.version).is_eq());
            (!same).then(|| Change {
                image: image.to_string(),
                package: name.clone(),
                locked: l.cloned(),
                available: a.cloned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::lock::LockedImage;

    fn pkg(name: &str, version: &str, suite: &str) -> LockedPackage {
        LockedPackage {
            name: name.into(),
            version: version.into(),
            suite: suite.into(),
            ..LockedPackage::default()
        }
    }

    fn lock(pkgs: Vec<LockedPackage>, image: &[&str], kernel: &[&str]) -> Lock {
        let names = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        let mut lock = Lock {
            packages: pkgs,
            tools: vec!["cosign".into()],
            ..Lock::default()
        };
        lock.images.insert(
            "worker".into(),
            LockedImage {
                packages: names(image),
                kernel: names(kernel),
                ..LockedImage::default()
            },
        );
        lock
    }

    #[test]
    fn newer_versions_new_and_dropped_dependencies_are_listed_with_their_suite() {
        let old = lock(
            vec![
                pkg("libc6", "2.41-12", "trixie"),
                pkg("openssl", "3.5.1-1", "trixie"),
                pkg("tzdata", "2025b-4", "trixie"),
                pkg("libold", "1", "trixie"),
                pkg("linux-image-amd64", "6.12.48-1", "trixie"),
                pkg("cosign", "2.4.1-1", "trixie"),
            ],
            &["libc6", "openssl", "tzdata", "libold"],
            &["linux-image-amd64"],
        );
        let fresh = lock(
            vec![
                // same version, now listed by another suite: no change
                pkg("libc6", "2.41-12", "trixie-security"),
                pkg("openssl", "3.5.1-1+deb13u1", "trixie-security"),
                pkg("tzdata", "2025b-4+deb13u1", "trixie-updates"),
                pkg("libnew", "2", "trixie-security"),
                pkg("linux-image-amd64", "6.12.57-1", "trixie-security"),
                pkg("cosign", "2.4.1-1", "trixie"),
            ],
            &["libc6", "openssl", "tzdata", "libnew"],
            &["linux-image-amd64"],
        );
        let got: Vec<String> = changes(&old, &fresh)
            .iter()
            .map(|c| format!("{}: {c}", c.image))
            .collect();
        assert_eq!(
            got,
            [
                "worker: libnew new dependency 2 (trixie-security)",
                "worker: libold no longer needed (1, trixie)",
                "worker: linux-image-amd64 6.12.48-1 (trixie) -> 6.12.57-1 (trixie-security)",
                "worker: openssl 3.5.1-1 (trixie) -> 3.5.1-1+deb13u1 (trixie-security)",
                "worker: tzdata 2025b-4 (trixie) -> 2025b-4+deb13u1 (trixie-updates)",
            ]
        );
        assert!(changes(&old, &old).is_empty());
        assert!(changes(&fresh, &fresh).is_empty());
    }

    #[test]
    fn tools_are_checked_and_an_older_version_is_named_as_such() {
        let old = lock(vec![pkg("cosign", "2.4.1-2", "trixie-updates")], &[], &[]);
        let fresh = lock(vec![pkg("cosign", "2.4.1-1", "trixie")], &[], &[]);
        let c = changes(&old, &fresh);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].image, TOOLS);
        assert!(!c[0].is_newer());
        assert_eq!(
            c[0].to_string(),
            "cosign 2.4.1-2 (trixie-updates) -> 2.4.1-1 (trixie) (older)"
        );
    }
}
