//! `nodeimg build IMAGE --out DIR`: build an image from its spec and lock.

use std::path::PathBuf;

use anyhow::Context;
use nodeimg::build::{build, BuildInputs};
use nodeimg::fs::squashfs::SquashfsOptions;
use nodeimg::progress::Progress;
use nodeimg::rootfs::assemble::Artifacts;
use nodeimg::source::lock::Lock;
use nodeimg::source::locking::lock_images;
use nodeimg::spec::{check_outputs, load_plan, OutputKind};

use super::{load_plans, sibling_images, SourceArgs};

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Image spec, e.g. images/worker.toml.
    pub image: PathBuf,
    /// Output directory (created; its manifest.json is replaced last).
    #[arg(long)]
    pub out: PathBuf,
    /// Re-resolve every image beside IMAGE and rewrite the lock first.
    #[arg(long)]
    pub update_lock: bool,
    /// The nodeagent binary for layers that place it (static build).
    #[arg(long, env = "NODEIMG_AGENT")]
    pub agent: Option<PathBuf>,
    /// Timestamp for every file (else the lock's archive date).
    #[arg(long, env = "SOURCE_DATE_EPOCH")]
    pub source_date_epoch: Option<u64>,
    /// zstd level of the root image.
    #[arg(long, default_value_t = SquashfsOptions::default().compression_level)]
    pub compression_level: u32,
    /// Outputs to write, replacing the spec's `outputs` (comma-separated or
    /// repeated): uki, disk-raw, disk-qcow2, vhd, gce, vmdk, pxe; `none` for
    /// just the root, verity, kernel and initramfs.
    #[arg(long = "format", value_delimiter = ',')]
    pub formats: Vec<String>,
    #[command(flatten)]
    pub source: SourceArgs,
}

pub fn run(args: BuildArgs, quiet: bool) -> anyhow::Result<i32> {
    let mut plan = load_plan(&args.image)?;
    if !args.formats.is_empty() {
        plan.outputs.clear();
        for name in args.formats.iter().filter(|n| n.as_str() != "none") {
            plan.outputs
                .insert(name.parse::<OutputKind>().context("--format")?);
        }
        check_outputs(&plan).map_err(|problem| anyhow::anyhow!("--format: {problem}"))?;
    }
    let lock_path = args.source.lock_path(&args.image);
    let cache = args.source.cache();
    if args.update_lock || !lock_path.exists() {
        let plans = load_plans(&sibling_images(&args.image)?)?;
        let fetcher = args.source.fetcher()?;
        let mut lock = lock_images(&plans, &fetcher, &cache, &args.source.keyring)?;
        lock.write(&lock_path)
            .with_context(|| format!("writing {}", lock_path.display()))?;
        tracing::info!(lock = %lock_path.display(), "lock updated");
    }
    let lock = Lock::read(&lock_path)?;
    let mut artifacts = Artifacts::new();
    if let Some(agent) = &args.agent {
        let data = std::fs::read(agent)
            .with_context(|| format!("reading the agent binary {}", agent.display()))?;
        artifacts.insert("nodeagent".into(), data);
    }
    let source = args.source.clone();
    let fetcher = move || source.fetcher();
    let inputs = BuildInputs {
        lock: &lock,
        lock_path: &lock_path,
        cache: &cache,
        fetcher: &fetcher,
        source_date_epoch: args.source_date_epoch,
        artifacts,
        squashfs: SquashfsOptions {
            compression_level: args.compression_level,
            ..SquashfsOptions::default()
        },
        progress: Progress::detect(quiet),
    };
    let manifest = build(&plan, &inputs, &args.out)?;
    for a in &manifest.artifacts {
        println!(
            "{:<10} {:>12} {}  {}",
            a.kind,
            a.size,
            a.sha256,
            args.out.join(&a.path).display()
        );
    }
    println!("root hash {}", manifest.verity.root_hash);
    Ok(0)
}
