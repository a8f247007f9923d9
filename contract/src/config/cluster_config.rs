//! `cluster.toml`: the cluster config a user edits, beside the secrets
//! `nodeimg cluster init` made. Node configs are rendered from it; nothing
//! in it is secret, so it can live in version control.
//!
//! Read like the machine config: `schema` first, typed tables that refuse
//! unknown keys, every error naming the file and the dotted key, then the
//! checks serde cannot express. The agent links this too: the parts nodes
//! get ([`Member`], [`EtcdBackup`]) are the machine config's own types.

use serde::{Deserialize, Serialize};

use super::cluster::{
    check_endpoint, member_problems, EtcdBackup, EtcdFormation, EtcdTiming, LeaderElection, Member,
};
use super::stack::{ApiServer, Stack};
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
    /// `[oidc]`: an OpenID Connect issuer whose ID tokens the API servers
    /// accept; empty, none.
    #[serde(default)]
    pub oidc: Oidc,
    /// `[stack]`: the security stack `DIR/manifests/` holds and the
    /// elected control-plane node applies.
    #[serde(default)]
    pub stack: Stack,
    /// `[addons]`: later issues define it; typed, so any key in it is refused.
    #[serde(default)]
    pub addons: Addons,
    /// `[backup_targets]`: as `[addons]`.
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
    /// `[control_plane.leader_election]`: the controllers' leases.
    #[serde(default)]
    pub leader_election: LeaderElection,
    /// `[control_plane.api_server]`: audit log rotation, token lifetime.
    #[serde(default)]
    pub api_server: ApiServer,
}

/// `[etcd]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Etcd {
    /// `[etcd.backup]`: `interval` (default `1h`), `retain` (default 24).
    #[serde(default)]
    pub backup: EtcdBackup,
    /// `[etcd.timing]`: `heartbeat_interval_ms` (default 100),
    /// `election_timeout_ms` (default 1000).
    #[serde(default)]
    pub timing: EtcdTiming,
    /// `formation`: `bootstrap` (default: one bootstrap call, every other
    /// member joins by itself) or `static` (see [`EtcdFormation`]).
    #[serde(default)]
    pub formation: EtcdFormation,
}

/// `[oidc]` (and `[cluster.control_plane.oidc]` of a control-plane node's
/// config): kube-apiserver's `--oidc-*` flags. Users from the issuer are
/// authenticated only; what they may do is RBAC's to say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Oidc {
    /// `https://…`: the `iss` of the tokens, where discovery is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_url: Option<String>,
    /// The `aud` the tokens must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The claim that names the user (the API server's default: `sub`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_claim: Option<String>,
    /// Put before every user name, so an issuer's users cannot take the
    /// names of the cluster's own (`oidc:` is a good choice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_claim: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_prefix: Option<String>,
    /// PEM of the CA that signs the issuer's serving certificate, when it
    /// is not one the image trusts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
}

impl Oidc {
    /// An issuer is configured.
    pub fn is_set(&self) -> bool {
        *self != Oidc::default()
    }

    /// Problems under the table `at` (`oidc` or `cluster.control_plane.oidc`).
    pub fn problems(&self, at: &str) -> Vec<Problem> {
        let mut out = Vec::new();
        if !self.is_set() {
            return out;
        }
        match &self.issuer_url {
            None => out.push(Problem::new(
                format!("{at}.issuer_url"),
                "missing: the other oidc keys need the issuer",
            )),
            Some(u) => {
                let host = u.strip_prefix("https://").unwrap_or_default();
                if host.is_empty() || host.starts_with('/') || u.contains(['?', '#', ' ']) {
                    out.push(Problem::new(
                        format!("{at}.issuer_url"),
                        format!("{u:?} is not an https:// URL without query or fragment (the API server accepts no other)"),
                    ));
                }
            }
        }
        if self.client_id.as_deref().is_none_or(str::is_empty) {
            out.push(Problem::new(
                format!("{at}.client_id"),
                "missing: the API server checks each token's audience against it",
            ));
        }
        for (key, v) in [
            ("username_claim", &self.username_claim),
            ("groups_claim", &self.groups_claim),
        ] {
            if v.as_deref()
                .is_some_and(|c| c.is_empty() || c.contains([',', '=']))
            {
                out.push(Problem::new(format!("{at}.{key}"), "must be a claim name"));
            }
        }
        if let Some(ca) = &self.ca {
            super::validate::certificates(&format!("{at}.ca"), ca, &mut out);
        }
        out
    }
}

/// `[addons]`: empty in schema 1.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Addons {}

/// `[backup_targets]`: where etcd snapshots go besides the nodes' disks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupTargets {
    /// `[backup_targets.s3]`: an S3-compatible object store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<super::backup_target::S3Target>,
}

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
        out.extend(self.etcd.timing.problems("etcd.timing"));
        out.extend(self.etcd.formation.problem(
            &self.control_plane.members,
            "etcd.formation",
            "[[control_plane.members]]",
        ));
        out.extend(
            self.control_plane
                .leader_election
                .problems("control_plane.leader_election"),
        );
        out.extend(self.oidc.problems("oidc"));
        out.extend(
            self.control_plane
                .api_server
                .problems("control_plane.api_server"),
        );
        out.extend(self.stack.problems("stack"));
        if let Some(s3) = &self.backup_targets.s3 {
            out.extend(s3.problems("backup_targets.s3"));
        }
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
