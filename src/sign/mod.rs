//! What goes out: the manifest that lists every artifact with its sha256
//! and size. Signing and the SBOM build on it.

pub mod manifest;
