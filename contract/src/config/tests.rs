//! The machine config: a good document, and each way one is refused with
//! its key named. Keys and certificates are in `testdata/` (openssl-made).

use super::*;

const CA_CRT: &str = include_str!("../../testdata/ca.crt");
const CA_KEY: &str = include_str!("../../testdata/ca.key");
const NODE_CRT: &str = include_str!("../../testdata/node.crt");
const NODE_KEY: &str = include_str!("../../testdata/node.key");
const RSA_CRT: &str = include_str!("../../testdata/rsa.crt");
const RSA_KEY: &str = include_str!("../../testdata/rsa.key");

fn doc(body: &str, ca: &str, cert: &str, key: &str) -> String {
    format!(
        "{body}\n[api]\nclient_ca = '''\n{ca}'''\ncertificate = '''\n{cert}'''\nkey = '''\n{key}'''\n"
    )
}

/// A valid worker config without its `[api]` (shared with props.rs).
pub(super) const WORKER: &str = r#"schema = 1
hostname = "worker-1"
role = "worker"

[cluster]
name = "lab"

[[network.interfaces]]
mac = "52:54:00:12:34:56"
addresses = ["10.0.0.2/24", "fd00::2/64"]
gateway = "10.0.0.1"
dns = ["10.0.0.1"]

[[network.interfaces]]
name = "eth1"
dhcp = true

[time]
servers = ["ntp.example.org", "10.0.0.1"]

[containerd.registry_mirrors]
"docker.io" = ["https://mirror.lab:5000"]

[containerd.registry_credentials."mirror.lab:5000"]
username = "node"
password = "hunter2"
"#;

fn good() -> String {
    doc(WORKER, CA_CRT, NODE_CRT, NODE_KEY)
}

fn keys(e: &ConfigError) -> Vec<String> {
    e.problems().into_iter().map(|p| p.key).collect()
}

#[test]
fn a_good_worker_config_reads() {
    let c = MachineConfig::from_toml(&good(), "worker.toml").unwrap();
    assert_eq!(c.hostname, "worker-1");
    assert_eq!(c.role, Role::Worker);
    assert_eq!(c.cluster.name, "lab");
    assert_eq!(c.network.interfaces.len(), 2);
    assert!(c.network.interfaces[1].dhcp);
    assert_eq!(c.time.servers.len(), 2);
    assert!(c.api.key.expose().contains("EC PRIVATE KEY"));
    assert!(c.problems().is_empty());
}

#[test]
fn secrets_never_print() {
    let c = MachineConfig::from_toml(&good(), "worker.toml").unwrap();
    let debug = format!("{c:?}");
    assert!(!debug.contains("hunter2") && !debug.contains("EC PRIVATE KEY"));
    let shown = c.redacted().to_toml().unwrap();
    assert!(
        !shown.contains("hunter2") && !shown.contains("PRIVATE KEY"),
        "{shown}"
    );
    assert!(shown.contains(REDACTED));
    // the redacted view is still the same document otherwise
    let back: MachineConfig = toml::from_str(&shown).unwrap();
    assert_eq!(back.hostname, c.hostname);
    assert_eq!(back.network, c.network);
    // and the full document round-trips
    let full = MachineConfig::from_toml(&c.to_toml().unwrap(), "again.toml").unwrap();
    assert_eq!(full, c);
}

