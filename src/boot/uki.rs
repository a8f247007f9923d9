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
//! [`read_sections`] and [`section_bytes`] read the section table back,
//! for tests and `nodeimg verify`. Both the builder and they read headers
//! with [`crate::pe`]; the tests judge the result with goblin and binutils.

use std::ops::Range;

use crate::pe::{
    pe_checksum, PeError, PeHeaders, SectionOutOfRange, COFF_NUMBER_OF_SECTIONS,
    COFF_NUMBER_OF_SYMBOLS, COFF_POINTER_TO_SYMBOL_TABLE, DATA_DIRECTORY_SIZE, MACHINE_X86_64,
    OPT_SIZE_OF_CODE, OPT_SIZE_OF_HEADERS, OPT_SIZE_OF_IMAGE, OPT_SIZE_OF_INITIALIZED_DATA,
    PE32_PLUS_MAGIC, SCN_CNT_CODE, SCN_CNT_INITIALIZED_DATA, SCN_MEM_READ, SECTION_CHARACTERISTICS,
    SECTION_HEADER_SIZE, SECTION_POINTER_TO_RAW_DATA, SECTION_SIZE_OF_RAW_DATA,
    SECTION_VIRTUAL_ADDRESS, SECTION_VIRTUAL_SIZE, SUBSYSTEM_EFI_APPLICATION,
};

