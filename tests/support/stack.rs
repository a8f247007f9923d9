//! The security stack on a running lab, judged by upstream's kubectl, the
//! locked etcdctl and the node API: applied by the elected control-plane
//! node and equal to `DIR/manifests/`, and each control enforced, not only
//! present (issue 14).

use std::path::Path;
use std::process::Command;

use base64::Engine;
use serde_json::{json, Value};

use super::kube::{node, pause_pod, Kube, KubeLab};
use super::oidc::{claims, OidcLab, AUDITORS};
use super::{json, s, text, timed};

/// The workload namespace the lab's stack guards (cluster.toml's default).
const NS: &str = "apps";

fn control_plane(lab: &KubeLab) -> Value {
    lab.up["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["role"] == "control-plane")
        .unwrap()
        .clone()
}

/// Every check, on one lab.
pub fn check_stack(lab: &KubeLab, k: &Kube, dir: &Path, oidc: &OidcLab) {
    let cp = control_plane(lab);
    let stack_applied_at = timed("stack applied", || applied_as_rendered(lab, k, &cp));
    let worker = lab.up["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["role"] == "worker")
        .unwrap();
    // The NetworkPolicy pods spend most of their time starting; the other
    // checks touch other objects and run meanwhile.
    std::thread::scope(|scope| {
        scope.spawn(|| timed("network policies", || network_policies(k, dir, &cp, worker)));
        // waits out a token's lifetime, so beside the rest
        scope.spawn(|| timed("oidc", || oidc_users(k, dir, oidc)));
        // the audit check reads the Secret's creation before the log
        // rotates it away
        let secret = timed("encryption", || encryption_at_rest(lab, k, &cp));
        timed("audit", || audit(lab, k, dir, &cp, &secret));
        // once a Secret was seen under key1; waits for the API server to
        // reload its encryption config
        scope.spawn(|| timed("key rotation", || key_rotation(lab, k, dir, &cp)));
        timed("pod security", || {
            pod_security(k, dir, cp["name"].as_str().unwrap())
        });
        timed("admission policies", || admission_policies(k, dir, &cp));
        timed("rbac", || rbac(k));
        timed("token", || token_lifetime(k));
        timed("event rate", || event_rate_limit(k, dir));
    });
    timed("measure", || measure(k, &stack_applied_at));
    // last: it takes the auditor role away
    timed("prune", || prune(lab, k, dir, &cp));
}

/// A config applied through the node API that renders a smaller stack
/// (no auditor group): the elected node applies it live, deletes the
/// auditor ClusterRole and ClusterRoleBinding it made, counts them in its
/// report, and leaves a ClusterRole a user made alone.
fn prune(lab: &KubeLab, k: &Kube, dir: &Path, cp: &Value) {
    k.ok(&[
        "create",
        "clusterrole",
        "user-pod-reader",
        "--verb=get",
        "--resource=pods",
    ]);
    let name = cp["name"].as_str().unwrap();
    let running = running_config(lab, dir, name);
    let was = format!("auditor_group = \"{AUDITORS}\"");
    assert!(running.contains(&was), "{running}");
    let said = apply_config(lab, dir, cp, &running.replace(&was, "auditor_group = \"\""));
    assert!(
        said.contains("applied    cluster.control_plane.stack"),
        "{said}"
    );
    assert!(
        !said.contains("reboot"),
        "the stack waits for a reboot: {said}"
    );
    let gone = |k: &Kube, kind: &str| {
        let out = k.run(&["get", kind, stack_role()]);
        if !out.status.success() && text(&out).contains("NotFound") {
            Ok(())
        } else {
            Err(format!("{kind}: {}", text(&out)))
        }
    };
    let mut stack = Value::Null;
    k.wait("the auditor role pruned", 300, |k| {
        gone(k, "clusterrolebinding")?;
        gone(k, "clusterrole")?;
        // the report is published with the node's next report line
        let report = json(&node(
            &lab.cluster,
            cp,
            &["status", "--json", "--timeout", "20"],
        ));
        stack = report["kubernetes"]["stack"].clone();
        match stack["pruned"].as_u64() {
            Some(n) if n >= 2 && stack["error"].is_null() => Ok(()),
            _ => Err(format!("report: {stack}")),
        }
    });
    k.ok(&["get", "clusterrole", "user-pod-reader"]);
    eprintln!(
        "k8s: a smaller stack applied live pruned {} objects; the user's ClusterRole stayed",
        stack["pruned"]
    );
}

fn stack_role() -> &'static str {
    "nodeimg:auditor"
}

/// Seconds since the epoch of a Kubernetes timestamp (`2026-12-07T03:29:06Z`).
fn unix(t: &str) -> i64 {
    let n = |r: std::ops::Range<usize>| t.get(r).unwrap().parse::<u8>().unwrap();
    let year: i32 = t.get(0..4).unwrap().parse().unwrap();
    let month = time::Month::try_from(n(5..7)).unwrap();
    let date = time::Date::from_calendar_date(year, month, n(8..10)).unwrap();
    date.with_hms(n(11..13), n(14..16), n(17..19))
        .unwrap()
        .assume_utc()
        .unix_timestamp()
}

/// When `pod`'s (or a Node's) `condition` last turned True.
fn true_since(o: &Value, condition: &str) -> Option<i64> {
    o["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == condition && c["status"] == "True")
        .map(|c| unix(c["lastTransitionTime"].as_str().unwrap()))
}

/// The measures, from the API's own timestamps: the stack applied
/// and the add-ons Ready, counted from the first control-plane node's
/// Ready; each add-on pod's memory (kubelet's summary, working set).
fn measure(k: &Kube, stack_applied_at: &Value) {
    let nodes = json(&k.ok(&["get", "nodes", "-o", "json"]));
    let first_ready = nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["metadata"]["labels"]["node-role.kubernetes.io/control-plane"].is_string())
        .filter_map(|n| true_since(n, "Ready"))
        .min()
        .unwrap();
    let applied = stack_applied_at.as_i64().unwrap();
    eprintln!(
        "k8s: stack applied {} s after the first control-plane node was Ready",
        applied - first_ready
    );
    let pods = json(&k.ok(&["get", "pods", "-n", "kube-system", "-o", "json"]));
    let mut last = first_ready;
    for p in pods["items"].as_array().unwrap() {
        let labels = &p["metadata"]["labels"];
        let addon = labels["k8s-app"] == "kube-dns"
            || labels["app.kubernetes.io/name"] == "kube-network-policies";
        if addon {
            last = last.max(true_since(p, "Ready").unwrap_or(i64::MAX));
        }
    }
    eprintln!(
        "k8s: every add-on Ready {} s after the first control-plane node was",
        last - first_ready
    );
    for n in nodes["items"].as_array().unwrap() {
        let node = n["metadata"]["name"].as_str().unwrap();
        let summary = json(&k.ok(&[
            "get",
            "--raw",
            &format!("/api/v1/nodes/{node}/proxy/stats/summary"),
        ]));
        for p in summary["pods"].as_array().into_iter().flatten() {
            let name = p["podRef"]["name"].as_str().unwrap_or_default();
            if p["podRef"]["namespace"] == "kube-system" {
                let mib = p["memory"]["workingSetBytes"].as_u64().unwrap_or(0) >> 20;
                eprintln!("k8s: memory {node} {name} {mib} MiB");
            }
        }
    }
}

/// NetworkPolicies enforced by the engine the stack runs: default deny
/// stops a workload pod's ingress (from another namespace and its own)
/// and its egress to a listener outside the pod network (a node API,
/// which a pod without policies reaches); allow policies open exactly
/// what they name. The policies go in first and every probe pod runs in
/// one batch (each pod's start is most of its time under emulation),
/// CoreDNS's check beside them.
fn network_policies(k: &Kube, dir: &Path, cp: &Value, worker: &Value) {
    let (cp_name, worker_name) = (
        cp["name"].as_str().unwrap(),
        worker["name"].as_str().unwrap(),
    );
    let policy = |name: &str, spec: Value| {
        let p = json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": { "name": name, "namespace": NS }, "spec": spec,
        });
        let file = dir.join(format!("{name}.json"));
        std::fs::write(&file, p.to_string()).unwrap();
        k.ok(&["apply", "-f", s(&file)]);
    };
    // one pod of `default` by its label, not the namespace: its
    // neighbour np-in stays shut
    policy(
        "allow-default-to-server",
        json!({
            "podSelector": { "matchLabels": { "app": "np-server" } },
            "policyTypes": ["Ingress"],
            "ingress": [{
                "from": [{
                    "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": "default" } },
                    "podSelector": { "matchLabels": { "app": "np-in-allowed" } },
                }],
                "ports": [{ "protocol": "TCP", "port": 8080 }],
            }],
        }),
    );
    let cp_ip = cp["address"].as_str().unwrap();
    policy(
        "allow-out-to-cp",
        json!({
            "podSelector": { "matchLabels": { "app": "np-out-allowed" } },
            "policyTypes": ["Egress"],
            "egress": [{
                "to": [{ "ipBlock": { "cidr": format!("{cp_ip}/32") } }],
                "ports": [{ "protocol": "TCP", "port": 50000 }],
            }],
        }),
    );
    let engine_ready = || {
        timed("np: engine ready", || {
            k.wait("the NetworkPolicy engine on every node", 600, |k| {
                let ds = json(&k.ok(&[
                    "get",
                    "daemonset",
                    "-n",
                    "kube-system",
                    "kube-network-policies",
                    "-o",
                    "json",
                ]));
                let (want, ready) = (
                    &ds["status"]["desiredNumberScheduled"],
                    &ds["status"]["numberReady"],
                );
                if want == 2 && ready == 2 {
                    Ok(())
                } else {
                    Err(format!("{} of {} ready", ready, want))
                }
            })
        });
        runs_by_digest(
            k,
            contract::stack::NETWORK_POLICY_IMAGE,
            contract::stack::NETWORK_POLICY_DIGEST,
        );
    };
    // The policies are API objects and the server an ordinary pod: both go
    // in while the engine starts, which reads them when it comes up; only
    // the probes need it running.
    std::thread::scope(|scope| {
        scope.spawn(|| timed("np: dns", || dns(k, dir, cp_name, worker_name)));
        let engine = scope.spawn(engine_ready);
        let mut server = pause_pod("np-server", worker_name, &["listen", "8080"], "Always");
        server["metadata"]["labels"] = json!({ "app": "np-server" });
        timed("np: server", || k.pods(dir, &[(NS, server, "Running")]));
        engine.join().unwrap();
        let ip = k.ok(&[
            "get",
            "pod",
            "-n",
            NS,
            "np-server",
            "-o",
            "jsonpath={.status.podIP}",
        ]);
        let to_server = format!("{ip}:8080");
        let outside = format!("{cp_ip}:50000");
        let elsewhere = format!("{}:50000", worker["address"].as_str().unwrap());
        // A policed try waits 30 s first: the engine learns of a new pod
        // from the API and until then passes its traffic (an emulated API
        // server tells it late). Only the pod without policies tries at
        // once, and keeps trying while its route comes up.
        let connect = |name: &str, node: &str, target: &str, through: bool| {
            let (tries, wait) = if through { ("10", "30") } else { ("3", "30") };
            let mut p = pause_pod(name, node, &["connect", target, tries, wait], "Never");
            p["metadata"]["labels"] = json!({ "app": name });
            p
        };
        let mut free = pause_pod(
            "np-free",
            worker_name,
            &["connect", &outside, "60", "0"],
            "Never",
        );
        free["metadata"]["labels"] = json!({ "app": "np-free" });
        // the allowed egress pod's label on a pod bound elsewhere: shut
        // (every connection here leaves its node: the engine filters
        // forwarded traffic)
        let mut other = connect("np-out-other", cp_name, &elsewhere, false);
        other["metadata"]["labels"] = json!({ "app": "np-out-allowed" });
        timed("np: probes", || {
            k.pods(
                dir,
                &[
                    ("default", free, "Succeeded"),
                    (
                        NS,
                        connect("np-out", worker_name, &outside, false),
                        "Failed",
                    ),
                    (
                        "default",
                        connect("np-in", cp_name, &to_server, false),
                        "Failed",
                    ),
                    (NS, connect("np-peer", cp_name, &to_server, false), "Failed"),
                    (
                        "default",
                        connect("np-in-allowed", cp_name, &to_server, true),
                        "Succeeded",
                    ),
                    (
                        NS,
                        connect("np-out-allowed", worker_name, &outside, true),
                        "Succeeded",
                    ),
                    (NS, other, "Failed"),
                ],
            )
        });
    });
    eprintln!(
        "k8s: default deny stops ingress from another namespace and its own, and egress out; \
         allow policies open exactly what they name"
    );
}