#[test]
fn malformed_toml_names_file_and_line() {
    let text = good().replace("role = \"worker\"", "role = \"worker");
    let e = MachineConfig::parse(&text, "bad.toml").unwrap_err();
    let ConfigError::Toml { line, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(*line, 3);
    assert!(e.to_string().starts_with("bad.toml:3:"), "{e}");
}

#[test]
fn unknown_keys_are_named_at_every_level() {
    for (from, to, key) in [
        ("hostname = ", "hostnme = \"x\"\nhostname = ", "hostnme"),
        (
            "name = \"lab\"",
            "name = \"lab\"\nendpoint = \"x\"",
            "cluster.endpoint",
        ),
        (
            "dhcp = true",
            "dhcp = true\nmtu = 9000",
            "network.interfaces[1].mtu",
        ),
        (
            "username = \"node\"",
            "user = \"node\"",
            "containerd.registry_credentials.\"mirror.lab:5000\".user",
        ),
    ] {
        let e = MachineConfig::parse(&good().replace(from, to), "x.toml").unwrap_err();
        let text = e.to_string();
        let leaf = key.rsplit('.').next().unwrap();
        assert!(text.contains(leaf), "{key}: {text}");
        assert_eq!(keys(&e), vec![key.to_string()], "{text}");
    }
    // the extension table is typed too
    let e = MachineConfig::parse(
        &good().replace(
            "name = \"lab\"",
            "name = \"lab\"\n[cluster.control_plane]\nvip = 1",
        ),
        "x.toml",
    )
    .unwrap_err();
    assert!(e.to_string().contains("vip"), "{e}");
}

#[test]
fn a_newer_schema_is_refused_for_its_schema() {
    let text = good().replace("schema = 1", "schema = 2\nfuture = true");
    let e = MachineConfig::parse(&text, "x.toml").unwrap_err();
    assert!(matches!(e, ConfigError::Schema { found: 2, .. }), "{e}");
    let e = MachineConfig::parse(&good().replace("schema = 1\n", ""), "x.toml").unwrap_err();
    assert!(e.to_string().contains("schema"), "{e}");
}

#[test]
fn an_unknown_role_is_refused() {
    let e = MachineConfig::parse(&good().replace("\"worker\"", "\"boss\""), "x.toml").unwrap_err();
    assert_eq!(keys(&e), vec!["role".to_string()], "{e}");
    assert!(e.to_string().contains("boss"), "{e}");
}

#[test]
fn every_value_problem_is_named() {
    let cases = [
        (
            "\"10.0.0.2/24\"",
            "\"10.0.0.2/33\"",
            "network.interfaces[0].addresses[0]",
        ),
        (
            "\"fd00::2/64\"",
            "\"fd00::2\"",
            "network.interfaces[0].addresses[1]",
        ),
        (
            "gateway = \"10.0.0.1\"",
            "gateway = \"10.9.0.1\"",
            "network.interfaces[0].gateway",
        ),
        (
            "dns = [\"10.0.0.1\"]",
            "dns = [\"resolver\"]",
            "network.interfaces[0].dns[0]",
        ),
        (
            "mac = \"52:54:00:12:34:56\"",
            "mac = \"52:54:00:12:34\"",
            "network.interfaces[0].mac",
        ),
        (
            "mac = \"52:54:00:12:34:56\"",
            "mac = \"01:00:5e:00:00:01\"",
            "network.interfaces[0].mac",
        ),
        (
            "name = \"eth1\"",
            "name = \"eth1\"\nmac = \"52:54:00:00:00:01\"",
            "network.interfaces[1]",
        ),
        (
            "name = \"eth1\"\ndhcp = true",
            "name = \"eth1\"",
            "network.interfaces[1]",
        ),
        (
            "dhcp = true",
            "dhcp = true\naddresses = [\"10.1.0.2/24\"]",
            "network.interfaces[1]",
        ),
        (
            "name = \"eth1\"",
            "mac = \"52:54:00:12:34:56\"",
            "network.interfaces[1]",
        ),
        (
            "hostname = \"worker-1\"",
            "hostname = \"Worker_1\"",
            "hostname",
        ),
        (
            "hostname = \"worker-1\"",
            "hostname = \"-w.lab\"",
            "hostname",
        ),
        ("name = \"lab\"", "name = \"lab.example\"", "cluster.name"),
        ("\"ntp.example.org\"", "\"ntp example\"", "time.servers[0]"),
        (
            "\"https://mirror.lab:5000\"",
            "\"mirror.lab:5000\"",
            "containerd.registry_mirrors.\"docker.io\"[0]",
        ),
        (
            "password = \"hunter2\"",
            "token = \"t\"\npassword = \"p\"",
            "containerd.registry_credentials.\"mirror.lab:5000\"",
        ),
        (
            "\"https://mirror.lab:5000\"",
            "\"https://../etc:5000\"",
            "containerd.registry_mirrors.\"docker.io\"[0]",
        ),
        (
            "\"docker.io\" = [",
            "\"../../etc\" = [",
            "containerd.registry_mirrors.\"../../etc\"",
        ),
        (
            "[containerd.registry_credentials.\"mirror.lab:5000\"]",
            "[containerd.registry_credentials.\"mirror.lab:99999\"]",
            "containerd.registry_credentials.\"mirror.lab:99999\"",
        ),
    ];
    for (from, to, key) in cases {
        let text = good().replace(from, to);
        assert_ne!(text, good(), "{from} not in the sample");
        let e = MachineConfig::from_toml(&text, "x.toml").unwrap_err();
        assert!(keys(&e).contains(&key.to_string()), "{to}: {e}");
    }
}

#[test]
fn all_problems_are_reported_at_once() {
    let text = good()
        .replace("hostname = \"worker-1\"", "hostname = \"\"")
        .replace("\"10.0.0.2/24\"", "\"10.0.0.2/99\"");
    let e = MachineConfig::from_toml(&text, "x.toml").unwrap_err();
    assert_eq!(
        keys(&e),
        vec![
            "hostname".to_string(),
            "network.interfaces[0].addresses[0]".to_string(),
            // checked against the addresses that parse: only fd00::2/64 is left
            "network.interfaces[0].gateway".to_string(),
        ]
    );
    assert!(e.to_string().starts_with("x.toml: hostname:"), "{e}");
}

#[test]
fn pem_material_is_checked_by_type() {
    let check = |ca: &str, cert: &str, key: &str| {
        MachineConfig::from_toml(&doc(WORKER, ca, cert, key), "x.toml")
            .err()
            .map(|e| e.problems())
            .unwrap_or_default()
    };
    assert!(check(CA_CRT, NODE_CRT, NODE_KEY).is_empty());
    assert!(check(RSA_CRT, NODE_CRT, NODE_KEY).is_empty());

    // the CA's own key as the node's key
    let p = check(CA_CRT, NODE_CRT, CA_KEY);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].key, "api.key");
    assert!(
        p[0].message.contains("private key of the cluster CA"),
        "{p:?}"
    );
    // the same with RSA (the modulus is compared)
    let p = check(RSA_CRT, NODE_CRT, RSA_KEY);
    assert!(p.iter().any(|p| p.message.contains("cluster CA")), "{p:?}");
    // a key that is not the certificate's
    let p = check(CA_CRT, NODE_CRT, RSA_KEY);
    assert!(
        p.iter().any(|p| p.message.contains("does not belong")),
        "{p:?}"
    );
    // a CA certificate as the node's certificate
    let p = check(CA_CRT, CA_CRT, NODE_KEY);
    assert!(
        p.iter()
            .any(|p| p.key == "api.certificate" && p.message.contains("CA certificate")),
        "{p:?}"
    );
    // a private key pasted where certificates go
    let p = check(&format!("{CA_CRT}{CA_KEY}"), NODE_CRT, NODE_KEY);
    assert!(
        p.iter()
            .any(|p| p.key == "api.client_ca" && p.message.contains("private key")),
        "{p:?}"
    );
    // a certificate where the key goes; not PEM at all; a broken body
    let p = check(CA_CRT, NODE_CRT, NODE_CRT);
    assert_eq!(p[0].key, "api.key");
    let p = check("not pem\n", NODE_CRT, NODE_KEY);
    assert_eq!(p[0].key, "api.client_ca");
    let broken = NODE_CRT.replacen("MII", "M!I", 1);
    let p = check(CA_CRT, &broken, NODE_KEY);
    assert_eq!(p[0].key, "api.certificate", "{p:?}");
    let truncated: String = NODE_CRT
        .lines()
        .filter(|l| !l.starts_with("-----END"))
        .collect::<Vec<_>>()
        .join("\n");
    let p = check(CA_CRT, &format!("{truncated}\n"), NODE_KEY);
    assert_eq!(p[0].key, "api.certificate", "{p:?}");
}

