use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use base64::Engine;
use contract::config::{ClusterConfig, MachineConfig, Member, PemBlock, Role};
use rcgen::{CertificateParams, Issuer, KeyPair};

use super::*;

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn member(h: &str, ip: &str) -> Member {
    Member {
        hostname: h.into(),
        address: ip.parse().unwrap(),
    }
}

fn request() -> InitRequest {
    InitRequest {
        name: "lab".into(),
        control_plane_endpoint: "10.0.0.10:6443".into(),
        members: vec![
            member("cp-1", "10.0.0.11"),
            member("cp-2", "10.0.0.12"),
            member("cp-3", "10.0.0.13"),
        ],
    }
}

/// Every file under `dir` (by its path relative to it) and its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().unwrap().is_dir() {
            for (sub, bytes) in snapshot(&e.path()) {
                out.insert(format!("{name}/{sub}"), bytes);
            }
        } else {
            out.insert(name, std::fs::read(e.path()).unwrap());
        }
    }
    out
}

/// Every file `init` makes, with its mode.
const FILES: &[(&str, u32)] = &[
    ("api-ca.key", 0o600),
    ("api-ca.crt", 0o644),
    ("etcd-ca.key", 0o600),
    ("etcd-ca.crt", 0o644),
    ("kubernetes-ca.key", 0o600),
    ("kubernetes-ca.crt", 0o644),
    ("front-proxy-ca.key", 0o600),
    ("front-proxy-ca.crt", 0o644),
    ("service-account.key", 0o600),
    ("service-account.pub", 0o644),
    ("secrets.toml", 0o600),
    ("admin.nodeconfig", 0o600),
    ("cluster.toml", 0o644),
    ("manifests/00-namespaces.yaml", 0o644),
    ("manifests/01-network-policies.yaml", 0o644),
    ("manifests/02-rbac.yaml", 0o644),
    ("manifests/03-priority-classes.yaml", 0o644),
    ("manifests/04-resource-defaults.yaml", 0o644),
    ("manifests/05-dns.yaml", 0o644),
    ("manifests/06-admission-policies.yaml", 0o644),
    ("manifests/07-falco-rules.yaml", 0o644),
];

fn spec(host: &str, role: Role, addresses: &[&str]) -> NodeSpec {
    NodeSpec {
        hostname: host.into(),
        role,
        addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
    }
}

#[test]
fn init_makes_every_file_with_its_mode_and_they_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let written = init(dir.path(), &request(), false, now()).unwrap();
    let names: Vec<String> = written
        .iter()
        .map(|p| {
            p.strip_prefix(dir.path())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let want: Vec<&str> = FILES.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, want);
    for (name, m) in FILES {
        assert_eq!(mode(&dir.path().join(name)), *m, "{name}");
    }
    // nothing else: no temporary file left
    assert_eq!(snapshot(dir.path()).len(), FILES.len());

    let c = ClusterDir::load(dir.path()).unwrap();
    assert_eq!(c.config.name, "lab");
    assert_eq!(c.config.control_plane.members, request().members);
    assert_eq!(c.config.etcd.backup.interval.to_string(), "1h");
    assert_eq!(c.config.etcd.backup.retain, 24);
    // four distinct CAs
    let certs: std::collections::BTreeSet<&str> = [
        &c.api_ca.cert_pem,
        &c.etcd_ca.cert_pem,
        &c.kubernetes_ca.cert_pem,
        &c.front_proxy_ca.cert_pem,
    ]
    .into_iter()
    .map(String::as_str)
    .collect();
    assert_eq!(certs.len(), 4);
    let key = base64::engine::general_purpose::STANDARD
        .decode(c.secrets.encryption_key.expose())
        .unwrap();
    assert_eq!(key.len(), 32);
    contract::config::check_bootstrap_token(c.secrets.bootstrap_token.expose()).unwrap();
    assert!(c
        .service_account
        .public_key
        .starts_with("-----BEGIN PUBLIC KEY-----"));
    let admin = AdminConfig::read(&dir.path().join(ADMIN)).unwrap();
    assert_eq!(admin.ca, c.api_ca.cert_pem);
}

