//! The GPT as the agent needs it (UEFI 2.10, chapter 5).
//!
//! Reading: [`parse_header`] and [`partitions`] turn `PARTUUID=<guid>` into a
//! partition number. The kernel does not put PARTUUID in sysfs (udev learns it
//! by probing), so `devices.rs` reads the primary header and entry array
//! itself. CRCs are not checked there: the GPT only says where to look, and
//! dm-verity judges the content.
//!
//! Editing: [`Table::read`] reads and checks the primary table of a disk that
//! will be written (protective MBR, header and entry CRC32s, geometry, no
//! overlapping partitions), and [`Table::edit`] computes the sector writes
//! that store a changed entry array with the backup table moved to the disk's
//! real last LBA (a disk image copied to a larger disk keeps its backup where
//! the image ended). Both are pure over `Read + Seek` and bytes; [`apply`]
//! writes an [`Edit`] to any `Write + Seek`, a block device or a `Vec<u8>`.

use std::io::{self, Read, Seek, SeekFrom, Write};

/// "EFI PART" at the start of the header (LBA 1).
const SIGNATURE: &[u8; 8] = b"EFI PART";
/// Header revision 1.0, the only one there is.
const REVISION: u32 = 0x0001_0000;
/// Bytes of the header covered by its CRC32 (what every tool writes).
const HEADER_SIZE: u32 = 92;
/// Offset of the header CRC32 field.
const HEADER_CRC_AT: usize = 16;
/// Partition type of a protective MBR record.
const MBR_PROTECTIVE: u8 = 0xEE;
/// The four MBR partition records start here, 16 bytes each.
const MBR_RECORDS_AT: usize = 446;
/// Bytes of an entry's name field: 36 UTF-16LE code units.
const NAME_BYTES: usize = 72;

/// Where the entry array is and how it is shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub entries_lba: u64,
    pub entry_count: u32,
    pub entry_size: u32,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn guid_at(b: &[u8], at: usize) -> Option<[u8; 16]> {
    b.get(at..at + 16)?.try_into().ok()
}

/// Copies `src` into `dst` at `at`; a write past the end is dropped (callers
/// size their buffers, so this never happens).
fn put(dst: &mut [u8], at: usize, src: &[u8]) {
    if let Some(d) = dst.get_mut(at..at + src.len()) {
        d.copy_from_slice(src);
    }
}

/// Parses the header block (LBA 1); `None` when it is not a sane GPT header.
pub fn parse_header(block: &[u8]) -> Option<Header> {
    if block.get(..8)? != SIGNATURE {
        return None;
    }
    let h = Header {
        entries_lba: u64_at(block, 72)?,
        entry_count: u32_at(block, 80)?,
        entry_size: u32_at(block, 84)?,
    };
    sane_shape(h.entry_count, h.entry_size).then_some(h)
}

fn sane_shape(count: u32, size: u32) -> bool {
    (128..=4096).contains(&size) && size.is_multiple_of(8) && count <= 1024
}

/// GUID bytes as text: the first three fields are little-endian on disk.
pub fn guid_string(g: &[u8]) -> Option<String> {
    let b: &[u8; 16] = g.get(..16)?.try_into().ok()?;
    Some(format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    ))
}

/// GUID text (any case) to its on-disk bytes; `None` unless 8-4-4-4-12 hex digits.
pub fn guid_bytes(s: &str) -> Option<[u8; 16]> {
    let groups: Vec<&str> = s.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    if lens != [8, 4, 4, 4, 12] || !s.chars().all(|c| c == '-' || c.is_ascii_hexdigit()) {
        return None;
    }
    let hex: Vec<u8> = s.bytes().filter(|b| *b != b'-').collect();
    let mut out = [0u8; 16];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    // text order to the mixed-endian disk order
    out.get_mut(..4)?.reverse();
    out.get_mut(4..6)?.reverse();
    out.get_mut(6..8)?.reverse();
    Some(out)
}

