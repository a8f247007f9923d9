//! Finding block devices: a `/dev/...` path is taken as is; `PARTUUID=<guid>` is
//! found by reading each whole disk's GPT (the kernel keeps PARTUUID out of
//! sysfs, and there is no udev or /dev/disk) and matching the partition number
//! with `/sys/class/block/<disk>/<part>/partition`; `file:<path>` is the loop
//! device whose sysfs `backing_file` is that path (stage 1 attaches it, see
//! `loopdev.rs`). Waiting is a bounded poll, since module probes and partition
//! scans finish asynchronously.

use std::path::{Path, PathBuf};

use crate::gpt;
use crate::loopdev::{self, LoopError};
use crate::sys::{sleep_ms, uptime_ms};
use contract::cmdline::DeviceRef;

const SYS_BLOCK: &str = "/sys/class/block";

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("no {role} device {dev} after {waited_ms} ms (block devices seen: {seen})")]
    Timeout {
        role: &'static str,
        dev: String,
        waited_ms: u64,
        seen: String,
    },
    /// Cloned disks share GUIDs: picking one could mount or format the
    /// wrong disk, so more than one match is an error.
    #[error("{dev} matches several partitions: {}", matches.join(" "))]
    Ambiguous { dev: String, matches: Vec<String> },
    #[error("attaching a loop device")]
    Loop(#[from] LoopError),
}

fn block_names() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(SYS_BLOCK)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Whole disks worth probing for a GPT (not partitions, loops, RAM or optical).
fn probe_disks() -> Vec<String> {
    const SKIP: [&str; 6] = ["loop", "ram", "zram", "dm-", "sr", "fd"];
    block_names()
        .into_iter()
        .filter(|n| !SKIP.iter().any(|p| n.starts_with(p)))
        .filter(|n| !Path::new(SYS_BLOCK).join(n).join("partition").exists())
        .collect()
}

fn read_at(dev: &Path, offset: u64, len: usize) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(dev).ok()?;
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, offset).ok()?;
    Some(buf)
}

fn sys_text(path: PathBuf) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|t| t.trim().to_string())
}

/// (partition name, PARTUUID) of every GPT partition the kernel has a node for.
fn gpt_partitions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for disk in probe_disks() {
        let sys = Path::new(SYS_BLOCK).join(&disk);
        let lbs: u64 = sys_text(sys.join("queue/logical_block_size"))
            .and_then(|t| t.parse().ok())
            .unwrap_or(512);
        let node = Path::new("/dev").join(&disk);
        let Some(h) = read_at(&node, lbs, 512).and_then(|b| gpt::parse_location(&b)) else {
            continue;
        };
        let len = h.entry_count as usize * h.entry_size as usize;
        let Some(entries) = read_at(&node, h.entries_lba.saturating_mul(lbs), len) else {
            continue;
        };
        let parts = gpt::partitions(&h, &entries);
        // the disk's sysfs directory holds one directory per partition node
        let subs = std::fs::read_dir(&sys).map(|rd| rd.flatten().collect::<Vec<_>>());
        for sub in subs.unwrap_or_default() {
            let Some(n) =
                sys_text(sub.path().join("partition")).and_then(|t| t.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some((_, guid)) = parts.iter().find(|(p, _)| *p == n) {
                out.push((sub.file_name().to_string_lossy().into_owned(), guid.clone()));
            }
        }
    }
    out.sort();
    out
}

/// The device node for `dev` if it exists now.
pub fn resolve(dev: &DeviceRef) -> Result<Option<PathBuf>, DeviceError> {
    match dev {
        DeviceRef::Path(p) => Ok(p.exists().then(|| p.clone())),
        DeviceRef::File(file) => Ok(loopdev::find_attached(file).filter(|node| node.exists())),
        DeviceRef::PartUuid(want) => {
            let matches: Vec<String> = gpt_partitions()
                .into_iter()
                .filter(|(_, guid)| guid == want)
                .map(|(name, _)| name)
                .collect();
            if matches.len() > 1 {
                return Err(DeviceError::Ambiguous {
                    dev: dev.to_string(),
                    matches,
                });
            }
            Ok(matches
                .into_iter()
                .map(|name| Path::new("/dev").join(name))
                .find(|node| node.exists()))
        }
    }
}

/// Block devices, with the PARTUUID of GPT partitions, for error messages.
fn seen() -> String {
    let parts = gpt_partitions();
    block_names()
        .into_iter()
        .map(|n| match parts.iter().find(|(p, _)| *p == n) {
            Some((_, g)) => format!("{n}={g}"),
            None => n,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Polls every 10 ms until every device exists or `timeout_ms` passes.
pub fn wait_all(
    devs: &[(&'static str, &DeviceRef)],
    timeout_ms: u64,
) -> Result<Vec<PathBuf>, DeviceError> {
    let start = uptime_ms();
    loop {
        let found: Vec<Option<PathBuf>> = devs
            .iter()
            .map(|(_, d)| resolve(d))
            .collect::<Result<_, _>>()?;
        if found.iter().all(Option::is_some) {
            return Ok(found.into_iter().flatten().collect());
        }
        let waited_ms = uptime_ms().saturating_sub(start);
        if waited_ms >= timeout_ms {
            let missing = devs
                .iter()
                .zip(&found)
                .find(|(_, f)| f.is_none())
                .map(|(d, _)| d);
            let (role, dev) = missing
                .map(|(r, d)| (*r, d.to_string()))
                .unwrap_or(("", String::new()));
            let seen = seen();
            return Err(DeviceError::Timeout {
                role,
                dev,
                waited_ms,
                seen,
            });
        }
        sleep_ms(10);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_names_the_missing_device() {
        let r = DeviceRef::Path("/dev/nodeimg-test-none".into());
        let e = wait_all(&[("root", &r)], 0).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("no root device /dev/nodeimg-test-none"),
            "{e}"
        );
    }
}
