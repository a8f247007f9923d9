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
            "05-dns.yaml",
            "06-admission-policies.yaml",
            "07-falco-rules.yaml"
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
    s.admission.enabled = false;
    s.falco.enabled = false;
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
            "[stack.admission]\nallowed_registries = [\"nodeimg.local\"]\n",
            "stack.admission.allowed_registries[0]",
        ),
        (
            "[stack.admission]\nallowed_registries = [\"a/\", \"b'/\"]\n",
            "stack.admission.allowed_registries[1]",
        ),
        ("[stack.admission]\nno_root = true\n", "no_root"),
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
    assert_eq!(
        c["image"],
        format!("{NETWORK_POLICY_IMAGE}@{NETWORK_POLICY_DIGEST}")
    );
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
    assert_eq!(
        pod["containers"][0]["image"],
        format!("{DNS_IMAGE}@{DNS_DIGEST}")
    );
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

fn policies(s: &Stack) -> Vec<Value> {
    all(s)
        .into_iter()
        .filter(|o| o["kind"] == "ValidatingAdmissionPolicy")
        .collect()
}

#[test]
fn each_admission_rule_is_a_bound_policy_outside_kube_system() {
    let s = Stack::default();
    let objects = all(&s);
    let names: Vec<&str> = objects
        .iter()
        .filter(|o| o["kind"] == "ValidatingAdmissionPolicy")
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "nodeimg-allowed-registries",
            "nodeimg-require-limits",
            "nodeimg-non-root",
            "nodeimg-read-only-root",
            "nodeimg-drop-capabilities",
            "nodeimg-no-privileged",
            "nodeimg-no-host-namespaces"
        ]
    );
    for p in policies(&s) {
        let name = p["metadata"]["name"].as_str().unwrap();
        let spec = &p["spec"];
        assert_eq!(spec["failurePolicy"], "Fail", "{name}");
        let m = &spec["matchConstraints"];
        assert_eq!(
            m["resourceRules"][0]["resources"],
            json!(["pods", "pods/ephemeralcontainers"])
        );
        assert_eq!(
            m["namespaceSelector"]["matchExpressions"][0]["values"],
            json!(["kube-system"])
        );
        // the refusal names the policy
        let message = spec["validations"][0]["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("{name}: ")), "{message}");
        let bound = objects
            .iter()
            .find(|o| {
                o["kind"] == "ValidatingAdmissionPolicyBinding" && o["metadata"]["name"] == name
            })
            .unwrap_or_else(|| panic!("{name} is not bound"));
        assert_eq!(bound["spec"]["policyName"], name);
        assert_eq!(bound["spec"]["validationActions"], json!(["Deny"]));
    }
}

#[test]
fn admission_expressions_cover_every_container_list_they_should() {
    let expr = |name: &str| {
        policies(&Stack::default())
            .into_iter()
            .find(|p| p["metadata"]["name"] == name)
            .unwrap()["spec"]["validations"][0]["expression"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let registries = expr("nodeimg-allowed-registries");
    assert!(registries.contains(r#"["nodeimg.local/"].exists(r, c.image.startsWith(r))"#));
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        assert!(
            registries.contains(&format!("object.spec.{list}.all(c, ")),
            "{list}"
        );
        assert!(expr("nodeimg-read-only-root").contains(&format!("object.spec.{list}.all(c, ")));
    }
    // ephemeral containers cannot name resources
    let limits = expr("nodeimg-require-limits");
    assert!(limits.contains("object.spec.initContainers.all(c, "));
    assert!(!limits.contains("ephemeralContainers"));
    // balanced parentheses: a typo would only show in the API server
    for p in policies(&Stack::default()) {
        let e = p["spec"]["validations"][0]["expression"].as_str().unwrap();
        let depth = e.chars().try_fold(0i32, |d, c| {
            let d = d + i32::from(c == '(') - i32::from(c == ')');
            (d >= 0).then_some(d)
        });
        assert_eq!(depth, Some(0), "{e}");
    }
}

#[test]
fn admission_rules_turned_off_are_not_rendered() {
    let mut s = Stack::default();
    s.admission.allowed_registries = vec!["registry.example/".into(), "nodeimg.local/".into()];
    s.admission.read_only_root = false;
    s.admission.no_host_namespaces = false;
    let names: Vec<String> = policies(&s)
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert!(!names.iter().any(|n| n == "nodeimg-read-only-root"));
    assert!(!names.iter().any(|n| n == "nodeimg-no-host-namespaces"));
    let registries = &policies(&s)[0];
    assert!(registries["spec"]["validations"][0]["expression"]
        .as_str()
        .unwrap()
        .contains(r#"["registry.example/","nodeimg.local/"]"#));
    s.admission.allowed_registries.clear();
    assert!(policies(&s)
        .iter()
        .all(|p| p["metadata"]["name"] != "nodeimg-allowed-registries"));
}

#[test]
fn falco_rules_are_well_formed_and_self_contained() {
    let rules = falco::rules(&Stack::default());
    let items = rules.as_array().unwrap();
    let mut defined = std::collections::BTreeSet::new();
    let mut names = std::collections::BTreeSet::new();
    for item in items {
        let o = item.as_object().unwrap();
        if let Some(name) = o.get("list").or_else(|| o.get("macro")) {
            let name = name.as_str().unwrap();
            assert!(name.starts_with("nodeimg_"), "{name}");
            assert!(defined.insert(name.to_string()), "{name} twice");
        }
        let condition = o.get("condition").and_then(Value::as_str).unwrap_or("");
        // every nodeimg_ name a condition uses is defined above it
        for word in condition.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
            if word.starts_with("nodeimg_") {
                assert!(defined.contains(word), "{word} used before defined: {item}");
            }
        }
        let depth = condition.chars().try_fold(0i32, |d, c| {
            let d = d + i32::from(c == '(') - i32::from(c == ')');
            (d >= 0).then_some(d)
        });
        assert_eq!(depth, Some(0), "{condition}");
        assert_eq!(condition.matches('"').count() % 2, 0, "{condition}");
        if let Some(rule) = o.get("rule") {
            assert!(names.insert(rule.as_str().unwrap()), "{rule} twice");
            for key in ["desc", "condition", "output", "priority", "tags"] {
                assert!(o.contains_key(key), "{rule} has no {key}");
            }
            assert!(falco::PRIORITIES.contains(&o["priority"].as_str().unwrap()));
            assert!(o["output"].as_str().unwrap().contains("%container.id"));
            assert!(o["desc"].as_str().unwrap().ends_with('.'), "{rule}");
        }
    }
    assert_eq!(names.len(), 6);
}

#[test]
fn falco_rules_follow_the_allowed_registries_and_read_back_from_the_config_map() {
    let mut s = Stack::default();
    s.admission.allowed_registries = vec!["registry.example/team/".into()];
    let cm = all(&s)
        .into_iter()
        .find(|o| o["metadata"]["name"] == falco::CONFIG_MAP)
        .unwrap();
    assert_eq!(cm["metadata"]["namespace"], "kube-system");
    let text = cm["data"][falco::RULES_KEY].as_str().unwrap();
    let back: Value = serde_norway::from_str(text).unwrap();
    assert_eq!(back, falco::rules(&s));
    assert!(text.contains(r#"container.image.repository startswith \"registry.example/team/\""#));
    s.admission.allowed_registries.clear();
    let rules = falco::rules(&s);
    assert!(!rules
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["rule"] == "nodeimg image outside the allowed registries"));
}
