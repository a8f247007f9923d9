//! Signing through the real `nodeimg` binary: `keys gen`, `sign` and
//! `verify` over a small synthetic build directory (a manifest in the
//! manifest schema and two artifacts), each kind of tampering named by
//! `verify`, and the judges: cosign 2.5 (Debian trixie) both ways, openssl
//! and sbsign/sbverify for the Secure Boot set.
//!
//! cosign is Debian trixie's, pinned in nodeimg.lock through tools.toml and
//! unpacked by `nodeimg tool fetch cosign` (`$NODEIMG_COSIGN` overrides).
//! Interop is not optional: the test fails when cosign cannot be had.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

mod support;

use nodeimg::manifest::Manifest;
use serde_json::{json, Value};

const PASSWORD: &str = "correct horse";
const EMPTY_TRUSTED_ROOT: &str = r#"{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1","tlogs":[],"certificateAuthorities":[],"ctlogs":[],"timestampAuthorities":[]}"#;

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs a program with the key variables cleared, then `env` set.
fn run(program: &Path, args: &[&str], env: &[(&str, &str)], cwd: Option<&Path>) -> Out {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_remove("NODEIMG_KEY_PASSWORD")
        .env_remove("COSIGN_PASSWORD")
        .env_remove("NODEIMG_SIGNING_KEY")
        .env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn nodeimg(args: &[&str], env: &[(&str, &str)]) -> Out {
    run(Path::new(env!("CARGO_BIN_EXE_nodeimg")), args, env, None)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn sha256_hex(data: &[u8]) -> String {
    nodeimg::util::hash::sha256_hex(data)
}

/// A build directory as `nodeimg build` leaves it, in miniature: the root
/// image and the kernel, and a manifest that parses as [`Manifest`].
fn synthetic_build(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    let rootfs: Vec<u8> = (0..(3 << 20) + 17u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let kernel = b"MZ not really a kernel\n".repeat(1000);
    fs::write(dir.join("rootfs.squashfs"), &rootfs).unwrap();
    fs::write(dir.join("vmlinuz"), &kernel).unwrap();
    let manifest = json!({
        "schema": 1,
        "name": "worker",
        "version": "0.1.0",
        "arch": "amd64",
        "build": {
            "nodeimg_version": "0.1.0",
            "inputs": [],
            "source_date_epoch": 1_760_000_000u64,
            "lock_checksum": "0".repeat(64),
            "debian_suite": "trixie",
            "layers": ["base"],
        },
        "artifacts": [
            {"kind": "rootfs", "path": "rootfs.squashfs", "sha256": sha256_hex(&rootfs), "size": rootfs.len()},
            {"kind": "kernel", "path": "vmlinuz", "sha256": sha256_hex(&kernel), "size": kernel.len()},
        ],
        "verity": {
            "root_hash": "1".repeat(64),
            "salt": "2".repeat(64),
            "hash_algorithm": "sha256",
            "data_block_size": 4096,
            "hash_block_size": 4096,
            "data_blocks": 769,
            "hash_offset": 0,
            "hash_start_block": 1,
            "uuid": null,
        },
        "packages": [
            {"name": "base-files", "version": "13.8", "sha256": "3".repeat(64),
             "origin": "debian:trixie/pool/main/b/base-files/base-files_13.8_amd64.deb", "role": "rootfs"},
        ],
    });
    let mut text = serde_json::to_vec_pretty(&manifest).unwrap();
    text.push(b'\n');
    // The fixture is a real manifest, not just something verify accepts.
    let _: Manifest = serde_json::from_slice(&text).unwrap();
    fs::write(dir.join("manifest.json"), text).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Generates a full key set in `root/keys` and returns that directory.
fn keys(root: &Path) -> PathBuf {
    let dir = root.join("keys");
    let out = nodeimg(
        &["keys", "gen", "--out", s(&dir)],
        &[("NODEIMG_KEY_PASSWORD", PASSWORD)],
    );
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(!out.all().contains(PASSWORD));
    dir
}

fn verify(dir: &Path, key: &Path) -> (Out, Value) {
    let text = nodeimg(&["verify", s(dir), "--key", s(key)], &[]);
    let json = nodeimg(&["verify", s(dir), "--key", s(key), "--json"], &[]);
    assert_eq!(text.code, json.code, "{}\n{}", text.all(), json.all());
    let report: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(report["ok"], json!(text.code == 0));
    (text, report)
}

/// Runs verify on a tampered copy of `signed`; expects exit 1 and every
/// `needles` in both the text output and the JSON failures.
fn expect_failure(
    root: &Path,
    signed: &Path,
    name: &str,
    key: &Path,
    tamper: impl FnOnce(&Path),
    needles: &[&str],
) {
    let dir = root.join(name);
    copy_dir(signed, &dir);
    tamper(&dir);
    let (out, report) = verify(&dir, key);
    assert_eq!(out.code, 1, "{name}: {}", out.all());
    let failures = report["failures"].to_string();
    for needle in needles {
        assert!(
            out.stdout.contains(needle),
            "{name}: `{needle}` not in\n{}",
            out.all()
        );
        assert!(
            failures.contains(needle),
            "{name}: `{needle}` not in {failures}"
        );
    }
}

#[test]
fn keys_sign_verify_and_every_tamper_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let keys = keys(root);
    for name in ["signing", "pk", "kek", "db"] {
        assert_eq!(mode(&keys.join(format!("{name}.key"))), 0o600, "{name}.key");
    }
    assert_eq!(mode(&keys), 0o700);
    let pubkey = keys.join("signing.pub");

    let signed = root.join("signed");
    synthetic_build(&signed);
    // Unsigned: verify says so.
    let (out, _) = verify(&signed, &pubkey);
    assert_eq!(out.code, 1);
    assert!(
        out.stdout.contains("the manifest is not signed"),
        "{}",
        out.all()
    );

    // Encrypted key, no password in the environment: refused, and says why.
    let out = nodeimg(
        &["sign", s(&signed), "--key", s(&keys.join("signing.key"))],
        &[],
    );
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("NODEIMG_KEY_PASSWORD"), "{}", out.all());
    // COSIGN_PASSWORD is honoured too.
    let out = nodeimg(
        &["sign", s(&signed), "--key", s(&keys.join("signing.key"))],
        &[("COSIGN_PASSWORD", PASSWORD)],
    );
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(out.stdout.trim(), s(&signed.join("manifest.sigstore.json")));
    let bundle = fs::read(signed.join("manifest.sigstore.json")).unwrap();

    let (out, report) = verify(&signed, &pubkey);
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(report["artifacts"].as_array().unwrap().len(), 2);
    assert_eq!(report["signature"]["ok"], json!(true));

    // Signing is deterministic: signing again writes the same bundle.
    let out = nodeimg(
        &["sign", s(&signed), "--key", s(&keys.join("signing.key"))],
        &[("NODEIMG_KEY_PASSWORD", PASSWORD)],
    );
    assert_eq!(out.code, 0, "{}", out.all());
    assert_eq!(
        fs::read(signed.join("manifest.sigstore.json")).unwrap(),
        bundle
    );

    let rootfs = fs::read(signed.join("rootfs.squashfs")).unwrap();
    let mut flipped = rootfs.clone();
    flipped[1_234_567] ^= 0x20;
    let (good, bad) = (sha256_hex(&rootfs), sha256_hex(&flipped));
    let expected =
        format!("artifact rootfs (rootfs.squashfs): sha256 is {bad}, manifest says {good}");
    expect_failure(
        root,
        &signed,
        "flipped-byte",
        &pubkey,
        |d| fs::write(d.join("rootfs.squashfs"), &flipped).unwrap(),
        &[&expected],
    );

    expect_failure(
        root,
        &signed,
        "manifest-field",
        &pubkey,
        |d| {
            let p = d.join("manifest.json");
            let text = fs::read_to_string(&p).unwrap();
            let changed = text.replace("\"version\": \"0.1.0\"", "\"version\": \"0.1.1\"");
            assert_ne!(text, changed);
            fs::write(&p, changed).unwrap();
        },
        &[
            "manifest.json is not what was signed",
            &format!("signature does not verify with {}", s(&pubkey)),
        ],
    );

    expect_failure(
        root,
        &signed,
        "bundle-signature",
        &pubkey,
        |d| {
            let p = d.join("manifest.sigstore.json");
            let mut b: Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
            let sig = b["messageSignature"]["signature"]
                .as_str()
                .unwrap()
                .to_string();
            let mut chars: Vec<char> = sig.chars().collect();
            chars[30] = if chars[30] == 'Q' { 'R' } else { 'Q' };
            b["messageSignature"]["signature"] = json!(chars.into_iter().collect::<String>());
            fs::write(&p, serde_json::to_vec_pretty(&b).unwrap()).unwrap();
        },
        &[&format!("signature does not verify with {}", s(&pubkey))],
    );

    let other = keys_elsewhere(root);
    expect_failure(
        root,
        &signed,
        "other-key",
        &other,
        |_| {},
        &[
            &format!("signature does not verify with {}", s(&other)),
            "the bundle names key hint",
        ],
    );

    expect_failure(
        root,
        &signed,
        "missing-artifact",
        &pubkey,
        |d| fs::remove_file(d.join("vmlinuz")).unwrap(),
        &["artifact kernel (vmlinuz): missing"],
    );

    // sign checks the artifacts first: a changed build is not signed.
    let dirty = root.join("dirty");
    copy_dir(&signed, &dirty);
    fs::remove_file(dirty.join("manifest.sigstore.json")).unwrap();
    fs::write(dirty.join("rootfs.squashfs"), &flipped).unwrap();
    let out = nodeimg(
        &["sign", s(&dirty), "--key", s(&keys.join("signing.key"))],
        &[("NODEIMG_KEY_PASSWORD", PASSWORD)],
    );
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains(&expected), "{}", out.all());
    assert!(!dirty.join("manifest.sigstore.json").exists());
}

/// A second signing pair (signing only).
fn keys_elsewhere(root: &Path) -> PathBuf {
    let dir = root.join("other-keys");
    let out = nodeimg(
        &["keys", "gen", "--signing-only", "--out", s(&dir)],
        &[("NODEIMG_KEY_PASSWORD", "")],
    );
    assert_eq!(out.code, 0, "{}", out.all());
    assert!(!dir.join("pk.key").exists());
    dir.join("signing.pub")
}

#[test]
fn keys_gen_needs_a_password_and_never_overwrites() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("k");
    let out = nodeimg(&["keys", "gen", "--signing-only", "--out", s(&dir)], &[]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("NODEIMG_KEY_PASSWORD"), "{}", out.all());
    let env = [("NODEIMG_KEY_PASSWORD", "pw")];
    let args = ["keys", "gen", "--signing-only", "--out", s(&dir)];
    assert_eq!(nodeimg(&args, &env).code, 0);
    let before = fs::read(dir.join("signing.key")).unwrap();
    let out = nodeimg(&args, &env);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("already exists"), "{}", out.all());
    assert_eq!(fs::read(dir.join("signing.key")).unwrap(), before);
    let mut forced = args.to_vec();
    forced.push("--force");
    assert_eq!(nodeimg(&forced, &env).code, 0);
    assert_ne!(fs::read(dir.join("signing.key")).unwrap(), before);
    assert_eq!(mode(&dir.join("signing.key")), 0o600);
}

