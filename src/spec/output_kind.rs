//! `outputs = [...]` in an image spec and `--format` on the command line:
//! which bootable outputs a build writes besides the root image, its verity
//! tree, the kernel and the initramfs (those are always written).

use std::fmt;
use std::str::FromStr;

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

/// An output disk format, named as in `outputs = [...]` and `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Format {
    /// qcow2 for QEMU/KVM and the lab (`disk-qcow2`).
    DiskQcow2,
    /// Fixed VHD for Azure (`vhd`).
    Vhd,
    /// `disk.raw` in a gzip'd old-GNU tar for GCE image import (`gce`).
    Gce,
    /// Stream-optimised VMDK for AWS import and VMware (`vmdk`).
    Vmdk,
}

impl Format {
    /// Every format, in the order of [`Format::NAMES`].
    pub const ALL: [Format; 4] = [Format::DiskQcow2, Format::Vhd, Format::Gce, Format::Vmdk];
    /// The accepted names.
    pub const NAMES: [&'static str; 4] = ["disk-qcow2", "vhd", "gce", "vmdk"];

    /// The name this format parses from.
    pub fn name(self) -> &'static str {
        match self {
            Format::DiskQcow2 => "disk-qcow2",
            Format::Vhd => "vhd",
            Format::Gce => "gce",
            Format::Vmdk => "vmdk",
        }
    }

    /// The usual file-name suffix, dot included.
    pub fn extension(self) -> &'static str {
        match self {
            Format::DiskQcow2 => ".qcow2",
            Format::Vhd => ".vhd",
            Format::Gce => ".tar.gz",
            Format::Vmdk => ".vmdk",
        }
    }
}

impl FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Format::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| UnknownFormat { name: s.to_owned() })
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A disk format name that is not one of [`Format::NAMES`].
#[derive(Debug, thiserror::Error)]
#[error("unknown output format `{name}`; choose one of: {}", Format::NAMES.join(", "))]
pub struct UnknownFormat {
    pub name: String,
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

    #[test]
    fn format_names_round_trip_and_unknown_lists_choices() {
        assert_eq!(Format::ALL.map(Format::name), Format::NAMES);
        for f in Format::ALL {
            assert_eq!(f.name().parse::<Format>().unwrap(), f);
            assert_eq!(f.to_string(), f.name());
        }
        let err = "qcow2".parse::<Format>().unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown output format `qcow2`; choose one of: disk-qcow2, vhd, gce, vmdk"
        );
    }
}
