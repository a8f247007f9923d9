//! The node API in QEMU: `nodeimg cluster init` and `cluster config` make
//! the trust, the worker boots with it (`--net user --api-port P`, the
//! lab's loopback forward to guest port 50000, and `--wait-shutdown` so
//! the VM stays up after its report), and `nodeimg node` talks to it:
//! status, logs, dmesg and the redacted config for the admin; a client of
//! another CA, or with no certificate, refused at the handshake; then
//! `shutdown` (and in a second boot `reboot`) ends the VM through PID 1's
//! own clean stop.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{free_port, nodeimg, ok, s};

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use contract::api::Request;
use nodeimg::cluster::AdminConfig;
use nodeimg::node::{NodeError, Trust};
use serde_json::Value;

/// The name the node's certificate carries: its address on the lab network.
const NODE_IP: &str = "10.0.2.15";

fn built() -> &'static support::Built {
    static BUILT: OnceLock<support::Built> = OnceLock::new();
    support::built_once(&BUILT, &["--format", "none"])
}

/// `nodeimg cluster init` of a cluster named `lab` into `cdir`.
fn init(cdir: &Path) {
    ok(&[
        "cluster",
        "init",
        "--name",
        "lab",
        "--control-plane-endpoint",
        "10.0.0.10:6443",
        "--member",
        "cp-api=10.0.2.16",
        "--out",
        s(cdir),
    ]);
}

/// A cluster directory and a worker config for `host` at [`NODE_IP`].
fn cluster(dir: &Path, host: &str) -> (PathBuf, PathBuf) {
    let cdir = dir.join("cluster");
    init(&cdir);
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
    (cdir.join("admin.nodeconfig"), cfg)
}

/// A booting VM: `lab boot` runs on a thread until the guest powers off.
struct Booted {
    addr: String,
    lab: std::thread::JoinHandle<(i32, Value, PathBuf)>,
    /// A registry on loopback the guest reaches at 10.0.2.100:5000, with
    /// the login `node`/`s3cret`, serving `library/pause:test`.
    registry: support::registry::Registry,
}

/// The image the test registry serves: one file, packed like the
/// builder's own images.
fn registry() -> support::registry::Registry {
    let built = nodeimg::oci::build_image(&nodeimg::oci::ImageSpec {
        name: "library/pause:test".into(),
        files: vec![nodeimg::oci::ImageFile {
            path: "hello".into(),
            mode: 0o644,
            content: nodeimg::oci::Content::Data(b"from the test registry\n".to_vec()),
        }],
        entrypoint: vec!["/hello".into()],
        user: "65534:65534".into(),
        mtime: 0,
    })
    .unwrap();
    support::registry::serve(&built.archive, "library/pause", "test", "node", "s3cret")
}

fn boot(cfg: &Path) -> Booted {
    boot_with(cfg, &[])
}

fn boot_with(cfg: &Path, extra: &[&str]) -> Booted {
    let port = free_port();
    let registry = registry();
    let forward = format!("5000:{}", registry.port);
    let mut args: Vec<String> = [
        "--net",
        "user",
        "--config",
        s(cfg),
        "--api-port",
        &port.to_string(),
        "--wait-shutdown",
        "400",
        "--forward",
        &forward,
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    args.extend(extra.iter().map(ToString::to_string));
    let out = built().out.clone();
    let lab = std::thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        support::lab_boot_serial(&out, &args)
    });
    Booted {
        addr: format!("127.0.0.1:{port}"),
        lab,
        registry,
    }
}

/// `nodeimg node ARGS` against the booted node with `nodeconfig`.
fn node(b: &Booted, nodeconfig: &Path, args: &[&str]) -> Output {
    let mut all = vec![
        "node",
        "--node",
        &b.addr,
        "--nodeconfig",
        s(nodeconfig),
        "--server-name",
        NODE_IP,
    ];
    all.extend(args);
    nodeimg(&all)
}

