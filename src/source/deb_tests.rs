use super::*;
use std::io::Write;

/// One data-archive entry to build; paths are written verbatim (the tar
/// crate's own setters refuse `..`).
pub(super) enum T<'a> {
    Dir(&'a str, u32),
    File(&'a str, &'a [u8], u32),
    Owned(&'a str, &'a [u8], u32, u32, u32),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
    Char(&'a str, u32, u32),
    Fifo(&'a str),
}

pub(super) fn tar_bytes(entries: &[T]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        let (path, data, ty, mode, uid): (&str, &[u8], _, u32, u32) = match *e {
            T::Dir(p, m) => (p, b"", tar::EntryType::Directory, m, 0),
            T::File(p, d, m) => (p, d, tar::EntryType::Regular, m, 0),
            T::Owned(p, d, m, uid, _) => (p, d, tar::EntryType::Regular, m, uid),
            T::Symlink(p, t) | T::HardLink(p, t) => {
                h.set_link_name_literal(t).expect("link name");
                let ty = match e {
                    T::Symlink(..) => tar::EntryType::Symlink,
                    _ => tar::EntryType::Link,
                };
                (p, b"", ty, 0o777, 0)
            }
            T::Char(p, major, minor) => {
                h.set_device_major(major).expect("major");
                h.set_device_minor(minor).expect("minor");
                (p, b"", tar::EntryType::Char, 0o666, 0)
            }
            T::Fifo(p) => (p, b"", tar::EntryType::Fifo, 0o600, 0),
        };
        let name = &mut h.as_old_mut().name;
        name.fill(0);
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_entry_type(ty);
        h.set_mode(mode);
        h.set_uid(uid.into());
        h.set_gid(if let T::Owned(.., gid) = *e {
            gid.into()
        } else {
            0
        });
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        h.set_cksum();
        builder.append(&h, data).expect("append");
    }
    builder.into_inner().expect("finish tar")
}

pub(super) fn compress(suffix: &str, data: &[u8]) -> Vec<u8> {
    match suffix {
        ".xz" => {
            let mut w = liblzma::write::XzEncoder::new(Vec::new(), 1);
            w.write_all(data).expect("xz");
            w.finish().expect("xz finish")
        }
        ".zst" => zstd::stream::encode_all(data, 3).expect("zstd"),
        ".gz" => {
            let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            w.write_all(data).expect("gz");
            w.finish().expect("gz finish")
        }
        _ => data.to_vec(),
    }
}

const CONTROL: &[u8] = b"Package: hello\nVersion: 1.0-1\nArchitecture: amd64\nDescription: test\n";

pub(super) fn control_tar() -> Vec<u8> {
    tar_bytes(&[
        T::Dir("./", 0o755),
        T::File("./control", CONTROL, 0o644),
        T::File(
            "./conffiles",
            b"/etc/hello.conf\nremove-on-upgrade /etc/old.conf\n",
            0o644,
        ),
        T::File("./postinst", b"#!/bin/sh\nexit 1\n", 0o755),
        T::File("./md5sums", b"", 0o644),
    ])
}

pub(super) fn ar_bytes(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut ar = ar::Builder::new(Vec::new());
    for (name, data) in members {
        let header = ar::Header::new(name.as_bytes().to_vec(), data.len() as u64);
        ar.append(&header, *data).expect("ar append");
    }
    ar.into_inner().expect("ar finish")
}

/// A .deb whose data member is `data.tar<suffix>` holding `entries`.
pub(super) fn deb(suffix: &str, entries: &[T]) -> Vec<u8> {
    let control = compress(".xz", &control_tar());
    let data = compress(suffix, &tar_bytes(entries));
    ar_bytes(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar.xz", &control),
        (&format!("data.tar{suffix}"), &data),
    ])
}

pub(super) fn unpack(bytes: &[u8]) -> Result<(Tree, DebInfo), DebError> {
    let mut tree = Tree::new();
    let info = unpack_into("hello", bytes, &mut tree, &mut BTreeMap::new())?;
    Ok((tree, info))
}

