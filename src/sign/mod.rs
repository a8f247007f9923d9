//! What goes out, and how it is trusted: the manifest that lists every
//! artifact with its sha256 and size; the key files (cosign-compatible
//! ECDSA P-256 for manifests, RSA-2048 Secure Boot PK/KEK/db); the Sigstore
//! bundle that signs the manifest's exact bytes; verification of a build
//! directory against a public key; and the SPDX SBOM of an image.
//!
//! Everything here works offline: no transparency log, no certificate
//! authority, no clock except where a caller passes one in (certificate
//! validity). Private keys are created 0600 and never logged; passwords
//! are arguments, never read from the environment here.

pub mod authenticode;
pub mod bundle;
pub mod keys;
pub mod manifest;
pub mod sbom;
pub mod verify;
