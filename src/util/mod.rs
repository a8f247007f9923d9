//! Small shared helpers: SHA-256, atomic file replacement, Debian dates
//! and tree paths. Nothing here knows about images or stages.

pub mod atomic;
pub mod date;
pub mod error;
pub mod hash;
pub mod path;
