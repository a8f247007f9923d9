use std::io::{self, Cursor, Read};
use std::path::Path;
use std::process::Command;

use super::*;
use crate::testutil::{noise, run_ok, tool};

const BLOCK: usize = 4096;

struct Case {
    dir: tempfile::TempDir,
    data: Vec<u8>,
    params: VerityParams,
}

impl Case {
    fn new(blocks: usize, seed: u64) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = noise(blocks * BLOCK, seed);
        std::fs::write(dir.path().join("data"), &data).expect("write data");
        let params = VerityParams::new(salt_for(&seed.to_le_bytes()));
        Case { dir, data, params }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// Our tree, written to `name`.
    fn ours(&self, name: &str, superblock: bool) -> (VerityInfo, Vec<u8>) {
        let mut out = Cursor::new(Vec::new());
        let info = build_hash_tree(
            &self.data[..],
            self.data.len() as u64,
            &self.params,
            &mut out,
            superblock,
        )
        .expect("build hash tree");
        let bytes = out.into_inner();
        assert_eq!(info.hash_size, bytes.len() as u64);
        std::fs::write(self.path(name), &bytes).expect("write hash");
        (info, bytes)
    }

    /// `veritysetup format` of the same data, salt and UUID: root hash and bytes.
    fn reference(&self, name: &str, uuid: Option<&str>) -> (String, Vec<u8>) {
        let mut cmd = Command::new(tool("veritysetup", "cryptsetup-bin"));
        cmd.arg("format")
            .arg(self.path("data"))
            .arg(self.path(name));
        cmd.arg(format!("--salt={}", hex::encode(&self.params.salt)));
        match uuid {
            Some(u) => cmd.arg(format!("--uuid={u}")),
            None => cmd.arg("--no-superblock"),
        };
        let out = run_ok(&mut cmd);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let root = text
            .lines()
            .find_map(|l| l.strip_prefix("Root hash:"))
            .unwrap_or_else(|| panic!("no root hash in:\n{text}"))
            .trim()
            .to_string();
        (
            root,
            std::fs::read(self.path(name)).expect("read reference hash"),
        )
    }
}

fn verify(data: &Path, hash: &Path, root: &str, extra: &[String]) -> std::process::Output {
    Command::new(tool("veritysetup", "cryptsetup-bin"))
        .arg("verify")
        .args(extra)
        .arg(data)
        .arg(hash)
        .arg(root)
        .output()
        .expect("run veritysetup verify")
}

/// Without a superblock veritysetup needs every parameter on the command line.
fn no_superblock_flags(info: &VerityInfo) -> Vec<String> {
    vec![
        "--no-superblock".into(),
        "--format=1".into(),
        format!("--hash={}", info.hash_algorithm),
        format!("--data-block-size={}", info.data_block_size),
        format!("--hash-block-size={}", info.hash_block_size),
        format!("--data-blocks={}", info.data_blocks),
        format!("--salt={}", info.salt),
    ]
}

