//! The signature over `manifest.json`: a Sigstore bundle v0.3 with a key
//! hint and a message signature (SHA-256 digest + ASN.1 DER ECDSA P-256),
//! made offline with no transparency log and no certificate.
//!
//! `cosign verify-blob --key signing.pub --bundle manifest.sigstore.json
//! --new-bundle-format --insecure-ignore-tlog=true --trusted-root <empty>
//! manifest.json` accepts what this writes, and [`read_bundle`] accepts
//! what `cosign sign-blob --new-bundle-format --tlog-upload=false` writes.
//! Signing is deterministic (RFC 6979 nonces): one key and one manifest
//! give one bundle, byte for byte.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sigstore_protobuf_specs::dev::sigstore::bundle::v1::{
    bundle, verification_material, Bundle, VerificationMaterial,
};
use sigstore_protobuf_specs::dev::sigstore::common::v1::{
    HashAlgorithm, HashOutput, MessageSignature, PublicKeyIdentifier,
};

use super::keys::SigningKey;
use crate::manifest::{Manifest, ManifestError, MANIFEST_FILE};
use crate::util::{atomic, hash};

/// Written beside `manifest.json`.
pub const BUNDLE_FILE: &str = "manifest.sigstore.json";
/// The output table's kind for [`BUNDLE_FILE`] (it cannot be listed in the
/// manifest it signs).
pub const BUNDLE_KIND: &str = "signature";
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// Media types of the bundle versions a key-pair message signature can be
/// read from (the spec's older spellings included).
const READABLE_MEDIA_TYPES: [&str; 4] = [
    BUNDLE_MEDIA_TYPE,
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
    "application/vnd.dev.sigstore.bundle+json;version=0.1",
];

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("the manifest is not signed: {path} does not exist")]
    Missing { path: PathBuf },
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a Sigstore bundle")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: media type `{found}` is not a Sigstore bundle v0.1 to v0.3")]
    MediaType { path: PathBuf, found: String },
    #[error("{path} holds no message signature (a DSSE envelope or nothing)")]
    NotMessageSignature { path: PathBuf },
    #[error("{path}: message digest algorithm {found}, expected SHA2_256")]
    DigestAlgorithm { path: PathBuf, found: String },
    #[error("{path}: message digest is {len} bytes, expected 32")]
    DigestLength { path: PathBuf, len: usize },
    #[error("refusing to sign {path}")]
    Manifest {
        path: PathBuf,
        #[source]
        source: ManifestError,
    },
}

/// What verification takes from a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedMessage {
    /// sha256 of the signed bytes, as the bundle records it.
    pub digest: hash::Sha256,
    /// ASN.1 DER ECDSA signature.
    pub signature: Vec<u8>,
    /// Unauthenticated: which key the signer says it used.
    pub key_hint: Option<String>,
}

/// The bundle for `message` signed with `key`.
pub fn bundle_for(message: &[u8], key: &SigningKey) -> Bundle {
    Bundle {
        media_type: BUNDLE_MEDIA_TYPE.into(),
        verification_material: Some(VerificationMaterial {
            tlog_entries: Vec::new(),
            timestamp_verification_data: None,
            content: Some(verification_material::Content::PublicKey(
                PublicKeyIdentifier {
                    hint: key.public_key().hint(),
                },
            )),
        }),
        content: Some(bundle::Content::MessageSignature(MessageSignature {
            message_digest: Some(HashOutput {
                algorithm: HashAlgorithm::Sha2256 as i32,
                digest: hash::sha256(message).to_vec(),
            }),
            signature: key.sign(message),
        })),
    }
}

/// The bundle as pretty JSON with a final newline.
pub fn to_json(bundle: &Bundle) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(bundle).expect("serializing a bundle");
    v.push(b'\n');
    v
}

/// Signs `message` (the exact bytes of `manifest.json`): the bundle JSON.
pub fn sign_bytes(message: &[u8], key: &SigningKey) -> Vec<u8> {
    to_json(&bundle_for(message, key))
}

/// Signs `dir/manifest.json` into `dir/manifest.sigstore.json` (temp file +
/// rename). The manifest must read as [`Manifest`]: a file that is not a
/// manifest is not signed. Returns the bundle's path.
pub fn sign_manifest(dir: &Path, key: &SigningKey) -> Result<PathBuf, BundleError> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let manifest = fs::read(&manifest_path).map_err(|source| BundleError::Read {
        path: manifest_path.clone(),
        source,
    })?;
    Manifest::parse(&manifest).map_err(|source| BundleError::Manifest {
        path: manifest_path.clone(),
        source,
    })?;
    let out = dir.join(BUNDLE_FILE);
    atomic::write(&out, &sign_bytes(&manifest, key)).map_err(|source| BundleError::Write {
        path: out.clone(),
        source,
    })?;
    Ok(out)
}

/// Reads a bundle file and takes out its message signature.
pub fn read_bundle(path: &Path) -> Result<SignedMessage, BundleError> {
    let data = match fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(BundleError::Missing {
                path: path.to_path_buf(),
            })
        }
        Err(source) => {
            return Err(BundleError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    parse_bundle(&data, path)
}

/// Parses bundle JSON; `path` only names it in errors.
pub fn parse_bundle(json: &[u8], path: &Path) -> Result<SignedMessage, BundleError> {
    let bundle: Bundle = serde_json::from_slice(json).map_err(|source| BundleError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    if !READABLE_MEDIA_TYPES.contains(&bundle.media_type.as_str()) {
        return Err(BundleError::MediaType {
            path: path.to_path_buf(),
            found: bundle.media_type,
        });
    }
    let key_hint = match bundle.verification_material.and_then(|m| m.content) {
        Some(verification_material::Content::PublicKey(k)) if !k.hint.is_empty() => Some(k.hint),
        _ => None,
    };
    let Some(bundle::Content::MessageSignature(sig)) = bundle.content else {
        return Err(BundleError::NotMessageSignature {
            path: path.to_path_buf(),
        });
    };
    let digest = sig.message_digest.unwrap_or_default();
    if digest.algorithm != HashAlgorithm::Sha2256 as i32 {
        let found = HashAlgorithm::try_from(digest.algorithm)
            .map(|a| a.as_str_name().to_string())
            .unwrap_or_else(|_| digest.algorithm.to_string());
        return Err(BundleError::DigestAlgorithm {
            path: path.to_path_buf(),
            found,
        });
    }
    let len = digest.digest.len();
    let digest: hash::Sha256 = digest
        .digest
        .try_into()
        .map_err(|_| BundleError::DigestLength {
            path: path.to_path_buf(),
            len,
        })?;
    Ok(SignedMessage {
        digest,
        signature: sig.signature,
        key_hint,
    })
}

#[cfg(test)]
#[path = "bundle_tests.rs"]
mod tests;
