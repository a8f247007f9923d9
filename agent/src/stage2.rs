//! Stage 2, `nodeagent --stage2` as PID 1 on the verified root: carries out the
//! root phases of the plan and fills in the report as it goes. It formats the
//! state disk only when it carries no ext4 superblock (or when this boot just
//! added the state partition), and never otherwise. Its last phases check
//! health and then bless the boot for systemd-boot (`bless.rs`).

use std::path::{Path, PathBuf};

use rustix::mount::MountFlags;

use crate::bless;
use crate::devices;
use crate::error::{chain, BootError};
use crate::modules;
use crate::net;
use crate::plan::{Phase, VarPlan, DEVICE_WAIT_MS, DM_NAME, DM_NODE};
use crate::state_partition::{self, StatePartition, ALIGN_BYTES};
use crate::sys::{Files, Mount, Mounts, Real};
use crate::sysctl;
use crate::verity::{self, VerityState};
use contract::cmdline::{Cmdline, DeviceRef};
use contract::report::{Report, RootReport, StateReport};

const MKE2FS: [&str; 2] = ["/usr/sbin/mke2fs", "/sbin/mke2fs"];
const RESIZE2FS: [&str; 2] = ["/usr/sbin/resize2fs", "/sbin/resize2fs"];
const STATE_LABEL: &str = "nodeimg-state";
/// Boots seen by this state disk: proves /var persists (and was not reformatted).
const BOOT_COUNT: &str = contract::paths::BOOT_COUNT;
/// The ext4 superblock: 1024 bytes at byte 1024 of the device.
const EXT4_SB_AT: u64 = 1024;
/// Its magic 0xEF53, little-endian at byte 0x38 (1080 of the device).
const EXT4_MAGIC_IN_SB: usize = 0x38;

/// A `/proc/mounts` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub device: String,
    pub target: String,
    pub fstype: String,
    pub options: Vec<String>,
}

/// The entry mounted on `/` last (after switch_root the initramfs's `rootfs`
/// line stays first).
pub fn root_entry(proc_mounts: &str) -> Option<MountEntry> {
    proc_mounts
        .lines()
        .rev()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (device, target, fstype, opts) = (f.next()?, f.next()?, f.next()?, f.next()?);
            Some(MountEntry {
                device: device.into(),
                target: target.into(),
                fstype: fstype.into(),
                options: opts.split(',').map(str::to_string).collect(),
            })
        })
        .find(|e| e.target == "/")
}

/// The root must be our verity device, read-only, with a clean verdict.
pub fn check_root(entry: Option<&MountEntry>, verdict: VerityState) -> Result<(), BootError> {
    let e = entry.ok_or(BootError::Root {
        what: "no / in /proc/mounts".into(),
    })?;
    let is_dm = e.device == DM_NODE || e.device.starts_with("/dev/dm-");
    if !is_dm {
        return Err(BootError::Root {
            what: format!("/ is {} ({}), not the verity device", e.device, e.fstype),
        });
    }
    if !e.options.iter().any(|o| o == "ro") {
        return Err(BootError::Root {
            what: format!("/ ({}) is mounted read-write", e.device),
        });
    }
    match verdict {
        VerityState::Verified => Ok(()),
        v => Err(BootError::Root {
            what: format!("verity status of {DM_NAME} is {}", v.as_str()),
        }),
    }
}

/// /dev/pts, /dev/shm and the cgroup2 hierarchy (containerd and kubelet need them).
pub fn mount_extra_api<S: Mounts + Files>(s: &mut S) -> Result<(), BootError> {
    for d in ["/dev/pts", "/dev/shm"] {
        s.mkdir_all(Path::new(d))
            .map_err(|source| BootError::Mkdir {
                path: d.into(),
                source,
            })?;
    }
    let hard = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    let all = [
        Mount::new(
            "devpts",
            "/dev/pts",
            "devpts",
            MountFlags::NOSUID | MountFlags::NOEXEC,
            "gid=5,mode=620,ptmxmode=000",
        ),
        Mount::new(
            "tmpfs",
            "/dev/shm",
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV,
            "mode=1777",
        ),
        Mount::new("cgroup2", "/sys/fs/cgroup", "cgroup2", hard, "nsdelegate"),
    ];
    for m in all {
        s.mount(&m).map_err(|e| BootError::mount(&m, e))?;
    }
    Ok(())
}

