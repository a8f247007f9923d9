//! Reads the archive back the way an importer does (index → manifest →
//! config and layer, each blob checked against its digest) and lists it
//! with the host's `tar` as an independent reader.

use std::collections::BTreeMap;
use std::io::Read;

use super::*;

fn spec() -> ImageSpec {
    ImageSpec {
        name: "nodeimg.local/pause:0.1.0".into(),
        files: vec![ImageFile {
            path: "pause".into(),
            mode: 0o755,
            content: crate::oci::Content::Data(b"\x7fELF not really".to_vec()),
        }],
        entrypoint: vec!["/pause".into()],
        user: "65535:65535".into(),
        mtime: 1_700_000_000,
    }
}

fn entries(tar_bytes: &[u8]) -> BTreeMap<String, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut a = tar::Archive::new(tar_bytes);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().display().to_string();
        let mode = e.header().mode().unwrap();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.insert(path, (mode, data));
    }
    out
}

fn blob<'a>(files: &'a BTreeMap<String, (u32, Vec<u8>)>, digest: &str) -> &'a [u8] {
    let hex = digest.strip_prefix("sha256:").unwrap();
    let data = &files[&format!("blobs/sha256/{hex}")].1;
    assert_eq!(sha256_hex(data), hex, "blob content matches its name");
    data
}

#[test]
fn archive_is_a_valid_oci_layout_with_the_named_image() {
    let built = build_image(&spec()).unwrap();
    let files = entries(&built.archive);
    let layout: serde_json::Value = serde_json::from_slice(&files["oci-layout"].1).unwrap();
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    let index: serde_json::Value = serde_json::from_slice(&files["index.json"].1).unwrap();
    let top = &index["manifests"][0];
    assert_eq!(top["digest"], built.manifest_digest);
    assert_eq!(
        top["annotations"]["io.containerd.image.name"],
        "nodeimg.local/pause:0.1.0"
    );
    assert_eq!(
        top["annotations"]["org.opencontainers.image.ref.name"],
        "0.1.0"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(blob(&files, built.manifest_digest.as_str())).unwrap();
    assert_eq!(manifest["schemaVersion"], 2);
    let config: serde_json::Value =
        serde_json::from_slice(blob(&files, manifest["config"]["digest"].as_str().unwrap()))
            .unwrap();
    assert_eq!(config["config"]["User"], "65535:65535");
    assert_eq!(config["config"]["Entrypoint"][0], "/pause");
    let layer_digest = manifest["layers"][0]["digest"].as_str().unwrap();
    assert_eq!(config["rootfs"]["diff_ids"][0], layer_digest);
    let layer = entries(blob(&files, layer_digest));
    assert_eq!(layer["pause"], (0o755, b"\x7fELF not really".to_vec()));
}

#[test]
fn same_inputs_give_the_same_bytes_and_digest() {
    let a = build_image(&spec()).unwrap();
    let b = build_image(&spec()).unwrap();
    assert_eq!(a, b);
    let mut other = spec();
    other.files[0].content = Content::Data(b"\x7fELF not really!".to_vec());
    assert_ne!(
        build_image(&other).unwrap().manifest_digest,
        a.manifest_digest
    );
}

#[test]
fn host_tar_lists_the_archive() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pause.tar");
    std::fs::write(&path, build_image(&spec()).unwrap().archive).unwrap();
    let out = std::process::Command::new("tar")
        .arg("-tvf")
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("index.json") && text.contains("oci-layout"),
        "{text}"
    );
    assert_eq!(text.matches("blobs/sha256/").count(), 4, "{text}");
}

#[test]
fn bad_users_and_paths_are_named() {
    let mut s = spec();
    s.user = "nobody".into();
    assert!(build_image(&s)
        .unwrap_err()
        .to_string()
        .contains("\"nobody\""));
    let mut s = spec();
    s.files[0].path = "../pause".into();
    let e = build_image(&s).unwrap_err().to_string();
    assert!(e.contains("../pause"), "{e}");
}

/// The layer of `spec` as the host's `tar` lists it (`tar -tvf`).
fn host_listing_of_layer(spec: &ImageSpec) -> String {
    let built = build_image(spec).unwrap();
    let files = entries(&built.archive);
    let index: serde_json::Value = serde_json::from_slice(&files["index.json"].1).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(blob(&files, digest)).unwrap();
    let layer = blob(&files, manifest["layers"][0]["digest"].as_str().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("layer.tar");
    std::fs::write(&path, layer).unwrap();
    let out = std::process::Command::new("tar")
        .arg("-tvf")
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// A userland image (the kube-bench judge's): files in directories, each
/// directory once and before what it holds, symlinks as symlinks.
#[test]
fn nested_files_get_their_directories_and_symlinks_stay_links() {
    let mut s = spec();
    s.files = vec![
        ImageFile {
            path: "usr/bin/busybox".into(),
            mode: 0o755,
            content: Content::Data(b"\x7fELF".to_vec()),
        },
        ImageFile {
            path: "usr/bin/sh".into(),
            mode: 0o777,
            content: Content::Symlink("busybox".into()),
        },
        ImageFile {
            path: "bin".into(),
            mode: 0o777,
            content: Content::Symlink("usr/bin".into()),
        },
    ];
    let text = host_listing_of_layer(&s);
    let names: Vec<String> = text
        .lines()
        .map(|l| l.split_whitespace().skip(5).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        names,
        [
            "bin -> usr/bin",
            "usr/",
            "usr/bin/",
            "usr/bin/busybox",
            "usr/bin/sh -> busybox"
        ],
        "{text}"
    );
    assert!(text.lines().next().unwrap().starts_with('l'), "{text}");
}

#[test]
fn a_path_twice_or_under_a_file_is_refused() {
    let file = |path: &str| ImageFile {
        path: path.into(),
        mode: 0o644,
        content: Content::Data(Vec::new()),
    };
    for (files, problem) in [
        (vec![file("a"), file("a")], "twice"),
        (vec![file("a"), file("a/b")], "under a file"),
        (vec![file("a/b"), file("a")], "directory of other files"),
        (vec![file("a//b")], "relative path"),
        (vec![file("a/./b")], "relative path"),
        (vec![file("/a")], "relative path"),
    ] {
        let mut s = spec();
        s.files = files;
        let e = build_image(&s).unwrap_err().to_string();
        assert!(e.contains(problem), "{e}");
    }
}
