//! UEFI boots of the worker's GPT disk through OVMF, systemd-boot and the
//! UKI (`nodeimg lab boot --firmware uefi`), judged by the node's report
//! and by reading the disk afterwards with sfdisk and mtools:
//! - the node comes up on dm-verity from the partitions the UKI names,
//!   creates its state partition to fill a disk larger than the image,
//!   and marks the boot good (the UKI's name loses its `+3`); a second
//!   boot keeps the state;
//! - an entry whose health checks fail uses up its tries and systemd-boot
//!   falls back to the older, good entry.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::{
    artifact_path, build_image_with, lab_boot, lab_dir_for_disk, mtools, read_manifest, repo, run,
    tool,
};

/// The VM's disk (a qcow2 overlay) as a raw file, for sfdisk and mtools.
fn to_raw(overlay: &Path, raw: &Path) {
    run(Command::new(tool("qemu-img"))
        .args(["convert", "-O", "raw"])
        .arg(overlay)
        .arg(raw));
}

/// The files under `EFI/Linux` on the disk's ESP (1 MiB into the disk).
fn esp_entries(raw: &Path) -> Vec<String> {
    let out = run(Command::new(tool("mdir"))
        .args(["-b", "-i"])
        .arg(format!("{}@@1M", raw.display()))
        .arg("::/EFI/Linux"));
    let mut names: Vec<String> = out
        .lines()
        .map(|l| l.trim().trim_start_matches("::/EFI/Linux/").to_string())
        .filter(|l| !l.is_empty())
        .collect();
    names.sort();
    names
}

fn assert_verified_root(report: &Value) {
    assert_eq!(report["ready"], true, "{report:#}");
    assert_eq!(report["root"]["verity"], "verified", "{report:#}");
    assert_eq!(report["root"]["read_only"], true, "{report:#}");
}

#[test]
fn uefi_boot_reaches_ready_grows_state_and_marks_the_boot_good() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("worker");
    build_image_with("worker", &out, &["--format", "disk-qcow2"]);
    let m = read_manifest(&out);
    let entry = m["uefi"]["esp_entry"].as_str().unwrap();
    assert_eq!(entry, "EFI/Linux/worker-0.1.0+3.efi");
    let image_size = m["uefi"]["disk"]["size"].as_u64().unwrap();
    let vm_disk = dir.path().join("vm.qcow2");
    let disk_size: u64 = 4 << 30;
    let args = [
        "--firmware",
        "uefi",
        "--state",
        vm_disk.to_str().unwrap(),
        "--disk-size",
        "4G",
        "--timeout",
        "300",
    ];
    let (code, report) = lab_boot(&out, &args);
    assert_eq!(code, 0, "{report:#}");
    assert_verified_root(&report);
    let hash = m["verity"]["root_hash"].as_str().unwrap();
    assert!(
        report["cmdline"]
            .as_str()
            .unwrap()
            .contains(&format!("nodeimg.root=PARTUUID={}", &hash[..8])),
        "{report:#}"
    );
    // First boot: the agent added the state partition in the space the
    // image did not use, up to the end of the larger disk.
    assert_eq!(report["state"]["created"], true, "{report:#}");
    let state_size = report["state"]["size_bytes"].as_u64().unwrap();
    assert!(
        state_size > disk_size - image_size - (4 << 20),
        "state partition {state_size} bytes on a {disk_size}-byte disk (image {image_size})"
    );
    assert_eq!(report["boot_entry"]["blessed"], true, "{report:#}");

    let raw = dir.path().join("vm.raw");
    to_raw(&vm_disk, &raw);
    assert_eq!(esp_entries(&raw), ["worker-0.1.0.efi"]);
    let sgdisk = run(Command::new(tool("sgdisk")).arg("-v").arg(&raw));
    assert!(sgdisk.contains("No problems found"), "sgdisk -v:\n{sgdisk}");
    let table: Value =
        serde_json::from_str(&run(Command::new(tool("sfdisk")).arg("--json").arg(&raw))).unwrap();
    let parts = table["partitiontable"]["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 6, "{table}");
    let state = &parts[5];
    let end = (state["start"].as_u64().unwrap() + state["size"].as_u64().unwrap()) * 512;
    let last_lba = table["partitiontable"]["lastlba"].as_u64().unwrap();
    assert!(
        end + (1 << 20) >= (last_lba + 1) * 512,
        "state partition ends at {end}, disk's last usable LBA {last_lba}"
    );
    std::fs::remove_file(&raw).unwrap();

    // Second boot of the same disk: the state partition and its data stay,
    // and the entry, already good, is left alone.
    let (code, again) = lab_boot(&out, &args);
    assert_eq!(code, 0, "{again:#}");
    assert_verified_root(&again);
    assert_eq!(again["state"]["created"], false, "{again:#}");
    assert_eq!(again["state"]["boot_count"], 2, "{again:#}");
    assert_eq!(again["state"]["size_bytes"], state_size);
}

