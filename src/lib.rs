//! nodeimg: builds signed, read-only, bootable OS images for Kubernetes nodes.
//!
//! The pipeline flows one way: `spec` (TOML -> plan) -> `source` (Debian
//! archive, lock, cache, .deb extraction) -> `rootfs` (tree from layers) ->
//! `boot` (kernel, modules, initramfs, UKI), `oci` (container images packed
//! into the root) -> `fs` (squashfs + dm-verity)
//! -> `output` (disk, formats, PXE bundle) -> `manifest` (the record of a
//! build) -> `sign` (SBOM, signature, verification). `pipeline` runs the
//! stages in order; each stage is a function of its inputs. `lab` boots
//! what a build lists and `pxe_server` serves a PXE bundle. `cluster` makes
//! the node API's CA and machine configs; `node` is that API's client. Modules import
//! one another without cycles (`module_graph_tests.rs` checks it).

pub mod boot;
pub mod cluster;
pub mod fs;
pub mod lab;
pub mod manifest;
pub mod node;
pub mod oci;
pub mod output;
pub mod pe;
pub mod pipeline;
pub mod progress;
pub mod pxe_server;
pub mod rootfs;
pub mod sign;
pub mod source;
pub mod spec;
pub mod util;

#[cfg(test)]
#[path = "module_graph_tests.rs"]
mod module_graph;
#[cfg(test)]
pub(crate) mod testutil;
