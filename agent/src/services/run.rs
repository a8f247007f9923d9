//! Supervision at run time: the loop that feeds the [`Supervisor`] with
//! time and child exits from PID 1's event sources, prints each change on
//! the console, and stops the services in reverse order when asked.

use super::launch::RealLauncher;
use super::supervisor::{Change, Exit, Supervisor};
use crate::console::Console;
use crate::events::{self, Events, Request};
use crate::sys;

/// How often the supervisor looks at readiness and backoff timers.
const TICK_MS: u64 = 100;
/// How long a service gets between SIGTERM and SIGKILL at shutdown.
pub const STOP_GRACE_MS: u64 = 10_000;
/// How long an exit may take to show after SIGKILL.
const KILL_WAIT_MS: u64 = 3_000;

pub struct Supervision {
    pub sup: Supervisor,
    launcher: RealLauncher,
    /// The documented test switch `nodeimg.test.kill=NAME[:always]`:
    /// SIGKILL that service once it is ready, once or every time, so tests
    /// see a restart and a crash loop of the real daemon.
    pub test_kill: Option<TestKill>,
    /// Releases and report changes other threads ask for.
    pub mailbox: Option<std::sync::Arc<super::mailbox::Mailbox>>,
}

/// See [`Supervision::test_kill`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestKill {
    pub service: String,
    pub always: bool,
    pub done: bool,
}

impl Supervision {
    pub fn new(sup: Supervisor, con: &mut Console) -> Supervision {
        let launcher = RealLauncher::default();
        for note in launcher.prepare() {
            con.say(&format!("cgroup controllers: {note}"));
        }
        Supervision {
            sup,
            launcher,
            test_kill: None,
            mailbox: None,
        }
    }

    fn step(&mut self, ev: &mut Events, con: &mut Console) -> bool {
        let now = sys::uptime_ms();
        let mut changed = false;
        for (pid, exit) in ev.take_exits() {
            if let Some(c) = self.sup.exited(pid, exit, now) {
                say(con, &c);
                changed = true;
            }
        }
        if let Some(m) = &self.mailbox {
            for (name, args) in m.take_releases() {
                if self.sup.release(&name, &args) {
                    con.say(&format!("service {name} released: {}", args.join(" ")));
                    changed = true;
                }
            }
            changed |= m.take_changed();
        }
        for c in self.sup.tick(now, &mut self.launcher) {
            say(con, &c);
            changed = true;
        }
        if let Some(t) = &mut self.test_kill {
            if !t.done && self.sup.is_ready(&t.service) {
                if let Some(pid) = self.sup.pid_of(&t.service) {
                    con.say(&format!(
                        "test switch nodeimg.test_kill: SIGKILL to {} (pid {pid})",
                        t.service
                    ));
                    // SAFETY: kill(2) with integers; `pid` is our unreaped child.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    t.done = !t.always;
                    // Take the exit now, so nobody sees the killed service
                    // as ready in between.
                    let t0 = sys::uptime_ms();
                    while self.sup.pid_of(&t.service) == Some(pid)
                        && sys::uptime_ms().saturating_sub(t0) < KILL_WAIT_MS
                    {
                        for (p, exit) in events::reap_exits() {
                            if let Some(c) = self.sup.exited(p, exit, sys::uptime_ms()) {
                                say(con, &c);
                            }
                        }
                        sys::sleep_ms(10);
                    }
                    changed = true;
                }
            }
        }
        changed
    }

    /// Runs until every boot service is ready or cannot become so, or a
    /// shutdown is asked for (returned).
    pub fn until_settled(&mut self, ev: &mut Events, con: &mut Console) -> Option<Request> {
        loop {
            self.step(ev, con);
            if self.sup.settled() {
                return None;
            }
            if let Some(r) = ev.wait(Some(TICK_MS)) {
                return Some(r);
            }
        }
    }

    /// Supervises until a shutdown is asked for; `on_change` gets each
    /// moment the services changed (to print an updated report).
    pub fn watch(
        &mut self,
        ev: &mut Events,
        con: &mut Console,
        mut on_change: impl FnMut(&Supervisor, &mut Console),
    ) -> Request {
        loop {
            if self.step(ev, con) {
                on_change(&self.sup, con);
            }
            if let Some(r) = ev.wait(Some(TICK_MS)) {
                return r;
            }
        }
    }

    /// Stops every running service, the last started first: SIGTERM, up to
    /// [`STOP_GRACE_MS`] for it to exit, then SIGKILL.
    pub fn stop(&mut self, ev: &mut Events, con: &mut Console) {
        let mut exited: Vec<(i32, Exit)> = ev.take_exits();
        for (name, pid) in self.sup.begin_stop() {
            con.say(&format!("stopping service {name} (pid {pid})"));
            let t = sys::uptime_ms();
            // SAFETY: kill(2) with integers; `pid` is our unreaped child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let mut deadline = t.saturating_add(STOP_GRACE_MS);
            let mut killed = false;
            let exit = loop {
                exited.extend(events::reap_exits());
                if let Some(i) = exited.iter().position(|(p, _)| *p == pid) {
                    break Some(exited.swap_remove(i).1);
                }
                if sys::uptime_ms() > deadline {
                    if killed {
                        break None;
                    }
                    con.say(&format!(
                        "service {name} still runs {STOP_GRACE_MS} ms after SIGTERM: SIGKILL"
                    ));
                    // SAFETY: as above.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    killed = true;
                    deadline = sys::uptime_ms().saturating_add(KILL_WAIT_MS);
                }
                sys::sleep_ms(20);
            };
            let ms = sys::uptime_ms().saturating_sub(t);
            match exit {
                Some(e) => {
                    self.sup.exited(pid, e, sys::uptime_ms());
                    con.say(&format!("service {name} stopped ({e}, {ms} ms)"));
                }
                None => con.say(&format!(
                    "service {name} did not stop ({})",
                    process_state(pid)
                )),
            }
        }
    }
}

fn say(con: &mut Console, c: &Change) {
    let text = match c {
        Change::Started { name, pid } => format!("service {name} started (pid {pid})"),
        Change::Ready { name, ms } => format!("service {name} ready ({ms} ms)"),
        Change::Exited {
            name,
            exit,
            restart_in_ms: Some(d),
        } => format!("service {name} exited ({exit}); restart in {d} ms"),
        Change::Exited {
            name,
            exit,
            restart_in_ms: None,
        } => format!("service {name} exited ({exit}); not restarted (policy)"),
        Change::CrashLoop { name, exits } => {
            format!("service {name} is crash-looping ({exits} exits); the node is not ready")
        }
        Change::NotReadyInTime { name, ms } => {
            format!("service {name} not ready within {ms} ms: killed")
        }
        Change::StartFailed { name, error } => format!("service {name} cannot start: {error}"),
    };
    con.say(&text);
}

/// `State:` of a process and where it sleeps in the kernel, for a service
/// that outlives SIGKILL (a task in `D` state waits on the kernel).
fn process_state(pid: i32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let state = status
        .lines()
        .find_map(|l| l.strip_prefix("State:"))
        .map_or("gone", str::trim)
        .to_string();
    let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
    format!("state {state}, wchan {wchan}")
}
