//! etcd on a control-plane node, as the builder, the agent and `nodeimg`
//! agree on it: where the agent keeps the certificates it issues, the key
//! the bootstrap writes, and the state the boot report carries (apart from
//! the node's own readiness: a node runs its services before any cluster
//! exists).

use serde::{Deserialize, Serialize};

/// etcd's client port (the v3 JSON gateway is served on it too).
pub const CLIENT_PORT: u16 = 2379;
/// etcd's peer port.
pub const PEER_PORT: u16 = 2380;
/// The data directory (`--data-dir`); `member/` inside it means the node
/// holds a member's data.
pub const DATA_DIR: &str = "/var/lib/etcd";
/// Where the agent writes the certificates it issues from the etcd CA
/// (`ca.crt`, `server.{crt,key}`, `peer.{crt,key}`, `client.{crt,key}`).
pub const PKI_DIR: &str = "/var/lib/nodeimg/pki/etcd";
/// The key the bootstrap writes, holding the cluster's name: a node never
/// joins an etcd cluster that names another cluster.
pub const CLUSTER_KEY: &str = "/nodeimg/cluster";

/// Where this node's etcd member stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EtcdState {
    /// No data and no bootstrap yet: etcd is not started.
    #[default]
    WaitingForBootstrap,
    /// Looking for a voting member among the configured control-plane
    /// peers, removing this node's previous life, adding itself as a
    /// learner (`detail` says what it waits for).
    Joining,
    /// Started; not answering as a member yet.
    Starting,
    /// A member that does not vote yet.
    Learner,
    /// A voting member.
    Voter,
    /// Cannot run or stopped answering (`error` says why).
    Failed,
}

impl EtcdState {
    pub fn as_str(self) -> &'static str {
        match self {
            EtcdState::WaitingForBootstrap => "waiting-for-bootstrap",
            EtcdState::Joining => "joining",
            EtcdState::Starting => "starting",
            EtcdState::Learner => "learner",
            EtcdState::Voter => "voter",
            EtcdState::Failed => "failed",
        }
    }
}

/// The report's `etcd` section (control-plane nodes only). IDs are hex,
/// as `etcdctl` prints them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EtcdReport {
    pub state: EtcdState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What a joining member or a learner waits for (another learner to
    /// be promoted, its log to catch up), or what refused the join.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member_id: Option<String>,
    /// The leader this member sees.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// The certificates the agent issued from the etcd CA.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificates: Option<CertsReport>,
    /// The scheduled backups, on a voting member.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backups: Option<BackupsReport>,
}

/// Whether this member holds the backup lease and what it wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackupsReport {
    /// This member holds the lease on [`BACKUP_LEADER_KEY`].
    pub elected: bool,
    /// Snapshots taken this boot.
    pub taken: u32,
    /// Snapshots kept in [`BACKUP_DIR`] after the last pruning.
    pub kept: u32,
    /// The newest: its file name, when it was taken (seconds since the
    /// epoch), and its sha256.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
    pub last_at: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_sha256: Option<String>,
    /// Why the last attempt (election or snapshot) failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The copies in the object store (`[cluster.control_plane.etcd_backup_s3]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreReport>,
}

/// What the holder copied to the object store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StoreReport {
    /// `s3://BUCKET/PREFIX` (the endpoint is in the config).
    pub target: String,
    /// Snapshots uploaded this boot.
    pub uploaded: u32,
    /// The newest uploaded object's key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
    /// Snapshots in the store under the prefix after the last pruning.
    pub kept: u32,
    /// Why the last upload, listing or pruning failed (retried).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A scheduled snapshot's file (and object) name: `etcd-UNIXTIME.db`.
pub fn backup_name(at: u64) -> String {
    format!("etcd-{at}.db")
}

/// The time in a [`backup_name`], or `None` for any other name.
pub fn backup_time(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("etcd-")?.strip_suffix(".db")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The key the backup election creates under a lease: one holder at a
/// time, another once the holder's lease runs out.
pub const BACKUP_LEADER_KEY: &str = "/nodeimg/backup-leader";
/// Left by `reset` before the reboot: the next boot wipes the member's
/// data before etcd could start, and the node joins as a new member.
pub const RESET_MARK: &str = "/var/lib/nodeimg/etcd-reset";
/// Where scheduled snapshots are kept (`etcd-UNIXTIME.db` and a
/// `etcd-UNIXTIME.db.sha256` beside each).
pub const BACKUP_DIR: &str = "/var/lib/nodeimg/etcd-backups";

/// The issued certificates' validity (seconds since the epoch) and how
/// often they were renewed this boot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CertsReport {
    pub issued: u64,
    pub expires: u64,
    pub renewals: u32,
}

/// `true` once two thirds of a certificate's lifetime (from its issue to
/// `expires`) have passed: the agent renews it then, so a certificate in
/// use never runs out while the agent lives.
pub fn renewal_due(issued: u64, expires: u64, now: u64) -> bool {
    let life = u128::from(expires.saturating_sub(issued));
    let age = u128::from(now.saturating_sub(issued));
    age * 3 >= life * 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_falls_due_at_two_thirds_of_the_lifetime() {
        // a 90 s certificate issued at t=1000 is renewed from t=1060 on
        assert!(!renewal_due(1000, 1090, 1000));
        assert!(!renewal_due(1000, 1090, 1059));
        assert!(renewal_due(1000, 1090, 1060));
        assert!(renewal_due(1000, 1090, 2000));
        // a year's certificate: not before day 243
        let year = 365 * 86_400;
        assert!(!renewal_due(0, year, 243 * 86_400 - 1));
        assert!(renewal_due(0, year, 244 * 86_400));
        // an expired or empty one is due at once
        assert!(renewal_due(1000, 1000, 1000));
        assert!(renewal_due(1000, 900, 1000));
    }

    #[test]
    fn states_serialise_as_the_report_names_them() {
        for s in [
            EtcdState::WaitingForBootstrap,
            EtcdState::Joining,
            EtcdState::Starting,
            EtcdState::Learner,
            EtcdState::Voter,
            EtcdState::Failed,
        ] {
            let json = serde_json::to_string(&s).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
        }
    }
}
