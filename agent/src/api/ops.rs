//! The answers: each op maps to a [`Response`] and, for `reboot` and
//! `shutdown`, the signal for PID 1 to send once the answer is out.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;

use contract::api::{tail_lines, Applied, Request, Response, DEFAULT_TAIL, MAX_TAIL};
use contract::config::changes;
use contract::kube::AUDIT_LOG;
use rustix::process::{Pid, Signal};

use super::State;

/// The state's config, also when a writer panicked while holding it.
fn config(state: &State) -> std::sync::MutexGuard<'_, super::Applied> {
    state
        .config
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Largest kernel log record `/dev/kmsg` hands out in one read (a
/// smaller buffer makes the read fail with EINVAL).
const KMSG_RECORD: usize = 8192;

/// The answer and what PID 1 is to be told afterwards.
pub fn answer(request: &Request, state: &State) -> (Response, Option<Signal>) {
    match request {
        Request::Status => {
            let mut report = match state.report.lock() {
                Ok(r) => r.clone(),
                // a writer that panicked leaves a usable report
                Err(poisoned) => poisoned.into_inner().clone(),
            };
            let pending = {
                let c = config(state);
                changes(&c.boot, &c.config).reboot
            };
            if let Some(c) = report.config.as_mut() {
                c.pending_reboot = pending;
            }
            if let Some(net) = crate::net::live_report() {
                report.network = Some(net);
            }
            report.clock_unix_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .and_then(|d| i64::try_from(d.as_millis()).ok());
            (Response::Report(Box::new(report)), None)
        }
        // `follow` streams: api/mod.rs hands such a request to `follow`
        Request::Logs { service, tail, .. } => (logs(state, service, *tail), None),
        Request::Audit { tail } => (audit(std::path::Path::new(AUDIT_LOG), *tail), None),
        Request::Dmesg => (
            match dmesg() {
                Ok(text) => Response::Text(text),
                Err(e) => Response::Error(format!("reading /dev/kmsg: {e}")),
            },
            None,
        ),
        Request::Config => {
            let shown = config(state).config.redacted().to_toml();
            let answer = match shown {
                Ok(t) => Response::Config(t),
                Err(e) => Response::Error(format!("rendering the config: {e}")),
            };
            (answer, None)
        }
        Request::ApplyConfig { config } => (apply(state, config), None),
        Request::Pull { image } => {
            let answer = match &state.certs_d {
                None => Response::Error("this image has no containerd".into()),
                Some(dir) => match crate::runtime::pull(image, &dir.display().to_string()) {
                    Ok(digest) => Response::Text(format!("{image} {digest}\n")),
                    Err(e) => Response::Error(format!("pulling {image}: {e}")),
                },
            };
            (answer, None)
        }
        Request::Bootstrap => {
            let answer = match etcd(state) {
                Err(no) => no,
                Ok(etcd) => match etcd.bootstrap() {
                    Ok(text) => Response::Text(text),
                    Err(e) => Response::Error(e),
                },
            };
            (answer, None)
        }
        // these carry bytes beside the line: api/mod.rs hands them to
        // `restore`, `import` and `snapshot`
        Request::Restore(_) | Request::Import(_) | Request::EtcdSnapshot => (
            Response::Error("this request carries a body; it has no plain answer".into()),
            None,
        ),
        // SIGUSR1 and SIGTERM are what events.rs reads as reboot and
        // power-off: the main loop then stops the services and decides.
        Request::Reboot => (Response::Accepted("reboot".into()), Some(Signal::USR1)),
        Request::Reset => match etcd(state).map(|e| e.leave().map_err(Response::Error)) {
            Ok(Ok(())) => (Response::Accepted("reset".into()), Some(Signal::USR1)),
            Ok(Err(refused)) | Err(refused) => (refused, None),
        },
        Request::Shutdown => (Response::Accepted("shutdown".into()), Some(Signal::TERM)),
    }
}

/// The node's etcd, or the refusal of a node without one.
fn etcd(state: &State) -> Result<&crate::etcd::Etcd, Response> {
    state.etcd.as_deref().ok_or_else(|| {
        Response::Error("refused: this node runs no etcd (not a control-plane node)".into())
    })
}

/// `restore`: the snapshot's bytes come next on the stream; received and
/// checked into the backup directory, restored, then removed.
pub fn restore(state: &State, from: &mut impl Read, blob: &contract::api::Blob) -> Response {
    let etcd = match etcd(state) {
        Ok(e) => e,
        Err(no) => return no,
    };
    let dir = std::path::Path::new(crate::etcd::snapshot::DIR);
    if let Err(e) = std::fs::create_dir_all(dir) {
        return Response::Error(format!("{}: {e}", dir.display()));
    }
    let file = dir.join(".restore.db");
    if let Err(e) = crate::digest::receive(from, blob, &file, "the snapshot") {
        return Response::Error(e);
    }
    let done = etcd.restore(&file);
    let _ = std::fs::remove_file(&file);
    match done {
        Ok(text) => Response::Text(text),
        Err(e) => Response::Error(e),
    }
}

/// Where an image archive is received before containerd imports it (on
/// `/var`: an archive can be larger than the memory of a small node).
const IMPORT_FILE: &str = "/var/lib/nodeimg/.import.tar";

/// `import`: the archive is received whole and its sha256 checked before
/// containerd sees any of it; the answer is `NAME sha256:DIGEST`.
pub fn import(state: &State, from: &mut impl Read, blob: &contract::api::Blob) -> Response {
    if state.certs_d.is_none() {
        return Response::Error("this image has no containerd".into());
    }
    let file = std::path::Path::new(IMPORT_FILE);
    if let Some(dir) = file.parent() {
        if let Err(e) = std::fs::create_dir_all(dir) {
            return Response::Error(format!("{}: {e}", dir.display()));
        }
    }
    if let Err(e) = crate::digest::receive(from, blob, file, "the image archive") {
        return Response::Error(e);
    }
    let done = crate::runtime::import_archive(file);
    let _ = std::fs::remove_file(file);
    match done {
        Ok((name, digest)) => Response::Text(format!("{name} {digest}\n")),
        Err(e) => Response::Error(format!("importing the archive: {e}")),
    }
}

/// `etcd-snapshot`: a fresh snapshot's file and announcement, or why not.
pub fn snapshot(state: &State) -> Result<(std::path::PathBuf, contract::api::Blob), Response> {
    etcd(state)?.snapshot().map_err(Response::Error)
}

/// `apply-config`: checked whole first (nothing changes when it is
/// refused), then stored to replace the boot's config, then each changed
/// live table applied. One apply at a time: the config lock is held.
fn apply(state: &State, text: &str) -> Response {
    let name = "the applied config";
    let new = match crate::config_apply::check(text.as_bytes(), name, &state.facts) {
        Ok(c) => c,
        Err(e) => return Response::Error(format!("refused, nothing changed: {e}")),
    };
    let mut current = config(state);
    let diff = changes(&current.config, &new);
    if diff.is_empty() {
        return Response::Applied(Applied::default());
    }
    let stored = crate::config_apply::store_applied(
        text.as_bytes(),
        state.replaces.as_deref(),
        &state.stored,
        &state.mark,
    );
    if let Err(e) = stored {
        return Response::Error(format!("refused, nothing changed: storing it: {e}"));
    }
    let mut failed = Vec::new();
    for table in &diff.live {
        let result = match table.as_str() {
            "containerd" => match &state.certs_d {
                Some(dir) => crate::registries::write(dir, &new.containerd)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                None => Err("this image has no containerd".into()),
            },
            "network" => {
                let net = state.report.lock().ok().and_then(|r| r.network.clone());
                let old_plans = crate::net::plans_from_config(&current.config);
                let new_plans = crate::net::plans_from_config(&new);
                crate::net::apply_live(&old_plans, &new_plans, &net.unwrap_or_default()).map(|_| ())
            }
            "time" => {
                let net = state.report.lock().ok().and_then(|r| r.network.clone());
                let (servers, _) = crate::time::servers(Some(&new), net.as_ref());
                crate::time::set_servers(servers).map(|_| ())
            }
            contract::config::ENCRYPTION_KEYS => crate::kube::apply_encryption_keys(&new),
            contract::config::STACK_TABLE => match &state.kube {
                Some(kube) => {
                    let stack = new
                        .cluster
                        .control_plane
                        .as_ref()
                        .and_then(|cp| cp.stack.clone());
                    kube.set_stack(stack);
                    Ok(())
                }
                None => Err("this node runs no Kubernetes".into()),
            },
            other => Err(format!(
                "{other} is not applied live by this agent yet; it takes effect at the next boot"
            )),
        };
        if let Err(e) = result {
            failed.push(format!("{table}: {e}"));
        }
    }
    current.config = new;
    Response::Applied(Applied {
        changes: diff,
        failed,
    })
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

/// The most of the audit log read for a tail: its events are a few KiB
/// at most, and the log may be many MiB.
const AUDIT_READ: u64 = 4 << 20;

/// `audit`: the audit log directory's files with their sizes, then the
/// current log's tail.
fn audit(log: &std::path::Path, tail: Option<usize>) -> Response {
    use std::io::{Seek, SeekFrom};
    let Some(dir) = log.parent() else {
        return Response::Error(format!("{} has no directory", log.display()));
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Response::Error(
                "no audit log here: this node runs no kube-apiserver (yet)".into(),
            )
        }
        Err(e) => return Response::Error(format!("reading {}: {e}", dir.display())),
    };
    let mut files: Vec<(String, u64)> = entries
        .flatten()
        .filter_map(|e| {
            let len = e.metadata().ok().filter(|m| m.is_file())?.len();
            Some((e.file_name().to_string_lossy().into_owned(), len))
        })
        .collect();
    files.sort();
    let mut text: String = files
        .iter()
        .map(|(name, len)| format!("# {name} {len}\n"))
        .collect();
    let mut data = Vec::new();
    let read = std::fs::File::open(log).and_then(|mut f| {
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(AUDIT_READ)))?;
        f.take(AUDIT_READ).read_to_end(&mut data)
    });
    match read {
        Ok(_) => {
            let current = String::from_utf8_lossy(&data);
            let n = tail.unwrap_or(DEFAULT_TAIL).min(MAX_TAIL);
            text.push_str(tail_lines(&current, n));
            Response::Text(text)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Response::Text(text),
        Err(e) => Response::Error(format!("reading {}: {e}", log.display())),
    }
}

