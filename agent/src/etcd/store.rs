//! Copies of the scheduled snapshots in an S3-compatible object store
//! (`[cluster.control_plane.etcd_backup_s3]`): each new snapshot is PUT as
//! `PREFIX` + `etcd-UNIXTIME.db` with its sha256 twice, as S3's own
//! `x-amz-checksum-sha256` (the server refuses a body that does not match
//! it) and as metadata a restore checks the download against; then the
//! prefix is listed and the oldest beyond `retain` deleted.
//!
//! Requests are signed with AWS Signature V4 by `rusty-s3` (sans-I/O: it
//! signs URLs and parses the listing) and sent over the agent's own
//! HTTP/1.1 client with TLS 1.2 or 1.3: an SDK would bring an async runtime
//! into PID 1 for three calls.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use contract::config::backup_target::{S3Upload, SHA256_METADATA};
use rusty_s3::actions::ListObjectsV2;
use rusty_s3::{Bucket, Credentials, S3Action as _, UrlStyle};

use crate::config_fetch::http::{self, Body, Limits, Target};

/// How long a signed request stays valid: long enough for a slow upload
/// to start, short enough that a leaked URL is soon worthless.
const SIGNED_FOR: Duration = Duration::from_secs(300);
/// A listing is small: our objects under one prefix.
const MAX_LISTING: u64 = 4 << 20;

/// One object store, ready to be called.
pub struct Store {
    target: S3Upload,
    bucket: Bucket,
    credentials: Credentials,
    tls: Arc<rustls::ClientConfig>,
}

impl Store {
    /// The store `target` names; the error says which part is unusable.
    pub fn new(target: &S3Upload) -> Result<Store, String> {
        let endpoint = target
            .endpoint
            .parse()
            .map_err(|e| format!("the object store's endpoint {}: {e}", target.endpoint))?;
        let bucket = Bucket::new(
            endpoint,
            UrlStyle::Path,
            target.bucket.clone(),
            target.region.clone(),
        )
        .map_err(|e| format!("the object store's bucket {}: {e}", target.bucket))?;
        let credentials = Credentials::new(
            target.access_key_id.clone(),
            target.secret_access_key.expose().to_string(),
        );
        Ok(Store {
            target: target.clone(),
            bucket,
            credentials,
            tls: trust(target.ca.as_deref())?,
        })
    }

    /// `s3://BUCKET/PREFIX`, for the report.
    pub fn name(&self) -> String {
        format!("s3://{}/{}", self.target.bucket, self.target.prefix)
    }

    /// Uploads the snapshot `file` taken at `at`, whose sha256 is `sha256`
    /// (hex); returns the object's key.
    pub fn put(&self, file: &Path, at: u64, sha256: &str) -> Result<String, String> {
        let key = self.target.key(at);
        let digest = hex::decode(sha256).map_err(|e| format!("sha256 {sha256}: {e}"))?;
        let checksum = base64::engine::general_purpose::STANDARD.encode(digest);
        let mut action = self.bucket.put_object(Some(&self.credentials), &key);
        let headers = [
            ("x-amz-checksum-sha256", checksum),
            (SHA256_METADATA, sha256.to_string()),
        ];
        for (name, value) in &headers {
            action.headers_mut().insert(*name, value.clone());
        }
        let mut f = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let length = f
            .metadata()
            .map_err(|e| format!("{}: {e}", file.display()))?
            .len();
        let url = action.sign(SIGNED_FOR);
        let headers: Vec<(&str, String)> = headers.iter().map(|(n, v)| (*n, v.clone())).collect();
        // a snapshot of a large member takes a while to send
        let total = Duration::from_secs(120 + length / (1 << 20));
        let from: &mut dyn Read = &mut f;
        self.call(
            "PUT",
            &url,
            &headers,
            Body::Stream { length, from },
            total,
            0,
        )
        .map_err(|e| format!("uploading {key}: {e}"))?;
        Ok(key)
    }

