//! `tools.toml` beside `images/`: Debian packages that tests use as judges
//! (cosign), pinned in the lock like image packages but never installed.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::SpecError;
use super::image::SCHEMA_VERSION;

/// The file name, in the project directory.
pub const TOOLS_FILE: &str = "tools.toml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolsSpec {
    schema: u32,
    #[serde(default)]
    packages: Vec<String>,
}

/// Package names from `<project>/tools.toml`, sorted; none when the file
/// does not exist.
pub fn load_tools(project: &Path) -> Result<Vec<String>, SpecError> {
    let path: PathBuf = project.join(TOOLS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(SpecError::Read { path, source }),
    };
    let spec: ToolsSpec = toml::from_str(&text).map_err(|e| SpecError::Parse {
        path: path.clone(),
        message: e.to_string().trim_end().to_string(),
    })?;
    if spec.schema != SCHEMA_VERSION {
        return Err(SpecError::Schema {
            path,
            found: spec.schema,
            supported: SCHEMA_VERSION,
        });
    }
    let mut names = spec.packages;
    for n in &names {
        let ok = !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
        if !ok {
            return Err(SpecError::invalid(
                &path,
                "packages",
                format!("`{n}` is not a Debian package name"),
            ));
        }
    }
    names.sort();
    names.dedup();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sorts_and_rejects() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_tools(dir.path()).unwrap().is_empty());
        std::fs::write(
            dir.path().join(TOOLS_FILE),
            "schema = 1\npackages = [\"zz\", \"cosign\", \"zz\"]\n",
        )
        .unwrap();
        assert_eq!(load_tools(dir.path()).unwrap(), ["cosign", "zz"]);
        std::fs::write(
            dir.path().join(TOOLS_FILE),
            "schema = 1\npackages = [\"../x\"]\n",
        )
        .unwrap();
        let e = load_tools(dir.path()).unwrap_err().to_string();
        assert!(e.contains("tools.toml") && e.contains("`../x`"), "{e}");
        std::fs::write(dir.path().join(TOOLS_FILE), "schema = 1\nextra = 1\n").unwrap();
        assert!(load_tools(dir.path()).is_err());
    }
}
