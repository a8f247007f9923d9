//! `cluster init`: every secret the cluster needs, and the cluster.toml a
//! user edits, made in memory and checked, then written as one set (see
//! [`super::files::write_all`]): a refused init writes nothing.

use std::path::{Path, PathBuf};

use contract::config::{ClusterConfig, Member, Secret};
use time::OffsetDateTime;

use super::files::{write_all, NewFile};
use super::issue::{self, API_CA, ETCD_CA, FRONT_PROXY_CA, KUBERNETES_CA};
use super::load::read_cluster_toml_text;
use super::nodeconfig::{AdminConfig, NODECONFIG_SCHEMA};
use super::secrets::SecretsFile;
use super::{ClusterError, ADMIN, CLUSTER_TOML, SA_KEY, SA_PUB, SECRETS};

/// What `cluster init` is asked for.
#[derive(Debug, Clone)]
pub struct InitRequest {
    pub name: String,
    /// `HOST:PORT` of the Kubernetes API.
    pub control_plane_endpoint: String,
    /// The control-plane nodes known now; more can be added to cluster.toml
    /// before their configs are rendered.
    pub members: Vec<Member>,
}

/// Makes every file of a cluster in `dir` (created if missing). Without
/// `force`, refuses before writing anything when one of them exists.
/// Returns the paths written, in the order written.
pub fn init(
    dir: &Path,
    request: &InitRequest,
    force: bool,
    now: OffsetDateTime,
) -> Result<Vec<PathBuf>, ClusterError> {
    let cluster_toml = render_cluster_toml(request);
    // checked before anything is made: a bad name or endpoint is named
    // as the key it becomes in cluster.toml
    let config = read_cluster_toml_text(&cluster_toml, &dir.join(CLUSTER_TOML))?;

    let mut files: Vec<NewFile> = Vec::new();
    let mut add = |name: &str, data: String, mode: u32| {
        files.push(NewFile {
            path: dir.join(name),
            data: data.into_bytes(),
            mode,
        });
    };
    // keys before their certificates: a certificate without its key is
    // useless, the reverse is recoverable
    let api_ca = issue::new_ca(API_CA, now)?;
    let mut cas = Vec::new();
    for kind in [ETCD_CA, KUBERNETES_CA, FRONT_PROXY_CA] {
        cas.push((kind, issue::new_ca(kind, now)?));
    }
    for (kind, ca) in std::iter::once((API_CA, &api_ca)).chain(cas.iter().map(|(k, c)| (*k, c))) {
        add(kind.key_file, ca.key_pem.clone(), 0o600);
        add(kind.cert_file, ca.cert_pem.clone(), 0o644);
    }
    let (sa_key, sa_pub) = issue::service_account()?;
    add(SA_KEY, sa_key, 0o600);
    add(SA_PUB, sa_pub, 0o644);
    add(SECRETS, SecretsFile::generate()?.to_toml()?, 0o600);

    let admin = issue::client(&api_ca, "admin", now)?;
    let admin = AdminConfig {
        schema: NODECONFIG_SCHEMA,
        ca: api_ca.cert_pem.clone(),
        certificate: admin.cert_pem,
        key: Secret::new(admin.key_pem),
    };
    let admin_text = admin.to_toml().map_err(|source| ClusterError::Render {
        what: "the admin nodeconfig",
        source,
    })?;
    add(ADMIN, admin_text, 0o600);
    add(CLUSTER_TOML, cluster_toml, 0o644);
    files.extend(super::manifests::new_files(dir, &config.stack));

    let manifests = dir.join(super::manifests::MANIFESTS);
    std::fs::create_dir_all(&manifests).map_err(|source| ClusterError::Write {
        path: manifests,
        source,
    })?;
    write_all(&files, force)?;
    Ok(files.into_iter().map(|f| f.path).collect())
}

