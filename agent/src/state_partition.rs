//! `nodeimg.state=auto`: the state partition on the root's own disk.
//!
//! Takes the root data partition's device node and produces the node of the
//! disk's state partition (DPS "variable data" type, label `state`), creating
//! it on first boot in the space after the last partition, or growing it when
//! it is the last partition and the disk grew. A disk image copied to a larger
//! disk keeps its backup GPT where the image ended, so every change also moves
//! the backup table to the disk's real end ([`gpt::Table::edit`]).
//!
//! [`plan`] is pure over the table read from the disk; [`ensure`] does the
//! I/O: sysfs to find the disk, the table writes (synced step by step), and a
//! `BLKPG` ioctl so the kernel sees the new or grown partition while the
//! root partition stays in use (`BLKRRPART` would fail with EBUSY). It never
//! writes to any disk but the one holding the root partition, and it refuses
//! (the boot fails) when that disk's GPT is invalid, has no room for a state
//! partition of [`MIN_BYTES`], or does not list the root partition where
//! the kernel has it.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use crate::gpt::{self, Edit, Entry, GptError, Table};
use crate::sys::{sleep_ms, uptime_ms};

/// DPS "variable data" (`/var`) partition type, 4D21B016-B534-45C2-A9FB-5C16E091FD2D, on-disk bytes.
pub const STATE_TYPE: [u8; 16] = [
    0x16, 0xb0, 0x21, 0x4d, 0x34, 0xb5, 0xc2, 0x45, 0xa9, 0xfb, 0x5c, 0x16, 0xe0, 0x91, 0xfd, 0x2d,
];
/// The partition name (GPT label) of a partition this module creates.
pub const STATE_NAME: &str = "state";
/// Start and end of a created or grown partition sit on 1 MiB boundaries.
pub const ALIGN_BYTES: u64 = 1 << 20;
/// A state partition smaller than this is refused.
pub const MIN_BYTES: u64 = 64 << 20;
/// Bytes zeroed at the start of a new partition (ext4 keeps its superblock at 1 KiB).
const WIPE_BYTES: u64 = 64 << 10;
/// Salt of the derived PARTUUID (see [`state_guid`]).
const GUID_SALT: &[u8] = b"nodeimg state partition v1\0";
const SYS_BLOCK: &str = "/sys/class/block";
/// `_IO(0x12, 105)`: add, delete or resize one partition of a disk.
const BLKPG: rustix::ioctl::Opcode = rustix::ioctl::opcode::none(0x12, 105);
const BLKPG_ADD_PARTITION: i32 = 1;
const BLKPG_RESIZE_PARTITION: i32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("root device {root} is not a disk partition; nodeimg.state=auto needs the root on a GPT disk")]
    RootNotPartition { root: PathBuf },
    #[error("read {path}")]
    Sysfs {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("open {disk}")]
    Open {
        disk: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("GPT of {disk}")]
    Gpt {
        disk: PathBuf,
        #[source]
        source: GptError,
    },
    #[error("the GPT of {disk} has no partition {number} starting at 512-byte sector {start}, where the kernel has the root partition {root}")]
    RootNotInTable {
        disk: PathBuf,
        root: PathBuf,
        number: u32,
        start: u64,
    },
    #[error("{disk} has {free_bytes} bytes free after its last partition; a state partition needs at least {MIN_BYTES}")]
    NoSpace { disk: PathBuf, free_bytes: u64 },
    #[error("{disk} has several state partitions: {numbers:?}")]
    Ambiguous { disk: PathBuf, numbers: Vec<u32> },
    #[error("the GPT of {disk} has no unused entry for a state partition")]
    NoFreeEntry { disk: PathBuf },
    #[error("the derived state PARTUUID {guid} is already used on {disk}")]
    GuidTaken { disk: PathBuf, guid: String },
    #[error("{op} partition {number} of {disk}")]
    Blkpg {
        op: &'static str,
        disk: PathBuf,
        number: u32,
        #[source]
        source: io::Error,
    },
    #[error("no device node for partition {number} of {disk} after {waited_ms} ms")]
    NoNode {
        disk: PathBuf,
        number: u32,
        waited_ms: u64,
    },
}

