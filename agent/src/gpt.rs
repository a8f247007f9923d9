//! The GPT as the agent edits it (UEFI 2.10, chapter 5). Parsing bytes
//! (headers, entries, GUIDs, CRC32) is the contract crate's
//! ([`contract::gpt`]), shared with the builder; this module reads and
//! writes disks with it.
//!
//! [`Table::read`] reads and checks the primary table of a disk that will
//! be written (protective MBR, header and entry CRC32s, geometry, no
//! overlapping partitions), and [`Table::edit`] computes the sector writes
//! that store a changed entry array with the backup table moved to the disk's
//! real last LBA (a disk image copied to a larger disk keeps its backup where
//! the image ended). Both are pure over `Read + Seek` and bytes; [`apply`]
//! writes an [`Edit`] to any `Write + Seek`, a block device or a `Vec<u8>`.

use std::io::{self, Read, Seek, SeekFrom, Write};

pub use contract::gpt::{
    crc32, guid_bytes, guid_string, has_protective_record, parse_location, partitions, Entry,
    Header, ParseError, MBR_PROTECTIVE, MBR_RECORDS_AT,
};

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
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error("GPT header at LBA {lba}: {field} is {found}, expected {expected}")]
    Field {
        lba: u64,
        field: &'static str,
        found: u64,
        expected: String,
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

/// The checked primary table of one disk, and the disk's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Logical block size: 512 or 4096.
    pub lbs: u64,
    /// Blocks on the disk now (it may have grown since the table was written).
    pub disk_lbas: u64,
    /// LBA 0 (`lbs` bytes).
    pub mbr: Vec<u8>,
    pub header: Header,
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
        let header = Header::parse(&block, 1)?;
        let offset = header.entries_lba.saturating_mul(lbs);
        let entries = read_exact_at(r, offset, header.entries_len(), "the GPT entry array")?;
        contract::gpt::check_entries(&header, &entries)?;
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
        let primary = Header {
            my_lba: 1,
            alternate_lba: last,
            last_usable: self.last_usable_at_end(),
            entries_crc,
            ..self.header.clone()
        };
        let backup = Header {
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
    let (kind, first, size) = contract::gpt::first_mbr_record(mbr)?;
    let protective = kind == MBR_PROTECTIVE
        && first == 1
        && (1..4).all(|i| mbr.get(rec + 16 * i + 4) == Some(&0));
    let want = u32::try_from(disk_lbas.saturating_sub(1)).unwrap_or(u32::MAX);
    if !protective || size == want {
        return None;
    }
    let mut m = mbr.to_vec();
    m.get_mut(rec + 12..rec + 16)?
        .copy_from_slice(&want.to_le_bytes());
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
