//! Property tests for the two users of the PE reader: the Authenticode
//! layout ([`image_digest`], [`signature`]) and the UKI section table
//! ([`read_sections`], [`section_bytes`]). Any bytes, and a small valid
//! PE32+ with its header fields set to anything, are read or refused with
//! a typed error, never a panic; the digest covers the sections and skips
//! the checksum and certificate directory. Bounded; failures are not
//! persisted into the source tree.

use proptest::prelude::*;

use super::*;
use crate::boot::uki::{read_sections, section_bytes};
use crate::pe::{
    COFF_HEADER_SIZE, COFF_NUMBER_OF_SECTIONS, COFF_SIZE_OF_OPTIONAL_HEADER, DIR_SECURITY,
    E_LFANEW, OPT_CHECKSUM, OPT_SIZE_OF_HEADERS, PE32_PLUS_MAGIC, SECTION_HEADER_SIZE,
};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

const PE_AT: usize = 0x40;
const COFF_AT: usize = PE_AT + 4;
const OPT_AT: usize = COFF_AT + COFF_HEADER_SIZE;
const OPT_SIZE: usize = 240;
const TABLE_AT: usize = OPT_AT + OPT_SIZE;
const HEADERS: usize = 0x200;
const SECTION_RAW: usize = 0x200;
/// The certificate directory entry of a PE32+ optional header.
const CERT_DIR_AT: usize = OPT_AT + 108 + 4 + 8 * DIR_SECURITY;

fn put(b: &mut [u8], at: usize, v: &[u8]) {
    b[at..at + v.len()].copy_from_slice(v);
}

/// A PE32+ with `names.len()` sections of 0x200 bytes each (filled with
/// the section's index) and, if `blob` is given, a certificate table
/// holding it.
fn small_pe(names: &[&str], blob: Option<&[u8]>) -> Vec<u8> {
    let mut b = vec![0u8; HEADERS + names.len() * SECTION_RAW];
    put(&mut b, 0, b"MZ");
    put(&mut b, E_LFANEW, &(PE_AT as u32).to_le_bytes());
    put(&mut b, PE_AT, b"PE\0\0");
    put(&mut b, COFF_AT, &0x8664u16.to_le_bytes());
    put(
        &mut b,
        COFF_AT + COFF_NUMBER_OF_SECTIONS,
        &(names.len() as u16).to_le_bytes(),
    );
    put(
        &mut b,
        COFF_AT + COFF_SIZE_OF_OPTIONAL_HEADER,
        &(OPT_SIZE as u16).to_le_bytes(),
    );
    put(&mut b, OPT_AT, &PE32_PLUS_MAGIC.to_le_bytes());
    put(
        &mut b,
        OPT_AT + OPT_SIZE_OF_HEADERS,
        &(HEADERS as u32).to_le_bytes(),
    );
    put(&mut b, OPT_AT + 108, &16u32.to_le_bytes());
    for (i, name) in names.iter().enumerate() {
        let h = TABLE_AT + i * SECTION_HEADER_SIZE;
        let start = HEADERS + i * SECTION_RAW;
        put(&mut b, h, name.as_bytes());
        put(&mut b, h + 8, &(SECTION_RAW as u32).to_le_bytes());
        put(&mut b, h + 12, &(0x1000 * (i as u32 + 1)).to_le_bytes());
        put(&mut b, h + 16, &(SECTION_RAW as u32).to_le_bytes());
        put(&mut b, h + 20, &(start as u32).to_le_bytes());
        put(&mut b, h + 36, &0x4000_0040u32.to_le_bytes());
        b[start..start + SECTION_RAW].fill(i as u8 + 1);
    }
    if let Some(blob) = blob {
        let start = b.len();
        let len = WIN_CERTIFICATE_HEADER + blob.len();
        b.extend_from_slice(&(len as u32).to_le_bytes());
        b.extend_from_slice(&WIN_CERT_REVISION_2_0.to_le_bytes());
        b.extend_from_slice(&WIN_CERT_TYPE_PKCS_SIGNED_DATA.to_le_bytes());
        b.extend_from_slice(blob);
        b.resize(b.len().next_multiple_of(CERT_ALIGN), 0);
        let size = (b.len() - start) as u32;
        put(&mut b, CERT_DIR_AT, &(start as u32).to_le_bytes());
        put(&mut b, CERT_DIR_AT + 4, &size.to_le_bytes());
    }
    b
}

/// Reads `pe` every way there is; only typed results come back.
fn read_all(pe: &[u8]) {
    let _ = read_sections(pe);
    let _ = section_bytes(pe, ".linux");
    let _ = image_digest(pe);
    let _ = signature(pe);
}

