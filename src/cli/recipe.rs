//! `nodeimg recipe build NAME`: build a Go recipe's upstream programs
//! (`recipes/NAME/`), or take them from the cache, checked against the
//! lock when it pins the recipe; `--out DIR` copies them out (the tests'
//! kubectl, `make repro`).

use std::path::PathBuf;

use anyhow::Context;
use nodeimg::progress::Progress;
use nodeimg::source::gobuild::{build_recipe, locked_binaries};
use nodeimg::source::lock::Lock;
use nodeimg::spec::load_recipe;
use nodeimg::util::{atomic, hash};
use std::os::unix::fs::PermissionsExt;

use super::SourceArgs;

#[derive(Debug, clap::Args)]
pub struct RecipeArgs {
    #[command(subcommand)]
    pub command: RecipeCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum RecipeCommand {
    /// Build (or find cached) every program of recipes/NAME; print each
    /// sha256, and refuse one that differs from the lock.
    Build(BuildArgs),
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The recipe: a folder under recipes/.
    pub name: String,
    /// Copy these programs (default: all) into DIR (created), mode 0755.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Only these programs (repeatable).
    #[arg(long = "program")]
    pub programs: Vec<String>,
    /// The project directory holding recipes/ and nodeimg.lock.
    #[arg(long, default_value = ".")]
    pub project: PathBuf,
    /// Build without comparing to the lock (a new recipe, before `nodeimg lock`).
    #[arg(long)]
    pub unlocked: bool,
    #[command(flatten)]
    pub source: SourceArgs,
}

pub fn run(args: RecipeArgs, quiet: bool) -> anyhow::Result<i32> {
    match args.command {
        RecipeCommand::Build(a) => build(a, quiet),
    }
}

fn build(args: BuildArgs, quiet: bool) -> anyhow::Result<i32> {
    let recipe = load_recipe(&args.project, &args.name)?;
    let cache = args.source.cache();
    let progress = Progress::detect(quiet);
    let programs: Vec<&str> = if args.programs.is_empty() {
        recipe.programs.keys().map(String::as_str).collect()
    } else {
        args.programs.iter().map(String::as_str).collect()
    };
    if let Some(p) = programs.iter().find(|p| !recipe.programs.contains_key(**p)) {
        anyhow::bail!("recipe {} has no program `{p}`", recipe.name);
    }
    let binaries = if args.unlocked {
        let digests = build_recipe(&recipe, &cache, &progress)?;
        let mut out = std::collections::BTreeMap::new();
        for p in &programs {
            let sha = digests
                .get(*p)
                .and_then(|d| hash::parse_sha256(d))
                .context("the build lists no digest")?;
            match cache.get(&sha)? {
                nodeimg::source::cache::Lookup::Hit(data) => {
                    out.insert(p.to_string(), data);
                }
                _ => anyhow::bail!("{p} vanished from the cache"),
            }
        }
        out
    } else {
        let lock_path = args
            .source
            .lock
            .clone()
            .unwrap_or_else(|| args.project.join("nodeimg.lock"));
        let lock = Lock::read(&lock_path)?;
        locked_binaries(
            &recipe,
            lock.recipes.get(&args.name),
            &programs,
            &cache,
            &progress,
        )?
    };
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    for (program, data) in &binaries {
        println!("{}  {program}", hash::sha256_hex(data));
        if let Some(dir) = &args.out {
            let path = dir.join(program);
            atomic::write_with(&path, |f| {
                use std::io::Write;
                f.write_all(data)?;
                f.set_permissions(std::fs::Permissions::from_mode(0o755))
            })
            .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(0)
}