#[test]
fn a_control_plane_config_needs_etcd_in_the_image() {
    let c = MachineConfig::from_toml(
        &good().replace("role = \"worker\"", "role = \"control-plane\""),
        "cp.toml",
    )
    .unwrap();
    let worker_image = ImageFacts::from_packages("worker 0.1.0", ["containerd", "kubelet"]);
    let p = check_against_image(&c, &worker_image).unwrap_err();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].key, "role");
    assert!(
        p[0].message.contains("worker 0.1.0") && p[0].message.contains("etcd"),
        "{p:?}"
    );
    let cp_image = ImageFacts::from_packages("control-plane 0.1.0", ["etcd-server", "containerd"]);
    assert!(check_against_image(&c, &cp_image).is_ok());
    // containerd settings on an image without containerd
    let bare = ImageFacts::from_packages("base 0.1.0", ["etcd-server"]);
    let p = check_against_image(&c, &bare).unwrap_err();
    assert_eq!(p[0].key, "containerd");
}

#[test]
fn key_paths_follow_tables() {
    let text = "a = 1\n[x]\nb = 2\n[[y.z]]\nc = 3\n[[y.z]]\nd = 4\n[y.z.w]\ne = 5\n";
    let at = |needle: &str| key_at(text, text.find(needle).unwrap());
    assert_eq!(at("a =").as_deref(), Some("a"));
    assert_eq!(at("b =").as_deref(), Some("x.b"));
    assert_eq!(at("c =").as_deref(), Some("y.z[0].c"));
    assert_eq!(at("d =").as_deref(), Some("y.z[1].d"));
    assert_eq!(at("e =").as_deref(), Some("y.z[1].w.e"));
    assert_eq!(line_column("ab\ncd", 4), (2, 2));
}

