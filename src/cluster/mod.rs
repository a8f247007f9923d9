//! A cluster's secrets and node configs, made on the operator's machine.
//!
//! `nodeimg cluster init` makes a cluster directory: four CAs (node API,
//! etcd, Kubernetes, front proxy; self-signed ECDSA P-256, ten years), the
//! service-account key pair, `secrets.toml` (encryption-at-rest key,
//! bootstrap token), the admin's node-API identity, and `cluster.toml`,
//! the cluster config a user edits. `nodeimg cluster config` reads the
//! directory back, every file checked, and renders one node's machine
//! config for its role. `DIR/manifests/` holds the security stack of
//! cluster.toml's `[stack]` as YAML (`nodeimg cluster manifests` renders it
//! again after an edit).
//!
//! It takes a directory and what the node is; it produces files, each
//! written whole (temporary name, rename) with private keys created 0600.
//! It never overwrites a file unless asked (`force`), writes all of a set
//! or none, never puts a CA key into a worker's config, and reads the
//! clock only through the `now` its callers pass.

mod files;
mod init;
mod issue;
mod load;
pub mod manifests;
mod nodeconfig;
pub mod object_store;
mod render;
mod secrets;

use std::path::{Path, PathBuf};

use time::OffsetDateTime;

pub use files::write_file;
pub use init::{init, render_cluster_toml, InitRequest};
pub use issue::{CaKind, API_CA, ETCD_CA, FRONT_PROXY_CA, KUBERNETES_CA};
pub use load::ClusterDir;
pub use nodeconfig::{AdminConfig, NODECONFIG_SCHEMA};
pub use render::NodeSpec;
pub use secrets::{rotate_encryption_key, KeyStep, SecretsFile, SECRETS_SCHEMA};

/// `DIR/cluster.toml`: the cluster config (public; the user edits it).
pub const CLUSTER_TOML: &str = "cluster.toml";
/// `DIR/admin.nodeconfig`: the admin's client identity for `nodeimg node`.
pub const ADMIN: &str = "admin.nodeconfig";
/// `DIR/service-account.key`: signs service-account tokens (0600).
pub const SA_KEY: &str = "service-account.key";
/// `DIR/service-account.pub`: checks them.
pub const SA_PUB: &str = "service-account.pub";
/// `DIR/secrets.toml`: encryption key and bootstrap token (0600).
pub const SECRETS: &str = "secrets.toml";

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
    #[error("{path}: not a usable {what} certificate or key")]
    Ca {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: rcgen::Error,
    },
    #[error("{path}: not a usable private key")]
    Key {
        path: PathBuf,
        #[source]
        source: rcgen::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    /// cluster.toml is wrong: the error names the file and the key.
    #[error(transparent)]
    ClusterToml(contract::config::ConfigError),
    #[error("{hostname} is not in control_plane.members of {path}: list every control-plane node there before rendering its config (each one carries the whole list)")]
    NotMember { hostname: String, path: PathBuf },
    #[error("{hostname} is a control-plane member in {path}, not a worker")]
    WorkerIsMember { hostname: String, path: PathBuf },
    #[error("the system's random number generator failed")]
    Random,
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

/// One node's machine config from the cluster directory `dir` (read and
/// checked whole first).
pub fn machine_config(
    dir: &Path,
    spec: &NodeSpec,
    now: OffsetDateTime,
) -> Result<String, ClusterError> {
    render::render(&ClusterDir::load(dir)?, spec, now)
}

#[cfg(test)]
mod tests;

/// The admin's kubeconfig for the cluster in `dir`: a client certificate
/// from its Kubernetes CA for user `nodeimg-admin` in group
/// `system:masters` (Kubernetes' built-in superuser group: this is the
/// break-glass identity, so it is short-lived: `valid`), dialling `server`
/// (default: `https://` + the control-plane endpoint).
pub fn admin_kubeconfig(
    dir: &Path,
    server: Option<&str>,
    tls_server_name: Option<&str>,
    now: OffsetDateTime,
    valid: time::Duration,
) -> Result<String, ClusterError> {
    let c = ClusterDir::load(dir)?;
    let issued = issue::kube_client(
        &c.kubernetes_ca,
        ADMIN_USER,
        &["system:masters"],
        now,
        valid,
    )?;
    let default_server = format!("https://{}", c.config.control_plane_endpoint);
    use contract::kube::{Credentials, Material};
    Ok(contract::kube::Kubeconfig {
        cluster: &c.config.name,
        server: server.unwrap_or(&default_server),
        ca: Material::Pem(&c.kubernetes_ca.cert_pem),
        user: ADMIN_USER,
        credentials: Credentials::Certificate {
            cert: Material::Pem(&issued.cert_pem),
            key: Material::Pem(&issued.key_pem),
        },
        tls_server_name,
    }
    .to_json())
}

/// The user name of [`admin_kubeconfig`]'s certificate.
pub const ADMIN_USER: &str = "nodeimg-admin";
