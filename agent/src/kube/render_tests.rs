#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use super::*;

fn cp() -> NodeFacts {
    NodeFacts {
        cluster: "lab".into(),
        hostname: "cp-1".into(),
        address: "10.77.0.11".parse().unwrap(),
        control_plane: true,
        registry: false,
        oidc: None,
        leader_election: Default::default(),
        api_server: Default::default(),
    }
}

fn worker() -> NodeFacts {
    NodeFacts {
        hostname: "worker-1".into(),
        address: "10.77.0.21".parse().unwrap(),
        control_plane: false,
        ..cp()
    }
}

/// `--name=value` of `args`, `None` when the flag is absent.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let prefix = format!("--{name}=");
    args.iter().find_map(|a| a.strip_prefix(prefix.as_str()))
}

fn file<'a>(files: &'a [File], name: &str) -> &'a File {
    files
        .iter()
        .find(|f| f.path.ends_with(name))
        .unwrap_or_else(|| panic!("no {name} among {:?}", paths(files)))
}

fn paths(files: &[File]) -> Vec<&str> {
    files.iter().map(|f| f.path.as_str()).collect()
}

fn doc(f: &File) -> serde_json::Value {
    serde_json::from_str(&f.text).unwrap()
}

/// The CIS benchmark's values, one row per check that applies to a flag.
#[test]
fn control_plane_flags_are_the_benchmarks() {
    let api = apiserver_args(&cp());
    let cm = controller_manager_args(&cp());
    let sched = scheduler_args(&cp());
    let rows: &[(&str, &[String], &str, &str)] = &[
        ("1.2.1", &api, "anonymous-auth", "false"),
        (
            "1.2.5",
            &api,
            "kubelet-certificate-authority",
            "/etc/kubernetes/pki/ca.crt",
        ),
        ("1.2.6-8", &api, "authorization-mode", "Node,RBAC"),
        ("1.2.15", &api, "profiling", "false"),
        (
            "1.2.16",
            &api,
            "audit-log-path",
            "/var/log/kubernetes/audit/audit.log",
        ),
        ("1.2.17", &api, "audit-log-maxage", "30"),
        ("1.2.18", &api, "audit-log-maxbackup", "10"),
        ("1.2.19", &api, "audit-log-maxsize", "100"),
        ("1.2.21", &api, "service-account-lookup", "true"),
        (
            "1.2.22",
            &api,
            "service-account-key-file",
            "/etc/kubernetes/pki/kube-apiserver/sa.pub",
        ),
        (
            "1.2.23",
            &api,
            "etcd-certfile",
            "/etc/kubernetes/pki/kube-apiserver/etcd-client.crt",
        ),
        (
            "1.2.24",
            &api,
            "tls-cert-file",
            "/etc/kubernetes/pki/kube-apiserver/server.crt",
        ),
        (
            "1.2.25",
            &api,
            "client-ca-file",
            "/etc/kubernetes/pki/ca.crt",
        ),
        (
            "1.2.26",
            &api,
            "etcd-cafile",
            "/etc/kubernetes/pki/etcd-ca.crt",
        ),
        (
            "1.2.27",
            &api,
            "encryption-provider-config",
            "/etc/kubernetes/encryption.json",
        ),
        (
            "-",
            &api,
            "encryption-provider-config-automatic-reload",
            "true",
        ),
        ("1.2.29", &api, "tls-cipher-suites", CIPHERS),
        (
            "-",
            &api,
            "service-account-extend-token-expiration",
            "false",
        ),
        ("1.3.2", &cm, "profiling", "false"),
        ("1.3.1", &cm, "terminated-pod-gc-threshold", "10"),
        ("1.3.3", &cm, "use-service-account-credentials", "true"),
        (
            "1.3.4",
            &cm,
            "service-account-private-key-file",
            "/etc/kubernetes/pki/kube-controller-manager/sa.key",
        ),
        ("1.3.5", &cm, "root-ca-file", "/etc/kubernetes/pki/ca.crt"),
        (
            "1.3.6",
            &cm,
            "feature-gates",
            "RotateKubeletServerCertificate=true",
        ),
        ("1.3.7", &cm, "bind-address", "127.0.0.1"),
        ("1.4.1", &sched, "profiling", "false"),
        ("1.4.2", &sched, "bind-address", "127.0.0.1"),
        ("-", &cm, "leader-elect", "true"),
        ("-", &sched, "leader-elect", "true"),
    ];
    for (check, args, name, want) in rows {
        assert_eq!(flag(args, name), Some(*want), "CIS {check}: --{name}");
    }
    let admission = flag(&api, "enable-admission-plugins").unwrap();
    for plugin in [
        "NodeRestriction",
        "EventRateLimit",
        "DenyServiceExternalIPs",
    ] {
        assert!(admission.split(',').any(|p| p == plugin), "{plugin}");
    }
    // no registry: images are preloaded, and pulling always would stop every pod
    assert!(!admission.contains("AlwaysPullImages"));
    let with_registry = apiserver_args(&NodeFacts {
        registry: true,
        ..cp()
    });
    assert!(flag(&with_registry, "enable-admission-plugins")
        .unwrap()
        .contains("AlwaysPullImages"));
    // nothing the benchmark forbids
    for args in [&api, &cm, &sched] {
        for bad in [
            "--insecure-port",
            "--token-auth-file",
            "--kubelet-https=false",
        ] {
            assert!(!args.iter().any(|a| a.starts_with(bad)), "{bad}");
        }
    }
}