/// (1-based partition number, unique GUID) of every used entry.
pub fn partitions(h: &Header, entries: &[u8]) -> Vec<(u32, String)> {
    let size = h.entry_size as usize;
    (0..h.entry_count)
        .filter_map(|i| {
            let e = entries.get(i as usize * size..(i as usize + 1) * size)?;
            if e.get(..16)?.iter().all(|&b| b == 0) {
                return None; // unused entry: zero type GUID
            }
            Some((i + 1, guid_string(e.get(16..32)?)?))
        })
        .collect()
}

/// CRC-32 as UEFI specifies it for headers and entry arrays (IEEE 802.3:
/// reflected polynomial 0xEDB88320, initial value and final XOR all ones).
/// Bitwise: a 16 KiB entry array is all it ever sees.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Why a table cannot be read or edited. Each variant says where.
#[derive(Debug, thiserror::Error)]
pub enum GptError {
    #[error("logical block size {lbs} is not 512 or 4096")]
    BlockSize { lbs: u64 },
    #[error("read {what} at byte {offset}")]
    Read {
        what: &'static str,
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("write {what} at LBA {lba}")]
    Write {
        what: &'static str,
        lba: u64,
        #[source]
        source: io::Error,
    },
    #[error("sync after writing {what}")]
    Sync {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("no protective MBR (0xEE record and 55AA signature) in LBA 0")]
    NoProtectiveMbr,
    #[error("no GPT header at LBA {lba}")]
    NoHeader { lba: u64 },
    #[error("GPT header at LBA {lba}: {field} is {found}, expected {expected}")]
    Field {
        lba: u64,
        field: &'static str,
        found: u64,
        expected: String,
    },
    #[error("GPT header at LBA {lba}: CRC32 {stored:#010x} but computed {computed:#010x}")]
    HeaderCrc {
        lba: u64,
        stored: u32,
        computed: u32,
    },
    #[error("GPT entry array at LBA {lba}: CRC32 {stored:#010x} but computed {computed:#010x}")]
    EntriesCrc {
        lba: u64,
        stored: u32,
        computed: u32,
    },
    #[error("partition {number} (LBA {first}..={last}) is outside the usable LBAs {first_usable}..={last_usable}")]
    Outside {
        number: u32,
        first: u64,
        last: u64,
        first_usable: u64,
        last_usable: u64,
    },
    #[error("partitions {a} and {b} overlap")]
    Overlap { a: u32, b: u32 },
    #[error("the disk has {disk_lbas} LBAs but its GPT reaches LBA {needs}: it shrank, or the table is not this disk's")]
    DiskTooSmall { disk_lbas: u64, needs: u64 },
    #[error("partition entry {number} does not exist in a table of {count}")]
    NoSuchEntry { number: u32, count: u32 },
}

/// Every field of a GPT header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullHeader {
    pub my_lba: u64,
    pub alternate_lba: u64,
    pub first_usable: u64,
    pub last_usable: u64,
    /// On-disk (mixed-endian) bytes.
    pub disk_guid: [u8; 16],
    pub entries_lba: u64,
    pub entry_count: u32,
    pub entry_size: u32,
    pub entries_crc: u32,
}

