//! `nodeimg build IMAGE --out DIR`: build an image from its spec and lock.

use std::path::{Path, PathBuf};

use anyhow::Context;
use nodeimg::fs::squashfs::SquashfsOptions;
use nodeimg::pipeline::{build, BuildInputs};
use nodeimg::progress::Progress;
use nodeimg::rootfs::assemble::Artifacts;
use nodeimg::source::gobuild::locked_binaries;
use nodeimg::source::lock::Lock;
use nodeimg::source::locking::lock_images;
use nodeimg::spec::{check_outputs, load_plan, load_recipe, project_dir, OutputKind};

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
    /// The nodeagent binary for layers that place it (a static build).
    /// Default: `nodeagent` beside this nodeimg, else the static build in
    /// the cargo target directory nodeimg runs from (`make agent`).
    #[arg(long, env = "NODEIMG_AGENT")]
    pub agent: Option<PathBuf>,
    /// The static `pause` program for the sandbox image (found like the agent).
    #[arg(long, env = "NODEIMG_PAUSE")]
    pub pause: Option<PathBuf>,
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
    /// Sign manifest.json into manifest.sigstore.json with this key
    /// (cosign format; its password from NODEIMG_KEY_PASSWORD or
    /// COSIGN_PASSWORD); the image also carries its public key as the
    /// trust root for updates.
    #[arg(long, env = "NODEIMG_SIGNING_KEY")]
    pub sign_key: Option<PathBuf>,
    /// Authenticode-sign systemd-boot and the UKI with KEYDIR's Secure Boot
    /// db key (db.crt, db.key from `nodeimg keys gen`).
    #[arg(long, value_name = "KEYDIR")]
    pub secure_boot_key: Option<PathBuf>,
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
        let tools = nodeimg::spec::load_tools(&nodeimg::spec::project_dir(&args.image))?;
        let mirrors = |archive| args.source.fetcher(archive);
        let mut lock = lock_images(&plans, &tools, &mirrors, &cache, &args.source.keyring)?;
        super::lock::lock_recipes(&mut lock, &lock_path, &plans, &cache, quiet)?;
        lock.write(&lock_path)
            .with_context(|| format!("writing {}", lock_path.display()))?;
        tracing::info!(lock = %lock_path.display(), "lock updated");
    }
    let lock = Lock::read(&lock_path)?;
    let mut artifacts = Artifacts::new();
    for (name, explicit) in [("nodeagent", &args.agent), ("pause", &args.pause)] {
        if let Some(path) = find_program(name, explicit.as_deref()) {
            let data = std::fs::read(&path)
                .with_context(|| format!("reading the {name} binary {}", path.display()))?;
            check_static(&path, &data)?;
            tracing::info!(path = %path.display(), "{name}");
            artifacts.insert(name.into(), data);
        }
    }
    for (name, programs) in plan.recipe_programs() {
        let recipe = load_recipe(&project_dir(&args.image), &name)?;
        let wanted: Vec<&str> = programs.iter().map(String::as_str).collect();
        let binaries = locked_binaries(
            &recipe,
            lock.recipes.get(&name),
            &wanted,
            &cache,
            &Progress::detect(quiet),
        )?;
        for (program, data) in binaries {
            artifacts.insert(format!("{name}/{program}"), data);
        }
    }
    let source = args.source.clone();
    let mirrors = move |archive| source.fetcher(archive);
    let signing_key = match &args.sign_key {
        Some(path) => Some(super::keys::load_signing_key(path)?),
        None => None,
    };
    let pe_signer = match &args.secure_boot_key {
        Some(dir) => Some(
            nodeimg::sign::authenticode::PeSigner::from_keydir(dir).with_context(|| {
                format!("loading the Secure Boot db key from {}", dir.display())
            })?,
        ),
        None => None,
    };
    let inputs = BuildInputs {
        lock: &lock,
        signing_key: signing_key.as_ref(),
        pe_signer: pe_signer.as_ref(),
        lock_path: &lock_path,
        cache: &cache,
        mirrors: &mirrors,
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
    if signing_key.is_some() {
        let bundle = args.out.join(nodeimg::sign::bundle::BUNDLE_FILE);
        println!(
            "{:<10} {:>12} {}  {}",
            nodeimg::sign::bundle::BUNDLE_KIND,
            std::fs::metadata(&bundle).map(|m| m.len()).unwrap_or(0),
            "-".repeat(64),
            bundle.display()
        );
    }
    println!("root hash {}", manifest.verity.root_hash);
    Ok(0)
}

/// A static program the image places (`nodeagent`, `pause`): `explicit`
/// when given (it must then exist), else the first of [`program_candidates`]
/// that is a file. `None` lets the build say whether the image needs it.
fn find_program(name: &str, explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = explicit {
        return Some(path.to_path_buf());
    }
    let exe = std::env::current_exe().ok()?;
    let candidates = program_candidates(&exe, name);
    // A static one wins: `cargo build` leaves a dynamic debug nodeagent
    // beside a debug nodeimg, and the static `make agent` build must not
    // be shadowed by it. With none static, the first found is named (and
    // refused by check_static).
    let is_static = |p: &&PathBuf| {
        std::fs::read(p)
            .ok()
            .is_some_and(|d| goblin::elf::Elf::parse(&d).is_ok_and(|e| e.interpreter.is_none()))
    };
    let found = candidates
        .iter()
        .filter(|p| p.is_file())
        .find(is_static)
        .or_else(|| candidates.iter().find(|p| p.is_file()))
        .cloned();
    if found.is_none() {
        tracing::debug!(looked_at = ?candidates, "no {name} found");
    }
    found
}

/// Where a program sits relative to the running nodeimg: installed beside
/// it, or built by `make agent` into the same cargo target directory
/// (`target/release/nodeimg` and `target/x86_64-unknown-linux-gnu/release/NAME`).
fn program_candidates(exe: &Path, name: &str) -> Vec<PathBuf> {
    let Some(bin_dir) = exe.parent() else {
        return Vec::new();
    };
    let mut out = vec![bin_dir.join(name)];
    if let Some(target) = bin_dir.parent() {
        out.push(target.join(AGENT_TARGET).join("release").join(name));
    }
    out
}

/// The target `make agent` builds the static programs for (glibc with crt-static).
const AGENT_TARGET: &str = "x86_64-unknown-linux-gnu";

/// PID 1 runs before any library path exists, and `pause` in an image with
/// no libraries: a dynamically linked one would fail only at boot, so it is
/// refused here.
fn check_static(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let elf = goblin::elf::Elf::parse(data)
        .with_context(|| format!("{} is not an ELF file", path.display()))?;
    if let Some(interp) = elf.interpreter {
        anyhow::bail!(
            "{} is dynamically linked (interpreter {interp}); nodeagent and pause run where \
             no library exists: build them static with `make agent`",
            path.display()
        );
    }
    Ok(())
}
