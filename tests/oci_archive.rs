//! An OCI image archive a user brings (an add-on the build cannot make,
//! such as Falco's image) is preloaded like the images the build packs: a
//! worker built with one more layer, whose `[[oci_images]]` names an
//! archive written here the way another tool writes one (a gzip layer, its
//! own index and names), boots, and nodeagent imports the image under the
//! layer's name and checks containerd reports the manifest digest the
//! archive carries, as the build's manifest says.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::path::Path;

use serde_json::{json, Value};
use support::{lab_boot_serial, read_manifest, repo, sha256_hex};

const NAME: &str = "nodeimg.local/addon:1.0";

/// An OCI archive as `skopeo copy … oci-archive:` would write it: one
/// gzip-compressed layer, an index naming the image `latest`, no
/// containerd annotations. Returns the archive and its manifest digest.
fn foreign_archive() -> (Vec<u8>, String) {
    let mut layer = tar::Builder::new(Vec::new());
    let hello = b"an add-on's file\n";
    let mut h = tar::Header::new_gnu();
    h.set_path("etc/addon.conf").unwrap();
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    h.set_size(hello.len() as u64);
    h.set_cksum();
    layer.append(&h, &hello[..]).unwrap();
    let layer = layer.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&layer).unwrap();
    let gz = gz.finish().unwrap();
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Entrypoint": ["/bin/addon"] },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{}", sha256_hex(&layer))] },
    }))
    .unwrap();
    let desc = |media: &str, data: &[u8]| json!({ "mediaType": media, "digest": format!("sha256:{}", sha256_hex(data)), "size": data.len() });
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": desc("application/vnd.oci.image.config.v1+json", &config),
        "layers": [desc("application/vnd.oci.image.layer.v1.tar+gzip", &gz)],
    }))
    .unwrap();
    let mut top = desc("application/vnd.oci.image.manifest.v1+json", &manifest);
    top["annotations"] = json!({ "org.opencontainers.image.ref.name": "latest" });
    let index = serde_json::to_vec(&json!({ "schemaVersion": 2, "manifests": [top] })).unwrap();
    let mut out = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).unwrap();
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        h.set_cksum();
        out.append(&h, data).unwrap();
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json", &index);
    for blob in [&gz, &config, &manifest] {
        add(&format!("blobs/sha256/{}", sha256_hex(blob)), blob);
    }
    let digest = format!("sha256:{}", sha256_hex(&manifest));
    (out.into_inner().unwrap(), digest)
}

/// A project beside the repository's: its layers, recipes, lock and
/// tools, a worker spec with the `addon` layer too, and that layer.
fn project(dir: &Path, archive: &[u8]) {
    let repo = repo();
    std::fs::create_dir_all(dir.join("layers/addon")).unwrap();
    std::fs::create_dir_all(dir.join("images")).unwrap();
    for entry in std::fs::read_dir(repo.join("layers")).unwrap() {
        let entry = entry.unwrap();
        std::os::unix::fs::symlink(entry.path(), dir.join("layers").join(entry.file_name()))
            .unwrap();
    }
    for f in ["recipes", "nodeimg.lock", "tools.toml"] {
        std::os::unix::fs::symlink(repo.join(f), dir.join(f)).unwrap();
    }
    let worker = std::fs::read_to_string(repo.join("images/worker.toml")).unwrap();
    let layers = "layers = [\"base\", \"boot\", \"hardening\", \"containerd\"]";
    assert!(worker.contains(layers), "images/worker.toml's layers moved");
    std::fs::write(
        dir.join("images/worker.toml"),
        worker.replace(
            layers,
            "layers = [\"base\", \"boot\", \"hardening\", \"containerd\", \"addon\"]",
        ),
    )
    .unwrap();
    std::fs::write(dir.join("layers/addon/addon.tar"), archive).unwrap();
    std::fs::write(
        dir.join("layers/addon/layer.toml"),
        format!(
            "schema = 1\n[[oci_images]]\nname = \"{NAME}\"\narchive = \"addon.tar\"\nsha256 = \"{}\"\n",
            sha256_hex(archive)
        ),
    )
    .unwrap();
}

#[test]
fn a_brought_oci_archive_is_preloaded_with_its_own_digest() {
    let (archive, digest) = foreign_archive();
    let d = tempfile::tempdir().unwrap();
    let proj = d.path().join("project");
    project(&proj, &archive);
    let out = d.path().join("out");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_nodeimg"))
        .current_dir(&proj)
        .args(["build", "images/worker.toml", "--quiet", "--format", "none"])
        .arg("--agent")
        .arg(support::agent())
        .arg("--out")
        .arg(&out)
        .env_remove("SOURCE_DATE_EPOCH")
        .status()
        .expect("run nodeimg");
    assert!(
        status.success(),
        "nodeimg build with the addon layer failed"
    );
    let m = read_manifest(&out);
    let listed = m["images"].as_array().unwrap();
    let ours = listed
        .iter()
        .find(|i| i["name"] == NAME)
        .expect("in the manifest");
    assert_eq!(ours["digest"], digest.as_str(), "{m:#}");

    // The boot waits for the sandbox image and its probe only; the other
    // images are imported after the report (an add-on image can take a
    // minute under emulation), each said on the console with its digest
    // checked against images.json. The VM runs on until it says so.
    let said = format!("runtime: {NAME} imported, digest checked");
    let (code, r, serial) =
        lab_boot_serial(&out, &["--wait-shutdown", "60", "--until-console", &said]);
    assert_eq!((code, &r["ready"]), (0, &Value::Bool(true)), "{r:#}");
    let importing = r["runtime"]["importing"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(importing.iter().any(|i| i == NAME), "{r:#}");
    let console = std::fs::read_to_string(&serial).unwrap();
    assert!(
        console.contains(&said),
        "{said:?} not on the console ({})",
        serial.display()
    );
    eprintln!("oci_archive: {NAME} preloaded with the archive's own digest {digest}");
}
