//! The command line: one file per subcommand, each a clap struct and a
//! `run()` that calls library code. Data goes to stdout, logs to stderr.

pub mod bootstrap;
pub mod build;
pub mod cluster;
pub mod config;
pub mod keys;
pub mod lab;
pub mod lab_up;
pub mod lock;
pub mod node;
pub mod pxe;
pub mod recipe;
pub mod sign;
pub mod tool;
pub mod verify;

use std::path::{Path, PathBuf};

use anyhow::Context;
use nodeimg::source::cache::Cache;
use nodeimg::source::fetch::Fetcher;
use nodeimg::source::mirror::{find_mirror, Archive, MirrorError};
use nodeimg::spec::{load_plan, project_dir, Plan};

/// Where packages come from; shared by `lock` and `build`.
#[derive(Debug, Clone, clap::Args)]
pub struct SourceArgs {
    /// Debian mirror base URL (else NODEIMG_DEBIAN_MIRROR, else the host's apt sources).
    #[arg(long, env = "NODEIMG_DEBIAN_MIRROR")]
    pub mirror: Option<String>,
    /// Debian security archive base URL, for `<suite>-security` (else
    /// NODEIMG_DEBIAN_SECURITY_MIRROR, else the host's apt source whose
    /// suite ends in -security).
    #[arg(long, env = "NODEIMG_DEBIAN_SECURITY_MIRROR")]
    pub security_mirror: Option<String>,
    /// Package cache directory (else $XDG_CACHE_HOME/nodeimg or ~/.cache/nodeimg).
    #[arg(long, env = "NODEIMG_CACHE")]
    pub cache_dir: Option<PathBuf>,
    /// OpenPGP keyring that signs the archive's InRelease.
    #[arg(long, default_value = "/usr/share/keyrings/debian-archive-keyring.gpg")]
    pub keyring: PathBuf,
    /// Lock file (default: nodeimg.lock beside the images/ directory).
    #[arg(long)]
    pub lock: Option<PathBuf>,
}

impl SourceArgs {
    pub fn cache(&self) -> Cache {
        Cache::new(Cache::default_root(self.cache_dir.as_deref()))
    }

    /// A client for `archive`'s mirror (see [`nodeimg::source::mirror`]).
    pub fn fetcher(&self, archive: Archive) -> Result<Fetcher, MirrorError> {
        let explicit = match archive {
            Archive::Main => self.mirror.as_deref(),
            Archive::Security => self.security_mirror.as_deref(),
        };
        let root = Path::new("/");
        let url = match find_mirror(archive, explicit, root) {
            // no security source on this host: the archive beside the main one
            Err(not_found @ MirrorError::NotFound { .. }) if archive == Archive::Security => {
                let main = find_mirror(Archive::Main, self.mirror.as_deref(), root)?;
                let beside = nodeimg::source::mirror::security_beside(&main).ok_or(not_found)?;
                tracing::info!(
                    mirror = beside,
                    "no security source in the host's apt sources; using the archive beside the main mirror"
                );
                beside
            }
            other => other?,
        };
        tracing::debug!(%archive, mirror = url, "using Debian mirror");
        Ok(Fetcher::new(&url))
    }

    pub fn lock_path(&self, image: &Path) -> PathBuf {
        self.lock
            .clone()
            .unwrap_or_else(|| project_dir(image).join("nodeimg.lock"))
    }
}

/// Every `*.toml` in the directory of `image`, sorted: the set one lock covers.
pub fn sibling_images(image: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let dir = image
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    images_in(dir)
}

pub fn images_in(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading image directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    Ok(v)
}

pub fn load_plans(images: &[PathBuf]) -> anyhow::Result<Vec<Plan>> {
    images.iter().map(|p| Ok(load_plan(p)?)).collect()
}
