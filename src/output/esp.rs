//! The EFI system partition: a FAT32 image built from a list of
//! `(path, bytes)` files, e.g. `EFI/BOOT/BOOTX64.EFI`, `loader/loader.conf`
//! and `EFI/Linux/nodeimg-<version>+3.efi`.
//!
//! Contract: [`write_esp`] formats the whole of `dev` (which it extends to
//! [`EspParams::size`] bytes) as FAT32 with the given volume id and label,
//! creates the directories each path needs, and writes the files in sorted
//! path order. Every timestamp (files, directories, the volume label entry)
//! is [`EspParams::source_date_epoch`] (UTC, FAT's 2-second resolution,
//! clamped to 1980..=2107); nothing reads the clock or draws random numbers,
//! so the same inputs give the same bytes. The FAT writer is `hadris-fat`
//! (NOTES.md: `fatfs` 0.3.6 corrupts subdirectories).

use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::{Mutex, PoisonError};

use hadris_fat::format::{FatFormatOptions, FatTypeSelection, FatVolumeFormatter};
use hadris_fat::time::StaticTimeProvider;
use hadris_fat::{FatDateTime, FatDir, FatVolume, FatVolumeWriteExt};

/// Default ESP size: room for two ~60 MB UKIs (A and B) plus systemd-boot.
pub const DEFAULT_ESP_SIZE: u64 = 256 << 20;
/// Smallest ESP this writer accepts: FAT32 needs at least 65525 clusters.
pub const MIN_ESP_SIZE: u64 = 33 << 20;
/// Default volume label.
pub const DEFAULT_LABEL: &str = "ESP";
/// Default volume serial number (fixed, so the image is reproducible).
pub const DEFAULT_VOLUME_ID: u32 = 0x4E4F_4445; // "NODE"

/// Errors from writing an ESP.
#[derive(Debug, thiserror::Error)]
pub enum EspError {
    #[error("ESP size {size} is below the FAT32 minimum {MIN_ESP_SIZE} or not a multiple of 512")]
    BadSize { size: u64 },
    #[error("volume label `{label}` must be 1 to 11 ASCII upper-case letters, digits, `_` or `-`")]
    BadLabel { label: String },
    #[error("ESP path `{path}` is invalid: {reason}")]
    BadPath { path: String, reason: &'static str },
    #[error("ESP path `{path}` is given twice")]
    DuplicatePath { path: String },
    #[error("ESP path `{path}` is both a file and a directory")]
    FileDirClash { path: String },
    #[error("cannot {op} `{path}` in the ESP")]
    Fat {
        op: &'static str,
        path: String,
        #[source]
        source: hadris_fat::Error,
    },
    #[error("cannot {op} on the ESP image")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

/// One file to place in the ESP.
#[derive(Clone, Copy, Debug)]
pub struct EspFile<'a> {
    /// Path with `/` separators and no leading `/`, e.g. `EFI/BOOT/BOOTX64.EFI`.
    pub path: &'a str,
    /// File contents.
    pub data: &'a [u8],
}

/// Size and identity of the FAT volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EspParams {
    /// Image size in bytes.
    pub size: u64,
    /// Volume serial number.
    pub volume_id: u32,
    /// Volume label (1 to 11 characters: `A-Z`, `0-9`, `_`, `-`).
    pub label: String,
    /// Seconds since the Unix epoch for every timestamp (SOURCE_DATE_EPOCH).
    pub source_date_epoch: u64,
}

impl EspParams {
    /// The default size, id and label with the given SOURCE_DATE_EPOCH.
    pub fn new(source_date_epoch: u64) -> EspParams {
        EspParams {
            size: DEFAULT_ESP_SIZE,
            volume_id: DEFAULT_VOLUME_ID,
            label: DEFAULT_LABEL.to_owned(),
            source_date_epoch,
        }
    }
}

