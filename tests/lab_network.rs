//! The lab's own network in QEMU (`nodeimg lab boot --net lab`): a worker
//! on the lab's bridge, inside the private network namespace the lab
//! makes, takes the static address its machine config gives it, and its
//! node API answers through the lab's loopback forward; nothing of the
//! namespace is left on this machine afterwards.
//!
//! Time: a node that powers on with its hardware clock 25 years behind
//! (`--rtc-base 2001-01-01T00:00:00`) steps it from the lab host's NTP
//! server before its services start, and its clock then agrees with this
//! machine's; and the agent's SNTP client, run on this machine
//! (`nodeagent ntp-query`), reads the lab's server over loopback.
//!
//! Every packet stays inside that namespace or on loopback: the lab host
//! (10.77.0.1) and the node (10.77.0.10) exist only there.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{free_port, nodeimg, ok, s};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use contract::config::{Interface, MachineConfig};
use nodeimg::lab::network;
use serde_json::Value;

/// The node's address on the lab network.
const NODE_IP: &str = "10.77.0.10";

fn built() -> &'static support::Built {
    static BUILT: OnceLock<support::Built> = OnceLock::new();
    support::built_once(&BUILT, &["--format", "none"])
}

/// `nodeimg cluster init` + `cluster config --address NODE_IP`, then the
/// lab NIC's static address and the lab host as time server added to the
/// config through the contract's own model. Returns (admin identity,
/// machine config).
fn cluster(dir: &Path, host: &str) -> (PathBuf, PathBuf) {
    let cdir = dir.join("cluster");
    ok(&[
        "cluster",
        "init",
        "--name",
        "lab",
        "--control-plane-endpoint",
        "10.77.0.2:6443",
        "--out",
        s(&cdir),
    ]);
    let cfg = dir.join(format!("{host}.toml"));
    ok(&[
        "cluster",
        "config",
        s(&cdir),
        "--role",
        "worker",
        "--hostname",
        host,
        "--address",
        NODE_IP,
        "--out",
        s(&cfg),
    ]);
    let text = std::fs::read_to_string(&cfg).unwrap();
    let mut c = MachineConfig::from_toml(&text, s(&cfg)).unwrap();
    c.network.interfaces = vec![Interface {
        mac: Some(network::mac(0)),
        addresses: vec![format!("{NODE_IP}/24")],
        ..Interface::default()
    }];
    c.time.servers = vec![network::HOST.to_string()];
    std::fs::write(&cfg, c.to_toml().unwrap()).unwrap();
    ok(&["config", "check", s(&cfg)]);
    (cdir.join("admin.nodeconfig"), cfg)
}

/// An address the node takes while it runs (a config applied live).
const SECOND_IP: &str = "10.77.0.13";

