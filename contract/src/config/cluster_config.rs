//! `cluster.toml`: the cluster config a user edits, beside the secrets
//! `nodeimg cluster init` made. Node configs are rendered from it; nothing
//! in it is secret, so it can live in version control.
//!
//! Read like the machine config: `schema` first, typed tables that refuse
//! unknown keys, every error naming the file and the dotted key, then the
//! checks serde cannot express. The agent links this too: the parts nodes
//! get ([`Member`], [`EtcdBackup`]) are the machine config's own types.

use serde::{Deserialize, Serialize};

use super::cluster::{check_endpoint, member_problems, EtcdBackup, Member};
use super::validate::dns_label;
use super::{parse_versioned, ConfigError, Problem};

/// The cluster.toml schema this build reads and writes.
pub const CLUSTER_SCHEMA: u32 = 1;

/// The whole document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Always [`CLUSTER_SCHEMA`].
    pub schema: u32,
    /// The cluster's name (a DNS label); every node config carries it.
    pub name: String,
    /// `HOST:PORT` of the Kubernetes API (a load balancer, a VIP or one
    /// control-plane node).
    pub control_plane_endpoint: String,
    #[serde(default)]
    pub control_plane: ControlPlane,
    #[serde(default)]
    pub etcd: Etcd,
    /// `[oidc]`: later issues define it; typed, so any key in it is refused.
    #[serde(default)]
    pub oidc: Oidc,
    /// `[addons]`: as `[oidc]`.
    #[serde(default)]
    pub addons: Addons,
    /// `[backup_targets]`: as `[oidc]`.
    #[serde(default)]
    pub backup_targets: BackupTargets,
}

/// `[control_plane]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlPlane {
    /// `[[control_plane.members]]`: every control-plane node, listed before
    /// any is rendered (each one's config carries the whole list).
    #[serde(default)]
    pub members: Vec<Member>,
}

/// `[etcd]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Etcd {
    /// `[etcd.backup]`: `interval` (default `1h`), `retain` (default 24).
    #[serde(default)]
    pub backup: EtcdBackup,
}

/// `[oidc]`: empty in schema 1.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Oidc {}

/// `[addons]`: empty in schema 1.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Addons {}

/// `[backup_targets]`: empty in schema 1.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupTargets {}

impl ClusterConfig {
    /// Parses `text` (named `file` in errors) and runs every check.
    pub fn from_toml(text: &str, file: &str) -> Result<ClusterConfig, ConfigError> {
        let c: ClusterConfig = parse_versioned(text, file, CLUSTER_SCHEMA)?;
        let problems = c.problems();
        super::checked(c, problems, file)
    }

    /// Every check serde cannot express, one [`Problem`] per key.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        if self.schema != CLUSTER_SCHEMA {
            out.push(Problem::new(
                "schema",
                format!(
                    "is {}, this build reads schema {CLUSTER_SCHEMA}",
                    self.schema
                ),
            ));
        }
        if let Err(why) = dns_label(&self.name) {
            out.push(Problem::new("name", why));
        }
        if let Err(why) = check_endpoint(&self.control_plane_endpoint) {
            out.push(Problem::new("control_plane_endpoint", why));
        }
        out.extend(member_problems(
            "control_plane.members",
            &self.control_plane.members,
        ));
        out.extend(self.etcd.backup.problems("etcd.backup"));
        out
    }

    /// The member named `hostname`, if it is one.
    pub fn member(&self, hostname: &str) -> Option<&Member> {
        self.control_plane
            .members
            .iter()
            .find(|m| m.hostname == hostname)
    }
}