/// A header field a hostile file could set: the offset and its width.
fn field() -> impl Strategy<Value = (usize, usize)> {
    let mut fields = vec![
        (E_LFANEW, 4),
        (COFF_AT + COFF_NUMBER_OF_SECTIONS, 2),
        (COFF_AT + COFF_SIZE_OF_OPTIONAL_HEADER, 2),
        (OPT_AT, 2),
        (OPT_AT + OPT_SIZE_OF_HEADERS, 4),
        (OPT_AT + 92, 4),
        (OPT_AT + 108, 4),
        (CERT_DIR_AT, 4),
        (CERT_DIR_AT + 4, 4),
    ];
    for i in 0..3 {
        let h = TABLE_AT + i * SECTION_HEADER_SIZE;
        fields.extend([(h + 8, 4), (h + 16, 4), (h + 20, 4)]);
    }
    prop::sample::select(fields)
}

/// Values around the edges: small, near the file's size, huge.
fn value() -> impl Strategy<Value = u32> {
    prop_oneof![
        0u32..16,
        0u32..0x1000,
        Just(0x10b),
        Just(0x20b),
        any::<u32>()
    ]
}

proptest! {
    #![proptest_config(config(512))]

    /// Any bytes, bare or behind MZ and a PE signature.
    #[test]
    fn any_bytes_are_read_or_refused(
        bytes in prop::collection::vec(any::<u8>(), 0..1024),
        shaped in any::<bool>(),
    ) {
        let mut bytes = bytes;
        if shaped && bytes.len() >= PE_AT + 4 {
            put(&mut bytes, 0, b"MZ");
            put(&mut bytes, E_LFANEW, &(PE_AT as u32).to_le_bytes());
            put(&mut bytes, PE_AT, b"PE\0\0");
        }
        read_all(&bytes);
    }

    /// A valid PE with up to four header fields set to anything, then
    /// maybe cut short.
    #[test]
    fn hostile_header_fields(
        sections in 0usize..4,
        signed in any::<bool>(),
        fields in prop::collection::vec((field(), value()), 1..5),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let names = &[".osrel", ".initrd", ".linux"][..sections.min(3)];
        let mut pe = small_pe(names, signed.then_some(b"pkcs7".as_slice()));
        for ((at, width), v) in fields {
            put(&mut pe, at, &v.to_le_bytes()[..width]);
        }
        if let Some(cut) = cut {
            pe.truncate(cut.index(pe.len() + 1));
        }
        read_all(&pe);
    }

    /// The valid PE reads back, and its digest covers the section bytes
    /// but not the checksum or the certificate directory.
    #[test]
    fn digest_covers_sections_only(
        sections in 1usize..4,
        at in any::<prop::sample::Index>(),
        xor in 1u8..,
        checksum in any::<u32>(),
    ) {
        let names = &[".osrel", ".initrd", ".linux"][..sections];
        let pe = small_pe(names, Some(b"blob"));
        let read = read_sections(&pe).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(read.len(), sections);
        for (i, s) in read.iter().enumerate() {
            prop_assert_eq!(&s.name, names[i]);
            prop_assert_eq!(s.file_range.clone(), HEADERS + i * SECTION_RAW..HEADERS + (i + 1) * SECTION_RAW);
        }
        prop_assert_eq!(signature(&pe).ok().flatten(), Some(b"blob".as_slice()));
        let digest = image_digest(&pe).map_err(|e| TestCaseError::fail(e.to_string()))?;

        let mut changed = pe.clone();
        let in_sections = HEADERS + at.index(sections * SECTION_RAW);
        changed[in_sections] ^= xor;
        prop_assert_ne!(image_digest(&changed).ok(), Some(digest));

        let mut same = pe.clone();
        put(&mut same, OPT_AT + OPT_CHECKSUM, &checksum.to_le_bytes());
        prop_assert_eq!(image_digest(&same).ok(), Some(digest));
        let unsigned = small_pe(names, None);
        prop_assert_eq!(image_digest(&unsigned).ok(), Some(digest));
    }
}

/// Found by `hostile_header_fields`: a SizeOfHeaders short of the
/// certificate directory made the digest slice its headers upside down.
#[test]
fn short_size_of_headers_is_refused() {
    let mut pe = small_pe(&[".linux"], None);
    put(&mut pe, OPT_AT + OPT_SIZE_OF_HEADERS, &6u32.to_le_bytes());
    let e = image_digest(&pe).unwrap_err();
    assert!(
        matches!(
            e,
            AuthenticodeError::HeadersTooSmall {
                size_of_headers: 6,
                ..
            }
        ),
        "{e}"
    );
}
