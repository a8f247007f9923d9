//! `[stack]` (cluster.toml) and `[cluster.control_plane.stack]`: the
//! cluster's security stack, as options. `nodeimg cluster init` and
//! `nodeimg cluster manifests` render it into `DIR/manifests/`, and the
//! elected control-plane node's agent applies the very same objects
//! ([`crate::stack::render`] on both sides). Every part is on by default,
//! with the reference cluster's values.
//!
//! `[control_plane.api_server]` (cluster.toml) and
//! `[cluster.control_plane.api_server]`: the API server's audit log
//! rotation and the longest service-account token it issues.

use serde::{Deserialize, Serialize};

use super::validate::dns_label;
use super::Problem;

/// The Pod Security Standards level a namespace enforces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PodSecurityLevel {
    Privileged,
    Baseline,
    #[default]
    Restricted,
}

impl PodSecurityLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            PodSecurityLevel::Privileged => "privileged",
            PodSecurityLevel::Baseline => "baseline",
            PodSecurityLevel::Restricted => "restricted",
        }
    }
}

/// `[stack]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stack {
    /// false: the files are still rendered, but no node applies them.
    #[serde(default = "yes")]
    pub apply: bool,
    /// The workload namespaces the stack makes and guards (DNS labels; no
    /// `kube-*` and not `default`, which the API server owns).
    #[serde(default = "Stack::default_namespaces")]
    pub namespaces: Vec<String>,
    /// The Pod Security level the workload namespaces enforce (they audit
    /// and warn at `restricted` whatever this says).
    #[serde(default)]
    pub pod_security: PodSecurityLevel,
    /// A default-deny ingress and egress NetworkPolicy in every workload
    /// namespace, DNS egress to kube-system allowed.
    #[serde(default = "yes")]
    pub network_policies: bool,
    /// The group bound to the read-only auditor role (empty: no binding).
    #[serde(default = "Stack::default_auditor_group")]
    pub auditor_group: String,
    /// The platform and workload PriorityClasses.
    #[serde(default = "yes")]
    pub priority_classes: bool,
    /// `[stack.limits]`: each workload namespace's LimitRange.
    #[serde(default)]
    pub limits: Limits,
    /// `[stack.quota]`: each workload namespace's ResourceQuota.
    #[serde(default)]
    pub quota: Quota,
    /// `[stack.dns]`: the cluster's DNS (CoreDNS).
    #[serde(default)]
    pub dns: Dns,
    /// `[stack.admission]`: what every pod outside kube-system must be.
    #[serde(default)]
    pub admission: Admission,
    /// `[stack.falco]`: runtime detection rules for a Falco the user runs.
    #[serde(default)]
    pub falco: Falco,
}

fn yes() -> bool {
    true
}

impl Stack {
    fn default_namespaces() -> Vec<String> {
        vec!["apps".into()]
    }

    fn default_auditor_group() -> String {
        "nodeimg:auditors".into()
    }

    /// Problems under the table `at` (`stack` or `cluster.control_plane.stack`).
    pub fn problems(&self, at: &str) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (i, ns) in self.namespaces.iter().enumerate() {
            let key = format!("{at}.namespaces[{i}]");
            if let Err(why) = dns_label(ns) {
                out.push(Problem::new(key, why));
            } else if ns.starts_with("kube-") || ns == "default" {
                out.push(Problem::new(
                    key,
                    format!("{ns:?} is the API server's own: name a workload namespace"),
                ));
            } else if !seen.insert(ns.as_str()) {
                out.push(Problem::new(key, format!("{ns:?} is listed twice")));
            }
        }
        if self.auditor_group.contains(char::is_whitespace) {
            out.push(Problem::new(
                format!("{at}.auditor_group"),
                "must be a group name without spaces",
            ));
        }
        self.limits.problems(&format!("{at}.limits"), &mut out);
        self.quota.problems(&format!("{at}.quota"), &mut out);
        self.dns.problems(&format!("{at}.dns"), &mut out);
        self.admission
            .problems(&format!("{at}.admission"), &mut out);
        out
    }
}

