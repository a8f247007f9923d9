//! `nodeimg.lock`: every .deb an image uses, pinned by name, version,
//! archive path, size and sha256, plus what it was resolved from.
//!
//! The lock carries a checksum over its own content so that a hand edit or
//! a damaged file is caught before anything is fetched. Images record the
//! hash of their resolution inputs (suite, components, roots, excludes);
//! `nodeimg build` refuses a lock whose inputs differ from the specs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::spec::Plan;
use crate::util::{atomic, hash};

pub const LOCK_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot read lock {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write lock {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(
        "{path}: version {found} is not supported (expected {LOCK_VERSION}); run `nodeimg lock`"
    )]
    Version { path: PathBuf, found: u32 },
    #[error("{path}: the archive moved since it was written (InRelease sha256 {was}, now {now}); lock every image together (`nodeimg lock` without image arguments) so they resolve against one archive state; nothing written")]
    ArchiveMoved {
        path: PathBuf,
        was: String,
        now: String,
    },
    #[error("{path}: content checksum mismatch (edited by hand or damaged); run `nodeimg lock` to regenerate it")]
    Checksum { path: PathBuf },
    #[error("{path}: image `{image}` is not locked; run `nodeimg lock {spec}` or build with --update-lock")]
    ImageMissing {
        path: PathBuf,
        image: String,
        spec: PathBuf,
    },
    #[error("{path}: image `{image}` was locked from different specs ({what}); run `nodeimg lock` or build with --update-lock")]
    Stale {
        path: PathBuf,
        image: String,
        what: String,
    },
    #[error("{path}: tool `{tool}` is not locked (add it to tools.toml and run `nodeimg lock`)")]
    ToolMissing { path: PathBuf, tool: String },
    #[error("{path}: image `{image}` names package `{package}`, which has no [[package]] entry")]
    Dangling {
        path: PathBuf,
        image: String,
        package: String,
    },
    #[error("{path}: package `{package}`: {problem}")]
    BadPackage {
        path: PathBuf,
        package: String,
        problem: String,
    },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    pub version: u32,
    /// sha256 over the canonical JSON of everything else in the lock.
    #[serde(default)]
    pub checksum: String,
    pub source: LockSource,
    #[serde(default)]
    pub images: BTreeMap<String, LockedImage>,
    /// Judges for tests (`tools.toml`), each locked alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    /// Programs built from Go recipes (`recipes/<name>/`), by recipe.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub recipes: BTreeMap<String, LockedRecipe>,
    #[serde(default, rename = "package")]
    pub packages: Vec<LockedPackage>,
}

/// A recipe's build, pinned: what it was built from and each binary's
/// sha256. A build that compiles the recipe again must produce these bytes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LockedRecipe {
    /// sha256 over recipe.toml, go.mod and go.sum.
    pub inputs: String,
    /// The Go toolchain the binaries were built with.
    pub go: String,
    /// Upstream's version.
    pub version: String,
    /// Program -> sha256.
    pub binaries: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LockSource {
    pub suite: String,
    pub codename: String,
    /// The InRelease `Date:` the lock was resolved from.
    pub date: String,
    pub inrelease_sha256: String,
    pub indexes: Vec<LockedIndex>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LockedIndex {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LockedImage {
    /// sha256 of the resolution inputs (see [`Inputs`]).
    pub inputs: String,
    pub roots: Vec<String>,
    pub excludes: Vec<String>,
    pub packages: Vec<String>,
    /// The kernel package and the linux-image package it depends on; their
    /// other dependencies serve maintainer scripts and are not locked.
    #[serde(default)]
    pub kernel: Vec<String>,
    /// The package holding systemd-boot and systemd-stub, locked alone: the
    /// build reads two files from it and installs nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uefi: Vec<String>,
}

/// The locked packages of one image, by what they are for.
#[derive(Debug, Default)]
pub struct ImagePackages<'a> {
    pub rootfs: Vec<&'a LockedPackage>,
    pub kernel: Vec<&'a LockedPackage>,
    pub uefi: Vec<&'a LockedPackage>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LockedPackage {
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub filename: String,
    pub size: u64,
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintainer: Option<String>,
}

impl LockedPackage {
    pub fn sha256_bytes(&self) -> Option<hash::Sha256> {
        hash::parse_sha256(&self.sha256)
    }
}

/// What a resolution depends on; equal inputs give an equal closure from
/// the same index.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Inputs {
    pub suite: String,
    pub components: Vec<String>,
    pub arch: String,
    pub roots: BTreeSet<String>,
    pub excludes: BTreeSet<String>,
    pub kernel: Option<String>,
    /// Left out when absent, so images without UEFI outputs keep the
    /// digest they had before this field existed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uefi: Option<String>,
}

