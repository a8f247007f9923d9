//! `nodeimg lock [IMAGE...]`: resolve images against the signed archive (the
//! base suite and its `-updates` and `-security` pockets) and write
//! `nodeimg.lock`. `nodeimg lock --check` resolves the same way and writes
//! no lock: it lists the locked packages that have newer versions and
//! exits [`UPDATES_AVAILABLE`] when there are any.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nodeimg::progress::Progress;
use nodeimg::source::cache::Cache;
use nodeimg::source::gobuild::lock_recipe;
use nodeimg::source::lock::{Lock, LockError};
use nodeimg::source::locking::lock_images;
use nodeimg::source::updates::{changes, Change, TOOLS};
use nodeimg::spec::{load_recipe, load_tools, project_dir, Plan};

use super::{images_in, load_plans, SourceArgs};

/// `lock --check`'s exit code when a locked package has a newer version
/// (or the closure changed): lock again.
pub const UPDATES_AVAILABLE: i32 = 3;

#[derive(Debug, clap::Args)]
pub struct LockArgs {
    /// Image specs to lock (default: every images/*.toml).
    pub images: Vec<PathBuf>,
    /// Write no lock: read and verify every suite again as a lock does
    /// (indexes go into the package cache) and list, per image, the locked
    /// packages that have newer versions and the suite they are in. Exit 0
    /// when the lock is current, 3 when it is not.
    #[arg(long)]
    pub check: bool,
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
    let tools = load_tools(&project_dir(first))?;
    let cache = args.source.cache();
    if args.check {
        return check(&args, &lock_path, &plans, &tools, &cache);
    }
    let previous = match Lock::read(&lock_path) {
        Ok(lock) => Some(lock),
        Err(LockError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            None
        }
        // Locking every image replaces whatever was there.
        Err(e) if args.images.is_empty() => {
            tracing::info!("replacing {}: {e}", lock_path.display());
            None
        }
        // Locking some: the others would be lost with the unreadable lock.
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "cannot keep the other images of {}; lock every image \
                 (`nodeimg lock` without image arguments)",
                lock_path.display()
            )))
        }
    };
    let mirrors = |archive| args.source.fetcher(archive);
    let mut lock = lock_images(&plans, &tools, &mirrors, &cache, &args.source.keyring)?;
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
    for s in &lock.sources {
        println!("{} ({} archive): {}", s.suite, s.archive, s.date);
    }
    let suite_of: std::collections::BTreeMap<&str, &str> = lock
        .packages
        .iter()
        .map(|p| (p.name.as_str(), p.suite.as_str()))
        .collect();
    let base = lock.base().map(|b| b.suite.as_str());
    for (name, img) in &lock.images {
        let pocketed = img
            .packages
            .iter()
            .chain(&img.kernel)
            .chain(&img.uefi)
            .filter(|n| suite_of.get(n.as_str()).copied() != base)
            .count();
        println!(
            "{name}: {} packages, {} kernel and UEFI; {pocketed} of them from updates or security",
            img.packages.len(),
            img.kernel.len() + img.uefi.len()
        );
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

/// `lock --check`: the lock must match the specs (as a build requires);
/// then the suites are read and resolved as `nodeimg lock` would, and what
/// would change is printed. Only verified indexes are stored, in the cache.
fn check(
    args: &LockArgs,
    lock_path: &Path,
    plans: &[Plan],
    tools: &[String],
    cache: &Cache,
) -> anyhow::Result<i32> {
    let locked = Lock::read(lock_path)?;
    for plan in plans {
        locked.packages_for(lock_path, plan)?;
    }
    let mirrors = |archive| args.source.fetcher(archive);
    let fresh = lock_images(plans, tools, &mirrors, cache, &args.source.keyring)?;
    for s in &fresh.sources {
        let state = match locked.source(&s.suite) {
            Some(l) if l.inrelease_sha256 == s.inrelease_sha256 => {
                "unchanged since the lock".into()
            }
            Some(l) => format!("changed since the lock (locked InRelease dated {})", l.date),
            None => "not in the lock".into(),
        };
        println!("{} ({} archive): {}, {state}", s.suite, s.archive, s.date);
    }
    let found = changes(&locked, &fresh);
    let mut names: Vec<&str> = plans.iter().map(|p| p.name.as_str()).collect();
    if !fresh.tools.is_empty() {
        names.push(TOOLS);
    }
    for name in names {
        let mine: Vec<&Change> = found.iter().filter(|c| c.image == name).collect();
        if mine.is_empty() {
            println!("{name}: current");
            continue;
        }
        let newer = mine.iter().filter(|c| c.is_newer()).count();
        println!("{name}: {newer} newer, {} changes", mine.len());
        for c in mine {
            println!("  {c}");
        }
    }
    if found.is_empty() {
        println!("{}: current", lock_path.display());
        Ok(0)
    } else {
        println!(
            "{}: {} changes; run `nodeimg lock` to take them",
            lock_path.display(),
            found.len()
        );
        Ok(UPDATES_AVAILABLE)
    }
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
