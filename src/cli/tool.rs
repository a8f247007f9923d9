//! `nodeimg tool fetch NAME --out DIR`: unpack a judge package pinned in
//! the lock (`tools.toml`) into DIR, through the same hash-checked cache and
//! safe extraction as image packages. Tests run cosign this way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nodeimg::progress::Progress;
use nodeimg::rootfs::{Kind, Tree};
use nodeimg::source::deb::unpack_into;
use nodeimg::source::lock::Lock;
use nodeimg::source::locked::fetch_packages;
use std::os::unix::fs::PermissionsExt;

use super::SourceArgs;

#[derive(Debug, clap::Args)]
pub struct ToolArgs {
    #[command(subcommand)]
    pub command: ToolCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ToolCommand {
    /// Unpack a locked tool package into DIR (regular files and directories
    /// only: symlinks are skipped, so nothing is written outside DIR).
    Fetch(FetchArgs),
}

#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// Package name, as listed in tools.toml and nodeimg.lock.
    pub name: String,
    /// Directory to unpack into (created).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub source: SourceArgs,
}

pub fn run(args: ToolArgs, quiet: bool) -> anyhow::Result<i32> {
    match args.command {
        ToolCommand::Fetch(a) => fetch(a, quiet),
    }
}

fn fetch(args: FetchArgs, quiet: bool) -> anyhow::Result<i32> {
    let lock_path = args
        .source
        .lock
        .clone()
        .unwrap_or_else(|| PathBuf::from("nodeimg.lock"));
    let lock = Lock::read(&lock_path)?;
    let pkg = lock.tool(&lock_path, &args.name)?;
    let cache = args.source.cache();
    let source = args.source.clone();
    let mirrors = move |archive| source.fetcher(archive);
    let debs = fetch_packages(
        &[pkg],
        &lock.sources,
        &cache,
        &mirrors,
        &Progress::detect(quiet),
    )?;
    let mut tree = Tree::new();
    for deb in &debs {
        unpack_into(&pkg.name, deb, &mut tree, &mut BTreeMap::new())?;
    }
    let files = write_tree(&tree, &args.out)?;
    println!(
        "{} {} ({} files) in {}",
        pkg.name,
        pkg.version,
        files,
        args.out.display()
    );
    Ok(0)
}

/// Writes the tree's directories, regular files and symlinks under `out`.
/// Tree paths are normalised (no `..`, no leading `/`), and the symlinks
/// are made last, once nothing more is written, so no write can follow
/// one out of `out`. An existing entry at a symlink's path is replaced.
fn write_tree(tree: &Tree, out: &Path) -> anyhow::Result<usize> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut files = 0;
    let mut links = Vec::new();
    for (path, entry) in tree.iter() {
        if path.is_empty() {
            continue;
        }
        let dest = out.join(path);
        match &entry.kind {
            Kind::Dir => std::fs::create_dir_all(&dest)
                .with_context(|| format!("creating {}", dest.display()))?,
            Kind::File(data) => {
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent)
                        .with_context(|| format!("creating {}", parent.display()))?;
                }
                nodeimg::util::atomic::write(&dest, data)
                    .with_context(|| format!("writing {}", dest.display()))?;
                std::fs::set_permissions(
                    &dest,
                    std::fs::Permissions::from_mode(entry.mode & 0o755),
                )
                .with_context(|| format!("setting the mode of {}", dest.display()))?;
                files += 1;
            }
            Kind::Symlink(target) => links.push((dest, target)),
            _ => {}
        }
    }
    for (dest, target) in links {
        // a link under a path that an earlier link replaced would be made
        // wherever that link points
        let mut at = dest.parent();
        while let Some(dir) = at.filter(|d| d.starts_with(out) && *d != out) {
            if std::fs::symlink_metadata(dir).map_or(true, |m| !m.is_dir()) {
                anyhow::bail!(
                    "{}: its directory {} is not a directory of the package",
                    dest.display(),
                    dir.display()
                );
            }
            at = dir.parent();
        }
        match std::fs::symlink_metadata(&dest) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&dest),
            Ok(_) => std::fs::remove_file(&dest),
            Err(_) => Ok(()),
        }
        .with_context(|| format!("replacing {}", dest.display()))?;
        std::os::unix::fs::symlink(target, &dest)
            .with_context(|| format!("linking {} to {target}", dest.display()))?;
        files += 1;
    }
    Ok(files)
}
