use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use std::process::Command;

use backhand::{FilesystemReader, InnerNode};

use super::*;
use crate::rootfs::{Entry, Kind, Tree};
use crate::testutil::{noise, run_ok, tool};

const MTIME: u32 = 1_700_000_000; // 2023-11-14 22:13:20 UTC

fn entry(kind: Kind, mode: u32, uid: u32, gid: u32) -> Entry {
    Entry {
        kind,
        mode,
        uid,
        gid,
    }
}

/// Every kind of entry, modes and owners that must survive, files on both
/// sides of the block size, a hole, duplicates, and names whose string and
/// path orders differ ("usr/lib-x" vs "usr/lib/…").
fn sample_tree() -> Tree {
    let mut t = Tree::new();
    let big: Vec<u8> = noise(300 * 1024 + 17, 1);
    let mut holey = vec![0u8; 128 * 1024];
    holey.extend_from_slice(b"after the hole");
    t.insert("etc/hostname", Entry::file(b"node\n".to_vec(), 0o644));
    t.insert(
        "etc/shadow",
        entry(
            Kind::File(b"root:*:1::::::\n".to_vec().into()),
            0o640,
            0,
            42,
        ),
    );
    t.insert("etc/empty", Entry::file(Vec::new(), 0o600));
    t.insert("usr/bin/big", Entry::file(big.clone(), 0o755));
    t.insert("usr/bin/big-copy", Entry::file(big, 0o755));
    t.insert("usr/bin/exact", Entry::file(noise(128 * 1024, 2), 0o755));
    t.insert("usr/bin/holey", Entry::file(holey, 0o644));
    t.insert(
        "usr/bin/su",
        entry(Kind::File(noise(5000, 3).into()), 0o4755, 0, 0),
    );
    t.insert(
        "usr/lib-x",
        Entry::file(b"dash sorts before slash".to_vec(), 0o644),
    );
    t.insert("usr/lib/libfoo.so.1", Entry::file(noise(90_000, 4), 0o644));
    t.insert("usr/lib/libfoo.so", Entry::symlink("libfoo.so.1"));
    t.insert("bin", Entry::symlink("usr/bin"));
    t.insert(
        "home/user/.profile",
        entry(Kind::File(b"PS1='$ '\n".to_vec().into()), 0o644, 1000, 1000),
    );
    t.insert("home/user", entry(Kind::Dir, 0o750, 1000, 1000));
    t.insert("tmp", entry(Kind::Dir, 0o1777, 0, 0));
    t.insert(
        "dev/console",
        entry(Kind::CharDevice { major: 5, minor: 1 }, 0o600, 0, 5),
    );
    t.insert(
        "dev/big-minor",
        entry(
            Kind::CharDevice {
                major: 240,
                minor: 70_000,
            },
            0o600,
            0,
            0,
        ),
    );
    t.insert(
        "dev/vda",
        entry(
            Kind::BlockDevice {
                major: 254,
                minor: 0,
            },
            0o660,
            0,
            6,
        ),
    );
    t.insert("run/initctl", entry(Kind::Fifo, 0o600, 0, 0));
    t.insert("var/empty-dir", entry(Kind::Dir, 0o700, 0, 0));
    t.get_mut("").expect("root").mode = 0o755;
    t
}

fn write(tree: &Tree, opts: &SquashfsOptions) -> (Vec<u8>, SquashfsInfo, CompressStats) {
    let mut out = Cursor::new(Vec::new());
    let (info, stats) =
        write_squashfs_with_stats(tree, MTIME, opts, &mut out).expect("write squashfs");
    (out.into_inner(), info, stats)
}

