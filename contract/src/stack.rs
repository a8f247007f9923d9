//! The cluster's security stack as Kubernetes objects, from `[stack]`:
//! one function the builder renders `DIR/manifests/` with and the agent
//! applies from, so what a user reads is what the cluster runs.
//!
//! Every object carries [`MANAGED_BY_LABEL`] = [`MANAGER`]: the agent
//! prunes by it (what it applied before and renders no more), and nothing
//! without it is ever touched. Namespaces are never pruned: deleting one
//! would delete what users put in it.
//!
//! Rendering is deterministic: fixed file order, objects in a fixed order
//! within each, and JSON maps (sorted keys).

use serde_json::{json, Value};

use crate::config::Stack;

mod admission;
pub mod falco;

/// The label every stack object carries, and its value.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGER: &str = "nodeimg-stack";

/// The read-only auditor ClusterRole (bound to `[stack].auditor_group`).
pub const AUDITOR_ROLE: &str = "nodeimg:auditor";
/// PriorityClasses: add-ons above workloads, workloads above best effort.
pub const PLATFORM_PRIORITY: &str = "nodeimg-platform";
pub const WORKLOAD_PRIORITY: &str = "nodeimg-workload";

/// The NetworkPolicy engine's image, preloaded by the kubernetes-node
/// layer (recipes/kube-network-policies).
pub const NETWORK_POLICY_IMAGE: &str = "nodeimg.local/kube-network-policies:v0.8.0";
/// Its manifest digest, which its DaemonSet names: the layer pins the same
/// one (`digest =`) and the build checks it, so a pod runs exactly the
/// program the lock pins, whatever else carries the tag.
pub const NETWORK_POLICY_DIGEST: &str =
    "sha256:c33b7a208fa4a230ef64a8555b32733df52ac75c7944710ad82d0e6459ca1b0c";
/// CoreDNS's image, preloaded by the kubernetes-node layer (recipes/coredns).
pub const DNS_IMAGE: &str = "nodeimg.local/coredns:v1.15.0";
/// Its manifest digest, which its Deployment names (see
/// [`NETWORK_POLICY_DIGEST`]).
pub const DNS_DIGEST: &str =
    "sha256:0e8d5823e234691ccf824334989b198a075861670a3bc1ec542df6b0d03cd698";

/// `name@digest`, how a pod names a preloaded image: by digest, the tag
/// kept for readers (the runtime looks the image up by the digest alone).
pub fn pinned(name: &str, digest: &str) -> String {
    format!("{name}@{digest}")
}

/// The engine's objects' name (ServiceAccount, ClusterRole, DaemonSet).
pub const NETWORK_POLICY_ENGINE: &str = "kube-network-policies";

/// One file of `DIR/manifests/`: its name, what it is for (its header),
/// and its objects.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub file: &'static str,
    pub about: &'static str,
    pub objects: Vec<Value>,
}

/// A kind the stack renders: where its objects live in the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    pub api_version: &'static str,
    pub kind: &'static str,
    /// The resource's plural (its URL segment).
    pub plural: &'static str,
    pub namespaced: bool,
    /// Whether the agent deletes one it applied before and renders no more.
    pub pruned: bool,
}