impl FullHeader {
    /// Parses and checks the header block read from `lba`: signature,
    /// revision, size, CRC32, `my_lba` and the entry array's shape.
    pub fn parse(block: &[u8], lba: u64) -> Result<FullHeader, GptError> {
        if block.get(..8) != Some(SIGNATURE.as_slice()) {
            return Err(GptError::NoHeader { lba });
        }
        let field = |field: &'static str, found: u64, expected: &str| GptError::Field {
            lba,
            field,
            found,
            expected: expected.to_string(),
        };
        let short = || field("length", block.len() as u64, "at least 92 bytes");
        let revision = u32_at(block, 8).ok_or_else(short)?;
        if revision != REVISION {
            return Err(field("revision", revision.into(), "0x10000 (1.0)"));
        }
        let size = u32_at(block, 12).ok_or_else(short)?;
        if size < HEADER_SIZE || size as usize > block.len() {
            return Err(field("header size", size.into(), "92 up to the block size"));
        }
        let stored = u32_at(block, HEADER_CRC_AT).ok_or_else(short)?;
        let mut covered = block.get(..size as usize).ok_or_else(short)?.to_vec();
        put(&mut covered, HEADER_CRC_AT, &[0; 4]);
        let computed = crc32(&covered);
        if stored != computed {
            return Err(GptError::HeaderCrc {
                lba,
                stored,
                computed,
            });
        }
        let u64f = |at| u64_at(block, at).ok_or_else(short);
        let h = FullHeader {
            my_lba: u64f(24)?,
            alternate_lba: u64f(32)?,
            first_usable: u64f(40)?,
            last_usable: u64f(48)?,
            disk_guid: guid_at(block, 56).ok_or_else(short)?,
            entries_lba: u64f(72)?,
            entry_count: u32_at(block, 80).ok_or_else(short)?,
            entry_size: u32_at(block, 84).ok_or_else(short)?,
            entries_crc: u32_at(block, 88).ok_or_else(short)?,
        };
        if h.my_lba != lba {
            return Err(field("my LBA", h.my_lba, &lba.to_string()));
        }
        if !sane_shape(h.entry_count, h.entry_size) {
            return Err(field(
                "entry size",
                h.entry_size.into(),
                "128..=4096 bytes, at most 1024 entries",
            ));
        }
        Ok(h)
    }

    /// The header as one `lbs`-byte block, with its CRC32 computed.
    pub fn encode(&self, lbs: u64) -> Vec<u8> {
        let mut b = vec![0u8; lbs as usize];
        put(&mut b, 0, SIGNATURE);
        put(&mut b, 8, &REVISION.to_le_bytes());
        put(&mut b, 12, &HEADER_SIZE.to_le_bytes());
        put(&mut b, 24, &self.my_lba.to_le_bytes());
        put(&mut b, 32, &self.alternate_lba.to_le_bytes());
        put(&mut b, 40, &self.first_usable.to_le_bytes());
        put(&mut b, 48, &self.last_usable.to_le_bytes());
        put(&mut b, 56, &self.disk_guid);
        put(&mut b, 72, &self.entries_lba.to_le_bytes());
        put(&mut b, 80, &self.entry_count.to_le_bytes());
        put(&mut b, 84, &self.entry_size.to_le_bytes());
        put(&mut b, 88, &self.entries_crc.to_le_bytes());
        let crc = crc32(b.get(..HEADER_SIZE as usize).unwrap_or_default());
        put(&mut b, HEADER_CRC_AT, &crc.to_le_bytes());
        b
    }

    /// Bytes of the entry array.
    pub fn entries_len(&self) -> u64 {
        u64::from(self.entry_count) * u64::from(self.entry_size)
    }

    /// LBAs the entry array takes (rounded up to whole blocks).
    pub fn entries_lbas(&self, lbs: u64) -> u64 {
        self.entries_len().div_ceil(lbs)
    }
}

/// One used partition entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// On-disk bytes of the partition type GUID.
    pub type_guid: [u8; 16],
    /// On-disk bytes of the unique partition GUID (PARTUUID).
    pub part_guid: [u8; 16],
    pub first_lba: u64,
    /// Inclusive.
    pub last_lba: u64,
    pub attributes: u64,
    /// At most 36 UTF-16 code units (longer names are cut).
    pub name: String,
}

impl Entry {
    /// `None` for an unused entry (zero type GUID) or a truncated one.
    pub fn decode(b: &[u8]) -> Option<Entry> {
        let type_guid = guid_at(b, 0)?;
        if type_guid == [0; 16] {
            return None;
        }
        let units: Vec<u16> = b
            .get(56..56 + NAME_BYTES)?
            .chunks_exact(2)
            .map(|c| {
                u16::from_le_bytes([
                    c.first().copied().unwrap_or(0),
                    c.get(1).copied().unwrap_or(0),
                ])
            })
            .take_while(|&u| u != 0)
            .collect();
        Some(Entry {
            type_guid,
            part_guid: guid_at(b, 16)?,
            first_lba: u64_at(b, 32)?,
            last_lba: u64_at(b, 40)?,
            attributes: u64_at(b, 48)?,
            name: String::from_utf16_lossy(&units),
        })
    }

