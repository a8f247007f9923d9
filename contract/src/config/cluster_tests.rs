//! The cluster material in a machine config (who may hold which key) and
//! cluster.toml. Keys are the openssl-made ones in `testdata/`.

use super::*;

const API_CA: &str = include_str!("../../testdata/ca.crt");
const NODE_CRT: &str = include_str!("../../testdata/node.crt");
const NODE_KEY: &str = include_str!("../../testdata/node.key");
const K8S_CA: &str = include_str!("../../testdata/rsa.crt");
const K8S_KEY: &str = include_str!("../../testdata/rsa.key");
const ETCD_CA: &str = include_str!("../../testdata/etcd-ca.crt");
const ETCD_KEY: &str = include_str!("../../testdata/etcd-ca.key");
const SA_KEY: &str = include_str!("../../testdata/sa.key");
const SA_PUB: &str = include_str!("../../testdata/sa.pub");
const TOKEN: &str = "abcdef.0123456789abcdef";
const ENC: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

fn api() -> Api {
    Api {
        client_ca: API_CA.into(),
        certificate: NODE_CRT.into(),
        key: Secret::new(NODE_KEY),
    }
}

fn pair(cert: &str, key: Option<&str>) -> Option<CaPair> {
    Some(CaPair {
        certificate: cert.into(),
        key: key.map(Secret::new),
    })
}

fn members() -> Vec<Member> {
    ["cp-1", "cp-2", "cp-3"]
        .iter()
        .enumerate()
        .map(|(i, h)| Member {
            hostname: h.to_string(),
            address: format!("10.0.0.{}", 11 + i).parse().unwrap(),
        })
        .collect()
}

/// What `nodeimg cluster config` renders for a control-plane node.
fn control_plane() -> MachineConfig {
    MachineConfig {
        schema: SCHEMA,
        hostname: "cp-1".into(),
        role: Role::ControlPlane,
        cluster: Cluster {
            name: "lab".into(),
            control_plane_endpoint: Some("10.0.0.10:6443".into()),
            bootstrap_token: Some(Secret::new(TOKEN)),
            kubernetes_ca: pair(K8S_CA, Some(K8S_KEY)),
            etcd_ca: pair(ETCD_CA, Some(ETCD_KEY)),
            front_proxy_ca: pair(API_CA, Some(include_str!("../../testdata/ca.key"))),
            control_plane: Some(ClusterControlPlane {
                encryption_key: Some(Secret::new(ENC)),
                encryption_key_name: None,
                encryption_read_keys: Vec::new(),
                service_account: Some(ServiceAccountKeys {
                    public_key: SA_PUB.into(),
                    private_key: Secret::new(SA_KEY),
                }),
                etcd_backup: Some(EtcdBackup::default()),
                etcd_backup_s3: None,
                etcd_timing: None,
                etcd_formation: None,
                leader_election: None,
                members: members(),
                oidc: None,
                api_server: None,
                stack: None,
            }),
        },
        network: Network::default(),
        time: Time::default(),
        api: api(),
        containerd: Containerd::default(),
    }
}

/// What it renders for a worker: CA certificates, token, endpoint.
fn worker() -> MachineConfig {
    MachineConfig {
        hostname: "worker-1".into(),
        role: Role::Worker,
        cluster: Cluster {
            name: "lab".into(),
            control_plane_endpoint: Some("10.0.0.10:6443".into()),
            bootstrap_token: Some(Secret::new(TOKEN)),
            kubernetes_ca: pair(K8S_CA, None),
            ..Cluster::default()
        },
        ..control_plane()
    }
}

fn keys_of(c: &MachineConfig) -> Vec<String> {
    let text = c.to_toml().unwrap();
    match MachineConfig::from_toml(&text, "x.toml") {
        Ok(_) => Vec::new(),
        Err(e) => e.problems().into_iter().map(|p| p.key).collect(),
    }
}

