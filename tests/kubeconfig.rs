//! `nodeimg cluster kubeconfig`, judged by upstream: the locked
//! kube-apiserver (recipes/kubernetes) runs on loopback against trixie's
//! etcd, trusting the cluster directory's Kubernetes CA, and the locked
//! kubectl reads our kubeconfig and authenticates with it. Requests
//! without a certificate, or with another cluster's, are refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{free_port, judge_package, ok, s, text};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn init(dir: &Path, name: &str) -> PathBuf {
    let cdir = dir.join(name);
    ok(&[
        "cluster",
        "init",
        "--name",
        name,
        "--control-plane-endpoint",
        "10.77.0.11:6443",
        "--member",
        "cp-1=10.77.0.11",
        "--out",
        s(&cdir),
    ]);
    cdir
}

/// The locked kube-apiserver and kubectl, built or taken from the cache.
fn programs(out: &Path) {
    let o = Command::new(env!("CARGO_BIN_EXE_nodeimg"))
        .current_dir(support::repo())
        .args(["recipe", "build", "kubernetes", "--quiet"])
        .args(["--program", "kube-apiserver", "--program", "kubectl"])
        .args(["--out", s(out)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

/// A serving certificate for 127.0.0.1 from the cluster's Kubernetes CA.
fn serving_cert(cdir: &Path, pki: &Path) {
    let ca_cert = std::fs::read_to_string(cdir.join("kubernetes-ca.crt")).unwrap();
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(cdir.join("kubernetes-ca.key")).unwrap())
            .unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_cert, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p =
        rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "kubernetes".into()]).unwrap();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "kube-apiserver");
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = p.signed_by(&key, &issuer).unwrap();
    std::fs::create_dir_all(pki).unwrap();
    std::fs::write(pki.join("apiserver.crt"), cert.pem()).unwrap();
    std::fs::write(pki.join("apiserver.key"), key.serialize_pem()).unwrap();
}

fn kubectl(bin: &Path, args: &[&str]) -> Output {
    Command::new(bin.join("kubectl"))
        .args(args)
        .arg("--request-timeout=10s")
        .output()
        .unwrap()
}

