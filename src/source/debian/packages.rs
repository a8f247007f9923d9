//! Packages indexes: parse an already-decompressed `Packages` file into
//! [`Package`] records with structured `Depends`, `Pre-Depends` and
//! `Provides`.
//!
//! Dependency fields are read for [`TARGET_ARCH`]: an alternative whose
//! `[arch]` restriction list excludes it is dropped (and a group left with no
//! alternative is dropped); `<profile>` lists are build-time only and are
//! ignored. Every error names the package, the line and the field.

use std::fmt;
use std::num::ParseIntError;

use super::deb822::{self, Deb822Error, Paragraph};
use super::version::{self, Relation, VersionError};
use super::TARGET_ARCH;

/// Errors from reading a Packages index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("Packages index")]
    Syntax(#[source] Deb822Error),
    #[error("package {package} (line {line}) lacks field {field}")]
    MissingField {
        package: String,
        line: usize,
        field: &'static str,
    },
    #[error("package {package} (line {line}): invalid field {field}")]
    InvalidField {
        package: String,
        line: usize,
        field: &'static str,
        #[source]
        source: FieldError,
    },
}

/// Why a field value is invalid.
#[derive(Debug, thiserror::Error)]
pub enum FieldError {
    #[error("size {value:?} is not a number")]
    Size {
        value: String,
        #[source]
        source: ParseIntError,
    },
    #[error("{value:?} is not a SHA-256 in hex")]
    Sha256 { value: String },
    #[error("bad version")]
    Version(#[source] VersionError),
    #[error("bad relation {relation:?} in {text:?}")]
    Relation { relation: String, text: String },
    #[error("{reason} in {text:?}")]
    Syntax { reason: &'static str, text: String },
}

/// One binary package of an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// AND of OR-groups.
    pub depends: Vec<Vec<Dep>>,
    /// AND of OR-groups.
    pub pre_depends: Vec<Vec<Dep>>,
    pub provides: Vec<Provide>,
    /// Path of the .deb relative to the mirror root (`pool/main/...`).
    pub filename: String,
    pub size: u64,
    pub sha256: [u8; 32],
    pub essential: bool,
    pub priority: Option<String>,
    pub source: Option<String>,
    pub multi_arch: Option<String>,
    pub maintainer: Option<String>,
    /// The suite whose index lists it (`trixie-security`): not a field of
    /// the index, so empty until the reader of that suite sets it.
    pub suite: String,
}

/// One alternative of a dependency: `name[:qualifier] [(relation version)]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dep {
    pub name: String,
    /// Multi-arch qualifier such as `any` (without the colon).
    pub arch_qualifier: Option<String>,
    pub constraint: Option<(Relation, String)>,
}

/// One `Provides` entry: `name [(= version)]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Provide {
    pub name: String,
    pub version: Option<String>,
}

impl fmt::Display for Dep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(q) = &self.arch_qualifier {
            write!(f, ":{q}")?;
        }
        if let Some((rel, ver)) = &self.constraint {
            write!(f, " ({rel} {ver})")?;
        }
        Ok(())
    }
}

