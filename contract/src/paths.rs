//! Files that both sides name: the builder puts them on the image or in the
//! initramfs, the agent reads them there. Absolute, as the booted node sees
//! them; the builder's tree is relative to `/`, so it takes
//! [`relative`] of each.

/// The agent on the verified root; stage 1 execs it as stage 2.
pub const AGENT: &str = "/usr/sbin/nodeagent";
/// The agent as stage 1, in the initramfs.
pub const INIT: &str = "/init";
/// nodeimg's own files on the root image.
pub const LIB_DIR: &str = "/usr/lib/nodeimg";
/// The image's update trust root: the public key its A/B updates must be
/// signed with (the build's `--sign-key`); absent in an unsigned image.
pub const UPDATE_SIGNING_KEY: &str = "/usr/lib/nodeimg/update-signing.pub";
/// Modules to load, in dependency order (absolute paths, one a line): in the
/// initramfs the early ones, on the root the late ones.
/// The names of the Debian packages installed in the image, one a line:
/// what the agent checks a machine config against (`config::ImageFacts`).
pub const PACKAGES: &str = "/usr/lib/nodeimg/packages";
/// The machine config a node found, kept on the state partition (0600)
/// for boots that have no source.
pub const STORED_CONFIG: &str = "/var/lib/nodeimg/machine-config.toml";
/// Beside [`STORED_CONFIG`] when that copy was applied through the node
/// API: the `sha256:` of the boot source's config it replaces.
pub const APPLIED_CONFIG_REPLACES: &str = "/var/lib/nodeimg/machine-config.replaces";
pub const MODULES_ORDER: &str = "/usr/lib/nodeimg/modules.order";
/// Modules loaded after the report (nothing before `ready` needs them).
pub const MODULES_DEFERRED_ORDER: &str = "/usr/lib/nodeimg/modules-deferred.order";
/// Present when the image opts out of locking module loading
/// (`kernel.modules_disabled=1`) after its modules are in.
pub const MODULES_OPEN: &str = "/usr/lib/nodeimg/modules-open";
/// Modules loaded only on a UEFI boot (to bless the boot on the ESP).
pub const MODULES_UEFI_ORDER: &str = "/usr/lib/nodeimg/modules-uefi.order";
/// The PXE bundle's root image, inside its initrd (`nodeimg.root=file:...`).
pub const PXE_ROOT_IMAGE: &str = "/nodeimg/root.img";
/// The PXE bundle's verity tree, inside its initrd (`nodeimg.hash=file:...`).
pub const PXE_ROOT_VERITY: &str = "/nodeimg/root.verity";
/// Boots this state disk has seen, on `/var`.
pub const BOOT_COUNT: &str = "/var/lib/nodeimg/boot-count";
/// Where the agent mounts the ESP to bless a boot.
pub const ESP_MOUNT: &str = "/run/nodeimg/esp";

/// `path` without its leading `/`: how the builder's trees and archives
/// name it. `const`, so the builder's path constants are these.
pub const fn relative(path: &str) -> &str {
    match path.as_bytes() {
        // dropping one ASCII byte keeps the rest valid UTF-8
        [b'/', rest @ ..] => match std::str::from_utf8(rest) {
            Ok(s) => s,
            Err(_) => path,
        },
        _ => path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_is_absolute_and_plain() {
        for p in [
            AGENT,
            INIT,
            LIB_DIR,
            UPDATE_SIGNING_KEY,
            MODULES_ORDER,
            MODULES_DEFERRED_ORDER,
            MODULES_UEFI_ORDER,
            PXE_ROOT_IMAGE,
            PXE_ROOT_VERITY,
            BOOT_COUNT,
            ESP_MOUNT,
            STORED_CONFIG,
            APPLIED_CONFIG_REPLACES,
            MODULES_OPEN,
        ] {
            assert!(p.starts_with('/') && !p.ends_with('/'), "{p}");
            assert!(!p.contains("//") && !p.contains("/."), "{p}");
            assert_eq!(format!("/{}", relative(p)), p);
        }
        // the PXE files are what `nodeimg.root=file:` accepts
        let line =
            format!("nodeimg.root=file:{PXE_ROOT_IMAGE} nodeimg.hash=file:{PXE_ROOT_VERITY}");
        let args = crate::cmdline::KernelCmdline::parse(&line).unwrap().nodeimg;
        assert!(args.root.is_some() && args.hash.is_some());
    }
}