#[test]
fn kubelet_config_is_the_benchmarks() {
    let files = files(&worker(), &[], "abcdef.0123456789abcdef");
    let k = doc(file(&files, "kubelet.json"));
    let rows: &[(&str, &str, serde_json::Value)] = &[
        ("4.2.1", "/authentication/anonymous/enabled", json!(false)),
        ("4.2.2", "/authorization/mode", json!("Webhook")),
        (
            "4.2.3",
            "/authentication/x509/clientCAFile",
            json!("/etc/kubernetes/pki/ca.crt"),
        ),
        ("4.2.4", "/readOnlyPort", json!(0)),
        ("4.2.6", "/protectKernelDefaults", json!(true)),
        ("4.2.7", "/makeIPTablesUtilChains", json!(true)),
        ("4.2.9", "/eventRecordQPS", json!(5)),
        ("4.2.11", "/rotateCertificates", json!(true)),
        ("4.2.12", "/serverTLSBootstrap", json!(true)),
        ("4.2.14", "/podPidsLimit", json!(4096)),
        ("4.2.15", "/seccompDefault", json!(true)),
        ("-", "/authentication/webhook/enabled", json!(true)),
        ("-", "/cgroupDriver", json!("cgroupfs")),
        (
            "-",
            "/containerRuntimeEndpoint",
            json!("unix:///run/containerd/containerd.sock"),
        ),
    ];
    for (check, pointer, want) in rows {
        assert_eq!(k.pointer(pointer), Some(want), "CIS {check}: {pointer}");
    }
    let ciphers: Vec<&str> = k["tlsCipherSuites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(ciphers.join(","), CIPHERS, "CIS 4.2.13");
}

#[test]
fn files_are_private_and_owned_by_who_reads_them() {
    let files = files(&cp(), &[("key1", "a2V5")], "abcdef.0123456789abcdef");
    for f in &files {
        // CIS 1.1.x / 4.1.x: configs and kubeconfigs 600 or tighter
        assert_eq!(f.mode, 0o600, "{}", f.path);
        assert!(f.path.starts_with("/etc/kubernetes/"), "{}", f.path);
    }
    let owner = |name: &str| file(&files, name).owner;
    assert_eq!(owner("encryption.json"), Owner::Service(APISERVER));
    assert_eq!(
        owner("kube-scheduler.kubeconfig"),
        Owner::Service(SCHEDULER)
    );
    assert_eq!(
        owner("kube-controller-manager.kubeconfig"),
        Owner::Service(CONTROLLER_MANAGER)
    );
    assert_eq!(owner("kubelet.json"), Owner::Root);
    let enc = doc(file(&files, "encryption.json"));
    assert!(
        enc["resources"][0]["providers"][0]
            .get("secretbox")
            .is_some(),
        "secretbox first: {enc}"
    );
    // a worker gets no control-plane file, and no key of it
    let w = super::files(&worker(), &[], "abcdef.0123456789abcdef");
    assert_eq!(
        paths(&w),
        [
            "/etc/kubernetes/bootstrap-kubelet.kubeconfig",
            "/etc/kubernetes/kubelet.json",
            "/etc/kubernetes/kube-proxy.kubeconfig",
            "/etc/kubernetes/kube-proxy.json",
        ]
    );
    // a worker's kubelet and kube-proxy dial its local balancer
    let proxy = doc(file(&w, "kube-proxy.kubeconfig"));
    assert_eq!(
        proxy["clusters"][0]["cluster"]["server"],
        "https://127.0.0.1:7445"
    );
    let boot = doc(file(&w, "bootstrap-kubelet.kubeconfig"));
    assert_eq!(
        boot["clusters"][0]["cluster"]["server"],
        "https://127.0.0.1:7445"
    );
    assert_eq!(boot["users"][0]["user"]["token"], "abcdef.0123456789abcdef");
}

#[test]
fn pod_security_enforces_baseline_and_audits_restricted() {
    let files = files(&cp(), &[], "abcdef.0123456789abcdef");
    let a = doc(file(&files, "admission.json"));
    let ps = &a["plugins"][0]["configuration"];
    assert_eq!(a["plugins"][0]["name"], "PodSecurity");
    assert_eq!(ps["defaults"]["enforce"], "baseline");
    assert_eq!(ps["defaults"]["audit"], "restricted");
    assert_eq!(ps["defaults"]["warn"], "restricted");
    assert_eq!(ps["exemptions"]["namespaces"], json!(["kube-system"]));
    assert_eq!(a["plugins"][1]["name"], "EventRateLimit");
}

#[test]
fn rendering_is_byte_identical_for_the_same_node() {
    let a = (
        files(&cp(), &[("key1", "a2V5")], "abcdef.0123456789abcdef"),
        services(&cp()),
    );
    let b = (
        files(&cp(), &[("key1", "a2V5")], "abcdef.0123456789abcdef"),
        services(&cp()),
    );
    assert_eq!(a, b);
    // and another node renders its own name and address
    let other = NodeFacts {
        hostname: "cp-2".into(),
        address: "10.77.0.12".parse().unwrap(),
        ..cp()
    };
    assert_ne!(services(&other), a.1);
}

#[test]
fn control_plane_kubelet_registers_tainted_and_dials_the_local_api() {
    let s = services(&cp());
    let names: Vec<&str> = s.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [APISERVER, CONTROLLER_MANAGER, SCHEDULER, PROXY, KUBELET]
    );
    let kubelet = &s[4].1;
    assert_eq!(
        flag(kubelet, "register-with-taints"),
        Some("node-role.kubernetes.io/control-plane:NoSchedule")
    );
    assert_eq!(flag(kubelet, "node-ip"), Some("10.77.0.11"));
    let w = services(&worker());
    let names: Vec<&str> = w.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, [PROXY, KUBELET]);
    assert_eq!(flag(&w[1].1, "register-with-taints"), None);
}

