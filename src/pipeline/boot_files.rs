//! Stage: the boot files. Debian's kernel package -> the kernel as Debian
//! signed it, the module closure split between the initramfs (what
//! reaching the root needs) and the root image (the rest), and the
//! initramfs with the agent as `/init`. The command line that carries the
//! verity root hash is made after the root image exists.
//!
//! [`prepare`] reads no tree of the build: what it puts into the root (the
//! root-side modules and their load orders) comes back in
//! [`BootParts::root_files`], so the stage can run beside the root tree's
//! assembly and its result can be cached whole ([`super::boot_cache`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use crate::boot::initramfs::{self, InitramfsError};
use crate::boot::modules::{
    closure, decompress_module, initramfs_payload, EarlyModules, ModuleError, MODULES_ORDER_PATH,
};
use crate::boot::{find_kernel, inspect, KernelError, KernelInfo};
use crate::manifest::{Artifact, BootRecord, VerityRecord};
use crate::rootfs::{Entry, Tree};
use crate::source::deb::{unpack_into, DebError};
use crate::source::lock::LockedPackage;
use crate::spec::Plan;
use crate::util::atomic;
use contract::cmdline::{Args, KernelCmdline, RootFs};

use super::tree::{check_identity, WrongPackage};

pub const KERNEL_FILE: &str = "vmlinuz";
pub const INITRAMFS_FILE: &str = "initramfs.img";

