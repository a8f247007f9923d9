//! The boot as data: [`boot_plan`] turns a [`Cmdline`] and the stage nodeagent
//! runs in into the ordered list of named [`Phase`]s. Pure and unit-tested; the
//! stage executors (`stage1.rs`, `stage2.rs`) carry the phases out, and only
//! `main.rs` decides what happens when one fails.

use contract::cmdline::{Cmdline, DeviceRef, StateRef};

/// Which PID 1 this process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `/init` in the initramfs: find and verify the root, switch to it.
    Initramfs,
    /// `/usr/sbin/nodeagent --stage2` on the verified root.
    Root,
}

/// Name of the device-mapper device that carries the verified root.
pub const DM_NAME: &str = "nodeimg-root";
/// Its node, which stage 1 creates itself (devtmpfs makes only `/dev/dm-N`).
pub const DM_NODE: &str = "/dev/mapper/nodeimg-root";
/// Where stage 1 mounts the verified root.
pub const SYSROOT: &str = "/sysroot";
/// Module list in the initramfs and, for the late modules, in the root image.
pub const MODULES_ORDER: &str = contract::paths::MODULES_ORDER;
/// Root modules loaded only on a UEFI boot, by the bless-boot phase.
pub const UEFI_MODULES_ORDER: &str = contract::paths::MODULES_UEFI_ORDER;
/// Root modules loaded after the report (see `load_deferred_modules`).
pub const DEFERRED_MODULES_ORDER: &str = contract::paths::MODULES_DEFERRED_ORDER;
/// The public key A/B updates must be signed with (the build's
/// `--sign-key`), PEM, on the verified root.
pub const UPDATE_KEY_PATH: &str = contract::paths::UPDATE_SIGNING_KEY;
/// The stage-2 binary, as seen from inside the root image.
pub const STAGE2_BIN: &str = contract::paths::AGENT;
/// The argument that tells nodeagent it is stage 2.
pub const STAGE2_ARG: &str = "--stage2";
/// How long stage 1 waits for the root, hash and state devices.
pub const DEVICE_WAIT_MS: u64 = 10_000;

/// What `/var` becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VarPlan {
    Tmpfs,
    /// ext4 on the state disk, made with `mke2fs` from the root when the disk has
    /// no ext4 superblock yet.
    Ext4(DeviceRef),
    /// `nodeimg.state=auto`: ext4 on the state partition of the root's disk,
    /// which is added to the GPT (and formatted) on first boot.
    Auto,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    // ---- stage 1 (initramfs) ----
    /// Refuse to run stage 1 anywhere but on an initramfs.
    CheckInitramfs,
    /// `/proc`, `/sys`, `/dev` (devtmpfs), `/run` (tmpfs).
    MountApi,
    /// `finit_module` every line of a modules.order; `optional` when the file may be absent.
    LoadModules {
        list: &'static str,
        optional: bool,
    },
    /// Attach the `file:` root data and hash files of the initramfs to
    /// read-only loop devices (the PXE bundle; see `loopdev.rs`).
    AttachFiles,
    /// Poll until the root data and hash devices exist.
    WaitDevices,
    /// DM_DEV_CREATE, DM_TABLE_LOAD (verity), DM_DEV_SUSPEND (resume); mknod the node.
    CreateVerity,
    /// `nodeimg.verity=full`: read the whole verity device once.
    VerifyFull,
    /// Mount the verity device read-only at /sysroot (never the raw data device).
    MountRoot,
    /// /etc overlay and /tmp on tmpfs inside /sysroot.
    PrepareRoot,
    /// Read the stage-2 binary through verity before exec, so a bad block fails here
    /// with EIO instead of killing PID 1 with SIGBUS later.
    CheckStage2,
    /// Move the API mounts, free the initramfs, move /sysroot onto / and chroot.
    SwitchRoot,
    /// exec `/usr/sbin/nodeagent --stage2`.
    ExecStage2,

    // ---- stage 2 (verified root) ----
    /// `/` is the read-only verity device and its status says verified.
    CheckRoot,
    /// /dev/pts, /dev/shm, /sys/fs/cgroup (cgroup2).
    MountExtraApi,
    Var(VarPlan),
    Sysctl,
    Hostname,
    Loopback,
    /// Last checks before the boot counts as good; `forced` is
    /// `nodeimg.health=fail` (a testing switch for boot counting).
    Health {
        forced: bool,
    },
    /// Mark the boot good for systemd-boot's boot counting (never fails).
    BlessBoot,
}