impl Default for Stack {
    fn default() -> Stack {
        Stack {
            apply: true,
            namespaces: Stack::default_namespaces(),
            pod_security: PodSecurityLevel::default(),
            network_policies: true,
            auditor_group: Stack::default_auditor_group(),
            priority_classes: true,
            limits: Limits::default(),
            quota: Quota::default(),
            dns: Dns::default(),
            admission: Admission::default(),
            falco: Falco::default(),
        }
    }
}

/// `[stack.falco]`: the ConfigMap `kube-system/nodeimg-falco-rules`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Falco {
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl Default for Falco {
    fn default() -> Falco {
        Falco { enabled: true }
    }
}

/// `[stack.admission]`: the policies the API server itself enforces on
/// every pod outside kube-system (ValidatingAdmissionPolicies), each one
/// a switch. The add-ons in kube-system are exempt: the NetworkPolicy
/// engine needs the host network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admission {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Image prefixes a container may run from, each ending in `/` (a
    /// registry host, or a host and path): `nodeimg.local/` is the images
    /// the builder preloads. Empty: any image.
    #[serde(default = "Admission::default_registries")]
    pub allowed_registries: Vec<String>,
    /// Every container names CPU and memory limits (a namespace's
    /// LimitRange may supply them: it acts before these policies).
    #[serde(default = "yes")]
    pub require_limits: bool,
    /// Every container runs with `runAsNonRoot` (its own or the pod's).
    #[serde(default = "yes")]
    pub non_root: bool,
    /// Every container's root file system is read-only.
    #[serde(default = "yes")]
    pub read_only_root: bool,
    /// Every container drops ALL capabilities.
    #[serde(default = "yes")]
    pub drop_all_capabilities: bool,
    /// No privileged container.
    #[serde(default = "yes")]
    pub no_privileged: bool,
    /// No pod on the host's network, PID or IPC namespace.
    #[serde(default = "yes")]
    pub no_host_namespaces: bool,
}

impl Admission {
    fn default_registries() -> Vec<String> {
        vec!["nodeimg.local/".into()]
    }

    fn problems(&self, at: &str, out: &mut Vec<Problem>) {
        for (i, r) in self.allowed_registries.iter().enumerate() {
            let key = format!("{at}.allowed_registries[{i}]");
            // a prefix without its slash would also admit
            // `nodeimg.local.attacker.example/…`
            if !r.ends_with('/') || r.len() < 2 {
                out.push(Problem::new(
                    key,
                    format!("{r:?} must be a registry host (and path) ending in '/', such as \"registry.example/\""),
                ));
            } else if r.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"' || c == '\\')
            {
                out.push(Problem::new(
                    key,
                    format!("{r:?} holds a character no image name has"),
                ));
            }
        }
    }
}

impl Default for Admission {
    fn default() -> Admission {
        Admission {
            enabled: true,
            allowed_registries: Admission::default_registries(),
            require_limits: true,
            non_root: true,
            read_only_root: true,
            drop_all_capabilities: true,
            no_privileged: true,
            no_host_namespaces: true,
        }
    }
}

/// `[stack.dns]`: CoreDNS, serving `cluster.local` at the Service address
/// kubelet gives pods (10.96.0.10).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// CoreDNS pods (spread over nodes where they fit).
    #[serde(default = "Dns::default_replicas")]
    pub replicas: u32,
    /// Where names outside the cluster go: `/etc/resolv.conf` (the node's
    /// servers) or addresses (`IP` or `IP:PORT`). Empty: the cluster's
    /// own names only (a node without name servers: CoreDNS refuses to
    /// start when a resolv.conf it forwards to names none).
    #[serde(default = "Dns::default_forward")]
    pub forward: Vec<String>,
}

