//! UEFI boots: OVMF firmware, the image's GPT disk, systemd-boot and the
//! UKI, exactly the path a machine takes from its own disk.
//!
//! The image's disk (`disk-qcow2`, else `disk-raw`) is verified against the
//! manifest and never written: the VM runs on a qcow2 overlay backed by it,
//! grown to the requested size (so the agent's state partition has room to
//! fill). The overlay is the `--state` file when one is given (created
//! when missing, reused otherwise, so a second boot sees the first's
//! state), else it lives in the run directory. Each VM gets its own copy
//! of OVMF's variable store. Guest reboots stay inside QEMU, so systemd-boot's
//! boot counting and its fallback to an older entry run as on hardware.
//!
//! With Secure Boot ([`BootOptions::secure_boot`]), the VM runs OVMF's
//! Secure Boot build and its variable store is made for the run from the
//! template with the key directory's PK, KEK and db enrolled (the code path
//! of `nodeimg keys enroll-ovmf`, [`super::secure_boot`]): the firmware
//! then starts only binaries signed by db, as a machine enrolled with our
//! keys does.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::artifacts::verified_artifact;
use super::config_fw_cfg;
use super::secure_boot;
use super::vm::{Disk, VmBoot, VmConfig};
use super::{accel, run_to_outcome, work_dir, BootOptions, BootOutcome, LabError};
use crate::manifest::Manifest;

/// Room beyond the image that a VM's disk gets without `--disk-size`.
pub const DEFAULT_STATE_ROOM: u64 = 1 << 30;

/// OVMF's code and variable-store templates (Debian's `ovmf` package).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ovmf {
    pub code: PathBuf,
    pub vars: PathBuf,
    /// The Secure Boot build of the code (SMM-guarded variables, needs `smm=on`).
    pub secure_code: PathBuf,
}

impl Default for Ovmf {
    fn default() -> Self {
        Ovmf {
            code: PathBuf::from("/usr/share/OVMF/OVMF_CODE_4M.fd"),
            vars: PathBuf::from(super::secure_boot::DEFAULT_VARS_TEMPLATE),
            secure_code: PathBuf::from("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"),
        }
    }
}

/// The disk artifact a UEFI boot uses, and its QEMU format name.
fn disk_artifact(dir: &Path, manifest: &Manifest) -> Result<(PathBuf, &'static str), LabError> {
    match verified_artifact(dir, manifest, "disk-qcow2") {
        Ok(p) => Ok((p, "qcow2")),
        Err(LabError::MissingArtifact { .. }) => verified_artifact(dir, manifest, "disk-raw")
            .map(|p| (p, "raw"))
            .map_err(|e| match e {
                LabError::MissingArtifact { .. } => LabError::MissingArtifact {
                    kind: "disk-qcow2 or disk-raw (build with --format disk-qcow2)".into(),
                },
                other => other,
            }),
        Err(e) => Err(e),
    }
}

