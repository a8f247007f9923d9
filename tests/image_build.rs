//! Builds the repository's worker image from its real spec and lock (the
//! package cache makes reruns fast) and judges the output with the
//! reference tools: `veritysetup verify` and `unsquashfs`. Two builds at
//! different times into different directories must be byte-identical.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

mod support;

use support::{artifact_path as artifact, build_image, tool, venv_tool};

fn build_into(out: &Path) {
    build_image("worker", out);
}

fn built() -> &'static support::Built {
    static BUILT: OnceLock<support::Built> = OnceLock::new();
    support::built_once(&BUILT, &[])
}

fn veritysetup_verify(data: &Path, hash: &Path, root: &str) -> std::process::Output {
    Command::new(tool("veritysetup"))
        .arg("verify")
        .arg(data)
        .arg(hash)
        .arg(root)
        .output()
        .expect("veritysetup")
}

#[test]
fn two_builds_at_different_times_are_byte_identical() {
    let b = built();
    std::thread::sleep(Duration::from_millis(1100));
    let dir = tempfile::tempdir().unwrap();
    let again = dir.path().join("elsewhere");
    build_into(&again);
    let first = std::fs::read(b.out.join("manifest.json")).unwrap();
    let second = std::fs::read(again.join("manifest.json")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&first),
        String::from_utf8_lossy(&second)
    );
    for a in b.manifest["artifacts"].as_array().unwrap() {
        let p = a["path"].as_str().unwrap();
        let x = std::fs::read(b.out.join(p)).unwrap();
        let y = std::fs::read(again.join(p)).unwrap();
        assert!(x == y, "{p} differs between builds");
        assert_eq!(
            a["size"].as_u64().unwrap(),
            x.len() as u64,
            "{p} size in manifest"
        );
    }
}

#[test]
fn manifest_hashes_match_the_files() {
    let b = built();
    let m = &b.manifest;
    for key in ["name", "version", "arch"] {
        assert!(m[key].is_string(), "manifest lacks {key}");
    }
    let lock = nodeimg::source::lock::Lock::read(&support::repo().join("nodeimg.lock")).unwrap();
    for a in m["artifacts"].as_array().unwrap() {
        let data = std::fs::read(b.out.join(a["path"].as_str().unwrap())).unwrap();
        let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, &data));
        assert_eq!(a["sha256"].as_str().unwrap(), sha);
    }
    let pkgs = m["packages"].as_array().unwrap();
    for name in [
        "containerd",
        "runc",
        "libc6",
        "ca-certificates",
        "nftables",
        "iptables",
        "conntrack",
        "e2fsprogs",
    ] {
        let p = pkgs
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in manifest"));
        assert_eq!(p["sha256"].as_str().unwrap().len(), 64);
        // the suite it was locked from (trixie, -updates or -security) and
        // the pool path in that suite's archive
        let locked = lock
            .packages
            .iter()
            .find(|l| l.name == name)
            .unwrap_or_else(|| panic!("{name} not in nodeimg.lock"));
        assert!(locked.suite.starts_with("trixie"), "{}", locked.suite);
        assert_eq!(
            p["origin"].as_str().unwrap(),
            format!("debian:{}/{}", locked.suite, locked.filename)
        );
    }
    for shell in ["bash", "dash", "busybox"] {
        assert!(
            !pkgs.iter().any(|p| p["name"] == shell),
            "{shell} package in a production image"
        );
    }
}

#[test]
fn veritysetup_verifies_and_catches_a_flipped_byte() {
    let b = built();
    let v = &b.manifest["verity"];
    let root = v["root_hash"].as_str().unwrap();
    assert_eq!(v["hash_algorithm"], "sha256");
    assert_eq!(v["data_block_size"], 4096);
    assert_eq!(v["hash_offset"], 0, "tests assume the tree is its own file");
    let data = b.out.join(artifact(&b.manifest, "rootfs"));
    let hash = b.out.join(artifact(&b.manifest, "verity"));
    let ok = veritysetup_verify(&data, &hash, root);
    assert!(
        ok.status.success(),
        "veritysetup verify: {}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let flipped = dir.path().join("rootfs.squashfs");
    let mut bytes = std::fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&flipped, bytes).unwrap();
    let bad = veritysetup_verify(&flipped, &hash, root);
    assert!(!bad.status.success(), "veritysetup accepted a flipped byte");
}

#[test]
fn root_image_lists_containerd_and_no_shell() {
    let b = built();
    let data = b.out.join(artifact(&b.manifest, "rootfs"));
    let out = Command::new(tool("unsquashfs"))
        .args(["-lln", "-d", ""])
        .arg(&data)
        .output()
        .expect("unsquashfs");
    assert!(
        out.status.success(),
        "unsquashfs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8_lossy(&out.stdout);
    let paths: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect();
    assert!(
        paths.contains(&"/usr/bin/containerd"),
        "no /usr/bin/containerd in:\n{listing}"
    );
    assert!(paths.contains(&"/usr/bin/runc"));
    assert!(paths.contains(&"/etc/ssl/certs/ca-certificates.crt"));
    for dir in ["/bin", "/usr/bin", "/sbin", "/usr/sbin"] {
        for sh in ["sh", "bash", "dash", "busybox", "ash"] {
            let p = format!("{dir}/{sh}");
            assert!(!paths.contains(&p.as_str()), "shell {p} in the image");
        }
    }
    // No build-host leakage: every owner is numeric root or a declared user.
    for line in listing.lines() {
        let owner = line.split_whitespace().nth(1).unwrap_or("");
        assert!(
            owner.split('/').all(|id| id.parse::<u32>().is_ok()),
            "non-numeric owner in {line}"
        );
    }
}

#[test]
fn sbom_is_valid_spdx_and_lists_every_package() {
    let b = built();
    let sbom_path = b.out.join(artifact(&b.manifest, "sbom"));
    let out = Command::new(venv_tool("pyspdxtools"))
        .arg("-i")
        .arg(&sbom_path)
        .output()
        .expect("pyspdxtools");
    assert!(
        out.status.success(),
        "pyspdxtools -i: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let sbom: Value = serde_json::from_slice(&std::fs::read(&sbom_path).unwrap()).unwrap();
    assert_eq!(sbom["spdxVersion"], "SPDX-2.3");
    let spdx: Vec<(&str, &str)> = sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or(""),
                p["versionInfo"].as_str().unwrap_or(""),
            )
        })
        .collect();
    for p in b.manifest["packages"].as_array().unwrap() {
        let (name, version) = (p["name"].as_str().unwrap(), p["version"].as_str().unwrap());
        assert!(
            spdx.contains(&(name, version)),
            "{name} {version} is in the manifest but not in the SBOM"
        );
    }
    assert!(
        spdx.iter().any(|(n, _)| *n == "nodeagent"),
        "no nodeagent in the SBOM"
    );
}