impl Dns {
    fn default_replicas() -> u32 {
        2
    }
    fn default_forward() -> Vec<String> {
        vec!["/etc/resolv.conf".into()]
    }

    fn problems(&self, at: &str, out: &mut Vec<Problem>) {
        if self.replicas == 0 {
            out.push(Problem::new(
                format!("{at}.replicas"),
                "must be at least 1 (turn DNS off with enabled = false)",
            ));
        }
        for (i, f) in self.forward.iter().enumerate() {
            let ok = f == "/etc/resolv.conf"
                || f.parse::<std::net::IpAddr>().is_ok()
                || f.parse::<std::net::SocketAddr>().is_ok();
            if !ok {
                out.push(Problem::new(
                    format!("{at}.forward[{i}]"),
                    format!("{f:?} is neither /etc/resolv.conf nor an IP or IP:PORT"),
                ));
            }
        }
    }
}

impl Default for Dns {
    fn default() -> Dns {
        Dns {
            enabled: true,
            replicas: Dns::default_replicas(),
            forward: Dns::default_forward(),
        }
    }
}

/// `[stack.limits]`: what a container gets when it names no requests or
/// limits, and the most one may ask for (Kubernetes quantities).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "Limits::default_request_cpu")]
    pub default_request_cpu: String,
    #[serde(default = "Limits::default_request_memory")]
    pub default_request_memory: String,
    #[serde(default = "Limits::default_cpu")]
    pub default_cpu: String,
    #[serde(default = "Limits::default_memory")]
    pub default_memory: String,
    #[serde(default = "Limits::default_max_cpu")]
    pub max_cpu: String,
    #[serde(default = "Limits::default_max_memory")]
    pub max_memory: String,
}

impl Limits {
    fn default_request_cpu() -> String {
        "100m".into()
    }
    fn default_request_memory() -> String {
        "64Mi".into()
    }
    fn default_cpu() -> String {
        "500m".into()
    }
    fn default_memory() -> String {
        "256Mi".into()
    }
    fn default_max_cpu() -> String {
        "2".into()
    }
    fn default_max_memory() -> String {
        "2Gi".into()
    }

    fn problems(&self, at: &str, out: &mut Vec<Problem>) {
        for (key, v) in [
            ("default_request_cpu", &self.default_request_cpu),
            ("default_request_memory", &self.default_request_memory),
            ("default_cpu", &self.default_cpu),
            ("default_memory", &self.default_memory),
            ("max_cpu", &self.max_cpu),
            ("max_memory", &self.max_memory),
        ] {
            quantity(&format!("{at}.{key}"), v, out);
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            enabled: true,
            default_request_cpu: Limits::default_request_cpu(),
            default_request_memory: Limits::default_request_memory(),
            default_cpu: Limits::default_cpu(),
            default_memory: Limits::default_memory(),
            max_cpu: Limits::default_max_cpu(),
            max_memory: Limits::default_max_memory(),
        }
    }
}

/// `[stack.quota]`: the most a workload namespace may hold in all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "Quota::default_pods")]
    pub pods: u32,
    #[serde(default = "Quota::default_cpu")]
    pub cpu: String,
    #[serde(default = "Quota::default_memory")]
    pub memory: String,
}

impl Quota {
    fn default_pods() -> u32 {
        50
    }
    fn default_cpu() -> String {
        "8".into()
    }
    fn default_memory() -> String {
        "16Gi".into()
    }

    fn problems(&self, at: &str, out: &mut Vec<Problem>) {
        quantity(&format!("{at}.cpu"), &self.cpu, out);
        quantity(&format!("{at}.memory"), &self.memory, out);
    }
}

impl Default for Quota {
    fn default() -> Quota {
        Quota {
            enabled: true,
            pods: Quota::default_pods(),
            cpu: Quota::default_cpu(),
            memory: Quota::default_memory(),
        }
    }
}