fn matches_veritysetup(blocks: usize) {
    let case = Case::new(blocks, blocks as u64);
    let (info, ours) = case.ours("ours", true);
    let uuid = info.uuid.clone().expect("superblock uuid");
    let (root, reference) = case.reference("ref", Some(&uuid));
    assert_eq!(info.root_hash_hex(), root, "{blocks} blocks: root hash");
    assert!(
        ours == reference,
        "{blocks} blocks: hash device bytes differ from veritysetup's"
    );
    assert_eq!(info.data_blocks, blocks as u64);

    let ok = verify(&case.path("data"), &case.path("ours"), &root, &[]);
    assert!(
        ok.status.success(),
        "verify: {}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let (plain, ours_plain) = case.ours("plain", false);
    let (root_plain, ref_plain) = case.reference("ref-plain", None);
    assert_eq!(plain.root_hash_hex(), root_plain);
    assert!(
        ours_plain == ref_plain,
        "{blocks} blocks: no-superblock bytes differ"
    );
    let ok = verify(
        &case.path("data"),
        &case.path("plain"),
        &root_plain,
        &no_superblock_flags(&plain),
    );
    assert!(
        ok.status.success(),
        "verify: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

#[test]
fn one_block_matches_veritysetup() {
    matches_veritysetup(1);
}

#[test]
fn one_full_hash_block_matches_veritysetup() {
    matches_veritysetup(127);
    matches_veritysetup(128);
}

#[test]
fn two_levels_match_veritysetup() {
    matches_veritysetup(129);
}

#[test]
fn three_levels_match_veritysetup() {
    // 128*128+1 blocks (64 MiB): the first size with three levels; also
    // spans several read batches and the parallel hashing path.
    matches_veritysetup(128 * 128 + 1);
}

#[test]
fn flipped_data_byte_fails_verification() {
    let case = Case::new(300, 7);
    let (info, _) = case.ours("ours", true);
    let mut data = case.data.clone();
    data[200 * BLOCK + 123] ^= 0x01;
    std::fs::write(case.path("data"), &data).expect("write data");
    let out = verify(
        &case.path("data"),
        &case.path("ours"),
        &info.root_hash_hex(),
        &[],
    );
    assert!(
        !out.status.success(),
        "veritysetup verify accepted corrupted data"
    );

    // And a wrong root hash with intact data.
    std::fs::write(case.path("data"), &case.data).expect("write data");
    let mut wrong = info.root_hash;
    wrong[0] ^= 0x80;
    let out = verify(
        &case.path("data"),
        &case.path("ours"),
        &hex::encode(wrong),
        &[],
    );
    assert!(
        !out.status.success(),
        "veritysetup verify accepted a wrong root hash"
    );
}

#[test]
fn deterministic_salt_uuid_and_tree() {
    assert_eq!(salt_for(b"x"), salt_for(b"x"));
    assert_ne!(salt_for(b"x"), salt_for(b"y"));
    assert_eq!(salt_for(b"x").len(), 32);
    let case = Case::new(40, 3);
    let (a, bytes_a) = case.ours("a", true);
    let (b, bytes_b) = case.ours("b", true);
    assert_eq!(a, b);
    assert!(bytes_a == bytes_b);
    let uuid = a.uuid.expect("uuid");
    assert_eq!(uuid.len(), 36);
    assert_eq!(&uuid[14..15], "4", "version 4 shape: {uuid}");
}

#[test]
fn dm_table_line() {
    let case = Case::new(129, 9);
    let (info, _) = case.ours("ours", true);
    assert_eq!(
        info.dm_table("/dev/vda2", "/dev/vda3"),
        format!(
            "0 1032 verity 1 /dev/vda2 /dev/vda3 4096 4096 129 1 sha256 {} {}",
            info.root_hash_hex(),
            info.salt
        )
    );
    let (plain, _) = case.ours("plain", false);
    assert_eq!(plain.hash_start_block(), 0);
}

#[test]
fn rejects_bad_input() {
    let p = VerityParams::default();
    let sink = || Cursor::new(Vec::new());
    let e = build_hash_tree(&[0u8; 100][..], 100, &p, sink(), true).expect_err("unaligned");
    assert!(matches!(
        e,
        VerityError::UnalignedData {
            data_size: 100,
            block_size: 4096
        }
    ));
    let e = build_hash_tree(&[][..], 0, &p, sink(), true).expect_err("empty");
    assert!(matches!(e, VerityError::UnalignedData { .. }));
    let short = vec![0u8; 4096];
    let e = build_hash_tree(&short[..], 8192, &p, sink(), true).expect_err("short read");
    assert!(
        matches!(
            e,
            VerityError::ReadData {
                block: 0,
                blocks: 2,
                ..
            }
        ),
        "{e:?}"
    );
    let big_salt = VerityParams::new(vec![0; 257]);
    let e = build_hash_tree(&short[..], 4096, &big_salt, sink(), true).expect_err("salt");
    assert!(matches!(e, VerityError::SaltTooLong { len: 257 }));
    let odd = VerityParams {
        hash_block_size: 3000,
        ..VerityParams::default()
    };
    let e = build_hash_tree(&short[..], 4096, &odd, sink(), true).expect_err("block size");
    assert_eq!(
        e.to_string(),
        "invalid verity hash block size 3000: want a power of two in 512..=65536"
    );
}

#[test]
fn small_blocks_and_empty_salt_match_veritysetup() {
    // 512-byte hash blocks hold 16 digests: many levels from little data.
    let mut case = Case::new(1000, 11);
    case.params = VerityParams {
        data_block_size: 4096,
        hash_block_size: 512,
        salt: Vec::new(),
    };
    let (info, ours) = case.ours("ours", true);
    let mut cmd = Command::new(tool("veritysetup", "cryptsetup-bin"));
    cmd.arg("format")
        .arg(case.path("data"))
        .arg(case.path("ref"));
    cmd.args(["--salt=-", "--hash-block-size=512"]);
    cmd.arg(format!("--uuid={}", info.uuid.as_deref().expect("uuid")));
    let out = run_ok(&mut cmd);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&info.root_hash_hex()),
        "root hash differs:\n{text}"
    );
    let reference = std::fs::read(case.path("ref")).expect("read ref");
    assert!(ours == reference, "hash device bytes differ");
    assert!(
        info.dm_table("a", "b").ends_with(" -"),
        "empty salt is '-' in the dm table"
    );
}

/// A reader that hands out at most 777 bytes per call.
struct Trickle<'a>(&'a [u8]);

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(777).min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

