//! Bootable outputs from a built root: the GPT disk (ESP + A/B root and
//! verity slots), and the formats clouds and hypervisors import. Writers
//! take bytes and sinks; they never need root, loop devices or mounts.

pub mod disk;
pub mod esp;
pub mod formats;
pub mod gpt;