/// Formats an OR-group as written in control files: `a (>= 1) | b`.
pub fn format_group(group: &[Dep]) -> String {
    group
        .iter()
        .map(Dep::to_string)
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The index path of a component's Packages file, relative to the suite
/// directory, as listed in Release: `main/binary-amd64/Packages.xz`.
pub fn packages_index_path(component: &str, arch: &str) -> String {
    format!("{component}/binary-{arch}/Packages.xz")
}

/// Parses a whole (decompressed) Packages file.
pub fn parse_packages(text: &str) -> Result<Vec<Package>, IndexError> {
    deb822::paragraphs(text)
        .map(|para| parse_package(&para.map_err(IndexError::Syntax)?))
        .collect()
}

fn parse_package(para: &Paragraph<'_>) -> Result<Package, IndexError> {
    let name = para.get("Package").unwrap_or("").to_string();
    let package = if name.is_empty() {
        "<unnamed>".to_string()
    } else {
        name.clone()
    };
    let missing = |field: &'static str| IndexError::MissingField {
        package: package.clone(),
        line: para.line,
        field,
    };
    let invalid = |field: &'static str, source: FieldError| IndexError::InvalidField {
        package: package.clone(),
        line: para.field(field).map_or(para.line, |f| f.line),
        field,
        source,
    };
    let required = |field: &'static str| para.get(field).ok_or_else(|| missing(field));
    let optional = |field: &str| para.get(field).map(str::to_string);
    if name.is_empty() {
        return Err(missing("Package"));
    }
    let version = required("Version")?;
    version::validate(version).map_err(|e| invalid("Version", FieldError::Version(e)))?;
    let size = required("Size")?;
    let size = size.parse().map_err(|source| {
        invalid(
            "Size",
            FieldError::Size {
                value: size.to_string(),
                source,
            },
        )
    })?;
    let sha = required("SHA256")?;
    let mut sha256 = [0u8; 32];
    hex::decode_to_slice(sha, &mut sha256).map_err(|_| {
        invalid(
            "SHA256",
            FieldError::Sha256 {
                value: sha.to_string(),
            },
        )
    })?;
    let relations = |field: &'static str| {
        para.get(field)
            .map_or(Ok(Vec::new()), |v| parse_relations(v, TARGET_ARCH))
            .map_err(|e| invalid(field, e))
    };
    Ok(Package {
        version: version.to_string(),
        architecture: required("Architecture")?.to_string(),
        depends: relations("Depends")?,
        pre_depends: relations("Pre-Depends")?,
        provides: para
            .get("Provides")
            .map_or(Ok(Vec::new()), parse_provides)
            .map_err(|e| invalid("Provides", e))?,
        filename: required("Filename")?.to_string(),
        size,
        sha256,
        essential: para
            .get("Essential")
            .is_some_and(|v| v.eq_ignore_ascii_case("yes")),
        priority: optional("Priority"),
        source: optional("Source"),
        multi_arch: optional("Multi-Arch"),
        maintainer: optional("Maintainer"),
        suite: String::new(),
        name,
    })
}

/// Parses a relationship field (`Depends`, `Pre-Depends`, ...) for `arch`:
/// comma-separated AND of `|`-separated alternatives.
pub fn parse_relations(text: &str, arch: &str) -> Result<Vec<Vec<Dep>>, FieldError> {
    let mut groups = Vec::new();
    for group in text.split(',') {
        if group.trim().is_empty() {
            continue;
        }
        let mut alts = Vec::new();
        for alt in group.split('|') {
            if let Some(dep) = parse_alternative(alt, arch)? {
                alts.push(dep);
            }
        }
        if !alts.is_empty() {
            groups.push(alts);
        }
    }
    Ok(groups)
}

fn parse_provides(text: &str) -> Result<Vec<Provide>, FieldError> {
    let mut out = Vec::new();
    for item in text.split(',') {
        if item.trim().is_empty() {
            continue;
        }
        let Some(dep) = parse_alternative(item, TARGET_ARCH)? else {
            continue;
        };
        let version = match dep.constraint {
            None => None,
            Some((Relation::Eq, v)) => Some(v),
            Some((rel, _)) => {
                return Err(FieldError::Relation {
                    relation: rel.to_string(),
                    text: item.trim().to_string(),
                })
            }
        };
        out.push(Provide {
            name: dep.name,
            version,
        });
    }
    Ok(out)
}

