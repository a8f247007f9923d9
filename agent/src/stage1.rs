//! Stage 1, `/init` in the initramfs: carries out the initramfs phases of the
//! plan. It takes the parsed command line and produces a process running
//! `/usr/sbin/nodeagent --stage2` on the verified root; it never mounts the raw
//! data device, and it never decides what happens on failure (main does).

use std::path::{Path, PathBuf};

use rustix::mount::MountFlags;

use crate::devices;
use crate::dm::{Control, Target};
use crate::error::BootError;
use crate::loopdev::{Attached, Loops};
use crate::modules;
use crate::plan::{Phase, DEVICE_WAIT_MS, DM_NAME, DM_NODE, STAGE2_ARG, STAGE2_BIN, SYSROOT};
use crate::sys::{self, Files, Mount, Mounts, Real};
use crate::verity;
use contract::cmdline::{Cmdline, DeviceRef};

/// API file systems, moved into the new root by `switch_root`.
const API_MOUNTS: [&str; 4] = ["/proc", "/sys", "/dev", "/run"];
/// Directories the root image must have for stage 1 and 2 to mount on.
const ROOT_MOUNTPOINTS: [&str; 7] = ["proc", "sys", "dev", "run", "etc", "tmp", "var"];
/// The /etc overlay's writable half, on the /run tmpfs.
const ETC_UPPER: &str = "/run/nodeimg/etc/upper";
const ETC_WORK: &str = "/run/nodeimg/etc/work";

fn mkdir<F: Files>(fs: &mut F, path: &str) -> Result<(), BootError> {
    fs.mkdir_all(Path::new(path))
        .map_err(|source| BootError::Mkdir {
            path: path.into(),
            source,
        })
}

fn mount<M: Mounts>(m: &mut M, mnt: Mount) -> Result<(), BootError> {
    m.mount(&mnt).map_err(|e| BootError::mount(&mnt, e))
}

/// /proc, /sys, /dev (devtmpfs: Debian's kernel does not mount it for us), /run.
pub fn mount_api<S: Mounts + Files>(s: &mut S) -> Result<(), BootError> {
    let hard = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    for dir in API_MOUNTS {
        mkdir(s, dir)?;
    }
    mount(s, Mount::new("proc", "/proc", "proc", hard, ""))?;
    mount(s, Mount::new("sysfs", "/sys", "sysfs", hard, ""))?;
    mount(
        s,
        Mount::new(
            "devtmpfs",
            "/dev",
            "devtmpfs",
            MountFlags::NOSUID | MountFlags::NOEXEC,
            "mode=0755",
        ),
    )?;
    mount(
        s,
        Mount::new(
            "tmpfs",
            "/run",
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV,
            "mode=0755",
        ),
    )
}

/// The verified root, read-only. The source is always the dm node.
pub fn mount_root<S: Mounts + Files>(s: &mut S, fstype: &str) -> Result<(), BootError> {
    mkdir(s, SYSROOT)?;
    mount(
        s,
        Mount::new(
            DM_NODE,
            SYSROOT,
            fstype,
            MountFlags::RDONLY | MountFlags::NODEV,
            "",
        ),
    )
}

/// Inside the new root: a writable /etc (overlay: the image's /etc below, a
/// tmpfs upper in /run, so edits vanish at reboot) and a tmpfs /tmp.
pub fn prepare_root<S: Mounts + Files>(s: &mut S, sysroot: &Path) -> Result<(), BootError> {
    let missing: Vec<&str> = ROOT_MOUNTPOINTS
        .into_iter()
        .filter(|d| !s.is_dir(&sysroot.join(d)))
        .collect();
    if !missing.is_empty() {
        return Err(BootError::MissingMountpoints {
            missing: missing.join(" "),
        });
    }
    mkdir(s, ETC_UPPER)?;
    mkdir(s, ETC_WORK)?;
    let etc = sysroot.join("etc");
    let data = format!(
        "lowerdir={},upperdir={ETC_UPPER},workdir={ETC_WORK}",
        etc.display()
    );
    let safe = MountFlags::NOSUID | MountFlags::NODEV;
    mount(s, Mount::new("overlay", etc, "overlay", safe, &data))?;
    mount(
        s,
        Mount::new("tmpfs", sysroot.join("tmp"), "tmpfs", safe, "mode=1777"),
    )
}