/// A TOML string literal (values come from flags: quoting is toml's job).
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// cluster.toml as a user reads it: every table present, with a comment
/// on what it is for. [`ClusterConfig::from_toml`] must read it back as
/// the request says (tested).
pub fn render_cluster_toml(r: &InitRequest) -> String {
    let defaults = ClusterConfig {
        schema: contract::config::CLUSTER_SCHEMA,
        name: String::new(),
        control_plane_endpoint: String::new(),
        control_plane: Default::default(),
        etcd: Default::default(),
        oidc: Default::default(),
        stack: Default::default(),
        addons: Default::default(),
        backup_targets: Default::default(),
    };
    let mut t = format!(
        "# The cluster config: `nodeimg cluster config` renders node configs from it.\n\
         # Edit it freely; nothing in it is secret (the keys are the other files in\n\
         # this directory). Reference: docs/machine-config.md, \"cluster.toml\".\n\
         schema = {}\n\
         name = {}\n\
         # HOST:PORT of the Kubernetes API: a load balancer, a VIP or one node.\n\
         control_plane_endpoint = {}\n\n\
         # Every control-plane node, listed before any node config is rendered:\n\
         # each control-plane config carries the whole list (etcd's peers).\n",
        defaults.schema,
        quoted(&r.name),
        quoted(&r.control_plane_endpoint)
    );
    if r.members.is_empty() {
        t.push_str(
            "# [[control_plane.members]]\n# hostname = \"cp-1\"\n# address = \"10.0.0.11\"\n",
        );
    }
    for (i, m) in r.members.iter().enumerate() {
        if i > 0 {
            t.push('\n');
        }
        t.push_str(&format!(
            "[[control_plane.members]]\nhostname = {}\naddress = {}\n",
            quoted(&m.hostname),
            quoted(&m.address.to_string())
        ));
    }
    let le = defaults.control_plane.leader_election;
    t.push_str(&format!(
        "\n[control_plane.leader_election]\n\
         # kube-controller-manager's and kube-scheduler's leases (seconds), upstream's\n\
         # defaults; raise all three where the API answers slowly (an emulated lab:\n\
         # 60, 45, 8), or leaders come and go\n\
         lease_duration_s = {}\n\
         renew_deadline_s = {}\n\
         retry_period_s = {}\n",
        le.lease_duration_s, le.renew_deadline_s, le.retry_period_s
    ));
    let backup = defaults.etcd.backup;
    let timing = defaults.etcd.timing;
    t.push_str(&format!(
        "\n[etcd]\n\
         # bootstrap: one `nodeimg cluster bootstrap` call, every other member joins by\n\
         # itself, and a blank machine replacing a member heals the membership;\n\
         # static: every member starts at once with the list above, no bootstrap\n\
         # call, and a member that loses its disk cannot rejoin\n\
         formation = {}\n\n\
         [etcd.backup]\n\
         # how often one elected control-plane node snapshots etcd, and how many it keeps\n\
         interval = {}\n\
         retain = {}\n\n\
         [etcd.timing]\n\
         # etcd's own defaults; raise both where members are slow to be scheduled\n\
         # (an emulated lab: 500 and 5000), or elections follow one another\n\
         heartbeat_interval_ms = {}\n\
         election_timeout_ms = {}\n\n\
         # OpenID Connect: issuer_url, client_id, username_claim, username_prefix,\n\
         # groups_claim, groups_prefix, ca (docs/kubernetes.md). Empty: none.\n\
         [oidc]\n\n\
         {}\
         # Defined by later versions; a key in it is refused for now.\n\
         [addons]\n\n\
         # Where etcd snapshots go besides the nodes' disks: [backup_targets.s3] with\n\
         # endpoint, bucket, prefix, region, credentials_file (TOML beside this file:\n\
         # access_key_id, secret_access_key), ca, retain (docs/machine-config.md).\n\
         [backup_targets]\n",
        quoted(defaults.etcd.formation.as_str()),
        quoted(&backup.interval.to_string()),
        backup.retain,
        timing.heartbeat_interval_ms,
        timing.election_timeout_ms,
        stack_tables(&defaults),
    ));
    t
}

