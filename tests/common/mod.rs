//! Hermetic fixtures for end-to-end tests of the `nodeimg` binary: a fake
//! signed Debian archive served on 127.0.0.1 (the base suite and its
//! pockets; the security pocket may be a second server, as Debian's security
//! archive is), .debs built in memory, and a temporary project directory
//! whose every file is snapshotted so a test can prove nothing was written
//! outside `--out`, the cache and the lock.

// Each test binary uses a part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use pgp::composed::{
    ArmorOptions, CleartextSignedMessage, EncryptionCaps, KeyType, SecretKeyParamsBuilder,
    SignedPublicKey, SignedSecretKey, SubkeyParamsBuilder,
};
use pgp::packet::{SignatureConfig, SignatureType, Subpacket, SubpacketData};
use pgp::ser::Serialize;
use pgp::types::{KeyDetails, Password, Timestamp};
use rand::rngs::StdRng;
use rand::SeedableRng;

pub const SUITE: &str = "trixie";
pub const UPDATES: &str = "trixie-updates";
pub const SECURITY: &str = "trixie-security";
pub const PACKAGES_XZ: &str = "main/binary-amd64/Packages.xz";
/// The archive date; builds take their file times from it.
pub const DATE: &str = "Sat, 01 Mar 2025 12:00:00 UTC";

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, data))
}

// ---- HTTP ---------------------------------------------------------------

type Files = Arc<Mutex<BTreeMap<String, Vec<u8>>>>;

/// A GET-only HTTP/1.1 server on 127.0.0.1 that serves `files` by path and
/// stops when dropped.
pub struct Server {
    files: Files,
    /// Every path asked for, in order.
    requests: Arc<Mutex<Vec<String>>>,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let files = Files::default();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, r, s) = (files.clone(), requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = conn {
                    let _ = respond(stream, &f, &r);
                }
            }
        });
        Server {
            files,
            requests,
            addr,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/debian", self.addr)
    }

    /// Serves `data` at `path` (relative to the mirror root).
    pub fn put(&self, path: &str, data: Vec<u8>) {
        self.files.lock().unwrap().insert(path.to_string(), data);
    }

    pub fn get(&self, path: &str) -> Vec<u8> {
        self.files.lock().unwrap()[path].clone()
    }

    /// Was `path` (relative to the mirror root) asked for?
    pub fn requested(&self, path: &str) -> bool {
        self.requests.lock().unwrap().iter().any(|r| r == path)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn respond(stream: TcpStream, files: &Files, requests: &Mutex<Vec<String>>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
    }
    let mut parts = request.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.strip_prefix("/debian/");
    if let Some(p) = path {
        requests.lock().unwrap().push(p.to_string());
    }
    let body = path.and_then(|p| files.lock().unwrap().get(p).cloned());
    let mut out = &stream;
    match (method, body) {
        ("GET", Some(b)) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                b.len()
            );
            out.write_all(head.as_bytes())?;
            out.write_all(&b)?;
        }
        ("GET", None) => out.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?,
        _ => out.write_all(
            b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?,
    }
    out.flush()
}

// ---- OpenPGP --------------------------------------------------------------

/// A key whose primary only certifies and whose subkey signs, as Debian's.
pub fn archive_key(seed: u64) -> SignedSecretKey {
    let mut rng = StdRng::seed_from_u64(seed);
    let sub = SubkeyParamsBuilder::default()
        .key_type(KeyType::Ed25519Legacy)
        .can_sign(true)
        .can_encrypt(EncryptionCaps::None)
        .build()
        .unwrap();
    SecretKeyParamsBuilder::default()
        .key_type(KeyType::Ed25519Legacy)
        .can_certify(true)
        .can_sign(false)
        .primary_user_id(format!("Test Archive {seed} <archive@example.org>"))
        .subkeys(vec![sub])
        .build()
        .unwrap()
        .generate(&mut rng)
        .unwrap()
}

