//! Verifying a build directory offline: the bundle's signature over the
//! exact bytes of `manifest.json`, then every artifact the (now trusted)
//! manifest lists, by size and sha256. The manifest is read as
//! [`crate::manifest`] reads it for everyone: strictly, every field typed.
//!
//! Nothing here fails fast: the [`Report`] lists every problem, each naming
//! what failed (the artifact with expected and actual hash, the key the
//! signature does not verify with, the manifest field). Artifacts are
//! checked only when the signature holds; an unsigned manifest says nothing
//! about them. Artifacts are hashed in parallel, largest first, with large
//! reads (ring's SHA-256).

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use ring::digest::{Context, SHA256};
use serde::Serialize;

use super::bundle::{read_bundle, BundleError, BUNDLE_FILE};
use super::keys::PublicKey;
use crate::manifest::{Artifact, Manifest, ManifestError, MANIFEST_FILE};
use crate::util::hash;

/// Read size for artifact hashing: large enough that syscalls vanish
/// behind hashing, small enough to stay in L2/L3.
const READ_BUF: usize = 1 << 20;

/// One reason a directory does not verify.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("reading {path}")]
    ManifestRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("manifest.json is not what was signed: its sha256 is {actual}, the bundle's digest is {signed}")]
    Digest { actual: String, signed: String },
    #[error("signature does not verify with {key}{hint_note}")]
    Signature { key: String, hint_note: String },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("artifact {kind} ({path}): missing")]
    Missing { kind: String, path: String },
    #[error("artifact {kind} ({path}): cannot be read")]
    ArtifactRead {
        kind: String,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("artifact {kind} ({path}): size is {actual} bytes, manifest says {expected}")]
    Size {
        kind: String,
        path: String,
        expected: u64,
        actual: u64,
    },
    #[error("artifact {kind} ({path}): sha256 is {actual}, manifest says {expected}")]
    Hash {
        kind: String,
        path: String,
        expected: String,
        actual: String,
    },
}

#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The bundle; default `DIR/manifest.sigstore.json`.
    pub bundle: Option<PathBuf>,
    /// How the public key is named in messages (its path, usually).
    pub key_name: String,
    /// Hashing threads (at least 1).
    pub threads: usize,
}

/// The outcome; `--json` prints it as is.
#[derive(Debug, Serialize)]
pub struct Report {
    pub ok: bool,
    pub dir: PathBuf,
    pub signature: SignatureCheck,
    /// Empty when the signature did not hold (the list is not trusted).
    pub artifacts: Vec<ArtifactCheck>,
    pub artifacts_checked: bool,
    pub bytes_hashed: u64,
    /// Every problem, each with its causes (`: `-joined).
    pub failures: Vec<String>,
    #[serde(skip)]
    pub problems: Vec<Failure>,
}

