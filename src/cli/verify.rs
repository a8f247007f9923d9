//! `nodeimg verify DIR --key signing.pub`: checks the bundle's signature
//! over DIR/manifest.json, then every artifact's size and sha256. Prints
//! one line per check (or the report object with `--json`) on stdout and
//! exits 0 only when everything holds, 1 otherwise. No network.

use std::path::PathBuf;

use nodeimg::sign::keys::PublicKey;
use nodeimg::sign::verify::{verify_dir, Report, VerifyOptions};

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Build output directory holding manifest.json and manifest.sigstore.json.
    pub dir: PathBuf,
    /// Public key (PEM): signing.pub from `nodeimg keys gen`, or cosign.pub.
    #[arg(long)]
    pub key: PathBuf,
    /// Bundle to check instead of DIR/manifest.sigstore.json.
    #[arg(long)]
    pub bundle: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Hashing threads (default: the CPU count).
    #[arg(long)]
    pub jobs: Option<usize>,
}

/// One hashing thread per CPU.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub fn run(args: VerifyArgs) -> anyhow::Result<i32> {
    let key = PublicKey::load(&args.key)?;
    let opts = VerifyOptions {
        bundle: args.bundle.clone(),
        key_name: args.key.display().to_string(),
        threads: args.jobs.unwrap_or_else(default_threads).max(1),
    };
    let report = verify_dir(&args.dir, &key, &opts);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        for f in &report.failures {
            eprintln!("error: {f}");
        }
    } else {
        print_summary(&report);
    }
    Ok(if report.ok { 0 } else { 1 })
}

fn print_summary(r: &Report) {
    let sig = &r.signature;
    println!(
        "signature  {}  {} with {}",
        if sig.ok { "ok  " } else { "FAIL" },
        sig.bundle.display(),
        sig.key
    );
    for a in &r.artifacts {
        println!(
            "artifact   {}  {} ({}) {} bytes sha256 {}",
            if a.ok { "ok  " } else { "FAIL" },
            a.path,
            a.kind,
            a.actual_size.unwrap_or(0),
            a.actual_sha256.as_deref().unwrap_or("-"),
        );
    }
    for f in &r.failures {
        println!("error      {f}");
    }
    if r.ok {
        println!(
            "verified   {} artifacts, {} bytes",
            r.artifacts.len(),
            r.bytes_hashed
        );
    } else if !r.artifacts_checked {
        println!("artifacts  not checked: the manifest's signature does not hold");
    }
}
