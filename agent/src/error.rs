//! [`BootError`]: what a boot phase (stage 1 or 2) returns when it fails. Each
//! variant names the path, device or step; causes sit in `#[source]`, and
//! [`chain`] prints them once, `: `-separated, for the NODEIMG-ERROR line.

use std::io;
use std::path::PathBuf;

use crate::devices::DeviceError;
use crate::dm::DmError;
use crate::modules::ModuleError;
use crate::state_partition::StateError;
use crate::sysctl::SysctlError;
use contract::cmdline::CmdlineError;

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error(transparent)]
    Cmdline(#[from] CmdlineError),
    #[error("/ is not an initramfs: stage 1 runs only as /init from an initramfs")]
    NotInitramfs,
    #[error("create directory {path}")]
    Mkdir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("mount {fstype} {source_dev} on {target}")]
    Mount {
        fstype: String,
        source_dev: String,
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("move mount {from} to {to}")]
    Move {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{step} {path}")]
    Step {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("root image lacks mount points: {missing}")]
    MissingMountpoints { missing: String },
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Module(#[from] ModuleError),
    #[error("device-mapper")]
    Dm(#[from] DmError),
    #[error("verity corrupted: {name} failed a hash check")]
    VerityCorrupted {
        name: &'static str,
        #[source]
        source: Box<BootError>,
    },
    #[error("read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not an ELF executable")]
    NotElf { path: PathBuf },
    #[error("exec {path}")]
    Exec {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("root check: {what}")]
    Root { what: String },
    /// The machine config could not be read or stored.
    #[error("config: {what}")]
    Config { what: String },
    /// The image's service declarations cannot be run as written.
    #[error("services: {what}")]
    Services { what: String },
    #[error(transparent)]
    Sysctl(#[from] SysctlError),
    #[error("state disk {device}: {what}")]
    State { device: PathBuf, what: String },
    #[error("state partition")]
    StatePartition(#[from] StateError),
    /// A health check failed (or `nodeimg.health=fail` said to fail).
    #[error("{what}")]
    Health { what: String },
    #[error("hostname {name:?}")]
    Hostname {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("loopback: {step}")]
    Loopback {
        step: &'static str,
        #[source]
        source: io::Error,
    },
}

impl BootError {
    pub fn mount(m: &crate::sys::Mount, source: io::Error) -> BootError {
        BootError::Mount {
            fstype: m.fstype.clone(),
            source_dev: m.source.clone(),
            target: m.target.clone(),
            source,
        }
    }
}

/// `error: cause: cause...`, each message once.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !m.is_empty() && !s.ends_with(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_prints_each_cause_once() {
        let inner = BootError::Mount {
            fstype: "squashfs".into(),
            source_dev: "/dev/mapper/nodeimg-root".into(),
            target: "/sysroot".into(),
            source: io::Error::from_raw_os_error(5),
        };
        let e = BootError::VerityCorrupted {
            name: "nodeimg-root",
            source: Box::new(inner),
        };
        let s = chain(&e);
        assert!(s.starts_with("verity corrupted: nodeimg-root failed a hash check: mount squashfs /dev/mapper/nodeimg-root on /sysroot: "), "{s}");
        assert!(s.contains("os error 5"), "{s}");
    }
}
