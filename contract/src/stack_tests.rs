use super::*;
use crate::config::{ClusterConfig, Stack};

fn all(stack: &Stack) -> Vec<Value> {
    objects(&render(stack)).into_iter().cloned().collect()
}

#[test]
fn rendering_is_the_same_every_time() {
    let s = Stack::default();
    let a = serde_json::to_string(&all(&s)).unwrap();
    let b = serde_json::to_string(&all(&s.clone())).unwrap();
    assert_eq!(a, b);
    let files: Vec<&str> = render(&s).iter().map(|m| m.file).collect();
    assert_eq!(
        files,
        [
            "00-namespaces.yaml",
            "01-network-policies.yaml",
            "02-rbac.yaml",
            "03-priority-classes.yaml",
            "04-resource-defaults.yaml",
            "05-dns.yaml"
        ]
    );
}

#[test]
fn every_object_is_labelled_placed_and_unique() {
    let s = Stack {
        namespaces: vec!["apps".into(), "batch".into()],
        ..Stack::default()
    };
    let objects = all(&s);
    let mut seen = std::collections::BTreeSet::new();
    for o in &objects {
        assert_eq!(o["metadata"]["labels"][MANAGED_BY_LABEL], MANAGER, "{o}");
        let kind = kind_of(o).unwrap_or_else(|| panic!("unknown kind: {o}"));
        let url = url_of(o).unwrap();
        assert!(seen.insert(url.clone()), "twice: {url}");
        assert!(url.ends_with(o["metadata"]["name"].as_str().unwrap()));
        match o["metadata"]["namespace"].as_str() {
            Some(ns) => {
                assert!(kind.namespaced);
                // the NetworkPolicy engine lives in kube-system
                assert!(
                    s.namespaces.iter().any(|n| n == ns) || ns == "kube-system",
                    "{url}"
                );
                assert!(url.contains(&format!("/namespaces/{ns}/")), "{url}");
            }
            None => assert!(!kind.namespaced, "{url}"),
        }
    }
    // both namespaces get their deny, DNS, limits and quota
    for ns in ["apps", "batch"] {
        for (plural, name) in [
            ("networkpolicies", "default-deny"),
            ("networkpolicies", "allow-dns"),
            ("limitranges", "container-defaults"),
            ("resourcequotas", "namespace-quota"),
        ] {
            assert!(
                seen.iter()
                    .any(|u| u.ends_with(&format!("/namespaces/{ns}/{plural}/{name}"))),
                "{ns} {plural}/{name}"
            );
        }
    }
    assert!(seen.contains("/api/v1/namespaces/apps"));
    assert!(seen.contains("/apis/scheduling.k8s.io/v1/priorityclasses/nodeimg-platform"));
}

#[test]
fn namespaces_enforce_the_level_and_audit_restricted() {
    let s = Stack {
        pod_security: crate::config::PodSecurityLevel::Baseline,
        ..Stack::default()
    };
    let ns = all(&s)
        .into_iter()
        .find(|o| o["kind"] == "Namespace")
        .unwrap();
    let labels = &ns["metadata"]["labels"];
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "baseline");
    assert_eq!(labels["pod-security.kubernetes.io/audit"], "restricted");
    assert_eq!(labels["pod-security.kubernetes.io/warn"], "restricted");
}

#[test]
fn the_auditor_reads_no_secrets_and_writes_nothing() {
    let objects = all(&Stack::default());
    let role = objects
        .iter()
        .find(|o| o["kind"] == "ClusterRole" && o["metadata"]["name"] == AUDITOR_ROLE)
        .unwrap();
    for rule in role["rules"].as_array().unwrap() {
        assert_eq!(rule["verbs"], json!(["get", "list", "watch"]), "{rule}");
        for r in rule["resources"].as_array().unwrap() {
            let r = r.as_str().unwrap();
            assert!(r != "secrets" && r != "*", "{rule}");
        }
        assert!(rule["apiGroups"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g != "*"));
    }
    let binding = objects
        .iter()
        .find(|o| o["kind"] == "ClusterRoleBinding" && o["metadata"]["name"] == AUDITOR_ROLE)
        .unwrap();
    assert_eq!(binding["subjects"][0]["kind"], "Group");
    assert_eq!(binding["subjects"][0]["name"], "nodeimg:auditors");
    assert_eq!(binding["roleRef"]["name"], AUDITOR_ROLE);
}

