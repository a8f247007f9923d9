//! Leaf certificates from a CA the machine config carries (etcd's,
//! Kubernetes'): ECDSA P-256 keys (rcgen with ring), no CA bit, the
//! authority key identifier, `notBefore` an hour back so peers whose
//! clocks lag ours still accept. Also the PEM files they go to: written
//! through a temporary file and a rename, owner and mode set before the
//! rename, so a reader never sees a half-written or too-open key.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// `notBefore` this far back.
const BACKDATE_SECS: u64 = 3_600;

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("{ca}: {what}")]
    Ca {
        ca: &'static str,
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("issuing the {which} certificate")]
    Leaf {
        which: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("the clock cannot be put in a certificate ({0} s since the epoch)")]
    Clock(u64),
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One issued certificate and its key, PEM.
#[derive(Clone)]
pub struct Pair {
    pub cert: String,
    pub key: String,
}

/// What one leaf says.
#[derive(Debug, Clone, Default)]
pub struct Leaf {
    pub common_name: String,
    /// Kubernetes reads these as groups.
    pub organizations: Vec<String>,
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub server: bool,
    pub client: bool,
}

/// A CA that signs.
pub struct Signer {
    issuer: Issuer<'static, KeyPair>,
}

fn when(secs: u64) -> Result<time::OffsetDateTime, IssueError> {
    i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .ok_or(IssueError::Clock(secs))
}

impl Signer {
    /// `ca`: the config table's name, for errors.
    pub fn from_pem(ca: &'static str, cert: &str, key: &str) -> Result<Signer, IssueError> {
        let key = KeyPair::from_pem(key).map_err(|source| IssueError::Ca {
            ca,
            what: "key is not a PEM private key rcgen can sign with",
            source,
        })?;
        let issuer = Issuer::from_ca_cert_pem(cert, key).map_err(|source| IssueError::Ca {
            ca,
            what: "certificate cannot be read",
            source,
        })?;
        Ok(Signer { issuer })
    }

    /// A new key and a certificate for `leaf`, valid from an hour before
    /// `now` until `expires`.
    pub fn issue(&self, leaf: &Leaf, now: u64, expires: u64) -> Result<Pair, IssueError> {
        let e = |source| IssueError::Leaf {
            which: leaf.common_name.clone(),
            source,
        };
        let key = KeyPair::generate().map_err(e)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        for o in &leaf.organizations {
            dn.push(DnType::OrganizationName, o.as_str());
        }
        dn.push(DnType::CommonName, leaf.common_name.as_str());
        params.distinguished_name = dn;
        for d in &leaf.dns {
            params
                .subject_alt_names
                .push(SanType::DnsName(d.as_str().try_into().map_err(e)?));
        }
        let mut ips = leaf.ips.clone();
        ips.sort();
        ips.dedup();
        params
            .subject_alt_names
            .extend(ips.into_iter().map(SanType::IpAddress));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if leaf.server {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if leaf.client {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        params.use_authority_key_identifier_extension = true;
        params.not_before = when(now.saturating_sub(BACKDATE_SECS))?;
        params.not_after = when(expires)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(e)?;
        Ok(Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}

/// Writes `text` to `path` with `mode`, owned by `uid:gid`, replacing any
/// file there only once complete.
pub fn write_file(
    path: &Path,
    text: &str,
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<(), IssueError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| IssueError::Write { path, source }
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err(&tmp))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(err(&tmp))?;
    std::os::unix::fs::fchown(&f, Some(uid), Some(gid)).map_err(err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(err(path))
}
