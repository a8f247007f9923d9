//! The Unified Kernel Image: systemd's EFI stub (`linuxx64.efi.stub`) with
//! the kernel, initramfs, command line, os-release and uname appended as PE
//! sections, one file that the firmware starts and Secure Boot signs whole.
//!
//! Contract: [`build_uki`] takes the stub and the section contents and
//! returns the UKI's bytes. It appends `.osrel`, `.cmdline`, `.uname`,
//! `.initrd`, `.linux` (in that order, `.linux` last) after the stub's last
//! section, following the UKI specification (uapi-group
//! `specs/unified_kernel_image.md`) and placing them the way systemd's
//! `ukify` does. It never changes the stub's code or data, never reads the
//! clock (the stub's timestamp stays), and the same inputs give the same
//! bytes. The result is unsigned: a signature on the stub is dropped, and
//! signing the UKI is a later step.
//!
//! [`read_sections`] and [`section_bytes`] are an independent reader of the
//! section table (no goblin), for tests and `nodeimg verify`.
//!
//! Layout follows the PE/COFF specification (Microsoft "PE Format"): header
//! field offsets below are from there, for PE32+ images.

use std::ops::Range;

use goblin::pe::header::COFF_MACHINE_X86_64;
use goblin::pe::optional_header::IMAGE_NT_OPTIONAL_HDR64_MAGIC;
use goblin::pe::subsystem::IMAGE_SUBSYSTEM_EFI_APPLICATION;

/// The sections [`build_uki`] appends, in file and address order.
pub const SECTION_NAMES: [&str; 5] = [".osrel", ".cmdline", ".uname", ".initrd", ".linux"];

/// `e_lfanew` at 0x3C of the MZ header: file offset of the `PE\0\0` signature.
const E_LFANEW: usize = 0x3c;
const MZ_MAGIC: &[u8; 2] = b"MZ";
const PE_SIGNATURE: &[u8; 4] = b"PE\0\0";
/// The COFF file header (20 bytes) follows the 4-byte signature.
const COFF_HEADER_SIZE: usize = 20;
/// COFF `NumberOfSections` (u16).
const COFF_NUMBER_OF_SECTIONS: usize = 2;
/// COFF `PointerToSymbolTable` (u32): file offset of the COFF symbol table, 0 if none.
const COFF_POINTER_TO_SYMBOL_TABLE: usize = 8;
/// COFF `NumberOfSymbols` (u32).
const COFF_NUMBER_OF_SYMBOLS: usize = 12;
/// COFF `SizeOfOptionalHeader` (u16): the section table follows the optional header.
const COFF_SIZE_OF_OPTIONAL_HEADER: usize = 16;
/// Optional header `Magic` (u16): 0x20B for PE32+.
const OPT_MAGIC: usize = 0;
/// `SizeOfCode` (u32): sum of the code sections' raw sizes (informational).
const OPT_SIZE_OF_CODE: usize = 4;
/// `SizeOfInitializedData` (u32): sum of the initialized data sections' raw sizes (informational).
const OPT_SIZE_OF_INITIALIZED_DATA: usize = 8;
/// `SizeOfImage` (u32): the image's size in memory, a multiple of `SectionAlignment`.
const OPT_SIZE_OF_IMAGE: usize = 56;
/// `SizeOfHeaders` (u32): MZ stub, PE header and section table, rounded up to `FileAlignment`.
const OPT_SIZE_OF_HEADERS: usize = 60;
/// `CheckSum` (u32).
const OPT_CHECKSUM: usize = 64;
/// PE32+ data directories start here, 8 bytes (RVA or file offset, size) each.
const OPT_DATA_DIRECTORIES: usize = 112;
/// Data directory 4, the certificate table (Authenticode signatures). Its
/// first field is a file offset, not an RVA: the table is not loaded.
const DIR_SECURITY: usize = 4;
/// Size of one section header.
const SECTION_HEADER_SIZE: usize = 40;
/// Section characteristics (`IMAGE_SCN_*`).
const SCN_CNT_CODE: u32 = 0x0000_0020;
const SCN_CNT_INITIALIZED_DATA: u32 = 0x0000_0040;
const SCN_MEM_READ: u32 = 0x4000_0000;