/// A second project beside the repository's: the same layers and lock,
/// and an image that adds `nodeimg.health=fail` to the command line only.
fn failing_project(root: &Path) -> PathBuf {
    let repo = repo();
    std::fs::create_dir_all(root).unwrap();
    run(Command::new("cp")
        .arg("-r")
        .arg(repo.join("layers"))
        .arg(root.join("layers")));
    std::fs::copy(repo.join("nodeimg.lock"), root.join("nodeimg.lock")).unwrap();
    let layer = root.join("layers/failhealth");
    std::fs::create_dir_all(&layer).unwrap();
    std::fs::write(
        layer.join("layer.toml"),
        "schema = 1\ndescription = \"test: fail the health checks\"\n\n\
         [kernel.cmdline]\n\"nodeimg.health=fail\" = \"exercise boot counting\"\n\
         \"nodeimg.failure_delay=0\" = \"reboot at once\"\n",
    )
    .unwrap();
    std::fs::create_dir_all(root.join("images")).unwrap();
    let spec = std::fs::read_to_string(repo.join("images/worker.toml"))
        .unwrap()
        .replace("\"containerd\"]", "\"containerd\", \"failhealth\"]");
    assert!(
        spec.contains("failhealth"),
        "images/worker.toml changed shape"
    );
    let image = root.join("images/worker.toml");
    std::fs::write(&image, spec).unwrap();
    image
}

#[test]
fn failing_entry_uses_up_its_tries_then_systemd_boot_falls_back() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    build_image_with("worker", &good, &["--format", "uki,disk-raw"]);
    let good_m = read_manifest(&good);

    let project = dir.path().join("project");
    let image = failing_project(&project);
    let bad = dir.path().join("bad");
    let status = Command::new(env!("CARGO_BIN_EXE_nodeimg"))
        .args(["build", "--quiet", "--format", "disk-raw", "--out"])
        .arg(&bad)
        .arg("--agent")
        .arg(support::agent())
        .arg(&image)
        .env_remove("SOURCE_DATE_EPOCH")
        .status()
        .unwrap();
    assert!(status.success(), "build of the failing image");
    let bad_m = read_manifest(&bad);
    // Only the UKI's command line differs: the root, and so the partitions
    // the UKIs name, are the same.
    assert_eq!(bad_m["verity"]["root_hash"], good_m["verity"]["root_hash"]);

    // Two entries on the failing disk's ESP: the failing one as a newer
    // version with 2 tries, and the good UKI, already marked good.
    let raw = dir.path().join("two-entries.raw");
    std::fs::copy(bad.join(artifact_path(&bad_m, "disk-raw")), &raw).unwrap();
    mtools(
        &raw,
        &[
            "mren",
            "::/EFI/Linux/worker-0.1.0+3.efi",
            "::/EFI/Linux/worker-0.1.1+2.efi",
        ],
    );
    let good_uki = good.join(artifact_path(&good_m, "uki"));
    mtools(
        &raw,
        &[
            "mcopy",
            good_uki.to_str().unwrap(),
            "::/EFI/Linux/worker-0.1.0.efi",
        ],
    );
    assert_eq!(
        esp_entries(&raw),
        ["worker-0.1.0.efi", "worker-0.1.1+2.efi"]
    );

    // The lab boots a build directory: give it one whose manifest names
    // this disk.
    let lab_dir = lab_dir_for_disk(&raw, &bad, &dir.path().join("lab"));

    let vm_disk = dir.path().join("vm.qcow2");
    let (code, report) = lab_boot(
        &lab_dir,
        &[
            "--firmware",
            "uefi",
            "--state",
            vm_disk.to_str().unwrap(),
            "--reports",
            "3",
            "--timeout",
            "600",
        ],
    );
    let earlier = report["earlier_reports"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        earlier.len(),
        2,
        "two failed boots before the fallback: {report:#}"
    );
    for r in &earlier {
        assert_eq!(r["ready"], false, "{r:#}");
        assert!(
            r["error"].as_str().unwrap_or("").contains("health"),
            "{r:#}"
        );
        assert!(r["cmdline"]
            .as_str()
            .unwrap()
            .contains("nodeimg.health=fail"));
    }
    assert_eq!(code, 0, "{report:#}");
    assert_verified_root(&report);
    assert!(!report["cmdline"]
        .as_str()
        .unwrap()
        .contains("nodeimg.health=fail"));

    let raw = dir.path().join("after.raw");
    to_raw(&vm_disk, &raw);
    // systemd-boot counted both failed tries in the failing entry's name.
    assert_eq!(
        esp_entries(&raw),
        ["worker-0.1.0.efi", "worker-0.1.1+0-2.efi"]
    );
}
