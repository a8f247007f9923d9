//! The manifest's types, field by field as `manifest.json` spells them.
//! Deterministic: no wall-clock time, fields in a fixed order, lists sorted.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::output::disk::DiskLayout;
use crate::util::hash;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema: u32,
    pub name: String,
    pub version: String,
    pub arch: String,
    pub build: BuildInfo,
    pub artifacts: Vec<Artifact>,
    pub verity: VerityRecord,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<BootRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uefi: Option<UefiRecord>,
    pub packages: Vec<PackageRecord>,
    /// OCI images packed into the root for containerd, with the manifest
    /// digest containerd must report for each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<contract::images::PreloadedImage>,
}

/// The UEFI boot path: the UKI's command line and where it sits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UefiRecord {
    /// The UKI's `.cmdline`: the image's line plus the partitions and the
    /// state and failure policy of a disk boot.
    pub cmdline: String,
    /// The UKI's path on the ESP, boot counter included.
    pub esp_entry: String,
    /// systemd-boot and the UKI carry an Authenticode signature by the
    /// build's Secure Boot db key (`--secure-boot-key`).
    #[serde(default)]
    pub secure_boot_signed: bool,
    /// The raw disk's partitions, when a disk output was built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskLayout>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BuildInfo {
    pub nodeimg_version: String,
    /// Build products that went into the image besides packages (the
    /// nodeagent binary), by sha256, so two builds that differ say why.
    pub inputs: Vec<InputRecord>,
    pub source_date_epoch: u64,
    /// Checksum of the `nodeimg.lock` the packages came from.
    pub lock_checksum: String,
    /// The image's base suite; each package's origin names its own suite.
    pub debian_suite: String,
    pub layers: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct InputRecord {
    pub name: String,
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    pub kind: String,
    /// Relative to the manifest's directory.
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VerityRecord {
    pub root_hash: String,
    pub salt: String,
    pub hash_algorithm: String,
    pub data_block_size: u32,
    pub hash_block_size: u32,
    pub data_blocks: u64,
    /// Byte offset of the verity superblock in the hash file (veritysetup's
    /// `--hash-offset`).
    pub hash_offset: u64,
    /// First hash-tree block after the superblock, in hash blocks (the
    /// kernel table's `hash_start_block`).
    pub hash_start_block: u64,
    pub uuid: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BootRecord {
    /// The uname release, from the kernel's setup header.
    pub kernel_version: String,
    /// Architecture read from the kernel's PE header (x86_64 only).
    pub kernel_arch: String,
    /// Debian's Authenticode signature is present (the kernel is shipped
    /// unmodified).
    pub kernel_signed: bool,
    /// The image's kernel command line, root hash included; the lab or the
    /// UKI adds only where the devices are.
    pub cmdline: String,
    pub initramfs_modules: Vec<String>,
    /// Modules shipped in the root image and loaded after switch_root.
    pub root_modules: Vec<String>,
    /// Modules loaded only on UEFI boots, to mark the boot good.
    #[serde(default)]
    pub uefi_modules: Vec<String>,
    /// Modules loaded after the node reports ready.
    pub deferred_modules: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PackageRecord {
    pub name: String,
    pub version: String,
    /// sha256 of the .deb.
    pub sha256: String,
    /// Where it came from: `debian:<suite>/<pool path>`, the suite being
    /// the one it was locked from (`trixie-security` for a security
    /// update), whose archive's mirror serves the pool path.
    pub origin: String,
    /// `rootfs` (unpacked into the root) or `kernel` (the kernel and the
    /// modules taken from it).
    pub role: String,
}

impl Artifact {
    /// Describes the file at `dir/path` (hashing it).
    pub fn of_file(kind: &str, dir: &Path, path: &str) -> std::io::Result<Artifact> {
        let f = std::fs::File::open(dir.join(path))?;
        let (sha, size) = hash::sha256_reader(std::io::BufReader::with_capacity(1 << 20, f))?;
        Ok(Artifact {
            kind: kind.into(),
            path: path.into(),
            sha256: hex::encode(sha),
            size,
        })
    }
}

impl Manifest {
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut v = serde_json::to_vec_pretty(self)?;
        v.push(b'\n');
        Ok(v)
    }

    pub fn artifact(&self, kind: &str) -> Option<&Artifact> {
        self.artifacts.iter().find(|a| a.kind == kind)
    }
}

#[cfg(test)]
impl Manifest {
    /// A valid manifest listing `artifacts`, for tests of its readers.
    pub(crate) fn sample(artifacts: Vec<Artifact>) -> Manifest {
        Manifest {
            schema: super::MANIFEST_SCHEMA,
            name: "test".into(),
            version: "0.1.0".into(),
            arch: "amd64".into(),
            build: BuildInfo {
                nodeimg_version: "0.1.0".into(),
                inputs: Vec::new(),
                source_date_epoch: 1_760_000_000,
                lock_checksum: "0".repeat(64),
                debian_suite: "trixie".into(),
                layers: vec!["base".into()],
            },
            artifacts,
            verity: VerityRecord {
                root_hash: "1".repeat(64),
                salt: "2".repeat(64),
                hash_algorithm: "sha256".into(),
                data_block_size: 4096,
                hash_block_size: 4096,
                data_blocks: 1,
                hash_offset: 0,
                hash_start_block: 1,
                uuid: None,
            },
            boot: None,
            uefi: None,
            packages: Vec::new(),
            images: Vec::new(),
        }
    }
}