fn problems_of(c: &MachineConfig) -> Vec<Problem> {
    MachineConfig::from_toml(&c.to_toml().unwrap(), "x.toml")
        .err()
        .map(|e| e.problems())
        .unwrap_or_default()
}

#[test]
fn rendered_configs_of_both_roles_read_back_whole() {
    for c in [control_plane(), worker()] {
        let text = c.to_toml().unwrap();
        let back = MachineConfig::from_toml(&text, "x.toml").unwrap();
        assert_eq!(back, c);
    }
    let text = control_plane().to_toml().unwrap();
    for table in [
        "[cluster.kubernetes_ca]",
        "[cluster.etcd_ca]",
        "[cluster.front_proxy_ca]",
        "[cluster.control_plane.service_account]",
        "[cluster.control_plane.etcd_backup]",
        "[[cluster.control_plane.members]]",
    ] {
        assert!(text.contains(table), "{table} in\n{text}");
    }
    assert!(text.contains("interval = \"1h\"") && text.contains("retain = 24"));
}

/// The second key of a rotation (any other 32 bytes).
const ENC2: &str = "MjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjI=";

#[test]
fn encryption_read_keys_are_named_once_checked_and_kept_from_workers() {
    let mut c = control_plane();
    let cp = c.cluster.control_plane.as_mut().unwrap();
    cp.encryption_key_name = Some("key2".into());
    cp.encryption_read_keys = vec![NamedKey {
        name: "key1".into(),
        key: Secret::new(ENC2),
    }];
    assert_eq!(cp.encryption_keys(), [("key2", ENC), ("key1", ENC2)]);
    let text = c.to_toml().unwrap();
    MachineConfig::from_toml(&text, "cp.toml").unwrap();
    for (edit, key, says) in [
        (
            (|cp: &mut ClusterControlPlane| cp.encryption_read_keys[0].name = "key2".into())
                as fn(&mut ClusterControlPlane),
            "cluster.control_plane.encryption_read_keys[0].name",
            "names two keys",
        ),
        (
            |cp| cp.encryption_read_keys[0].name = "old".into(),
            "cluster.control_plane.encryption_read_keys[0].name",
            "not an encryption key name",
        ),
        (
            |cp| cp.encryption_read_keys[0].key = Secret::new("c2hvcnQ="),
            "cluster.control_plane.encryption_read_keys[0].key",
            "32 bytes",
        ),
        (
            |cp| cp.encryption_key_name = Some("key".into()),
            "cluster.control_plane.encryption_key_name",
            "not an encryption key name",
        ),
    ] {
        let mut bad = c.clone();
        edit(bad.cluster.control_plane.as_mut().unwrap());
        let e = MachineConfig::from_toml(&bad.to_toml().unwrap(), "cp.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains(key) && e.contains(says), "{e}");
    }
    let mut worker = c.clone();
    worker.role = Role::Worker;
    let e = MachineConfig::from_toml(&worker.to_toml().unwrap(), "w.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("encryption_read_keys[0]") && e.contains("never holds"),
        "{e}"
    );
    let shown = c.redacted().to_toml().unwrap();
    assert!(!shown.contains(ENC2) && !format!("{c:?}").contains(ENC2));
}

#[test]
fn every_cluster_secret_is_redacted() {
    let c = control_plane();
    let shown = c.redacted().to_toml().unwrap();
    for secret in [TOKEN, ENC, "PRIVATE KEY"] {
        assert!(!shown.contains(secret), "{secret} shown:\n{shown}");
        assert!(!format!("{c:?}").contains(secret), "{secret} in Debug");
    }
    // the certificates and public key are not secrets
    assert!(shown.contains("BEGIN CERTIFICATE") && shown.contains("BEGIN PUBLIC KEY"));
}

#[test]
fn a_worker_never_holds_a_ca_key() {
    for (table, ca, key) in [
        ("kubernetes_ca", K8S_CA, K8S_KEY),
        ("etcd_ca", ETCD_CA, ETCD_KEY),
        (
            "front_proxy_ca",
            API_CA,
            include_str!("../../testdata/ca.key"),
        ),
    ] {
        let mut c = worker();
        let planted = pair(ca, Some(key));
        match table {
            "kubernetes_ca" => c.cluster.kubernetes_ca = planted,
            "etcd_ca" => c.cluster.etcd_ca = planted,
            _ => c.cluster.front_proxy_ca = planted,
        }
        let p = problems_of(&c);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].key, format!("cluster.{table}.key"));
        assert_eq!(p[0].message, "a worker never holds a CA private key");
    }
    // nor the control plane's other keys
    let mut c = worker();
    c.cluster.control_plane = control_plane().cluster.control_plane;
    c.cluster.control_plane.as_mut().unwrap().members.clear();
    assert_eq!(
        keys_of(&c),
        [
            "cluster.control_plane.encryption_key",
            "cluster.control_plane.service_account.private_key"
        ]
    );
    // a CA key pasted as the worker's API key
    let mut c = worker();
    c.cluster.etcd_ca = pair(ETCD_CA, None);
    c.api.key = Secret::new(ETCD_KEY);
    let p = problems_of(&c);
    assert!(
        p.iter()
            .any(|p| p.key == "api.key" && p.message.contains("cluster's CAs")),
        "{p:?}"
    );
    // or into a certificate field
    let mut c = worker();
    c.cluster.kubernetes_ca = pair(&format!("{K8S_CA}{K8S_KEY}"), None);
    let p = problems_of(&c);
    assert!(
        p.iter()
            .any(|p| p.key == "cluster.kubernetes_ca.certificate"
                && p.message.contains("private key")),
        "{p:?}"
    );
}