/// A Kubernetes quantity as these tables use them: a decimal number and
/// one of the API's suffixes (`100m`, `0.5`, `64Mi`, `2G`); the API
/// server would refuse anything else, long after the config was written.
fn quantity(key: &str, v: &str, out: &mut Vec<Problem>) {
    const SUFFIXES: [&str; 14] = [
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "m", "k", "M", "G", "T", "P", "E", "",
    ];
    let number = SUFFIXES
        .iter()
        .find_map(|s| v.strip_suffix(s).filter(|n| !n.is_empty()))
        .unwrap_or(v);
    let mut parts = number.splitn(2, '.');
    let whole = parts.next().unwrap_or_default();
    let fraction = parts.next();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || fraction.is_some_and(|f| !digits(f)) {
        out.push(Problem::new(
            key,
            format!("{v:?} is not a Kubernetes quantity (such as 500m, 2, 256Mi, 1Gi)"),
        ));
    }
}

/// `[control_plane.api_server]`: kube-apiserver settings a cluster tunes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiServer {
    /// The audit log rotates when it reaches this size (MiB, at least 1).
    #[serde(default = "ApiServer::default_audit_size")]
    pub audit_max_size_mb: u32,
    /// Rotated audit logs kept.
    #[serde(default = "ApiServer::default_audit_backups")]
    pub audit_max_backups: u32,
    /// Days a rotated audit log is kept.
    #[serde(default = "ApiServer::default_audit_age")]
    pub audit_max_age_days: u32,
    /// The longest a service-account token the API issues lives, seconds
    /// (at least 3600: the API server refuses less). A request for longer
    /// gets this.
    #[serde(default = "ApiServer::default_token")]
    pub service_account_max_token_s: u32,
    /// EventRateLimit per namespace: events a second, and the burst above
    /// it (the server-wide limit stays 50 a second, burst 100).
    #[serde(default = "ApiServer::default_event_qps")]
    pub events_per_namespace_qps: u32,
    #[serde(default = "ApiServer::default_event_burst")]
    pub events_per_namespace_burst: u32,
}

impl ApiServer {
    fn default_audit_size() -> u32 {
        100
    }
    fn default_audit_backups() -> u32 {
        10
    }
    fn default_audit_age() -> u32 {
        30
    }
    fn default_token() -> u32 {
        3600
    }
    fn default_event_qps() -> u32 {
        20
    }
    fn default_event_burst() -> u32 {
        50
    }

    /// Problems under the table `at`.
    pub fn problems(&self, at: &str) -> Vec<Problem> {
        let mut out = Vec::new();
        if self.audit_max_size_mb == 0 {
            out.push(Problem::new(
                format!("{at}.audit_max_size_mb"),
                "must be at least 1 (0 would never rotate)",
            ));
        }
        for (key, v) in [
            ("events_per_namespace_qps", self.events_per_namespace_qps),
            (
                "events_per_namespace_burst",
                self.events_per_namespace_burst,
            ),
        ] {
            if v == 0 {
                out.push(Problem::new(
                    format!("{at}.{key}"),
                    "must be at least 1 (0 would refuse every event)",
                ));
            }
        }
        if self.service_account_max_token_s < 3600 {
            out.push(Problem::new(
                format!("{at}.service_account_max_token_s"),
                "must be at least 3600: kube-apiserver refuses a shorter maximum",
            ));
        }
        out
    }
}

impl Default for ApiServer {
    fn default() -> ApiServer {
        ApiServer {
            audit_max_size_mb: ApiServer::default_audit_size(),
            audit_max_backups: ApiServer::default_audit_backups(),
            audit_max_age_days: ApiServer::default_audit_age(),
            service_account_max_token_s: ApiServer::default_token(),
            events_per_namespace_qps: ApiServer::default_event_qps(),
            events_per_namespace_burst: ApiServer::default_event_burst(),
        }
    }
}