/// The running pods of a preloaded add-on name its image by the digest
/// the build pinned (found through the `repo@digest` name nodeagent adds;
/// with `imagePullPolicy: Never` nothing else could start them).
fn runs_by_digest(k: &Kube, image: &str, digest: &str) {
    let pods = json(&k.ok(&["get", "pods", "-n", "kube-system", "-o", "json"]));
    let pinned = contract::stack::pinned(image, digest);
    let running: Vec<&Value> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["spec"]["containers"][0]["image"] == pinned.as_str())
        .filter(|p| p["status"]["phase"] == "Running")
        .collect();
    assert!(!running.is_empty(), "no running pod of {pinned}: {pods:#}");
    for p in running {
        eprintln!(
            "k8s: {} runs {pinned} (image id {})",
            p["metadata"]["name"], p["status"]["containerStatuses"][0]["imageID"]
        );
    }
}

/// CoreDNS answers the cluster's names: to a pod in a default-deny
/// namespace (through `allow-dns`) and to one in `default`.
fn dns(k: &Kube, dir: &Path, cp: &str, worker: &str) {
    k.wait("CoreDNS available", 600, |k| {
        let d = json(&k.ok(&[
            "get",
            "deployment",
            "-n",
            "kube-system",
            "coredns",
            "-o",
            "json",
        ]));
        let (want, ready) = (&d["spec"]["replicas"], &d["status"]["readyReplicas"]);
        if ready == want {
            Ok(())
        } else {
            Err(format!("{ready} of {want} ready"))
        }
    });
    runs_by_digest(k, contract::stack::DNS_IMAGE, contract::stack::DNS_DIGEST);
    let name = "kubernetes.default.svc.cluster.local";
    let places = [(NS, worker), ("default", cp)];
    let pods: Vec<(&str, Value, &str)> = places
        .iter()
        .map(|&(ns, node)| {
            let pod = pause_pod("dns", node, &["resolve", name, "60"], "Never");
            (ns, pod, "Succeeded")
        })
        .collect();
    k.pods(dir, &pods);
    for (ns, _) in places {
        let log = k.ok(&["logs", "-n", ns, "dns"]);
        assert!(
            log.contains(&format!("NODEIMG-RESOLVE {name} 10.96.0.1")),
            "{log}"
        );
    }
    eprintln!("k8s: CoreDNS answers {name} in {NS} (default deny, allow-dns) and default");
}

