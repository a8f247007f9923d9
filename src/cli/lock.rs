//! `nodeimg lock [IMAGE...]`: resolve images against the signed archive and
//! write `nodeimg.lock`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nodeimg::progress::Progress;
use nodeimg::source::cache::Cache;
use nodeimg::source::gobuild::lock_recipe;
use nodeimg::source::lock::Lock;
use nodeimg::source::locking::lock_images;
use nodeimg::spec::{load_recipe, load_tools, project_dir, Plan};

use super::{images_in, load_plans, SourceArgs};

#[derive(Debug, clap::Args)]
pub struct LockArgs {
    /// Image specs to lock (default: every images/*.toml).
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    pub source: SourceArgs,
}

pub fn run(args: LockArgs, quiet: bool) -> anyhow::Result<i32> {
    let images = if args.images.is_empty() {
        images_in(std::path::Path::new("images"))?
    } else {
        args.images.clone()
    };
    let Some(first) = images.first() else {
        anyhow::bail!("no image specs given and none in images/")
    };
    let lock_path = args.source.lock_path(first);
    let plans = load_plans(&images)?;
    let fetcher = args.source.fetcher()?;
    let tools = load_tools(&project_dir(first))?;
    let cache = args.source.cache();
    let previous = Lock::read(&lock_path).ok();
    let mut lock = lock_images(&plans, &tools, &fetcher, &cache, &args.source.keyring)?;
    lock_recipes(&mut lock, &lock_path, &plans, &cache, quiet)?;
    // images named: the lock's other images stay as they were
    if let (false, Some(previous)) = (args.images.is_empty(), &previous) {
        let kept = lock.keep_others(previous, &lock_path)?;
        if !kept.is_empty() {
            println!("kept as locked: {}", kept.join(", "));
        }
    }
    lock.write(&lock_path)
        .with_context(|| format!("writing {}", lock_path.display()))?;
    for (name, img) in &lock.images {
        println!("{name}: {} packages", img.packages.len());
    }
    for (name, r) in &lock.recipes {
        println!(
            "recipe {name}: {} {} programs ({})",
            r.version,
            r.binaries.len(),
            r.go
        );
    }
    println!("wrote {}", lock_path.display());
    Ok(0)
}

/// Pins every recipe a plan places programs from. A recipe whose inputs
/// equal the previous lock's entry keeps it (no compile); any other is
/// built (or found built in the cache) and its binaries' sha256s recorded.
pub fn lock_recipes(
    lock: &mut Lock,
    lock_path: &Path,
    plans: &[Plan],
    cache: &Cache,
    quiet: bool,
) -> anyhow::Result<()> {
    let previous = Lock::read(lock_path).ok();
    let mut names = BTreeSet::new();
    for plan in plans {
        for recipe in plan.recipe_programs().into_keys() {
            if names.insert(recipe.clone()) {
                let r = load_recipe(&project_dir(&plan.image_path), &recipe)?;
                let kept = previous
                    .as_ref()
                    .and_then(|p| p.recipes.get(&recipe))
                    .filter(|l| l.inputs == r.inputs && l.go == r.go);
                let locked = match kept {
                    Some(l) => l.clone(),
                    None => lock_recipe(&r, cache, &Progress::detect(quiet))?,
                };
                lock.recipes.insert(recipe, locked);
            }
        }
    }
    Ok(())
}
