use super::*;

fn source(suite: &str, archive: Archive) -> LockSource {
    LockSource {
        suite: suite.into(),
        archive,
        codename: suite.into(),
        date: "Sat, 01 Mar 2025 12:00:00 UTC".into(),
        inrelease_sha256: hash::sha256_hex(suite.as_bytes()),
        indexes: vec![LockedIndex {
            path: "main/binary-amd64/Packages.xz".into(),
            size: 1,
            sha256: hash::sha256_hex(b"index"),
        }],
    }
}

fn sample() -> Lock {
    Lock {
        sources: vec![
            source("trixie", Archive::Main),
            source("trixie-updates", Archive::Main),
            source("trixie-security", Archive::Security),
        ],
        packages: vec![LockedPackage {
            name: "libc6".into(),
            version: "2.41-12".into(),
            suite: "trixie".into(),
            architecture: "amd64".into(),
            filename: "pool/main/g/glibc/libc6_2.41-12_amd64.deb".into(),
            size: 3,
            sha256: hash::sha256_hex(b"deb"),
            ..LockedPackage::default()
        }],
        ..Lock::default()
    }
}

#[test]
fn locking_some_images_keeps_the_others_from_the_same_archive() {
    let image = |pkgs: &[&str]| LockedImage {
        packages: pkgs.iter().map(|p| p.to_string()).collect(),
        ..LockedImage::default()
    };
    let mut previous = sample();
    previous.images.insert("worker".into(), image(&["libc6"]));
    previous.images.insert("k8s".into(), image(&["libc6"]));
    let mut fresh = sample();
    fresh.packages[0].name = "mount".into();
    fresh.images.insert("k8s".into(), image(&["mount"]));
    let path = Path::new("nodeimg.lock");
    let kept = fresh.keep_others(&previous, path).unwrap();
    assert_eq!(kept, ["worker"]);
    // the re-locked image is the new one; the other, and its package, stay
    assert_eq!(fresh.images["k8s"].packages, ["mount"]);
    assert_eq!(fresh.images["worker"].packages, ["libc6"]);
    let names: Vec<&str> = fresh.packages.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["mount", "libc6"]);
    // another archive state: refused, naming the suite that moved and the way out
    let mut moved = sample();
    moved.sources[2].inrelease_sha256 = "other".into();
    let e = moved.keep_others(&previous, path).unwrap_err().to_string();
    assert!(e.contains("lock every image together"), "{e}");
    assert!(e.contains("suite trixie-security"), "{e}");
    // a pocket read by one lock only is a move too
    let mut fewer = sample();
    fewer.sources.pop();
    let e = fewer.keep_others(&previous, path).unwrap_err().to_string();
    assert!(
        e.contains("suite trixie-security") && e.contains("(not read)"),
        "{e}"
    );
    // but with nothing else to keep, the archive may have moved
    moved.images = previous.images.clone();
    assert!(moved.keep_others(&previous, path).unwrap().is_empty());
}

#[test]
fn round_trips_and_catches_hand_edits() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("nodeimg.lock");
    let mut lock = sample();
    let mut security = lock.packages[0].clone();
    security.name = "openssl".into();
    security.version = "3.5.1-1+deb13u1".into();
    security.suite = "trixie-security".into();
    lock.packages.push(security);
    lock.write(&path).unwrap();
    let read = Lock::read(&path).unwrap();
    assert_eq!(read, lock);
    assert_eq!(read.version, LOCK_VERSION);
    assert_eq!(read.base().unwrap().suite, "trixie");
    assert_eq!(
        read.source("trixie-security").unwrap().archive,
        Archive::Security
    );

    let text = std::fs::read_to_string(&path).unwrap();
    // every source is a [[source]] with its archive; each package names its suite
    assert_eq!(text.matches("\n[[source]]\n").count(), 3, "{text}");
    for line in [
        "version = 2\n",
        "suite = \"trixie-security\"\narchive = \"security\"\n",
        "suite = \"trixie-updates\"\narchive = \"main\"\n",
        "version = \"3.5.1-1+deb13u1\"\nsuite = \"trixie-security\"\n",
    ] {
        assert!(text.contains(line), "{line:?} not in\n{text}");
    }
    std::fs::write(&path, text.replace("2.41-12\"", "2.41-13\"")).unwrap();
    assert!(matches!(Lock::read(&path), Err(LockError::Checksum { .. })));
}

