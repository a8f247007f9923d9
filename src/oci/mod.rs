//! OCI image archives the builder makes itself, so that an air-gapped node
//! never pulls: a single-layer image from files the build produced (the
//! sandbox `pause` program), written as an OCI image layout in a tar
//! (`ctr images import` reads it). Takes file contents and a timestamp;
//! produces bytes and the manifest digest containerd will report. Never
//! reads the clock or the network: same inputs, same bytes, same digest.
//!
//! The layer is an uncompressed tar (`application/vnd.oci.image.layer.v1.tar`),
//! so its digest is its diff_id and no compressor's version can change it;
//! the archive is small and the root image compresses it anyway.

pub mod archive;

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;

use crate::util::hash::sha256_hex;

const INDEX_MEDIA: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST_MEDIA: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_MEDIA: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_MEDIA: &str = "application/vnd.oci.image.layer.v1.tar";

/// One entry of the image's only layer. Its parent directories are
/// added by themselves (mode 0755).
#[derive(Debug, Clone)]
pub struct ImageFile {
    /// Path inside the image, relative (`usr/bin/ps`): no leading `/`, no
    /// empty, `.` or `..` component.
    pub path: String,
    pub mode: u32,
    pub content: Content,
}

/// What an [`ImageFile`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Data(Vec<u8>),
    /// A symbolic link to this target (the container's runtime resolves it
    /// inside the image's root).
    Symlink(String),
}

/// What to build.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// The name containerd lists it under, e.g. `nodeimg.local/pause:0.1.0`.
    pub name: String,
    pub files: Vec<ImageFile>,
    pub entrypoint: Vec<String>,
    /// `uid:gid`, numeric: the image never needs an `/etc/passwd`.
    pub user: String,
    /// File times in the layer (SOURCE_DATE_EPOCH).
    pub mtime: u64,
}

/// The archive and what identifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    pub archive: Vec<u8>,
    /// `sha256:<hex>` of the image manifest: the digest containerd shows.
    pub manifest_digest: String,
}

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("image {name}: file {path}: {problem}")]
    File {
        name: String,
        path: String,
        problem: &'static str,
    },
    #[error("image {name}: user {user:?} must be numeric uid:gid")]
    User { name: String, user: String },
    #[error("image {name}: its OCI archive: {problem}")]
    Archive { name: String, problem: String },
    #[error("image {name}: writing the archive")]
    Write {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Serialize)]
struct Descriptor<'a> {
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    digest: String,
    size: usize,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<&'a str, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<Platform>,
}

#[derive(Serialize)]
struct Platform {
    architecture: &'static str,
    os: &'static str,
}

fn descriptor<'a>(media_type: &'a str, data: &[u8]) -> Descriptor<'a> {
    Descriptor {
        media_type,
        digest: format!("sha256:{}", sha256_hex(data)),
        size: data.len(),
        annotations: BTreeMap::new(),
        platform: None,
    }
}

/// Builds the archive. Deterministic: sorted files, fixed owners and times,
/// JSON with a fixed field order and no timestamps.
pub fn build_image(spec: &ImageSpec) -> Result<BuiltImage, OciError> {
    let user_ok = spec
        .user
        .split_once(':')
        .is_some_and(|(u, g)| u.parse::<u32>().is_ok() && g.parse::<u32>().is_ok());
    if !user_ok {
        return Err(OciError::User {
            name: spec.name.clone(),
            user: spec.user.clone(),
        });
    }
    let write_err = |source| OciError::Write {
        name: spec.name.clone(),
        source,
    };
    let layer = layer_tar(spec)?;
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": spec.user,
            "Entrypoint": spec.entrypoint,
            "WorkingDir": "/",
        },
        "rootfs": {
            "type": "layers",
            "diff_ids": [format!("sha256:{}", sha256_hex(&layer))],
        },
    });
    let config = json_bytes(&config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA,
        "config": descriptor(CONFIG_MEDIA, &config),
        "layers": [descriptor(LAYER_MEDIA, &layer)],
    });
    let manifest = json_bytes(&manifest);
    let mut top = descriptor(MANIFEST_MEDIA, &manifest);
    let tag = spec.name.rsplit_once(':').map_or("latest", |(_, t)| t);
    top.annotations
        .insert("io.containerd.image.name", spec.name.clone());
    top.annotations
        .insert("org.opencontainers.image.ref.name", tag.to_string());
    top.platform = Some(Platform {
        architecture: "amd64",
        os: "linux",
    });
    let manifest_digest = top.digest.clone();
    let index = json_bytes(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA,
        "manifests": [top],
    }));

    let archive =
        layout_tar(&index, &[&layer, &config, &manifest], spec.mtime).map_err(write_err)?;
    Ok(BuiltImage {
        archive,
        manifest_digest,
    })
}