/// Every kind [`render`] makes.
pub const KINDS: [Kind; 14] = [
    Kind {
        api_version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        namespaced: false,
        pruned: false,
    },
    Kind {
        api_version: "networking.k8s.io/v1",
        kind: "NetworkPolicy",
        plural: "networkpolicies",
        namespaced: true,
        pruned: true,
    },
    Kind {
        api_version: "v1",
        kind: "ServiceAccount",
        plural: "serviceaccounts",
        namespaced: true,
        pruned: true,
    },
    Kind {
        api_version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        namespaced: true,
        pruned: true,
    },
    Kind {
        api_version: "v1",
        kind: "Service",
        plural: "services",
        namespaced: true,
        pruned: true,
    },
    Kind {
        api_version: "apps/v1",
        kind: "Deployment",
        plural: "deployments",
        namespaced: true,
        pruned: true,
    },
    Kind {
        api_version: "apps/v1",
        kind: "DaemonSet",
        plural: "daemonsets",
        namespaced: true,
        pruned: true,
    },
    Kind {
        api_version: "rbac.authorization.k8s.io/v1",
        kind: "ClusterRole",
        plural: "clusterroles",
        namespaced: false,
        pruned: true,
    },
    Kind {
        api_version: "rbac.authorization.k8s.io/v1",
        kind: "ClusterRoleBinding",
        plural: "clusterrolebindings",
        namespaced: false,
        pruned: true,
    },
    Kind {
        api_version: "scheduling.k8s.io/v1",
        kind: "PriorityClass",
        plural: "priorityclasses",
        namespaced: false,
        pruned: true,
    },
    Kind {
        api_version: "v1",
        kind: "LimitRange",
        plural: "limitranges",
        namespaced: true,
        pruned: true,
    },
    Kind {
        api_version: "v1",
        kind: "ResourceQuota",
        plural: "resourcequotas",
        namespaced: true,
        pruned: true,
    },
    Kind {
        api_version: "admissionregistration.k8s.io/v1",
        kind: "ValidatingAdmissionPolicy",
        plural: "validatingadmissionpolicies",
        namespaced: false,
        pruned: true,
    },
    Kind {
        api_version: "admissionregistration.k8s.io/v1",
        kind: "ValidatingAdmissionPolicyBinding",
        plural: "validatingadmissionpolicybindings",
        namespaced: false,
        pruned: true,
    },
];

impl Kind {
    /// The URL prefix of the kind's API group and version.
    fn group_path(&self) -> String {
        match self.api_version {
            "v1" => "/api/v1".into(),
            v => format!("/apis/{v}"),
        }
    }

    /// Where every object of the kind is listed, across namespaces.
    pub fn list_url(&self) -> String {
        format!("{}/{}", self.group_path(), self.plural)
    }

    /// The URL of the object named `name` (in `namespace` when namespaced).
    pub fn object_url(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace.filter(|_| self.namespaced) {
            Some(ns) => format!(
                "{}/namespaces/{ns}/{}/{name}",
                self.group_path(),
                self.plural
            ),
            None => format!("{}/{}/{name}", self.group_path(), self.plural),
        }
    }
}

/// The kind of `object`, when it is one of [`KINDS`].
pub fn kind_of(object: &Value) -> Option<&'static Kind> {
    let api_version = object.get("apiVersion")?.as_str()?;
    let kind = object.get("kind")?.as_str()?;
    KINDS
        .iter()
        .find(|k| k.api_version == api_version && k.kind == kind)
}

/// `(kind, namespace, name)`: what identifies an object.
pub fn identity(object: &Value) -> Option<(&'static str, Option<String>, String)> {
    let kind = kind_of(object)?;
    let meta = object.get("metadata")?;
    let name = meta.get("name")?.as_str()?.to_string();
    let ns = meta
        .get("namespace")
        .and_then(Value::as_str)
        .map(str::to_string);
    Some((kind.kind, ns, name))
}

/// The URL `object` is applied at.
pub fn url_of(object: &Value) -> Option<String> {
    let kind = kind_of(object)?;
    let (_, ns, name) = identity(object)?;
    Some(kind.object_url(ns.as_deref(), &name))
}

fn metadata(name: &str, namespace: Option<&str>) -> Value {
    let mut m = json!({ "name": name, "labels": { MANAGED_BY_LABEL: MANAGER } });
    if let (Some(ns), Some(map)) = (namespace, m.as_object_mut()) {
        map.insert("namespace".into(), json!(ns));
    }
    m
}

