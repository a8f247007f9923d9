//! Kubernetes in the lab, judged by upstream's kubectl (the locked one):
//! what tests/k8s.rs (1 + 1) and tests/k8s_ha.rs (3 + 1) both bring up and
//! check.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{json, ok, s, text};

/// kubectl against one control-plane node's API forward, as the admin.
pub struct Kube {
    pub bin: PathBuf,
    pub config: PathBuf,
    /// `https://127.0.0.1:PORT`.
    pub server: String,
}

impl Kube {
    /// An admin kubeconfig for `server` from the cluster directory's CA.
    pub fn admin(cluster: &Path, bin: &Path, server: String, config: PathBuf) -> Kube {
        ok(&[
            "cluster",
            "kubeconfig",
            s(cluster),
            "--out",
            s(&config),
            "--server",
            &server,
            "--tls-server-name",
            "kubernetes",
        ]);
        Kube {
            bin: bin.to_path_buf(),
            config,
            server,
        }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(self.bin.join("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.config)
            .arg("--request-timeout=60s")
            .args(args)
            .output()
            .unwrap()
    }

    /// `run`, which must succeed; a call the loaded API did not answer in
    /// time, or answered with a server-side timeout (an emulated API
    /// server's admission can run out of time: "resource quota evaluation
    /// timed out", or the whole request: "Error from server (Timeout)"),
    /// is made again (twice at most); any other failure is final.
    pub fn ok(&self, args: &[&str]) -> String {
        let mut out = self.run(args);
        for _ in 0..2 {
            let said = text(&out);
            let unanswered = said.contains("Client.Timeout")
                || said.contains("Unable to connect")
                || said.contains("Error from server (Timeout)")
                || (said.contains("InternalError") && said.contains("timed out"));
            if out.status.success() || !unanswered {
                break;
            }
            std::thread::sleep(Duration::from_secs(5));
            out = self.run(args);
        }
        assert!(out.status.success(), "kubectl {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until `f` holds, or fails with what was last seen.
    pub fn wait(&self, what: &str, secs: u64, mut f: impl FnMut(&Kube) -> Result<(), String>) {
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

    /// Applies `manifest` (JSON) in `default` and waits for the pod's
    /// phase to be `phase`.
    pub fn pod(&self, dir: &Path, manifest: &Value, phase: &str) {
        self.pods(dir, &[("default", manifest.clone(), phase)]);
    }

    /// Applies every `(namespace, pod, phase)`, then waits for each pod's
    /// phase: they start side by side, which under emulation is most of
    /// their time. A pod that ends in another phase fails at once (a
    /// `pause connect` pod ends Succeeded when it got through, Failed when
    /// it did not).
    pub fn pods(&self, dir: &Path, pods: &[(&str, Value, &str)]) {
        for (ns, pod, _) in pods {
            let mut pod = pod.clone();
            let name = pod["metadata"]["name"].as_str().unwrap().to_string();
            pod["metadata"]["namespace"] = serde_json::json!(ns);
            let file = dir.join(format!("{ns}-{name}.json"));
            std::fs::write(&file, pod.to_string()).unwrap();
            self.ok(&["apply", "-f", s(&file)]);
        }
        for (ns, pod, phase) in pods {
            let name = pod["metadata"]["name"].as_str().unwrap();
            self.wait(&format!("pod {ns}/{name} {phase}"), 600, |k| {
                let out = k.run(&[
                    "get",
                    "pod",
                    "-n",
                    ns,
                    name,
                    "-o",
                    "jsonpath={.status.phase}",
                ]);
                let got = String::from_utf8_lossy(&out.stdout).to_string();
                match got.as_str() {
                    g if g == *phase => Ok(()),
                    "Succeeded" | "Failed" => {
                        panic!("pod {ns}/{name} ended {got}, not {phase}")
                    }
                    _ => Err(format!("{got:?} {}", text(&out))),
                }
            });
        }
    }

    /// Every node, once there are `count` and all are Ready.
    pub fn ready_nodes(&self, count: usize) -> Result<Vec<Value>, String> {
        let out = self.run(&["get", "nodes", "-o", "json"]);
        if !out.status.success() {
            return Err(text(&out));
        }
        let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        let items = v["items"].as_array().cloned().unwrap_or_default();
        if items.len() == count && items.iter().all(is_ready) {
            Ok(items)
        } else {
            let names: Vec<String> = items
                .iter()
                .map(|n| format!("{} ready={}", n["metadata"]["name"], is_ready(n)))
                .collect();
            Err(format!("{names:?}"))
        }
    }

    /// The node holding Lease kube-system/`lease` (holderIdentity `NODE_UUID`).
    pub fn lease_holder(&self, lease: &str) -> Result<String, String> {
        let out = self.run(&[
            "get",
            "lease",
            "-n",
            "kube-system",
            lease,
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ]);
        if !out.status.success() {
            return Err(text(&out));
        }
        let id = String::from_utf8_lossy(&out.stdout).into_owned();
        id.split_once('_')
            .map(|(node, _)| node.to_string())
            .ok_or(format!("holderIdentity {id:?}"))
    }
}

/// A Node whose Ready condition is True.
pub fn is_ready(node: &Value) -> bool {
    node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The locked kubectl, built by `nodeimg recipe build` into `dir`.
pub fn kubectl(dir: &Path) -> PathBuf {
    let o = Command::new(env!("CARGO_BIN_EXE_nodeimg"))
        .current_dir(super::repo())
        .args([
            "recipe",
            "build",
            "kubernetes",
            "--quiet",
            "--program",
            "kubectl",
        ])
        .args(["--out", s(dir)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    dir.to_path_buf()
}

/// A pod of the preloaded image running `/pause ARGS` on `node`, confined
/// as the restricted Pod Security profile and the stack's admission
/// policies ask (limits too: `default` has no LimitRange to supply them).
pub fn pause_pod(name: &str, node: &str, args: &[&str], restart: &str) -> Value {
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
                "resources": { "limits": { "cpu": "100m", "memory": "32Mi" } },
                "securityContext": {
                    "readOnlyRootFilesystem": true,
                    "allowPrivilegeEscalation": false,
                    "capabilities": { "drop": ["ALL"] },
                },
            }],
        },
    })
}

/// Every node at the pinned version; every node but `worker` carries the
/// control-plane role label and NoSchedule taint.
pub fn check_nodes(nodes: &[Value], worker: &str) {
    for n in nodes {
        assert_eq!(
            n["status"]["nodeInfo"]["kubeletVersion"], "v1.34.4",
            "{n:#}"
        );
        if n["metadata"]["name"] == worker {
            continue;
        }
        assert!(
            n["metadata"]["labels"]
                .get("node-role.kubernetes.io/control-plane")
                .is_some(),
            "{n:#}"
        );
        assert!(
            n["spec"]["taints"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| t["key"] == "node-role.kubernetes.io/control-plane"
                    && t["effect"] == "NoSchedule"),
            "{n:#}"
        );
    }
}

/// Workloads and refusals: a pod on `worker` whose log is read through
/// the API; a pod on control-plane node `cp` reaching one on the worker
/// (host-gw routes); a pod on the worker reaching the API through the
/// `kubernetes` Service (its kube-proxy); anonymous 401; an unbound
/// ServiceAccount 403; the worker's kubelet identity reading a Secret its
/// pod mounts but not another, and not labelling itself control plane.
pub fn check_workloads(k: &Kube, dir: &Path, cp: &str, worker: &str) {
    let mut holder = pause_pod("holder", worker, &[], "Always");
    holder["spec"]["volumes"] =
        serde_json::json!([{ "name": "s", "secret": { "secretName": "mounted" } }]);
    holder["spec"]["containers"][0]["volumeMounts"] =
        serde_json::json!([{ "name": "s", "mountPath": "/s", "readOnly": true }]);
    for name in ["mounted", "unbound"] {
        k.ok(&["create", "secret", "generic", name, "--from-literal=k=v"]);
    }
    // all but the client at once: the client needs the server's address
    k.pods(
        dir,
        &[
            (
                "default",
                pause_pod("probe", worker, &["probe"], "Never"),
                "Succeeded",
            ),
            (
                "default",
                pause_pod("server", worker, &["listen", "8080"], "Always"),
                "Running",
            ),
            (
                "default",
                pause_pod("to-api", worker, &["connect", "10.96.0.1:443"], "Never"),
                "Succeeded",
            ),
            ("default", holder, "Running"),
        ],
    );
    // the API server reads the log from the worker's kubelet, over the
    // serving certificate the control-plane agent approves on its next
    // look (every 10 s): until then kubelet's TLS answers an error
    let mut log = String::new();
    k.wait("the probe's log through the worker's kubelet", 300, |k| {
        let out = k.run(&["logs", "probe"]);
        log = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(())
        } else {
            Err(text(&out))
        }
    });
    assert!(
        log.contains("NODEIMG-PROBE uid=65535") && log.contains("root_writable=false"),
        "{log}"
    );

    let ip = k.ok(&["get", "pod", "server", "-o", "jsonpath={.status.podIP}"]);
    assert!(ip.starts_with("10.244."), "{ip}");
    let target = format!("{ip}:8080");
    k.pod(
        dir,
        &pause_pod("client", cp, &["connect", &target], "Never"),
        "Succeeded",
    );
    assert!(k.ok(&["logs", "client"]).contains("ok"));

    let anon = Command::new(super::tool("curl"))
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("{}/api/v1/namespaces", k.server))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&anon.stdout), "401");
    k.ok(&["create", "serviceaccount", "nobody"]);
    let token = k.ok(&["create", "token", "nobody"]);
    // curl, not kubectl with the admin kubeconfig: its client certificate
    // would authenticate first
    let denied = Command::new(super::tool("curl"))
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {}", token.trim()))
        .arg(format!("{}/api/v1/namespaces/default/secrets", k.server))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&denied.stdout), "403");

    // The worker's kubelet identity (impersonated by the admin: the Node
    // authorizer and NodeRestriction judge the user and group, not how
    // they were proven).
    let user = format!("--as=system:node:{worker}");
    let node = [user.as_str(), "--as-group=system:nodes"];
    fn as_node<'a>(args: &[&'a str], node: [&'a str; 2]) -> Vec<&'a str> {
        let mut all = args.to_vec();
        all.extend(node);
        all
    }
    k.ok(&as_node(&["get", "secret", "mounted"], node));
    let unbound = k.run(&as_node(&["get", "secret", "unbound"], node));
    assert!(
        !unbound.status.success() && text(&unbound).contains("forbidden"),
        "{}",
        text(&unbound)
    );
    let role = "node-role.kubernetes.io/control-plane=";
    let promoted = k.run(&as_node(&["label", "node", worker, role], node));
    assert!(
        !promoted.status.success() && text(&promoted).contains("not allowed"),
        "{}",
        text(&promoted)
    );
}

