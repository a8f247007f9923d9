//! Bad input through the real `nodeimg` binary, against a fake signed Debian
//! archive on 127.0.0.1 (issue 2, "What must hold"). Each failure must exit
//! non-zero, name its cause on stderr, leave no `manifest.json` and write
//! nothing outside `--out`, the cache and (where locking succeeded) the lock.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::{
    archive_key, changed, public_key, publish, sha256_hex, Item, Pkg, Project, Run, Server,
    PACKAGES_XZ, SUITE,
};
use pgp::composed::SignedSecretKey;

const LAYER: &str = "schema = 1\n[packages]\ninclude = [\"hello\"]\n";

fn hello() -> Pkg {
    Pkg::new(
        "hello",
        Some("libfoo (>= 1.0)"),
        &[
            Item::Dir("./"),
            Item::Dir("./usr/"),
            Item::Dir("./usr/bin/"),
            Item::File("./usr/bin/hello", b"\x7fELF hello, world\n"),
        ],
    )
}

fn libfoo() -> Pkg {
    Pkg::new(
        "libfoo",
        None,
        &[
            Item::Dir("./"),
            Item::Dir("./usr/"),
            Item::Dir("./usr/lib/"),
            Item::File("./usr/lib/libfoo.so.1", &[0x42; 300]),
        ],
    )
}

/// A package that ships only `items` (for the evil ones).
fn evil(items: &[Item]) -> Pkg {
    Pkg::new("evil", None, items)
}

/// The archive (hello, libfoo, then `extra`) and a project whose one layer
/// is `layer`. The server stops when the fixture is dropped.
struct Fixture {
    server: Server,
    key: SignedSecretKey,
    p: Project,
}

fn fixture(extra: Vec<Pkg>, layer: &str) -> Fixture {
    let server = Server::start();
    let key = archive_key(1);
    let mut pkgs = vec![hello(), libfoo()];
    pkgs.extend(extra);
    publish(&server, &key, &pkgs);
    let p = Project::new(&server.url(), &public_key(&key));
    p.image(&[("base", layer)]);
    Fixture { server, key, p }
}

/// `run` failed naming every one of `needles`, `out` holds no file (so no
/// manifest), and nothing outside `out*/` and `cache/` changed since `before`.
fn assert_rejected(
    p: &Project,
    out: &str,
    before: &BTreeMap<PathBuf, Vec<u8>>,
    run: &Run,
    needles: &[&str],
) {
    assert!(!run.ok, "expected failure; stderr:\n{}", run.stderr);
    assert!(run.stderr.contains("error: "), "{}", run.stderr);
    for n in needles {
        assert!(
            run.stderr.contains(n),
            "stderr lacks {n:?}:\n{}",
            run.stderr
        );
    }
    assert!(!p.path(out).join("manifest.json").exists());
    assert_eq!(p.files_under(out), Vec::<PathBuf>::new(), "files in {out}/");
    let diff = changed(before, &p.snapshot());
    assert!(diff.is_empty(), "written outside --out: {diff:?}");
}

fn manifest(p: &Project, out: &str) -> serde_json::Value {
    let text = std::fs::read(p.path(out).join("manifest.json")).unwrap();
    serde_json::from_slice(&text).unwrap()
}

fn cache_entry(p: &Project, data: &[u8]) -> PathBuf {
    p.path("cache/sha256").join(sha256_hex(data))
}

/// The cached decompressed copy the build keeps of a .deb (read first on
/// rebuilds, so corruption tests must damage it too).
fn derived_entry(p: &Project, deb: &[u8]) -> PathBuf {
    let link = p
        .path("cache/derived")
        .join(format!("plain-deb-v1-{}", sha256_hex(deb)));
    let sha = std::fs::read_to_string(&link).unwrap();
    p.path("cache/sha256").join(sha.trim())
}

/// Locks, then builds into `out`, both expected to succeed.
fn lock_and_build(p: &Project, out: &str) -> serde_json::Value {
    assert!(p.lock().ok, "lock failed");
    assert!(p.build(out, &[]).ok, "build failed");
    manifest(p, out)
}