pub fn public_key(key: &SignedSecretKey) -> Vec<u8> {
    let mut out = Vec::new();
    SignedPublicKey::from(key.clone())
        .to_writer(&mut out)
        .unwrap();
    out
}

/// `text` cleartext-signed by the key's signing subkey.
pub fn clearsign(key: &SignedSecretKey, text: &str) -> Vec<u8> {
    let sub = &key.secret_subkeys[0].key;
    let mut config =
        SignatureConfig::from_key(StdRng::seed_from_u64(7), sub, SignatureType::Text).unwrap();
    config.hashed_subpackets = vec![
        Subpacket::regular(SubpacketData::SignatureCreationTime(Timestamp::now())).unwrap(),
        Subpacket::regular(SubpacketData::IssuerFingerprint(sub.fingerprint())).unwrap(),
    ];
    let msg = CleartextSignedMessage::new(text, config, sub, &Password::empty()).unwrap();
    msg.to_armored_bytes(ArmorOptions::default()).unwrap()
}

// ---- .deb -------------------------------------------------------------------

/// One data-archive entry; names are written raw, so `../x` is possible.
pub enum Item<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
}

fn tar_append(b: &mut tar::Builder<Vec<u8>>, name: &str, kind: tar::EntryType, data: &[u8]) {
    b.append(&raw_header(name, kind, data.len(), None), data)
        .unwrap();
}

fn raw_header(name: &str, kind: tar::EntryType, size: usize, link: Option<&str>) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(l) = link {
        h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_size(size as u64);
    h.set_mode(match kind {
        tar::EntryType::Symlink => 0o777,
        _ => 0o755,
    });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    h
}

/// A .deb: `debian-binary`, `control.tar.gz`, `data.tar.xz`.
pub fn deb(name: &str, version: &str, items: &[Item]) -> Vec<u8> {
    let control = format!(
        "Package: {name}\nVersion: {version}\nArchitecture: amd64\n\
         Maintainer: Test <t@example.org>\nDescription: test package\n"
    );
    let mut c = tar::Builder::new(Vec::new());
    tar_append(&mut c, "./", tar::EntryType::Directory, b"");
    tar_append(
        &mut c,
        "./control",
        tar::EntryType::Regular,
        control.as_bytes(),
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&c.into_inner().unwrap()).unwrap();
    let control_tar = gz.finish().unwrap();

    let mut d = tar::Builder::new(Vec::new());
    for item in items {
        match item {
            Item::Dir(p) => tar_append(&mut d, p, tar::EntryType::Directory, b""),
            Item::File(p, data) => tar_append(&mut d, p, tar::EntryType::Regular, data),
            Item::Symlink(p, target) => d
                .append(
                    &raw_header(p, tar::EntryType::Symlink, 0, Some(target)),
                    &b""[..],
                )
                .unwrap(),
        }
    }
    let data_tar = xz(&d.into_inner().unwrap());

    let mut ar = ar::Builder::new(Vec::new());
    for (id, data) in [
        ("debian-binary", &b"2.0\n"[..]),
        ("control.tar.gz", &control_tar),
        ("data.tar.xz", &data_tar),
    ] {
        let header = ar::Header::new(id.as_bytes().to_vec(), data.len() as u64);
        ar.append(&header, data).unwrap();
    }
    ar.into_inner().unwrap()
}

pub fn xz(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    liblzma::read::XzEncoder::new(data, 6)
        .read_to_end(&mut out)
        .unwrap();
    out
}

// ---- the archive -----------------------------------------------------------

/// A binary package as the index lists it; `deb` is what the pool serves.
pub struct Pkg {
    pub name: String,
    pub version: String,
    pub depends: Option<String>,
    pub deb: Vec<u8>,
    /// The pool directory: `pool/main`, or `pool/updates/main` as the
    /// security archive has it.
    pub pool: String,
}

impl Pkg {
    pub fn new(name: &str, depends: Option<&str>, items: &[Item]) -> Pkg {
        Pkg::versioned(name, "1.0-1", depends, items)
    }

