//! `DIR/secrets.toml` (0600): the cluster's secrets that are not key
//! pairs: the encryption-at-rest key for Kubernetes Secrets and the
//! bootstrap token kubelets join with. Kept apart from `cluster.toml` so
//! the file a user edits (and may keep in version control) holds nothing
//! secret.

use std::path::Path;

use base64::Engine;
use contract::config::{check_bootstrap_token, check_encryption_key, Secret, ENCRYPTION_KEY_BYTES};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use super::ClusterError;

/// The secrets.toml schema this build reads and writes.
pub const SECRETS_SCHEMA: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsFile {
    /// Always [`SECRETS_SCHEMA`].
    pub schema: u32,
    /// Base64 of 32 random bytes: an aescbc or secretbox key in kube-apiserver's
    /// EncryptionConfiguration.
    pub encryption_key: Secret,
    /// `[a-z0-9]{6}.[a-z0-9]{16}`.
    pub bootstrap_token: Secret,
}

fn random(buf: &mut [u8]) -> Result<(), ClusterError> {
    SystemRandom::new()
        .fill(buf)
        .map_err(|_| ClusterError::Random)
}

/// 32 random bytes, base64.
pub fn encryption_key() -> Result<Secret, ClusterError> {
    let mut key = [0u8; ENCRYPTION_KEY_BYTES];
    random(&mut key)?;
    let text = base64::engine::general_purpose::STANDARD.encode(key);
    key.zeroize();
    Ok(Secret::new(text))
}

/// A token in Kubernetes' format: 6 + 16 characters of `a-z0-9`, each
/// drawn uniformly (bytes of 252 and above are redrawn, so `% 36` has no
/// bias).
pub fn bootstrap_token() -> Result<Secret, ClusterError> {
    const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut chars = Vec::with_capacity(23);
    let mut buf = [0u8; 32];
    while chars.len() < 22 {
        random(&mut buf)?;
        for b in buf.iter().filter(|&&b| b < 252) {
            if chars.len() < 22 {
                chars.push(ALPHABET[usize::from(b % 36)]);
            }
        }
    }
    buf.zeroize();
    chars.insert(6, b'.');
    let token = String::from_utf8(chars).map_err(|_| ClusterError::Random)?;
    Ok(Secret::new(token))
}

impl SecretsFile {
    pub fn generate() -> Result<SecretsFile, ClusterError> {
        Ok(SecretsFile {
            schema: SECRETS_SCHEMA,
            encryption_key: encryption_key()?,
            bootstrap_token: bootstrap_token()?,
        })
    }

    pub fn to_toml(&self) -> Result<String, ClusterError> {
        toml::to_string(self).map_err(|source| ClusterError::Render {
            what: "secrets.toml",
            source,
        })
    }

    /// Reads and checks `path`; every problem names it and the key.
    pub fn read(path: &Path) -> Result<SecretsFile, ClusterError> {
        let text = super::issue::read(path)?;
        let name = path.display().to_string();
        let s: SecretsFile = contract::config::parse_versioned(&text, &name, SECRETS_SCHEMA)
            .map_err(|e| ClusterError::Invalid {
                path: path.to_path_buf(),
                message: e
                    .problems()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            })?;
        let problems: Vec<String> = [
            check_encryption_key(s.encryption_key.expose())
                .map_err(|w| format!("encryption_key: {w}")),
            check_bootstrap_token(s.bootstrap_token.expose())
                .map_err(|w| format!("bootstrap_token: {w}")),
        ]
        .into_iter()
        .filter_map(Result::err)
        .collect();
        if problems.is_empty() {
            Ok(s)
        } else {
            Err(ClusterError::Invalid {
                path: path.to_path_buf(),
                message: problems.join("; "),
            })
        }
    }
}