/// This machine's time a day from now, as QEMU's `-rtc base=` takes it.
fn tomorrow() -> String {
    let t = time::OffsetDateTime::now_utc() + time::Duration::days(1);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Names of this process's (host) network links.
fn host_links() -> String {
    std::fs::read_to_string("/proc/net/dev").unwrap()
}

fn named_netns() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_worker_on_the_lab_network_has_its_static_address_and_its_api_answers() {
    let netns_before = named_netns();
    let dir = tempfile::tempdir().unwrap();
    let (admin, with_time) = cluster(dir.path(), "worker-lab");
    // Boots a day ahead (the API's TLS still takes a clock that is late
    // for the certificates' start, not one before it) with no time
    // server; one is applied through the API.
    let text = std::fs::read_to_string(&with_time).unwrap();
    let mut c = MachineConfig::from_toml(&text, s(&with_time)).unwrap();
    c.time.servers.clear();
    let cfg = dir.path().join("no-time.toml");
    std::fs::write(&cfg, c.to_toml().unwrap()).unwrap();
    let port = free_port();
    let second_port = free_port();
    let args: Vec<String> = [
        "--net",
        "lab",
        "--address",
        &format!("{NODE_IP}/24"),
        "--config",
        s(&cfg),
        "--api-port",
        &port.to_string(),
        "--wait-shutdown",
        "400",
        "--rtc-base",
        &tomorrow(),
        "--lab-forward",
        &format!("{second_port}={SECOND_IP}"),
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    let out = built().out.clone();
    let lab = std::thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        support::lab_boot_serial(&out, &args)
    });
    let addr = format!("127.0.0.1:{port}");
    let node = |args: &[&str]| {
        let mut all = vec![
            "node",
            "--node",
            &addr,
            "--nodeconfig",
            s(&admin),
            "--server-name",
            NODE_IP,
        ];
        all.extend(args);
        nodeimg(&all)
    };

    // the API answers once the node is up (it listens after its report)
    let deadline = Instant::now() + Duration::from_secs(300);
    let status: Value = loop {
        let out = node(&["status", "--json", "--timeout", "10"]);
        if out.status.success() {
            break serde_json::from_slice(&out.stdout).unwrap();
        }
        assert!(
            !lab.is_finished() && Instant::now() < deadline,
            "the node API never answered through the lab's forward: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_secs(2));
    };
    assert_eq!(status["ready"], true, "{status:#}");
    assert_eq!(status["hostname"], "worker-lab", "{status:#}");
    let eth = &status["network"]["interfaces"][0];
    assert_eq!(eth["mac"], network::mac(0), "{status:#}");
    assert_eq!(
        eth["addresses"],
        serde_json::json!([{ "address": "10.77.0.10/24", "source": "static" }]),
        "{status:#}"
    );
    assert!(eth.get("error").is_none(), "{status:#}");

    // No time server: the clock is the hardware's, a day ahead. Applying
    // a config that names the lab host sets it right, live.
    let host_ms = |_: ()| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    assert!(status.get("time").is_none(), "{status:#}");
    let skew = status["clock_unix_ms"].as_i64().unwrap() - host_ms(());
    assert!(
        (80_000_000..90_000_000).contains(&skew),
        "the node is not a day ahead ({skew} ms): {status:#}"
    );
    let out = node(&["apply-config", s(&with_time)]);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("applied    time"), "{said}");
    let out = node(&["status", "--json"]);
    let now: Value = serde_json::from_slice(&out.stdout).unwrap();
    let skew = host_ms(()) - now["clock_unix_ms"].as_i64().unwrap();
    assert!(
        skew.abs() < 5_000,
        "the clock is {skew} ms off after the apply: {now:#}"
    );

    // A second static address, applied live: the node answers on it.
    let second = format!("127.0.0.1:{second_port}");
    let on_second = |args: &[&str]| {
        let mut all = vec!["node", "--node", &second, "--nodeconfig", s(&admin)];
        all.extend(["--server-name", NODE_IP, "--timeout", "10"]);
        all.extend(args);
        nodeimg(&all)
    };
    assert!(
        !on_second(&["status"]).status.success(),
        "{SECOND_IP} answers already"
    );
    let mut c =
        MachineConfig::from_toml(&std::fs::read_to_string(&with_time).unwrap(), "t").unwrap();
    c.network.interfaces[0]
        .addresses
        .push(format!("{SECOND_IP}/24"));
    let two = dir.path().join("two-addresses.toml");
    std::fs::write(&two, c.to_toml().unwrap()).unwrap();
    let out = node(&["apply-config", s(&two)]);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("applied    network"), "{said}");
    let out = on_second(&["status", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let now: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        now["network"]["interfaces"][0]["addresses"],
        serde_json::json!([
            { "address": "10.77.0.10/24", "source": "static" },
            { "address": "10.77.0.13/24", "source": "static" }
        ]),
        "{now:#}"
    );

    // while the lab runs, its network is in its own namespace only
    let here = host_links();
    assert!(!here.contains(network::BRIDGE), "{here}");
    assert!(!here.contains(&network::tap_name(0)), "{here}");

    let out = node(&["shutdown"]);
    assert!(out.status.success(), "{out:?}");
    let (code, report, _serial) = lab.join().unwrap();
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["shutdown"], "already_exited", "{report:#}");
    let setup_ms = report["lab_network"]["setup_ms"].as_u64().unwrap();
    eprintln!("lab network set up in {setup_ms} ms");
    // nothing left behind: no named namespace, no link on this machine
    assert_eq!(named_netns(), netns_before);
    let here = host_links();
    assert!(!here.contains(network::BRIDGE), "{here}");
}

/// 20 years in milliseconds: the skewed clock is 25 years behind.
const TWENTY_YEARS_MS: i64 = 20 * 365 * 86_400 * 1000;