/// Parses `name[:qual] [(rel ver)] [[arch list]] [<profiles>...]`.
/// `None` when the arch list excludes `arch`.
fn parse_alternative(text: &str, arch: &str) -> Result<Option<Dep>, FieldError> {
    let err = |reason| FieldError::Syntax {
        reason,
        text: text.trim().to_string(),
    };
    let mut rest = text.trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || "+-.".contains(c)))
        .unwrap_or(rest.len());
    let name = &rest[..end];
    if name.is_empty() {
        return Err(err("missing package name"));
    }
    rest = &rest[end..];
    let mut arch_qualifier = None;
    if let Some(r) = rest.strip_prefix(':') {
        let end = r
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .unwrap_or(r.len());
        if end == 0 {
            return Err(err("empty architecture qualifier"));
        }
        arch_qualifier = Some(r[..end].to_string());
        rest = &r[end..];
    }
    rest = rest.trim_start();
    let mut constraint = None;
    if let Some(r) = rest.strip_prefix('(') {
        let (inner, after) = r.split_once(')').ok_or_else(|| err("unclosed '('"))?;
        let inner = inner.trim();
        let split = inner
            .find(|c: char| c.is_ascii_alphanumeric() || c.is_whitespace())
            .unwrap_or(inner.len());
        let (rel, ver) = (&inner[..split], inner[split..].trim());
        let relation = Relation::parse(rel).ok_or_else(|| FieldError::Relation {
            relation: rel.to_string(),
            text: text.trim().to_string(),
        })?;
        version::validate(ver).map_err(FieldError::Version)?;
        constraint = Some((relation, ver.to_string()));
        rest = after.trim_start();
    }
    let mut included = true;
    if let Some(r) = rest.strip_prefix('[') {
        let (list, after) = r.split_once(']').ok_or_else(|| err("unclosed '['"))?;
        included = arch_list_includes(list, arch);
        rest = after.trim_start();
    }
    while let Some(r) = rest.strip_prefix('<') {
        let (_profiles, after) = r.split_once('>').ok_or_else(|| err("unclosed '<'"))?;
        rest = after.trim_start();
    }
    if !rest.trim().is_empty() {
        return Err(err("unexpected text after the dependency"));
    }
    Ok(included.then(|| Dep {
        name: name.to_string(),
        arch_qualifier,
        constraint,
    }))
}

