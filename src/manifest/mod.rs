//! `manifest.json`: the build's record of what it produced, and the one way
//! to read it back.
//!
//! Takes nothing but the bytes or the directory that holds them; produces
//! the typed [`Manifest`] (unknown fields are refused) after checking what
//! every reader relies on: the schema version, artifact paths that stay
//! inside the manifest's directory and sha256 values in lower-case hex.
//! Errors name the file and the field (`manifest.json field
//! artifacts[2].path: …`). The pipeline writes it, `sign` signs and
//! verifies it, the lab boots what it lists; none of them parses it on its
//! own. Never hashes artifacts and never trusts a signature: that is
//! `sign::verify`'s job.

mod model;
mod read;

pub use model::{
    Artifact, BootRecord, BuildInfo, InputRecord, Manifest, PackageRecord, UefiRecord, VerityRecord,
};
pub use read::ManifestError;

pub const MANIFEST_FILE: &str = "manifest.json";
pub const MANIFEST_SCHEMA: u32 = 1;
