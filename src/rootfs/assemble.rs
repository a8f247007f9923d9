//! Applies a [`Plan`]'s layers to a tree of unpacked packages: drops
//! package `/etc` files no layer keeps, removes unwanted paths, generates
//! what maintainer scripts would have made, writes users, sysctls, module
//! policy and layer files, and checks that no shell slipped in.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::tree::{Entry, Kind, Tree};
use crate::spec::{FileContent, Plan};

#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error("layer `{layer}` places build artifact `{artifact}` at /{path}, but the build has no such artifact (`make agent` builds nodeagent and pause; or pass --agent/--pause)")]
    MissingArtifact {
        layer: String,
        artifact: String,
        path: String,
    },
    #[error("image has a shell at /{path} (from {origin}) but no layer is marked `debug = true`; images ship no shell")]
    Shell { path: String, origin: String },
    #[error("layer file /{path} is under /{parent}, which is not a directory in the tree")]
    NotADirectory { path: String, parent: String },
    #[error("[[oci_images]] {name}: packed to {got}, but its layer pins digest = \"{pinned}\" (a relocked recipe makes a new image: pin the new digest in the layer and in contract::stack, whose manifests name it)")]
    ImageDigest {
        name: String,
        got: String,
        pinned: String,
    },
    #[error("[[oci_images]] {name}: reading its archive {path}")]
    ReadArchive {
        name: String,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("[[oci_images]] {name}: archive {path} has sha256 {got}, but its layer pins sha256 = \"{pinned}\" (a different file: check it, then pin the new hash)")]
    ArchiveHash {
        name: String,
        path: std::path::PathBuf,
        got: String,
        pinned: String,
    },
    #[error(transparent)]
    Oci(#[from] crate::oci::OciError),
}

/// File names that are shells; none may exist outside debug images.
const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "ash", "busybox", "zsh", "ksh", "mksh", "rbash", "csh", "tcsh", "fish",
];
const BIN_DIRS: &[&str] = &[
    "bin",
    "sbin",
    "usr/bin",
    "usr/sbin",
    "usr/local/bin",
    "usr/local/sbin",
    "usr/libexec",
];