/// Asks for `status` until the node answers (it listens after its
/// report), and returns the report.
fn wait_for_api(b: &Booted, admin: &Path) -> Value {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let out = node(b, admin, &["status", "--json", "--timeout", "10"]);
        if out.status.success() {
            return serde_json::from_slice(&out.stdout).unwrap();
        }
        assert!(
            !b.lab.is_finished() && Instant::now() < deadline,
            "the node API never answered: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Waits for the lab; returns its report and the console log.
fn ended(b: Booted) -> (Value, String) {
    let (code, report, serial) = b.lab.join().unwrap();
    assert_eq!(code, 0, "{report:#}");
    let serial = std::fs::read_to_string(serial).unwrap();
    (report, serial)
}

#[test]
fn the_admin_manages_the_node_others_are_refused_and_shutdown_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let (admin, cfg) = cluster(dir.path(), "worker-api");
    let b = boot(&cfg);

    let status = wait_for_api(&b, &admin);
    assert_eq!(status["ready"], true, "{status:#}");
    assert_eq!(status["hostname"], "worker-api", "{status:#}");

    let out = node(&b, &admin, &["logs", "containerd", "--tail", "50"]);
    assert!(out.status.success(), "{out:?}");
    let logs = String::from_utf8_lossy(&out.stdout);
    assert!(logs.contains("containerd"), "{logs}");
    assert!(logs.lines().count() <= 50, "{logs}");

    // --follow streams (keepalives included) until --for runs out.
    let t = Instant::now();
    let out = node(
        &b,
        &admin,
        &[
            "logs",
            "containerd",
            "--tail",
            "5",
            "--follow",
            "--for",
            "7",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        t.elapsed() >= Duration::from_secs(7),
        "the stream ended early"
    );
    let followed = String::from_utf8_lossy(&out.stdout);
    assert!(followed.contains("containerd"), "{followed}");

    let out = node(&b, &admin, &["logs", "../../etc/shadow"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a service name"),
        "{out:?}"
    );

    let out = node(&b, &admin, &["dmesg"]);
    assert!(out.status.success(), "{out:?}");
    let dmesg = String::from_utf8_lossy(&out.stdout);
    assert!(dmesg.starts_with('['), "{dmesg}");

    let out = node(&b, &admin, &["config"]);
    assert!(out.status.success(), "{out:?}");
    let config = String::from_utf8_lossy(&out.stdout);
    assert!(config.contains("worker-api"), "{config}");
    assert!(config.contains("(redacted)"), "{config}");
    assert!(!config.contains("PRIVATE KEY"), "{config}");

    // A client certificate from another cluster's CA (the node's CA still
    // trusted on our side, so only the node's check can fail).
    let other = dir.path().join("other");
    init(&other);
    let mut stranger = AdminConfig::read(&other.join("admin.nodeconfig")).unwrap();
    stranger.ca = AdminConfig::read(&admin).unwrap().ca;
    let stranger_file = dir.path().join("stranger.nodeconfig");
    std::fs::write(&stranger_file, stranger.to_toml().unwrap()).unwrap();
    let out = node(&b, &stranger_file, &["status"]);
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refused the TLS handshake") && err.contains("certificate"),
        "{err}"
    );

    // No client certificate at all.
    let trust = Trust {
        ca: stranger.ca.clone(),
        identity: None,
    };
    let e = nodeimg::node::request(
        &b.addr,
        Some(NODE_IP),
        &trust,
        &Request::Status,
        Duration::from_secs(20),
    )
    .unwrap_err();
    assert!(matches!(e, NodeError::Refused { .. }), "{e}");

    let out = node(&b, &admin, &["shutdown"]);
    assert!(out.status.success(), "{out:?}");
    let (report, serial) = ended(b);
    assert_eq!(report["shutdown"], "already_exited", "{report:#}");
    let asked = serial.find("asked for shutdown").expect(&serial);
    let stop = serial.find("stopping service containerd").expect(&serial);
    let off = serial.find("NODEIMG-SHUTDOWN poweroff").expect(&serial);
    assert!(asked < stop && stop < off, "{serial}");
}

/// `status` until the node answers from boot `n` (its state disk's count).
fn wait_for_boot(b: &Booted, admin: &Path, n: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(400);
    loop {
        let r = wait_for_api(b, admin);
        if r["state"]["boot_count"] == n {
            return r;
        }
        assert!(Instant::now() < deadline, "boot {n} never answered: {r:#}");
        std::thread::sleep(Duration::from_secs(2));
    }
}

#[test]
fn apply_config_then_reboot_over_the_api_comes_back_with_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let (admin, cfg) = cluster(dir.path(), "worker-reboot");
    // the VM lives through one guest reboot (QEMU resets it)
    let b = boot_with(&cfg, &["--reboots", "1", "--timeout", "900"]);
    let first = wait_for_boot(&b, &admin, 1);
    assert_eq!(first["config"]["source"], "fw-cfg", "{first:#}");

    // A config the node cannot serve is refused whole.
    let text = std::fs::read_to_string(&cfg).unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, text.replace("[cluster]", "[cluster]\nbogus = 1")).unwrap();
    let out = node(&b, &admin, &["apply-config", s(&bad)]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bogus"),
        "{out:?}"
    );
    // a whole control-plane config (its CA keys, its members): only the
    // image, which has no etcd, is wrong for it
    let cp = dir.path().join("cp.toml");
    ok(&[
        "cluster",
        "config",
        s(&dir.path().join("cluster")),
        "--role",
        "control-plane",
        "--hostname",
        "cp-api",
        "--out",
        s(&cp),
    ]);
    // checked here first, so send it raw to see the node refuse it
    let admin_cfg = AdminConfig::read(&admin).unwrap();
    let refused = nodeimg::node::request(
        &b.addr,
        Some(NODE_IP),
        &Trust::from(&admin_cfg),
        &Request::ApplyConfig {
            config: std::fs::read_to_string(&cp).unwrap(),
        },
        Duration::from_secs(30),
    )
    .unwrap();
    let refused = format!("{refused:?}");
    assert!(
        refused.contains("refused, nothing changed") && refused.contains("etcd"),
        "{refused}"
    );

    // docker.io through the test registry as its mirror, but without its
    // login: applied live, and the registry turns the pull away.
    let image = "docker.io/library/pause:test";
    let mirror = "\n[containerd.registry_mirrors]\n\"docker.io\" = [\"http://10.0.2.100:5000\"]\n";
    let mirrored = dir.path().join("mirrored.toml");
    std::fs::write(&mirrored, format!("{text}{mirror}")).unwrap();
    let out = node(&b, &admin, &["apply-config", s(&mirrored)]);
    assert!(out.status.success(), "{out:?}");
    let out = node(&b, &admin, &["pull", image, "--timeout", "150"]);
    assert!(!out.status.success(), "no login, yet pulled: {out:?}");
    {
        let seen = b.registry.seen.lock().unwrap();
        assert!(
            !seen.is_empty() && seen.iter().all(|s| !s.authorized),
            "the mirror was not asked, or asked with credentials: {seen:?}"
        );
    }

    // A new name (at the next boot) and a registry mirror with its login
    // (live: containerd reads the files on the next pull).
    assert!(text.contains("hostname = \"worker-reboot\""), "{text}");
    let renamed = text.replace(
        "hostname = \"worker-reboot\"",
        "hostname = \"worker-renamed\"",
    )
        + mirror
        + "\n[containerd.registry_credentials.\"10.0.2.100:5000\"]\nusername = \"node\"\npassword = \"s3cret\"\n";
    let new = dir.path().join("renamed.toml");
    std::fs::write(&new, &renamed).unwrap();
    let out = node(&b, &admin, &["apply-config", s(&new)]);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("applied    containerd"), "{said}");
    assert!(said.contains("on reboot  hostname"), "{said}");
    let now = wait_for_api(&b, &admin);
    assert_eq!(
        now["config"]["pending_reboot"],
        serde_json::json!(["hostname"]),
        "{now:#}"
    );
    assert_eq!(now["hostname"], "worker-reboot", "{now:#}");
    let out = node(&b, &admin, &["config"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("worker-renamed"), "{out:?}");
    assert!(!shown.contains("s3cret"), "the password shows: {shown}");

    // containerd pulls docker.io's image through the mirror, logged in.
    b.registry.seen.lock().unwrap().clear();
    let out = node(&b, &admin, &["pull", image, "--timeout", "150"]);
    assert!(
        out.status.success(),
        "{out:?}\nthe registry saw {:?}",
        b.registry.seen.lock().unwrap()
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&b.registry.manifest_digest), "{said}");
    let seen = b.registry.seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|s| s.path.contains("/manifests/test"))
            && seen.iter().any(|s| s.path.contains("/blobs/sha256:")),
        "{seen:?}"
    );
    assert!(seen.iter().all(|s| s.authorized), "{seen:?}");

    // An archive imported through the API, no registry: the node names
    // the digest it imported, which must be ours; one whose bytes are not
    // what the request announced is refused before containerd sees it.
    let built = nodeimg::oci::build_image(&nodeimg::oci::ImageSpec {
        name: "scratch".into(),
        files: vec![nodeimg::oci::ImageFile {
            path: "etc/imported".into(),
            mode: 0o644,
            content: nodeimg::oci::Content::Data(b"through the node API\n".to_vec()),
        }],
        entrypoint: vec!["/etc/imported".into()],
        user: "65534:65534".into(),
        mtime: 0,
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("imported.tar");
    std::fs::write(&archive, &built.archive).unwrap();
    let name = "nodeimg.test/imported:1";
    let out = node(&b, &admin, &["import", s(&archive), "--name", name]);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(said.trim(), format!("{name} {}", built.manifest_digest));
    let trust = Trust::from(&AdminConfig::read(&admin).unwrap());
    let mut lie = nodeimg::node::blob::describe(&archive).unwrap();
    lie.sha256 = "0".repeat(64);
    let answer = nodeimg::node::blob::send(
        &b.addr,
        Some(NODE_IP),
        &trust,
        &Request::Import(lie),
        &archive,
        Duration::from_secs(60),
    )
    .unwrap();
    match answer {
        contract::api::Response::Error(e) => assert!(e.contains("sha256"), "{e}"),
        other => panic!("a lying import was answered {other:?}"),
    }

    let out = node(&b, &admin, &["reboot"]);
    assert!(out.status.success(), "{out:?}");
    // The same VM, the same state disk, booted again: fw_cfg still hands
    // it the first config, and the applied one replaces exactly that.
    let second = wait_for_boot(&b, &admin, 2);
    assert_eq!(second["ready"], true, "{second:#}");
    assert_eq!(second["hostname"], "worker-renamed", "{second:#}");
    assert_eq!(second["config"]["source"], "applied", "{second:#}");
    assert_eq!(
        second["config"]["replaces"], first["config"]["sha256"],
        "{second:#}"
    );
    assert!(
        second["config"].get("pending_reboot").is_none(),
        "{second:#}"
    );
    assert_eq!(second["state"]["formatted"], false, "{second:#}");
    // the same images, by name and digest (how long each import took
    // differs from boot to boot)
    let images = |r: &Value| -> Vec<(Value, Value, Value)> {
        r["runtime"]["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["name"].clone(),
                    i["digest"].clone(),
                    i["imported"].clone(),
                )
            })
            .collect()
    };
    assert_eq!(images(&second), images(&first), "{second:#}");

    let out = node(&b, &admin, &["shutdown"]);
    assert!(out.status.success(), "{out:?}");
    let (report, serial) = ended(b);
    assert_eq!(report["hostname"], "worker-renamed", "{report:#}");
    assert_eq!(
        report["earlier_reports"][0]["hostname"], "worker-reboot",
        "{report:#}"
    );
    let asked = serial.find("asked for reboot").expect(&serial);
    let stop = serial[asked..]
        .find("stopping service containerd")
        .expect(&serial)
        + asked;
    let reboot = serial.find("NODEIMG-SHUTDOWN reboot").expect(&serial);
    assert!(stop < reboot, "{serial}");
}

#[test]
fn cluster_files_are_private_and_never_overwritten() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (admin, cfg) = cluster(dir.path(), "w");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&admin), 0o600);
    assert_eq!(mode(&cfg), 0o600);
    assert_eq!(mode(&dir.path().join("cluster/api-ca.key")), 0o600);
    ok(&["config", "check", s(&cfg)]);

    let cdir = dir.path().join("cluster");
    let init_args = [
        "cluster",
        "init",
        "--name",
        "lab",
        "--control-plane-endpoint",
        "10.0.0.10:6443",
        "--out",
        s(&cdir),
    ];
    let out = nodeimg(&init_args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("api-ca.key") && err.contains("--force"),
        "{err}"
    );
    ok(&[&init_args[..], &["--force"]].concat());
}
