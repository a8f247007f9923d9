//! Shared by the integration tests that build the repository's real images:
//! locating the agent and the reference tools, building into a directory.

#![allow(dead_code)]

pub mod etcd;
pub mod kube;
pub mod kube_bench;
pub mod oidc;
pub mod registry;
pub mod s3;
pub mod stack;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The static agent the Makefile builds before the tests (`make agent`),
/// in `$CARGO_TARGET_DIR` when that is set (as nodeimg finds it).
pub fn agent() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"));
    let p = target.join("x86_64-unknown-linux-gnu/release/nodeagent");
    assert!(
        p.is_file(),
        "{} is missing: run `make agent` (make test does) before these tests",
        p.display()
    );
    p
}

/// [`tool`] as a path.
pub fn tool_path(name: &str) -> PathBuf {
    PathBuf::from(tool(name))
}

pub fn tool(name: &str) -> String {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p.display().to_string();
        }
    }
    panic!("{name} is not installed: run scripts/setup.sh (make test does)");
}

/// `nodeimg build images/<image>.toml --out OUT` from the repository, as
/// the README gives it: without `--agent`, so nodeimg must find the agent
/// `make agent` built in its own target directory.
pub fn build_image(image: &str, out: &Path) {
    build_image_with(image, out, &[]);
}

/// [`build_image`] with extra arguments, e.g. `["--format", "disk-raw"]`.
pub fn build_image_with(image: &str, out: &Path, extra: &[&str]) {
    agent(); // a missing agent is named here, not as a failed build
    let status = Command::new(env!("CARGO_BIN_EXE_nodeimg"))
        .current_dir(repo())
        .args(["build", &format!("images/{image}.toml"), "--quiet", "--out"])
        .arg(out)
        .args(extra)
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("NODEIMG_AGENT")
        .status()
        .expect("run nodeimg");
    assert!(status.success(), "nodeimg build {image} failed");
}

pub fn read_manifest(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest"))
        .expect("json")
}

pub fn artifact_path(m: &Value, kind: &str) -> String {
    m["artifacts"]
        .as_array()
        .expect("artifacts")
        .iter()
        .find(|a| a["kind"] == kind)
        .expect(kind)["path"]
        .as_str()
        .expect("path")
        .to_string()
}

/// Runs `nodeimg lab boot DIR --json` and returns (exit code, report). The
/// serial log is kept next to DIR for a failing test's evidence. The
/// timeout is 180 s unless `extra` names one.
pub fn lab_boot(dir: &Path, extra: &[&str]) -> (i32, Value) {
    let (code, report, _) = lab_boot_serial(dir, extra);
    (code, report)
}

/// [`lab_boot`], also returning where this boot's serial log was kept (a
/// path of its own: tests boot the same build side by side).
pub fn lab_boot_serial(dir: &Path, extra: &[&str]) -> (i32, Value, PathBuf) {
    static BOOTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = BOOTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let serial = dir.with_extension(format!("boot{n}.serial.log"));
    let timeout: &[&str] = if extra.contains(&"--timeout") {
        &[]
    } else {
        &["--timeout", "180"]
    };
    let out = Command::new(env!("CARGO_BIN_EXE_nodeimg"))
        .args(["lab", "boot", "--json", "--keep-serial"])
        .arg(&serial)
        .args(timeout)
        .arg(dir)
        .args(extra)
        .output()
        .expect("run nodeimg lab boot");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}); stderr:\n{}\nserial log: {}",
            String::from_utf8_lossy(&out.stderr),
            serial.display()
        )
    });
    (out.status.code().unwrap_or(-1), report, serial)
}

pub fn sha256_hex(data: &[u8]) -> String {
    nodeimg::util::hash::sha256_hex(data)
}

/// A tool from the Python venv that scripts/setup.sh makes
/// (`$NODEIMG_VENV`, default `~/.cache/nodeimg/venv`).
pub fn venv_tool(name: &str) -> PathBuf {
    let venv = std::env::var_os("NODEIMG_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/nodeimg/venv")
        });
    let p = venv.join("bin").join(name);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/setup.sh (make test does)",
        p.display()
    );
    p
}

/// A judge package pinned in the lock (tools.toml), unpacked once per
/// test binary by `nodeimg tool fetch`; returns the unpacked root.
pub fn judge_package(name: &str) -> PathBuf {
    let dir = repo().join("target/judges").join(name);
    let status = Command::new(env!("CARGO_BIN_EXE_nodeimg"))
        .current_dir(repo())
        .args(["tool", "fetch", name, "--quiet", "--out"])
        .arg(&dir)
        .status()
        .expect("run nodeimg tool fetch");
    assert!(status.success(), "nodeimg tool fetch {name} failed");
    dir
}

/// Runs `cmd`, fails the test with its output unless it succeeds, and
/// returns its stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run tool");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A worker build in a temporary directory, made once per test binary and
/// shared by its tests.
pub struct Built {
    _dir: tempfile::TempDir,
    pub out: PathBuf,
    pub manifest: Value,
}

/// Builds the worker with `extra` arguments into `cell` on first use.
pub fn built_once(cell: &'static std::sync::OnceLock<Built>, extra: &[&str]) -> &'static Built {
    cell.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("worker");
        build_image_with("worker", &out, extra);
        let manifest = read_manifest(&out);
        Built {
            _dir: dir,
            out,
            manifest,
        }
    })
}