/// Directories every node has, with their modes.
const SKELETON: &[(&str, u32)] = &[
    ("dev", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("run", 0o755),
    ("tmp", 0o1777),
    ("var", 0o755),
    ("etc", 0o755),
    ("root", 0o700),
    ("mnt", 0o755),
    ("sysroot", 0o755),
    ("usr/lib/nodeimg", 0o755),
];

/// Build products a layer can place (`artifact = "nodeagent"`).
pub type Artifacts = BTreeMap<String, Vec<u8>>;

/// Turns unpacked packages into the image's root tree. `owners` maps a tree
/// path to the package that shipped it (for the shell error).
pub fn assemble(
    tree: &mut Tree,
    plan: &Plan,
    artifacts: &Artifacts,
    owners: &BTreeMap<String, String>,
) -> Result<(), AssembleError> {
    drop_package_etc(tree, plan);
    for path in &plan.remove {
        let n = tree.remove_all(path);
        tracing::debug!(path, removed = n, "removed");
    }
    for (path, mode) in SKELETON {
        if tree.get(path).is_none() {
            tree.insert(path, Entry::dir(*mode));
        }
    }
    if plan.generate.contains("ca-bundle") {
        generate_ca_bundle(tree);
    }
    tree.insert("etc/passwd", Entry::file(passwd(plan).into_bytes(), 0o644));
    tree.insert("etc/group", Entry::file(group(plan).into_bytes(), 0o644));
    tree.insert(
        "usr/lib/os-release",
        Entry::file(os_release(plan).into_bytes(), 0o644),
    );
    if !plan.sysctl.is_empty() {
        tree.insert(
            "etc/sysctl.d/50-nodeimg.conf",
            Entry::file(sysctl_conf(plan).into_bytes(), 0o644),
        );
    }
    if !plan.oci_images.is_empty() {
        place_oci_images(tree, plan, artifacts)?;
    }
    let packages: std::collections::BTreeSet<&str> = owners.values().map(String::as_str).collect();
    let list: String = packages.iter().map(|p| format!("{p}\n")).collect();
    tree.insert(
        contract::paths::relative(contract::paths::PACKAGES),
        Entry::file(list.into_bytes(), 0o644),
    );
    if !plan.services.is_empty() {
        tree.insert(
            SERVICES_PATH,
            Entry::file(services_json(plan).into_bytes(), 0o644),
        );
    }
    if !plan.deny_modules.is_empty() {
        tree.insert(
            "etc/modprobe.d/50-nodeimg-deny.conf",
            Entry::file(modprobe_deny(plan).into_bytes(), 0o644),
        );
    }
    for (path, f) in &plan.files {
        if let Some(parent) =
            ancestors(path).find(|a| tree.get(a).is_some_and(|e| e.kind != Kind::Dir))
        {
            return Err(AssembleError::NotADirectory {
                path: path.clone(),
                parent: parent.to_string(),
            });
        }
        let kind = match &f.content {
            FileContent::Data(d) => Kind::File(d.clone().into()),
            FileContent::Symlink(t) => Kind::Symlink(t.clone()),
            FileContent::Artifact(a) => match artifacts.get(a) {
                Some(d) => Kind::File(d.clone().into()),
                None => {
                    return Err(AssembleError::MissingArtifact {
                        layer: f.layer.clone(),
                        artifact: a.clone(),
                        path: path.clone(),
                    })
                }
            },
        };
        tree.remove_all(path);
        tree.insert(
            path,
            Entry {
                kind,
                mode: f.mode,
                uid: f.uid,
                gid: f.gid,
            },
        );
    }
    if !plan.debug {
        check_no_shell(tree, owners)?;
    }
    Ok(())
}

fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

fn drop_package_etc(tree: &mut Tree, plan: &Plan) {
    let dropped: Vec<String> = tree
        .iter()
        .filter(|(p, e)| {
            p.starts_with("etc/") && e.kind != Kind::Dir && !plan.keep_etc.contains(*p)
        })
        .map(|(p, _)| p.to_string())
        .collect();
    for p in &dropped {
        tree.remove_all(p);
    }
    // Directories the dropped files leave empty go too, deepest first.
    let mut dirs: Vec<String> = tree
        .iter()
        .filter(|(p, _)| p.starts_with("etc/"))
        .map(|(p, _)| p.to_string())
        .collect();
    dirs.reverse();
    for d in dirs {
        let prefix = format!("{d}/");
        let empty = !tree.iter().any(|(p, _)| p.starts_with(&prefix));
        if empty && tree.get(&d).is_some_and(|e| e.kind == Kind::Dir) {
            tree.remove_all(&d);
        }
    }
    if !dropped.is_empty() {
        tracing::debug!(
            count = dropped.len(),
            "dropped package files under /etc that no layer keeps"
        );
    }
}

/// Fails when any shell binary or link exists outside a debug image.
pub fn check_no_shell(tree: &Tree, owners: &BTreeMap<String, String>) -> Result<(), AssembleError> {
    for dir in BIN_DIRS {
        for sh in SHELLS {
            let path = format!("{dir}/{sh}");
            if tree.get(&path).is_some() {
                let origin = owners
                    .get(&path)
                    .map(|p| format!("package {p}"))
                    .unwrap_or_else(|| "a layer".into());
                return Err(AssembleError::Shell { path, origin });
            }
        }
    }
    Ok(())
}

/// What `update-ca-certificates` would write: every certificate under
/// usr/share/ca-certificates, in sorted path order.
fn generate_ca_bundle(tree: &mut Tree) {
    let mut bundle = Vec::new();
    for (path, e) in tree.iter() {
        if let (true, Kind::File(d)) = (
            path.starts_with("usr/share/ca-certificates/") && path.ends_with(".crt"),
            &e.kind,
        ) {
            bundle.extend_from_slice(d);
            if !bundle.ends_with(b"\n") {
                bundle.push(b'\n');
            }
        }
    }
    tree.insert(
        "etc/ssl/certs/ca-certificates.crt",
        Entry::file(bundle, 0o644),
    );
}

fn passwd(plan: &Plan) -> String {
    let mut users = plan.users.clone();
    users.sort_by_key(|u| u.uid);
    users.iter().fold(String::new(), |mut s, u| {
        let _ = writeln!(
            s,
            "{}:x:{}:{}:{}:{}:/usr/sbin/nologin",
            u.name, u.uid, u.gid, u.comment, u.home
        );
        s
    })
}

fn group(plan: &Plan) -> String {
    let mut groups = plan.groups.clone();
    groups.sort_by_key(|g| g.gid);
    groups.iter().fold(String::new(), |mut s, g| {
        let _ = writeln!(s, "{}:x:{}:", g.name, g.gid);
        s
    })
}

fn os_release(plan: &Plan) -> String {
    format!(
        "NAME=nodeimg\nID=nodeimg\nID_LIKE=debian\nPRETTY_NAME=\"nodeimg {name} {version} (Debian {suite})\"\n\
         VERSION_ID={version}\nIMAGE_ID={name}\nIMAGE_VERSION={version}\nVERSION_CODENAME={suite}\n",
        name = plan.name,
        version = plan.version,
        suite = plan.debian.suite,
    )
}

/// Packs each `[[oci_images]]` entry into an OCI archive (or rewraps the
/// one a user brought, checked against its pin) under
/// `usr/lib/nodeimg/images/` and lists them, with the manifest digest
/// containerd must report, in `usr/lib/nodeimg/images.json`.
fn place_oci_images(
    tree: &mut Tree,
    plan: &Plan,
    artifacts: &Artifacts,
) -> Result<(), AssembleError> {
    use contract::images::{archive_name, PreloadedImage, IMAGES_DIR, IMAGES_FILE};
    let mut list = Vec::new();
    for img in plan.oci_images.values() {
        let built = match (&img.binary, &img.archive) {
            (_, Some(path)) => brought(img, path)?,
            (Some(binary), None) => {
                let data = artifacts
                    .get(binary)
                    .ok_or_else(|| AssembleError::MissingArtifact {
                        layer: "oci_images".into(),
                        artifact: binary.clone(),
                        path: format!("{IMAGES_DIR}/{}", archive_name(&img.name)),
                    })?;
                crate::oci::build_image(&crate::oci::ImageSpec {
                    name: img.name.clone(),
                    // a recipe's program (`coredns/coredns`) by its own name
                    files: vec![crate::oci::ImageFile {
                        path: binary.rsplit('/').next().unwrap_or_default().into(),
                        mode: 0o755,
                        content: crate::oci::Content::Data(data.clone()),
                    }],
                    entrypoint: img.entrypoint.clone(),
                    user: img.user.clone().unwrap_or_default(),
                    // Fixed file times: the image's digest must not move with the
                    // build date (containerd names the sandbox by it).
                    mtime: 0,
                })?
            }
            // the plan holds one of the two (spec::plan checks it)
            (None, None) => continue,
        };
        if let Some(pinned) = img.digest.as_ref().filter(|d| **d != built.manifest_digest) {
            return Err(AssembleError::ImageDigest {
                name: img.name.clone(),
                got: built.manifest_digest,
                pinned: pinned.clone(),
            });
        }
        let file = archive_name(&img.name);
        let dir = IMAGES_DIR.trim_start_matches('/');
        tree.insert(&format!("{dir}/{file}"), Entry::file(built.archive, 0o644));
        list.push(PreloadedImage {
            name: img.name.clone(),
            file,
            digest: built.manifest_digest,
        });
    }
    // Serialising plain data to a String cannot fail.
    let json = serde_json::to_string_pretty(&list).unwrap_or_default() + "\n";
    tree.insert(
        IMAGES_FILE.trim_start_matches('/'),
        Entry::file(json.into_bytes(), 0o644),
    );
    Ok(())
}

/// A user's OCI archive: read, checked against the layer's sha256 pin,
/// and rewrapped under the image's name (blobs kept, so its manifest
/// digest is the archive's own).
fn brought(
    img: &crate::spec::OciImageSpec,
    path: &std::path::Path,
) -> Result<crate::oci::BuiltImage, AssembleError> {
    let read_err = |source| AssembleError::ReadArchive {
        name: img.name.clone(),
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(read_err)?.len();
    if len > crate::oci::archive::MAX_ARCHIVE {
        return Err(read_err(std::io::Error::other(format!(
            "{len} bytes, over the {} this build reads",
            crate::oci::archive::MAX_ARCHIVE
        ))));
    }
    let data = std::fs::read(path).map_err(read_err)?;
    let got = crate::util::hash::sha256_hex(&data);
    let pinned = img.sha256.clone().unwrap_or_default();
    if got != pinned {
        return Err(AssembleError::ArchiveHash {
            name: img.name.clone(),
            path: path.to_path_buf(),
            got,
            pinned,
        });
    }
    Ok(crate::oci::archive::rewrap(&img.name, &data, 0)?)
}

/// Where nodeagent reads the services (`contract::paths`-style, tree path).
pub const SERVICES_PATH: &str = "usr/lib/nodeimg/services.json";

/// The services as nodeagent reads them: a JSON array, sorted by name.
fn services_json(plan: &Plan) -> String {
    let list: Vec<_> = plan.services.values().collect();
    // Serialising plain data to a String cannot fail.
    serde_json::to_string_pretty(&list).unwrap_or_default() + "\n"
}

fn sysctl_conf(plan: &Plan) -> String {
    let mut s = String::from("# Written by nodeimg from the image's layers.\n");
    for (k, (setting, layer)) in &plan.sysctl {
        let _ = writeln!(s, "# {} ({layer})\n{k} = {}", setting.reason, setting.value);
    }
    s
}

fn modprobe_deny(plan: &Plan) -> String {
    let mut s = String::from("# Written by nodeimg: modules that must never load.\n");
    for (m, reason) in &plan.deny_modules {
        let _ = writeln!(s, "# {reason}\ninstall {m} /bin/false\nblacklist {m}");
    }
    s
}

#[cfg(test)]
mod tests;