#[test]
fn reads_back_every_entry_with_backhand() {
    let tree = sample_tree();
    let (img, info, _) = write(&tree, &SquashfsOptions::default());
    assert_eq!(info.inodes, tree.len() as u64);

    let fs = FilesystemReader::from_reader(Cursor::new(img)).expect("read image");
    assert_eq!(fs.mod_time, MTIME);
    let mut seen = BTreeMap::new();
    for node in fs.files() {
        let path = node
            .fullpath
            .to_str()
            .expect("utf-8")
            .trim_start_matches('/')
            .to_string();
        let want = tree
            .get(&path)
            .unwrap_or_else(|| panic!("unexpected {path:?} in image"));
        let h = node.header;
        assert_eq!(
            (u32::from(h.permissions), h.uid, h.gid, h.mtime),
            (want.mode, want.uid, want.gid, MTIME),
            "{path:?} metadata"
        );
        match (&node.inner, &want.kind) {
            (InnerNode::Dir(_), Kind::Dir) => {}
            (InnerNode::File(f), Kind::File(data)) => {
                let mut got = Vec::new();
                fs.file(f)
                    .reader()
                    .read_to_end(&mut got)
                    .expect("read file");
                assert!(got == data[..], "{path:?} content differs");
            }
            (InnerNode::Symlink(s), Kind::Symlink(target)) => {
                assert_eq!(s.link.to_str(), Some(target.as_str()), "{path:?}")
            }
            (InnerNode::CharacterDevice(d), Kind::CharDevice { major, minor }) => {
                assert_eq!(decode_dev(d.device_number), (*major, *minor), "{path:?}");
            }
            (InnerNode::BlockDevice(d), Kind::BlockDevice { major, minor }) => {
                assert_eq!(decode_dev(d.device_number), (*major, *minor), "{path:?}");
            }
            (InnerNode::NamedPipe, Kind::Fifo) => {}
            (got, want) => panic!("{path:?}: image has {got:?}, tree has {want:?}"),
        }
        seen.insert(path, ());
    }
    assert_eq!(seen.len(), tree.len(), "every tree entry is in the image");
}

/// The kernel's `new_decode_dev`.
fn decode_dev(dev: u32) -> (u32, u32) {
    ((dev & 0xfff00) >> 8, (dev & 0xff) | ((dev >> 12) & 0xfff00))
}

#[test]
fn unsquashfs_lists_names_modes_owners_and_targets() {
    let unsquashfs = tool("unsquashfs", "squashfs-tools");
    let tree = sample_tree();
    let (img, _, _) = write(&tree, &SquashfsOptions::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("root.img");
    std::fs::write(&path, &img).expect("write image");

    let out = run_ok(Command::new(&unsquashfs).arg("-UTC").arg("-lln").arg(&path));
    let listing = String::from_utf8(out.stdout).expect("utf-8 listing");
    let mut lines = BTreeMap::new();
    for line in listing.lines().filter(|l| !l.is_empty()) {
        // "-rwsr-xr-x 0/0   5000 2023-11-14 22:13 squashfs-root/usr/bin/su"
        let f: Vec<&str> = line.split_whitespace().collect();
        let at = f
            .iter()
            .position(|w| w.starts_with("squashfs-root"))
            .expect("name column");
        let name = f[at]
            .trim_start_matches("squashfs-root")
            .trim_start_matches('/')
            .to_string();
        let target = (f.get(at + 1) == Some(&"->")).then(|| f[at + 2].to_string());
        assert_eq!(&f[at - 2..at], ["2023-11-14", "22:13"], "{line}");
        lines.insert(name, (f[0].to_string(), f[1].to_string(), target));
    }
    assert_eq!(lines.len(), tree.len(), "listing:\n{listing}");
    for (path, e) in tree.iter() {
        let (mode, owner, target) = lines
            .get(path)
            .unwrap_or_else(|| panic!("{path:?} missing from listing:\n{listing}"));
        assert_eq!(mode, &ls_mode(e), "{path:?}");
        assert_eq!(owner, &format!("{}/{}", e.uid, e.gid), "{path:?}");
        let want_target = match &e.kind {
            Kind::Symlink(t) => Some(t.clone()),
            _ => None,
        };
        assert_eq!(target, &want_target, "{path:?}");
    }

    for inner in ["usr/bin/big", "usr/bin/holey", "etc/hostname", "etc/empty"] {
        let out = run_ok(Command::new(&unsquashfs).arg("-cat").arg(&path).arg(inner));
        let Some(Entry {
            kind: Kind::File(data),
            ..
        }) = tree.get(inner)
        else {
            panic!("{inner} is not a file in the sample tree")
        };
        assert!(out.stdout == data[..], "unsquashfs -cat {inner} differs");
    }
    // -s prints the superblock; check that unsquashfs sees zstd and our block size.
    let out = run_ok(Command::new(&unsquashfs).arg("-s").arg(&path));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("Compression zstd"), "{s}");
    assert!(s.contains("Block size 131072"), "{s}");
}

