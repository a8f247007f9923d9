//! What applying a new machine config to a running node means, table by
//! table: which changes the agent can make live and which take a reboot.
//! Pure: the agent applies, `nodeimg node apply-config` prints.
//!
//! Live: `[network]`, `[time]`, `[containerd]` (its registry files are
//! read by containerd on every pull), `[cluster.control_plane.stack]`
//! (the elected node applies the new set and prunes what no longer
//! renders) and the control plane's encryption keys (the API server
//! reloads its encryption config within a minute: a key rotation). Everything else (the node's name, role and the rest of its
//! cluster, the API's own trust) is fixed for a boot: the running
//! services and certificates were made for it.

use serde::{Deserialize, Serialize};

use super::{Cluster, MachineConfig, Stack};

/// The live table of the cluster's security stack, as `changes` names it.
pub const STACK_TABLE: &str = "cluster.control_plane.stack";
/// The live keys of encryption at rest (`encryption_key`, its name and
/// `encryption_read_keys`), as `changes` names them.
pub const ENCRYPTION_KEYS: &str = "cluster.control_plane.encryption_keys";

/// The tables that differ, split by how they take effect.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    /// Tables applied while the node runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub live: Vec<String>,
    /// Tables that take effect at the next boot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reboot: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.live.is_empty() && self.reboot.is_empty()
    }
}

/// The tables in which `new` differs from `old`.
pub fn changes(old: &MachineConfig, new: &MachineConfig) -> Changes {
    let mut c = Changes::default();
    let mut mark = |differs: bool, table: &str, live: bool| {
        if differs {
            let list = if live { &mut c.live } else { &mut c.reboot };
            list.push(table.to_string());
        }
    };
    mark(old.hostname != new.hostname, "hostname", false);
    mark(old.role != new.role, "role", false);
    mark(fixed(&old.cluster) != fixed(&new.cluster), "cluster", false);
    mark(
        stack(&old.cluster) != stack(&new.cluster),
        STACK_TABLE,
        true,
    );
    mark(
        keys(&old.cluster) != keys(&new.cluster),
        ENCRYPTION_KEYS,
        true,
    );
    mark(old.api != new.api, "api", false);
    mark(old.network != new.network, "network", true);
    mark(old.time != new.time, "time", true);
    mark(old.containerd != new.containerd, "containerd", true);
    c
}

fn stack(c: &Cluster) -> Option<&Stack> {
    c.control_plane.as_ref()?.stack.as_ref()
}

fn keys(c: &Cluster) -> Vec<(&str, &str)> {
    c.control_plane
        .as_ref()
        .map(|cp| cp.encryption_keys())
        .unwrap_or_default()
}

/// `[cluster]` without what changes live.
fn fixed(c: &Cluster) -> Cluster {
    let mut c = c.clone();
    if let Some(cp) = c.control_plane.as_mut() {
        cp.stack = None;
        cp.encryption_key = None;
        cp.encryption_key_name = None;
        cp.encryption_read_keys.clear();
    }
    c
}