pub fn has_ext4_magic(two_bytes: &[u8]) -> bool {
    two_bytes == [0x53, 0xef]
}

/// Size of an ext4 file system from its superblock (the 1024 bytes at byte
/// 1024 of the device): blocks (the high half only with the 64bit feature)
/// times the block size. `None` when it is not ext4.
pub fn ext4_bytes(sb: &[u8]) -> Option<u64> {
    let u32_at = |at: usize| Some(u32::from_le_bytes(sb.get(at..at + 4)?.try_into().ok()?));
    if !has_ext4_magic(sb.get(EXT4_MAGIC_IN_SB..EXT4_MAGIC_IN_SB + 2)?) {
        return None;
    }
    let log = u32_at(0x18)?;
    if log > 6 {
        return None; // blocks of 1 KiB to 64 KiB
    }
    let incompat_64bit = u32_at(0x60)? & 0x80 != 0;
    let hi = if incompat_64bit { u32_at(0x150)? } else { 0 };
    let blocks = (u64::from(hi) << 32) | u64::from(u32_at(0x04)?);
    blocks.checked_mul(1024u64 << log)
}

/// First line of /etc/hostname, or `nodeimg`; must be a valid host name.
pub fn hostname_from(text: Option<&str>) -> Result<String, String> {
    let name = text
        .and_then(|t| {
            t.lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'))
        })
        .unwrap_or("nodeimg");
    let ok = name.len() <= 64
        && name.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(name.to_string())
    } else {
        Err(name.to_string())
    }
}

/// The ext4 superblock and the device's size in bytes.
fn read_superblock(dev: &Path) -> std::io::Result<(Vec<u8>, u64)> {
    use std::io::Seek;
    use std::os::unix::fs::FileExt;
    let mut f = std::fs::File::open(dev)?;
    let mut b = vec![0u8; 1024];
    f.read_exact_at(&mut b, EXT4_SB_AT)?;
    let size = f.seek(std::io::SeekFrom::End(0))?;
    Ok((b, size))
}

/// Runs the first of `bins` that exists with `args` and the device.
fn e2fs_tool(bins: &[&str], args: &[&str], dev: &Path) -> Result<(), BootError> {
    let state = |what: String| BootError::State {
        device: dev.into(),
        what,
    };
    let bin = bins
        .iter()
        .find(|p| Path::new(p).exists())
        .ok_or_else(|| state(format!("none of {} in the root image", bins.join(" "))))?;
    let out = std::process::Command::new(bin)
        .args(args)
        .arg(dev)
        .output()
        .map_err(|e| state(format!("run {bin}: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(state(format!(
            "{bin} failed ({}): {}",
            out.status,
            err.trim()
        )));
    }
    Ok(())
}

fn mkfs_ext4(dev: &Path) -> Result<(), BootError> {
    e2fs_tool(&MKE2FS, &["-q", "-F", "-t", "ext4", "-L", STATE_LABEL], dev)
}

/// Reads, increments and durably rewrites the state disk's boot counter.
/// The state disk is not verified: a symlink planted on it must not make
/// PID 1 read or write elsewhere, so no path component may be a symlink
/// and the temp file is created exclusively without following links.
fn bump_boot_count(path: &Path) -> std::io::Result<u64> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir)?;
    refuse_symlinks(path)?;
    let n = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .unwrap_or(0)
        .saturating_add(1);
    crate::sys::write_atomic(path, format!("{n}\n").as_bytes(), 0o644)?;
    Ok(n)
}

/// Fails when `path` or any ancestor below `/var` is a symlink.
fn refuse_symlinks(path: &Path) -> std::io::Result<()> {
    for p in path
        .ancestors()
        .take_while(|p| p.starts_with("/var") && *p != Path::new("/var"))
    {
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(std::io::Error::other(format!(
                    "{} on the state disk is a symlink",
                    p.display()
                )))
            }
            _ => {}
        }
    }
    Ok(())
}