#[test]
fn parts_turned_off_leave_their_files_out() {
    let mut s = Stack {
        network_policies: false,
        auditor_group: String::new(),
        priority_classes: false,
        ..Stack::default()
    };
    s.limits.enabled = false;
    s.quota.enabled = false;
    s.dns.enabled = false;
    let files: Vec<&str> = render(&s).iter().map(|m| m.file).collect();
    assert_eq!(files, ["00-namespaces.yaml"]);
    s.quota.enabled = true;
    let objects = all(&s);
    assert_eq!(
        objects
            .iter()
            .filter(|o| o["kind"] == "ResourceQuota")
            .count(),
        1
    );
    assert!(objects.iter().all(|o| o["kind"] != "LimitRange"));
}

#[test]
fn the_limits_and_quota_carry_the_configured_values() {
    let mut s = Stack::default();
    s.limits.max_memory = "1Gi".into();
    s.quota.pods = 7;
    let objects = all(&s);
    let lr = objects.iter().find(|o| o["kind"] == "LimitRange").unwrap();
    assert_eq!(lr["spec"]["limits"][0]["max"]["memory"], "1Gi");
    assert_eq!(lr["spec"]["limits"][0]["default"]["cpu"], "500m");
    let q = objects
        .iter()
        .find(|o| o["kind"] == "ResourceQuota")
        .unwrap();
    assert_eq!(q["spec"]["hard"]["pods"], "7");
}

fn cluster_toml(extra: &str) -> String {
    format!("schema = 1\nname = \"lab\"\ncontrol_plane_endpoint = \"10.0.0.1:6443\"\n{extra}")
}

#[test]
fn cluster_toml_takes_the_stack_with_defaults_and_names_bad_keys() {
    let c = ClusterConfig::from_toml(&cluster_toml(""), "cluster.toml").unwrap();
    assert_eq!(c.stack, Stack::default());
    let c = ClusterConfig::from_toml(
        &cluster_toml("[stack]\nnamespaces = [\"web\"]\npod_security = \"baseline\"\n[stack.quota]\npods = 9\n"),
        "cluster.toml",
    )
    .unwrap();
    assert_eq!(c.stack.namespaces, ["web"]);
    assert_eq!(c.stack.quota.pods, 9);
    assert_eq!(c.stack.quota.cpu, "8");
    for (extra, key) in [
        ("[stack]\nnamespace = [\"web\"]\n", "namespace"),
        (
            "[stack]\nnamespaces = [\"kube-web\"]\n",
            "stack.namespaces[0]",
        ),
        (
            "[stack]\nnamespaces = [\"a\", \"a\"]\n",
            "stack.namespaces[1]",
        ),
        ("[stack]\nnamespaces = [\"Web\"]\n", "stack.namespaces[0]"),
        ("[stack]\npod_security = \"strict\"\n", "pod_security"),
        (
            "[stack.limits]\nmax_cpu = \"two\"\n",
            "stack.limits.max_cpu",
        ),
        ("[stack.quota]\nmemory = \"16GB\"\n", "stack.quota.memory"),
        (
            "[control_plane.api_server]\naudit_max_size_mb = 0\n",
            "control_plane.api_server.audit_max_size_mb",
        ),
        (
            "[control_plane.api_server]\nservice_account_max_token_s = 600\n",
            "control_plane.api_server.service_account_max_token_s",
        ),
    ] {
        let e = ClusterConfig::from_toml(&cluster_toml(extra), "cluster.toml")
            .expect_err(extra)
            .to_string();
        assert!(e.contains(key), "{extra}: {e}");
    }
    // quantities the API takes pass
    for q in ["100m", "0.5", "2", "64Mi", "1.5Gi", "2G", "500k"] {
        let text = cluster_toml(&format!("[stack.limits]\nmax_cpu = \"{q}\"\n"));
        ClusterConfig::from_toml(&text, "cluster.toml").unwrap();
    }
}

