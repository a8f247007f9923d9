//! Root file system assembly: takes extracted packages and layer content,
//! produces a normalised [`Tree`]. Never touches the host file system.

pub mod assemble;
pub mod tree;
pub mod usrmerge;

pub use tree::{Entry, Kind, Tree};