/// `nodeimg node … ARGS` against lab node `n` (from `lab up`'s JSON) as
/// the cluster's admin, through the lab's loopback forward.
pub fn node(cluster: &Path, n: &Value, args: &[&str]) -> String {
    let port = format!("127.0.0.1:{}", n["api_port"].as_u64().unwrap());
    let admin = cluster.join("admin.nodeconfig");
    let mut all = vec![
        "node",
        "--node",
        &port,
        "--nodeconfig",
        s(&admin),
        "--server-name",
        n["address"].as_str().unwrap(),
    ];
    all.extend(args);
    ok(&all)
}

/// Every component is a ready service of its node's agent (waited for: a
/// node turns Ready before its kube-proxy has synced); their memory and
/// CPU time printed, from each node's report through its node API.
pub fn check_services(up: &Value, cluster: &Path) {
    for n in up["nodes"].as_array().unwrap() {
        let name = n["name"].as_str().unwrap();
        let want: &[&str] = if n["role"] == "control-plane" {
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
        let deadline = Instant::now() + Duration::from_secs(300);
        let (report, services) = loop {
            let report = json(&node(cluster, n, &["status", "--json", "--timeout", "20"]));
            let services = report["services"].as_array().cloned().unwrap_or_default();
            let waiting: Vec<&&str> = want
                .iter()
                .filter(|w| {
                    !services
                        .iter()
                        .any(|v| v["name"] == **w && v["state"] == "ready")
                })
                .collect();
            if waiting.is_empty() {
                break (report, services);
            }
            assert!(
                Instant::now() < deadline,
                "{name}: {waiting:?} not ready within 300 s: {services:?}"
            );
            std::thread::sleep(Duration::from_secs(5));
        };
        for w in want {
            let svc = services.iter().find(|v| v["name"] == *w).unwrap();
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

/// A Kubernetes lab brought up from a committed lab file: both k8s images
/// built, a cluster directory with `members` (`NAME=ADDRESS`) and its
/// cluster.toml passed through `tune`, `lab up` (with `extra` arguments)
/// to every node's report.
pub struct KubeLab {
    pub up: Value,
    pub cluster: PathBuf,
    pub run: PathBuf,
    pub bin: PathBuf,
    /// When `lab up` was called.
    pub started: Instant,
    _down: super::LabDown,
}

impl KubeLab {
    pub fn up(
        dir: &Path,
        lab: &str,
        members: &[&str],
        extra: &[&str],
        tune: impl Fn(String) -> String,
    ) -> KubeLab {
        let bin = kubectl(&dir.join("bin"));
        let cp_image = dir.join("k8s-control-plane");
        let worker_image = dir.join("k8s-worker");
        super::build_image_with("k8s-control-plane", &cp_image, &["--format", "none"]);
        super::build_image_with("k8s-worker", &worker_image, &["--format", "none"]);
        let cluster = dir.join("cluster");
        let mut init = vec![
            "cluster",
            "init",
            "--name",
            "k8s",
            "--control-plane-endpoint",
            "10.77.0.11:6443",
            "--out",
            s(&cluster),
        ];
        for m in members {
            init.extend(["--member", m]);
        }
        ok(&init);
        let toml = cluster.join("cluster.toml");
        let defaults = std::fs::read_to_string(&toml).unwrap();
        std::fs::write(&toml, tune(defaults)).unwrap();
        // the manifests follow the tuned cluster.toml, as a user's would
        ok(&["cluster", "manifests", s(&cluster)]);
        let committed =
            std::fs::read_to_string(super::repo().join(format!("qemu/{lab}.toml"))).unwrap();
        let lab_file = dir.join(format!("{lab}.toml"));
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
        let run = dir.join("run");
        let down = super::LabDown(run.clone());
        let started = Instant::now();
        let out = super::lab_up_with(&lab_file, &cluster, &run, 900, extra);
        assert_eq!(out.status.code(), Some(0), "lab up: {}", text(&out));
        KubeLab {
            up: json(&String::from_utf8_lossy(&out.stdout)),
            cluster,
            run,
            bin,
            started,
            _down: down,
        }
    }

    /// An admin kubectl through each control-plane node's API forward, by
    /// node name.
    pub fn admins(&self, dir: &Path) -> Vec<(String, Kube)> {
        self.up["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["role"] == "control-plane")
            .map(|n| {
                let name = n["name"].as_str().unwrap().to_string();
                let server = format!("https://127.0.0.1:{}", n["kube_port"].as_u64().unwrap());
                let config = dir.join(format!("{name}.kubeconfig"));
                let k = Kube::admin(&self.cluster, &self.bin, server, config);
                (name, k)
            })
            .collect()
    }

    /// Waits for `count` Ready nodes, prints how long `lab up` took to them,
    /// and checks versions, roles and taints.
    pub fn ready(&self, k: &Kube, count: usize, secs: u64, worker: &str) -> Vec<Value> {
        let mut nodes = Vec::new();
        k.wait(&format!("{count} Ready nodes"), secs, |k| {
            nodes = k.ready_nodes(count)?;
            Ok(())
        });
        eprintln!(
            "k8s: lab up to {count} Ready nodes in {:.1} s",
            self.started.elapsed().as_secs_f64()
        );
        check_nodes(&nodes, worker);
        nodes
    }
}
