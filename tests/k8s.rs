//! Kubernetes in QEMU: `nodeimg lab up qemu/k8s-small.toml` boots a
//! control-plane node and a worker from the Kubernetes images; the agents
//! run etcd, the control plane and kubelet, the worker joins through TLS
//! bootstrap. Judged by upstream's kubectl (the locked one), through the
//! lab's loopback forward of the control-plane node's API only:
//!
//! - two Ready nodes at the pinned version; the control-plane node carries
//!   the role label and the NoSchedule taint;
//! - a pod from a builder-made image (preloaded, non-root, read-only root)
//!   runs on the worker and its log is read through the API (so the API
//!   server reached the worker's kubelet, whose serving certificate the
//!   agent approved);
//! - a pod on the control-plane node reaches a pod on the worker (host-gw
//!   routes), and a pod on the worker reaches the API through the
//!   `kubernetes` Service (the worker's kube-proxy, whose certificate its
//!   agent asked the cluster for);
//! - an anonymous request gets 401, a ServiceAccount without bindings 403,
//!   and the worker's kubelet identity reads a Secret its pod mounts but
//!   not another, nor may it label itself control plane (Node authorizer
//!   and NodeRestriction);
//! - every component is a ready service of the agent (its memory printed).
//!
//! One lab bring-up for all of it: each boot costs minutes under TCG. The
//! worker reaches the API through its agent's balancer (one backend here);
//! three control planes and a leader kill are tests/k8s_ha.rs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{json, nodeimg, ok, s, text, LabDown};

struct Kube {
    bin: PathBuf,
    config: PathBuf,
}

impl Kube {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(self.bin.join("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.config)
            .arg("--request-timeout=20s")
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "kubectl {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until `f` holds, or fails with what was last seen.
    fn wait(&self, what: &str, secs: u64, mut f: impl FnMut(&Kube) -> Result<(), String>) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            match f(self) {
                Ok(()) => return,
                Err(last) if Instant::now() > deadline => {
                    panic!("{what}: not within {secs} s; last: {last}")
                }
                Err(_) => std::thread::sleep(Duration::from_secs(5)),
            }
        }
    }

    /// Applies `manifest` (JSON) and waits for the pod's phase to be `phase`.
    fn pod(&self, dir: &Path, name: &str, manifest: &Value, phase: &str) {
        let file = dir.join(format!("{name}.json"));
        std::fs::write(&file, manifest.to_string()).unwrap();
        self.ok(&["apply", "-f", s(&file)]);
        self.wait(&format!("pod {name} {phase}"), 600, |k| {
            let out = k.run(&["get", "pod", name, "-o", "jsonpath={.status.phase}"]);
            let got = String::from_utf8_lossy(&out.stdout).to_string();
            if got == phase {
                Ok(())
            } else {
                Err(format!("{got:?} {}", text(&out)))
            }
        });
    }
}

/// A pod of the preloaded image running `/pause ARGS` on `node`, confined
/// as the restricted Pod Security profile asks.
fn pause_pod(name: &str, node: &str, args: &[&str], restart: &str) -> Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "labels": { "app": name } },
        "spec": {
            "nodeName": node,
            "restartPolicy": restart,
            "tolerations": [{ "key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule" }],
            "securityContext": {
                "runAsNonRoot": true, "runAsUser": 65535, "runAsGroup": 65535,
                "seccompProfile": { "type": "RuntimeDefault" },
            },
            "containers": [{
                "name": "main",
                "image": "nodeimg.local/pause:0.1.0",
                "imagePullPolicy": "Never",
                "command": ["/pause"],
                "args": args,
                "securityContext": {
                    "readOnlyRootFilesystem": true,
                    "allowPrivilegeEscalation": false,
                    "capabilities": { "drop": ["ALL"] },
                },
            }],
        },
    })
}

