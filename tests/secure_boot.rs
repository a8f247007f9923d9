//! Secure Boot with our own keys, end to end through the `nodeimg` binary:
//! `keys gen` makes PK, KEK and db; `build --secure-boot-key` signs
//! systemd-boot and the UKI of the worker's disk (judged by `sbverify`); `keys enroll-ovmf`
//! writes an OVMF variable store holding exactly our certificates with
//! Secure Boot on (read back with `virt-fw-vars`); and `lab boot --firmware
//! uefi --secure-boot KEYDIR` boots the signed disk to `ready: true` while
//! a disk whose UKI `.cmdline` differs by one byte under the same signature
//! never starts (systemd-boot's LoadImage is denied; no report).
//!
//! `virt-fw-vars` comes from `firmware/setup-venv.sh` (the venv in
//! `$NODEIMG_VENV`, else `~/.cache/nodeimg/venv`) or PATH; the tests fail
//! without it.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;

use nodeimg::lab::secure_boot::{find_virt_fw_vars_from_env, OWNER_GUID};
use serde_json::Value;
use support::{
    artifact_path, build_image_with, lab_boot_serial, lab_dir_for_disk, mtools, read_manifest, run,
    tool,
};

/// Where the worker's disk keeps its boot loader and (unblessed) UKI.
const BOOT_LOADER: &str = "::/EFI/BOOT/BOOTX64.EFI";
const UKI: &str = "::/EFI/Linux/worker-0.1.0+3.efi";

fn nodeimg(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_nodeimg"))
        .args(args)
        .env("NODEIMG_KEY_PASSWORD", "")
        .output()
        .expect("run nodeimg");
    assert!(
        out.status.success(),
        "nodeimg {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// mtools on the disk's ESP (1 MiB in).
fn sbverify(cert: &Path, file: &Path) -> bool {
    Command::new(tool("sbverify"))
        .arg("--cert")
        .arg(cert)
        .arg(file)
        .output()
        .unwrap()
        .status
        .success()
}

/// The worker's disk with its boot loader and UKI replaced.
fn disk_with(image: &Path, boot_loader: &Path, uki: &Path, out: &Path) {
    std::fs::copy(image, out).unwrap();
    mtools(out, &["mcopy", "-o", p(boot_loader), BOOT_LOADER]);
    mtools(out, &["mcopy", "-o", p(uki), UKI]);
}

/// A boot's serial log, as `support::lab_boot_serial` kept it.
fn serial_log(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn signed_disk_boots_with_secure_boot_and_a_changed_cmdline_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    nodeimg(&["keys", "gen", "--out", p(&keys)]);
    let out = dir.path().join("worker");
    build_image_with(
        "worker",
        &out,
        &["--format", "uki,disk-raw", "--secure-boot-key", p(&keys)],
    );
    let manifest = read_manifest(&out);
    assert_eq!(manifest["uefi"]["secure_boot_signed"], true);
    let image = out.join(artifact_path(&manifest, "disk-raw"));

    // What the firmware and systemd-boot start is signed by db, not KEK.
    let loader = dir.path().join("BOOTX64.EFI");
    let uki = dir.path().join("uki.efi");
    mtools(&image, &["mcopy", BOOT_LOADER, p(&loader)]);
    mtools(&image, &["mcopy", UKI, p(&uki)]);
    assert!(
        std::fs::read(&uki).unwrap()
            == std::fs::read(out.join(artifact_path(&manifest, "uki"))).unwrap(),
        "the ESP's UKI is not the uki artifact"
    );
    for f in [&loader, &uki] {
        assert!(
            sbverify(&keys.join("db.crt"), f),
            "sbverify --cert db.crt refused {f:?}"
        );
        assert!(
            !sbverify(&keys.join("kek.crt"), f),
            "sbverify --cert kek.crt accepted {f:?}"
        );
    }

    // The same UKI with one byte of its command line changed
    // (`console=ttyS0` -> `console=ttyS1`), its signature kept.
    let mut tampered = std::fs::read(&uki).unwrap();
    let cmdline = nodeimg::boot::read_sections(&tampered)
        .unwrap()
        .into_iter()
        .find(|s| s.name == ".cmdline")
        .unwrap()
        .file_range;
    let at = cmdline.start
        + tampered[cmdline.clone()]
            .windows(5)
            .position(|w| w == b"ttyS0")
            .expect("the worker's command line names ttyS0")
        + 4;
    tampered[at] = b'1';
    let tampered_uki = dir.path().join("tampered.efi");
    std::fs::write(&tampered_uki, &tampered).unwrap();
    assert!(!sbverify(&keys.join("db.crt"), &tampered_uki));

    // The signed disk, as built, boots with Secure Boot on.
    let signed = out.clone();
    let args = [
        "--firmware",
        "uefi",
        "--secure-boot",
        p(&keys),
        "--disk-size",
        "2G",
        "--timeout",
        "300",
    ];
    let (code, report, serial) = lab_boot_serial(&signed, &args);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["ready"], true, "{report:#}");
    assert_eq!(report["root"]["verity"], "verified", "{report:#}");
    let log = serial_log(&serial);
    assert!(
        log.contains("secureboot: Secure boot enabled"),
        "the kernel did not see Secure Boot on: {}",
        serial.display()
    );

    // The tampered one is refused before the kernel runs.
    let raw = dir.path().join("tampered.raw");
    disk_with(&image, &loader, &tampered_uki, &raw);
    let bad = lab_dir_for_disk(&raw, &out, &dir.path().join("tampered"));
    let args = [
        "--firmware",
        "uefi",
        "--secure-boot",
        p(&keys),
        "--timeout",
        "90",
    ];
    let (code, report, serial) = lab_boot_serial(&bad, &args);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["ready"], false, "{report:#}");
    // The lab stops as soon as OVMF has nothing left to boot.
    assert!(
        report["error"]
            .as_str()
            .unwrap_or("")
            .contains("the firmware found nothing it would boot"),
        "{report:#}"
    );
    let log = serial_log(&serial);
    assert!(
        log.contains("Access denied") && !log.contains("Linux version"),
        "systemd-boot was expected to refuse the UKI:\n{log}"
    );
    if let Some(run_dir) = report["serial_log"]
        .as_str()
        .and_then(|l| Path::new(l).parent())
    {
        // The lab keeps a failed run's directory as evidence; this failure
        // was the point.
        let _ = std::fs::remove_dir_all(run_dir);
    }
}

