//! GUID Partition Table writer and reader (UEFI 2.10, chapter 5), for
//! 512-byte logical sectors.
//!
//! Contract: [`write_gpt`] takes the disk size, the disk GUID and every
//! partition (type GUID, partition GUID, UTF-16 label, LBA range) and writes
//! the protective MBR (LBA 0), the primary header (LBA 1) and entry array
//! (LBA 2..=33), the backup entry array (N-33..=N-2) and the backup header
//! (LBA N-1), with their CRC32s. It writes nothing else: partition contents
//! are the caller's, and bytes it does not write stay as the sink had them
//! (zeros, or holes in a fresh file). Nothing is random and nothing reads the
//! clock: the same inputs give the same bytes. [`read_gpt`] parses a table
//! back with the contract crate's parser (the one the agent uses), checks
//! magic values, CRCs and that the backup mirrors the primary; tests use it
//! to judge the writer.
//!
//! Why not the `gpt` crate (4.x): it assigns random partition GUIDs on
//! `add_partition` (NOTES.md), and the Discoverable Partitions Specification
//! ties the root and verity partition GUIDs to the verity root hash. The
//! format is small enough (two headers, one entry array, one CRC) that
//! writing it here costs less than working around the crate.

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom, Write};

/// Logical sector size this module writes and reads.
pub const SECTOR: u64 = 512;
/// Number of entries in each partition entry array (the UEFI minimum size,
/// 16 KiB, which every tool expects).
pub const ENTRY_COUNT: u32 = 128;
/// Size of one partition entry.
pub const ENTRY_SIZE: u32 = 128;
/// Sectors taken by one entry array: 128 * 128 / 512.
pub const ENTRY_ARRAY_SECTORS: u64 = (ENTRY_COUNT as u64 * ENTRY_SIZE as u64) / SECTOR;
/// Header signature, "EFI PART".
pub const SIGNATURE: [u8; 8] = *b"EFI PART";
/// Header revision 1.0.
pub const REVISION: u32 = 0x0001_0000;
/// Size of the header fields covered by the header CRC.
pub const HEADER_SIZE: u32 = 92;
/// Longest partition name: 36 UTF-16 code units.
pub const NAME_UNITS: usize = 36;

