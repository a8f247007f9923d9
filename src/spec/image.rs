//! `images/<name>.toml`: which layers make an image, and where its packages
//! come from.

use serde::Deserialize;

/// The spec schema this nodeimg reads; bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    pub schema: u32,
    /// Image name: `[a-z0-9-]+`, used in artifact names.
    pub name: String,
    pub version: String,
    #[serde(default = "default_arch")]
    pub arch: String,
    #[serde(default)]
    pub debian: DebianSource,
    /// Layer names, applied in order; each is `layers/<name>/layer.toml`.
    pub layers: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DebianSource {
    #[serde(default = "default_suite")]
    pub suite: String,
    #[serde(default = "default_components")]
    pub components: Vec<String>,
}

impl Default for DebianSource {
    fn default() -> Self {
        DebianSource {
            suite: default_suite(),
            components: default_components(),
        }
    }
}

fn default_arch() -> String {
    "amd64".into()
}
fn default_suite() -> String {
    "trixie".into()
}
fn default_components() -> Vec<String> {
    vec!["main".into()]
}
