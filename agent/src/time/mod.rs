//! The node's clock, kept by SNTP (RFC 4330) from the machine config's
//! `[time] servers`, else the NTP servers the DHCP leases named (option
//! 42), else nothing (the clock stays the hardware's, and the report has
//! no `time`).
//!
//! At boot, right after the network, a thread asks the servers in order
//! (a few tries each, every wait bounded), corrects the clock (`clock.rs`:
//! step above 0.5 s, slew below), marks the kernel's clock synchronised,
//! and then keeps syncing every 64 s, doubling to 1024 s while the
//! servers answer. Boot waits for the first sync at most [`DEADLINE`]
//! before it starts services, so TLS and etcd start on a right clock when
//! one can be had; past the deadline the boot goes on with a warning
//! (`NODEIMG-WARN time: …`), not a failure: a node whose time server is
//! down is still better running, and the thread keeps trying (and says so
//! on the console when it succeeds).

pub mod clock;
pub mod sntp;

use std::net::IpAddr;
use std::sync::mpsc;
use std::time::Duration;

use contract::config::MachineConfig;
use contract::report::{self, NetReport, Report, TimeReport};

use crate::console::Console;
use crate::error::chain;
use crate::sys;

/// How long boot waits for the first sync.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// Each server gets these waits for an answer, in turn, on the first sync.
const TRIES: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(2),
];
/// The background sync interval: from 64 s, doubling to 1024 s (RFC 5905's
/// default MINPOLL 6 and MAXPOLL 10), back to 64 s after a failure.
const MIN_POLL: Duration = Duration::from_secs(64);
const MAX_POLL: Duration = Duration::from_secs(1024);

/// The servers to ask and where they came from (`config` or `dhcp`).
pub fn servers(config: Option<&MachineConfig>, net: Option<&NetReport>) -> (Vec<String>, String) {
    if let Some(c) = config.filter(|c| !c.time.servers.is_empty()) {
        return (c.time.servers.clone(), "config".into());
    }
    let mut out: Vec<String> = Vec::new();
    for ip in net.iter().flat_map(|n| &n.interfaces).flat_map(|i| &i.ntp) {
        let s = IpAddr::V4(*ip).to_string();
        if !out.contains(&s) {
            out.push(s);
        }
    }
    (out, "dhcp".into())
}

/// One successful sync.
#[derive(Debug, Clone)]
pub struct Synced {
    pub server: String,
    pub sample: contract::ntp::Sample,
    pub method: clock::Method,
    /// The clock (Unix ms) and the uptime (ms) right after the correction.
    pub at_unix_ms: i64,
    pub at_ms: u64,
    /// Set when the clock was corrected but the kernel was not told.
    pub mark_error: Option<String>,
}

/// Asks `servers` in order, each with `tries` waits, and corrects the
/// clock from the first that answers. Errors: one line per failed try.
pub fn sync_once(servers: &[String], tries: &[Duration]) -> Result<Synced, Vec<String>> {
    let mut errors = Vec::new();
    for server in servers {
        let addrs = match sntp::resolve(server) {
            Ok(a) => a,
            Err(e) => {
                errors.push(chain(&e));
                continue;
            }
        };
        for wait in tries {
            for addr in &addrs {
                match sntp::query(*addr, *wait) {
                    Ok(sample) => return correct(server, sample).map_err(|e| vec![e]),
                    Err(e) => errors.push(chain(&e)),
                }
            }
        }
    }
    Err(errors)
}

fn correct(server: &str, sample: contract::ntp::Sample) -> Result<Synced, String> {
    let method = clock::apply(sample.offset_ns).map_err(|e| format!("{server}: {}", chain(&e)))?;
    let at_ms = sys::uptime_ms();
    let at_unix_ms = (clock::now_unix_ns() / 1_000_000) as i64;
    let mark_error = clock::mark_synchronised(&sample).err().map(|e| chain(&e));
    Ok(Synced {
        server: server.to_string(),
        sample,
        method,
        at_unix_ms,
        at_ms,
        mark_error,
    })
}

/// The report's view of a first sync (or of its failure).
pub fn report_for(
    servers: &[String],
    source: &str,
    outcome: Option<&Result<Synced, Vec<String>>>,
    network_ms: Option<u64>,
) -> TimeReport {
    let mut r = TimeReport {
        source: source.into(),
        servers: servers.to_vec(),
        ..TimeReport::default()
    };
    match outcome {
        None => {
            r.error = Some(format!(
                "no server answered within {} s; retrying in the background",
                DEADLINE.as_secs()
            ))
        }
        Some(Err(errors)) => {
            r.error = Some(format!(
                "no server answered ({}); retrying in the background",
                errors.join("; ")
            ))
        }
        Some(Ok(s)) => {
            r.synchronised = s.mark_error.is_none();
            r.error = s.mark_error.clone();
            r.server = Some(s.server.clone());
            r.offset_ms = Some(round_div(s.sample.offset_ns, 1_000_000));
            r.method = Some(s.method.as_str().into());
            r.stratum = Some(s.sample.stratum);
            r.delay_us = Some((s.sample.delay_ns / 1000).max(0) as u64);
            r.synced_at_unix_ms = Some(s.at_unix_ms);
            r.synced_at_ms = Some(s.at_ms);
            r.sync_ms = network_ms.map(|n| s.at_ms.saturating_sub(n));
        }
    }
    r
}