fn mount_var(
    plan: &VarPlan,
    c: &Cmdline,
    s: &mut Real,
    report: &mut Report,
) -> Result<String, BootError> {
    let node = match plan {
        VarPlan::Tmpfs => {
            let safe = MountFlags::NOSUID | MountFlags::NODEV;
            let m = Mount::new("tmpfs", "/var", "tmpfs", safe, "mode=0755");
            s.mount(&m).map_err(|e| BootError::mount(&m, e))?;
            report.var = Some("tmpfs".into());
            return Ok("tmpfs".into());
        }
        VarPlan::Ext4(dev) => devices::wait_all(&[("state", dev)], DEVICE_WAIT_MS)?
            .into_iter()
            .next()
            .ok_or_else(|| BootError::Root {
                what: "state device vanished".into(),
            })?,
        VarPlan::Auto => {
            let root = root_partition(&c.verity.data)?;
            let part = state_partition::ensure(&root, DEVICE_WAIT_MS)?;
            return mount_state(&part.node.clone(), Some(&part), s, report);
        }
    };
    mount_state(&node, None, s, report)
}

/// The root data device's node (stage 1 waited for it, so it is there).
fn root_partition(data: &DeviceRef) -> Result<PathBuf, BootError> {
    devices::resolve(data)?.ok_or_else(|| BootError::Root {
        what: format!("root data device {data} vanished"),
    })
}

/// ext4 on `node` at /var: formatted when it has no ext4 superblock or is
/// a partition this boot created, grown online when the partition is larger
/// than the file system by 1 MiB or more (growth never fails the boot: it is
/// reported as a warning and tried again next boot).
fn mount_state(
    node: &Path,
    part: Option<&StatePartition>,
    s: &mut Real,
    report: &mut Report,
) -> Result<String, BootError> {
    let state_err = |what: String| BootError::State {
        device: node.into(),
        what,
    };
    let (sb, size_bytes) =
        read_superblock(node).map_err(|e| state_err(format!("read superblock: {e}")))?;
    let created = part.is_some_and(|p| p.created);
    let magic = sb.get(EXT4_MAGIC_IN_SB..EXT4_MAGIC_IN_SB + 2);
    let formatted = created || !has_ext4_magic(magic.unwrap_or_default());
    if formatted {
        mkfs_ext4(node)?;
    }
    let safe = MountFlags::NOSUID | MountFlags::NODEV;
    let m = Mount::new(&node.display().to_string(), "/var", "ext4", safe, "");
    s.mount(&m).map_err(|e| BootError::mount(&m, e))?;
    let mut resized = false;
    let fs_bytes = if formatted { None } else { ext4_bytes(&sb) };
    if let (Some(fs), Some(_)) = (fs_bytes, part) {
        if fs.saturating_add(ALIGN_BYTES) <= size_bytes {
            match e2fs_tool(&RESIZE2FS, &[], node) {
                Ok(()) => resized = true,
                Err(e) => report.warnings.push(format!(
                    "var: growing the file system from {fs} to {size_bytes} bytes failed: {}",
                    chain(&e)
                )),
            }
        }
    }
    let boot_count = bump_boot_count(Path::new(BOOT_COUNT))
        .map_err(|e| state_err(format!("update {BOOT_COUNT}: {e}")))?;
    report.var = Some("ext4".into());
    report.state = Some(StateReport {
        device: node.display().to_string(),
        partition: part.map(|p| p.node.display().to_string()),
        disk: part.map(|p| p.disk.display().to_string()),
        created,
        grown_from_bytes: part.and_then(|p| p.grown_from_bytes),
        size_bytes,
        formatted,
        resized,
        boot_count,
    });
    let mut note = format!("ext4 on {}, boot {boot_count}", node.display());
    if created {
        note.push_str(&format!(", partition created ({size_bytes} bytes)"));
    }
    if let Some(from) = part.and_then(|p| p.grown_from_bytes) {
        note.push_str(&format!(
            ", partition grown from {from} to {size_bytes} bytes"
        ));
    }
    if formatted {
        note.push_str(", formatted now");
    }
    if resized {
        note.push_str(", file system grown");
    }
    Ok(note)
}

/// The last checks before the boot counts as good: the root's verity
/// status is still `V` (no block failed since check-root), and the testing
/// switch `nodeimg.health=fail` is off.
fn health(forced: bool) -> Result<String, BootError> {
    let verdict = verity::verity_state(DM_NAME);
    if verdict != VerityState::Verified {
        return Err(BootError::Health {
            what: format!("verity status of {DM_NAME} is {}", verdict.as_str()),
        });
    }
    if forced {
        return Err(BootError::Health {
            what: "forced by nodeimg.health=fail".into(),
        });
    }
    Ok(format!("{DM_NAME} {}", verdict.as_str()))
}