impl Inputs {
    pub fn from_plan(plan: &Plan) -> Self {
        Inputs {
            suite: plan.debian.suite.clone(),
            components: plan.debian.components.clone(),
            arch: plan.arch.clone(),
            roots: plan.packages.clone(),
            excludes: plan.excludes.clone(),
            kernel: plan.kernel_package.clone(),
            uefi: plan.uefi_package.clone(),
        }
    }

    pub fn digest(&self) -> String {
        // serde_json of a struct with BTreeSets is canonical: fixed field
        // order, sorted sets.
        hash::sha256_hex(canonical_json(self).as_bytes())
    }
}

/// JSON of plain data (strings, numbers, sets and maps with string keys),
/// which serde_json cannot fail to write; written out by hand in the
/// impossible case so a checksum never silently covers nothing.
fn canonical_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| format!("unserializable: {e}"))
}

impl Lock {
    pub fn read(path: &Path) -> Result<Lock, LockError> {
        let text = std::fs::read_to_string(path).map_err(|e| LockError::Read {
            path: path.into(),
            source: e,
        })?;
        let lock: Lock = toml::from_str(&text).map_err(|e| LockError::Parse {
            path: path.into(),
            message: e.to_string().trim_end().to_string(),
        })?;
        if lock.version != LOCK_VERSION {
            return Err(LockError::Version {
                path: path.into(),
                found: lock.version,
            });
        }
        if lock.checksum != lock.compute_checksum() {
            return Err(LockError::Checksum { path: path.into() });
        }
        lock.check_packages(path)?;
        lock.check_recipes(path)?;
        Ok(lock)
    }

    /// Writes atomically, with a fresh checksum and sorted packages.
    pub fn write(&mut self, path: &Path) -> Result<(), LockError> {
        self.version = LOCK_VERSION;
        self.packages
            .sort_by(|a, b| a.name.cmp(&b.name).then(a.version.cmp(&b.version)));
        self.packages.dedup();
        self.checksum = self.compute_checksum();
        let body = toml::to_string(self).map_err(|e| LockError::Parse {
            path: path.into(),
            message: e.to_string(),
        })?;
        let text =
            format!("# nodeimg.lock: written by `nodeimg lock`; do not edit by hand.\n{body}");
        atomic::write(path, text.as_bytes()).map_err(|e| LockError::Write {
            path: path.into(),
            source: e,
        })
    }

    fn compute_checksum(&self) -> String {
        let mut copy = self.clone();
        copy.checksum = String::new();
        hash::sha256_hex(canonical_json(&copy).as_bytes())
    }

    fn check_packages(&self, path: &Path) -> Result<(), LockError> {
        for p in &self.packages {
            let bad = |problem: &str| LockError::BadPackage {
                path: path.into(),
                package: p.name.clone(),
                problem: problem.into(),
            };
            if p.sha256_bytes().is_none() {
                return Err(bad("sha256 is not 64 hex digits"));
            }
            if p.filename.starts_with('/')
                || p.filename.split('/').any(|c| c == "..")
                || !p.filename.ends_with(".deb")
            {
                return Err(bad("filename must be a relative pool path ending in .deb"));
            }
        }
        Ok(())
    }

    fn check_recipes(&self, path: &Path) -> Result<(), LockError> {
        for (name, r) in &self.recipes {
            let bad = r
                .binaries
                .iter()
                .find(|(_, sha)| hash::parse_sha256(sha).is_none());
            if let Some((program, _)) = bad {
                return Err(LockError::BadPackage {
                    path: path.into(),
                    package: format!("recipe {name}: {program}"),
                    problem: "sha256 is not 64 hex digits".into(),
                });
            }
        }
        Ok(())
    }