#[test]
fn oidc_flags_only_when_the_cluster_names_an_issuer() {
    let args = apiserver_args(&cp());
    assert!(!args.iter().any(|a| a.starts_with("--oidc-")), "{args:?}");
    let oidc = contract::config::Oidc {
        issuer_url: Some("https://login.example.test".into()),
        client_id: Some("kubernetes".into()),
        username_claim: Some("email".into()),
        username_prefix: Some("oidc:".into()),
        groups_claim: Some("groups".into()),
        groups_prefix: Some("oidc:".into()),
        ca: Some("-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n".into()),
    };
    let facts = NodeFacts {
        oidc: Some(oidc.clone()),
        ..cp()
    };
    let args = apiserver_args(&facts);
    for (name, want) in [
        ("oidc-issuer-url", "https://login.example.test"),
        ("oidc-client-id", "kubernetes"),
        ("oidc-username-claim", "email"),
        ("oidc-username-prefix", "oidc:"),
        ("oidc-groups-claim", "groups"),
        ("oidc-groups-prefix", "oidc:"),
        (
            "oidc-ca-file",
            "/etc/kubernetes/pki/kube-apiserver/oidc-ca.crt",
        ),
    ] {
        assert_eq!(flag(&args, name), Some(want), "{name}: {args:?}");
    }
    let files = files(&facts, &[], "abcdef.0123456789abcdef");
    let ca = file(&files, "oidc-ca.crt");
    assert_eq!(ca.text, oidc.ca.unwrap());
    assert_eq!((ca.mode, ca.owner), (0o600, Owner::Service(APISERVER)));
}

