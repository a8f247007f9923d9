//! OCI image archives a user brings (an add-on the build cannot make, such
//! as Falco's image), preloaded like the images the builder packs. The
//! archive is read in memory, never extracted: every blob is checked
//! against its name, the linux/amd64 image is chosen, and a new archive is
//! written holding exactly that image's manifest, config and layers under
//! the name the spec gives. The blobs are kept byte for byte, so the
//! manifest digest (what containerd reports, and what manifests pin) is the
//! one the user's archive carries; the wrapper (index, tar headers) is
//! ours and deterministic.
//!
//! Written here rather than with an OCI crate: the crates that read
//! layouts extract to a directory, and this needs only the index, one
//! manifest and a hash check per blob.

use std::collections::BTreeMap;
use std::io::Read;

use serde_json::Value;

use super::{json_bytes, layout_tar, BuiltImage, OciError, INDEX_MEDIA};
use crate::util::hash::sha256_hex;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The largest archive read (an add-on image of a few hundred MiB fits).
pub const MAX_ARCHIVE: u64 = 2 << 30;

fn bad(name: &str, problem: impl Into<String>) -> OciError {
    OciError::Archive {
        name: name.to_string(),
        problem: problem.into(),
    }
}

/// The archive's files by path: regular files only, no path that could
/// leave a directory (none is written, but a name like that is a sign of
/// a hostile archive), no name twice.
fn entries(name: &str, data: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, OciError> {
    let mut out = BTreeMap::new();
    let mut tar = tar::Archive::new(data);
    let list = tar
        .entries()
        .map_err(|e| bad(name, format!("not a tar archive: {e}")))?;
    for entry in list {
        let mut entry = entry.map_err(|e| bad(name, format!("reading the tar: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| bad(name, format!("an entry's name: {e}")))?
            .to_string_lossy()
            .into_owned();
        let clean = path.trim_start_matches("./").to_string();
        if clean.starts_with('/') || clean.split('/').any(|c| c == "..") {
            return Err(bad(
                name,
                format!("entry {path:?} leaves the archive's root"),
            ));
        }
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            tar::EntryType::Directory => continue,
            other => {
                return Err(bad(
                    name,
                    format!("entry {path:?} is a {other:?}, not a file (links are not followed)"),
                ))
            }
        }
        let mut buf = Vec::new();
        entry
            .read_to_end(&mut buf)
            .map_err(|e| bad(name, format!("reading {path:?}: {e}")))?;
        if out.insert(clean, buf).is_some() {
            return Err(bad(name, format!("entry {path:?} is in the archive twice")));
        }
    }
    Ok(out)
}

/// The blob `digest` names, checked against it.
fn blob<'a>(
    name: &str,
    files: &'a BTreeMap<String, Vec<u8>>,
    digest: &str,
) -> Result<&'a [u8], OciError> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| bad(name, format!("digest {digest:?} is not sha256:<64 hex>")))?;
    let data = files
        .get(&format!("blobs/sha256/{hex}"))
        .ok_or_else(|| bad(name, format!("blob {digest} is not in the archive")))?;
    let got = sha256_hex(data);
    if got != hex {
        return Err(bad(name, format!("blob {digest} hashes to sha256:{got}")));
    }
    Ok(data)
}

fn json(name: &str, what: &str, data: &[u8]) -> Result<Value, OciError> {
    serde_json::from_slice(data).map_err(|e| bad(name, format!("{what} is not JSON: {e}")))
}

/// A descriptor for linux/amd64 (or one without a platform).
fn for_amd64(d: &Value) -> bool {
    let p = &d["platform"];
    p.is_null() || (p["os"] == "linux" && p["architecture"] == "amd64")
}

/// The image manifest's descriptor: the one linux/amd64 manifest of the
/// index, looking one level into a nested index (a multi-platform image).
fn choose(name: &str, files: &BTreeMap<String, Vec<u8>>, index: &Value) -> Result<Value, OciError> {
    let list = index["manifests"]
        .as_array()
        .ok_or_else(|| bad(name, "index.json lists no manifests"))?;
    let mut found = Vec::new();
    for d in list.iter().filter(|d| for_amd64(d)) {
        match d["mediaType"].as_str() {
            Some(OCI_MANIFEST | DOCKER_MANIFEST) => found.push(d.clone()),
            Some(INDEX_MEDIA | DOCKER_LIST) => {
                let digest = d["digest"].as_str().unwrap_or_default();
                let nested = json(name, digest, blob(name, files, digest)?)?;
                let inner = nested["manifests"].as_array().cloned().unwrap_or_default();
                found.extend(inner.into_iter().filter(|m| {
                    for_amd64(m)
                        && !m["platform"].is_null()
                        && matches!(
                            m["mediaType"].as_str(),
                            Some(OCI_MANIFEST | DOCKER_MANIFEST)
                        )
                }));
            }
            _ => {}
        }
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(bad(name, "no linux/amd64 image manifest in index.json")),
        many => Err(bad(
            name,
            format!(
                "{} linux/amd64 image manifests in index.json; want one",
                many.len()
            ),
        )),
    }
}

/// Rewraps the OCI archive `data` as image `name` (`repo:tag`), its
/// entries dated `mtime`.
pub fn rewrap(name: &str, data: &[u8], mtime: u64) -> Result<BuiltImage, OciError> {
    let files = entries(name, data)?;
    let Some(index) = files.get("index.json") else {
        let hint = if files.contains_key("manifest.json") {
            " (this is a `docker save` archive: save it as OCI, e.g. `skopeo copy docker-archive:IN oci-archive:OUT`)"
        } else {
            ""
        };
        return Err(bad(
            name,
            format!("no index.json: not an OCI image layout{hint}"),
        ));
    };
    let index = json(name, "index.json", index)?;
    let mut top = choose(name, &files, &index)?;
    let digest = top["digest"].as_str().unwrap_or_default().to_string();
    let manifest_bytes = blob(name, &files, &digest)?;
    let manifest = json(name, &digest, manifest_bytes)?;
    let mut blobs: BTreeMap<String, &[u8]> = BTreeMap::new();
    blobs.insert(digest.clone(), manifest_bytes);
    let config = manifest["config"]["digest"].as_str().unwrap_or_default();
    blobs.insert(config.to_string(), blob(name, &files, config)?);
    let layers = manifest["layers"]
        .as_array()
        .ok_or_else(|| bad(name, format!("manifest {digest} lists no layers")))?;
    for l in layers {
        let d = l["digest"].as_str().unwrap_or_default();
        blobs.insert(d.to_string(), blob(name, &files, d)?);
    }
    let tag = name.rsplit_once(':').map_or("latest", |(_, t)| t);
    top["annotations"] = serde_json::json!({
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": tag,
    });
    top["platform"] = serde_json::json!({ "architecture": "amd64", "os": "linux" });
    let index = json_bytes(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA,
        "manifests": [top],
    }));
    let blobs: Vec<&[u8]> = blobs.into_values().collect();
    let archive = layout_tar(&index, &blobs, mtime).map_err(|source| OciError::Write {
        name: name.to_string(),
        source,
    })?;
    Ok(BuiltImage {
        archive,
        manifest_digest: digest,
    })
}

#[cfg(test)]
#[path = "archive_tests.rs"]
mod tests;