/// What goes into the UKI. Empty optional sections are left out (as ukify
/// does); `.linux` must not be empty.
#[derive(Debug, Clone, Copy)]
pub struct UkiSections<'a> {
    /// The target's `os-release` (sd-boot and `bootctl` need it to list the UKI).
    pub osrel: &'a [u8],
    /// The kernel command line.
    pub cmdline: &'a [u8],
    /// `uname -r` of the kernel.
    pub uname: &'a [u8],
    /// The initramfs, as the kernel reads it (compressed cpio).
    pub initrd: &'a [u8],
    /// The kernel image (`vmlinuz`), unchanged: Debian's signature stays inside.
    pub linux: &'a [u8],
}

impl<'a> UkiSections<'a> {
    fn in_order(&self) -> [(&'static str, &'a [u8]); 5] {
        [
            (SECTION_NAMES[0], self.osrel),
            (SECTION_NAMES[1], self.cmdline),
            (SECTION_NAMES[2], self.uname),
            (SECTION_NAMES[3], self.initrd),
            (SECTION_NAMES[4], self.linux),
        ]
    }
}

/// One section of a PE file, as [`read_sections`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UkiSection {
    /// The 8-byte name up to its first NUL (long `/nnn` names are not resolved).
    pub name: String,
    /// RVA: offset from the image base once loaded.
    pub virtual_address: u32,
    /// Size in memory (`VirtualSize`).
    pub virtual_size: u32,
    /// The section's bytes in the file: `SizeOfRawData` bytes at
    /// `PointerToRawData`, capped at `VirtualSize` (the rest is alignment
    /// padding). Where `VirtualSize` is larger than the data, as for a
    /// `.linux` sized to the kernel's `SizeOfImage`, the range ends with that
    /// padding (zeros up to `FileAlignment`).
    pub file_range: Range<usize>,
    /// `IMAGE_SCN_*` flags.
    pub characteristics: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum UkiError {
    #[error("the stub is not a PE file")]
    StubNotPe {
        #[source]
        source: goblin::error::Error,
    },
    #[error("the stub is not a PE32+ image (optional header magic {magic:#06x})")]
    StubNotPe32Plus { magic: u16 },
    #[error("the stub is for machine {machine:#06x}, not x86-64")]
    StubWrongMachine { machine: u16 },
    #[error("the stub's subsystem is {subsystem}, not an EFI application (10)")]
    StubNotEfiApplication { subsystem: u16 },
    #[error(
        "the stub's alignments are unusable (section {section_alignment:#x}, file {file_alignment:#x})"
    )]
    StubBadAlignment {
        section_alignment: u32,
        file_alignment: u32,
    },
    #[error("the stub already has a {name} section")]
    StubHasSection { name: &'static str },
    #[error("the stub's {name} section claims bytes {start:#x}..{end:#x} of a {len}-byte file")]
    StubSectionOutOfRange {
        name: String,
        start: usize,
        end: usize,
        len: usize,
    },
    #[error(
        "the stub's headers have no room for {count} more section headers: \
         they would end at {needed:#x}, the first section's data starts at {limit:#x}"
    )]
    NoHeaderRoom {
        count: usize,
        needed: usize,
        limit: usize,
    },
    #[error("the stub's header slack {start:#x}..{end:#x} is not zero; refusing to overwrite it")]
    HeaderSlackInUse { start: usize, end: usize },
    #[error("the .linux section is empty: a uki needs a kernel")]
    EmptyKernel,
    #[error("section {name} ({len} bytes) overflows the image's 32-bit sizes and addresses")]
    TooLarge { name: &'static str, len: usize },
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
    #[error("section {name} points at bytes {start:#x}..{end:#x} of a {len}-byte file")]
    SectionOutOfRange {
        name: String,
        start: usize,
        end: usize,
        len: usize,
    },
    #[error("no {name} section")]
    SectionMissing { name: String },
    #[error("section {name} appears {count} times")]
    SectionRepeated { name: String, count: usize },
}

fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// Where things are in the stub, checked with goblin; offsets are file offsets.
#[derive(Debug)]
struct StubLayout {
    /// The COFF file header.
    coff: usize,
    /// The optional header.
    optional: usize,
    /// End of the stub's section table: new headers go here.
    table_end: usize,
    number_of_sections: u16,
    section_alignment: u32,
    file_alignment: u32,
    size_of_headers: u32,
    /// No header may reach past this: the first section's raw data.
    first_raw: usize,
    /// End of the last section's raw data; the stub is cut here.
    data_end: usize,
    /// First RVA past everything the stub maps (its `SizeOfImage` or the
    /// end of its last section, whichever is larger).
    va_end: u64,
    number_of_rva_and_sizes: u32,
}

impl StubLayout {
    fn parse(stub: &[u8]) -> Result<Self, UkiError> {
        // A stub signature is dropped unread: do not let its contents refuse the stub.
        let mut opts = goblin::pe::options::ParseOptions::default();
        opts.parse_attribute_certificates = false;
        let pe = goblin::pe::PE::parse_with_opts(stub, &opts)
            .map_err(|source| UkiError::StubNotPe { source })?;
        let coff_header = &pe.header.coff_header;
        let Some(oh) = pe.header.optional_header else {
            return Err(UkiError::StubNotPe32Plus { magic: 0 });
        };
        let magic = oh.standard_fields.magic;
        if magic != IMAGE_NT_OPTIONAL_HDR64_MAGIC {
            return Err(UkiError::StubNotPe32Plus { magic });
        }
        if coff_header.machine != COFF_MACHINE_X86_64 {
            return Err(UkiError::StubWrongMachine {
                machine: coff_header.machine,
            });
        }
        let wf = &oh.windows_fields;
        if wf.subsystem != IMAGE_SUBSYSTEM_EFI_APPLICATION {
            return Err(UkiError::StubNotEfiApplication {
                subsystem: wf.subsystem,
            });
        }
        let (sa, fa) = (wf.section_alignment, wf.file_alignment);
        if !sa.is_power_of_two() || !fa.is_power_of_two() || fa > sa {
            return Err(UkiError::StubBadAlignment {
                section_alignment: sa,
                file_alignment: fa,
            });
        }
        let coff = pe.header.dos_header.pe_pointer as usize + PE_SIGNATURE.len();
        let optional = coff + COFF_HEADER_SIZE;
        let table = optional + usize::from(coff_header.size_of_optional_header);
        let table_end = table + SECTION_HEADER_SIZE * usize::from(coff_header.number_of_sections);
        let mut first_raw = stub.len();
        let mut data_end = (wf.size_of_headers as usize).min(stub.len());
        let mut va_end = u64::from(wf.size_of_image);
        for s in &pe.sections {
            let name = String::from_utf8_lossy(&s.name)
                .trim_end_matches('\0')
                .to_string();
            if let Some(&ours) = SECTION_NAMES.iter().find(|&&n| n == name) {
                return Err(UkiError::StubHasSection { name: ours });
            }
            let start = s.pointer_to_raw_data as usize;
            let end = start + s.size_of_raw_data as usize;
            if end > stub.len() {
                let len = stub.len();
                return Err(UkiError::StubSectionOutOfRange {
                    name,
                    start,
                    end,
                    len,
                });
            }
            if s.size_of_raw_data > 0 {
                first_raw = first_raw.min(start);
                data_end = data_end.max(end);
            }
            let size = u64::from(s.virtual_size.max(s.size_of_raw_data));
            va_end = va_end.max(u64::from(s.virtual_address) + size);
        }
        Ok(StubLayout {
            coff,
            optional,
            table_end,
            number_of_sections: coff_header.number_of_sections,
            section_alignment: sa,
            file_alignment: fa,
            size_of_headers: wf.size_of_headers,
            first_raw,
            data_end,
            va_end,
            number_of_rva_and_sizes: wf.number_of_rva_and_sizes,
        })
    }
}

/// A section to append: its header fields and its bytes.
struct NewSection<'a> {
    name: &'static str,
    data: &'a [u8],
    virtual_size: u32,
    virtual_address: u32,
    pointer_to_raw_data: u32,
    size_of_raw_data: u32,
    characteristics: u32,
}

impl NewSection<'_> {
    /// The 40-byte section header; relocation and line-number fields stay 0.
    fn header(&self) -> [u8; SECTION_HEADER_SIZE] {
        let mut h = [0u8; SECTION_HEADER_SIZE];
        h[..self.name.len()].copy_from_slice(self.name.as_bytes());
        put32(&mut h, 8, self.virtual_size);
        put32(&mut h, 12, self.virtual_address);
        put32(&mut h, 16, self.size_of_raw_data);
        put32(&mut h, 20, self.pointer_to_raw_data);
        put32(&mut h, 36, self.characteristics);
        h
    }
}

