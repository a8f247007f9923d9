//! Property tests: the readers never panic on any bytes, what the writers
//! (`Header::encode`, `Entry::encode_into`) produce reads back unchanged,
//! and a header or entry array with any one byte changed is refused by
//! its CRC32 rather than read as garbage. Bounded; failures are not
//! persisted into the source tree.

use super::*;
use proptest::prelude::*;

/// A header any tool could write, read back from `my_lba`.
fn header() -> impl Strategy<Value = Header> {
    (
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
        any::<[u8; 16]>(),
        any::<u64>(),
        0u32..=1024,
        (16u32..=512).prop_map(|n| n * 8),
        any::<u32>(),
    )
        .prop_map(
            |(
                (my_lba, alternate_lba, first_usable, last_usable),
                disk_guid,
                entries_lba,
                entry_count,
                entry_size,
                entries_crc,
            )| {
                Header {
                    size: HEADER_SIZE,
                    my_lba,
                    alternate_lba,
                    first_usable,
                    last_usable,
                    disk_guid,
                    entries_lba,
                    entry_count,
                    entry_size,
                    entries_crc,
                }
            },
        )
}

/// A used entry: non-zero type GUID, a name of at most 36 UTF-16 units
/// without NUL (what the name field holds).
fn entry() -> impl Strategy<Value = Entry> {
    (
        any::<[u8; 16]>().prop_filter("a used entry", |g| *g != [0; 16]),
        any::<[u8; 16]>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        "[^\u{0}]{0,36}".prop_filter("fits the name field", |n| {
            n.encode_utf16().count() <= NAME_BYTES / 2
        }),
    )
        .prop_map(
            |(type_guid, part_guid, first_lba, last_lba, attributes, name)| Entry {
                type_guid,
                part_guid,
                first_lba,
                last_lba,
                attributes,
                name,
            },
        )
}

fn block_size() -> impl Strategy<Value = u64> {
    prop_oneof![Just(512u64), Just(4096u64)]
}

proptest! {
    #![proptest_config(crate::props::bounded(1024))]

    /// Any bytes at any LBA: a header or a typed error, never a panic.
    #[test]
    fn any_block_parses_or_is_refused(
        block in prop::collection::vec(any::<u8>(), 0..600),
        lba in any::<u64>(),
        signed in any::<bool>(),
    ) {
        let mut block = block;
        if signed && block.len() >= 8 {
            // past the signature, so the deeper checks run too
            block[..8].copy_from_slice(SIGNATURE);
        }
        let _ = Header::parse(&block, lba);
        let _ = parse_location(&block);
        let _ = has_protective_record(&block);
        let _ = first_mbr_record(&block);
    }

    /// Any entry array under any shape: the lookups never panic and never
    /// yield more entries than the header counts.
    #[test]
    fn any_entries_read_without_panic(
        entries in prop::collection::vec(any::<u8>(), 0..2048),
        entries_lba in any::<u64>(),
        entry_count in any::<u32>(),
        entry_size in any::<u32>(),
        number in any::<u32>(),
    ) {
        let loc = Location { entries_lba, entry_count, entry_size };
        let used = used_entries(&loc, &entries);
        prop_assert!(used.len() as u64 <= u64::from(entry_count));
        let _ = partitions(&loc, &entries);
        let _ = Entry::decode(&entries);
        let _ = Entry::decode_strict(&entries, number);
    }

    /// GUID text and bytes convert both ways; any text is a GUID or `None`.
    #[test]
    fn guid_text_round_trips(g in any::<[u8; 16]>(), s in "\\PC{0,40}") {
        let text = guid_string(&g);
        prop_assert_eq!(text.as_deref().and_then(guid_bytes), Some(g));
        let _ = guid_bytes(&s);
    }

    /// The header writer's output reads back as the same header.
    #[test]
    fn header_round_trips(h in header(), lbs in block_size()) {
        let block = h.encode(lbs);
        prop_assert_eq!(block.len() as u64, lbs);
        prop_assert_eq!(Header::parse(&block, h.my_lba), Ok(h.clone()));
        prop_assert_eq!(parse_location(&block), Some(h.location()));
    }

    /// One changed byte inside the 92 bytes the CRC covers is refused;
    /// past them (the block's padding) it does not matter.
    #[test]
    fn changed_header_byte_is_refused(
        h in header(),
        lbs in block_size(),
        at in any::<prop::sample::Index>(),
        xor in 1u8..,
    ) {
        let mut block = h.encode(lbs);
        let at = at.index(block.len());
        block[at] ^= xor;
        let read = Header::parse(&block, h.my_lba);
        if at < HEADER_SIZE as usize {
            prop_assert!(read.is_err(), "byte {} ^ {:#04x} accepted: {:?}", at, xor, read);
        } else {
            prop_assert_eq!(read, Ok(h));
        }
    }

    /// A header cut short is refused, whatever its length.
    #[test]
    fn truncated_header_is_refused(h in header(), len in 0usize..HEADER_SIZE as usize) {
        let block = h.encode(512);
        prop_assert!(Header::parse(&block[..len], h.my_lba).is_err());
    }

    /// Entries written into an array read back in order, and the array's
    /// CRC catches any one changed byte.
    #[test]
    fn entries_round_trip_and_crc_catches_a_change(
        written in prop::collection::vec(entry(), 1..8),
        at in any::<prop::sample::Index>(),
        xor in 1u8..,
    ) {
        let size = 128u32;
        let count = written.len() as u32 + 2;
        let mut entries = vec![0u8; (count * size) as usize];
        for (e, slot) in written.iter().zip(entries.chunks_exact_mut(size as usize)) {
            e.encode_into(slot);
        }
        let h = Header {
            size: HEADER_SIZE,
            my_lba: 1,
            alternate_lba: 100,
            first_usable: 34,
            last_usable: 66,
            disk_guid: [7; 16],
            entries_lba: 2,
            entry_count: count,
            entry_size: size,
            entries_crc: crc32(&entries),
        };
        let read: Vec<Entry> = used_entries(&h.location(), &entries)
            .into_iter()
            .map(|(_, e)| e)
            .collect();
        prop_assert_eq!(&read, &written);
        for (n, slot) in slots(&h.location(), &entries) {
            let strict = Entry::decode_strict(slot, n);
            prop_assert_eq!(strict, Ok(Entry::decode(slot)));
        }
        prop_assert_eq!(check_entries(&h, &entries), Ok(()));

        let at = at.index(entries.len());
        entries[at] ^= xor;
        let refused = matches!(
            check_entries(&h, &entries),
            Err(ParseError::EntriesCrc { lba: 2, .. })
        );
        prop_assert!(refused);
        entries.pop();
        let short = matches!(
            check_entries(&h, &entries),
            Err(ParseError::EntriesLength { lba: 2, .. })
        );
        prop_assert!(short);
    }
}
