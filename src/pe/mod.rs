//! The one reader of PE/COFF headers: systemd's EFI stub and the UKI built
//! from it (`boot::uki`), and any EFI binary nodeimg signs
//! (`sign::authenticode`).
//!
//! Contract: [`PeHeaders::parse`] takes a file's bytes and returns its
//! headers, read once into a typed layout: where the DOS, NT, COFF and
//! optional headers are, the fields nodeimg reads or rewrites, the data
//! directories and the section table. It reads PE32+ and PE32 images (the
//! signer accepts both; callers that build a UKI require PE32+). It never
//! panics, slices without a check or overflows on hostile input: a file it
//! cannot read is refused with a [`PeError`] naming the header at fault.
//! Every offset in a parsed [`PeHeaders`] lies inside the file, every field
//! it names lies inside the optional header and before the section table,
//! and the section table lies inside the file. It does not look at section
//! data: [`SectionHeader::raw_range`] and [`SectionHeader::data_range`]
//! check a section's bytes against the file when a caller asks for them.
//!
//! A small hand reader, not goblin (which nodeimg keeps for ELF and for
//! the kernel's headers):
//! - the writers patch header fields in place, so they need file offsets
//!   (the `CheckSum` field, the certificate table's directory entry, the
//!   end of the section table); goblin reports values, and keeps those
//!   offsets inside its own Authenticode range iterator;
//! - goblin also parses imports, relocations, debug, exception and TLS
//!   data and (in its default strict mode) refuses an image for a defect
//!   in any of them, or for more than 16 data directories, where a signer
//!   or a UKI builder must take any image whose headers are sound; its
//!   errors are mostly free-form strings, not a header and its offset;
//! - the UKI's tests judge our writer with goblin and binutils: a reader
//!   of our own keeps that judge independent (STYLE.md, habit 7).
//!
//! Field offsets and meanings are from the PE/COFF specification
//! (Microsoft, "PE Format").

use std::ops::Range;

/// `e_magic`: an MS-DOS header starts with "MZ".
pub const MZ_MAGIC: &[u8; 2] = b"MZ";
/// `e_lfanew` (u32) at 0x3C of the MS-DOS header: file offset of the NT
/// headers, which start with [`PE_SIGNATURE`].
pub const E_LFANEW: usize = 0x3c;
/// The NT headers' signature; the COFF file header follows it.
pub const PE_SIGNATURE: &[u8; 4] = b"PE\0\0";
/// The COFF file header's size; the optional header follows it.
pub const COFF_HEADER_SIZE: usize = 20;
/// COFF `Machine` (u16): the CPU the image is for.
pub const COFF_MACHINE: usize = 0;
/// COFF `NumberOfSections` (u16): the section table's length.
pub const COFF_NUMBER_OF_SECTIONS: usize = 2;
/// COFF `PointerToSymbolTable` (u32): file offset of the COFF symbol
/// table, 0 if none.
pub const COFF_POINTER_TO_SYMBOL_TABLE: usize = 8;
/// COFF `NumberOfSymbols` (u32).
pub const COFF_NUMBER_OF_SYMBOLS: usize = 12;
/// COFF `SizeOfOptionalHeader` (u16): the section table follows the
/// optional header.
pub const COFF_SIZE_OF_OPTIONAL_HEADER: usize = 16;
/// `IMAGE_FILE_MACHINE_AMD64`.
pub const MACHINE_X86_64: u16 = 0x8664;

