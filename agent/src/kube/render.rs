//! Everything the agent writes for Kubernetes on a node that is not a key:
//! each component's flags, its config file, its kubeconfig, the API
//! server's policies (admission, audit, encryption at rest). Pure: the
//! same node facts give the same bytes (tested), so a reboot or a second
//! control-plane node renders what the first did.
//!
//! The values are the CIS Kubernetes Benchmark's (v1.12, kube-bench's
//! `cis-1.12`, for Kubernetes 1.34) wherever a check applies to a component;
//! `docs/kubernetes.md` lists the exceptions and why.

use std::net::IpAddr;

use contract::kube::{self as spec, Credentials, Kubeconfig, Material};
use serde_json::json;

/// The daemons, as `layers/kubernetes-*/layer.toml` names their services.
pub const APISERVER: &str = "kube-apiserver";
pub const CONTROLLER_MANAGER: &str = "kube-controller-manager";
pub const SCHEDULER: &str = "kube-scheduler";
pub const KUBELET: &str = "kubelet";
pub const PROXY: &str = "kube-proxy";

/// The TLS cipher suites CIS 1.2.30 and 4.2.12 allow (ECDHE with AEAD; the
/// TLS 1.3 suites Go always offers are named so kube-bench sees them).
pub const CIPHERS: &str = "TLS_AES_128_GCM_SHA256,TLS_AES_256_GCM_SHA384,\
TLS_CHACHA20_POLY1305_SHA256,TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,\
TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305,\
TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,\
TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305";

/// What a node's Kubernetes files are rendered from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    pub cluster: String,
    pub hostname: String,
    /// The address the node is known by (its InternalIP).
    pub address: IpAddr,
    pub control_plane: bool,
    /// The cluster names a registry: images may be pulled, so
    /// `AlwaysPullImages` can be on (with preloaded images only, it would
    /// stop every pod).
    pub registry: bool,
    /// The cluster's OpenID Connect issuer, on a control-plane node.
    pub oidc: Option<contract::config::Oidc>,
    /// The controller-manager's and scheduler's leases.
    pub leader_election: contract::config::LeaderElection,
    /// Audit log rotation and the longest service-account token.
    pub api_server: contract::config::ApiServer,
}

/// Who owns a rendered file (a user the image's `/etc/passwd` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Root,
    /// The service's own user (`kube-apiserver`, …).
    Service(&'static str),
}

/// One file to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub path: String,
    pub mode: u32,
    pub owner: Owner,
    pub text: String,
}

/// Who owns a component's files: its own user; kube-proxy and kubelet run
/// as root.
pub fn owner_of(component: &'static str) -> Owner {
    if component == PROXY || component == KUBELET {
        Owner::Root
    } else {
        Owner::Service(component)
    }
}

/// Where a component's files live.
pub fn dir_of(component: &str) -> String {
    format!("{}/{component}", spec::PKI_DIR)
}

pub fn ca_cert() -> String {
    format!("{}/ca.crt", spec::PKI_DIR)
}

fn path(component: &str, file: &str) -> String {
    format!("{}/{file}", dir_of(component))
}

fn kubeconfig_path(component: &str) -> String {
    format!("{}/{component}.kubeconfig", spec::DIR)
}