#[test]
fn good_image_locks_and_builds() {
    let f = fixture(vec![], LAYER);
    let p = &f.p;
    let m = lock_and_build(p, "out");
    let lock = std::fs::read_to_string(p.path("nodeimg.lock")).unwrap();
    assert!(lock.contains("name = \"hello\"") && lock.contains("name = \"libfoo\""));

    let kinds: Vec<&str> = m["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let data = std::fs::read(p.path("out").join(a["path"].as_str().unwrap())).unwrap();
            assert_eq!(a["sha256"], sha256_hex(&data), "{a}");
            assert_eq!(a["size"], data.len() as u64, "{a}");
            a["kind"].as_str().unwrap()
        })
        .collect();
    assert_eq!(kinds, ["rootfs", "verity", "sbom"]);
    assert_eq!(m["name"], "good");
    assert_eq!(m["verity"]["hash_algorithm"], "sha256");

    let mut pkgs: Vec<(String, String, String)> = m["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            let s = |k: &str| x[k].as_str().unwrap().to_string();
            (s("name"), s("sha256"), s("origin"))
        })
        .collect();
    pkgs.sort();
    let want: Vec<(String, String, String)> = [libfoo(), hello()]
        .iter()
        .rev()
        .map(|x| {
            let origin = format!("debian:{SUITE}/{}", x.pool_path());
            (x.name.clone(), sha256_hex(&x.deb), origin)
        })
        .collect();
    assert_eq!(pkgs, want);

    let rootfs = std::fs::File::open(p.path("out/rootfs.squashfs")).unwrap();
    let fs = backhand::FilesystemReader::from_reader(std::io::BufReader::new(rootfs)).unwrap();
    let paths: Vec<String> = fs
        .files()
        .map(|n| n.fullpath.to_string_lossy().into_owned())
        .collect();
    for want in [
        "/usr/bin/hello",
        "/usr/lib/libfoo.so.1",
        "/bin",
        "/etc/passwd",
    ] {
        assert!(paths.iter().any(|x| x == want), "{want} not in {paths:?}");
    }
}

#[test]
fn malformed_toml_names_file_and_line() {
    let f = fixture(vec![], "schema = 1\n[packages]\ninclude = [\"hello\n");
    let before = f.p.snapshot();
    let run = f.p.build("out", &[]);
    assert_rejected(
        &f.p,
        "out",
        &before,
        &run,
        &["layers/base/layer.toml", "line 3"],
    );
}

#[test]
fn unknown_key_names_file_and_key() {
    let f = fixture(vec![], &format!("{LAYER}recommends = true\n"));
    let before = f.p.snapshot();
    let run = f.p.build("out", &[]);
    let needles = ["layers/base/layer.toml", "unknown field `recommends`"];
    assert_rejected(&f.p, "out", &before, &run, &needles);

    let image = "schema = 1\nname = \"good\"\nversion = \"1\"\nlayers = [\"base\"]\nlayer = []\n";
    f.p.write("images/good.toml", image);
    f.p.write("layers/base/layer.toml", LAYER);
    let before = f.p.snapshot();
    let run = f.p.build("out", &[]);
    let needles = ["images/good.toml", "unknown field `layer`"];
    assert_rejected(&f.p, "out", &before, &run, &needles);
}

#[test]
fn unknown_layer_is_named() {
    let f = fixture(vec![], LAYER);
    let image = "schema = 1\nname = \"good\"\nversion = \"1\"\nlayers = [\"base\", \"nope\"]\n";
    f.p.write("images/good.toml", image);
    let before = f.p.snapshot();
    let run = f.p.build("out", &[]);
    let needles = [
        "images/good.toml",
        "unknown layer `nope`",
        "layers/nope/layer.toml",
    ];
    assert_rejected(&f.p, "out", &before, &run, &needles);
}

#[test]
fn unknown_package_fails_the_lock() {
    let layer = "schema = 1\n[packages]\ninclude = [\"hello\", \"no-such-pkg\"]\n";
    let f = fixture(vec![], layer);
    let before = f.p.snapshot();
    let run = f.p.lock();
    assert_rejected(&f.p, "out", &before, &run, &["no-such-pkg", "image `good`"]);
    assert!(!f.p.path("nodeimg.lock").exists());
}

