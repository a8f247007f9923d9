//! `nodeimg cluster init|config|check` through the real binary, with
//! openssl as the independent judge of what it made: each CA is a
//! self-signed CA certificate whose key file is its key, the
//! service-account pair is one P-256 key, and a node's API certificate
//! chains to the API CA. Then the rules: private files 0600, nothing
//! overwritten without `--force`, a worker's config holds one private key
//! (its own), and `nodeimg config check` refuses it with a CA key planted.
//! Hermetic: no network, no VM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use support::{nodeimg, ok, s};

/// Runs `nodeimg args`, expects it to fail, returns stdout + stderr.
fn fails(args: &[&str]) -> String {
    let out = nodeimg(args);
    assert!(!out.status.success(), "nodeimg {args:?} succeeded");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is not installed (run scripts/setup.sh)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn init(dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "cluster",
        "init",
        "--name",
        "lab",
        "--control-plane-endpoint",
        "10.0.0.10:6443",
        "--member",
        "cp-1=10.0.0.11",
        "--member",
        "cp-2=10.0.0.12",
        "--out",
        s(dir),
    ];
    args.extend_from_slice(extra);
    nodeimg(&args)
}

/// [`init`] with no extra arguments, which must succeed.
fn init_ok(dir: &Path) {
    let made = init(dir, &[]);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
}

fn config(dir: &Path, role: &str, host: &str, out: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "cluster",
        "config",
        s(dir),
        "--role",
        role,
        "--hostname",
        host,
        "--out",
        s(out),
    ];
    args.extend_from_slice(extra);
    ok(&args);
    std::fs::read_to_string(out).unwrap()
}

/// The PEM blocks of `text` whose label holds `label`, in order.
fn blocks<'a>(text: &'a str, label: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let tail = &rest[start..];
        let end = tail.find("-----END ").unwrap();
        let close = tail[end..].find("-----\n").unwrap() + end + 6;
        let block = &tail[..close];
        if block.lines().next().unwrap().contains(label) {
            out.push(block);
        }
        rest = &tail[close..];
    }
    out
}

