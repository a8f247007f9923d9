//! A multi-node lab in QEMU (`nodeimg lab up qemu/pair.toml`): both
//! workers boot on one lab network with the static addresses their
//! rendered configs give them, their node APIs answer through the lab's
//! loopback forwards, and the VMs outlive `lab up`. A node killed hard and
//! started again comes back with its state (boot 2); started on a blank
//! disk it is a new machine (boot 1). A console line showing a kernel
//! `BUG:` is found by the lab's scan and fails `lab down`, which leaves no
//! QEMU, no namespace and no link behind.
//!
//! One lab bring-up, many checks: each boot costs seconds under TCG.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{json, nodeimg, ok, s, text, LabDown};

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nodeimg::lab::network;
use serde_json::Value;

fn built() -> &'static support::Built {
    static BUILT: OnceLock<support::Built> = OnceLock::new();
    support::built_once(&BUILT, &["--format", "none"])
}

fn node<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .unwrap_or_else(|| panic!("no node {name}: {status:#}"))
}

fn status(run: &Path) -> Value {
    json(&ok(&["lab", "status", "--run-dir", s(run), "--json"]))
}

/// Whether `pid` runs: exists and is not a zombie (an orphan's exit
/// waits for whatever reaps orphans here, which may be slow or nothing).
fn pid_alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            state != Some("Z")
        })
        .unwrap_or(false)
}