/// `logs` with `follow`: the tail as one answer, then what is appended
/// to the log, one `text` answer per line, as it comes, with an empty one
/// every `FOLLOW_KEEPALIVE_SECS` of quiet; returns when a write fails (the
/// client went away). A log that shrinks was rotated: it is read again
/// from its start.
pub fn follow(
    state: &State,
    service: &str,
    tail: Option<usize>,
    mut send: impl FnMut(&Response) -> std::io::Result<()>,
) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom};
    let path = state.log_dir.join(format!("{service}.log"));
    // where the tail ends, taken first: a line written meanwhile is sent
    // twice rather than lost
    let mut at = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let first = logs(state, service, tail);
    send(&first)?;
    if matches!(first, Response::Error(_)) {
        return Ok(());
    }
    let keepalive = std::time::Duration::from_secs(contract::api::FOLLOW_KEEPALIVE_SECS);
    let mut quiet = std::time::Instant::now();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if len < at {
            at = 0;
        }
        if len > at {
            let mut f = std::fs::File::open(&path)?;
            f.seek(SeekFrom::Start(at))?;
            let mut buf = Vec::new();
            // at most 1 MiB an answer; the rest goes in the next
            f.take(1 << 20).read_to_end(&mut buf)?;
            at += buf.len() as u64;
            send(&Response::Text(String::from_utf8_lossy(&buf).into_owned()))?;
            quiet = std::time::Instant::now();
        } else if quiet.elapsed() >= keepalive {
            send(&Response::Text(String::new()))?;
            quiet = std::time::Instant::now();
        }
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
        let config = sample_config();
        let mut report = contract::report::Report::default();
        report.config = Some(contract::report::ConfigReport::none());
        State {
            report: Arc::new(Mutex::new(report)),
            config: Mutex::new(super::super::Applied {
                boot: config.clone(),
                config,
            }),
            replaces: Some("sha256:boot".into()),
            stored: dir.join("machine-config.toml"),
            mark: dir.join("machine-config.replaces"),
            facts: contract::config::ImageFacts::from_packages("test", ["containerd"]),
            log_dir: dir.to_path_buf(),
            certs_d: Some(dir.join("certs.d")),
            etcd: None,
            kube: None,
        }
    }

    const CA_CRT: &str = include_str!("../../../contract/testdata/ca.crt");
    const NODE_CRT: &str = include_str!("../../../contract/testdata/node.crt");
    const NODE_KEY: &str = include_str!("../../../contract/testdata/node.key");

    fn sample_text(hostname: &str, extra: &str) -> String {
        format!(
            "schema = 1\nhostname = \"{hostname}\"\nrole = \"worker\"\n[cluster]\nname = \"lab\"\n\
             {extra}\n[api]\nclient_ca = '''\n{CA_CRT}'''\ncertificate = '''\n{NODE_CRT}'''\n\
             key = '''\n{NODE_KEY}'''\n"
        )
    }

    fn sample_config() -> contract::config::MachineConfig {
        contract::config::MachineConfig::from_toml(&sample_text("worker-1", ""), "t").unwrap()
    }

    fn apply_text(s: &State, text: String) -> Response {
        answer(&Request::ApplyConfig { config: text }, s).0
    }

    #[test]
    fn apply_config_stores_applies_live_and_names_what_waits() {
        let dir = tempfile::tempdir().unwrap();
        let s = state(dir.path());
        let mirror =
            "[containerd.registry_mirrors]\n\"docker.io\" = [\"http://10.0.2.100:5000\"]\n";
        let text = sample_text("worker-2", mirror);
        let Response::Applied(a) = apply_text(&s, text.clone()) else {
            panic!("applied");
        };
        assert_eq!(a.changes.live, ["containerd"]);
        assert_eq!(a.changes.reboot, ["hostname"]);
        assert!(a.failed.is_empty(), "{a:?}");
        assert_eq!(std::fs::read_to_string(&s.stored).unwrap(), text);
        assert_eq!(std::fs::read_to_string(&s.mark).unwrap(), "sha256:boot\n");
        let hosts = dir.path().join("certs.d/docker.io/hosts.toml");
        assert!(std::fs::read_to_string(hosts)
            .unwrap()
            .contains("10.0.2.100:5000"));
        let Response::Report(r) = answer(&Request::Status, &s).0 else {
            panic!("status");
        };
        assert_eq!(r.config.unwrap_or_default().pending_reboot, ["hostname"]);
        let Response::Config(shown) = answer(&Request::Config, &s).0 else {
            panic!("config");
        };
        assert!(shown.contains("worker-2"), "{shown}");
        // the same again changes nothing
        assert_eq!(apply_text(&s, text), Response::Applied(Applied::default()));
    }

    #[test]
    fn a_config_the_node_cannot_serve_is_refused_whole() {
        let dir = tempfile::tempdir().unwrap();
        let s = state(dir.path());
        for (bad, why) in [
            (sample_text("worker-2", "bogus = 1"), "bogus"),
            ("not toml [".to_string(), "the applied config"),
            (
                sample_text("worker-2", "").replace("\"worker\"", "\"control-plane\""),
                "etcd",
            ),
        ] {
            let Response::Error(e) = apply_text(&s, bad) else {
                panic!("refused");
            };
            assert!(e.starts_with("refused, nothing changed"), "{e}");
            assert!(e.contains(why), "{e}");
        }
        assert!(!s.stored.exists() && !s.mark.exists());
        let Response::Config(shown) = answer(&Request::Config, &s).0 else {
            panic!("config");
        };
        assert!(shown.contains("worker-1"), "{shown}");
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
            follow: false,
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
            follow: false,
        };
        assert_eq!(
            answer(&none, &s).0,
            Response::Error("no log for service kubelet".into())
        );
    }

    #[test]
    fn follow_sends_the_tail_then_what_is_appended() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("containerd.log");
        std::fs::write(&log, "a\nb\n").unwrap();
        let s = state(dir.path());
        let mut got = Vec::new();
        let r = follow(&s, "containerd", Some(1), |answer| {
            got.push(answer.clone());
            match got.len() {
                1 => {
                    use std::io::Write;
                    let mut f = std::fs::OpenOptions::new().append(true).open(&log)?;
                    f.write_all(b"c\n")
                }
                2 => Err(std::io::Error::other("client gone")),
                _ => Ok(()),
            }
        });
        assert!(r.is_err());
        assert_eq!(
            got,
            [Response::Text("b\n".into()), Response::Text("c\n".into())]
        );
        let mut none = Vec::new();
        follow(&s, "kubelet", None, |a| {
            none.push(a.clone());
            Ok(())
        })
        .unwrap();
        assert_eq!(none, [Response::Error("no log for service kubelet".into())]);
    }

    #[test]
    fn a_node_without_etcd_refuses_the_bootstrap() {
        let dir = tempfile::tempdir().unwrap();
        let s = state(dir.path());
        let (answer, signal) = answer(&Request::Bootstrap, &s);
        assert_eq!(signal, None);
        let Response::Error(e) = answer else {
            panic!("refused: {answer:?}");
        };
        assert!(e.contains("runs no etcd"), "{e}");
    }

    #[test]
    fn power_requests_only_ask_pid1() {
        let dir = tempfile::tempdir().unwrap();
        let s = state(dir.path());
        assert_eq!(answer(&Request::Shutdown, &s).1, Some(Signal::TERM));
        assert_eq!(answer(&Request::Reboot, &s).1, Some(Signal::USR1));
        assert_eq!(answer(&Request::Status, &s).1, None);
        let Response::Config(text) = answer(&Request::Config, &s).0 else {
            panic!("config answers with the config");
        };
        assert!(text.contains("hostname = \"worker-1\""), "{text}");
        assert!(!text.contains("PRIVATE KEY"), "redacted: {text}");
    }

    #[test]
    fn audit_lists_the_files_then_tails_the_current_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit").join("audit.log");
        match audit(&log, None) {
            Response::Error(e) => assert!(e.contains("no kube-apiserver"), "{e}"),
            other => panic!("{other:?}"),
        }
        std::fs::create_dir(dir.path().join("audit")).unwrap();
        std::fs::write(&log, "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n").unwrap();
        std::fs::write(
            dir.path()
                .join("audit")
                .join("audit-2026-12-07T03-00-00.000.log"),
            "x".repeat(10),
        )
        .unwrap();
        assert_eq!(
            audit(&log, Some(2)),
            Response::Text(
                "# audit-2026-12-07T03-00-00.000.log 10\n# audit.log 24\n{\"a\":2}\n{\"a\":3}\n"
                    .into()
            )
        );
    }
}
