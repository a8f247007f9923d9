//! The lab's own network in QEMU (`nodeimg lab boot --net lab`): a worker
//! on the lab's bridge, inside the private network namespace the lab
//! makes, takes the static address its machine config gives it, and its
//! node API answers through the lab's loopback forward; nothing of the
//! namespace is left on this machine afterwards.
//!
//! Every packet stays inside that namespace or on loopback: the lab host
//! (10.77.0.1) and the node (10.77.0.10) exist only there.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
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

fn nodeimg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nodeimg"))
        .args(args)
        .output()
        .expect("run nodeimg")
}

fn ok(args: &[&str]) -> String {
    let out = nodeimg(args);
    assert!(
        out.status.success(),
        "nodeimg {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A loopback port nobody listens on now (the lab binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `nodeimg cluster init` + `cluster config --address NODE_IP`, then the
/// lab NIC's static address and the lab host as time server added to the
/// config through the contract's own model. Returns (admin identity,
/// machine config).
fn cluster(dir: &Path, host: &str) -> (PathBuf, PathBuf) {
    let cdir = dir.join("cluster");
    ok(&["cluster", "init", "--out", s(&cdir)]);
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
        "--cluster-name",
        "lab",
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
    let (admin, cfg) = cluster(dir.path(), "worker-lab");
    let port = free_port();
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