#[test]
fn changes_split_live_tables_from_those_that_need_a_reboot() {
    let old = MachineConfig::from_toml(&good(), "old.toml").unwrap();
    assert!(changes(&old, &old).is_empty());
    let mut new = old.clone();
    new.time.servers = vec!["10.0.0.9".into()];
    new.containerd.registry_mirrors.clear();
    new.hostname = "worker-2".into();
    let c = changes(&old, &new);
    assert_eq!(c.live, ["time", "containerd"]);
    assert_eq!(c.reboot, ["hostname"]);
    new.network.interfaces.pop();
    new.role = Role::ControlPlane;
    let c = changes(&old, &new);
    assert_eq!(c.live, ["network", "time", "containerd"]);
    assert_eq!(c.reboot, ["hostname", "role"]);
}

#[test]
fn the_security_stack_changes_live_and_the_rest_of_the_cluster_at_a_reboot() {
    let mut old = MachineConfig::from_toml(&good(), "old.toml").unwrap();
    old.cluster.control_plane = Some(ClusterControlPlane {
        stack: Some(Stack::default()),
        ..Default::default()
    });
    let mut new = old.clone();
    let stack = |c: &mut MachineConfig| {
        c.cluster
            .control_plane
            .as_mut()
            .and_then(|cp| cp.stack.as_mut())
            .unwrap()
            .auditor_group = String::new();
    };
    stack(&mut new);
    let c = changes(&old, &new);
    assert_eq!(c.live, [STACK_TABLE]);
    assert!(c.reboot.is_empty(), "{c:?}");
    new.cluster.name = "other".into();
    let c = changes(&old, &new);
    assert_eq!(c.live, [STACK_TABLE]);
    assert_eq!(c.reboot, ["cluster"]);
    // a rotation's keys change live too, the rest of [cluster] does not
    let mut rotated = old.clone();
    let cp = rotated.cluster.control_plane.as_mut().unwrap();
    cp.encryption_read_keys.push(NamedKey {
        name: "key2".into(),
        key: Secret::new("MjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjI="),
    });
    let c = changes(&old, &rotated);
    assert_eq!(c.live, [ENCRYPTION_KEYS]);
    assert!(c.reboot.is_empty(), "{c:?}");
    // the stack added where there was none is a change of the stack alone
    let mut bare = old.clone();
    bare.cluster.control_plane = Some(ClusterControlPlane::default());
    let c = changes(&bare, &old);
    assert_eq!(c.live, [STACK_TABLE]);
    assert!(c.reboot.is_empty(), "{c:?}");
}