/// The sections [`build_uki`] appends, in file and address order.
pub const SECTION_NAMES: [&str; 5] = [".osrel", ".cmdline", ".uname", ".initrd", ".linux"];

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
        source: PeError,
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
    #[error(transparent)]
    Pe(#[from] PeError),
    #[error(transparent)]
    Section(#[from] SectionOutOfRange),
    #[error("no {name} section")]
    SectionMissing { name: String },
    #[error("section {name} appears {count} times")]
    SectionRepeated { name: String, count: usize },
}

fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// Where things are in the stub; offsets are file offsets.
#[derive(Debug)]
struct StubLayout {
    /// The stub's headers: new section headers go at `section_table_end`.
    headers: PeHeaders,
    /// No header may reach past this: the first section's raw data (the
    /// end of the headers if no section has any).
    first_raw: usize,
    /// End of the last section's raw data; the stub is cut here.
    data_end: usize,
    /// First RVA past everything the stub maps (its `SizeOfImage` or the
    /// end of its last section, whichever is larger).
    va_end: u64,
}

impl StubLayout {
    fn parse(stub: &[u8]) -> Result<Self, UkiError> {
        // A stub signature is dropped unread: the reader does not look at it.
        let headers = PeHeaders::parse(stub).map_err(|source| UkiError::StubNotPe { source })?;
        if headers.magic != PE32_PLUS_MAGIC {
            return Err(UkiError::StubNotPe32Plus {
                magic: headers.magic,
            });
        }
        if headers.machine != MACHINE_X86_64 {
            return Err(UkiError::StubWrongMachine {
                machine: headers.machine,
            });
        }
        if headers.subsystem != SUBSYSTEM_EFI_APPLICATION {
            return Err(UkiError::StubNotEfiApplication {
                subsystem: headers.subsystem,
            });
        }
        let (sa, fa) = (headers.section_alignment, headers.file_alignment);
        if !sa.is_power_of_two() || !fa.is_power_of_two() || fa > sa {
            return Err(UkiError::StubBadAlignment {
                section_alignment: sa,
                file_alignment: fa,
            });
        }
        let mut first_raw = None;
        let mut data_end = (headers.size_of_headers as usize).min(stub.len());
        let mut va_end = u64::from(headers.size_of_image);
        for s in &headers.sections {
            if let Some(&ours) = SECTION_NAMES.iter().find(|&&n| n == s.name) {
                return Err(UkiError::StubHasSection { name: ours });
            }
            let raw = s.raw_range(stub.len()).map_err(|e| {
                let SectionOutOfRange {
                    name,
                    start,
                    end,
                    len,
                } = e;
                UkiError::StubSectionOutOfRange {
                    name,
                    start,
                    end,
                    len,
                }
            })?;
            if s.size_of_raw_data > 0 {
                first_raw = Some(first_raw.map_or(raw.start, |f: usize| f.min(raw.start)));
                data_end = data_end.max(raw.end);
            }
            let size = u64::from(s.virtual_size.max(s.size_of_raw_data));
            va_end = va_end.max(u64::from(s.virtual_address) + size);
        }
        Ok(StubLayout {
            first_raw: first_raw.unwrap_or(data_end),
            headers,
            data_end,
            va_end,
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
        put32(&mut h, SECTION_VIRTUAL_SIZE, self.virtual_size);
        put32(&mut h, SECTION_VIRTUAL_ADDRESS, self.virtual_address);
        put32(&mut h, SECTION_SIZE_OF_RAW_DATA, self.size_of_raw_data);
        put32(
            &mut h,
            SECTION_POINTER_TO_RAW_DATA,
            self.pointer_to_raw_data,
        );
        put32(&mut h, SECTION_CHARACTERISTICS, self.characteristics);
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
    let sa = u64::from(layout.headers.section_alignment);
    let fa = u64::from(layout.headers.file_alignment);
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
    let h = PeHeaders::parse(kernel).ok()?;
    (h.magic == PE32_PLUS_MAGIC).then_some(h.size_of_image)
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
        let at = layout.headers.section_table_end + i * SECTION_HEADER_SIZE;
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
    let table_end = layout.headers.section_table_end;
    let needed = table_end + count * SECTION_HEADER_SIZE;
    let size_of_headers = u64::from(layout.headers.size_of_headers);
    let grown = if needed as u64 <= size_of_headers {
        size_of_headers
    } else {
        (needed as u64).next_multiple_of(layout.headers.file_alignment.into())
    };
    let limit = layout.first_raw;
    if needed > limit || grown > limit as u64 {
        return Err(UkiError::NoHeaderRoom {
            count,
            needed,
            limit,
        });
    }
    // table_end <= needed <= first_raw <= stub.len()
    if stub[table_end..needed].iter().any(|&b| b != 0) {
        return Err(UkiError::HeaderSlackInUse {
            start: table_end,
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
    let h = &layout.headers;
    let (coff, opt) = (h.coff_header, h.optional_header);
    // At most five more; the stub's count is far below u16::MAX (loaders cap it at 96).
    let count = (h.sections.len() as u16).saturating_add(placed.len() as u16);
    put16(out, coff + COFF_NUMBER_OF_SECTIONS, count);
    // A COFF symbol table after the sections was cut off with the rest.
    if h.pointer_to_symbol_table as usize >= layout.data_end {
        put32(out, coff + COFF_POINTER_TO_SYMBOL_TABLE, 0);
        put32(out, coff + COFF_NUMBER_OF_SYMBOLS, 0);
    }
    put32(
        out,
        opt + OPT_SIZE_OF_CODE,
        h.size_of_code.wrapping_add(code),
    );
    let init = h.size_of_initialized_data.wrapping_add(data);
    put32(out, opt + OPT_SIZE_OF_INITIALIZED_DATA, init);
    put32(out, opt + OPT_SIZE_OF_IMAGE, size_of_image);
    put32(out, opt + OPT_SIZE_OF_HEADERS, size_of_headers);
    // A stub signature no longer matches (and was cut off): no certificate table.
    if let Some(dir) = h.certificate_table() {
        out[dir.entry..dir.entry + DATA_DIRECTORY_SIZE].fill(0);
    }
    let checksum = pe_checksum(out, h.checksum_field);
    put32(out, h.checksum_field, checksum);
}

/// Reads the section table of a PE32 or PE32+ file (not only a UKI),
/// checking that each section's bytes lie inside the file.
pub fn read_sections(pe: &[u8]) -> Result<Vec<UkiSection>, UkiError> {
    let headers = PeHeaders::parse(pe)?;
    headers
        .sections
        .into_iter()
        .map(|s| {
            Ok(UkiSection {
                file_range: s.data_range(pe.len())?,
                name: s.name,
                virtual_address: s.virtual_address,
                virtual_size: s.virtual_size,
                characteristics: s.characteristics,
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
        // read_sections checked the range against the file.
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

#[cfg(test)]
#[path = "uki_props.rs"]
mod props;