/// Errors from writing or reading a GPT.
#[derive(Debug, thiserror::Error)]
pub enum GptError {
    #[error("disk size {size} is not a multiple of {SECTOR} bytes")]
    DiskSizeUnaligned { size: u64 },
    #[error("disk of {sectors} sectors is too small for a GPT (need at least {need})")]
    DiskTooSmall { sectors: u64, need: u64 },
    #[error("{count} partitions do not fit in a {ENTRY_COUNT}-entry table")]
    TooManyPartitions { count: usize },
    #[error("partition name `{name}` is {units} UTF-16 units long (at most {NAME_UNITS})")]
    NameTooLong { name: String, units: usize },
    #[error("partition `{name}` ends (LBA {last_lba}) before it starts (LBA {first_lba})")]
    EmptyRange {
        name: String,
        first_lba: u64,
        last_lba: u64,
    },
    #[error("partition `{name}` (LBA {first_lba}..={last_lba}) lies outside the usable LBAs {first_usable}..={last_usable}")]
    OutsideUsable {
        name: String,
        first_lba: u64,
        last_lba: u64,
        first_usable: u64,
        last_usable: u64,
    },
    #[error("partitions `{first}` and `{second}` overlap")]
    Overlap { first: String, second: String },
    #[error("partitions `{first}` and `{second}` share the partition GUID {guid}")]
    DuplicateGuid {
        first: String,
        second: String,
        guid: Guid,
    },
    #[error("partition `{name}` has the null partition GUID")]
    NullGuid { name: String },
    #[error("verity root hash is {len} bytes; deriving two partition UUIDs needs at least 32")]
    RootHashTooShort { len: usize },
    #[error("verity root hash yields a null partition UUID")]
    NullRootHashUuid,
    #[error("protective MBR is missing or malformed")]
    BadProtectiveMbr,
    #[error("GPT header at LBA {lba}: unsupported {field} {value}")]
    Unsupported {
        lba: u64,
        field: &'static str,
        value: u64,
    },
    /// The bytes are not a GPT header or entry array (the contract's parser).
    #[error(transparent)]
    Parse(#[from] contract::gpt::ParseError),
    #[error("GPT header at LBA {lba}: {field} is {found}, expected {expected}")]
    HeaderField {
        lba: u64,
        field: &'static str,
        found: u64,
        expected: u64,
    },
    #[error("backup GPT differs from the primary in {what}")]
    BackupMismatch { what: &'static str },
    #[error("cannot {op} at LBA {lba}")]
    Io {
        op: &'static str,
        lba: u64,
        #[source]
        source: io::Error,
    },
}

/// A GUID held in its canonical (textual) byte order: the bytes of
/// `c12a7328-f81f-11d2-…` in that order, as systemd's `sd_id128_t` holds
/// them. On disk, GPT stores the first three fields little-endian
/// ([`Guid::to_disk`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// The all-zero GUID (an unused entry's type).
    pub const NULL: Guid = Guid([0; 16]);

    /// From the 128-bit number whose hex digits are the textual form.
    pub const fn from_u128(v: u128) -> Guid {
        Guid(v.to_be_bytes())
    }

    /// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (either case).
    pub fn parse(s: &str) -> Option<Guid> {
        let groups: Vec<&str> = s.split('-').collect();
        let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
        if lens != [8, 4, 4, 4, 12] {
            return None;
        }
        let hex: String = groups.concat();
        u128::from_str_radix(&hex, 16).ok().map(Guid::from_u128)
    }

    /// The 16 bytes as GPT stores them (mixed endian).
    pub fn to_disk(&self) -> [u8; 16] {
        let b = &self.0;
        let mut d = *b;
        d[0..4].copy_from_slice(&[b[3], b[2], b[1], b[0]]);
        d[4..6].copy_from_slice(&[b[5], b[4]]);
        d[6..8].copy_from_slice(&[b[7], b[6]]);
        d
    }

    /// From the 16 bytes as GPT stores them.
    pub fn from_disk(d: [u8; 16]) -> Guid {
        // The byte swap is its own inverse.
        Guid(Guid(d).to_disk())
    }

    /// Whether every byte is zero.
    pub fn is_null(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = hex::encode(self.0);
        write!(
            f,
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

/// Serialised in its textual form, as manifests record it.
impl serde::Serialize for Guid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Guid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Guid::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("`{s}` is not a GUID")))
    }
}

/// A partition type GUID. The constants are those of the UAPI Discoverable
/// Partitions Specification that nodeimg's disk uses.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct PartitionType(pub Guid);

impl PartitionType {
    /// EFI System Partition.
    pub const ESP: PartitionType =
        PartitionType(Guid::from_u128(0xC12A7328_F81F_11D2_BA4B_00A0C93EC93B));
    /// Root partition (x86-64), `SD_GPT_ROOT_X86_64`.
    pub const ROOT_X86_64: PartitionType =
        PartitionType(Guid::from_u128(0x4F68BCE3_E8CD_4DB1_96E7_FBCAF984B709));
    /// Root verity partition (x86-64), `SD_GPT_ROOT_X86_64_VERITY`.
    pub const ROOT_VERITY_X86_64: PartitionType =
        PartitionType(Guid::from_u128(0x2C7357ED_EBD2_46D9_AEC1_23D437EC2BF5));
}

/// One partition as written to (or read from) the entry array.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Partition {
    /// What the partition holds.
    pub type_guid: PartitionType,
    /// The partition's own GUID (PARTUUID).
    pub part_guid: Guid,
    /// Label (PARTLABEL), at most 36 UTF-16 code units.
    pub name: String,
    /// First sector, inclusive.
    pub first_lba: u64,
    /// Last sector, inclusive.
    pub last_lba: u64,
    /// Attribute bits (UEFI bits 0..=2, type-specific bits 48..=63).
    pub attributes: u64,
}

/// A parsed table: what [`read_gpt`] returns.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct GptTable {
    /// The disk GUID.
    pub disk_guid: Guid,
    /// Size of the disk in sectors, as the backup header's position says.
    pub disk_sectors: u64,
    /// First usable LBA.
    pub first_usable_lba: u64,
    /// Last usable LBA.
    pub last_usable_lba: u64,
    /// Used entries, in entry-array order.
    pub partitions: Vec<Partition>,
}

