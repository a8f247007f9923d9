//! Kubernetes as the builder and the agent agree on it: the API's port and
//! the kubeconfig files both write (the admin's from `nodeimg cluster
//! kubeconfig`, the components' from the agent).
//!
//! A kubeconfig is written as JSON: YAML is a superset of JSON, so every
//! Kubernetes client reads it, and serde_json (already here) writes it
//! without a YAML dependency in the static agent.

use serde_json::json;

/// kube-apiserver's secure port.
pub const API_PORT: u16 = 6443;
/// Where every node's agent listens on loopback and forwards to the API
/// servers of all control-plane members (its own first): kubelet and
/// kube-proxy reach the API through it, so losing any one control-plane
/// node loses no node's API (Talos' KubePrism uses the same port).
pub const BALANCER_PORT: u16 = 7445;
/// kubelet's authenticated port (the API server dials it for logs, exec).
pub const KUBELET_PORT: u16 = 10250;

/// The cluster's fixed address plan. One flat plan for every cluster for
/// now (kubeadm's defaults): the cluster config has no keys for them yet.
pub const SERVICE_CIDR: &str = "10.96.0.0/12";
/// The first address of [`SERVICE_CIDR`]: the `kubernetes` Service.
pub const API_SERVICE_IP: [u8; 4] = [10, 96, 0, 1];
/// Where cluster DNS will answer (kubelet's `clusterDNS`).
pub const DNS_SERVICE_IP: &str = "10.96.0.10";
/// Pod addresses; kube-controller-manager gives each node a /24 of it.
pub const POD_CIDR: &str = "10.244.0.0/16";
pub const NODE_CIDR_MASK: u8 = 24;
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// What the agent renders on a node: configs, kubeconfigs and keys. Under
/// `/etc` (a tmpfs overlay rewritten each boot): where kube-bench and
/// every operator look for them.
pub const DIR: &str = "/etc/kubernetes";
pub const PKI_DIR: &str = "/etc/kubernetes/pki";
/// kubelet's own state: its rotated certificates survive a reboot.
pub const KUBELET_DIR: &str = "/var/lib/kubelet";
/// The CNI network config the agent writes once the node has a pod CIDR
/// (containerd's CRI plugin reads it from here).
pub const CNI_CONF_DIR: &str = "/etc/cni/net.d";
pub const AUDIT_LOG: &str = "/var/log/kubernetes/audit/audit.log";

/// Where a node's Kubernetes stands, in the boot report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KubePhase {
    /// A control-plane node waits for its etcd member to be a voter.
    #[default]
    WaitingForEtcd,
    /// Certificates and configs written, the services released.
    Starting,
    /// The API answers (control plane) and kubelet runs.
    Running,
    Failed,
}

