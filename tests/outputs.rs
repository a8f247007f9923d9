//! The bootable outputs of the worker image, each judged by the reference
//! tool for its format: `sgdisk -v` and `sfdisk --json` (GPT), `fsck.vfat`
//! and mtools (ESP), `objdump -h` (UKI), `qemu-img` (qcow2, VHD, VMDK) and
//! `tar` (GCE). Booting them is `tests/uefi_boot.rs`'s job.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

mod support;

use support::{artifact_path, run, tool};

/// Every output format.
const ALL_FORMATS: &str = "uki,disk-raw,disk-qcow2,vhd,gce,vmdk,pxe";

// DPS type GUIDs, as sfdisk prints them.
const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
const ROOT_X86_64: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";
const ROOT_VERITY_X86_64: &str = "2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5";

fn built() -> &'static support::Built {
    static BUILT: OnceLock<support::Built> = OnceLock::new();
    support::built_once(&BUILT, &["--format", ALL_FORMATS])
}

fn path_of(kind: &str) -> PathBuf {
    let b = built();
    b.out.join(artifact_path(&b.manifest, kind))
}

fn sfdisk_json(disk: &Path) -> Value {
    let text = run(Command::new(tool("sfdisk")).arg("--json").arg(disk));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn sgdisk_finds_no_problems() {
    let out = run(Command::new(tool("sgdisk"))
        .arg("-v")
        .arg(path_of("disk-raw")));
    assert!(out.contains("No problems found"), "sgdisk -v:\n{out}");
}

#[test]
fn sfdisk_shows_esp_and_dps_root_and_verity_with_uuids_from_the_root_hash() {
    let b = built();
    let table = sfdisk_json(&path_of("disk-raw"));
    let parts = table["partitiontable"]["partitions"].as_array().unwrap();
    let types: Vec<&str> = parts.iter().map(|p| p["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            ESP_TYPE,
            ROOT_X86_64,
            ROOT_VERITY_X86_64,
            ROOT_X86_64,
            ROOT_VERITY_X86_64
        ],
        "{table}"
    );
    // DPS: the root partition's UUID is the first 128 bits of the root
    // hash, the verity partition's the last 128.
    let hash = b.manifest["verity"]["root_hash"].as_str().unwrap();
    let uuid = |hex: &str| {
        format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )
        .to_uppercase()
    };
    assert_eq!(parts[1]["uuid"].as_str().unwrap(), uuid(&hash[..32]));
    assert_eq!(parts[2]["uuid"].as_str().unwrap(), uuid(&hash[32..]));
    let version = b.manifest["version"].as_str().unwrap();
    assert_eq!(parts[1]["name"], format!("root-a-{version}"));
    assert_eq!(parts[2]["name"], format!("verity-a-{version}"));
    assert_eq!(parts[3]["name"], "root-b");
    // Slot B is as large as slot A.
    assert_eq!(parts[1]["size"], parts[3]["size"]);
    assert_eq!(parts[2]["size"], parts[4]["size"]);
    // The manifest's cmdline names the same partitions.
    let cmdline = b.manifest["uefi"]["cmdline"].as_str().unwrap();
    assert!(
        cmdline.contains(&format!(
            "nodeimg.root=PARTUUID={}",
            uuid(&hash[..32]).to_lowercase()
        )),
        "{cmdline}"
    );
}

/// The ESP partition's bytes, cut out with `dd` at the offset sfdisk reports.
fn esp_image(dir: &Path) -> PathBuf {
    let disk = path_of("disk-raw");
    let table = sfdisk_json(&disk);
    let esp = &table["partitiontable"]["partitions"][0];
    let (start, size) = (
        esp["start"].as_u64().unwrap(),
        esp["size"].as_u64().unwrap(),
    );
    let img = dir.join("esp.img");
    run(Command::new("dd")
        .arg(format!("if={}", disk.display()))
        .arg(format!("of={}", img.display()))
        .args(["bs=512", "status=none"])
        .arg(format!("skip={start}"))
        .arg(format!("count={size}")));
    img
}

