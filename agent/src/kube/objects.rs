//! The objects a cluster needs before any kubelet can join, applied by a
//! control-plane node's agent with its admin identity (server-side apply,
//! so every control-plane node may apply them again, harmlessly): the
//! bootstrap token's Secret, the bindings that let a token holder ask for a
//! node certificate and have it approved, kube-proxy's binding, and the
//! control-plane role label NodeRestriction forbids a kubelet to set on
//! itself.

use base64::Engine;
use serde_json::{json, Value};

/// The ClusterRole (and its binding) that lets nodes list Nodes.
pub const POD_ROUTES: &str = "nodeimg:pod-routes";

/// The extra group token holders are in (beside `system:bootstrappers`).
pub const BOOTSTRAP_GROUP: &str = "system:bootstrappers:nodeimg";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

fn binding(name: &str, role: &str, kind: &str, subject: &str) -> (String, Value) {
    (
        format!("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{name}"),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": { "name": name, "labels": { "app.kubernetes.io/managed-by": "nodeimg" } },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role },
            "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": subject }],
        }),
    )
}

/// (URL, object) of each, in the order they are applied. `token`:
/// `id.secret` (checked by the machine config's validation).
pub fn bootstrap(token: &str) -> Vec<(String, Value)> {
    let (id, secret) = token.split_once('.').unwrap_or((token, ""));
    let name = format!("bootstrap-token-{id}");
    vec![
        (
            format!("/api/v1/namespaces/kube-system/secrets/{name}"),
            json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "bootstrap.kubernetes.io/token",
                "metadata": { "name": name, "namespace": "kube-system" },
                "data": {
                    "token-id": b64(id),
                    "token-secret": b64(secret),
                    "usage-bootstrap-authentication": b64("true"),
                    "usage-bootstrap-signing": b64("true"),
                    "auth-extra-groups": b64(BOOTSTRAP_GROUP),
                    "description": b64("kubelets join with it (nodeimg)"),
                },
            }),
        ),
        binding(
            "nodeimg:kubelet-bootstrap",
            "system:node-bootstrapper",
            "Group",
            "system:bootstrappers",
        ),
        binding(
            "nodeimg:node-autoapprove-bootstrap",
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            "Group",
            "system:bootstrappers",
        ),
        binding(
            "nodeimg:node-autoapprove-certificate-rotation",
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            "Group",
            "system:nodes",
        ),
        // host-gw routing: each node's agent reads every Node's pod range
        // and address (kubelet's identity may read only its own Node);
        // read-only, and NodeRestriction still keeps a node to its own
        (
            format!("/apis/rbac.authorization.k8s.io/v1/clusterroles/{POD_ROUTES}"),
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": { "name": POD_ROUTES, "labels": { "app.kubernetes.io/managed-by": "nodeimg" } },
                "rules": [{ "apiGroups": [""], "resources": ["nodes"], "verbs": ["list"] }],
            }),
        ),
        binding(POD_ROUTES, POD_ROUTES, "Group", "system:nodes"),
        binding(
            "nodeimg:node-proxier",
            "system:node-proxier",
            "User",
            "system:kube-proxy",
        ),
    ]
}

/// The role label of a control-plane Node (its taint it registers with).
pub fn control_plane_label(hostname: &str) -> (String, Value) {
    (
        format!("/api/v1/nodes/{hostname}"),
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": hostname,
                "labels": { "node-role.kubernetes.io/control-plane": "" },
            },
        }),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn the_token_secret_is_kubernetes_bootstrap_format() {
        let objects = bootstrap("abcdef.0123456789abcdef");
        let (url, secret) = &objects[0];
        assert_eq!(
            url,
            "/api/v1/namespaces/kube-system/secrets/bootstrap-token-abcdef"
        );
        assert_eq!(secret["type"], "bootstrap.kubernetes.io/token");
        let data = |k: &str| {
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(secret["data"][k].as_str().unwrap())
                    .unwrap(),
            )
            .unwrap()
        };
        assert_eq!(data("token-id"), "abcdef");
        assert_eq!(data("token-secret"), "0123456789abcdef");
        assert_eq!(data("usage-bootstrap-authentication"), "true");
        // every URL names its own object
        for (url, o) in &objects {
            assert!(
                url.ends_with(o["metadata"]["name"].as_str().unwrap()),
                "{url}"
            );
        }
        let bound: Vec<(&str, &str)> = objects
            .iter()
            .filter(|(_, o)| o["kind"] == "ClusterRoleBinding")
            .map(|(_, o)| {
                (
                    o["roleRef"]["name"].as_str().unwrap(),
                    o["subjects"][0]["name"].as_str().unwrap(),
                )
            })
            .collect();
        assert!(bound.contains(&("system:node-bootstrapper", "system:bootstrappers")));
        assert!(bound.contains(&(POD_ROUTES, "system:nodes")));
        // nodes may list Nodes, nothing more
        let role = objects
            .iter()
            .find(|(_, o)| o["kind"] == "ClusterRole")
            .unwrap();
        assert_eq!(
            role.1["rules"],
            json!([{ "apiGroups": [""], "resources": ["nodes"], "verbs": ["list"] }])
        );
    }
}