/// Places the non-empty sections after the stub: each raw data at the next
/// `FileAlignment` boundary, each RVA at the next `SectionAlignment`
/// boundary past the previous section. Returns the sections and the new
/// `SizeOfImage`.
fn place<'a>(
    layout: &StubLayout,
    sections: &UkiSections<'a>,
) -> Result<(Vec<NewSection<'a>>, u32), UkiError> {
    if sections.linux.is_empty() {
        return Err(UkiError::EmptyKernel);
    }
    let sa = u64::from(layout.section_alignment);
    let fa = u64::from(layout.file_alignment);
    let mut file_at = (layout.data_end as u64).next_multiple_of(fa);
    let mut va_at = layout.va_end.next_multiple_of(sa);
    let mut placed = Vec::new();
    for (name, data) in sections.in_order() {
        if data.is_empty() {
            continue;
        }
        let len = data.len() as u64;
        let (characteristics, virtual_size) = if name == ".linux" {
            // As ukify: the kernel is code (the EFI handover protocol runs it
            // in place), and its memory size is the kernel's own SizeOfImage,
            // so in-place decompression stays inside the section.
            let size = kernel_size_of_image(data).map_or(len, |s| len.max(u64::from(s)));
            (SCN_CNT_CODE | SCN_MEM_READ, size)
        } else {
            (SCN_CNT_INITIALIZED_DATA | SCN_MEM_READ, len)
        };
        let size_of_raw_data = len.next_multiple_of(fa);
        let file_end = file_at + size_of_raw_data;
        let va_end = (va_at + virtual_size).next_multiple_of(sa);
        // Every header field is at most one of these two ends.
        let u32_of = |v: u64| {
            u32::try_from(v).map_err(|_| UkiError::TooLarge {
                name,
                len: data.len(),
            })
        };
        u32_of(file_end.max(va_end))?;
        placed.push(NewSection {
            name,
            data,
            virtual_size: u32_of(virtual_size)?,
            virtual_address: u32_of(va_at)?,
            pointer_to_raw_data: u32_of(file_at)?,
            size_of_raw_data: u32_of(size_of_raw_data)?,
            characteristics,
        });
        (file_at, va_at) = (file_end, va_end);
    }
    // Checked above with the last section.
    let size_of_image = u32::try_from(va_at).unwrap_or(u32::MAX);
    Ok((placed, size_of_image))
}

/// The kernel's PE `SizeOfImage` (memory it needs once loaded), if it is a
/// PE32+ file; `None` otherwise (then `.linux` is sized to its bytes).
fn kernel_size_of_image(kernel: &[u8]) -> Option<u32> {
    let h = pe_headers(kernel).ok()?;
    let magic_ok = h.optional_size >= OPT_SIZE_OF_IMAGE + 4
        && le16(kernel, h.optional + OPT_MAGIC) == IMAGE_NT_OPTIONAL_HDR64_MAGIC;
    magic_ok.then(|| le32(kernel, h.optional + OPT_SIZE_OF_IMAGE))
}

/// Builds a UKI: the stub with [`SECTION_NAMES`] appended (empty ones left
/// out). Refuses a stub that is not a PE32+ x86-64 EFI application, that
/// already has one of these sections, or whose headers cannot take the new
/// section headers. Bytes after the stub's last section (a signature, a
/// COFF symbol table) are dropped and the header fields pointing at them
/// cleared; `NumberOfSections`, `SizeOfImage`, `SizeOfCode`,
/// `SizeOfInitializedData`, `SizeOfHeaders` (if it must grow) and
/// `CheckSum` are updated. Everything else keeps the stub's bytes.
pub fn build_uki(stub: &[u8], sections: &UkiSections) -> Result<Vec<u8>, UkiError> {
    let layout = StubLayout::parse(stub)?;
    let (placed, size_of_image) = place(&layout, sections)?;
    let size_of_headers = header_room(stub, &layout, placed.len())?;

    let Some(last) = placed.last() else {
        return Err(UkiError::EmptyKernel);
    };
    let total = last.pointer_to_raw_data as usize + last.size_of_raw_data as usize;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&stub[..layout.data_end]);
    for s in &placed {
        out.resize(s.pointer_to_raw_data as usize, 0);
        out.extend_from_slice(s.data);
    }
    out.resize(total, 0);

    let (mut code, mut data) = (0u32, 0u32);
    for (i, s) in placed.iter().enumerate() {
        let at = layout.table_end + i * SECTION_HEADER_SIZE;
        out[at..at + SECTION_HEADER_SIZE].copy_from_slice(&s.header());
        let sum = if s.characteristics & SCN_CNT_CODE != 0 {
            &mut code
        } else {
            &mut data
        };
        *sum = sum.wrapping_add(s.size_of_raw_data);
    }
    patch_headers(
        &mut out,
        &layout,
        &placed,
        size_of_image,
        size_of_headers,
        (code, data),
    );
    Ok(out)
}

