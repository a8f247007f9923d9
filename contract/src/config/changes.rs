//! What applying a new machine config to a running node means, table by
//! table: which changes the agent can make live and which take a reboot.
//! Pure: the agent applies, `nodeimg node apply-config` prints.
//!
//! Live: `[network]`, `[time]` and `[containerd]` (its registry files are
//! read by containerd on every pull). Everything else (the node's name,
//! role and cluster, the API's own trust) is fixed for a boot: the
//! running services and certificates were made for it.

use serde::{Deserialize, Serialize};

use super::MachineConfig;

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
    mark(old.cluster != new.cluster, "cluster", false);
    mark(old.api != new.api, "api", false);
    mark(old.network != new.network, "network", true);
    mark(old.time != new.time, "time", true);
    mark(old.containerd != new.containerd, "containerd", true);
    c
}
