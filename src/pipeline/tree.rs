//! Stage: the root tree. Unpacks the root file system's plain .debs (no
//! maintainer scripts), adds the merged-/usr links, assembles the layers'
//! files, users and settings, and places the update trust key. Keeps each
//! package's copyright file for the SBOM.

use std::collections::BTreeMap;

use super::BuildError;
use crate::progress::Progress;
use crate::rootfs::assemble::{assemble, Artifacts};
use crate::rootfs::usrmerge::add_merged_symlinks;
use crate::rootfs::{Entry, Tree};
use crate::sign::keys::SigningKey;
use crate::source::deb::{unpack_into, DebInfo};
use crate::source::lock::LockedPackage;
use crate::spec::Plan;

/// Where the image keeps the public key its A/B updates must be signed
/// with (the build's `--sign-key`), PEM.
pub const UPDATE_KEY_PATH: &str = contract::paths::relative(contract::paths::UPDATE_SIGNING_KEY);

/// An unpacked .deb that is not the package the lock names.
#[derive(Debug, thiserror::Error)]
#[error("package {package} {version}: the cached or fetched .deb is {found}")]
pub struct WrongPackage {
    pub package: String,
    pub version: String,
    pub found: String,
}

/// The unpacked package is the one the lock names: guards the derived
/// cache (decompressed .debs are named by the .deb's hash, not checked
/// against it on every read).
pub fn check_identity(locked: &LockedPackage, info: &DebInfo) -> Result<(), WrongPackage> {
    if info.package != locked.name || info.version != locked.version {
        return Err(WrongPackage {
            package: locked.name.clone(),
            version: locked.version.clone(),
            found: format!("{} {}", info.package, info.version),
        });
    }
    Ok(())
}

/// The root tree and what its packages declared.
pub struct RootTree {
    pub tree: Tree,
    /// `usr/share/doc/<package>/copyright` of each package that ships one,
    /// read while unpacking (the layers may remove it from the tree).
    pub copyrights: BTreeMap<String, String>,
}

/// The root tree of `plan` from its packages (`debs[i]` is the plain .deb
/// of `packages[i]`) and the build's own artifacts. Each .deb is dropped
/// once unpacked (the tree holds copies), so the packages and the tree
/// are not held whole at the same time.
pub fn assemble_tree(
    plan: &Plan,
    packages: &[&LockedPackage],
    debs: Vec<Vec<u8>>,
    artifacts: &Artifacts,
    signing_key: Option<&SigningKey>,
    progress: &Progress,
) -> Result<RootTree, BuildError> {
    let mut tree = Tree::new();
    let mut owners = BTreeMap::new();
    let mut copyrights = BTreeMap::new();
    let bar = progress.bar(debs.len() as u64, "unpacking");
    for (pkg, bytes) in packages.iter().zip(debs) {
        bar.set_message(pkg.name.clone());
        let info = unpack_into(&pkg.name, &bytes, &mut tree, &mut owners)?;
        drop(bytes);
        check_identity(pkg, &info)?;
        if let Some(text) = info.copyright {
            copyrights.insert(pkg.name.clone(), text);
        }
        for c in &info.conflicts {
            tracing::debug!(
                path = c.path,
                package = pkg.name,
                previous = c.previous_owner,
                "file replaced"
            );
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    add_merged_symlinks(&mut tree)?;
    assemble(&mut tree, plan, artifacts, &owners)?;
    if let Some(key) = signing_key {
        // The trust root for A/B updates: the agent accepts an update only
        // when its manifest verifies with this key.
        tree.insert(
            UPDATE_KEY_PATH,
            Entry::file(key.public_key().to_pem().into_bytes(), 0o644),
        );
    }
    Ok(RootTree { tree, copyrights })
}

/// The OCI images the tree carries, as its `images.json` lists them (the
/// file the assemble stage wrote; empty when the image packs none).
pub fn preloaded_images(tree: &Tree) -> Vec<contract::images::PreloadedImage> {
    let path = contract::paths::relative(contract::images::IMAGES_FILE);
    match tree.get(path).map(|e| &e.kind) {
        Some(crate::rootfs::tree::Kind::File(data)) => {
            serde_json::from_slice(data).unwrap_or_default()
        }
        _ => Vec::new(),
    }
}
