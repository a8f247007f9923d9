//! Reading a cluster directory back: every file `init` made is read and
//! checked before any node config is rendered from it, each error naming
//! its file (and, inside a TOML file, its key).

use std::path::{Path, PathBuf};

use contract::config::backup_target::{S3Credentials, S3Upload};
use contract::config::{ClusterConfig, Secret, ServiceAccountKeys};
use rcgen::KeyPair;

use super::issue::{self, Ca, CaKind, API_CA, ETCD_CA, FRONT_PROXY_CA, KUBERNETES_CA};
use super::secrets::SecretsFile;
use super::{ClusterError, CLUSTER_TOML, SA_KEY, SA_PUB, SECRETS};

/// Everything in a cluster directory, checked.
pub struct ClusterDir {
    pub dir: PathBuf,
    pub config: ClusterConfig,
    pub api_ca: Ca,
    pub etcd_ca: Ca,
    pub kubernetes_ca: Ca,
    pub front_proxy_ca: Ca,
    pub service_account: ServiceAccountKeys,
    pub secrets: SecretsFile,
}

impl ClusterDir {
    /// Reads `dir`: cluster.toml first (the file a user edits, so the
    /// likeliest to be wrong), then the CAs, the service-account pair and
    /// the secrets.
    pub fn load(dir: &Path) -> Result<ClusterDir, ClusterError> {
        let config = read_cluster_toml(&dir.join(CLUSTER_TOML))?;
        let ca = |kind: CaKind| issue::load_ca(kind, dir);
        Ok(ClusterDir {
            dir: dir.to_path_buf(),
            config,
            api_ca: ca(API_CA)?,
            etcd_ca: ca(ETCD_CA)?,
            kubernetes_ca: ca(KUBERNETES_CA)?,
            front_proxy_ca: ca(FRONT_PROXY_CA)?,
            service_account: read_service_account(&dir.join(SA_KEY), &dir.join(SA_PUB))?,
            secrets: SecretsFile::read(&dir.join(SECRETS))?,
        })
    }

    pub fn cluster_toml(&self) -> PathBuf {
        self.dir.join(CLUSTER_TOML)
    }

    /// `[backup_targets.s3]` with the keys from its credentials file
    /// (beside cluster.toml unless absolute): what a control-plane node
    /// uploads with and a restore downloads with.
    pub fn s3_upload(&self) -> Result<Option<S3Upload>, ClusterError> {
        let Some(target) = &self.config.backup_targets.s3 else {
            return Ok(None);
        };
        let path = self.dir.join(&target.credentials_file);
        let text = issue::read(&path)?;
        let credentials =
            S3Credentials::from_toml(&text, &path.display().to_string()).map_err(|p| {
                ClusterError::Invalid {
                    path: path.clone(),
                    message: format!("{}: {}", p.key, p.message),
                }
            })?;
        Ok(Some(
            target.upload(credentials, self.config.etcd.backup.retain),
        ))
    }
}

pub fn read_cluster_toml(path: &Path) -> Result<ClusterConfig, ClusterError> {
    read_cluster_toml_text(&issue::read(path)?, path)
}

/// `text` as the cluster.toml at `path`, checked.
pub fn read_cluster_toml_text(text: &str, path: &Path) -> Result<ClusterConfig, ClusterError> {
    ClusterConfig::from_toml(text, &path.display().to_string()).map_err(ClusterError::ClusterToml)
}

fn read_service_account(key: &Path, public: &Path) -> Result<ServiceAccountKeys, ClusterError> {
    let (key_pem, public_pem) = (issue::read(key)?, issue::read(public)?);
    KeyPair::from_pem(&key_pem).map_err(|source| ClusterError::Key {
        path: key.to_path_buf(),
        source,
    })?;
    let pair = ServiceAccountKeys {
        public_key: public_pem,
        private_key: Secret::new(key_pem),
    };
    if let Some(p) = pair.problems().into_iter().next() {
        let path = if p.key == "public_key" { public } else { key };
        return Err(ClusterError::Invalid {
            path: path.to_path_buf(),
            message: p.message,
        });
    }
    Ok(pair)
}
