//! etcd on one control-plane node in QEMU, judged by Debian trixie's
//! `etcdctl` 3.5 (the `etcd-client` package, pinned through tools.toml)
//! over mTLS with a client certificate of the cluster's etcd CA, through
//! the lab's loopback forward to the node's port 2379.
//!
//! Before the bootstrap the node is ready and etcd waits; `nodeimg cluster
//! bootstrap` makes it a voter holding `/nodeimg/cluster = lab`; a second
//! bootstrap is refused; the certificates the agent issued (a 60 s
//! lifetime through `nodeimg.test_cert_lifetime`) are renewed while etcd
//! serves, and etcd presents the new one without a restart; an API
//! reboot brings etcd back with its data and no bootstrap.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{free_port, nodeimg, ok, s};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The node's address on QEMU's user network (its DHCP lease), and its
/// etcd member address in the cluster config.
const NODE_IP: &str = "10.0.2.15";

use support::etcd::client_cert;

struct Node {
    api: String,
    etcd: String,
    admin: PathBuf,
    tls: PathBuf,
    lab: std::thread::JoinHandle<(i32, Value, PathBuf)>,
}

impl Node {
    fn node(&self, args: &[&str]) -> Output {
        let mut all = vec![
            args[0],
            args[1],
            "--node",
            &self.api,
            "--nodeconfig",
            s(&self.admin),
            "--server-name",
            NODE_IP,
        ];
        all.extend(&args[2..]);
        nodeimg(&all)
    }

    fn etcdctl(&self, args: &[&str]) -> Output {
        support::etcd::etcdctl(&self.tls, &self.etcd, 20, args)
    }

    fn etcdctl_ok(&self, args: &[&str]) -> String {
        let out = self.etcdctl(args);
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `status` until `pred` holds (the API listens after the first report).
    fn wait_status(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(400);
        loop {
            let out = self.node(&["node", "status", "--json", "--timeout", "10"]);
            if out.status.success() {
                let r: Value = serde_json::from_slice(&out.stdout).unwrap();
                if pred(&r) {
                    return r;
                }
                assert!(Instant::now() < deadline, "{what}: never: {r:#}");
            } else {
                assert!(
                    !self.lab.is_finished() && Instant::now() < deadline,
                    "{what}: the node API never answered: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    /// The certificate etcd presents on its client port, DER.
    fn served_cert(&self) -> Vec<u8> {
        let out = Command::new(support::tool("openssl"))
            .args(["s_client", "-connect", &self.etcd, "-servername", NODE_IP])
            .arg("-cert")
            .arg(self.tls.join("client.crt"))
            .arg("-key")
            .arg(self.tls.join("client.key"))
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run openssl s_client");
        let text = String::from_utf8_lossy(&out.stdout);
        let begin = text.find("-----BEGIN CERTIFICATE-----");
        let end = text.find("-----END CERTIFICATE-----");
        match (begin, end) {
            (Some(b), Some(e)) => text[b..e].as_bytes().to_vec(),
            _ => panic!("no certificate from etcd: {text}"),
        }
    }
}

/// The control-plane image, built once for this file's tests.
fn built() -> &'static Path {
    static BUILT: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &BUILT
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().join("control-plane");
            support::build_image_with("control-plane", &out, &["--format", "none"]);
            (dir, out)
        })
        .1
}

/// `cluster init` of `lab` with `members`, and cp-1's control-plane config.
fn cluster(dir: &Path, members: &[&str]) -> (PathBuf, PathBuf) {
    let cdir = dir.join("cluster");
    let mut args = vec![
        "cluster",
        "init",
        "--name",
        "lab",
        "--control-plane-endpoint",
        "10.0.2.15:6443",
        "--out",
        s(&cdir),
    ];
    for m in members {
        args.extend(["--member", m]);
    }
    ok(&args);
    let cfg = dir.join("cp-1.toml");
    ok(&[
        "cluster",
        "config",
        s(&cdir),
        "--role",
        "control-plane",
        "--hostname",
        "cp-1",
        "--address",
        NODE_IP,
        "--out",
        s(&cfg),
    ]);
    (cdir, cfg)
}

/// Boots cp-1 with `cfg`; the lab runs on a thread until the guest is off.
fn boot(cdir: &Path, cfg: &Path, tls: PathBuf, extra: &[String]) -> Node {
    let (api_port, etcd_port) = (free_port(), free_port());
    let mut args: Vec<String> = [
        "--net",
        "user",
        "--config",
        s(cfg),
        "--api-port",
        &api_port.to_string(),
        "--forward-node",
        &format!("2379:{etcd_port}"),
        "--memory",
        "1536",
        "--wait-shutdown",
        "900",
        "--timeout",
        "1500",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    args.extend(extra.iter().cloned());
    let out = built().to_path_buf();
    let lab = std::thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        support::lab_boot_serial(&out, &args)
    });
    Node {
        api: format!("127.0.0.1:{api_port}"),
        etcd: format!("127.0.0.1:{etcd_port}"),
        admin: cdir.join("admin.nodeconfig"),
        tls,
        lab,
    }
}

/// A real etcd 3.5 (trixie's etcd-server) on loopback, as a configured
/// member that already serves: its certificate is the etcd CA's, for
/// 10.0.2.100 (where the guest reaches it through the lab's guestfwd).
struct HostEtcd {
    child: std::process::Child,
    port: u16,
}

impl Drop for HostEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The etcd service in a report.
fn etcd_service(r: &Value) -> Value {
    r["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "etcd")
        .cloned()
        .unwrap_or_else(|| panic!("no etcd service: {r:#}"))
}

fn host_etcd(cdir: &Path, dir: &Path) -> HostEtcd {
    let (ca_cert, issuer) = support::etcd::ca(cdir);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p =
        rcgen::CertificateParams::new(vec!["10.0.2.100".into(), "127.0.0.1".into()]).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, "cp-0");
    p.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = p.signed_by(&key, &issuer).unwrap();
    let pki = dir.join("cp-0-pki");
    std::fs::create_dir(&pki).unwrap();
    std::fs::write(pki.join("ca.crt"), &ca_cert).unwrap();
    std::fs::write(pki.join("server.crt"), cert.pem()).unwrap();
    std::fs::write(pki.join("server.key"), key.serialize_pem()).unwrap();
    let bin = support::judge_package("etcd-server").join("usr/bin/etcd");
    let (port, peer) = (free_port(), free_port());
    let client_url = format!("https://127.0.0.1:{port}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new(bin)
        .arg("--name=cp-0")
        .arg(format!("--data-dir={}", dir.join("cp-0-data").display()))
        .arg(format!("--listen-client-urls={client_url}"))
        .arg(format!("--advertise-client-urls={client_url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=cp-0={peer_url}"))
        .arg(format!("--cert-file={}", pki.join("server.crt").display()))
        .arg(format!("--key-file={}", pki.join("server.key").display()))
        .arg(format!(
            "--trusted-ca-file={}",
            pki.join("ca.crt").display()
        ))
        .arg("--client-cert-auth")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("cp-0.log")).unwrap())
        .spawn()
        .expect("run etcd");
    HostEtcd { child, port }
}