/// Switch root the way that works from an initramfs (pivot_root does not):
/// move the API mounts over, delete the initramfs files to free their memory,
/// then make the new root `/` with `mount --move . /` and `chroot .`.
pub fn switch_root<M: Mounts>(m: &mut M, new_root: &Path) -> Result<(), BootError> {
    for dir in API_MOUNTS {
        let to = new_root.join(dir.trim_start_matches('/'));
        m.move_mount(Path::new(dir), &to)
            .map_err(|source| BootError::Move {
                from: dir.into(),
                to,
                source,
            })?;
    }
    fn step(step: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BootError {
        let path = path.to_path_buf();
        move |source| BootError::Step { step, path, source }
    }
    m.free_initramfs()
        .map_err(step("free initramfs", Path::new("/")))?;
    m.chdir(new_root).map_err(step("chdir", new_root))?;
    let dot = Path::new(".");
    m.move_mount(dot, Path::new("/"))
        .map_err(|source| BootError::Move {
            from: new_root.into(),
            to: "/".into(),
            source,
        })?;
    m.chroot(dot).map_err(step("chroot", new_root))?;
    m.chdir(Path::new("/"))
        .map_err(step("chdir", Path::new("/")))
}

/// Reads the stage-2 binary through verity and checks it is ELF.
pub fn check_stage2<F: Files>(fs: &mut F, path: &Path) -> Result<usize, BootError> {
    let bytes = fs.read(path).map_err(|source| BootError::Read {
        path: path.into(),
        source,
    })?;
    if bytes.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err(BootError::NotElf { path: path.into() });
    }
    Ok(bytes.len())
}

/// The data and hash device nodes found by `WaitDevices`, and the loop
/// devices `AttachFiles` made (held until the exec of stage 2).
#[derive(Debug, Default)]
pub struct Found {
    devices: Option<(PathBuf, PathBuf)>,
    loops: Vec<Attached>,
}

/// Attaches each distinct `file:` verity device to a read-only loop device,
/// data first. The files stay in the initramfs: `free_initramfs` may unlink
/// them, since each loop device holds its open file.
pub fn attach_files<L: Loops>(l: &mut L, c: &Cmdline) -> Result<Vec<Attached>, BootError> {
    let mut files: Vec<&Path> = Vec::new();
    for dev in [&c.verity.data, &c.verity.hash] {
        if let DeviceRef::File(f) = dev {
            if !files.contains(&f.as_path()) {
                files.push(f);
            }
        }
    }
    files
        .into_iter()
        .map(|f| l.attach(f).map_err(|e| BootError::Device(e.into())))
        .collect()
}

/// Runs a phase of the prelude (before the command line can be read).
pub fn run_prelude(phase: &Phase, s: &mut Real) -> Result<String, BootError> {
    match phase {
        Phase::CheckInitramfs => match sys::root_is_initramfs() {
            Ok(true) => Ok(String::new()),
            _ => Err(BootError::NotInitramfs),
        },
        Phase::MountApi => mount_api(s).map(|()| String::new()),
        other => Err(BootError::Root {
            what: format!("phase {} needs the command line", other.name()),
        }),
    }
}

/// Runs one stage-1 phase; returns a short note for the progress line.
pub fn run(
    phase: &Phase,
    c: &Cmdline,
    found: &mut Found,
    s: &mut Real,
) -> Result<String, BootError> {
    match phase {
        Phase::CheckInitramfs | Phase::MountApi => run_prelude(phase, s),
        Phase::LoadModules { list, optional } => {
            Ok(modules::load_list(s, Path::new(list), *optional)?.to_string())
        }
        Phase::AttachFiles => {
            found.loops = attach_files(s, c)?;
            let note = found
                .loops
                .iter()
                .map(|a| format!("{} on {}", a.file.display(), a.device.display()))
                .collect::<Vec<_>>()
                .join(", ");
            Ok(note)
        }
        Phase::WaitDevices => {
            let v = &c.verity;
            let paths = devices::wait_all(
                &[("root data", &v.data), ("verity hash", &v.hash)],
                DEVICE_WAIT_MS,
            )?;
            let note = paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" ");
            if let [data, hash] = paths.as_slice() {
                found.devices = Some((data.clone(), hash.clone()));
            }
            Ok(note)
        }
        Phase::CreateVerity => {
            let (data, hash) = found.devices.as_ref().ok_or(BootError::Root {
                what: "devices not found".into(),
            })?;
            create_verity(c, data, hash)
        }
        Phase::VerifyFull => {
            let bytes = c.verity.data_blocks.saturating_mul(4096);
            verity::read_through(Path::new(DM_NODE), bytes).map_err(|source| BootError::Read {
                path: DM_NODE.into(),
                source,
            })?;
            Ok(format!("{bytes} bytes"))
        }
        Phase::MountRoot => mount_root(s, c.fstype.as_str()).map(|()| String::new()),
        Phase::PrepareRoot => prepare_root(s, Path::new(SYSROOT)).map(|()| String::new()),
        Phase::CheckStage2 => {
            let path = Path::new(SYSROOT).join(STAGE2_BIN.trim_start_matches('/'));
            check_stage2(s, &path).map(|n| format!("{n} bytes"))
        }
        Phase::SwitchRoot => switch_root(s, Path::new(SYSROOT)).map(|()| String::new()),
        Phase::ExecStage2 => Err(exec_stage2()),
        other => Err(BootError::Root {
            what: format!("phase {} does not run in the initramfs", other.name()),
        }),
    }
}

