//! The machine config: one versioned TOML document per node (`schema = 1`)
//! that the builder side writes or checks and the agent reads.
//!
//! Every table refuses unknown keys, and every error names its key: TOML
//! and type errors carry the file, line and dotted key (from toml's span),
//! and the checks serde cannot express ([`MachineConfig::problems`]) return
//! a [`Problem`] per key. The node's secrets (its API private key, registry
//! passwords, and on a control-plane node the cluster's CA keys, service-
//! account key, encryption key and bootstrap token) are [`Secret`]s: they
//! never show in `Debug`, and [`MachineConfig::redacted`] is the view to
//! print. A worker's config never holds a CA private key (refused, named),
//! and a node's own `api.key` that is any CA's key is refused.
//!
//! The cluster config (`cluster.toml`, what `nodeimg cluster` renders node
//! configs from) is [`cluster_config`], read the same way.
//!
//! The reference is `docs/machine-config.md`; its headings mirror the
//! tables here.

pub mod backup_target;
mod changes;
mod cluster;
pub mod cluster_config;
mod image;
mod pem;
pub mod registries;
mod stack;
mod validate;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use changes::{changes, Changes, ENCRYPTION_KEYS, STACK_TABLE};
pub use cluster::{
    check_bootstrap_token, check_encryption_key, check_endpoint, member_problems, CaPair,
    EtcdBackup, EtcdFormation, EtcdTiming, Interval, LeaderElection, Member, ServiceAccountKeys,
    ENCRYPTION_KEY_BYTES,
};
pub use cluster_config::{ClusterConfig, Oidc, CLUSTER_SCHEMA};
pub use image::{check_against_image, ImageFacts, ETCD_PACKAGE};
pub use pem::{PemBlock, PemError};
pub use stack::{Admission, ApiServer, Dns, Falco, Limits, PodSecurityLevel, Quota, Stack};

/// The schema this build reads and writes.
pub const SCHEMA: u32 = 1;

/// What a node is in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Runs etcd and the Kubernetes control plane (and may run workloads).
    ControlPlane,
    /// Runs workloads only.
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ControlPlane => "control-plane",
            Role::Worker => "worker",
        }
    }
}

/// A value that must never be printed: `Debug` and `Display` show
/// `(redacted)`; [`Secret::expose`] hands out the text where it is used.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

/// What a secret shows as.
pub const REDACTED: &str = "(redacted)";

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// The whole document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    /// Always [`SCHEMA`].
    pub schema: u32,
    /// The node's name: DNS labels, lower-case (also its Kubernetes node name).
    pub hostname: String,
    pub role: Role,
    pub cluster: Cluster,
    #[serde(default)]
    pub network: Network,
    #[serde(default)]
    pub time: Time,
    pub api: Api,
    #[serde(default)]
    pub containerd: Containerd,
}

/// `[cluster]`: the cluster this node belongs to. Everything but `name`
/// is optional (`nodeimg cluster config` fills it; see `cluster.rs`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// The cluster's name (a DNS label).
    pub name: String,
    /// `HOST:PORT` of the Kubernetes API, as every node dials it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_endpoint: Option<String>,
    /// Kubernetes bootstrap token, `[a-z0-9]{6}.[a-z0-9]{16}`: how a
    /// kubelet first authenticates to join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_token: Option<Secret>,
    /// `[cluster.kubernetes_ca]`: the Kubernetes CA (every node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_ca: Option<CaPair>,
    /// `[cluster.etcd_ca]`: the etcd CA (control-plane nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_ca: Option<CaPair>,
    /// `[cluster.front_proxy_ca]`: the aggregation layer's CA (control-plane nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub front_proxy_ca: Option<CaPair>,
    /// `[cluster.control_plane]`: what only control-plane nodes hold.
    /// Typed, so unknown keys in it are refused too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<ClusterControlPlane>,
}

impl Cluster {
    /// The CAs present, by their table name.
    pub fn cas(&self) -> impl Iterator<Item = (&'static str, &CaPair)> {
        [
            ("kubernetes_ca", &self.kubernetes_ca),
            ("etcd_ca", &self.etcd_ca),
            ("front_proxy_ca", &self.front_proxy_ca),
        ]
        .into_iter()
        .filter_map(|(n, p)| p.as_ref().map(|p| (n, p)))
    }
}

