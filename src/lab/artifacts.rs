//! The artifacts a boot uses, from a build's typed [`Manifest`]: each one
//! found by kind and checked against its recorded size and sha256 before
//! QEMU sees it. Paths are relative to the manifest's directory.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::LabError;
use crate::manifest::Manifest;
use crate::util::hash::sha256_reader;

/// The artifact kinds a direct boot uses.
pub const KINDS: [&str; 4] = ["rootfs", "verity", "kernel", "initramfs"];

/// Verified paths of the artifacts a direct boot needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootArtifacts {
    pub rootfs: PathBuf,
    pub verity: PathBuf,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// The image's own kernel command line (`boot.cmdline`).
    pub cmdline: String,
}

fn bad(dir: &Path, what: impl Into<String>) -> LabError {
    LabError::Manifest {
        dir: dir.to_path_buf(),
        what: what.into(),
    }
}

/// Finds the one artifact of `kind`; returns its path under `dir`, sha256 and size.
fn artifact<'m>(
    dir: &Path,
    manifest: &'m Manifest,
    kind: &str,
) -> Result<(PathBuf, &'m str, u64), LabError> {
    let mut found = manifest.artifacts.iter().filter(|a| a.kind == kind);
    let a = found.next().ok_or_else(|| LabError::MissingArtifact {
        kind: kind.to_string(),
    })?;
    if found.next().is_some() {
        return Err(bad(dir, format!("several artifacts of kind {kind:?}")));
    }
    let rel = &a.path;
    // `Manifest::read` checked this already; a manifest built in memory
    // was not, and the lab opens what it names.
    let rel = crate::util::path::normalize(rel)
        .filter(|r| !r.is_empty() && !rel.starts_with('/'))
        .ok_or_else(|| {
            bad(
                dir,
                format!("{kind} path {rel:?} is not relative to the manifest"),
            )
        })?;
    Ok((dir.join(rel), &a.sha256, a.size))
}

/// The path of DIR's one artifact of `kind`, after checking its size and
/// sha256 against the manifest.
pub fn verified_artifact(dir: &Path, manifest: &Manifest, kind: &str) -> Result<PathBuf, LabError> {
    let (path, sha, size) = artifact(dir, manifest, kind)?;
    verify_file(kind, &path, sha, size)?;
    tracing::debug!(kind, path = %path.display(), "artifact verified");
    Ok(path)
}

/// Checks one file's size and sha256 against the manifest.
fn verify_file(kind: &str, path: &Path, sha256: &str, size: u64) -> Result<(), LabError> {
    let io = |source| LabError::ArtifactIo {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let actual_size = file.metadata().map_err(io)?.len();
    if actual_size != size {
        return Err(LabError::ArtifactSize {
            kind: kind.to_string(),
            path: path.to_path_buf(),
            expected: size,
            actual: actual_size,
        });
    }
    let (digest, _) = sha256_reader(file).map_err(io)?;
    let actual = hex::encode(digest);
    if !actual.eq_ignore_ascii_case(sha256) {
        return Err(LabError::ArtifactDigest {
            kind: kind.to_string(),
            path: path.to_path_buf(),
            expected: sha256.to_string(),
            actual,
        });
    }
    Ok(())
}

/// Reads and verifies the four boot artifacts and the command line.
pub fn boot_artifacts(dir: &Path, manifest: &Manifest) -> Result<BootArtifacts, LabError> {
    let cmdline = manifest
        .boot
        .as_ref()
        .map(|b| b.cmdline.clone())
        .ok_or_else(|| bad(dir, "no \"boot\" record (the image has no kernel)"))?;
    let get = |kind: &str| verified_artifact(dir, manifest, kind);
    Ok(BootArtifacts {
        rootfs: get("rootfs")?,
        verity: get("verity")?,
        kernel: get("kernel")?,
        initramfs: get("initramfs")?,
        cmdline,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Artifact, BootRecord};
    use crate::util::hash::sha256_hex;

    fn write_build(dir: &Path) -> Manifest {
        let mut artifacts = Vec::new();
        for kind in KINDS {
            let data = format!("{kind} bytes");
            std::fs::write(dir.join(format!("{kind}.bin")), &data).unwrap();
            artifacts.push(Artifact {
                kind: kind.into(),
                path: format!("{kind}.bin"),
                sha256: sha256_hex(data.as_bytes()),
                size: data.len() as u64,
            });
        }
        artifacts.push(Artifact {
            kind: "sbom".into(),
            path: "absent.json".into(),
            sha256: "0".repeat(64),
            size: 1,
        });
        let mut m = Manifest::sample(artifacts);
        m.boot = Some(BootRecord {
            kernel_version: "6.12.0".into(),
            kernel_arch: "x86_64".into(),
            kernel_signed: true,
            cmdline: "ro quiet".into(),
            initramfs_modules: Vec::new(),
            root_modules: Vec::new(),
            uefi_modules: Vec::new(),
            deferred_modules: Vec::new(),
        });
        m
    }

    #[test]
    fn verifies_every_boot_artifact() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = write_build(dir.path());
        let a = boot_artifacts(dir.path(), &manifest).unwrap();
        assert_eq!(a.kernel, dir.path().join("kernel.bin"));
        assert_eq!(a.cmdline, "ro quiet");

        std::fs::write(dir.path().join("verity.bin"), "verity bytez").unwrap();
        let err = boot_artifacts(dir.path(), &manifest).unwrap_err();
        assert!(
            matches!(&err, LabError::ArtifactDigest { kind, .. } if kind == "verity"),
            "{err}"
        );
        std::fs::write(dir.path().join("verity.bin"), "short").unwrap();
        let err = boot_artifacts(dir.path(), &manifest).unwrap_err();
        assert!(matches!(
            err,
            LabError::ArtifactSize {
                expected: 12,
                actual: 5,
                ..
            }
        ));
    }

    #[test]
    fn refuses_escaping_paths_and_missing_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let mut manifest = write_build(dir.path());
        manifest.artifacts[0].path = "../etc/passwd".into();
        assert!(matches!(
            boot_artifacts(dir.path(), &manifest),
            Err(LabError::Manifest { .. })
        ));
        manifest.artifacts.remove(0);
        let err = boot_artifacts(dir.path(), &manifest).unwrap_err();
        assert!(
            matches!(&err, LabError::MissingArtifact { kind } if kind == "rootfs"),
            "{err}"
        );
    }
}
