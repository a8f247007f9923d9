//! `DIR/secrets.toml` (0600): the cluster's secrets that are not key
//! pairs: the encryption-at-rest key for Kubernetes Secrets and the
//! bootstrap token kubelets join with. Kept apart from `cluster.toml` so
//! the file a user edits (and may keep in version control) holds nothing
//! secret.

use std::path::Path;

use base64::Engine;
use contract::config::{
    check_bootstrap_token, check_encryption_key, check_key_name, NamedKey, Secret,
    DEFAULT_KEY_NAME, ENCRYPTION_KEY_BYTES,
};
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
    /// EncryptionConfiguration. It encrypts every Secret written.
    pub encryption_key: Secret,
    /// Its name in the stored data; `key1` when absent (a cluster that
    /// never rotated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_key_name: Option<String>,
    /// `[a-z0-9]{6}.[a-z0-9]{16}`.
    pub bootstrap_token: Secret,
    /// Keys that decrypt but do not encrypt, during a rotation
    /// (`nodeimg cluster encryption-key`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub encryption_read_keys: Vec<NamedKey>,
}

/// A step of an encryption-key rotation (`nodeimg cluster encryption-key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyStep {
    /// A new key, read-only everywhere first.
    Add,
    /// This read key encrypts from now on; the one that did is read-only.
    Use(String),
    /// Every read-only key dropped.
    Retire,
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
            encryption_key_name: None,
            bootstrap_token: bootstrap_token()?,
            encryption_read_keys: Vec::new(),
        })
    }

    /// The name the encrypting key goes by.
    pub fn key_name(&self) -> &str {
        self.encryption_key_name
            .as_deref()
            .unwrap_or(DEFAULT_KEY_NAME)
    }

    /// One step of a rotation; what it did, for the user. A rotation is
    /// three steps, each applied to every control-plane node before the
    /// next: a control-plane node must be able to read what another one
    /// writes.
    pub fn rotate(&mut self, step: &KeyStep) -> Result<String, String> {
        match step {
            KeyStep::Add => {
                let next = std::iter::once(self.key_name())
                    .chain(self.encryption_read_keys.iter().map(|k| k.name.as_str()))
                    .filter_map(|n| n.strip_prefix("key")?.parse::<u32>().ok())
                    .max()
                    .unwrap_or(1)
                    + 1;
                let name = format!("key{next}");
                self.encryption_read_keys.push(NamedKey {
                    name: name.clone(),
                    key: encryption_key().map_err(|e| e.to_string())?,
                });
                Ok(format!(
                    "added {name}, read-only: apply the rendered configs to every control-plane node, then `encryption-key DIR use {name}`"
                ))
            }
            KeyStep::Use(name) => {
                let i = self
                    .encryption_read_keys
                    .iter()
                    .position(|k| k.name == *name)
                    .ok_or_else(|| {
                        format!(
                            "{name} is not a read-only key here (the encrypting key is {}); `add` one first",
                            self.key_name()
                        )
                    })?;
                let new = self.encryption_read_keys.remove(i);
                let old = NamedKey {
                    name: self.key_name().to_string(),
                    key: std::mem::replace(&mut self.encryption_key, new.key),
                };
                self.encryption_read_keys.insert(0, old);
                self.encryption_key_name = Some(new.name.clone());
                Ok(format!(
                    "{} encrypts, {} reads only: apply the rendered configs to every control-plane node, rewrite every Secret \
                     (kubectl get secrets -A -o json | kubectl replace -f -), then `encryption-key DIR retire`",
                    new.name,
                    self.encryption_read_keys
                        .iter()
                        .map(|k| k.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
            KeyStep::Retire => {
                if self.encryption_read_keys.is_empty() {
                    return Err(format!(
                        "no read-only key to retire ({} encrypts)",
                        self.key_name()
                    ));
                }
                let gone: Vec<String> = self
                    .encryption_read_keys
                    .drain(..)
                    .map(|k| k.name)
                    .collect();
                Ok(format!(
                    "retired {}: apply the rendered configs to every control-plane node; a Secret not rewritten since {} \
                     encrypted it cannot be read any more",
                    gone.join(", "),
                    self.key_name()
                ))
            }
        }
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
        let mut problems: Vec<String> = [
            check_encryption_key(s.encryption_key.expose())
                .map_err(|w| format!("encryption_key: {w}")),
            check_bootstrap_token(s.bootstrap_token.expose())
                .map_err(|w| format!("bootstrap_token: {w}")),
        ]
        .into_iter()
        .filter_map(Result::err)
        .collect();
        if let Some(n) = &s.encryption_key_name {
            problems.extend(
                check_key_name(n)
                    .err()
                    .map(|w| format!("encryption_key_name: {w}")),
            );
        }
        let mut names = std::collections::BTreeSet::from([s.key_name().to_string()]);
        for (i, k) in s.encryption_read_keys.iter().enumerate() {
            let at = format!("encryption_read_keys[{i}]");
            problems.extend(
                check_key_name(&k.name)
                    .err()
                    .map(|w| format!("{at}.name: {w}")),
            );
            if !names.insert(k.name.clone()) {
                problems.push(format!("{at}.name: {} names two keys", k.name));
            }
            problems.extend(
                check_encryption_key(k.key.expose())
                    .err()
                    .map(|w| format!("{at}.key: {w}")),
            );
        }
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

/// One rotation step on `DIR/secrets.toml`, written back whole (0600,
/// temp file then rename); what it did, for the user.
pub fn rotate_encryption_key(dir: &Path, step: &KeyStep) -> Result<String, ClusterError> {
    let path = dir.join(super::SECRETS);
    let mut secrets = SecretsFile::read(&path)?;
    let said = secrets
        .rotate(step)
        .map_err(|message| ClusterError::Invalid {
            path: path.clone(),
            message,
        })?;
    super::files::write_file(&path, secrets.to_toml()?.as_bytes(), 0o600, true)?;
    Ok(said)
}
