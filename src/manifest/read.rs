//! Reading `manifest.json`: parse strictly, then check the fields a reader
//! acts on (paths it opens, digests it compares).

use std::io;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use super::{Manifest, MANIFEST_FILE, MANIFEST_SCHEMA};
use crate::util::hash;

/// Why a manifest's content cannot be used (when it is signed, this is a
/// build or schema problem, not tampering).
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("manifest.json does not parse")]
    Json(#[source] serde_json::Error),
    #[error("manifest.json field {field}: {problem}")]
    Field { field: String, problem: String },
}

/// The schema number alone, read before the rest: a manifest of another
/// schema is named as such, not as a list of unknown fields.
#[derive(Deserialize)]
struct SchemaOnly {
    schema: u32,
}

impl Manifest {
    /// Reads and checks `dir/manifest.json`.
    pub fn read(dir: &Path) -> Result<Manifest, ManifestError> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = std::fs::read(&path).map_err(|source| ManifestError::Read { path, source })?;
        Manifest::parse(&bytes)
    }

    /// Parses and checks the bytes of a `manifest.json` (for a caller that
    /// needs the exact bytes too, as signature checks do).
    pub fn parse(json: &[u8]) -> Result<Manifest, ManifestError> {
        let head: SchemaOnly = serde_json::from_slice(json).map_err(ManifestError::Json)?;
        if head.schema != MANIFEST_SCHEMA {
            return Err(ManifestError::Field {
                field: "schema".into(),
                problem: format!("is {}, this nodeimg reads {MANIFEST_SCHEMA}", head.schema),
            });
        }
        let manifest: Manifest = serde_json::from_slice(json).map_err(ManifestError::Json)?;
        manifest.check()?;
        Ok(manifest)
    }

    /// Each artifact path stays inside the manifest's directory and each
    /// sha256 is 64 lower-case hex digits.
    pub fn check(&self) -> Result<(), ManifestError> {
        for (i, a) in self.artifacts.iter().enumerate() {
            if let Err(problem) = check_relative(&a.path) {
                return Err(ManifestError::Field {
                    field: format!("artifacts[{i}].path"),
                    problem: format!("`{}` {problem}", a.path),
                });
            }
            if hash::parse_sha256(&a.sha256).is_none() || a.sha256 != a.sha256.to_ascii_lowercase()
            {
                return Err(ManifestError::Field {
                    field: format!("artifacts[{i}].sha256"),
                    problem: format!("`{}` is not 64 lower-case hex digits", a.sha256),
                });
            }
        }
        Ok(())
    }
}

/// A relative path of plain components: no root, no `..`.
fn check_relative(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("is empty");
    }
    for c in Path::new(path).components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err("leaves the directory (`..`)"),
            Component::RootDir | Component::Prefix(_) => return Err("is absolute"),
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "read_tests.rs"]
mod tests;