#[derive(Debug, thiserror::Error)]
pub enum BootStageError {
    #[error("image `{image}` places nodeagent or names a kernel, but no agent binary was found: build it with `make agent` (nodeimg then finds it in its target directory), install it beside nodeimg, or pass --agent")]
    NoAgent { image: String },
    #[error(transparent)]
    Identity(#[from] WrongPackage),
    #[error("unpacking kernel package")]
    Deb(#[source] DebError),
    #[error("kernel")]
    Kernel(#[source] KernelError),
    #[error("kernel modules")]
    Modules(#[source] ModuleError),
    #[error("initramfs")]
    Initramfs(#[source] InitramfsError),
    #[error("output directory {path}")]
    Out {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("kernel command line")]
    Cmdline(#[source] contract::cmdline::CmdlineError),
}

/// What the boot stage hands back to the build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootParts {
    pub kernel_release: String,
    pub kernel_info: KernelInfo,
    pub kernel: Arc<[u8]>,
    pub initramfs: Vec<u8>,
    pub initramfs_modules: Vec<String>,
    pub root_modules: Vec<String>,
    pub uefi_modules: Vec<String>,
    pub deferred_modules: Vec<String>,
    /// Files for the root tree, `(path, bytes)`, each mode 0644: the
    /// root-side modules (decompressed) and their load-order files.
    pub root_files: Vec<(String, Arc<[u8]>)>,
}

/// Where the agent finds the modules it loads only on a UEFI boot (to mark
/// the boot good on the ESP).
const UEFI_ORDER_PATH: &str = contract::paths::relative(contract::paths::MODULES_UEFI_ORDER);
/// Where the agent finds the modules to load after it reports ready.
const DEFERRED_ORDER_PATH: &str =
    contract::paths::relative(contract::paths::MODULES_DEFERRED_ORDER);

/// The closure of `wanted`, minus what loads earlier, as root files (the
/// modules and their load order at `order_path`, appended to `files`);
/// returns the module names.
fn root_modules(
    ktree: &Tree,
    kver: &str,
    wanted: &BTreeSet<String>,
    earlier: &BTreeSet<String>,
    order_path: &str,
    files: &mut Vec<(String, Arc<[u8]>)>,
) -> Result<Vec<String>, BootStageError> {
    let wanted: Vec<String> = wanted.iter().cloned().collect();
    let all = closure(ktree, kver, &wanted).map_err(BootStageError::Modules)?;
    let mods: Vec<_> = all
        .into_iter()
        .filter(|m| !earlier.contains(&m.name))
        .collect();
    let payload = decompressed(initramfs_payload(ktree, &mods).map_err(BootStageError::Modules)?)?;
    files.extend(payload.files);
    files.push((order_path.to_string(), payload.order.into_bytes().into()));
    Ok(mods
        .iter()
        .filter(|m| !m.builtin)
        .map(|m| m.name.clone())
        .collect())
}

/// Puts the boot stage's root files into `root`.
pub fn add_root_files(root: &mut Tree, parts: &BootParts) {
    for (path, data) in &parts.root_files {
        root.insert(path, Entry::file(Arc::clone(data), 0o644));
    }
}

/// Unpacks the kernel packages, picks the root-side modules (and their
/// load orders) for [`BootParts::root_files`], and builds the initramfs.
pub fn prepare(
    plan: &Plan,
    kernel_packages: &[&LockedPackage],
    kernel_debs: &[Vec<u8>],
    agent: Option<&[u8]>,
    mtime: u32,
) -> Result<BootParts, BootStageError> {
    let agent = agent.ok_or_else(|| BootStageError::NoAgent {
        image: plan.name.clone(),
    })?;
    let mut ktree = Tree::new();
    let mut owners = BTreeMap::new();
    for (locked, deb) in kernel_packages.iter().zip(kernel_debs) {
        let info =
            unpack_into(&locked.name, deb, &mut ktree, &mut owners).map_err(BootStageError::Deb)?;
        check_identity(locked, &info)?;
    }
    let (kver, kernel) = find_kernel(&ktree).map_err(BootStageError::Kernel)?;
    let info = inspect(&kernel).map_err(BootStageError::Kernel)?;

    let early_wanted: Vec<String> = plan.initramfs_modules.iter().cloned().collect();
    let early = closure(&ktree, &kver, &early_wanted).map_err(BootStageError::Modules)?;
    let early_names: BTreeSet<String> = early.iter().map(|m| m.name.clone()).collect();
    let payload =
        decompressed(initramfs_payload(&ktree, &early).map_err(BootStageError::Modules)?)?;

    // Compressing the initramfs (zstd -19) is most of this stage: it runs
    // on its own thread while the root-side modules are picked.
    let (initramfs, root_side) = std::thread::scope(|s| {
        let initramfs = s.spawn(|| {
            initramfs::build(agent, &payload.files, &payload.order, mtime)
                .map_err(BootStageError::Initramfs)
        });
        let root_side = root_side_modules(plan, &ktree, &kver, &early_names);
        let initramfs = initramfs
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        (initramfs, root_side)
    });
    let initramfs = initramfs?;
    let RootSide {
        late,
        uefi,
        deferred,
        files,
    } = root_side?;
    tracing::info!(
        kernel = kver,
        initramfs_modules = early.len(),
        root_modules = late.len(),
        deferred_modules = deferred.len(),
        initramfs_bytes = initramfs.len(),
        "boot parts ready"
    );
    Ok(BootParts {
        kernel_release: kver,
        kernel_info: info,
        kernel,
        initramfs,
        initramfs_modules: early
            .iter()
            .filter(|m| !m.builtin)
            .map(|m| m.name.clone())
            .collect(),
        root_modules: late,
        uefi_modules: uefi,
        deferred_modules: deferred,
        root_files: files,
    })
}

/// The modules the root carries, by when the agent loads them.
struct RootSide {
    late: Vec<String>,
    uefi: Vec<String>,
    deferred: Vec<String>,
    files: Vec<(String, Arc<[u8]>)>,
}

/// The root's modules: each group's closure minus what loads before it
/// (the initramfs's `early`, then the groups in load order).
fn root_side_modules(
    plan: &Plan,
    ktree: &Tree,
    kver: &str,
    early: &BTreeSet<String>,
) -> Result<RootSide, BootStageError> {
    let mut files = Vec::new();
    let late = root_modules(
        ktree,
        kver,
        &plan.modules,
        early,
        MODULES_ORDER_PATH,
        &mut files,
    )?;
    let mut loaded = early.clone();
    loaded.extend(late.iter().cloned());
    let uefi = root_modules(
        ktree,
        kver,
        &plan.uefi_modules,
        &loaded,
        UEFI_ORDER_PATH,
        &mut files,
    )?;
    loaded.extend(uefi.iter().cloned());
    let deferred = root_modules(
        ktree,
        kver,
        &plan.deferred_modules,
        &loaded,
        DEFERRED_ORDER_PATH,
        &mut files,
    )?;
    Ok(RootSide {
        late,
        uefi,
        deferred,
        files,
    })
}

/// Ships modules uncompressed: the kernel then skips in-kernel xz work,
/// which costs 0.6-1 s of a TCG boot. Debian's signature is appended inside
/// the `.ko` before compression, so `module.sig_enforce=1` still holds.
fn decompressed(modules: EarlyModules) -> Result<EarlyModules, BootStageError> {
    let mut out = EarlyModules::default();
    for (path, data) in modules.files {
        let plain = decompress_module(&path, &data).map_err(BootStageError::Modules)?;
        let name = ["xz", "zst", "gz"]
            .iter()
            .find_map(|ext| path.strip_suffix(&format!(".{ext}")))
            .unwrap_or(&path)
            .to_string();
        out.order.push('/');
        out.order.push_str(&name);
        out.order.push('\n');
        out.files.push((name, plain.into()));
    }
    Ok(out)
}

/// The image's kernel command line: the layers' arguments (sorted, so the
/// line is stable) and where the agent finds and checks its root. Devices
/// are not named here: the lab, the UKI or the boot loader adds them.
pub fn cmdline(plan: &Plan, verity: &VerityRecord) -> Result<String, BootStageError> {
    // the layers' words go through the contract's parser, so a layer's
    // `nodeimg.*` typo or a key the image sets itself fails the build
    let words: Vec<&str> = plan.cmdline.keys().map(String::as_str).collect();
    let mut line = KernelCmdline::parse(&words.join(" ")).map_err(BootStageError::Cmdline)?;
    line.nodeimg
        .merge(Args {
            root_hash: Some(verity.root_hash.clone()),
            salt: Some(Some(verity.salt.clone()).filter(|s| !s.is_empty())),
            data_blocks: Some(verity.data_blocks),
            hash_start: Some(verity.hash_start_block),
            fstype: Some(RootFs::Squashfs),
            ..Args::default()
        })
        .map_err(BootStageError::Cmdline)?;
    Ok(line.to_string())
}

/// Writes the kernel and the initramfs into `out`; returns their entries
/// for the manifest.
pub fn write_boot_files(out: &Path, parts: &BootParts) -> Result<Vec<Artifact>, BootStageError> {
    let out_err = |source| BootStageError::Out {
        path: out.to_path_buf(),
        source,
    };
    let mut artifacts = Vec::new();
    for (kind, name, data) in [
        ("kernel", KERNEL_FILE, &parts.kernel[..]),
        ("initramfs", INITRAMFS_FILE, &parts.initramfs[..]),
    ] {
        let path = out.join(name);
        atomic::write(&path, data).map_err(|source| BootStageError::Out { path, source })?;
        artifacts.push(Artifact::of_file(kind, out, name).map_err(out_err)?);
    }
    Ok(artifacts)
}

/// The manifest's boot record: what the kernel is and which modules load
/// where, with the image's command line.
pub fn record(parts: &BootParts, cmdline: String) -> BootRecord {
    BootRecord {
        kernel_version: parts.kernel_release.clone(),
        kernel_arch: parts.kernel_info.arch.to_string(),
        kernel_signed: parts.kernel_info.signed,
        cmdline,
        initramfs_modules: parts.initramfs_modules.clone(),
        root_modules: parts.root_modules.clone(),
        uefi_modules: parts.uefi_modules.clone(),
        deferred_modules: parts.deferred_modules.clone(),
    }
}
