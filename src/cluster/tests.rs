use std::os::unix::fs::PermissionsExt;

use super::*;

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_writes_the_ca_and_admin_with_private_modes_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let files = init(dir.path(), false, now()).unwrap();
    assert_eq!(mode(&files.ca_key), 0o600);
    assert_eq!(mode(&files.admin), 0o600);
    let ca = std::fs::read_to_string(&files.ca_cert).unwrap();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    let admin = AdminConfig::read(&files.admin).unwrap();
    assert_eq!(admin.ca, ca);
    assert!(admin.key.expose().contains("PRIVATE KEY"));

    match init(dir.path(), false, now()) {
        Err(ClusterError::Exists { path }) => assert_eq!(path, files.ca_cert),
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read_to_string(&files.ca_cert).unwrap(), ca);
    init(dir.path(), true, now()).unwrap();
    assert_ne!(std::fs::read_to_string(&files.ca_cert).unwrap(), ca);
    assert_eq!(mode(&files.ca_key), 0o600);
}

#[test]
fn a_machine_config_trusts_the_ca_and_holds_a_node_key_not_the_cas() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), false, now()).unwrap();
    let spec = NodeSpec {
        hostname: "worker-1".into(),
        role: Role::Worker,
        addresses: vec!["10.0.2.15".parse().unwrap()],
        cluster_name: "lab".into(),
    };
    let text = machine_config(dir.path(), &spec, now()).unwrap();
    let c = MachineConfig::from_toml(&text, "t").unwrap();
    assert_eq!(c.hostname, "worker-1");
    assert_eq!(c.cluster.name, "lab");
    let ca = std::fs::read_to_string(dir.path().join(CA_CERT)).unwrap();
    let ca_key = std::fs::read_to_string(dir.path().join(CA_KEY)).unwrap();
    assert_eq!(c.api.client_ca, ca);
    assert_ne!(c.api.key.expose(), ca_key);
    assert!(!text.contains(ca_key.trim()));
}

#[test]
fn a_missing_ca_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let spec = NodeSpec {
        hostname: "w".into(),
        role: Role::Worker,
        addresses: Vec::new(),
        cluster_name: "lab".into(),
    };
    let e = machine_config(dir.path(), &spec, now()).unwrap_err();
    assert!(e.to_string().contains(CA_CERT), "{e}");
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