fn unpack_entries(entries: &[T]) -> Result<Tree, DebError> {
    unpack(&deb("", entries)).map(|(tree, _)| tree)
}

fn kind<'a>(tree: &'a Tree, path: &str) -> Option<&'a Kind> {
    tree.get(path).map(|e| &e.kind)
}

fn file(data: &[u8]) -> Kind {
    Kind::File(data.to_vec().into())
}

#[test]
fn good_deb_unpacks_with_each_compressor() {
    let entries = [
        T::Dir("./", 0o755),
        T::Dir("./usr/", 0o755),
        T::Dir("./usr/bin/", 0o755),
        T::File("./usr/bin/hello", b"\x7fELF", 0o755),
        T::Owned("./usr/bin/su-hello", b"suid", 0o104755, 0, 0),
        T::Symlink("./usr/bin/hi", "hello"),
        T::Symlink("./etc/alternatives/hello", "/usr/bin/hello"),
        T::Owned("./etc/hello.conf", b"x=1\n", 0o640, 0, 42),
        T::Dir("./var/tmp/", 0o1777),
        T::File("./usr/share/doc/hello/copyright", b"GPL-2+\n", 0o644),
        T::Char("./usr/lib/hello/null", 1, 3),
        T::Fifo("./usr/lib/hello/fifo"),
    ];
    for suffix in ["", ".xz", ".zst", ".gz"] {
        let (tree, info) = unpack(&deb(suffix, &entries)).expect(suffix);
        let hello = tree.get("usr/bin/hello").expect("hello");
        assert_eq!(
            (&hello.kind, hello.mode),
            (&file(b"\x7fELF"), 0o755),
            "{suffix}"
        );
        assert_eq!(tree.get("usr/bin/su-hello").map(|e| e.mode), Some(0o4755));
        assert_eq!(
            kind(&tree, "usr/bin/hi"),
            Some(&Kind::Symlink("hello".into()))
        );
        assert_eq!(
            kind(&tree, "etc/alternatives/hello"),
            Some(&Kind::Symlink("/usr/bin/hello".into()))
        );
        let conf = tree.get("etc/hello.conf").expect("conf");
        assert_eq!((conf.mode, conf.uid, conf.gid), (0o640, 0, 42));
        assert_eq!(
            tree.get("var/tmp").map(|e| (&e.kind, e.mode)),
            Some((&Kind::Dir, 0o1777))
        );
        assert_eq!(
            kind(&tree, "usr/lib/hello/null"),
            Some(&Kind::CharDevice { major: 1, minor: 3 })
        );
        assert_eq!(kind(&tree, "usr/lib/hello/fifo"), Some(&Kind::Fifo));
        assert_eq!(info.package, "hello");
        assert_eq!(info.version, "1.0-1");
        assert_eq!(info.control.as_bytes(), CONTROL);
        assert_eq!(info.conffiles, ["etc/hello.conf"]);
        assert_eq!(info.maintainer_scripts, ["postinst"]);
        assert_eq!(info.copyright.as_deref(), Some("GPL-2+\n"));
        assert!(info.paths.contains(&"usr/bin/hello".to_string()));
        assert!(info.conflicts.is_empty());
    }
}

#[test]
fn truncated_deb_is_an_error_naming_package_and_member() {
    let entries = [T::File("./usr/bin/hello", &[7u8; 5000], 0o755)];
    // cut inside the file's data, and inside the xz stream's trailer
    for (suffix, cut) in [("", 1500), (".xz", 10)] {
        let full = deb(suffix, &entries);
        let err = unpack(&full[..full.len() - cut]).expect_err(suffix);
        let msg = err.to_string();
        assert!(
            msg.contains("package hello") && msg.contains(&format!("data.tar{suffix}")),
            "{msg}"
        );
        assert!(matches!(err, DebError::Member { .. }), "{err:?}");
        // cut anywhere else: never a success
        for cut in [0, 7, 30, 68, 100, full.len() / 2, full.len() - 1] {
            assert!(unpack(&full[..cut]).is_err(), "{suffix} cut at {cut}");
        }
    }
}

