//! Shared by the integration tests that build the repository's real images:
//! locating the agent and the reference tools, building into a directory.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The static agent the Makefile builds before the tests (`make agent`).
pub fn agent() -> PathBuf {
    let p = repo().join("target/x86_64-unknown-linux-gnu/release/nodeagent");
    assert!(
        p.is_file(),
        "{} is missing: run `make agent` (make test does) before these tests",
        p.display()
    );
    p
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

/// `nodeimg build images/<image>.toml --out OUT` from the repository.
pub fn build_image(image: &str, out: &Path) {
    let status = Command::new(env!("CARGO_BIN_EXE_nodeimg"))
        .current_dir(repo())
        .args(["build", &format!("images/{image}.toml"), "--quiet", "--out"])
        .arg(out)
        .arg("--agent")
        .arg(agent())
        .env_remove("SOURCE_DATE_EPOCH")
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