/// The DER bytes of a PEM certificate, as hex.
fn cert_der_hex(pem: &Path) -> String {
    use x509_cert::der::{DecodePem, Encode};
    let cert = x509_cert::Certificate::from_pem(std::fs::read(pem).unwrap()).unwrap();
    hex::encode(cert.to_der().unwrap())
}

/// `EFI_GUID` bytes as hex, as they sit in an `EFI_SIGNATURE_DATA`
/// (the first three fields little-endian).
fn guid_hex(guid: &str) -> String {
    let h: String = guid.chars().filter(|c| *c != '-').collect();
    let swap = |s: &str| -> String {
        (0..s.len() / 2)
            .rev()
            .map(|i| &s[2 * i..2 * i + 2])
            .collect()
    };
    format!(
        "{}{}{}{}",
        swap(&h[..8]),
        swap(&h[8..12]),
        swap(&h[12..16]),
        &h[16..]
    )
}

#[test]
fn enroll_ovmf_writes_our_pk_kek_and_db_with_secure_boot_on() {
    let tool = find_virt_fw_vars_from_env()
        .unwrap_or_else(|e| panic!("{e} (the test reads the variable store back with it)"));
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    nodeimg(&["keys", "gen", "--out", p(&keys)]);
    let vars = dir.path().join("vars.fd");
    let stdout = nodeimg(&["keys", "enroll-ovmf", p(&keys), "--out", p(&vars)]);
    assert_eq!(stdout.trim(), p(&vars));
    // Same keys, same bytes.
    let again = dir.path().join("again.fd");
    nodeimg(&["keys", "enroll-ovmf", p(&keys), "--out", p(&again)]);
    assert!(std::fs::read(&vars).unwrap() == std::fs::read(&again).unwrap());
    // firmware/enroll.sh, the same without the binary, writes the same bytes.
    let by_script = dir.path().join("script.fd");
    run(Command::new(support::repo().join("firmware/enroll.sh"))
        .arg(&keys)
        .arg(&by_script));
    assert!(
        std::fs::read(&vars).unwrap() == std::fs::read(&by_script).unwrap(),
        "firmware/enroll.sh and `nodeimg keys enroll-ovmf` disagree"
    );

    let json = dir.path().join("vars.json");
    run(Command::new(&tool)
        .arg("--input")
        .arg(&vars)
        .arg("--output-json")
        .arg(&json));
    let dump: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let var = |name: &str| -> String {
        dump["variables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no {name} variable in {dump:#}"))["data"]
            .as_str()
            .unwrap()
            .to_lowercase()
    };
    assert_eq!(var("SecureBootEnable"), "01");
    let owner = guid_hex(OWNER_GUID);
    for (name, cert) in [("PK", "pk.crt"), ("KEK", "kek.crt"), ("db", "db.crt")] {
        let data = var(name);
        let der = cert_der_hex(&keys.join(cert));
        assert!(
            data.contains(&format!("{owner}{der}")),
            "{name} does not hold {cert} owned by {OWNER_GUID}"
        );
        for other in ["pk.crt", "kek.crt", "db.crt"]
            .iter()
            .filter(|c| **c != cert)
        {
            assert!(
                !data.contains(&cert_der_hex(&keys.join(other))),
                "{name} also holds {other}"
            );
        }
    }
    // The template is Debian's, untouched.
    assert!(Path::new("/usr/share/OVMF/OVMF_VARS_4M.fd").is_file());
}
