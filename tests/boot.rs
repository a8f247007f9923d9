//! Boots the repository's worker image in QEMU (TCG) through
//! `nodeimg lab boot` and judges the node's own report: a verified
//! read-only root, every sysctl of the image read back, PID 1 being
//! nodeagent, a state disk that survives a reboot, and a tampered root
//! that never comes up. The kernel is the final judge.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;
use support::{artifact_path, lab_boot, read_manifest, tool};

fn built() -> &'static support::Built {
    static BUILT: OnceLock<support::Built> = OnceLock::new();
    // A direct boot needs only the root, verity, kernel and initramfs.
    support::built_once(&BUILT, &["--format", "none"])
}

/// Name -> value of every sysctl the image sets, read from the root image
/// itself (not from the specs), so the test checks what shipped.
fn image_sysctls(dir: &Path) -> Vec<(String, String)> {
    let m = read_manifest(dir);
    let rootfs = dir.join(artifact_path(&m, "rootfs"));
    let out = Command::new(tool("unsquashfs"))
        .args(["-cat"])
        .arg(&rootfs)
        .arg("etc/sysctl.d/50-nodeimg.conf")
        .output()
        .expect("unsquashfs -cat");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && l.contains('='))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect()
}

/// A copy of the build whose root image has one byte flipped at `offset`.
/// The manifest is rewritten to match: an attacker controls the disk and
/// the manifest, but not the root hash on the kernel command line.
fn tampered_copy(src: &Path, dst: &Path, offset: usize) {
    std::fs::create_dir_all(dst).unwrap();
    let mut m = read_manifest(src);
    for a in m["artifacts"].as_array().unwrap().clone() {
        let p = a["path"].as_str().unwrap();
        if let Some(parent) = dst.join(p).parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::copy(src.join(p), dst.join(p)).unwrap();
    }
    let rootfs = artifact_path(&m, "rootfs");
    let mut bytes = std::fs::read(dst.join(&rootfs)).unwrap();
    bytes[offset] ^= 0x40;
    std::fs::write(dst.join(&rootfs), &bytes).unwrap();
    let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes));
    for a in m["artifacts"].as_array_mut().unwrap() {
        if a["kind"] == "rootfs" {
            a["sha256"] = Value::String(sha.clone());
        }
    }
    std::fs::write(
        dst.join("manifest.json"),
        serde_json::to_vec_pretty(&m).unwrap(),
    )
    .unwrap();
}

