//! The real [`Launcher`]: starts a service confined and logged, checks its
//! readiness, kills it. Every privileged step happens in the child between
//! fork and exec, in an order that keeps the privilege each step needs:
//! join the service's cgroup, drop the bounding set (needs CAP_SETPCAP),
//! set groups, gid, uid (needs CAP_SETUID/SETGID), then no_new_privs. Only
//! async-signal-safe calls run there: PID 1 has log threads, and a forked
//! child of a threaded process may not allocate or take locks.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::caps;
use super::logfile::{self, LogFile};
use super::supervisor::Launcher;
use super::users;
use contract::services::{ReadyCheck, ServiceSpec};

/// The cgroup v2 folder holding one group per service.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup/nodeimg";
/// Controllers handed down so services and their containers can be limited.
const CONTROLLERS: &str = "+cpu +cpuset +io +memory +pids";

pub struct RealLauncher {
    /// Where `/etc/passwd` and `/etc/group` are read (the verified root's).
    pub etc: PathBuf,
    pub log_dir: PathBuf,
    pub cgroup_root: PathBuf,
}

impl Default for RealLauncher {
    fn default() -> Self {
        RealLauncher {
            etc: PathBuf::from("/etc"),
            log_dir: PathBuf::from(logfile::LOG_DIR),
            cgroup_root: PathBuf::from(CGROUP_ROOT),
        }
    }
}

/// Everything the child needs, prepared before the fork.
struct Confinement {
    cgroup_procs: Option<OwnedFd>,
    drop_caps: Vec<u32>,
    uid: u32,
    gid: u32,
    no_new_privs: bool,
}

impl RealLauncher {
    /// Turns on the controllers for the root cgroup and ours (best effort:
    /// a kernel without one still supervises).
    pub fn prepare(&self) -> Vec<String> {
        let mut notes = Vec::new();
        let _ = std::fs::create_dir_all(&self.cgroup_root);
        let parent = self.cgroup_root.parent().map(Path::to_path_buf);
        for dir in parent.iter().chain(std::iter::once(&self.cgroup_root)) {
            for c in CONTROLLERS.split(' ') {
                if let Err(e) = std::fs::write(dir.join("cgroup.subtree_control"), c) {
                    notes.push(format!("{c} in {}: {e}", dir.display()));
                }
            }
        }
        let _ = std::fs::create_dir_all(&self.log_dir);
        notes
    }

    fn confinement(&self, spec: &ServiceSpec) -> Result<Confinement, String> {
        let (uid, gid) = users::resolve(&self.etc, spec.user.as_deref(), spec.group.as_deref())?;
        let group = self.cgroup_root.join(&spec.name);
        std::fs::create_dir_all(&group).map_err(|e| format!("cgroup {}: {e}", group.display()))?;
        let procs = group.join("cgroup.procs");
        let cgroup_procs = std::fs::OpenOptions::new()
            .write(true)
            .open(&procs)
            .map(OwnedFd::from)
            .map_err(|e| format!("{}: {e}", procs.display()))?;
        let drop_caps = match &spec.capabilities {
            None => Vec::new(),
            Some(keep) => caps::to_drop(keep, last_cap()),
        };
        for d in &spec.dirs {
            make_dir(d, uid, gid)?;
        }
        Ok(Confinement {
            cgroup_procs: Some(cgroup_procs),
            drop_caps,
            uid,
            gid,
            no_new_privs: spec.no_new_privs,
        })
    }
}

fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