/// Creates the VM's overlay on top of the image's disk, unless it exists.
fn create_overlay(
    overlay: &Path,
    backing: &Path,
    format: &str,
    size: Option<u64>,
) -> Result<(), LabError> {
    if overlay.exists() {
        return Ok(());
    }
    let backing = std::fs::canonicalize(backing).map_err(|source| LabError::ArtifactIo {
        path: backing.to_path_buf(),
        source,
    })?;
    let mut cmd = Command::new("qemu-img");
    cmd.args(["create", "-q", "-f", "qcow2", "-F", format, "-b"])
        .arg(&backing)
        .arg(overlay);
    if let Some(size) = size {
        cmd.arg(size.to_string());
    }
    let out = cmd.output().map_err(|source| LabError::Io {
        path: PathBuf::from("qemu-img"),
        source,
    })?;
    if !out.status.success() {
        return Err(LabError::Tool {
            tool: "qemu-img create",
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Boots DIR's disk through OVMF; see the module docs.
pub fn boot_uefi(
    dir: &Path,
    manifest: &Manifest,
    opts: &BootOptions,
) -> Result<BootOutcome, LabError> {
    let (disk, format) = disk_artifact(dir, manifest)?;
    let code = match opts.secure_boot {
        Some(_) => &opts.ovmf.secure_code,
        None => &opts.ovmf.code,
    };
    for f in [code, &opts.ovmf.vars] {
        if !f.is_file() {
            return Err(LabError::Firmware { path: f.clone() });
        }
    }
    let (tmp, work) = work_dir(opts)?;
    let overlay = opts
        .state
        .clone()
        .unwrap_or_else(|| work.join("disk.qcow2"));
    // A size below the image's makes qemu-img fail: grow only.
    let image_size = disk_virtual_size(&disk, format)?;
    // Like a machine's disk, the VM's is larger than the image: by default
    // 1 GiB more, room for the state partition the agent adds.
    let size = Some(
        opts.disk_size
            .unwrap_or(image_size + DEFAULT_STATE_ROOM)
            .max(image_size),
    );
    create_overlay(&overlay, &disk, format, size)?;
    let vars = work.join("ovmf-vars.fd");
    match &opts.secure_boot {
        Some(keydir) => enroll_vars(keydir, &opts.ovmf.vars, &vars)?,
        None => {
            std::fs::copy(&opts.ovmf.vars, &vars).map_err(|source| LabError::Io {
                path: vars.clone(),
                source,
            })?;
        }
    }
    // The probe enters the image's own kernel: a probe that stops in the
    // firmware passes on hosts where every kernel then hangs.
    let probe_kernel = verified_artifact(dir, manifest, "kernel")?;
    let mut disks = vec![Disk {
        path: overlay,
        format: "qcow2",
        read_only: false,
        serial: "nodeimg-disk".into(),
    }];
    if let Some(config) = &opts.config_drive {
        let drive = work.join("config-drive.img");
        super::write_config_drive(config, &drive)?;
        disks.push(Disk {
            path: drive,
            format: "raw",
            read_only: true,
            serial: "nodeimg-config".into(),
        });
    }
    let config = VmConfig {
        qemu: opts.qemu.clone(),
        accel: accel::resolve(opts.accel, &opts.qemu, &probe_kernel),
        memory_mib: opts.memory_mib,
        cpus: 1,
        boot: VmBoot::Uefi {
            code: code.clone(),
            vars,
            secure_boot: opts.secure_boot.is_some(),
        },
        disks,
        serial_log: work.join("serial.log"),
        qmp_socket: work.join("qmp.sock"),
        qemu_log: work.join("qemu.log"),
        fw_cfg: config_fw_cfg(opts),
        nic: None,
        tap: None,
        rtc_base: opts.rtc_base.clone(),
    };
    tracing::info!(
        accel = config.accel.as_str(),
        secure_boot = opts.secure_boot.is_some(),
        work = %work.display(),
        "booting through OVMF"
    );
    run_to_outcome(&config, opts, tmp, "uefi")
}

/// This run's variable store: `template` with KEYDIR's keys enrolled and
/// Secure Boot on, as `nodeimg keys enroll-ovmf` writes it.
fn enroll_vars(keydir: &Path, template: &Path, vars: &Path) -> Result<(), LabError> {
    let enroll = |source| LabError::Enroll {
        keydir: keydir.to_path_buf(),
        source,
    };
    let tool = secure_boot::find_virt_fw_vars_from_env().map_err(enroll)?;
    secure_boot::enroll_ovmf_vars(&tool, keydir, template, vars).map_err(enroll)?;
    tracing::info!(keydir = %keydir.display(), "Secure Boot keys enrolled");
    Ok(())
}

/// The disk image's virtual size in bytes (`qemu-img info`).
fn disk_virtual_size(disk: &Path, format: &str) -> Result<u64, LabError> {
    let out = Command::new("qemu-img")
        .args(["info", "--output=json", "-f", format])
        .arg(disk)
        .output()
        .map_err(|source| LabError::Io {
            path: PathBuf::from("qemu-img"),
            source,
        })?;
    let info: Value = serde_json::from_slice(&out.stdout).map_err(|_| LabError::Tool {
        tool: "qemu-img info",
        message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })?;
    info.get("virtual-size")
        .and_then(Value::as_u64)
        .ok_or_else(|| LabError::Tool {
            tool: "qemu-img info",
            message: format!("no virtual-size for {}", disk.display()),
        })
}
