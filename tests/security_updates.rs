//! Security and stable updates through the real `nodeimg` binary (issue 13
//! §2): the image locks from `trixie`, `trixie-updates` (main mirror) and
//! `trixie-security` (a second server, as Debian's security archive is),
//! each InRelease verified; the highest version wins across suites and the
//! lock records its suite; the build fetches each .deb from the mirror of
//! its suite; `lock --check` says when a newer version is published.

#![allow(clippy::unwrap_used)]

mod common;

use common::{
    archive_key, changed, public_key, publish_suite, publish_suite_with, sha256_hex, Item, Pkg,
    Project, Server, DATE, SECURITY, SUITE, UPDATES,
};
use pgp::composed::SignedSecretKey;

const LAYER: &str = "schema = 1\n[packages]\ninclude = [\"hello\"]\n";
/// The security suite's InRelease is newer than the base suite's.
const SECURITY_DATE: &str = "Mon, 10 Mar 2025 08:00:00 UTC";
const SECURITY_EPOCH: u64 = 1_741_593_600;
const SECURITY_POOL: &str = "pool/updates/main";

fn hello(version: &str) -> Pkg {
    Pkg::versioned(
        "hello",
        version,
        Some("libfoo (>= 1.0)"),
        &[
            Item::Dir("./"),
            Item::Dir("./usr/"),
            Item::Dir("./usr/bin/"),
            Item::File("./usr/bin/hello", b"\x7fELF hello, world\n"),
        ],
    )
}

/// libfoo at `version`; its library's bytes say which version it is.
fn libfoo(version: &str) -> Pkg {
    let lib = format!("libfoo {version}\n");
    Pkg::versioned(
        "libfoo",
        version,
        None,
        &[
            Item::Dir("./"),
            Item::Dir("./usr/"),
            Item::Dir("./usr/lib/"),
            Item::File("./usr/lib/libfoo.so.1", lib.as_bytes()),
        ],
    )
}

/// The main mirror (`trixie`, `trixie-updates`), the security mirror
/// (`trixie-security`), one archive key, and a project using both.
struct Fixture {
    main: Server,
    security: Server,
    key: SignedSecretKey,
    p: Project,
}

/// trixie: hello 1.0-1, libfoo 1.0-1. trixie-updates: hello 1.0-1 again
/// (a tie, which the base suite keeps). trixie-security: libfoo
/// 1.0-1+deb13u1 under the security pool.
fn fixture() -> Fixture {
    let main = Server::start();
    let security = Server::start();
    let key = archive_key(1);
    publish_suite(&main, &key, SUITE, DATE, &[hello("1.0-1"), libfoo("1.0-1")]);
    publish_suite(&main, &key, UPDATES, DATE, &[hello("1.0-1")]);
    let fixed = libfoo("1.0-1+deb13u1").in_pool(SECURITY_POOL);
    publish_suite(&security, &key, SECURITY, SECURITY_DATE, &[fixed]);
    let mut p = Project::new(&main.url(), &public_key(&key));
    p.security_mirror = security.url();
    p.image(&[("base", LAYER)]);
    Fixture {
        main,
        security,
        key,
        p,
    }
}

fn lock_text(p: &Project) -> String {
    std::fs::read_to_string(p.path("nodeimg.lock")).unwrap()
}

/// The `[[package]]` entry of `name` in the lock's text.
fn locked_entry(text: &str, name: &str) -> String {
    text.split("[[package]]")
        .find(|e| e.contains(&format!("name = \"{name}\"\n")))
        .unwrap_or_else(|| panic!("no [[package]] {name} in\n{text}"))
        .to_string()
}

fn check(p: &Project) -> common::Run {
    p.run("lock", &["--check", "images/good.toml"])
}