/// Runs one stage-2 phase, recording what it found in `report`.
pub fn run(
    phase: &Phase,
    c: &Cmdline,
    s: &mut Real,
    report: &mut Report,
) -> Result<String, BootError> {
    match phase {
        Phase::CheckRoot => {
            let mounts =
                std::fs::read_to_string("/proc/mounts").map_err(|source| BootError::Read {
                    path: "/proc/mounts".into(),
                    source,
                })?;
            let entry = root_entry(&mounts);
            // `none` unless `/` is the nodeimg-root device itself.
            let verdict = verity::root_is_verified_device(DM_NAME);
            report.root = RootReport {
                device: entry.as_ref().map(|e| e.device.clone()),
                fstype: entry.as_ref().map(|e| e.fstype.clone()),
                read_only: entry.as_ref().map(|e| e.options.iter().any(|o| o == "ro")),
                verity: verdict,
            };
            check_root(entry.as_ref(), verdict).map(|()| verdict.as_str().to_string())
        }
        Phase::MountExtraApi => mount_extra_api(s).map(|()| String::new()),
        Phase::LoadModules { list, optional } => {
            Ok(modules::load_list(s, Path::new(list), *optional)?.to_string())
        }
        Phase::Var(plan) => mount_var(plan, c, s, report),
        Phase::Sysctl => {
            let list = sysctl::load_dir(s, Path::new(sysctl::SYSCTL_DIR))?;
            report.sysctl = sysctl::apply(s, &list)?;
            Ok(format!("{} applied", report.sysctl.len()))
        }
        Phase::Hostname => {
            let text = s
                .read(Path::new("/etc/hostname"))
                .ok()
                .map(|b| String::from_utf8_lossy(&b).into_owned());
            let name = hostname_from(text.as_deref()).map_err(|name| BootError::Hostname {
                name,
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "not a valid host name",
                ),
            })?;
            rustix::system::sethostname(name.as_bytes()).map_err(|e| BootError::Hostname {
                name: name.clone(),
                source: e.into(),
            })?;
            report.hostname = Some(name.clone());
            Ok(name)
        }
        Phase::Loopback => {
            net::loopback_up().map_err(|(step, source)| BootError::Loopback { step, source })?;
            report.loopback = Some(true);
            Ok("127.0.0.1 up".into())
        }
        Phase::Health { forced } => health(*forced),
        Phase::BlessBoot => {
            // Only a UEFI boot has an entry to bless: only it loads the
            // modules for efivarfs and the ESP.
            if s.is_dir(Path::new(bless::EFI_DIR)) {
                let list = Path::new(crate::plan::UEFI_MODULES_ORDER);
                if let Err(e) = modules::load_list(s, list, true) {
                    report.warnings.push(format!("bless-boot: {e}"));
                }
            }
            let entry = bless::bless(s, |uuid| {
                devices::resolve(&DeviceRef::PartUuid(uuid.to_string()))
            });
            // a counted entry left unblessed will run out of tries
            if entry.path.is_some() && !entry.blessed {
                report.warnings.push(format!("bless-boot: {}", entry.note));
            }
            let note = entry.note.clone();
            report.boot_entry = Some(entry);
            Ok(note)
        }
        other => Err(BootError::Root {
            what: format!("phase {} does not run on the root", other.name()),
        }),
    }
}

/// Facts for the report that no phase owns.
pub fn fill_facts(report: &mut Report) {
    report.pid1 = std::fs::read_link("/proc/1/exe")
        .ok()
        .map(|p: PathBuf| p.display().to_string());
    report.modules = std::fs::read_to_string("/proc/modules")
        .map(|t| modules::parse_proc_modules(&t))
        .unwrap_or_default();
    report.update_key = std::fs::read(crate::plan::UPDATE_KEY_PATH)
        .ok()
        .map(|pem| key_fingerprint(&pem));
}

