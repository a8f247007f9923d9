//! `nodeimg.lock`: every .deb an image uses, pinned by name, version,
//! suite, archive path, size and sha256, plus what it was resolved from:
//! one `[[source]]` per suite read (the base suite, `-updates`, `-security`),
//! each with its archive, the sha256 of its verified InRelease and its
//! indexes. A package is fetched from the mirror of its suite's archive.
//!
//! The lock carries a checksum over its own content so that a hand edit or
//! a damaged file is caught before anything is fetched. Images record the
//! hash of their resolution inputs (suite, components, pockets, roots,
//! excludes); `nodeimg build` refuses a lock whose inputs differ from the
//! specs. A lock of another format version is refused before it is parsed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::source::mirror::Archive;
use crate::spec::{Plan, Pocket};
use crate::util::{atomic, hash};

/// 2: one source per suite (`[[source]]`, with its archive) and each
/// package's `suite`. 1 had a single `[source]`.
pub const LOCK_VERSION: u32 = 2;

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
    #[error("{path}: written by an older nodeimg (lock version {found}; this one reads version {LOCK_VERSION}, which records every suite, updates and security included); run `nodeimg lock` to re-resolve it")]
    Outdated { path: PathBuf, found: u32 },
    #[error("{path}: lock version {found} is newer than this nodeimg reads ({LOCK_VERSION}); use a newer nodeimg")]
    Version { path: PathBuf, found: u32 },
    #[error("{path}: the archive moved since it was written (suite {suite}: InRelease sha256 {was}, now {now}); lock every image together (`nodeimg lock` without image arguments) so they resolve against one archive state; nothing written")]
    ArchiveMoved {
        path: PathBuf,
        suite: String,
        was: String,
        now: String,
    },
    #[error("{path}: suite {suite} is listed twice in [[source]]")]
    DuplicateSource { path: PathBuf, suite: String },
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
    /// Every suite read, base suite first, each verified by its InRelease.
    #[serde(default, rename = "source", skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<LockSource>,
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
    /// `trixie`, `trixie-updates`, `trixie-security`.
    pub suite: String,
    /// The archive that publishes the suite: its mirror serves the
    /// InRelease, the indexes and the pool of the packages locked from it.
    pub archive: Archive,
    /// The verified InRelease's `Codename:`.
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
    /// The suite whose index it was resolved from (one of the lock's
    /// sources): its archive's mirror serves `filename`.
    pub suite: String,
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
    pub pockets: BTreeSet<Pocket>,
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
            pockets: plan.debian.pockets.iter().copied().collect(),
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
        let parse_error = |e: toml::de::Error| LockError::Parse {
            path: path.into(),
            message: e.to_string().trim_end().to_string(),
        };
        // The version first: another version's layout would not parse as this one.
        #[derive(Deserialize)]
        struct Versioned {
            version: u32,
        }
        let found = toml::from_str::<Versioned>(&text)
            .map_err(parse_error)?
            .version;
        match found.cmp(&LOCK_VERSION) {
            std::cmp::Ordering::Less => {
                return Err(LockError::Outdated {
                    path: path.into(),
                    found,
                })
            }
            std::cmp::Ordering::Greater => {
                return Err(LockError::Version {
                    path: path.into(),
                    found,
                })
            }
            std::cmp::Ordering::Equal => {}
        }
        let lock: Lock = toml::from_str(&text).map_err(parse_error)?;
        if lock.checksum != lock.compute_checksum() {
            return Err(LockError::Checksum { path: path.into() });
        }
        lock.check_sources(path)?;
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

    fn check_sources(&self, path: &Path) -> Result<(), LockError> {
        let mut seen = BTreeSet::new();
        for s in &self.sources {
            if !seen.insert(s.suite.as_str()) {
                return Err(LockError::DuplicateSource {
                    path: path.into(),
                    suite: s.suite.clone(),
                });
            }
        }
        Ok(())
    }

    fn check_packages(&self, path: &Path) -> Result<(), LockError> {
        for p in &self.packages {
            let bad = |problem: &str| LockError::BadPackage {
                path: path.into(),
                package: p.name.clone(),
                problem: problem.into(),
            };
            if self.source(&p.suite).is_none() {
                return Err(bad(&format!(
                    "suite `{}` is not one of the lock's [[source]] suites",
                    p.suite
                )));
            }
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

    /// The source of `suite`, if the lock read it.
    pub fn source(&self, suite: &str) -> Option<&LockSource> {
        self.sources.iter().find(|s| s.suite == suite)
    }

    /// The base suite's source (the first), if any.
    pub fn base(&self) -> Option<&LockSource> {
        self.sources.first()
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
                what.push("suite, components, pockets or arch changed".into());
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
        if let Some((suite, was, now)) = moved_suite(&previous.sources, &self.sources) {
            return Err(LockError::ArchiveMoved {
                path: path.to_path_buf(),
                suite,
                was,
                now,
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

/// The first suite whose InRelease differs between two lock's sources
/// (a suite only one of them read counts as moved): (suite, was, now).
fn moved_suite(was: &[LockSource], now: &[LockSource]) -> Option<(String, String, String)> {
    let state = |sources: &[LockSource]| -> BTreeMap<String, String> {
        sources
            .iter()
            .map(|s| (s.suite.clone(), s.inrelease_sha256.clone()))
            .collect()
    };
    let (was, now) = (state(was), state(now));
    let absent = || "(not read)".to_string();
    was.keys()
        .chain(now.keys())
        .find(|suite| was.get(*suite) != now.get(*suite))
        .map(|suite| {
            (
                suite.clone(),
                was.get(suite).cloned().unwrap_or_else(absent),
                now.get(suite).cloned().unwrap_or_else(absent),
            )
        })
}

#[cfg(test)]
#[path = "lock_tests.rs"]
mod tests;
