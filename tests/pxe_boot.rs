//! The PXE bundle, judged by a diskless VM and by an HTTP client:
//! - `nodeimg lab boot --pxe` boots the worker's bundle through the NIC's
//!   iPXE ROM, over slirp's TFTP and over HTTP from the lab's server, and
//!   the node reports ready on a verified read-only root whose verity
//!   devices are loop devices over the files in the initrd;
//! - `nodeimg pxe serve` serves the bundle's bytes and nothing outside it.

// Test code: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use nodeimg::output::pxe_bundle::{write_pxe_bundle, PxeParts, PXE_DIR};
use serde_json::Value;
use support::{artifact_path, lab_boot_serial, read_manifest};

fn built() -> &'static support::Built {
    static BUILT: OnceLock<support::Built> = OnceLock::new();
    // The PXE bundle only: no UKI or disk to wait for.
    support::built_once(&BUILT, &["--format", "pxe"])
}

/// The build lists the bundle's three files, in `pxe/`, with their kinds.
fn check_listed(out: &Path) {
    let m = read_manifest(out);
    for (kind, path) in [
        ("pxe-kernel", "pxe/vmlinuz"),
        ("pxe-initrd", "pxe/initrd.img"),
        ("pxe-script", "pxe/boot.ipxe"),
    ] {
        assert_eq!(artifact_path(&m, kind), path);
    }
    // the kernel is Debian's, byte for byte the direct boot's
    assert_eq!(
        std::fs::read(out.join("pxe/vmlinuz")).unwrap(),
        std::fs::read(out.join(artifact_path(&m, "kernel"))).unwrap()
    );
}

/// Boots the bundle over `via` and checks what the node saw.
fn boot_over(via: &str) -> Value {
    let out = &built().out;
    check_listed(out);
    // each transport keeps its own serial log beside the build
    let dir = out.with_file_name(format!("worker-{via}"));
    if !dir.exists() {
        std::os::unix::fs::symlink(out, &dir).unwrap();
    }
    let (code, report, serial) = lab_boot_serial(&dir, &["--pxe", "--pxe-via", via]);
    let console = std::fs::read_to_string(&serial).unwrap_or_default();
    assert_eq!(
        code,
        0,
        "not ready over {via}: {report:#}\nserial log {}",
        serial.display()
    );
    assert_eq!(report["ready"], true);
    assert_eq!(report["root"]["device"], "/dev/mapper/nodeimg-root");
    assert_eq!(report["root"]["verity"], "verified");
    assert_eq!(report["root"]["read_only"], true);
    assert_eq!(report["var"], "tmpfs", "a diskless node keeps /var in RAM");
    let cmdline = report["cmdline"].as_str().unwrap();
    assert!(
        cmdline.contains("nodeimg.root=file:/nodeimg/root.img")
            && cmdline.contains("nodeimg.hash=file:/nodeimg/root.verity"),
        "{cmdline}"
    );
    // the verity device sits on loop devices over the initrd's files
    let attach = console
        .lines()
        .find(|l| l.contains("nodeagent: attach-files ok"))
        .unwrap_or_else(|| panic!("no attach-files line in {}", serial.display()));
    assert!(
        attach.contains("/nodeimg/root.img on /dev/loop")
            && attach.contains("/nodeimg/root.verity on /dev/loop"),
        "{attach}"
    );
    let verity = console
        .lines()
        .find(|l| l.contains("nodeagent: wait-devices ok"))
        .unwrap();
    assert!(
        verity.matches("/dev/loop").count() == 2,
        "data and hash are not both loop devices: {verity}"
    );
    eprintln!("PXE boot over {via}: {} ms to report", report["boot_ms"]);
    report
}

#[test]
fn pxe_boot_over_http_reaches_ready() {
    boot_over("http");
}

#[test]
fn pxe_boot_over_tftp_reaches_ready() {
    boot_over("tftp");
}

/// `nodeimg pxe serve`, killed when the test ends.
struct Serving {
    child: Child,
    addr: String,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &Path) -> Serving {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nodeimg"))
        .args(["pxe", "serve", "--listen", "127.0.0.1:0"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // the first stdout line is the script's URL, printed once bound
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("http://")
        .and_then(|r| r.strip_suffix("/boot.ipxe"))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    Serving { child, addr }
}

/// One raw HTTP/1.1 request (the target is sent as is, unnormalised);
/// returns the status, the headers (lower-case names) and the body.
fn request(addr: &str, method: &str, target: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn pxe_serve_serves_the_bundle_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root.img");
    let verity = tmp.path().join("root.verity");
    std::fs::write(&root, vec![7u8; 8192]).unwrap();
    std::fs::write(&verity, vec![9u8; 4096]).unwrap();
    let bundle_dir = tmp.path().join("build").join(PXE_DIR);
    let kernel: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    write_pxe_bundle(
        &bundle_dir,
        &PxeParts {
            kernel: &kernel,
            initramfs: b"\x28\xb5\x2f\xfd not really zstd",
            root: &root,
            verity: &verity,
            cmdline: "console=ttyS0 nodeimg.data_blocks=1",
            source_date_epoch: 0,
        },
    )
    .unwrap();
    // what must never be served: a file beside the bundle, and a symlink out
    std::fs::write(tmp.path().join("build/Cargo.toml"), "[package]").unwrap();
    std::os::unix::fs::symlink(tmp.path().join("build/Cargo.toml"), bundle_dir.join("link"))
        .unwrap();

    // a build directory is accepted and its pxe/ folder served
    let s = serve(&tmp.path().join("build"));
    for name in ["boot.ipxe", "vmlinuz", "initrd.img"] {
        let (status, headers, body) = request(&s.addr, "GET", &format!("/{name}"));
        let want = std::fs::read(bundle_dir.join(name)).unwrap();
        assert_eq!(status, 200, "{name}");
        assert_eq!(body, want, "{name}");
        assert_eq!(
            header(&headers, "content-length"),
            Some(want.len().to_string().as_str()),
            "{name}"
        );
    }
    let (status, headers, body) = request(&s.addr, "HEAD", "/vmlinuz");
    assert_eq!(status, 200);
    assert!(body.is_empty());
    assert_eq!(header(&headers, "content-length"), Some("100000"));

    for target in [
        "/../Cargo.toml",
        "/%2e%2e/Cargo.toml",
        "/",
        "/missing",
        "//etc/passwd",
    ] {
        let (status, _, body) = request(&s.addr, "GET", target);
        assert!(status == 404 || status == 403, "{target}: {status}");
        assert!(
            !String::from_utf8_lossy(&body).contains("[package]"),
            "{target}"
        );
    }
    assert_eq!(request(&s.addr, "GET", "/link").0, 403);
    assert_eq!(request(&s.addr, "POST", "/boot.ipxe").0, 405);

    // a folder without boot.ipxe is refused before anything listens
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nodeimg"))
        .args(["pxe", "serve", "--listen", "127.0.0.1:0"])
        .arg(empty.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("has no boot.ipxe"), "{stderr}");
}