    /// Writes the entry over `b` (one entry's bytes; the rest is zeroed).
    pub fn encode_into(&self, b: &mut [u8]) {
        b.fill(0);
        put(b, 0, &self.type_guid);
        put(b, 16, &self.part_guid);
        put(b, 32, &self.first_lba.to_le_bytes());
        put(b, 40, &self.last_lba.to_le_bytes());
        put(b, 48, &self.attributes.to_le_bytes());
        for (i, u) in self.name.encode_utf16().take(NAME_BYTES / 2).enumerate() {
            put(b, 56 + 2 * i, &u.to_le_bytes());
        }
    }

    /// Size in LBAs.
    pub fn lbas(&self) -> u64 {
        self.last_lba
            .saturating_sub(self.first_lba)
            .saturating_add(1)
    }
}

/// The checked primary table of one disk, and the disk's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Logical block size: 512 or 4096.
    pub lbs: u64,
    /// Blocks on the disk now (it may have grown since the table was written).
    pub disk_lbas: u64,
    /// LBA 0 (`lbs` bytes).
    pub mbr: Vec<u8>,
    pub header: FullHeader,
    /// The raw entry array, `entry_count * entry_size` bytes.
    pub entries: Vec<u8>,
}

fn read_exact_at<R: Read + Seek>(
    r: &mut R,
    offset: u64,
    len: u64,
    what: &'static str,
) -> Result<Vec<u8>, GptError> {
    let err = |source| GptError::Read {
        what,
        offset,
        source,
    };
    let mut buf =
        vec![0u8; usize::try_from(len).map_err(|_| err(io::ErrorKind::InvalidInput.into()))?];
    r.seek(SeekFrom::Start(offset)).map_err(err)?;
    r.read_exact(&mut buf).map_err(err)?;
    Ok(buf)
}

/// `true` when LBA 0 holds an MBR with a 0xEE (GPT protective) record.
fn has_protective_record(mbr: &[u8]) -> bool {
    mbr.get(510..512) == Some([0x55, 0xAA].as_slice())
        && (0..4).any(|i| mbr.get(MBR_RECORDS_AT + 16 * i + 4) == Some(&MBR_PROTECTIVE))
}

impl Table {
    /// Reads LBA 0, the primary header and its entry array from a disk of
    /// `disk_bytes` bytes, and checks everything an edit relies on.
    pub fn read<R: Read + Seek>(r: &mut R, lbs: u64, disk_bytes: u64) -> Result<Table, GptError> {
        if lbs != 512 && lbs != 4096 {
            return Err(GptError::BlockSize { lbs });
        }
        let mbr = read_exact_at(r, 0, lbs, "the protective MBR")?;
        if !has_protective_record(&mbr) {
            return Err(GptError::NoProtectiveMbr);
        }
        let block = read_exact_at(r, lbs, lbs, "the primary GPT header")?;
        let header = FullHeader::parse(&block, 1)?;
        let offset = header.entries_lba.saturating_mul(lbs);
        let entries = read_exact_at(r, offset, header.entries_len(), "the GPT entry array")?;
        let computed = crc32(&entries);
        if computed != header.entries_crc {
            return Err(GptError::EntriesCrc {
                lba: header.entries_lba,
                stored: header.entries_crc,
                computed,
            });
        }
        let t = Table {
            lbs,
            disk_lbas: disk_bytes / lbs,
            mbr,
            header,
            entries,
        };
        t.check()?;
        Ok(t)
    }