#[test]
fn missing_member_bad_compressor_bad_version_and_corrupt_tar() {
    let control = compress(".xz", &control_tar());
    let data = tar_bytes(&[T::File("./x", b"x", 0o644)]);
    let err = unpack(&ar_bytes(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar.xz", &control),
    ]))
    .expect_err("no data");
    assert_eq!(err.to_string(), "package hello: member data.tar is missing");

    let err = unpack(&ar_bytes(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar.xz", &control),
        ("data.tar.bz2", &data),
    ]))
    .expect_err("bz2");
    assert_eq!(
        err.to_string(),
        "package hello: member data.tar.bz2 uses an unsupported compression"
    );

    let err = unpack(&ar_bytes(&[
        ("debian-binary", b"3.0\n"),
        ("control.tar.xz", &control),
    ]))
    .expect_err("version");
    assert!(matches!(err, DebError::FormatVersion { ref found, .. } if found == "3.0"));

    let err = unpack(&ar_bytes(&[
        ("debian-binary", b"2.0\n"),
        ("data.tar", &data),
        ("control.tar.xz", &control),
    ]))
    .expect_err("order");
    assert!(matches!(err, DebError::MemberOrder { ref member, .. } if member == "data.tar"));

    let mut corrupt = data.clone();
    corrupt[100] ^= 0xff; // inside the first header: checksum mismatch
    let err = unpack(&ar_bytes(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar.xz", &control),
        ("data.tar", &corrupt),
    ]))
    .expect_err("corrupt");
    assert!(
        matches!(err, DebError::Member { ref member, .. } if member == "data.tar"),
        "{err:?}"
    );

    let mut bad_xz = compress(".xz", &data);
    let mid = bad_xz.len() / 2;
    bad_xz[mid] ^= 0x55;
    let err = unpack(&ar_bytes(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar.xz", &control),
        ("data.tar.xz", &bad_xz),
    ]))
    .expect_err("corrupt xz");
    assert!(
        matches!(err, DebError::Member { ref member, .. } if member == "data.tar.xz"),
        "{err:?}"
    );
}

#[test]
fn dotdot_anywhere_is_an_error_naming_the_path() {
    for path in ["../x", "./usr/../../x", "usr/share/../bin/x"] {
        let err = unpack_entries(&[T::File(path, b"x", 0o644)]).expect_err(path);
        assert_eq!(
            err.to_string(),
            format!("package hello: path {path:?} climbs out of the image root")
        );
    }
    let err = unpack_entries(&[T::File("./a", b"x", 0o644), T::HardLink("./b", "../a")])
        .expect_err("hard link target");
    assert!(matches!(err, DebError::PathEscape { ref path, .. } if path == "../a"));
}

#[test]
fn absolute_entry_path_is_made_relative() {
    let tree = unpack_entries(&[T::File("/usr/share/x", b"x", 0o644)]).expect("unpack");
    assert_eq!(kind(&tree, "usr/share/x"), Some(&file(b"x")));
}

#[test]
fn symlink_climbing_above_root_is_an_error() {
    let err = unpack_entries(&[T::Symlink("./usr/evil", "../../../etc")]).expect_err("evil");
    assert_eq!(
        err.to_string(),
        "package hello: symlink usr/evil -> \"../../../etc\" points above the image root"
    );
    // exactly reaching the root, or absolute, is fine
    let tree = unpack_entries(&[
        T::Symlink("./usr/share/up", "../../etc"),
        T::Symlink("./usr/share/abs", "/../etc/passwd"),
    ]);
    assert!(
        matches!(tree, Err(DebError::SymlinkEscape { ref path, .. }) if path == "usr/share/abs")
    );
    let tree = unpack_entries(&[T::Symlink("./usr/share/up", "../../etc")]).expect("up");
    assert_eq!(
        kind(&tree, "usr/share/up"),
        Some(&Kind::Symlink("../../etc".into()))
    );
}