/// The node holding the stack's Lease reports a complete pass, and the
/// cluster holds exactly what `DIR/manifests/` says: a server-side dry run
/// of the files as the agent's field manager changes nothing.
fn applied_as_rendered(lab: &KubeLab, k: &Kube, cp: &Value) -> Value {
    let name = cp["name"].as_str().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let stack = loop {
        let report = json(&node(
            &lab.cluster,
            cp,
            &["status", "--json", "--timeout", "20"],
        ));
        let stack = report["kubernetes"]["stack"].clone();
        // a look that timed out on a loaded API server is reported until
        // the next one (10 s later) goes through
        if stack["applied_at"].is_u64() && stack["error"].is_null() {
            break stack;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name}: the stack was not applied cleanly within 300 s: {stack}"
        );
        std::thread::sleep(std::time::Duration::from_secs(5));
    };
    eprintln!("k8s: stack on {name}: {stack}");
    assert_eq!(stack["leader"], true, "{stack}");
    let holder = k.ok(&[
        "get",
        "lease",
        "-n",
        "kube-system",
        "nodeimg-stack",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert_eq!(holder, name, "the stack's Lease");
    let manifests = lab.cluster.join("manifests");
    let mut objects = 0;
    for entry in std::fs::read_dir(&manifests).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        objects += text.matches("\n---\n").count();
    }
    assert_eq!(
        stack["objects"].as_u64().unwrap(),
        objects as u64,
        "{stack}"
    );
    // Exit 0: no difference between the files and the cluster. kubectl
    // reads the live object, then dry-runs the apply: a status that moves
    // between the two (an add-on turning available) shows as a difference
    // though nothing of ours differs, so it is asked again; a difference
    // in what we apply stays and fails.
    k.wait("kubectl diff of DIR/manifests empty", 60, |k| {
        let out = k.run(&[
            "diff",
            "--server-side",
            "--force-conflicts",
            "--field-manager=nodeimg-agent",
            "-f",
            s(&manifests),
        ]);
        if out.status.success() {
            Ok(())
        } else {
            Err(text(&out))
        }
    });
    let ns = json(&k.ok(&["get", "namespace", NS, "-o", "json"]));
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    for (kind, name) in [
        ("networkpolicy", "default-deny"),
        ("networkpolicy", "allow-dns"),
        ("limitrange", "container-defaults"),
        ("resourcequota", "namespace-quota"),
    ] {
        k.ok(&["get", "-n", NS, kind, name]);
    }
    stack["applied_at"].clone()
}

