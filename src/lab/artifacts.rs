//! Reading a build's `manifest.json` for a boot: the artifacts the lab
//! needs, each checked against its recorded size and sha256 before QEMU
//! sees it.
//!
//! Shape: `{ "artifacts": [ { "kind", "path", "sha256", "size" } ],
//! "boot": { "cmdline" } }`, paths relative to the manifest's directory.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::LabError;
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
    manifest: &'m Value,
    kind: &str,
) -> Result<(PathBuf, &'m str, u64), LabError> {
    let artifacts = manifest
        .get("artifacts")
        .and_then(Value::as_array)
        .ok_or_else(|| bad(dir, "no \"artifacts\" array"))?;
    let mut found = artifacts
        .iter()
        .filter(|a| a.get("kind").and_then(Value::as_str) == Some(kind));
    let a = found.next().ok_or_else(|| LabError::MissingArtifact {
        kind: kind.to_string(),
    })?;
    if found.next().is_some() {
        return Err(bad(dir, format!("several artifacts of kind {kind:?}")));
    }
    let field = |name: &str| {
        a.get(name)
            .ok_or_else(|| bad(dir, format!("{kind} artifact has no {name:?}")))
    };
    let rel = field("path")?
        .as_str()
        .ok_or_else(|| bad(dir, format!("{kind} path is not a string")))?;
    let sha = field("sha256")?
        .as_str()
        .ok_or_else(|| bad(dir, format!("{kind} sha256 is not a string")))?;
    let size = field("size")?
        .as_u64()
        .ok_or_else(|| bad(dir, format!("{kind} size is not a number")))?;
    let rel = crate::rootfs::normalize(rel)
        .filter(|r| !r.is_empty() && !rel.starts_with('/'))
        .ok_or_else(|| {
            bad(
                dir,
                format!("{kind} path {rel:?} is not relative to the manifest"),
            )
        })?;
    Ok((dir.join(rel), sha, size))
}

/// The path of DIR's one artifact of `kind`, after checking its size and
/// sha256 against the manifest.
pub fn verified_artifact(dir: &Path, manifest: &Value, kind: &str) -> Result<PathBuf, LabError> {
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
pub fn boot_artifacts(dir: &Path, manifest: &Value) -> Result<BootArtifacts, LabError> {
    let cmdline = manifest
        .pointer("/boot/cmdline")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(dir, "no \"boot.cmdline\" string"))?
        .to_string();
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
    use crate::util::hash::sha256_hex;

    fn write_build(dir: &Path) -> Value {
        let mut artifacts = Vec::new();
        for kind in KINDS {
            let data = format!("{kind} bytes");
            std::fs::write(dir.join(format!("{kind}.bin")), &data).unwrap();
            artifacts.push(serde_json::json!({
                "kind": kind, "path": format!("{kind}.bin"),
                "sha256": sha256_hex(data.as_bytes()), "size": data.len(),
            }));
        }
        artifacts.push(
            serde_json::json!({"kind": "sbom", "path": "absent.json", "sha256": "00", "size": 1}),
        );
        serde_json::json!({ "artifacts": artifacts, "boot": { "cmdline": "ro quiet" } })
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
        manifest["artifacts"][0]["path"] = "../etc/passwd".into();
        assert!(matches!(
            boot_artifacts(dir.path(), &manifest),
            Err(LabError::Manifest { .. })
        ));
        manifest["artifacts"].as_array_mut().unwrap().remove(0);
        let err = boot_artifacts(dir.path(), &manifest).unwrap_err();
        assert!(
            matches!(&err, LabError::MissingArtifact { kind } if kind == "rootfs"),
            "{err}"
        );
    }
}
