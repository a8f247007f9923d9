//! The Kubernetes-bearing images: their roots carry upstream's programs
//! built by recipes/kubernetes, byte for byte what `nodeimg.lock` pins,
//! and those programs say the pinned version. The first run on a machine
//! compiles Kubernetes (minutes on two cores; cached by recipe inputs in
//! the user's cache directory afterwards).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use nodeimg::source::lock::Lock;
use support::{artifact_path, read_manifest, repo, tool};

/// `path` (relative to /) out of the root image in `dir`.
fn from_root(dir: &Path, path: &str) -> Vec<u8> {
    let m = read_manifest(dir);
    let rootfs = dir.join(artifact_path(&m, "rootfs"));
    let out = Command::new(tool("unsquashfs"))
        .arg("-cat")
        .arg(&rootfs)
        .arg(path)
        .output()
        .expect("unsquashfs -cat");
    assert!(
        out.status.success(),
        "{path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn kubernetes_images_carry_the_locked_upstream_programs() {
    let lock = Lock::read(&repo().join("nodeimg.lock")).unwrap();
    let locked = &lock.recipes["kubernetes"];
    assert_eq!(locked.version, "v1.34.4");
    let d = tempfile::tempdir().unwrap();
    for (image, programs) in [
        ("k8s-worker", &["kubelet", "kube-proxy"][..]),
        (
            "k8s-control-plane",
            &[
                "kubelet",
                "kube-proxy",
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
            ][..],
        ),
    ] {
        let out = d.path().join(image);
        support::build_image_with(image, &out, &["--format", "none"]);
        for p in programs {
            let data = from_root(&out, &format!("usr/bin/{p}"));
            assert_eq!(
                support::sha256_hex(&data),
                locked.binaries[*p],
                "{image}: /usr/bin/{p} is not the locked build"
            );
        }
        // The worker has no control plane.
        if image == "k8s-worker" {
            let m = read_manifest(&out);
            let rootfs = out.join(artifact_path(&m, "rootfs"));
            let ls = Command::new(tool("unsquashfs"))
                .args(["-l", "-d", ""])
                .arg(&rootfs)
                .output()
                .unwrap();
            let listing = String::from_utf8_lossy(&ls.stdout);
            assert!(listing.contains("/usr/bin/kubelet"), "{listing}");
            assert!(!listing.contains("kube-apiserver"), "{listing}");
            // the CNI plugins pod networking uses, from Debian
            for plugin in ["bridge", "host-local", "loopback", "portmap"] {
                assert!(
                    listing.contains(&format!("/usr/lib/cni/{plugin}")),
                    "no CNI plugin {plugin}"
                );
            }
        }
    }
    // The shipped kubelet runs here and says the pinned version.
    let kubelet = d.path().join("kubelet");
    std::fs::write(
        &kubelet,
        from_root(&d.path().join("k8s-worker"), "usr/bin/kubelet"),
    )
    .unwrap();
    std::fs::set_permissions(&kubelet, std::fs::Permissions::from_mode(0o755)).unwrap();
    let v = Command::new(&kubelet).arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&v.stdout).trim(),
        "Kubernetes v1.34.4"
    );
}