/// `[cluster.control_plane]`: the control plane's members and the keys
/// only control-plane nodes hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterControlPlane {
    /// Encryption-at-rest key for Secrets: base64 of 32 bytes (aescbc or
    /// secretbox). It encrypts every Secret written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_key: Option<Secret>,
    /// The name `encryption_key` goes by in the stored data
    /// (`k8s:enc:secretbox:v1:NAME:`); [`DEFAULT_KEY_NAME`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_key_name: Option<String>,
    /// `[[cluster.control_plane.encryption_read_keys]]`: older (or not yet
    /// used) keys that still decrypt, during a rotation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub encryption_read_keys: Vec<NamedKey>,
    /// `[cluster.control_plane.service_account]`: the token signing pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<ServiceAccountKeys>,
    /// `[cluster.control_plane.etcd_backup]`: snapshot interval and retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_backup: Option<EtcdBackup>,
    /// `[cluster.control_plane.etcd_backup_s3]`: where the snapshots are
    /// also copied (the cluster's `[backup_targets.s3]`, with its keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_backup_s3: Option<backup_target::S3Upload>,
    /// `[cluster.control_plane.etcd_timing]`: heartbeat and election timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_timing: Option<EtcdTiming>,
    /// `etcd_formation`: `static` starts etcd on every member at once with
    /// the whole member list; absent, the bootstrap-once formation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_formation: Option<EtcdFormation>,
    /// `[cluster.control_plane.leader_election]`: the controllers' leases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_election: Option<LeaderElection>,
    /// `[[cluster.control_plane.members]]`: every control-plane node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<Member>,
    /// `[cluster.control_plane.oidc]`: the cluster's `[oidc]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<cluster_config::Oidc>,
    /// `[cluster.control_plane.api_server]`: audit log rotation, token lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_server: Option<ApiServer>,
    /// `[cluster.control_plane.stack]`: the cluster's `[stack]`, which the
    /// elected control-plane node applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<Stack>,
}

/// The name of a cluster's first encryption key (what every Secret of a
/// cluster made before keys had names was stored under).
pub const DEFAULT_KEY_NAME: &str = "key1";

/// A named encryption-at-rest key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedKey {
    /// `key` and a number (`key2`): how stored data names it.
    pub name: String,
    /// Base64 of 32 bytes.
    pub key: Secret,
}

/// Whether `name` can name an encryption key (`key` then digits).
pub fn check_key_name(name: &str) -> Result<(), String> {
    match name.strip_prefix("key") {
        Some(n) if !n.is_empty() && n.len() <= 6 && n.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
        _ => Err(format!(
            "{name:?} is not an encryption key name (key1, key2, …)"
        )),
    }
}

impl ClusterControlPlane {
    /// The keys the API server decrypts with, the encrypting one first:
    /// `(name, base64 key)`.
    pub fn encryption_keys(&self) -> Vec<(&str, &str)> {
        let mut out: Vec<(&str, &str)> = self
            .encryption_key
            .iter()
            .map(|k| {
                (
                    self.encryption_key_name
                        .as_deref()
                        .unwrap_or(DEFAULT_KEY_NAME),
                    k.expose(),
                )
            })
            .collect();
        out.extend(
            self.encryption_read_keys
                .iter()
                .map(|k| (k.name.as_str(), k.key.expose())),
        );
        out
    }
}

/// `[network]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// `[[network.interfaces]]`, one per link the node configures.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
}

/// `[[network.interfaces]]`: one link, chosen by `mac` or by `name`, set up
/// by DHCP or with static addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    /// The link's MAC address, `aa:bb:cc:dd:ee:ff`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The link's kernel name, e.g. `eth0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Ask DHCP for an address (and gateway and DNS).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dhcp: bool,
    /// Static addresses in CIDR form, `10.0.0.2/24`, `fd00::2/64`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// Default route via this address (static only; inside one of `addresses`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Name servers, IP addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
}

/// `[time]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Time {
    /// NTP servers: host names or IP addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
}

/// `[api]`: the node API's mutual TLS trust.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Api {
    /// PEM of the cluster API CA's certificate: clients must present a
    /// certificate it issued.
    pub client_ca: String,
    /// PEM of this node's own API certificate (its chain may follow).
    pub certificate: String,
    /// PEM of this node's private key for `certificate`. Never a CA's key.
    pub key: Secret,
}

