//! File system writers: the read-only root image and its dm-verity tree.
//!
//! Takes a normalised [`crate::rootfs::Tree`] and SOURCE_DATE_EPOCH;
//! produces a squashfs image padded to whole 4 KiB blocks
//! ([`squashfs::write_squashfs`]) and, from its bytes, a dm-verity hash
//! device plus root hash ([`verity::build_hash_tree`]). Both write into
//! `impl Write + Seek` sinks and are byte-reproducible. They never need root,
//! loop devices or mounts, and never read the clock, the environment or the
//! host file system ([`mod@bench`] alone does, and only for measurements).

pub mod bench;
pub mod squashfs;
pub mod verity;

pub use squashfs::{write_squashfs, SquashfsError, SquashfsInfo, SquashfsOptions};
pub use verity::{build_hash_tree, salt_for, VerityError, VerityInfo, VerityParams};