fn json_text(v: &serde_json::Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// A component's kubeconfig: the client certificate in its own directory,
/// read from the file so a renewal needs no rewrite.
fn component_kubeconfig(facts: &NodeFacts, component: &'static str, server: &str) -> File {
    let cert = path(component, "client.crt");
    let key = path(component, "client.key");
    let ca = ca_cert();
    let text = Kubeconfig {
        cluster: &facts.cluster,
        server,
        ca: Material::File(&ca),
        user: component,
        credentials: Credentials::Certificate {
            cert: Material::File(&cert),
            key: Material::File(&key),
        },
        tls_server_name: None,
    }
    .to_json();
    File {
        path: kubeconfig_path(component),
        mode: 0o600,
        owner: owner_of(component),
        text,
    }
}

fn local_server() -> String {
    format!("https://127.0.0.1:{}", spec::API_PORT)
}

/// The node's own balancer in front of every API server (kube/balancer.rs).
pub fn balancer_server() -> String {
    format!("https://127.0.0.1:{}", spec::BALANCER_PORT)
}

/// The OIDC issuer's CA, in kube-apiserver's directory.
const OIDC_CA: &str = "oidc-ca.crt";

/// kube-apiserver's flags.
pub fn apiserver_args(facts: &NodeFacts) -> Vec<String> {
    let p = |f: &str| path(APISERVER, f);
    let mut admission = vec![
        "NodeRestriction",
        "EventRateLimit",
        "DenyServiceExternalIPs",
    ];
    if facts.registry {
        admission.push("AlwaysPullImages");
    }
    let mut args = vec![
        format!("--advertise-address={}", facts.address),
        format!("--secure-port={}", spec::API_PORT),
        "--anonymous-auth=false".into(),
        "--authorization-mode=Node,RBAC".into(),
        format!("--enable-admission-plugins={}", admission.join(",")),
        format!(
            "--admission-control-config-file={}/admission.json",
            spec::DIR
        ),
        "--enable-bootstrap-token-auth=true".into(),
        format!("--client-ca-file={}", ca_cert()),
        format!("--tls-cert-file={}", p("server.crt")),
        format!("--tls-private-key-file={}", p("server.key")),
        format!("--tls-cipher-suites={CIPHERS}"),
        "--tls-min-version=VersionTLS12".into(),
        "--etcd-servers=https://127.0.0.1:2379".into(),
        format!("--etcd-cafile={}/etcd-ca.crt", spec::PKI_DIR),
        format!("--etcd-certfile={}", p("etcd-client.crt")),
        format!("--etcd-keyfile={}", p("etcd-client.key")),
        format!("--kubelet-client-certificate={}", p("kubelet-client.crt")),
        format!("--kubelet-client-key={}", p("kubelet-client.key")),
        format!("--kubelet-certificate-authority={}", ca_cert()),
        "--kubelet-preferred-address-types=InternalIP,Hostname".into(),
        format!(
            "--service-account-issuer=https://kubernetes.default.svc.{}",
            spec::CLUSTER_DOMAIN
        ),
        format!("--service-account-key-file={}", p("sa.pub")),
        format!("--service-account-signing-key-file={}", p("sa.key")),
        "--service-account-lookup=true".into(),
        "--service-account-extend-token-expiration=false".into(),
        format!("--service-cluster-ip-range={}", spec::SERVICE_CIDR),
        "--profiling=false".into(),
        format!("--audit-log-path={}", spec::AUDIT_LOG),
        format!("--audit-log-maxage={}", facts.api_server.audit_max_age_days),
        format!(
            "--audit-log-maxbackup={}",
            facts.api_server.audit_max_backups
        ),
        format!("--audit-log-maxsize={}", facts.api_server.audit_max_size_mb),
        format!(
            "--service-account-max-token-expiration={}s",
            facts.api_server.service_account_max_token_s
        ),
        format!("--audit-policy-file={}/audit-policy.json", spec::DIR),
        format!("--encryption-provider-config={}/encryption.json", spec::DIR),
        // a key rotation applied through the node API takes effect without
        // a restart (the file is read again within a minute)
        "--encryption-provider-config-automatic-reload=true".into(),
        format!(
            "--requestheader-client-ca-file={}/front-proxy-ca.crt",
            spec::PKI_DIR
        ),
        "--requestheader-allowed-names=front-proxy-client".into(),
        "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
        "--requestheader-group-headers=X-Remote-Group".into(),
        "--requestheader-username-headers=X-Remote-User".into(),
        format!("--proxy-client-cert-file={}", p("front-proxy-client.crt")),
        format!("--proxy-client-key-file={}", p("front-proxy-client.key")),
    ];
    if let Some(o) = facts.oidc.as_ref().filter(|o| o.is_set()) {
        let flags = [
            ("issuer-url", &o.issuer_url),
            ("client-id", &o.client_id),
            ("username-claim", &o.username_claim),
            ("username-prefix", &o.username_prefix),
            ("groups-claim", &o.groups_claim),
            ("groups-prefix", &o.groups_prefix),
        ];
        for (name, value) in flags {
            if let Some(v) = value {
                args.push(format!("--oidc-{name}={v}"));
            }
        }
        if o.ca.is_some() {
            args.push(format!("--oidc-ca-file={}", p(OIDC_CA)));
        }
    }
    args
}

/// kube-controller-manager's flags.
pub fn controller_manager_args(facts: &NodeFacts) -> Vec<String> {
    let p = |f: &str| path(CONTROLLER_MANAGER, f);
    let mut args = controller_args(CONTROLLER_MANAGER, facts);
    args.extend([
        "--use-service-account-credentials=true".into(),
        format!("--service-account-private-key-file={}", p("sa.key")),
        format!("--root-ca-file={}", ca_cert()),
        format!("--client-ca-file={}", ca_cert()),
        format!("--cluster-signing-cert-file={}", ca_cert()),
        format!("--cluster-signing-key-file={}", p("ca.key")),
        "--controllers=*,bootstrapsigner,tokencleaner".into(),
        "--allocate-node-cidrs=true".into(),
        format!("--cluster-cidr={}", spec::POD_CIDR),
        format!("--node-cidr-mask-size={}", spec::NODE_CIDR_MASK),
        format!("--service-cluster-ip-range={}", spec::SERVICE_CIDR),
        "--terminated-pod-gc-threshold=10".into(),
        "--feature-gates=RotateKubeletServerCertificate=true".into(),
    ]);
    args
}

/// kube-scheduler's flags.
pub fn scheduler_args(facts: &NodeFacts) -> Vec<String> {
    controller_args(SCHEDULER, facts)
}

/// What kube-controller-manager and kube-scheduler share: their
/// kubeconfig for everything, loopback only, no profiling, leader election.
fn controller_args(component: &str, facts: &NodeFacts) -> Vec<String> {
    let kc = kubeconfig_path(component);
    let le = facts.leader_election;
    vec![
        format!("--kubeconfig={kc}"),
        format!("--authentication-kubeconfig={kc}"),
        format!("--authorization-kubeconfig={kc}"),
        "--bind-address=127.0.0.1".into(),
        "--profiling=false".into(),
        "--leader-elect=true".into(),
        format!("--leader-elect-lease-duration={}s", le.lease_duration_s),
        format!("--leader-elect-renew-deadline={}s", le.renew_deadline_s),
        format!("--leader-elect-retry-period={}s", le.retry_period_s),
        format!("--tls-cipher-suites={CIPHERS}"),
    ]
}

pub fn kubelet_config_path() -> String {
    format!("{}/kubelet.json", spec::DIR)
}

pub fn kubelet_kubeconfig_path() -> String {
    format!("{}/kubelet.kubeconfig", spec::DIR)
}

pub fn bootstrap_kubeconfig_path() -> String {
    format!("{}/bootstrap-kubelet.kubeconfig", spec::DIR)
}

/// kubelet's flags: what its config file cannot say.
pub fn kubelet_args(facts: &NodeFacts) -> Vec<String> {
    let mut args = vec![
        format!("--config={}", kubelet_config_path()),
        format!("--kubeconfig={}", kubelet_kubeconfig_path()),
        format!("--bootstrap-kubeconfig={}", bootstrap_kubeconfig_path()),
        format!("--cert-dir={}/pki", spec::KUBELET_DIR),
        format!("--hostname-override={}", facts.hostname),
        format!("--node-ip={}", facts.address),
    ];
    if facts.control_plane {
        args.push("--register-with-taints=node-role.kubernetes.io/control-plane:NoSchedule".into());
    }
    args
}

/// kube-proxy's flags.
pub fn proxy_args() -> Vec<String> {
    vec![format!("--config={}/kube-proxy.json", spec::DIR)]
}

/// The KubeletConfiguration (CIS section 4.2).
fn kubelet_config() -> serde_json::Value {
    json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "authentication": {
            "anonymous": { "enabled": false },
            "webhook": { "enabled": true },
            "x509": { "clientCAFile": ca_cert() },
        },
        "authorization": { "mode": "Webhook" },
        "readOnlyPort": 0,
        "protectKernelDefaults": true,
        "makeIPTablesUtilChains": true,
        "rotateCertificates": true,
        // the serving certificate comes from the cluster CA through a CSR
        // the agent's approver signs off (SANs checked against the node)
        "serverTLSBootstrap": true,
        "seccompDefault": true,
        "podPidsLimit": 4096,
        "eventRecordQPS": 5,
        "tlsCipherSuites": CIPHERS.split(',').collect::<Vec<_>>(),
        "tlsMinVersion": "VersionTLS12",
        "cgroupDriver": "cgroupfs",
        "containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock",
        "clusterDomain": spec::CLUSTER_DOMAIN,
        "clusterDNS": [spec::DNS_SERVICE_IP],
        "streamingConnectionIdleTimeout": "4h",
        "failSwapOn": true,
        "staticPodPath": "",
        "resolvConf": "/etc/resolv.conf",
    })
}