#[test]
fn a_control_plane_needs_each_cas_key_and_its_own_pair() {
    let mut c = control_plane();
    c.cluster.etcd_ca.as_mut().unwrap().key = None;
    assert_eq!(keys_of(&c), ["cluster.etcd_ca.key"]);
    // a key that is not the certificate's
    let mut c = control_plane();
    c.cluster.etcd_ca = pair(ETCD_CA, Some(K8S_KEY));
    let p = problems_of(&c);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].key, "cluster.etcd_ca.key");
    assert!(p[0].message.contains("does not belong"), "{p:?}");
    // a node certificate where a CA belongs
    let mut c = control_plane();
    c.cluster.etcd_ca = pair(NODE_CRT, Some(NODE_KEY));
    let p = problems_of(&c);
    assert!(
        p.iter().any(|p| p.key == "cluster.etcd_ca.certificate"
            && p.message.contains("not a CA certificate")),
        "{p:?}"
    );
    // a truncated CA key
    let truncated: String = ETCD_KEY.lines().take(2).collect::<Vec<_>>().join("\n");
    let mut c = control_plane();
    c.cluster.etcd_ca = pair(ETCD_CA, Some(&truncated));
    assert_eq!(keys_of(&c), ["cluster.etcd_ca.key"]);
    // the service-account pair must match
    let mut c = control_plane();
    let cp = c.cluster.control_plane.as_mut().unwrap();
    cp.service_account.as_mut().unwrap().private_key = Secret::new(ETCD_KEY);
    assert_eq!(
        keys_of(&c),
        ["cluster.control_plane.service_account.private_key"]
    );
    let mut c = control_plane();
    let cp = c.cluster.control_plane.as_mut().unwrap();
    cp.service_account.as_mut().unwrap().public_key = ETCD_CA.into();
    assert_eq!(
        keys_of(&c),
        ["cluster.control_plane.service_account.public_key"]
    );
}