impl KubePhase {
    pub fn as_str(self) -> &'static str {
        match self {
            KubePhase::WaitingForEtcd => "waiting-for-etcd",
            KubePhase::Starting => "starting",
            KubePhase::Running => "running",
            KubePhase::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KubeReport {
    pub phase: KubePhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the agent waits for or last noticed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The node's Ready condition as the API has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_ready: Option<bool>,
    /// kubelet's version as the Node object says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The Node's `node-role.kubernetes.io/*` labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// The node's pod network, once kube-controller-manager gave it one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_cidr: Option<String>,
    /// Routes to other nodes' pods this agent installed.
    #[serde(default)]
    pub routes: u32,
    /// Kubelet serving certificates this agent approved.
    #[serde(default)]
    pub approved: u32,
    /// The security stack, on a control-plane node whose config carries
    /// one to apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<StackReport>,
}

/// What a control-plane node did with the cluster's security stack.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StackReport {
    /// This node holds the stack's Lease (kube-system/nodeimg-stack): it
    /// is the one that applies.
    pub leader: bool,
    /// sha256 (hex) of the rendered objects this node applied last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Objects applied in the last complete pass.
    #[serde(default)]
    pub objects: u32,
    /// Objects it applied before, no longer rendered, and deleted.
    #[serde(default)]
    pub pruned: u32,
    /// When the last complete pass ended (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<u64>,
    /// Why the last pass failed; it is tried again after `retry_in_s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_in_s: Option<u64>,
}

/// A certificate, key or CA in a kubeconfig: inline or a file the client
/// reads (a file follows kubelet's certificate rotation).
#[derive(Debug, Clone, Copy)]
pub enum Material<'a> {
    Pem(&'a str),
    File(&'a str),
}

/// How the kubeconfig's user proves who it is.
#[derive(Debug, Clone, Copy)]
pub enum Credentials<'a> {
    Certificate {
        cert: Material<'a>,
        key: Material<'a>,
    },
    /// A bootstrap token (kubelet's TLS bootstrap).
    Token(&'a str),
}

/// A kubeconfig with one cluster, one user and one context, all named
/// after `cluster`; inline material is base64 of its PEM, as kubectl
/// expects in the `-data` fields.
#[derive(Debug, Clone)]
pub struct Kubeconfig<'a> {
    pub cluster: &'a str,
    /// `https://HOST:PORT`.
    pub server: &'a str,
    pub ca: Material<'a>,
    pub user: &'a str,
    pub credentials: Credentials<'a>,
    /// The name the server's certificate must carry, when the address
    /// dialled is not one (a port forwarded to loopback, say).
    pub tls_server_name: Option<&'a str>,
}

fn put(map: &mut serde_json::Map<String, serde_json::Value>, field: &str, m: Material<'_>) {
    use base64::Engine;
    match m {
        Material::Pem(pem) => map.insert(
            format!("{field}-data"),
            json!(base64::engine::general_purpose::STANDARD.encode(pem.as_bytes())),
        ),
        Material::File(path) => map.insert(field.to_string(), json!(path)),
    };
}

impl Kubeconfig<'_> {
    pub fn to_json(&self) -> String {
        let mut cluster = serde_json::Map::new();
        cluster.insert("server".into(), json!(self.server));
        put(&mut cluster, "certificate-authority", self.ca);
        if let Some(name) = self.tls_server_name {
            cluster.insert("tls-server-name".into(), json!(name));
        }
        let mut user = serde_json::Map::new();
        match self.credentials {
            Credentials::Certificate { cert, key } => {
                put(&mut user, "client-certificate", cert);
                put(&mut user, "client-key", key);
            }
            Credentials::Token(token) => {
                user.insert("token".into(), json!(token));
            }
        }
        let doc = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{ "name": self.cluster, "cluster": cluster }],
            "users": [{ "name": self.user, "user": user }],
            "contexts": [{
                "name": self.cluster,
                "context": { "cluster": self.cluster, "user": self.user },
            }],
            "current-context": self.cluster,
            "preferences": {},
        });
        let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        text.push('\n');
        text
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn kubeconfig_names_one_cluster_user_and_context() {
        let k = Kubeconfig {
            cluster: "lab",
            server: "https://127.0.0.1:6443",
            ca: Material::Pem("CA"),
            user: "admin",
            credentials: Credentials::Certificate {
                cert: Material::Pem("CERT"),
                key: Material::File("/k/key"),
            },
            tls_server_name: Some("kubernetes"),
        };
        let v: serde_json::Value = serde_json::from_str(&k.to_json()).unwrap();
        assert_eq!(v["current-context"], "lab");
        assert_eq!(v["contexts"][0]["context"]["user"], "admin");
        assert_eq!(v["clusters"][0]["cluster"]["tls-server-name"], "kubernetes");
        assert_eq!(
            v["clusters"][0]["cluster"]["certificate-authority-data"],
            "Q0E="
        );
        assert_eq!(v["users"][0]["user"]["client-certificate-data"], "Q0VSVA==");
        assert_eq!(v["users"][0]["user"]["client-key"], "/k/key");
        assert!(v["users"][0]["user"].get("client-key-data").is_none());
        let t = Kubeconfig {
            credentials: Credentials::Token("abcdef.0123456789abcdef"),
            ..k
        };
        let v: serde_json::Value = serde_json::from_str(&t.to_json()).unwrap();
        assert_eq!(v["users"][0]["user"]["token"], "abcdef.0123456789abcdef");
    }
}