#[test]
fn rejects_bad_hashes_and_paths_even_with_a_valid_checksum() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("nodeimg.lock");
    for (field, bad) in [("sha256", "zz"), ("filename", "../../etc/passwd.deb")] {
        let mut lock = sample();
        match field {
            "sha256" => lock.packages[0].sha256 = bad.into(),
            _ => lock.packages[0].filename = bad.into(),
        }
        lock.write(&path).unwrap();
        let e = Lock::read(&path).unwrap_err();
        assert!(
            matches!(e, LockError::BadPackage { ref package, .. } if package == "libc6"),
            "{field}: {e}"
        );
    }
}

#[test]
fn a_lock_of_another_version_is_refused_naming_the_way_out() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("nodeimg.lock");
    // version 1: one [source] table, packages without a suite
    let v1 = "version = 1\nchecksum = \"00\"\n\n[source]\nsuite = \"trixie\"\n\
              codename = \"trixie\"\ndate = \"Sat, 01 Mar 2025 12:00:00 UTC\"\n\
              inrelease_sha256 = \"aa\"\n\n[[source.indexes]]\npath = \"main/binary-amd64/Packages.xz\"\n\
              size = 1\nsha256 = \"bb\"\n";
    std::fs::write(&path, v1).unwrap();
    let e = Lock::read(&path).unwrap_err();
    assert!(matches!(e, LockError::Outdated { found: 1, .. }), "{e:?}");
    let msg = e.to_string();
    for needle in [
        path.display().to_string().as_str(),
        "lock version 1",
        "run `nodeimg lock`",
    ] {
        assert!(msg.contains(needle), "{needle:?} not in {msg}");
    }
    // a newer one asks for a newer nodeimg
    std::fs::write(&path, "version = 3\n[[source]]\nfuture = true\n").unwrap();
    let e = Lock::read(&path).unwrap_err();
    assert!(matches!(e, LockError::Version { found: 3, .. }), "{e:?}");
    // no version at all is a parse error naming the file
    std::fs::write(&path, "checksum = \"00\"\n").unwrap();
    let e = Lock::read(&path).unwrap_err().to_string();
    assert!(e.contains("version") && e.contains("nodeimg.lock"), "{e}");
}

#[test]
fn a_package_from_a_suite_the_lock_did_not_read_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("nodeimg.lock");
    let mut lock = sample();
    lock.packages[0].suite = "trixie-backports".into();
    lock.write(&path).unwrap();
    let e = Lock::read(&path).unwrap_err().to_string();
    assert!(
        e.contains("libc6") && e.contains("`trixie-backports` is not one of"),
        "{e}"
    );
    let mut lock = sample();
    lock.sources.push(source("trixie", Archive::Main));
    lock.write(&path).unwrap();
    let e = Lock::read(&path).unwrap_err();
    assert!(
        matches!(e, LockError::DuplicateSource { ref suite, .. } if suite == "trixie"),
        "{e}"
    );
}

#[test]
fn inputs_digest_ignores_order_but_not_content() {
    let a = Inputs {
        suite: "trixie".into(),
        components: vec!["main".into()],
        pockets: [Pocket::Updates, Pocket::Security].into(),
        arch: "amd64".into(),
        roots: ["b".to_string(), "a".to_string()].into(),
        excludes: Default::default(),
        kernel: None,
        uefi: None,
    };
    let mut b = a.clone();
    b.roots = ["a".to_string(), "b".to_string()].into();
    assert_eq!(a.digest(), b.digest());
    b.roots.insert("c".into());
    assert_ne!(a.digest(), b.digest());
    let mut c = a.clone();
    c.pockets.remove(&Pocket::Security);
    assert_ne!(a.digest(), c.digest());
}