#[test]
fn the_highest_version_wins_across_suites_and_is_fetched_from_its_mirror() {
    let f = fixture();
    let p = &f.p;
    let run = p.lock();
    assert!(run.ok, "{}", run.stderr);

    // every suite is a source, with its archive; each package names its suite
    let text = lock_text(p);
    assert!(text.contains("version = 2\n"), "{text}");
    for (suite, archive) in [(SUITE, "main"), (UPDATES, "main"), (SECURITY, "security")] {
        let source = format!("[[source]]\nsuite = \"{suite}\"\narchive = \"{archive}\"\n");
        assert!(text.contains(&source), "{source:?} not in\n{text}");
    }
    let foo = locked_entry(&text, "libfoo");
    assert!(
        foo.contains("version = \"1.0-1+deb13u1\"\nsuite = \"trixie-security\"\n"),
        "{foo}"
    );
    assert!(
        foo.contains("filename = \"pool/updates/main/l/libfoo/"),
        "{foo}"
    );
    // the same version in trixie and trixie-updates: the base suite keeps it
    let hello_entry = locked_entry(&text, "hello");
    assert!(
        hello_entry.contains("suite = \"trixie\"\n"),
        "{hello_entry}"
    );

    // nothing newer than what was locked
    let run = check(p);
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("good: current"), "{}", run.stdout);

    // the build takes libfoo from the security mirror, which alone has it
    let fixed = libfoo("1.0-1+deb13u1").in_pool(SECURITY_POOL);
    let run = p.build("out", &[]);
    assert!(run.ok, "{}", run.stderr);
    assert!(f.security.requested(&fixed.pool_path()));
    assert!(!f.main.requested(&fixed.pool_path()));
    assert!(f.main.requested(&hello("1.0-1").pool_path()));
    let rootfs = std::fs::File::open(p.path("out/rootfs.squashfs")).unwrap();
    let fs = backhand::FilesystemReader::from_reader(std::io::BufReader::new(rootfs)).unwrap();
    let node = fs
        .files()
        .find(|n| n.fullpath.to_string_lossy() == "/usr/lib/libfoo.so.1")
        .unwrap();
    let backhand::InnerNode::File(file) = &node.inner else {
        panic!("libfoo.so.1 is not a file");
    };
    let mut lib = Vec::new();
    std::io::Read::read_to_end(&mut fs.file(file).reader(), &mut lib).unwrap();
    assert_eq!(lib, b"libfoo 1.0-1+deb13u1\n");

    // the manifest and the SBOM name the suite of each package
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.path("out/manifest.json")).unwrap()).unwrap();
    let origin = |name: &str| {
        m["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == name)
            .unwrap()["origin"]
            .clone()
    };
    assert_eq!(
        origin("libfoo"),
        format!("debian:{SECURITY}/{}", fixed.pool_path())
    );
    assert_eq!(
        origin("hello"),
        format!("debian:{SUITE}/{}", hello("1.0-1").pool_path())
    );
    // file times from the newest InRelease the lock records
    assert_eq!(m["build"]["source_date_epoch"], SECURITY_EPOCH);
    let sbom = std::fs::read_to_string(p.path("out/sbom.spdx.json")).unwrap();
    let purl = "pkg:deb/debian/libfoo@1.0-1%2Bdeb13u1?arch=amd64&distro=trixie-security";
    assert!(sbom.contains(purl), "{purl} not in the SBOM");
    assert!(sbom.contains(&sha256_hex(&fixed.deb)));
}

#[test]
fn lock_check_reports_newer_versions_and_their_suite_and_writes_nothing() {
    let f = fixture();
    let p = &f.p;
    assert!(p.lock().ok);
    let locked = lock_text(p);

    // a newer security fix, and a stable update of hello
    let newer = libfoo("1.0-1+deb13u2").in_pool(SECURITY_POOL);
    publish_suite(&f.security, &f.key, SECURITY, SECURITY_DATE, &[newer]);
    publish_suite(&f.main, &f.key, UPDATES, DATE, &[hello("1.0-2")]);
    let before = p.snapshot();
    let run = check(p);
    assert_eq!(run.code, Some(3), "{}{}", run.stdout, run.stderr);
    for line in [
        "good: 2 newer, 2 changes",
        "  hello 1.0-1 (trixie) -> 1.0-2 (trixie-updates)",
        "  libfoo 1.0-1+deb13u1 (trixie-security) -> 1.0-1+deb13u2 (trixie-security)",
        "trixie-security (security archive): Mon, 10 Mar 2025 08:00:00 UTC, changed since the lock",
        "run `nodeimg lock`",
    ] {
        assert!(run.stdout.contains(line), "{line:?} not in\n{}", run.stdout);
    }
    assert!(
        changed(&before, &p.snapshot()).is_empty(),
        "lock --check wrote"
    );
    assert_eq!(lock_text(p), locked);

    // locking takes them; then the lock is current again
    assert!(p.lock().ok);
    let text = lock_text(p);
    assert!(locked_entry(&text, "libfoo").contains("version = \"1.0-1+deb13u2\""));
    assert!(locked_entry(&text, "hello").contains("suite = \"trixie-updates\""));
    assert_eq!(check(p).code, Some(0));
}