fn ready_nodes(k: &Kube) -> Result<Vec<Value>, String> {
    let out = k.run(&["get", "nodes", "-o", "json"]);
    if !out.status.success() {
        return Err(text(&out));
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let items = v["items"].as_array().cloned().unwrap_or_default();
    let ready = |n: &Value| {
        n["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    };
    if items.len() == 2 && items.iter().all(ready) {
        Ok(items)
    } else {
        let names: Vec<String> = items
            .iter()
            .map(|n| format!("{} ready={}", n["metadata"]["name"], ready(n)))
            .collect();
        Err(format!("{names:?}"))
    }
}

#[test]
fn a_control_plane_and_a_worker_run_kubernetes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bin = d.join("bin");
    let o = Command::new(env!("CARGO_BIN_EXE_nodeimg"))
        .current_dir(support::repo())
        .args([
            "recipe",
            "build",
            "kubernetes",
            "--quiet",
            "--program",
            "kubectl",
        ])
        .args(["--out", s(&bin)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let cp_image = d.join("k8s-control-plane");
    let worker_image = d.join("k8s-worker");
    support::build_image_with("k8s-control-plane", &cp_image, &["--format", "none"]);
    support::build_image_with("k8s-worker", &worker_image, &["--format", "none"]);
    let cluster = d.join("cluster");
    ok(&[
        "cluster",
        "init",
        "--name",
        "k8s",
        "--control-plane-endpoint",
        "10.77.0.11:6443",
        "--member",
        "cp-1=10.77.0.11",
        "--out",
        s(&cluster),
    ]);
    let committed = std::fs::read_to_string(support::repo().join("qemu/k8s-small.toml")).unwrap();
    let lab_file = d.join("k8s-small.toml");
    std::fs::write(
        &lab_file,
        committed
            .replace(
                "image = \"out/k8s-control-plane\"",
                &format!("image = {:?}", s(&cp_image)),
            )
            .replace(
                "image = \"out/k8s-worker\"",
                &format!("image = {:?}", s(&worker_image)),
            ),
    )
    .unwrap();
    let run = d.join("run");
    let _down = LabDown(run.clone());
    let t = Instant::now();
    let out = nodeimg(&[
        "lab",
        "up",
        s(&lab_file),
        "--cluster",
        s(&cluster),
        "--run-dir",
        s(&run),
        "--json",
        "--timeout",
        "900",
    ]);
    assert_eq!(out.status.code(), Some(0), "lab up: {}", text(&out));
    let up = json(&String::from_utf8_lossy(&out.stdout));
    let cp = up["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "cp-1")
        .unwrap()
        .clone();
    let port = cp["kube_port"].as_u64().unwrap();
    let server = format!("https://127.0.0.1:{port}");
    let config = d.join("admin.kubeconfig");
    ok(&[
        "cluster",
        "kubeconfig",
        s(&cluster),
        "--out",
        s(&config),
        "--server",
        &server,
        "--tls-server-name",
        "kubernetes",
    ]);
    let k = Kube { bin, config };

    // Two Ready nodes at the pinned version.
    let mut nodes = Vec::new();
    k.wait("two Ready nodes", 1200, |k| {
        nodes = ready_nodes(k)?;
        Ok(())
    });
    eprintln!(
        "k8s: lab up to two Ready nodes in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    for n in &nodes {
        assert_eq!(
            n["status"]["nodeInfo"]["kubeletVersion"], "v1.34.4",
            "{n:#}"
        );
    }
    let cp_node = nodes
        .iter()
        .find(|n| n["metadata"]["name"] == "cp-1")
        .unwrap();
    assert!(
        cp_node["metadata"]["labels"]
            .get("node-role.kubernetes.io/control-plane")
            .is_some(),
        "{cp_node:#}"
    );
    assert!(
        cp_node["spec"]["taints"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t["key"] == "node-role.kubernetes.io/control-plane"
                && t["effect"] == "NoSchedule"),
        "{cp_node:#}"
    );

    // A pod on the worker, its log read through the API.
    k.pod(
        d,
        "probe",
        &pause_pod("probe", "worker-1", &["probe"], "Never"),
        "Succeeded",
    );
    let log = k.ok(&["logs", "probe"]);
    assert!(
        log.contains("NODEIMG-PROBE uid=65535") && log.contains("root_writable=false"),
        "{log}"
    );

    // Pod to pod across nodes, and to the API through its Service.
    k.pod(
        d,
        "server",
        &pause_pod("server", "worker-1", &["listen", "8080"], "Always"),
        "Running",
    );
    let ip = k.ok(&["get", "pod", "server", "-o", "jsonpath={.status.podIP}"]);
    assert!(ip.starts_with("10.244."), "{ip}");
    let target = format!("{ip}:8080");
    k.pod(
        d,
        "client",
        &pause_pod("client", "cp-1", &["connect", &target], "Never"),
        "Succeeded",
    );
    assert!(k.ok(&["logs", "client"]).contains("ok"));
    k.pod(
        d,
        "to-api",
        &pause_pod("to-api", "worker-1", &["connect", "10.96.0.1:443"], "Never"),
        "Succeeded",
    );

    // Refusals: anonymous 401, an unbound ServiceAccount 403.
    let anon = Command::new(support::tool("curl"))
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("{server}/api/v1/namespaces"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&anon.stdout), "401");
    k.ok(&["create", "serviceaccount", "nobody"]);
    let token = k.ok(&["create", "token", "nobody"]);
    // curl, not kubectl with the admin kubeconfig: its client certificate
    // would authenticate first
    let denied = Command::new(support::tool("curl"))
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {}", token.trim()))
        .arg(format!("{server}/api/v1/namespaces/default/secrets"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&denied.stdout), "403");

    // The worker's kubelet identity (impersonated by the admin: the Node
    // authorizer and NodeRestriction judge the user and group, not how
    // they were proven): a Secret a pod on it mounts reads, another does
    // not, and it may not make itself a control-plane node.
    k.ok(&[
        "create",
        "secret",
        "generic",
        "mounted",
        "--from-literal=k=v",
    ]);
    k.ok(&[
        "create",
        "secret",
        "generic",
        "unbound",
        "--from-literal=k=v",
    ]);
    let mut holder = pause_pod("holder", "worker-1", &[], "Always");
    holder["spec"]["volumes"] =
        serde_json::json!([{ "name": "s", "secret": { "secretName": "mounted" } }]);
    holder["spec"]["containers"][0]["volumeMounts"] =
        serde_json::json!([{ "name": "s", "mountPath": "/s", "readOnly": true }]);
    k.pod(d, "holder", &holder, "Running");
    let node = ["--as=system:node:worker-1", "--as-group=system:nodes"];
    let mut args = vec!["get", "secret", "mounted"];
    args.extend(node);
    k.ok(&args);
    let mut args = vec!["get", "secret", "unbound"];
    args.extend(node);
    let unbound = k.run(&args);
    assert!(
        !unbound.status.success() && text(&unbound).contains("forbidden"),
        "{}",
        text(&unbound)
    );
    let mut args = vec![
        "label",
        "node",
        "worker-1",
        "node-role.kubernetes.io/control-plane=",
    ];
    args.extend(node);
    let promoted = k.run(&args);
    assert!(
        !promoted.status.success() && text(&promoted).contains("not allowed"),
        "{}",
        text(&promoted)
    );

    // Every component runs under the agent; their memory, from each node's
    // report through its API.
    for n in up["nodes"].as_array().unwrap() {
        let name = n["name"].as_str().unwrap();
        let report = json(&ok(&[
            "node",
            "--node",
            &format!("127.0.0.1:{}", n["api_port"].as_u64().unwrap()),
            "--nodeconfig",
            s(&cluster.join("admin.nodeconfig")),
            "--server-name",
            n["address"].as_str().unwrap(),
            "status",
            "--json",
            "--timeout",
            "20",
        ]));
        let want: &[&str] = if name == "cp-1" {
            &[
                "containerd",
                "etcd",
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
                "kube-proxy",
                "kubelet",
            ]
        } else {
            &["containerd", "kube-proxy", "kubelet"]
        };
        let services = report["services"].as_array().unwrap();
        for w in want {
            let svc = services
                .iter()
                .find(|v| v["name"] == *w)
                .unwrap_or_else(|| panic!("{name}: no {w} in {services:?}"));
            assert_eq!(svc["state"], "ready", "{name}: {svc}");
            let rss = svc["rss_kib"].as_u64().unwrap_or(0);
            assert!(rss > 0, "{name}: {svc}");
            eprintln!("k8s: rss {name} {w} {} MiB", rss / 1024);
            eprintln!(
                "k8s: cpu {name} {w} {} s",
                svc["cpu_ms"].as_u64().unwrap_or(0) / 1000
            );
        }
        eprintln!(
            "k8s: rss {name} nodeagent {} MiB",
            report["agent_rss_kib"].as_u64().unwrap_or(0) / 1024
        );
    }
}