/// What a disk needs for its state partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The partition exists and fills what it can: nothing to write.
    Existing { number: u32, entry: Entry },
    /// The partition is the last one and the disk grew: extend it to the end.
    Grow {
        number: u32,
        entry: Entry,
        from_lbas: u64,
        edit: Edit,
    },
    /// No state partition yet: add it after the last partition.
    Create {
        number: u32,
        entry: Entry,
        edit: Edit,
    },
}

impl Plan {
    pub fn number(&self) -> u32 {
        match self {
            Plan::Existing { number, .. }
            | Plan::Grow { number, .. }
            | Plan::Create { number, .. } => *number,
        }
    }

    pub fn entry(&self) -> &Entry {
        match self {
            Plan::Existing { entry, .. }
            | Plan::Grow { entry, .. }
            | Plan::Create { entry, .. } => entry,
        }
    }
}

/// The state PARTUUID of a disk: the first 128 bits of
/// sha256(salt || disk GUID bytes), marked as a version-4 RFC 4122 GUID.
/// Deterministic, so a re-run after a crash adds the same partition.
pub fn state_guid(disk_guid: &[u8; 16]) -> [u8; 16] {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(GUID_SALT)
        .chain_update(disk_guid)
        .finalize();
    let mut g = [0u8; 16];
    for (d, s) in g.iter_mut().zip(digest.iter()) {
        *d = *s;
    }
    // on disk, byte 7 is the high byte of the third (little-endian) field
    g[7] = (g[7] & 0x0f) | 0x40;
    g[8] = (g[8] & 0x3f) | 0x80;
    g
}

fn align_up(lba: u64, align: u64) -> u64 {
    lba.div_ceil(align).saturating_mul(align)
}

fn align_down(lba: u64, align: u64) -> u64 {
    (lba / align).saturating_mul(align)
}

/// Decides from the disk's table alone (pure). `disk` names it in errors.
pub fn plan(t: &Table, disk: &Path) -> Result<Plan, StateError> {
    let gpt_err = |source| StateError::Gpt {
        disk: disk.into(),
        source,
    };
    let align = (ALIGN_BYTES / t.lbs).max(1);
    let used = t.used();
    // exclusive end: the last 1 MiB boundary before the relocated backup table
    let end = align_down(t.last_usable_at_end().saturating_add(1), align);
    let states: Vec<&(u32, Entry)> = used
        .iter()
        .filter(|(_, e)| e.type_guid == STATE_TYPE)
        .collect();
    match states.as_slice() {
        [] => {}
        [(number, e)] => {
            let last = used.iter().all(|(_, o)| o.last_lba <= e.last_lba);
            if !last || end.saturating_sub(1) < e.last_lba.saturating_add(align) {
                return Ok(Plan::Existing {
                    number: *number,
                    entry: e.clone(),
                });
            }
            let grown = Entry {
                last_lba: end.saturating_sub(1),
                ..e.clone()
            };
            let edit = t.with_entry(*number, &grown).map_err(gpt_err)?.edit(t);
            return Ok(Plan::Grow {
                number: *number,
                from_lbas: e.lbas(),
                entry: grown,
                edit,
            });
        }
        many => {
            return Err(StateError::Ambiguous {
                disk: disk.into(),
                numbers: many.iter().map(|(n, _)| *n).collect(),
            })
        }
    }
    let after = used
        .iter()
        .map(|(_, e)| e.last_lba.saturating_add(1))
        .max()
        .unwrap_or(0)
        .max(t.header.first_usable);
    let start = align_up(after, align);
    let free_bytes = end.saturating_sub(start).saturating_mul(t.lbs);
    if free_bytes < MIN_BYTES {
        return Err(StateError::NoSpace {
            disk: disk.into(),
            free_bytes,
        });
    }
    let number = t
        .free_number()
        .ok_or_else(|| StateError::NoFreeEntry { disk: disk.into() })?;
    let part_guid = state_guid(&t.header.disk_guid);
    if used.iter().any(|(_, e)| e.part_guid == part_guid) {
        return Err(StateError::GuidTaken {
            disk: disk.into(),
            guid: gpt::guid_string(&part_guid).unwrap_or_default(),
        });
    }
    let entry = Entry {
        type_guid: STATE_TYPE,
        part_guid,
        first_lba: start,
        last_lba: end.saturating_sub(1),
        attributes: 0,
        name: STATE_NAME.into(),
    };
    let mut edit = t.with_entry(number, &entry).map_err(gpt_err)?.edit(t);
    // Before the table names the partition, wipe where a file system keeps
    // its signature: a crash before mke2fs must not leave an old disk's
    // ext4 there to be mounted as ours next boot.
    edit.backup.insert(
        0,
        gpt::DiskWrite {
            what: "zeros over the start of the new state partition",
            lba: start,
            bytes: vec![0; WIPE_BYTES as usize],
        },
    );
    Ok(Plan::Create {
        number,
        entry,
        edit,
    })
}

