//! Where a node's machine config comes from, first found wins:
//! 1. QEMU's fw_cfg entry `opt/org.nodeimg/config` (module `qemu_fw_cfg`);
//! 2. a config drive: a FAT file system labelled `NODEIMG` holding
//!    `config.toml` (any tool writes one: `mkfs.vfat -n NODEIMG`, mtools);
//! 3. the URL of `nodeimg.config=URL#sha256=HEX` on the kernel command
//!    line, fetched once the network is up ([`crate::config_fetch`]: the
//!    bytes come back only when their sha256 is the pin);
//! 4. the copy stored on the state partition by an earlier boot.
//!
//! The URL needs the network, which is the caller's to bring up, so the
//! search is split: [`find_attached`] (1, 2), then the caller fetches
//! (3), then [`find_stored`] (4). A URL that cannot be fetched is an error,
//! not a fall-back to the stored copy: the command line names the config
//! the node must run, and an older one would hide the failure.
//!
//! The text found on a boot is stored (mode 0600, written to a temporary
//! name and renamed) so later boots without a source keep their config.
//! Parsing and checking are the contract's; this module only finds bytes.

use std::io::Read;
use std::path::{Path, PathBuf};

pub use contract::report::ConfigReport;
use serde::Serialize;

/// The fw_cfg file the lab (or any QEMU user) passes with
/// `-fw_cfg name=opt/org.nodeimg/config,file=…`.
pub const FW_CFG: &str = "/sys/firmware/qemu_fw_cfg/by_name/opt/org.nodeimg/config/raw";
/// The label a config drive carries.
pub const DRIVE_LABEL: &str = "NODEIMG";
/// The file on a config drive.
pub const DRIVE_FILE: &str = "config.toml";
/// The stored copy on the state partition.
pub const STORED: &str = contract::paths::STORED_CONFIG;
/// Where a config drive is mounted while it is read.
const DRIVE_MOUNT: &str = "/run/nodeimg/config-drive";
/// A config larger than this is refused before it is read whole.
pub const MAX_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Source {
    FwCfg,
    ConfigDrive {
        device: String,
    },
    /// Fetched from `url` (without its `#sha256=` pin).
    Url {
        url: String,
    },
    Stored,
    /// The stored copy, applied through the node API: it replaces the
    /// boot source's config whose sha256 is `replaces`.
    Applied {
        replaces: Option<String>,
    },
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::FwCfg => write!(f, "fw_cfg {FW_CFG}"),
            Source::ConfigDrive { device } => write!(f, "config drive {device}"),
            Source::Url { url } => write!(f, "{url}"),
            Source::Stored => write!(f, "stored copy {STORED}"),
            Source::Applied { .. } => write!(f, "applied config {STORED}"),
        }
    }
}

/// The report's `config` for a config found at `source`: the source and
/// the text's sha256, never the text (it holds the node's key).
pub fn report_for(source: Source, data: &[u8]) -> ConfigReport {
    let (name, device, url, replaces) = match source {
        Source::FwCfg => ("fw-cfg", None, None, None),
        Source::ConfigDrive { device } => ("config-drive", Some(device), None, None),
        Source::Url { url } => ("url", None, Some(url), None),
        Source::Stored => ("stored", None, None, None),
        Source::Applied { replaces } => ("applied", None, None, replaces),
    };
    ConfigReport {
        source: name.into(),
        device,
        url,
        sha256: Some(crate::digest::sha256_named(data)),
        replaces,
        ..ConfigReport::default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} is larger than {MAX_BYTES} bytes")]
    TooLarge { what: String },
}

