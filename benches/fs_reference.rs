//! `cargo bench --bench fs_reference -- DIR [LEVEL [RUNS]]`: nodeimg's
//! squashfs + verity against `mksquashfs` + `veritysetup format` on the tree
//! in DIR (scripts/bench.sh passes the unpacked worker image). Both sides
//! run RUNS times (default `BENCH_RUNS`, else 3), taking turns, and each
//! step keeps its fastest time. Prints one markdown table row; the numbers
//! are wall-clock seconds of each step. Fails if `veritysetup format` of
//! our image does not write our hash device byte for byte.

use std::path::Path;

use nodeimg::fs::bench::{compare_with_reference, tree_from_host};
use nodeimg::fs::squashfs::SquashfsOptions;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let Some(dir) = args.first() else {
        eprintln!("usage: cargo bench --bench fs_reference -- DIR [LEVEL [RUNS]]");
        std::process::exit(2);
    };
    let level = args
        .get(1)
        .and_then(|l| l.parse().ok())
        .unwrap_or(SquashfsOptions::default().compression_level);
    let runs = args
        .get(2)
        .cloned()
        .or_else(|| std::env::var("BENCH_RUNS").ok())
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let tree = match tree_from_host(&[(Path::new(dir), "", u64::MAX)]) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: loading {dir}: {e}");
            std::process::exit(1);
        }
    };
    let scratch = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: scratch dir: {e}");
            std::process::exit(1);
        }
    };
    match compare_with_reference(&tree, level, runs, scratch.path()) {
        Ok(r) => {
            eprintln!("{r}");
            println!(
                "| {} | {:.1} MB | {:.2} s ({:.1} MB) | {:.2} s | {:.2} s ({:.1} MB) | {:.2} s | {:.2} |",
                level,
                r.file_bytes as f64 / 1e6,
                r.ours_squashfs.as_secs_f64(),
                r.ours_size as f64 / 1e6,
                r.ours_verity.as_secs_f64(),
                r.ref_squashfs.as_secs_f64(),
                r.ref_size as f64 / 1e6,
                r.ref_verity.as_secs_f64(),
                r.ref_total().as_secs_f64() / r.ours_total().as_secs_f64().max(1e-9),
            );
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