/// `ls -l` style mode string, as unsquashfs prints it.
fn ls_mode(e: &Entry) -> String {
    let t = match e.kind {
        Kind::Dir => 'd',
        Kind::File(_) => '-',
        Kind::Symlink(_) => 'l',
        Kind::CharDevice { .. } => 'c',
        Kind::BlockDevice { .. } => 'b',
        Kind::Fifo => 'p',
    };
    let m = e.mode;
    let bit = |mask: u32, c: char| if m & mask != 0 { c } else { '-' };
    let special =
        |exec: u32, special: u32, set: char, unset: char| match (m & exec != 0, m & special != 0) {
            (true, true) => set,
            (false, true) => unset,
            (true, false) => 'x',
            (false, false) => '-',
        };
    [
        t,
        bit(0o400, 'r'),
        bit(0o200, 'w'),
        special(0o100, 0o4000, 's', 'S'),
        bit(0o040, 'r'),
        bit(0o020, 'w'),
        special(0o010, 0o2000, 's', 'S'),
        bit(0o004, 'r'),
        bit(0o002, 'w'),
        special(0o001, 0o1000, 't', 'T'),
    ]
    .iter()
    .collect()
}

#[test]
fn same_tree_same_bytes_whatever_the_threads() {
    let tree = sample_tree();
    let one = SquashfsOptions {
        threads: 1,
        ..Default::default()
    };
    let four = SquashfsOptions {
        threads: 4,
        ..Default::default()
    };
    let (a, _, stats) = write(&tree, &one);
    let (b, _, _) = write(&tree, &four);
    let (c, _, _) = write(&tree, &four);
    assert!(a == b && b == c, "output is not reproducible");
    assert_eq!(
        stats.misses, 0,
        "backhand asked for blocks we did not predict: {stats:?}"
    );
    assert_eq!(stats.hits, stats.planned, "{stats:?}");

    let mut later = Cursor::new(Vec::new());
    write_squashfs(&tree, MTIME + 1, &one, &mut later).expect("write");
    assert!(later.into_inner() != a, "mtime must reach the image");
}

#[test]
fn prediction_matches_backhand_on_many_small_files() {
    // Fragment packing: many tails that overflow fragment blocks, mixed with
    // block-sized files and zero files.
    let mut t = Tree::new();
    for i in 0..400u64 {
        let len = (i as usize * 7919) % 9000;
        t.insert(
            &format!("d{}/f{i}", i % 7),
            Entry::file(noise(len, i), 0o644),
        );
        if i % 50 == 0 {
            t.insert(
                &format!("z/zero{i}"),
                Entry::file(vec![0u8; 256 * 1024], 0o644),
            );
            t.insert(
                &format!("b/blk{i}"),
                Entry::file(noise(131_072 * 2 + 1, i), 0o644),
            );
        }
    }
    let opts = SquashfsOptions {
        compression_level: 3,
        ..Default::default()
    };
    let (_, _, stats) = write(&t, &opts);
    assert_eq!(stats.misses, 0, "{stats:?}");
    assert_eq!(stats.hits, stats.planned, "{stats:?}");
}

#[test]
fn image_is_padded_to_4096_with_nothing_after_it() {
    let tree = sample_tree();
    let (img, info, _) = write(&tree, &SquashfsOptions::default());
    assert_eq!(info.size % IMAGE_ALIGN, 0);
    assert_eq!(img.len() as u64, info.size);

    // The sample tree has a duplicate file, which backhand writes and then
    // overwrites: nothing of it may trail the image.
    let mut out = Cursor::new(vec![0xAAu8; 512]);
    out.set_position(512);
    let at = write_squashfs(&tree, MTIME, &SquashfsOptions::default(), &mut out).expect("write");
    assert_eq!(out.position(), 512 + at.size, "left just past the image");
    let out = out.into_inner();
    assert_eq!(out.len() as u64, 512 + at.size);
    assert!(out[..512].iter().all(|b| *b == 0xAA));
    assert!(out[512..] == img[..], "appended image differs");
}

