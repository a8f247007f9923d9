//! The reader judged by goblin on the host's systemd EFI binaries, and on
//! hand-built images: every field where [`TestPe`] put it, and each
//! refusal naming the header at fault.

use super::testpe::{put, TestPe};
use super::*;

/// systemd's stub and boot loader from Debian's `systemd-boot-efi`.
const HOST_EFI: [&str; 2] = [
    "/usr/lib/systemd/boot/efi/linuxx64.efi.stub",
    "/usr/lib/systemd/boot/efi/systemd-bootx64.efi",
];

fn host_file(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| {
        panic!("cannot read {path} ({e}): install systemd-boot-efi (scripts/setup.sh)")
    })
}

#[test]
fn host_efi_binaries_read_as_goblin_reads_them() {
    for path in HOST_EFI {
        let file = host_file(path);
        let ours = PeHeaders::parse(&file).unwrap();
        let theirs = goblin::pe::PE::parse(&file).unwrap();
        let h = &theirs.header;
        assert_eq!(ours.nt_headers, h.dos_header.pe_pointer as usize, "{path}");
        let coff = &h.coff_header;
        assert_eq!(ours.machine, coff.machine);
        assert_eq!(ours.sections.len(), usize::from(coff.number_of_sections));
        assert_eq!(
            ours.size_of_optional_header,
            usize::from(coff.size_of_optional_header)
        );
        assert_eq!(ours.pointer_to_symbol_table, coff.pointer_to_symbol_table);
        assert_eq!(ours.number_of_symbols, coff.number_of_symbol_table);
        let oh = h.optional_header.unwrap();
        let (sf, wf) = (&oh.standard_fields, &oh.windows_fields);
        assert_eq!(ours.magic, sf.magic);
        assert_eq!(u64::from(ours.size_of_code), sf.size_of_code);
        assert_eq!(
            u64::from(ours.size_of_initialized_data),
            sf.size_of_initialized_data
        );
        assert_eq!(ours.section_alignment, wf.section_alignment);
        assert_eq!(ours.file_alignment, wf.file_alignment);
        assert_eq!(ours.size_of_image, wf.size_of_image);
        assert_eq!(ours.size_of_headers, wf.size_of_headers);
        assert_eq!(ours.checksum, wf.check_sum);
        assert_eq!(ours.subsystem, wf.subsystem);
        assert_eq!(ours.number_of_rva_and_sizes, wf.number_of_rva_and_sizes);
        // goblin records where each non-empty entry ends, counted from
        // the optional header.
        for (i, dd) in oh.data_directories.data_directories.iter().enumerate() {
            let mine = ours.data_directories.get(i);
            match dd {
                Some((end, dd)) => {
                    let mine = mine.unwrap();
                    let entry_end = mine.entry + 8 - ours.optional_header;
                    assert_eq!(entry_end, *end, "{path} directory {i}");
                    assert_eq!((mine.address, mine.size), (dd.virtual_address, dd.size));
                }
                None => assert!(mine.is_none_or(|d| d.address == 0 && d.size == 0)),
            }
        }
        assert_eq!(theirs.sections.len(), ours.sections.len());
        for (s, t) in ours.sections.iter().zip(&theirs.sections) {
            assert_eq!(s.name, t.name().unwrap());
            assert_eq!(s.virtual_size, t.virtual_size);
            assert_eq!(s.virtual_address, t.virtual_address);
            assert_eq!(s.size_of_raw_data, t.size_of_raw_data);
            assert_eq!(s.pointer_to_raw_data, t.pointer_to_raw_data);
            assert_eq!(s.characteristics, t.characteristics);
            let raw = s.raw_range(file.len()).unwrap();
            assert_eq!(raw.len(), t.size_of_raw_data as usize);
        }
        // binutils wrote the checksum; the field is where we say.
        assert_eq!(u32_at(&file, ours.checksum_field), Some(ours.checksum));
        assert_eq!(pe_checksum(&file, ours.checksum_field), ours.checksum);
        assert_eq!(
            ours.section_table_end,
            ours.section_table + 40 * ours.sections.len()
        );
    }
}

