//! Stage: bootable outputs from a built root: the UKI, the UEFI disk (ESP
//! with systemd-boot + the UKI, A/B root and verity slots), the disk
//! formats converted from it, and the PXE bundle. One function each;
//! [`write_outputs`] runs those the plan asks for.
//!
//! Takes the finished root image and verity tree (as files in the output
//! directory), the kernel, the initramfs and the plain `.deb` holding
//! systemd-boot and systemd-stub; writes each requested output through a
//! temporary name and returns the manifest's artifact list and records.
//! Outputs that were not requested are removed, so no file of an earlier
//! build sits unlisted beside the new manifest.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Seek};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::boot::uki::{build_uki, UkiError, UkiSections};
use crate::manifest::{Artifact, UefiRecord, VerityRecord};
use crate::output::disk::{self, DiskError, DiskIds, DiskLayout, DiskSpec, Payload};
use crate::output::esp::{write_esp, EspError, EspFile, EspParams};
use crate::output::formats::{convert, ConvertOptions, Format, FormatError};
use crate::output::gpt;
use crate::output::pxe_bundle::{write_pxe_bundle, PxeBundle, PxeError, PxeParts, PXE_DIR};
use crate::rootfs::tree::Kind;
use crate::rootfs::Tree;
use crate::sign::authenticode::{AuthenticodeError, PeSigner};
use crate::source::deb::{unpack_into, DebError};
use crate::spec::{OutputKind, Plan};
use crate::util::atomic;
use contract::cmdline::{Args, DeviceRef, FailureAction, KernelCmdline, StateRef};

use super::boot_files::BootParts;
use super::root_image::{ROOTFS_FILE, VERITY_FILE};

pub const UKI_FILE: &str = "uki.efi";
pub const DISK_RAW_FILE: &str = "disk.raw";

/// Where systemd-boot-efi keeps the two files the disk needs.
const STUB_PATH: &str = "usr/lib/systemd/boot/efi/linuxx64.efi.stub";
const BOOTLOADER_PATH: &str = "usr/lib/systemd/boot/efi/systemd-bootx64.efi";
/// The removable-media path every UEFI firmware boots without NVRAM entries.
const ESP_BOOTLOADER: &str = "EFI/BOOT/BOOTX64.EFI";
/// systemd-boot's loader settings: boot the first entry at once, never let
/// the console edit the (signed) command line, no firmware or auto entries.
const LOADER_CONF: &str =
    "timeout 0\neditor no\nauto-entries no\nauto-firmware no\nconsole-mode keep\n";

