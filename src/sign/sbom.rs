//! The image's SBOM: one SPDX 2.3 JSON document from the manifest and the
//! workspace `Cargo.lock`.
//!
//! It lists the image (DESCRIBES), the artifacts, every Debian package with
//! its version, the .deb's sha256, the suite it came from (`sourceInfo`)
//! and a `pkg:deb` purl whose `distro` is that suite (`trixie-security`
//! for a security update), nodeagent, and the
//! crates of nodeagent's closure in `Cargo.lock`. Its relationships are:
//! the image CONTAINS the artifacts, the packages and nodeagent; nodeagent
//! CONTAINS its crates; the kernel artifact is GENERATED_FROM the kernel
//! packages. A pure function of its inputs: no clock (`created` is the
//! manifest's SOURCE_DATE_EPOCH) and a namespace derived from the content,
//! so one build gives one SBOM, byte for byte.
//!
//! Limits: `supplier` is the package's Debian `Maintainer` when the caller
//! passes it, else `Organization: Debian`. `licenseDeclared` is the SPDX
//! expression the caller passes per package, else `NOASSERTION`: the build
//! passes what a package's machine-readable (DEP-5) copyright file
//! declares when every short name in it has an exact SPDX identifier
//! (`source::copyright`), so packages with a free-text copyright file, a
//! package-specific name or `public-domain` stay `NOASSERTION`.
//! `licenseConcluded` and `copyrightText` are always `NOASSERTION`: nothing
//! here reads the license texts. The crate closure follows `Cargo.lock`,
//! which also records build, dev and other-target dependencies, so it may
//! list more crates than are linked; crates' licenses are `NOASSERTION`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use serde::Serialize;

use crate::manifest::Manifest;
use crate::util::hash;

/// The workspace member that is PID 1 in every image.
pub const AGENT_CRATE: &str = "nodeagent";
const NOASSERTION: &str = "NOASSERTION";

