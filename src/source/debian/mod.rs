//! Debian archive: InRelease verification, Packages indexes, version
//! comparison and dependency resolution.
//!
//! Takes bytes the caller fetched (an InRelease file, decompressed Packages
//! indexes) and the archive keyring; produces a verified [`release::Release`],
//! parsed [`packages::Package`]s and a deterministic dependency closure
//! ([`resolve::Resolution`]). It never touches the network, the file system or
//! the clock, never decompresses (the caller does xz/gz), and never pulls in
//! packages on its own (no `Essential`/`Priority: required` magic): only what
//! the roots depend on through `Depends` and `Pre-Depends`.
//!
//! The target architecture is [`TARGET_ARCH`] (amd64).

pub mod deb822;
pub mod packages;
pub mod release;
pub mod resolve;
pub mod version;

pub use packages::{packages_index_path, parse_packages, Dep, IndexError, Package, Provide};
pub use release::{verify_inrelease, verify_inrelease_at, Release, ReleaseError};
pub use resolve::{resolve, Index, Resolution, ResolveError};
pub use version::{compare, Relation};

/// The architecture images are built for.
pub const TARGET_ARCH: &str = "amd64";