#[test]
fn a_refused_init_writes_nothing_and_force_replaces_everything() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), &request(), false, now()).unwrap();
    let before = snapshot(dir.path());
    match init(dir.path(), &request(), false, now()) {
        Err(ClusterError::Exists { path }) => assert_eq!(path, dir.path().join("api-ca.key")),
        other => panic!("{other:?}"),
    }
    assert_eq!(snapshot(dir.path()), before);

    // one file in the way, the last one written: still nothing else
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join(CLUSTER_TOML), "mine").unwrap();
    let e = init(other.path(), &request(), false, now()).unwrap_err();
    assert!(e.to_string().contains("cluster.toml exists"), "{e}");
    assert_eq!(
        snapshot(other.path()).into_keys().collect::<Vec<_>>(),
        ["cluster.toml"]
    );

    // a bad request is refused before the directory is even made
    let missing = other.path().join("new");
    let bad = InitRequest {
        control_plane_endpoint: "10.0.0.10".into(),
        ..request()
    };
    let e = init(&missing, &bad, false, now()).unwrap_err();
    assert!(
        e.to_string()
            .contains("cluster.toml: control_plane_endpoint:"),
        "{e}"
    );
    assert!(!missing.exists());

    // cluster.toml and the manifests are the same for the same request (a
    // user's edit shows them replaced); the keys are new
    std::fs::write(dir.path().join(CLUSTER_TOML), "edited").unwrap();
    init(dir.path(), &request(), true, now()).unwrap();
    let after = snapshot(dir.path());
    assert_eq!(before[CLUSTER_TOML], after[CLUSTER_TOML]);
    for (name, m) in FILES {
        if name.starts_with("manifests/") {
            assert_eq!(before[*name], after[*name], "{name} differs");
        } else if *name != CLUSTER_TOML {
            assert_ne!(before[*name], after[*name], "{name} not replaced");
        }
        assert_eq!(mode(&dir.path().join(name)), *m, "{name}");
    }
    ClusterDir::load(dir.path()).unwrap();
}

#[test]
fn cluster_toml_reads_back_as_requested() {
    for members in [Vec::new(), request().members] {
        let r = InitRequest {
            members: members.clone(),
            ..request()
        };
        let text = render_cluster_toml(&r);
        let c = ClusterConfig::from_toml(&text, "cluster.toml").unwrap();
        assert_eq!(c.name, "lab");
        assert_eq!(c.control_plane_endpoint, "10.0.0.10:6443");
        assert_eq!(c.control_plane.members, members);
        assert_eq!(c.etcd.backup, Default::default());
        for table in ["[etcd.backup]", "[oidc]", "[addons]", "[backup_targets]"] {
            assert!(text.contains(table), "{table}:\n{text}");
        }
    }
}

/// Every PEM block in a TOML text, by label.
fn pem_blocks(text: &str) -> Vec<PemBlock> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let label_end = rest[start..].find("-----\n").unwrap() + start;
        let label = &rest[start + 11..label_end];
        let end_marker = format!("-----END {label}-----");
        let end = rest[start..].find(&end_marker).unwrap() + start + end_marker.len();
        out.extend(contract::config::pem_blocks(&rest[start..end]).unwrap());
        rest = &rest[end..];
    }
    out
}

#[test]
fn a_worker_config_holds_no_private_key_but_its_own() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), &request(), false, now()).unwrap();
    let text = machine_config(
        dir.path(),
        &spec("worker-1", Role::Worker, &["10.0.0.21"]),
        now(),
    )
    .unwrap();
    let c = MachineConfig::from_toml(&text, "worker-1.toml").unwrap();
    let keys: Vec<PemBlock> = pem_blocks(&text)
        .into_iter()
        .filter(|b| b.label.contains("PRIVATE KEY"))
        .collect();
    assert_eq!(keys.len(), 1, "{text}");
    assert_eq!(
        keys,
        contract::config::pem_blocks(c.api.key.expose()).unwrap()
    );
    let d = ClusterDir::load(dir.path()).unwrap();
    for secret in [
        d.secrets.encryption_key.expose(),
        d.service_account.private_key.expose(),
    ] {
        assert!(!text.contains(secret.trim()));
    }
    // what a worker does get
    assert_eq!(c.cluster.name, "lab");
    assert_eq!(
        c.cluster.control_plane_endpoint.as_deref(),
        Some("10.0.0.10:6443")
    );
    assert_eq!(
        c.cluster.bootstrap_token,
        Some(d.secrets.bootstrap_token.clone())
    );
    let k8s = c.cluster.kubernetes_ca.as_ref().unwrap();
    assert_eq!(k8s.certificate, d.kubernetes_ca.cert_pem);
    assert!(k8s.key.is_none());
    assert!(c.cluster.etcd_ca.is_none());
    // of the control plane, a worker knows only where its members are
    let cp = c.cluster.control_plane.as_ref().unwrap();
    assert_eq!(cp.members, d.config.control_plane.members);
    assert!(
        cp.encryption_key.is_none() && cp.service_account.is_none() && cp.etcd_backup.is_none()
    );

    // the contract refuses the same config with a CA key planted
    let planted = text.replace(
        "[cluster.kubernetes_ca]\n",
        &format!(
            "[cluster.kubernetes_ca]\nkey = '''\n{}'''\n",
            d.kubernetes_ca.key_pem
        ),
    );
    assert_ne!(planted, text);
    let e = MachineConfig::from_toml(&planted, "w.toml").unwrap_err();
    assert_eq!(
        e.to_string(),
        "w.toml: cluster.kubernetes_ca.key: a worker never holds a CA private key"
    );
}