impl Phase {
    /// Short name used in `NODEIMG-ERROR <phase>: ...` lines and progress output.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::CheckInitramfs => "check-initramfs",
            Phase::MountApi => "mount-api",
            Phase::LoadModules { .. } => "modules",
            Phase::AttachFiles => "attach-files",
            Phase::WaitDevices => "wait-devices",
            Phase::CreateVerity => "verity",
            Phase::VerifyFull => "verity-full",
            Phase::MountRoot => "mount-root",
            Phase::PrepareRoot => "prepare-root",
            Phase::CheckStage2 => "check-stage2",
            Phase::SwitchRoot => "switch-root",
            Phase::ExecStage2 => "exec-stage2",
            Phase::CheckRoot => "check-root",
            Phase::MountExtraApi => "mount-extra-api",
            Phase::Var(_) => "var",
            Phase::Sysctl => "sysctl",
            Phase::Hostname => "hostname",
            Phase::Loopback => "loopback",
            Phase::Health { .. } => "health",
            Phase::BlessBoot => "bless-boot",
        }
    }
}

/// Phases that run before the command line can be read (it lives in /proc).
pub fn prelude(stage: Stage) -> Vec<Phase> {
    match stage {
        Stage::Initramfs => vec![Phase::CheckInitramfs, Phase::MountApi],
        Stage::Root => Vec::new(),
    }
}

