//! `layers/<name>/layer.toml`: one concern of an image (packages, files,
//! sysctls, users, kernel settings), composed in the order an image lists.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerSpec {
    pub schema: u32,
    #[serde(default)]
    pub description: String,
    /// A debug layer may ship a shell; without one the builder refuses any.
    #[serde(default)]
    pub debug: bool,
    #[serde(default)]
    pub packages: PackagesSpec,
    /// Paths removed from the tree after unpacking (docs, man pages, …).
    #[serde(default)]
    pub remove: Vec<String>,
    /// Package files under `/etc` that stay (all others are dropped: `/etc`
    /// holds only what layers put there).
    #[serde(default)]
    pub keep_etc: Vec<String>,
    /// Files made at build time in place of a maintainer script
    /// (`ca-bundle`: what `update-ca-certificates` writes).
    #[serde(default)]
    pub generate: Vec<String>,
    #[serde(default)]
    pub files: Vec<FileSpec>,
    #[serde(default)]
    pub users: Vec<UserSpec>,
    #[serde(default)]
    pub groups: Vec<GroupSpec>,
    /// sysctl name -> value and the reason for it.
    #[serde(default)]
    pub sysctl: BTreeMap<String, Setting>,
    #[serde(default)]
    pub kernel: KernelSpec,
    #[serde(default)]
    pub uefi: UefiSpec,
    /// OCI images the builder packs and nodeagent imports into containerd.
    #[serde(default)]
    pub oci_images: Vec<OciImageSpec>,
    /// Daemons nodeagent supervises, by name (see `contract::services`).
    #[serde(default)]
    pub services: BTreeMap<String, contract::services::ServiceSpec>,
}

/// `[[oci_images]]`: an image nodeagent imports into containerd, for
/// air-gapped nodes. Either a one-layer image the build packs from a
/// program it produces (`binary`, `entrypoint`, `user`: the sandbox
/// `pause`), or an OCI image archive the user brings (`archive`, pinned by
/// `sha256`: an add-on the build cannot make, such as Falco's image).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OciImageSpec {
    /// What containerd lists it as, e.g. `nodeimg.local/pause:0.1.0`.
    pub name: String,
    /// The build artifact that becomes `/<binary>` in the image.
    #[serde(default)]
    pub binary: Option<String>,
    #[serde(default)]
    pub entrypoint: Vec<String>,
    /// Numeric `uid:gid`.
    #[serde(default)]
    pub user: Option<String>,
    /// An OCI image archive (`oci-archive`, a tar of an OCI image layout),
    /// relative to the layer's directory; the plan holds it absolute.
    #[serde(default)]
    pub archive: Option<std::path::PathBuf>,
    /// Lowercase hex sha256 of the archive file: it is read only if it
    /// matches.
    #[serde(default)]
    pub sha256: Option<String>,
    /// `sha256:<hex>`: the manifest digest the packed image must have.
    /// A recipe's program is pinned by the lock, so its image is too, and
    /// what the cluster's manifests name by digest (`contract::stack`)
    /// is checked here, at the build.
    #[serde(default)]
    pub digest: Option<String>,
}

/// `[uefi]`: where the UEFI boot pieces come from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UefiSpec {
    /// The Debian package holding systemd-boot and systemd-stub
    /// (`systemd-boot-efi`), locked alone: its files are read at build
    /// time and never installed in the root.
    pub package: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackagesSpec {
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// A file the layer adds: inline `content` or a `source` path relative to
/// the layer directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub path: String,
    pub content: Option<String>,
    pub source: Option<String>,
    /// Symlink target instead of contents.
    pub symlink: Option<String>,
    /// A file the build produces, by name (`nodeagent`), instead of contents.
    pub artifact: Option<String>,
    /// Octal string, e.g. "0644".
    pub mode: Option<String>,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    #[serde(default = "default_home")]
    pub home: String,
    #[serde(default)]
    pub comment: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    pub name: String,
    pub gid: u32,
}

/// A value with the reason it is set (shown in docs and reviews).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Setting {
    pub value: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelSpec {
    /// The Debian package holding the kernel, e.g. `linux-image-amd64`.
    pub package: Option<String>,
    /// Command-line arguments with their reasons.
    #[serde(default)]
    pub cmdline: BTreeMap<String, String>,
    /// Modules needed to reach the root (go into the initramfs).
    #[serde(default)]
    pub initramfs_modules: Vec<String>,
    /// Modules loaded from the root after switch_root, before `ready`.
    #[serde(default)]
    pub modules: Vec<String>,
    /// Modules loaded only on a UEFI boot, when the agent marks the boot
    /// good on the ESP (efivarfs, vfat and its code pages): a direct or
    /// PXE boot does not pay for them.
    #[serde(default)]
    pub uefi_modules: Vec<String>,
    /// Modules loaded after the node reports ready (nothing at boot needs
    /// them: netfilter, CNI and overlay networking).
    #[serde(default)]
    pub deferred_modules: Vec<String>,
    /// Modules that must never load (`install <m> /bin/false` in modprobe.d),
    /// name -> reason.
    #[serde(default)]
    pub deny_modules: BTreeMap<String, String>,
}

fn default_home() -> String {
    "/nonexistent".into()
}