#[test]
fn upstream_kubectl_authenticates_to_upstream_kube_apiserver_with_our_kubeconfig() {
    let d = tempfile::tempdir().unwrap();
    let bin = d.path().join("bin");
    programs(&bin);
    let cdir = init(d.path(), "lab");
    let pki = d.path().join("pki");
    serving_cert(&cdir, &pki);

    // etcd on loopback, plain HTTP: what is judged here is the API's TLS
    let etcd_port = free_port();
    let etcd_url = format!("http://127.0.0.1:{etcd_port}");
    let peer = format!("http://127.0.0.1:{}", free_port());
    let _etcd = Killed(
        Command::new(judge_package("etcd-server").join("usr/bin/etcd"))
            .arg(format!("--data-dir={}", d.path().join("etcd").display()))
            .arg(format!("--listen-client-urls={etcd_url}"))
            .arg(format!("--advertise-client-urls={etcd_url}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=default={peer}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.path().join("etcd.log")).unwrap())
            .spawn()
            .expect("run etcd"),
    );
    let port = free_port();
    let log = d.path().join("kube-apiserver.log");
    let _api = Killed(
        Command::new(bin.join("kube-apiserver"))
            .arg(format!("--etcd-servers={etcd_url}"))
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            .arg(format!("--secure-port={port}"))
            .arg(format!("--cert-dir={}", d.path().join("certs").display()))
            .arg(format!(
                "--client-ca-file={}",
                cdir.join("kubernetes-ca.crt").display()
            ))
            .arg(format!(
                "--tls-cert-file={}",
                pki.join("apiserver.crt").display()
            ))
            .arg(format!(
                "--tls-private-key-file={}",
                pki.join("apiserver.key").display()
            ))
            .arg(format!(
                "--service-account-key-file={}",
                cdir.join("service-account.pub").display()
            ))
            .arg(format!(
                "--service-account-signing-key-file={}",
                cdir.join("service-account.key").display()
            ))
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg("--service-cluster-ip-range=10.96.0.0/12")
            .arg("--anonymous-auth=false")
            .arg("--authorization-mode=Node,RBAC")
            .arg("--profiling=false")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("run kube-apiserver"),
    );

    let server = format!("https://127.0.0.1:{port}");
    let kc = d.path().join("admin.kubeconfig");
    ok(&[
        "cluster",
        "kubeconfig",
        s(&cdir),
        "--out",
        s(&kc),
        "--server",
        &server,
    ]);
    let mode = std::fs::metadata(&kc).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the kubeconfig holds a key");
    // Refused: an existing file without --force, a plain-HTTP server.
    let again = support::nodeimg(&[
        "cluster",
        "kubeconfig",
        s(&cdir),
        "--out",
        s(&kc),
        "--server",
        &server,
    ]);
    assert!(!again.status.success(), "{}", text(&again));
    let http = support::nodeimg(&[
        "cluster",
        "kubeconfig",
        s(&cdir),
        "--out",
        s(&d.path().join("x")),
        "--server",
        "http://127.0.0.1:1",
    ]);
    assert!(
        !http.status.success() && text(&http).contains("--server"),
        "{}",
        text(&http)
    );

    // The API answers /readyz through our kubeconfig (a cold start under
    // load takes a while).
    let started = Instant::now();
    loop {
        let r = kubectl(&bin, &["--kubeconfig", s(&kc), "get", "--raw", "/readyz"]);
        if r.status.success() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "kube-apiserver never became ready: {}\n{}",
            text(&r),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    eprintln!("kube-apiserver ready after {:?}", started.elapsed());

    let who = kubectl(
        &bin,
        &["--kubeconfig", s(&kc), "auth", "whoami", "-o", "json"],
    );
    assert!(who.status.success(), "{}", text(&who));
    let who: serde_json::Value = serde_json::from_slice(&who.stdout).unwrap();
    assert_eq!(who["status"]["userInfo"]["username"], "nodeimg-admin");
    let groups = who["status"]["userInfo"]["groups"].to_string();
    assert!(groups.contains("system:masters"), "{groups}");

    let v = kubectl(&bin, &["--kubeconfig", s(&kc), "version", "-o", "json"]);
    assert!(v.status.success(), "{}", text(&v));
    let v: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(v["serverVersion"]["gitVersion"], "v1.34.4");
    assert_eq!(v["clientVersion"]["gitVersion"], "v1.34.4");

    // No client certificate: 401 (anonymous requests are off). curl, as
    // kubectl without credentials asks for a user name.
    let anon = Command::new(support::tool("curl"))
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(cdir.join("kubernetes-ca.crt"))
        .arg(format!("{server}/version"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&anon.stdout),
        "401",
        "{}",
        text(&anon)
    );

    // Another cluster's admin kubeconfig: its CA is not this API's, so
    // kubectl refuses the server, and the server would refuse its client.
    let other = init(d.path(), "other");
    let okc = d.path().join("other.kubeconfig");
    ok(&[
        "cluster",
        "kubeconfig",
        s(&other),
        "--out",
        s(&okc),
        "--server",
        &server,
    ]);
    let foreign = kubectl(&bin, &["--kubeconfig", s(&okc), "get", "--raw", "/version"]);
    assert!(
        !foreign.status.success() && text(&foreign).contains("certificate"),
        "{}",
        text(&foreign)
    );
    // and the server refuses the other cluster's client certificate, shown
    // with a client that trusts this server
    use base64::Engine;
    let okc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&okc).unwrap()).unwrap();
    for (field, file) in [
        ("client-certificate-data", "other.crt"),
        ("client-key-data", "other.key"),
    ] {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(okc["users"][0]["user"][field].as_str().unwrap())
            .unwrap();
        std::fs::write(d.path().join(file), pem).unwrap();
    }
    let stranger = Command::new(support::tool("curl"))
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(cdir.join("kubernetes-ca.crt"))
        .arg("--cert")
        .arg(d.path().join("other.crt"))
        .arg("--key")
        .arg(d.path().join("other.key"))
        .arg(format!("{server}/version"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&stranger.stdout),
        "401",
        "{}",
        text(&stranger)
    );
}
