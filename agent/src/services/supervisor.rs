//! The supervisor as a state machine: it decides which service to start,
//! restart or give up on, and when; a [`Launcher`] carries the decisions
//! out. Time comes in as milliseconds, so every rule (ordering, readiness
//! deadlines, capped exponential backoff, crash loops) is tested without a
//! process or a clock.

use std::collections::VecDeque;

pub use crate::events::Exit;
pub use contract::report::{ServiceReport, ServiceState as State};
use contract::services::{start_order, OrderError};
use contract::services::{RestartMode, ServiceSpec, StartWhen};

/// What the supervisor asks of the system.
pub trait Launcher {
    /// Starts the service (confined, logged); returns its pid.
    fn start(&mut self, spec: &ServiceSpec) -> Result<i32, String>;
    /// Whether the service's readiness check passes now.
    fn is_ready(&mut self, spec: &ServiceSpec) -> bool;
    /// Sends SIGKILL (a start that missed its readiness deadline).
    fn kill(&mut self, pid: i32);
}

/// What happened, for the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Started {
        name: String,
        pid: i32,
    },
    Ready {
        name: String,
        ms: u64,
    },
    Exited {
        name: String,
        exit: Exit,
        restart_in_ms: Option<u64>,
    },
    CrashLoop {
        name: String,
        exits: usize,
    },
    NotReadyInTime {
        name: String,
        ms: u64,
    },
    StartFailed {
        name: String,
        error: String,
    },
}

struct Service {
    spec: ServiceSpec,
    state: State,
    pid: Option<i32>,
    restarts: u32,
    /// Failures since the service was last ready for a whole `max_ms`.
    failures: u32,
    exits_ms: VecDeque<u64>,
    started_ms: u64,
    ready_since_ms: Option<u64>,
    ready_ms: Option<u64>,
    next_start_ms: u64,
    last_exit: Option<String>,
    error: Option<String>,
    /// Too many exits within the window (see `RestartPolicy`).
    looping: bool,
    /// This start missed its readiness deadline and was killed.
    killed: bool,
}

pub struct Supervisor {
    /// In start order.
    services: Vec<Service>,
    stopping: bool,
}

impl Supervisor {
    /// The services of `role` (all when `None`, a node without config), in
    /// start order. `have_config` releases `start = "config"` services.
    pub fn new(
        specs: Vec<ServiceSpec>,
        role: Option<&str>,
        have_config: bool,
    ) -> Result<Supervisor, OrderError> {
        for s in &specs {
            s.validate()?;
        }
        let mine: Vec<ServiceSpec> = specs
            .into_iter()
            .filter(|s| match role {
                Some(r) => s.roles.is_empty() || s.roles.iter().any(|x| x == r),
                None => s.roles.is_empty(),
            })
            .collect();
        let order = start_order(&mine)?;
        let mut slots: Vec<Option<ServiceSpec>> = mine.into_iter().map(Some).collect();
        let services = order
            .into_iter()
            .filter_map(|i| slots.get_mut(i).and_then(Option::take))
            .map(|spec| {
                let state = match spec.start {
                    StartWhen::Boot => State::Pending,
                    StartWhen::Config if have_config => State::Pending,
                    StartWhen::Config | StartWhen::Cluster => State::Waiting,
                };
                Service {
                    spec,
                    state,
                    pid: None,
                    restarts: 0,
                    failures: 0,
                    exits_ms: VecDeque::new(),
                    started_ms: 0,
                    ready_since_ms: None,
                    ready_ms: None,
                    next_start_ms: 0,
                    last_exit: None,
                    error: None,
                    looping: false,
                    killed: false,
                }
            })
            .collect();
        Ok(Supervisor {
            services,
            stopping: false,
        })
    }

