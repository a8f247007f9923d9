//! PXE boots: a VM with no disk boots the image's PXE bundle (`pxe/`:
//! `boot.ipxe`, `vmlinuz`, `initrd.img` with the root inside) through the
//! iPXE ROM of its virtio NIC, the path a diskless machine takes.
//!
//! The bundle's three files are verified against the manifest first. QEMU's
//! user network (slirp) answers DHCP and hands out `boot.ipxe`, either from
//! its own TFTP server rooted at the bundle folder, or over HTTP from
//! [`crate::pxe_server::serve`] running in this process on 127.0.0.1. The network
//! is `restrict=on` both ways: the guest reaches slirp's DHCP and TFTP and,
//! for HTTP, one forwarded address (`10.0.2.100:80` -> the server's
//! loopback port), and nothing else, so no packet leaves the machine. The
//! bundle runs as built: the script's command line (and so the root, the
//! verity parameters and `/var` on tmpfs) is the bundle's own.
//!
//! The NIC keeps QEMU's default ROM (`efi-virtio.rom` from ipxe-qemu, BIOS
//! and EFI iPXE in one): QEMU patches a default ROM's PCI IDs to the
//! device's, while an explicit `romfile=pxe-virtio.rom` (IDs `1af4:1041`,
//! modern virtio) does not match the transitional `1af4:1000` device on
//! q35's root bus, and SeaBIOS skips it without a word.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::artifacts::verified_artifact;
use super::config_fw_cfg;
use super::vm::{VmBoot, VmConfig};
use super::{accel, run_to_outcome, work_dir, BootOptions, BootOutcome, LabError};
use crate::manifest::Manifest;
use crate::output::pxe_bundle::{KIND_INITRD, KIND_KERNEL, KIND_SCRIPT, SCRIPT_FILE};

/// The guest-side address slirp forwards to the lab's HTTP server.
pub use super::vm::HTTP_GUEST_ADDR;

/// How iPXE fetches the bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PxeVia {
    /// slirp's built-in TFTP server, rooted at the bundle folder.
    Tftp,
    /// The lab's own HTTP server ([`crate::pxe_server`]) on a loopback port.
    #[default]
    Http,
}

impl PxeVia {
    pub fn as_str(self) -> &'static str {
        match self {
            PxeVia::Tftp => "tftp",
            PxeVia::Http => "http",
        }
    }

    /// The outcome's `boot_path`.
    fn boot_path(self) -> &'static str {
        match self {
            PxeVia::Tftp => "pxe-tftp",
            PxeVia::Http => "pxe-http",
        }
    }
}