/// Optional header `Magic` (u16) of a PE32 image.
pub const PE32_MAGIC: u16 = 0x10b;
/// Optional header `Magic` (u16) of a PE32+ image.
pub const PE32_PLUS_MAGIC: u16 = 0x20b;
/// Optional header `Magic` (u16).
pub const OPT_MAGIC: usize = 0;
/// `SizeOfCode` (u32): the code sections' raw sizes added up (informational).
pub const OPT_SIZE_OF_CODE: usize = 4;
/// `SizeOfInitializedData` (u32): the initialized data sections' raw
/// sizes added up (informational).
pub const OPT_SIZE_OF_INITIALIZED_DATA: usize = 8;
/// `SectionAlignment` (u32): sections are loaded at multiples of it.
pub const OPT_SECTION_ALIGNMENT: usize = 32;
/// `FileAlignment` (u32): sections' raw data starts at multiples of it.
pub const OPT_FILE_ALIGNMENT: usize = 36;
/// `SizeOfImage` (u32): the image's size in memory, a multiple of
/// `SectionAlignment`.
pub const OPT_SIZE_OF_IMAGE: usize = 56;
/// `SizeOfHeaders` (u32): MS-DOS stub, NT headers and section table,
/// rounded up to `FileAlignment`.
pub const OPT_SIZE_OF_HEADERS: usize = 60;
/// `CheckSum` (u32): see [`pe_checksum`].
pub const OPT_CHECKSUM: usize = 64;
/// `Subsystem` (u16).
pub const OPT_SUBSYSTEM: usize = 68;
/// `NumberOfRvaAndSizes` (u32) of a PE32 image; the data directories
/// follow it, so it ends the fixed fields.
pub const PE32_NUMBER_OF_RVA_AND_SIZES: usize = 92;
/// `NumberOfRvaAndSizes` (u32) of a PE32+ image (its `ImageBase` and stack
/// and heap sizes are 8 bytes wide, not 4).
pub const PE32_PLUS_NUMBER_OF_RVA_AND_SIZES: usize = 108;
/// `IMAGE_SUBSYSTEM_EFI_APPLICATION`.
pub const SUBSYSTEM_EFI_APPLICATION: u16 = 10;
/// A data directory entry: address (u32), then size (u32).
pub const DATA_DIRECTORY_SIZE: usize = 8;
/// Data directory 4, the certificate table (Authenticode signatures). Its
/// address is a file offset, not an RVA: the table is not loaded.
pub const DIR_SECURITY: usize = 4;

/// The size of one section header.
pub const SECTION_HEADER_SIZE: usize = 40;
/// Section `Name`: 8 bytes, NUL-padded.
pub const SECTION_NAME: usize = 0;
/// Section `VirtualSize` (u32): its size in memory.
pub const SECTION_VIRTUAL_SIZE: usize = 8;
/// Section `VirtualAddress` (u32): its RVA.
pub const SECTION_VIRTUAL_ADDRESS: usize = 12;
/// Section `SizeOfRawData` (u32): its data's size in the file, a multiple
/// of `FileAlignment`.
pub const SECTION_SIZE_OF_RAW_DATA: usize = 16;
/// Section `PointerToRawData` (u32): its data's file offset.
pub const SECTION_POINTER_TO_RAW_DATA: usize = 20;
/// Section `Characteristics` (u32): `IMAGE_SCN_*` flags.
pub const SECTION_CHARACTERISTICS: usize = 36;
/// `IMAGE_SCN_CNT_CODE`.
pub const SCN_CNT_CODE: u32 = 0x0000_0020;
/// `IMAGE_SCN_CNT_INITIALIZED_DATA`.
pub const SCN_CNT_INITIALIZED_DATA: u32 = 0x0000_0040;
/// `IMAGE_SCN_MEM_READ`.
pub const SCN_MEM_READ: u32 = 0x4000_0000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeError {
    #[error("not a pe file: {what}")]
    NotPe { what: &'static str },
    #[error(
        "pe file is truncated: the {what} at {offset:#x} needs {need} bytes, the file has {len}"
    )]
    Truncated {
        what: &'static str,
        offset: usize,
        need: usize,
        len: usize,
    },
}

/// A section whose bytes do not lie inside the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("section {name} points at bytes {start:#x}..{end:#x} of a {len}-byte file")]
pub struct SectionOutOfRange {
    pub name: String,
    pub start: usize,
    /// `usize::MAX` where the end itself overflows.
    pub end: usize,
    pub len: usize,
}

/// One data directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataDirectory {
    /// File offset of the 8-byte entry in the optional header.
    pub entry: usize,
    /// `VirtualAddress`: an RVA, except for the certificate table (a file offset).
    pub address: u32,
    pub size: u32,
}