/// Every file of the stack, in order; a part turned off leaves its file
/// out (an empty set would say nothing).
pub fn render(stack: &Stack) -> Vec<Manifest> {
    let mut out = vec![Manifest {
        file: "00-namespaces.yaml",
        about: "The workload namespaces ([stack].namespaces), each enforcing the Pod \
                Security Standards level [stack].pod_security and auditing and warning \
                at restricted. kube-system is exempt (the API server's admission \
                configuration).",
        objects: stack
            .namespaces
            .iter()
            .map(|ns| namespace(stack, ns))
            .collect(),
    }];
    if stack.network_policies {
        let mut objects = network_policy_engine();
        objects.extend(
            stack
                .namespaces
                .iter()
                .flat_map(|ns| [default_deny(ns), allow_dns(ns)]),
        );
        out.push(Manifest {
            file: "01-network-policies.yaml",
            about: "The NetworkPolicy engine, kube-network-policies (Kubernetes SIG \
                    Network's, built from its module and preloaded on every node), as \
                    a DaemonSet on the host network with CAP_NET_ADMIN only; then \
                    default deny: no pod of a workload namespace receives or sends \
                    anything, but DNS to kube-system; allow what each workload needs \
                    with policies of its own.",
            objects,
        });
    }
    if !stack.auditor_group.is_empty() {
        out.push(Manifest {
            file: "02-rbac.yaml",
            about: "A read-only auditor role, bound to [stack].auditor_group: it reads \
                    every object but Secrets and changes nothing. No workload is bound \
                    to a cluster-wide role; the node bootstrap and certificate \
                    approval bindings are the agent's, applied when the API first \
                    answers (docs/security-stack.md).",
            objects: vec![auditor_role(), auditor_binding(&stack.auditor_group)],
        });
    }
    if stack.priority_classes {
        out.push(Manifest {
            file: "03-priority-classes.yaml",
            about: "Add-ons preempt workloads; workloads name nodeimg-workload to rank \
                    above pods that name none.",
            objects: vec![
                priority_class(PLATFORM_PRIORITY, 1_000_000, "the cluster's add-ons"),
                priority_class(
                    WORKLOAD_PRIORITY,
                    1000,
                    "workloads that should not be preempted by best-effort pods",
                ),
            ],
        });
    }
    let mut resources = Vec::new();
    for ns in &stack.namespaces {
        if stack.limits.enabled {
            resources.push(limit_range(stack, ns));
        }
        if stack.quota.enabled {
            resources.push(resource_quota(stack, ns));
        }
    }
    if !resources.is_empty() {
        out.push(Manifest {
            file: "04-resource-defaults.yaml",
            about: "Per workload namespace: default requests and limits for containers \
                    that name none, the most one container may ask for \
                    ([stack.limits]), and what the namespace may hold in all \
                    ([stack.quota]).",
            objects: resources,
        });
    }
    if stack.dns.enabled {
        out.push(Manifest {
            file: "05-dns.yaml",
            about: "The cluster's DNS: CoreDNS (built from its module and preloaded on \
                    every node) serving cluster.local at the kube-dns Service address \
                    kubelet gives pods, forwarding other names as [stack.dns].forward \
                    says. Non-root, no capabilities: the pod lets unprivileged \
                    processes bind port 53 instead.",
            objects: dns(stack),
        });
    }
    let policies = if stack.admission.enabled {
        admission::policies(&stack.admission)
    } else {
        Vec::new()
    };
    if !policies.is_empty() {
        out.push(Manifest {
            file: "06-admission-policies.yaml",
            about: "What every pod outside kube-system must be ([stack.admission]): \
                    images from the allowed registries, CPU and memory limits, \
                    non-root, a read-only root file system, ALL capabilities \
                    dropped, nothing privileged, none of the host's namespaces. \
                    ValidatingAdmissionPolicies: the API server enforces them \
                    itself, with no add-on to fail open.",
            objects: policies,
        });
    }
    if stack.falco.enabled {
        out.push(Manifest {
            file: "07-falco-rules.yaml",
            about: "Falco rules for what a nodeimg node never does unless its controls \
                    were got around: a terminal shell or a package manager in a \
                    container, a kernel module load, a secret file read, a privileged \
                    container, an image from outside the allowed registries. Falco \
                    itself is not part of the stack: mount this ConfigMap into its \
                    rules directory (docs/security-stack.md).",
            objects: vec![falco::config_map(stack)],
        });
    }
    out
}

/// Every object of `manifests`, in order.
pub fn objects(manifests: &[Manifest]) -> Vec<&Value> {
    manifests.iter().flat_map(|m| m.objects.iter()).collect()
}

fn namespace(stack: &Stack, ns: &str) -> Value {
    let mut meta = metadata(ns, None);
    if let Some(labels) = meta.get_mut("labels").and_then(Value::as_object_mut) {
        for (mode, level) in [
            ("enforce", stack.pod_security.as_str()),
            ("audit", "restricted"),
            ("warn", "restricted"),
        ] {
            labels.insert(format!("pod-security.kubernetes.io/{mode}"), json!(level));
            labels.insert(
                format!("pod-security.kubernetes.io/{mode}-version"),
                json!("latest"),
            );
        }
    }
    json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": meta })
}

