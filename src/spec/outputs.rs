//! `outputs = [...]` in an image spec and `--format` on the command line:
//! which bootable outputs a build writes besides the root image, its verity
//! tree, the kernel and the initramfs (those are always written).

use std::fmt;
use std::str::FromStr;

use crate::output::formats::Format;

/// One output kind, named as in the spec and on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OutputKind {
    /// The Unified Kernel Image (systemd-stub + kernel + initramfs + command line).
    Uki,
    /// The GPT disk: ESP with systemd-boot and the UKI, A/B root and verity slots.
    DiskRaw,
    /// A disk format converted from the raw disk.
    Disk(Format),
    /// Kernel, an initramfs carrying the root, and an iPXE script.
    Pxe,
}

impl OutputKind {
    /// Every kind, in the order builds write them.
    pub const ALL: [OutputKind; 7] = [
        OutputKind::Uki,
        OutputKind::DiskRaw,
        OutputKind::Disk(Format::DiskQcow2),
        OutputKind::Disk(Format::Vhd),
        OutputKind::Disk(Format::Gce),
        OutputKind::Disk(Format::Vmdk),
        OutputKind::Pxe,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OutputKind::Uki => "uki",
            OutputKind::DiskRaw => "disk-raw",
            OutputKind::Disk(f) => f.name(),
            OutputKind::Pxe => "pxe",
        }
    }

    /// Whether this output is (or is made from) the UEFI disk, and so needs
    /// the UKI and systemd-boot.
    pub fn needs_uki(self) -> bool {
        !matches!(self, OutputKind::Pxe)
    }

    /// Whether this output is made from the raw GPT disk.
    pub fn needs_disk(self) -> bool {
        matches!(self, OutputKind::DiskRaw | OutputKind::Disk(_))
    }

    /// The accepted names, for error messages.
    pub fn names() -> String {
        OutputKind::ALL.map(OutputKind::name).join(", ")
    }
}

impl fmt::Display for OutputKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An output name that is not one of [`OutputKind::ALL`].
#[derive(Debug, thiserror::Error)]
#[error("unknown output `{name}` (expected one of: {})", OutputKind::names())]
pub struct UnknownOutput {
    pub name: String,
}

impl FromStr for OutputKind {
    type Err = UnknownOutput;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OutputKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownOutput { name: s.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in OutputKind::ALL {
            assert_eq!(k.name().parse::<OutputKind>().unwrap(), k);
        }
        let e = "iso".parse::<OutputKind>().unwrap_err().to_string();
        assert!(e.contains("`iso`") && e.contains("disk-qcow2"), "{e}");
    }
}
