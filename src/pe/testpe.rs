//! Small valid PE images for tests, written byte by byte from the PE/COFF
//! specification (not with the reader's help): MS-DOS header, NT headers
//! at `nt_headers`, a full optional header, the section table, each
//! section's raw data filled with its index plus one, and optionally a
//! certificate table ending the file.

use proptest::prelude::*;

use super::{pe_checksum, PE32_MAGIC, PE32_PLUS_MAGIC};

/// What [`TestPe::build`] writes.
#[derive(Debug, Clone)]
pub(crate) struct TestPe {
    pub(crate) pe32_plus: bool,
    pub(crate) machine: u16,
    pub(crate) subsystem: u16,
    /// `e_lfanew`: at least 0x40.
    pub(crate) nt_headers: u32,
    pub(crate) section_alignment: u32,
    pub(crate) file_alignment: u32,
    /// `NumberOfRvaAndSizes`; the optional header holds that many entries.
    pub(crate) directories: u32,
    /// Name and data length of each section.
    pub(crate) sections: Vec<(String, u32)>,
    /// Zeroed section header slots after the table (room for a UKI's).
    pub(crate) spare_headers: u32,
    /// The PKCS#7 blob of a certificate table, if any (needs 5 directories).
    pub(crate) certificate: Option<Vec<u8>>,
}

/// Where [`TestPe::build`] put things.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TestPeLayout {
    pub(crate) optional_header: usize,
    pub(crate) size_of_optional_header: usize,
    pub(crate) section_table: usize,
    pub(crate) size_of_headers: u32,
    pub(crate) size_of_image: u32,
    /// Each section's `VirtualAddress` and `PointerToRawData`.
    pub(crate) sections: Vec<(u32, u32)>,
    /// The certificate table's offset and size.
    pub(crate) certificate: Option<(u32, u32)>,
}

impl TestPe {
    /// An x86-64 PE32+ EFI application (`.text`, `.data`) with room for
    /// five more section headers, aligned as trixie's systemd stub is.
    pub(crate) fn efi_stub() -> TestPe {
        TestPe {
            pe32_plus: true,
            machine: 0x8664,
            subsystem: 10,
            nt_headers: 0x80,
            section_alignment: 0x1000,
            file_alignment: 0x200,
            directories: 16,
            sections: vec![(".text".into(), 0x5f0), (".data".into(), 0x100)],
            spare_headers: 5,
            certificate: None,
        }
    }

    pub(crate) fn layout(&self) -> TestPeLayout {
        let (sa, fa) = (self.section_alignment, self.file_alignment);
        let optional_header = self.nt_headers as usize + 4 + 20;
        let fixed = if self.pe32_plus { 112 } else { 96 };
        let size_of_optional_header = fixed + 8 * self.directories as usize;
        let section_table = optional_header + size_of_optional_header;
        let slots = self.sections.len() + self.spare_headers as usize;
        let size_of_headers = ((section_table + 40 * slots) as u32).next_multiple_of(fa);
        let (mut va, mut raw) = (size_of_headers.next_multiple_of(sa), size_of_headers);
        let mut sections = Vec::new();
        for (_, len) in &self.sections {
            sections.push((va, raw));
            va = (va + (*len).max(1)).next_multiple_of(sa);
            raw += len.next_multiple_of(fa);
        }
        let certificate = self.certificate.as_ref().map(|blob| {
            let at = raw.next_multiple_of(8);
            (at, (8 + blob.len() as u32).next_multiple_of(8))
        });
        TestPeLayout {
            optional_header,
            size_of_optional_header,
            section_table,
            size_of_headers,
            size_of_image: va,
            sections,
            certificate,
        }
    }

