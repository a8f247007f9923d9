//! The node's etcd certificates, issued by the agent from the etcd CA in
//! its machine config: ECDSA P-256 keys (rcgen with ring), a server
//! certificate (serverAuth and clientAuth: etcd's gRPC gateway dials etcd
//! with it), a peer certificate (both usages: peers dial each other) and a
//! client certificate (the agent's own, for the JSON gateway). The names
//! are the node's hostname, its addresses, `localhost` and 127.0.0.1.
//!
//! Written under [`contract::etcd::PKI_DIR`] each through a temporary file
//! and a rename; keys 0600 owned by etcd's user. etcd reads its files at
//! each new connection, so a renewal needs no restart.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub use crate::issuer::Pair;
use crate::issuer::{write_file, IssueError, Leaf, Signer};

/// How long an issued certificate is valid, unless the test switch
/// `nodeimg.test_cert_lifetime` says otherwise.
pub const LIFETIME_SECS: u64 = 365 * 86_400;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error(transparent)]
    Issue(#[from] IssueError),
    #[error("cluster.etcd_ca has no key: this node cannot issue etcd certificates")]
    NoCaKey,
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The node's three certificates and when they were made.
#[derive(Clone)]
pub struct NodeCerts {
    pub ca: String,
    pub server: Pair,
    pub peer: Pair,
    pub client: Pair,
    /// Seconds since the epoch.
    pub issued: u64,
    pub expires: u64,
}

/// What the certificates name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub hostname: String,
    pub addresses: Vec<IpAddr>,
}

/// Issues all three from the CA (`ca_cert`, `ca_key`: PEM) at `now`.
pub fn issue(
    ca_cert: &str,
    ca_key: &str,
    names: &Names,
    now: u64,
    lifetime: u64,
) -> Result<NodeCerts, PkiError> {
    let signer = Signer::from_pem("cluster.etcd_ca", ca_cert, ca_key)?;
    let expires = now.saturating_add(lifetime);
    let mut ips = names.addresses.clone();
    ips.push(IpAddr::from([127, 0, 0, 1]));
    let mut dns = vec!["localhost".to_string()];
    if !names.hostname.is_empty() {
        dns.push(names.hostname.clone());
    }
    let leaf = |which: &str, named: bool, server: bool| Leaf {
        common_name: format!("{} etcd {which}", names.hostname),
        organizations: vec!["nodeimg".into()],
        dns: if named { dns.clone() } else { Vec::new() },
        ips: if named { ips.clone() } else { Vec::new() },
        server,
        client: true,
    };
    Ok(NodeCerts {
        ca: ca_cert.to_string(),
        // serverAuth and clientAuth: etcd's gRPC gateway dials etcd with it
        server: signer.issue(&leaf("server", true, true), now, expires)?,
        peer: signer.issue(&leaf("peer", true, true), now, expires)?,
        client: signer.issue(&leaf("client", false, false), now, expires)?,
        issued: now,
        expires,
    })
}

/// Writes the files into `dir` (made 0750, group `gid`): certificates
/// 0644, keys 0600, all owned by `uid:gid` (etcd's user).
pub fn write(dir: &Path, certs: &NodeCerts, uid: u32, gid: u32) -> Result<(), PkiError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PkiError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(err(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750)).map_err(err(dir))?;
    std::os::unix::fs::chown(dir, None, Some(gid)).map_err(err(dir))?;
    let files = [
        ("ca.crt", certs.ca.as_str(), 0o644),
        ("server.key", &certs.server.key, 0o600),
        ("server.crt", &certs.server.cert, 0o644),
        ("peer.key", &certs.peer.key, 0o600),
        ("peer.crt", &certs.peer.cert, 0o644),
        ("client.key", &certs.client.key, 0o600),
        ("client.crt", &certs.client.cert, 0o644),
    ];
    for (name, text, mode) in files {
        write_file(&dir.join(name), text, mode, uid, gid)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

    fn ca() -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, "etcd-ca");
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let cert = p.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn issued_certificates_chain_to_the_ca_and_name_the_node() {
        let (cert, key) = ca();
        let names = Names {
            hostname: "cp-1".into(),
            addresses: vec!["10.0.2.15".parse().unwrap()],
        };
        let c = issue(&cert, &key, &names, 1_800_000_000, 90).unwrap();
        assert_eq!(c.expires, 1_800_000_090);
        // rustls' webpki is the independent reader: the server certificate
        // is valid for the node's address and 127.0.0.1 at `now`
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(cert.as_bytes()).unwrap())
            .unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            provider,
        )
        .build()
        .unwrap();
        let der = CertificateDer::from_pem_slice(c.server.cert.as_bytes()).unwrap();
        let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_800_000_010));
        for name in ["10.0.2.15", "127.0.0.1", "cp-1", "localhost"] {
            let sn = ServerName::try_from(name).unwrap();
            use rustls::client::danger::ServerCertVerifier;
            verifier
                .verify_server_cert(&der, &[], &sn, &[], at)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let sn = ServerName::try_from("10.0.2.16").unwrap();
        use rustls::client::danger::ServerCertVerifier;
        assert!(verifier
            .verify_server_cert(&der, &[], &sn, &[], at)
            .is_err());
        let late = UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_800_000_091));
        let sn = ServerName::try_from("cp-1").unwrap();
        assert!(verifier
            .verify_server_cert(&der, &[], &sn, &[], late)
            .is_err());
    }

    #[test]
    fn files_are_written_with_their_modes() {
        let (cert, key) = ca();
        let names = Names {
            hostname: "cp-1".into(),
            addresses: vec![],
        };
        let c = issue(&cert, &key, &names, 1_800_000_000, 90).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki/etcd");
        let (uid, gid) = (rustix::process::getuid(), rustix::process::getgid());
        write(&pki, &c, uid.as_raw(), gid.as_raw()).unwrap();
        use std::os::unix::fs::MetadataExt;
        let mode = |n: &str| std::fs::metadata(pki.join(n)).unwrap().mode() & 0o7777;
        assert_eq!(mode("server.key"), 0o600);
        assert_eq!(mode("peer.key"), 0o600);
        assert_eq!(mode("client.key"), 0o600);
        assert_eq!(mode("server.crt"), 0o644);
        assert_eq!(std::fs::read_to_string(pki.join("ca.crt")).unwrap(), cert);
        assert!(std::fs::read_dir(&pki).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".tmp")));
    }
}
