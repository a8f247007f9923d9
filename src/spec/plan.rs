//! Loading and merging: image + layers -> [`Plan`].

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::error::SpecError;
use super::image::{DebianSource, DiskSpec, ImageSpec, Pocket, SCHEMA_VERSION};
use super::layer::{GroupSpec, LayerSpec, Setting, UserSpec};
use super::output_kind::OutputKind;
use super::recipe::{load_recipe, recipe_artifact};
use crate::util::path::normalize;

/// Everything a build needs to know, merged from the image and its layers.
#[derive(Debug, Clone)]
pub struct Plan {
    pub image_path: PathBuf,
    pub name: String,
    pub version: String,
    pub arch: String,
    pub debian: DebianSource,
    pub layers: Vec<String>,
    pub debug: bool,
    /// Package names (with optional version constraints) to install.
    pub packages: BTreeSet<String>,
    pub excludes: BTreeSet<String>,
    /// Normalised paths to remove after unpacking.
    pub remove: Vec<String>,
    /// Package files under `etc/` that stay.
    pub keep_etc: BTreeSet<String>,
    /// Build-time generators (see [`GENERATORS`]).
    pub generate: BTreeSet<String>,
    /// Normalised path -> file; later layers replace earlier ones.
    pub files: BTreeMap<String, FilePlan>,
    pub users: Vec<UserSpec>,
    pub groups: Vec<GroupSpec>,
    /// sysctl name -> (value, reason, layer).
    pub sysctl: BTreeMap<String, (Setting, String)>,
    pub kernel_package: Option<String>,
    pub cmdline: BTreeMap<String, String>,
    pub initramfs_modules: BTreeSet<String>,
    pub modules: BTreeSet<String>,
    pub deferred_modules: BTreeSet<String>,
    pub uefi_modules: BTreeSet<String>,
    pub deny_modules: BTreeMap<String, String>,
    /// The package holding systemd-boot and systemd-stub (`[uefi] package`).
    pub uefi_package: Option<String>,
    /// Bootable outputs, sorted and without repeats.
    pub outputs: BTreeSet<OutputKind>,
    pub disk: DiskSpec,
    /// Images to pack and preload, by name.
    pub oci_images: BTreeMap<String, super::layer::OciImageSpec>,
    /// Supervised services by name; a later layer may not redeclare one.
    pub services: BTreeMap<String, contract::services::ServiceSpec>,
}