fn tool(name: &str) -> PathBuf {
    which(name).unwrap_or_else(|| panic!("`{name}` is not installed (run scripts/setup.sh)"))
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// The Secure Boot set: RSA-2048 self-signed certificates openssl accepts,
/// and db signs a PE that sbverify checks against db.crt.
#[test]
fn secure_boot_keys_judged_by_openssl_and_sbsign() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = keys(tmp.path());
    let openssl = tool("openssl");
    for name in ["pk", "kek", "db"] {
        let crt = keys.join(format!("{name}.crt"));
        let key = keys.join(format!("{name}.key"));
        let text = run(
            &openssl,
            &["x509", "-in", s(&crt), "-noout", "-text"],
            &[],
            None,
        );
        assert_eq!(text.code, 0, "{}", text.all());
        assert!(
            text.stdout.contains("Public-Key: (2048 bit)"),
            "{}",
            text.stdout
        );
        assert!(
            text.stdout.contains("sha256WithRSAEncryption"),
            "{}",
            text.stdout
        );
        let v = run(
            &openssl,
            &["verify", "-CAfile", s(&crt), s(&crt)],
            &[],
            None,
        );
        assert_eq!(v.code, 0, "{name}: {}", v.all());
        // The key file holds the certificate's key.
        let m1 = run(
            &openssl,
            &["x509", "-in", s(&crt), "-noout", "-modulus"],
            &[],
            None,
        );
        let m2 = run(
            &openssl,
            &["rsa", "-in", s(&key), "-noout", "-modulus"],
            &[],
            None,
        );
        assert_eq!(m1.stdout, m2.stdout, "{name}");
    }
    let stub = Path::new("/usr/lib/systemd/boot/efi/linuxx64.efi.stub");
    assert!(
        stub.exists(),
        "systemd-boot-efi is not installed (run scripts/setup.sh)"
    );
    let signed = tmp.path().join("stub.signed.efi");
    let out = run(
        &tool("sbsign"),
        &[
            "--key",
            s(&keys.join("db.key")),
            "--cert",
            s(&keys.join("db.crt")),
            "--output",
            s(&signed),
            s(stub),
        ],
        &[],
        None,
    );
    assert_eq!(out.code, 0, "{}", out.all());
    let sbverify = tool("sbverify");
    let ok = run(
        &sbverify,
        &["--cert", s(&keys.join("db.crt")), s(&signed)],
        &[],
        None,
    );
    assert_eq!(ok.code, 0, "{}", ok.all());
    let wrong = run(
        &sbverify,
        &["--cert", s(&keys.join("kek.crt")), s(&signed)],
        &[],
        None,
    );
    assert_ne!(
        wrong.code,
        0,
        "a KEK-verified db signature: {}",
        wrong.all()
    );
}

