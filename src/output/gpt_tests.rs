use std::io::Cursor;
use std::path::Path;
use std::process::Command;

use super::*;

pub(crate) use crate::testutil::{run_ok, tool};

/// `sgdisk -v` must report no problems.
pub(crate) fn assert_sgdisk_clean(path: &Path) {
    let out = run_ok(Command::new(tool("sgdisk", "gdisk")).arg("-v").arg(path));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("No problems found"),
        "sgdisk -v found problems:\n{text}"
    );
}

/// One partition as `sfdisk --json` lists it: (type, uuid, name, start, size),
/// GUIDs in upper case.
pub(crate) type Listed = (String, String, String, u64, u64);

/// `sfdisk --json`'s disk GUID and partitions.
pub(crate) fn sfdisk_partitions(path: &Path) -> (String, Vec<Listed>) {
    let out = run_ok(
        Command::new(tool("sfdisk", "fdisk"))
            .arg("--json")
            .arg(path),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("sfdisk json");
    let table = &v["partitiontable"];
    assert_eq!(table["label"], "gpt");
    let parts = table["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| {
            (
                p["type"].as_str().expect("type").to_owned(),
                p["uuid"].as_str().expect("uuid").to_owned(),
                p["name"].as_str().unwrap_or("").to_owned(),
                p["start"].as_u64().expect("start"),
                p["size"].as_u64().expect("size"),
            )
        })
        .collect();
    (table["id"].as_str().expect("id").to_owned(), parts)
}

fn sample(disk_sectors: u64) -> Vec<Partition> {
    let (first, last) = usable_range(disk_sectors);
    assert!(first <= 2048 && last >= 6143);
    vec![
        Partition {
            type_guid: PartitionType::ESP,
            part_guid: Guid::from_u128(0x1111_2222_3333_4444_5555_6666_7777_8888),
            name: "esp".into(),
            first_lba: 2048,
            last_lba: 4095,
            attributes: 0,
        },
        Partition {
            type_guid: PartitionType::ROOT_X86_64,
            part_guid: Guid::from_u128(0xaaaa_bbbb_cccc_dddd_eeee_ffff_0000_1111),
            name: "root-a-0.1.0 ünïcode".into(),
            first_lba: 4096,
            last_lba: 6143,
            attributes: 1 << 60,
        },
    ]
}

const DISK_GUID: Guid = Guid::from_u128(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210);

fn written(size: u64, parts: &[Partition]) -> Vec<u8> {
    let mut c = Cursor::new(Vec::new());
    write_gpt(&mut c, size, DISK_GUID, parts).expect("write gpt");
    let v = c.into_inner();
    assert_eq!(v.len() as u64, size, "the backup header ends the disk");
    v
}

#[test]
fn crc32_matches_the_standard_check_value() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32(b""), 0);
}