fn round_div(n: i64, d: i64) -> i64 {
    let q = n / d;
    let rem = n % d;
    if rem.abs() * 2 >= d {
        q + n.signum()
    } else {
        q
    }
}

/// At boot, after the network: starts the time thread, waits for its
/// first sync (at most [`DEADLINE`]), and records the outcome in the
/// report. Does nothing when there is no server.
pub fn at_boot(config: Option<&MachineConfig>, report: &mut Report, con: &mut Console) {
    let (servers, source) = servers(config, report.network.as_ref());
    if servers.is_empty() {
        con.say("time: no NTP server (none in [time] servers nor from DHCP); the clock stays the hardware's");
        return;
    }
    con.say(&format!(
        "time: asking {} (from {source})",
        servers.join(", ")
    ));
    let (tx, rx) = mpsc::channel();
    let list = servers.clone();
    let started = std::thread::Builder::new()
        .name("time".into())
        .spawn(move || keep(list, tx));
    let outcome = match started {
        Ok(_) => rx.recv_timeout(DEADLINE).ok(),
        Err(e) => Some(Err(vec![format!("start the time thread: {e}")])),
    };
    let network_ms = report.stage_ms.get("network").copied();
    let t = report_for(&servers, &source, outcome.as_ref(), network_ms);
    match (&t.error, t.synchronised) {
        (None, true) => con.say(&format!(
            "time: synchronised to {} (stratum {}), {} by {} ms, {} ms after the network was up",
            t.server.as_deref().unwrap_or("?"),
            t.stratum.unwrap_or(0),
            t.method.as_deref().unwrap_or("?"),
            t.offset_ms.unwrap_or(0),
            t.sync_ms.unwrap_or(0)
        )),
        (e, _) => {
            let w = format!("time: {}", e.as_deref().unwrap_or("not synchronised"));
            con.line(&report::warn_line(&w));
            report.warnings.push(w);
        }
    }
    report.stage_ms.insert("time".into(), sys::uptime_ms());
    report.time = Some(t);
}

/// How a running time thread learns new servers (a config applied
/// through the node API): `None` until one runs.
static UPDATES: std::sync::Mutex<Option<mpsc::Sender<Vec<String>>>> = std::sync::Mutex::new(None);

fn updates() -> std::sync::MutexGuard<'static, Option<mpsc::Sender<Vec<String>>>> {
    UPDATES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Live: the node's time servers are now `servers` (a config applied
/// through the node API). The time thread syncs from them at once; with
/// none running (the boot had no server) one starts. Waits at most
/// [`DEADLINE`] for that first sync and says how it went.
pub fn set_servers(servers: Vec<String>) -> Result<String, String> {
    if servers.is_empty() {
        return Err("no servers: the clock keeps its last source until the next boot".into());
    }
    let (tx, rx) = mpsc::channel();
    let sent = updates()
        .as_ref()
        .map(|u| u.send(servers.clone()).is_ok())
        .unwrap_or(false);
    if sent {
        return Ok(format!("the time thread now asks {}", servers.join(", ")));
    }
    let list = servers.clone();
    std::thread::Builder::new()
        .name("time".into())
        .spawn(move || keep(list, tx))
        .map_err(|e| format!("start the time thread: {e}"))?;
    match rx.recv_timeout(DEADLINE) {
        Ok(Ok(s)) => Ok(format!(
            "synchronised to {} ({} by {} ms)",
            s.server,
            s.method.as_str(),
            round_div(s.sample.offset_ns, 1_000_000)
        )),
        Ok(Err(errors)) => Err(format!(
            "no server answered ({}); retrying in the background",
            errors.join("; ")
        )),
        Err(_) => Err(format!(
            "no server answered within {} s; retrying in the background",
            DEADLINE.as_secs()
        )),
    }
}