#[test]
fn corrupt_cache_entry_is_fetched_again() {
    let f = fixture(vec![], LAYER);
    let p = &f.p;
    let first = lock_and_build(p, "out");
    let entry = cache_entry(p, &hello().deb);
    let derived = derived_entry(p, &hello().deb);
    let plain = std::fs::read(&derived).unwrap();
    for e in [&entry, &derived] {
        let mut bytes = std::fs::read(e).unwrap();
        bytes[100] ^= 0xff;
        std::fs::write(e, &bytes).unwrap();
    }

    let run = p.build("out", &[]);
    assert!(run.ok, "{}", run.stderr);
    assert!(
        run.stderr.contains("does not match its sha256"),
        "{}",
        run.stderr
    );
    assert_eq!(manifest(p, "out"), first);
    assert_eq!(std::fs::read(&entry).unwrap(), hello().deb);
    assert_eq!(std::fs::read(&derived).unwrap(), plain);
}

#[test]
fn derived_cache_pointing_at_another_package_is_refused() {
    let f = fixture(vec![], LAYER);
    let p = &f.p;
    lock_and_build(p, "out");
    // The link for hello now names libfoo's (intact) decompressed .deb.
    let link = |deb: &[u8]| {
        p.path("cache/derived")
            .join(format!("plain-deb-v1-{}", sha256_hex(deb)))
    };
    std::fs::copy(link(&libfoo().deb), link(&hello().deb)).unwrap();
    let before = p.snapshot();
    let run = p.build("out2", &[]);
    assert_rejected(p, "out2", &before, &run, &["package hello", "libfoo"]);
}

#[test]
fn corrupt_cache_and_changed_mirror_is_a_hash_mismatch() {
    let f = fixture(vec![], LAYER);
    let p = &f.p;
    lock_and_build(p, "out");
    let good = hello();
    let entry = cache_entry(p, &good.deb);
    std::fs::write(&entry, b"garbage").unwrap();
    std::fs::write(derived_entry(p, &good.deb), b"garbage").unwrap();
    let mut other = good.deb.clone();
    let n = other.len();
    other[n - 30] ^= 0xff;
    f.server.put(&good.pool_path(), other.clone());

    let before = p.snapshot();
    let run = p.build("out2", &[]);
    let needles = ["package hello", "sha256", &sha256_hex(&good.deb)];
    assert_rejected(p, "out2", &before, &run, &needles);
    assert!(!entry.exists(), "corrupt entry kept");
    assert!(
        !cache_entry(p, &other).exists(),
        "mismatching download cached"
    );
}

#[test]
fn truncated_deb_fails_extraction_naming_the_package() {
    let full = Pkg::new(
        "trunc",
        None,
        &[Item::Dir("./"), Item::File("./usr/share/t", &[7; 4000])],
    );
    let len = full.deb.len();
    let layer = "schema = 1\n[packages]\ninclude = [\"hello\", \"trunc\"]\n";
    let f = fixture(vec![], layer);
    // Cut in the data member, the control member, debian-binary, the ar magic.
    let cuts = [
        (len - 40, "member data.tar.xz"),
        (len / 3, "member control.tar.gz"),
        (70, "member debian-binary"),
        (5, "the ar archive"),
    ];
    for (cut, member) in cuts {
        let trunc = Pkg {
            deb: full.deb[..cut].to_vec(),
            ..Pkg::new("trunc", None, &[])
        };
        // The index lists the truncated bytes: the hash check passes.
        publish(&f.server, &f.key, &[hello(), libfoo(), trunc]);
        assert!(f.p.lock().ok);
        let before = f.p.snapshot();
        let run = f.p.build("out", &[]);
        assert_rejected(&f.p, "out", &before, &run, &["package trunc", member]);
    }
}

const EVIL_LAYER: &str = "schema = 1\n[packages]\ninclude = [\"hello\", \"evil\"]\n";