/// The state partition as [`ensure`] left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatePartition {
    pub disk: PathBuf,
    pub node: PathBuf,
    pub number: u32,
    /// Added by this boot (so it must be formatted, whatever it holds).
    pub created: bool,
    /// Its size before this boot grew it.
    pub grown_from_bytes: Option<u64>,
    pub size_bytes: u64,
}

fn sys_read(path: PathBuf) -> Result<String, StateError> {
    std::fs::read_to_string(&path)
        .map(|t| t.trim().to_string())
        .map_err(|source| StateError::Sysfs { path, source })
}

fn sys_number(path: PathBuf) -> Result<u64, StateError> {
    let text = sys_read(path.clone())?;
    text.parse().map_err(|_| StateError::Sysfs {
        path,
        source: io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not a number: {text:?}"),
        ),
    })
}

/// The root partition's (disk name, partition number, start in 512-byte sectors).
fn root_location(root: &Path) -> Result<(String, u32, u64), StateError> {
    let not_partition = || StateError::RootNotPartition { root: root.into() };
    let real = std::fs::canonicalize(root).unwrap_or_else(|_| root.into());
    let name = real.file_name().ok_or_else(not_partition)?;
    let sys = Path::new(SYS_BLOCK).join(name);
    if !sys.join("partition").exists() {
        return Err(not_partition());
    }
    let number = u32::try_from(sys_number(sys.join("partition"))?).map_err(|_| not_partition())?;
    let start = sys_number(sys.join("start"))?;
    // /sys/class/block/vda2 -> /sys/devices/.../block/vda/vda2
    let dev_dir = std::fs::canonicalize(&sys).map_err(|source| StateError::Sysfs {
        path: sys.clone(),
        source,
    })?;
    let disk = dev_dir
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(not_partition)?;
    if Path::new(SYS_BLOCK).join(&disk).join("partition").exists() {
        return Err(not_partition());
    }
    Ok((disk, number, start))
}

/// `struct blkpg_partition` (linux/blkpg.h): byte offsets and lengths.
#[repr(C)]
struct BlkpgPartition {
    start: i64,
    length: i64,
    pno: i32,
    devname: [u8; 64],
    volname: [u8; 64],
}

/// `struct blkpg_ioctl_arg`.
#[repr(C)]
struct BlkpgIoctlArg {
    op: i32,
    flags: i32,
    datalen: i32,
    data: *mut BlkpgPartition,
}

