//! containerd at work: on every boot, once containerd is ready, nodeagent
//! imports the images the builder packed into the root (checking that
//! containerd reports the digest the build recorded) and proves the runtime
//! confines a container: it runs the sandbox image's probe as a non-root
//! user with a read-only root, every capability dropped, the default
//! seccomp profile and no_new_privs, and reads what the container saw. A
//! node whose runtime does not confine is not ready. It talks to containerd
//! with Debian's own `ctr` client from the image.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use contract::images::{PreloadedImage, IMAGES_DIR, IMAGES_FILE};
use contract::report::{Confinement, ImageReport, RuntimeReport};

const CTR: &str = "/usr/bin/ctr";
const SOCKET: &str = "/run/containerd/containerd.sock";
/// Kubernetes' namespace: the CRI plugin (and so kubelet) sees these images.
const NAMESPACE: &str = "k8s.io";
/// No ctr call may hold the boot longer than this.
const CTR_TIMEOUT: Duration = Duration::from_secs(60);
/// An import: tens of MiB copied twice (content store, snapshot), which
/// under emulation on a loaded host takes minutes.
const IMPORT_TIMEOUT: Duration = Duration::from_secs(600);
/// The capabilities containerd's default spec grants: all dropped by name
/// (ctr 1.7 has no `--cap-drop ALL`).
const DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];
/// The user the probe runs as.
const PROBE_USER: &str = "65534:65534";

/// Parses the probe's `NODEIMG-PROBE k=v ...` line.
pub fn parse_probe(out: &str) -> Option<Confinement> {
    let line = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("NODEIMG-PROBE "))?;
    let get = |k: &str| {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
            .map(str::to_string)
    };
    Some(Confinement {
        uid: get("uid")?,
        cap_eff: get("capeff")?,
        seccomp: get("seccomp")?,
        no_new_privs: get("nonewprivs")?,
        root_writable: get("root_writable")? == "true",
    })
}

/// The digest `ctr images ls` lists for `name` (columns: REF TYPE DIGEST …).
pub fn listed_digest(ls: &str, name: &str) -> Option<String> {
    ls.lines().find_map(|l| {
        let mut cols = l.split_whitespace();
        if cols.next()? != name {
            return None;
        }
        let _type = cols.next()?;
        Some(cols.next()?.to_string())
    })
}

/// The digest `ctr images import` printed for `name`: its
/// `unpacking NAME (sha256:…)...done` line.
pub fn imported_digest(out: &str, name: &str) -> Option<String> {
    unpacking(out)
        .find(|(n, _)| *n == name)
        .map(|(_, digest)| digest.to_string())
}

/// Every `unpacking NAME (sha256:…)...done` line of an import, as
/// (NAME, digest).
fn unpacking(out: &str) -> impl Iterator<Item = (&str, &str)> {
    out.lines().filter_map(|l| {
        let rest = l.trim().strip_prefix("unpacking ")?;
        let (name, rest) = rest.split_once(" (")?;
        let digest = rest.split(')').next()?;
        digest.starts_with("sha256:").then_some((name, digest))
    })
}

/// Runs `ctr` with a deadline; returns its stdout, or why not.
fn ctr(args: &[&str]) -> Result<String, String> {
    ctr_within(args, CTR_TIMEOUT)
}

fn ctr_within(args: &[&str], timeout: Duration) -> Result<String, String> {
    let mut cmd = Command::new(CTR);
    cmd.args(["--address", SOCKET, "--namespace", NAMESPACE])
        .args(args);
    crate::child::run(cmd, &format!("ctr {}", args.join(" ")), timeout)
}

/// The runtime's report: filled in at boot (the sandbox image and the
/// probe), then by a thread importing the other images.
#[derive(Clone)]
pub struct Runtime(Arc<Mutex<RuntimeReport>>);

