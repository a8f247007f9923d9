//! Dependency closure: from root package names to the set of packages an
//! image needs, over `Pre-Depends` and `Depends` only.
//!
//! Contract:
//! - One version per package name. Among candidates the highest version that
//!   meets the constraint wins; a name already selected keeps its version.
//! - For each OR-group: satisfied if any alternative is already selected (or
//!   provided by a selected package); otherwise the first satisfiable
//!   alternative is taken: a real package first, else a provider (virtual
//!   package), the first by name. A versioned dependency is met only by a
//!   real version or a versioned `Provides` that satisfies it.
//! - Excluded names are unsatisfiable. A group that no other alternative
//!   satisfies, and that names an excluded package or that an excluded
//!   provider would satisfy, is dropped and recorded in
//!   [`Resolution::dropped`] (the image author excluded it on purpose).
//! - `Essential`/`Priority: required` packages are never added implicitly;
//!   `Recommends`/`Suggests` are ignored; cycles are normal and terminate.
//! - The result is deterministic: breadth-first from the roots in the given
//!   order, over ordered maps only.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::packages::{format_group, parse_relations, Dep, FieldError, Package};
use super::version::compare;
use super::TARGET_ARCH;

/// Errors from resolving roots to a closed package set.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("invalid root {root:?}")]
    BadRoot {
        root: String,
        #[source]
        source: FieldError,
    },
    #[error("unknown root package {name}{}", did_you_mean(.suggestions))]
    UnknownRoot {
        name: String,
        suggestions: Vec<String>,
    },
    #[error("root package {name} is excluded")]
    RootExcluded { name: String },
    #[error("root {root}: no candidate satisfies ({detail})")]
    RootUnsatisfiable { root: String, detail: String },
    #[error("{chain} -> {dep}: no candidate satisfies ({detail})")]
    Unsatisfiable {
        /// The packages that led here, from a root: `containerd -> runc`.
        chain: String,
        dep: String,
        detail: String,
    },
}

fn did_you_mean(suggestions: &[String]) -> String {
    if suggestions.is_empty() {
        String::new()
    } else {
        format!(" (did you mean {}?)", suggestions.join(", "))
    }
}

/// A package that provides a virtual name.
#[derive(Debug, Clone)]
struct Provider {
    package: String,
    version: String,
    provided_version: Option<String>,
}

/// All known packages, every version, plus the virtual names they provide.
#[derive(Debug, Default, Clone)]
pub struct Index {
    /// Name -> versions, highest first.
    packages: BTreeMap<String, Vec<Package>>,
    /// Virtual name -> providers, by provider name then highest version.
    providers: BTreeMap<String, Vec<Provider>>,
}

impl Index {
    /// Builds an index from one or more package lists (e.g. main and
    /// security). All versions are kept; for an exact duplicate
    /// (name and version) the first list wins.
    pub fn new(sets: impl IntoIterator<Item = Vec<Package>>) -> Index {
        let mut packages: BTreeMap<String, Vec<Package>> = BTreeMap::new();
        for pkg in sets.into_iter().flatten() {
            packages.entry(pkg.name.clone()).or_default().push(pkg);
        }
        let mut providers: BTreeMap<String, Vec<Provider>> = BTreeMap::new();
        for versions in packages.values_mut() {
            // Stable sort: for equal versions the earlier list stays first.
            versions.sort_by(|a, b| compare(&b.version, &a.version));
            versions.dedup_by(|b, a| compare(&a.version, &b.version).is_eq());
            for pkg in versions.iter() {
                for p in &pkg.provides {
                    providers.entry(p.name.clone()).or_default().push(Provider {
                        package: pkg.name.clone(),
                        version: pkg.version.clone(),
                        provided_version: p.version.clone(),
                    });
                }
            }
        }
        for list in providers.values_mut() {
            list.sort_by(|a, b| {
                a.package
                    .cmp(&b.package)
                    .then_with(|| compare(&b.version, &a.version))
            });
        }
        Index {
            packages,
            providers,
        }
    }

    /// Every version of a real package, highest first (empty if unknown).
    pub fn versions(&self, name: &str) -> &[Package] {
        self.packages.get(name).map_or(&[], Vec::as_slice)
    }

    /// Names of the packages that provide `name`, sorted, without duplicates.
    pub fn providers_of(&self, name: &str) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .providers
            .get(name)
            .map(|l| l.iter().map(|p| p.package.as_str()).collect())
            .unwrap_or_default();
        out.dedup();
        out
    }

    /// Number of distinct real package names.
    pub fn len(&self) -> usize {
        self.packages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.packages.is_empty()
    }

    fn package(&self, name: &str, version: &str) -> Option<&Package> {
        self.versions(name).iter().find(|p| p.version == version)
    }

    fn knows(&self, name: &str) -> bool {
        self.packages.contains_key(name) || self.providers.contains_key(name)
    }

    /// Up to five known names close to `name` (edit distance <= 2, or
    /// containing it), closest first.
    fn suggest(&self, name: &str) -> Vec<String> {
        let mut scored: Vec<(usize, &str)> = self
            .packages
            .keys()
            .chain(self.providers.keys())
            .filter_map(|k| {
                let d = edit_distance(name, k);
                if d <= 2 {
                    Some((d, k.as_str()))
                } else if name.len() >= 3 && k.contains(name) {
                    Some((3 + k.len() - name.len(), k.as_str()))
                } else {
                    None
                }
            })
            .collect();
        scored.sort();
        scored.dedup_by(|a, b| a.1 == b.1);
        scored
            .into_iter()
            .take(5)
            .map(|(_, k)| k.to_string())
            .collect()
    }
}