#[test]
fn a_control_plane_config_has_what_etcd_needs() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), &request(), false, now()).unwrap();
    // no --address: the member's own address is its API certificate's SAN
    let text = machine_config(dir.path(), &spec("cp-2", Role::ControlPlane, &[]), now()).unwrap();
    let c = MachineConfig::from_toml(&text, "cp-2.toml").unwrap();
    let d = ClusterDir::load(dir.path()).unwrap();
    let cp = c.cluster.control_plane.as_ref().unwrap();
    assert_eq!(cp.members, request().members);
    assert_eq!(cp.etcd_backup, Some(d.config.etcd.backup));
    assert_eq!(cp.encryption_key.as_ref(), Some(&d.secrets.encryption_key));
    assert_eq!(cp.service_account.as_ref(), Some(&d.service_account));
    for (pair, ca) in [
        (&c.cluster.etcd_ca, &d.etcd_ca),
        (&c.cluster.kubernetes_ca, &d.kubernetes_ca),
        (&c.cluster.front_proxy_ca, &d.front_proxy_ca),
    ] {
        let pair = pair.as_ref().unwrap();
        assert_eq!(pair.certificate, ca.cert_pem);
        assert_eq!(pair.key.as_ref().unwrap().expose(), ca.key_pem);
    }
    // the etcd CA as the node has it signs a member certificate
    let etcd = c.cluster.etcd_ca.as_ref().unwrap();
    let key = KeyPair::from_pem(etcd.key.as_ref().unwrap().expose()).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&etcd.certificate, key).unwrap();
    let member_key = KeyPair::generate().unwrap();
    CertificateParams::new(vec!["cp-2".to_string()])
        .unwrap()
        .signed_by(&member_key, &issuer)
        .unwrap();
    // its API certificate names its member address
    let api = contract::config::pem_blocks(&c.api.certificate).unwrap();
    let ip = [10u8, 0, 0, 12];
    assert!(api[0].der.windows(4).any(|w| w == ip), "no 10.0.0.12 SAN");
    // the default formation is not written; a static one is, to the
    // control plane only
    assert!(text.contains("etcd_timing") && !text.contains("etcd_formation"));
    let toml = dir.path().join("cluster.toml");
    let edited = std::fs::read_to_string(&toml)
        .unwrap()
        .replace("formation = \"bootstrap\"", "formation = \"static\"");
    std::fs::write(&toml, edited).unwrap();
    let text = machine_config(dir.path(), &spec("cp-2", Role::ControlPlane, &[]), now()).unwrap();
    let c = MachineConfig::from_toml(&text, "cp-2.toml").unwrap();
    let formation = c.cluster.control_plane.as_ref().unwrap().etcd_formation;
    assert_eq!(formation, Some(contract::config::EtcdFormation::Static));
    let text = machine_config(
        dir.path(),
        &spec("w-1", Role::Worker, &["10.0.0.21"]),
        now(),
    )
    .unwrap();
    assert!(!text.contains("etcd_formation"), "{text}");
}

#[test]
fn the_oidc_issuer_reaches_control_plane_configs_only() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), &request(), false, now()).unwrap();
    let cp = |d: &std::path::Path, who: &str, role| {
        let addresses: &[&str] = if role == Role::Worker {
            &["10.0.0.21"]
        } else {
            &[]
        };
        let text = machine_config(d, &spec(who, role, addresses), now()).unwrap();
        MachineConfig::from_toml(&text, "n.toml")
            .unwrap()
            .cluster
            .control_plane
            .unwrap()
    };
    assert_eq!(cp(dir.path(), "cp-1", Role::ControlPlane).oidc, None);
    let toml = dir.path().join("cluster.toml");
    let text = std::fs::read_to_string(&toml).unwrap().replace(
        "[oidc]\n",
        "[oidc]\nissuer_url = \"https://login.lab\"\nclient_id = \"kubernetes\"\n",
    );
    std::fs::write(&toml, text).unwrap();
    let oidc = cp(dir.path(), "cp-1", Role::ControlPlane).oidc.unwrap();
    assert_eq!(oidc.issuer_url.as_deref(), Some("https://login.lab"));
    assert_eq!(oidc.client_id.as_deref(), Some("kubernetes"));
    assert_eq!(cp(dir.path(), "worker-1", Role::Worker).oidc, None);
}

