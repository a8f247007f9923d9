use super::*;
use crate::oci::{build_image, ImageFile, ImageSpec};

fn ours(name: &str) -> crate::oci::BuiltImage {
    build_image(&ImageSpec {
        name: name.into(),
        files: vec![ImageFile {
            path: "probe".into(),
            mode: 0o755,
            content: crate::oci::Content::Data(b"#!/bin/true\n".to_vec()),
        }],
        entrypoint: vec!["/probe".into()],
        user: "1000:1000".into(),
        mtime: 0,
    })
    .unwrap()
}

/// A tar of `files` as a user's tool might write it (its own times), with
/// `kind` for every entry; names are written raw, as a hostile tool could.
fn tar_of(files: &[(&str, Vec<u8>)], kind: tar::EntryType) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_mode(0o600);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

/// The files of an archive, by name.
fn files_of(archive: &[u8]) -> BTreeMap<String, Vec<u8>> {
    entries("t", archive).unwrap()
}

#[test]
fn a_user_archive_keeps_its_manifest_digest_under_our_name() {
    let theirs = ours("registry.example/falco:0.39");
    let got = rewrap("nodeimg.local/falco:0.39", &theirs.archive, 0).unwrap();
    assert_eq!(got.manifest_digest, theirs.manifest_digest);
    let index: Value = serde_json::from_slice(&files_of(&got.archive)["index.json"]).unwrap();
    let a = &index["manifests"][0]["annotations"];
    assert_eq!(a["io.containerd.image.name"], "nodeimg.local/falco:0.39");
    assert_eq!(a["org.opencontainers.image.ref.name"], "0.39");
    // deterministic, and rewrapping our own output changes nothing
    let again = rewrap("nodeimg.local/falco:0.39", &theirs.archive, 0).unwrap();
    assert_eq!(got, again);
    let twice = rewrap("nodeimg.local/falco:0.39", &got.archive, 0).unwrap();
    assert_eq!(twice, got);
}

#[test]
fn the_amd64_image_of_a_multi_platform_index_is_chosen_and_nothing_else_kept() {
    let amd = ours("x:1");
    let arm = ours("y:1");
    let mut files = files_of(&amd.archive);
    let arm_files = files_of(&arm.archive);
    let desc = |archive: &BTreeMap<String, Vec<u8>>, arch: &str| {
        let index: Value = serde_json::from_slice(&archive["index.json"]).unwrap();
        let mut d = index["manifests"][0].clone();
        d["platform"] = serde_json::json!({ "os": "linux", "architecture": arch });
        d.as_object_mut().unwrap().remove("annotations");
        d
    };
    // a nested index, as registries serve multi-platform images
    let nested = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA,
        "manifests": [desc(&arm_files, "arm64"), desc(&files, "amd64")],
    }))
    .unwrap();
    let nested_digest = format!("sha256:{}", sha256_hex(&nested));
    files.insert(
        format!("blobs/sha256/{}", sha256_hex(&nested)),
        nested.clone(),
    );
    for (k, v) in &arm_files {
        files.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let top = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{ "mediaType": INDEX_MEDIA, "digest": nested_digest, "size": nested.len() }],
    }))
    .unwrap();
    files.insert("index.json".into(), top);
    let list: Vec<(&str, Vec<u8>)> = files.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let got = rewrap(
        "nodeimg.local/x:1",
        &tar_of(&list, tar::EntryType::Regular),
        0,
    )
    .unwrap();
    assert_eq!(got.manifest_digest, amd.manifest_digest);
    let kept = files_of(&got.archive);
    // index, layout, and the amd64 image's manifest, config and layer
    assert_eq!(kept.len(), 5, "{:?}", kept.keys());
}

#[test]
fn hostile_or_broken_archives_are_refused_naming_the_problem() {
    let good = files_of(&ours("x:1").archive);
    let list = |f: &BTreeMap<String, Vec<u8>>| -> Vec<(String, Vec<u8>)> {
        f.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    let refused = |archive: Vec<u8>, says: &str| {
        let e = rewrap("nodeimg.local/x:1", &archive, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains(says) && e.contains("nodeimg.local/x:1"), "{e}");
    };
    let as_tar = |files: Vec<(String, Vec<u8>)>, kind| {
        let refs: Vec<(&str, Vec<u8>)> =
            files.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        tar_of(&refs, kind)
    };
    let mut escape = list(&good);
    escape.push(("../../etc/passwd".into(), b"x".to_vec()));
    refused(
        as_tar(escape, tar::EntryType::Regular),
        "leaves the archive's root",
    );
    // index.json as a link to a file elsewhere
    refused(
        tar_of(&[("index.json", Vec::new())], tar::EntryType::Symlink),
        "not a file",
    );
    // a blob that does not match its name
    let mut tampered = good.clone();
    let layer = tampered
        .keys()
        .find(|k| k.starts_with("blobs/") && tampered[*k].len() > 1000)
        .unwrap()
        .clone();
    tampered.get_mut(&layer).unwrap()[600] ^= 1;
    refused(
        as_tar(list(&tampered), tar::EntryType::Regular),
        "hashes to",
    );
    let mut docker = good.clone();
    docker.remove("index.json");
    docker.insert("manifest.json".into(), b"[]".to_vec());
    refused(
        as_tar(list(&docker), tar::EntryType::Regular),
        "docker save",
    );
    refused(
        b"not a tar at all, but long enough to look at".repeat(20),
        "tar",
    );
}