#[test]
fn a_node_configured_for_another_cluster_neither_joins_nor_bootstraps() {
    let dir = tempfile::tempdir().unwrap();
    // cp-0 is a member already serving (on this machine's loopback,
    // reached by the guest at 10.0.2.100, a relay per connection) whose
    // cluster is named `other`; cp-1 is the node booted, configured for `lab`
    let (cdir, cfg) = cluster(dir.path(), &["cp-0=10.0.2.100", "cp-1=10.0.2.15"]);
    let tls = dir.path().join("etcdctl");
    std::fs::create_dir(&tls).unwrap();
    client_cert(&cdir, &tls);
    let cp0 = host_etcd(&cdir, dir.path());
    let judge_tls = tls.clone();
    let cp0_endpoint = format!("127.0.0.1:{}", cp0.port);
    let judge = |args: &[&str]| support::etcd::etcdctl(&judge_tls, &cp0_endpoint, 20, args);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !judge(&["endpoint", "health"]).status.success() {
        assert!(
            Instant::now() < deadline,
            "the host's etcd never became healthy"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(judge(&["put", "/nodeimg/cluster", "other"])
        .status
        .success());
    let n = boot(
        &cdir,
        &cfg,
        tls,
        &["--forward".into(), format!("2379:{}", cp0.port)],
    );

    // the join finds cp-0, reads its cluster's name and says why it stops
    let r = n.wait_status("the join's refusal", |r| r["etcd"]["state"] == "failed");
    let why = r["etcd"]["error"].as_str().unwrap_or_default();
    assert!(
        why.contains("cp-0 (10.0.2.100) serves etcd cluster \"other\", not \"lab\""),
        "{r:#}"
    );
    assert_eq!(r["ready"], true, "{r:#}");
    let out = n.node(&["cluster", "bootstrap"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refused") && err.contains("serves etcd cluster \"other\""),
        "{err}"
    );
    // nothing started: etcd still waits, the node is still ready
    let r = n.wait_status("after the refusal", |_| true);
    assert_eq!(r["ready"], true, "{r:#}");
    assert_eq!(r["etcd"]["state"], "failed", "{r:#}");
    let etcd_svc = etcd_service(&r);
    assert_eq!(etcd_svc["state"], "waiting", "{r:#}");
    // the host's member is untouched: still one member, no learner added
    let list = judge(&["member", "list"]);
    assert_eq!(
        String::from_utf8_lossy(&list.stdout).lines().count(),
        1,
        "{list:?}"
    );

    let out = n.node(&["node", "shutdown"]);
    assert!(out.status.success(), "{out:?}");
    let (code, report, _) = n.lab.join().unwrap();
    assert_eq!(code, 0, "{report:#}");
}

#[test]
fn one_control_plane_bootstraps_etcd_once_renews_its_certificates_and_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let (cdir, cfg) = cluster(dir.path(), &["cp-1=10.0.2.15"]);
    let tls = dir.path().join("etcdctl");
    std::fs::create_dir(&tls).unwrap();
    client_cert(&cdir, &tls);
    let extra: Vec<String> = [
        "--append",
        "nodeimg.test_cert_lifetime=60",
        "--reboots",
        "1",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    let n = boot(&cdir, &cfg, tls, &extra);

    // Before the bootstrap: the node is ready, etcd waits and is not running.
    let r = n.wait_status("first report", |r| r["etcd"]["state"].is_string());
    assert_eq!(r["ready"], true, "{r:#}");
    assert_eq!(r["etcd"]["state"], "waiting-for-bootstrap", "{r:#}");
    let etcd_svc = etcd_service(&r);
    assert_eq!(etcd_svc["state"], "waiting", "{r:#}");
    assert!(!n.etcdctl(&["endpoint", "health"]).status.success());

    // The bootstrap: etcd starts, holds the cluster's name, one voter.
    let out = n.node(&["cluster", "bootstrap"]);
    assert!(
        out.status.success(),
        "bootstrap: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("bootstrapped on cp-1"), "{said}");
    let health = n.etcdctl_ok(&["endpoint", "health"]);
    assert!(health.contains("is healthy"), "{health}");
    let members = n.etcdctl_ok(&["member", "list", "-w", "json"]);
    let members: Value = serde_json::from_str(&members).unwrap();
    let list = members["members"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{members:#}");
    assert_eq!(list[0]["name"], "cp-1", "{members:#}");
    assert!(
        list[0].get("isLearner").is_none_or(|l| l == false),
        "{members:#}"
    );
    assert_eq!(
        list[0]["peerURLs"][0], "https://10.0.2.15:2380",
        "{members:#}"
    );
    assert_eq!(
        n.etcdctl_ok(&["get", "/nodeimg/cluster", "--print-value-only"])
            .trim(),
        "lab"
    );
    n.etcdctl_ok(&["put", "/test/round-trip", "written by etcdctl"]);
    assert_eq!(
        n.etcdctl_ok(&["get", "/test/round-trip", "--print-value-only"])
            .trim(),
        "written by etcdctl"
    );
    let r = n.wait_status("voter", |r| r["etcd"]["state"] == "voter");
    assert_eq!(r["ready"], true, "{r:#}");
    let member_id = format!("{:x}", list[0]["ID"].as_u64().unwrap());
    assert_eq!(r["etcd"]["member_id"], member_id.as_str(), "{r:#}");
    assert_eq!(r["etcd"]["leader"], member_id.as_str(), "{r:#}");
    assert!(r["etcd"]["cluster_id"].is_string(), "{r:#}");

    // A second bootstrap is refused and changes nothing.
    let out = n.node(&["cluster", "bootstrap"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refused") && err.contains("already has data"),
        "{err}"
    );
    assert_eq!(
        n.etcdctl_ok(&["get", "/nodeimg/cluster", "--print-value-only"])
            .trim(),
        "lab"
    );

    // Renewal: 60 s certificates are renewed after 40 s; etcd serves the
    // new one on the next connection, with no restart.
    let before = n.served_cert();
    let issued = r["etcd"]["certificates"]["issued"].as_u64().unwrap();
    let r = n.wait_status("renewal", |r| {
        r["etcd"]["certificates"]["renewals"].as_u64().unwrap_or(0) >= 1
    });
    let renewed = r["etcd"]["certificates"]["issued"].as_u64().unwrap();
    assert!(
        renewed >= issued + 40,
        "renewed at {renewed}, issued {issued}: {r:#}"
    );
    let after = n.served_cert();
    assert_ne!(before, after, "etcd still serves the first certificate");
    let etcd_svc = etcd_service(&r);
    assert_eq!(etcd_svc["restarts"], 0, "{r:#}");
    n.etcdctl_ok(&["endpoint", "health"]);

    // A reboot: etcd comes back from its data, no bootstrap needed.
    let out = n.node(&["node", "reboot"]);
    assert!(out.status.success(), "{out:?}");
    let r = n.wait_status("second boot's voter", |r| {
        r["state"]["boot_count"] == 2 && r["etcd"]["state"] == "voter"
    });
    assert_eq!(r["ready"], true, "{r:#}");
    assert_eq!(r["etcd"]["member_id"], member_id.as_str(), "{r:#}");
    assert_eq!(
        n.etcdctl_ok(&["get", "/test/round-trip", "--print-value-only"])
            .trim(),
        "written by etcdctl"
    );
    assert_eq!(
        n.etcdctl_ok(&["get", "/nodeimg/cluster", "--print-value-only"])
            .trim(),
        "lab"
    );
    let out = n.node(&["cluster", "bootstrap"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");

    let out = n.node(&["node", "shutdown"]);
    assert!(out.status.success(), "{out:?}");
    let (code, report, serial) = n.lab.join().unwrap();
    assert_eq!(code, 0, "{report:#}");
    let serial = std::fs::read_to_string(serial).unwrap();
    assert!(serial.contains("service etcd released"), "{serial}");
    assert!(!serial.contains("nodeagent: panic"), "{serial}");
}