/// The KubeProxyConfiguration: nftables (no iptables-legacy on the image),
/// metrics and health on loopback.
fn proxy_config(facts: &NodeFacts) -> serde_json::Value {
    json!({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": { "kubeconfig": kubeconfig_path(PROXY) },
        "mode": "nftables",
        "clusterCIDR": spec::POD_CIDR,
        "hostnameOverride": facts.hostname,
        "bindAddress": facts.address.to_string(),
        "metricsBindAddress": "127.0.0.1:10249",
        "healthzBindAddress": "127.0.0.1:10256",
    })
}

/// PodSecurity (enforce baseline, audit and warn restricted, kube-system
/// exempt) and EventRateLimit, in one AdmissionConfiguration.
fn admission_config(api: &contract::config::ApiServer) -> serde_json::Value {
    json!({
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "AdmissionConfiguration",
        "plugins": [
            {
                "name": "PodSecurity",
                "configuration": {
                    "apiVersion": "pod-security.admission.config.k8s.io/v1",
                    "kind": "PodSecurityConfiguration",
                    "defaults": {
                        "enforce": "baseline", "enforce-version": "latest",
                        "audit": "restricted", "audit-version": "latest",
                        "warn": "restricted", "warn-version": "latest",
                    },
                    "exemptions": {
                        "usernames": [], "runtimeClasses": [],
                        "namespaces": ["kube-system"],
                    },
                },
            },
            {
                "name": "EventRateLimit",
                "configuration": {
                    "apiVersion": "eventratelimit.admission.k8s.io/v1alpha1",
                    "kind": "Configuration",
                    "limits": [
                        { "type": "Server", "qps": 50, "burst": 100 },
                        { "type": "Namespace", "qps": api.events_per_namespace_qps,
                          "burst": api.events_per_namespace_burst, "cacheSize": 2000 },
                    ],
                },
            },
        ],
    })
}