/// cosign from `$NODEIMG_COSIGN`, else the locked trixie package.
fn cosign() -> PathBuf {
    if let Some(p) = std::env::var_os("NODEIMG_COSIGN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "NODEIMG_COSIGN={} does not exist", p.display());
        return p;
    }
    let p = support::judge_package("cosign").join("usr/bin/cosign");
    assert!(p.is_file(), "the cosign package has no usr/bin/cosign");
    p
}

/// cosign with a private HOME (no TUF cache, no config from the host).
fn cosign_run(cosign: &Path, home: &Path, args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut all = vec![("HOME", s(home))];
    all.extend_from_slice(env);
    run(cosign, args, &all, Some(home))
}

fn cosign_verify(cosign: &Path, home: &Path, key: &Path, bundle: &Path, blob: &Path) -> Out {
    let root = home.join("empty-trusted-root.json");
    fs::write(&root, EMPTY_TRUSTED_ROOT).unwrap();
    cosign_run(
        cosign,
        home,
        &[
            "verify-blob",
            "--key",
            s(key),
            "--bundle",
            s(bundle),
            "--new-bundle-format",
            "--insecure-ignore-tlog=true",
            "--trusted-root",
            s(&root),
            s(blob),
        ],
        &[],
    )
}

#[test]
fn cosign_interop_both_ways() {
    let cosign = cosign();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let home = root.join("home");
    fs::create_dir(&home).unwrap();
    let version = cosign_run(&cosign, &home, &["version"], &[]);
    assert_eq!(version.code, 0, "{}", version.all());

    // 1. nodeimg keys + nodeimg sign -> cosign verify-blob.
    let keys = keys(root);
    let dir = root.join("build");
    synthetic_build(&dir);
    let out = nodeimg(
        &["sign", s(&dir), "--key", s(&keys.join("signing.key"))],
        &[("NODEIMG_KEY_PASSWORD", PASSWORD)],
    );
    assert_eq!(out.code, 0, "{}", out.all());
    let manifest = dir.join("manifest.json");
    let bundle = dir.join("manifest.sigstore.json");
    let ok = cosign_verify(
        &cosign,
        &home,
        &keys.join("signing.pub"),
        &bundle,
        &manifest,
    );
    assert_eq!(ok.code, 0, "cosign rejects our bundle:\n{}", ok.all());
    assert!(ok.all().contains("Verified OK"), "{}", ok.all());
    // The judge is live: a changed manifest fails for cosign too.
    let changed = root.join("changed.json");
    let text = fs::read_to_string(&manifest).unwrap();
    fs::write(&changed, text.replace("worker", "worked")).unwrap();
    let bad = cosign_verify(&cosign, &home, &keys.join("signing.pub"), &bundle, &changed);
    assert_ne!(
        bad.code,
        0,
        "cosign accepted a changed manifest:\n{}",
        bad.all()
    );

    // 2. cosign generate-key-pair -> nodeimg sign -> cosign and nodeimg verify.
    let gen = cosign_run(
        &cosign,
        &home,
        &["generate-key-pair"],
        &[("COSIGN_PASSWORD", "cosign-pw")],
    );
    assert_eq!(gen.code, 0, "{}", gen.all());
    let (ckey, cpub) = (home.join("cosign.key"), home.join("cosign.pub"));
    let dir2 = root.join("build2");
    synthetic_build(&dir2);
    let out = nodeimg(
        &["sign", s(&dir2), "--key", s(&ckey)],
        &[("COSIGN_PASSWORD", "cosign-pw")],
    );
    assert_eq!(
        out.code,
        0,
        "nodeimg cannot use cosign's key:\n{}",
        out.all()
    );
    let b2 = dir2.join("manifest.sigstore.json");
    let ok = cosign_verify(&cosign, &home, &cpub, &b2, &dir2.join("manifest.json"));
    assert_eq!(ok.code, 0, "{}", ok.all());
    let (v, _) = verify(&dir2, &cpub);
    assert_eq!(v.code, 0, "{}", v.all());

    // 3. nodeimg's key -> cosign sign-blob -> nodeimg verify.
    let dir3 = root.join("build3");
    synthetic_build(&dir3);
    let b3 = dir3.join("manifest.sigstore.json");
    let out = cosign_run(
        &cosign,
        &home,
        &[
            "sign-blob",
            "--key",
            s(&keys.join("signing.key")),
            "--bundle",
            s(&b3),
            "--new-bundle-format",
            "--tlog-upload=false",
            "--yes",
            s(&dir3.join("manifest.json")),
        ],
        &[("COSIGN_PASSWORD", PASSWORD)],
    );
    assert_eq!(
        out.code,
        0,
        "cosign cannot use nodeimg's key:\n{}",
        out.all()
    );
    let (v, report) = verify(&dir3, &keys.join("signing.pub"));
    assert_eq!(v.code, 0, "nodeimg rejects cosign's bundle:\n{}", v.all());
    assert_eq!(report["artifacts"].as_array().unwrap().len(), 2);
    // ...and cosign's bundle over this manifest is not taken for another.
    let (v, _) = verify(&dir3, &cpub);
    assert_eq!(v.code, 1);
}