#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    #[error("Cargo.lock does not parse")]
    CargoLock(#[source] toml::de::Error),
    #[error("Cargo.lock: package entry {index} has no `{field}`")]
    LockEntry { index: usize, field: &'static str },
    #[error("Cargo.lock has no package `{0}` (the image's agent)")]
    NoAgent(String),
    #[error("writing the SBOM")]
    Write(#[source] serde_json::Error),
}

/// What the build knows besides the manifest; both maps may be empty.
#[derive(Debug, Default, Clone)]
pub struct SbomExtras {
    /// Debian `Maintainer:` per package name, from the .debs' control files.
    pub maintainers: BTreeMap<String, String>,
    /// An SPDX license expression per package name, where one is known.
    pub licenses: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Document {
    pub spdx_version: &'static str,
    pub data_license: &'static str,
    #[serde(rename = "SPDXID")]
    pub spdx_id: &'static str,
    pub name: String,
    pub document_namespace: String,
    pub creation_info: CreationInfo,
    pub packages: Vec<Package>,
    pub relationships: Vec<Relationship>,
}

#[derive(Debug, Serialize)]
pub struct CreationInfo {
    pub created: String,
    pub creators: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Package {
    #[serde(rename = "SPDXID")]
    pub spdx_id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_info: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package_file_name: Option<String>,
    pub supplier: String,
    pub download_location: &'static str,
    pub files_analyzed: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checksums: Vec<Checksum>,
    pub license_concluded: &'static str,
    pub license_declared: String,
    pub copyright_text: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub external_refs: Vec<ExternalRef>,
    pub primary_package_purpose: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_info: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Checksum {
    pub algorithm: &'static str,
    pub checksum_value: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalRef {
    pub reference_category: &'static str,
    pub reference_type: &'static str,
    pub reference_locator: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Relationship {
    pub spdx_element_id: String,
    pub relationship_type: &'static str,
    pub related_spdx_element: String,
}

/// Writes the SBOM of `manifest` as pretty JSON with a final newline.
pub fn write_sbom(
    manifest: &Manifest,
    cargo_lock: &str,
    extras: &SbomExtras,
    out: &mut impl Write,
) -> Result<(), SbomError> {
    let doc = sbom(manifest, cargo_lock, extras)?;
    serde_json::to_writer_pretty(&mut *out, &doc).map_err(SbomError::Write)?;
    out.write_all(b"\n")
        .map_err(|e| SbomError::Write(serde_json::Error::io(e)))
}

/// The SBOM of `manifest` as a document.
pub fn sbom(
    manifest: &Manifest,
    cargo_lock: &str,
    extras: &SbomExtras,
) -> Result<Document, SbomError> {
    let mut packages = Vec::new();
    let mut relationships = Vec::new();
    let rel = |a: &str, kind: &'static str, b: &str| Relationship {
        spdx_element_id: a.to_string(),
        relationship_type: kind,
        related_spdx_element: b.to_string(),
    };
    const IMAGE: &str = "SPDXRef-image";
    relationships.push(rel("SPDXRef-DOCUMENT", "DESCRIBES", IMAGE));
    packages.push(Package {
        spdx_id: IMAGE.into(),
        name: manifest.name.clone(),
        version_info: Some(manifest.version.clone()),
        comment: Some(format!(
            "nodeimg {} image for {}, Debian {}, layers {}",
            manifest.build.nodeimg_version,
            manifest.arch,
            manifest.build.debian_suite,
            manifest.build.layers.join(", ")
        )),
        primary_package_purpose: "OPERATING-SYSTEM",
        ..Package::bare(IMAGE, "")
    });

    let kernel_pkgs: Vec<String> = manifest
        .packages
        .iter()
        .enumerate()
        .filter(|(_, p)| p.role == "kernel")
        .map(|(i, p)| deb_id(i, &p.name))
        .collect();
    for (i, a) in manifest.artifacts.iter().enumerate() {
        let id = spdx_id(&format!("artifact-{i}-{}", a.kind));
        let kernel_version = manifest
            .boot
            .as_ref()
            .filter(|_| a.kind == "kernel")
            .map(|b| format!("Linux {}", b.kernel_version));
        packages.push(Package {
            name: a.path.clone(),
            package_file_name: Some(a.path.clone()),
            checksums: vec![sha256(&a.sha256)],
            primary_package_purpose: "FILE",
            comment: Some(match kernel_version {
                Some(v) => format!("artifact kind {}, {v}, {} bytes", a.kind, a.size),
                None => format!("artifact kind {}, {} bytes", a.kind, a.size),
            }),
            ..Package::bare(&id, "")
        });
        relationships.push(rel(IMAGE, "CONTAINS", &id));
        if a.kind == "kernel" {
            for k in &kernel_pkgs {
                relationships.push(rel(&id, "GENERATED_FROM", k));
            }
        }
    }

    for (i, p) in manifest.packages.iter().enumerate() {
        let id = deb_id(i, &p.name);
        let arch = deb_arch(&p.origin).unwrap_or(&manifest.arch);
        let suite = deb_suite(&p.origin).unwrap_or(&manifest.build.debian_suite);
        let supplier = extras
            .maintainers
            .get(&p.name)
            .map(|m| supplier_from_maintainer(m))
            .unwrap_or_else(|| "Organization: Debian".into());
        packages.push(Package {
            name: p.name.clone(),
            version_info: Some(p.version.clone()),
            package_file_name: p.origin.rsplit('/').next().map(str::to_string),
            supplier,
            checksums: vec![sha256(&p.sha256)],
            license_declared: extras
                .licenses
                .get(&p.name)
                .cloned()
                .unwrap_or_else(|| NOASSERTION.into()),
            external_refs: vec![purl(format!(
                "pkg:deb/debian/{}@{}?arch={}&distro={}",
                p.name,
                purl_escape(&p.version),
                purl_escape(arch),
                purl_escape(suite)
            ))],
            source_info: Some(format!("Debian suite {suite}")),
            primary_package_purpose: if p.role == "kernel" {
                "OPERATING-SYSTEM"
            } else {
                "LIBRARY"
            },
            comment: Some(format!("{} ({})", p.origin, p.role)),
            ..Package::bare(&id, "")
        });
        relationships.push(rel(IMAGE, "CONTAINS", &id));
    }

    if let Some(agent) = manifest.build.inputs.iter().find(|i| i.name == AGENT_CRATE) {
        let lock = parse_lock(cargo_lock)?;
        let root = lock
            .iter()
            .find(|c| c.name == AGENT_CRATE && c.source.is_none())
            .ok_or_else(|| SbomError::NoAgent(AGENT_CRATE.into()))?;
        const AGENT: &str = "SPDXRef-nodeagent";
        packages.push(Package {
            name: AGENT_CRATE.into(),
            version_info: Some(root.version.clone()),
            checksums: vec![sha256(&agent.sha256)],
            primary_package_purpose: "APPLICATION",
            comment: Some(format!(
                "PID 1 of the image (static binary, {} bytes); built from this workspace",
                agent.size
            )),
            ..Package::bare(AGENT, "")
        });
        relationships.push(rel(IMAGE, "CONTAINS", AGENT));
        for (i, c) in closure(&lock, root).into_iter().enumerate() {
            let id = spdx_id(&format!("crate-{i}-{}-{}", c.name, c.version));
            packages.push(Package {
                name: c.name.clone(),
                version_info: Some(c.version.clone()),
                checksums: c.checksum.iter().map(|s| sha256(s)).collect(),
                external_refs: vec![purl(format!(
                    "pkg:cargo/{}@{}",
                    c.name,
                    purl_escape(&c.version)
                ))],
                primary_package_purpose: "LIBRARY",
                comment: c.source.clone(),
                ..Package::bare(&id, "")
            });
            relationships.push(rel(AGENT, "CONTAINS", &id));
        }
    }

    // The namespace names this document: derived from what it describes.
    let mut seed = manifest.to_json().map_err(SbomError::Write)?;
    seed.extend_from_slice(cargo_lock.as_bytes());
    let h = hash::sha256_hex(&seed);
    Ok(Document {
        spdx_version: "SPDX-2.3",
        data_license: "CC0-1.0",
        spdx_id: "SPDXRef-DOCUMENT",
        name: format!("{}-{}", manifest.name, manifest.version),
        document_namespace: format!(
            "https://spdx.org/spdxdocs/nodeimg-{}-{}-{}-{}-{}-{}-{}",
            manifest.name,
            manifest.version,
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        ),
        creation_info: CreationInfo {
            created: rfc3339_utc(manifest.build.source_date_epoch),
            creators: vec![format!("Tool: nodeimg-{}", manifest.build.nodeimg_version)],
        },
        packages,
        relationships,
    })
}

impl Package {
    /// A package with every field at "nothing asserted".
    fn bare(id: &str, name: &str) -> Package {
        Package {
            spdx_id: id.to_string(),
            name: name.to_string(),
            version_info: None,
            package_file_name: None,
            supplier: NOASSERTION.into(),
            download_location: NOASSERTION,
            files_analyzed: false,
            checksums: Vec::new(),
            license_concluded: NOASSERTION,
            license_declared: NOASSERTION.into(),
            copyright_text: NOASSERTION,
            external_refs: Vec::new(),
            primary_package_purpose: "LIBRARY",
            source_info: None,
            comment: None,
        }
    }
}

fn deb_id(index: usize, name: &str) -> String {
    spdx_id(&format!("deb-{index}-{name}"))
}

/// `SPDXRef-` + the letters, digits, `.` and `-` of `s` (others become `-`).
fn spdx_id(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("SPDXRef-{clean}")
}

fn sha256(hex: &str) -> Checksum {
    Checksum {
        algorithm: "SHA256",
        checksum_value: hex.to_string(),
    }
}

fn purl(locator: String) -> ExternalRef {
    ExternalRef {
        reference_category: "PACKAGE-MANAGER",
        reference_type: "purl",
        reference_locator: locator,
    }
}

/// Percent-encodes all but purl's unreserved characters (a Debian epoch's
/// `:` and a version's `+` included).
fn purl_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The suite in a package's origin: `debian:<suite>/<pool path>`.
fn deb_suite(origin: &str) -> Option<&str> {
    origin
        .strip_prefix("debian:")?
        .split_once('/')
        .map(|(suite, _)| suite)
        .filter(|s| !s.is_empty())
}

/// The architecture in a pool file name: `…/name_version_amd64.deb`.
fn deb_arch(origin: &str) -> Option<&str> {
    let file = origin.rsplit('/').next()?;
    file.strip_suffix(".deb")?.rsplit('_').next()
}

/// SPDX `supplier` from a Debian `Maintainer:` (`Name <email>`): teams and
/// lists are organizations, everyone else a person.
fn supplier_from_maintainer(m: &str) -> String {
    let (name, email) = match m.split_once('<') {
        Some((n, rest)) => (n.trim(), rest.trim_end_matches('>').trim()),
        None => (m.trim(), ""),
    };
    let lower = name.to_ascii_lowercase();
    let org = [
        "team",
        "maintainers",
        "group",
        "project",
        "debian",
        "packagers",
    ]
    .iter()
    .any(|w| lower.contains(w));
    let kind = if org { "Organization" } else { "Person" };
    if email.is_empty() {
        format!("{kind}: {name}")
    } else {
        format!("{kind}: {name} ({email})")
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a unix time (civil-from-days, proleptic
/// Gregorian).
fn rfc3339_utc(t: u64) -> String {
    let days = (t / 86_400) as i64;
    let secs = t % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

// --- Cargo.lock ---

#[derive(Debug, Clone, PartialEq, Eq)]
struct LockedCrate {
    name: String,
    version: String,
    source: Option<String>,
    checksum: Option<String>,
    /// As written: `name`, `name version` or `name version (source)`.
    dependencies: Vec<String>,
}

fn parse_lock(text: &str) -> Result<Vec<LockedCrate>, SbomError> {
    let value: toml::Table = toml::from_str(text).map_err(SbomError::CargoLock)?;
    let entries = value
        .get("package")
        .and_then(toml::Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut out = Vec::with_capacity(entries.len());
    for (index, e) in entries.iter().enumerate() {
        let s = |field: &'static str| e.get(field).and_then(toml::Value::as_str);
        let need = |field: &'static str| {
            s(field)
                .map(str::to_string)
                .ok_or(SbomError::LockEntry { index, field })
        };
        out.push(LockedCrate {
            name: need("name")?,
            version: need("version")?,
            source: s("source").map(str::to_string),
            checksum: s("checksum").map(str::to_string),
            dependencies: e
                .get("dependencies")
                .and_then(toml::Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|d| d.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
    Ok(out)
}

/// Every crate `root` reaches, sorted by name and version, `root` excluded.
fn closure<'a>(lock: &'a [LockedCrate], root: &'a LockedCrate) -> Vec<&'a LockedCrate> {
    let find = |dep: &str| -> Option<&'a LockedCrate> {
        let mut parts = dep.split(' ');
        let name = parts.next()?;
        let version = parts.next();
        lock.iter()
            .find(|c| c.name == name && version.is_none_or(|v| c.version == v))
    };
    let mut seen: BTreeSet<(&str, &str)> = BTreeSet::new();
    let mut todo = vec![root];
    let mut out = Vec::new();
    while let Some(c) = todo.pop() {
        for dep in &c.dependencies {
            if let Some(d) = find(dep) {
                if seen.insert((d.name.as_str(), d.version.as_str())) && d != root {
                    out.push(d);
                    todo.push(d);
                }
            }
        }
    }
    out.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    out
}

#[cfg(test)]
#[path = "sbom_tests.rs"]
mod tests;
