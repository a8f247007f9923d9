//! The writer is judged by our reader and by GNU `cpio` (Debian package
//! `cpio`, a test dependency like the other reference tools).

use std::process::{Command, Stdio};

use super::*;

const MTIME: u32 = 1_700_000_000;

fn sample_modules() -> Vec<(String, Arc<[u8]>)> {
    let k = "usr/lib/modules/6.12.99+test-amd64/kernel";
    vec![
        (
            format!("{k}/drivers/md/dm-mod.ko.xz"),
            Arc::from(&b"\xfd7zXZ\0dm-mod"[..]),
        ),
        (
            format!("/{k}/fs/ext4/ext4.ko.xz"),
            Arc::from(&b"\xfd7zXZ\0ext4, odd length"[..]),
        ),
    ]
}

fn sample(compression: Compression) -> Vec<u8> {
    let order = "/usr/lib/modules/x/dm-mod.ko.xz\n/usr/lib/modules/x/ext4.ko.xz\n";
    build_with(
        b"\x7fELF agent",
        &sample_modules(),
        order,
        MTIME,
        compression,
    )
    .unwrap()
}

#[test]
fn archive_reads_back_with_fixed_metadata() {
    for compression in [Compression::Zstd, Compression::Gzip] {
        let image = sample(compression);
        assert_eq!(
            image,
            sample(compression),
            "{compression} build is not reproducible"
        );
        let entries = read_cpio(&decompress(&image).unwrap()).unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        let k = "usr/lib/modules/6.12.99+test-amd64/kernel";
        assert_eq!(
            names,
            [
                "dev",
                "dev/console",
                "init",
                "proc",
                "run",
                "sys",
                "usr",
                "usr/lib",
                "usr/lib/modules",
                "usr/lib/modules/6.12.99+test-amd64",
                k,
                &format!("{k}/drivers"),
                &format!("{k}/drivers/md"),
                &format!("{k}/drivers/md/dm-mod.ko.xz"),
                &format!("{k}/fs"),
                &format!("{k}/fs/ext4"),
                &format!("{k}/fs/ext4/ext4.ko.xz"),
                "usr/lib/nodeimg",
                "usr/lib/nodeimg/modules.order",
            ]
        );
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(
                (e.ino, e.uid, e.gid, e.mtime),
                (i as u32 + 1, 0, 0, MTIME),
                "{}",
                e.name
            );
        }
        let console = &entries[1];
        assert_eq!((console.mode, console.rdev), (0o020_600, (5, 1)));
        assert_eq!(
            (entries[2].mode, entries[2].data.as_slice()),
            (0o100_755, &b"\x7fELF agent"[..])
        );
        assert_eq!(entries[16].data, b"\xfd7zXZ\0ext4, odd length");
    }
}

#[test]
fn gnu_cpio_lists_the_same_entries() {
    let cpio_bytes = decompress(&sample(Compression::Zstd)).unwrap();
    let mut child = Command::new("cpio")
        .args(["-itv", "--quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("GNU cpio (Debian package cpio) is a test dependency");
    child.stdin.take().unwrap().write_all(&cpio_bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let listing = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = listing.lines().collect();
    let ours = read_cpio(&cpio_bytes).unwrap();
    assert_eq!(lines.len(), ours.len(), "{listing}");
    for (line, entry) in lines.iter().zip(&ours) {
        assert!(
            line.ends_with(&format!(" {}", entry.name)),
            "{line} vs {}",
            entry.name
        );
    }
    assert!(
        lines[1].starts_with("crw-------") && lines[1].contains("5,   1"),
        "{}",
        lines[1]
    );
    assert!(lines[2].starts_with("-rwxr-xr-x"), "{}", lines[2]);
    assert!(lines[0].starts_with("drwxr-xr-x"), "{}", lines[0]);
}

#[test]
fn bad_paths_and_clashes_are_refused() {
    let m = |p: &str| vec![(p.to_string(), Arc::from(&b"x"[..]))];
    assert!(matches!(
        build(b"a", &m("a/../../b"), "", 0),
        Err(InitramfsError::BadPath { .. })
    ));
    assert!(matches!(
        build(b"a", &m("/"), "", 0),
        Err(InitramfsError::BadPath { .. })
    ));
    assert!(matches!(
        build(b"a", &m("init"), "", 0),
        Err(InitramfsError::Duplicate { .. })
    ));
    assert!(matches!(
        build(b"a", &m("init/x"), "", 0),
        Err(InitramfsError::Duplicate { .. })
    ));
    assert!(matches!(
        decompress(b"garbage"),
        Err(InitramfsError::UnknownFormat { .. })
    ));
}

/// xorshift64*: a deterministic stream for the fuzz-ish tests.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn random_file_sets_round_trip_and_mutations_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..40 {
        let mut files: BTreeMap<String, Arc<[u8]>> = BTreeMap::new();
        for _ in 0..rng.below(12) {
            let depth = 1 + rng.below(4);
            let path: Vec<String> = (0..depth).map(|_| format!("d{}", rng.below(3))).collect();
            let path = format!("m/{}/f{}.ko.xz", path.join("/"), rng.below(100));
            let data: Vec<u8> = (0..rng.below(300)).map(|_| rng.next() as u8).collect();
            files.insert(path, data.into());
        }
        let modules: Vec<(String, Arc<[u8]>)> = files.clone().into_iter().collect();
        let agent: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
        let cpio = write_cpio(&agent, &modules, "order", round, Vec::new()).unwrap();
        let entries = read_cpio(&cpio).unwrap();
        for (path, data) in &files {
            let e = entries.iter().find(|e| &e.name == path).unwrap();
            assert_eq!((&e.data[..], e.mode), (&data[..], 0o100_644));
        }
        let mut sorted: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        sorted.sort_unstable();
        assert!(
            entries.iter().map(|e| e.name.as_str()).eq(sorted),
            "entries are not sorted"
        );
        // Flip bytes or cut the archive: the reader may fail but must not panic.
        for _ in 0..20 {
            let mut bad = cpio.clone();
            let at = rng.below(bad.len() as u64) as usize;
            if rng.below(2) == 0 {
                bad[at] = rng.next() as u8;
            } else {
                bad.truncate(at);
            }
            let _ = read_cpio(&bad);
        }
    }
}
