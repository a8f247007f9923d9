//! A real S3-compatible object store for the labs: Versity's S3 gateway
//! (tests/fixtures/s3-server, versitygw at a pinned release) over its
//! POSIX backend, so each object is a plain file the test can read, on
//! this machine's loopback with TLS and Signature V4 checked against one
//! root key pair; `lab up --host-forward` offers it to the nodes on the
//! lab host's address.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusty_s3::{Bucket, Credentials, S3Action as _, UrlStyle};

pub const ACCESS_KEY: &str = "nodeimg-lab";
pub const SECRET_KEY: &str = "lab-secret-key-0123456789";
pub const BUCKET: &str = "etcd-backups";
/// The lab host's address, as the nodes dial it.
const LAB_HOST: &str = "10.77.0.1";

/// A running store; stopped when dropped.
pub struct ObjectStore {
    child: Child,
    /// Its loopback port here, and the lab host's port the nodes dial.
    pub port: u16,
    /// PEM of the CA of its serving certificate.
    pub ca: String,
    /// The POSIX backend's root: `ROOT/BUCKET/KEY` is each object.
    pub root: PathBuf,
    _dir: tempfile::TempDir,
}

impl ObjectStore {
    /// Starts the gateway with a certificate for the lab host and
    /// loopback, and makes [`BUCKET`] through the S3 API.
    pub fn start() -> ObjectStore {
        let bin = super::go_tool(
            "s3-server",
            &["go.mod", "go.sum"],
            "github.com/versity/versitygw/cmd/versitygw",
        );
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "nodeimg lab object store CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec![LAB_HOST.to_string(), "127.0.0.1".to_string()])
                .unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        let (cert_file, key_file) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let port = super::free_port();
        let log = std::fs::File::create(dir.path().join("versitygw.log")).unwrap();
        let child = Command::new(bin)
            .args(["--access", ACCESS_KEY, "--secret", SECRET_KEY])
            .arg(format!("--port=127.0.0.1:{port}"))
            .arg("--cert")
            .arg(&cert_file)
            .arg("--key")
            .arg(&key_file)
            .arg("--quiet")
            .arg("posix")
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start versitygw");
        let store = ObjectStore {
            child,
            port,
            ca: ca_cert.pem(),
            root,
            _dir: dir,
        };
        store.wait_listening();
        store.make_bucket();
        store
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            let log =
                std::fs::read_to_string(self._dir.path().join("versitygw.log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "versitygw did not listen: {log}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn make_bucket(&self) {
        let endpoint = format!("https://127.0.0.1:{}", self.port).parse().unwrap();
        let bucket = Bucket::new(endpoint, UrlStyle::Path, BUCKET, "us-east-1").unwrap();
        let credentials = Credentials::new(ACCESS_KEY, SECRET_KEY);
        let url = bucket
            .create_bucket(&credentials)
            .sign(Duration::from_secs(60));
        let mut r = self.agent().put(url.as_str()).send_empty().unwrap();
        let body = r.body_mut().read_to_string().unwrap_or_default();
        assert_eq!(r.status(), 200, "CreateBucket: {body}");
    }

    /// An HTTP client trusting the store's CA; answers of any status.
    pub fn agent(&self) -> ureq::Agent {
        let ca = ureq::tls::Certificate::from_pem(self.ca.as_bytes()).unwrap();
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![ca])))
            .build();
        ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .build()
            .new_agent()
    }

    /// `lab up`'s forward: the lab host's port to this store.
    pub fn host_forward(&self) -> String {
        format!("{}=127.0.0.1:{}", self.port, self.port)
    }

    /// The endpoint this machine reaches (the lab's nodes dial
    /// [`ObjectStore::lab_endpoint`]).
    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn lab_endpoint(&self) -> String {
        format!("https://{LAB_HOST}:{}", self.port)
    }

    /// Writes the credentials file into `cluster` and appends the target
    /// to its cluster.toml, keeping `retain` snapshots under `prefix`.
    pub fn configure(&self, cluster: &Path, prefix: &str, retain: u32) {
        let creds = cluster.join("s3-credentials.toml");
        std::fs::write(
            &creds,
            format!("access_key_id = {ACCESS_KEY:?}\nsecret_access_key = {SECRET_KEY:?}\n"),
        )
        .unwrap();
        let toml = cluster.join("cluster.toml");
        let mut text = std::fs::read_to_string(&toml).unwrap();
        text.push_str(&format!(
            "\n[backup_targets.s3]\nendpoint = {:?}\nbucket = {BUCKET:?}\nprefix = {prefix:?}\n\
             credentials_file = \"s3-credentials.toml\"\nretain = {retain}\nca = \"\"\"\n{}\"\"\"\n",
            self.lab_endpoint(),
            self.ca
        ));
        std::fs::write(&toml, text).unwrap();
    }

    /// The snapshots the store holds under `prefix`: (time, file), oldest
    /// first, read from the backend's files.
    pub fn snapshots(&self, prefix: &str) -> Vec<(u64, PathBuf)> {
        let dir = self.root.join(BUCKET).join(prefix);
        let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter_map(|e| {
                        let t = contract::etcd::backup_time(&e.file_name().to_string_lossy())?;
                        Some((t, e.path()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        found
    }
}

impl Drop for ObjectStore {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
