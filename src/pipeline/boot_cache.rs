//! The boot stage's result, cached: a build whose boot inputs did not
//! change reads its kernel, initramfs and root-side modules back instead of
//! unpacking the kernel package and compressing the initramfs again
//! (zstd -19, most of a warm build's time before this cache).
//!
//! An entry is a derived product of the package cache
//! ([`Cache::get_derived`]): stored content-addressed, hash-checked on
//! every read, written through a temporary name and a rename. It is named
//! by [`BootKey`], the sha256 of everything [`super::boot_files::prepare`] reads:
//! the kernel packages as locked, the four module lists, the agent's bytes,
//! SOURCE_DATE_EPOCH, and the builder itself (the running nodeimg's sha256,
//! so a changed stage never reads an older stage's result). The entry
//! repeats its key, so a link that names another entry's bytes is refused.
//!
//! The cache never decides what goes into an image: an entry that is
//! missing, fails its hash or does not parse is rebuilt, and an entry that
//! cannot be written costs only time. The [`KEEP`] most recently used
//! entries are kept.
//!
//! Entry layout (integers little-endian):
//!
//! ```text
//! magic "nodeimg boot parts v1\n"
//! key   [32]    the BootKey it was stored under
//! n     u32     then n fields, each:
//!     name  u32 length + UTF-8  (FIELDS in order, then "root:<path>" per root file)
//!     bytes u64 length + bytes
//! ```

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::boot::inspect;
use crate::source::cache::Cache;
use crate::source::lock::LockedPackage;
use crate::spec::Plan;
use crate::util::hash::{self, Sha256};
use crate::util::path::normalize;

use super::boot_files::BootParts;

/// Derived-cache kind of boot stage results; a new layout is a new kind.
pub const KIND: &str = "boot-parts-v1";
/// Entries kept after a store: a few images times a few agents.
pub const KEEP: usize = 8;
const MAGIC: &[u8] = b"nodeimg boot parts v1\n";
/// The fields before the root files, in order.
const FIELDS: [&str; 7] = [
    "kernel-release",
    "kernel",
    "initramfs",
    "initramfs-modules",
    "root-modules",
    "uefi-modules",
    "deferred-modules",
];
const ROOT_PREFIX: &str = "root:";

/// Why a hash-checked entry is still unusable (it is rebuilt).
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error("the boot-parts entry does not start with its magic")]
    Magic,
    #[error("the boot-parts entry was stored under another key")]
    WrongKey,
    #[error("the boot-parts entry ends inside field {field}")]
    Truncated { field: usize },
    #[error("the boot-parts entry has `{found}` where `{expected}` belongs")]
    Field { expected: String, found: String },
    #[error("the boot-parts entry's field {name} is not UTF-8")]
    NotText { name: String },
    #[error("the boot-parts entry has a root file with a bad path {path:?}")]
    BadPath { path: String },
    #[error("the boot-parts entry has {extra} bytes after its last field")]
    Trailing { extra: usize },
    #[error("the boot-parts entry's kernel is unreadable")]
    Kernel(#[source] crate::boot::KernelError),
}

/// The name of one boot stage result: see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootKey(pub Sha256);

/// The digest of every input of [`super::boot_files::prepare`]. `builder` names
/// the code that builds (see [`builder_identity`]).
pub fn key(
    builder: &Sha256,
    plan: &Plan,
    kernel_packages: &[&LockedPackage],
    agent: &[u8],
    mtime: u32,
) -> BootKey {
    let mut k = KeyWriter::default();
    k.bytes(KIND.as_bytes());
    k.bytes(builder);
    k.bytes(&mtime.to_le_bytes());
    k.count(kernel_packages.len());
    for p in kernel_packages {
        for field in [&p.name, &p.version, &p.architecture, &p.sha256] {
            k.bytes(field.as_bytes());
        }
    }
    for list in [
        &plan.initramfs_modules,
        &plan.modules,
        &plan.uefi_modules,
        &plan.deferred_modules,
    ] {
        k.names(list);
    }
    k.bytes(&hash::sha256(agent));
    BootKey(hash::sha256(&k.0))
}