#[test]
fn the_object_store_and_its_keys_reach_control_plane_configs_only() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), &request(), false, now()).unwrap();
    let render = |who: &str, role| {
        let addresses: &[&str] = if role == Role::Worker {
            &["10.0.0.21"]
        } else {
            &[]
        };
        machine_config(dir.path(), &spec(who, role, addresses), now())
    };
    let toml = dir.path().join("cluster.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        format!(
            "{text}\n[backup_targets.s3]\nendpoint = \"https://s3.lab:9000\"\n\
             bucket = \"etcd-backups\"\nprefix = \"lab/\"\ncredentials_file = \"s3.toml\"\n"
        ),
    )
    .unwrap();
    // the credentials file is read when a config is rendered, and named
    // when it is missing or wrong
    let e = render("cp-1", Role::ControlPlane).unwrap_err().to_string();
    assert!(e.contains("s3.toml"), "{e}");
    std::fs::write(dir.path().join("s3.toml"), "access_key_id = \"id\"\n").unwrap();
    let e = render("cp-1", Role::ControlPlane).unwrap_err().to_string();
    assert!(
        e.contains("s3.toml") && e.contains("secret_access_key"),
        "{e}"
    );
    std::fs::write(
        dir.path().join("s3.toml"),
        "access_key_id = \"id\"\nsecret_access_key = \"the-secret\"\n",
    )
    .unwrap();
    let text = render("cp-1", Role::ControlPlane).unwrap();
    let c = MachineConfig::from_toml(&text, "n.toml").unwrap();
    let s3 = c.cluster.control_plane.unwrap().etcd_backup_s3.unwrap();
    assert_eq!(s3.endpoint, "https://s3.lab:9000");
    assert_eq!(s3.key(7), "lab/etcd-7.db");
    assert_eq!(s3.secret_access_key.expose(), "the-secret");
    // retained as [etcd.backup] says when the target does not
    assert_eq!(s3.retain, 24);
    let shown = MachineConfig::from_toml(&text, "n.toml")
        .unwrap()
        .redacted()
        .to_toml()
        .unwrap();
    assert!(!shown.contains("the-secret"), "{shown}");
    let worker = render("worker-1", Role::Worker).unwrap();
    assert!(
        !worker.contains("the-secret") && !worker.contains("s3.lab"),
        "{worker}"
    );
}

#[test]
fn roles_must_match_the_member_list() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), &request(), false, now()).unwrap();
    let e = machine_config(dir.path(), &spec("cp-9", Role::ControlPlane, &[]), now()).unwrap_err();
    assert!(
        matches!(&e, ClusterError::NotMember { hostname, .. } if hostname == "cp-9"),
        "{e}"
    );
    assert!(e.to_string().contains("cluster.toml"), "{e}");
    let e = machine_config(dir.path(), &spec("cp-1", Role::Worker, &[]), now()).unwrap_err();
    assert!(matches!(e, ClusterError::WorkerIsMember { .. }), "{e}");
}