/// Tells the kernel about one partition of `disk` without re-reading the
/// table (which fails while the root partition is in use).
fn blkpg(disk: &File, op: i32, number: u32, first_byte: u64, bytes: u64) -> io::Result<()> {
    let overflow = || io::Error::from(io::ErrorKind::InvalidInput);
    let mut part = BlkpgPartition {
        start: i64::try_from(first_byte).map_err(|_| overflow())?,
        length: i64::try_from(bytes).map_err(|_| overflow())?,
        pno: i32::try_from(number).map_err(|_| overflow())?,
        devname: [0; 64],
        volname: [0; 64],
    };
    let arg = BlkpgIoctlArg {
        op,
        flags: 0,
        datalen: i32::try_from(std::mem::size_of::<BlkpgPartition>()).map_err(|_| overflow())?,
        data: &mut part,
    };
    // SAFETY: BLKPG takes a pointer to `struct blkpg_ioctl_arg`, whose
    // layout BlkpgIoctlArg repeats (repr(C), same field types); its `data`
    // points at `part`, a live, exclusively borrowed `struct
    // blkpg_partition` of `datalen` bytes that outlives the call. The kernel
    // only reads both structs.
    let r = unsafe {
        rustix::ioctl::ioctl(
            disk.as_fd(),
            rustix::ioctl::Setter::<BLKPG, BlkpgIoctlArg>::new(arg),
        )
    };
    r.map_err(io::Error::from)
}

/// The node of partition `number` of `disk`, polled for until `timeout_ms`.
fn wait_node(disk: &str, number: u32, timeout_ms: u64) -> Result<PathBuf, StateError> {
    let dir = Path::new(SYS_BLOCK).join(disk);
    let start = uptime_ms();
    loop {
        let children = std::fs::read_dir(&dir).map(|rd| rd.flatten().collect::<Vec<_>>());
        for child in children.unwrap_or_default() {
            let n = std::fs::read_to_string(child.path().join("partition"));
            if n.ok().and_then(|t| t.trim().parse::<u32>().ok()) == Some(number) {
                let node = Path::new("/dev").join(child.file_name());
                if node.exists() {
                    return Ok(node);
                }
            }
        }
        let waited_ms = uptime_ms().saturating_sub(start);
        if waited_ms >= timeout_ms {
            return Err(StateError::NoNode {
                disk: Path::new("/dev").join(disk),
                number,
                waited_ms,
            });
        }
        sleep_ms(10);
    }
}