/// Levenshtein distance, giving up early (returning a large value) when
/// the lengths alone differ by more than 2.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len().abs_diff(b.len()) > 2 {
        return usize::MAX;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closed set of packages for an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// Selected packages, sorted by name.
    pub packages: Vec<Package>,
    /// Why each package is there: `"root"` or the name of the package that
    /// first depended on it.
    pub reasons: BTreeMap<String, String>,
    /// Dependencies dropped because only excluded packages satisfy them:
    /// (the depending package, the dependency as written).
    pub dropped: Vec<(String, String)>,
}

/// Computes the dependency closure of `roots` over `Pre-Depends` and
/// `Depends`. A root is `name`, `name (>= ver)` or `name=ver`.
pub fn resolve(
    index: &Index,
    roots: &[String],
    excludes: &BTreeSet<String>,
) -> Result<Resolution, ResolveError> {
    let mut r = Resolver {
        index,
        excludes,
        selected: BTreeMap::new(),
        provided: BTreeMap::new(),
        reasons: BTreeMap::new(),
        dropped: Vec::new(),
        queue: VecDeque::new(),
    };
    for root in roots {
        r.add_root(root)?;
    }
    while let Some(pkg) = r.queue.pop_front() {
        for group in pkg.pre_depends.iter().chain(&pkg.depends) {
            r.satisfy(pkg, group)?;
        }
    }
    Ok(Resolution {
        packages: r.selected.into_values().cloned().collect(),
        reasons: r.reasons,
        dropped: r.dropped,
    })
}

/// Parses a root: `name`, `name (>= ver)` or `name=ver`.
fn parse_root(root: &str) -> Result<Dep, ResolveError> {
    let bad = |source| ResolveError::BadRoot {
        root: root.to_string(),
        source,
    };
    let text = match root.split_once('=') {
        Some((name, ver)) if !root.contains('(') => format!("{} (= {})", name.trim(), ver.trim()),
        _ => root.to_string(),
    };
    let groups = parse_relations(&text, TARGET_ARCH).map_err(bad)?;
    let mut alts = groups.into_iter().flatten();
    match (alts.next(), alts.next()) {
        (Some(dep), None) => Ok(dep),
        _ => Err(bad(FieldError::Syntax {
            reason: "expected one package name, optionally with a version",
            text: root.to_string(),
        })),
    }
}

struct Resolver<'a> {
    index: &'a Index,
    excludes: &'a BTreeSet<String>,
    selected: BTreeMap<&'a str, &'a Package>,
    /// Virtual name -> versions provided by selected packages (`None`: unversioned).
    provided: BTreeMap<&'a str, Vec<Option<&'a str>>>,
    reasons: BTreeMap<String, String>,
    dropped: Vec<(String, String)>,
    queue: VecDeque<&'a Package>,
}

/// Does `version` meet the dependency's constraint (if any)?
fn meets(dep: &Dep, version: &str) -> bool {
    dep.constraint
        .as_ref()
        .is_none_or(|(rel, want)| rel.satisfied_by(version, want))
}

/// Is the dependency's multi-arch qualifier usable on the target architecture?
fn native(dep: &Dep) -> bool {
    match dep.arch_qualifier.as_deref() {
        None | Some("any") | Some("native") => true,
        Some(arch) => arch == TARGET_ARCH,
    }
}

impl<'a> Resolver<'a> {
    fn select(&mut self, pkg: &'a Package, reason: &str) {
        self.selected.insert(&pkg.name, pkg);
        self.reasons.insert(pkg.name.clone(), reason.to_string());
        for p in &pkg.provides {
            self.provided
                .entry(&p.name)
                .or_default()
                .push(p.version.as_deref());
        }
        self.queue.push_back(pkg);
    }

    fn add_root(&mut self, root: &str) -> Result<(), ResolveError> {
        let dep = parse_root(root)?;
        if self.excludes.contains(&dep.name) {
            return Err(ResolveError::RootExcluded { name: dep.name });
        }
        if !self.index.knows(&dep.name) {
            return Err(ResolveError::UnknownRoot {
                suggestions: self.index.suggest(&dep.name),
                name: dep.name,
            });
        }
        if self.satisfied(&dep) {
            self.reasons.insert(dep.name.clone(), "root".to_string());
            return Ok(());
        }
        match self.candidate(&dep, true) {
            Some(pkg) => {
                self.select(pkg, "root");
                Ok(())
            }
            None => Err(ResolveError::RootUnsatisfiable {
                root: dep.to_string(),
                detail: self.explain(&dep),
            }),
        }
    }