#[test]
fn each_value_problem_names_its_key() {
    type Edit = fn(&mut MachineConfig);
    let cases: [(Edit, &str); 8] = [
        (
            |c| c.cluster.bootstrap_token = Some(Secret::new("abcdef.0123456789ABCDEF")),
            "cluster.bootstrap_token",
        ),
        (
            |c| c.cluster.bootstrap_token = Some(Secret::new("abcde.0123456789abcdef")),
            "cluster.bootstrap_token",
        ),
        (
            |c| c.cluster.control_plane_endpoint = Some("10.0.0.10".into()),
            "cluster.control_plane_endpoint",
        ),
        (
            |c| c.cluster.control_plane_endpoint = Some("api.lab:99999".into()),
            "cluster.control_plane_endpoint",
        ),
        (
            |c| {
                let cp = c.cluster.control_plane.as_mut().unwrap();
                cp.encryption_key = Some(Secret::new("c2hvcnQ="));
            },
            "cluster.control_plane.encryption_key",
        ),
        (
            |c| {
                let cp = c.cluster.control_plane.as_mut().unwrap();
                cp.members[2].address = cp.members[0].address;
            },
            "cluster.control_plane.members[2].address",
        ),
        (
            |c| {
                let cp = c.cluster.control_plane.as_mut().unwrap();
                cp.members[1].hostname = "cp-1".into();
            },
            "cluster.control_plane.members[1].hostname",
        ),
        (|c| c.hostname = "cp-9".into(), "hostname"),
    ];
    for (edit, key) in cases {
        let mut c = control_plane();
        edit(&mut c);
        assert_eq!(keys_of(&c), [key], "{key}");
    }
    // the token is a secret: its problem never echoes it
    let mut c = control_plane();
    c.cluster.bootstrap_token = Some(Secret::new("NOT-A-TOKEN"));
    assert!(!problems_of(&c)[0].message.contains("NOT-A-TOKEN"));
}

#[test]
fn typed_cluster_tables_refuse_unknown_keys_and_bad_intervals() {
    let text = control_plane().to_toml().unwrap();
    for (from, to, key) in [
        (
            "[cluster.etcd_ca]\n",
            "[cluster.etcd_ca]\nkey_file = \"/x\"\n",
            "cluster.etcd_ca.key_file",
        ),
        (
            "interval = \"1h\"",
            "interval = \"1 hour\"",
            "cluster.control_plane.etcd_backup.interval",
        ),
        (
            "address = \"10.0.0.11\"",
            "address = \"10.0.0.256\"",
            "cluster.control_plane.members[0].address",
        ),
    ] {
        let bad = text.replace(from, to);
        assert_ne!(bad, text, "{from}");
        let e = MachineConfig::parse(&bad, "x.toml").unwrap_err();
        assert_eq!(
            e.problems().into_iter().map(|p| p.key).collect::<Vec<_>>(),
            [key],
            "{e}"
        );
    }
}

#[test]
fn intervals_read_and_print_in_units() {
    for (s, secs, shown) in [
        ("1h", 3600, "1h"),
        ("90m", 5400, "1h30m"),
        ("1h30m", 5400, "1h30m"),
        ("45s", 45, "45s"),
        ("1d2h", 93_600, "1d2h"),
    ] {
        let i = Interval::parse(s).unwrap();
        assert_eq!((i.seconds(), i.to_string().as_str()), (secs, shown), "{s}");
    }
    for bad in ["", "1", "h", "0s", "1m1h", "1h1h", "-1h", "1.5h", "1 h"] {
        assert!(Interval::parse(bad).is_err(), "{bad:?}");
    }
}

/// A valid cluster.toml (shared with props.rs).
pub(super) const CLUSTER_TOML: &str = r#"schema = 1
name = "lab"
control_plane_endpoint = "10.0.0.10:6443"

[[control_plane.members]]
hostname = "cp-1"
address = "10.0.0.11"

[[control_plane.members]]
hostname = "cp-2"
address = "10.0.0.12"

[etcd.backup]
interval = "30m"
retain = 48

[oidc]

[addons]

[backup_targets]
"#;