    pub(crate) fn build(&self) -> Vec<u8> {
        let l = self.layout();
        let end = l
            .sections
            .iter()
            .zip(&self.sections)
            .map(|(&(_, raw), (_, len))| raw + len.next_multiple_of(self.file_alignment))
            .max()
            .unwrap_or(l.size_of_headers);
        let mut b = vec![0u8; end as usize];
        put(&mut b, 0, b"MZ");
        put(&mut b, 0x3c, &self.nt_headers.to_le_bytes());
        let nt = self.nt_headers as usize;
        put(&mut b, nt, b"PE\0\0");
        let coff = nt + 4;
        put(&mut b, coff, &self.machine.to_le_bytes());
        put(
            &mut b,
            coff + 2,
            &(self.sections.len() as u16).to_le_bytes(),
        );
        let opt_size = l.size_of_optional_header as u16;
        put(&mut b, coff + 16, &opt_size.to_le_bytes());
        put(&mut b, coff + 18, &0x0206u16.to_le_bytes());
        let opt = l.optional_header;
        let magic = if self.pe32_plus {
            PE32_PLUS_MAGIC
        } else {
            PE32_MAGIC
        };
        put(&mut b, opt, &magic.to_le_bytes());
        put(&mut b, opt + 32, &self.section_alignment.to_le_bytes());
        put(&mut b, opt + 36, &self.file_alignment.to_le_bytes());
        put(&mut b, opt + 56, &l.size_of_image.to_le_bytes());
        put(&mut b, opt + 60, &l.size_of_headers.to_le_bytes());
        put(&mut b, opt + 68, &self.subsystem.to_le_bytes());
        let count_at = if self.pe32_plus { 108 } else { 92 };
        put(&mut b, opt + count_at, &self.directories.to_le_bytes());
        let (mut code, mut data) = (0u32, 0u32);
        for (i, ((name, len), &(va, raw))) in self.sections.iter().zip(&l.sections).enumerate() {
            let h = l.section_table + 40 * i;
            let raw_size = len.next_multiple_of(self.file_alignment);
            let flags: u32 = if i == 0 { 0x6000_0020 } else { 0xc000_0040 };
            *(if i == 0 { &mut code } else { &mut data }) += raw_size;
            put(&mut b, h, &name.as_bytes()[..name.len().min(8)]);
            put(&mut b, h + 8, &len.to_le_bytes());
            put(&mut b, h + 12, &va.to_le_bytes());
            put(&mut b, h + 16, &raw_size.to_le_bytes());
            put(&mut b, h + 20, &raw.to_le_bytes());
            put(&mut b, h + 36, &flags.to_le_bytes());
            b[raw as usize..(raw + len) as usize].fill(i as u8 + 1);
        }
        put(&mut b, opt + 4, &code.to_le_bytes());
        put(&mut b, opt + 8, &data.to_le_bytes());
        if let (Some(blob), Some((at, size))) = (&self.certificate, l.certificate) {
            b.resize(at as usize, 0);
            b.extend_from_slice(&(8 + blob.len() as u32).to_le_bytes());
            b.extend_from_slice(&[0x00, 0x02, 0x02, 0x00]);
            b.extend_from_slice(blob);
            b.resize((at + size) as usize, 0);
            let dir = opt + count_at + 4 + 8 * 4;
            put(&mut b, dir, &at.to_le_bytes());
            put(&mut b, dir + 4, &size.to_le_bytes());
        }
        let sum = pe_checksum(&b, opt + 64);
        put(&mut b, opt + 64, &sum.to_le_bytes());
        b
    }
}

impl TestPe {
    /// The header fields of [`TestPe::build`]'s image that a hostile file
    /// could set: offset and width.
    pub(crate) fn fields(&self) -> Vec<(usize, usize)> {
        let l = self.layout();
        let coff = self.nt_headers as usize + 4;
        let opt = l.optional_header;
        let count_at = if self.pe32_plus { 108 } else { 92 };
        let mut fields = vec![
            (0x3c, 4),           // e_lfanew
            (coff, 2),           // Machine
            (coff + 2, 2),       // NumberOfSections
            (coff + 8, 4),       // PointerToSymbolTable
            (coff + 16, 2),      // SizeOfOptionalHeader
            (opt, 2),            // Magic
            (opt + 32, 4),       // SectionAlignment
            (opt + 36, 4),       // FileAlignment
            (opt + 56, 4),       // SizeOfImage
            (opt + 60, 4),       // SizeOfHeaders
            (opt + 68, 2),       // Subsystem
            (opt + count_at, 4), // NumberOfRvaAndSizes
        ];
        for i in 0..self.directories as usize {
            let entry = opt + count_at + 4 + 8 * i;
            fields.extend([(entry, 4), (entry + 4, 4)]);
        }
        for i in 0..self.sections.len() {
            let h = l.section_table + 40 * i;
            // VirtualSize, VirtualAddress, SizeOfRawData, PointerToRawData
            fields.extend([(h + 8, 4), (h + 12, 4), (h + 16, 4), (h + 20, 4)]);
        }
        fields
    }
}

pub(crate) fn put(b: &mut [u8], at: usize, v: &[u8]) {
    b[at..at + v.len()].copy_from_slice(v);
}

/// Values a hostile header field could hold: small, near a small file's
/// size, a PE magic, huge.
pub(crate) fn edge_value() -> impl Strategy<Value = u32> {
    prop_oneof![
        0u32..16,
        0u32..0x1000,
        Just(u32::from(PE32_MAGIC)),
        Just(u32::from(PE32_PLUS_MAGIC)),
        Just(u32::MAX),
        any::<u32>()
    ]
}
