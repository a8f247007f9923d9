//! What PID 1 waits for once the node is up: signals through a signalfd
//! (SIGCHLD: reap; SIGTERM, SIGINT from ctrl-alt-del, SIGPWR: shut down;
//! SIGUSR1: reboot, which the node API sends) and the
//! ACPI power button through evdev (KEY_POWER on an input device named
//! "Power Button", when the `button` and `evdev` modules are loaded). It reports
//! a shutdown request; it never shuts anything down itself.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::Path;

use rustix::event::{PollFd, PollFlags};
use rustix::process::WaitOptions;

/// Signals PID 1 handles; they are blocked so the signalfd receives them.
const SIGNALS: [i32; 5] = [
    libc::SIGCHLD,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGPWR,
    libc::SIGUSR1,
];
const EV_KEY: u16 = 1;
const KEY_POWER: u16 = 116;
/// `struct input_event` on 64-bit: timeval (16), type u16, code u16, value i32.
const INPUT_EVENT_LEN: usize = 24;

/// How a process ended, as `waitpid` said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// SIGTERM, SIGINT (ctrl-alt-del), SIGPWR or the power button.
    PowerOff,
    /// SIGUSR1: the node API's `reboot`.
    Reboot,
}

pub struct Events {
    signals: OwnedFd,
    buttons: Vec<File>,
    /// Where the request came from, for the console.
    pub last_cause: String,
    /// Children reaped since the last [`Events::take_exits`], for the supervisor.
    exits: Vec<(i32, Exit)>,
}

fn sigset() -> io::Result<libc::sigset_t> {
    // SAFETY: sigset_t is a plain bit array; all-zero is a valid (empty) value,
    // and sigemptyset/sigaddset only write within the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in SIGNALS {
            if libc::sigaddset(&mut set, s) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(set)
    }
}

/// Blocks the handled signals (so none is lost between now and `Events::open`)
/// and turns ctrl-alt-del into SIGINT instead of an immediate reboot.
pub fn block_signals() -> io::Result<()> {
    let set = sigset()?;
    // SAFETY: `set` is initialised; a null old-set pointer is allowed. This
    // program has one thread when this runs (threads started later, the
    // node API's, inherit the mask, so these signals still reach only the
    // signalfd) and installs no handlers, and glibc's reserved signals
    // (32, 33) are not in the set. Children get an empty mask: std's
    // Command resets it before exec.
    if unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    rustix::system::reboot(rustix::system::RebootCommand::CadOff)?;
    Ok(())
}

/// The `/dev/input/eventN` nodes whose device is named "Power Button".
fn power_buttons() -> Vec<File> {
    let Ok(rd) = std::fs::read_dir("/sys/class/input") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("event") {
            continue;
        }
        let dev_name = std::fs::read_to_string(e.path().join("device/name")).unwrap_or_default();
        if dev_name.trim() != "Power Button" {
            continue;
        }
        use std::os::unix::fs::OpenOptionsExt;
        let node = Path::new("/dev/input").join(&name);
        if let Ok(f) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(node)
        {
            out.push(f);
        }
    }
    out
}

/// Reaps every exited child; returns how many.
pub fn reap() -> usize {
    reap_exits().len()
}

/// Children that threads other than the main loop started and wait for
/// themselves (the node API's `ctr` runs): PID 1's reaper takes every
/// child, so it leaves how a claimed one ended here for its owner.
static CLAIMED: std::sync::Mutex<BTreeMap<i32, Option<Exit>>> =
    std::sync::Mutex::new(BTreeMap::new());

fn claimed() -> std::sync::MutexGuard<'static, BTreeMap<i32, Option<Exit>>> {
    CLAIMED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Marks `pid` (a child this thread just started) as waited for by its
/// owner; [`claimed_exit`] then hands out how it ended, and [`unclaim`]
/// forgets it.
pub fn claim(pid: i32) {
    claimed().insert(pid, None);
}

/// How a claimed child ended, once PID 1's reaper took it.
pub fn claimed_exit(pid: i32) -> Option<Exit> {
    claimed().get(&pid).copied().flatten()
}

pub fn unclaim(pid: i32) {
    claimed().remove(&pid);
}

/// Reaps every exited child; returns each pid and how it ended. `wait`
/// (pid -1), not `waitpid(None)` (pid 0: our process group only): daemons
/// and services run in sessions of their own.
pub fn reap_exits() -> Vec<(i32, Exit)> {
    let mut out = Vec::new();
    while let Ok(Some((pid, status))) = rustix::process::wait(WaitOptions::NOHANG) {
        let exit = match (status.exit_status(), status.terminating_signal()) {
            (Some(code), _) => Exit::Code(code),
            (None, Some(sig)) => Exit::Signal(sig),
            (None, None) => continue, // stopped or continued, not ended
        };
        let pid = pid.as_raw_nonzero().get();
        if let Some(slot) = claimed().get_mut(&pid) {
            *slot = Some(exit);
        }
        out.push((pid, exit));
    }
    out
}

