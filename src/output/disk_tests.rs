use std::fs::File;
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use super::*;
use crate::output::esp::tests::esp_image;
use crate::output::gpt::tests::{assert_sgdisk_clean, run_ok, sfdisk_partitions, tool};
use crate::util::hash::{sha256, sha256_reader};

const MIB: u64 = 1 << 20;
const EPOCH: u64 = 1_700_000_000;

struct Inputs {
    esp: Vec<u8>,
    root: Vec<u8>,
    verity: Vec<u8>,
    root_hash: [u8; 32],
}

impl Inputs {
    fn new() -> Inputs {
        let root: Vec<u8> = (0..3 * MIB + 4096).map(|i| (i % 251) as u8).collect();
        let verity: Vec<u8> = (0..40_960u64).map(|i| (i % 239) as u8 ^ 0x5a).collect();
        Inputs {
            esp: esp_image(EPOCH),
            root_hash: sha256(&verity),
            root,
            verity,
        }
    }

    fn spec(&self) -> DiskSpec<'_> {
        DiskSpec {
            version: "0.1.0",
            root_hash: &self.root_hash,
            slot_size_root: 4 * MIB,
            slot_size_verity: MIB + 1, // rounds up to 2 MiB
            ids: DiskIds::derive(b"test-seed"),
        }
    }

    fn write(&self, path: &Path) -> DiskLayout {
        let out = File::create(path).expect("create disk");
        let (mut e, mut r, mut v) = (&self.esp[..], &self.root[..], &self.verity[..]);
        write_disk(
            out,
            &self.spec(),
            Payload {
                reader: &mut e,
                len: self.esp.len() as u64,
            },
            Payload {
                reader: &mut r,
                len: self.root.len() as u64,
            },
            Payload {
                reader: &mut v,
                len: self.verity.len() as u64,
            },
        )
        .expect("write disk")
    }
}

fn read_range(f: &mut File, offset: u64, len: u64) -> Vec<u8> {
    let mut buf = vec![0u8; len as usize];
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.read_exact(&mut buf).expect("read");
    buf
}

#[test]
fn layout_is_aligned_and_named_for_slots() {
    let hash: Vec<u8> = (1..=32).collect();
    let spec = DiskSpec {
        version: "0.1.0",
        root_hash: &hash,
        slot_size_root: 4 * MIB,
        slot_size_verity: MIB,
        ids: DiskIds::derive(b"x"),
    };
    let l = plan_disk(&spec, 40 * MIB, 3 * MIB, 100).expect("plan");
    let labels: Vec<&str> = l.partitions.iter().map(|p| p.label.as_str()).collect();
    assert_eq!(
        labels,
        [
            "esp",
            "root-a-0.1.0",
            "verity-a-0.1.0",
            "root-b",
            "verity-b"
        ]
    );
    let offsets: Vec<u64> = l.partitions.iter().map(|p| p.offset / MIB).collect();
    assert_eq!(offsets, [1, 41, 45, 46, 50]);
    assert_eq!(l.size, 52 * MIB);
    assert_eq!(
        l.partitions[1].uuid.to_string(),
        "01020304-0506-0708-090a-0b0c0d0e0f10"
    );
    assert_eq!(
        l.partitions[2].uuid.to_string(),
        "11121314-1516-1718-191a-1b1c1d1e1f20"
    );
    let ids = DiskIds::derive(b"x");
    assert_eq!(ids, DiskIds::derive(b"x"));
    assert_ne!(ids, DiskIds::derive(b"y"));
    assert_eq!(ids.esp.0[6] >> 4, 4, "version 4");
    assert_eq!(ids.esp.0[8] >> 6, 2, "RFC 4122 variant");

    let json = serde_json::to_value(&l).expect("json");
    assert_eq!(json["partitions"][1]["role"], "root-a");
    assert_eq!(
        json["partitions"][1]["type"],
        "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"
    );

    assert!(matches!(
        plan_disk(&spec, MIB, 5 * MIB, 0),
        Err(DiskError::SlotTooSmall {
            partition: "root-a",
            ..
        })
    ));
    let bad = DiskSpec {
        version: "1/2",
        ..spec
    };
    assert!(matches!(
        plan_disk(&bad, MIB, 0, 0),
        Err(DiskError::BadVersion { .. })
    ));
    let long = "9".repeat(30);
    let long = DiskSpec {
        version: &long,
        ..spec
    };
    let mut sink = Cursor::new(Vec::new());
    let (mut a, mut b, mut c) = (&[][..], &[][..], &[][..]);
    assert!(matches!(
        write_disk(
            &mut sink,
            &long,
            Payload {
                reader: &mut a,
                len: 0
            },
            Payload {
                reader: &mut b,
                len: 0
            },
            Payload {
                reader: &mut c,
                len: 0
            }
        ),
        Err(DiskError::Table {
            source: GptError::NameTooLong { .. }
        })
    ));
    let mut short = &[0u8; 10][..];
    let (mut b, mut c) = (&[][..], &[][..]);
    assert!(matches!(
        write_disk(
            &mut sink,
            &spec,
            Payload {
                reader: &mut short,
                len: 11
            },
            Payload {
                reader: &mut b,
                len: 0
            },
            Payload {
                reader: &mut c,
                len: 0
            }
        ),
        Err(DiskError::ShortPayload {
            partition: "esp",
            expected: 11,
            got: 10
        })
    ));
}

