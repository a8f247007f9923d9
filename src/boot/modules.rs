//! Kernel module closure without `modules.dep`.
//!
//! Debian's kernel package ships no `modules.dep` (depmod writes it at
//! install time), so [`closure`] reads each needed module's `.modinfo`
//! section itself: it xz-decompresses the `.ko.xz` in memory only to read
//! `depends=` and `softdep=`, and keeps the file exactly as shipped (signed
//! and compressed, so `module.sig_enforce=1` holds; the kernel decompresses
//! it, `CONFIG_MODULE_DECOMPRESS`).
//!
//! Contract: names use `_` or `-` interchangeably. The result lists every
//! module in load order: `softdep` `pre:` entries, then `depends=` entries,
//! before the module that needs them; `post:` entries after it. Names built
//! into the kernel (`modules.builtin`) are reported with `builtin: true` and
//! load nothing. A wanted or `depends=` name that is neither a module, a
//! builtin nor an alias of one is an error; a `softdep` that resolves to
//! nothing is skipped (modprobe does the same). Softdeps may name an alias
//! (`ext4` wants `pre: crypto-crc32c`): like modprobe, every module carrying
//! that alias is loaded. The order depends only on the tree and the set of
//! wanted names.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::sync::Arc;

use crate::rootfs::{Kind, Tree};

/// Where the agent finds the load order inside the initramfs.
pub const MODULES_ORDER_PATH: &str = contract::paths::relative(contract::paths::MODULES_ORDER);

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("no module directory for kernel {kver} (usr/lib/modules/{kver}/kernel)")]
    NoModulesDir { kver: String },
    #[error("module {name:?} is not in kernel {kver}: no such module, builtin or alias")]
    Unknown { name: String, kver: String },
    #[error("module {module} depends on {dependency}, which kernel {kver} does not ship")]
    MissingDependency {
        module: String,
        dependency: String,
        kver: String,
    },
    #[error("modules depend on each other in a cycle: {}", chain.join(" -> "))]
    Cycle { chain: Vec<String> },
    #[error("decompressing module {path} failed")]
    Decompress {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("module {path} is not an ELF object")]
    NotElf {
        path: String,
        #[source]
        source: goblin::error::Error,
    },
    #[error("module {path} has no .modinfo section")]
    NoModinfo { path: String },
    #[error("module {name} should be at {path}, but the tree has no such file")]
    NotInTree { name: String, path: String },
}

/// One module of the closure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Kernel name (`_` form), e.g. `dm_verity`.
    pub name: String,
    /// The file in the tree, e.g. `usr/lib/modules/<kver>/kernel/drivers/md/dm-verity.ko.xz`;
    /// empty when `builtin`.
    pub path_in_tree: String,
    /// Built into the kernel: nothing to load.
    pub builtin: bool,
}

/// What a `.modinfo` section says (the fields the closure needs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModInfo {
    pub name: Option<String>,
    pub depends: Vec<String>,
    pub softdep_pre: Vec<String>,
    pub softdep_post: Vec<String>,
    pub aliases: Vec<String>,
}

/// `dm-verity` and `dm_verity` are the same module to the kernel.
pub fn normalize_name(name: &str) -> String {
    name.trim().replace('-', "_")
}

