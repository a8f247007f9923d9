//! The block cache and the reused zstd contexts must never change a byte of
//! the image: every test compares against a write without a cache.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use backhand::compression::{CompressionAction, DefaultCompressor};

use super::blocks::BlockCompressor;
use super::cache::{BlockCache, CACHE_FILE};
use super::*;
use crate::rootfs::{Entry, Tree};
use crate::testutil::noise;

const MTIME: u32 = 1_700_000_000;

/// Big files (several blocks each), small files packed into fragments, a
/// duplicate, and compressible text.
fn tree(seed: u64) -> Tree {
    let mut t = Tree::new();
    t.insert(
        "usr/bin/big",
        Entry::file(noise(700 * 1024 + 5, seed), 0o755),
    );
    t.insert(
        "usr/bin/copy",
        Entry::file(noise(700 * 1024 + 5, seed), 0o755),
    );
    t.insert("usr/share/doc/text", Entry::file(text(), 0o644));
    for i in 0..60u64 {
        let len = (i as usize * 977) % 7000 + 1;
        t.insert(
            &format!("etc/f{i}"),
            Entry::file(noise(len, seed + i), 0o644),
        );
    }
    t.insert(
        "etc/containerd/config.toml",
        Entry::file(b"version = 3\n".to_vec(), 0o644),
    );
    t
}

/// About 2.6 MB of text: 20 blocks, the same in every [`tree`].
fn text() -> Vec<u8> {
    (0..100_000u32)
        .flat_map(|i| format!("line {i:06} of some text\n").into_bytes())
        .collect()
}

fn opts(cache: Option<&Path>) -> SquashfsOptions {
    SquashfsOptions {
        block_cache: cache.map(Path::to_path_buf),
        threads: 2,
        ..Default::default()
    }
}

fn write(tree: &Tree, cache: Option<&Path>) -> (Vec<u8>, CompressStats) {
    let mut out = Cursor::new(Vec::new());
    let (_, stats) =
        write_squashfs_with_stats(tree, MTIME, &opts(cache), &mut out).expect("write squashfs");
    (out.into_inner(), stats)
}

fn cached_entries(dir: &Path) -> usize {
    let o = SquashfsOptions::default();
    BlockCache::open(dir, o.compression_level, o.block_size)
        .expect("open cache")
        .len()
}

#[test]
fn reused_context_compresses_like_backhand() {
    let fc = zstd_compressor(6).expect("compressor");
    let mut ours = BlockCompressor::new(6).expect("context");
    let text: Vec<u8> = (0..40_000u32)
        .flat_map(|i| format!("{i} ").into_bytes())
        .collect();
    let blocks = [
        noise(131_072, 1),
        text[..131_072].to_vec(),
        vec![7u8; 131_072],
        noise(5000, 2),
        text[..9000].to_vec(),
        Vec::new(),
        text[1000..132_072].to_vec(),
    ];
    for (i, b) in blocks.iter().enumerate() {
        let want = DefaultCompressor
            .compress(b, fc, 131_072)
            .expect("backhand");
        assert!(ours.compress(b).expect("ours") == want, "block {i} differs");
    }
}

#[test]
fn cache_gives_the_same_bytes_and_skips_unchanged_blocks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("squashfs-blocks");
    let t = tree(1);
    let (plain, _) = write(&t, None);

    let (cold, stats) = write(&t, Some(&cache));
    assert!(cold == plain, "a cold cache changed the image");
    assert_eq!(stats.cache_hits, 0, "{stats:?}");
    assert!(cache.join(CACHE_FILE).is_file());
    let inode = || {
        std::fs::metadata(cache.join(CACHE_FILE))
            .expect("stat")
            .ino()
    };
    let stored = inode();

    let (warm, stats) = write(&t, Some(&cache));
    assert!(warm == plain, "a warm cache changed the image");
    assert_eq!(stats.cache_hits, stats.planned, "{stats:?}");
    assert_eq!((stats.misses, stats.cache_rejected), (0, 0), "{stats:?}");
    assert_eq!(inode(), stored, "an unchanged cache is not rewritten");

    // One byte of one small file: only its fragment block is compressed.
    let mut changed = t.clone();
    changed.insert(
        "etc/containerd/config.toml",
        Entry::file(b"version = 4\n".to_vec(), 0o644),
    );
    let (plain, _) = write(&changed, None);
    let (warm, stats) = write(&changed, Some(&cache));
    assert!(warm == plain, "the cache changed the edited image");
    assert_eq!(stats.cache_hits, stats.planned - 1, "{stats:?}");
}