#[test]
fn written_disk_passes_sgdisk_sfdisk_fsck_and_our_reader() {
    let inputs = Inputs::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("disk.raw");
    let layout = inputs.write(&path);
    let meta = std::fs::metadata(&path).expect("stat");
    assert_eq!(meta.len(), layout.size);

    // Two writes are byte-identical.
    let again = dir.path().join("again.raw");
    assert_eq!(inputs.write(&again), layout);
    let digest = |p: &Path| sha256_reader(File::open(p).expect("open")).expect("hash");
    assert_eq!(digest(&path), digest(&again));

    // Slot B and the tail are never written: holes in the file.
    let slot_b: u64 = layout.partitions[3..].iter().map(|p| p.size).sum();
    assert!(
        meta.blocks() * 512 <= layout.size - slot_b,
        "slot B was written out ({} bytes allocated)",
        meta.blocks() * 512
    );

    assert_sgdisk_clean(&path);
    let (id, listed) = sfdisk_partitions(&path);
    assert_eq!(id, layout.disk_guid.to_string().to_uppercase());
    let want: Vec<_> = layout
        .partitions
        .iter()
        .map(|p| {
            (
                p.type_guid.to_string().to_uppercase(),
                p.uuid.to_string().to_uppercase(),
                p.label.clone(),
                p.offset / 512,
                p.size / 512,
            )
        })
        .collect();
    assert_eq!(listed, want);
    // The DPS rule: slot A's PARTUUIDs are the root hash's halves, verbatim.
    let hex = hex::encode(inputs.root_hash).to_uppercase();
    assert_eq!(listed[1].1.replace('-', ""), hex[..32]);
    assert_eq!(listed[2].1.replace('-', ""), hex[32..]);
    assert_eq!(listed[1].0, "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709");
    assert_eq!(listed[2].0, "2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5");
    assert_eq!(listed[0].0, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");

    // Our reader agrees with the layout.
    let mut f = File::open(&path).expect("open");
    let table = gpt::read_gpt(&mut f, layout.size).expect("read gpt");
    assert_eq!(table.disk_guid, layout.disk_guid);
    assert_eq!(table.partitions.len(), layout.partitions.len());
    for (t, p) in table.partitions.iter().zip(&layout.partitions) {
        assert_eq!((t.part_guid, &t.name), (p.uuid, &p.label));
        assert_eq!(t.first_lba * 512, p.offset);
    }

    // Payloads sit at their offsets; slot B is zeros.
    let p = &layout.partitions;
    assert!(read_range(&mut f, p[0].offset, p[0].content_len) == inputs.esp);
    assert!(read_range(&mut f, p[1].offset, p[1].content_len) == inputs.root);
    assert!(read_range(&mut f, p[2].offset, p[2].content_len) == inputs.verity);
    assert!(read_range(&mut f, p[3].offset, p[3].size)
        .iter()
        .all(|&b| b == 0));

    // The ESP inside the disk is clean FAT, extracted at its offset.
    let esp = dir.path().join("esp.img");
    std::fs::write(&esp, read_range(&mut f, p[0].offset, p[0].size)).expect("write esp");
    run_ok(
        Command::new(tool("fsck.vfat", "dosfstools"))
            .arg("-n")
            .arg(&esp),
    );
}
