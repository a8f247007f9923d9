//! The admin's nodeconfig (like Talos' talosconfig): the API CA's
//! certificate (to check nodes) and a client certificate + key (to be
//! admitted), one TOML file, 0600.

use std::path::Path;

use contract::config::Secret;
use serde::{Deserialize, Serialize};

use super::ClusterError;

/// The nodeconfig schema this build reads and writes.
pub const NODECONFIG_SCHEMA: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Always [`NODECONFIG_SCHEMA`].
    pub schema: u32,
    /// PEM of the API CA's certificate: nodes must present one it issued.
    pub ca: String,
    /// PEM of the client certificate.
    pub certificate: String,
    /// PEM of the client's private key.
    pub key: Secret,
}

impl AdminConfig {
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }

    pub fn read(path: &Path) -> Result<AdminConfig, ClusterError> {
        let text = std::fs::read_to_string(path).map_err(|source| ClusterError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let bad = |message: String| ClusterError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let c: AdminConfig = toml::from_str(&text).map_err(|e| bad(e.message().to_string()))?;
        if c.schema != NODECONFIG_SCHEMA {
            return Err(bad(format!(
                "schema = {} is not supported (this build reads schema {NODECONFIG_SCHEMA})",
                c.schema
            )));
        }
        Ok(c)
    }
}
