//! Property tests for the UKI builder: an EFI stub (PE32+, x86-64, as
//! [`TestPe`] writes it) with header fields set to anything, header bytes
//! changed or the file cut short is built into a UKI or refused with a
//! typed error, never a panic; a UKI it builds reads back with `.linux`
//! intact, our sections last and in order, and the checksum right.
//! Bounded; failures are not persisted into the source tree.

use proptest::prelude::*;
use proptest::sample::Index;

use super::*;
use crate::pe::testpe::{edge_value, put, TestPe};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Stubs with one to three sections, either alignment, room for up to
/// six more section headers, maybe signed.
fn stub() -> impl Strategy<Value = TestPe> {
    let names = prop::sample::select(vec![".text", ".data", ".reloc", ".sbat"]);
    (
        prop::sample::select(vec![0x200u32, 0x1000]),
        prop::collection::vec((names, 0u32..0x400), 1..4),
        0u32..7,
        proptest::option::of(prop::collection::vec(any::<u8>(), 0..40)),
    )
        .prop_map(|(sa, sections, spare, blob)| TestPe {
            section_alignment: sa,
            sections: sections
                .into_iter()
                .map(|(n, len)| (n.to_string(), len))
                .collect(),
            spare_headers: spare,
            certificate: blob,
            ..TestPe::efi_stub()
        })
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn hostile_stubs_are_built_or_refused(
        spec in stub(),
        edits in prop::collection::vec((any::<Index>(), edge_value()), 0..4),
        bytes in prop::collection::vec((any::<Index>(), any::<u8>()), 0..3),
        cut in proptest::option::of(any::<Index>()),
        kernel in 1usize..0x900,
        initrd in 0usize..0x300,
    ) {
        let mut stub = spec.build();
        let fields = spec.fields();
        for (i, v) in edits {
            let (at, width) = fields[i.index(fields.len())];
            put(&mut stub, at, &v.to_le_bytes()[..width]);
        }
        let headers = spec.layout().size_of_headers as usize;
        for (i, b) in bytes {
            stub[i.index(headers)] = b;
        }
        if let Some(cut) = cut {
            stub.truncate(cut.index(stub.len() + 1));
        }
        let linux = vec![0x4c; kernel];
        let initrd = vec![0x49; initrd];
        let sections = UkiSections {
            osrel: b"ID=nodeimg\n",
            cmdline: b"ro",
            uname: b"",
            initrd: &initrd,
            linux: &linux,
        };
        let Ok(uki) = build_uki(&stub, &sections) else {
            return Ok(());
        };
        let fail = |e: UkiError| TestCaseError::fail(e.to_string());
        prop_assert_eq!(section_bytes(&uki, ".linux").map_err(fail)?, linux.as_slice());
        let read = read_sections(&uki).map_err(fail)?;
        let ours: Vec<&str> = sections
            .in_order()
            .iter()
            .filter(|(_, data)| !data.is_empty())
            .map(|&(name, _)| name)
            .collect();
        let last: Vec<&str> = read.iter().rev().take(ours.len()).rev().map(|s| s.name.as_str()).collect();
        prop_assert_eq!(last, ours);
        let h = PeHeaders::parse(&uki).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(h.checksum, pe_checksum(&uki, h.checksum_field));
        prop_assert!(h.certificate_table().is_none_or(|d| d.address == 0 && d.size == 0));
    }
}