impl fmt::Display for PxeVia {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The bundle folder of DIR's manifest, after verifying its three files;
/// they must share one folder (the script names the others relatively).
pub fn bundle_dir(dir: &Path, manifest: &Manifest) -> Result<PathBuf, LabError> {
    let script = verified_artifact(dir, manifest, KIND_SCRIPT).map_err(|e| match e {
        LabError::MissingArtifact { .. } => LabError::MissingArtifact {
            kind: format!("{KIND_SCRIPT} (build with --format pxe)"),
        },
        other => other,
    })?;
    let folder = script.parent().map(Path::to_path_buf).unwrap_or_default();
    for kind in [KIND_KERNEL, KIND_INITRD] {
        let path = verified_artifact(dir, manifest, kind)?;
        if path.parent() != Some(folder.as_path()) {
            return Err(LabError::Manifest {
                dir: dir.to_path_buf(),
                what: format!(
                    "{kind} {} is not beside {SCRIPT_FILE} in {}",
                    path.display(),
                    folder.display()
                ),
            });
        }
    }
    Ok(folder)
}

/// A value inside a QEMU `-netdev` option list: commas are doubled.
fn qemu_escape(value: &str) -> String {
    value.replace(',', ",,")
}

/// `-netdev user` options for a TFTP boot of `bundle`.
pub fn tftp_net(bundle: &Path) -> String {
    format!(
        "restrict=on,tftp={},bootfile={SCRIPT_FILE}",
        qemu_escape(&bundle.display().to_string())
    )
}

/// `-netdev user` options for an HTTP boot from a server on `server`
/// (a loopback address): the guest's only reachable TCP endpoint is the
/// forwarded `10.0.2.100:80`. slirp connects the forward once, when QEMU
/// starts, and carries every guest connection to that address over it, so
/// the server must keep that one connection alive (it does: HTTP/1.1
/// keep-alive, and iPXE reuses its connection).
pub fn http_net(server: SocketAddr) -> String {
    format!(
        "restrict=on,guestfwd=tcp:{HTTP_GUEST_ADDR}:80-tcp:{server},\
         bootfile=http://{HTTP_GUEST_ADDR}/{SCRIPT_FILE}"
    )
}

/// Verifies DIR's PXE bundle, boots it over `via`, waits for the report,
/// powers the VM off and returns the report.
pub fn boot_pxe(
    dir: &Path,
    manifest: &Manifest,
    opts: &BootOptions,
    via: PxeVia,
) -> Result<BootOutcome, LabError> {
    if opts.state.is_some() {
        return Err(LabError::NotForPxe {
            what: "a state disk",
        });
    }
    if !opts.extra_cmdline.is_empty() {
        return Err(LabError::NotForPxe {
            what: "extra kernel arguments",
        });
    }
    if opts.config_drive.is_some() {
        return Err(LabError::NotForPxe {
            what: "a config drive (use --config: fw_cfg)",
        });
    }
    if opts.config_url.is_some() {
        return Err(LabError::NotForPxe {
            what: "a config URL (use --config: fw_cfg)",
        });
    }
    let bundle = bundle_dir(dir, manifest)?;
    let (tmp, work) = work_dir(opts)?;
    // The server lives as long as the VM runs (it is dropped on return).
    let (server, user_net) = match via {
        PxeVia::Tftp => (None, tftp_net(&bundle)),
        PxeVia::Http => {
            let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
            let server = crate::pxe_server::serve(&bundle, loopback).map_err(LabError::Serve)?;
            let net = http_net(server.addr());
            (Some(server), net)
        }
    };
    let kernel = verified_artifact(dir, manifest, "kernel")?;
    let accel = accel::resolve(opts.accel, &opts.qemu, &kernel);
    let config = VmConfig {
        qemu: opts.qemu.clone(),
        accel,
        memory_mib: opts.memory_mib,
        cpus: 1,
        boot: VmBoot::Network { user_net },
        disks: Vec::new(),
        serial_log: work.join("serial.log"),
        qmp_socket: work.join("qmp.sock"),
        qemu_log: work.join("qemu.log"),
        fw_cfg: config_fw_cfg(opts),
        nic: None,
        tap: None,
        rtc_base: opts.rtc_base.clone(),
    };
    let boot_path = via.boot_path();
    tracing::info!(
        accel = accel.as_str(),
        boot_path,
        bundle = %bundle.display(),
        work = %work.display(),
        "booting over the network"
    );
    let outcome = run_to_outcome(&config, opts, tmp, boot_path);
    drop(server);
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Artifact;
    use crate::util::hash::sha256_hex;

    fn write_bundle(dir: &Path, script_dir: &str) -> Manifest {
        let mut artifacts = Vec::new();
        for (kind, folder, name) in [
            (KIND_KERNEL, "pxe", "vmlinuz"),
            (KIND_INITRD, "pxe", "initrd.img"),
            (KIND_SCRIPT, script_dir, "boot.ipxe"),
        ] {
            std::fs::create_dir_all(dir.join(folder)).unwrap();
            let data = format!("{kind} bytes");
            std::fs::write(dir.join(folder).join(name), &data).unwrap();
            artifacts.push(Artifact {
                kind: kind.into(),
                path: format!("{folder}/{name}"),
                sha256: sha256_hex(data.as_bytes()),
                size: data.len() as u64,
            });
        }
        Manifest::sample(artifacts)
    }

    #[test]
    fn bundle_is_verified_and_in_one_folder() {
        let d = tempfile::tempdir().unwrap();
        let m = write_bundle(d.path(), "pxe");
        assert_eq!(bundle_dir(d.path(), &m).unwrap(), d.path().join("pxe"));
        std::fs::write(d.path().join("pxe/initrd.img"), "tampered bytes!").unwrap();
        assert!(matches!(
            bundle_dir(d.path(), &m),
            Err(LabError::ArtifactSize { .. } | LabError::ArtifactDigest { .. })
        ));

        let d = tempfile::tempdir().unwrap();
        let m = write_bundle(d.path(), "elsewhere");
        let err = bundle_dir(d.path(), &m).unwrap_err();
        assert!(err.to_string().contains("not beside boot.ipxe"), "{err}");
    }

    #[test]
    fn network_options_are_restricted() {
        assert_eq!(
            tftp_net(Path::new("/out/w,1/pxe")),
            "restrict=on,tftp=/out/w,,1/pxe,bootfile=boot.ipxe"
        );
        assert_eq!(
            http_net("127.0.0.1:40000".parse().unwrap()),
            "restrict=on,guestfwd=tcp:10.0.2.100:80-tcp:127.0.0.1:40000,\
             bootfile=http://10.0.2.100/boot.ipxe"
        );
    }

    #[test]
    fn pxe_boots_take_no_state_disk_or_extra_arguments() {
        let d = tempfile::tempdir().unwrap();
        let m = write_bundle(d.path(), "pxe");
        let opts = BootOptions {
            state: Some(d.path().join("state.img")),
            ..BootOptions::default()
        };
        assert!(matches!(
            boot_pxe(d.path(), &m, &opts, PxeVia::Tftp),
            Err(LabError::NotForPxe { .. })
        ));
        let opts = BootOptions {
            extra_cmdline: vec!["nodeimg.verity=full".into()],
            ..BootOptions::default()
        };
        assert!(matches!(
            boot_pxe(d.path(), &m, &opts, PxeVia::Http),
            Err(LabError::NotForPxe { .. })
        ));
    }
}