#[test]
fn each_bad_file_is_named_on_read() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), &request(), false, now()).unwrap();
    let good = snapshot(dir.path());
    let text = |n: &str| String::from_utf8(good[n].clone()).unwrap();
    let truncated = |n: &str| {
        let t = text(n);
        t[..t.len() / 2].to_string()
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("etcd-ca.key", truncated("etcd-ca.key"), "etcd CA"),
        ("kubernetes-ca.crt", truncated("kubernetes-ca.crt"), ""),
        // another CA's key: not this certificate's
        ("front-proxy-ca.key", text("etcd-ca.key"), "does not belong"),
        // a leaf certificate where a CA's belongs
        (
            "api-ca.crt",
            AdminConfig::read(&dir.path().join(ADMIN))
                .unwrap()
                .certificate,
            "",
        ),
        ("service-account.pub", truncated("service-account.pub"), ""),
        (
            "service-account.key",
            text("etcd-ca.key"),
            "does not belong",
        ),
        (
            "cluster.toml",
            text("cluster.toml").replace("[oidc]\n", "[oidc]\nissuer = \"x\"\n"),
            "oidc.issuer",
        ),
        (
            "cluster.toml",
            text("cluster.toml").replace("retain = 24", "retain = 0"),
            "etcd.backup.retain",
        ),
        (
            "secrets.toml",
            text("secrets.toml").replace("bootstrap_token", "token"),
            "token",
        ),
        (
            "secrets.toml",
            format!(
                "{}\n",
                text("secrets.toml").replace("encryption_key = \"", "encryption_key = \"AAAA")
            ),
            "encryption_key",
        ),
    ];
    for (file, bad, needle) in cases {
        std::fs::write(dir.path().join(file), &bad).unwrap();
        let e = ClusterDir::load(dir.path()).err().unwrap();
        let shown = format!("{:#}", anyhow::Error::from(e));
        let path = dir.path().join(file).display().to_string();
        assert!(shown.contains(&path), "{file}: {shown}");
        assert!(shown.contains(needle), "{file} ({needle}): {shown}");
        std::fs::write(dir.path().join(file), &good[file]).unwrap();
    }
    std::fs::remove_file(dir.path().join("etcd-ca.crt")).unwrap();
    let e = ClusterDir::load(dir.path()).err().unwrap();
    assert!(e.to_string().contains("etcd-ca.crt"), "{e}");
}

#[test]
fn bootstrap_tokens_are_random_and_well_formed() {
    let a = secrets::bootstrap_token().unwrap();
    let b = secrets::bootstrap_token().unwrap();
    contract::config::check_bootstrap_token(a.expose()).unwrap();
    assert_ne!(a, b);
    assert_ne!(
        secrets::encryption_key().unwrap(),
        secrets::encryption_key().unwrap()
    );
}

#[test]
fn write_file_refuses_an_existing_file_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f");
    write_file(&p, b"one", 0o600, false).unwrap();
    assert!(matches!(
        write_file(&p, b"two", 0o600, false),
        Err(ClusterError::Exists { .. })
    ));
    write_file(&p, b"two", 0o600, true).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"two");
    // no temporary file left behind
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

/// A rotation in its three steps: each writes secrets.toml (0600) and the
/// control-plane configs carry the keys in order, the encrypting one
/// first; a worker's carries none; a step out of order is refused.
#[test]
fn an_encryption_key_rotation_goes_add_use_retire() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), &request(), false, now()).unwrap();
    let keys = |role: Role| {
        let addresses: &[&str] = if role == Role::Worker {
            &["10.0.0.21"]
        } else {
            &[]
        };
        let who = if role == Role::Worker { "w-1" } else { "cp-1" };
        let text = machine_config(dir.path(), &spec(who, role, addresses), now()).unwrap();
        let cfg = MachineConfig::from_toml(&text, "n.toml").unwrap();
        let cp = cfg.cluster.control_plane.unwrap();
        cp.encryption_keys()
            .into_iter()
            .map(|(n, k)| (n.to_string(), k.to_string()))
            .collect::<Vec<_>>()
    };
    let first = keys(Role::ControlPlane);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].0, "key1");
    let step = |s: KeyStep| rotate_encryption_key(dir.path(), &s);
    let e = step(KeyStep::Use("key2".into())).unwrap_err().to_string();
    assert!(
        e.contains("secrets.toml") && e.contains("`add` one first"),
        "{e}"
    );
    let e = step(KeyStep::Retire).unwrap_err().to_string();
    assert!(e.contains("no read-only key"), "{e}");

    assert!(step(KeyStep::Add).unwrap().contains("added key2"));
    assert_eq!(mode(&dir.path().join(SECRETS)), 0o600);
    let added = keys(Role::ControlPlane);
    assert_eq!(
        added.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["key1", "key2"]
    );
    assert_eq!(added[0], first[0], "the encrypting key is still key1");
    step(KeyStep::Use("key2".into())).unwrap();
    let used = keys(Role::ControlPlane);
    assert_eq!(used, [added[1].clone(), added[0].clone()]);
    assert!(step(KeyStep::Retire).unwrap().contains("retired key1"));
    assert_eq!(keys(Role::ControlPlane), [added[1].clone()]);
    assert!(keys(Role::Worker).is_empty());
    // the next rotation names key3
    assert!(step(KeyStep::Add).unwrap().contains("added key3"));
}
