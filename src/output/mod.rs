//! Bootable outputs from a built root: the GPT disk (ESP + A/B root and
//! verity slots), the formats clouds and hypervisors import, and the PXE
//! bundle. Writers take bytes and sinks; they never need root, loop devices
//! or mounts.

pub mod deflate;
pub mod disk;
pub mod esp;
pub mod formats;
pub mod gpt;
pub mod pxe_bundle;
pub mod vmdk;
