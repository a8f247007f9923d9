//! The lab's network namespace, held by a file descriptor and never named.
//!
//! Namespaces belong to threads, not processes: `unshare(CLONE_NEWNET)`
//! moves only the calling thread. So the lab never moves its own threads
//! back and forth; it makes the namespace on a short-lived thread, keeps
//! that thread's `/proc/thread-self/ns/net` open, and from then on:
//! - creates each socket that must live in the namespace on a thread that
//!   entered it ([`Netns::run`], [`Netns::spawn`]): a socket stays in the
//!   namespace it was made in, whichever thread uses it later;
//! - starts QEMU in it with a `setns` between fork and exec
//!   ([`Netns::enter_in_child`]), so the tap QEMU opens is the lab's.
//!
//! Nothing is mounted under `/run/netns`: the namespace lives exactly as
//! long as something holds it (this fd, a socket in it, QEMU), and the
//! kernel destroys it, bridge and taps included, on every way the lab
//! exits, `SIGKILL` and panics too.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

/// Why the namespace could not be made or entered.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("unshare(CLONE_NEWNET): the lab network needs root, or (unprivileged) a user namespace in which it is root")]
    Unshare(#[source] std::io::Error),
    #[error("the lab network needs root, or unprivileged user namespaces (kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0) and a nodeimg process with one thread: unshare(CLONE_NEWUSER) failed")]
    UserNamespace(#[source] std::io::Error),
    #[error("writing {path} for the lab's user namespace")]
    IdMap {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("opening /proc/thread-self/ns/net")]
    Open(#[source] std::io::Error),
    #[error("setns into the lab's network namespace")]
    Enter(#[source] std::io::Error),
    #[error("a thread in the lab's network namespace panicked")]
    Panicked,
    #[error("starting a thread in the lab's network namespace")]
    Thread(#[source] std::io::Error),
}

/// The lab's namespace. Clones share it; the last one to drop (with every
/// socket and process in it gone) ends it.
#[derive(Debug, Clone)]
pub struct Netns {
    fd: Arc<OwnedFd>,
}

impl PartialEq for Netns {
    fn eq(&self, other: &Netns) -> bool {
        Arc::ptr_eq(&self.fd, &other.fd)
    }
}

impl Eq for Netns {}

impl Netns {
    /// Makes a new, empty network namespace (only a down `lo` in it). As
    /// root, directly; otherwise the whole process first enters a new user
    /// namespace where it is root (see [`enter_user_namespace`]).
    pub fn create() -> Result<Netns, NetnsError> {
        // SAFETY: geteuid(2) takes no arguments and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            enter_user_namespace()?;
        }
        let made = std::thread::Builder::new()
            .name("lab-netns".into())
            .spawn(|| -> Result<OwnedFd, NetnsError> {
                // SAFETY: unshare(2) with CLONE_NEWNET touches no memory of
                // ours; it moves only this thread, which ends right after.
                if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                    return Err(NetnsError::Unshare(std::io::Error::last_os_error()));
                }
                let f = File::open("/proc/thread-self/ns/net").map_err(NetnsError::Open)?;
                Ok(OwnedFd::from(f))
            })
            .map_err(NetnsError::Thread)?
            .join()
            .map_err(|_| NetnsError::Panicked)??;
        Ok(Netns { fd: Arc::new(made) })
    }

    /// Runs `f` on a thread inside the namespace and returns its result;
    /// sockets `f` makes belong to the namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        let fd = self.fd.as_raw_fd();
        std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("lab-netns".into())
                .spawn_scoped(s, move || {
                    enter(fd)?;
                    Ok(f())
                })
                .map_err(NetnsError::Thread)?
                .join()
                .map_err(|_| NetnsError::Panicked)?
        })
    }

    /// Starts a long-lived thread inside the namespace (the lab's servers).
    /// It holds the namespace for as long as it runs.
    pub fn spawn<T: Send + 'static>(
        &self,
        name: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<std::thread::JoinHandle<Result<T, NetnsError>>, NetnsError> {
        let ns = self.clone();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                enter(ns.fd.as_raw_fd())?;
                Ok(f())
            })
            .map_err(NetnsError::Thread)
    }

    /// The descriptor a child process enters with [`Netns::enter_in_child`].
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// `setns(fd, CLONE_NEWNET)`: for a forked child before it execs
    /// (`CommandExt::pre_exec`), where only async-signal-safe calls are
    /// allowed; setns(2) is a plain system call and allocates nothing.
    pub fn enter_in_child(fd: RawFd) -> std::io::Result<()> {
        // SAFETY: setns(2) reads no memory of ours; `fd` is the lab's
        // namespace descriptor, open in the parent (it is not CLOEXEC'd
        // before exec, which is where this runs).
        if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Moves the calling thread into the namespace `fd`.
fn enter(fd: RawFd) -> Result<(), NetnsError> {
    Netns::enter_in_child(fd).map_err(NetnsError::Enter)
}

/// For a lab run without root: moves the whole process into a new user
/// namespace that maps its user and group to root, so it may make a
/// network namespace, bridge and taps (owned by that user namespace, and
/// so powerless outside it). The kernel allows this only while the process
/// has one thread: the CLI does it before it starts any. Opening
/// `/dev/net/tun` still needs its file mode to let this user in.
fn enter_user_namespace() -> Result<(), NetnsError> {
    // SAFETY: geteuid/getegid take no arguments and cannot fail.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    // SAFETY: unshare(2) touches no memory of ours; the kernel refuses
    // (EINVAL) when the process has other threads.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER) } != 0 {
        return Err(NetnsError::UserNamespace(std::io::Error::last_os_error()));
    }
    let write = |path: &'static str, text: String| {
        std::fs::write(path, text).map_err(|source| NetnsError::IdMap { path, source })
    };
    // an unprivileged process may map its gid only after giving up setgroups
    write("/proc/self/setgroups", "deny".into())?;
    write("/proc/self/uid_map", format!("0 {uid} 1"))?;
    write("/proc/self/gid_map", format!("0 {gid} 1"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inode(path: &str) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).unwrap().ino()
    }

    /// Root only (as here and in CI): elsewhere making a namespace would
    /// move this multi-threaded test process into a user namespace, which
    /// the kernel refuses.
    #[test]
    fn threads_enter_the_namespace_and_the_caller_stays_out() {
        // SAFETY: as in `Netns::create`.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let host = inode("/proc/thread-self/ns/net");
        let ns = Netns::create().unwrap();
        let inside = ns.run(|| inode("/proc/thread-self/ns/net")).unwrap();
        assert_ne!(inside, host);
        assert_eq!(inode("/proc/thread-self/ns/net"), host, "the caller moved");
        let again = ns
            .spawn("t", || inode("/proc/thread-self/ns/net"))
            .unwrap()
            .join()
            .unwrap()
            .unwrap();
        assert_eq!(again, inside, "one namespace for every entry");
    }
}