#[test]
fn the_network_policy_engine_runs_on_every_node_with_net_admin_only() {
    let objects = all(&Stack::default());
    let ds = objects.iter().find(|o| o["kind"] == "DaemonSet").unwrap();
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["tolerations"], json!([{ "operator": "Exists" }]));
    let c = &pod["containers"][0];
    assert_eq!(c["image"], NETWORK_POLICY_IMAGE);
    assert_eq!(c["imagePullPolicy"], "Never");
    // the API through the node's own balancer, not the Service address
    let env = |name: &str| {
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].clone())
            .unwrap()
    };
    assert_eq!(env("KUBERNETES_SERVICE_HOST"), "127.0.0.1");
    assert_eq!(
        env("KUBERNETES_SERVICE_PORT"),
        crate::kube::BALANCER_PORT.to_string()
    );
    assert!(c["securityContext"]["privileged"].is_null());
    assert_eq!(
        c["securityContext"]["capabilities"]["add"],
        json!(["NET_ADMIN"])
    );
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    // its ServiceAccount and read-only role come before it
    let pos = |kind: &str| objects.iter().position(|o| o["kind"] == kind).unwrap();
    assert!(pos("ServiceAccount") < pos("DaemonSet"));
    let role = objects
        .iter()
        .find(|o| {
            o["metadata"]["name"] == "nodeimg:kube-network-policies" && o["kind"] == "ClusterRole"
        })
        .unwrap();
    for rule in role["rules"].as_array().unwrap() {
        assert_eq!(rule["verbs"], json!(["list", "watch"]));
    }
    // network_policies = false takes the engine away too
    let off = Stack {
        network_policies: false,
        ..Stack::default()
    };
    assert!(all(&off).iter().all(|o| o["kind"] != "DaemonSet"));
}

#[test]
fn dns_serves_the_cluster_at_kubelets_address_and_forwards_as_told() {
    let objects = all(&Stack::default());
    let svc = objects.iter().find(|o| o["kind"] == "Service").unwrap();
    assert_eq!(svc["metadata"]["name"], "kube-dns");
    assert_eq!(svc["spec"]["clusterIP"], crate::kube::DNS_SERVICE_IP);
    let cm = objects.iter().find(|o| o["kind"] == "ConfigMap").unwrap();
    let corefile = cm["data"]["Corefile"].as_str().unwrap();
    assert!(
        corefile.contains("kubernetes cluster.local in-addr.arpa ip6.arpa {"),
        "{corefile}"
    );
    assert!(
        corefile.contains("forward . /etc/resolv.conf {"),
        "{corefile}"
    );
    let d = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
    assert_eq!(d["spec"]["replicas"], 2);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["containers"][0]["image"], DNS_IMAGE);
    assert_eq!(
        pod["containers"][0]["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
    assert!(pod["containers"][0]["securityContext"]["capabilities"]["add"].is_null());
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    // the allow-dns policy selects these pods
    assert_eq!(
        d["spec"]["template"]["metadata"]["labels"]["k8s-app"],
        "kube-dns"
    );

    let mut lab = Stack::default();
    lab.dns.forward = Vec::new();
    lab.dns.replicas = 1;
    let objects = all(&lab);
    let cm = objects.iter().find(|o| o["kind"] == "ConfigMap").unwrap();
    let corefile = cm["data"]["Corefile"].as_str().unwrap();
    assert!(
        !corefile.contains("forward") && !corefile.contains("loop"),
        "{corefile}"
    );
    for (extra, key) in [
        ("[stack.dns]\nreplicas = 0\n", "stack.dns.replicas"),
        (
            "[stack.dns]\nforward = [\"dns.example\"]\n",
            "stack.dns.forward[0]",
        ),
    ] {
        let e = ClusterConfig::from_toml(&cluster_toml(extra), "cluster.toml")
            .expect_err(extra)
            .to_string();
        assert!(e.contains(key), "{extra}: {e}");
    }
    let ok = cluster_toml("[stack.dns]\nforward = [\"10.0.0.2\", \"10.0.0.3:5353\"]\n");
    ClusterConfig::from_toml(&ok, "cluster.toml").unwrap();
}