/// `[containerd]`: placeholders the runtime step fills.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Containerd {
    /// `[containerd.registry_mirrors]`: registry host → mirror URLs, tried in order.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub registry_mirrors: BTreeMap<String, Vec<String>>,
    /// `[containerd.registry_credentials."<host>"]`: how to log in to a registry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub registry_credentials: BTreeMap<String, RegistryCredential>,
}

/// One registry's login: `username` + `password`, or an identity `token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryCredential {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
}

/// One thing wrong with a config, named by its dotted key
/// (`network.interfaces[0].addresses[1]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl Problem {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why a config file cannot be used. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not TOML, or not this schema's shape (an unknown key, a wrong type, a
    /// missing key): toml's message, placed by line, column and key.
    #[error("{file}:{line}:{column}: {}{message}", key.as_ref().map(|k| format!("{k}: ")).unwrap_or_default())]
    Toml {
        file: String,
        line: usize,
        column: usize,
        key: Option<String>,
        message: String,
    },
    #[error("{file}: schema = {found} is not supported (this build reads schema {supported})")]
    Schema {
        file: String,
        found: i64,
        supported: u32,
    },
    #[error("{file}: {}", problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
    Invalid {
        file: String,
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// Every problem as `key: message` lines, for a CLI to print one a line.
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            ConfigError::Toml { key, message, .. } => {
                vec![Problem::new(
                    key.clone().unwrap_or_default(),
                    message.clone(),
                )]
            }
            ConfigError::Schema {
                found, supported, ..
            } => vec![Problem::new(
                "schema",
                format!("schema = {found} is not supported (this build reads schema {supported})"),
            )],
            ConfigError::Invalid { problems, .. } => problems.clone(),
        }
    }
}

/// Just the version, read before the rest so a newer document is refused
/// for its schema, not for the keys this build does not know.
#[derive(Deserialize)]
struct SchemaProbe {
    schema: Option<toml::Value>,
}

impl MachineConfig {
    /// Parses `text` (named `file` in errors) and runs every check:
    /// the one way a config is read.
    pub fn from_toml(text: &str, file: &str) -> Result<MachineConfig, ConfigError> {
        let c = MachineConfig::parse(text, file)?;
        let problems = c.problems();
        checked(c, problems, file)
    }

    /// Parses without the checks beyond serde (schema included).
    pub fn parse(text: &str, file: &str) -> Result<MachineConfig, ConfigError> {
        parse_versioned(text, file, SCHEMA)
    }

    /// Every check serde cannot express, one [`Problem`] per key.
    pub fn problems(&self) -> Vec<Problem> {
        validate::problems(self)
    }

    /// A copy with every secret replaced by [`REDACTED`]: what to print.
    pub fn redacted(&self) -> MachineConfig {
        let mut c = self.clone();
        let hide = |s: &mut Secret| *s = Secret::new(REDACTED);
        hide(&mut c.api.key);
        let cl = &mut c.cluster;
        let cas = [
            &mut cl.kubernetes_ca,
            &mut cl.etcd_ca,
            &mut cl.front_proxy_ca,
        ];
        let mut secrets: Vec<&mut Secret> = cas
            .into_iter()
            .flatten()
            .filter_map(|ca| ca.key.as_mut())
            .collect();
        secrets.extend(cl.bootstrap_token.as_mut());
        if let Some(cp) = &mut cl.control_plane {
            secrets.extend(cp.encryption_key.as_mut());
            secrets.extend(cp.encryption_read_keys.iter_mut().map(|k| &mut k.key));
            secrets.extend(cp.service_account.as_mut().map(|sa| &mut sa.private_key));
            secrets.extend(
                cp.etcd_backup_s3
                    .as_mut()
                    .map(|s3| &mut s3.secret_access_key),
            );
        }
        secrets.into_iter().for_each(hide);
        for cred in c.containerd.registry_credentials.values_mut() {
            for s in [&mut cred.password, &mut cred.token].into_iter().flatten() {
                *s = Secret::new(REDACTED);
            }
        }
        c
    }

    /// The document as TOML. Print only [`MachineConfig::redacted`]'s.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }
}