#[test]
fn a_node_that_boots_in_2001_steps_its_clock_from_the_lab_host() {
    let dir = tempfile::tempdir().unwrap();
    let (_admin, cfg) = cluster(dir.path(), "worker-time");
    let (code, r) = support::lab_boot(
        &built().out,
        &[
            "--net",
            "lab",
            "--config",
            s(&cfg),
            "--rtc-base",
            "2001-01-01T00:00:00",
        ],
    );
    assert_eq!((code, &r["ready"]), (0, &Value::Bool(true)), "{r:#}");
    let t = &r["time"];
    assert_eq!(t["synchronised"], true, "{r:#}");
    assert_eq!(t["server"], network::HOST.to_string(), "{r:#}");
    assert_eq!(t["source"], "config", "{r:#}");
    assert_eq!(t["stratum"], network::ntp_server::STRATUM, "{r:#}");
    assert_eq!(t["method"], "step", "{r:#}");
    let offset = t["offset_ms"].as_i64().unwrap();
    assert!(offset > TWENTY_YEARS_MS, "an offset of years: {r:#}");
    assert!(t.get("error").is_none(), "{r:#}");
    assert!(r.get("warnings").is_none(), "{r:#}");
    // the node's clock at its report, against this machine's when the lab
    // read that report: both from their own clocks, seconds apart at most
    let synced_unix = t["synced_at_unix_ms"].as_i64().unwrap();
    let synced_up = t["synced_at_ms"].as_i64().unwrap();
    let report_up = r["stage_ms"]["report"].as_i64().unwrap();
    let node_at_report = synced_unix + (report_up - synced_up);
    let host_at_report = r["received_unix_ms"].as_i64().unwrap();
    let skew = node_at_report - host_at_report;
    assert!(
        skew.abs() < 3000,
        "node and host clocks differ by {skew} ms: {r:#}"
    );
    // before the services: TLS and containerd start on the right clock
    assert!(
        r["stage_ms"]["time"].as_u64().unwrap() <= r["stage_ms"]["services"].as_u64().unwrap(),
        "{r:#}"
    );
    assert!(
        r["lab_network"]["ntp_answered"].as_u64().unwrap() >= 1,
        "{r:#}"
    );
    eprintln!(
        "clock synchronised {} ms after the network was up (offset {offset} ms, round trip {} us); lab network set up in {} ms; node vs host clock {skew} ms",
        t["sync_ms"], t["delay_us"], r["lab_network"]["setup_ms"]
    );
}

/// The lab's NTP server on loopback, asked by the agent's own client
/// (the static `nodeagent`, run on this machine in host mode).
#[test]
fn the_agents_client_reads_the_labs_time_server_over_loopback() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let server = network::ntp_server::NtpServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = server.local_addr().unwrap();
    let answered = server.answered.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let serving = std::thread::spawn(move || server.serve(&s2));
    let out = Command::new(support::agent())
        .args(["ntp-query", &addr.to_string()])
        .output()
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    serving.join().unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["stratum"], network::ntp_server::STRATUM, "{v}");
    assert_eq!(v["reference_id"], "LOCL", "{v}");
    assert_eq!(v["leap"], 0, "{v}");
    // the same clock on both sides: no offset to speak of
    assert!(v["offset_ns"].as_i64().unwrap().abs() < 100_000_000, "{v}");
    assert!(v["delay_ns"].as_i64().unwrap() < 1_000_000_000, "{v}");
    assert_eq!(v["method"], "slew", "{v}");
    assert_eq!(answered.load(Ordering::Relaxed), 1);
}

/// An NTP client that shares no code with ours (Python's ntplib, from the
/// venv scripts/setup.sh makes) asks the lab's server: mode 4, the
/// version it asked in, stratum 1 `LOCL` (which ntplib knows by name), and an offset of about nothing
/// against this same clock (a wrong origin or timestamp would show here).
#[test]
fn an_independent_ntp_client_accepts_the_labs_server() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let server = network::ntp_server::NtpServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = server.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let serving = std::thread::spawn(move || server.serve(&s2));
    let script = format!(
        "import json, ntplib\n\
         out = []\n\
         for v in (3, 4):\n\
         \x20   r = ntplib.NTPClient().request('127.0.0.1', version=v, port={port}, timeout=5)\n\
         \x20   out.append(dict(version=r.version, mode=r.mode, stratum=r.stratum, leap=r.leap,\n\
         \x20       offset=r.offset, delay=r.delay, ref=ntplib.ref_id_to_text(r.ref_id, r.stratum),\n\
         \x20       order=r.orig_time <= r.recv_time <= r.tx_time <= r.dest_time))\n\
         print(json.dumps(out))\n"
    );
    let out = Command::new(support::venv_tool("python"))
        .args(["-c", &script])
        .output()
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    serving.join().unwrap();
    assert!(out.status.success(), "{out:?}");
    let answers: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    for (a, version) in answers.iter().zip([3, 4]) {
        assert_eq!(a["version"], version, "{a}");
        assert_eq!(a["mode"], 4, "{a}");
        assert_eq!(a["stratum"], network::ntp_server::STRATUM, "{a}");
        assert_eq!(a["leap"], 0, "{a}");
        // ntplib names RFC 4330's reference ids: LOCL is this
        assert_eq!(a["ref"], "uncalibrated local clock", "{a}");
        assert_eq!(a["order"], true, "T1 <= T2 <= T3 <= T4: {a}");
        assert!(a["offset"].as_f64().unwrap().abs() < 0.1, "{a}");
        assert!(a["delay"].as_f64().unwrap() < 1.0, "{a}");
    }
}
