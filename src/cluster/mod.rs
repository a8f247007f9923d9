//! The cluster's node-API trust, made on the operator's machine:
//! `nodeimg cluster init` makes the API CA (self-signed ECDSA P-256) and
//! an admin client identity it signs; `nodeimg cluster config` makes one
//! node's machine config whose `[api]` holds the CA certificate (whom to
//! trust as a client) and a server certificate + key the CA issued for
//! that node (its hostname and addresses).
//!
//! It takes a directory and what the node is; it produces files, each
//! written whole (temporary name, rename) with private keys created 0600.
//! It never overwrites a file unless asked (`force`), never puts the CA's
//! key into a machine config, and reads the clock only through the `now`
//! its callers pass.

mod files;
mod issue;
mod nodeconfig;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use contract::config::{Api, Cluster, MachineConfig, Role, Secret, SCHEMA};
use time::OffsetDateTime;

pub use files::write_file;
pub use nodeconfig::{AdminConfig, NODECONFIG_SCHEMA};

/// `DIR/api-ca.crt`: the API CA's certificate (public).
pub const CA_CERT: &str = "api-ca.crt";
/// `DIR/api-ca.key`: the API CA's private key (0600; never leaves DIR).
pub const CA_KEY: &str = "api-ca.key";
/// `DIR/admin.nodeconfig`: the admin's client identity for `nodeimg node`.
pub const ADMIN: &str = "admin.nodeconfig";

/// Why a cluster file cannot be made or read. Each names its file.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{path} exists (pass --force to replace it)")]
    Exists { path: PathBuf },
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("making the {what}")]
    Certificate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("{path}: not a usable API CA certificate or key")]
    Ca {
        path: PathBuf,
        #[source]
        source: rcgen::Error,
    },
    #[error("{path}: {message}")]
    NodeConfig { path: PathBuf, message: String },
    #[error("the machine config for {hostname} fails its own check")]
    Config {
        hostname: String,
        #[source]
        source: contract::config::ConfigError,
    },
    #[error("rendering {what} as TOML")]
    Render {
        what: &'static str,
        #[source]
        source: toml::ser::Error,
    },
}

/// What `init` wrote.
#[derive(Debug)]
pub struct InitFiles {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub admin: PathBuf,
}

/// Makes the API CA and the admin identity in `dir` (created if missing).
/// Refuses, before writing anything, when one of the files exists and
/// `force` is false.
pub fn init(dir: &Path, force: bool, now: OffsetDateTime) -> Result<InitFiles, ClusterError> {
    let files = InitFiles {
        ca_cert: dir.join(CA_CERT),
        ca_key: dir.join(CA_KEY),
        admin: dir.join(ADMIN),
    };
    if !force {
        for p in [&files.ca_cert, &files.ca_key, &files.admin] {
            if p.exists() {
                return Err(ClusterError::Exists { path: p.clone() });
            }
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| ClusterError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let ca = issue::new_ca(now)?;
    let admin = issue::client(&ca, "admin", now)?;
    let admin = AdminConfig {
        schema: NODECONFIG_SCHEMA,
        ca: ca.cert_pem.clone(),
        certificate: admin.cert_pem,
        key: Secret::new(admin.key_pem),
    };
    let admin_text = admin.to_toml().map_err(|source| ClusterError::Render {
        what: "the admin nodeconfig",
        source,
    })?;
    // The key first: a CA certificate without its key is useless, the
    // reverse is recoverable.
    write_file(&files.ca_key, ca.key_pem.as_bytes(), 0o600, force)?;
    write_file(&files.ca_cert, ca.cert_pem.as_bytes(), 0o644, force)?;
    write_file(&files.admin, admin_text.as_bytes(), 0o600, force)?;
    Ok(files)
}

/// What `cluster config` is asked for.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub hostname: String,
    pub role: Role,
    /// The node's addresses, as clients dial it: its certificate's IP SANs.
    pub addresses: Vec<IpAddr>,
    pub cluster_name: String,
}

/// One node's machine config (TOML, schema 1): the CA certificate from
/// `dir` as `api.client_ca`, and a server certificate for the node signed
/// by the CA. The text passes [`MachineConfig::from_toml`] before it is
/// returned.
pub fn machine_config(
    dir: &Path,
    spec: &NodeSpec,
    now: OffsetDateTime,
) -> Result<String, ClusterError> {
    let ca = issue::load_ca(&dir.join(CA_CERT), &dir.join(CA_KEY))?;
    let node = issue::server(&ca, &spec.hostname, &spec.addresses, now)?;
    let config = MachineConfig {
        schema: SCHEMA,
        hostname: spec.hostname.clone(),
        role: spec.role,
        cluster: Cluster {
            name: spec.cluster_name.clone(),
            control_plane: None,
        },
        network: Default::default(),
        time: Default::default(),
        api: Api {
            client_ca: ca.cert_pem.clone(),
            certificate: node.cert_pem,
            key: Secret::new(node.key_pem),
        },
        containerd: Default::default(),
    };
    let text = config.to_toml().map_err(|source| ClusterError::Render {
        what: "the machine config",
        source,
    })?;
    MachineConfig::from_toml(&text, &spec.hostname).map_err(|source| ClusterError::Config {
        hostname: spec.hostname.clone(),
        source,
    })?;
    Ok(text)
}

#[cfg(test)]
mod tests;