#[test]
fn cluster_toml_reads_with_defaults() {
    let c = ClusterConfig::from_toml(CLUSTER_TOML, "cluster.toml").unwrap();
    assert_eq!(c.name, "lab");
    assert_eq!(c.control_plane.members.len(), 2);
    assert_eq!(c.member("cp-2").unwrap().address.to_string(), "10.0.0.12");
    assert_eq!(c.etcd.backup.interval.seconds(), 1800);
    assert_eq!(c.etcd.backup.retain, 48);
    let minimal = "schema = 1\nname = \"lab\"\ncontrol_plane_endpoint = \"api.lab:6443\"\n";
    let c = ClusterConfig::from_toml(minimal, "cluster.toml").unwrap();
    assert!(c.control_plane.members.is_empty());
    assert_eq!(c.etcd.backup, EtcdBackup::default());
    assert_eq!(c.etcd.backup.interval.to_string(), "1h");
    assert_eq!(c.etcd.backup.retain, 24);
    let back = ClusterConfig::from_toml(&toml::to_string(&c).unwrap(), "again").unwrap();
    assert_eq!(back, c);
}

#[test]
fn etcd_formation_reads_checks_and_round_trips() {
    let c = ClusterConfig::from_toml(CLUSTER_TOML, "cluster.toml").unwrap();
    assert_eq!(c.etcd.formation, EtcdFormation::Bootstrap);
    let text = CLUSTER_TOML.replace(
        "[etcd.backup]",
        "[etcd]\nformation = \"static\"\n\n[etcd.backup]",
    );
    let c = ClusterConfig::from_toml(&text, "cluster.toml").unwrap();
    assert_eq!(c.etcd.formation, EtcdFormation::Static);
    let back = ClusterConfig::from_toml(&toml::to_string(&c).unwrap(), "again").unwrap();
    assert_eq!(back, c);
    // an unknown formation names the key; static without members is refused
    let e = ClusterConfig::from_toml(&text.replace("\"static\"", "\"quorum\""), "c").unwrap_err();
    let keys: Vec<String> = e.problems().into_iter().map(|p| p.key).collect();
    assert_eq!(keys, ["etcd.formation"], "{e}");
    let lone = "schema = 1\nname = \"lab\"\ncontrol_plane_endpoint = \"api.lab:6443\"\n\n[etcd]\nformation = \"static\"\n";
    let e = ClusterConfig::from_toml(lone, "c").unwrap_err();
    assert!(
        e.to_string().contains("c: etcd.formation: static needs"),
        "{e}"
    );
    // the machine config: the same check, under its own key
    let mut m = control_plane();
    m.cluster.control_plane.as_mut().unwrap().etcd_formation = Some(EtcdFormation::Static);
    assert!(keys_of(&m).is_empty(), "{:?}", problems_of(&m));
    m.cluster.control_plane.as_mut().unwrap().members.clear();
    assert!(
        keys_of(&m).contains(&"cluster.control_plane.etcd_formation".to_string()),
        "{:?}",
        problems_of(&m)
    );
}

