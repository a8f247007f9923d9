//! The machine config and the services in QEMU, judged by the node's own
//! report: the config arrives by fw_cfg, by a config drive, from a
//! command-line URL the lab serves (its sha256 pin checked before any
//! parsing), or from the copy an earlier boot stored; a bad config is refused whole, naming the
//! key or the mismatch; a static address from the config is applied; the
//! supervisor restarts a killed containerd and calls a daemon that keeps
//! dying a crash loop (the documented test switch `nodeimg.test_kill`).

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::s;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;
use support::lab_boot;

fn built() -> &'static support::Built {
    static BUILT: OnceLock<support::Built> = OnceLock::new();
    support::built_once(&BUILT, &["--format", "none"])
}

/// The API trust of a node, from the contract crate's openssl-made test keys.
fn api_section() -> String {
    let dir = support::repo().join("contract/testdata");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    format!(
        "[api]\nclient_ca = '''\n{}'''\ncertificate = '''\n{}'''\nkey = '''\n{}'''\n",
        read("ca.crt"),
        read("node.crt"),
        read("node.key")
    )
}

/// A worker config named `host`, plus `extra` TOML before the `[api]` table.
fn config(dir: &Path, name: &str, host: &str, role: &str, extra: &str) -> PathBuf {
    let text = format!(
        "schema = 1\nhostname = \"{host}\"\nrole = \"{role}\"\n\n[cluster]\nname = \"lab\"\n\n{extra}\n{}",
        api_section()
    );
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn config_comes_by_drive_then_from_the_stored_copy_then_by_fw_cfg() {
    let b = built();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "w1.toml", "worker-1", "worker", "");
    let state = dir.path().join("state.img");

    let (code, first) = lab_boot(&b.out, &["--config-drive", s(&cfg), "--state", s(&state)]);
    assert_eq!(
        (code, &first["ready"]),
        (0, &Value::Bool(true)),
        "{first:#}"
    );
    assert_eq!(first["config"]["source"], "config-drive", "{first:#}");
    assert_eq!(first["config"]["device"], "/dev/vdd", "{first:#}");
    assert_eq!(first["hostname"], "worker-1", "{first:#}");
    let sha = first["config"]["sha256"].as_str().unwrap().to_string();
    let text = std::fs::read(&cfg).unwrap();
    assert_eq!(sha, format!("sha256:{}", support::sha256_hex(&text)));

    // No source at all: the copy the first boot stored on the state disk.
    let (code, second) = lab_boot(&b.out, &["--state", s(&state)]);
    assert_eq!(
        (code, &second["ready"]),
        (0, &Value::Bool(true)),
        "{second:#}"
    );
    assert_eq!(second["config"]["source"], "stored", "{second:#}");
    assert_eq!(second["config"]["sha256"], sha.as_str(), "{second:#}");
    assert_eq!(second["hostname"], "worker-1", "{second:#}");

    let other = config(dir.path(), "w2.toml", "worker-2", "worker", "");
    let (code, third) = lab_boot(&b.out, &["--config", s(&other)]);
    assert_eq!(
        (code, &third["ready"]),
        (0, &Value::Bool(true)),
        "{third:#}"
    );
    assert_eq!(third["config"]["source"], "fw-cfg", "{third:#}");
    assert_eq!(third["hostname"], "worker-2", "{third:#}");
}

#[test]
fn config_comes_from_a_command_line_url_then_from_the_stored_copy() {
    let b = built();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "u1.toml", "worker-url", "worker", "");
    let sha = format!(
        "sha256:{}",
        support::sha256_hex(&std::fs::read(&cfg).unwrap())
    );
    let state = dir.path().join("state.img");

    let (code, first, serial) =
        support::lab_boot_serial(&b.out, &["--config-url", s(&cfg), "--state", s(&state)]);
    assert_eq!(
        (code, &first["ready"]),
        (0, &Value::Bool(true)),
        "{first:#}"
    );
    assert_eq!(first["config"]["source"], "url", "{first:#}");
    assert_eq!(
        first["config"]["url"], "http://10.0.2.100/config.toml",
        "{first:#}"
    );
    assert_eq!(first["config"]["sha256"], sha.as_str(), "{first:#}");
    assert_eq!(first["hostname"], "worker-url", "{first:#}");
    // the network came up before the fetch (DHCP on every NIC), once
    let eth = &first["network"]["interfaces"][0];
    assert_eq!(
        eth["addresses"],
        serde_json::json!([{ "address": "10.0.2.15/24", "source": "dhcp" }]),
        "{first:#}"
    );
    assert!(first.get("warnings").is_none(), "{first:#}");
    let serial = std::fs::read_to_string(serial).unwrap();
    assert!(
        serial.contains("sha256 matches"),
        "no fetch line on the console"
    );
    assert_eq!(
        serial.matches("network ok").count(),
        1,
        "network configured twice"
    );

    // No source at all: the copy the first boot stored.
    let (code, second) = lab_boot(&b.out, &["--state", s(&state)]);
    assert_eq!(
        (code, &second["ready"]),
        (0, &Value::Bool(true)),
        "{second:#}"
    );
    assert_eq!(second["config"]["source"], "stored", "{second:#}");
    assert_eq!(second["config"]["sha256"], sha.as_str(), "{second:#}");
    assert_eq!(second["hostname"], "worker-url", "{second:#}");
}

