//! Property tests for the PE reader. Any bytes, and valid images (PE32 and
//! PE32+) with header fields set to anything, bytes changed or the file
//! cut short, are read or refused with a typed error, never a panic; what
//! is read keeps the layout's promises, checked against the bytes by
//! hand; a valid image reads back as [`TestPe`] wrote it. Bounded;
//! failures are not persisted into the source tree.

use proptest::prelude::*;
use proptest::sample::Index;

use super::testpe::{edge_value, put, TestPe};
use super::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// The layout's promises (module docs), checked against `file`.
fn check(file: &[u8], h: &PeHeaders) -> Result<(), TestCaseError> {
    let len = file.len();
    let lfanew = u32_at(file, E_LFANEW).map(|v| v as usize);
    prop_assert_eq!(lfanew, Some(h.nt_headers));
    let signature = file.get(h.nt_headers..h.coff_header);
    prop_assert_eq!(signature, Some(PE_SIGNATURE.as_slice()));
    prop_assert_eq!(h.optional_header, h.coff_header + COFF_HEADER_SIZE);
    let count = u16_at(file, h.coff_header + COFF_NUMBER_OF_SECTIONS);
    prop_assert_eq!(count.map(usize::from), Some(h.sections.len()));
    prop_assert_eq!(u16_at(file, h.optional_header), Some(h.magic));
    let fixed = match h.magic {
        PE32_MAGIC => 96,
        PE32_PLUS_MAGIC => 112,
        other => return Err(TestCaseError::fail(format!("magic {other:#x}"))),
    };
    prop_assert!(h.size_of_optional_header >= fixed);
    prop_assert_eq!(
        h.section_table,
        h.optional_header + h.size_of_optional_header
    );
    prop_assert_eq!(
        h.section_table_end,
        h.section_table + SECTION_HEADER_SIZE * h.sections.len()
    );
    prop_assert!(h.section_table_end <= len);
    prop_assert_eq!(h.checksum_field, h.optional_header + OPT_CHECKSUM);
    prop_assert_eq!(u32_at(file, h.checksum_field), Some(h.checksum));
    let headers = u32_at(file, h.optional_header + OPT_SIZE_OF_HEADERS);
    prop_assert_eq!(headers, Some(h.size_of_headers));
    prop_assert!(h.data_directories.len() as u64 <= u64::from(h.number_of_rva_and_sizes));
    for (i, d) in h.data_directories.iter().enumerate() {
        prop_assert_eq!(d.entry, h.optional_header + fixed + DATA_DIRECTORY_SIZE * i);
        prop_assert!(d.entry + DATA_DIRECTORY_SIZE <= h.section_table);
        prop_assert_eq!(u32_at(file, d.entry), Some(d.address));
        prop_assert_eq!(u32_at(file, d.entry + 4), Some(d.size));
    }
    for s in &h.sections {
        if let Ok(r) = s.raw_range(len) {
            prop_assert!(r.end <= len);
            prop_assert_eq!(r.len(), s.size_of_raw_data as usize);
        }
        if let Ok(r) = s.data_range(len) {
            prop_assert!(r.start <= r.end && r.end <= len);
        }
    }
    Ok(())
}

/// Small valid images: PE32 or PE32+, the NT headers anywhere from 0x40,
/// 0 to 16 directories, up to four sections, maybe signed.
fn image() -> impl Strategy<Value = TestPe> {
    let names = prop::sample::select(vec![".text", ".data", ".linux", "", "12345678"]);
    (
        any::<bool>(),
        0u32..32,
        prop::sample::select(vec![0x200u32, 0x1000]),
        0u32..=16,
        prop::collection::vec((names, 0u32..0x500), 0..4),
        0u32..3,
        proptest::option::of(prop::collection::vec(any::<u8>(), 0..40)),
    )
        .prop_map(
            |(pe32_plus, nt, sa, directories, sections, spare, blob)| TestPe {
                pe32_plus,
                nt_headers: 0x40 + 8 * nt,
                section_alignment: sa,
                directories,
                sections: sections
                    .into_iter()
                    .map(|(n, len)| (n.to_string(), len))
                    .collect(),
                spare_headers: spare,
                certificate: blob.filter(|_| directories > 4),
                ..TestPe::efi_stub()
            },
        )
}

proptest! {
    #![proptest_config(config(512))]

    /// Any bytes: bare, behind MZ and a PE signature, or with a magic too.
    #[test]
    fn any_bytes_are_read_or_refused(
        bytes in prop::collection::vec(any::<u8>(), 0..768),
        shape in 0u8..4,
    ) {
        let mut bytes = bytes;
        if shape > 0 && bytes.len() >= 0x5a {
            put(&mut bytes, 0, MZ_MAGIC);
            put(&mut bytes, E_LFANEW, &0x40u32.to_le_bytes());
            put(&mut bytes, 0x40, PE_SIGNATURE);
            if shape > 1 {
                let magic = if shape == 2 { PE32_MAGIC } else { PE32_PLUS_MAGIC };
                put(&mut bytes, 0x58, &magic.to_le_bytes());
            }
        }
        if let Ok(h) = PeHeaders::parse(&bytes) {
            check(&bytes, &h)?;
        }
    }

    /// A valid image reads back as it was written.
    #[test]
    fn valid_images_read_back(spec in image()) {
        let file = spec.build();
        let l = spec.layout();
        let h = PeHeaders::parse(&file).map_err(|e| TestCaseError::fail(e.to_string()))?;
        check(&file, &h)?;
        prop_assert_eq!(h.nt_headers, spec.nt_headers as usize);
        prop_assert_eq!(h.magic == PE32_PLUS_MAGIC, spec.pe32_plus);
        prop_assert_eq!((h.machine, h.subsystem), (spec.machine, spec.subsystem));
        prop_assert_eq!(h.section_alignment, spec.section_alignment);
        prop_assert_eq!(h.size_of_headers, l.size_of_headers);
        prop_assert_eq!(h.size_of_image, l.size_of_image);
        prop_assert_eq!(h.data_directories.len(), spec.directories as usize);
        let cert = h.certificate_table().map(|d| (d.address, d.size));
        prop_assert_eq!(cert.filter(|&(_, size)| size > 0), l.certificate);
        prop_assert_eq!(h.sections.len(), spec.sections.len());
        for (i, (s, (name, len))) in h.sections.iter().zip(&spec.sections).enumerate() {
            prop_assert_eq!(&s.name, name);
            prop_assert_eq!((s.virtual_address, s.pointer_to_raw_data), l.sections[i]);
            let data = s.data_range(file.len()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(data.len(), *len as usize);
            prop_assert!(file[data].iter().all(|&b| b == i as u8 + 1));
        }
    }

    /// A valid image with up to four header fields set to anything, a few
    /// header bytes changed, then maybe cut short.
    #[test]
    fn hostile_header_fields(
        spec in image(),
        edits in prop::collection::vec((any::<Index>(), edge_value()), 1..5),
        bytes in prop::collection::vec((any::<Index>(), any::<u8>()), 0..4),
        cut in proptest::option::of(any::<Index>()),
    ) {
        let mut file = spec.build();
        let fields = spec.fields();
        for (i, v) in edits {
            let (at, width) = fields[i.index(fields.len())];
            put(&mut file, at, &v.to_le_bytes()[..width]);
        }
        let headers = spec.layout().size_of_headers as usize;
        for (i, b) in bytes {
            file[i.index(headers)] = b;
        }
        if let Some(cut) = cut {
            file.truncate(cut.index(file.len() + 1));
        }
        if let Ok(h) = PeHeaders::parse(&file) {
            check(&file, &h)?;
        }
    }
}