/// Writes a FAT32 ESP holding `files` into `dev` (see the module docs) and
/// returns `dev`, positioned at its start.
pub fn write_esp<D: Read + Write + Seek>(
    mut dev: D,
    params: &EspParams,
    files: &[EspFile<'_>],
) -> Result<D, EspError> {
    if params.size < MIN_ESP_SIZE || !params.size.is_multiple_of(512) {
        return Err(EspError::BadSize { size: params.size });
    }
    check_label(&params.label)?;
    let tree = plan(files)?;
    let stamp = fat_time(params.source_date_epoch);

    // Give the sink its full size first: the formatter does not write the
    // last sectors, and a fresh file or Vec must still end at `size`.
    dev.seek(SeekFrom::Start(params.size - 1))
        .and_then(|_| dev.write_all(&[0]))
        .map_err(|source| EspError::Io {
            op: "size the image",
            source,
        })?;
    let options = FatFormatOptions::new(params.size)
        .fat_type(FatTypeSelection::Fat32)
        .volume_label(&params.label)
        .volume_id(params.volume_id);
    let formatted = FatVolumeFormatter::format(dev, options).map_err(|source| EspError::Fat {
        op: "format",
        path: "/".into(),
        source,
    })?;
    let mut dev = formatted.into_inner();
    // The formatter stamps the label entry with the wall clock: restamp it.
    restamp_label_entry(&mut dev, stamp)?;
    dev.seek(SeekFrom::Start(0))
        .map_err(|source| EspError::Io {
            op: "rewind",
            source,
        })?;

    let fs = FatVolume::builder(dev)
        .time_provider(time_provider(stamp))
        .open()
        .map_err(|source| EspError::Fat {
            op: "open",
            path: "/".into(),
            source,
        })?;
    for (path, data) in &tree {
        add_file(&fs, path, data)?;
    }
    fs.sync().map_err(|source| EspError::Fat {
        op: "sync",
        path: "/".into(),
        source,
    })?;
    let mut dev = fs.into_inner();
    dev.seek(SeekFrom::Start(0))
        .map_err(|source| EspError::Io {
            op: "rewind",
            source,
        })?;
    Ok(dev)
}

fn check_label(label: &str) -> Result<(), EspError> {
    let ok = (1..=11).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(EspError::BadLabel {
            label: label.to_owned(),
        })
    }
}

/// Validates the paths and sorts them; refuses duplicates and a path that is
/// both a file and the parent of another.
fn plan<'a>(files: &[EspFile<'a>]) -> Result<BTreeMap<&'a str, &'a [u8]>, EspError> {
    let mut tree = BTreeMap::new();
    for f in files {
        let bad = |reason| EspError::BadPath {
            path: f.path.to_owned(),
            reason,
        };
        if f.path.starts_with('/') || f.path.ends_with('/') {
            return Err(bad("leading or trailing `/`"));
        }
        for c in f.path.split('/') {
            if c.is_empty() || c == "." || c == ".." {
                return Err(bad("empty, `.` or `..` component"));
            }
            if c.len() > 255 || c.chars().any(|ch| "\\:*?\"<>|".contains(ch) || ch < ' ') {
                return Err(bad("component too long or with a character FAT forbids"));
            }
        }
        if tree.insert(f.path, f.data).is_some() {
            return Err(EspError::DuplicatePath {
                path: f.path.to_owned(),
            });
        }
    }
    for path in tree.keys() {
        let mut prefix = String::new();
        for c in path.split('/') {
            prefix.push_str(c);
            if prefix.len() < path.len() && tree.contains_key(prefix.as_str()) {
                return Err(EspError::FileDirClash { path: prefix });
            }
            prefix.push('/');
        }
    }
    Ok(tree)
}

fn add_file<D: Read + Write + Seek>(
    fs: &FatVolume<D>,
    path: &str,
    data: &[u8],
) -> Result<(), EspError> {
    let fat = |op: &'static str| {
        move |source| EspError::Fat {
            op,
            path: path.to_owned(),
            source,
        }
    };
    let (dirs, name) = path.rsplit_once('/').unwrap_or(("", path));
    let mut dir: FatDir<'_, D> = fs.root_dir();
    for c in dirs.split('/').filter(|c| !c.is_empty()) {
        dir = match dir.find(c).map_err(fat("look up a directory for"))? {
            Some(entry) => fs
                .open_dir_entry(&entry)
                .map_err(fat("open a directory for"))?,
            None => fs
                .create_dir(&dir, c)
                .map_err(fat("create a directory for"))?,
        };
    }
    let entry = fs.create_file(&dir, name).map_err(fat("create"))?;
    let mut w = fs.write_file(&entry).map_err(fat("open"))?;
    let mut rest = data;
    while !rest.is_empty() {
        let n = w.write(rest).map_err(fat("write"))?;
        if n == 0 {
            return Err(EspError::Io {
                op: "write a file (no progress)",
                source: io::ErrorKind::WriteZero.into(),
            });
        }
        rest = &rest[n..];
    }
    w.finish().map_err(fat("finish"))
}

