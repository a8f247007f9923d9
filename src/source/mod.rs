//! Inputs to a build: the Debian archive (index, resolver, lock, fetch,
//! cache, .deb extraction).

pub mod debian;
