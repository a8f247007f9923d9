//! Stage 2, `nodeagent --stage2` as PID 1 on the verified root: carries out the
//! root phases of the plan and fills in the report as it goes. It formats the
//! state disk only when it carries no ext4 superblock, and never otherwise.

use std::path::{Path, PathBuf};

use rustix::mount::MountFlags;

use crate::cmdline::Cmdline;
use crate::devices;
use crate::error::BootError;
use crate::modules;
use crate::net;
use crate::plan::{Phase, VarPlan, DEVICE_WAIT_MS, DM_NAME, DM_NODE};
use crate::report::{Report, RootReport, StateReport};
use crate::sys::{Files, Mount, Mounts, Real};
use crate::sysctl;
use crate::verity::{self, VerityState};

const MKE2FS: [&str; 2] = ["/usr/sbin/mke2fs", "/sbin/mke2fs"];
const STATE_LABEL: &str = "nodeimg-state";
/// Boots seen by this state disk: proves /var persists (and was not reformatted).
const BOOT_COUNT: &str = "/var/lib/nodeimg/boot-count";
/// ext4 superblock magic 0xEF53, little-endian at byte 1080 of the device.
const EXT4_MAGIC_AT: u64 = 1080;

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

fn read_magic(dev: &Path) -> std::io::Result<[u8; 2]> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(dev)?;
    let mut b = [0u8; 2];
    f.read_exact_at(&mut b, EXT4_MAGIC_AT)?;
    Ok(b)
}

fn mkfs_ext4(dev: &Path) -> Result<(), BootError> {
    let state = |what: String| BootError::State {
        device: dev.into(),
        what,
    };
    let bin = MKE2FS
        .iter()
        .find(|p| Path::new(p).exists())
        .ok_or_else(|| state("no mke2fs in the root image".into()))?;
    let out = std::process::Command::new(bin)
        .args(["-q", "-F", "-t", "ext4", "-L", STATE_LABEL])
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

/// Reads, increments and durably rewrites the state disk's boot counter.
/// The state disk is not verified: a symlink planted on it must not make
/// PID 1 read or write elsewhere, so no path component may be a symlink
/// and the temp file is created exclusively without following links.
fn bump_boot_count(path: &Path) -> std::io::Result<u64> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir)?;
    refuse_symlinks(path)?;
    let n = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .unwrap_or(0)
        .saturating_add(1);
    let tmp = path.with_extension("tmp");
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o644)
        .open(&tmp)?;
    f.write_all(format!("{n}\n").as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()?;
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

fn mount_var(plan: &VarPlan, s: &mut Real, report: &mut Report) -> Result<String, BootError> {
    let safe = MountFlags::NOSUID | MountFlags::NODEV;
    let m = match plan {
        VarPlan::Tmpfs => {
            report.var = Some("tmpfs");
            Mount::new("tmpfs", "/var", "tmpfs", safe, "mode=0755")
        }
        VarPlan::Ext4(dev) => {
            let node = devices::wait_all(&[("state", dev)], DEVICE_WAIT_MS)?
                .into_iter()
                .next();
            let node = node.ok_or_else(|| BootError::Root {
                what: "state device vanished".into(),
            })?;
            let magic = read_magic(&node).map_err(|e| BootError::State {
                device: node.clone(),
                what: format!("read superblock: {e}"),
            })?;
            let formatted = !has_ext4_magic(&magic);
            if formatted {
                mkfs_ext4(&node)?;
            }
            let m = Mount::new(&node.display().to_string(), "/var", "ext4", safe, "");
            s.mount(&m).map_err(|e| BootError::mount(&m, e))?;
            let boot_count =
                bump_boot_count(Path::new(BOOT_COUNT)).map_err(|e| BootError::State {
                    device: node.clone(),
                    what: format!("update {BOOT_COUNT}: {e}"),
                })?;
            report.var = Some("ext4");
            report.state = Some(StateReport {
                device: node.display().to_string(),
                formatted,
                boot_count,
            });
            let now = if formatted { ", formatted now" } else { "" };
            return Ok(format!(
                "ext4 on {}, boot {boot_count}{now}",
                node.display()
            ));
        }
    };
    s.mount(&m).map_err(|e| BootError::mount(&m, e))?;
    Ok("tmpfs".into())
}

/// Runs one stage-2 phase, recording what it found in `report`.
pub fn run(
    phase: &Phase,
    _c: &Cmdline,
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
        Phase::Var(plan) => mount_var(plan, s, report),
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
