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

/// A kubeconfig with one cluster, one user (a client certificate) and one
/// context, all named after `cluster`; certificates and key embedded as
/// base64 of their PEM, as kubectl expects in the `-data` fields.
#[derive(Debug, Clone)]
pub struct Kubeconfig<'a> {
    pub cluster: &'a str,
    /// `https://HOST:PORT`.
    pub server: &'a str,
    pub ca_pem: &'a str,
    pub user: &'a str,
    pub cert_pem: &'a str,
    pub key_pem: &'a str,
    /// The name the server's certificate must carry, when the address
    /// dialled is not one (a port forwarded to loopback, say).
    pub tls_server_name: Option<&'a str>,
}

impl Kubeconfig<'_> {
    pub fn to_json(&self) -> String {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        let mut cluster = json!({
            "server": self.server,
            "certificate-authority-data": b64(self.ca_pem),
        });
        if let (Some(name), Some(map)) = (self.tls_server_name, cluster.as_object_mut()) {
            map.insert("tls-server-name".into(), json!(name));
        }
        let doc = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{ "name": self.cluster, "cluster": cluster }],
            "users": [{
                "name": self.user,
                "user": {
                    "client-certificate-data": b64(self.cert_pem),
                    "client-key-data": b64(self.key_pem),
                },
            }],
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
            ca_pem: "CA",
            user: "admin",
            cert_pem: "CERT",
            key_pem: "KEY",
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
        assert_eq!(v["users"][0]["user"]["client-key-data"], "S0VZ");
    }
}