#[test]
fn esp_is_clean_fat_with_systemd_boot_loader_conf_and_a_counted_uki() {
    let b = built();
    let dir = tempfile::tempdir().unwrap();
    let img = esp_image(dir.path());
    let fsck = run(Command::new(tool("fsck.vfat")).arg("-n").arg(&img));
    assert!(!fsck.contains("differences"), "fsck.vfat -n:\n{fsck}");
    let listing = run(Command::new(tool("mdir"))
        .args(["-/", "-b", "-i"])
        .arg(&img)
        .arg("::/"));
    let entry = b.manifest["uefi"]["esp_entry"].as_str().unwrap();
    assert!(entry.ends_with("+3.efi"), "{entry}");
    for want in ["::/EFI/BOOT/BOOTX64.EFI", "::/loader/loader.conf"] {
        assert!(listing.contains(want), "{want} not in:\n{listing}");
    }
    assert!(
        listing.contains(&format!("::/{entry}")),
        "{entry} not in:\n{listing}"
    );
    // The UKI on the ESP is the uki artifact, byte for byte.
    let copy = dir.path().join("uki.efi");
    run(Command::new(tool("mcopy"))
        .arg("-i")
        .arg(&img)
        .arg(format!("::/{entry}"))
        .arg(&copy));
    assert!(std::fs::read(&copy).unwrap() == std::fs::read(path_of("uki")).unwrap());
}

#[test]
fn objdump_lists_the_uki_sections_and_cmdline_holds_the_root_hash() {
    let b = built();
    let uki = path_of("uki");
    let out = run(Command::new(tool("objdump")).arg("-h").arg(&uki));
    for section in [".osrel", ".cmdline", ".uname", ".initrd", ".linux"] {
        assert!(
            out.lines()
                .any(|l| l.split_whitespace().nth(1) == Some(section)),
            "{section} not in objdump -h:\n{out}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("cmdline");
    run(Command::new(tool("objcopy"))
        .arg("-O")
        .arg("binary")
        .arg("--only-section=.cmdline")
        .arg(&uki)
        .arg(&dump));
    let cmdline = String::from_utf8(std::fs::read(&dump).unwrap()).unwrap();
    let hash = b.manifest["verity"]["root_hash"].as_str().unwrap();
    assert!(
        cmdline.contains(&format!("nodeimg.roothash={hash}")),
        ".cmdline: {cmdline}"
    );
    assert_eq!(
        cmdline.trim_end_matches('\0'),
        b.manifest["uefi"]["cmdline"].as_str().unwrap()
    );
}

#[test]
fn qemu_img_checks_qcow2_and_reads_vhd_and_vmdk() {
    let raw_size = std::fs::metadata(path_of("disk-raw")).unwrap().len();
    run(Command::new(tool("qemu-img"))
        .args(["check", "-f", "qcow2"])
        .arg(path_of("disk-qcow2")));
    // A fixed VHD keeps its footer only at the end, which qemu's format
    // probe does not read: name the format, as Azure's tooling does.
    let info = |path: PathBuf, format: &str| -> Value {
        serde_json::from_str(&run(Command::new(tool("qemu-img"))
            .args(["info", "--output=json", "-f", format])
            .arg(path)))
        .unwrap()
    };
    let q = info(path_of("disk-qcow2"), "qcow2");
    assert_eq!(q["format"], "qcow2");
    assert_eq!(q["virtual-size"].as_u64().unwrap(), raw_size);
    let v = info(path_of("vhd"), "vpc");
    assert_eq!(v["format"], "vpc", "{v}");
    let vsize = v["virtual-size"].as_u64().unwrap();
    assert!(
        vsize >= raw_size && vsize % (1 << 20) == 0,
        "VHD size {vsize}"
    );
    let k = info(path_of("vmdk"), "vmdk");
    assert_eq!(k["format"], "vmdk");
    assert_eq!(
        k["format-specific"]["data"]["create-type"],
        "streamOptimized"
    );
}

#[test]
fn gce_archive_holds_disk_raw_of_whole_gib() {
    let out = run(Command::new(tool("tar")).arg("-tvzf").arg(path_of("gce")));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert!(lines[0].ends_with(" disk.raw"), "{out}");
    let size: u64 = lines[0].split_whitespace().nth(2).unwrap().parse().unwrap();
    assert_eq!(size % (1 << 30), 0, "disk.raw is {size} bytes");
}