/// Processes whose network namespace is `netns` (`net:[INODE]`).
fn in_netns(netns: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            std::fs::read_link(e.path().join("ns/net"))
                .map(|l| l.to_string_lossy() == netns)
                .unwrap_or(false)
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The node's API through the lab's forward, as the admin.
fn api_status(admin: &Path, port: u64, address: &str) -> Value {
    let addr = format!("127.0.0.1:{port}");
    json(&ok(&[
        "node",
        "--node",
        &addr,
        "--nodeconfig",
        s(admin),
        "--server-name",
        address,
        "status",
        "--json",
        "--timeout",
        "20",
    ]))
}

#[test]
fn a_pair_comes_up_survives_kill_and_start_and_goes_down_clean() {
    let host_links_before = std::fs::read_to_string("/proc/net/dev").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cluster");
    ok(&[
        "cluster",
        "init",
        "--name",
        "pair",
        "--control-plane-endpoint",
        "10.77.0.2:6443",
        "--out",
        s(&cluster),
    ]);
    let admin = cluster.join("admin.nodeconfig");
    // the committed lab, its image pointed at this test's build
    let committed = std::fs::read_to_string(support::repo().join("qemu/pair.toml")).unwrap();
    assert!(committed.contains("image = \"out/worker\""), "{committed}");
    let lab = dir.path().join("pair.toml");
    std::fs::write(
        &lab,
        committed.replace(
            "image = \"out/worker\"",
            &format!("image = {:?}", s(&built().out)),
        ),
    )
    .unwrap();
    let run = dir.path().join("run");
    let _down = LabDown(run.clone());

    let t = Instant::now();
    let out = support::lab_up(&lab, &cluster, &run, 400);
    let up_s = t.elapsed().as_secs_f64();
    assert_eq!(out.status.code(), Some(0), "lab up: {}", text(&out));
    let up = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(up["name"], "pair", "{up:#}");
    assert!(up["console_hits"].as_array().unwrap().is_empty(), "{up:#}");
    let mut api_ports = Vec::new();
    for (i, (name, address)) in [("worker-1", "10.77.0.11"), ("worker-2", "10.77.0.12")]
        .into_iter()
        .enumerate()
    {
        let n = node(&up, name);
        let r = &n["report"];
        assert_eq!(n["running"], true, "{n:#}");
        assert_eq!(r["ready"], true, "{n:#}");
        assert_eq!(r["hostname"], name, "{n:#}");
        assert_eq!(r["state"]["boot_count"], 1, "{n:#}");
        let eth = r["network"]["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["mac"] == network::mac(i))
            .unwrap_or_else(|| panic!("no lab NIC: {n:#}"));
        assert_eq!(
            eth["addresses"],
            serde_json::json!([{ "address": format!("{address}/24"), "source": "static" }]),
            "{n:#}"
        );
        // both on the one lab network: both set their clocks from its host
        assert_eq!(r["time"]["server"], network::HOST.to_string(), "{n:#}");
        assert_eq!(r["time"]["synchronised"], true, "{n:#}");
        assert!(
            Path::new(n["serial_log"].as_str().unwrap()).is_file(),
            "{n:#}"
        );
        let (api, etcd) = (
            n["api_port"].as_u64().unwrap(),
            n["etcd_port"].as_u64().unwrap(),
        );
        assert!(api > 0 && etcd > 0 && api != etcd, "{n:#}");
        // the etcd forward is bound on loopback (etcd itself is not on a worker)
        std::net::TcpStream::connect(("127.0.0.1", etcd as u16)).unwrap();
        api_ports.push(api);
    }
    assert_ne!(api_ports[0], api_ports[1]);
    eprintln!("lab up: two workers reported in {up_s:.1} s");

    // `lab up` has returned and the VMs still run: each API answers
    // through its own forward
    for (name, address, port) in [
        ("worker-1", "10.77.0.11", api_ports[0]),
        ("worker-2", "10.77.0.12", api_ports[1]),
    ] {
        let st = api_status(&admin, port, address);
        assert_eq!(st["ready"], true, "{st:#}");
        assert_eq!(st["hostname"], name, "{st:#}");
    }
    // the namespace's links are not on this machine
    let here = std::fs::read_to_string("/proc/net/dev").unwrap();
    for link in [
        network::BRIDGE,
        &network::tap_name(0),
        &network::tap_name(1),
    ] {
        assert!(!here.contains(link), "{link} on the host: {here}");
    }

    // a hard power-off
    let st = status(&run);
    let w2_pid = node(&st, "worker-2")["pid"].as_u64().unwrap();
    ok(&["lab", "kill", "worker-2", "--run-dir", s(&run)]);
    let st = status(&run);
    let w2 = node(&st, "worker-2");
    assert_eq!(w2["running"], false, "{w2:#}");
    assert!(w2["pid"].is_null(), "{w2:#}");
    assert!(!pid_alive(w2_pid), "QEMU {w2_pid} still runs");
    assert_eq!(node(&st, "worker-1")["running"], true, "{st:#}");
    // killing a stopped node, or a node that is not there, is refused
    let out = nodeimg(&["lab", "kill", "worker-2", "--run-dir", s(&run)]);
    assert!(
        !out.status.success() && text(&out).contains("not running"),
        "{}",
        text(&out)
    );
    let out = nodeimg(&["lab", "kill", "worker-9", "--run-dir", s(&run)]);
    assert!(
        !out.status.success() && text(&out).contains("no node"),
        "{}",
        text(&out)
    );

    // started again: the same machine, its state disk kept
    let t = Instant::now();
    let again = json(&ok(&[
        "lab",
        "start",
        "worker-2",
        "--run-dir",
        s(&run),
        "--json",
    ]));
    let restart_s = t.elapsed().as_secs_f64();
    assert_eq!(again["report"]["ready"], true, "{again:#}");
    assert_eq!(again["report"]["state"]["boot_count"], 2, "{again:#}");
    assert_eq!(again["report"]["state"]["formatted"], false, "{again:#}");
    assert_eq!(again["starts"], 2, "{again:#}");
    let w2_dir = run.join("nodes/worker-2");
    assert!(
        w2_dir.join("serial.1.log").is_file(),
        "the first boot's log is kept"
    );
    let st = api_status(&admin, api_ports[1], "10.77.0.12");
    assert_eq!(st["state"]["boot_count"], 2, "{st:#}");

    // on a blank disk: a new machine
    ok(&["lab", "kill", "worker-2", "--run-dir", s(&run)]);
    let blank = json(&ok(&[
        "lab",
        "start",
        "worker-2",
        "--blank-disk",
        "--run-dir",
        s(&run),
        "--json",
    ]));
    assert_eq!(blank["report"]["ready"], true, "{blank:#}");
    assert_eq!(blank["report"]["state"]["boot_count"], 1, "{blank:#}");
    // a new file system on the new disk
    assert_eq!(blank["report"]["state"]["formatted"], true, "{blank:#}");
    eprintln!("lab start: worker-2 reported again in {restart_s:.1} s");

    // a kernel BUG on worker-1's console (planted in the serial log the
    // lab reads, as QEMU writes it)
    let st = status(&run);
    assert!(st["console_hits"].as_array().unwrap().is_empty(), "{st:#}");
    let planted = "[  999.000001] BUG: planted by tests/lab_up.rs";
    let log = PathBuf::from(node(&st, "worker-1")["serial_log"].as_str().unwrap());
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    writeln!(f, "{planted}").unwrap();
    drop(f);
    let deadline = Instant::now() + Duration::from_secs(20);
    let st = loop {
        let st = status(&run);
        if !st["console_hits"].as_array().unwrap().is_empty() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "the planted line was not found: {st:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        st["console_hits"],
        serde_json::json!([{ "node": "worker-1", "marker": "BUG:", "line": planted }]),
        "{st:#}"
    );
    let summary = ok(&["lab", "status", "--run-dir", s(&run)]);
    assert!(summary.contains(planted), "{summary}");

    // down: fails for the planted line, naming node and line; leaves nothing
    let supervisor = st["supervisor_pid"].as_u64().unwrap();
    let netns = st["netns"].as_str().unwrap().to_string();
    assert!(netns.starts_with("net:["), "{st:#}");
    assert!(
        !in_netns(&netns).is_empty(),
        "the lab's namespace has no process"
    );
    let qemus: Vec<u64> = st["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["pid"].as_u64())
        .collect();
    assert_eq!(qemus.len(), 2, "{st:#}");
    let out = nodeimg(&["lab", "down", "--run-dir", s(&run)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("worker-1") && stderr.contains(planted),
        "{}",
        text(&out)
    );
    assert!(!pid_alive(supervisor), "the supervisor still runs");
    for pid in qemus {
        assert!(!pid_alive(pid), "QEMU {pid} still runs");
    }
    assert_eq!(
        in_netns(&netns),
        Vec::<String>::new(),
        "the namespace lives on"
    );
    assert!(!run.join("lab.sock").exists());
    let here = std::fs::read_to_string("/proc/net/dev").unwrap();
    assert_eq!(
        link_names(&here),
        link_names(&host_links_before),
        "links changed on this machine"
    );
    // the last state stays readable, and says down
    let out = nodeimg(&["lab", "status", "--run-dir", s(&run), "--json"]);
    let last = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(last["down"], true, "{last:#}");
    assert!(last["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|n| n["running"] == false));
    // every boot's serial log is kept
    for f in [
        "nodes/worker-1/serial.log",
        "nodes/worker-2/serial.log",
        "nodes/worker-2/serial.2.log",
    ] {
        assert!(run.join(f).is_file(), "{f}");
    }
}

fn link_names(dev: &str) -> Vec<String> {
    let mut v: Vec<String> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|n| n.trim().to_string())
        .collect();
    v.sort();
    v
}
