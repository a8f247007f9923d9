//! A multi-node lab that outlives the command starting it
//! (`nodeimg lab up/status/kill/start/down`).
//!
//! Takes a lab definition ([`super::definition`]) and a cluster directory;
//! `lab up` renders each node's machine config into a run directory
//! ([`prepare`]), then starts a supervisor ([`supervisor::serve`], the
//! hidden `nodeimg lab serve RUNDIR`) in its own session and waits for
//! every node's boot report through it. The supervisor holds everything a
//! running lab is: the lab network's namespace (bridge, one tap per node,
//! NTP server), the loopback forwards to each node's API (50000) and etcd
//! client port (2379), and the QEMUs. It keeps every node's serial log in
//! the run directory, scans each console ([`super::console_scan`]), writes
//! its state to `state.json` (atomically) whenever it changes, and answers
//! one JSON request a connection on the unix socket `lab.sock`
//! ([`control`]). `lab down` has it power every node off and exit, which
//! ends the namespace.
//!
//! Run directory layout: `plan.json` (the resolved lab), `state.json`,
//! `lab.sock`, `supervisor.log`, `images/N/vmlinux` (each image's kernel
//! unpacked once), and per node `nodes/NAME/`: `config.toml` (0600),
//! `state.img`, `serial.log` (earlier boots' logs kept as `serial.N.log`),
//! `qemu.log`, `qmp.sock`.

pub mod control;
pub mod prepare;
pub mod supervisor;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use contract::config::Role;
use serde::{Deserialize, Serialize};

use super::console_scan::ConsoleHit;
use super::definition::LabPlan;
use super::LabReport;

/// The resolved lab, as `lab up` hands it to the supervisor.
pub const PLAN_FILE: &str = "plan.json";
/// The supervisor's state, rewritten whole on every change.
pub const STATE_FILE: &str = "state.json";
/// The supervisor's control socket.
pub const SOCKET: &str = "lab.sock";
/// The supervisor's own log (its stdout and stderr).
pub const SUPERVISOR_LOG: &str = "supervisor.log";
/// The node's etcd client port, forwarded like the node API.
pub const ETCD_CLIENT_PORT: u16 = 2379;
/// A unix socket path must fit `sun_path` (108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("the machine config of {node}")]
    Cluster {
        node: String,
        #[source]
        source: Box<crate::cluster::ClusterError>,
    },
    #[error("the machine config of {node} after the lab's additions")]
    Config {
        node: String,
        #[source]
        source: Box<contract::config::ConfigError>,
    },
    #[error("a lab already runs in {run_dir} (supervisor pid {pid}): `nodeimg lab down --run-dir {run_dir}` first")]
    Running { run_dir: PathBuf, pid: u32 },
    #[error("{path} is {len} bytes long; a unix socket path takes at most {MAX_SOCKET_PATH}: use a shorter --run-dir")]
    SocketPath { path: PathBuf, len: usize },
    #[error(transparent)]
    Lab(Box<super::LabError>),
}

impl From<super::LabError> for UpError {
    fn from(e: super::LabError) -> UpError {
        UpError::Lab(Box::new(e))
    }
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> UpError {
    let path = path.to_path_buf();
    move |source| UpError::Io { path, source }
}

/// What `plan.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunPlan {
    pub lab: LabPlan,
    pub qemu: PathBuf,
    /// Servers of this machine the lab host offers the nodes
    /// (`lab up --host-forward`).
    #[serde(default)]
    pub host_forwards: Vec<crate::lab::network::HostForward>,
}

/// One node as `lab status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    pub role: Role,
    pub address: Ipv4Addr,
    /// QEMU runs.
    pub running: bool,
    pub pid: Option<u32>,
    /// Times the lab started this node (`lab up` is the first).
    pub starts: u32,
    /// The latest report of the current (or last) boot; `None` until the
    /// node reported.
    pub report: Option<LabReport>,
    /// `127.0.0.1:api_port` reaches the node API (TCP 50000).
    pub api_port: u16,
    /// `127.0.0.1:etcd_port` reaches the node's etcd client port (2379).
    pub etcd_port: u16,
    /// `127.0.0.1:kube_port` reaches the node's kube-apiserver (6443).
    #[serde(default)]
    pub kube_port: u16,
    pub serial_log: PathBuf,
    /// How QEMU ended last, once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<String>,
    /// Why the lab could not start the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A console line that shows a broken kernel or agent, and whose it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeHit {
    pub node: String,
    #[serde(flatten)]
    pub hit: ConsoleHit,
}

/// The whole lab as `lab status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabStatus {
    pub name: String,
    pub run_dir: PathBuf,
    pub supervisor_pid: u32,
    /// `net:[INODE]` of the lab's network namespace.
    pub netns: String,
    pub accel: String,
    /// The supervisor is powering the lab off (`lab down`) or has.
    pub down: bool,
    pub nodes: Vec<NodeStatus>,
    /// Every console hit since `lab up`, oldest first.
    pub console_hits: Vec<NodeHit>,
}

impl LabStatus {
    pub fn node(&self, name: &str) -> Option<&NodeStatus> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

/// The default run directory of lab `name`: `$XDG_CACHE_HOME/nodeimg/lab/NAME`
/// (else `~/.cache/nodeimg/lab/NAME`, else the temporary directory's).
pub fn default_run_dir(name: &str) -> PathBuf {
    labs_dir().join(name)
}

/// Where run directories go by default.
pub fn labs_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("nodeimg/lab")
}

/// A node's own directory in the run directory.
pub fn node_dir(run_dir: &Path, node: &str) -> PathBuf {
    run_dir.join("nodes").join(node)
}

/// Whether process `pid` is alive and is a supervisor of `run_dir` (its
/// command line names it), so a reused pid is never taken for one.
pub fn supervisor_alive(pid: u32, run_dir: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let words: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let dir = run_dir.as_os_str().as_encoded_bytes();
    words
        .windows(3)
        .any(|w| w[0] == b"lab" && w[1] == b"serve" && w[2] == dir)
}

/// Reads `state.json` (what the supervisor last wrote).
pub fn read_state(run_dir: &Path) -> Result<LabStatus, UpError> {
    let path = run_dir.join(STATE_FILE);
    let data = std::fs::read(&path).map_err(io(&path))?;
    serde_json::from_slice(&data).map_err(|e| UpError::Invalid {
        path,
        message: e.to_string(),
    })
}

/// Writes `data` to `path` whole: a temporary file beside it, then rename.
pub(crate) fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), UpError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(data).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Refuses a unix socket path the kernel cannot take.
pub(crate) fn check_socket_path(path: &Path) -> Result<(), UpError> {
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(UpError::SocketPath {
            path: path.to_path_buf(),
            len,
        });
    }
    Ok(())
}