#[test]
fn guids_print_and_store_in_uefi_order() {
    let esp = PartitionType::ESP.0;
    assert_eq!(esp.to_string(), "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
    assert_eq!(
        esp.to_disk(),
        [
            0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E,
            0xC9, 0x3B
        ]
    );
    assert_eq!(Guid::from_disk(esp.to_disk()), esp);
    assert_eq!(
        Guid::parse("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
        Some(esp)
    );
    assert_eq!(Guid::parse("c12a7328f81f11d2ba4b00a0c93ec93b"), None);
    assert_eq!(
        PartitionType::ROOT_X86_64.0.to_string(),
        "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"
    );
    assert_eq!(
        PartitionType::ROOT_VERITY_X86_64.0.to_string(),
        "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5"
    );
}

#[test]
fn verity_uuids_are_the_root_hash_halves_verbatim() {
    let hash: Vec<u8> = (1..=32).collect();
    let (root, verity) = verity_partition_uuids(&hash).expect("uuids");
    assert_eq!(root.to_string(), "01020304-0506-0708-090a-0b0c0d0e0f10");
    assert_eq!(verity.to_string(), "11121314-1516-1718-191a-1b1c1d1e1f20");
    assert!(matches!(
        verity_partition_uuids(&hash[..20]),
        Err(GptError::RootHashTooShort { len: 20 })
    ));
    let mut zero_front = hash.clone();
    zero_front[..16].fill(0);
    assert!(matches!(
        verity_partition_uuids(&zero_front),
        Err(GptError::NullRootHashUuid)
    ));
}

#[test]
fn our_reader_round_trips_and_rejects_damage() {
    let size = 4 << 20;
    let parts = sample(size / SECTOR);
    let img = written(size, &parts);
    let table = read_gpt(&mut Cursor::new(&img), size).expect("read back");
    assert_eq!(table.disk_guid, DISK_GUID);
    assert_eq!(table.partitions, parts);
    assert_eq!(table.first_usable_lba, 34);
    assert_eq!(table.last_usable_lba, size / SECTOR - 34);

    // A flipped byte in the primary entry array fails its CRC.
    let mut bad = img.clone();
    bad[2 * SECTOR as usize + 40] ^= 1;
    assert!(matches!(
        read_gpt(&mut Cursor::new(&bad), size),
        Err(GptError::Parse(contract::gpt::ParseError::EntriesCrc {
            lba: 2,
            ..
        }))
    ));
    // A flipped byte in the backup header fails the header CRC.
    let mut bad = img.clone();
    bad[img.len() - SECTOR as usize + 60] ^= 1;
    assert!(matches!(
        read_gpt(&mut Cursor::new(&bad), size),
        Err(GptError::Parse(contract::gpt::ParseError::HeaderCrc { .. }))
    ));
    let mut bad = img;
    bad[510] = 0;
    assert!(matches!(
        read_gpt(&mut Cursor::new(&bad), size),
        Err(GptError::BadProtectiveMbr)
    ));
}

#[test]
fn invalid_layouts_are_refused() {
    let size: u64 = 4 << 20;
    let sectors = size / SECTOR;
    let mut c = Cursor::new(Vec::new());
    let mut parts = sample(sectors);
    parts[1].first_lba = 4000;
    assert!(matches!(
        write_gpt(&mut c, size, DISK_GUID, &parts),
        Err(GptError::Overlap { .. })
    ));
    let mut parts = sample(sectors);
    parts[0].name = "x".repeat(37);
    assert!(matches!(
        write_gpt(&mut c, size, DISK_GUID, &parts),
        Err(GptError::NameTooLong { units: 37, .. })
    ));
    let mut parts = sample(sectors);
    parts[1].last_lba = sectors - 2;
    assert!(matches!(
        write_gpt(&mut c, size, DISK_GUID, &parts),
        Err(GptError::OutsideUsable { .. })
    ));
    let mut parts = sample(sectors);
    parts[1].part_guid = parts[0].part_guid;
    assert!(matches!(
        write_gpt(&mut c, size, DISK_GUID, &parts),
        Err(GptError::DuplicateGuid { .. })
    ));
    assert!(matches!(
        write_gpt(&mut c, size + 1, DISK_GUID, &[]),
        Err(GptError::DiskSizeUnaligned { .. })
    ));
    assert!(matches!(
        write_gpt(&mut c, 64 * SECTOR, DISK_GUID, &[]),
        Err(GptError::DiskTooSmall { .. })
    ));
}

#[test]
fn sgdisk_and_sfdisk_accept_the_table() {
    let size = 4 << 20;
    let parts = sample(size / SECTOR);
    let img = written(size, &parts);
    assert_eq!(img, written(size, &parts), "two writes are byte-identical");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("disk.img");
    std::fs::write(&path, &img).expect("write image");

    assert_sgdisk_clean(&path);
    let (id, listed) = sfdisk_partitions(&path);
    assert_eq!(id, DISK_GUID.to_string().to_uppercase());
    let want: Vec<_> = parts
        .iter()
        .map(|p| {
            (
                p.type_guid.0.to_string().to_uppercase(),
                p.part_guid.to_string().to_uppercase(),
                p.name.clone(),
                p.first_lba,
                p.last_lba - p.first_lba + 1,
            )
        })
        .collect();
    assert_eq!(listed, want);
}

#[test]
fn reader_survives_every_flipped_header_byte() {
    let size = 4 << 20;
    let img = written(size, &sample(size / SECTOR));
    let last = img.len() - SECTOR as usize;
    for at in (SECTOR as usize..2 * SECTOR as usize).chain(last..img.len()) {
        for bit in [0x01u8, 0x80] {
            let mut bad = img.clone();
            bad[at] ^= bit;
            let got = read_gpt(&mut Cursor::new(&bad), size);
            // Bytes the header CRC covers must be caught; the rest is padding.
            let in_header = (at % SECTOR as usize) < HEADER_SIZE as usize;
            assert_eq!(got.is_err(), in_header, "byte {at} bit {bit:#x}: {got:?}");
        }
    }
    // Truncated or empty images are errors, not panics.
    assert!(read_gpt(&mut Cursor::new(&img[..1024]), size).is_err());
    assert!(read_gpt(&mut Cursor::new(Vec::new()), size).is_err());
}