fn create_verity(c: &Cmdline, data: &Path, hash: &Path) -> Result<String, BootError> {
    let ctl = Control::open()?;
    let uuid = format!("NODEIMG-VERITY-{}", c.verity.root_hash);
    let (major, minor) = ctl.create(DM_NAME, &uuid)?;
    let params = verity::verity_table(&c.verity, data, hash);
    let target = Target {
        start: 0,
        length: verity::verity_sectors(&c.verity),
        target_type: "verity",
        params: &params,
    };
    // a table the kernel refuses (bad hash device, wrong size) leaves an empty
    // device behind: remove it so nothing can open it by mistake
    if let Err(e) = ctl
        .load(DM_NAME, &target)
        .and_then(|()| ctl.resume(DM_NAME))
    {
        let _ = ctl.remove(DM_NAME);
        return Err(e.into());
    }
    sys::mknod_block(Path::new(DM_NODE), major, minor).map_err(|source| BootError::Step {
        step: "mknod",
        path: DM_NODE.into(),
        source,
    })?;
    Ok(format!(
        "{DM_NODE} ({major}:{minor}) {}",
        verity::verity_state(DM_NAME).as_str()
    ))
}

/// Replaces this process with stage 2; returns only on failure.
fn exec_stage2() -> BootError {
    use std::os::unix::process::CommandExt;
    let source = std::process::Command::new(STAGE2_BIN)
        .arg(STAGE2_ARG)
        .exec();
    BootError::Exec {
        path: STAGE2_BIN.into(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{Call, Fake};

    fn mounts(f: &Fake) -> Vec<(String, String, String)> {
        f.calls
            .iter()
            .filter_map(|c| match c {
                Call::Mount(m) => Some((
                    m.fstype.clone(),
                    m.target.display().to_string(),
                    m.data.clone(),
                )),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn api_mounts_in_order() {
        let mut f = Fake::new();
        mount_api(&mut f).unwrap();
        let got: Vec<_> = mounts(&f)
            .into_iter()
            .map(|(t, p, _)| format!("{t} {p}"))
            .collect();
        assert_eq!(
            got,
            ["proc /proc", "sysfs /sys", "devtmpfs /dev", "tmpfs /run"]
        );
    }

    #[test]
    fn root_is_mounted_from_the_dm_node_read_only() {
        let mut f = Fake::new();
        mount_root(&mut f, "squashfs").unwrap();
        let m = f
            .calls
            .iter()
            .find_map(|c| {
                if let Call::Mount(m) = c {
                    Some(m.clone())
                } else {
                    None
                }
            })
            .unwrap();
        assert_eq!(m.source, "/dev/mapper/nodeimg-root");
        assert_eq!(m.target, Path::new("/sysroot"));
        assert!(m.flags.contains(MountFlags::RDONLY));
    }

    fn sysroot_fake() -> Fake {
        let mut f = Fake::new();
        for d in ROOT_MOUNTPOINTS {
            f = f.with_dir(&format!("/sysroot/{d}"));
        }
        f
    }

    #[test]
    fn prepare_root_overlays_etc_on_run() {
        let mut f = sysroot_fake();
        prepare_root(&mut f, Path::new("/sysroot")).unwrap();
        assert_eq!(
            mounts(&f),
            [
                (
                    "overlay".to_string(),
                    "/sysroot/etc".to_string(),
                    "lowerdir=/sysroot/etc,upperdir=/run/nodeimg/etc/upper,workdir=/run/nodeimg/etc/work".to_string()
                ),
                ("tmpfs".to_string(), "/sysroot/tmp".to_string(), "mode=1777".to_string()),
            ]
        );
    }

    #[test]
    fn prepare_root_names_missing_mountpoints() {
        let mut f = Fake::new().with_dir("/sysroot/proc");
        let e = prepare_root(&mut f, Path::new("/sysroot")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "root image lacks mount points: sys dev run etc tmp var"
        );
        assert!(f.calls.is_empty());
    }

    #[test]
    fn switch_root_exact_sequence() {
        let mut f = Fake::new();
        switch_root(&mut f, Path::new("/sysroot")).unwrap();
        let p = PathBuf::from;
        assert_eq!(
            f.calls,
            [
                Call::Move(p("/proc"), p("/sysroot/proc")),
                Call::Move(p("/sys"), p("/sysroot/sys")),
                Call::Move(p("/dev"), p("/sysroot/dev")),
                Call::Move(p("/run"), p("/sysroot/run")),
                Call::FreeInitramfs,
                Call::Chdir(p("/sysroot")),
                Call::Move(p("."), p("/")),
                Call::Chroot(p(".")),
                Call::Chdir(p("/")),
            ]
        );
    }

    #[test]
    fn switch_root_stops_at_the_first_failure() {
        let mut f = Fake::new();
        f.fail = Some(Call::Move("/dev".into(), "/sysroot/dev".into()));
        let e = switch_root(&mut f, Path::new("/sysroot")).unwrap_err();
        assert!(
            e.to_string().starts_with("move mount /dev to /sysroot/dev"),
            "{e}"
        );
        assert!(!f.calls.contains(&Call::FreeInitramfs));
    }

    fn cmdline(root: &str, hash: &str) -> Cmdline {
        Cmdline::parse(&format!(
            "nodeimg.root={root} nodeimg.hash={hash} nodeimg.roothash={} \
             nodeimg.data_blocks=10 nodeimg.hash_start=1",
            "a".repeat(64)
        ))
        .unwrap()
    }

    #[test]
    fn attach_files_attaches_each_initramfs_file_once() {
        let mut f = Fake::new();
        let c = cmdline("file:/nodeimg/root.img", "file:/nodeimg/root.verity");
        let got = attach_files(&mut f, &c).unwrap();
        let p = PathBuf::from;
        assert_eq!(
            f.calls,
            [
                Call::AttachLoop(p("/nodeimg/root.img")),
                Call::AttachLoop(p("/nodeimg/root.verity")),
            ]
        );
        assert_eq!(got[1].device, p("/dev/loop1"));

        // one file carrying both data and tree: one loop device
        let mut f = Fake::new();
        let c = cmdline("file:/nodeimg/root.img", "file:/nodeimg/root.img");
        assert_eq!(attach_files(&mut f, &c).unwrap().len(), 1);

        // disks: nothing to attach
        let mut f = Fake::new();
        assert!(attach_files(&mut f, &cmdline("/dev/vda", "/dev/vdb"))
            .unwrap()
            .is_empty());
        assert!(f.calls.is_empty());
    }

    #[test]
    fn attach_failure_names_the_file() {
        let mut f = Fake::new();
        f.fail = Some(Call::AttachLoop("/nodeimg/root.verity".into()));
        let c = cmdline("file:/nodeimg/root.img", "file:/nodeimg/root.verity");
        let e = attach_files(&mut f, &c).unwrap_err();
        let text = crate::error::chain(&e);
        assert!(
            text.contains("LOOP_CONFIGURE of /dev/loop1 with /nodeimg/root.verity"),
            "{text}"
        );
    }

    #[test]
    fn stage2_binary_must_be_elf() {
        let mut f = Fake::new().with_file("/sysroot/usr/sbin/nodeagent", "\x7fELF....");
        assert_eq!(
            check_stage2(&mut f, Path::new("/sysroot/usr/sbin/nodeagent")).unwrap(),
            8
        );
        let mut f = Fake::new().with_file("/sysroot/usr/sbin/nodeagent", "#!/bin/sh");
        assert!(matches!(
            check_stage2(&mut f, Path::new("/sysroot/usr/sbin/nodeagent")),
            Err(BootError::NotElf { .. })
        ));
        assert!(matches!(
            check_stage2(&mut Fake::new(), Path::new("/x")),
            Err(BootError::Read { .. })
        ));
    }
}
