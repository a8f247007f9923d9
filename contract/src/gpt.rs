//! GPT reading both sides need (UEFI 2.10, chapter 5): bytes in, typed out.
//!
//! The agent finds `PARTUUID=` partitions with [`parse_location`] and
//! [`partitions`] (no CRC check there: the GPT only says where to look, and
//! dm-verity judges the content), and checks a table it will edit with
//! [`Header::parse`], [`check_entries`] and [`Entry::decode`]. The builder's
//! tests judge its GPT writer with the same functions. Reading the blocks
//! from a disk, and writing, stay with each side.
//!
//! GUIDs are kept as their 16 on-disk bytes (the first three fields
//! little-endian); [`guid_string`] and [`guid_bytes`] convert to and from
//! the text form.

/// "EFI PART" at the start of the header (LBA 1).
pub const SIGNATURE: &[u8; 8] = b"EFI PART";
/// Header revision 1.0, the only one there is.
pub const REVISION: u32 = 0x0001_0000;
/// Bytes of the header covered by its CRC32 (what every tool writes).
pub const HEADER_SIZE: u32 = 92;
/// Offset of the header CRC32 field.
pub const HEADER_CRC_AT: usize = 16;
/// Partition type of a protective MBR record.
pub const MBR_PROTECTIVE: u8 = 0xEE;
/// The four MBR partition records start here, 16 bytes each.
pub const MBR_RECORDS_AT: usize = 446;
/// Bytes of an entry's name field: 36 UTF-16LE code units.
pub const NAME_BYTES: usize = 72;
/// Offset of the name in an entry.
const NAME_AT: usize = 56;

/// Why bytes are not the GPT structure they should be. Each variant says where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
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
    #[error("GPT entry array at LBA {lba} is {len} bytes, the header says {expected}")]
    EntriesLength { lba: u64, len: u64, expected: u64 },
    #[error("partition entry {number}: name is not valid UTF-16")]
    BadName { number: u32 },
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

fn guid_at(b: &[u8], at: usize) -> Option<[u8; 16]> {
    b.get(at..at.checked_add(16)?)?.try_into().ok()
}

/// Copies `src` into `dst` at `at`; a write past the end is dropped (callers
/// size their buffers, so this never happens).
fn put(dst: &mut [u8], at: usize, src: &[u8]) {
    if let Some(d) = at
        .checked_add(src.len())
        .and_then(|end| dst.get_mut(at..end))
    {
        d.copy_from_slice(src);
    }
}

/// Where the entry array is and how it is shaped: all a lookup by PARTUUID
/// needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub entries_lba: u64,
    pub entry_count: u32,
    pub entry_size: u32,
}

impl Location {
    /// Bytes of the entry array.
    pub fn entries_len(&self) -> u64 {
        u64::from(self.entry_count) * u64::from(self.entry_size)
    }
}

/// Reads where the entry array is from a header block (LBA 1), without
/// checking its CRC; `None` when it is not a sane GPT header.
pub fn parse_location(block: &[u8]) -> Option<Location> {
    if block.get(..8)? != SIGNATURE {
        return None;
    }
    let l = Location {
        entries_lba: u64_at(block, 72)?,
        entry_count: u32_at(block, 80)?,
        entry_size: u32_at(block, 84)?,
    };
    sane_shape(l.entry_count, l.entry_size).then_some(l)
}

/// An entry array any tool writes: entries of 128 to 4096 bytes (a multiple
/// of 8), at most 1024 of them. Bounds what a reader allocates.
pub fn sane_shape(count: u32, size: u32) -> bool {
    (128..=4096).contains(&size) && size.is_multiple_of(8) && count <= 1024
}

/// GUID bytes as text: the first three fields are little-endian on disk.
pub fn guid_string(g: &[u8]) -> Option<String> {
    let b: &[u8; 16] = g.get(..16)?.try_into().ok()?;
    let [a0, a1, a2, a3, b0, b1, c0, c1, d @ ..] = *b;
    let tail: String = d.iter().map(|x| format!("{x:02x}")).collect();
    let (d_head, d_tail) = tail.split_at(4);
    Some(format!(
        "{a3:02x}{a2:02x}{a1:02x}{a0:02x}-{b1:02x}{b0:02x}-{c1:02x}{c0:02x}-{d_head}-{d_tail}"
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

/// CRC-32 lookup table for the reflected polynomial 0xEDB88320.
const CRC_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        // i < 256 by the loop condition: in bounds, checked at compile time
        #[allow(clippy::indexing_slicing)]
        {
            t[i] = c;
        }
        i += 1;
    }
    t
};

/// CRC-32 as UEFI specifies it for headers and entry arrays (IEEE 802.3:
/// reflected polynomial 0xEDB88320, initial value and final XOR all ones).
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = u32::MAX;
    for &b in data {
        let i = ((c ^ u32::from(b)) & 0xFF) as usize;
        c = CRC_TABLE.get(i).copied().unwrap_or(0) ^ (c >> 8);
    }
    !c
}

/// Every field of a GPT header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header size as stored (92 from every tool; the CRC covers this many bytes).
    pub size: u32,
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

