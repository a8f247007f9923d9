//! Finding block devices: a `/dev/...` path is taken as is; `PARTUUID=<guid>` is
//! looked up in `/sys/class/block/*/uevent` (no udev, no /dev/disk). Waiting is
//! a bounded poll, since module probes and partition scans finish asynchronously.

use std::path::{Path, PathBuf};

use crate::cmdline::DeviceRef;
use crate::sys::{sleep_ms, uptime_ms};

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
}

/// `DEVNAME` and `PARTUUID` of a block device's uevent text.
pub fn parse_uevent(text: &str) -> (Option<String>, Option<String>) {
    let mut name = None;
    let mut uuid = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("DEVNAME=") {
            name = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("PARTUUID=") {
            uuid = Some(v.trim().to_ascii_lowercase());
        }
    }
    (name, uuid)
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

/// The device node for `dev` if it exists now.
pub fn resolve(dev: &DeviceRef) -> Option<PathBuf> {
    match dev {
        DeviceRef::Path(p) => p.exists().then(|| p.clone()),
        DeviceRef::PartUuid(want) => block_names().into_iter().find_map(|n| {
            let text =
                std::fs::read_to_string(Path::new(SYS_BLOCK).join(&n).join("uevent")).ok()?;
            match parse_uevent(&text) {
                (Some(name), Some(uuid)) if uuid == *want => {
                    let node = Path::new("/dev").join(name);
                    node.exists().then_some(node)
                }
                _ => None,
            }
        }),
    }
}

/// Polls every 10 ms until every device exists or `timeout_ms` passes.
pub fn wait_all(
    devs: &[(&'static str, &DeviceRef)],
    timeout_ms: u64,
) -> Result<Vec<PathBuf>, DeviceError> {
    let start = uptime_ms();
    loop {
        let found: Vec<Option<PathBuf>> = devs.iter().map(|(_, d)| resolve(d)).collect();
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
            let seen = block_names().join(" ");
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
    fn uevent_fields() {
        let t = "MAJOR=254\nMINOR=1\nDEVNAME=vda1\nDEVTYPE=partition\nDISKSEQ=1\nPARTN=1\n\
                 PARTUUID=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n";
        assert_eq!(
            parse_uevent(t),
            (
                Some("vda1".into()),
                Some("0fc63daf-8483-4772-8e79-3d69d8477de4".into())
            )
        );
        assert_eq!(
            parse_uevent("MAJOR=254\nDEVNAME=vda\n"),
            (Some("vda".into()), None)
        );
    }

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
