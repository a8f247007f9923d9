//! The boot-parts cache (`src/pipeline/boot_cache.rs`) judged end to end:
//! the worker (`--format none`) built with a cache of its own whose boot
//! parts start empty, then warm, then with the entry damaged, then with
//! other agent bytes. Warm and repaired builds must be byte-identical to
//! the cold one, and the log must say which path each build took. The
//! cache is seeded with links to the user's packages, so nothing is
//! fetched that `tests/image_build.rs` would not fetch.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use nodeimg::source::cache::Cache;

mod support;

use support::{agent, read_manifest, repo};

const KIND_PREFIX: &str = "boot-parts-v1-";
const HIT: &str = "boot parts read from the cache";
const BUILT: &str = "boot parts ready";

/// A cache directory whose package entries link to the user's (the boot
/// parts and the squashfs blocks start empty).
fn seeded_cache(root: &Path) {
    let user = Cache::default_root(
        std::env::var_os("NODEIMG_CACHE")
            .map(PathBuf::from)
            .as_deref(),
    );
    let sha = root.join("sha256");
    let derived = root.join("derived");
    fs::create_dir_all(&sha).unwrap();
    fs::create_dir_all(&derived).unwrap();
    if let Ok(entries) = fs::read_dir(user.join("sha256")) {
        for e in entries.flatten() {
            std::os::unix::fs::symlink(e.path(), sha.join(e.file_name())).unwrap();
        }
    }
    if let Ok(entries) = fs::read_dir(user.join("derived")) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("plain-deb-") {
                fs::copy(e.path(), derived.join(e.file_name())).unwrap();
            }
        }
    }
}

/// `nodeimg -v build images/worker.toml --format none` with `cache` and
/// `agent`; returns the log.
fn build(cache: &Path, agent: &Path, out: &Path) -> String {
    let pause = support::agent().with_file_name("pause");
    let output = Command::new(env!("CARGO_BIN_EXE_nodeimg"))
        .current_dir(repo())
        .args([
            "-v",
            "build",
            "images/worker.toml",
            "--format",
            "none",
            "--out",
        ])
        .arg(out)
        .arg("--agent")
        .arg(agent)
        .arg("--pause")
        .arg(pause)
        .env("NODEIMG_CACHE", cache)
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("NODEIMG_AGENT")
        .output()
        .expect("run nodeimg");
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "nodeimg build failed:\n{log}");
    log
}

/// Every file the manifest lists, and the manifest, are the same bytes.
fn assert_identical(a: &Path, b: &Path) {
    let manifest = read_manifest(a);
    assert_eq!(
        fs::read(a.join("manifest.json")).unwrap(),
        fs::read(b.join("manifest.json")).unwrap(),
        "manifests differ"
    );
    let artifacts = manifest["artifacts"].as_array().unwrap();
    assert!(artifacts.iter().any(|x| x["kind"] == "initramfs"));
    for x in artifacts {
        let p = x["path"].as_str().unwrap();
        let same = fs::read(a.join(p)).unwrap() == fs::read(b.join(p)).unwrap();
        assert!(
            same,
            "{p} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
}

/// The boot-parts entries: (link path, the entry it names).
fn entries(cache: &Path) -> Vec<(PathBuf, PathBuf)> {
    let mut out: Vec<_> = fs::read_dir(cache.join("derived"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(KIND_PREFIX))
        .map(|e| {
            let sha = fs::read_to_string(e.path()).unwrap();
            (e.path(), cache.join("sha256").join(sha.trim()))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn warm_builds_equal_the_cold_build_and_damage_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    seeded_cache(&cache);
    let out = |name: &str| dir.path().join(name);
    let agent = agent();

    let log = build(&cache, &agent, &out("cold"));
    assert!(
        log.contains(BUILT) && !log.contains(HIT),
        "cold build:\n{log}"
    );
    let stored = entries(&cache);
    assert_eq!(stored.len(), 1, "one entry after the cold build");

    let log = build(&cache, &agent, &out("warm"));
    assert!(
        log.contains(HIT) && !log.contains(BUILT),
        "warm build:\n{log}"
    );
    assert_identical(&out("cold"), &out("warm"));

    // One flipped byte: the entry fails its hash, is not used, and the
    // build writes it again. (Replaced, not written in place: the file is
    // ours, but a link would reach the user's cache.)
    let (_, entry) = &stored[0];
    let mut bytes = fs::read(entry).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    fs::remove_file(entry).unwrap();
    fs::write(entry, &bytes).unwrap();
    let log = build(&cache, &agent, &out("repaired"));
    assert!(
        log.contains(BUILT) && !log.contains(HIT),
        "damaged entry:\n{log}"
    );
    assert!(
        log.contains("does not match its sha256"),
        "damaged entry:\n{log}"
    );
    assert_identical(&out("cold"), &out("repaired"));
    assert_eq!(entries(&cache), stored, "the entry is written again");
    assert_ne!(fs::read(entry).unwrap(), bytes);

    // Other agent bytes (one byte appended to the ELF) are another key.
    let other = dir.path().join("nodeagent");
    let mut changed = fs::read(&agent).unwrap();
    changed.push(0);
    fs::write(&other, &changed).unwrap();
    let log = build(&cache, &other, &out("other-agent"));
    assert!(
        log.contains(BUILT) && !log.contains(HIT),
        "other agent:\n{log}"
    );
    assert_eq!(entries(&cache).len(), 2);
    let initramfs = |d: &str| fs::read(out(d).join("initramfs.img")).unwrap();
    assert_ne!(initramfs("cold"), initramfs("other-agent"));
}