/// One section header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionHeader {
    /// The 8-byte `Name` up to its first NUL, as UTF-8 (lossy); long
    /// `/nnn` names (string-table offsets) are not resolved.
    pub name: String,
    pub virtual_size: u32,
    /// RVA: offset from the image base once loaded.
    pub virtual_address: u32,
    pub size_of_raw_data: u32,
    pub pointer_to_raw_data: u32,
    /// `IMAGE_SCN_*` flags.
    pub characteristics: u32,
}

/// A PE image's headers as [`PeHeaders::parse`] reads them. Offsets are
/// file offsets; see the module docs for what they are checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeHeaders {
    /// `e_lfanew`: where the NT headers (the `PE\0\0` signature) start.
    pub nt_headers: usize,
    /// The COFF file header.
    pub coff_header: usize,
    /// COFF `Machine` (`IMAGE_FILE_MACHINE_*`).
    pub machine: u16,
    pub pointer_to_symbol_table: u32,
    pub number_of_symbols: u32,
    /// The optional header.
    pub optional_header: usize,
    /// COFF `SizeOfOptionalHeader`: at least the fixed fields (up to and
    /// including `NumberOfRvaAndSizes`).
    pub size_of_optional_header: usize,
    /// [`PE32_MAGIC`] or [`PE32_PLUS_MAGIC`].
    pub magic: u16,
    pub size_of_code: u32,
    pub size_of_initialized_data: u32,
    pub section_alignment: u32,
    pub file_alignment: u32,
    pub size_of_image: u32,
    /// As written: not checked against the file or the section table.
    pub size_of_headers: u32,
    /// The 4-byte `CheckSum` field.
    pub checksum_field: usize,
    pub checksum: u32,
    /// `IMAGE_SUBSYSTEM_*`.
    pub subsystem: u16,
    /// As written; [`PeHeaders::data_directories`] holds only the entries
    /// that fit in the optional header.
    pub number_of_rva_and_sizes: u32,
    /// The entries both `NumberOfRvaAndSizes` and `SizeOfOptionalHeader`
    /// allow, in directory order.
    pub data_directories: Vec<DataDirectory>,
    /// The section table: right after the optional header.
    pub section_table: usize,
    /// The end of the section table, where the headers proper end.
    pub section_table_end: usize,
    pub sections: Vec<SectionHeader>,
}