/// Checks that `count` more section headers fit between the stub's section
/// table and its first section's data, over bytes that are all zero.
/// Returns the `SizeOfHeaders` to write: the stub's, or grown to the next
/// `FileAlignment` boundary past the new headers (as ukify allows).
fn header_room(stub: &[u8], layout: &StubLayout, count: usize) -> Result<u32, UkiError> {
    let needed = layout.table_end + count * SECTION_HEADER_SIZE;
    let size_of_headers = u64::from(layout.size_of_headers);
    let grown = if needed as u64 <= size_of_headers {
        size_of_headers
    } else {
        (needed as u64).next_multiple_of(layout.file_alignment.into())
    };
    let limit = layout.first_raw;
    if needed > limit || grown > limit as u64 {
        return Err(UkiError::NoHeaderRoom {
            count,
            needed,
            limit,
        });
    }
    if stub[layout.table_end..needed].iter().any(|&b| b != 0) {
        return Err(UkiError::HeaderSlackInUse {
            start: layout.table_end,
            end: needed,
        });
    }
    // grown <= first_raw <= stub.len(), so it fits.
    Ok(grown as u32)
}

fn patch_headers(
    out: &mut [u8],
    layout: &StubLayout,
    placed: &[NewSection],
    size_of_image: u32,
    size_of_headers: u32,
    (code, data): (u32, u32),
) {
    let (coff, opt) = (layout.coff, layout.optional);
    // At most five more; the stub's count is far below u16::MAX (loaders cap it at 96).
    let count = layout
        .number_of_sections
        .saturating_add(placed.len() as u16);
    put16(out, coff + COFF_NUMBER_OF_SECTIONS, count);
    // A COFF symbol table after the sections was cut off with the rest.
    if le32(out, coff + COFF_POINTER_TO_SYMBOL_TABLE) as usize >= layout.data_end {
        put32(out, coff + COFF_POINTER_TO_SYMBOL_TABLE, 0);
        put32(out, coff + COFF_NUMBER_OF_SYMBOLS, 0);
    }
    let size_of_code = le32(out, opt + OPT_SIZE_OF_CODE).wrapping_add(code);
    put32(out, opt + OPT_SIZE_OF_CODE, size_of_code);
    let init = le32(out, opt + OPT_SIZE_OF_INITIALIZED_DATA).wrapping_add(data);
    put32(out, opt + OPT_SIZE_OF_INITIALIZED_DATA, init);
    put32(out, opt + OPT_SIZE_OF_IMAGE, size_of_image);
    put32(out, opt + OPT_SIZE_OF_HEADERS, size_of_headers);
    // A stub signature no longer matches (and was cut off): no certificate table.
    if layout.number_of_rva_and_sizes as usize > DIR_SECURITY {
        let dir = opt + OPT_DATA_DIRECTORIES + 8 * DIR_SECURITY;
        out[dir..dir + 8].fill(0);
    }
    let checksum = pe_checksum(out, opt + OPT_CHECKSUM);
    put32(out, opt + OPT_CHECKSUM, checksum);
}

