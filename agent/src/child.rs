//! A helper program run to its end by a thread of PID 1 (`ctr`, `etcdctl`,
//! `etcdutl`): clean environment, both pipes drained, a deadline, and the
//! exit taken back from PID 1's reaper when it got there first.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `cmd` (named `what` in errors) for at most `timeout`; returns its
/// stdout, or why not (the last lines of its stderr).
pub fn run(mut cmd: Command, what: &str, timeout: Duration) -> Result<String, String> {
    let mut child = cmd
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: {e}"))?;
    // Read both pipes while it runs: a pull prints progress all along,
    // and a full pipe would stop it until the timeout.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    // Off the main thread PID 1's reaper may take the child first (ECHILD
    // here): it leaves the exit for us (events::claim).
    let pid = i32::try_from(child.id()).unwrap_or(0);
    crate::events::claim(pid);
    let start = Instant::now();
    let status = loop {
        let ended = match child.try_wait() {
            Ok(Some(s)) => Some(s.success()),
            Ok(None) => None,
            Err(e) if e.raw_os_error() == Some(libc::ECHILD) => {
                crate::events::claimed_exit(pid).map(|x| x == crate::events::Exit::Code(0))
            }
            Err(e) => {
                crate::events::unclaim(pid);
                return Err(format!("{what}: {e}"));
            }
        };
        match ended {
            Some(ok) => break Some(ok),
            None if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    crate::events::unclaim(pid);
    let out = stdout.join().unwrap_or_default();
    let err = stderr.join().unwrap_or_default();
    let Some(success) = status else {
        let last: Vec<&str> = err.lines().rev().take(3).collect();
        return Err(format!(
            "{what} took over {timeout:?}: {}",
            last.join(" / ")
        ));
    };
    if success {
        Ok(out)
    } else {
        Err(format!("{what} failed: {}", err.trim()))
    }
}
