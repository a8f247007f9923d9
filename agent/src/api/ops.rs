//! The answers: each op maps to a [`Response`] and, for `reboot` and
//! `shutdown`, the signal for PID 1 to send once the answer is out.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;

use contract::api::{tail_lines, Request, Response, DEFAULT_TAIL, MAX_TAIL};
use rustix::process::{Pid, Signal};

use super::State;

/// Largest kernel log record `/dev/kmsg` hands out in one read (a
/// smaller buffer makes the read fail with EINVAL).
const KMSG_RECORD: usize = 8192;

/// The answer and what PID 1 is to be told afterwards.
pub fn answer(request: &Request, state: &State) -> (Response, Option<Signal>) {
    match request {
        Request::Status => {
            let report = match state.report.lock() {
                Ok(r) => r.clone(),
                // a writer that panicked leaves a usable report
                Err(poisoned) => poisoned.into_inner().clone(),
            };
            (Response::Report(Box::new(report)), None)
        }
        Request::Logs { service, tail } => (logs(state, service, *tail), None),
        Request::Dmesg => (
            match dmesg() {
                Ok(text) => Response::Text(text),
                Err(e) => Response::Error(format!("reading /dev/kmsg: {e}")),
            },
            None,
        ),
        Request::Config => (Response::Config(state.config_toml.clone()), None),
        // SIGUSR1 and SIGTERM are what events.rs reads as reboot and
        // power-off: the main loop then stops the services and decides.
        Request::Reboot => (Response::Accepted("reboot".into()), Some(Signal::USR1)),
        Request::Shutdown => (Response::Accepted("shutdown".into()), Some(Signal::TERM)),
    }
}

pub fn signal_pid1(signal: Signal) {
    if let Err(e) = rustix::process::kill_process(Pid::INIT, signal) {
        crate::console::Console::open().say(&format!("api: cannot signal PID 1: {e}"));
    }
}

/// The last lines of `LOG_DIR/SERVICE.log`; the name was checked by
/// [`Request::parse`], so it names a file in that directory only.
fn logs(state: &State, service: &str, tail: Option<usize>) -> Response {
    let path = state.log_dir.join(format!("{service}.log"));
    match std::fs::read(&path) {
        Ok(data) => {
            let text = String::from_utf8_lossy(&data);
            let n = tail.unwrap_or(DEFAULT_TAIL).min(MAX_TAIL);
            Response::Text(tail_lines(&text, n).to_string())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Response::Error(format!("no log for service {service}"))
        }
        Err(e) => Response::Error(format!("reading {}: {e}", path.display())),
    }
}

/// The kernel log: `/dev/kmsg` opened non-blocking and read record by
/// record until EAGAIN (the end of what is buffered now).
fn dmesg() -> std::io::Result<String> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")?;
    let mut out = String::new();
    let mut buf = vec![0u8; KMSG_RECORD];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let record = String::from_utf8_lossy(buf.get(..n).unwrap_or(&[]));
                out.push_str(&kmsg_line(&record));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            // EPIPE: records were overwritten while we read; go on
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// One `/dev/kmsg` record (`PRI,SEQ,USEC,FLAGS;text\n KEY=value...`) as a
/// dmesg line: `[   12.345678] text`.
pub fn kmsg_line(record: &str) -> String {
    let first = record.lines().next().unwrap_or("");
    let Some((head, text)) = first.split_once(';') else {
        return format!("{first}\n");
    };
    let usec: u64 = head
        .split(',')
        .nth(2)
        .and_then(|u| u.parse().ok())
        .unwrap_or(0);
    format!("[{:>5}.{:06}] {text}\n", usec / 1_000_000, usec % 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn state(dir: &std::path::Path) -> State {
        State {
            report: Arc::new(Mutex::new(contract::report::Report::default())),
            config_toml: "schema = 1\n".into(),
            log_dir: dir.to_path_buf(),
        }
    }

    #[test]
    fn kmsg_records_become_dmesg_lines() {
        assert_eq!(
            kmsg_line("6,339,5140900,-;virtio_net virtio0 eth0: up\n SUBSYSTEM=net\n"),
            "[    5.140900] virtio_net virtio0 eth0: up\n"
        );
        assert_eq!(kmsg_line("garbage"), "garbage\n");
    }

    #[test]
    fn logs_answer_the_tail_or_say_there_is_none() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("containerd.log"), "a\nb\nc\n").unwrap();
        let s = state(dir.path());
        let logs = |tail| Request::Logs {
            service: "containerd".into(),
            tail,
        };
        assert_eq!(
            answer(&logs(Some(2)), &s).0,
            Response::Text("b\nc\n".into())
        );
        assert_eq!(
            answer(&logs(None), &s).0,
            Response::Text("a\nb\nc\n".into())
        );
        let none = Request::Logs {
            service: "kubelet".into(),
            tail: None,
        };
        assert_eq!(
            answer(&none, &s).0,
            Response::Error("no log for service kubelet".into())
        );
    }

    #[test]
    fn power_requests_only_ask_pid1() {
        let dir = tempfile::tempdir().unwrap();
        let s = state(dir.path());
        assert_eq!(answer(&Request::Shutdown, &s).1, Some(Signal::TERM));
        assert_eq!(answer(&Request::Reboot, &s).1, Some(Signal::USR1));
        assert_eq!(answer(&Request::Status, &s).1, None);
        assert_eq!(
            answer(&Request::Config, &s).0,
            Response::Config("schema = 1\n".into())
        );
    }
}
