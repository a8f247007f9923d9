//! Measurements for `make bench`: our squashfs + verity against
//! `mksquashfs` + `veritysetup format` on the same tree.
//!
//! Unlike the rest of `fs`, this module reads the host file system (to load
//! a realistic tree and to feed the reference tools) and runs programs. The
//! builder never calls it.

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::squashfs::{write_squashfs, SquashfsError, SquashfsOptions};
use super::verity::{build_hash_tree, salt_for, VerityError, VerityParams};
use crate::rootfs::{Entry, Kind, Tree};
use crate::util::hash::sha256_reader;

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot read {path}")]
    ReadHost {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {path}")]
    WriteScratch {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot run {tool}")]
    Spawn {
        tool: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{tool} failed: {stderr}")]
    ToolFailed { tool: &'static str, stderr: String },
    #[error("our squashfs writer failed")]
    Squashfs(#[source] SquashfsError),
    #[error("our verity writer failed")]
    Verity(#[source] VerityError),
    #[error("our verity hash device differs from veritysetup's for the same image, salt and uuid")]
    VerityMismatch,
}

/// Loads host directories into a tree: each `(host_dir, tree_prefix,
/// budget)` walked in sorted order, taking files while they fit in `budget`
/// bytes. Keeps dirs, regular files and symlinks; owners become root, modes
/// are kept. A realistic input: parts of `/usr/bin`, `/usr/share` and
/// `/usr/lib/x86_64-linux-gnu` ([`realistic_host_tree`]).
pub fn tree_from_host(dirs: &[(&Path, &str, u64)]) -> Result<Tree, BenchError> {
    let mut tree = Tree::new();
    for (host, prefix, budget) in dirs {
        let mut left = *budget;
        load_dir(&mut tree, host, prefix, &mut left)?;
    }
    Ok(tree)
}

/// About `mb` MB of this host's binaries (40 %), shared libraries (40 %)
/// and `/usr/share` (20 %, many small files).
pub fn realistic_host_tree(mb: u64) -> Result<Tree, BenchError> {
    let b = mb * 1_000_000;
    tree_from_host(&[
        (Path::new("/usr/bin"), "usr/bin", b * 2 / 5),
        (
            Path::new("/usr/lib/x86_64-linux-gnu"),
            "usr/lib/x86_64-linux-gnu",
            b * 2 / 5,
        ),
        (Path::new("/usr/share"), "usr/share", b / 5),
    ])
}

fn load_dir(tree: &mut Tree, host: &Path, at: &str, left: &mut u64) -> Result<(), BenchError> {
    let read_err = |source| BenchError::ReadHost {
        path: host.to_path_buf(),
        source,
    };
    let mut names: Vec<_> = std::fs::read_dir(host)
        .map_err(read_err)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for name in names {
        let Some(name) = name.to_str() else { continue };
        let path = host.join(name);
        let inside = if at.is_empty() {
            name.to_string()
        } else {
            format!("{at}/{name}")
        };
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777;
        let ft = meta.file_type();
        if ft.is_dir() {
            tree.insert(
                &inside,
                Entry {
                    kind: Kind::Dir,
                    mode,
                    uid: 0,
                    gid: 0,
                },
            );
            load_dir(tree, &path, &inside, left)?;
        } else if ft.is_symlink() {
            let Ok(target) = std::fs::read_link(&path) else {
                continue;
            };
            let Some(target) = target.to_str() else {
                continue;
            };
            tree.insert(&inside, Entry::symlink(target));
        } else if ft.is_file() && meta.len() <= *left {
            let mut data = Vec::with_capacity(meta.len() as usize);
            let Ok(mut f) = File::open(&path) else {
                continue;
            };
            if f.read_to_end(&mut data).is_err() {
                continue;
            }
            *left -= data.len() as u64;
            tree.insert(&inside, Entry::file(data, mode));
        }
        if *left == 0 {
            break;
        }
    }
    Ok(())
}

/// Timings and sizes of one comparison: each time the fastest of `runs`.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub entries: usize,
    pub file_bytes: u64,
    pub level: u32,
    pub runs: usize,
    pub ours_squashfs: Duration,
    pub ours_verity: Duration,
    pub ours_size: u64,
    pub ref_squashfs: Duration,
    pub ref_verity: Duration,
    pub ref_size: u64,
}

impl BenchReport {
    pub fn ours_total(&self) -> Duration {
        self.ours_squashfs + self.ours_verity
    }
    pub fn ref_total(&self) -> Duration {
        self.ref_squashfs + self.ref_verity
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mb = |b: u64| b as f64 / 1e6;
        let rate = |b: u64, d: Duration| mb(b) / d.as_secs_f64().max(1e-9);
        writeln!(
            f,
            "tree: {} entries, {:.1} MB of files; zstd level {}, 128 KiB blocks; best of {} runs",
            self.entries,
            mb(self.file_bytes),
            self.level,
            self.runs
        )?;
        writeln!(
            f,
            "nodeimg : squashfs {:>6.2} s ({:.1} MB) + verity {:>5.2} s ({:.0} MB/s) = {:.2} s",
            self.ours_squashfs.as_secs_f64(),
            mb(self.ours_size),
            self.ours_verity.as_secs_f64(),
            rate(self.ours_size, self.ours_verity),
            self.ours_total().as_secs_f64()
        )?;
        write!(
            f,
            "mksquashfs + veritysetup: {:>6.2} s ({:.1} MB) + {:>5.2} s ({:.0} MB/s) = {:.2} s",
            self.ref_squashfs.as_secs_f64(),
            mb(self.ref_size),
            self.ref_verity.as_secs_f64(),
            rate(self.ref_size, self.ref_verity),
            self.ref_total().as_secs_f64()
        )
    }
}

/// Builds root + verity for `tree` both ways in `scratch`, `runs` times,
/// ours and the reference taking turns, and keeps each step's fastest time
/// (the machine is often shared). Ours, as `nodeimg build` does it
/// (`pipeline::root_image`): tree -> image file; then the file read twice,
/// once for the sha256 that makes the salt and once for the hash tree,
/// written with its superblock. The reference gets `tree` materialised on
/// disk first (untimed; devices and fifos are skipped). Reference command
/// lines: `mksquashfs DIR IMG -comp zstd -Xcompression-level N -b 131072
/// -noappend -all-root -mkfs-time 0 -all-time 0 -no-progress -quiet` and
/// `veritysetup format IMG HASH --salt=HEX --uuid=UUID` with our salt and
/// UUID. After the timings, `veritysetup format` of our image must give our
/// hash device byte for byte.
pub fn compare_with_reference(
    tree: &Tree,
    level: u32,
    runs: usize,
    scratch: &Path,
) -> Result<BenchReport, BenchError> {
    let dir = scratch.join("tree");
    materialize(tree, &dir)?;
    let runs = runs.max(1);
    let one_run = || -> Result<(OursRun, BenchReport), BenchError> {
        let ours = time_ours(tree, level, scratch)?;
        let (ref_squashfs, ref_verity, ref_size) = time_reference(&dir, level, &ours, scratch)?;
        let report = BenchReport {
            entries: tree.len(),
            file_bytes: tree.file_bytes(),
            level,
            runs,
            ours_squashfs: ours.squashfs,
            ours_verity: ours.verity,
            ours_size: ours.size,
            ref_squashfs,
            ref_verity,
            ref_size,
        };
        Ok((ours, report))
    };
    let (mut ours, mut best) = one_run()?;
    for _ in 1..runs {
        let (o, r) = one_run()?;
        best = BenchReport {
            ours_squashfs: best.ours_squashfs.min(r.ours_squashfs),
            ours_verity: best.ours_verity.min(r.ours_verity),
            ref_squashfs: best.ref_squashfs.min(r.ref_squashfs),
            ref_verity: best.ref_verity.min(r.ref_verity),
            ..r
        };
        ours = o;
    }
    check_verity(&ours, scratch)?;
    Ok(best)
}

/// One run of ours: the image, then its verity tree.
struct OursRun {
    squashfs: Duration,
    verity: Duration,
    size: u64,
    image: PathBuf,
    hash: PathBuf,
    salt: Vec<u8>,
    uuid: String,
}

fn time_ours(tree: &Tree, level: u32, scratch: &Path) -> Result<OursRun, BenchError> {
    let opts = SquashfsOptions {
        compression_level: level,
        ..Default::default()
    };
    let image_path = scratch.join("ours.img");
    let t = Instant::now();
    let mut w = BufWriter::with_capacity(1 << 20, create(&image_path)?);
    let info = write_squashfs(tree, 0, &opts, &mut w).map_err(BenchError::Squashfs)?;
    io::Write::flush(&mut w).map_err(|source| write_err(&image_path, source))?;
    drop(w);
    let squashfs = t.elapsed();

    let t = Instant::now();
    let read_err = |source| BenchError::ReadHost {
        path: image_path.clone(),
        source,
    };
    let mut image = File::open(&image_path).map_err(read_err)?;
    let (digest, _) = sha256_reader(BufReader::with_capacity(1 << 20, &image)).map_err(read_err)?;
    image.rewind().map_err(read_err)?;
    let salt = salt_for(&digest);
    let hash_path = scratch.join("ours.verity");
    let hash = BufWriter::with_capacity(1 << 20, create(&hash_path)?);
    let verity = build_hash_tree(
        BufReader::with_capacity(1 << 20, image),
        info.size,
        &VerityParams::new(salt.clone()),
        hash,
        true,
    )
    .map_err(BenchError::Verity)?;
    Ok(OursRun {
        squashfs,
        verity: t.elapsed(),
        size: info.size,
        image: image_path,
        hash: hash_path,
        salt,
        uuid: verity.uuid.unwrap_or_default(),
    })
}

/// One run of `mksquashfs` then `veritysetup format` on the materialised
/// tree in `dir`: their times and the image size.
fn time_reference(
    dir: &Path,
    level: u32,
    ours: &OursRun,
    scratch: &Path,
) -> Result<(Duration, Duration, u64), BenchError> {
    let ref_img = scratch.join("ref.img");
    let t = Instant::now();
    run(
        "mksquashfs",
        Command::new("mksquashfs")
            .arg(dir)
            .arg(&ref_img)
            .args(["-comp", "zstd", "-Xcompression-level", &level.to_string()])
            .args(["-b", "131072", "-noappend", "-all-root", "-mkfs-time", "0"])
            .args(["-all-time", "0", "-no-progress", "-quiet"]),
    )?;
    let squashfs = t.elapsed();
    let size = std::fs::metadata(&ref_img)
        .map_err(|source| write_err(&ref_img, source))?
        .len();
    let t = Instant::now();
    run(
        "veritysetup",
        &mut veritysetup_format(&ref_img, &scratch.join("ref.verity"), ours),
    )?;
    Ok((squashfs, t.elapsed(), size))
}

fn veritysetup_format(data: &Path, hash: &Path, ours: &OursRun) -> Command {
    let mut cmd = Command::new("veritysetup");
    cmd.arg("format")
        .arg(data)
        .arg(hash)
        .arg(format!("--salt={}", hex::encode(&ours.salt)))
        .arg(format!("--uuid={}", ours.uuid));
    cmd
}

/// `veritysetup format` of our image, with our salt and UUID, must write
/// our hash device.
fn check_verity(ours: &OursRun, scratch: &Path) -> Result<(), BenchError> {
    let check = scratch.join("check.verity");
    run(
        "veritysetup",
        &mut veritysetup_format(&ours.image, &check, ours),
    )?;
    let read = |p: &Path| std::fs::read(p).map_err(|source| write_err(p, source));
    if read(&ours.hash)? != read(&check)? {
        return Err(BenchError::VerityMismatch);
    }
    Ok(())
}

fn create(path: &Path) -> Result<File, BenchError> {
    File::create(path).map_err(|source| write_err(path, source))
}

fn write_err(path: &Path, source: io::Error) -> BenchError {
    BenchError::WriteScratch {
        path: path.to_path_buf(),
        source,
    }
}

fn run(tool: &'static str, cmd: &mut Command) -> Result<(), BenchError> {
    let out = cmd
        .output()
        .map_err(|source| BenchError::Spawn { tool, source })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(BenchError::ToolFailed { tool, stderr });
    }
    Ok(())
}

/// Writes dirs, files and symlinks of `tree` under `dir` (modes kept;
/// devices and fifos skipped: creating them needs root).
pub fn materialize(tree: &Tree, dir: &Path) -> Result<(), BenchError> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|source| write_err(dir, source))?;
    for (path, e) in tree.iter().filter(|(p, _)| !p.is_empty()) {
        let host = dir.join(path);
        let done = match &e.kind {
            Kind::Dir => std::fs::create_dir_all(&host),
            Kind::File(data) => std::fs::write(&host, data),
            Kind::Symlink(target) => std::os::unix::fs::symlink(target, &host),
            _ => continue,
        };
        done.map_err(|source| write_err(&host, source))?;
        if !matches!(e.kind, Kind::Symlink(_)) {
            // Directories stay writable until the end so children can land.
            let mode = if matches!(e.kind, Kind::Dir) {
                e.mode | 0o700
            } else {
                e.mode
            };
            std::fs::set_permissions(&host, std::fs::Permissions::from_mode(mode))
                .map_err(|source| write_err(&host, source))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cargo test --release --lib fs::bench -- --ignored --nocapture`
    /// (NODEIMG_BENCH_MB, NODEIMG_BENCH_LEVEL and NODEIMG_BENCH_RUNS tune the run).
    #[test]
    #[ignore = "benchmark: reads /usr and takes minutes"]
    fn bench_against_mksquashfs_and_veritysetup() {
        let env = |k: &str, d: u64| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(d)
        };
        let tree = realistic_host_tree(env("NODEIMG_BENCH_MB", 150)).expect("load host tree");
        let level = env("NODEIMG_BENCH_LEVEL", 15) as u32;
        let scratch = tempfile::tempdir().expect("tempdir");
        let runs = env("NODEIMG_BENCH_RUNS", 3) as usize;
        let report = compare_with_reference(&tree, level, runs, scratch.path()).expect("bench");
        println!("{report}");
    }

    /// Size and time of our writer per zstd level:
    /// `cargo test --release --lib fs::bench::tests::sweep -- --ignored --nocapture`.
    #[test]
    #[ignore = "benchmark: reads /usr and takes minutes"]
    fn sweep_levels() {
        let env = |k: &str, d: u64| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(d)
        };
        let tree = realistic_host_tree(env("NODEIMG_BENCH_MB", 40)).expect("load host tree");
        println!(
            "{} entries, {:.1} MB",
            tree.len(),
            tree.file_bytes() as f64 / 1e6
        );
        for level in [1, 3, 6, 9, 12, 15, 19] {
            let opts = SquashfsOptions {
                compression_level: level,
                ..Default::default()
            };
            let mut out = io::Cursor::new(Vec::new());
            let t = Instant::now();
            let info = write_squashfs(&tree, 0, &opts, &mut out).expect("write");
            let secs = t.elapsed().as_secs_f64();
            println!(
                "level {level:>2}: {:>6.2} s  {:>6.1} MB",
                secs,
                info.size as f64 / 1e6
            );
        }
    }

    /// Write times without a cache, with a cold cache, a warm one, and after one
    /// small file changed, on a host tree:
    /// `NODEIMG_SQUASHFS_TREE=DIR cargo test --release --lib cache_timings -- --ignored --nocapture`.
    #[test]
    #[ignore = "benchmark: needs NODEIMG_SQUASHFS_TREE"]
    fn cache_timings_on_a_host_tree() {
        use std::time::Instant;
        let Some(dir) = std::env::var_os("NODEIMG_SQUASHFS_TREE") else {
            panic!("set NODEIMG_SQUASHFS_TREE to a directory");
        };
        let mut t = tree_from_host(&[(Path::new(&dir), "", u64::MAX)]).expect("load tree");
        let cache = tempfile::tempdir().expect("tempdir");
        let run = |t: &Tree, what: &str, cache: Option<&Path>| {
            let opts = SquashfsOptions {
                block_cache: cache.map(Path::to_path_buf),
                threads: 2,
                ..Default::default()
            };
            let start = Instant::now();
            let mut img = io::Cursor::new(Vec::new());
            let (_, stats) =
                crate::fs::squashfs::write_squashfs_with_stats(t, 1_700_000_000, &opts, &mut img)
                    .expect("write squashfs");
            let secs = start.elapsed().as_secs_f64();
            println!(
                "{what:<12} {secs:>6.3} s  {} bytes  {stats:?}",
                img.get_ref().len()
            );
        };
        for _ in 0..3 {
            run(&t, "no cache", None);
        }
        run(&t, "cold cache", Some(cache.path()));
        for i in 0..3u8 {
            run(&t, "warm cache", Some(cache.path()));
            t.insert("etc/one-file", Entry::file(vec![i; 100], 0o644));
            run(&t, "one changed", Some(cache.path()));
        }
    }
}