#[test]
fn dotdot_in_data_archive_is_refused() {
    let items = [
        Item::Dir("./"),
        Item::File("../x", b"escaped"),
        Item::File("./usr/../../y", b"escaped"),
    ];
    let f = fixture(vec![evil(&items)], EVIL_LAYER);
    assert!(f.p.lock().ok);
    let before = f.p.snapshot();
    let run = f.p.build("out", &[]);
    assert_rejected(&f.p, "out", &before, &run, &["package evil", "\"../x\""]);
    assert!(!f.p.path("x").exists());
}

#[test]
fn symlink_escaping_the_root_is_refused() {
    let items = [
        Item::Dir("./"),
        Item::Dir("./usr/"),
        Item::Symlink("./usr/evil", "../../../../etc"),
        Item::File("./usr/evil/passwd", b"root::0:0::/:/bin/sh\n"),
    ];
    let f = fixture(vec![evil(&items)], EVIL_LAYER);
    assert!(f.p.lock().ok);
    let before = f.p.snapshot();
    let run = f.p.build("out", &[]);
    let needles = ["package evil", "usr/evil", "../../../../etc"];
    assert_rejected(&f.p, "out", &before, &run, &needles);
}

#[test]
fn stale_lock_is_refused_until_updated() {
    let extra = Pkg::new("extra", None, &[Item::Dir("./")]);
    let f = fixture(vec![extra], LAYER);
    let p = &f.p;
    assert!(p.lock().ok);
    let lock = std::fs::read(p.path("nodeimg.lock")).unwrap();
    p.write(
        "layers/base/layer.toml",
        "schema = 1\n[packages]\ninclude = [\"hello\", \"extra\"]\n",
    );
    let before = p.snapshot();
    let run = p.build("out", &[]);
    let needles = ["locked from different specs", "extra", "--update-lock"];
    assert_rejected(p, "out", &before, &run, &needles);

    let run = p.build("out", &["--update-lock"]);
    assert!(run.ok, "{}", run.stderr);
    assert_ne!(std::fs::read(p.path("nodeimg.lock")).unwrap(), lock);
    let m = manifest(p, "out");
    let names: Vec<&str> = m["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"extra"), "{names:?}");
}

#[test]
fn inrelease_signed_by_an_unknown_key_fails_the_lock() {
    let f = fixture(vec![], LAYER);
    let stranger = archive_key(2);
    publish(&f.server, &stranger, &[hello(), libfoo()]);
    let before = f.p.snapshot();
    let run = f.p.lock();
    let needles = ["InRelease", "failed verification", "not in the keyring"];
    assert_rejected(&f.p, "out", &before, &run, &needles);
    assert!(
        !f.p.path("cache").exists(),
        "cache written before verification"
    );

    // The same archive signed by the trusted key locks.
    publish(&f.server, &f.key, &[hello(), libfoo()]);
    assert!(f.p.lock().ok);
}

#[test]
fn packages_index_not_matching_inrelease_fails_the_lock() {
    let f = fixture(vec![], LAYER);
    let plain = format!("dists/{SUITE}/{PACKAGES_XZ}");
    let good = f.server.get(&plain);
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    let by_hash = format!(
        "dists/{SUITE}/main/binary-amd64/by-hash/SHA256/{}",
        sha256_hex(&good)
    );
    f.server.put(&plain, bad.clone());
    f.server.put(&by_hash, bad.clone());
    let before = f.p.snapshot();
    let run = f.p.lock();
    let needles = ["Packages.xz", "sha256", &sha256_hex(&good)];
    assert_rejected(&f.p, "out", &before, &run, &needles);
    assert!(!cache_entry(&f.p, &bad).exists(), "bad index cached");
    assert!(!f.p.path("nodeimg.lock").exists());
}

#[test]
fn dynamically_linked_agent_is_refused_naming_it() {
    // PID 1 runs before any library path exists; a dynamic agent would
    // only fail at boot.
    let f = fixture(vec![], LAYER);
    let p = &f.p;
    assert!(p.lock().ok, "lock failed");
    let before = p.snapshot();
    let run = p.build("out", &["--agent", "/bin/true"]);
    assert_rejected(
        p,
        "out",
        &before,
        &run,
        &["/bin/true", "dynamically linked", "make agent"],
    );
}