impl PeHeaders {
    /// Reads the headers of `file`; see the module docs.
    pub fn parse(file: &[u8]) -> Result<PeHeaders, PeError> {
        let dos = Region::new(file, "mz header", 0, E_LFANEW + 4)?;
        if dos.bytes.get(..MZ_MAGIC.len()) != Some(MZ_MAGIC.as_slice()) {
            return Err(PeError::NotPe {
                what: "no mz magic",
            });
        }
        let nt_headers = dos.u32(E_LFANEW)? as usize;
        let nt = Region::new(
            file,
            "pe signature and coff header",
            nt_headers,
            PE_SIGNATURE.len() + COFF_HEADER_SIZE,
        )?;
        if nt.bytes.get(..PE_SIGNATURE.len()) != Some(PE_SIGNATURE.as_slice()) {
            return Err(PeError::NotPe {
                what: "no pe signature at e_lfanew",
            });
        }
        let coff = PE_SIGNATURE.len();
        let size_of_optional_header = usize::from(nt.u16(coff + COFF_SIZE_OF_OPTIONAL_HEADER)?);
        let number_of_sections = usize::from(nt.u16(coff + COFF_NUMBER_OF_SECTIONS)?);

        let optional_header = nt.end;
        let magic = Region::new(file, "optional header magic", optional_header, 2)?.u16(0)?;
        let count_at = match magic {
            PE32_MAGIC => PE32_NUMBER_OF_RVA_AND_SIZES,
            PE32_PLUS_MAGIC => PE32_PLUS_NUMBER_OF_RVA_AND_SIZES,
            _ => {
                return Err(PeError::NotPe {
                    what: "optional header magic is neither pe32 nor pe32+",
                })
            }
        };
        let directories_at = count_at + 4;
        if size_of_optional_header < directories_at {
            return Err(PeError::NotPe {
                what: "the optional header is shorter than its fixed fields",
            });
        }
        let opt = Region::new(
            file,
            "optional header",
            optional_header,
            size_of_optional_header,
        )?;
        let number_of_rva_and_sizes = opt.u32(count_at)?;
        let room = (size_of_optional_header - directories_at) / DATA_DIRECTORY_SIZE;
        let count = room.min(usize::try_from(number_of_rva_and_sizes).unwrap_or(usize::MAX));
        let data_directories = (0..count)
            .map(|i| {
                let at = directories_at + i * DATA_DIRECTORY_SIZE;
                Ok(DataDirectory {
                    entry: opt.offset + at,
                    address: opt.u32(at)?,
                    size: opt.u32(at + 4)?,
                })
            })
            .collect::<Result<Vec<_>, PeError>>()?;

        let table = Region::new(
            file,
            "section table",
            opt.end,
            number_of_sections * SECTION_HEADER_SIZE,
        )?;
        let sections = (0..number_of_sections)
            .map(|i| table.section(i * SECTION_HEADER_SIZE))
            .collect::<Result<Vec<_>, PeError>>()?;

        Ok(PeHeaders {
            nt_headers,
            coff_header: nt.offset + coff,
            machine: nt.u16(coff + COFF_MACHINE)?,
            pointer_to_symbol_table: nt.u32(coff + COFF_POINTER_TO_SYMBOL_TABLE)?,
            number_of_symbols: nt.u32(coff + COFF_NUMBER_OF_SYMBOLS)?,
            optional_header,
            size_of_optional_header,
            magic,
            size_of_code: opt.u32(OPT_SIZE_OF_CODE)?,
            size_of_initialized_data: opt.u32(OPT_SIZE_OF_INITIALIZED_DATA)?,
            section_alignment: opt.u32(OPT_SECTION_ALIGNMENT)?,
            file_alignment: opt.u32(OPT_FILE_ALIGNMENT)?,
            size_of_image: opt.u32(OPT_SIZE_OF_IMAGE)?,
            size_of_headers: opt.u32(OPT_SIZE_OF_HEADERS)?,
            checksum_field: opt.offset + OPT_CHECKSUM,
            checksum: opt.u32(OPT_CHECKSUM)?,
            subsystem: opt.u16(OPT_SUBSYSTEM)?,
            number_of_rva_and_sizes,
            data_directories,
            section_table: table.offset,
            section_table_end: table.end,
            sections,
        })
    }

    /// The certificate table's directory entry, if the optional header has one.
    pub fn certificate_table(&self) -> Option<&DataDirectory> {
        self.data_directories.get(DIR_SECURITY)
    }
}

impl SectionHeader {
    /// The section's raw data in a file of `file_len` bytes:
    /// `SizeOfRawData` bytes at `PointerToRawData`. Empty for a section
    /// with no raw data (as `.bss`), whose pointer is still checked; the
    /// Authenticode digest skips such sections before asking.
    pub fn raw_range(&self, file_len: usize) -> Result<Range<usize>, SectionOutOfRange> {
        self.range(self.size_of_raw_data, file_len)
    }

    /// The section's contents in a file of `file_len` bytes: its raw data
    /// capped at `VirtualSize` (past that is `FileAlignment` padding), or
    /// all of it where `VirtualSize` is 0. Empty, at `PointerToRawData`,
    /// when it has no raw data.
    pub fn data_range(&self, file_len: usize) -> Result<Range<usize>, SectionOutOfRange> {
        let len = match self.virtual_size {
            0 => self.size_of_raw_data,
            v => v.min(self.size_of_raw_data),
        };
        self.range(len, file_len)
    }

    fn range(&self, len: u32, file_len: usize) -> Result<Range<usize>, SectionOutOfRange> {
        let start = self.pointer_to_raw_data as usize;
        match start.checked_add(len as usize) {
            Some(end) if end <= file_len => Ok(start..end),
            end => Err(SectionOutOfRange {
                name: self.name.clone(),
                start,
                end: end.unwrap_or(usize::MAX),
                len: file_len,
            }),
        }
    }
}

