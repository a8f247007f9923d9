//! Reading the cluster's etcd snapshots back from its object store
//! (`[backup_targets.s3]`): list the prefix, pick the newest (or a named
//! object), download it to a temporary file beside the destination while
//! hashing, and keep it only when its sha256 is the one the uploading node
//! stored with it. Signed with `rusty-s3` (Signature V4, the same signer
//! the agent uses), sent with ureq.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use contract::config::backup_target::{S3Upload, SHA256_METADATA};
use rusty_s3::actions::ListObjectsV2;
use rusty_s3::{Bucket, Credentials, S3Action as _, UrlStyle};
use sha2::{Digest, Sha256};

/// How long a signed URL stays valid.
const SIGNED_FOR: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the object store {target}: {message}")]
    Setup { target: String, message: String },
    #[error("{what} in {target}")]
    Http {
        what: String,
        target: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("{what} in {target}: HTTP {status}: {body}")]
    Status {
        what: String,
        target: String,
        status: u16,
        body: String,
    },
    #[error("{target} holds no snapshot under its prefix")]
    Empty { target: String },
    #[error("{key} in {target}: {message}")]
    Object {
        key: String,
        target: String,
        message: String,
    },
    #[error("writing {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// One object store, ready to be called.
pub struct ObjectStore {
    target: S3Upload,
    bucket: Bucket,
    credentials: Credentials,
    agent: ureq::Agent,
}

impl ObjectStore {
    pub fn new(target: &S3Upload) -> Result<ObjectStore, StoreError> {
        let setup = |message: String| StoreError::Setup {
            target: target.endpoint.clone(),
            message,
        };
        let endpoint = target.endpoint.parse().map_err(|e| setup(format!("{e}")))?;
        let bucket = Bucket::new(
            endpoint,
            UrlStyle::Path,
            target.bucket.clone(),
            target.region.clone(),
        )
        .map_err(|e| setup(e.to_string()))?;
        let credentials = Credentials::new(
            target.access_key_id.clone(),
            target.secret_access_key.expose().to_string(),
        );
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(ca) = &target.ca {
            let certs = ureq::tls::parse_pem(ca.as_bytes())
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect::<Vec<_>>();
            if certs.is_empty() {
                return Err(setup("its ca holds no certificate".into()));
            }
            tls = tls.root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)));
        }
        let agent = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .build()
            .new_agent();
        Ok(ObjectStore {
            target: target.clone(),
            bucket,
            credentials,
            agent,
        })
    }

    fn name(&self) -> String {
        format!("s3://{}/{}", self.target.bucket, self.target.prefix)
    }

    /// The snapshots' keys under the prefix, oldest first.
    pub fn snapshots(&self) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut action = self.bucket.list_objects_v2(Some(&self.credentials));
            action.with_prefix(self.target.prefix.as_str());
            if let Some(t) = &token {
                action.with_continuation_token(t.as_str());
            }
            let url = action.sign(SIGNED_FOR);
            let what = || "listing the snapshots".to_string();
            let mut r = self
                .agent
                .get(url.as_str())
                .call()
                .map_err(|e| self.http(what(), e))?;
            let body = r
                .body_mut()
                .read_to_string()
                .map_err(|e| self.http(what(), e))?;
            if r.status() != 200 {
                return Err(self.status(what(), r.status().as_u16(), &body));
            }
            let page = ListObjectsV2::parse_response(&body).map_err(|e| StoreError::Setup {
                target: self.name(),
                message: format!("the listing is not S3's: {e}"),
            })?;
            keys.extend(page.contents.into_iter().map(|c| c.key));
            match page.next_continuation_token {
                Some(t) if token.as_ref() != Some(&t) => token = Some(t),
                _ => break,
            }
        }
        let times = self.target.times(keys.iter().map(String::as_str));
        Ok(times.into_iter().map(|t| self.target.key(t)).collect())
    }

    /// Downloads `key` (the newest snapshot when `None`) to `out` and
    /// returns its key and sha256; `out` appears only when the bytes hash
    /// to the sha256 stored with the object.
    pub fn download(&self, key: Option<&str>, out: &Path) -> Result<(String, String), StoreError> {
        let key = match key {
            Some(k) => k.to_string(),
            None => self.snapshots()?.pop().ok_or_else(|| StoreError::Empty {
                target: self.name(),
            })?,
        };
        let object = |message: String| StoreError::Object {
            key: key.clone(),
            target: self.name(),
            message,
        };
        let url = self
            .bucket
            .get_object(Some(&self.credentials), &key)
            .sign(SIGNED_FOR);
        let what = || format!("downloading {key}");
        let mut r = self
            .agent
            .get(url.as_str())
            .call()
            .map_err(|e| self.http(what(), e))?;
        if r.status() != 200 {
            let body = r.body_mut().read_to_string().unwrap_or_default();
            return Err(self.status(what(), r.status().as_u16(), &body));
        }
        let expected = r
            .headers()
            .get(SHA256_METADATA)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
            .ok_or_else(|| {
                object(format!(
                    "carries no {SHA256_METADATA}: not a snapshot nodeimg uploaded"
                ))
            })?;
        let dir = out.parent().unwrap_or(Path::new("."));
        let write = |source| StoreError::Write {
            path: out.display().to_string(),
            source,
        };
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(write)?;
        let mut hash = Sha256::new();
        let mut reader = r.body_mut().with_config().limit(u64::MAX).reader();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = reader.read(&mut buf).map_err(|e| object(e.to_string()))?;
            let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
                break;
            };
            hash.update(chunk);
            tmp.write_all(chunk).map_err(write)?;
        }
        let got = hex::encode(hash.finalize());
        if got != expected {
            return Err(object(format!(
                "its bytes hash to {got}, not the {expected} stored with it"
            )));
        }
        tmp.as_file().sync_all().map_err(write)?;
        tmp.persist(out).map_err(|e| write(e.error))?;
        Ok((key, got))
    }

    fn http(&self, what: String, e: ureq::Error) -> StoreError {
        StoreError::Http {
            what,
            target: self.name(),
            source: Box::new(e),
        }
    }

    fn status(&self, what: String, status: u16, body: &str) -> StoreError {
        StoreError::Status {
            what,
            target: self.name(),
            status,
            body: body.chars().take(300).collect(),
        }
    }
}