    /// Lets a `start = "cluster"` service start, with `extra_args` after
    /// its own (what only the node knows: its name, its addresses, a new
    /// or an existing cluster). `false` when no such service waits.
    pub fn release(&mut self, name: &str, extra_args: &[String]) -> bool {
        let waiting = self.services.iter_mut().find(|s| {
            s.spec.name == name && s.spec.start == StartWhen::Cluster && s.state == State::Waiting
        });
        match waiting {
            Some(s) => {
                s.spec.args.extend(extra_args.iter().cloned());
                s.state = State::Pending;
                true
            }
            None => false,
        }
    }

    pub fn is_ready(&self, name: &str) -> bool {
        self.services
            .iter()
            .any(|s| s.spec.name == name && s.state == State::Ready)
    }

    /// Starts what may start, notices readiness and missed deadlines.
    pub fn tick(&mut self, now_ms: u64, l: &mut impl Launcher) -> Vec<Change> {
        let mut changes = Vec::new();
        if self.stopping {
            return changes;
        }
        for i in 0..self.services.len() {
            let deps_ready = match self.services.get(i) {
                Some(s) => s.spec.after.iter().all(|d| self.is_ready(d)),
                None => continue,
            };
            let Some(s) = self.services.get_mut(i) else {
                continue;
            };
            match s.state {
                State::Pending if deps_ready => start(s, now_ms, l, &mut changes),
                State::Backoff | State::CrashLoop
                    if deps_ready && s.pid.is_none() && now_ms >= s.next_start_ms =>
                {
                    s.restarts += 1;
                    start(s, now_ms, l, &mut changes);
                }
                State::Starting => {
                    if l.is_ready(&s.spec) {
                        let ms = now_ms.saturating_sub(s.started_ms);
                        s.state = State::Ready;
                        s.ready_ms = Some(ms);
                        s.ready_since_ms = Some(now_ms);
                        changes.push(Change::Ready {
                            name: s.spec.name.clone(),
                            ms,
                        });
                    } else if !s.killed
                        && now_ms.saturating_sub(s.started_ms) > s.spec.ready_timeout_ms
                    {
                        if let Some(pid) = s.pid {
                            l.kill(pid); // its exit then counts as a failure
                        }
                        s.error = Some(format!("not ready within {} ms", s.spec.ready_timeout_ms));
                        changes.push(Change::NotReadyInTime {
                            name: s.spec.name.clone(),
                            ms: s.spec.ready_timeout_ms,
                        });
                        s.killed = true;
                    }
                }
                State::Ready => {
                    // A service up for a whole max backoff is healthy again,
                    // and one whose exits left the window no longer loops.
                    if s.ready_since_ms
                        .is_some_and(|t| now_ms.saturating_sub(t) >= s.spec.restart.max_ms)
                    {
                        s.failures = 0;
                    }
                    prune(&mut s.exits_ms, now_ms, s.spec.restart.crash_loop_window_ms);
                    if s.looping && s.exits_ms.len() < s.spec.restart.crash_loop_exits as usize {
                        s.looping = false;
                        s.error = None;
                    }
                }
                _ => {}
            }
        }
        changes
    }

    /// Records that `pid` ended; `None` when it was not one of ours (an
    /// orphan PID 1 reaped).
    pub fn exited(&mut self, pid: i32, exit: Exit, now_ms: u64) -> Option<Change> {
        let stopping = self.stopping;
        let s = self.services.iter_mut().find(|s| s.pid == Some(pid))?;
        s.pid = None;
        s.ready_since_ms = None;
        s.last_exit = Some(exit.to_string());
        if stopping {
            s.state = State::Stopped;
            return None;
        }
        let policy = &s.spec.restart;
        let failed = exit != Exit::Code(0);
        let restart = match policy.mode {
            RestartMode::Always => true,
            RestartMode::OnFailure => failed,
            RestartMode::Never => false,
        };
        s.exits_ms.push_back(now_ms);
        prune(&mut s.exits_ms, now_ms, policy.crash_loop_window_ms);
        if !restart {
            s.state = State::Failed;
            return Some(Change::Exited {
                name: s.spec.name.clone(),
                exit,
                restart_in_ms: None,
            });
        }
        s.failures = s.failures.saturating_add(1);
        let delay = backoff_ms(policy.initial_ms, policy.max_ms, s.failures);
        s.next_start_ms = now_ms.saturating_add(delay);
        let looping = s.exits_ms.len() >= policy.crash_loop_exits as usize;
        s.state = if looping {
            State::CrashLoop
        } else {
            State::Backoff
        };
        if looping && !s.looping {
            s.looping = true;
            s.error = Some(format!(
                "crash loop: {} exits within {} ms",
                s.exits_ms.len(),
                policy.crash_loop_window_ms
            ));
            return Some(Change::CrashLoop {
                name: s.spec.name.clone(),
                exits: s.exits_ms.len(),
            });
        }
        Some(Change::Exited {
            name: s.spec.name.clone(),
            exit,
            restart_in_ms: Some(delay),
        })
    }