    /// Is `dep` met by a package already selected (really or virtually)?
    fn satisfied(&self, dep: &Dep) -> bool {
        if !native(dep) {
            return false;
        }
        if let Some(pkg) = self.selected.get(dep.name.as_str()) {
            if meets(dep, &pkg.version) {
                return true;
            }
        }
        let Some(versions) = self.provided.get(dep.name.as_str()) else {
            return false;
        };
        match &dep.constraint {
            None => !versions.is_empty(),
            Some((rel, want)) => versions.iter().flatten().any(|v| rel.satisfied_by(v, want)),
        }
    }

    fn excluded(&self, name: &str, honour_excludes: bool) -> bool {
        honour_excludes && self.excludes.contains(name)
    }

    /// Can `pkg` be selected without a second version of its name?
    fn compatible(&self, pkg: &Package) -> bool {
        self.selected
            .get(pkg.name.as_str())
            .is_none_or(|s| s.version == pkg.version)
    }

    /// The package to select for `dep`: the highest real version meeting the
    /// constraint, else the first provider by name (one already selected
    /// first).
    fn candidate(&self, dep: &Dep, honour_excludes: bool) -> Option<&'a Package> {
        if !native(dep) || self.excluded(&dep.name, honour_excludes) {
            return None;
        }
        let index = self.index;
        let real = index
            .versions(&dep.name)
            .iter()
            .find(|p| meets(dep, &p.version) && self.compatible(p));
        if real.is_some() {
            return real;
        }
        let providers = index.providers.get(&dep.name)?;
        let usable = providers.iter().filter(|p| {
            !self.excluded(&p.package, honour_excludes)
                && match (&dep.constraint, &p.provided_version) {
                    (None, _) => true,
                    (Some((rel, want)), Some(v)) => rel.satisfied_by(v, want),
                    (Some(_), None) => false,
                }
        });
        let mut first = None;
        for p in usable {
            let Some(pkg) = index.package(&p.package, &p.version) else {
                continue;
            };
            if self.selected.contains_key(pkg.name.as_str()) && self.compatible(pkg) {
                return Some(pkg);
            }
            if first.is_none() && self.compatible(pkg) {
                first = Some(pkg);
            }
        }
        first
    }

    fn satisfy(&mut self, parent: &'a Package, group: &[Dep]) -> Result<(), ResolveError> {
        if group.iter().any(|d| self.satisfied(d)) {
            return Ok(());
        }
        if let Some(pkg) = group.iter().find_map(|d| self.candidate(d, true)) {
            self.select(pkg, &parent.name);
            return Ok(());
        }
        let dep = format_group(group);
        let blocked_by_excludes = group
            .iter()
            .any(|d| self.excludes.contains(&d.name) || self.candidate(d, false).is_some());
        if blocked_by_excludes {
            tracing::debug!(package = %parent.name, dep = %dep, "dropping dependency met only by excluded packages");
            self.dropped.push((parent.name.clone(), dep));
            return Ok(());
        }
        Err(ResolveError::Unsatisfiable {
            chain: self.chain(&parent.name),
            detail: group
                .iter()
                .map(|d| self.explain(d))
                .collect::<Vec<_>>()
                .join("; "),
            dep,
        })
    }

    /// `root -> ... -> name`, following the reasons back to a root.
    fn chain(&self, name: &str) -> String {
        let mut chain = vec![name];
        let mut cur = name;
        while let Some(parent) = self.reasons.get(cur) {
            if parent == "root" || chain.len() > self.reasons.len() {
                break;
            }
            chain.push(parent);
            cur = parent;
        }
        chain.reverse();
        chain.join(" -> ")
    }

    /// Why no candidate meets `dep`: what the index has for that name.
    fn explain(&self, dep: &Dep) -> String {
        let name = &dep.name;
        if !native(dep) {
            return format!("{dep}: foreign architecture");
        }
        if self.excludes.contains(name) {
            return format!("{name}: excluded");
        }
        if let Some(sel) = self.selected.get(name.as_str()) {
            return format!("{name}: {} already selected", sel.version);
        }
        let versions: Vec<&str> = self
            .index
            .versions(name)
            .iter()
            .map(|p| p.version.as_str())
            .collect();
        let providers = self.index.providers_of(name);
        match (versions.is_empty(), providers.is_empty()) {
            (true, true) => format!("{name}: not in the index"),
            (false, true) => format!("{name}: available {}", versions.join(", ")),
            (true, false) => format!("{name}: provided by {}", providers.join(", ")),
            (false, false) => format!(
                "{name}: available {}, provided by {}",
                versions.join(", "),
                providers.join(", ")
            ),
        }
    }
}

#[cfg(test)]
#[path = "resolve_tests.rs"]
mod tests;