/// Enough data that the image goes out in pieces while it is written,
/// with duplicates (which backhand writes, then seeks back over) before and
/// after those pieces, and files that straddle them.
fn streamed_tree() -> Tree {
    let mut t = Tree::new();
    let a = noise(1536 * 1024 + 5, 21);
    let c = noise(2 << 20, 22);
    t.insert("a/first", Entry::file(a.clone(), 0o644));
    t.insert("a/first-copy", Entry::file(a.clone(), 0o644));
    t.insert("b/second", Entry::file(c.clone(), 0o755));
    t.insert("b/small", Entry::file(noise(3000, 23), 0o644));
    t.insert("b/second-copy", Entry::file(c, 0o755));
    t.insert("c/text", Entry::file(b"x".repeat(700_000), 0o644));
    t.insert("z/last-copy", Entry::file(a, 0o644));
    t
}

#[test]
fn streamed_image_reads_back_and_equals_a_file_written_one() {
    let tree = streamed_tree();
    let opts = SquashfsOptions {
        compression_level: 1,
        ..Default::default()
    };
    let (img, info, _) = write(&tree, &opts);
    assert_eq!(img.len() as u64, info.size, "nothing trails the image");
    assert!(info.size > 3 << 20, "large enough to go out in pieces");

    let fs = FilesystemReader::from_reader(Cursor::new(img.clone())).expect("read image");
    let mut files = 0;
    for node in fs.files() {
        if let InnerNode::File(f) = &node.inner {
            let path = node.fullpath.to_str().expect("utf-8");
            let Some(Entry {
                kind: Kind::File(want),
                ..
            }) = tree.get(path.trim_start_matches('/'))
            else {
                panic!("{path} is not a file in the tree")
            };
            let mut got = Vec::new();
            fs.file(f)
                .reader()
                .read_to_end(&mut got)
                .expect("read file");
            assert!(got == want[..], "{path} content differs");
            files += 1;
        }
    }
    assert_eq!(files, 7);

    // The same bytes through a real file, and after 512 bytes of a sink.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("root.img");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
    write_squashfs(&tree, MTIME, &opts, &mut file).expect("write to file");
    drop(file);
    assert!(
        std::fs::read(&path).expect("read back") == img,
        "file differs"
    );
    let mut after = Cursor::new(vec![0x55u8; 512]);
    after.set_position(512);
    write_squashfs(&tree, MTIME, &opts, &mut after).expect("write after 512");
    assert!(after.get_ref()[512..] == img[..], "appended image differs");

    let out = run_ok(
        Command::new(tool("unsquashfs", "squashfs-tools"))
            .arg("-cat")
            .arg(&path)
            .arg("z/last-copy"),
    );
    let Some(Entry {
        kind: Kind::File(a),
        ..
    }) = tree.get("a/first")
    else {
        panic!("a/first is a file")
    };
    assert!(out.stdout == a[..], "unsquashfs -cat z/last-copy differs");
}

#[test]
fn empty_tree_and_default_tree_write() {
    let (img, info, _) = write(&Tree::new(), &SquashfsOptions::default());
    assert_eq!(info.inodes, 1);
    assert_eq!(img.len(), 4096);
    let (_, info, _) = write(&Tree::default(), &SquashfsOptions::default());
    assert_eq!(info.inodes, 1);
}

#[test]
fn rejects_bad_options_and_devices() {
    let t = Tree::new();
    let mut out = Cursor::new(Vec::new());
    let bad_bs = SquashfsOptions {
        block_size: 100_000,
        ..Default::default()
    };
    assert!(matches!(
        write_squashfs(&t, 0, &bad_bs, &mut out),
        Err(SquashfsError::InvalidBlockSize {
            block_size: 100_000
        })
    ));
    let bad_level = SquashfsOptions {
        compression_level: 23,
        ..Default::default()
    };
    assert!(matches!(
        write_squashfs(&t, 0, &bad_level, &mut out),
        Err(SquashfsError::InvalidLevel { level: 23 })
    ));
    let mut t = Tree::new();
    t.insert(
        "dev/x",
        entry(
            Kind::CharDevice {
                major: 5000,
                minor: 0,
            },
            0o600,
            0,
            0,
        ),
    );
    let err = write_squashfs(&t, 0, &SquashfsOptions::default(), &mut out).expect_err("major");
    assert_eq!(
        err.to_string(),
        "dev/x: device number 5000:0 does not fit squashfs (major < 4096, minor < 1048576)"
    );
}

#[test]
fn device_numbers_use_the_kernel_encoding() {
    for (major, minor) in [(5, 1), (254, 0), (240, 70_000), (4095, 0xf_ffff)] {
        let dev = device_number("x", major, minor).expect("fits");
        assert_eq!(decode_dev(dev), (major, minor));
    }
}
