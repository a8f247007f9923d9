//! Judging etcd the way an operator would: Debian trixie's `etcdctl` 3.5
//! (the locked `etcd-client` package, never the host's 3.4) with a client
//! certificate of the cluster's etcd CA.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// etcdctl from the locked trixie package (fetched once per test binary).
pub fn etcdctl_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let p = super::judge_package("etcd-client").join("usr/bin/etcdctl");
        assert!(
            p.is_file(),
            "the etcd-client package has no usr/bin/etcdctl"
        );
        p
    })
    .clone()
}

/// Cluster directory `cdir`'s etcd CA: its certificate (PEM) and an
/// issuer of certificates under it.
pub fn ca(cdir: &Path) -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let ca_cert = std::fs::read_to_string(cdir.join("etcd-ca.crt")).unwrap();
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(cdir.join("etcd-ca.key")).unwrap())
            .unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_cert, ca_key).unwrap();
    (ca_cert, issuer)
}

/// A client certificate of cluster directory `cdir`'s etcd CA, as an
/// operator would make one (rcgen here; etcd checks it, not our agent),
/// written as `ca.crt`, `client.crt`, `client.key` into `out`.
pub fn client_cert(cdir: &Path, out: &Path) {
    let (ca_cert, issuer) = ca(cdir);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "test-etcdctl");
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.signed_by(&key, &issuer).unwrap();
    std::fs::create_dir_all(out).unwrap();
    std::fs::write(out.join("ca.crt"), ca_cert).unwrap();
    std::fs::write(out.join("client.crt"), cert.pem()).unwrap();
    std::fs::write(out.join("client.key"), key.serialize_pem()).unwrap();
}

/// `etcdctl` against `endpoints` (`127.0.0.1:PORT,…`) with the client
/// certificate in `tls`.
pub fn etcdctl(tls: &Path, endpoints: &str, timeout_s: u32, args: &[&str]) -> Output {
    Command::new(etcdctl_bin())
        .env("ETCDCTL_API", "3")
        .arg(format!(
            "--endpoints={}",
            endpoints
                .split(',')
                .map(|e| format!("https://{e}"))
                .collect::<Vec<_>>()
                .join(",")
        ))
        .arg(format!("--cacert={}", tls.join("ca.crt").display()))
        .arg(format!("--cert={}", tls.join("client.crt").display()))
        .arg(format!("--key={}", tls.join("client.key").display()))
        .arg(format!("--dial-timeout={}s", timeout_s.min(10)))
        .arg(format!("--command-timeout={timeout_s}s"))
        .args(args)
        .output()
        .expect("run etcdctl")
}