impl Header {
    /// Parses and checks the header block read from `lba`: signature,
    /// revision, size, CRC32, `my_lba` and the entry array's shape.
    pub fn parse(block: &[u8], lba: u64) -> Result<Header, ParseError> {
        if block.get(..8) != Some(SIGNATURE.as_slice()) {
            return Err(ParseError::NoHeader { lba });
        }
        let field = |field: &'static str, found: u64, expected: &str| ParseError::Field {
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
            return Err(ParseError::HeaderCrc {
                lba,
                stored,
                computed,
            });
        }
        let u64f = |at| u64_at(block, at).ok_or_else(short);
        let h = Header {
            size,
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

    /// The header as one `lbs`-byte block (92 bytes used), with its CRC32
    /// computed.
    pub fn encode(&self, lbs: u64) -> Vec<u8> {
        let mut b = vec![0u8; usize::try_from(lbs).unwrap_or(512).max(512)];
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

    /// Where the entry array is.
    pub fn location(&self) -> Location {
        Location {
            entries_lba: self.entries_lba,
            entry_count: self.entry_count,
            entry_size: self.entry_size,
        }
    }

    /// Bytes of the entry array.
    pub fn entries_len(&self) -> u64 {
        self.location().entries_len()
    }

    /// LBAs the entry array takes (rounded up to whole blocks).
    pub fn entries_lbas(&self, lbs: u64) -> u64 {
        self.entries_len().div_ceil(lbs.max(1))
    }
}

/// Checks an entry array read for `h`: its length and its CRC32.
pub fn check_entries(h: &Header, entries: &[u8]) -> Result<(), ParseError> {
    if entries.len() as u64 != h.entries_len() {
        return Err(ParseError::EntriesLength {
            lba: h.entries_lba,
            len: entries.len() as u64,
            expected: h.entries_len(),
        });
    }
    let computed = crc32(entries);
    if computed != h.entries_crc {
        return Err(ParseError::EntriesCrc {
            lba: h.entries_lba,
            stored: h.entries_crc,
            computed,
        });
    }
    Ok(())
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

/// The name's UTF-16 code units, up to the first NUL.
fn name_units(b: &[u8]) -> Option<Vec<u16>> {
    Some(
        b.get(NAME_AT..NAME_AT + NAME_BYTES)?
            .chunks_exact(2)
            .map(|c| {
                u16::from_le_bytes([
                    c.first().copied().unwrap_or(0),
                    c.get(1).copied().unwrap_or(0),
                ])
            })
            .take_while(|&u| u != 0)
            .collect(),
    )
}

impl Entry {
    fn decode_with(b: &[u8], name: impl FnOnce(&[u16]) -> Option<String>) -> Option<Entry> {
        let type_guid = guid_at(b, 0)?;
        if type_guid == [0; 16] {
            return None;
        }
        Some(Entry {
            type_guid,
            part_guid: guid_at(b, 16)?,
            first_lba: u64_at(b, 32)?,
            last_lba: u64_at(b, 40)?,
            attributes: u64_at(b, 48)?,
            name: name(&name_units(b)?)?,
        })
    }

    /// `None` for an unused entry (zero type GUID) or a truncated one. A
    /// name that is not valid UTF-16 is read with U+FFFD in its place: the
    /// entry still counts (its blocks are in use).
    pub fn decode(b: &[u8]) -> Option<Entry> {
        Entry::decode_with(b, |u| Some(String::from_utf16_lossy(u)))
    }

    /// As [`Entry::decode`], but a name that is not valid UTF-16 is an error
    /// (for judging a writer). `number` is the 1-based entry number.
    pub fn decode_strict(b: &[u8], number: u32) -> Result<Option<Entry>, ParseError> {
        let mut bad = false;
        let e = Entry::decode_with(b, |u| match String::from_utf16(u) {
            Ok(s) => Some(s),
            Err(_) => {
                bad = true;
                None
            }
        });
        if bad {
            return Err(ParseError::BadName { number });
        }
        Ok(e)
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
            put(b, NAME_AT + 2 * i, &u.to_le_bytes());
        }
    }

    /// Size in LBAs.
    pub fn lbas(&self) -> u64 {
        self.last_lba
            .saturating_sub(self.first_lba)
            .saturating_add(1)
    }
}

/// The bytes of each entry slot, with its 1-based number; a truncated array
/// yields what it holds.
pub fn slots<'a>(loc: &Location, entries: &'a [u8]) -> impl Iterator<Item = (u32, &'a [u8])> {
    let size = loc.entry_size.max(1) as usize;
    (1..=loc.entry_count).zip(entries.chunks_exact(size))
}

/// (1-based number, entry) of every used entry, in table order.
pub fn used_entries(loc: &Location, entries: &[u8]) -> Vec<(u32, Entry)> {
    slots(loc, entries)
        .filter_map(|(n, b)| Some((n, Entry::decode(b)?)))
        .collect()
}

/// (1-based partition number, unique GUID as lower-case text) of every used entry.
pub fn partitions(loc: &Location, entries: &[u8]) -> Vec<(u32, String)> {
    used_entries(loc, entries)
        .into_iter()
        .filter_map(|(n, e)| Some((n, guid_string(&e.part_guid)?)))
        .collect()
}

/// `true` when LBA 0 holds an MBR with a 0xEE (GPT protective) record.
pub fn has_protective_record(mbr: &[u8]) -> bool {
    mbr.get(510..512) == Some([0x55, 0xAA].as_slice())
        && (0..4).any(|i| mbr.get(MBR_RECORDS_AT + 16 * i + 4) == Some(&MBR_PROTECTIVE))
}

/// The first MBR record's (type, first LBA, size in LBAs), for checking a
/// pure protective MBR.
pub fn first_mbr_record(mbr: &[u8]) -> Option<(u8, u32, u32)> {
    Some((
        *mbr.get(MBR_RECORDS_AT + 4)?,
        u32_at(mbr, MBR_RECORDS_AT + 8)?,
        u32_at(mbr, MBR_RECORDS_AT + 12)?,
    ))
}

#[cfg(test)]
#[path = "gpt_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "gpt_props.rs"]
mod props;