/// The time thread: the first sync (its outcome sent to boot), then one
/// every poll interval, for the life of PID 1, or at once when new
/// servers arrive ([`set_servers`]). Never panics; speaks on the console
/// only when something changes.
fn keep(mut servers: Vec<String>, first: mpsc::Sender<Result<Synced, Vec<String>>>) {
    let (tx, new_servers) = mpsc::channel();
    *updates() = Some(tx);
    let mut poll = MIN_POLL;
    let mut synced = match sync_once(&servers, &TRIES) {
        Ok(s) => {
            let line = format!(
                "time: synchronised to {} after the boot stopped waiting: {} by {} ms",
                s.server,
                s.method.as_str(),
                round_div(s.sample.offset_ns, 1_000_000)
            );
            // boot gave up waiting: the report says not synchronised, so
            // the console says when it became so
            if first.send(Ok(s)).is_err() {
                Console::open().say(&line);
            }
            true
        }
        Err(e) => {
            let _ = first.send(Err(e));
            false
        }
    };
    drop(first);
    loop {
        match new_servers.recv_timeout(poll) {
            Ok(list) => {
                Console::open().say(&format!("time: now asking {}", list.join(", ")));
                servers = list;
                synced = false;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // the sender lives in UPDATES for the life of PID 1
            Err(mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(poll),
        }
        match sync_once(&servers, &TRIES) {
            Ok(s) => {
                if !synced || s.method == clock::Method::Step {
                    Console::open().say(&format!(
                        "time: synchronised to {}: {} by {} ms",
                        s.server,
                        s.method.as_str(),
                        round_div(s.sample.offset_ns, 1_000_000)
                    ));
                }
                synced = true;
                poll = (poll * 2).min(MAX_POLL);
            }
            Err(errors) => {
                if synced {
                    Console::open().line(&report::warn_line(&format!(
                        "time: lost every server: {}",
                        errors.join("; ")
                    )));
                }
                synced = false;
                poll = MIN_POLL;
            }
        }
    }
}

/// Host mode: `nodeagent ntp-query SERVER` asks once and prints the sample
/// as JSON, without touching the clock (tests point it at the lab's server).
pub fn query_tool(server: &str) -> Result<String, String> {
    let addrs = sntp::resolve(server).map_err(|e| chain(&e))?;
    let mut errors = Vec::new();
    for addr in addrs {
        match sntp::query(addr, Duration::from_secs(3)) {
            Ok(s) => {
                let v = serde_json::json!({
                    "server": addr.to_string(),
                    "offset_ns": s.offset_ns,
                    "delay_ns": s.delay_ns,
                    "stratum": s.stratum,
                    "leap": s.leap,
                    "reference_id": String::from_utf8_lossy(&s.reference_id),
                    "method": clock::method_for(s.offset_ns).as_str(),
                });
                return Ok(v.to_string());
            }
            Err(e) => errors.push(chain(&e)),
        }
    }
    Err(errors.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use contract::report::InterfaceReport;

    fn iface(ntp: &[&str]) -> InterfaceReport {
        InterfaceReport {
            name: "eth0".into(),
            mac: None,
            addresses: vec![],
            gateway: None,
            dns: vec![],
            lease_secs: None,
            ntp: ntp.iter().map(|s| s.parse().unwrap()).collect(),
            error: None,
        }
    }

    #[test]
    fn config_servers_win_over_dhcp_and_dhcp_ones_are_deduplicated() {
        let net = NetReport {
            interfaces: vec![iface(&["10.0.2.4", "10.0.2.5"]), iface(&["10.0.2.4"])],
            ..NetReport::default()
        };
        assert_eq!(
            servers(None, Some(&net)),
            (vec!["10.0.2.4".into(), "10.0.2.5".into()], "dhcp".into())
        );
        assert_eq!(servers(None, None).0, Vec::<String>::new());
        let c = MachineConfig::parse(
            "schema = 1\nhostname = \"w\"\nrole = \"worker\"\n[cluster]\nname = \"lab\"\n\
             [time]\nservers = [\"10.77.0.1\", \"ntp.example\"]\n\
             [api]\nclient_ca = \"x\"\ncertificate = \"x\"\nkey = \"x\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            servers(Some(&c), Some(&net)),
            (
                vec!["10.77.0.1".into(), "ntp.example".into()],
                "config".into()
            )
        );
    }

    #[test]
    fn the_report_says_what_happened() {
        let s = Synced {
            server: "10.77.0.1".into(),
            sample: contract::ntp::Sample {
                offset_ns: 788_918_400_123_600_000,
                delay_ns: 2_500_000,
                stratum: 1,
                leap: 0,
                root_delay_ns: 0,
                root_dispersion_ns: 0,
                reference_id: *b"LOCL",
            },
            method: clock::Method::Step,
            at_unix_ms: 1_767_225_600_000,
            at_ms: 9_500,
            mark_error: None,
        };
        let servers = vec!["10.77.0.1".to_string()];
        let r = report_for(&servers, "config", Some(&Ok(s.clone())), Some(9_000));
        assert!(r.synchronised && r.error.is_none());
        assert_eq!(r.offset_ms, Some(788_918_400_124));
        assert_eq!(r.method.as_deref(), Some("step"));
        assert_eq!(
            (r.stratum, r.delay_us, r.sync_ms),
            (Some(1), Some(2_500), Some(500))
        );
        let unmarked = Synced {
            mark_error: Some("adjtimex".into()),
            ..s
        };
        let r = report_for(&servers, "config", Some(&Ok(unmarked)), None);
        assert!(!r.synchronised && r.error.is_some());
        let r = report_for(&servers, "dhcp", None, None);
        assert!(!r.synchronised);
        assert!(r.error.unwrap().contains("within 10 s"));
        let r = report_for(
            &servers,
            "dhcp",
            Some(&Err(vec!["x: no answer".into()])),
            None,
        );
        assert!(r.error.unwrap().contains("x: no answer"));
        assert_eq!(round_div(-1_500_000, 1_000_000), -2);
        assert_eq!(round_div(1_499_999, 1_000_000), 1);
    }
}
