//! Boot chain: kernel, module closure, initramfs and the UKI that bundles them.
//!
//! Takes the assembled [`Tree`](crate::rootfs::Tree) (which holds Debian's
//! `linux-image` package, usr-merged) and the static `nodeagent` binary, and
//! produces what the firmware or QEMU loads: the kernel exactly as Debian
//! signed it (or, for the lab's PVH fast path, the ELF inside it), the list
//! of modules the image needs in load order, and a reproducible compressed
//! cpio initramfs with the agent as `/init`, and the Unified Kernel Image
//! (systemd's EFI stub with kernel, initramfs and command line appended).
//!
//! Never modifies the kernel or a module (both are signed by Debian, so
//! `module.sig_enforce=1` and Secure Boot keep working), never reads the
//! clock, the environment or the host file system: every input is an
//! argument and every output is bytes.

pub mod initramfs;
pub mod kernel;
pub mod modules;
pub mod uki;

#[cfg(test)]
pub(crate) mod testkit;

pub use initramfs::Compression;
pub use kernel::{extract_vmlinux, find_kernel, inspect, KernelError, KernelInfo};
pub use modules::{closure, initramfs_payload, EarlyModules, Module, ModuleError};
pub use uki::{build_uki, read_sections, section_bytes, UkiError, UkiSection, UkiSections};