    pub fn versioned(name: &str, version: &str, depends: Option<&str>, items: &[Item]) -> Pkg {
        Pkg {
            name: name.into(),
            version: version.into(),
            depends: depends.map(str::to_string),
            deb: deb(name, version, items),
            pool: "pool/main".into(),
        }
    }

    /// The same package under another pool directory.
    pub fn in_pool(mut self, pool: &str) -> Pkg {
        self.pool = pool.into();
        self
    }

    pub fn pool_path(&self) -> String {
        let n = &self.name;
        format!(
            "{}/{}/{n}/{n}_{}_amd64.deb",
            self.pool,
            &n[..1],
            self.version
        )
    }
}

pub fn packages_index(pkgs: &[Pkg]) -> String {
    let mut text = String::new();
    for p in pkgs {
        text += &format!(
            "Package: {}\nVersion: {}\nArchitecture: amd64\nMaintainer: Test <t@example.org>\n",
            p.name, p.version
        );
        if let Some(d) = &p.depends {
            text += &format!("Depends: {d}\n");
        }
        text += &format!(
            "Filename: {}\nSize: {}\nSHA256: {}\n\n",
            p.pool_path(),
            p.deb.len(),
            sha256_hex(&p.deb)
        );
    }
    text
}

/// Publishes `pkgs` on `server` as the whole archive of an image with the
/// default pockets: `pkgs` in the base suite, and `trixie-updates` and
/// `trixie-security` empty beside it (the project's security mirror is
/// the same server unless a test says otherwise).
pub fn publish(server: &Server, signer: &SignedSecretKey, pkgs: &[Pkg]) {
    publish_suite(server, signer, SUITE, DATE, pkgs);
    publish_suite(server, signer, UPDATES, DATE, &[]);
    publish_suite(server, signer, SECURITY, DATE, &[]);
}

/// Publishes `pkgs` as `suite` on `server`: pool files, `Packages.xz` (also
/// under by-hash, as Debian serves it) and an InRelease signed by `signer`
/// whose Suite and Codename are `suite`.
pub fn publish_suite(
    server: &Server,
    signer: &SignedSecretKey,
    suite: &str,
    date: &str,
    pkgs: &[Pkg],
) {
    publish_suite_with(server, signer, suite, date, "", pkgs);
}

/// [`publish_suite`] with `fields` (whole lines, such as `Valid-Until:
/// …\n`) added to the signed Release text.
pub fn publish_suite_with(
    server: &Server,
    signer: &SignedSecretKey,
    suite: &str,
    date: &str,
    fields: &str,
    pkgs: &[Pkg],
) {
    for p in pkgs {
        server.put(&p.pool_path(), p.deb.clone());
    }
    let index = xz(packages_index(pkgs).as_bytes());
    let sha = sha256_hex(&index);
    let release = format!(
        "Origin: Debian\nLabel: Debian\nSuite: {suite}\nCodename: {suite}\nDate: {date}\n{fields}\
         Acquire-By-Hash: yes\nArchitectures: amd64\nComponents: main\nDescription: test\n\
         SHA256:\n {sha} {} {PACKAGES_XZ}\n",
        index.len()
    );
    server.put(
        &format!("dists/{suite}/main/binary-amd64/by-hash/SHA256/{sha}"),
        index.clone(),
    );
    server.put(&format!("dists/{suite}/{PACKAGES_XZ}"), index);
    server.put(
        &format!("dists/{suite}/InRelease"),
        clearsign(signer, &release),
    );
}

// ---- the project directory --------------------------------------------------

/// What one run of the binary did.
pub struct Run {
    pub ok: bool,
    /// The exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// A temporary project: `images/`, `layers/`, the keyring, `out*/`, `cache/`.
pub struct Project {
    pub dir: tempfile::TempDir,
    pub mirror: String,
    /// The security archive's mirror: `mirror` unless set otherwise.
    pub security_mirror: String,
}

impl Project {
    pub fn new(mirror: &str, keyring: &[u8]) -> Project {
        let p = Project {
            dir: tempfile::tempdir().unwrap(),
            mirror: mirror.into(),
            security_mirror: mirror.into(),
        };
        p.write("archive.gpg", keyring);
        p
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, data: impl AsRef<[u8]>) {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }

    /// `images/good.toml` with `layers`, each `layers/<name>/layer.toml`
    /// holding the given text.
    pub fn image(&self, layers: &[(&str, &str)]) {
        let names: Vec<String> = layers.iter().map(|(n, _)| format!("{n:?}")).collect();
        self.write(
            "images/good.toml",
            format!(
                "schema = 1\nname = \"good\"\nversion = \"1.0\"\nlayers = [{}]\n",
                names.join(", ")
            ),
        );
        for (name, text) in layers {
            self.write(&format!("layers/{name}/layer.toml"), text);
        }
    }

    /// Runs `nodeimg <cmd> <args> --mirror --security-mirror --keyring
    /// --cache-dir` from the project directory with a clean environment
    /// whose HOME and TMPDIR lie inside the project (so stray writes show
    /// in [`Project::snapshot`]; no mirror comes from the host's apt sources).
    pub fn run(&self, cmd: &str, args: &[&str]) -> Run {
        let out = Command::new(env!("CARGO_BIN_EXE_nodeimg"))
            .arg(cmd)
            .args(args)
            .arg("--mirror")
            .arg(&self.mirror)
            .arg("--security-mirror")
            .arg(&self.security_mirror)
            .arg("--keyring")
            .arg(self.path("archive.gpg"))
            .arg("--cache-dir")
            .arg(self.path("cache"))
            .env_clear()
            .env("HOME", self.path("home"))
            .env("TMPDIR", self.path("tmp"))
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        eprintln!("nodeimg {cmd} {args:?}: {}\n{stdout}{stderr}", out.status);
        Run {
            ok: out.status.success(),
            code: out.status.code(),
            stdout,
            stderr,
        }
    }

    pub fn lock(&self) -> Run {
        self.run("lock", &["images/good.toml"])
    }

    pub fn build(&self, out: &str, extra: &[&str]) -> Run {
        let mut args = vec!["images/good.toml", "--out", out];
        args.extend_from_slice(extra);
        self.run("build", &args)
    }

    /// Every path under the project except `out*/` and `cache/`, with its
    /// contents (or symlink target).
    pub fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut map = BTreeMap::new();
        walk(self.dir.path(), self.dir.path(), &mut map);
        map
    }

    /// Files under `rel`, recursively (empty when it does not exist).
    pub fn files_under(&self, rel: &str) -> Vec<PathBuf> {
        let mut map = BTreeMap::new();
        walk(&self.path(rel), &self.path(rel), &mut map);
        map.into_iter()
            .filter(|(_, v)| v.as_slice() != b"<dir>")
            .map(|(k, _)| k)
            .collect()
    }
}

fn walk(root: &Path, dir: &Path, map: &mut BTreeMap<PathBuf, Vec<u8>>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries {
        let path = e.unwrap().path();
        let rel = path.strip_prefix(root).unwrap().to_path_buf();
        let name = rel.to_string_lossy();
        if dir == root && (name.starts_with("out") || name == "cache") {
            continue;
        }
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.file_type().is_symlink() {
            let t = std::fs::read_link(&path).unwrap();
            map.insert(rel, format!("-> {}", t.display()).into_bytes());
        } else if meta.is_dir() {
            map.insert(rel, b"<dir>".to_vec());
            walk(root, &path, map);
        } else {
            map.insert(rel, std::fs::read(&path).unwrap());
        }
    }
}

/// Paths added, removed or changed between two snapshots.
pub fn changed(
    before: &BTreeMap<PathBuf, Vec<u8>>,
    after: &BTreeMap<PathBuf, Vec<u8>>,
) -> Vec<PathBuf> {
    let paths: std::collections::BTreeSet<&PathBuf> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    paths.into_iter().cloned().collect()
}