#[test]
fn cluster_toml_errors_name_file_and_key() {
    for (from, to, key) in [
        ("[oidc]\n", "[oidc]\nissuer = \"x\"\n", "oidc.issuer"),
        ("[addons]\n", "[addons]\ncilium = true\n", "addons.cilium"),
        ("retain = 48", "retain = 48\nkeep = 1", "etcd.backup.keep"),
        (
            "interval = \"30m\"",
            "interval = 30",
            "etcd.backup.interval",
        ),
        (
            "hostname = \"cp-2\"",
            "hostname = \"cp-2\"\nrole = \"x\"",
            "control_plane.members[1].role",
        ),
        ("name = \"lab\"", "nam = \"lab\"", "nam"),
    ] {
        let text = CLUSTER_TOML.replace(from, to);
        let e = ClusterConfig::from_toml(&text, "dir/cluster.toml").unwrap_err();
        assert!(e.to_string().starts_with("dir/cluster.toml:"), "{e}");
        let keys: Vec<String> = e.problems().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, [key], "{e}");
    }
    for (from, to, key) in [
        ("name = \"lab\"", "name = \"Lab\"", "name"),
        (
            "\"10.0.0.10:6443\"",
            "\"10.0.0.10\"",
            "control_plane_endpoint",
        ),
        ("retain = 48", "retain = 0", "etcd.backup.retain"),
        (
            "interval = \"30m\"",
            "interval = \"9s\"",
            "etcd.backup.interval",
        ),
        (
            "\"10.0.0.12\"",
            "\"10.0.0.11\"",
            "control_plane.members[1].address",
        ),
        (
            "[etcd.backup]",
            "[control_plane.leader_election]\nrenew_deadline_s = 20\n\n[etcd.backup]",
            "control_plane.leader_election.lease_duration_s",
        ),
        (
            "retain = 48",
            "retain = 48\n\n[etcd.timing]\nelection_timeout_ms = 400",
            "etcd.timing.election_timeout_ms",
        ),
        (
            "retain = 48",
            "retain = 48\n\n[etcd.timing]\nheartbeat_interval_ms = 0",
            "etcd.timing.heartbeat_interval_ms",
        ),
        (
            "retain = 48",
            "retain = 48\n\n[etcd.timing]\nheartbeat_interval_ms = 5000\nelection_timeout_ms = 60000",
            "etcd.timing.election_timeout_ms",
        ),
        ("[oidc]\n", "[oidc]\nclient_id = \"k\"\n", "oidc.issuer_url"),
        (
            "[oidc]\n",
            "[oidc]\nissuer_url = \"http://login.lab\"\nclient_id = \"k\"\n",
            "oidc.issuer_url",
        ),
        (
            "[oidc]\n",
            "[oidc]\nissuer_url = \"https://login.lab\"\n",
            "oidc.client_id",
        ),
        (
            "[oidc]\n",
            "[oidc]\nissuer_url = \"https://login.lab\"\nclient_id = \"k\"\nca = \"x\"\n",
            "oidc.ca",
        ),
    ] {
        let text = CLUSTER_TOML.replace(from, to);
        let e = ClusterConfig::from_toml(&text, "dir/cluster.toml").unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("dir/cluster.toml: {key}:")),
            "{e}"
        );
    }
    let e = ClusterConfig::from_toml(&CLUSTER_TOML.replace("schema = 1", "schema = 2"), "c")
        .unwrap_err();
    assert!(
        matches!(
            e,
            ConfigError::Schema {
                found: 2,
                supported: CLUSTER_SCHEMA,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn an_oidc_issuer_reads_and_round_trips() {
    let text = CLUSTER_TOML.replace(
        "[oidc]\n",
        "[oidc]\nissuer_url = \"https://login.lab/realms/k\"\nclient_id = \"kubernetes\"\nusername_claim = \"email\"\ngroups_claim = \"groups\"\n",
    );
    let c = ClusterConfig::from_toml(&text, "cluster.toml").unwrap();
    assert!(c.oidc.is_set());
    assert_eq!(
        c.oidc.issuer_url.as_deref(),
        Some("https://login.lab/realms/k")
    );
    let back = ClusterConfig::from_toml(&toml::to_string(&c).unwrap(), "again").unwrap();
    assert_eq!(back, c);
    assert!(!ClusterConfig::from_toml(CLUSTER_TOML, "c")
        .unwrap()
        .oidc
        .is_set());
}

#[test]
fn endpoints_take_names_and_both_address_families() {
    for ok in [
        "10.0.0.10:6443",
        "api.lab:443",
        "[fd00::10]:6443",
        "localhost:1",
    ] {
        check_endpoint(ok).unwrap();
    }
    for bad in [
        "10.0.0.10",
        "fd00::10:6443",
        "api.lab:",
        "api.lab:0",
        ":6443",
        "a b:1",
    ] {
        assert!(check_endpoint(bad).is_err(), "{bad}");
    }
}
