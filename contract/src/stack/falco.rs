//! `07-falco-rules.yaml`: runtime detection rules for Falco, rendered from
//! the cluster config into the ConfigMap `kube-system/nodeimg-falco-rules`
//! (key `nodeimg_rules.yaml`). Falco's engine is not part of the stack (it
//! is C++ and eBPF, built from neither Debian nor a Go module here): a
//! user who runs Falco mounts this ConfigMap into its rules directory.
//!
//! The rules are self-contained (their own macros and lists, prefixed
//! `nodeimg_`), so they load beside Falco's default rules or without them,
//! and they lean on what a nodeimg node guarantees: read-only roots, no
//! package manager, no module loading after boot, no privileged
//! containers, images from the allowed registries. Each of those, seen at
//! run time, means something got around the controls before it.

use serde_json::{json, Value};

use super::metadata;
use crate::config::Stack;

/// The ConfigMap's name and the key holding the rules file.
pub const CONFIG_MAP: &str = "nodeimg-falco-rules";
pub const RULES_KEY: &str = "nodeimg_rules.yaml";

/// Falco's priorities, most severe first (its rules reference).
pub const PRIORITIES: [&str; 8] = [
    "EMERGENCY",
    "ALERT",
    "CRITICAL",
    "ERROR",
    "WARNING",
    "NOTICE",
    "INFORMATIONAL",
    "DEBUG",
];

/// What every alert says about where it happened.
const WHERE: &str = "container=%container.id image=%container.image.repository \
                     ns=%k8s.ns.name pod=%k8s.pod.name uid=%user.uid \
                     cmd=%proc.cmdline parent=%proc.pname";

/// The rules file: lists, macros, then rules.
pub fn rules(stack: &Stack) -> Value {
    let mut items = vec![
        json!({ "list": "nodeimg_shells",
                "items": ["sh", "bash", "dash", "ash", "zsh", "ksh", "csh", "tcsh", "fish", "busybox"] }),
        json!({ "list": "nodeimg_package_managers",
                "items": ["apt", "apt-get", "dpkg", "apk", "yum", "dnf", "microdnf", "rpm",
                          "pip", "pip3", "npm", "gem"] }),
        json!({ "list": "nodeimg_secret_files",
                "items": ["/etc/shadow", "/etc/gshadow", "/etc/sudoers"] }),
        json!({ "macro": "nodeimg_spawned_process",
                "condition": "evt.type in (execve, execveat) and evt.dir = <" }),
        json!({ "macro": "nodeimg_container", "condition": "container.id != host" }),
        json!({ "macro": "nodeimg_container_started",
                "condition": "nodeimg_spawned_process and nodeimg_container and proc.vpid = 1" }),
    ];
    let rule =
        |name: &str, desc: &str, condition: String, what: &str, priority: &str, tags: &[&str]| {
            json!({
                "rule": name,
                "desc": desc,
                "condition": condition,
                "output": format!("{what} ({WHERE})"),
                "priority": priority,
                "tags": tags,
            })
        };
    items.push(rule(
        "nodeimg terminal shell in a container",
        "A shell with a terminal started in a container: someone is working inside it \
         (kubectl exec -it or a break-out). Workload images need no interactive shell.",
        "nodeimg_spawned_process and nodeimg_container and proc.name in (nodeimg_shells) \
         and proc.tty != 0"
            .into(),
        "Terminal shell in a container",
        "WARNING",
        &["nodeimg", "container", "shell", "mitre_execution"],
    ));
    items.push(rule(
        "nodeimg package manager in a container",
        "A package manager ran in a container. Containers here have read-only roots: \
         installing software at run time is drift, or an attack preparing tools.",
        "nodeimg_spawned_process and nodeimg_container \
         and proc.name in (nodeimg_package_managers)"
            .into(),
        "Package manager in a container",
        "ERROR",
        &["nodeimg", "container", "drift", "mitre_persistence"],
    ));
    items.push(rule(
        "nodeimg kernel module load",
        "A process asked the kernel to load a module. A nodeimg node loads its modules \
         at boot and then forbids loading (kernel.modules_disabled): any later attempt \
         is an attack on the kernel.",
        "evt.type in (init_module, finit_module) and evt.dir = <".into(),
        "Kernel module load attempted",
        "CRITICAL",
        &["nodeimg", "host", "kernel", "mitre_privilege_escalation"],
    ));
    items.push(rule(
        "nodeimg secret file read in a container",
        "A container process opened the password or sudo files, which no workload \
         needs.",
        "evt.type in (open, openat, openat2) and evt.dir = < and evt.is_open_read = true \
         and nodeimg_container and fd.name in (nodeimg_secret_files)"
            .into(),
        "Secret file opened in a container",
        "WARNING",
        &[
            "nodeimg",
            "container",
            "filesystem",
            "mitre_credential_access",
        ],
    ));
    items.push(rule(
        "nodeimg privileged container",
        "A privileged container started. The API server admits none \
         (--allow-privileged=false), so it came around the API: a static pod or the \
         container runtime used directly.",
        "nodeimg_container_started and container.privileged = true".into(),
        "Privileged container started",
        "CRITICAL",
        &["nodeimg", "container", "mitre_privilege_escalation"],
    ));
    let registries = &stack.admission.allowed_registries;
    if stack.admission.enabled && !registries.is_empty() {
        // entries are checked to hold no quote, backslash or space
        let allowed: Vec<String> = registries
            .iter()
            .map(|r| format!("container.image.repository startswith \"{r}\""))
            .collect();
        items.push(rule(
            "nodeimg image outside the allowed registries",
            "A container started from an image outside [stack.admission] \
             allowed_registries, which the API server refuses for pods: it came around \
             the API, or from kube-system, which the admission policies exempt.",
            format!(
                "nodeimg_container_started and not ({})",
                allowed.join(" or ")
            ),
            "Container from an image outside the allowed registries",
            "ERROR",
            &[
                "nodeimg",
                "container",
                "supply_chain",
                "mitre_initial_access",
            ],
        ));
    }
    Value::Array(items)
}

/// The ConfigMap holding [`rules`] as a Falco rules file.
pub(super) fn config_map(stack: &Stack) -> Value {
    let mut text = String::from(
        "# nodeimg's Falco rules, rendered from cluster.toml (docs/security-stack.md).\n",
    );
    crate::yaml::write(&rules(stack), 0, &mut text);
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(CONFIG_MAP, Some("kube-system")),
        "data": { RULES_KEY: text },
    })
}
