//! Hand-made tables read back; the builder's tests also read its writer's
//! output with these functions.

use super::*;

/// 1-based partition number whose unique GUID is `want` (lower-case text).
fn find_partition(h: &Location, entries: &[u8], want: &str) -> Option<u32> {
    partitions(h, entries)
        .into_iter()
        .find(|(_, g)| g == want)
        .map(|(n, _)| n)
}

fn header(count: u32, size: u32) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[..8].copy_from_slice(SIGNATURE);
    h[72..80].copy_from_slice(&2u64.to_le_bytes());
    h[80..84].copy_from_slice(&count.to_le_bytes());
    h[84..88].copy_from_slice(&size.to_le_bytes());
    h
}

const ROOT_TYPE: &str = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";

#[test]
fn guid_round_trip() {
    let g = "11223344-5566-7788-99aa-bbccddeeff00";
    assert_eq!(guid_string(&guid_bytes(g).unwrap()).unwrap(), g);
    assert_eq!(
        guid_string(&guid_bytes(&g.to_uppercase()).unwrap()).unwrap(),
        g
    );
    // the type GUID of an x86-64 root partition as it sits on disk
    assert_eq!(
        &guid_bytes(ROOT_TYPE).unwrap()[..4],
        &[0xe3, 0xbc, 0x68, 0x4f]
    );
    for bad in [
        "",
        "11223344-5566-7788-99aa-bbccddeeff0",
        "1122334455667788-99aa-bbccddeeff00",
        "g1223344-5566-7788-99aa-bbccddeeff00",
    ] {
        assert!(guid_bytes(bad).is_none(), "{bad}");
    }
    assert!(guid_string(&[0u8; 15]).is_none());
}

#[test]
fn crc32_check_value() {
    // the standard check value of CRC-32/ISO-HDLC
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32(b""), 0);
}

#[test]
fn finds_the_partition_by_unique_guid() {
    let h = parse_location(&header(4, 128)).unwrap();
    assert_eq!(
        h,
        Location {
            entries_lba: 2,
            entry_count: 4,
            entry_size: 128
        }
    );
    let mut entries = vec![0u8; 4 * 128];
    let want = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
    entries[128..144].copy_from_slice(&guid_bytes(ROOT_TYPE).unwrap());
    entries[144..160].copy_from_slice(&guid_bytes("11111111-2222-3333-4444-555555555555").unwrap());
    entries[256..272].copy_from_slice(&guid_bytes(ROOT_TYPE).unwrap());
    entries[272..288].copy_from_slice(&guid_bytes(want).unwrap());
    assert_eq!(find_partition(&h, &entries, want), Some(3));
    assert_eq!(
        find_partition(&h, &entries, "11111111-2222-3333-4444-555555555555"),
        Some(2)
    );
    assert_eq!(
        find_partition(&h, &entries, "00000000-0000-0000-0000-000000000000"),
        None
    );
    assert_eq!(partitions(&h, &entries).len(), 2);
    // a truncated array is not a panic
    assert_eq!(find_partition(&h, &entries[..200], want), None);
}

#[test]
fn rejects_non_gpt() {
    assert!(parse_location(&[0u8; 512]).is_none());
    assert!(parse_location(&header(4, 64)).is_none());
    assert!(parse_location(&header(4, u32::MAX - 7)).is_none());
    assert!(parse_location(&header(100_000, 128)).is_none());
    assert!(parse_location(b"EFI PART").is_none());
}

fn sample_header() -> Header {
    Header {
        size: HEADER_SIZE,
        my_lba: 1,
        alternate_lba: 2047,
        first_usable: 34,
        last_usable: 2014,
        disk_guid: guid_bytes("01234567-89ab-cdef-0123-456789abcdef").unwrap(),
        entries_lba: 2,
        entry_count: 128,
        entry_size: 128,
        entries_crc: crc32(&[0u8; 128 * 128]),
    }
}