/// FAT date and time (UTC) for a Unix time, clamped to FAT's 1980..=2107.
pub fn fat_time(epoch: u64) -> FatDateTime {
    const MIN: u64 = 315_532_800; // 1980-01-01T00:00:00Z
    const MAX: u64 = 4_354_819_198; // 2107-12-31T23:59:58Z
    let t = epoch.clamp(MIN, MAX);
    let (days, secs) = (t / 86_400, t % 86_400);
    let (year, month, day) = civil_from_days(days);
    FatDateTime::new(
        year,
        month,
        day,
        (secs / 3600) as u8,
        (secs % 3600 / 60) as u8,
        (secs % 60) as u8,
    )
}

/// Proleptic Gregorian date from days since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u16, u8, u8) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year as u16, month, day)
}

/// hadris-fat wants a `&'static` clock. One provider per distinct stamp is
/// leaked (a few bytes each, once per process) rather than per image.
fn time_provider(stamp: FatDateTime) -> &'static StaticTimeProvider {
    type Providers = Vec<&'static StaticTimeProvider>;
    static PROVIDERS: Mutex<Providers> = Mutex::new(Vec::new());
    let mut all = PROVIDERS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(p) = all.iter().find(|p| p.0 == stamp) {
        return p;
    }
    let p: &'static StaticTimeProvider = Box::leak(Box::new(StaticTimeProvider(stamp)));
    all.push(p);
    p
}

/// Rewrites the times of the volume label entry, the first entry of a freshly
/// formatted FAT32 root directory, to `stamp`. Offsets are those of the FAT
/// specification's BPB (Microsoft FAT32 File System Specification 1.03).
fn restamp_label_entry<D: Read + Write + Seek>(
    dev: &mut D,
    stamp: FatDateTime,
) -> Result<(), EspError> {
    let io = |op| move |source| EspError::Io { op, source };
    let mut bpb = [0u8; 512];
    dev.seek(SeekFrom::Start(0))
        .and_then(|_| dev.read_exact(&mut bpb))
        .map_err(io("read the boot sector"))?;
    let u16_at = |at: usize| u64::from(u16::from_le_bytes([bpb[at], bpb[at + 1]]));
    let u32_at = |at: usize| {
        u64::from(u32::from_le_bytes([
            bpb[at],
            bpb[at + 1],
            bpb[at + 2],
            bpb[at + 3],
        ]))
    };
    let bytes_per_sector = u16_at(11);
    let sectors_per_cluster = u64::from(bpb[13]);
    let reserved = u16_at(14);
    let fats = u64::from(bpb[16]);
    let fat_size = u32_at(36);
    let root_cluster = u32_at(44);
    let data_start = (reserved + fats * fat_size) * bytes_per_sector;
    let root =
        data_start + (root_cluster.saturating_sub(2)) * sectors_per_cluster * bytes_per_sector;

    let mut entry = [0u8; 32];
    dev.seek(SeekFrom::Start(root))
        .and_then(|_| dev.read_exact(&mut entry))
        .map_err(io("read the volume label entry"))?;
    const ATTR_VOLUME_ID: u8 = 0x08;
    if entry[11] != ATTR_VOLUME_ID {
        return Err(EspError::Io {
            op: "find the volume label entry",
            source: io::ErrorKind::InvalidData.into(),
        });
    }
    let (date, time, _) = stamp.to_raw();
    entry[13] = 0; // creation time, 10 ms units
    entry[14..16].copy_from_slice(&time.to_le_bytes());
    entry[16..18].copy_from_slice(&date.to_le_bytes());
    entry[18..20].copy_from_slice(&date.to_le_bytes());
    entry[22..24].copy_from_slice(&time.to_le_bytes());
    entry[24..26].copy_from_slice(&date.to_le_bytes());
    dev.seek(SeekFrom::Start(root))
        .and_then(|_| dev.write_all(&entry))
        .map_err(io("write the volume label entry"))
}

#[cfg(test)]
#[path = "esp_tests.rs"]
pub(crate) mod tests;