/// `sha256:<hex>` of a key file's bytes, as the report names the update
/// trust root (the same digest `sha256sum` prints for the file).
pub fn key_fingerprint(pem: &[u8]) -> String {
    crate::digest::sha256_named(pem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{Call, Fake};

    const MOUNTS: &str = "rootfs / rootfs rw 0 0\n\
        proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0\n\
        /dev/mapper/nodeimg-root / squashfs ro,nodev,relatime,errors=continue 0 0\n\
        overlay /etc overlay rw,nosuid,nodev,lowerdir=/sysroot/etc 0 0\n";

    #[test]
    fn key_fingerprint_is_sha256_of_the_file() {
        assert_eq!(
            key_fingerprint(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn finds_the_last_root_mount() {
        let e = root_entry(MOUNTS).unwrap();
        assert_eq!(e.device, "/dev/mapper/nodeimg-root");
        assert_eq!(e.fstype, "squashfs");
        assert!(check_root(Some(&e), VerityState::Verified).is_ok());
    }

    #[test]
    fn refuses_an_unverified_root() {
        let e = root_entry("/dev/vda / squashfs ro 0 0\n").unwrap();
        assert!(check_root(Some(&e), VerityState::Verified)
            .unwrap_err()
            .to_string()
            .contains("not the verity device"));
        let e = root_entry(MOUNTS).unwrap();
        assert!(check_root(Some(&e), VerityState::Corrupted)
            .unwrap_err()
            .to_string()
            .contains("corrupted"));
        assert!(check_root(Some(&e), VerityState::None).is_err());
        let rw = root_entry("/dev/dm-0 / squashfs rw 0 0\n").unwrap();
        assert!(check_root(Some(&rw), VerityState::Verified)
            .unwrap_err()
            .to_string()
            .contains("read-write"));
        assert!(check_root(None, VerityState::Verified).is_err());
    }

    #[test]
    fn extra_api_mounts() {
        let mut f = Fake::new();
        mount_extra_api(&mut f).unwrap();
        let targets: Vec<_> = f
            .calls
            .iter()
            .filter_map(|c| {
                if let Call::Mount(m) = c {
                    Some(m.target.display().to_string())
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(targets, ["/dev/pts", "/dev/shm", "/sys/fs/cgroup"]);
    }

    #[test]
    fn ext4_size_from_the_superblock() {
        let mut sb = vec![0u8; 1024];
        sb[0x38..0x3a].copy_from_slice(&[0x53, 0xef]);
        sb[0x04..0x08].copy_from_slice(&38400u32.to_le_bytes());
        sb[0x18..0x1c].copy_from_slice(&2u32.to_le_bytes()); // 4 KiB blocks
        assert_eq!(ext4_bytes(&sb), Some(38400 * 4096));
        // the high half counts only with the 64bit feature
        sb[0x150..0x154].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(ext4_bytes(&sb), Some(38400 * 4096));
        sb[0x60..0x64].copy_from_slice(&0x80u32.to_le_bytes());
        assert_eq!(ext4_bytes(&sb), Some(((1u64 << 32) + 38400) * 4096));
        sb[0x18..0x1c].copy_from_slice(&40u32.to_le_bytes());
        assert_eq!(ext4_bytes(&sb), None);
        assert_eq!(ext4_bytes(&[0u8; 1024]), None);
        assert_eq!(ext4_bytes(&sb[..100]), None);
    }

    #[test]
    fn ext4_size_agrees_with_mke2fs() {
        let path = std::env::temp_dir().join(format!("nodeagent-ext4-{}", std::process::id()));
        std::fs::File::create(&path)
            .unwrap()
            .set_len(48 << 20)
            .unwrap();
        let out = std::process::Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let (sb, size) = read_superblock(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(ext4_bytes(&sb), Some(size));
    }

    #[test]
    fn ext4_magic() {
        assert!(has_ext4_magic(&[0x53, 0xef]));
        assert!(!has_ext4_magic(&[0, 0]));
        assert!(!has_ext4_magic(&[0xef, 0x53]));
    }

    #[test]
    fn hostnames() {
        assert_eq!(hostname_from(None).unwrap(), "nodeimg");
        assert_eq!(
            hostname_from(Some("# c\n\n worker-1 \n")).unwrap(),
            "worker-1"
        );
        assert_eq!(
            hostname_from(Some("cp-0.lab.example\n")).unwrap(),
            "cp-0.lab.example"
        );
        assert!(hostname_from(Some("bad_name\n")).is_err());
        assert!(hostname_from(Some("-x\n")).is_err());
        assert!(hostname_from(Some(&"a".repeat(65))).is_err());
    }
}