/// An HTTP probe of the engine's metrics on the node's loopback.
fn metrics_probe(period_s: u32, failures: u32) -> Value {
    json!({
        "httpGet": { "host": "127.0.0.1", "port": 9080, "path": "/metrics" },
        "periodSeconds": period_s,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    })
}

/// kube-network-policies as upstream deploys it (its install.yaml), less
/// what it does not need here: no privileged container (the API server
/// admits none), CAP_NET_ADMIN alone; no NRI socket or netns mounts
/// (containerd 1.7 runs no NRI; the engine then works from the API alone).
fn network_policy_engine() -> Vec<Value> {
    let name = NETWORK_POLICY_ENGINE;
    let labels = json!({ "app.kubernetes.io/name": name });
    let mut out = add_on_identity(
        name,
        json!([
            { "apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["list", "watch"] },
            { "apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["list", "watch"] },
        ]),
    );
    out.extend([json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": metadata(name, Some("kube-system")),
        "spec": {
            "selector": { "matchLabels": labels },
            "template": {
                "metadata": { "labels": labels },
                "spec": {
                    "hostNetwork": true,
                    "serviceAccountName": name,
                    "priorityClassName": "system-node-critical",
                    // every node, the control plane's too
                    "tolerations": [{ "operator": "Exists" }],
                    "securityContext": { "seccompProfile": { "type": "RuntimeDefault" } },
                    "containers": [{
                        "name": name,
                        "image": pinned(NETWORK_POLICY_IMAGE, NETWORK_POLICY_DIGEST),
                        // preloaded, its digest checked at import
                        "imagePullPolicy": "Never",
                        "args": [
                            "--hostname-override=$(MY_NODE_NAME)",
                            "--nfqueue-id=98",
                            "--metrics-bind-address=127.0.0.1:9080",
                            "--v=2",
                        ],
                        "env": [
                            {
                                "name": "MY_NODE_NAME",
                                "valueFrom": { "fieldRef": { "fieldPath": "spec.nodeName" } },
                            },
                            // on the host network, 10.96.0.1 may have no route
                            // (a node without a default route); every node's
                            // agent balances the API on loopback, and the API
                            // servers' certificates name 127.0.0.1
                            { "name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1" },
                            {
                                "name": "KUBERNETES_SERVICE_PORT",
                                "value": crate::kube::BALANCER_PORT.to_string(),
                            },
                        ],
                        "securityContext": {
                            "runAsUser": 0,
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": { "drop": ["ALL"], "add": ["NET_ADMIN"] },
                        },
                        "resources": {
                            "requests": { "cpu": "50m", "memory": "50Mi" },
                            "limits": { "memory": "300Mi" },
                        },
                        // v0.8.0 serves nothing but its metrics: they answer
                        // while the process runs (kubelet probes a
                        // host-network pod on the node, hence loopback)
                        "readinessProbe": metrics_probe(10, 3),
                        "livenessProbe": metrics_probe(20, 6),
                    }],
                },
            },
        },
    })]);
    out
}

/// An add-on's ServiceAccount in kube-system, and a ClusterRole of
/// `rules` (`nodeimg:NAME`) bound to it.
fn add_on_identity(name: &str, rules: Value) -> Vec<Value> {
    let role = format!("nodeimg:{name}");
    vec![
        json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": metadata(name, Some("kube-system")),
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": metadata(&role, None),
            "rules": rules,
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": metadata(&role, None),
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role },
            "subjects": [{ "kind": "ServiceAccount", "name": name, "namespace": "kube-system" }],
        }),
    ]
}

/// The Corefile: upstream's (kubeadm's) for cluster DNS, with forwarding
/// only where there is somewhere to forward to.
fn corefile(stack: &Stack) -> String {
    let domain = crate::kube::CLUSTER_DOMAIN;
    let mut f = format!(
        ".:53 {{\n    errors\n    health {{\n        lameduck 5s\n    }}\n    ready\n    \
         kubernetes {domain} in-addr.arpa ip6.arpa {{\n        pods insecure\n        \
         fallthrough in-addr.arpa ip6.arpa\n        ttl 30\n    }}\n    prometheus :9153\n"
    );
    if !stack.dns.forward.is_empty() {
        f.push_str(&format!(
            "    forward . {} {{\n        max_concurrent 1000\n    }}\n    loop\n",
            stack.dns.forward.join(" ")
        ));
    }
    f.push_str("    cache 30\n    reload\n    loadbalance\n}\n");
    f
}