    /// Geometry: the array between the header and the first usable LBA, the
    /// usable range and the backup inside the disk, partitions inside the
    /// usable range and apart from each other.
    fn check(&self) -> Result<(), GptError> {
        let h = &self.header;
        let field = |field, found, expected: String| GptError::Field {
            lba: 1,
            field,
            found,
            expected,
        };
        let array_end = h.entries_lba.saturating_add(h.entries_lbas(self.lbs));
        if h.entries_lba < 2 || array_end > h.first_usable {
            return Err(field(
                "entry array LBA",
                h.entries_lba,
                format!(
                    "2 or more, ending before the first usable LBA {}",
                    h.first_usable
                ),
            ));
        }
        if h.first_usable > h.last_usable {
            return Err(field(
                "first usable LBA",
                h.first_usable,
                format!("at most the last usable LBA {}", h.last_usable),
            ));
        }
        if h.alternate_lba <= h.last_usable {
            return Err(field(
                "alternate LBA",
                h.alternate_lba,
                format!("after the last usable LBA {}", h.last_usable),
            ));
        }
        let needs = h
            .alternate_lba
            .max(h.last_usable.saturating_add(h.entries_lbas(self.lbs)));
        if needs >= self.disk_lbas {
            return Err(GptError::DiskTooSmall {
                disk_lbas: self.disk_lbas,
                needs,
            });
        }
        let used = self.used();
        for (n, e) in &used {
            if e.first_lba > e.last_lba
                || e.first_lba < h.first_usable
                || e.last_lba > h.last_usable
            {
                return Err(GptError::Outside {
                    number: *n,
                    first: e.first_lba,
                    last: e.last_lba,
                    first_usable: h.first_usable,
                    last_usable: h.last_usable,
                });
            }
        }
        for (i, (a, ea)) in used.iter().enumerate() {
            for (b, eb) in used.iter().skip(i + 1) {
                if ea.first_lba <= eb.last_lba && eb.first_lba <= ea.last_lba {
                    return Err(GptError::Overlap { a: *a, b: *b });
                }
            }
        }
        Ok(())
    }

    /// The entry bytes of 1-based partition `number`.
    fn slot(&self, number: u32) -> Option<&[u8]> {
        let size = self.header.entry_size as usize;
        let at = (number.checked_sub(1)? as usize).checked_mul(size)?;
        self.entries.get(at..at.checked_add(size)?)
    }

    /// (1-based number, entry) of every used entry, in table order.
    pub fn used(&self) -> Vec<(u32, Entry)> {
        (1..=self.header.entry_count)
            .filter_map(|n| Some((n, Entry::decode(self.slot(n)?)?)))
            .collect()
    }

    /// The lowest partition number whose entry is unused.
    pub fn free_number(&self) -> Option<u32> {
        (1..=self.header.entry_count).find(|n| {
            self.slot(*n)
                .is_some_and(|e| e.get(..16).is_some_and(|t| t.iter().all(|b| *b == 0)))
        })
    }

    /// The last usable LBA once the backup table sits at the disk's end.
    pub fn last_usable_at_end(&self) -> u64 {
        self.disk_lbas
            .saturating_sub(2)
            .saturating_sub(self.header.entries_lbas(self.lbs))
    }

    /// A copy with entry `number` replaced.
    pub fn with_entry(&self, number: u32, e: &Entry) -> Result<Table, GptError> {
        let count = self.header.entry_count;
        let size = self.header.entry_size as usize;
        let mut t = self.clone();
        let at = (number
            .checked_sub(1)
            .ok_or(GptError::NoSuchEntry { number, count })? as usize)
            * size;
        let slot = t
            .entries
            .get_mut(at..at + size)
            .ok_or(GptError::NoSuchEntry { number, count })?;
        e.encode_into(slot);
        Ok(t)
    }

    /// The writes that store this table's entries with the backup moved to
    /// the disk's last LBA and the last usable LBA moved up to match. `old`
    /// is the table as read from the disk: its backup header is wiped when
    /// it moves, so no stale copy stays behind inside a new partition.
    pub fn edit(&self, old: &Table) -> Edit {
        let lbs = self.lbs;
        let last = self.disk_lbas.saturating_sub(1);
        let array_lbas = self.header.entries_lbas(lbs);
        let mut array = self.entries.clone();
        array.resize((array_lbas * lbs) as usize, 0);
        let entries_crc = crc32(&self.entries);
        let primary = FullHeader {
            my_lba: 1,
            alternate_lba: last,
            last_usable: self.last_usable_at_end(),
            entries_crc,
            ..self.header.clone()
        };
        let backup = FullHeader {
            my_lba: last,
            alternate_lba: 1,
            entries_lba: last.saturating_sub(array_lbas),
            ..primary.clone()
        };
        let mut cleanup = Vec::new();
        let old_alt = old.header.alternate_lba;
        if old_alt != last && old_alt > old.header.last_usable && old_alt < last {
            cleanup.push(DiskWrite {
                what: "zeros over the old backup GPT header",
                lba: old_alt,
                bytes: vec![0; lbs as usize],
            });
        }
        if let Some(mbr) = protective_mbr_for(&self.mbr, self.disk_lbas) {
            cleanup.push(DiskWrite {
                what: "the protective MBR",
                lba: 0,
                bytes: mbr,
            });
        }
        Edit {
            backup: vec![
                DiskWrite {
                    what: "the backup GPT entry array",
                    lba: backup.entries_lba,
                    bytes: array.clone(),
                },
                DiskWrite {
                    what: "the backup GPT header",
                    lba: last,
                    bytes: backup.encode(lbs),
                },
            ],
            primary: vec![
                DiskWrite {
                    what: "the primary GPT entry array",
                    lba: primary.entries_lba,
                    bytes: array,
                },
                DiskWrite {
                    what: "the primary GPT header",
                    lba: 1,
                    bytes: primary.encode(lbs),
                },
            ],
            cleanup,
        }
    }
}