/// Every PEM block of `text` (blank lines between blocks allowed; other
/// text refused).
pub fn pem_blocks(text: &str) -> Result<Vec<PemBlock>, PemError> {
    pem::parse(text)
}

/// Parses a versioned TOML document (the machine config, cluster.toml, or
/// any other typed file with a `schema` key): `schema` alone first, so a
/// newer document is refused for its schema, not for the keys this build
/// does not know; then the whole, every error placed by line, column and
/// key. Only serde's checks: callers run their own.
/// `value` when `problems` is empty, else one error naming `file` and
/// every problem: how each of our TOML documents ends its checks.
pub fn checked<T>(value: T, problems: Vec<Problem>, file: &str) -> Result<T, ConfigError> {
    if problems.is_empty() {
        Ok(value)
    } else {
        Err(ConfigError::Invalid {
            file: file.to_string(),
            problems,
        })
    }
}

pub fn parse_versioned<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &str,
    supported: u32,
) -> Result<T, ConfigError> {
    let toml_err = |e: toml::de::Error| {
        let at = e.span().map(|s| s.start);
        let (line, column) = at.map(|at| line_column(text, at)).unwrap_or((1, 1));
        ConfigError::Toml {
            file: file.to_string(),
            line,
            column,
            key: at.and_then(|at| key_at(text, at)),
            message: e.message().trim().to_string(),
        }
    };
    let probe: SchemaProbe = toml::from_str(text).map_err(toml_err)?;
    match probe.schema.as_ref().map(toml::Value::as_integer) {
        Some(Some(n)) if n == i64::from(supported) => {}
        Some(Some(n)) => {
            return Err(ConfigError::Schema {
                file: file.to_string(),
                found: n,
                supported,
            })
        }
        // missing or not a number: serde names it below
        _ => {}
    }
    toml::from_str(text).map_err(toml_err)
}

/// 1-based line and column (in characters) of byte offset `at`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let before = text.get(..at.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}

/// The dotted key at byte offset `at`: the table header above it
/// (`[[network.interfaces]]` counted into an index) and the key on its
/// line. `None` when the offset is not on a `key = value` line or header.
fn key_at(text: &str, at: usize) -> Option<String> {
    let at = at.min(text.len());
    let mut table = String::new();
    let mut arrays: BTreeMap<String, usize> = BTreeMap::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let end = offset + line.len();
        let t = line.trim();
        let header = if let Some(h) = t.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
            let name = h.trim().to_string();
            let n = arrays
                .entry(name.clone())
                .and_modify(|n| *n += 1)
                .or_insert(0);
            Some(format!("{name}[{n}]"))
        } else {
            t.strip_prefix('[')
                .and_then(|r| r.split(']').next())
                .map(|h| h.trim().to_string())
        };
        let is_last = at < end || end == text.len();
        if let Some(h) = header {
            // a key under `[a]` that is itself an array of tables keeps its index
            table = resolve_arrays(&h, &arrays);
            if is_last {
                return Some(table);
            }
        } else if is_last {
            let key = t
                .split_once('=')
                .map(|(k, _)| k.trim().trim_matches('"').to_string())
                .filter(|k| !k.is_empty() && !k.starts_with('#'))?;
            return Some(if table.is_empty() {
                key
            } else {
                format!("{table}.{key}")
            });
        }
        offset = end;
    }
    None
}

/// `network.interfaces.x` after `[[network.interfaces]]` seen n+1 times is
/// `network.interfaces[n].x`.
fn resolve_arrays(header: &str, arrays: &BTreeMap<String, usize>) -> String {
    if header.ends_with(']') {
        return header.to_string();
    }
    let mut best: Option<(&String, &usize)> = None;
    for (name, n) in arrays {
        let prefix = format!("{name}.");
        if header.starts_with(&prefix) && best.is_none_or(|(b, _)| name.len() > b.len()) {
            best = Some((name, n));
        }
    }
    match best {
        Some((name, n)) => format!("{name}[{n}]{}", header.get(name.len()..).unwrap_or("")),
        None => header.to_string(),
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;

#[cfg(test)]
#[path = "cluster_tests.rs"]
mod cluster_tests;

#[cfg(test)]
#[path = "props.rs"]
mod props;
