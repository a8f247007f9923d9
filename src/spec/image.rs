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
    /// Bootable outputs beyond the root, verity, kernel and initramfs
    /// (see [`super::OutputKind`]); `--format` replaces this list.
    #[serde(default)]
    pub outputs: Vec<String>,
    #[serde(default)]
    pub disk: DiskSpec,
}

/// `[disk]`: the UEFI disk's geometry and boot counting.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    /// ESP size in MiB: room for two UKIs (A and B) and systemd-boot.
    #[serde(default = "default_esp_mib")]
    pub esp_mib: u64,
    /// Size of each root slot in MiB; 0 = the root image rounded up to
    /// leave room for updates (twice its size).
    #[serde(default)]
    pub root_slot_mib: u64,
    /// systemd-boot tries before an entry counts as bad (`+N` in the name).
    #[serde(default = "default_boot_tries")]
    pub boot_tries: u32,
}

impl Default for DiskSpec {
    fn default() -> Self {
        DiskSpec {
            esp_mib: default_esp_mib(),
            root_slot_mib: 0,
            boot_tries: default_boot_tries(),
        }
    }
}

fn default_esp_mib() -> u64 {
    256
}
fn default_boot_tries() -> u32 {
    3
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