fn make_dir(d: &contract::services::DirSpec, uid: u32, gid: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let path = Path::new(&d.path);
    std::fs::create_dir_all(path).map_err(|e| format!("dir {}: {e}", d.path))?;
    let mode = u32::from_str_radix(&d.mode, 8).map_err(|e| format!("dir {}: {e}", d.path))?;
    let (u, g) = if d.owned { (uid, gid) } else { (0, 0) };
    std::os::unix::fs::chown(path, Some(u), Some(g))
        .map_err(|e| format!("chown {}: {e}", d.path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", d.path))
}

/// Runs in the child between fork and exec: async-signal-safe calls only.
fn confine(c: &Confinement) -> std::io::Result<()> {
    let err = std::io::Error::last_os_error;
    if let Some(fd) = &c.cgroup_procs {
        // "0" moves the writing process: the child itself.
        // SAFETY: `fd` is an open descriptor we own; the buffer is 1 valid byte.
        if unsafe { libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) } != 1 {
            return Err(err());
        }
    }
    // SAFETY: setsid has no memory arguments. A new session keeps the
    // service's signals to its process group away from PID 1.
    unsafe { libc::setsid() };
    for cap in &c.drop_caps {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(*cap), 0, 0, 0) } != 0 {
            return Err(err());
        }
    }
    let groups = [c.gid];
    // SAFETY: `groups` is a valid array of one gid_t for the call's duration.
    if unsafe { libc::setgroups(1, groups.as_ptr()) } != 0 {
        return Err(err());
    }
    // SAFETY: integer arguments only.
    if unsafe { libc::setresgid(c.gid, c.gid, c.gid) } != 0 {
        return Err(err());
    }
    // SAFETY: integer arguments only.
    if unsafe { libc::setresuid(c.uid, c.uid, c.uid) } != 0 {
        return Err(err());
    }
    if c.no_new_privs {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(err());
        }
    }
    Ok(())
}

impl Launcher for RealLauncher {
    fn start(&mut self, spec: &ServiceSpec) -> Result<i32, String> {
        let confinement = self.confinement(spec)?;
        let log_path = self.log_dir.join(format!("{}.log", spec.name));
        let log = LogFile::open(&log_path, logfile::MAX_BYTES)
            .map_err(|e| format!("{}: {e}", log_path.display()))?;
        let (reader, writer) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
        let writer2 = writer.try_clone().map_err(|e| format!("pipe: {e}"))?;
        let mut cmd = Command::new(&spec.exec);
        cmd.args(&spec.args)
            .env_clear()
            .envs(&spec.env)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::from(writer))
            .stderr(Stdio::from(writer2));
        // SAFETY: `confine` makes only async-signal-safe calls (write,
        // setsid, prctl, setgroups, setresgid, setresuid) on data prepared
        // before the fork; it allocates nothing and takes no lock.
        unsafe {
            cmd.pre_exec(move || confine(&confinement));
        }
        let child = cmd.spawn().map_err(|e| format!("{}: {e}", spec.exec))?;
        drop(cmd); // closes our copies of the pipe's write end
        let name = spec.name.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("log-{name}"))
            .spawn(move || logfile::pump(reader, log));
        if let Err(e) = spawned {
            // The service runs; its output is lost, which the console says.
            crate::console::Console::open().say(&format!("service {name}: no log thread: {e}"));
        }
        i32::try_from(child.id()).map_err(|_| "pid out of range".to_string())
    }

    fn is_ready(&mut self, spec: &ServiceSpec) -> bool {
        check_ready(&spec.ready)
    }

    fn kill(&mut self, pid: i32) {
        // SAFETY: kill(2) with integer arguments; `pid` is our child, not yet
        // reaped, so it cannot name another process.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// One readiness probe; short timeouts, since the supervisor polls.
pub fn check_ready(check: &ReadyCheck) -> bool {
    let timeout = Duration::from_millis(200);
    match check {
        ReadyCheck::Started => true,
        ReadyCheck::File { path } => Path::new(path).exists(),
        ReadyCheck::UnixSocket { path } => UnixStream::connect(path).is_ok(),
        ReadyCheck::Tcp { port } => {
            TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], *port)), timeout).is_ok()
        }
        ReadyCheck::Http { port, path } => http_ok(*port, path, timeout).unwrap_or(false),
    }
}

fn http_ok(port: u16, path: &str, timeout: Duration) -> std::io::Result<bool> {
    let mut s = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    // "HTTP/1.x 2xx"
    Ok(head.get(9) == Some(&b'2'))
}