/// A pure protective MBR (one 0xEE record from LBA 1) whose size field does
/// not match the disk, rewritten to cover it (capped at 2^32-1 blocks, as the
/// spec says). `None` when it already matches or is a hybrid MBR (left alone).
fn protective_mbr_for(mbr: &[u8], disk_lbas: u64) -> Option<Vec<u8>> {
    let rec = MBR_RECORDS_AT;
    let protective = mbr.get(rec + 4) == Some(&MBR_PROTECTIVE)
        && u32_at(mbr, rec + 8) == Some(1)
        && (1..4).all(|i| mbr.get(rec + 16 * i + 4) == Some(&0));
    let want = u32::try_from(disk_lbas.saturating_sub(1)).unwrap_or(u32::MAX);
    if !protective || u32_at(mbr, rec + 12) == Some(want) {
        return None;
    }
    let mut m = mbr.to_vec();
    put(&mut m, rec + 12, &want.to_le_bytes());
    Some(m)
}

/// Bytes to write at one LBA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskWrite {
    pub what: &'static str,
    pub lba: u64,
    pub bytes: Vec<u8>,
}

/// A table change in three steps, each synced before the next, so a crash
/// leaves either the old table (its backup intact) or the new one: the new
/// backup first (past everything the old table used), then the primary,
/// then the clean-up (old backup header, protective MBR size).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    pub backup: Vec<DiskWrite>,
    pub primary: Vec<DiskWrite>,
    pub cleanup: Vec<DiskWrite>,
}