    /// Every service that starts at boot is ready, or can no longer be
    /// (failed, crash-looping): the report may be printed.
    pub fn settled(&self) -> bool {
        self.services.iter().all(|s| {
            s.looping
                || matches!(
                    s.state,
                    State::Ready | State::Waiting | State::Failed | State::CrashLoop
                )
        })
    }

    /// Whether the node's services are all where they should be: the
    /// boot report's `ready` covers this.
    pub fn healthy(&self) -> Result<(), String> {
        for s in &self.services {
            if s.looping {
                let why = s.error.clone().unwrap_or_default();
                return Err(format!("service {}: {why}", s.spec.name));
            }
            // a cluster's service has its own report (etcd's); starting
            // it does not make the node unready
            let cluster = s.spec.start == StartWhen::Cluster;
            match s.state {
                State::Ready | State::Waiting => {}
                State::Pending | State::Starting | State::Backoff if cluster => {}
                other => {
                    let why = s.error.clone().unwrap_or_else(|| format!("{other:?}"));
                    return Err(format!("service {}: {why}", s.spec.name));
                }
            }
        }
        Ok(())
    }

    /// No more starts or restarts; returns the running pids in stop order
    /// (the start order reversed).
    pub fn begin_stop(&mut self) -> Vec<(String, i32)> {
        self.stopping = true;
        self.services
            .iter()
            .rev()
            .filter_map(|s| s.pid.map(|p| (s.spec.name.clone(), p)))
            .collect()
    }

    pub fn report(&self) -> Vec<ServiceReport> {
        self.services
            .iter()
            .map(|s| ServiceReport {
                name: s.spec.name.clone(),
                state: s.state,
                pid: s.pid,
                restarts: s.restarts,
                ready_ms: s.ready_ms,
                last_exit: s.last_exit.clone(),
                error: s.error.clone(),
                rss_kib: None,
                cpu_ms: None,
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    pub fn pid_of(&self, name: &str) -> Option<i32> {
        self.services
            .iter()
            .find(|s| s.spec.name == name)
            .and_then(|s| s.pid)
    }
}

fn start(s: &mut Service, now_ms: u64, l: &mut impl Launcher, changes: &mut Vec<Change>) {
    match l.start(&s.spec) {
        Ok(pid) => {
            s.pid = Some(pid);
            s.started_ms = now_ms;
            s.killed = false;
            s.state = State::Starting;
            changes.push(Change::Started {
                name: s.spec.name.clone(),
                pid,
            });
        }
        Err(error) => {
            s.state = State::Failed;
            s.error = Some(error.clone());
            changes.push(Change::StartFailed {
                name: s.spec.name.clone(),
                error,
            });
        }
    }
}

fn prune(exits: &mut VecDeque<u64>, now_ms: u64, window_ms: u64) {
    while exits
        .front()
        .is_some_and(|t| now_ms.saturating_sub(*t) > window_ms)
    {
        exits.pop_front();
    }
}

/// `initial`, doubled per consecutive failure after the first, capped at `max`.
pub fn backoff_ms(initial: u64, max: u64, failures: u32) -> u64 {
    let shift = failures.saturating_sub(1).min(32);
    initial.saturating_mul(1u64 << shift).min(max)
}

#[cfg(test)]
#[path = "supervisor_tests.rs"]
mod tests;