fn read_bounded(path: &Path, what: &str) -> Result<Vec<u8>, SourceError> {
    let io = |source| SourceError::Io {
        what: what.to_string(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut data = Vec::new();
    f.by_ref()
        .take(MAX_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(io)?;
    if data.len() as u64 > MAX_BYTES {
        return Err(SourceError::TooLarge {
            what: what.to_string(),
        });
    }
    Ok(data)
}

/// The FAT volume label in a boot sector, if the sector is a FAT one.
/// FAT32 keeps it at 0x47, FAT12/16 at 0x2B (after the extended boot
/// signature 0x29); both end the sector with 0x55 0xAA.
pub fn fat_label(sector: &[u8]) -> Option<String> {
    if sector.get(510..512)? != [0x55, 0xAA] {
        return None;
    }
    let fat_size_16 = u16::from_le_bytes([*sector.get(0x16)?, *sector.get(0x17)?]);
    let (sig_at, label_at, type_at) = if fat_size_16 == 0 {
        (0x42, 0x47, 0x52)
    } else {
        (0x26, 0x2B, 0x36)
    };
    if *sector.get(sig_at)? != 0x29 || !sector.get(type_at..type_at + 3)?.starts_with(b"FAT") {
        return None;
    }
    let label = sector.get(label_at..label_at + 11)?;
    Some(String::from_utf8_lossy(label).trim_end().to_string())
}

/// Block devices whose first sector is a FAT file system labelled
/// [`DRIVE_LABEL`] (whole disks and partitions, sorted by name).
pub fn config_drives(sys_block: &Path, dev: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(sys_block) else {
        return Vec::new();
    };
    let mut names: Vec<String> = rd
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("loop") && !n.starts_with("dm-") && !n.starts_with("ram"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| dev.join(n))
        .filter(|node| {
            let mut sector = [0u8; 512];
            std::fs::File::open(node)
                .and_then(|mut f| f.read_exact(&mut sector))
                .is_ok()
                && fat_label(&sector).as_deref() == Some(DRIVE_LABEL)
        })
        .collect()
}

/// Reads `config.toml` from a config drive: mounts it read-only (vfat),
/// reads, unmounts.
fn read_drive(device: &Path) -> Result<Vec<u8>, SourceError> {
    use rustix::mount::{mount, unmount, MountFlags, UnmountFlags};
    let what = format!("config drive {}", device.display());
    let io = |source: std::io::Error| SourceError::Io {
        what: what.clone(),
        source,
    };
    std::fs::create_dir_all(DRIVE_MOUNT).map_err(io)?;
    mount(
        device,
        DRIVE_MOUNT,
        "vfat",
        MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        None,
    )
    .map_err(|e| io(e.into()))?;
    let data = read_bounded(&Path::new(DRIVE_MOUNT).join(DRIVE_FILE), &what);
    let _ = unmount(DRIVE_MOUNT, UnmountFlags::empty());
    data
}

/// A config attached to the machine (fw_cfg, then a config drive) and
/// where it came from; `None` when neither holds one. `load_vfat` loads
/// the FAT modules (only when a drive is there).
pub fn find_attached(
    mut load_vfat: impl FnMut() -> Result<(), String>,
) -> Result<Option<(Source, Vec<u8>)>, SourceError> {
    if Path::new(FW_CFG).exists() {
        return Ok(Some((
            Source::FwCfg,
            read_bounded(Path::new(FW_CFG), "fw_cfg")?,
        )));
    }
    if let Some(device) = config_drives(Path::new("/sys/class/block"), Path::new("/dev"))
        .into_iter()
        .next()
    {
        load_vfat().map_err(|e| SourceError::Io {
            what: "loading vfat".into(),
            source: std::io::Error::other(e),
        })?;
        let data = read_drive(&device)?;
        let source = Source::ConfigDrive {
            device: device.display().to_string(),
        };
        return Ok(Some((source, data)));
    }
    Ok(None)
}

/// The copy an earlier boot stored; `None` when there is none.
pub fn find_stored() -> Result<Option<(Source, Vec<u8>)>, SourceError> {
    match read_bounded(Path::new(STORED), "stored config") {
        Ok(data) => Ok(Some((Source::Stored, data))),
        Err(SourceError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Keeps `data` as the stored copy: 0600, temporary name, rename.
pub fn store(data: &[u8]) -> Result<(), SourceError> {
    let io = |source| SourceError::Io {
        what: format!("storing {STORED}"),
        source,
    };
    let path = Path::new(STORED);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    crate::sys::write_atomic(path, data, 0o600).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_of_fat_file_systems_made_by_mkfs() {
        // Boot sectors as mkfs.vfat writes them (fields that matter only).
        let mut fat32 = [0u8; 512];
        fat32[510] = 0x55;
        fat32[511] = 0xAA;
        fat32[0x42] = 0x29;
        fat32[0x47..0x52].copy_from_slice(b"NODEIMG    ");
        fat32[0x52..0x5A].copy_from_slice(b"FAT32   ");
        assert_eq!(fat_label(&fat32).as_deref(), Some("NODEIMG"));
        let mut fat16 = [0u8; 512];
        fat16[510] = 0x55;
        fat16[511] = 0xAA;
        fat16[0x16] = 0x20; // sectors per FAT: not FAT32
        fat16[0x26] = 0x29;
        fat16[0x2B..0x36].copy_from_slice(b"CIDATA     ");
        fat16[0x36..0x3E].copy_from_slice(b"FAT16   ");
        assert_eq!(fat_label(&fat16).as_deref(), Some("CIDATA"));
        fat16[0x36] = b'X';
        assert_eq!(fat_label(&fat16), None, "not FAT");
        assert_eq!(fat_label(&[0u8; 512]), None);
        assert_eq!(fat_label(&[0u8; 10]), None);
    }

    #[test]
    fn a_real_mkfs_vfat_image_is_found_by_its_label() {
        let Ok(mkfs) = which("mkfs.vfat") else {
            panic!("mkfs.vfat is missing: run scripts/setup.sh (dosfstools)");
        };
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("sys");
        let dev = dir.path().join("dev");
        std::fs::create_dir_all(sys.join("vdb")).unwrap();
        std::fs::create_dir_all(sys.join("vda")).unwrap();
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::write(dev.join("vda"), vec![0u8; 4096]).unwrap();
        let img = dev.join("vdb");
        std::fs::write(&img, vec![0u8; 8 << 20]).unwrap();
        let ok = std::process::Command::new(mkfs)
            .args(["-n", "NODEIMG"])
            .arg(&img)
            .output()
            .unwrap()
            .status
            .success();
        assert!(ok);
        assert_eq!(config_drives(&sys, &dev), vec![img]);
    }

    fn which(name: &str) -> Result<PathBuf, ()> {
        ["/usr/sbin", "/sbin", "/usr/bin"]
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.is_file())
            .ok_or(())
    }
}