impl Runtime {
    pub fn report(&self) -> RuntimeReport {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Imports the sandbox image and runs the confinement probe with it (the
/// boot waits for this: no pod runs without it), then imports the other
/// images in a thread, digests checked the same way and each also named
/// by its digest (pods name add-ons so): under emulation a big add-on
/// image takes a minute, which no boot should wait for.
/// `None` when the image packs no OCI images.
pub fn preload_and_check() -> Option<Runtime> {
    let list: Vec<PreloadedImage> = match std::fs::read(IMAGES_FILE) {
        Ok(data) => match serde_json::from_slice(&data) {
            Ok(list) => list,
            Err(e) => {
                return Some(Runtime(Arc::new(Mutex::new(RuntimeReport {
                    error: Some(format!("{IMAGES_FILE}: {e}")),
                    ..RuntimeReport::default()
                }))))
            }
        },
        Err(_) => return None,
    };
    let (sandbox, rest): (Vec<PreloadedImage>, Vec<PreloadedImage>) = list
        .into_iter()
        .partition(|i| i.name == contract::images::SANDBOX_IMAGE);
    let mut report = RuntimeReport::default();
    let checked = match sandbox.first() {
        None => Err(format!(
            "no sandbox image {} among the preloaded images: no probe to run",
            contract::images::SANDBOX_IMAGE
        )),
        Some(s) => import(s).and_then(|r| {
            report.images.push(r);
            probe(s, &mut report)
        }),
    };
    if let Err(e) = checked {
        report.error = Some(e);
        return Some(Runtime(Arc::new(Mutex::new(report))));
    }
    report.ok = true;
    report.importing = rest.iter().map(|i| i.name.clone()).collect();
    let shared = Runtime(Arc::new(Mutex::new(report)));
    if !rest.is_empty() {
        let later = shared.clone();
        std::thread::spawn(move || {
            for img in rest {
                let t = crate::sys::uptime_ms();
                let done = import(&img).and_then(|i| name_by_digest(&img).map(|()| i));
                let mut r = later
                    .0
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                r.importing.retain(|n| *n != img.name);
                let said = match done {
                    Ok(i) => {
                        r.images.push(i);
                        "imported, digest checked".to_string()
                    }
                    Err(e) => {
                        r.ok = false;
                        r.error = Some(e.clone());
                        e
                    }
                };
                drop(r);
                crate::console::Console::open().say(&format!(
                    "runtime: {} {said} ({} ms)",
                    img.name,
                    crate::sys::uptime_ms().saturating_sub(t)
                ));
            }
        });
    }
    Some(shared)
}

/// Imports one image and checks containerd reports the digest the build
/// recorded.
fn import(img: &PreloadedImage) -> Result<ImageReport, String> {
    let t = crate::sys::uptime_ms();
    let path = format!("{IMAGES_DIR}/{}", img.file);
    let out = ctr_within(
        &["images", "import", "--all-platforms", &path],
        IMPORT_TIMEOUT,
    )?;
    // Under TCG each ctr costs seconds: the import names the digest
    // it unpacked, and only when it does not is containerd asked.
    let got = match imported_digest(&out, &img.name) {
        Some(d) => d,
        None => listed_digest(&ctr(&["images", "ls"])?, &img.name)
            .ok_or_else(|| format!("{} is not listed after its import", img.name))?,
    };
    if got != img.digest {
        return Err(format!(
            "{}: containerd reports {got}, the build recorded {}",
            img.name, img.digest
        ));
    }
    Ok(ImageReport {
        name: img.name.clone(),
        digest: got,
        imported: true,
        import_ms: Some(crate::sys::uptime_ms().saturating_sub(t)),
    })
}

/// Adds the image's `repo@digest` name, which pods that name it by digest
/// (the security stack's add-ons) are looked up by: an import names it by
/// its tag only. `--force`: the name outlives a reboot on `/var`.
fn name_by_digest(img: &PreloadedImage) -> Result<(), String> {
    let by_digest = contract::images::digest_name(&img.name, &img.digest);
    ctr(&["images", "tag", "--force", &img.name, &by_digest]).map(|_| ())
}

/// Runs the sandbox image's probe confined as a pod would be.
fn probe(sandbox: &PreloadedImage, report: &mut RuntimeReport) -> Result<(), String> {
    let id = format!("nodeimg-probe-{}", crate::sys::uptime_ms());
    let mut args: Vec<&str> = vec![
        "run",
        "--rm",
        "--read-only",
        "--seccomp",
        "--user",
        PROBE_USER,
    ];
    for cap in DEFAULT_CAPS {
        args.push("--cap-drop");
        args.push(cap);
    }
    args.extend([sandbox.name.as_str(), id.as_str(), "/pause", "probe"]);
    let t = crate::sys::uptime_ms();
    let out = ctr(&args)?;
    report.probe_ms = Some(crate::sys::uptime_ms().saturating_sub(t));
    let seen = parse_probe(&out).ok_or_else(|| format!("the probe printed no report: {out:?}"))?;
    let problems = seen.problems();
    report.confinement = Some(seen);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the runtime does not confine containers: {}",
            problems.join(", ")
        ))
    }
}