/// The real thing: the worker built with `--sign-key` verifies with
/// nodeimg and cosign, carries its public key as the update trust root,
/// and a flipped byte in the root image or the UKI is named.
#[test]
fn signed_worker_build_verifies_and_names_tampered_root_and_uki() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let keys = keys(root);
    let out = root.join("worker");
    let build = run(
        Path::new(env!("CARGO_BIN_EXE_nodeimg")),
        &[
            "build",
            "images/worker.toml",
            "--quiet",
            "--format",
            "uki",
            "--agent",
            s(&support::agent()),
            "--sign-key",
            s(&keys.join("signing.key")),
            "--out",
            s(&out),
        ],
        &[("NODEIMG_KEY_PASSWORD", PASSWORD)],
        Some(&support::repo()),
    );
    assert_eq!(build.code, 0, "{}", build.all());
    let public = keys.join("signing.pub");
    let (ok, report) = verify(&out, &public);
    assert_eq!(ok.code, 0, "{}", ok.all());
    assert_eq!(report["ok"], true);

    let cosign = cosign();
    let home = root.join("home");
    fs::create_dir(&home).unwrap();
    let c = cosign_verify(
        &cosign,
        &home,
        &public,
        &out.join("manifest.sigstore.json"),
        &out.join("manifest.json"),
    );
    assert_eq!(c.code, 0, "cosign: {}", c.all());

    // The image's trust root for updates is this key.
    let m: Value = serde_json::from_slice(&fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let rootfs = out.join(support::artifact_path(&m, "rootfs"));
    let cat = run(
        &support::tool_path("unsquashfs"),
        &["-cat", s(&rootfs), "usr/lib/nodeimg/update-signing.pub"],
        &[],
        None,
    );
    assert_eq!(cat.code, 0, "{}", cat.all());
    assert_eq!(cat.stdout, fs::read_to_string(&public).unwrap());
    // ... and the booted agent reads it from the verified root.
    let (code, report) = support::lab_boot(&out, &[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(
        report["update_key"],
        format!("sha256:{}", sha256_hex(&fs::read(&public).unwrap())),
        "{report:#}"
    );

    for (kind, name) in [("rootfs", "flip-rootfs"), ("uki", "flip-uki")] {
        let path = support::artifact_path(&m, kind);
        expect_failure(
            root,
            &out,
            name,
            &public,
            |dir| {
                let p = dir.join(&path);
                let mut bytes = fs::read(&p).unwrap();
                let middle = bytes.len() / 2;
                bytes[middle] ^= 1;
                fs::write(&p, bytes).unwrap();
            },
            &[&format!("artifact {kind} ({path})"), "sha256 is"],
        );
    }
}