/// Length-prefixed fields, so no two inputs spell the same key text.
#[derive(Default)]
struct KeyWriter(Vec<u8>);

impl KeyWriter {
    fn count(&mut self, n: usize) {
        self.0.extend_from_slice(&(n as u64).to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.count(b.len());
        self.0.extend_from_slice(b);
    }
    fn names(&mut self, names: &BTreeSet<String>) {
        self.count(names.len());
        for n in names {
            self.bytes(n.as_bytes());
        }
    }
}

/// The sha256 of the running nodeimg: a rebuilt nodeimg may build boot
/// parts differently, so its entries are its own. `None` (the executable
/// cannot be read) turns the cache off.
pub fn builder_identity() -> Option<Sha256> {
    let exe = std::env::current_exe()
        .map_err(|e| tracing::debug!(error = %e, "no path to this nodeimg; boot-parts cache off"))
        .ok()?;
    match std::fs::File::open(&exe).and_then(hash::sha256_reader) {
        Ok((sha, _)) => Some(sha),
        Err(e) => {
            tracing::debug!(path = %exe.display(), error = %e, "cannot hash this nodeimg; boot-parts cache off");
            None
        }
    }
}

/// The boot parts stored under `key`, when an intact entry exists.
pub fn load(cache: &Cache, key: &BootKey) -> Option<BootParts> {
    let blob = match cache.get_derived(KIND, &key.0) {
        Ok(blob) => blob?,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the boot-parts cache; building the boot parts");
            return None;
        }
    };
    match decode(key, &blob) {
        Ok(parts) => {
            cache.touch_derived(KIND, &key.0);
            Some(parts)
        }
        Err(e) => {
            tracing::warn!(error = %e, "unusable boot-parts cache entry; building the boot parts");
            None
        }
    }
}

/// Stores `parts` under `key` and prunes the oldest entries. A failure is
/// logged, never returned: the build's output does not depend on it.
pub fn store(cache: &Cache, key: &BootKey, parts: &BootParts) {
    let blob = encode(key, parts);
    if let Err(e) = cache.put_derived(KIND, &key.0, &blob) {
        tracing::warn!(error = %e, "cannot store the boot parts in the cache");
        return;
    }
    if let Err(e) = cache.prune_derived(KIND, KEEP) {
        tracing::warn!(error = %e, "cannot prune the boot-parts cache");
    }
}

/// The entry for `parts` (layout in the module docs).
pub fn encode(key: &BootKey, parts: &BootParts) -> Vec<u8> {
    let lines = |names: &[String]| names.join("\n").into_bytes();
    let fixed: [Vec<u8>; 7] = [
        parts.kernel_release.as_bytes().to_vec(),
        Vec::new(), // the kernel, written from its Arc below
        Vec::new(), // the initramfs, likewise
        lines(&parts.initramfs_modules),
        lines(&parts.root_modules),
        lines(&parts.uefi_modules),
        lines(&parts.deferred_modules),
    ];
    let data_len: usize = parts.kernel.len()
        + parts.initramfs.len()
        + parts.root_files.iter().map(|(_, d)| d.len()).sum::<usize>();
    let mut out = Vec::with_capacity(data_len + 64 * (FIELDS.len() + parts.root_files.len()));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&key.0);
    let n = FIELDS.len() + parts.root_files.len();
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
    let mut field = |name: &str, data: &[u8]| {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(data.len() as u64).to_le_bytes());
        out.extend_from_slice(data);
    };
    for (i, (name, data)) in FIELDS.iter().zip(&fixed).enumerate() {
        match i {
            1 => field(name, &parts.kernel),
            2 => field(name, &parts.initramfs),
            _ => field(name, data),
        }
    }
    for (path, data) in &parts.root_files {
        field(&format!("{ROOT_PREFIX}{path}"), data);
    }
    out
}