/// Writes `edit` to `disk`, calling `sync` after each step.
pub fn apply<D: Write + Seek>(
    disk: &mut D,
    lbs: u64,
    edit: &Edit,
    mut sync: impl FnMut(&mut D) -> io::Result<()>,
) -> Result<(), GptError> {
    for step in [&edit.backup, &edit.primary, &edit.cleanup] {
        for w in step {
            disk.seek(SeekFrom::Start(w.lba.saturating_mul(lbs)))
                .and_then(|_| disk.write_all(&w.bytes))
                .map_err(|source| GptError::Write {
                    what: w.what,
                    lba: w.lba,
                    source,
                })?;
        }
        if let Some(w) = step.last() {
            sync(disk).map_err(|source| GptError::Sync {
                what: w.what,
                source,
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1-based partition number whose unique GUID is `want` (lower-case text).
    fn find_partition(h: &Header, entries: &[u8], want: &str) -> Option<u32> {
        partitions(h, entries)
            .into_iter()
            .find(|(_, g)| g == want)
            .map(|(n, _)| n)
    }

    fn header(count: u32, size: u32) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..8].copy_from_slice(SIGNATURE);
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&count.to_le_bytes());
        h[84..88].copy_from_slice(&size.to_le_bytes());
        h
    }

    const ROOT_TYPE: &str = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";

    #[test]
    fn guid_round_trip() {
        let g = "11223344-5566-7788-99aa-bbccddeeff00";
        assert_eq!(guid_string(&guid_bytes(g).unwrap()).unwrap(), g);
        assert_eq!(
            guid_string(&guid_bytes(&g.to_uppercase()).unwrap()).unwrap(),
            g
        );
        // the type GUID of an x86-64 root partition as it sits on disk
        assert_eq!(
            &guid_bytes(ROOT_TYPE).unwrap()[..4],
            &[0xe3, 0xbc, 0x68, 0x4f]
        );
        for bad in [
            "",
            "11223344-5566-7788-99aa-bbccddeeff0",
            "1122334455667788-99aa-bbccddeeff00",
            "g1223344-5566-7788-99aa-bbccddeeff00",
        ] {
            assert!(guid_bytes(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn crc32_check_value() {
        // the standard check value of CRC-32/ISO-HDLC
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn finds_the_partition_by_unique_guid() {
        let h = parse_header(&header(4, 128)).unwrap();
        assert_eq!(
            h,
            Header {
                entries_lba: 2,
                entry_count: 4,
                entry_size: 128
            }
        );
        let mut entries = vec![0u8; 4 * 128];
        let want = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
        entries[128..144].copy_from_slice(&guid_bytes(ROOT_TYPE).unwrap());
        entries[144..160]
            .copy_from_slice(&guid_bytes("11111111-2222-3333-4444-555555555555").unwrap());
        entries[256..272].copy_from_slice(&guid_bytes(ROOT_TYPE).unwrap());
        entries[272..288].copy_from_slice(&guid_bytes(want).unwrap());
        assert_eq!(find_partition(&h, &entries, want), Some(3));
        assert_eq!(
            find_partition(&h, &entries, "11111111-2222-3333-4444-555555555555"),
            Some(2)
        );
        assert_eq!(
            find_partition(&h, &entries, "00000000-0000-0000-0000-000000000000"),
            None
        );
        assert_eq!(partitions(&h, &entries).len(), 2);
        // a truncated array is not a panic
        assert_eq!(find_partition(&h, &entries[..200], want), None);
    }

    #[test]
    fn rejects_non_gpt() {
        assert!(parse_header(&[0u8; 512]).is_none());
        assert!(parse_header(&header(4, 64)).is_none());
        assert!(parse_header(&header(4, u32::MAX - 7)).is_none());
        assert!(parse_header(&header(100_000, 128)).is_none());
        assert!(parse_header(b"EFI PART").is_none());
    }

    fn sample_header() -> FullHeader {
        FullHeader {
            my_lba: 1,
            alternate_lba: 2047,
            first_usable: 34,
            last_usable: 2014,
            disk_guid: guid_bytes("01234567-89ab-cdef-0123-456789abcdef").unwrap(),
            entries_lba: 2,
            entry_count: 128,
            entry_size: 128,
            entries_crc: crc32(&[0u8; 128 * 128]),
        }
    }

    #[test]
    fn full_header_round_trip_and_checks() {
        let h = sample_header();
        let block = h.encode(512);
        assert_eq!(FullHeader::parse(&block, 1).unwrap(), h);
        // read from the wrong LBA
        assert!(matches!(
            FullHeader::parse(&block, 2047),
            Err(GptError::Field {
                field: "my LBA",
                ..
            })
        ));
        // one flipped bit breaks the CRC
        let mut bad = block.clone();
        bad[40] ^= 1;
        assert!(matches!(
            FullHeader::parse(&bad, 1),
            Err(GptError::HeaderCrc { .. })
        ));
        assert!(matches!(
            FullHeader::parse(&[0u8; 512], 1),
            Err(GptError::NoHeader { lba: 1 })
        ));
        // truncated blocks are errors, not panics
        for n in [8, 12, 20, 91] {
            assert!(FullHeader::parse(&block[..n], 1).is_err(), "{n}");
        }
    }

    #[test]
    fn entry_round_trip() {
        let e = Entry {
            type_guid: guid_bytes(ROOT_TYPE).unwrap(),
            part_guid: guid_bytes("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee").unwrap(),
            first_lba: 2048,
            last_lba: 4095,
            attributes: 1 << 60,
            name: "root-a-0.1.0".into(),
        };
        let mut b = vec![0xffu8; 128];
        e.encode_into(&mut b);
        assert_eq!(Entry::decode(&b).unwrap(), e);
        assert_eq!(e.lbas(), 2048);
        assert!(Entry::decode(&[0u8; 128]).is_none());
        assert!(Entry::decode(&b[..100]).is_none());
    }
}