/// Choice: a path through a symlink is resolved inside the root, the way
/// it resolves in the booted image, rather than rejected.
#[test]
fn path_through_symlink_to_root_lands_inside_the_tree() {
    let tree = unpack_entries(&[
        T::Symlink("./usr/lnk", "/"),
        T::File("./usr/lnk/etc/x", b"x", 0o600),
        T::Symlink("./usr/rel", ".."),
        T::File("./usr/rel/etc/y", b"y", 0o600),
    ])
    .expect("unpack");
    assert_eq!(kind(&tree, "etc/x"), Some(&file(b"x")));
    assert_eq!(kind(&tree, "etc/y"), Some(&file(b"y")));
    assert_eq!(kind(&tree, "usr/lnk"), Some(&Kind::Symlink("/".into())));
    assert!(tree.get("usr/lnk/etc/x").is_none());
}

#[test]
fn chained_symlinks_climbing_above_root_or_looping_are_errors() {
    // each link stays inside on its own; `d/..` resolves to `/..`
    let err = unpack_entries(&[
        T::Symlink("./usr/x", ".."),
        T::Symlink("./d", "usr/x"),
        T::Symlink("./e", "d/.."),
        T::File("./e/passwd", b"x", 0o644),
    ])
    .expect_err("escape");
    assert!(
        matches!(err, DebError::ResolveEscape { ref path, .. } if path == "./e/passwd"),
        "{err:?}"
    );

    let err = unpack_entries(&[
        T::Symlink("./usr/a", "b"),
        T::Symlink("./usr/b", "a"),
        T::File("./usr/a/x", b"x", 0o644),
    ])
    .expect_err("loop");
    assert!(matches!(err, DebError::SymlinkLoop { .. }), "{err:?}");

    let err = unpack_entries(&[
        T::File("./usr/f", b"", 0o644),
        T::File("./usr/f/x", b"", 0o644),
    ])
    .expect_err("file as dir");
    assert!(matches!(err, DebError::NotADirectory { ref parent, .. } if parent == "usr/f"));
}

#[test]
fn hard_link_becomes_a_copy_and_needs_an_earlier_target() {
    let tree = unpack_entries(&[
        T::Owned("./usr/bin/a", b"data", 0o4755, 0, 5),
        T::HardLink("./usr/bin/b", "./usr/bin/a"),
        T::HardLink("./bin/c", "bin/../usr/bin/a"),
    ]);
    assert!(matches!(tree, Err(DebError::PathEscape { .. })));
    let tree = unpack_entries(&[
        T::Owned("./usr/bin/a", b"data", 0o4755, 0, 5),
        T::HardLink("./usr/bin/b", "./usr/bin/a"),
        T::HardLink("./bin/c", "bin/a"),
    ])
    .expect("unpack");
    let a = tree.get("usr/bin/a").expect("a");
    assert_eq!(tree.get("usr/bin/b"), Some(a));
    assert_eq!(tree.get("usr/bin/c"), Some(a));
    assert_eq!(a.gid, 5);

    let err =
        unpack_entries(&[T::HardLink("./usr/bin/b", "./usr/bin/missing")]).expect_err("missing");
    assert_eq!(
        err.to_string(),
        "package hello: hard link ./usr/bin/b -> ./usr/bin/missing: target is not an earlier file of the package"
    );
    let err = unpack_entries(&[T::Dir("./usr/d/", 0o755), T::HardLink("./usr/h", "./usr/d")])
        .expect_err("dir");
    assert!(matches!(err, DebError::HardLinkTarget { .. }));
}

#[test]
fn unmerged_paths_land_under_usr() {
    let tree = unpack_entries(&[
        T::Dir("./bin/", 0o755),
        T::File("./bin/foo", b"foo", 0o755),
        T::File("./lib/x86_64-linux-gnu/libfoo.so.1", b"so", 0o644),
        T::Symlink(
            "./lib64/ld-linux-x86-64.so.2",
            "../lib/x86_64-linux-gnu/ld.so",
        ),
        T::File("./sbin/init", b"init", 0o755),
    ])
    .expect("unpack");
    assert_eq!(kind(&tree, "usr/bin/foo"), Some(&file(b"foo")));
    assert_eq!(
        kind(&tree, "usr/lib/x86_64-linux-gnu/libfoo.so.1"),
        Some(&file(b"so"))
    );
    assert!(matches!(
        kind(&tree, "usr/lib64/ld-linux-x86-64.so.2"),
        Some(Kind::Symlink(_))
    ));
    assert_eq!(kind(&tree, "usr/sbin/init"), Some(&file(b"init")));
    for top in ["bin", "lib", "lib64", "sbin"] {
        assert!(tree.get(top).is_none(), "{top}");
    }
}