/// The PE image checksum (as `CheckSumMappedFile` computes it): the 16-bit
/// little-endian words of the file (odd length padded with a zero byte),
/// with the 4-byte `CheckSum` field at `checksum_at` taken as zero, summed
/// with end-around carry, folded to 16 bits, plus the file's length.
pub(crate) fn pe_checksum(file: &[u8], checksum_at: usize) -> u32 {
    let field = checksum_at..checksum_at + 4;
    let byte = |i: usize| if field.contains(&i) { 0 } else { file[i] };
    let mut sum: u64 = 0;
    let mut i = 0;
    while i + 1 < file.len() {
        sum += u64::from(u16::from_le_bytes([byte(i), byte(i + 1)]));
        i += 2;
    }
    if i < file.len() {
        sum += u64::from(byte(i));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    (sum as u32).wrapping_add(file.len() as u32)
}

/// The reader's view of a PE header: offsets, checked against the file's length.
struct PeHeaders {
    optional: usize,
    optional_size: usize,
    table: usize,
    number_of_sections: usize,
}

fn pe_headers(pe: &[u8]) -> Result<PeHeaders, UkiError> {
    let need = |what, offset: usize, need: usize| {
        if offset.checked_add(need).is_some_and(|end| end <= pe.len()) {
            Ok(())
        } else {
            Err(UkiError::Truncated {
                what,
                offset,
                need,
                len: pe.len(),
            })
        }
    };
    need("mz header", 0, E_LFANEW + 4)?;
    if &pe[..2] != MZ_MAGIC {
        return Err(UkiError::NotPe {
            what: "no mz magic",
        });
    }
    let sig = le32(pe, E_LFANEW) as usize;
    need("pe signature and coff header", sig, 4 + COFF_HEADER_SIZE)?;
    if &pe[sig..sig + 4] != PE_SIGNATURE {
        return Err(UkiError::NotPe {
            what: "no pe signature at e_lfanew",
        });
    }
    let coff = sig + 4;
    let optional = coff + COFF_HEADER_SIZE;
    let optional_size = usize::from(le16(pe, coff + COFF_SIZE_OF_OPTIONAL_HEADER));
    let number_of_sections = usize::from(le16(pe, coff + COFF_NUMBER_OF_SECTIONS));
    need("optional header", optional, optional_size)?;
    let table = optional + optional_size;
    need(
        "section table",
        table,
        number_of_sections * SECTION_HEADER_SIZE,
    )?;
    Ok(PeHeaders {
        optional,
        optional_size,
        table,
        number_of_sections,
    })
}

/// Reads the section table of a PE file (any PE, not only a UKI), checking
/// that each section's bytes lie inside the file.
pub fn read_sections(pe: &[u8]) -> Result<Vec<UkiSection>, UkiError> {
    let h = pe_headers(pe)?;
    (0..h.number_of_sections)
        .map(|i| {
            let s = &pe[h.table + i * SECTION_HEADER_SIZE..][..SECTION_HEADER_SIZE];
            let name_len = s[..8].iter().position(|&c| c == 0).unwrap_or(8);
            let name = String::from_utf8_lossy(&s[..name_len]).into_owned();
            let virtual_size = le32(s, 8);
            let size_of_raw_data = le32(s, 16);
            let start = le32(s, 20) as usize;
            let len = match virtual_size {
                0 => size_of_raw_data,
                v => v.min(size_of_raw_data),
            } as usize;
            let end = start + len;
            if end > pe.len() {
                let len = pe.len();
                return Err(UkiError::SectionOutOfRange {
                    name,
                    start,
                    end,
                    len,
                });
            }
            Ok(UkiSection {
                name,
                virtual_address: le32(s, 12),
                virtual_size,
                file_range: start..end,
                characteristics: le32(s, 36),
            })
        })
        .collect()
}

/// The bytes of the one section called `name` (see [`UkiSection::file_range`]).
pub fn section_bytes<'a>(pe: &'a [u8], name: &str) -> Result<&'a [u8], UkiError> {
    let sections = read_sections(pe)?;
    let mut found = sections.iter().filter(|s| s.name == name);
    match (found.next(), found.count()) {
        (None, _) => Err(UkiError::SectionMissing {
            name: name.to_string(),
        }),
        (Some(s), 0) => Ok(&pe[s.file_range.clone()]),
        (Some(_), more) => Err(UkiError::SectionRepeated {
            name: name.to_string(),
            count: more + 1,
        }),
    }
}

#[cfg(test)]
#[path = "uki_tests.rs"]
mod tests;
