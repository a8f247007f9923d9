//! Property tests for the cpio `newc` reader and the decompressor in front
//! of it: any bytes are entries or a typed error, never a panic; what the
//! writer lays out reads back whole; and a good archive cut short or with
//! bytes changed is read or refused at an entry that fits in it. Bounded; failures are
//! not persisted into the source tree.

use std::sync::OnceLock;

use proptest::prelude::*;

use super::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A small initramfs, uncompressed and with each compressor.
fn sample() -> &'static (Vec<u8>, Vec<u8>, Vec<u8>) {
    static SAMPLE: OnceLock<(Vec<u8>, Vec<u8>, Vec<u8>)> = OnceLock::new();
    SAMPLE.get_or_init(|| {
        let modules = vec![(
            "usr/lib/modules/6.12/kernel/dm-mod.ko.xz".to_string(),
            Arc::from(&b"\xfd7zXZ\0dm-mod"[..]),
        )];
        let plain =
            write_cpio(b"\x7fELF agent", &modules, "dm-mod\n", 1, Vec::new()).expect("sample cpio");
        let zstd = compress(&plain, Compression::Zstd).expect("zstd");
        let gzip = compress(&plain, Compression::Gzip).expect("gzip");
        (plain, zstd, gzip)
    })
}

/// Reads as the builder's tools do: decompress, then list.
fn read_any(bytes: &[u8]) -> Result<Vec<ArchiveEntry>, InitramfsError> {
    read_cpio(&decompress(bytes)?)
}

/// Bytes of a newc header: no archive of `len` bytes holds more entries.
const NEWC_HEADER: usize = 110;

/// A refusal of the reader names an entry index that an archive of
/// `cpio_len` (decompressed) bytes can reach; other refusals are the
/// decompressor's. (newc has no checksum: a changed size field can make
/// the reader see more entries than were written, never more than fit.)
fn refused_in_range(r: &Result<Vec<ArchiveEntry>, InitramfsError>, cpio_len: usize) -> bool {
    match r {
        Ok(entries) => entries.len() <= cpio_len / NEWC_HEADER,
        Err(InitramfsError::Read { index, .. }) => *index <= cpio_len / NEWC_HEADER,
        Err(InitramfsError::UnknownFormat { .. } | InitramfsError::Compress { .. }) => true,
        Err(_) => false,
    }
}

/// Decompressed length of `bytes` (0 when it does not decompress).
fn cpio_len(bytes: &[u8]) -> usize {
    decompress(bytes).map(|d| d.len()).unwrap_or(0)
}

/// A newc header with each field a random hex number, then random bytes:
/// past the magic, so the field parsing and the name and data reads run.
fn newc_like() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(prop_oneof![any::<u32>(), 0u32..64], 13),
        prop::collection::vec(any::<u8>(), 0..160),
    )
        .prop_map(|(fields, tail)| {
            let mut b = NEWC_MAGIC.to_vec();
            for f in fields {
                b.extend_from_slice(format!("{f:08x}").as_bytes());
            }
            b.extend(tail);
            b
        })
}

fn file_path() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec!["a", "b", "usr", "lib", "x.ko", "d e"]),
        1..4,
    )
    .prop_map(|c| c.join("/"))
}

proptest! {
    #![proptest_config(config(512))]

    /// Any bytes, and any newc-shaped header: entries or a typed error.
    #[test]
    fn any_bytes_are_read_or_refused(
        bytes in prop::collection::vec(any::<u8>(), 0..400),
        header in newc_like(),
    ) {
        let _ = read_any(&bytes);
        let _ = read_cpio(&bytes);
        let r = read_cpio(&header);
        prop_assert!(refused_in_range(&r, header.len()), "{:?}", r.err());
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// Files written with [`write_files_cpio`] read back: every file with
    /// its bytes, every parent a directory, in sorted order.
    #[test]
    fn written_files_read_back(
        files in prop::collection::btree_map(file_path(), prop::collection::vec(any::<u8>(), 0..64), 1..6),
    ) {
        let files: Vec<(String, Arc<[u8]>)> =
            files.into_iter().map(|(p, d)| (p, Arc::from(d))).collect();
        // a file that is also another's parent is the writer's error, not ours
        let Ok(cpio) = write_files_cpio(&files, 7, Vec::new()) else {
            return Ok(());
        };
        let entries = read_cpio(&cpio).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        prop_assert_eq!(&names, &sorted);
        for (path, data) in &files {
            let e = entries.iter().find(|e| &e.name == path);
            prop_assert!(e.is_some(), "{} missing", path);
            if let Some(e) = e {
                prop_assert_eq!(&e.data[..], &data[..]);
                prop_assert_eq!(e.mode, 0o100_644);
                prop_assert_eq!(e.mtime, 7);
            }
        }
        for e in entries.iter().filter(|e| e.mode & 0o170_000 == 0o040_000) {
            prop_assert!(e.data.is_empty());
        }
    }

    /// A good archive, plain or compressed, cut at any length.
    #[test]
    fn truncated_archive(which in 0usize..3, at in any::<prop::sample::Index>()) {
        let (plain, zstd, gzip) = sample();
        let bytes = [plain, zstd, gzip][which];
        let at = at.index(bytes.len() + 1);
        let r = read_any(&bytes[..at]);
        prop_assert!(refused_in_range(&r, cpio_len(&bytes[..at])), "{:?}", r.err());
        // a plain archive cut before its trailer entry is never whole
        let trailer = plain
            .windows(10)
            .position(|w| w == b"TRAILER!!!")
            .map(|name| name - 110)
            .unwrap_or(0);
        if which == 0 && at < trailer {
            prop_assert!(r.is_err(), "cut at {} of {} read whole", at, bytes.len());
        }
    }

    /// A good archive, plain or compressed, with up to three bytes changed.
    #[test]
    fn changed_archive(
        which in 0usize..3,
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..), 1..4),
    ) {
        let (plain, zstd, gzip) = sample();
        let mut bytes = [plain, zstd, gzip][which].clone();
        for (at, xor) in &flips {
            let at = at.index(bytes.len());
            bytes[at] ^= xor;
        }
        let r = read_any(&bytes);
        prop_assert!(refused_in_range(&r, cpio_len(&bytes)), "{:?}", r.err());
    }
}