/// The first and last LBA that partitions may use on a disk of `sectors`.
pub fn usable_range(sectors: u64) -> (u64, u64) {
    (2 + ENTRY_ARRAY_SECTORS, sectors - 2 - ENTRY_ARRAY_SECTORS)
}

/// Partition UUIDs for a verity-protected root, as the Discoverable
/// Partitions Specification describes and systemd implements them: the root
/// (data) partition's UUID is the first 128 bits of the root hash, the
/// verity partition's the last 128 bits, copied verbatim. systemd-repart
/// (`partition_format_verity_hash`: `memcpy` of the first and last 16 bytes,
/// after asserting the hash has at least 32) sets no version or variant
/// bits, and `dissect_image` skips a partition whose UUID differs from those
/// raw bytes, so none may be set here. Returns `(root, verity)`.
pub fn verity_partition_uuids(root_hash: &[u8]) -> Result<(Guid, Guid), GptError> {
    if root_hash.len() < 32 {
        return Err(GptError::RootHashTooShort {
            len: root_hash.len(),
        });
    }
    let mut root = [0u8; 16];
    let mut verity = [0u8; 16];
    root.copy_from_slice(&root_hash[..16]);
    verity.copy_from_slice(&root_hash[root_hash.len() - 16..]);
    let (root, verity) = (Guid(root), Guid(verity));
    if root.is_null() || verity.is_null() {
        return Err(GptError::NullRootHashUuid);
    }
    Ok((root, verity))
}

/// Writes a protective MBR, both GPT headers and both entry arrays for a
/// disk of `disk_size` bytes into `out` (see the module docs).
pub fn write_gpt<W: Write + Seek>(
    out: &mut W,
    disk_size: u64,
    disk_guid: Guid,
    partitions: &[Partition],
) -> Result<(), GptError> {
    let sectors = check_disk(disk_size)?;
    validate(sectors, partitions)?;
    let entries = encode_entries(partitions);
    let entries_crc = crc32(&entries);
    let last = sectors - 1;
    let backup_entries = last - ENTRY_ARRAY_SECTORS;

    let fields = HeaderFields {
        disk_guid,
        sectors,
        entries_crc,
    };
    write_at(out, 0, &protective_mbr(sectors), "write the protective MBR")?;
    write_at(
        out,
        1,
        &fields.encode(1, last, 2),
        "write the primary header",
    )?;
    write_at(out, 2, &entries, "write the primary entries")?;
    write_at(out, backup_entries, &entries, "write the backup entries")?;
    write_at(
        out,
        last,
        &fields.encode(last, 1, backup_entries),
        "write the backup header",
    )?;
    Ok(())
}

fn check_disk(disk_size: u64) -> Result<u64, GptError> {
    if !disk_size.is_multiple_of(SECTOR) {
        return Err(GptError::DiskSizeUnaligned { size: disk_size });
    }
    let sectors = disk_size / SECTOR;
    // MBR, two headers, two arrays and at least one usable sector.
    let need = 3 + 2 * ENTRY_ARRAY_SECTORS + 1;
    if sectors < need {
        return Err(GptError::DiskTooSmall { sectors, need });
    }
    Ok(sectors)
}

fn validate(sectors: u64, parts: &[Partition]) -> Result<(), GptError> {
    if parts.len() > ENTRY_COUNT as usize {
        return Err(GptError::TooManyPartitions { count: parts.len() });
    }
    let (first_usable, last_usable) = usable_range(sectors);
    for p in parts {
        let units = p.name.encode_utf16().count();
        if units > NAME_UNITS {
            return Err(GptError::NameTooLong {
                name: p.name.clone(),
                units,
            });
        }
        if p.part_guid.is_null() {
            return Err(GptError::NullGuid {
                name: p.name.clone(),
            });
        }
        if p.last_lba < p.first_lba {
            return Err(GptError::EmptyRange {
                name: p.name.clone(),
                first_lba: p.first_lba,
                last_lba: p.last_lba,
            });
        }
        if p.first_lba < first_usable || p.last_lba > last_usable {
            return Err(GptError::OutsideUsable {
                name: p.name.clone(),
                first_lba: p.first_lba,
                last_lba: p.last_lba,
                first_usable,
                last_usable,
            });
        }
    }
    for (i, a) in parts.iter().enumerate() {
        for b in &parts[i + 1..] {
            if a.first_lba <= b.last_lba && b.first_lba <= a.last_lba {
                return Err(GptError::Overlap {
                    first: a.name.clone(),
                    second: b.name.clone(),
                });
            }
            if a.part_guid == b.part_guid {
                return Err(GptError::DuplicateGuid {
                    first: a.name.clone(),
                    second: b.name.clone(),
                    guid: a.part_guid,
                });
            }
        }
    }
    Ok(())
}