#[test]
fn init_makes_cas_and_keys_openssl_accepts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    init_ok(&dir);
    let mode = |f: &str| std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
    for ca in ["api-ca", "etcd-ca", "kubernetes-ca", "front-proxy-ca"] {
        let (crt, key) = (dir.join(format!("{ca}.crt")), dir.join(format!("{ca}.key")));
        assert_eq!(mode(&format!("{ca}.key")), 0o600, "{ca}");
        let ext = openssl(&["x509", "-in", s(&crt), "-noout", "-ext", "basicConstraints"]);
        assert!(ext.contains("CA:TRUE"), "{ca}: {ext}");
        let verified = openssl(&["verify", "-CAfile", s(&crt), s(&crt)]);
        assert!(verified.trim_end().ends_with(": OK"), "{ca}: {verified}");
        let from_cert = openssl(&["x509", "-in", s(&crt), "-noout", "-pubkey"]);
        let from_key = openssl(&["pkey", "-in", s(&key), "-pubout"]);
        assert_eq!(
            from_cert, from_key,
            "{ca}: the key is not the certificate's"
        );
        let text = openssl(&["x509", "-in", s(&crt), "-noout", "-text"]);
        assert!(
            text.contains("prime256v1") || text.contains("P-256"),
            "{ca}"
        );
    }
    let sa_key = dir.join("service-account.key");
    assert_eq!(mode("service-account.key"), 0o600);
    assert_eq!(
        openssl(&["pkey", "-in", s(&sa_key), "-pubout"]),
        std::fs::read_to_string(dir.join("service-account.pub")).unwrap()
    );
    assert_eq!(mode("secrets.toml"), 0o600);
    assert_eq!(mode("admin.nodeconfig"), 0o600);
    assert_eq!(ok(&["cluster", "check", s(&dir)]), "ok\n");

    // a second init is refused, names the file and changes nothing
    let before = std::fs::read(dir.join("etcd-ca.key")).unwrap();
    let err = String::from_utf8_lossy(&init(&dir, &[]).stderr).into_owned();
    assert!(
        err.contains("api-ca.key exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(dir.join("etcd-ca.key")).unwrap(), before);
    assert!(init(&dir, &["--force"]).status.success());
    assert_ne!(std::fs::read(dir.join("etcd-ca.key")).unwrap(), before);
    assert_eq!(mode("etcd-ca.key"), 0o600);

    // the flags the issue asks for are required
    let err = fails(&["cluster", "init", "--out", s(&tmp.path().join("x"))]);
    assert!(
        err.contains("--name") && err.contains("--control-plane-endpoint"),
        "{err}"
    );
}

#[test]
fn node_configs_by_role() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    init_ok(&dir);

    let worker_file = tmp.path().join("w-1.toml");
    let worker = config(
        &dir,
        "worker",
        "w-1",
        &worker_file,
        &["--address", "10.0.0.21"],
    );
    assert_eq!(ok(&["config", "check", s(&worker_file)]), "ok\n");
    let keys = blocks(&worker, "PRIVATE KEY");
    assert_eq!(
        keys.len(),
        1,
        "a worker holds only its own API key:\n{worker}"
    );
    for f in [
        "etcd-ca.key",
        "kubernetes-ca.key",
        "front-proxy-ca.key",
        "service-account.key",
        "api-ca.key",
    ] {
        let k = std::fs::read_to_string(dir.join(f)).unwrap();
        assert!(!worker.contains(k.trim()), "{f} is in the worker's config");
    }
    // its API certificate chains to the API CA, for its name and address
    let node_crt = tmp.path().join("w-1.crt");
    let api_ca = dir.join("api-ca.crt");
    // the certificates are the Kubernetes CA's, the API CA's and the node's
    let node_only = blocks(&worker, "CERTIFICATE")
        .into_iter()
        .find(|b| {
            std::fs::write(&node_crt, b).unwrap();
            openssl(&["x509", "-in", s(&node_crt), "-noout", "-subject"]).contains("w-1")
        })
        .unwrap();
    std::fs::write(&node_crt, node_only).unwrap();
    let verified = openssl(&["verify", "-CAfile", s(&api_ca), s(&node_crt)]);
    assert!(verified.trim_end().ends_with(": OK"), "{verified}");
    let sans = openssl(&[
        "x509",
        "-in",
        s(&node_crt),
        "-noout",
        "-ext",
        "subjectAltName",
    ]);
    assert!(
        sans.contains("DNS:w-1") && sans.contains("IP Address:10.0.0.21"),
        "{sans}"
    );

    // planted: the Kubernetes CA's key in the worker's config
    let planted = worker.replace(
        "[cluster.kubernetes_ca]\n",
        &format!(
            "[cluster.kubernetes_ca]\nkey = '''\n{}'''\n",
            std::fs::read_to_string(dir.join("kubernetes-ca.key")).unwrap()
        ),
    );
    assert_ne!(planted, worker);
    std::fs::write(&worker_file, planted).unwrap();
    let out = fails(&["config", "check", s(&worker_file)]);
    assert!(
        out.contains("cluster.kubernetes_ca.key: a worker never holds a CA private key"),
        "{out}"
    );

    // a control-plane node: every CA key, the service-account pair, the members
    let cp_file = tmp.path().join("cp-1.toml");
    let cp = config(&dir, "control-plane", "cp-1", &cp_file, &[]);
    assert_eq!(ok(&["config", "check", s(&cp_file)]), "ok\n");
    for f in [
        "etcd-ca.key",
        "kubernetes-ca.key",
        "front-proxy-ca.key",
        "service-account.key",
    ] {
        let k = std::fs::read_to_string(dir.join(f)).unwrap();
        assert!(
            cp.contains(k.trim()),
            "{f} missing from the control plane's config"
        );
    }
    assert!(!cp.contains(
        std::fs::read_to_string(dir.join("api-ca.key"))
            .unwrap()
            .trim()
    ));
    assert!(cp.contains("hostname = \"cp-2\"") && cp.contains("address = \"10.0.0.12\""));
    let shown = ok(&["config", "check", s(&cp_file), "--print"]);
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    assert_eq!(
        std::fs::metadata(&cp_file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // a control-plane node cluster.toml does not list is refused, naming it
    let err = fails(&[
        "cluster",
        "config",
        s(&dir),
        "--role",
        "control-plane",
        "--hostname",
        "cp-9",
        "--out",
        s(&tmp.path().join("cp-9.toml")),
    ]);
    assert!(
        err.contains("cp-9 is not in control_plane.members") && err.contains("cluster.toml"),
        "{err}"
    );
    assert!(!tmp.path().join("cp-9.toml").exists());
}

#[test]
fn a_bad_cluster_file_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    init_ok(&dir);
    let toml = dir.join("cluster.toml");
    let good = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(&toml, good.replace("retain = 24", "retain = 24\nkeep = 3")).unwrap();
    let err = fails(&["cluster", "check", s(&dir)]);
    assert!(err.contains(&format!("{}:", toml.display())), "{err}");
    assert!(err.contains("etcd.backup.keep"), "{err}");
    std::fs::write(&toml, good).unwrap();

    let key = dir.join("etcd-ca.key");
    let k = std::fs::read_to_string(&key).unwrap();
    std::fs::write(&key, &k[..k.len() / 2]).unwrap();
    let err = fails(&["cluster", "check", s(&dir)]);
    assert!(err.contains(s(&key)) && err.contains("etcd CA"), "{err}");
}

/// The pinned Kubernetes minor (`1.34.0` for `v1.34.4`), from the recipe.
fn kubernetes_minor() -> String {
    let recipe =
        std::fs::read_to_string(support::repo().join("recipes/kubernetes/recipe.toml")).unwrap();
    let version = recipe
        .lines()
        .find_map(|l| l.strip_prefix("version = \"v"))
        .and_then(|v| v.strip_suffix('"'))
        .expect("recipes/kubernetes/recipe.toml names a version");
    let mut parts = version.split('.');
    format!("{}.{}.0", parts.next().unwrap(), parts.next().unwrap())
}

/// `DIR/manifests/` passes upstream's OpenAPI schemas of the pinned minor,
/// strictly (no unknown field), judged by kubernetes-validate; a change of
/// `[stack]` shows after `nodeimg cluster manifests`, and a part turned off
/// takes its file away.
#[test]
fn the_manifests_pass_kubernetes_validate_and_follow_cluster_toml() {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("c");
    init_ok(&c);
    let validate = |files: &[std::path::PathBuf]| {
        let out = Command::new(support::venv_tool("kubernetes-validate"))
            .args(["--strict", "-k", &kubernetes_minor()])
            .args(files)
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{said}");
        said
    };
    let files = |c: &Path| {
        let mut v: Vec<_> = std::fs::read_dir(c.join("manifests"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    };
    let said = validate(&files(&c));
    // every object was judged: one "passed" line each
    let objects: usize = files(&c)
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .matches("\n---\n")
                .count()
        })
        .sum();
    assert_eq!(
        said.matches(" passed for resource ").count(),
        objects,
        "{said}"
    );
    assert!(objects >= 9, "{said}");

    let toml = c.join("cluster.toml");
    let edited = std::fs::read_to_string(&toml)
        .unwrap()
        .replace(
            "namespaces = [\"apps\"]",
            "namespaces = [\"web\", \"batch\"]",
        )
        .replace("network_policies = true", "network_policies = false");
    std::fs::write(&toml, edited).unwrap();
    ok(&["cluster", "manifests", s(&c)]);
    let after = files(&c);
    let names: Vec<String> = after
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.contains(&"01-network-policies.yaml".to_string()),
        "{names:?}"
    );
    let namespaces = std::fs::read_to_string(c.join("manifests/00-namespaces.yaml")).unwrap();
    assert!(namespaces.contains("name: \"web\"") && namespaces.contains("name: \"batch\""));
    validate(&after);

    // a bad [stack] is named, and the files stay as they were
    std::fs::write(
        &toml,
        std::fs::read_to_string(&toml)
            .unwrap()
            .replace("pods = 50", "pods = -1"),
    )
    .unwrap();
    let e = fails(&["cluster", "manifests", s(&c)]);
    assert!(e.contains("stack.quota.pods") || e.contains("pods"), "{e}");
    assert_eq!(
        std::fs::read_to_string(c.join("manifests/00-namespaces.yaml")).unwrap(),
        namespaces
    );
}