/// Finds, creates or grows the state partition on the disk holding `root`
/// (the root data partition's node) and returns its node.
pub fn ensure(root: &Path, timeout_ms: u64) -> Result<StatePartition, StateError> {
    let (disk_name, root_number, root_start) = root_location(root)?;
    let disk = Path::new("/dev").join(&disk_name);
    let sys = Path::new(SYS_BLOCK).join(&disk_name);
    let lbs = sys_number(sys.join("queue/logical_block_size"))?;
    let open_err = |source| StateError::Open {
        disk: disk.clone(),
        source,
    };
    // read-only until there is something to write
    let mut f = File::open(&disk).map_err(open_err)?;
    let bytes = f.seek(SeekFrom::End(0)).map_err(open_err)?;
    let gpt_err = |source| StateError::Gpt {
        disk: disk.clone(),
        source,
    };
    let table = Table::read(&mut f, lbs, bytes).map_err(gpt_err)?;
    // the table must be the one the kernel used for the root partition
    let listed = table.used().into_iter().any(|(n, e)| {
        n == root_number && e.first_lba.saturating_mul(lbs) == root_start.saturating_mul(512)
    });
    if !listed {
        return Err(StateError::RootNotInTable {
            disk,
            root: root.into(),
            number: root_number,
            start: root_start,
        });
    }
    let plan = plan(&table, &disk)?;
    let number = plan.number();
    let entry = plan.entry().clone();
    let first_byte = entry.first_lba.saturating_mul(lbs);
    let size_bytes = entry.lbas().saturating_mul(lbs);
    let blkpg_err = |op, source| StateError::Blkpg {
        op,
        disk: disk.clone(),
        number,
        source,
    };
    let writable = || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&disk)
            .map_err(open_err)
    };
    let (created, grown_from_bytes) = match &plan {
        Plan::Existing { .. } => (false, None),
        Plan::Create { edit, .. } => {
            let mut f = writable()?;
            gpt::apply(&mut f, lbs, edit, |d| d.sync_all()).map_err(gpt_err)?;
            blkpg(&f, BLKPG_ADD_PARTITION, number, first_byte, size_bytes)
                .map_err(|e| blkpg_err("add", e))?;
            (true, None)
        }
        Plan::Grow {
            edit, from_lbas, ..
        } => {
            let mut f = writable()?;
            gpt::apply(&mut f, lbs, edit, |d| d.sync_all()).map_err(gpt_err)?;
            blkpg(&f, BLKPG_RESIZE_PARTITION, number, first_byte, size_bytes)
                .map_err(|e| blkpg_err("resize", e))?;
            (false, Some(from_lbas.saturating_mul(lbs)))
        }
    };
    let node = wait_node(&disk_name, number, timeout_ms)?;
    Ok(StatePartition {
        disk,
        node,
        number,
        created,
        grown_from_bytes,
        size_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Cursor, Write};
    use std::process::Command;

    const MIB: u64 = 1 << 20;
    const DISK_GUID: &str = "9a3e2a52-6a51-4b1f-8d58-7c1f1b8a0c11";

    /// A scratch directory for one test, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let p = std::env::temp_dir().join(format!(
                "nodeagent-{name}-{}-{}",
                std::process::id(),
                uptime_ms()
            ));
            std::fs::create_dir_all(&p).unwrap();
            Scratch(p)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn run(cmd: &str, args: &[&str]) -> String {
        let out = Command::new(cmd)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {cmd} (is it installed?): {e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{cmd} {args:?} failed: {text}");
        text
    }

    /// The built image's layout, made by sgdisk: ESP, root-a, verity-a,
    /// root-b, verity-b on 1 MiB boundaries, and the disk ending 1 MiB after
    /// slot B with the backup GPT.
    fn image(path: &Path) -> Vec<u8> {
        File::create(path).unwrap().set_len(50 * MIB).unwrap();
        let p = path.to_str().unwrap();
        run(
            "sgdisk",
            &[
                "-o",
                &format!("-U={DISK_GUID}"),
                "-n=1:2048:+8M",
                "-t=1:C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
                "-c=1:esp",
                "-n=2:0:+16M",
                "-t=2:4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
                "-c=2:root-a-0.1.0",
                "-n=3:0:+4M",
                "-t=3:2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5",
                "-c=3:verity-a-0.1.0",
                "-n=4:0:+16M",
                "-t=4:4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
                "-c=4:root-b",
                "-n=5:0:+4M",
                "-t=5:2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5",
                "-c=5:verity-b",
                p,
            ],
        );
        std::fs::read(path).unwrap()
    }

    fn table(disk: &[u8]) -> Table {
        Table::read(&mut Cursor::new(disk), 512, disk.len() as u64).unwrap()
    }

    fn apply_in_memory(disk: &mut Vec<u8>, edit: &Edit) {
        let mut syncs = 0;
        let mut c = Cursor::new(std::mem::take(disk));
        gpt::apply(&mut c, 512, edit, |_| {
            syncs += 1;
            Ok(())
        })
        .unwrap();
        *disk = c.into_inner();
        assert_eq!(syncs, if edit.cleanup.is_empty() { 2 } else { 3 });
    }

    /// `sgdisk -v` finds no problem, and `sfdisk --json` lists the partitions
    /// as (start, size, type, uuid, name) in 512-byte sectors.
    fn judge(path: &Path, disk: &[u8]) -> Vec<serde_json::Value> {
        std::fs::File::create(path)
            .unwrap()
            .write_all(disk)
            .unwrap();
        let p = path.to_str().unwrap();
        let v = run("sgdisk", &["-v", p]);
        assert!(v.contains("No problems found"), "sgdisk -v: {v}");
        let json: serde_json::Value = serde_json::from_str(&run("sfdisk", &["--json", p])).unwrap();
        let t = &json["partitiontable"];
        assert_eq!(t["label"], "gpt");
        assert_eq!(t["id"].as_str().unwrap().to_lowercase(), DISK_GUID);
        t["partitions"].as_array().unwrap().clone()
    }

    #[test]
    fn state_type_is_the_dps_var_type() {
        assert_eq!(
            gpt::guid_string(&STATE_TYPE).unwrap(),
            "4d21b016-b534-45c2-a9fb-5c16e091fd2d"
        );
    }

    #[test]
    fn state_guid_is_deterministic_and_version_4() {
        let a = state_guid(&gpt::guid_bytes(DISK_GUID).unwrap());
        assert_eq!(a, state_guid(&gpt::guid_bytes(DISK_GUID).unwrap()));
        let other = state_guid(&[0u8; 16]);
        assert_ne!(a, other);
        let text = gpt::guid_string(&a).unwrap();
        assert_eq!(text.as_bytes()[14], b'4', "{text}");
        assert!(
            matches!(text.as_bytes()[19], b'8' | b'9' | b'a' | b'b'),
            "{text}"
        );
    }

    #[test]
    fn adds_the_state_partition_and_moves_the_backup_to_the_end() {
        let dir = Scratch::new("gpt-add");
        let path = dir.0.join("disk.img");
        let mut disk = image(&path);
        let before = judge(&path, &disk);
        // the image's own disk: 1 MiB after slot B is no room for /var
        let e = plan(&table(&disk), &path).unwrap_err();
        assert!(
            matches!(e, StateError::NoSpace { free_bytes: 0, .. }),
            "{e}"
        );

        // 60 MiB after slot B (the backup table takes the last 1 MiB) is too little
        disk.resize((110 * MIB) as usize, 0);
        let e = plan(&table(&disk), &path).unwrap_err();
        assert!(
            matches!(e, StateError::NoSpace { free_bytes, .. } if free_bytes == 60 * MIB),
            "{e}"
        );
        assert!(e.to_string().contains("at least 67108864"), "{e}");

        // the VM's disk is larger (qemu-img resize): the backup is mid-disk
        disk.resize((130 * MIB) as usize, 0);
        let t = table(&disk);
        assert_eq!(t.header.alternate_lba, 50 * MIB / 512 - 1);
        let Plan::Create {
            number,
            entry,
            edit,
        } = plan(&t, &path).unwrap()
        else {
            panic!("expected a new partition")
        };
        assert_eq!(number, 6);
        assert_eq!(entry.first_lba, 49 * MIB / 512);
        assert_eq!(entry.last_lba, 129 * MIB / 512 - 1);
        assert_eq!(entry.name, "state");
        // stale bytes where the new partition starts (an old disk's file system)
        let at = (49 * MIB) as usize;
        disk[at..at + 4096].fill(0xa5);
        apply_in_memory(&mut disk, &edit);
        assert!(disk[at..at + (64 << 10)].iter().all(|b| *b == 0));
        // the old backup header is gone, not left inside the new partition
        let old = (50 * MIB - 512) as usize;
        assert!(disk[old..old + 512].iter().all(|b| *b == 0));

        let parts = judge(&path, &disk);
        assert_eq!(parts.len(), 6);
        let state = &parts[5];
        assert_eq!(state["node"], format!("{}6", path.display()));
        assert_eq!(state["start"], 49 * MIB / 512);
        assert_eq!(state["size"], 80 * MIB / 512);
        assert_eq!(state["type"], "4D21B016-B534-45C2-A9FB-5C16E091FD2D");
        assert_eq!(state["name"], "state");
        assert_eq!(
            state["uuid"].as_str().unwrap().to_lowercase(),
            gpt::guid_string(&state_guid(&t.header.disk_guid)).unwrap()
        );
        // the other partitions did not move
        assert_eq!(&parts[..5], &before[..]);

        // the next boot finds it and writes nothing
        let again = plan(&table(&disk), &path).unwrap();
        assert_eq!(
            again,
            Plan::Existing {
                number: 6,
                entry: entry.clone()
            }
        );
    }

    #[test]
    fn grows_the_last_state_partition_when_the_disk_grows() {
        let dir = Scratch::new("gpt-grow");
        let path = dir.0.join("disk.img");
        let mut disk = image(&path);
        disk.resize((130 * MIB) as usize, 0);
        let Plan::Create { edit, .. } = plan(&table(&disk), &path).unwrap() else {
            panic!("expected a new partition")
        };
        apply_in_memory(&mut disk, &edit);
        disk.resize((170 * MIB) as usize, 0);
        let Plan::Grow {
            number,
            entry,
            from_lbas,
            edit,
        } = plan(&table(&disk), &path).unwrap()
        else {
            panic!("expected growth")
        };
        assert_eq!(number, 6);
        assert_eq!(from_lbas, 80 * MIB / 512);
        assert_eq!(entry.first_lba, 49 * MIB / 512);
        assert_eq!(entry.last_lba, 169 * MIB / 512 - 1);
        apply_in_memory(&mut disk, &edit);
        let parts = judge(&path, &disk);
        assert_eq!(parts[5]["size"], 120 * MIB / 512);
        assert!(matches!(
            plan(&table(&disk), &path).unwrap(),
            Plan::Existing { number: 6, .. }
        ));
    }

    #[test]
    fn a_state_partition_that_is_not_last_is_used_as_it_is() {
        let dir = Scratch::new("gpt-notlast");
        let path = dir.0.join("disk.img");
        let mut disk = image(&path);
        disk.resize((130 * MIB) as usize, 0);
        // root-b (4) becomes a state partition: verity-b follows it
        let t = table(&disk);
        let (_, mut e) = t.used().into_iter().find(|(n, _)| *n == 4).unwrap();
        e.type_guid = STATE_TYPE;
        let edit = t.with_entry(4, &e).unwrap().edit(&t);
        apply_in_memory(&mut disk, &edit);
        let t = table(&disk);
        assert_eq!(
            plan(&t, &path).unwrap(),
            Plan::Existing {
                number: 4,
                entry: e.clone()
            }
        );
        // and two of them are ambiguous
        let (_, mut e5) = t.used().into_iter().find(|(n, _)| *n == 5).unwrap();
        e5.type_guid = STATE_TYPE;
        let t = t.with_entry(5, &e5).unwrap();
        assert!(matches!(
            plan(&t, &path),
            Err(StateError::Ambiguous { ref numbers, .. }) if numbers == &[4, 5]
        ));
    }

    #[test]
    fn refuses_a_broken_table() {
        let dir = Scratch::new("gpt-broken");
        let path = dir.0.join("disk.img");
        let disk = image(&path);
        let read = |d: &[u8]| Table::read(&mut Cursor::new(d), 512, d.len() as u64);
        // header CRC
        let mut bad = disk.clone();
        bad[512 + 40] ^= 1;
        assert!(matches!(
            read(&bad),
            Err(GptError::Parse(gpt::ParseError::HeaderCrc { .. }))
        ));
        // entry array CRC
        let mut bad = disk.clone();
        bad[1024 + 32] ^= 1;
        assert!(matches!(
            read(&bad),
            Err(GptError::Parse(gpt::ParseError::EntriesCrc { .. }))
        ));
        // no protective MBR
        let mut bad = disk.clone();
        bad[510] = 0;
        assert!(matches!(read(&bad), Err(GptError::NoProtectiveMbr)));
        // a disk smaller than its table says
        assert!(matches!(
            Table::read(&mut Cursor::new(&disk), 512, 40 * MIB),
            Err(GptError::DiskTooSmall { .. })
        ));
        // a truncated disk is an error, not a panic
        assert!(read(&disk[..1024]).is_err());
        assert!(matches!(
            Table::read(&mut Cursor::new(&disk), 1024, disk.len() as u64),
            Err(GptError::BlockSize { lbs: 1024 })
        ));
    }

    #[test]
    fn refuses_overlapping_partitions() {
        let dir = Scratch::new("gpt-overlap");
        let path = dir.0.join("disk.img");
        let mut disk = image(&path);
        let t = table(&disk);
        let (_, mut e) = t.used().into_iter().find(|(n, _)| *n == 3).unwrap();
        e.first_lba -= 8; // into root-a
        apply_in_memory(&mut disk, &t.with_entry(3, &e).unwrap().edit(&t));
        let e = Table::read(&mut Cursor::new(&disk), 512, disk.len() as u64).unwrap_err();
        assert!(matches!(e, GptError::Overlap { a: 2, b: 3 }), "{e}");
    }
}