/// Who did what, without request bodies where secrets travel.
fn audit_policy() -> serde_json::Value {
    json!({
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        "omitStages": ["RequestReceived"],
        "rules": [
            // health probes and the components' own lease renewals say nothing
            { "level": "None", "nonResourceURLs": ["/healthz*", "/livez*", "/readyz*", "/version"] },
            { "level": "None", "verbs": ["get", "update"],
              "resources": [{ "group": "coordination.k8s.io", "resources": ["leases"] }] },
            { "level": "Metadata",
              "resources": [
                  { "group": "", "resources": ["secrets", "configmaps", "serviceaccounts/token"] },
                  { "group": "authentication.k8s.io", "resources": ["tokenreviews"] },
              ] },
            { "level": "Request", "verbs": ["create", "update", "patch", "delete", "deletecollection"] },
            { "level": "Metadata" },
        ],
    })
}

/// Secrets encrypted with secretbox first (CIS 1.2.27/28), with the first
/// of `keys` (`(name, base64)`); the others only decrypt (a rotation);
/// identity after it so Secrets written before the key existed still read.
fn encryption_config(keys: &[(&str, &str)]) -> serde_json::Value {
    let keys: Vec<serde_json::Value> = keys
        .iter()
        .map(|(name, secret)| json!({ "name": name, "secret": secret }))
        .collect();
    json!({
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "EncryptionConfiguration",
        "resources": [{
            "resources": ["secrets"],
            "providers": [
                { "secretbox": { "keys": keys } },
                { "identity": {} },
            ],
        }],
    })
}