/// Reads an entry back; it must have been stored under `key`.
pub fn decode(key: &BootKey, blob: &[u8]) -> Result<BootParts, EntryError> {
    let mut r = Reader {
        rest: blob,
        field: 0,
    };
    if r.take(MAGIC.len())? != MAGIC {
        return Err(EntryError::Magic);
    }
    if r.take(32)? != key.0 {
        return Err(EntryError::WrongKey);
    }
    let n = u32::from_le_bytes(r.array()?) as usize;
    if n < FIELDS.len() {
        return Err(EntryError::Truncated { field: n });
    }
    let mut fixed = Vec::with_capacity(FIELDS.len());
    for expected in FIELDS {
        let (name, data) = r.field()?;
        if name != expected {
            return Err(EntryError::Field {
                expected: expected.into(),
                found: name.into(),
            });
        }
        fixed.push(data);
    }
    let mut root_files = Vec::with_capacity(n - FIELDS.len());
    for _ in FIELDS.len()..n {
        let (name, data) = r.field()?;
        let path = name
            .strip_prefix(ROOT_PREFIX)
            .ok_or_else(|| EntryError::Field {
                expected: format!("{ROOT_PREFIX}<path>"),
                found: name.into(),
            })?;
        if path.is_empty() || normalize(path).as_deref() != Some(path) {
            return Err(EntryError::BadPath { path: path.into() });
        }
        root_files.push((path.to_string(), Arc::from(data)));
    }
    if !r.rest.is_empty() {
        return Err(EntryError::Trailing {
            extra: r.rest.len(),
        });
    }
    let text = |i: usize| {
        std::str::from_utf8(fixed[i]).map_err(|_| EntryError::NotText {
            name: FIELDS[i].into(),
        })
    };
    let names = |i: usize| -> Result<Vec<String>, EntryError> {
        Ok(text(i)?
            .split('\n')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect())
    };
    let kernel: Arc<[u8]> = Arc::from(fixed[1]);
    let kernel_info = inspect(&kernel).map_err(EntryError::Kernel)?;
    Ok(BootParts {
        kernel_release: text(0)?.to_string(),
        kernel_info,
        kernel,
        initramfs: fixed[2].to_vec(),
        initramfs_modules: names(3)?,
        root_modules: names(4)?,
        uefi_modules: names(5)?,
        deferred_modules: names(6)?,
        root_files,
    })
}

/// A cursor over an entry; `field` counts fields read, for errors.
struct Reader<'a> {
    rest: &'a [u8],
    field: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EntryError> {
        if self.rest.len() < n {
            return Err(EntryError::Truncated { field: self.field });
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], EntryError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn len(&mut self, bytes: u64) -> Result<usize, EntryError> {
        usize::try_from(bytes).map_err(|_| EntryError::Truncated { field: self.field })
    }

    fn field(&mut self) -> Result<(&'a str, &'a [u8]), EntryError> {
        let name_len = u32::from_le_bytes(self.array()?);
        let name_len = self.len(name_len.into())?;
        let name = self.take(name_len)?;
        let name = std::str::from_utf8(name).map_err(|_| EntryError::NotText {
            name: format!("#{}", self.field),
        })?;
        let data_len = u64::from_le_bytes(self.array()?);
        let data_len = self.len(data_len)?;
        let data = self.take(data_len)?;
        self.field += 1;
        Ok((name, data))
    }
}

/// The cache's answer for one build: the key a new result is stored
/// under (`None`: no cache, as without a builder identity or an agent) and
/// the stored parts when an intact entry exists.
pub struct Lookup {
    pub key: Option<BootKey>,
    pub parts: Option<BootParts>,
}

/// Looks up the boot parts of these inputs (those of [`super::boot_files::prepare`]).
pub fn lookup(
    cache: &Cache,
    builder: Option<&Sha256>,
    plan: &Plan,
    kernel_packages: &[&LockedPackage],
    agent: Option<&[u8]>,
    mtime: u32,
) -> Lookup {
    let key = builder
        .zip(agent)
        .map(|(b, agent)| key(b, plan, kernel_packages, agent, mtime));
    let parts = key.as_ref().and_then(|k| load(cache, k));
    if let Some(p) = &parts {
        tracing::info!(
            kernel = p.kernel_release,
            initramfs_bytes = p.initramfs.len(),
            root_files = p.root_files.len(),
            "boot parts read from the cache"
        );
    }
    Lookup { key, parts }
}

#[cfg(test)]
#[path = "boot_cache_tests.rs"]
mod tests;
