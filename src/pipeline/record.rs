//! Stages: the record of a build. The manifest (every artifact's sha256,
//! the packages, the inputs), the SBOM made from it and listed in it (with
//! the lock's maintainers and the licenses the packages' DEP-5 copyright
//! files declare), and `manifest.json` itself, written last.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::manifest::{
    Artifact, BootRecord, BuildInfo, InputRecord, Manifest, PackageRecord, UefiRecord,
    VerityRecord, MANIFEST_FILE, MANIFEST_SCHEMA,
};
use crate::rootfs::assemble::Artifacts;
use crate::sign::sbom::{write_sbom as sbom_json, SbomError, SbomExtras};
use crate::source::copyright::declared_license;
use crate::source::lock::{ImagePackages, Lock};
use crate::spec::Plan;
use crate::util::{atomic, hash};

pub const SBOM_FILE: &str = "sbom.spdx.json";
/// The workspace lock: the crates nodeagent is built from, for the SBOM.
const AGENT_CARGO_LOCK: &str = include_str!("../../Cargo.lock");

/// Errors of the record stages.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("output directory {path}")]
    Out {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the SBOM")]
    Sbom(#[source] SbomError),
    #[error("writing the manifest")]
    Manifest(#[source] serde_json::Error),
}

/// What the manifest records about the build itself.
pub struct BuildFacts<'a> {
    pub lock: &'a Lock,
    /// Build products that went in besides packages (the agent binary).
    pub inputs: &'a Artifacts,
    pub source_date_epoch: u64,
    /// The OCI images the tree carries (its `images.json`).
    pub images: Vec<contract::images::PreloadedImage>,
}

/// The manifest of a build, before the SBOM is added to its artifacts.
pub fn manifest(
    plan: &Plan,
    facts: &BuildFacts,
    locked: &ImagePackages,
    artifacts: Vec<Artifact>,
    verity: VerityRecord,
    boot: Option<BootRecord>,
    uefi: Option<UefiRecord>,
) -> Manifest {
    let lock = facts.lock;
    Manifest {
        schema: MANIFEST_SCHEMA,
        name: plan.name.clone(),
        version: plan.version.clone(),
        arch: plan.arch.clone(),
        build: BuildInfo {
            nodeimg_version: env!("CARGO_PKG_VERSION").into(),
            inputs: facts
                .inputs
                .iter()
                .map(|(name, data)| InputRecord {
                    name: name.clone(),
                    sha256: hash::sha256_hex(data),
                    size: data.len() as u64,
                })
                .collect(),
            source_date_epoch: facts.source_date_epoch,
            lock_checksum: lock.checksum.clone(),
            debian_suite: plan.debian.suite.clone(),
            layers: plan.layers.clone(),
        },
        artifacts,
        verity,
        boot,
        uefi,
        packages: locked
            .rootfs
            .iter()
            .map(|p| (p, "rootfs"))
            .chain(locked.kernel.iter().map(|p| (p, "kernel")))
            .chain(locked.uefi.iter().map(|p| (p, "uefi")))
            .map(|(p, role)| PackageRecord {
                name: p.name.clone(),
                version: p.version.clone(),
                sha256: p.sha256.clone(),
                origin: format!("debian:{}/{}", p.suite, p.filename),
                role: role.into(),
            })
            .collect(),
        images: facts.images.clone(),
    }
}

/// Writes `out/sbom.spdx.json` from `manifest` and returns the manifest
/// with the SBOM listed, so the signature covers it too. `copyrights` are
/// the packages' copyright files by package name.
pub fn write_sbom(
    mut manifest: Manifest,
    locked: &ImagePackages,
    copyrights: &BTreeMap<String, String>,
    out: &Path,
) -> Result<Manifest, RecordError> {
    let extras = SbomExtras {
        maintainers: locked
            .rootfs
            .iter()
            .chain(&locked.kernel)
            .chain(&locked.uefi)
            .filter_map(|p| Some((p.name.clone(), p.maintainer.clone()?)))
            .collect(),
        licenses: declared_licenses(copyrights),
    };
    let mut sbom = Vec::new();
    sbom_json(&manifest, AGENT_CARGO_LOCK, &extras, &mut sbom).map_err(RecordError::Sbom)?;
    let path = out.join(SBOM_FILE);
    atomic::write(&path, &sbom).map_err(|source| RecordError::Out { path, source })?;
    let sbom = Artifact::of_file("sbom", out, SBOM_FILE).map_err(|source| RecordError::Out {
        path: out.to_path_buf(),
        source,
    })?;
    manifest.artifacts.push(sbom);
    Ok(manifest)
}

/// The SPDX expression each package's copyright file declares; packages
/// whose file maps to none are left out (the SBOM says NOASSERTION).
fn declared_licenses(copyrights: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    copyrights
        .iter()
        .filter_map(|(package, text)| match declared_license(text) {
            Ok(expression) => Some((package.clone(), expression)),
            Err(why) => {
                tracing::debug!(package, %why, "no SPDX license declared");
                None
            }
        })
        .collect()
}

/// Writes `out/manifest.json`: the last file of a build.
pub fn write_manifest(manifest: &Manifest, out: &Path) -> Result<(), RecordError> {
    let json = manifest.to_json().map_err(RecordError::Manifest)?;
    atomic::write(&out.join(MANIFEST_FILE), &json).map_err(|source| RecordError::Out {
        path: out.to_path_buf(),
        source,
    })
}