/// CoreDNS as upstream deploys it (its deployment's coredns.yaml.sed),
/// named as kubeadm names it (`coredns`, Service `kube-dns`), less the
/// capability: upstream's binary carries cap_net_bind_service as a file
/// capability, ours none, so the pod sets ip_unprivileged_port_start
/// (a safe sysctl) to 53 instead and drops every capability.
fn dns(stack: &Stack) -> Vec<Value> {
    let name = "coredns";
    let labels = json!({ "k8s-app": "kube-dns" });
    let mut service_meta = metadata("kube-dns", Some("kube-system"));
    if let Some(l) = service_meta
        .get_mut("labels")
        .and_then(Value::as_object_mut)
    {
        l.insert("k8s-app".into(), json!("kube-dns"));
    }
    let mut out = add_on_identity(
        name,
        json!([
            { "apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"], "verbs": ["list", "watch"] },
            { "apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"] },
        ]),
    );
    out.extend([
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata(name, Some("kube-system")),
            "data": { "Corefile": corefile(stack) },
        }),
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": metadata(name, Some("kube-system")),
            "spec": {
                "replicas": stack.dns.replicas,
                "selector": { "matchLabels": labels },
                "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": 1 } },
                "template": {
                    "metadata": { "labels": labels },
                    "spec": {
                        "serviceAccountName": name,
                        "priorityClassName": "system-cluster-critical",
                        // the node's own servers, not itself
                        "dnsPolicy": "Default",
                        "tolerations": [
                            { "key": "CriticalAddonsOnly", "operator": "Exists" },
                            { "key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule" },
                        ],
                        "affinity": { "podAntiAffinity": { "preferredDuringSchedulingIgnoredDuringExecution": [{
                            "weight": 100,
                            "podAffinityTerm": {
                                "labelSelector": { "matchLabels": labels },
                                "topologyKey": "kubernetes.io/hostname",
                            },
                        }] } },
                        "securityContext": {
                            "runAsNonRoot": true,
                            "runAsUser": 65532,
                            "runAsGroup": 65532,
                            "seccompProfile": { "type": "RuntimeDefault" },
                            "sysctls": [{ "name": "net.ipv4.ip_unprivileged_port_start", "value": "53" }],
                        },
                        "containers": [{
                            "name": name,
                            "image": pinned(DNS_IMAGE, DNS_DIGEST),
                            "imagePullPolicy": "Never",
                            "args": ["-conf", "/etc/coredns/Corefile"],
                            "ports": [
                                { "name": "dns", "containerPort": 53, "protocol": "UDP" },
                                { "name": "dns-tcp", "containerPort": 53, "protocol": "TCP" },
                                { "name": "metrics", "containerPort": 9153, "protocol": "TCP" },
                            ],
                            "volumeMounts": [{ "name": "config", "mountPath": "/etc/coredns", "readOnly": true }],
                            "livenessProbe": {
                                "httpGet": { "path": "/health", "port": 8080, "scheme": "HTTP" },
                                "initialDelaySeconds": 60, "timeoutSeconds": 5,
                                "successThreshold": 1, "failureThreshold": 5,
                            },
                            "readinessProbe": {
                                "httpGet": { "path": "/ready", "port": 8181, "scheme": "HTTP" },
                            },
                            "securityContext": {
                                "allowPrivilegeEscalation": false,
                                "readOnlyRootFilesystem": true,
                                "capabilities": { "drop": ["ALL"] },
                            },
                            "resources": {
                                "requests": { "cpu": "100m", "memory": "70Mi" },
                                "limits": { "memory": "170Mi" },
                            },
                        }],
                        "volumes": [{
                            "name": "config",
                            "configMap": { "name": name, "items": [{ "key": "Corefile", "path": "Corefile" }] },
                        }],
                    },
                },
            },
        }),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": service_meta,
            "spec": {
                "selector": labels,
                "clusterIP": crate::kube::DNS_SERVICE_IP,
                "ports": [
                    { "name": "dns", "port": 53, "protocol": "UDP" },
                    { "name": "dns-tcp", "port": 53, "protocol": "TCP" },
                    { "name": "metrics", "port": 9153, "protocol": "TCP" },
                ],
            },
        }),
    ]);
    out
}