/// The phases of one stage after [`prelude`], in order.
pub fn boot_plan(cmdline: &Cmdline, stage: Stage) -> Vec<Phase> {
    match stage {
        Stage::Initramfs => {
            let mut p = vec![
                Phase::LoadModules {
                    list: MODULES_ORDER,
                    optional: false,
                },
                Phase::WaitDevices,
                Phase::CreateVerity,
            ];
            let v = &cmdline.verity;
            if [&v.data, &v.hash]
                .iter()
                .any(|d| matches!(d, DeviceRef::File(_)))
            {
                // after the modules (loop), before the wait finds the devices
                p.insert(1, Phase::AttachFiles);
            }
            if cmdline.verify_full {
                p.push(Phase::VerifyFull);
            }
            p.extend([
                Phase::MountRoot,
                Phase::PrepareRoot,
                Phase::CheckStage2,
                Phase::SwitchRoot,
                Phase::ExecStage2,
            ]);
            p
        }
        Stage::Root => {
            let var = match &cmdline.state {
                Some(StateRef::Device(dev)) => VarPlan::Ext4(dev.clone()),
                Some(StateRef::Auto) => VarPlan::Auto,
                None => VarPlan::Tmpfs,
            };
            vec![
                Phase::CheckRoot,
                Phase::MountExtraApi,
                Phase::LoadModules {
                    list: MODULES_ORDER,
                    optional: true,
                },
                Phase::Var(var),
                Phase::Sysctl,
                Phase::Hostname,
                Phase::Loopback,
                Phase::Health {
                    forced: cmdline.fail_health,
                },
                Phase::BlessBoot,
            ]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmdline(extra: &str) -> Cmdline {
        let raw = format!(
            "nodeimg.root=/dev/vda nodeimg.hash=/dev/vdb nodeimg.roothash={} \
             nodeimg.data_blocks=10 nodeimg.hash_start=1 {extra}",
            "a".repeat(64)
        );
        Cmdline::parse(&raw).unwrap()
    }

    fn names(p: &[Phase]) -> Vec<&'static str> {
        p.iter().map(Phase::name).collect()
    }

    #[test]
    fn stage1_verifies_before_it_mounts_and_checks_before_it_execs() {
        let mut p = prelude(Stage::Initramfs);
        p.extend(boot_plan(&cmdline(""), Stage::Initramfs));
        assert_eq!(
            names(&p),
            [
                "check-initramfs",
                "mount-api",
                "modules",
                "wait-devices",
                "verity",
                "mount-root",
                "prepare-root",
                "check-stage2",
                "switch-root",
                "exec-stage2"
            ]
        );
        assert_eq!(
            p[2],
            Phase::LoadModules {
                list: MODULES_ORDER,
                optional: false
            }
        );
    }

    #[test]
    fn initramfs_files_are_attached_after_the_modules_load() {
        let plain = boot_plan(&cmdline(""), Stage::Initramfs);
        assert!(!plain.contains(&Phase::AttachFiles));
        let c = Cmdline::parse(&format!(
            "nodeimg.root=file:/nodeimg/root.img nodeimg.hash=file:/nodeimg/root.verity \
             nodeimg.roothash={} nodeimg.data_blocks=10 nodeimg.hash_start=1",
            "a".repeat(64)
        ))
        .unwrap();
        let n = names(&boot_plan(&c, Stage::Initramfs));
        assert_eq!(
            n[..4],
            ["modules", "attach-files", "wait-devices", "verity"]
        );
        // one file is enough to need the phase
        let c = cmdline("").verity.clone();
        let mut one = cmdline("");
        one.verity = contract::cmdline::VerityArgs {
            hash: DeviceRef::File("/nodeimg/root.verity".into()),
            ..c
        };
        assert!(boot_plan(&one, Stage::Initramfs).contains(&Phase::AttachFiles));
    }

    #[test]
    fn full_verification_runs_between_create_and_mount() {
        let p = boot_plan(&cmdline("nodeimg.verity=full"), Stage::Initramfs);
        let n = names(&p);
        let at = |x: &str| n.iter().position(|y| *y == x).unwrap();
        assert_eq!(at("verity-full"), at("verity") + 1);
        assert_eq!(at("mount-root"), at("verity-full") + 1);
    }

    #[test]
    fn stage2_var_follows_state_disk() {
        assert!(prelude(Stage::Root).is_empty());
        let p = boot_plan(&cmdline(""), Stage::Root);
        assert_eq!(
            names(&p),
            [
                "check-root",
                "mount-extra-api",
                "modules",
                "var",
                "sysctl",
                "hostname",
                "loopback",
                "health",
                "bless-boot"
            ]
        );
        assert!(p.contains(&Phase::Var(VarPlan::Tmpfs)));
        assert!(p.contains(&Phase::LoadModules {
            list: MODULES_ORDER,
            optional: true
        }));
        let p = boot_plan(&cmdline("nodeimg.state=/dev/vdc"), Stage::Root);
        assert!(p.contains(&Phase::Var(VarPlan::Ext4(DeviceRef::Path(
            "/dev/vdc".into()
        )))));
        let p = boot_plan(&cmdline("nodeimg.state=auto"), Stage::Root);
        assert!(p.contains(&Phase::Var(VarPlan::Auto)));
    }

    #[test]
    fn the_boot_is_blessed_last_after_the_health_check() {
        let p = boot_plan(&cmdline(""), Stage::Root);
        assert_eq!(
            p[p.len() - 2..],
            [Phase::Health { forced: false }, Phase::BlessBoot]
        );
        let p = boot_plan(&cmdline("nodeimg.health=fail"), Stage::Root);
        assert!(p.contains(&Phase::Health { forced: true }));
    }

    #[test]
    fn modules_load_before_sysctls_need_them() {
        let n = names(&boot_plan(&cmdline(""), Stage::Root));
        let at = |x: &str| n.iter().position(|y| *y == x).unwrap();
        assert!(at("modules") < at("sysctl"));
        assert!(at("check-root") == 0);
    }
}