/// Evaluates a restriction list such as `amd64 i386` or `!armel !mips` for `arch`.
fn arch_list_includes(list: &str, arch: &str) -> bool {
    let items: Vec<&str> = list.split_whitespace().collect();
    let matches = |pattern: &str| {
        pattern == arch
            || pattern == "any"
            || pattern == "linux-any"
            || pattern.strip_prefix("any-") == Some(arch)
            || pattern.strip_prefix("linux-") == Some(arch)
    };
    match items.first() {
        None => true,
        Some(first) if first.starts_with('!') => {
            !items.iter().any(|i| matches(i.trim_start_matches('!')))
        }
        Some(_) => items.iter().any(|i| matches(i)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SHA: &str = "5e7d2d7b34e4b0e2a0b6b3fbb8c1e2b1f0b8a4f9d5c8e6f2a3b4c5d6e7f8a9b0";

    fn stanza(name: &str, extra: &str) -> String {
        format!(
            "Package: {name}\nVersion: 1.0-1\nArchitecture: amd64\n{extra}\
             Filename: pool/main/{name}.deb\nSize: 42\nSHA256: {SHA}\n"
        )
    }

    fn dep(name: &str, c: Option<(Relation, &str)>) -> Dep {
        Dep {
            name: name.into(),
            arch_qualifier: None,
            constraint: c.map(|(r, v)| (r, v.into())),
        }
    }

    #[test]
    fn parses_a_full_stanza() {
        let text = format!(
            "{}\n{}",
            stanza(
                "libc-bin",
                "Essential: yes\nPriority: required\nSource: glibc (2.41-12)\n\
                 Multi-Arch: foreign\nMaintainer: GNU Libc Maintainers <x@example.org>\n\
                 Depends: libc6 (>> 2.41), libc6 (<< 2.42)\nPre-Depends: dpkg:any (>= 1.15)\n\
                 Provides: libc-tools (= 2.41), glibc-bin\nDescription: GNU C Library\n",
            ),
            stanza("zlib1g", ""),
        );
        let pkgs = parse_packages(&text).unwrap();
        assert_eq!(pkgs.len(), 2);
        let p = &pkgs[0];
        assert_eq!(p.name, "libc-bin");
        assert_eq!(p.version, "1.0-1");
        assert_eq!(p.architecture, "amd64");
        assert!(p.essential);
        assert_eq!(p.priority.as_deref(), Some("required"));
        assert_eq!(p.source.as_deref(), Some("glibc (2.41-12)"));
        assert_eq!(p.multi_arch.as_deref(), Some("foreign"));
        assert!(p.maintainer.as_deref().unwrap().starts_with("GNU Libc"));
        assert_eq!(
            p.depends,
            vec![
                vec![dep("libc6", Some((Relation::Gt, "2.41")))],
                vec![dep("libc6", Some((Relation::Lt, "2.42")))],
            ]
        );
        assert_eq!(p.pre_depends[0][0].arch_qualifier.as_deref(), Some("any"));
        assert_eq!(p.pre_depends[0][0].to_string(), "dpkg:any (>= 1.15)");
        assert_eq!(
            p.provides,
            vec![
                Provide {
                    name: "libc-tools".into(),
                    version: Some("2.41".into())
                },
                Provide {
                    name: "glibc-bin".into(),
                    version: None
                },
            ]
        );
        assert_eq!(p.filename, "pool/main/libc-bin.deb");
        assert_eq!(p.size, 42);
        assert_eq!(hex::encode(p.sha256), SHA);
        assert!(!pkgs[1].essential);
        assert!(pkgs[1].depends.is_empty());
    }

    #[test]
    fn alternatives_arch_lists_and_profiles() {
        let groups = parse_relations(
            "a | b (>=1.0) | c:any, d [!amd64] | e [amd64 i386] <!nocheck>, f [i386], \
             g [linux-any], h [!i386] <!stage1> <cross>, i (< 2), ,",
            "amd64",
        )
        .unwrap();
        assert_eq!(
            format_group(&groups[0]),
            "a | b (>= 1.0) | c:any",
            "the whole group"
        );
        assert_eq!(groups[1], vec![dep("e", None)]);
        assert_eq!(groups[2], vec![dep("g", None)]);
        assert_eq!(groups[3], vec![dep("h", None)]);
        assert_eq!(groups[4], vec![dep("i", Some((Relation::Le, "2")))]);
        assert_eq!(groups.len(), 5, "f [i386] is dropped: {groups:?}");
    }

    #[test]
    fn errors_name_package_line_and_field() {
        let text = format!(
            "{}\n{}",
            stanza("ok", ""),
            stanza("broken", "Depends: libfoo (~= 1)\n")
        );
        let err = parse_packages(&text).unwrap_err();
        assert_eq!(
            err.to_string(),
            "package broken (line 11): invalid field Depends"
        );
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert_eq!(source, "bad relation \"~=\" in \"libfoo (~= 1)\"");

        let err = parse_packages("Package: x\nVersion: 1\n").unwrap_err();
        assert_eq!(err.to_string(), "package x (line 1) lacks field Size");

        let bad_size = stanza("y", "").replace("Size: 42", "Size: many");
        let err = parse_packages(&bad_size).unwrap_err();
        assert!(matches!(
            err,
            IndexError::InvalidField {
                field: "Size",
                line: 5,
                ..
            }
        ));

        let bad_sha = stanza("z", "").replace(SHA, "abcd");
        assert!(matches!(
            parse_packages(&bad_sha).unwrap_err(),
            IndexError::InvalidField {
                field: "SHA256",
                ..
            }
        ));

        let bad_version = stanza("v", "").replace("1.0-1", "a:1");
        assert!(matches!(
            parse_packages(&bad_version).unwrap_err(),
            IndexError::InvalidField {
                field: "Version",
                ..
            }
        ));

        for bad in ["a (>= 1", "a [amd64", "(>= 1)", "a b", "a (>= )"] {
            assert!(parse_relations(bad, "amd64").is_err(), "{bad}");
        }
        let err = parse_provides("foo (>= 1)").unwrap_err();
        assert!(matches!(err, FieldError::Relation { .. }));
    }

    #[test]
    fn index_path() {
        assert_eq!(
            packages_index_path("main", "amd64"),
            "main/binary-amd64/Packages.xz"
        );
    }
}