/// Level 0 the plain way: one full sha256 per block.
fn plain_level0(salt: &[u8], data: &[u8]) -> Vec<u8> {
    data.chunks(BLOCK)
        .flat_map(|b| {
            let mut ctx = Context::new(&SHA256);
            ctx.update(salt);
            ctx.update(b);
            ctx.finish().as_ref().to_vec()
        })
        .collect()
}

#[test]
fn level0_is_the_same_serial_parallel_and_trickled() {
    let salt = [5u8; 32];
    let mut salted = Context::new(&SHA256);
    salted.update(&salt);
    // Around the job size (256 blocks), and several jobs per thread.
    for blocks in [1, 255, 256, 257, 2000] {
        let data = noise(blocks * BLOCK, blocks as u64);
        let want = plain_level0(&salt, &data);
        let mut got = vec![0u8; want.len()];
        hash_data_serial(&mut Trickle(&data), BLOCK, &salted, &mut got).expect("serial");
        assert!(got == want, "{blocks} blocks, serial");
        for threads in [1, 2, 3] {
            got.fill(0);
            hash_data_parallel(&mut &data[..], BLOCK, &salted, threads, &mut got)
                .expect("parallel");
            assert!(got == want, "{blocks} blocks, {threads} threads");
            got.fill(0);
            hash_data_parallel(&mut Trickle(&data), BLOCK, &salted, threads, &mut got)
                .expect("parallel, trickled");
            assert!(got == want, "{blocks} blocks, {threads} threads, trickled");
        }
    }
}

#[test]
fn short_data_names_the_first_block_it_could_not_read() {
    let data = noise(600 * BLOCK, 5);
    let salted = Context::new(&SHA256);
    // 1000 blocks promised, 600 there: the job of blocks 512..768 fails.
    let mut digests = vec![0u8; 1000 * DIGEST];
    for threads in [1, 2] {
        let e = hash_data_parallel(&mut &data[..], BLOCK, &salted, threads, &mut digests)
            .expect_err("short");
        assert!(
            matches!(
                e,
                VerityError::ReadData {
                    block: 512,
                    blocks: 1000,
                    ..
                }
            ),
            "{e:?}"
        );
    }
    let e = hash_data_serial(&mut &data[..], BLOCK, &salted, &mut digests).expect_err("short");
    assert!(
        matches!(e, VerityError::ReadData { block: 512, .. }),
        "{e:?}"
    );
    // Through the public entry point, on the parallel path (over 4 MiB)
    // where there are cores.
    let e = build_hash_tree(
        Trickle(&data),
        1100 * BLOCK as u64,
        &VerityParams::default(),
        Cursor::new(Vec::new()),
        true,
    )
    .expect_err("short");
    assert!(
        matches!(e, VerityError::ReadData { block: 512, .. }),
        "{e:?}"
    );
}

/// `cargo test --release --lib fs::verity::tests::bench -- --ignored --nocapture`
#[test]
#[ignore = "benchmark"]
fn bench_hashing_threads() {
    let data = noise(256 << 20, 1);
    let mut salted = ring::digest::Context::new(&ring::digest::SHA256);
    salted.update(&[7u8; 32]);
    for threads in [1, 2] {
        let mut out = Vec::new();
        let t = std::time::Instant::now();
        hash_blocks(&salted, &data, BLOCK, threads, &mut out);
        let s = t.elapsed().as_secs_f64();
        println!(
            "hash_blocks, {threads} thread(s): {:.0} MB/s",
            data.len() as f64 / 1e6 / s
        );
    }
    let t = std::time::Instant::now();
    let info = build_hash_tree(
        &data[..],
        data.len() as u64,
        &VerityParams::new(vec![1; 32]),
        Cursor::new(Vec::new()),
        true,
    )
    .expect("tree");
    let s = t.elapsed().as_secs_f64();
    println!(
        "build_hash_tree: {:.0} MB/s ({} blocks)",
        data.len() as f64 / 1e6 / s,
        info.data_blocks
    );
}