#[test]
fn an_unverifiable_security_inrelease_fails_the_lock_naming_the_suite() {
    let f = fixture();
    let p = &f.p;
    let fixed = libfoo("1.0-1+deb13u1").in_pool(SECURITY_POOL);
    let stranger = archive_key(2);
    publish_suite(&f.security, &stranger, SECURITY, SECURITY_DATE, &[fixed]);
    let before = p.snapshot();
    let run = p.lock();
    assert!(!run.ok);
    for needle in [
        "InRelease of suite trixie-security failed verification",
        "not in the keyring",
    ] {
        assert!(
            run.stderr.contains(needle),
            "{needle:?} not in\n{}",
            run.stderr
        );
    }
    assert!(
        changed(&before, &p.snapshot()).is_empty(),
        "written: no lock expected"
    );
    // every InRelease is verified before any index is read
    assert!(
        !p.path("cache").exists(),
        "cache written before verification"
    );

    // another suite's InRelease, validly signed, does not stand in for it
    let base = f.main.get(&format!("dists/{SUITE}/InRelease"));
    f.security.put(&format!("dists/{SECURITY}/InRelease"), base);
    let run = p.lock();
    assert!(!run.ok);
    let needle = "InRelease served for suite trixie-security is signed for suite `trixie`";
    assert!(run.stderr.contains(needle), "{}", run.stderr);
    assert!(!p.path("nodeimg.lock").exists());

    // an image without the security pocket does not read it at all
    p.write(
        "images/good.toml",
        "schema = 1\nname = \"good\"\nversion = \"1.0\"\nlayers = [\"base\"]\n\
         [debian]\npockets = [\"updates\"]\n",
    );
    let run = p.lock();
    assert!(run.ok, "{}", run.stderr);
    let text = lock_text(p);
    assert!(!text.contains(SECURITY), "{text}");
    assert!(locked_entry(&text, "libfoo").contains("version = \"1.0-1\""));
}

#[test]
fn a_lock_of_the_old_format_is_refused_naming_the_way_out() {
    let f = fixture();
    let p = &f.p;
    p.write(
        "nodeimg.lock",
        "version = 1\nchecksum = \"00\"\n\n[source]\nsuite = \"trixie\"\n",
    );
    let before = p.snapshot();
    for run in [p.build("out", &[]), check(p)] {
        assert!(!run.ok);
        assert_ne!(run.code, Some(3));
        for needle in ["nodeimg.lock", "lock version 1", "run `nodeimg lock`"] {
            assert!(
                run.stderr.contains(needle),
                "{needle:?} not in\n{}",
                run.stderr
            );
        }
    }
    // locking some images would lose the others with it: refused
    let run = p.lock();
    assert!(!run.ok);
    assert!(run.stderr.contains("lock every image"), "{}", run.stderr);
    assert!(changed(&before, &p.snapshot()).is_empty());
    // `nodeimg lock` (every image) replaces it
    let run = p.run("lock", &[]);
    assert!(run.ok, "{}", run.stderr);
    assert!(lock_text(p).contains("version = 2\n"));
}

#[test]
fn a_security_inrelease_past_its_valid_until_fails_the_lock() {
    let f = fixture();
    let p = &f.p;
    let fixed = || libfoo("1.0-1+deb13u1").in_pool(SECURITY_POOL);
    // an old copy, validly signed: a stale mirror, or one replayed to hold
    // a fix back
    let expired = "Valid-Until: Mon, 17 Mar 2025 08:00:00 UTC\n";
    publish_suite_with(
        &f.security,
        &f.key,
        SECURITY,
        SECURITY_DATE,
        expired,
        &[fixed()],
    );
    let before = p.snapshot();
    let run = p.lock();
    assert!(!run.ok);
    let needle = "InRelease of suite trixie-security expired at its Valid-Until, \
                  Mon, 17 Mar 2025 08:00:00 UTC";
    assert!(run.stderr.contains(needle), "{}", run.stderr);
    assert!(changed(&before, &p.snapshot()).is_empty(), "written");
    // a date that does not read is refused, naming the field
    let garbled = "Valid-Until: next week\n";
    publish_suite_with(
        &f.security,
        &f.key,
        SECURITY,
        SECURITY_DATE,
        garbled,
        &[fixed()],
    );
    let run = p.lock();
    assert!(!run.ok);
    assert!(
        run.stderr.contains("Valid-Until \"next week\""),
        "{}",
        run.stderr
    );
    // a fresh copy locks
    let fresh = "Valid-Until: Fri, 01 Jan 2100 00:00:00 UTC\n";
    publish_suite_with(
        &f.security,
        &f.key,
        SECURITY,
        SECURITY_DATE,
        fresh,
        &[fixed()],
    );
    let run = p.lock();
    assert!(run.ok, "{}", run.stderr);
    assert!(locked_entry(&lock_text(p), "libfoo").contains("1.0-1+deb13u1"));
}