/// Parses a `.modinfo` section: NUL-separated `key=value` strings.
pub fn parse_modinfo(section: &[u8]) -> ModInfo {
    let mut info = ModInfo::default();
    for field in section.split(|&b| b == 0).filter(|f| !f.is_empty()) {
        let field = String::from_utf8_lossy(field);
        let Some((key, value)) = field.split_once('=') else {
            continue;
        };
        match key {
            "name" => info.name = Some(value.to_string()),
            "depends" => info.depends.extend(
                value
                    .split(',')
                    .filter(|d| !d.trim().is_empty())
                    .map(normalize_name),
            ),
            "alias" => info.aliases.push(value.to_string()),
            "softdep" => {
                let mut post = None;
                for word in value.split_whitespace() {
                    match word {
                        "pre:" => post = Some(false),
                        "post:" => post = Some(true),
                        w if post == Some(false) => info.softdep_pre.push(w.to_string()),
                        w if post == Some(true) => info.softdep_post.push(w.to_string()),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    info
}

/// Decompresses a module file as shipped (`.ko.xz`, `.ko.zst`, `.ko.gz` or `.ko`).
pub fn decompress_module(path: &str, data: &[u8]) -> Result<Vec<u8>, ModuleError> {
    let mut out = Vec::new();
    let res = if path.ends_with(".xz") {
        liblzma::read::XzDecoder::new(data).read_to_end(&mut out)
    } else if path.ends_with(".zst") {
        zstd::stream::read::Decoder::new(data).and_then(|mut d| d.read_to_end(&mut out))
    } else if path.ends_with(".gz") {
        flate2::read::GzDecoder::new(data).read_to_end(&mut out)
    } else {
        return Ok(data.to_vec());
    };
    res.map_err(|source| ModuleError::Decompress {
        path: path.to_string(),
        source,
    })?;
    Ok(out)
}

/// Reads the `.modinfo` section of a (decompressed) module ELF.
pub fn modinfo_of_elf(path: &str, elf: &[u8]) -> Result<ModInfo, ModuleError> {
    let parsed = goblin::elf::Elf::parse(elf).map_err(|source| ModuleError::NotElf {
        path: path.to_string(),
        source,
    })?;
    let section = parsed
        .section_headers
        .iter()
        .find(|sh| parsed.shdr_strtab.get_at(sh.sh_name) == Some(".modinfo"))
        .and_then(|sh| sh.file_range())
        .and_then(|range| elf.get(range))
        .ok_or_else(|| ModuleError::NoModinfo {
            path: path.to_string(),
        })?;
    Ok(parse_modinfo(section))
}

/// The module file name without directory and `.ko[.xz|.zst|.gz]`, normalised.
fn module_name_of(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let stem = [".ko.xz", ".ko.zst", ".ko.gz", ".ko"]
        .iter()
        .find_map(|suffix| file.strip_suffix(suffix))?;
    Some(normalize_name(stem))
}

/// What the tree says about one kernel's modules, read lazily.
struct Index<'t> {
    kver: String,
    /// Module name -> (path in tree, compressed bytes).
    files: BTreeMap<String, (String, &'t Arc<[u8]>)>,
    builtin: BTreeSet<String>,
    /// Alias -> builtin module name, from `modules.builtin.modinfo`.
    builtin_aliases: BTreeMap<String, String>,
    modinfo: BTreeMap<String, ModInfo>,
}

impl<'t> Index<'t> {
    fn new(tree: &'t Tree, kver: &str) -> Result<Self, ModuleError> {
        let root = ["usr/lib/modules", "lib/modules"]
            .iter()
            .map(|base| format!("{base}/{kver}"))
            .find(|dir| tree.get(&format!("{dir}/kernel")).is_some())
            .ok_or_else(|| ModuleError::NoModulesDir {
                kver: kver.to_string(),
            })?;
        let prefix = format!("{root}/kernel/");
        let mut files = BTreeMap::new();
        for (path, entry) in tree.iter().filter(|(p, _)| p.starts_with(&prefix)) {
            let (Kind::File(data), Some(name)) = (&entry.kind, module_name_of(path)) else {
                continue;
            };
            if let Some((first, _)) = files.get(&name) {
                tracing::warn!(module = %name, kept = %first, ignored = %path, "two files for one module");
                continue;
            }
            files.insert(name, (path.to_string(), data));
        }
        let text = |file: &str| match tree.get(&format!("{root}/{file}")).map(|e| &e.kind) {
            Some(Kind::File(d)) => String::from_utf8_lossy(d).into_owned(),
            _ => String::new(),
        };
        let builtin = text("modules.builtin")
            .lines()
            .filter_map(module_name_of)
            .collect();
        let mut builtin_aliases = BTreeMap::new();
        for field in text("modules.builtin.modinfo").split('\0') {
            if let Some((module, alias)) = field.split_once(".alias=") {
                builtin_aliases
                    .entry(alias.to_string())
                    .or_insert_with(|| normalize_name(module));
            }
        }
        Ok(Index {
            kver: kver.to_string(),
            files,
            builtin,
            builtin_aliases,
            modinfo: BTreeMap::new(),
        })
    }

    fn modinfo(&mut self, name: &str) -> Result<ModInfo, ModuleError> {
        if let Some(info) = self.modinfo.get(name) {
            return Ok(info.clone());
        }
        let Some((path, data)) = self.files.get(name) else {
            return Ok(ModInfo::default());
        };
        let elf = decompress_module(path, data)?;
        let info = modinfo_of_elf(path, &elf)?;
        self.modinfo.insert(name.to_string(), info.clone());
        Ok(info)
    }

    /// Resolves a name or alias to the modules it stands for: a loadable
    /// module, a builtin, or every module carrying it as an alias.
    fn resolve(&mut self, raw: &str) -> Result<Vec<Target>, ModuleError> {
        let name = normalize_name(raw);
        if self.files.contains_key(&name) {
            return Ok(vec![Target::Module(name)]);
        }
        if self.builtin.contains(&name) {
            return Ok(vec![Target::Builtin(name)]);
        }
        if let Some(module) = self.builtin_aliases.get(raw) {
            return Ok(vec![Target::Builtin(module.clone())]);
        }
        // Aliases are only in each module's .modinfo: decompress just the
        // modules whose name contains the alias's core (crypto-crc32c ->
        // crc32c_generic, crc32c_intel), not all 4000.
        let core = normalize_name(
            ["crypto-", "fs-"]
                .iter()
                .find_map(|p| raw.strip_prefix(p))
                .unwrap_or(raw),
        );
        let candidates: Vec<String> = self
            .files
            .keys()
            .filter(|n| n.contains(&core))
            .cloned()
            .collect();
        let mut found = Vec::new();
        for candidate in candidates {
            if self.modinfo(&candidate)?.aliases.iter().any(|a| a == raw) {
                found.push(Target::Module(candidate));
            }
        }
        Ok(found)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Module(String),
    Builtin(String),
}

/// Walks the dependency graph depth-first; a module is pushed after what it needs.
struct Walk<'i, 't> {
    index: &'i mut Index<'t>,
    done: BTreeSet<String>,
    stack: Vec<String>,
    out: Vec<Module>,
}

impl Walk<'_, '_> {
    fn visit_target(&mut self, target: Target, soft: bool) -> Result<(), ModuleError> {
        match target {
            Target::Builtin(name) => {
                if self.done.insert(name.clone()) {
                    self.out.push(Module {
                        name,
                        path_in_tree: String::new(),
                        builtin: true,
                    });
                }
                Ok(())
            }
            Target::Module(name) if self.stack.contains(&name) => {
                if soft {
                    return Ok(()); // A softdep back to a module being loaded adds no order.
                }
                let mut chain = self.stack.clone();
                chain.push(name);
                Err(ModuleError::Cycle { chain })
            }
            Target::Module(name) => self.visit(name),
        }
    }

    fn visit(&mut self, name: String) -> Result<(), ModuleError> {
        if self.done.contains(&name) {
            return Ok(());
        }
        self.stack.push(name.clone());
        let info = self.index.modinfo(&name)?;
        for soft in &info.softdep_pre {
            for target in self.index.resolve(soft)? {
                self.visit_target(target, true)?;
            }
            // An unresolvable softdep is skipped, as modprobe does.
        }
        for dep in &info.depends {
            let targets = self.index.resolve(dep)?;
            if targets.is_empty() {
                return Err(ModuleError::MissingDependency {
                    module: name,
                    dependency: dep.clone(),
                    kver: self.index.kver.clone(),
                });
            }
            for target in targets {
                self.visit_target(target, false)?;
            }
        }
        self.stack.pop();
        self.done.insert(name.clone());
        let path_in_tree = self
            .index
            .files
            .get(&name)
            .map(|(p, _)| p.clone())
            .unwrap_or_default();
        self.out.push(Module {
            name,
            path_in_tree,
            builtin: false,
        });
        for soft in &info.softdep_post {
            for target in self.index.resolve(soft)? {
                self.visit_target(target, true)?;
            }
        }
        Ok(())
    }
}

/// The wanted modules and everything they need, in load order (see the
/// module docs). `wanted` is sorted and deduplicated first, so the result
/// does not depend on the order the image lists them in.
pub fn closure(tree: &Tree, kver: &str, wanted: &[String]) -> Result<Vec<Module>, ModuleError> {
    let mut index = Index::new(tree, kver)?;
    // Keyed by the normalised name; the raw spelling is kept for alias lookups.
    let wanted: BTreeMap<String, &str> = wanted
        .iter()
        .map(|w| (normalize_name(w), w.trim()))
        .collect();
    let mut walk = Walk {
        index: &mut index,
        done: BTreeSet::new(),
        stack: Vec::new(),
        out: Vec::new(),
    };
    for (_, raw) in wanted {
        let targets = walk.index.resolve(raw)?;
        let name = raw.to_string();
        if targets.is_empty() {
            return Err(ModuleError::Unknown {
                name,
                kver: kver.to_string(),
            });
        }
        for target in targets {
            walk.visit_target(target, false)?;
        }
    }
    Ok(walk.out)
}

/// The files a closure puts in the initramfs, ready for
/// [`initramfs::build`](super::initramfs::build).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EarlyModules {
    /// `(path, bytes)`: the same path as in the tree, the bytes as shipped.
    pub files: Vec<(String, Arc<[u8]>)>,
    /// The text for [`MODULES_ORDER_PATH`]: one absolute path per line, in load order.
    pub order: String,
}

/// The initramfs side of a closure: every loadable module, builtins skipped.
pub fn initramfs_payload(tree: &Tree, modules: &[Module]) -> Result<EarlyModules, ModuleError> {
    let mut early = EarlyModules::default();
    for m in modules.iter().filter(|m| !m.builtin) {
        let data = match tree.get(&m.path_in_tree).map(|e| &e.kind) {
            Some(Kind::File(data)) => Arc::clone(data),
            _ => {
                let (name, path) = (m.name.clone(), m.path_in_tree.clone());
                return Err(ModuleError::NotInTree { name, path });
            }
        };
        early.order.push('/');
        early.order.push_str(&m.path_in_tree);
        early.order.push('\n');
        early.files.push((m.path_in_tree.clone(), data));
    }
    Ok(early)
}

#[cfg(test)]
#[path = "modules_tests.rs"]
mod tests;
