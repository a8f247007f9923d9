//! Small shared helpers: SHA-256 and atomic file replacement.

pub mod atomic;
pub mod date;
pub mod hash;