#[test]
fn merged_top_level_symlinks_are_skipped_and_contradictions_rejected() {
    // trixie's base-files ships these
    let tree = unpack_entries(&[
        T::Symlink("./bin", "usr/bin"),
        T::Symlink("./lib64", "usr/lib64"),
        T::File("./bin/sh", b"sh", 0o755),
    ])
    .expect("unpack");
    assert!(tree.get("bin").is_none());
    assert_eq!(kind(&tree, "usr/bin/sh"), Some(&file(b"sh")));

    let err = unpack_entries(&[T::Symlink("./bin", "usr/sbin")]).expect_err("contradiction");
    assert_eq!(
        err.to_string(),
        "package hello: bin contradicts the merged /usr layout (expected a directory or a symlink to usr/bin, found a symlink to usr/sbin)"
    );
    assert!(unpack_entries(&[T::File("./lib", b"", 0o644)]).is_err());
}

#[test]
fn directory_and_overwrite_rules() {
    let err = unpack_entries(&[
        T::Dir("./usr/share/d/", 0o755),
        T::File("./usr/share/d", b"", 0o644),
    ])
    .expect_err("file over dir");
    assert!(matches!(err, DebError::ReplacesDirectory { ref path, .. } if path == "usr/share/d"));

    // a shipped directory where a symlink to a directory exists keeps the symlink
    let tree = unpack_entries(&[
        T::Dir("./usr/share/real/", 0o755),
        T::Symlink("./usr/share/alias", "real"),
        T::Dir("./usr/share/alias/", 0o700),
        T::File("./usr/share/alias/f", b"f", 0o644),
    ])
    .expect("unpack");
    assert_eq!(
        kind(&tree, "usr/share/alias"),
        Some(&Kind::Symlink("real".into()))
    );
    assert_eq!(kind(&tree, "usr/share/real/f"), Some(&file(b"f")));
}

#[test]
fn second_package_overwriting_a_file_is_reported() {
    let mut tree = Tree::new();
    let mut owner = BTreeMap::new();
    let first = deb(
        "",
        &[
            T::Dir("./etc/", 0o755),
            T::File("./etc/shared", b"1", 0o644),
        ],
    );
    unpack_into("one", &first, &mut tree, &mut owner).expect("one");
    let info = unpack_into("two", &first, &mut tree, &mut owner).expect("two");
    assert_eq!(
        info.conflicts,
        [PathConflict {
            path: "etc/shared".into(),
            previous_owner: "one".into()
        }]
    );
    assert_eq!(owner.get("etc/shared").map(String::as_str), Some("two"));
    assert!(!owner.contains_key("etc"));
}

#[test]
fn resolve_walks_links_inside_root() {
    let mut tree = Tree::new();
    tree.insert("usr/lib64", Entry::dir(0o755));
    tree.insert("usr/lnk", Entry::symlink("/etc"));
    assert_eq!(resolve(&tree, "lib64/x"), Ok("usr/lib64/x".into()));
    assert_eq!(resolve(&tree, "bin/../lib"), Ok("usr/lib".into()));
    assert_eq!(resolve(&tree, "usr/lnk/a"), Ok("etc/a".into()));
    assert_eq!(resolve(&tree, "usr/../.."), Err(ResolveError::Escape));
}

#[test]
fn conffile_flags_and_usrmerge() {
    let parsed = parse_conffiles("/etc/a\nremove-on-upgrade /etc/b\n\n /lib/c \n");
    assert_eq!(parsed, ["etc/a", "usr/lib/c"]);
}
