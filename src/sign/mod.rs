//! How what goes out is trusted: the key files (cosign-compatible ECDSA
//! P-256 for manifests, RSA-2048 Secure Boot PK/KEK/db); Authenticode
//! signatures on PE files; the Sigstore bundle that signs the exact bytes
//! of `manifest.json` ([`crate::manifest`] defines and reads it);
//! verification of a build directory against a public key; and the SPDX
//! SBOM of an image.
//!
//! Everything here works offline: no transparency log, no certificate
//! authority, no clock except where a caller passes one in (certificate
//! validity). Private keys are created 0600 and never logged; passwords
//! are arguments, never read from the environment here.

pub mod authenticode;
pub mod bundle;
pub mod keys;
pub mod sbom;
pub mod verify;
