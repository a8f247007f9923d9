//! Inputs to a build: the Debian archive (index, resolver, lock, fetch,
//! cache, .deb extraction) and the locked .debs of a build
//! ([`locked::fetch_packages`]). The archive is several suites: the base
//! suite and its `-updates` pocket on the main mirror, `-security` on the
//! security mirror ([`mirror`]). Everything that comes in is hash-checked:
//! each suite's InRelease against the archive keyring, indexes against
//! their InRelease, .debs against the index or the lock, cache entries
//! against their names; Go recipes' binaries against the lock
//! ([`gobuild`]). [`updates`] says what locking again would change.
//! [`copyright`] reads what a package's DEP-5 copyright file declares, as
//! an SPDX expression, for the SBOM.

pub mod cache;
pub mod copyright;
pub mod deb;
pub mod debian;
pub mod fetch;
pub mod gobuild;
pub mod lock;
pub mod locked;
pub mod locking;
pub mod mirror;
pub mod updates;