#[test]
fn header_round_trip_and_checks() {
    let h = sample_header();
    let block = h.encode(512);
    assert_eq!(Header::parse(&block, 1).unwrap(), h);
    // read from the wrong LBA
    assert!(matches!(
        Header::parse(&block, 2047),
        Err(ParseError::Field {
            field: "my LBA",
            ..
        })
    ));
    // one flipped bit breaks the CRC
    let mut bad = block.clone();
    bad[40] ^= 1;
    assert!(matches!(
        Header::parse(&bad, 1),
        Err(ParseError::HeaderCrc { .. })
    ));
    assert!(matches!(
        Header::parse(&[0u8; 512], 1),
        Err(ParseError::NoHeader { lba: 1 })
    ));
    // truncated blocks are errors, not panics
    for n in [8, 12, 20, 91] {
        assert!(Header::parse(&block[..n], 1).is_err(), "{n}");
    }
}

#[test]
fn entry_round_trip() {
    let e = Entry {
        type_guid: guid_bytes(ROOT_TYPE).unwrap(),
        part_guid: guid_bytes("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee").unwrap(),
        first_lba: 2048,
        last_lba: 4095,
        attributes: 1 << 60,
        name: "root-a-0.1.0 ünïcode".into(),
    };
    let mut b = vec![0xffu8; 128];
    e.encode_into(&mut b);
    assert_eq!(Entry::decode(&b).unwrap(), e);
    assert_eq!(Entry::decode_strict(&b, 1).unwrap().unwrap(), e);
    assert_eq!(e.lbas(), 2048);
    assert!(Entry::decode(&[0u8; 128]).is_none());
    assert!(Entry::decode(&b[..100]).is_none());
    // a lone surrogate: the lenient reader keeps the entry, the strict one refuses it
    b[56..58].copy_from_slice(&0xD800u16.to_le_bytes());
    assert!(Entry::decode(&b).unwrap().name.starts_with('\u{FFFD}'));
    assert_eq!(
        Entry::decode_strict(&b, 3),
        Err(ParseError::BadName { number: 3 })
    );
}

/// A whole hand-made table: header and entries written with this module's
/// encoders, read back through the checks.
#[test]
fn a_hand_made_table_reads_back() {
    let parts = [
        Entry {
            type_guid: guid_bytes("c12a7328-f81f-11d2-ba4b-00a0c93ec93b").unwrap(),
            part_guid: guid_bytes("11111111-2222-3333-4444-555555555555").unwrap(),
            first_lba: 2048,
            last_lba: 4095,
            attributes: 0,
            name: "esp".into(),
        },
        Entry {
            type_guid: guid_bytes(ROOT_TYPE).unwrap(),
            part_guid: guid_bytes("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee").unwrap(),
            first_lba: 4096,
            last_lba: 6143,
            attributes: 1 << 60,
            name: "root-a".into(),
        },
    ];
    let mut entries = vec![0u8; 128 * 128];
    for (e, slot) in parts.iter().zip(entries.chunks_exact_mut(128)) {
        e.encode_into(slot);
    }
    let h = Header {
        entries_crc: crc32(&entries),
        ..sample_header()
    };
    let read = Header::parse(&h.encode(512), 1).unwrap();
    check_entries(&read, &entries).unwrap();
    let used = used_entries(&read.location(), &entries);
    assert_eq!(used, vec![(1, parts[0].clone()), (2, parts[1].clone())]);
    let mut bad = entries.clone();
    bad[300] ^= 1;
    assert!(matches!(
        check_entries(&read, &bad),
        Err(ParseError::EntriesCrc { lba: 2, .. })
    ));
    assert!(matches!(
        check_entries(&read, &entries[..128]),
        Err(ParseError::EntriesLength { .. })
    ));
}

#[test]
fn protective_mbr_records() {
    let mut mbr = vec![0u8; 512];
    assert!(!has_protective_record(&mbr));
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    mbr[MBR_RECORDS_AT + 4] = MBR_PROTECTIVE;
    mbr[MBR_RECORDS_AT + 8..MBR_RECORDS_AT + 12].copy_from_slice(&1u32.to_le_bytes());
    assert!(has_protective_record(&mbr));
    assert_eq!(first_mbr_record(&mbr), Some((MBR_PROTECTIVE, 1, 0)));
    assert!(!has_protective_record(&mbr[..300]));
}