/// checkov over the default `DIR/manifests/`, offline: every check it
/// fails is listed with its reason in docs/checkov-skips.toml, and every
/// entry there still fails (a fixed one must leave the list).
#[test]
fn checkov_fails_only_what_docs_checkov_skips_justify() {
    // checkov skips paths with a part that starts with a dot, as
    // tempfile's default names do
    let dir = tempfile::Builder::new()
        .prefix("nodeimg-checkov-")
        .tempdir()
        .unwrap();
    let c = dir.path().join("c");
    init_ok(&c);
    let venv = std::env::var_os("NODEIMG_CHECKOV_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap())
                .join(".cache/nodeimg/checkov-venv")
        });
    let checkov = venv.join("bin/checkov");
    assert!(
        checkov.is_file(),
        "{} is missing: run scripts/setup.sh (make test does)",
        checkov.display()
    );
    let out = Command::new(&checkov)
        .args([
            "--framework",
            "kubernetes",
            "--skip-download",
            "--quiet",
            "-o",
            "json",
            "-d",
        ])
        .arg(c.join("manifests"))
        // its own state in the test's directory, not the user's home
        .env("HOME", dir.path())
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "checkov did not report JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    // one framework reports an object, several a list
    let reports = match report {
        serde_json::Value::Array(v) => v,
        one => vec![one],
    };
    let mut failed = std::collections::BTreeSet::new();
    let mut passed = 0;
    for r in &reports {
        passed += r["summary"]["passed"]
            .as_u64()
            .unwrap_or_else(|| panic!("no summary in checkov's report: {r:#}"));
        assert_eq!(r["summary"]["parsing_errors"], 0, "{r:#}");
        for f in r["results"]["failed_checks"].as_array().unwrap() {
            failed.insert((
                f["check_id"].as_str().unwrap().to_string(),
                f["resource"].as_str().unwrap().to_string(),
            ));
        }
    }
    assert!(passed > 100, "checkov judged little: {passed} passed");

    let skips: toml::Value = toml::from_str(
        &std::fs::read_to_string(support::repo().join("docs/checkov-skips.toml")).unwrap(),
    )
    .unwrap();
    let mut justified = std::collections::BTreeSet::new();
    for skip in skips["skip"].as_array().unwrap() {
        let why = skip["why"].as_str().unwrap();
        assert!(why.len() > 30, "a reason, please: {skip}");
        for r in skip["resources"].as_array().unwrap() {
            justified.insert((
                skip["check"].as_str().unwrap().to_string(),
                r.as_str().unwrap().to_string(),
            ));
        }
    }
    let unjustified: Vec<_> = failed.difference(&justified).collect();
    assert!(
        unjustified.is_empty(),
        "checkov failed these, and docs/checkov-skips.toml does not say why: {unjustified:?}"
    );
    let stale: Vec<_> = justified.difference(&failed).collect();
    assert!(
        stale.is_empty(),
        "these no longer fail: take them out of docs/checkov-skips.toml: {stale:?}"
    );
    eprintln!(
        "checkov: {passed} checks passed, {} failed, each justified",
        failed.len()
    );
}