/// `[control_plane.api_server]` and `[stack]` with their defaults.
fn stack_tables(defaults: &ClusterConfig) -> String {
    let api = defaults.control_plane.api_server;
    let s = &defaults.stack;
    let list = |v: &[String]| {
        let items: Vec<String> = v.iter().map(|n| quoted(n)).collect();
        format!("[{}]", items.join(", "))
    };
    format!(
        "[control_plane.api_server]\n\
         # the audit log rotates at this size (MiB) and keeps this many, this long\n\
         audit_max_size_mb = {}\n\
         audit_max_backups = {}\n\
         audit_max_age_days = {}\n\
         # the longest service-account token the API issues (seconds, at least 3600)\n\
         service_account_max_token_s = {}\n\
         # EventRateLimit per namespace: events a second and the burst above it\n\
         events_per_namespace_qps = {}\n\
         events_per_namespace_burst = {}\n\n\
         # The security stack: `nodeimg cluster manifests` renders it into manifests/\n\
         # and the elected control-plane node applies it (docs/security-stack.md).\n\
         [stack]\n\
         apply = {}\n\
         # workload namespaces, each with Pod Security, default-deny network\n\
         # policies, default limits and a quota\n\
         namespaces = {}\n\
         pod_security = {}\n\
         network_policies = {}\n\
         # bound to the read-only auditor role (\"\": none)\n\
         auditor_group = {}\n\
         priority_classes = {}\n\n\
         [stack.limits]\n\
         enabled = {}\n\
         default_request_cpu = {}\n\
         default_request_memory = {}\n\
         default_cpu = {}\n\
         default_memory = {}\n\
         max_cpu = {}\n\
         max_memory = {}\n\n\
         [stack.quota]\n\
         enabled = {}\n\
         pods = {}\n\
         cpu = {}\n\
         memory = {}\n\n\
         [stack.dns]\n\
         enabled = {}\n\
         replicas = {}\n\
         # where other names go: /etc/resolv.conf (the node's servers) or IP[:PORT]s;\n\
         # [] on nodes without name servers (cluster names only)\n\
         forward = {}\n\n\
         # what every pod outside kube-system must be, enforced by the API server\n\
         [stack.admission]\n\
         enabled = {}\n\
         # image prefixes, each ending in '/' (nodeimg.local/: the preloaded images)\n\
         allowed_registries = {}\n\
         require_limits = {}\n\
         non_root = {}\n\
         read_only_root = {}\n\
         drop_all_capabilities = {}\n\
         no_privileged = {}\n\
         no_host_namespaces = {}\n\n",
        api.audit_max_size_mb,
        api.audit_max_backups,
        api.audit_max_age_days,
        api.service_account_max_token_s,
        api.events_per_namespace_qps,
        api.events_per_namespace_burst,
        s.apply,
        list(&s.namespaces),
        quoted(s.pod_security.as_str()),
        s.network_policies,
        quoted(&s.auditor_group),
        s.priority_classes,
        s.limits.enabled,
        quoted(&s.limits.default_request_cpu),
        quoted(&s.limits.default_request_memory),
        quoted(&s.limits.default_cpu),
        quoted(&s.limits.default_memory),
        quoted(&s.limits.max_cpu),
        quoted(&s.limits.max_memory),
        s.quota.enabled,
        s.quota.pods,
        quoted(&s.quota.cpu),
        quoted(&s.quota.memory),
        s.dns.enabled,
        s.dns.replicas,
        list(&s.dns.forward),
        s.admission.enabled,
        list(&s.admission.allowed_registries),
        s.admission.require_limits,
        s.admission.non_root,
        s.admission.read_only_root,
        s.admission.drop_all_capabilities,
        s.admission.no_privileged,
        s.admission.no_host_namespaces,
    )
}