/// A privileged pod is not admitted (the API server allows no privileged
/// container at all); one in the host's namespaces is refused by Pod
/// Security with its reason; a restricted one runs (its requests and
/// limits from the LimitRange).
fn pod_security(k: &Kube, dir: &Path, cp: &str) {
    let refused = |name: &str, pod: &Value| {
        let file = dir.join(format!("{name}.json"));
        std::fs::write(&file, pod.to_string()).unwrap();
        let out = k.run(&["apply", "-f", s(&file)]);
        let said = text(&out);
        assert!(!out.status.success(), "pod {name} was admitted: {said}");
        eprintln!("k8s: pod {name} refused: {}", said.trim());
        said
    };
    let mut privileged = pause_pod("privileged", cp, &[], "Never");
    privileged["metadata"]["namespace"] = json!(NS);
    privileged["spec"]["containers"][0]["securityContext"] = json!({ "privileged": true });
    let said = refused("privileged", &privileged);
    assert!(said.contains("privileged"), "{said}");

    let mut host = pause_pod("host-namespaces", cp, &[], "Never");
    host["metadata"]["namespace"] = json!(NS);
    host["spec"]["hostNetwork"] = json!(true);
    host["spec"]["hostPID"] = json!(true);
    let said = refused("host-namespaces", &host);
    assert!(
        said.contains("violates PodSecurity \"restricted:latest\"")
            && said.contains("host namespaces"),
        "{said}"
    );

    // No resources of its own: the LimitRange (a mutating admission step)
    // fills them in before the require-limits policy validates the pod.
    let mut good = pause_pod("restricted", cp, &[], "Always");
    good["metadata"]["namespace"] = json!(NS);
    if let Some(c) = good["spec"]["containers"][0].as_object_mut() {
        c.remove("resources");
    }
    let file = dir.join("restricted.json");
    std::fs::write(&file, good.to_string()).unwrap();
    k.ok(&["apply", "-f", s(&file)]);
    k.wait("pod apps/restricted Running", 600, |k| {
        let out = k.run(&["get", "pod", "-n", NS, "restricted", "-o", "json"]);
        let pod: Value = serde_json::from_slice(&out.stdout).map_err(|_| text(&out))?;
        match pod["status"]["phase"].as_str() {
            Some("Running") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let pod = json(&k.ok(&["get", "pod", "-n", NS, "restricted", "-o", "json"]));
    let resources = &pod["spec"]["containers"][0]["resources"];
    assert_eq!(resources["limits"]["memory"], "256Mi", "{resources}");
    assert_eq!(resources["requests"]["cpu"], "100m", "{resources}");
}

/// The stack's ValidatingAdmissionPolicies type-check in the API server
/// and refuse, each with its own name, a pod that breaks only its rule,
/// in a namespace whose Pod Security enforces nothing (so the policy is
/// the only guard); the same pod with the rule kept is admitted. Server
/// dry runs: admission runs in full, nothing is stored. A privileged
/// container never gets this far (`--allow-privileged=false`: see
/// [`pod_security`]).
fn admission_policies(k: &Kube, dir: &Path, cp: &Value) {
    let listed = json(&k.ok(&["get", "validatingadmissionpolicies", "-o", "json"]));
    let ours: Vec<&Value> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("nodeimg-")
        })
        .collect();
    assert_eq!(ours.len(), 7, "{listed:#}");
    for p in &ours {
        // the API server type-checks each expression against the Pod schema
        // (asynchronously: wait for its verdict)
        let name = p["metadata"]["name"].as_str().unwrap();
        k.wait(&format!("{name} type-checked"), 120, |k| {
            let p = json(&k.ok(&["get", "validatingadmissionpolicy", name, "-o", "json"]));
            let checked = &p["status"]["typeChecking"];
            match checked["expressionWarnings"].as_array() {
                Some(w) if !w.is_empty() => panic!("{name}: {w:#?}"),
                _ if p["status"]["observedGeneration"] == p["metadata"]["generation"] => Ok(()),
                _ => Err(format!("{:#}", p["status"])),
            }
        });
    }

    let ns = "policy-test";
    let cp = cp["name"].as_str().unwrap();
    k.ok(&["create", "namespace", ns]);
    k.ok(&[
        "label",
        "namespace",
        ns,
        "pod-security.kubernetes.io/enforce=privileged",
    ]);
    // a pod needs the namespace's `default` ServiceAccount, which the
    // controller manager makes a while after the namespace (under
    // emulation, seconds)
    k.wait(&format!("{ns}/default ServiceAccount"), 120, |k| {
        let out = k.run(&["get", "serviceaccount", "-n", ns, "default"]);
        if out.status.success() {
            Ok(())
        } else {
            Err(text(&out))
        }
    });
    let pod = |name: &str, change: &dyn Fn(&mut Value)| {
        let mut p = pause_pod(name, cp, &[], "Never");
        p["metadata"]["namespace"] = json!(ns);
        change(&mut p);
        let file = dir.join(format!("{name}.json"));
        std::fs::write(&file, p.to_string()).unwrap();
        k.run(&["create", "--dry-run=server", "-f", s(&file)])
    };
    let c = "/spec/containers/0";
    let set = |path: &str, v: Value| {
        let path = path.to_string();
        move |p: &mut Value| *p.pointer_mut(&path).unwrap() = v.clone()
    };
    type Change = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, &str, Change)> = vec![
        (
            "registry",
            "nodeimg-allowed-registries",
            Box::new(set(
                &format!("{c}/image"),
                json!("registry.example/pause:0.1.0"),
            )),
        ),
        (
            "init-registry",
            "nodeimg-allowed-registries",
            Box::new(|p: &mut Value| {
                let mut init = p["spec"]["containers"][0].clone();
                init["name"] = json!("init");
                init["image"] = json!("docker.io/library/busybox:1");
                p["spec"]["initContainers"] = json!([init]);
            }),
        ),
        (
            "no-limits",
            "nodeimg-require-limits",
            Box::new(|p: &mut Value| {
                p["spec"]["containers"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("resources");
            }),
        ),
        (
            "root",
            "nodeimg-non-root",
            Box::new(|p: &mut Value| {
                let sc = p["spec"]["securityContext"].as_object_mut().unwrap();
                sc.remove("runAsNonRoot");
                sc.remove("runAsUser");
            }),
        ),
        (
            "writable-root",
            "nodeimg-read-only-root",
            Box::new(set(
                &format!("{c}/securityContext/readOnlyRootFilesystem"),
                json!(false),
            )),
        ),
        (
            "capabilities",
            "nodeimg-drop-capabilities",
            Box::new(set(
                &format!("{c}/securityContext/capabilities"),
                json!({ "drop": ["NET_RAW"] }),
            )),
        ),
        (
            "host-ipc",
            "nodeimg-no-host-namespaces",
            Box::new(|p: &mut Value| p["spec"]["hostIPC"] = json!(true)),
        ),
    ];
    for (name, policy, change) in &cases {
        let out = pod(name, change.as_ref());
        let said = text(&out);
        assert!(!out.status.success(), "pod {name} was admitted: {said}");
        assert!(
            said.contains(&format!("ValidatingAdmissionPolicy '{policy}'"))
                && said.contains("denied request"),
            "pod {name}: not refused by {policy}: {said}"
        );
        eprintln!("k8s: pod {name} refused: {}", said.trim());
    }
    let out = pod("compliant", &|_| ());
    assert!(
        out.status.success(),
        "a compliant pod was refused: {}",
        text(&out)
    );
    k.ok(&["delete", "namespace", ns, "--wait=false"]);
}

/// The auditor group reads but neither changes anything nor reads
/// Secrets; no ServiceAccount outside kube-system holds a cluster-wide
/// role that writes.
fn rbac(k: &Kube) {
    let group = format!("--as-group={AUDITORS}");
    let auditor = ["--as=audit-test", &group];
    let can = |verb: &str, what: &str| {
        let mut args = vec!["auth", "can-i", verb, what, "-n", NS];
        args.extend(auditor);
        let out = k.run(&args);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    for (verb, what, want) in [
        ("list", "pods", "yes"),
        ("get", "networkpolicies", "yes"),
        ("list", "nodes", "yes"),
        ("get", "secrets", "no"),
        ("list", "secrets", "no"),
        ("delete", "pods", "no"),
        ("create", "deployments", "no"),
        ("patch", "namespaces", "no"),
    ] {
        assert_eq!(can(verb, what), want, "auditor may {verb} {what}");
    }
    // and the API agrees when the auditor asks
    let mut args = vec!["get", "pods", "-A"];
    args.extend(auditor);
    k.ok(&args);
    let mut args = vec!["get", "secrets", "-n", NS];
    args.extend(auditor);
    let out = k.run(&args);
    assert!(
        !out.status.success() && text(&out).contains("Forbidden"),
        "{}",
        text(&out)
    );

    let roles = json(&k.ok(&["get", "clusterroles", "-o", "json"]));
    let writes = |role: &str| {
        roles["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["metadata"]["name"] == role)
            .map(|r| {
                r["rules"].as_array().into_iter().flatten().any(|rule| {
                    rule["verbs"].as_array().into_iter().flatten().any(|v| {
                        matches!(
                            v.as_str(),
                            Some(
                                "*" | "create" | "update" | "patch" | "delete" | "deletecollection"
                            )
                        )
                    })
                })
            })
            // a binding to a role that does not exist grants nothing
            .unwrap_or(false)
    };
    let bindings = json(&k.ok(&["get", "clusterrolebindings", "-o", "json"]));
    for b in bindings["items"].as_array().unwrap() {
        for subject in b["subjects"].as_array().into_iter().flatten() {
            let outside =
                subject["kind"] == "ServiceAccount" && subject["namespace"] != "kube-system";
            let role = b["roleRef"]["name"].as_str().unwrap();
            assert!(
                !(outside && writes(role)),
                "ServiceAccount {}/{} holds cluster-wide {role} through {}",
                subject["namespace"],
                subject["name"],
                b["metadata"]["name"]
            );
        }
    }
}

/// kubectl as the bearer of `token`, with no other credential.
fn with_token(k: &Kube, dir: &Path, token: &str, args: &[&str]) -> std::process::Output {
    let ca = dir.join("kubernetes-ca.crt");
    if !ca.exists() {
        let data = k.ok(&[
            "config",
            "view",
            "--raw",
            "--minify",
            "-o",
            "jsonpath={.clusters[0].cluster.certificate-authority-data}",
        ]);
        let pem = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .unwrap();
        std::fs::write(&ca, pem).unwrap();
    }
    let empty = dir.join("empty.kubeconfig");
    std::fs::write(&empty, "").unwrap();
    Command::new(k.bin.join("kubectl"))
        .arg("--kubeconfig")
        .arg(&empty)
        .arg("--server")
        .arg(&k.server)
        .arg("--certificate-authority")
        .arg(&ca)
        .args(["--tls-server-name", "kubernetes", "--request-timeout=60s"])
        .arg(format!("--token={token}"))
        .args(args)
        .output()
        .unwrap()
}

/// OIDC: a user of the configured provider, logged in through its form,
/// is known by its `sub` and groups under `oidc:`, and its `auditors`
/// group is the stack's auditor (reads pods, not Secrets); a user without
/// the group is authenticated but may do nothing; tokens from another
/// provider, from an impostor signing for the lab's address, and the
/// lab's own once expired are all refused.
fn oidc_users(k: &Kube, dir: &Path, oidc: &OidcLab) {
    let refused = |out: &std::process::Output, what: &str| {
        assert!(
            !out.status.success() && text(out).contains("Unauthorized"),
            "{what}: {}",
            text(out)
        );
    };
    let forbidden = |out: &std::process::Output, what: &str| {
        assert!(
            !out.status.success() && text(out).to_lowercase().contains("forbidden"),
            "{what}: {}",
            text(out)
        );
    };
    let alice = oidc.issuer.id_token("alice", "alice-pw");
    let c = claims(&alice);
    assert_eq!(c["iss"], oidc.issuer.url, "{c}");
    assert_eq!(c["groups"], json!(["auditors"]), "{c}");
    let exp = c["exp"].as_i64().unwrap();
    let whoami = with_token(k, dir, &alice, &["auth", "whoami", "-o", "json"]);
    assert!(whoami.status.success(), "{}", text(&whoami));
    let me = json(&String::from_utf8_lossy(&whoami.stdout));
    assert_eq!(me["status"]["userInfo"]["username"], "oidc:alice", "{me}");
    let groups = me["status"]["userInfo"]["groups"].to_string();
    assert!(groups.contains(AUDITORS), "{me}");
    let pods = with_token(k, dir, &alice, &["get", "pods", "-A"]);
    assert!(pods.status.success(), "{}", text(&pods));
    forbidden(
        &with_token(k, dir, &alice, &["get", "secrets", "-n", NS]),
        "an auditor reads Secrets",
    );
    forbidden(
        &with_token(k, dir, &alice, &["create", "configmap", "oidc-x", "-n", NS]),
        "an auditor writes",
    );
    let bob = oidc.issuer.id_token("bob", "bob-pw");
    forbidden(
        &with_token(k, dir, &bob, &["get", "pods", "-n", NS]),
        "a user in no group lists pods",
    );
    for (what, issuer) in [
        ("another provider", &oidc.other),
        ("an impostor", &oidc.impostor),
    ] {
        let token = issuer.id_token("alice", "alice-pw");
        refused(
            &with_token(k, dir, &token, &["get", "pods", "-n", NS]),
            what,
        );
    }
    // alice's first token, accepted above, once it has expired (the API
    // server caches a verdict for 10 s)
    let wait = exp + 15 - time::OffsetDateTime::now_utc().unix_timestamp();
    if wait > 0 {
        std::thread::sleep(std::time::Duration::from_secs(wait as u64));
    }
    refused(
        &with_token(k, dir, &alice, &["get", "pods", "-n", NS]),
        "an expired token",
    );
    eprintln!("oidc: oidc:alice in {AUDITORS} read pods, not Secrets; bob may do nothing; another provider's, an impostor's and an expired token got 401");
}

/// A Secret made through the API is stored sealed: read raw from etcd, it
/// carries the secretbox provider's prefix and not its value.
fn encryption_at_rest(lab: &KubeLab, k: &Kube, cp: &Value) -> String {
    let name = "sealed";
    let canary = "canary-plain-text-4f1d";
    k.ok(&[
        "create",
        "secret",
        "generic",
        name,
        "-n",
        NS,
        &format!("--from-literal=password={canary}"),
    ]);
    let raw = &stored(lab, cp, "etcdctl-tls", name);
    let prefix = b"k8s:enc:secretbox:v1:key1:";
    assert!(
        raw.starts_with(prefix),
        "stored as {:?}",
        String::from_utf8_lossy(raw.get(..60).unwrap_or(raw))
    );
    assert!(
        !raw.windows(canary.len()).any(|w| w == canary.as_bytes()),
        "the Secret's value is in etcd in plain text"
    );
    eprintln!(
        "k8s: Secret {NS}/{name} in etcd: {} bytes, sealed",
        raw.len()
    );
    name.to_string()
}

/// Secret `NS/name` as etcd holds it, read with the locked etcdctl (its
/// client certificate in `lab.run/tls`: one directory per thread).
fn stored(lab: &KubeLab, cp: &Value, tls: &str, name: &str) -> Vec<u8> {
    let tls = lab.run.join(tls);
    if !tls.exists() {
        super::etcd::client_cert(&lab.cluster, &tls);
    }
    let endpoint = format!("127.0.0.1:{}", cp["etcd_port"].as_u64().unwrap());
    let out = super::etcd::etcdctl(
        &tls,
        &endpoint,
        30,
        &[
            "get",
            &format!("/registry/secrets/{NS}/{name}"),
            "--print-value-only",
        ],
    );
    assert!(out.status.success(), "etcdctl get: {}", text(&out));
    out.stdout
}

/// The machine config the control-plane node runs: the one `lab up`
/// rendered, or the last one a check applied.
fn running_config(lab: &KubeLab, dir: &Path, name: &str) -> String {
    let applied = dir.join(format!("{name}-applied.toml"));
    let path = if applied.exists() {
        applied
    } else {
        lab.run.join("nodes").join(name).join("config.toml")
    };
    std::fs::read_to_string(path).unwrap()
}

/// Applies `text` to the control-plane node through its node API and
/// keeps it as the running config; what `apply-config` said.
fn apply_config(lab: &KubeLab, dir: &Path, cp: &Value, text: &str) -> String {
    let name = cp["name"].as_str().unwrap();
    let applied = dir.join(format!("{name}-applied.toml"));
    std::fs::write(&applied, text).unwrap();
    node(&lab.cluster, cp, &["apply-config", s(&applied)])
}

/// Encryption-key rotation, the documented way: `cluster encryption-key
/// add`, the control-plane config applied (live: the API server reloads
/// its encryption config), `use key2` and applied (new Secrets are stored
/// under key2), every Secret rewritten (`kubectl get secrets -A -o json |
/// kubectl replace -f -`: the one stored under key1 is now under key2),
/// `retire` and applied (the API server reloads again and still reads
/// it). Each reload is seen in the API server's own metric.
fn key_rotation(lab: &KubeLab, k: &Kube, dir: &Path, cp: &Value) {
    let name = cp["name"].as_str().unwrap();
    let canary = "canary-rotation-7c2e";
    k.ok(&[
        "create",
        "secret",
        "generic",
        "rotated",
        "-n",
        NS,
        &format!("--from-literal=v={canary}"),
    ]);
    let prefix = |secret: &str| {
        let raw = stored(lab, cp, "etcdctl-tls-rotation", secret);
        assert!(
            !raw.windows(canary.len()).any(|w| w == canary.as_bytes()),
            "{secret} in plain text"
        );
        String::from_utf8_lossy(raw.get(..26).unwrap_or(&raw)).into_owned()
    };
    assert_eq!(prefix("rotated"), "k8s:enc:secretbox:v1:key1:");
    let reloads = |k: &Kube| -> u64 {
        let metrics = k.ok(&["get", "--raw", "/metrics"]);
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("apiserver_encryption_config_controller_automatic_reloads_total")
                    && l.contains("status=\"success\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    let step = |args: &[&str], said: &str| {
        let mut all = vec!["cluster", "encryption-key", s(&lab.cluster)];
        all.extend(args);
        let out = super::ok(&all);
        assert!(out.contains(said), "{out}");
        let rendered = dir.join(format!("{name}-rendered.toml"));
        let address = cp["address"].as_str().unwrap();
        super::ok(&[
            "cluster",
            "config",
            s(&lab.cluster),
            "--role",
            "control-plane",
            "--hostname",
            name,
            "--address",
            address,
            "--out",
            s(&rendered),
            "--force",
        ]);
        let fresh: toml::Table = std::fs::read_to_string(&rendered).unwrap().parse().unwrap();
        let mut running: toml::Table = running_config(lab, dir, name).parse().unwrap();
        let fresh_cp = fresh["cluster"]["control_plane"]
            .as_table()
            .unwrap()
            .clone();
        let cp_table = running["cluster"]["control_plane"].as_table_mut().unwrap();
        for key in [
            "encryption_key",
            "encryption_key_name",
            "encryption_read_keys",
        ] {
            cp_table.remove(key);
            if let Some(v) = fresh_cp.get(key) {
                cp_table.insert(key.into(), v.clone());
            }
        }
        let said = apply_config(lab, dir, cp, &toml::to_string(&running).unwrap());
        assert!(
            said.contains("applied    cluster.control_plane.encryption_keys")
                && !said.contains("on reboot"),
            "{said}"
        );
    };
    // Waits are polled every 15 s: an emulated API server's /metrics is
    // megabytes, and the other checks share its CPU.
    let poll = |what: &str, mut done: Box<dyn FnMut() -> Result<(), String> + '_>| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
        loop {
            match done() {
                Ok(()) => return,
                Err(last) if std::time::Instant::now() > deadline => {
                    panic!("{what}: not within 240 s; last: {last}")
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_secs(15)),
            }
        }
    };
    // One API server here: `add` and `use` may reach it in one reload.
    step(&["add"], "added key2");
    step(&["use", "key2"], "key2 encrypts");
    k.ok(&[
        "create",
        "secret",
        "generic",
        "rotated-new",
        "-n",
        NS,
        &format!("--from-literal=v={canary}"),
    ]);
    let mut tries = 0;
    poll(
        "a written Secret stored under key2",
        Box::new(|| {
            tries += 1;
            // each write stores it again, under the key the API server
            // encrypts with now
            k.ok(&[
                "patch",
                "secret",
                "rotated-new",
                "-n",
                NS,
                "--type=merge",
                "-p",
                &format!("{{\"stringData\":{{\"try\":\"{tries}\"}}}}"),
            ]);
            let got = prefix("rotated-new");
            (got == "k8s:enc:secretbox:v1:key2:")
                .then_some(())
                .ok_or(got)
        }),
    );
    assert_eq!(prefix("rotated"), "k8s:enc:secretbox:v1:key1:");
    // every Secret rewritten, as docs/security-stack.md says; the
    // API server's own objects need no client-side schema check (its
    // OpenAPI download is what an emulated server answers too slowly)
    let all = dir.join("all-secrets.json");
    std::fs::write(&all, k.ok(&["get", "secrets", "-A", "-o", "json"])).unwrap();
    k.ok(&["replace", "--validate=false", "-f", s(&all)]);
    assert_eq!(prefix("rotated"), "k8s:enc:secretbox:v1:key2:");
    let before = reloads(k);
    assert!(before >= 1, "no reload of the encryption config seen");
    step(&["retire"], "retired key1");
    poll(
        "the API server reloads its encryption config",
        Box::new(|| {
            let got = reloads(k);
            (got > before).then_some(()).ok_or(format!("{got} reloads"))
        }),
    );
    let v = k.ok(&[
        "get",
        "secret",
        "rotated",
        "-n",
        NS,
        "-o",
        "jsonpath={.data.v}",
    ]);
    let v = base64::engine::general_purpose::STANDARD
        .decode(v.trim())
        .unwrap();
    assert_eq!(v, canary.as_bytes(), "read back with key2 alone");
    eprintln!(
        "k8s: encryption key rotated key1 -> key2 live: {tries} writes until key2, every Secret rewritten under key2, key1 retired ({} reloads)",
        reloads(k)
    );
}

/// The control-plane node's audit log records the Secret's creation by
/// the admin, and rotates at the lab's 1 MiB.
fn audit(lab: &KubeLab, k: &Kube, dir: &Path, cp: &Value, secret: &str) {
    let me = json(&k.ok(&["auth", "whoami", "-o", "json"]));
    let user = me["status"]["userInfo"]["username"]
        .as_str()
        .unwrap()
        .to_string();
    let log = node(&lab.cluster, cp, &["audit", "--tail", "5000"]);
    let created = log
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| {
            e["verb"] == "create"
                && e["objectRef"]["resource"] == "secrets"
                && e["objectRef"]["namespace"] == NS
                && e["stage"] == "ResponseComplete"
                && (e["objectRef"]["name"] == secret || e["responseStatus"]["code"] == 201)
        })
        .unwrap_or_else(|| {
            panic!(
                "no audit event of the Secret's creation in:\n{}",
                tail(&log)
            )
        });
    assert_eq!(created["user"]["username"], user.as_str(), "{created}");
    // Secrets are logged at Metadata level: no body in the log
    assert!(created["requestObject"].is_null(), "{created}");
    assert!(
        !log.contains("canary-plain-text"),
        "a Secret's value is in the audit log"
    );

    // over 1 MiB of Request-level events: ServiceAccounts with a large annotation
    let big = "x".repeat(200_000);
    for i in 0..7 {
        let sa = json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": { "name": format!("audit-fill-{i}"), "namespace": NS,
                          "annotations": { "fill": big } },
        });
        let file = dir.join(format!("audit-fill-{i}.json"));
        std::fs::write(&file, sa.to_string()).unwrap();
        k.ok(&["create", "-f", s(&file)]);
    }
    let listing = node(&lab.cluster, cp, &["audit", "--tail", "0"]);
    let files: Vec<(String, u64)> = listing
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(n, b)| (n.to_string(), b.parse().unwrap()))
        .collect();
    eprintln!("k8s: audit files: {files:?}");
    assert!(files.len() >= 2, "the audit log did not rotate: {files:?}");
    for (name, bytes) in &files {
        assert!(
            *bytes <= 1 << 20,
            "{name} is {bytes} bytes, over the 1 MiB set"
        );
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// A token asked for two days lives the configured hour at most, and is
/// bound (audience, expiry, the ServiceAccount's UID).
fn token_lifetime(k: &Kube) {
    let token = k.ok(&["create", "token", "default", "-n", NS, "--duration=48h"]);
    let payload = token.trim().split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    let life = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    eprintln!("k8s: a token asked for 48 h lives {life} s");
    assert!(life <= 3600, "{claims}");
    assert!(
        claims["kubernetes.io"]["serviceaccount"]["uid"].is_string(),
        "{claims}"
    );
}

/// Events in one namespace faster than EventRateLimit's burst: some are
/// refused with 429.
fn event_rate_limit(k: &Kube, dir: &Path) {
    let events: Vec<Value> = (0..150)
        .map(|i| {
            json!({
                "apiVersion": "v1", "kind": "Event",
                "metadata": { "name": format!("burst-{i}"), "namespace": NS },
                "involvedObject": { "kind": "Pod", "namespace": NS, "name": "restricted" },
                "reason": "Burst", "message": "rate limit check", "type": "Normal",
            })
        })
        .collect();
    // four clients at once: the namespace's bucket (the lab's burst 10,
    // 1/s) empties however slowly an emulated API server answers
    let children: Vec<_> = events
        .chunks(38)
        .enumerate()
        .map(|(i, chunk)| {
            let file = dir.join(format!("burst-{i}.json"));
            let list = json!({ "apiVersion": "v1", "kind": "List", "items": chunk });
            std::fs::write(&file, list.to_string()).unwrap();
            Command::new(k.bin.join("kubectl"))
                .arg("--kubeconfig")
                .arg(&k.config)
                // no schema fetch first: four at once would time out on a
                // loaded API before the burst began
                .args(["create", "--validate=false", "-f", s(&file)])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let said: String = children
        .into_iter()
        .map(|c| text(&c.wait_with_output().unwrap()))
        .collect();
    // apimachinery's NewTooManyRequestsError, as kubectl prints it
    let refused = said.matches("(TooManyRequests)").count();
    eprintln!("k8s: {refused} of 150 events refused by EventRateLimit");
    assert!(refused > 0, "no event was throttled: {}", tail(&said));
}