#[test]
fn fields_are_where_the_writer_put_them() {
    for pe32_plus in [true, false] {
        let spec = TestPe {
            pe32_plus,
            sections: vec![
                (".text".into(), 0x20),
                (".bss".into(), 0),
                ("12345678".into(), 0x201),
            ],
            certificate: Some(b"pkcs7".to_vec()),
            ..TestPe::efi_stub()
        };
        let file = spec.build();
        let l = spec.layout();
        let h = PeHeaders::parse(&file).unwrap();
        assert_eq!(h.nt_headers, 0x80);
        assert_eq!(h.coff_header, 0x84);
        assert_eq!(h.optional_header, l.optional_header);
        assert_eq!(h.magic, if pe32_plus { 0x20b } else { 0x10b });
        assert_eq!(h.size_of_optional_header, if pe32_plus { 240 } else { 224 });
        assert_eq!(h.section_table, l.section_table);
        assert_eq!(h.section_table_end, l.section_table + 3 * 40);
        assert_eq!((h.machine, h.subsystem), (0x8664, 10));
        assert_eq!((h.section_alignment, h.file_alignment), (0x1000, 0x200));
        assert_eq!(h.size_of_headers, l.size_of_headers);
        assert_eq!(h.size_of_image, l.size_of_image);
        assert_eq!(h.checksum_field, l.optional_header + 64);
        assert_eq!(h.data_directories.len(), 16);
        let cert = h.certificate_table().unwrap();
        let dirs = l.optional_header + if pe32_plus { 112 } else { 96 };
        assert_eq!(cert.entry, dirs + 32);
        assert_eq!(Some((cert.address, cert.size)), l.certificate);
        let names: Vec<&str> = h.sections.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, [".text", ".bss", "12345678"]);
        let text = &h.sections[0];
        let at = l.sections[0].1 as usize;
        assert_eq!(text.raw_range(file.len()).unwrap(), at..at + 0x200);
        assert_eq!(text.data_range(file.len()).unwrap(), at..at + 0x20);
        assert!(file[at..at + 0x20].iter().all(|&b| b == 1));
        assert!(h.sections[1].raw_range(file.len()).unwrap().is_empty());
        assert!(h.sections[1].data_range(file.len()).unwrap().is_empty());
    }
}

#[test]
fn directories_are_those_the_optional_header_holds() {
    let spec = TestPe {
        directories: 4,
        ..TestPe::efi_stub()
    };
    let h = PeHeaders::parse(&spec.build()).unwrap();
    assert_eq!(h.data_directories.len(), 4);
    assert_eq!(h.certificate_table(), None);
    // NumberOfRvaAndSizes claims 16, SizeOfOptionalHeader holds 5.
    let mut file = TestPe::efi_stub().build();
    put(&mut file, 0x84 + 16, &(112u16 + 5 * 8).to_le_bytes());
    put(&mut file, 0x84 + 2, &0u16.to_le_bytes());
    let h = PeHeaders::parse(&file).unwrap();
    assert_eq!(h.number_of_rva_and_sizes, 16);
    assert_eq!(h.data_directories.len(), 5);
    assert_eq!(h.section_table, 0x98 + 152);
}

#[test]
fn refusals_name_the_header_at_fault() {
    let good = TestPe::efi_stub().build();
    let parse = |b: &[u8]| PeHeaders::parse(b).unwrap_err();
    let truncated = |what, offset, need, len| PeError::Truncated {
        what,
        offset,
        need,
        len,
    };
    assert_eq!(parse(&[]), truncated("mz header", 0, 0x40, 0));
    let mut no_mz = good.clone();
    no_mz[0] = b'Z';
    assert_eq!(
        parse(&no_mz),
        PeError::NotPe {
            what: "no mz magic"
        }
    );
    let mut far = good.clone();
    put(&mut far, 0x3c, &u32::MAX.to_le_bytes());
    assert_eq!(
        parse(&far),
        truncated(
            "pe signature and coff header",
            u32::MAX as usize,
            24,
            good.len()
        )
    );
    let mut no_pe = good.clone();
    no_pe[0x81] = b'X';
    assert!(matches!(parse(&no_pe), PeError::NotPe { what } if what.contains("pe signature")));
    let mut rom = good.clone();
    put(&mut rom, 0x98, &0x107u16.to_le_bytes());
    assert!(matches!(parse(&rom), PeError::NotPe { what } if what.contains("magic")));
    let mut short = good.clone();
    put(&mut short, 0x84 + 16, &111u16.to_le_bytes());
    assert!(matches!(parse(&short), PeError::NotPe { what } if what.contains("fixed fields")));
    assert_eq!(
        parse(&good[..0x99]),
        truncated("optional header magic", 0x98, 2, 0x99)
    );
    assert_eq!(
        parse(&good[..0x100]),
        truncated("optional header", 0x98, 240, 0x100)
    );
    let table = 0x98 + 240;
    assert_eq!(
        parse(&good[..table + 79]),
        truncated("section table", table, 80, table + 79)
    );
    let mut many = good.clone();
    put(&mut many, 0x86, &u16::MAX.to_le_bytes());
    assert_eq!(
        parse(&many),
        truncated("section table", table, 40 * 65535, good.len())
    );
}

#[test]
fn section_ranges_outside_the_file_are_refused() {
    let s = SectionHeader {
        name: ".linux".into(),
        virtual_size: 0x20,
        virtual_address: 0x1000,
        size_of_raw_data: 0x200,
        pointer_to_raw_data: 0x400,
        characteristics: 0,
    };
    assert_eq!(s.data_range(0x420).unwrap(), 0x400..0x420);
    let err = s.raw_range(0x420).unwrap_err();
    assert_eq!((err.start, err.end, err.len), (0x400, 0x600, 0x420));
    assert_eq!(
        err.to_string(),
        "section .linux points at bytes 0x400..0x600 of a 1056-byte file"
    );
    let far = SectionHeader {
        pointer_to_raw_data: u32::MAX,
        size_of_raw_data: u32::MAX,
        ..s
    };
    assert!(far.raw_range(0x1000).is_err());
    assert!(far.data_range(0x1000).is_err());
}