/// Errors of the output stage; each names the output or file.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("the uefi package {package} has no {path}")]
    UefiFileMissing { package: String, path: &'static str },
    #[error("cannot unpack the uefi package {package}")]
    UefiDeb {
        package: String,
        #[source]
        source: DebError,
    },
    #[error("cannot sign the {file} for Secure Boot")]
    SecureBootSign {
        file: &'static str,
        #[source]
        source: AuthenticodeError,
    },
    #[error("cannot assemble the UKI")]
    Uki(#[source] UkiError),
    #[error("cannot write the ESP")]
    Esp(#[source] EspError),
    #[error("cannot lay out the disk")]
    Disk(#[source] DiskError),
    #[error("cannot write output `{format}`")]
    Format {
        format: Format,
        #[source]
        source: FormatError,
    },
    #[error("cannot write the PXE bundle")]
    Pxe(#[source] PxeError),
    #[error("the image's kernel command line")]
    Cmdline(#[source] contract::cmdline::CmdlineError),
    #[error("a disk conversion thread panicked")]
    Panicked,
    #[error("the root image has no usr/lib/os-release for the UKI's .osrel")]
    NoOsRelease,
    #[error("cannot write {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What the outputs are made from.
pub struct OutputInputs<'a> {
    pub plan: &'a Plan,
    pub out: &'a Path,
    pub source_date_epoch: u64,
    pub tree: &'a Tree,
    pub verity: &'a VerityRecord,
    /// The kernel, the initramfs and the kernel release.
    pub boot: &'a BootParts,
    /// The image's command line (root hash, no devices).
    pub cmdline: &'a str,
    /// The uefi package's name and plain `.deb`, when the plan names one.
    pub uefi_deb: Option<(&'a str, &'a [u8])>,
    /// Signs systemd-boot and the UKI for Secure Boot (the db key).
    pub pe_signer: Option<&'a PeSigner>,
}

/// What the outputs stage hands back for the manifest.
#[derive(Debug, Default)]
pub struct Written {
    pub artifacts: Vec<Artifact>,
    pub uefi: Option<UefiRecord>,
}

/// The UKI's command line: the image's line and where the agent finds its
/// root on the disk: partitions by the UUIDs the root hash fixes, state on
/// the same disk, and a reboot on failure so boot counting can fall back.
pub fn uki_cmdline(image_cmdline: &str, root_hash: &[u8]) -> Result<String, OutputError> {
    let (root, hash) = gpt::verity_partition_uuids(root_hash)
        .map_err(|source| OutputError::Disk(DiskError::Table { source }))?;
    let mut line = KernelCmdline::parse(image_cmdline).map_err(OutputError::Cmdline)?;
    line.nodeimg
        .merge(Args {
            root: Some(DeviceRef::PartUuid(root.to_string())),
            hash: Some(DeviceRef::PartUuid(hash.to_string())),
            state: Some(StateRef::Auto),
            on_failure: Some(FailureAction::Reboot),
            ..Args::default()
        })
        .map_err(OutputError::Cmdline)?;
    Ok(line.to_string())
}

/// The UKI's name on the ESP: systemd-boot counts tries in it (`+3`).
pub fn esp_entry_name(plan: &Plan) -> String {
    format!(
        "EFI/Linux/{}-{}+{}.efi",
        plan.name, plan.version, plan.disk.boot_tries
    )
}

/// Writes every output of `plan.outputs` into `inputs.out`.
pub fn write_outputs(inputs: &OutputInputs) -> Result<Written, OutputError> {
    let (plan, out) = (inputs.plan, inputs.out);
    let wants = |k: OutputKind| plan.outputs.contains(&k);
    let mut written = Written::default();
    remove_unrequested(plan, out)?;
    if plan.outputs.iter().any(|k| k.needs_uki()) {
        let uki = build_uki_stage(inputs)?;
        if wants(OutputKind::Uki) {
            let path = out.join(UKI_FILE);
            atomic::write(&path, &uki.uki).map_err(|source| OutputError::Io { path, source })?;
            written.artifacts.push(artifact("uki", out, UKI_FILE)?);
        }
        let mut record = UefiRecord {
            cmdline: uki.cmdline.clone(),
            esp_entry: uki.entry.clone(),
            secure_boot_signed: inputs.pe_signer.is_some(),
            disk: None,
        };
        if plan.outputs.iter().any(|k| k.needs_disk()) {
            record.disk = Some(write_raw_disk(inputs, &uki)?);
            if wants(OutputKind::DiskRaw) {
                written
                    .artifacts
                    .push(artifact("disk-raw", out, DISK_RAW_FILE)?);
            }
            written
                .artifacts
                .extend(convert_formats(plan, out, inputs.source_date_epoch)?);
            if !wants(OutputKind::DiskRaw) {
                remove_stale(&out.join(DISK_RAW_FILE))?;
            }
        }
        written.uefi = Some(record);
    }
    if wants(OutputKind::Pxe) {
        let bundle = write_pxe(inputs)?;
        written
            .artifacts
            .extend(pxe_artifacts(&bundle, &file_name(OutputKind::Pxe)));
    }
    Ok(written)
}

/// The UKI and what the ESP holds with it.
pub struct UkiParts {
    /// The UKI, signed when a db key was given.
    pub uki: Vec<u8>,
    /// systemd-boot, signed likewise.
    pub bootloader: Vec<u8>,
    /// The UKI's sealed command line.
    pub cmdline: String,
    /// The UKI's path on the ESP.
    pub entry: String,
    /// The verity root hash, raw.
    pub root_hash: Vec<u8>,
}

/// Assembles the UKI (systemd-stub + kernel + initramfs + the command line
/// that names the disk's partitions) and signs it and systemd-boot for
/// Secure Boot when a db key was given.
pub fn build_uki_stage(inputs: &OutputInputs) -> Result<UkiParts, OutputError> {
    let t = Instant::now();
    let (package, deb) = inputs
        .uefi_deb
        .ok_or_else(|| OutputError::UefiFileMissing {
            package: "(none)".into(),
            path: STUB_PATH,
        })?;
    let (stub, bootloader) = uefi_files(package, deb)?;
    let root_hash = hex::decode(&inputs.verity.root_hash).unwrap_or_default();
    let cmdline = uki_cmdline(inputs.cmdline, &root_hash)?;
    let osrel = match inputs.tree.get("usr/lib/os-release").map(|e| &e.kind) {
        Some(Kind::File(d)) => d.clone(),
        _ => return Err(OutputError::NoOsRelease),
    };
    let uki = build_uki(
        &stub,
        &UkiSections {
            osrel: &osrel,
            cmdline: cmdline.as_bytes(),
            uname: inputs.boot.kernel_release.as_bytes(),
            initrd: &inputs.boot.initramfs,
            linux: &inputs.boot.kernel,
        },
    )
    .map_err(OutputError::Uki)?;
    // What the firmware and systemd-boot start carries our db signature,
    // over the whole UKI: its command line cannot change unnoticed.
    let (uki, bootloader) = match inputs.pe_signer {
        Some(signer) => {
            let bootloader =
                signer
                    .sign(&bootloader)
                    .map_err(|source| OutputError::SecureBootSign {
                        file: "systemd-boot",
                        source,
                    })?;
            let uki = signer
                .sign(&uki)
                .map_err(|source| OutputError::SecureBootSign {
                    file: "UKI",
                    source,
                })?;
            (uki, bootloader)
        }
        None => (uki, bootloader),
    };
    tracing::info!(
        bytes = uki.len(),
        secure_boot_signed = inputs.pe_signer.is_some(),
        secs = t.elapsed().as_secs_f32(),
        "UKI assembled"
    );
    Ok(UkiParts {
        uki,
        bootloader,
        cmdline,
        entry: esp_entry_name(inputs.plan),
        root_hash,
    })
}

/// Converts `out/disk.raw` into each disk format of the plan, side by side
/// (each reads the raw disk on its own; qemu-img runs in its own process);
/// returns their manifest entries in the plan's order.
pub fn convert_formats(
    plan: &Plan,
    out: &Path,
    source_date_epoch: u64,
) -> Result<Vec<Artifact>, OutputError> {
    let raw = out.join(DISK_RAW_FILE);
    let opts = ConvertOptions::new(source_date_epoch);
    let formats: Vec<Format> = plan
        .outputs
        .iter()
        .filter_map(|k| match k {
            OutputKind::Disk(f) => Some(*f),
            _ => None,
        })
        .collect();
    let results: Vec<Result<(), OutputError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = formats
            .iter()
            .map(|&format| {
                let (raw, opts) = (&raw, &opts);
                scope.spawn(move || {
                    let t = Instant::now();
                    let name = file_name(OutputKind::Disk(format));
                    convert(raw, format, &out.join(&name), opts)
                        .map_err(|source| OutputError::Format { format, source })?;
                    tracing::info!(
                        format = format.name(),
                        secs = t.elapsed().as_secs_f32(),
                        "disk converted"
                    );
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Err(OutputError::Panicked)))
            .collect()
    });
    let mut artifacts = Vec::new();
    for (format, result) in formats.iter().zip(results) {
        result?;
        let name = file_name(OutputKind::Disk(*format));
        artifacts.push(artifact(format.name(), out, &name)?);
    }
    Ok(artifacts)
}

/// The PXE bundle: kernel, an initrd that also carries the root image and
/// its verity tree, and the iPXE script.
pub fn write_pxe(inputs: &OutputInputs) -> Result<PxeBundle, OutputError> {
    let t = Instant::now();
    let out = inputs.out;
    let bundle = write_pxe_bundle(
        &out.join(file_name(OutputKind::Pxe)),
        &PxeParts {
            kernel: &inputs.boot.kernel,
            initramfs: &inputs.boot.initramfs,
            root: &out.join(ROOTFS_FILE),
            verity: &out.join(VERITY_FILE),
            cmdline: inputs.cmdline,
            source_date_epoch: inputs.source_date_epoch,
        },
    )
    .map_err(OutputError::Pxe)?;
    tracing::info!(secs = t.elapsed().as_secs_f32(), "PXE bundle written");
    Ok(bundle)
}

/// The manifest's entries for a written bundle, with paths `<prefix>/<file>`
/// (the bundle folder relative to the manifest, normally [`PXE_DIR`]).
pub fn pxe_artifacts(bundle: &PxeBundle, prefix: &str) -> Vec<Artifact> {
    bundle
        .files
        .iter()
        .map(|f| Artifact {
            kind: f.kind.into(),
            path: format!("{}/{}", prefix.trim_end_matches('/'), f.name),
            sha256: f.sha256.clone(),
            size: f.size,
        })
        .collect()
}

/// Removes the outputs of an earlier build that this plan does not ask for.
pub fn remove_unrequested(plan: &Plan, out: &Path) -> Result<(), OutputError> {
    let keep: Vec<String> = plan.outputs.iter().map(|k| file_name(*k)).collect();
    for k in OutputKind::ALL {
        let name = file_name(k);
        if !keep.contains(&name) {
            remove_stale(&out.join(name))?;
        }
    }
    Ok(())
}

/// File (or folder) name of each output in the output directory.
pub fn file_name(kind: OutputKind) -> String {
    match kind {
        OutputKind::Uki => UKI_FILE.into(),
        OutputKind::DiskRaw => DISK_RAW_FILE.into(),
        OutputKind::Disk(Format::Gce) => "disk-gce.tar.gz".into(),
        OutputKind::Disk(f) => format!("disk{}", f.extension()),
        OutputKind::Pxe => PXE_DIR.into(),
    }
}

fn remove_stale(path: &Path) -> Result<(), OutputError> {
    let r = if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match r {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(OutputError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

fn artifact(kind: &str, out: &Path, name: &str) -> Result<Artifact, OutputError> {
    Artifact::of_file(kind, out, name).map_err(|source| OutputError::Io {
        path: out.join(name),
        source,
    })
}

/// systemd-stub and systemd-boot from the uefi package.
fn uefi_files(package: &str, deb: &[u8]) -> Result<(Vec<u8>, Vec<u8>), OutputError> {
    let mut tree = Tree::new();
    unpack_into(package, deb, &mut tree, &mut BTreeMap::new()).map_err(|source| {
        OutputError::UefiDeb {
            package: package.into(),
            source,
        }
    })?;
    let get = |path: &'static str| match tree.get(path).map(|e| &e.kind) {
        Some(Kind::File(d)) => Ok(d.to_vec()),
        _ => Err(OutputError::UefiFileMissing {
            package: package.into(),
            path,
        }),
    };
    Ok((get(STUB_PATH)?, get(BOOTLOADER_PATH)?))
}

/// Room for a bigger root in later updates: each slot holds half again
/// the built image, at least 64 MiB, unless the spec fixes the size.
fn slot_size(len: u64, fixed_mib: u64) -> u64 {
    if fixed_mib > 0 {
        fixed_mib << 20
    } else {
        (len + len / 2).max(64 << 20)
    }
}

/// ESP (systemd-boot, loader.conf, the UKI) and slot A into `disk.raw`.
pub fn write_raw_disk(inputs: &OutputInputs, uki: &UkiParts) -> Result<DiskLayout, OutputError> {
    let (bootloader, entry, root_hash) = (&uki.bootloader[..], &uki.entry[..], &uki.root_hash[..]);
    let uki = &uki.uki[..];
    let t = Instant::now();
    let out = inputs.out;
    let plan = inputs.plan;
    let io_at = |path: &Path| {
        let path = path.to_path_buf();
        move |source| OutputError::Io {
            path: path.clone(),
            source,
        }
    };
    let esp_params = EspParams {
        size: plan.disk.esp_mib << 20,
        ..EspParams::new(inputs.source_date_epoch)
    };
    let esp_tmp = atomic::temp_path(&out.join("esp.img"));
    let esp_file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&esp_tmp)
        .map_err(io_at(&esp_tmp))?;
    let files = [
        EspFile {
            path: ESP_BOOTLOADER,
            data: bootloader,
        },
        EspFile {
            path: "loader/loader.conf",
            data: LOADER_CONF.as_bytes(),
        },
        EspFile {
            path: entry,
            data: uki,
        },
    ];
    let raw = out.join(DISK_RAW_FILE);
    let raw_tmp = atomic::temp_path(&raw);
    let result = (|| {
        let mut esp = write_esp(esp_file, &esp_params, &files).map_err(OutputError::Esp)?;
        esp.rewind().map_err(io_at(&esp_tmp))?;
        let root_path = out.join(ROOTFS_FILE);
        let verity_path = out.join(VERITY_FILE);
        let open = |p: &Path| File::open(p).map_err(io_at(p));
        let len = |p: &Path| fs::metadata(p).map(|m| m.len()).map_err(io_at(p));
        let (root_len, verity_len) = (len(&root_path)?, len(&verity_path)?);
        let mut seed = root_hash.to_vec();
        seed.extend_from_slice(format!("\0{}\0{}", plan.name, plan.version).as_bytes());
        let spec = DiskSpec {
            version: &plan.version,
            root_hash,
            slot_size_root: slot_size(root_len, plan.disk.root_slot_mib),
            slot_size_verity: (verity_len + verity_len / 2).max(8 << 20),
            ids: DiskIds::derive(&seed),
        };
        let tmp = &raw_tmp;
        let sink = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(tmp)
            .map_err(io_at(tmp))?;
        let mut esp_reader = BufReader::with_capacity(1 << 20, esp);
        let mut root_reader = BufReader::with_capacity(1 << 20, open(&root_path)?);
        let mut verity_reader = BufReader::with_capacity(1 << 20, open(&verity_path)?);
        let layout = disk::write_disk(
            io::BufWriter::with_capacity(1 << 20, &sink),
            &spec,
            Payload {
                reader: &mut esp_reader,
                len: esp_params.size,
            },
            Payload {
                reader: &mut root_reader,
                len: root_len,
            },
            Payload {
                reader: &mut verity_reader,
                len: verity_len,
            },
        )
        .map_err(OutputError::Disk)?;
        // write_disk leaves the tail a hole: give the file its full length.
        sink.set_len(layout.size).map_err(io_at(tmp))?;
        sink.sync_all().map_err(io_at(tmp))?;
        atomic::commit(tmp, &raw).map_err(io_at(&raw))?;
        Ok(layout)
    })();
    let _ = fs::remove_file(&esp_tmp);
    if result.is_err() {
        let _ = fs::remove_file(&raw_tmp);
    }
    let layout = result?;
    tracing::info!(
        bytes = layout.size,
        secs = t.elapsed().as_secs_f32(),
        "raw disk written"
    );
    Ok(layout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::pxe_bundle::{PxeFile, KIND_INITRD, KIND_KERNEL, KIND_SCRIPT};

    #[test]
    fn pxe_artifacts_are_listed_under_the_bundle_folder() {
        let file = |kind, name| PxeFile {
            kind,
            name,
            sha256: "0".repeat(64),
            size: 1,
        };
        let bundle = PxeBundle {
            dir: "out/pxe".into(),
            files: vec![
                file(KIND_KERNEL, "vmlinuz"),
                file(KIND_INITRD, "initrd.img"),
                file(KIND_SCRIPT, "boot.ipxe"),
            ],
            cmdline: String::new(),
        };
        let artifacts = pxe_artifacts(&bundle, "pxe/");
        assert_eq!(artifacts[1].path, "pxe/initrd.img");
        assert_eq!(artifacts[1].kind, "pxe-initrd");
    }
}