/// Runs an mtools command (`args[0]`, e.g. `mcopy`) on the ESP of the GPT
/// disk `raw`, which starts 1 MiB into it.
pub fn mtools(raw: &Path, args: &[&str]) {
    let mut cmd = Command::new(tool(args[0]));
    cmd.arg("-i")
        .arg(format!("{}@@1M", raw.display()))
        .args(&args[1..]);
    run(&mut cmd);
}

/// Moves `raw` into `dir` as `disk.raw` beside a copy of `built`'s kernel,
/// with `built`'s manifest listing only those two, so the lab boots the
/// disk (`lab boot DIR --firmware uefi`; its KVM probe boots the kernel);
/// returns `dir`.
pub fn lab_dir_for_disk(raw: &Path, built: &Path, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("lab dir");
    let disk = dir.join("disk.raw");
    std::fs::rename(raw, &disk).expect("move the disk");
    let data = std::fs::read(&disk).expect("read the disk");
    let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, &data));
    let mut manifest = read_manifest(built);
    let kernel = manifest["artifacts"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["kind"] == "kernel"))
        .cloned()
        .expect("the build lists its kernel");
    let kernel_path = kernel["path"].as_str().expect("kernel path");
    std::fs::copy(built.join(kernel_path), dir.join(kernel_path)).expect("copy the kernel");
    manifest["artifacts"] = serde_json::json!([
        {"kind": "disk-raw", "path": "disk.raw", "sha256": sha, "size": data.len()},
        kernel,
    ]);
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).expect("manifest");
    dir.to_path_buf()
}

/// `nodeimg ARGS` (this build's binary), its output whatever the status.
pub fn nodeimg(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nodeimg"))
        .args(args)
        .output()
        .expect("run nodeimg")
}

/// `nodeimg lab up LAB --cluster CLUSTER --run-dir RUN --json --timeout
/// SECS`, its output whatever the status.
pub fn lab_up(lab: &Path, cluster: &Path, run: &Path, timeout_s: u32) -> std::process::Output {
    lab_up_with(lab, cluster, run, timeout_s, &[])
}

/// [`lab_up`] with more arguments (`--host-forward …`).
pub fn lab_up_with(
    lab: &Path,
    cluster: &Path,
    run: &Path,
    timeout_s: u32,
    extra: &[&str],
) -> std::process::Output {
    let timeout = timeout_s.to_string();
    let mut args = vec![
        "lab",
        "up",
        s(lab),
        "--cluster",
        s(cluster),
        "--run-dir",
        s(run),
        "--json",
        "--timeout",
        &timeout,
    ];
    args.extend(extra);
    nodeimg(&args)
}

/// `nodeimg ARGS`, which must succeed; its stdout.
pub fn ok(args: &[&str]) -> String {
    let out = nodeimg(args);
    assert!(
        out.status.success(),
        "nodeimg {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A path as the `&str` an argument list takes.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// A loopback port nobody listens on now (the one who needs it binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("its address")
        .port()
}

/// A command's exit code and both outputs, for assertion messages.
pub fn text(out: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `out` parsed as JSON, or a panic showing it.
pub fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// Takes a lab (`lab up`) down however the test ends, so no VM outlives it.
pub struct LabDown(pub PathBuf);

impl Drop for LabDown {
    fn drop(&mut self) {
        let _ = nodeimg(&["lab", "down", "--run-dir", s(&self.0)]);
    }
}

/// Runs one check of a lab test and prints how long it took
/// (`k8s: took NAME 12.3 s`), so a slow step is found from the log and CI
/// time can be spent where it buys most.
pub fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let start = std::time::Instant::now();
    let out = f();
    eprintln!("k8s: took {what} {:.1} s", start.elapsed().as_secs_f64());
    out
}

/// A Go program of `tests/fixtures/NAME` (`package`, `.` for its own
/// main), built once into the user's cache, keyed by `files` and the Go
/// version, with the module's go.sum (never a newer dependency).
pub fn go_tool(name: &str, files: &[&str], package: &str) -> PathBuf {
    use sha2::{Digest, Sha256};
    let src = repo().join("tests/fixtures").join(name);
    let go = Command::new("go")
        .args(["env", "GOVERSION"])
        .current_dir(&src)
        .output()
        .expect("run go (scripts/setup.sh installs it)");
    assert!(go.status.success(), "go env: {}", text(&go));
    let mut h = Sha256::new();
    h.update(&go.stdout);
    h.update(package.as_bytes());
    for f in files {
        let data = std::fs::read(src.join(f)).unwrap();
        h.update(f.as_bytes());
        h.update((data.len() as u64).to_le_bytes());
        h.update(&data);
    }
    let key = hex::encode(&h.finalize()[..12]);
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"))
        .join("nodeimg/test-tools");
    let bin = cache.join(format!("{name}-{key}"));
    if bin.is_file() {
        return bin;
    }
    std::fs::create_dir_all(&cache).unwrap();
    let tmp = cache.join(format!(".{name}-{key}.{}", std::process::id()));
    eprintln!(
        "building {name} (Go, once per change; cached in {})",
        cache.display()
    );
    let out = Command::new("go")
        .args(["build", "-mod=readonly", "-trimpath", "-o"])
        .arg(&tmp)
        .arg(package)
        .current_dir(&src)
        .env("CGO_ENABLED", "0")
        .output()
        .expect("run go build");
    assert!(out.status.success(), "building {name}: {}", text(&out));
    std::fs::rename(&tmp, &bin).unwrap();
    bin
}
