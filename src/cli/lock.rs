//! `nodeimg lock [IMAGE...]`: resolve images against the signed archive and
//! write `nodeimg.lock`.

use std::path::PathBuf;

use anyhow::Context;
use nodeimg::source::locking::lock_images;
use nodeimg::spec::{load_tools, project_dir};

use super::{images_in, load_plans, SourceArgs};

#[derive(Debug, clap::Args)]
pub struct LockArgs {
    /// Image specs to lock (default: every images/*.toml).
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    pub source: SourceArgs,
}

pub fn run(args: LockArgs) -> anyhow::Result<i32> {
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
    let mut lock = lock_images(
        &plans,
        &tools,
        &fetcher,
        &args.source.cache(),
        &args.source.keyring,
    )?;
    lock.write(&lock_path)
        .with_context(|| format!("writing {}", lock_path.display()))?;
    for (name, img) in &lock.images {
        println!("{name}: {} packages", img.packages.len());
    }
    println!("wrote {}", lock_path.display());
    Ok(0)
}
