use std::io::Cursor;
use std::path::Path;
use std::process::Command;

use super::*;
use crate::output::gpt::tests::{run_ok, tool};

/// 2023-11-14T22:13:20Z
const EPOCH: u64 = 1_700_000_000;
const SIZE: u64 = 40 << 20;

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

struct Content {
    boot: Vec<u8>,
    uki: Vec<u8>,
    conf: Vec<u8>,
}

impl Content {
    fn new() -> Content {
        Content {
            boot: noise(150_000, 1),
            uki: noise(3_000_000, 2),
            conf: b"timeout 0\ndefault nodeimg-*\n".to_vec(),
        }
    }

    fn files(&self) -> Vec<EspFile<'_>> {
        vec![
            EspFile {
                path: "EFI/Linux/nodeimg-0.1.0+3.efi",
                data: &self.uki,
            },
            EspFile {
                path: "EFI/BOOT/BOOTX64.EFI",
                data: &self.boot,
            },
            EspFile {
                path: "loader/loader.conf",
                data: &self.conf,
            },
            EspFile {
                path: "loader/entries.srel",
                data: b"type1\n",
            },
        ]
    }
}

fn params(epoch: u64) -> EspParams {
    EspParams {
        size: SIZE,
        ..EspParams::new(epoch)
    }
}

pub(crate) fn esp_image(epoch: u64) -> Vec<u8> {
    let c = Content::new();
    let out = write_esp(Cursor::new(Vec::new()), &params(epoch), &c.files()).expect("write esp");
    out.into_inner()
}

fn mtools(name: &str, img: &Path) -> Command {
    let mut cmd = Command::new(tool(name, "mtools"));
    // mtools refuses images whose geometry it cannot guess unless told to skip the check.
    cmd.env("MTOOLS_SKIP_CHECK", "1").arg("-i").arg(img);
    cmd
}

#[test]
fn fat_time_is_utc_calendar_time() {
    assert_eq!(fat_time(EPOCH), FatDateTime::new(2023, 11, 14, 22, 13, 20));
    assert_eq!(fat_time(0), FatDateTime::new(1980, 1, 1, 0, 0, 0));
    assert_eq!(
        fat_time(951_782_400),
        FatDateTime::new(2000, 2, 29, 0, 0, 0)
    );
    assert_eq!(
        fat_time(u64::MAX),
        FatDateTime::new(2107, 12, 31, 23, 59, 58)
    );
}

#[test]
fn bad_inputs_are_refused() {
    let d: &[u8] = b"x";
    let f = |path| EspFile { path, data: d };
    let run = |files: &[EspFile<'_>], p: &EspParams| write_esp(Cursor::new(Vec::new()), p, files);
    let p = params(EPOCH);
    assert!(matches!(
        run(&[f("a/../b")], &p),
        Err(EspError::BadPath { .. })
    ));
    assert!(matches!(run(&[f("/a")], &p), Err(EspError::BadPath { .. })));
    assert!(matches!(
        run(&[f("a/b"), f("a/b")], &p),
        Err(EspError::DuplicatePath { .. })
    ));
    assert!(matches!(
        run(&[f("a"), f("a/b")], &p),
        Err(EspError::FileDirClash { .. })
    ));
    let small = EspParams {
        size: 16 << 20,
        ..p.clone()
    };
    assert!(matches!(run(&[], &small), Err(EspError::BadSize { .. })));
    let lower = EspParams {
        label: "esp".into(),
        ..p
    };
    assert!(matches!(run(&[], &lower), Err(EspError::BadLabel { .. })));
}

#[test]
fn esp_is_reproducible_and_stamped_from_the_epoch() {
    let a = esp_image(EPOCH);
    assert_eq!(a.len() as u64, SIZE);
    assert_eq!(a, esp_image(EPOCH), "two writes are byte-identical");
    assert_ne!(a, esp_image(EPOCH + 86_400), "timestamps follow the epoch");
}

#[test]
fn fsck_and_mtools_accept_the_esp() {
    let c = Content::new();
    let img = write_esp(Cursor::new(Vec::new()), &params(EPOCH), &c.files())
        .expect("write esp")
        .into_inner();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("esp.img");
    std::fs::write(&path, &img).expect("write image");

    let fsck = run_ok(
        Command::new(tool("fsck.vfat", "dosfstools"))
            .arg("-n")
            .arg("-v")
            .arg(&path),
    );
    let report = String::from_utf8_lossy(&fsck.stdout);
    // fsck.fat -n exits 1 on any inconsistency; run_ok checked it is 0.
    assert!(report.contains("32 bit entries"), "not FAT32:\n{report}");
    // BS_VolID (FAT32 BPB offset 67) and BS_VolLab (offset 71).
    assert_eq!(img[67..71], DEFAULT_VOLUME_ID.to_le_bytes());
    assert_eq!(&img[71..82], b"ESP        ");

    let listing = run_ok(mtools("mdir", &path).arg("-/").arg("::/"));
    let listing = String::from_utf8_lossy(&listing.stdout);
    for name in [
        "BOOTX64",
        "nodeimg-0.1.0+3.efi",
        "loader.conf",
        "entries.srel",
    ] {
        assert!(listing.contains(name), "`{name}` missing:\n{listing}");
    }
    assert!(listing.contains("Volume in drive : is ESP"), "{listing}");
    // Every entry mdir lists carries the SOURCE_DATE_EPOCH date.
    let dated: Vec<&str> = listing
        .lines()
        .filter(|l| l.contains("<DIR>") || l.contains(".EFI") || l.contains("conf"))
        .collect();
    assert!(!dated.is_empty());
    for line in dated {
        assert!(line.contains("2023-11-14"), "wrong date: {line}\n{listing}");
    }

    for f in c.files() {
        let out = run_ok(mtools("mtype", &path).arg(format!("::/{}", f.path)));
        assert!(out.stdout == f.data, "{} differs when read back", f.path);
    }
}

#[test]
fn smallest_accepted_size_is_clean_fat32() {
    let p = EspParams {
        size: MIN_ESP_SIZE,
        ..params(EPOCH)
    };
    let files = [EspFile {
        path: "loader/loader.conf",
        data: b"timeout 0\n",
    }];
    let img = write_esp(Cursor::new(Vec::new()), &p, &files)
        .expect("write esp")
        .into_inner();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("esp.img");
    std::fs::write(&path, &img).expect("write image");
    let out = run_ok(
        Command::new(tool("fsck.vfat", "dosfstools"))
            .arg("-n")
            .arg("-v")
            .arg(&path),
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("32 bit entries"), "not FAT32:\n{report}");
}
