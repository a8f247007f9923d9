//! Inputs to a build: the Debian archive (index, resolver, lock, fetch,
//! cache, .deb extraction) and the locked .debs of a build
//! ([`locked::fetch_packages`]). Everything that comes in is hash-checked: the
//! InRelease against the archive keyring, indexes against InRelease, .debs
//! against the index or the lock, cache entries against their names; Go recipes' binaries against the lock
//! ([`gobuild`]).

pub mod cache;
pub mod deb;
pub mod debian;
pub mod fetch;
pub mod gobuild;
pub mod lock;
pub mod locked;
pub mod locking;
pub mod mirror;