    /// The snapshot times in the store under the prefix, oldest first.
    pub fn times(&self) -> Result<Vec<u64>, String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut action = self.bucket.list_objects_v2(Some(&self.credentials));
            action.with_prefix(self.target.prefix.as_str());
            if let Some(t) = &token {
                action.with_continuation_token(t.as_str());
            }
            let url = action.sign(SIGNED_FOR);
            let body = self
                .call(
                    "GET",
                    &url,
                    &[],
                    Body::None,
                    Duration::from_secs(60),
                    MAX_LISTING,
                )
                .map_err(|e| format!("listing {}: {e}", self.name()))?;
            let text = String::from_utf8_lossy(&body);
            let page = ListObjectsV2::parse_response(&text).map_err(|e| {
                format!("listing {}: the answer is not a listing: {e}", self.name())
            })?;
            keys.extend(page.contents.into_iter().map(|c| c.key));
            match page.next_continuation_token {
                Some(t) if token.as_ref() != Some(&t) => token = Some(t),
                _ => break,
            }
        }
        Ok(self.target.times(keys.iter().map(String::as_str)))
    }

    /// Deletes the oldest snapshots beyond `retain`; returns how many are kept.
    pub fn prune(&self) -> Result<u32, String> {
        let times = self.times()?;
        let excess = times.len().saturating_sub(self.target.retain as usize);
        for at in times.iter().take(excess) {
            let key = self.target.key(*at);
            let url = self
                .bucket
                .delete_object(Some(&self.credentials), &key)
                .sign(SIGNED_FOR);
            self.call("DELETE", &url, &[], Body::None, Duration::from_secs(60), 0)
                .map_err(|e| format!("deleting {key}: {e}"))?;
        }
        Ok(u32::try_from(times.len() - excess).unwrap_or(u32::MAX))
    }

    /// Sends one signed request; a 2xx answer's body, or what the store said.
    fn call(
        &self,
        method: &str,
        url: &url::Url,
        headers: &[(&str, String)],
        body: Body,
        total: Duration,
        max_body: u64,
    ) -> Result<Vec<u8>, String> {
        let host = url.host_str().ok_or("the endpoint has no host")?;
        // an IPv6 host comes bracketed in URLs and bare to the resolver
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let port = url.port_or_known_default().unwrap_or(443);
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let target = Target {
            tls: Some(self.tls.clone()),
            host: bare,
            port,
            authority: &authority,
            path: &path,
        };
        let limits = Limits {
            connect: Duration::from_secs(10),
            io: Duration::from_secs(30),
            total,
            max_body,
        };
        let r = http::send_with(&target, &limits, method, headers, body)
            .map_err(|e| crate::error::chain(&e))?;
        if (200..300).contains(&r.status) {
            return Ok(r.body);
        }
        Err(format!(
            "HTTP {}: {}",
            r.status,
            s3_error(&String::from_utf8_lossy(&r.body))
        ))
    }
}

/// The `<Code>` and `<Message>` of an S3 error document, or its start.
fn s3_error(body: &str) -> String {
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let start = body.find(&open)? + open.len();
        let end = body.get(start..)?.find('<')? + start;
        body.get(start..end)
    };
    match (tag("Code"), tag("Message")) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        _ => body.chars().take(200).collect(),
    }
}

/// TLS trusting `ca` (PEM) when given, else the image's CA bundle.
fn trust(ca: Option<&str>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let bundle;
    let (pem, what) = match ca {
        Some(pem) => (pem.as_bytes(), "the object store's ca".to_string()),
        None => {
            let path = crate::config_fetch::CA_BUNDLE;
            bundle = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
            (bundle.as_slice(), path.to_string())
        }
    };
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(CertificateDer::pem_slice_iter(pem).flatten());
    if added == 0 {
        return Err(format!("{what} holds no usable CA certificate"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_s3_error_document_is_shortened_to_its_code_and_message() {
        let body = "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match</Message></Error>";
        assert_eq!(
            s3_error(body),
            "SignatureDoesNotMatch: The request signature we calculated does not match"
        );
        assert_eq!(s3_error("plain"), "plain");
    }
}