/// The little-endian u16 at `at`, if `bytes` holds it.
pub fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    bytes
        .get(at..)?
        .first_chunk::<2>()
        .map(|b| u16::from_le_bytes(*b))
}

/// The little-endian u32 at `at`, if `bytes` holds it.
pub fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    bytes
        .get(at..)?
        .first_chunk::<4>()
        .map(|b| u32::from_le_bytes(*b))
}

/// The PE image checksum (as `CheckSumMappedFile` computes it): the 16-bit
/// little-endian words of the file (odd length padded with a zero byte),
/// with the 4-byte `CheckSum` field at `checksum_at` taken as zero, summed
/// with end-around carry, folded to 16 bits, plus the file's length
/// (modulo 2^32, as the field is 32 bits).
pub fn pe_checksum(file: &[u8], checksum_at: usize) -> u32 {
    let field = checksum_at..checksum_at.saturating_add(4);
    let byte = |i: usize| match file.get(i) {
        Some(&b) if !field.contains(&i) => b,
        _ => 0,
    };
    let mut sum: u64 = 0;
    let mut i = 0;
    while i < file.len() {
        sum += u64::from(u16::from_le_bytes([byte(i), byte(i + 1)]));
        i += 2;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    (sum as u32).wrapping_add(file.len() as u32)
}

/// The bytes a header occupies, checked to lie inside the file; its fields
/// are read through it, so none can run past the file.
struct Region<'a> {
    what: &'static str,
    offset: usize,
    end: usize,
    bytes: &'a [u8],
    file_len: usize,
}

impl<'a> Region<'a> {
    fn new(
        file: &'a [u8],
        what: &'static str,
        offset: usize,
        need: usize,
    ) -> Result<Self, PeError> {
        offset
            .checked_add(need)
            .and_then(|end| Some((end, file.get(offset..end)?)))
            .map(|(end, bytes)| Region {
                what,
                offset,
                end,
                bytes,
                file_len: file.len(),
            })
            .ok_or(PeError::Truncated {
                what,
                offset,
                need,
                len: file.len(),
            })
    }

    /// What a field past the region's end is refused as (the constants
    /// above keep every field inside its header, so this is a backstop).
    fn short(&self, at: usize, width: usize) -> PeError {
        PeError::Truncated {
            what: self.what,
            offset: self.offset,
            need: at.saturating_add(width),
            len: self.file_len,
        }
    }

    fn u16(&self, at: usize) -> Result<u16, PeError> {
        u16_at(self.bytes, at).ok_or_else(|| self.short(at, 2))
    }

    fn u32(&self, at: usize) -> Result<u32, PeError> {
        u32_at(self.bytes, at).ok_or_else(|| self.short(at, 4))
    }

    /// The section header at `at` in the section table.
    fn section(&self, at: usize) -> Result<SectionHeader, PeError> {
        let name = self
            .bytes
            .get(at + SECTION_NAME..)
            .and_then(|b| b.first_chunk::<8>())
            .ok_or_else(|| self.short(at, SECTION_HEADER_SIZE))?;
        let name_len = name.iter().position(|&c| c == 0).unwrap_or(name.len());
        let name = String::from_utf8_lossy(name.get(..name_len).unwrap_or_default()).into_owned();
        Ok(SectionHeader {
            name,
            virtual_size: self.u32(at + SECTION_VIRTUAL_SIZE)?,
            virtual_address: self.u32(at + SECTION_VIRTUAL_ADDRESS)?,
            size_of_raw_data: self.u32(at + SECTION_SIZE_OF_RAW_DATA)?,
            pointer_to_raw_data: self.u32(at + SECTION_POINTER_TO_RAW_DATA)?,
            characteristics: self.u32(at + SECTION_CHARACTERISTICS)?,
        })
    }
}

#[cfg(test)]
pub(crate) mod testpe;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod props;