fn default_deny(ns: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata("default-deny", Some(ns)),
        "spec": { "podSelector": {}, "policyTypes": ["Ingress", "Egress"] },
    })
}

fn allow_dns(ns: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata("allow-dns", Some(ns)),
        "spec": {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [{
                "to": [{
                    "namespaceSelector": {
                        "matchLabels": { "kubernetes.io/metadata.name": "kube-system" },
                    },
                    "podSelector": { "matchLabels": { "k8s-app": "kube-dns" } },
                }],
                "ports": [
                    { "protocol": "UDP", "port": 53 },
                    { "protocol": "TCP", "port": 53 },
                ],
            }],
        },
    })
}

/// Read-only, and no Secrets: RBAC only grants, so the readable resources
/// are listed (the built-in `view` role's, plus the cluster-scoped ones an
/// auditor needs: nodes, RBAC, policies).
fn auditor_role() -> Value {
    let read = json!(["get", "list", "watch"]);
    let rule = |groups: Value, resources: Value| json!({ "apiGroups": groups, "resources": resources, "verbs": read });
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": metadata(AUDITOR_ROLE, None),
        "rules": [
            rule(json!([""]), json!([
                "configmaps", "endpoints", "events", "limitranges", "namespaces",
                "nodes", "persistentvolumeclaims", "persistentvolumes", "pods",
                "pods/log", "replicationcontrollers", "resourcequotas",
                "serviceaccounts", "services",
            ])),
            rule(json!(["apps"]), json!(["daemonsets", "deployments", "replicasets", "statefulsets"])),
            rule(json!(["batch"]), json!(["cronjobs", "jobs"])),
            rule(json!(["networking.k8s.io"]), json!(["ingresses", "networkpolicies"])),
            rule(json!(["policy"]), json!(["poddisruptionbudgets"])),
            rule(json!(["rbac.authorization.k8s.io"]), json!([
                "clusterrolebindings", "clusterroles", "rolebindings", "roles",
            ])),
            rule(json!(["scheduling.k8s.io"]), json!(["priorityclasses"])),
            rule(json!(["storage.k8s.io"]), json!(["storageclasses"])),
            rule(json!(["certificates.k8s.io"]), json!(["certificatesigningrequests"])),
            rule(json!(["admissionregistration.k8s.io"]), json!([
                "mutatingwebhookconfigurations", "validatingadmissionpolicies",
                "validatingadmissionpolicybindings", "validatingwebhookconfigurations",
            ])),
        ],
    })
}

fn auditor_binding(group: &str) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": metadata(AUDITOR_ROLE, None),
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": AUDITOR_ROLE },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group }],
    })
}

fn priority_class(name: &str, value: u32, for_what: &str) -> Value {
    json!({
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": metadata(name, None),
        "value": value,
        "globalDefault": false,
        "preemptionPolicy": "PreemptLowerPriority",
        "description": format!("nodeimg: {for_what}"),
    })
}

fn limit_range(stack: &Stack, ns: &str) -> Value {
    let l = &stack.limits;
    json!({
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": metadata("container-defaults", Some(ns)),
        "spec": { "limits": [{
            "type": "Container",
            "defaultRequest": { "cpu": l.default_request_cpu, "memory": l.default_request_memory },
            "default": { "cpu": l.default_cpu, "memory": l.default_memory },
            "max": { "cpu": l.max_cpu, "memory": l.max_memory },
        }] },
    })
}

fn resource_quota(stack: &Stack, ns: &str) -> Value {
    let q = &stack.quota;
    json!({
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": metadata("namespace-quota", Some(ns)),
        "spec": { "hard": {
            "pods": q.pods.to_string(),
            "requests.cpu": q.cpu,
            "requests.memory": q.memory,
            "limits.cpu": q.cpu,
            "limits.memory": q.memory,
        } },
    })
}

#[cfg(test)]
#[path = "stack_tests.rs"]
mod tests;