fn protective_mbr(sectors: u64) -> [u8; SECTOR as usize] {
    let mut mbr = [0u8; SECTOR as usize];
    let rec = &mut mbr[446..462];
    rec[0] = 0x00; // not bootable
    rec[1..4].copy_from_slice(&[0x00, 0x02, 0x00]); // CHS of LBA 1
    rec[4] = 0xEE; // GPT protective
    rec[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]); // CHS end: not representable
    rec[8..12].copy_from_slice(&1u32.to_le_bytes());
    let size = u32::try_from(sectors - 1).unwrap_or(u32::MAX);
    rec[12..16].copy_from_slice(&size.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    mbr
}

/// Header fields shared by the primary and the backup.
struct HeaderFields {
    disk_guid: Guid,
    sectors: u64,
    entries_crc: u32,
}

impl HeaderFields {
    fn encode(&self, my_lba: u64, alternate_lba: u64, entries_lba: u64) -> [u8; SECTOR as usize] {
        let (first_usable, last_usable) = usable_range(self.sectors);
        let mut h = [0u8; SECTOR as usize];
        h[0..8].copy_from_slice(&SIGNATURE);
        h[8..12].copy_from_slice(&REVISION.to_le_bytes());
        h[12..16].copy_from_slice(&HEADER_SIZE.to_le_bytes());
        // 16..20 header CRC (zero while computing), 20..24 reserved.
        h[24..32].copy_from_slice(&my_lba.to_le_bytes());
        h[32..40].copy_from_slice(&alternate_lba.to_le_bytes());
        h[40..48].copy_from_slice(&first_usable.to_le_bytes());
        h[48..56].copy_from_slice(&last_usable.to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid.to_disk());
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&ENTRY_COUNT.to_le_bytes());
        h[84..88].copy_from_slice(&ENTRY_SIZE.to_le_bytes());
        h[88..92].copy_from_slice(&self.entries_crc.to_le_bytes());
        let crc = crc32(&h[..HEADER_SIZE as usize]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }
}

fn encode_entries(parts: &[Partition]) -> Vec<u8> {
    let mut v = vec![0u8; (ENTRY_COUNT * ENTRY_SIZE) as usize];
    for (p, e) in parts.iter().zip(v.chunks_exact_mut(ENTRY_SIZE as usize)) {
        e[0..16].copy_from_slice(&p.type_guid.0.to_disk());
        e[16..32].copy_from_slice(&p.part_guid.to_disk());
        e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
        e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
        e[48..56].copy_from_slice(&p.attributes.to_le_bytes());
        for (u, slot) in p.name.encode_utf16().zip(e[56..128].chunks_exact_mut(2)) {
            slot.copy_from_slice(&u.to_le_bytes());
        }
    }
    v
}

fn write_at<W: Write + Seek>(
    out: &mut W,
    lba: u64,
    bytes: &[u8],
    op: &'static str,
) -> Result<(), GptError> {
    out.seek(SeekFrom::Start(lba * SECTOR))
        .and_then(|_| out.write_all(bytes))
        .map_err(|source| GptError::Io { op, lba, source })
}

fn read_at<R: Read + Seek>(
    r: &mut R,
    lba: u64,
    len: usize,
    op: &'static str,
) -> Result<Vec<u8>, GptError> {
    let mut buf = vec![0u8; len];
    let offset = lba
        .checked_mul(SECTOR)
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidData));
    offset
        .and_then(|at| r.seek(SeekFrom::Start(at)))
        .and_then(|_| r.read_exact(&mut buf))
        .map_err(|source| GptError::Io { op, lba, source })?;
    Ok(buf)
}