/// The API server's encryption config, for the control plane's keys (the
/// encrypting one first); `None` without a key. kube-apiserver reloads
/// it when it changes (`--encryption-provider-config-automatic-reload`).
pub fn encryption_file(keys: &[(&str, &str)]) -> Option<File> {
    (!keys.is_empty()).then(|| File {
        path: format!("{}/encryption.json", spec::DIR),
        mode: 0o600,
        owner: Owner::Service(APISERVER),
        text: json_text(&encryption_config(keys)),
    })
}

/// Every non-key file of the node. `encryption_keys`: the control plane's
/// (`(name, base64)`, the encrypting one first), `bootstrap_token`: the
/// kubelet's first credential.
pub fn files(
    facts: &NodeFacts,
    encryption_keys: &[(&str, &str)],
    bootstrap_token: &str,
) -> Vec<File> {
    let mut out = Vec::new();
    // kubelet and kube-proxy keep their node's API through the loss of
    // any one control-plane node, the node's own included
    let kubelet_server = balancer_server();
    let ca = ca_cert();
    let bootstrap = Kubeconfig {
        cluster: &facts.cluster,
        server: &kubelet_server,
        ca: Material::File(&ca),
        user: "kubelet-bootstrap",
        credentials: Credentials::Token(bootstrap_token),
        tls_server_name: None,
    };
    out.push(File {
        path: bootstrap_kubeconfig_path(),
        mode: 0o600,
        owner: Owner::Root,
        text: bootstrap.to_json(),
    });
    out.push(File {
        path: kubelet_config_path(),
        mode: 0o600,
        owner: Owner::Root,
        text: json_text(&kubelet_config()),
    });
    // kube-proxy on every node; a worker's certificate comes through a
    // CSR its agent makes (kube/proxy_cert.rs)
    out.push(component_kubeconfig(facts, PROXY, &kubelet_server));
    out.push(File {
        path: format!("{}/kube-proxy.json", spec::DIR),
        mode: 0o600,
        owner: Owner::Root,
        text: json_text(&proxy_config(facts)),
    });
    if facts.control_plane {
        let local = local_server();
        out.push(component_kubeconfig(facts, CONTROLLER_MANAGER, &local));
        out.push(component_kubeconfig(facts, SCHEDULER, &local));
        let api = Owner::Service(APISERVER);
        for (name, doc) in [
            ("admission.json", admission_config(&facts.api_server)),
            ("audit-policy.json", audit_policy()),
        ] {
            out.push(File {
                path: format!("{}/{name}", spec::DIR),
                mode: 0o600,
                owner: api,
                text: json_text(&doc),
            });
        }
        if let Some(ca) = facts.oidc.as_ref().and_then(|o| o.ca.as_ref()) {
            out.push(File {
                path: path(APISERVER, OIDC_CA),
                mode: 0o600,
                owner: api,
                text: ca.clone(),
            });
        }
        out.extend(encryption_file(encryption_keys));
    }
    out
}

/// Each service this node runs, with the flags the agent adds to it.
pub fn services(facts: &NodeFacts) -> Vec<(&'static str, Vec<String>)> {
    let mut out = Vec::new();
    if facts.control_plane {
        out.push((APISERVER, apiserver_args(facts)));
        out.push((CONTROLLER_MANAGER, controller_manager_args(facts)));
        out.push((SCHEDULER, scheduler_args(facts)));
    }
    out.push((PROXY, proxy_args()));
    out.push((KUBELET, kubelet_args(facts)));
    out
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