#[test]
fn corrupt_cache_entries_are_never_used() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path();
    let t = tree(2);
    let (plain, stats) = write(&t, Some(cache));
    let path = cache.join(CACHE_FILE);
    let good = std::fs::read(&path).expect("read cache");

    let header = b"nodeimg squashfs blocks v1\n".len() + 4 + {
        let n: [u8; 4] = good[27..31].try_into().expect("4 bytes");
        u32::from_le_bytes(n) as usize
    };
    // One byte of the first record's compressed bytes (after its key, length
    // and check), then one byte somewhere in the middle of the file.
    for at in [header + 32 + 4 + 32 + 10, good.len() / 2] {
        let mut bad = good.clone();
        bad[at] ^= 0x40;
        std::fs::write(&path, &bad).expect("corrupt cache");
        let (img, s) = write(&t, Some(cache));
        assert!(
            img == plain,
            "a corrupt entry reached the image (byte {at})"
        );
        assert!(s.cache_hits < stats.planned, "byte {at}: {s:?}");
        if at < good.len() / 2 {
            assert!(s.cache_rejected >= 1, "{s:?}");
        }
        // The write healed the cache.
        let (img, s) = write(&t, Some(cache));
        assert!(img == plain);
        assert_eq!(s.cache_hits, s.planned, "{s:?}");
    }

    // A damaged header (here: the params) invalidates every record.
    let mut bad = good.clone();
    let params_at = b"nodeimg squashfs blocks v1\n".len() + 4;
    bad[params_at] ^= 0x01;
    std::fs::write(&path, &bad).expect("corrupt header");
    let (img, s) = write(&t, Some(cache));
    assert!(img == plain);
    assert_eq!(s.cache_hits, 0, "{s:?}");

    // Truncated, empty and foreign files.
    for junk in [&good[..good.len() * 2 / 3], &[][..], b"not a cache"] {
        std::fs::write(&path, junk).expect("write junk");
        let (img, _) = write(&t, Some(cache));
        assert!(img == plain, "junk cache changed the image");
    }
}

#[test]
fn cache_for_other_options_is_not_used() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = tree(3);
    let (_, _) = write(&t, Some(dir.path()));
    let level3 = SquashfsOptions {
        compression_level: 3,
        ..opts(Some(dir.path()))
    };
    let mut with = Cursor::new(Vec::new());
    let (_, stats) = write_squashfs_with_stats(&t, MTIME, &level3, &mut with).expect("write");
    assert_eq!(stats.cache_hits, 0, "{stats:?}");
    let mut without = Cursor::new(Vec::new());
    let plain = SquashfsOptions {
        block_cache: None,
        ..level3
    };
    write_squashfs(&t, MTIME, &plain, &mut without).expect("write");
    assert!(with == without);
}

#[test]
fn cache_keeps_only_the_last_writes_blocks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, first) = write(&tree(4), Some(dir.path()));
    // The duplicate file's blocks are stored once.
    let unique = cached_entries(dir.path());
    assert!(unique < first.planned, "{unique} of {first:?}");
    let (_, second) = write(&tree(5), Some(dir.path()));
    let text_blocks = text().len().div_ceil(131_072);
    assert_eq!(
        second.cache_hits, text_blocks,
        "only the text is shared: {second:?}"
    );
    assert_eq!(cached_entries(dir.path()), unique);
    // A temp file left by a killed write goes once it is old; a young one
    // may belong to a concurrent write and stays.
    let old = dir.path().join(".blocks.v1.killed");
    let young = dir.path().join(".blocks.v1.running");
    for p in [&old, &young] {
        std::fs::write(p, b"partial").expect("write temp");
    }
    let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .and_then(|f| f.set_modified(an_hour_ago))
        .expect("age temp file");
    let (_, third) = write(&tree(4), Some(dir.path()));
    assert_eq!(third.cache_hits, text_blocks, "{third:?}");
    assert!(!old.exists() && young.exists());
    std::fs::remove_file(&young).expect("remove");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, [CACHE_FILE], "no temp files left behind");
}

#[test]
fn unusable_cache_directory_is_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, b"x").expect("write");
    let t = tree(6);
    let (plain, _) = write(&t, None);
    let (img, _) = write(&t, Some(&not_a_dir));
    assert!(img == plain);
    let (img, _) = write(&t, Some(&not_a_dir.join("below")));
    assert!(img == plain);
}
