//! `06-admission-policies.yaml`: `[stack.admission]` as
//! ValidatingAdmissionPolicies, which kube-apiserver evaluates itself
//! (CEL, in-tree since 1.30). Nothing runs as a pod for them: no webhook
//! to fail open, no image, no memory on any node, and a refusal names the
//! policy and what to change.
//!
//! Each rule is one policy and one binding (`kubectl get
//! validatingadmissionpolicies` lists them as a policy engine lists its
//! constraints), matching pods (and their ephemeral containers) in every
//! namespace but kube-system, whose add-ons need the host network.

use serde_json::{json, Value};

use super::metadata;
use crate::config::Admission;

/// The policies of `a` that are on, each followed by its binding.
pub(super) fn policies(a: &Admission) -> Vec<Value> {
    let mut rules: Vec<(&str, String, String)> = Vec::new();
    if !a.allowed_registries.is_empty() {
        // serde_json's string literals are CEL's (same escapes)
        let list = serde_json::to_string(&a.allowed_registries).unwrap_or_default();
        let from = format!("{list}.exists(r, c.image.startsWith(r))");
        rules.push((
            "allowed-registries",
            every_container(&from, Lists::All),
            format!(
                "every image must come from an allowed registry ({}; \
                 cluster.toml [stack.admission].allowed_registries)",
                a.allowed_registries.join(", ")
            ),
        ));
    }
    if a.require_limits {
        rules.push((
            "require-limits",
            // dyn(): the API server's type checker gives maps of
            // quantities no CEL type (their schema is oneOf string or
            // number), so a typed `c.resources.limits` is an "undefined
            // field" warning on the policy, though it works when run;
            // read dynamically it checks clean and runs the same
            every_container(
                "has(c.resources) && has(dyn(c.resources).limits) \
                 && 'cpu' in dyn(c.resources).limits && 'memory' in dyn(c.resources).limits",
                Lists::NotEphemeral,
            ),
            "every container must set CPU and memory limits \
             (resources.limits.cpu and resources.limits.memory)"
                .into(),
        ));
    }
    if a.non_root {
        let pod = "has(object.spec.securityContext) \
                   && has(object.spec.securityContext.runAsNonRoot) \
                   && object.spec.securityContext.runAsNonRoot";
        let own = format!(
            "(has(c.securityContext) && has(c.securityContext.runAsNonRoot) \
             ? c.securityContext.runAsNonRoot : ({pod})) \
             && !(has(c.securityContext) && has(c.securityContext.runAsUser) \
             && c.securityContext.runAsUser == 0)"
        );
        rules.push((
            "non-root",
            every_container(&own, Lists::All),
            "every container must run as non-root (securityContext.runAsNonRoot: true, \
             on the pod or the container, and no runAsUser 0)"
                .into(),
        ));
    }
    if a.read_only_root {
        rules.push((
            "read-only-root",
            every_container(
                &flag_set("c.securityContext", "readOnlyRootFilesystem"),
                Lists::All,
            ),
            "every container's root file system must be read-only \
             (securityContext.readOnlyRootFilesystem: true)"
                .into(),
        ));
    }
    if a.drop_all_capabilities {
        rules.push((
            "drop-capabilities",
            every_container(
                "has(c.securityContext) && has(c.securityContext.capabilities) \
                 && has(c.securityContext.capabilities.drop) \
                 && c.securityContext.capabilities.drop.exists(d, d == 'ALL')",
                Lists::All,
            ),
            "every container must drop ALL capabilities \
             (securityContext.capabilities.drop: [ALL])"
                .into(),
        ));
    }
    if a.no_privileged {
        rules.push((
            "no-privileged",
            every_container(
                &format!("!({})", flag_set("c.securityContext", "privileged")),
                Lists::All,
            ),
            "no container may be privileged (securityContext.privileged)".into(),
        ));
    }
    if a.no_host_namespaces {
        let host = ["hostNetwork", "hostPID", "hostIPC"]
            .map(|f| format!("!({})", flag_set("object.spec", f)))
            .join(" && ");
        rules.push((
            "no-host-namespaces",
            host,
            "a pod may not share the host's network, PID or IPC namespace \
             (hostNetwork, hostPID, hostIPC)"
                .into(),
        ));
    }
    rules
        .into_iter()
        .flat_map(|(name, expression, message)| {
            let name = format!("nodeimg-{name}");
            [policy(&name, &expression, &message), binding(&name)]
        })
        .collect()
}

/// Which of a pod's container lists a rule covers: ephemeral containers
/// cannot name resources.
#[derive(Clone, Copy, PartialEq)]
enum Lists {
    All,
    NotEphemeral,
}

/// `predicate` (of `c`) for every container of every list in `lists`.
/// One `all()` per list, not one over their concatenation: containers and
/// ephemeral containers are different types to CEL's type checker.
fn every_container(predicate: &str, lists: Lists) -> String {
    let mut parts = vec![format!("object.spec.containers.all(c, {predicate})")];
    let mut optional = vec!["initContainers"];
    if lists == Lists::All {
        optional.push("ephemeralContainers");
    }
    for list in optional {
        parts.push(format!(
            "(!has(object.spec.{list}) || object.spec.{list}.all(c, {predicate}))"
        ));
    }
    parts.join(" && ")
}

/// `object.field` is present and true.
fn flag_set(object: &str, field: &str) -> String {
    format!("has({object}) && has({object}.{field}) && {object}.{field}")
}

fn policy(name: &str, expression: &str, message: &str) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": metadata(name, None),
        "spec": {
            // an expression that fails to evaluate refuses, never admits
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [{
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "operations": ["CREATE", "UPDATE"],
                    "resources": ["pods", "pods/ephemeralcontainers"],
                }],
                "namespaceSelector": { "matchExpressions": [{
                    "key": "kubernetes.io/metadata.name",
                    "operator": "NotIn",
                    "values": ["kube-system"],
                }] },
            },
            "validations": [{
                "expression": expression,
                "message": format!("{name}: {message}"),
                "reason": "Forbidden",
            }],
        },
    })
}

fn binding(name: &str) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": metadata(name, None),
        "spec": { "policyName": name, "validationActions": ["Deny"] },
    })
}
