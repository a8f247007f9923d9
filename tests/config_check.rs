//! `nodeimg config check` through the real binary: a good config passes,
//! and each bad one exits 1 naming the file and the key (and the line, for
//! TOML errors). Hermetic: keys are the contract crate's test keys, the
//! image manifest is synthetic.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

const CA_CRT: &str = include_str!("../contract/testdata/ca.crt");
const NODE_CRT: &str = include_str!("../contract/testdata/node.crt");
const NODE_KEY: &str = include_str!("../contract/testdata/node.key");

fn worker() -> String {
    format!(
        r#"schema = 1
hostname = "worker-1"
role = "worker"

[cluster]
name = "lab"

[[network.interfaces]]
mac = "52:54:00:12:34:56"
addresses = ["10.0.0.2/24"]
gateway = "10.0.0.1"
dns = ["10.0.0.1"]

[time]
servers = ["10.0.0.1"]

[containerd.registry_credentials."mirror.lab"]
username = "node"
password = "hunter2"

[api]
client_ca = '''
{CA_CRT}'''
certificate = '''
{NODE_CRT}'''
key = '''
{NODE_KEY}'''
"#
    )
}

/// Runs `nodeimg config check` on `text` (written as `node.toml`) with `args`.
fn check(dir: &Path, text: &str, args: &[&str]) -> (i32, String) {
    let file = dir.join("node.toml");
    std::fs::write(&file, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nodeimg"))
        .args(["config", "check"])
        .arg(&file)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stdout.contains("hunter2") && !stderr.contains("hunter2"),
        "a secret was printed: {stdout}{stderr}"
    );
    (out.status.code().unwrap_or(-1), stdout)
}

/// A manifest.json of an image whose packages are `packages`.
fn manifest(dir: &Path, name: &str, packages: &[&str]) -> String {
    let packages: Vec<_> = packages
        .iter()
        .map(|p| {
            serde_json::json!({
                "name": p, "version": "1.0", "sha256": "00".repeat(32),
                "origin": format!("debian:trixie/pool/main/{p}.deb"), "role": "rootfs",
            })
        })
        .collect();
    let m = serde_json::json!({
        "schema": 1, "name": name, "version": "0.1.0", "arch": "amd64",
        "build": {
            "nodeimg_version": "0.1.0", "inputs": [], "source_date_epoch": 0,
            "lock_checksum": "00", "debian_suite": "trixie", "layers": ["base"],
        },
        "artifacts": [],
        "verity": {
            "root_hash": "00".repeat(32), "salt": "", "hash_algorithm": "sha256",
            "data_block_size": 4096, "hash_block_size": 4096, "data_blocks": 1,
            "hash_offset": 0, "hash_start_block": 1, "uuid": null,
        },
        "packages": packages,
    });
    let path = dir.join(format!("{name}.manifest.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn a_good_worker_config_passes() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = check(dir.path(), &worker(), &[]);
    assert_eq!((code, out.as_str()), (0, "ok\n"));
    let m = manifest(dir.path(), "worker", &["containerd", "kubelet"]);
    let (code, out) = check(dir.path(), &worker(), &["--image-manifest", &m, "--print"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("(redacted)") && out.ends_with("ok\n"), "{out}");
    assert!(!out.contains("PRIVATE KEY"), "{out}");
}

#[test]
fn malformed_toml_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = worker().replace("role = \"worker\"", "role = worker");
    let (code, out) = check(dir.path(), &text, &[]);
    assert_eq!(code, 1, "{out}");
    let want = format!("{}:3:", dir.path().join("node.toml").display());
    assert!(out.starts_with(&want), "{out}");
}

#[test]
fn an_unknown_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let text = worker().replace("gateway = ", "mtu = 9000\ngateway = ");
    let (code, out) = check(dir.path(), &text, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("network.interfaces[0].mtu"), "{out}");
    assert!(out.contains("unknown field `mtu`"), "{out}");
}

#[test]
fn a_bad_cidr_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let text = worker().replace("10.0.0.2/24", "10.0.0.2/40");
    let (code, out) = check(dir.path(), &text, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("node.toml: network.interfaces[0].addresses[0]:"),
        "{out}"
    );
}

#[test]
fn a_control_plane_config_needs_an_image_with_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let text = worker().replace("role = \"worker\"", "role = \"control-plane\"");
    let worker_image = manifest(dir.path(), "worker", &["containerd", "kubelet"]);
    let (code, out) = check(dir.path(), &text, &["--image-manifest", &worker_image]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("node.toml: role: control-plane needs etcd"),
        "{out}"
    );
    assert!(out.contains("image worker 0.1.0"), "{out}");
    let cp_image = manifest(dir.path(), "control-plane", &["containerd", "etcd-server"]);
    let (code, out) = check(dir.path(), &text, &["--image-manifest", &cp_image]);
    assert_eq!((code, out.as_str()), (0, "ok\n"));
}