/// An OCI image layout as a tar: `oci-layout`, `index.json` and each blob
/// under `blobs/sha256/<its sha256>`, sorted, fixed owners and `mtime`.
fn layout_tar(index: &[u8], blobs: &[&[u8]], mtime: u64) -> std::io::Result<Vec<u8>> {
    let mut entries: Vec<(String, &[u8])> = vec![
        ("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#),
        ("index.json".into(), index),
    ];
    for blob in blobs {
        entries.push((format!("blobs/sha256/{}", sha256_hex(blob)), blob));
    }
    entries.sort();
    let mut out = tar::Builder::new(Vec::new());
    for dir in ["blobs/", "blobs/sha256/"] {
        append(&mut out, dir, 0o755, &[], mtime, tar::EntryType::Directory)?;
    }
    for (path, data) in entries {
        append(&mut out, &path, 0o644, data, mtime, tar::EntryType::Regular)?;
    }
    out.into_inner()
}

fn layer_tar(spec: &ImageSpec) -> Result<Vec<u8>, OciError> {
    // path -> entry; a directory's key sorts before everything under it
    let mut entries: BTreeMap<String, Option<&ImageFile>> = BTreeMap::new();
    for f in &spec.files {
        let bad = |problem| OciError::File {
            name: spec.name.clone(),
            path: f.path.clone(),
            problem,
        };
        let parts: Vec<&str> = f.path.split('/').collect();
        if parts
            .iter()
            .any(|c| c.is_empty() || *c == "." || *c == "..")
        {
            return Err(bad(
                "must be a relative path without empty, `.` or `..` parts",
            ));
        }
        for depth in 1..parts.len() {
            let dir = parts[..depth].join("/");
            if let Some(Some(_)) = entries.insert(dir, None) {
                return Err(bad("lies under a file of the image"));
            }
        }
        match entries.insert(f.path.clone(), Some(f)) {
            Some(Some(_)) => return Err(bad("is in the image twice")),
            Some(None) => return Err(bad("is a directory of other files of the image")),
            None => {}
        }
    }
    let mut out = tar::Builder::new(Vec::new());
    for (path, entry) in &entries {
        let written = match entry {
            None => append(
                &mut out,
                &format!("{path}/"),
                0o755,
                &[],
                spec.mtime,
                tar::EntryType::Directory,
            ),
            Some(ImageFile {
                mode,
                content: Content::Data(data),
                ..
            }) => append(
                &mut out,
                path,
                *mode,
                data,
                spec.mtime,
                tar::EntryType::Regular,
            ),
            Some(ImageFile {
                content: Content::Symlink(target),
                ..
            }) => append_link(&mut out, path, target, spec.mtime),
        };
        written.map_err(|source| OciError::Write {
            name: spec.name.clone(),
            source,
        })?;
    }
    out.into_inner().map_err(|source| OciError::Write {
        name: spec.name.clone(),
        source,
    })
}

fn append_link(
    out: &mut tar::Builder<Vec<u8>>,
    path: &str,
    target: &str,
    mtime: u64,
) -> std::io::Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_mode(0o777);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_size(0);
    // sets the path and the link name, with GNU long-name records when
    // one is longer than ustar holds
    out.append_link(&mut h, path, target)
}

fn append(
    out: &mut tar::Builder<Vec<u8>>,
    path: &str,
    mode: u32,
    data: &[u8],
    mtime: u64,
    kind: tar::EntryType,
) -> std::io::Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_path(path)?;
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_size(data.len() as u64);
    h.set_cksum();
    out.append(&h, data)
}

fn json_bytes(v: &serde_json::Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing JSON into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, v);
    let _ = out.flush();
    out
}

#[cfg(test)]
#[path = "oci_tests.rs"]
mod tests;