    /// The locked package of tool `name` (see `tools.toml`).
    pub fn tool(&self, path: &Path, name: &str) -> Result<&LockedPackage, LockError> {
        if !self.tools.iter().any(|t| t == name) {
            return Err(LockError::ToolMissing {
                path: path.into(),
                tool: name.into(),
            });
        }
        self.packages
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| LockError::Dangling {
                path: path.into(),
                image: "tools".into(),
                package: name.into(),
            })
    }

    /// The root file system's packages and the kernel's packages locked for
    /// `plan`, after checking that the lock was resolved from the plan's
    /// current inputs.
    pub fn packages_for(&self, path: &Path, plan: &Plan) -> Result<ImagePackages<'_>, LockError> {
        let image = self
            .images
            .get(&plan.name)
            .ok_or_else(|| LockError::ImageMissing {
                path: path.into(),
                image: plan.name.clone(),
                spec: plan.image_path.clone(),
            })?;
        let inputs = Inputs::from_plan(plan);
        if image.inputs != inputs.digest() {
            let locked_roots: BTreeSet<String> = image.roots.iter().cloned().collect();
            let locked_ex: BTreeSet<String> = image.excludes.iter().cloned().collect();
            let mut what = Vec::new();
            let added: Vec<_> = inputs.roots.difference(&locked_roots).cloned().collect();
            let removed: Vec<_> = locked_roots.difference(&inputs.roots).cloned().collect();
            if !added.is_empty() {
                what.push(format!("packages not in the lock: {}", added.join(", ")));
            }
            if !removed.is_empty() {
                what.push(format!(
                    "packages no longer asked for: {}",
                    removed.join(", ")
                ));
            }
            if locked_ex != inputs.excludes {
                what.push("excludes changed".into());
            }
            if image.kernel.first() != inputs.kernel.as_ref() {
                what.push("kernel package changed".into());
            }
            if image.uefi.first() != inputs.uefi.as_ref() {
                what.push("uefi package changed".into());
            }
            if what.is_empty() {
                what.push("suite, components or arch changed".into());
            }
            return Err(LockError::Stale {
                path: path.into(),
                image: plan.name.clone(),
                what: what.join("; "),
            });
        }
        let by_name: BTreeMap<&str, &LockedPackage> =
            self.packages.iter().map(|p| (p.name.as_str(), p)).collect();
        let find = |names: &[String]| {
            names
                .iter()
                .map(|n| {
                    by_name
                        .get(n.as_str())
                        .copied()
                        .ok_or_else(|| LockError::Dangling {
                            path: path.into(),
                            image: plan.name.clone(),
                            package: n.clone(),
                        })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(ImagePackages {
            rootfs: find(&image.packages)?,
            kernel: find(&image.kernel)?,
            uefi: find(&image.uefi)?,
        })
    }
}

impl Lock {
    /// Keeps what `previous` (the lock at `path`) holds beyond this lock,
    /// made for some images only: its other images, the packages they
    /// name, its other recipes. Both must be resolved from the same
    /// archive state, or the kept images would name packages the archive
    /// no longer serves. Returns the images kept.
    pub fn keep_others(&mut self, previous: &Lock, path: &Path) -> Result<Vec<String>, LockError> {
        // recipes do not depend on the archive
        for (name, recipe) in &previous.recipes {
            self.recipes
                .entry(name.clone())
                .or_insert_with(|| recipe.clone());
        }
        let others: Vec<(&String, &LockedImage)> = previous
            .images
            .iter()
            .filter(|(name, _)| !self.images.contains_key(*name))
            .collect();
        if others.is_empty() {
            return Ok(Vec::new());
        }
        if previous.source.inrelease_sha256 != self.source.inrelease_sha256 {
            return Err(LockError::ArchiveMoved {
                path: path.to_path_buf(),
                was: previous.source.inrelease_sha256.clone(),
                now: self.source.inrelease_sha256.clone(),
            });
        }
        let mut kept = Vec::new();
        for (name, image) in others {
            self.images.insert(name.clone(), image.clone());
            kept.push(name.clone());
        }
        let have: std::collections::BTreeSet<(String, String)> = self
            .packages
            .iter()
            .map(|p| (p.name.clone(), p.architecture.clone()))
            .collect();
        for p in &previous.packages {
            if !have.contains(&(p.name.clone(), p.architecture.clone())) {
                self.packages.push(p.clone());
            }
        }
        // `write` sorts them
        Ok(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Lock {
        Lock {
            source: LockSource {
                suite: "trixie".into(),
                codename: "trixie".into(),
                ..LockSource::default()
            },
            packages: vec![LockedPackage {
                name: "libc6".into(),
                version: "2.41-12".into(),
                architecture: "amd64".into(),
                filename: "pool/main/g/glibc/libc6_2.41-12_amd64.deb".into(),
                size: 3,
                sha256: hash::sha256_hex(b"deb"),
                ..LockedPackage::default()
            }],
            ..Lock::default()
        }
    }

    #[test]
    fn locking_some_images_keeps_the_others_from_the_same_archive() {
        let image = |pkgs: &[&str]| LockedImage {
            packages: pkgs.iter().map(|p| p.to_string()).collect(),
            ..LockedImage::default()
        };
        let mut previous = sample();
        previous.images.insert("worker".into(), image(&["libc6"]));
        previous.images.insert("k8s".into(), image(&["libc6"]));
        let mut fresh = sample();
        fresh.packages[0].name = "mount".into();
        fresh.images.insert("k8s".into(), image(&["mount"]));
        let path = Path::new("nodeimg.lock");
        let kept = fresh.keep_others(&previous, path).unwrap();
        assert_eq!(kept, ["worker"]);
        // the re-locked image is the new one; the other, and its package, stay
        assert_eq!(fresh.images["k8s"].packages, ["mount"]);
        assert_eq!(fresh.images["worker"].packages, ["libc6"]);
        let names: Vec<&str> = fresh.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["mount", "libc6"]);
        // another archive state: refused, naming the way out
        let mut moved = sample();
        moved.source.inrelease_sha256 = "other".into();
        let e = moved.keep_others(&previous, path).unwrap_err().to_string();
        assert!(e.contains("lock every image together"), "{e}");
        // but with nothing else to keep, the archive may have moved
        moved.images = previous.images.clone();
        assert!(moved.keep_others(&previous, path).unwrap().is_empty());
    }

    #[test]
    fn round_trips_and_catches_hand_edits() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("nodeimg.lock");
        let mut lock = sample();
        lock.write(&path).unwrap();
        assert_eq!(Lock::read(&path).unwrap(), lock);

        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("2.41-12\"", "2.41-13\"")).unwrap();
        assert!(matches!(Lock::read(&path), Err(LockError::Checksum { .. })));
    }

    #[test]
    fn rejects_bad_hashes_and_paths_even_with_a_valid_checksum() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("nodeimg.lock");
        for (field, bad) in [("sha256", "zz"), ("filename", "../../etc/passwd.deb")] {
            let mut lock = sample();
            match field {
                "sha256" => lock.packages[0].sha256 = bad.into(),
                _ => lock.packages[0].filename = bad.into(),
            }
            lock.write(&path).unwrap();
            let e = Lock::read(&path).unwrap_err();
            assert!(
                matches!(e, LockError::BadPackage { ref package, .. } if package == "libc6"),
                "{field}: {e}"
            );
        }
    }

    #[test]
    fn inputs_digest_ignores_order_but_not_content() {
        let a = Inputs {
            suite: "trixie".into(),
            components: vec!["main".into()],
            arch: "amd64".into(),
            roots: ["b".to_string(), "a".to_string()].into(),
            excludes: Default::default(),
            kernel: None,
            uefi: None,
        };
        let mut b = a.clone();
        b.roots = ["a".to_string(), "b".to_string()].into();
        assert_eq!(a.digest(), b.digest());
        b.roots.insert("c".into());
        assert_ne!(a.digest(), b.digest());
    }
}