#[derive(Debug, Serialize)]
pub struct SignatureCheck {
    pub ok: bool,
    pub key: String,
    pub key_hint: String,
    pub bundle: PathBuf,
    pub bundle_key_hint: Option<String>,
    pub manifest_sha256: Option<String>,
    pub signed_sha256: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ArtifactCheck {
    pub kind: String,
    pub path: String,
    pub ok: bool,
    pub expected_sha256: String,
    pub actual_sha256: Option<String>,
    pub expected_size: u64,
    pub actual_size: Option<u64>,
}

/// Verifies `dir` against `key`. Never fails: problems are in the report.
pub fn verify_dir(dir: &Path, key: &PublicKey, opts: &VerifyOptions) -> Report {
    let bundle_path = opts.bundle.clone().unwrap_or_else(|| dir.join(BUNDLE_FILE));
    let signature = SignatureCheck {
        ok: false,
        key: opts.key_name.clone(),
        key_hint: key.hint(),
        bundle: bundle_path.clone(),
        bundle_key_hint: None,
        manifest_sha256: None,
        signed_sha256: None,
    };
    run_checks(dir, signature, opts.threads, |manifest, report| {
        check_signature(manifest, &bundle_path, key, opts, report)
    })
}

/// Checks `dir`'s artifacts against its manifest without looking at any
/// signature: what `nodeimg sign` does before it signs.
pub fn check_unsigned(dir: &Path, threads: usize) -> Report {
    let signature = SignatureCheck {
        ok: false,
        key: String::new(),
        key_hint: String::new(),
        bundle: PathBuf::new(),
        bundle_key_hint: None,
        manifest_sha256: None,
        signed_sha256: None,
    };
    run_checks(dir, signature, threads, |_, _| true)
}

/// Reads the manifest, lets `trust` decide whether its list may be used,
/// then checks the artifacts.
fn run_checks(
    dir: &Path,
    signature: SignatureCheck,
    threads: usize,
    trust: impl FnOnce(&[u8], &mut Report) -> bool,
) -> Report {
    let mut report = Report {
        ok: false,
        dir: dir.to_path_buf(),
        signature,
        artifacts: Vec::new(),
        artifacts_checked: false,
        bytes_hashed: 0,
        failures: Vec::new(),
        problems: Vec::new(),
    };
    let manifest_path = dir.join(MANIFEST_FILE);
    match std::fs::read(&manifest_path) {
        Ok(manifest) => {
            if trust(&manifest, &mut report) {
                match Manifest::parse(&manifest) {
                    Ok(m) => check_artifacts(dir, &m.artifacts, threads, &mut report),
                    Err(e) => report.problems.push(e.into()),
                }
            }
        }
        Err(source) => report.problems.push(Failure::ManifestRead {
            path: manifest_path,
            source,
        }),
    }
    report.failures = report.problems.iter().map(chain).collect();
    report.ok = report.problems.is_empty();
    report
}

/// An error and its causes on one line.
fn chain(e: &Failure) -> String {
    let mut s = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// The bundle's digest and signature against the manifest's bytes; true
/// when both hold.
fn check_signature(
    manifest: &[u8],
    bundle_path: &Path,
    key: &PublicKey,
    opts: &VerifyOptions,
    report: &mut Report,
) -> bool {
    let actual = hash::sha256(manifest);
    report.signature.manifest_sha256 = Some(hex::encode(actual));
    let signed = match read_bundle(bundle_path) {
        Ok(s) => s,
        Err(e) => {
            report.problems.push(e.into());
            return false;
        }
    };
    report.signature.signed_sha256 = Some(hex::encode(signed.digest));
    report.signature.bundle_key_hint = signed.key_hint.clone();
    let digest_ok = signed.digest == actual;
    if !digest_ok {
        report.problems.push(Failure::Digest {
            actual: hex::encode(actual),
            signed: hex::encode(signed.digest),
        });
    }
    let sig_ok = key.verifies(manifest, &signed.signature);
    if !sig_ok {
        let hint_note = match &signed.key_hint {
            Some(h) if *h != key.hint() => format!(
                " (the bundle names key hint {h}; {} has hint {})",
                opts.key_name,
                key.hint()
            ),
            _ => String::new(),
        };
        report.problems.push(Failure::Signature {
            key: opts.key_name.clone(),
            hint_note,
        });
    }
    report.signature.ok = digest_ok && sig_ok;
    report.signature.ok
}

fn check_artifacts(dir: &Path, artifacts: &[Artifact], threads: usize, report: &mut Report) {
    report.artifacts_checked = true;
    // Sizes first: a missing or wrong-sized file needs no hashing.
    let mut to_hash = Vec::new();
    for (i, a) in artifacts.iter().enumerate() {
        let path = dir.join(&a.path);
        let mut check = ArtifactCheck {
            kind: a.kind.clone(),
            path: a.path.clone(),
            ok: false,
            expected_sha256: a.sha256.clone(),
            actual_sha256: None,
            expected_size: a.size,
            actual_size: None,
        };
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => {
                check.actual_size = Some(m.len());
                if m.len() == a.size {
                    to_hash.push((i, path));
                } else {
                    report.problems.push(Failure::Size {
                        kind: a.kind.clone(),
                        path: a.path.clone(),
                        expected: a.size,
                        actual: m.len(),
                    });
                }
            }
            Ok(_) => report.problems.push(Failure::ArtifactRead {
                kind: a.kind.clone(),
                path: a.path.clone(),
                source: io::Error::other("not a regular file"),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                report.problems.push(Failure::Missing {
                    kind: a.kind.clone(),
                    path: a.path.clone(),
                })
            }
            Err(source) => report.problems.push(Failure::ArtifactRead {
                kind: a.kind.clone(),
                path: a.path.clone(),
                source,
            }),
        }
        report.artifacts.push(check);
    }
    to_hash.sort_by_key(|(i, _)| std::cmp::Reverse(artifacts[*i].size));
    let paths: Vec<&Path> = to_hash.iter().map(|(_, p)| p.as_path()).collect();
    let results = hash_files(&paths, threads);
    for ((i, _), result) in to_hash.iter().zip(results) {
        let a = &artifacts[*i];
        let check = &mut report.artifacts[*i];
        match result {
            Ok((digest, n)) => {
                report.bytes_hashed += n;
                let actual = hex::encode(digest);
                check.actual_size = Some(n);
                check.ok = actual == a.sha256 && n == a.size;
                check.actual_sha256 = Some(actual.clone());
                if n != a.size {
                    report.problems.push(Failure::Size {
                        kind: a.kind.clone(),
                        path: a.path.clone(),
                        expected: a.size,
                        actual: n,
                    });
                } else if actual != a.sha256 {
                    report.problems.push(Failure::Hash {
                        kind: a.kind.clone(),
                        path: a.path.clone(),
                        expected: a.sha256.clone(),
                        actual,
                    });
                }
            }
            Err(source) => report.problems.push(Failure::ArtifactRead {
                kind: a.kind.clone(),
                path: a.path.clone(),
                source,
            }),
        }
    }
}

/// sha256 and length of each file, `threads` files at a time; results in
/// the order of `paths`. Give the largest first for the best balance.
pub fn hash_files(paths: &[&Path], threads: usize) -> Vec<io::Result<(hash::Sha256, u64)>> {
    let next = AtomicUsize::new(0);
    let workers = threads.clamp(1, paths.len().max(1));
    let mut done: Vec<(usize, io::Result<(hash::Sha256, u64)>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut buf = vec![0u8; READ_BUF];
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(path) = paths.get(i) else { break };
                        out.push((i, hash_file(path, &mut buf)));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("hashing thread panicked"))
            .collect()
    });
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

fn hash_file(path: &Path, buf: &mut [u8]) -> io::Result<(hash::Sha256, u64)> {
    let mut f = File::open(path)?;
    let mut ctx = Context::new(&SHA256);
    let mut n = 0u64;
    loop {
        let k = match f.read(buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        ctx.update(&buf[..k]);
        n += k as u64;
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Ok((out, n))
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