#[test]
fn leases_come_from_the_config_for_both_controllers() {
    let upstream = controller_manager_args(&cp());
    assert_eq!(flag(&upstream, "leader-elect-lease-duration"), Some("15s"));
    assert_eq!(flag(&upstream, "leader-elect-renew-deadline"), Some("10s"));
    assert_eq!(flag(&upstream, "leader-elect-retry-period"), Some("2s"));
    let slow = NodeFacts {
        leader_election: contract::config::LeaderElection {
            lease_duration_s: 60,
            renew_deadline_s: 45,
            retry_period_s: 8,
        },
        ..cp()
    };
    for args in [controller_manager_args(&slow), scheduler_args(&slow)] {
        assert_eq!(flag(&args, "leader-elect"), Some("true"));
        assert_eq!(flag(&args, "leader-elect-lease-duration"), Some("60s"));
        assert_eq!(flag(&args, "leader-elect-renew-deadline"), Some("45s"));
        assert_eq!(flag(&args, "leader-elect-retry-period"), Some("8s"));
    }
}

#[test]
fn audit_rotation_and_token_lifetime_come_from_the_config() {
    let args = apiserver_args(&cp());
    assert_eq!(flag(&args, "audit-log-maxsize"), Some("100"));
    assert_eq!(
        flag(&args, "service-account-max-token-expiration"),
        Some("3600s")
    );
    let lab = NodeFacts {
        api_server: contract::config::ApiServer {
            audit_max_size_mb: 1,
            audit_max_backups: 3,
            audit_max_age_days: 2,
            service_account_max_token_s: 7200,
            events_per_namespace_qps: 1,
            events_per_namespace_burst: 10,
        },
        ..cp()
    };
    let args = apiserver_args(&lab);
    assert_eq!(flag(&args, "audit-log-maxsize"), Some("1"));
    assert_eq!(flag(&args, "audit-log-maxbackup"), Some("3"));
    assert_eq!(flag(&args, "audit-log-maxage"), Some("2"));
    assert_eq!(
        flag(&args, "service-account-max-token-expiration"),
        Some("7200s")
    );
}

/// During a rotation the encrypting key is first and the others follow,
/// by name, so data stored under any of them still reads.
#[test]
fn a_rotation_lists_the_encrypting_key_first_then_the_read_keys() {
    let files = files(
        &cp(),
        &[("key2", "bmV3"), ("key1", "b2xk")],
        "abcdef.0123456789abcdef",
    );
    let enc = doc(file(&files, "encryption.json"));
    let keys = &enc["resources"][0]["providers"][0]["secretbox"]["keys"];
    assert_eq!(keys[0]["name"], "key2", "{enc}");
    assert_eq!(keys[0]["secret"], "bmV3", "{enc}");
    assert_eq!(keys[1]["name"], "key1", "{enc}");
    assert_eq!(keys.as_array().map(Vec::len), Some(2));
    assert!(enc["resources"][0]["providers"][1]
        .get("identity")
        .is_some());
    assert!(super::encryption_file(&[]).is_none());
}