/// Where block `index` (128 KiB) of `path` sits in the root image, found
/// by content: our writer compresses each block with zstd, so the same
/// block compressed here at the image's level is found verbatim.
fn file_block_offset(dir: &Path, path: &str, index: usize) -> usize {
    let m = read_manifest(dir);
    let rootfs = dir.join(artifact_path(&m, "rootfs"));
    let out = Command::new(tool("unsquashfs"))
        .arg("-cat")
        .arg(&rootfs)
        .arg(path)
        .output()
        .expect("unsquashfs -cat");
    assert!(
        out.status.success(),
        "{path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let start = index * 128 * 1024;
    let block = &out.stdout[start..out.stdout.len().min(start + 128 * 1024)];
    let image = std::fs::read(&rootfs).unwrap();
    for level in 1..=22 {
        let z = zstd::bulk::compress(block, level).unwrap();
        let probe = &z[..z.len().min(256)];
        if let Some(pos) = image.windows(probe.len()).position(|w| w == probe) {
            return pos + probe.len() / 2;
        }
    }
    panic!("block {index} of {path} was not found in the root image");
}

/// Boots `dir`, which must not come up, and must say verity is why.
fn refused_for_verity(dir: &Path) -> Value {
    let (code, r) = lab_boot(dir, &[]);
    assert_ne!(code, 0);
    assert_eq!(r["ready"], false);
    let error = r["error"].as_str().unwrap_or("");
    assert!(
        error.contains("verity"),
        "error does not name verity: {r:#}"
    );
    r
}

#[test]
fn worker_boots_verified_with_every_sysctl_and_nodeagent_as_pid1() {
    let b = built();
    let (code, r, serial) = support::lab_boot_serial(&b.out, &[]);
    assert_eq!(r["ready"], true, "report: {r:#}");
    assert_eq!(code, 0);
    assert_eq!(r["root"]["verity"], "verified", "{r:#}");
    assert_eq!(
        r["shutdown"], "powered_off",
        "no clean shutdown on the power button: {r:#}"
    );
    assert_eq!(r["root"]["read_only"], true);
    assert_eq!(r["root"]["fstype"], "squashfs");
    assert!(
        r["root"]["device"]
            .as_str()
            .unwrap()
            .contains("nodeimg-root"),
        "{r:#}"
    );
    let pid1 = r["pid1"].as_str().unwrap();
    assert!(pid1.ends_with("/nodeagent"), "PID 1 is {pid1}");
    let m = read_manifest(&b.out);
    assert_eq!(r["kernel"], m["boot"]["kernel_version"]);
    assert!(r["cmdline"]
        .as_str()
        .unwrap()
        .contains(m["verity"]["root_hash"].as_str().unwrap()));
    let sysctls = image_sysctls(&b.out);
    assert!(
        sysctls.len() >= 30,
        "only {} sysctls in the image",
        sysctls.len()
    );
    for (k, v) in &sysctls {
        let got = r["sysctl"][k]
            .as_str()
            .unwrap_or_else(|| panic!("{k} not in the report: {r:#}"));
        assert_eq!(
            got.split_whitespace().collect::<Vec<_>>().join(" "),
            *v,
            "sysctl {k}"
        );
    }
    for module in ["dm_verity", "squashfs", "virtio_blk"] {
        assert!(
            r["modules"].as_array().unwrap().iter().any(|m| m == module),
            "{module} not loaded: {r:#}"
        );
    }
    kspp_hardening_is_in_force(&r, &serial);
    services_and_runtime_are_up(&b.out, &r, &serial);
}

/// The hardening layer's KSPP command line reached the kernel whole and the
/// kernel took every word of it (none handed on as unknown), the switches
/// that print show as on, and module loading was locked once the image's
/// last modules were in.
fn kspp_hardening_is_in_force(r: &Value, serial: &Path) {
    let cmdline = r["cmdline"].as_str().unwrap();
    for arg in [
        "lockdown=integrity",
        "init_on_alloc=1",
        "init_on_free=1",
        "pti=on",
        "ia32_emulation=0",
        "bdev_allow_write_mounted=0",
        "proc_mem.force_override=never",
        "iommu.strict=1",
        "mitigations=auto",
        "vsyscall=none",
    ] {
        assert!(
            cmdline.split(' ').any(|w| w == arg),
            "{arg} missing: {cmdline}"
        );
    }
    let console = std::fs::read_to_string(serial).unwrap();
    assert!(
        !console.contains("Unknown kernel command line parameters"),
        "the kernel did not take the whole command line:\n{console}"
    );
    for seen in [
        "Kernel/User page tables isolation: enabled",
        "heap alloc:on, heap free:on",
        "Kernel is locked down from command line",
    ] {
        assert!(console.contains(seen), "{seen:?} not on the console");
    }
    assert_eq!(r["modules_disabled"], true, "{r:#}");
    assert_eq!(r["sysctl"]["kernel.io_uring_disabled"], "2", "{r:#}");
}

/// containerd is supervised and ready; the sandbox image is in containerd
/// with the digest the build packed; the confinement probe saw a non-root,
/// capability-less, seccomp-filtered, no_new_privs process on a read-only
/// root; at shutdown containerd was stopped before the node powered off.
fn services_and_runtime_are_up(dir: &Path, r: &Value, serial: &Path) {
    let svc = &r["services"][0];
    assert_eq!(svc["name"], "containerd", "{r:#}");
    assert_eq!(svc["state"], "ready", "{r:#}");
    assert!(svc["pid"].as_u64().unwrap() > 1, "{r:#}");
    assert_eq!(svc["restarts"], 0, "{r:#}");

    let m = read_manifest(dir);
    let rootfs = dir.join(artifact_path(&m, "rootfs"));
    let out = Command::new(tool("unsquashfs"))
        .args(["-cat"])
        .arg(&rootfs)
        .arg("usr/lib/nodeimg/images.json")
        .output()
        .expect("unsquashfs -cat");
    let packed: Value = serde_json::from_slice(&out.stdout).expect("images.json");
    // The manifest names the same image and digest the root carries.
    assert_eq!(
        m["images"], packed,
        "manifest images vs the root's images.json"
    );
    let rt = &r["runtime"];
    assert_eq!(rt["ok"], true, "{r:#}");
    assert_eq!(rt["images"][0]["name"], packed[0]["name"], "{r:#}");
    assert_eq!(rt["images"][0]["digest"], packed[0]["digest"], "{r:#}");
    let c = &rt["confinement"];
    assert_ne!(c["uid"], "0", "{r:#}");
    assert_eq!(c["cap_eff"], "0000000000000000", "{r:#}");
    assert_eq!(c["seccomp"], "2", "{r:#}");
    assert_eq!(c["no_new_privs"], "1", "{r:#}");
    assert_eq!(c["root_writable"], false, "{r:#}");

    let serial = std::fs::read_to_string(serial).expect("serial log");
    let stop = serial
        .find("stopping service containerd")
        .expect("containerd stopped");
    let stopped = serial
        .find("service containerd stopped (")
        .expect("containerd exited");
    let off = serial.find("NODEIMG-SHUTDOWN").expect("shutdown line");
    assert!(stop < stopped && stopped < off, "stop order on the console");
}

#[test]
fn state_disk_is_formatted_once_and_kept() {
    let b = built();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.img");
    let state_arg = state.to_str().unwrap();
    let (code, first) = lab_boot(&b.out, &["--state", state_arg]);
    assert_eq!(
        (code, &first["ready"]),
        (0, &Value::Bool(true)),
        "{first:#}"
    );
    assert_eq!(first["var"], "ext4");
    assert_eq!(first["state"]["formatted"], true, "{first:#}");
    let (code, second) = lab_boot(&b.out, &["--state", state_arg]);
    assert_eq!(
        (code, &second["ready"]),
        (0, &Value::Bool(true)),
        "{second:#}"
    );
    assert_eq!(
        second["state"]["formatted"], false,
        "reformatted: {second:#}"
    );
    let count = |r: &Value| r["state"]["boot_count"].as_u64().unwrap();
    assert_eq!(
        count(&second),
        count(&first) + 1,
        "what the first boot wrote under /var was lost"
    );
}

#[test]
fn flipped_byte_in_the_first_block_never_comes_up() {
    let b = built();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("flipped-superblock");
    tampered_copy(&b.out, &bad, 100);
    refused_for_verity(&bad);
}

#[test]
fn flipped_byte_in_the_stage2_agent_never_comes_up() {
    let b = built();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("flipped-agent");
    tampered_copy(
        &b.out,
        &bad,
        file_block_offset(&b.out, "usr/sbin/nodeagent", 0),
    );
    let r = refused_for_verity(&bad);
    assert_ne!(
        r["pid1"].as_str().unwrap_or(""),
        "/usr/sbin/nodeagent",
        "stage 2 ran from a tampered root"
    );
}

#[test]
fn full_verification_finds_a_flip_that_boot_never_reads() {
    let b = built();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("flipped-late");
    // Inside the legacy runc v1 shim, which nothing runs or reads at boot
    // (containerd itself now starts at boot: a flip there crash-loops it).
    tampered_copy(
        &b.out,
        &bad,
        file_block_offset(&b.out, "usr/bin/containerd-shim-runc-v1", 20),
    );
    let (code, lazy) = lab_boot(&bad, &[]);
    assert_eq!(
        (code, &lazy["ready"]),
        (0, &Value::Bool(true)),
        "a block nobody read stopped the boot: {lazy:#}"
    );
    let (code, full) = lab_boot(&bad, &["--append", "nodeimg.verity=full"]);
    assert_ne!(code, 0);
    assert_eq!(full["ready"], false);
    assert_eq!(full["root"]["verity"], "corrupted", "{full:#}");
}
