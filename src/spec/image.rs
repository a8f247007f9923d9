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

/// `[debian]`: the base suite, its components, and the pockets locked
/// with it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DebianSource {
    /// The base suite (`trixie`); its pockets are named after it.
    #[serde(default = "default_suite")]
    pub suite: String,
    #[serde(default = "default_components")]
    pub components: Vec<String>,
    /// Pockets read besides the base suite: `updates` (`<suite>-updates`,
    /// on the main mirror) and `security` (`<suite>-security`, on the
    /// security mirror). `[]` reads the base suite only.
    #[serde(default = "default_pockets")]
    pub pockets: Vec<Pocket>,
}

impl Default for DebianSource {
    fn default() -> Self {
        DebianSource {
            suite: default_suite(),
            components: default_components(),
            pockets: default_pockets(),
        }
    }
}

impl DebianSource {
    /// Every suite to read, base suite first, then the pockets in the
    /// fixed order updates, security (whatever order the spec lists them in).
    pub fn suites(&self) -> Vec<(String, Option<Pocket>)> {
        let mut out = vec![(self.suite.clone(), None)];
        for pocket in [Pocket::Updates, Pocket::Security] {
            if self.pockets.contains(&pocket) {
                out.push((pocket.suite(&self.suite), Some(pocket)));
            }
        }
        out
    }
}

/// A pocket of a Debian release: a suite published beside the base suite
/// that carries newer versions of its packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pocket {
    /// `<suite>-updates`: stable updates, on the main mirror.
    Updates,
    /// `<suite>-security`: security fixes, on the security archive.
    Security,
}

impl Pocket {
    pub const ALL: [Pocket; 2] = [Pocket::Updates, Pocket::Security];

    pub fn name(self) -> &'static str {
        match self {
            Pocket::Updates => "updates",
            Pocket::Security => "security",
        }
    }

    /// The pocket's suite: `trixie` -> `trixie-updates`.
    pub fn suite(self, base: &str) -> String {
        format!("{base}-{}", self.name())
    }
}

impl std::fmt::Display for Pocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Pocket {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Pocket::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown pocket `{s}` (known: updates, security)"))
    }
}

impl<'de> Deserialize<'de> for Pocket {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
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
fn default_pockets() -> Vec<Pocket> {
    Pocket::ALL.to_vec()
}
