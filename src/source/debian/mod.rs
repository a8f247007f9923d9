//! Debian archive: InRelease verification, Packages indexes, version
//! comparison and dependency resolution.