#[test]
fn a_url_config_with_the_wrong_hash_is_refused_before_parsing() {
    let b = built();
    let dir = tempfile::tempdir().unwrap();
    // not TOML: had it been parsed, the error would be a TOML one
    let path = dir.path().join("garbage.toml");
    std::fs::write(&path, "this is [[ not toml = = =\n").unwrap();
    let actual = support::sha256_hex(&std::fs::read(&path).unwrap());
    let wrong = support::sha256_hex(b"the config the operator meant");
    let (code, r, serial) = support::lab_boot_serial(
        &b.out,
        &["--config-url", s(&path), "--config-url-hash", &wrong],
    );
    assert_ne!(code, 0, "{r:#}");
    assert_eq!(r["ready"], false, "{r:#}");
    let error = r["error"].as_str().unwrap_or("");
    assert!(error.starts_with("config: "), "{r:#}");
    let expected =
        format!("http://10.0.2.100/config.toml: sha256 mismatch (expected {wrong}, got {actual})");
    assert!(error.contains(&expected), "{r:#}");
    assert!(
        !error.contains("TOML") && !error.contains(":1:"),
        "parsed: {r:#}"
    );
    assert!(r.get("services").is_none(), "{r:#}");
    let serial = std::fs::read_to_string(serial).unwrap();
    let line = serial
        .lines()
        .find(|l| l.contains("NODEIMG-ERROR config: "))
        .expect("no NODEIMG-ERROR config line");
    assert!(line.contains(&expected), "{line}");
}

#[test]
fn no_config_boots_and_says_none() {
    let b = built();
    let (code, r) = lab_boot(&b.out, &[]);
    assert_eq!((code, &r["ready"]), (0, &Value::Bool(true)), "{r:#}");
    assert_eq!(r["config"]["source"], "none", "{r:#}");
}

/// Boots with `cfg` by fw_cfg; the node must refuse it with a
/// `NODEIMG-ERROR config:` line naming every `needle`, and not be ready.
fn refused(cfg: &Path, needles: &[&str]) {
    let b = built();
    let (code, r, serial) = support::lab_boot_serial(&b.out, &["--config", s(cfg)]);
    assert_ne!(code, 0, "{r:#}");
    assert_eq!(r["ready"], false, "{r:#}");
    let error = r["error"].as_str().unwrap_or("");
    assert!(error.starts_with("config: "), "{r:#}");
    for n in needles {
        assert!(error.contains(n), "error lacks {n:?}: {r:#}");
    }
    assert!(
        r.get("services").is_none(),
        "a refused config started services: {r:#}"
    );
    let serial = std::fs::read_to_string(serial).unwrap();
    assert!(serial.contains("NODEIMG-ERROR config: "), "no error line");
}

#[test]
fn malformed_toml_is_refused_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "schema = 1\nhostname = \"w\nrole = \"worker\"\n").unwrap();
    refused(&path, &["fw_cfg", ":2:"]);
}

#[test]
fn an_unknown_key_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "typo.toml",
        "w",
        "worker",
        "[time]\nserver = [\"10.0.0.1\"]\n",
    );
    refused(&cfg, &["server"]);
}

#[test]
fn a_control_plane_config_on_a_worker_image_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "cp.toml", "cp-1", "control-plane", "");
    refused(&cfg, &["role", "etcd-server"]);
}

#[test]
fn a_static_address_from_the_config_is_applied() {
    let b = built();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "static.toml",
        "worker-s",
        "worker",
        "[[network.interfaces]]\nmac = \"52:54:00:12:34:56\"\naddresses = [\"10.0.2.20/24\"]\ngateway = \"10.0.2.2\"\ndns = [\"10.0.2.3\"]\n",
    );
    let (code, r) = lab_boot(&b.out, &["--net", "user", "--config", s(&cfg)]);
    assert_eq!((code, &r["ready"]), (0, &Value::Bool(true)), "{r:#}");
    let eth = &r["network"]["interfaces"][0];
    assert_eq!(
        eth["addresses"],
        serde_json::json!([{ "address": "10.0.2.20/24", "source": "static" }]),
        "{r:#}"
    );
    assert_eq!(eth["gateway"], "10.0.2.2", "{r:#}");
    assert_eq!(eth["dns"][0], "10.0.2.3", "{r:#}");
}

#[test]
fn a_killed_containerd_is_restarted_and_counted() {
    let b = built();
    let (code, r) = lab_boot(&b.out, &["--append", "nodeimg.test_kill=containerd"]);
    assert_eq!((code, &r["ready"]), (0, &Value::Bool(true)), "{r:#}");
    let svc = &r["services"][0];
    assert_eq!(svc["name"], "containerd");
    assert_eq!(svc["state"], "ready", "{r:#}");
    assert_eq!(svc["restarts"], 1, "{r:#}");
    assert_eq!(svc["last_exit"], "signal 9", "{r:#}");
    assert_eq!(
        r["runtime"]["ok"], true,
        "the restarted containerd works: {r:#}"
    );
}

#[test]
fn a_service_that_keeps_dying_is_a_crash_loop_and_the_node_is_not_ready() {
    let b = built();
    let (code, r) = lab_boot(&b.out, &["--append", "nodeimg.test_kill=containerd:always"]);
    assert_ne!(code, 0);
    assert_eq!(r["ready"], false, "{r:#}");
    let svc = &r["services"][0];
    assert_eq!(svc["state"], "crash-loop", "{r:#}");
    assert!(r["error"].as_str().unwrap().contains("crash loop"), "{r:#}");
}