/// Imports an archive of one image (`nodeimg node import` sends it
/// rewrapped: the linux/amd64 image under the name given), names it by
/// its digest too, as the preloaded images are, and returns its name and
/// digest.
pub fn import_archive(path: &std::path::Path) -> Result<(String, String), String> {
    let path = path.display().to_string();
    let out = ctr_within(&["images", "import", "--", &path], IMPORT_TIMEOUT)?;
    let (name, digest) = unpacked(&out)
        .filter(|(n, _)| contract::api::is_image_reference(n))
        .ok_or_else(|| format!("ctr named no image: {out:?}"))?;
    let by_digest = contract::images::digest_name(&name, &digest);
    ctr(&["images", "tag", "--force", &name, &by_digest])?;
    Ok((name, digest))
}

/// The image of an import's first `unpacking` line.
fn unpacked(out: &str) -> Option<(String, String)> {
    unpacking(out)
        .next()
        .map(|(name, digest)| (name.to_string(), digest.to_string()))
}

/// Pulls `image` (checked by the API's parser) through the registry
/// files in `hosts_dir` (the mirrors and logins of the machine config, as
/// the CRI plugin uses them) and returns the digest containerd lists.
pub fn pull(image: &str, hosts_dir: &str) -> Result<String, String> {
    ctr(&["images", "pull", "--hosts-dir", hosts_dir, "--", image])?;
    let ls = ctr(&["images", "ls"])?;
    listed_digest(&ls, image).ok_or_else(|| format!("{image} is not listed after its pull"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_line_is_parsed_and_judged() {
        let out = "noise\nNODEIMG-PROBE uid=65534 capeff=0000000000000000 capbnd=0000000000000000 \
                   seccomp=2 nonewprivs=1 root_writable=false\n";
        let c = parse_probe(out).unwrap();
        assert_eq!(c.uid, "65534");
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        let bad = parse_probe(
            "NODEIMG-PROBE uid=0 capeff=00000000a80425fb capbnd=x seccomp=0 nonewprivs=0 root_writable=true",
        )
        .unwrap();
        assert_eq!(bad.problems().len(), 5, "{:?}", bad.problems());
        assert_eq!(parse_probe("nothing"), None);
    }

    #[test]
    fn digest_is_read_from_the_import() {
        let out = "unpacking nodeimg.local/pause:0.1.0 (sha256:6709c1)...done\n";
        assert_eq!(
            imported_digest(out, "nodeimg.local/pause:0.1.0").as_deref(),
            Some("sha256:6709c1")
        );
        assert_eq!(imported_digest(out, "nodeimg.local/pause"), None);
        assert_eq!(imported_digest("unpacking x (md5:1)...done", "x"), None);
        assert_eq!(imported_digest("", "x"), None);
    }

    #[test]
    fn an_import_names_its_image_and_digest() {
        let out = "unpacking nodeimg.local/kube-bench:v0.16.0 (sha256:ab12)...done\n";
        assert_eq!(
            unpacked(out),
            Some((
                "nodeimg.local/kube-bench:v0.16.0".into(),
                "sha256:ab12".into()
            ))
        );
        assert_eq!(unpacked("unpacking x (md5:1)...done"), None);
        assert_eq!(unpacked(""), None);
    }

    #[test]
    fn digest_is_read_from_the_listing() {
        let ls = "REF TYPE DIGEST SIZE PLATFORMS LABELS\n\
                  nodeimg.local/pause:0.1.0 application/vnd.oci.image.manifest.v1+json sha256:abc 1.2 MiB linux/amd64 -\n";
        assert_eq!(
            listed_digest(ls, "nodeimg.local/pause:0.1.0").as_deref(),
            Some("sha256:abc")
        );
        assert_eq!(listed_digest(ls, "other"), None);
    }
}
