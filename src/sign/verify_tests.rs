use std::fs;

use super::*;
use crate::sign::bundle::sign_manifest;
use crate::sign::keys::SigningKey;

struct Fixture {
    dir: tempfile::TempDir,
    key: SigningKey,
}

/// A signed directory: two artifacts (one in a subdirectory, as a PXE
/// bundle lists several files) and a whole manifest listing them.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let a: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
    let b = b"kernel bytes".to_vec();
    fs::write(dir.path().join("rootfs.squashfs"), &a).unwrap();
    fs::create_dir(dir.path().join("pxe")).unwrap();
    fs::write(dir.path().join("pxe/vmlinuz"), &b).unwrap();
    let manifest = Manifest::sample(vec![
        Artifact {
            kind: "rootfs".into(),
            path: "rootfs.squashfs".into(),
            sha256: hash::sha256_hex(&a),
            size: a.len() as u64,
        },
        Artifact {
            kind: "kernel".into(),
            path: "pxe/vmlinuz".into(),
            sha256: hash::sha256_hex(&b),
            size: b.len() as u64,
        },
    ]);
    let mut json = serde_json::to_vec_pretty(&manifest).unwrap();
    json.push(b'\n');
    fs::write(dir.path().join(MANIFEST_FILE), json).unwrap();
    let key = SigningKey::generate();
    sign_manifest(dir.path(), &key).unwrap();
    Fixture { dir, key }
}

fn opts() -> VerifyOptions {
    VerifyOptions {
        bundle: None,
        key_name: "signing.pub".into(),
        threads: 2,
    }
}

fn run(f: &Fixture) -> Report {
    verify_dir(f.dir.path(), &f.key.public_key(), &opts())
}

#[test]
fn good_directory_verifies() {
    let f = fixture();
    let r = run(&f);
    assert!(r.ok, "{:?}", r.failures);
    assert!(r.signature.ok && r.artifacts_checked);
    assert_eq!(r.artifacts.len(), 2);
    assert!(r.artifacts.iter().all(|a| a.ok));
    assert_eq!(r.bytes_hashed, 300_000 + 12);
}

#[test]
fn flipped_artifact_byte_names_artifact_and_hashes() {
    let f = fixture();
    let p = f.dir.path().join("rootfs.squashfs");
    let mut data = fs::read(&p).unwrap();
    let expected = hash::sha256_hex(&data);
    data[123_456] ^= 0x01;
    fs::write(&p, &data).unwrap();
    let r = run(&f);
    assert!(!r.ok);
    assert!(r.signature.ok);
    assert_eq!(r.failures.len(), 1);
    assert_eq!(
        r.failures[0],
        format!(
            "artifact rootfs (rootfs.squashfs): sha256 is {}, manifest says {expected}",
            hash::sha256_hex(&data)
        )
    );
    assert!(!r.artifacts[0].ok && r.artifacts[1].ok);
}

#[test]
fn changed_manifest_fails_the_signature() {
    let f = fixture();
    let p = f.dir.path().join(MANIFEST_FILE);
    let text = fs::read_to_string(&p).unwrap();
    fs::write(&p, text.replace("\"test\"", "\"tost\"")).unwrap();
    let r = run(&f);
    assert!(!r.ok && !r.signature.ok && !r.artifacts_checked);
    assert!(r.failures[0].starts_with("manifest.json is not what was signed: its sha256 is "));
    assert_eq!(r.failures[1], "signature does not verify with signing.pub");
}

#[test]
fn other_key_and_altered_signature() {
    let f = fixture();
    let other = SigningKey::generate().public_key();
    let r = verify_dir(f.dir.path(), &other, &opts());
    assert!(!r.ok);
    assert_eq!(r.failures.len(), 1);
    assert!(
        r.failures[0]
            .starts_with("signature does not verify with signing.pub (the bundle names key hint "),
        "{}",
        r.failures[0]
    );

    let p = f.dir.path().join(BUNDLE_FILE);
    let mut bundle: serde_json::Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
    let sig = bundle["messageSignature"]["signature"].as_str().unwrap();
    // Change one base64 digit inside the DER (r or s changes).
    let mut chars: Vec<char> = sig.chars().collect();
    chars[20] = if chars[20] == 'A' { 'B' } else { 'A' };
    bundle["messageSignature"]["signature"] = chars.into_iter().collect::<String>().into();
    fs::write(&p, serde_json::to_vec(&bundle).unwrap()).unwrap();
    let r = run(&f);
    assert_eq!(r.failures, ["signature does not verify with signing.pub"]);
}

#[test]
fn missing_artifact_and_bundle() {
    let f = fixture();
    fs::remove_file(f.dir.path().join("pxe/vmlinuz")).unwrap();
    let r = run(&f);
    assert_eq!(r.failures, ["artifact kernel (pxe/vmlinuz): missing"]);
    fs::remove_file(f.dir.path().join(BUNDLE_FILE)).unwrap();
    let r = run(&f);
    assert_eq!(r.failures.len(), 1);
    assert!(r.failures[0].starts_with("the manifest is not signed: "));
}

#[test]
fn size_mismatch_is_reported_without_hashing() {
    let f = fixture();
    fs::write(f.dir.path().join("pxe/vmlinuz"), b"kernel bytes!").unwrap();
    let r = run(&f);
    assert_eq!(
        r.failures,
        ["artifact kernel (pxe/vmlinuz): size is 13 bytes, manifest says 12"]
    );
    assert_eq!(r.bytes_hashed, 300_000);
}

#[test]
fn hash_files_keeps_order() {
    let d = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for i in 0..5u8 {
        let p = d.path().join(format!("f{i}"));
        fs::write(&p, vec![i; 1000 * usize::from(i)]).unwrap();
        paths.push(p);
    }
    let missing = d.path().join("none");
    let mut refs: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
    refs.push(&missing);
    for threads in [1, 2, 8] {
        let r = hash_files(&refs, threads);
        assert_eq!(r.len(), 6);
        for (i, p) in paths.iter().enumerate() {
            let data = fs::read(p).unwrap();
            let (h, n) = r[i].as_ref().unwrap();
            assert_eq!((*h, *n), (hash::sha256(&data), data.len() as u64));
        }
        assert!(r[5].is_err());
    }
}
