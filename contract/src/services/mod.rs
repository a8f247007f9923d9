//! A service as a layer declares it (`[services.NAME]` in `layer.toml`) and
//! the builder writes it into the image (`/usr/lib/nodeimg/services.json`):
//! what to run, as whom, after what, how to tell it is ready, and what to
//! do when it exits.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod order;
pub use order::{start_order, OrderError};

/// One supervised daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Unique name: the cgroup, the log file and the report use it. In a
    /// layer it is the table's key (`[services.containerd]`).
    #[serde(default)]
    pub name: String,
    /// Absolute path of the program on the verified root.
    pub exec: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// The whole environment (nothing is inherited from PID 1).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// User name (from the image's `/etc/passwd`) or numeric uid; root when absent.
    #[serde(default)]
    pub user: Option<String>,
    /// Group name or numeric gid; the user's primary group when absent.
    #[serde(default)]
    pub group: Option<String>,
    /// Services that must be ready before this one starts.
    #[serde(default)]
    pub after: Vec<String>,
    #[serde(default)]
    pub ready: ReadyCheck,
    /// Milliseconds from start to ready before the start counts as failed.
    #[serde(default = "default_ready_timeout_ms")]
    pub ready_timeout_ms: u64,
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Capabilities left in the bounding set (`CAP_NET_ADMIN`, …). Absent:
    /// the full set, for daemons such as containerd that create namespaces,
    /// mounts and cgroups for their children; `[]`: none.
    #[serde(default)]
    pub capabilities: Option<Vec<String>>,
    /// `prctl(PR_SET_NO_NEW_PRIVS)` before exec: no setuid or file
    /// capability can raise what the service or its children hold.
    #[serde(default = "yes")]
    pub no_new_privs: bool,
    /// Roles whose nodes run it (`control-plane`, `worker`); empty: every node.
    #[serde(default)]
    pub roles: Vec<String>,
    /// What it waits for before it can start.
    #[serde(default)]
    pub start: StartWhen,
    /// Directories made (owner and mode set) before the first start.
    #[serde(default)]
    pub dirs: Vec<DirSpec>,
}

fn default_ready_timeout_ms() -> u64 {
    60_000
}

fn yes() -> bool {
    true
}

/// How the supervisor tells a started service is ready.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ReadyCheck {
    /// Ready once the process runs.
    #[default]
    Started,
    /// A unix socket accepts a connection.
    UnixSocket { path: String },
    /// A TCP port on 127.0.0.1 accepts a connection.
    Tcp { port: u16 },
    /// `GET http://127.0.0.1:PORT/PATH` answers 2xx.
    Http { port: u16, path: String },
    /// A file exists.
    File { path: String },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartMode {
    /// Restart whenever it exits.
    #[default]
    Always,
    /// Restart only after a non-zero exit or a signal.
    OnFailure,
    Never,
}

/// Capped exponential backoff and what counts as a crash loop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartPolicy {
    #[serde(default)]
    pub mode: RestartMode,
    /// First delay before a restart; doubled per consecutive failure.
    #[serde(default = "default_initial_ms")]
    pub initial_ms: u64,
    #[serde(default = "default_max_ms")]
    pub max_ms: u64,
    /// This many exits within `crash_loop_window_ms` is a crash loop: the
    /// node is not ready (restarts go on at `max_ms`).
    #[serde(default = "default_crash_loop_exits")]
    pub crash_loop_exits: u32,
    #[serde(default = "default_crash_loop_window_ms")]
    pub crash_loop_window_ms: u64,
}

fn default_initial_ms() -> u64 {
    250
}
fn default_max_ms() -> u64 {
    30_000
}
fn default_crash_loop_exits() -> u32 {
    5
}
fn default_crash_loop_window_ms() -> u64 {
    120_000
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            mode: RestartMode::Always,
            initial_ms: default_initial_ms(),
            max_ms: default_max_ms(),
            crash_loop_exits: default_crash_loop_exits(),
            crash_loop_window_ms: default_crash_loop_window_ms(),
        }
    }
}

/// When a service may start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StartWhen {
    /// At boot, on its own: the boot report waits for it.
    #[default]
    Boot,
    /// Once the node has a machine config.
    Config,
    /// Once the cluster asks for it (etcd before its bootstrap, Kubernetes):
    /// listed as waiting; never holds the boot report back.
    Cluster,
}

/// A directory a service owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirSpec {
    pub path: String,
    /// Octal, e.g. "0700".
    pub mode: String,
    /// Owned by the service's user and group when true, else root.
    #[serde(default)]
    pub owned: bool,
}

/// A spec that cannot be run as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("service {service:?}: field {field}: {problem}")]
    Field {
        service: String,
        field: &'static str,
        problem: String,
    },
    #[error("two services are named {0:?}")]
    Duplicate(String),
}

impl ServiceSpec {
    /// Checks what serde cannot: absolute paths, names, modes.
    pub fn validate(&self) -> Result<(), SpecError> {
        let bad = |field, problem: &str| SpecError::Field {
            service: self.name.clone(),
            field,
            problem: problem.to_string(),
        };
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            return Err(bad("name", "use 1-64 of a-z, 0-9 and -"));
        }
        if !self.exec.starts_with('/') {
            return Err(bad("exec", "must be an absolute path"));
        }
        for d in &self.dirs {
            if !d.path.starts_with('/') || d.path.split('/').any(|c| c == "..") {
                return Err(bad("dirs.path", "must be absolute, without .."));
            }
            if u32::from_str_radix(&d.mode, 8).map_or(true, |m| m > 0o7777) {
                return Err(bad("dirs.mode", "must be an octal mode such as 0700"));
            }
        }
        if let Some(caps) = &self.capabilities {
            for c in caps {
                if capability_number(c).is_none() {
                    return Err(bad("capabilities", &format!("unknown capability {c:?}")));
                }
            }
        }
        let p = &self.restart;
        if p.initial_ms == 0 || p.max_ms < p.initial_ms {
            return Err(bad("restart", "need 0 < initial_ms <= max_ms"));
        }
        Ok(())
    }
}

/// Linux capability names in kernel order (`linux/capability.h`): the
/// number of each is its index. Written out here: the list is short and
/// stable, and a crate for it would be the agent's only reason to link one.
const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The number of a capability by name (`CAP_` prefix optional, any case).
pub fn capability_number(name: &str) -> Option<u32> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    NAMES
        .iter()
        .position(|n| *n == full)
        .and_then(|i| u32::try_from(i).ok())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn capability_names_map_to_kernel_numbers() {
        assert_eq!(capability_number("CAP_CHOWN"), Some(0));
        assert_eq!(capability_number("net_bind_service"), Some(10));
        assert_eq!(capability_number("CAP_SYS_ADMIN"), Some(21));
        assert_eq!(capability_number("CAP_CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(capability_number("CAP_NOPE"), None);
    }
}