/// `true` when a buffer of input events holds a KEY_POWER press.
pub fn has_power_press(buf: &[u8]) -> bool {
    buf.chunks_exact(INPUT_EVENT_LEN).any(|ev| {
        let ty = ev
            .get(16..18)
            .and_then(|b| b.try_into().ok())
            .map(u16::from_ne_bytes);
        let code = ev
            .get(18..20)
            .and_then(|b| b.try_into().ok())
            .map(u16::from_ne_bytes);
        let value = ev
            .get(20..24)
            .and_then(|b| b.try_into().ok())
            .map(i32::from_ne_bytes);
        ty == Some(EV_KEY) && code == Some(KEY_POWER) && value == Some(1)
    })
}

impl Events {
    pub fn open() -> io::Result<Events> {
        let set = sigset()?;
        // SAFETY: -1 asks for a new signalfd; `set` is initialised.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: signalfd returned a new descriptor that nothing else owns.
        let signals = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Events {
            signals,
            buttons: power_buttons(),
            last_cause: String::new(),
            exits: Vec::new(),
        })
    }

    pub fn button_count(&self) -> usize {
        self.buttons.len()
    }

    /// Children reaped since the last call.
    pub fn take_exits(&mut self) -> Vec<(i32, Exit)> {
        std::mem::take(&mut self.exits)
    }

    /// Blocks until a shutdown is requested or `timeout_ms` passed (`None`:
    /// forever), reaping children meanwhile.
    pub fn wait(&mut self, timeout_ms: Option<u64>) -> Option<Request> {
        let deadline = timeout_ms.map(|t| crate::sys::uptime_ms().saturating_add(t));
        loop {
            let left = deadline.map(|d| d.saturating_sub(crate::sys::uptime_ms()));
            if left == Some(0) {
                return None;
            }
            let ts = left.map(|ms| rustix::event::Timespec {
                tv_sec: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
                tv_nsec: i64::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
            });
            let mut fds = vec![PollFd::new(&self.signals, PollFlags::IN)];
            fds.extend(self.buttons.iter().map(|b| PollFd::new(b, PollFlags::IN)));
            match rustix::event::poll(&mut fds, ts.as_ref()) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(_) => {
                    // Never spin PID 1 at full CPU on a persistent error.
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    continue;
                }
            }
            let ready: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().contains(PollFlags::IN))
                .collect();
            // A button device that went away reports HUP/ERR without IN on
            // every poll: drop it rather than spin on it.
            let gone: Vec<bool> = fds
                .iter()
                .skip(1)
                .map(|f| {
                    let r = f.revents();
                    !r.contains(PollFlags::IN)
                        && r.intersects(PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL)
                })
                .collect();
            drop(fds);
            if gone.iter().any(|g| *g) {
                let mut i = 0;
                self.buttons.retain(|_| {
                    let keep = !gone.get(i).copied().unwrap_or(false);
                    i += 1;
                    keep
                });
                continue;
            }
            if ready.first() == Some(&true) {
                if let Some(r) = self.read_signals() {
                    return Some(r);
                }
                if !self.exits.is_empty() && timeout_ms.is_some() {
                    return None; // the supervisor wants to hear of exits now
                }
            }
            for (i, b) in self.buttons.iter_mut().enumerate() {
                if ready.get(i + 1) != Some(&true) {
                    continue;
                }
                let mut buf = [0u8; INPUT_EVENT_LEN * 16];
                if let Ok(n) = b.read(&mut buf) {
                    if has_power_press(buf.get(..n).unwrap_or(&[])) {
                        self.last_cause = "power button".into();
                        return Some(Request::PowerOff);
                    }
                }
            }
        }
    }

    fn read_signals(&mut self) -> Option<Request> {
        // struct signalfd_siginfo is 128 bytes; ssi_signo is its first u32
        let mut buf = [0u8; 128];
        let mut request = None;
        while let Ok(128) = rustix::io::read(self.signals.as_fd(), &mut buf) {
            let signo = buf
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_ne_bytes)
                .unwrap_or(0);
            let signo = i32::try_from(signo).unwrap_or(0);
            if signo == libc::SIGCHLD {
                self.exits.extend(reap_exits());
            } else if signo == libc::SIGUSR1 {
                self.last_cause = format!("signal {signo} (reboot)");
                request = Some(Request::Reboot);
            } else if SIGNALS.contains(&signo) {
                self.last_cause = format!("signal {signo}");
                request = Some(Request::PowerOff);
            }
        }
        self.exits.extend(reap_exits());
        request
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(ty: u16, code: u16, value: i32) -> Vec<u8> {
        let mut v = vec![0u8; 16];
        v.extend(ty.to_ne_bytes());
        v.extend(code.to_ne_bytes());
        v.extend(value.to_ne_bytes());
        v
    }

    #[test]
    fn power_key_press_only() {
        let mut buf = event(0, 0, 0); // EV_SYN
        buf.extend(event(EV_KEY, KEY_POWER, 0)); // release
        assert!(!has_power_press(&buf));
        buf.extend(event(EV_KEY, KEY_POWER, 1));
        assert!(has_power_press(&buf));
        assert!(!has_power_press(&event(EV_KEY, 115, 1)));
        assert!(!has_power_press(&[1, 2, 3]));
    }
}