/// A header as parsed, before the primary and backup are compared.
struct ParsedHeader {
    alternate_lba: u64,
    first_usable: u64,
    last_usable: u64,
    disk_guid: Guid,
    entries: Vec<u8>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn expect_field(lba: u64, field: &'static str, found: u64, expected: u64) -> Result<(), GptError> {
    if found == expected {
        Ok(())
    } else {
        Err(GptError::HeaderField {
            lba,
            field,
            found,
            expected,
        })
    }
}

/// Reads the header at `lba` and its entry array. The parsing and the
/// CRC checks are the contract crate's (the agent reads with the same
/// code); the exact shape this writer produces is checked here.
fn read_header<R: Read + Seek>(r: &mut R, lba: u64) -> Result<ParsedHeader, GptError> {
    let block = read_at(r, lba, SECTOR as usize, "read a GPT header")?;
    let h = contract::gpt::Header::parse(&block, lba)?;
    if h.size != HEADER_SIZE {
        return Err(GptError::Unsupported {
            lba,
            field: "header size",
            value: h.size.into(),
        });
    }
    if h.entry_count != ENTRY_COUNT || h.entry_size != ENTRY_SIZE {
        return Err(GptError::Unsupported {
            lba,
            field: "entry array shape",
            value: (u64::from(h.entry_count) << 32) | u64::from(h.entry_size),
        });
    }
    let entries = read_at(
        r,
        h.entries_lba,
        h.entries_len() as usize,
        "read a GPT entry array",
    )?;
    contract::gpt::check_entries(&h, &entries)?;
    Ok(ParsedHeader {
        alternate_lba: h.alternate_lba,
        first_usable: h.first_usable,
        last_usable: h.last_usable,
        disk_guid: Guid::from_disk(h.disk_guid),
        entries,
    })
}

fn decode_entries(entries: &[u8]) -> Result<Vec<Partition>, GptError> {
    let mut parts = Vec::new();
    for (number, e) in (1..).zip(entries.chunks_exact(ENTRY_SIZE as usize)) {
        let Some(e) = contract::gpt::Entry::decode_strict(e, number)? else {
            continue;
        };
        parts.push(Partition {
            type_guid: PartitionType(Guid::from_disk(e.type_guid)),
            part_guid: Guid::from_disk(e.part_guid),
            name: e.name,
            first_lba: e.first_lba,
            last_lba: e.last_lba,
            attributes: e.attributes,
        });
    }
    Ok(parts)
}

/// Reads and checks a GPT on a disk of `disk_size` bytes: the protective
/// MBR, both headers (signature, revision, CRC32, positions) and both entry
/// arrays (CRC32), and that the backup mirrors the primary.
pub fn read_gpt<R: Read + Seek>(r: &mut R, disk_size: u64) -> Result<GptTable, GptError> {
    let sectors = check_disk(disk_size)?;
    let mbr = read_at(r, 0, SECTOR as usize, "read the protective MBR")?;
    if mbr[510..512] != [0x55, 0xAA] || mbr[450] != 0xEE || u32_at(&mbr, 454) != 1 {
        return Err(GptError::BadProtectiveMbr);
    }
    let last = sectors - 1;
    let primary = read_header(r, 1)?;
    expect_field(1, "alternate LBA", primary.alternate_lba, last)?;
    let backup = read_header(r, last)?;
    expect_field(last, "alternate LBA", backup.alternate_lba, 1)?;
    if primary.disk_guid != backup.disk_guid {
        return Err(GptError::BackupMismatch { what: "disk GUID" });
    }
    if (primary.first_usable, primary.last_usable) != (backup.first_usable, backup.last_usable) {
        return Err(GptError::BackupMismatch {
            what: "usable range",
        });
    }
    if primary.entries != backup.entries {
        return Err(GptError::BackupMismatch { what: "entries" });
    }
    Ok(GptTable {
        disk_guid: primary.disk_guid,
        disk_sectors: sectors,
        first_usable_lba: primary.first_usable,
        last_usable_lba: primary.last_usable,
        partitions: decode_entries(&primary.entries)?,
    })
}

/// CRC-32 as UEFI specifies for GPT headers and entry arrays (the
/// contract's, so writer and readers agree by construction).
pub use contract::gpt::crc32;

#[cfg(test)]
#[path = "gpt_tests.rs"]
pub(crate) mod tests;