impl Plan {
    /// Recipe -> the programs of it that layers place
    /// (`artifact = "kubernetes/kubelet"`) or pack into an image
    /// (`[[oci_images]] binary = "coredns/coredns"`).
    pub fn recipe_programs(&self) -> BTreeMap<String, BTreeSet<String>> {
        let files = self.files.values().filter_map(|f| match &f.content {
            FileContent::Artifact(a) => Some(a.as_str()),
            _ => None,
        });
        let images = self.oci_images.values().filter_map(|i| i.binary.as_deref());
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (recipe, program) in files.chain(images).filter_map(recipe_artifact) {
            out.entry(recipe.into()).or_default().insert(program.into());
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileContent {
    Data(Vec<u8>),
    Symlink(String),
    /// Filled in by the build from one of its own products.
    Artifact(String),
}

/// Generators a layer may name in `generate`.
pub const GENERATORS: &[&str] = &["ca-bundle"];

/// Build products a layer may place with `artifact`.
pub const ARTIFACTS: &[&str] = &["nodeagent", "pause"];

#[derive(Debug, Clone)]
pub struct FilePlan {
    pub content: FileContent,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// The layer that put it there, for error messages and reviews.
    pub layer: String,
}

/// Reads `image_path` and its layers from `<image dir>/../layers`.
pub fn load_plan(image_path: &Path) -> Result<Plan, SpecError> {
    let image: ImageSpec = read_toml(image_path)?;
    check_schema(image_path, image.schema)?;
    check_name(image_path, "name", &image.name)?;
    if image.version.is_empty() {
        return Err(SpecError::invalid(
            image_path,
            "version",
            "must not be empty",
        ));
    }
    if image.arch != "amd64" {
        return Err(SpecError::invalid(
            image_path,
            "arch",
            format!("`{}` is not supported (expected amd64)", image.arch),
        ));
    }
    check_debian(image_path, &image.debian)?;
    if image.layers.is_empty() {
        return Err(SpecError::invalid(
            image_path,
            "layers",
            "an image needs at least one layer",
        ));
    }
    let layers_dir = layers_dir_for(image_path);
    let mut plan = Plan {
        image_path: image_path.to_path_buf(),
        name: image.name.clone(),
        version: image.version.clone(),
        arch: image.arch.clone(),
        debian: image.debian.clone(),
        layers: image.layers.clone(),
        debug: false,
        packages: BTreeSet::new(),
        excludes: BTreeSet::new(),
        remove: Vec::new(),
        keep_etc: BTreeSet::new(),
        generate: BTreeSet::new(),
        files: BTreeMap::new(),
        users: Vec::new(),
        groups: Vec::new(),
        sysctl: BTreeMap::new(),
        kernel_package: None,
        cmdline: BTreeMap::new(),
        initramfs_modules: BTreeSet::new(),
        modules: BTreeSet::new(),
        deferred_modules: BTreeSet::new(),
        uefi_modules: BTreeSet::new(),
        deny_modules: BTreeMap::new(),
        uefi_package: None,
        outputs: BTreeSet::new(),
        disk: image.disk.clone(),
        services: BTreeMap::new(),
        oci_images: BTreeMap::new(),
    };
    let mut seen = BTreeSet::new();
    for name in &image.layers {
        if !seen.insert(name.clone()) {
            return Err(SpecError::invalid(
                image_path,
                "layers",
                format!("layer `{name}` is listed twice"),
            ));
        }
        let dir = layers_dir.join(name);
        let file = dir.join("layer.toml");
        if check_name(image_path, "layers", name).is_err() || !file.is_file() {
            return Err(SpecError::UnknownLayer {
                path: image_path.to_path_buf(),
                layer: name.clone(),
                expected: file,
            });
        }
        let layer: LayerSpec = read_toml(&file)?;
        check_schema(&file, layer.schema)?;
        merge_layer(&mut plan, name, &dir, &file, layer)?;
    }
    for name in &image.outputs {
        let kind = name
            .parse::<OutputKind>()
            .map_err(|e| SpecError::invalid(image_path, "outputs", e.to_string()))?;
        plan.outputs.insert(kind);
    }
    check_outputs(&plan).map_err(|problem| SpecError::invalid(image_path, "outputs", problem))?;
    // Unknown `after` names and cycles span layers: checked on the whole set.
    let services: Vec<_> = plan.services.values().cloned().collect();
    contract::services::start_order(&services)
        .map_err(|e| SpecError::invalid(image_path, "services", e.to_string()))?;
    if plan.disk.boot_tries == 0 || plan.disk.boot_tries > 9 {
        return Err(SpecError::invalid(
            image_path,
            "disk.boot_tries",
            "must be 1 to 9",
        ));
    }
    if plan.disk.esp_mib < 64 {
        return Err(SpecError::invalid(
            image_path,
            "disk.esp_mib",
            "must be at least 64 (FAT32 and two UKIs)",
        ));
    }
    Ok(plan)
}

/// `[debian]`: a suite name that is safe in an archive path and is a base
/// suite (its pockets are named after it), each pocket once.
fn check_debian(image_path: &Path, debian: &DebianSource) -> Result<(), SpecError> {
    let suite = &debian.suite;
    let safe = suite.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && suite
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && !suite.contains("..");
    if !safe {
        return Err(SpecError::invalid(
            image_path,
            "debian.suite",
            format!("`{suite}` is not a suite name (lower-case letters, digits, `-` and `.`)"),
        ));
    }
    if let Some(p) = Pocket::ALL
        .iter()
        .find(|p| suite.ends_with(&format!("-{p}")))
    {
        return Err(SpecError::invalid(
            image_path,
            "debian.suite",
            format!(
                "`{suite}` is a pocket; name the base suite and list `{p}` in `debian.pockets`"
            ),
        ));
    }
    let mut seen = BTreeSet::new();
    if let Some(p) = debian.pockets.iter().find(|p| !seen.insert(**p)) {
        return Err(SpecError::invalid(
            image_path,
            "debian.pockets",
            format!("pocket `{p}` is listed twice"),
        ));
    }
    Ok(())
}

/// What the chosen outputs need from the layers; also run for `--format`.
pub fn check_outputs(plan: &Plan) -> Result<(), String> {
    if plan.outputs.is_empty() {
        return Ok(());
    }
    if plan.kernel_package.is_none() {
        return Err(format!(
            "{} need a kernel: no layer sets `[kernel] package`",
            plan.outputs
                .iter()
                .map(|o| o.name())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if plan.uefi_package.is_none() {
        if let Some(o) = plan.outputs.iter().find(|o| o.needs_uki()) {
            return Err(format!(
                "`{o}` needs systemd-boot and systemd-stub: no layer sets `[uefi] package`"
            ));
        }
    }
    Ok(())
}

/// `<image dir>/../layers`, written without `..` when the image path has
/// enough components (so error messages show `layers/base/layer.toml`).
fn layers_dir_for(image_path: &Path) -> PathBuf {
    project_dir(image_path).join("layers")
}

/// The directory above the one holding `image_path`.
pub fn project_dir(image_path: &Path) -> PathBuf {
    let dir = image_path.parent().unwrap_or(Path::new(""));
    match dir.parent() {
        Some(p) if !dir.ends_with("..") && dir.file_name().is_some() => p.to_path_buf(),
        _ => dir.join(".."),
    }
}

/// A build product (`nodeagent`) or a recipe's program
/// (`kubernetes/kubelet`, from `recipes/kubernetes/`).
fn check_artifact(image_path: &Path, file: &Path, key: &str, a: &str) -> Result<(), SpecError> {
    if ARTIFACTS.contains(&a) {
        return Ok(());
    }
    let Some((recipe, program)) = recipe_artifact(a) else {
        return Err(SpecError::invalid(
            file,
            key,
            format!(
                "unknown build artifact `{a}` (known: {}, or RECIPE/PROGRAM from recipes/)",
                ARTIFACTS.join(", ")
            ),
        ));
    };
    let r = load_recipe(&project_dir(image_path), recipe)?;
    if !r.programs.contains_key(program) {
        return Err(SpecError::invalid(
            file,
            key,
            format!(
                "recipe `{recipe}` has no program `{program}` (it has: {})",
                r.programs.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    Ok(())
}

fn merge_layer(
    plan: &mut Plan,
    name: &str,
    dir: &Path,
    file: &Path,
    layer: LayerSpec,
) -> Result<(), SpecError> {
    plan.debug |= layer.debug;
    for (i, p) in layer.packages.include.iter().enumerate() {
        check_package(file, &format!("packages.include[{i}]"), p)?;
        plan.packages.insert(p.clone());
    }
    for (i, p) in layer.packages.exclude.iter().enumerate() {
        check_package(file, &format!("packages.exclude[{i}]"), p)?;
        plan.excludes.insert(p.clone());
    }
    for (i, r) in layer.remove.iter().enumerate() {
        let key = format!("remove[{i}]");
        let p = tree_path(file, &key, r)?;
        plan.remove.push(p);
    }
    for (i, k) in layer.keep_etc.iter().enumerate() {
        let p = tree_path(file, &format!("keep_etc[{i}]"), k)?;
        if !p.starts_with("etc/") {
            return Err(SpecError::invalid(
                file,
                format!("keep_etc[{i}]"),
                format!("`{k}` is not under /etc"),
            ));
        }
        plan.keep_etc.insert(p);
    }
    for (i, g) in layer.generate.iter().enumerate() {
        if !GENERATORS.contains(&g.as_str()) {
            return Err(SpecError::invalid(
                file,
                format!("generate[{i}]"),
                format!("unknown generator `{g}` (known: {})", GENERATORS.join(", ")),
            ));
        }
        plan.generate.insert(g.clone());
    }
    for (i, f) in layer.files.iter().enumerate() {
        let key = format!("files[{i}]");
        let path = tree_path(file, &format!("{key}.path"), &f.path)?;
        let content = match (&f.content, &f.source, &f.symlink, &f.artifact) {
            (Some(c), None, None, None) => FileContent::Data(c.clone().into_bytes()),
            (None, None, None, Some(a)) => {
                check_artifact(&plan.image_path, file, &format!("{key}.artifact"), a)?;
                FileContent::Artifact(a.clone())
            }
            (None, Some(s), None, None) => {
                let rel = normalize(s).filter(|r| !r.is_empty()).ok_or_else(|| {
                    SpecError::invalid(
                        file,
                        format!("{key}.source"),
                        "must be a path inside the layer directory",
                    )
                })?;
                let src = dir.join(rel);
                FileContent::Data(fs::read(&src).map_err(|e| SpecError::Read {
                    path: src,
                    source: e,
                })?)
            }
            (None, None, Some(t), None) => FileContent::Symlink(t.clone()),
            _ => {
                return Err(SpecError::invalid(
                    file,
                    key,
                    "needs exactly one of `content`, `source`, `symlink` or `artifact`",
                ));
            }
        };
        let default_mode = if matches!(content, FileContent::Symlink(_)) {
            0o777
        } else {
            0o644
        };
        let mode = match &f.mode {
            Some(m) => parse_mode(m).ok_or_else(|| {
                SpecError::invalid(
                    file,
                    format!("{key}.mode"),
                    format!("`{m}` is not an octal mode like \"0644\""),
                )
            })?,
            None => default_mode,
        };
        plan.files.insert(
            path,
            FilePlan {
                content,
                mode,
                uid: f.uid,
                gid: f.gid,
                layer: name.to_string(),
            },
        );
    }
    for (i, u) in layer.users.iter().enumerate() {
        check_name(file, &format!("users[{i}].name"), &u.name)?;
        plan.users.retain(|x| x.name != u.name);
        plan.users.push(u.clone());
    }
    for (i, g) in layer.groups.iter().enumerate() {
        check_name(file, &format!("groups[{i}].name"), &g.name)?;
        plan.groups.retain(|x| x.name != g.name);
        plan.groups.push(g.clone());
    }
    for (i, mut img) in layer.oci_images.into_iter().enumerate() {
        let field = format!("oci_images[{i}]");
        let name_ok = !img.name.is_empty()
            && img.name.contains(':')
            && img
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "./:-_".contains(c));
        if !name_ok {
            return Err(SpecError::invalid(
                file,
                format!("{field}.name"),
                "must be an image reference with a tag, e.g. nodeimg.local/pause:0.1.0",
            ));
        }
        match (&img.binary, &img.archive) {
            (Some(binary), None) => {
                check_artifact(&plan.image_path, file, &format!("{field}.binary"), binary)?;
                if img.user.is_none() || img.entrypoint.is_empty() {
                    return Err(SpecError::invalid(
                        file,
                        field,
                        "an image packed from `binary` needs `entrypoint` and `user`",
                    ));
                }
                if img.sha256.is_some() {
                    return Err(SpecError::invalid(
                        file,
                        format!("{field}.sha256"),
                        "pins an `archive`; a packed image is pinned by `digest`",
                    ));
                }
            }
            (None, Some(archive)) => {
                let hex_ok = img.sha256.as_ref().is_some_and(|h| {
                    h.len() == 64 && h.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
                });
                if !hex_ok {
                    return Err(SpecError::invalid(
                        file,
                        format!("{field}.sha256"),
                        "an `archive` must be pinned: sha256 = 64 lowercase hex digits of the file",
                    ));
                }
                if img.user.is_some() || !img.entrypoint.is_empty() {
                    return Err(SpecError::invalid(
                        file,
                        field,
                        "`entrypoint` and `user` belong to an image packed from `binary`; an archive carries its own",
                    ));
                }
                let dir = file.parent().unwrap_or(Path::new("."));
                img.archive = Some(dir.join(archive));
            }
            _ => {
                return Err(SpecError::invalid(
                    file,
                    field,
                    "give either `binary` (an image the build packs) or `archive` (an OCI archive you bring)",
                ))
            }
        }
        if let Some(d) = &img.digest {
            let hex = d.strip_prefix("sha256:").unwrap_or_default();
            if hex.len() != 64 || !hex.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')) {
                return Err(SpecError::invalid(
                    file,
                    format!("{field}.digest"),
                    "must be sha256: and 64 lowercase hex digits",
                ));
            }
        }
        if plan.oci_images.contains_key(&img.name) {
            return Err(SpecError::invalid(
                file,
                field,
                "an earlier layer declares this image",
            ));
        }
        plan.oci_images.insert(img.name.clone(), img);
    }
    for (key, mut svc) in layer.services {
        let field = format!("services.{key}");
        if !svc.name.is_empty() && svc.name != key {
            return Err(SpecError::invalid(
                file,
                field,
                "name differs from the table's key",
            ));
        }
        svc.name = key.clone();
        svc.validate()
            .map_err(|e| SpecError::invalid(file, field.clone(), e.to_string()))?;
        if plan.services.contains_key(&key) {
            return Err(SpecError::invalid(
                file,
                field,
                "an earlier layer declares it",
            ));
        }
        plan.services.insert(key, svc);
    }
    for (k, v) in layer.sysctl {
        if k.is_empty()
            || !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            || k.contains("..")
        {
            return Err(SpecError::invalid(
                file,
                format!("sysctl.\"{k}\""),
                "not a sysctl name like net.ipv4.ip_forward",
            ));
        }
        if v.value.contains('\n') || v.reason.trim().is_empty() {
            return Err(SpecError::invalid(
                file,
                format!("sysctl.\"{k}\""),
                "needs a one-line value and a reason",
            ));
        }
        plan.sysctl.insert(k, (v, name.to_string()));
    }
    let k = layer.kernel;
    if let Some(p) = k.package {
        check_package(file, "kernel.package", &p)?;
        plan.kernel_package = Some(p);
    }
    for (arg, reason) in k.cmdline {
        if arg.is_empty() || arg.contains(char::is_whitespace) || reason.trim().is_empty() {
            return Err(SpecError::invalid(
                file,
                format!("kernel.cmdline.\"{arg}\""),
                "needs one argument without spaces and a reason",
            ));
        }
        plan.cmdline.insert(arg, reason);
    }
    for m in k.initramfs_modules {
        plan.initramfs_modules.insert(m);
    }
    for m in k.modules {
        plan.modules.insert(m);
    }
    for m in k.deferred_modules {
        plan.deferred_modules.insert(m);
    }
    for m in k.uefi_modules {
        plan.uefi_modules.insert(m);
    }
    for (m, reason) in k.deny_modules {
        plan.deny_modules.insert(m, reason);
    }
    if let Some(p) = layer.uefi.package {
        check_package(file, "uefi.package", &p)?;
        plan.uefi_package = Some(p);
    }
    Ok(())
}

fn read_toml<T: DeserializeOwned>(path: &Path) -> Result<T, SpecError> {
    let text = fs::read_to_string(path).map_err(|e| SpecError::Read {
        path: path.to_path_buf(),
        source: e,
    })?;
    toml::from_str(&text).map_err(|e| SpecError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })
}

fn check_schema(path: &Path, found: u32) -> Result<(), SpecError> {
    if found != SCHEMA_VERSION {
        return Err(SpecError::Schema {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

fn check_name(path: &Path, key: &str, name: &str) -> Result<(), SpecError> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(SpecError::invalid(
            path,
            key,
            format!("`{name}` must be lower-case letters, digits, `-` or `_`"),
        ))
    }
}

/// A package root: `name`, optionally followed by a constraint `name (>= 1.2)`.
fn check_package(path: &Path, key: &str, spec: &str) -> Result<(), SpecError> {
    let name = spec.split([' ', '(', '=']).next().unwrap_or("");
    let ok = name.len() >= 2
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(SpecError::invalid(
            path,
            key,
            format!("`{spec}` is not a Debian package name"),
        ))
    }
}

fn tree_path(file: &Path, key: &str, p: &str) -> Result<String, SpecError> {
    match normalize(p) {
        Some(n) if !n.is_empty() => Ok(n),
        _ => Err(SpecError::invalid(
            file,
            key,
            format!("`{p}` must be a path inside the image without `..`"),
        )),
    }
}

fn parse_mode(s: &str) -> Option<u32> {
    let m = u32::from_str_radix(s, 8).ok()?;
    (m <= 0o7777 && s.len() <= 5).then_some(m)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod props;
