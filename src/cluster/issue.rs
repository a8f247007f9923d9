//! The certificates: the cluster's CAs (node API, etcd, Kubernetes, front
//! proxy), client identities and node (server) certificates, and the
//! service-account key pair: all ECDSA P-256 keys made by rcgen with ring.
//! Kubernetes takes ECDSA everywhere: CAs and leaves (Go's crypto/tls), and
//! service-account tokens (kube-apiserver's `--service-account-key-file`
//! reads RSA or ECDSA keys, and signs ES256 with an ECDSA signing key).

use std::net::IpAddr;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use super::ClusterError;

/// How long the CA is valid.
const CA_DAYS: i64 = 3650;
/// How long a client or node certificate is valid.
const LEAF_DAYS: i64 = 365;
/// Slack for clocks behind ours.
const BACKDATE: Duration = Duration::hours(1);

/// A certificate and its key, both PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The CA, ready to sign.
pub struct Ca {
    pub cert_pem: String,
    pub key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn cert_err(what: &'static str) -> impl Fn(rcgen::Error) -> ClusterError {
    move |source| ClusterError::Certificate { what, source }
}

/// `groups` become O= entries (Kubernetes reads them as the user's groups);
/// without any, O=nodeimg.
fn name(cn: &str, groups: &[&str]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    if groups.is_empty() {
        dn.push(DnType::OrganizationName, "nodeimg");
    }
    for g in groups {
        dn.push(DnType::OrganizationName, *g);
    }
    dn.push(DnType::CommonName, cn);
    dn
}

/// Which CA: its name in messages, its subject and its files in DIR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaKind {
    pub what: &'static str,
    pub common_name: &'static str,
    pub cert_file: &'static str,
    pub key_file: &'static str,
}

/// The node API's CA: whom nodes admit as clients.
pub const API_CA: CaKind = CaKind {
    what: "API CA",
    common_name: "nodeimg API CA",
    cert_file: "api-ca.crt",
    key_file: "api-ca.key",
};
/// etcd's CA: the agent issues each member's server, peer and client
/// certificates from it.
pub const ETCD_CA: CaKind = CaKind {
    what: "etcd CA",
    common_name: "etcd-ca",
    cert_file: "etcd-ca.crt",
    key_file: "etcd-ca.key",
};
/// The Kubernetes CA (the CN kubeadm gives it).
pub const KUBERNETES_CA: CaKind = CaKind {
    what: "Kubernetes CA",
    common_name: "kubernetes",
    cert_file: "kubernetes-ca.crt",
    key_file: "kubernetes-ca.key",
};
/// The aggregation layer's CA (kube-apiserver's `--requestheader-client-ca-file`).
pub const FRONT_PROXY_CA: CaKind = CaKind {
    what: "front-proxy CA",
    common_name: "front-proxy-ca",
    cert_file: "front-proxy-ca.crt",
    key_file: "front-proxy-ca.key",
};

/// A new self-signed CA of `kind`, valid ten years.
pub fn new_ca(kind: CaKind, now: OffsetDateTime) -> Result<Ca, ClusterError> {
    let e = cert_err(kind.what);
    let key = KeyPair::generate().map_err(&e)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name(kind.common_name, &[]);
    // path length 0: each signs leaves (clients, nodes, members), never another CA
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(CA_DAYS);
    let cert = params.self_signed(&key).map_err(&e)?;
    let key_pem = key.serialize_pem();
    Ok(Ca {
        cert_pem: cert.pem(),
        key_pem,
        issuer: Issuer::new(params, key),
    })
}

/// The CA of `kind` from its two files in `dir`, each named when it is
/// missing or unusable (a truncated key, a certificate that is not a CA's
/// or not the key's).
pub fn load_ca(kind: CaKind, dir: &Path) -> Result<Ca, ClusterError> {
    let (cert, key) = (dir.join(kind.cert_file), dir.join(kind.key_file));
    let (cert_pem, key_pem) = (read(&cert)?, read(&key)?);
    let unusable = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ClusterError::Ca {
            what: kind.what,
            path,
            source,
        }
    };
    let pair = KeyPair::from_pem(&key_pem).map_err(unusable(&key))?;
    // rcgen reads the certificate but neither checks that it is a CA's
    // nor that the key is its key: the contract's checks do both
    let checked = contract::config::CaPair {
        certificate: cert_pem.clone(),
        key: Some(contract::config::Secret::new(key_pem.clone())),
    };
    if let Some(p) = checked.problems().into_iter().next() {
        let (path, message) = if p.key == "key" {
            (
                &key,
                format!("{} (the certificate: {})", p.message, cert.display()),
            )
        } else {
            (&cert, p.message)
        };
        return Err(ClusterError::Invalid {
            path: path.clone(),
            message,
        });
    }
    let issuer = Issuer::from_ca_cert_pem(&cert_pem, pair).map_err(unusable(&cert))?;
    Ok(Ca {
        cert_pem,
        key_pem,
        issuer,
    })
}

pub(super) fn read(p: &Path) -> Result<String, ClusterError> {
    std::fs::read_to_string(p).map_err(|source| ClusterError::Read {
        path: p.to_path_buf(),
        source,
    })
}

/// A service-account key pair: PKCS#8 private key and SPKI public key, PEM.
pub fn service_account() -> Result<(String, String), ClusterError> {
    let key = KeyPair::generate().map_err(cert_err("service-account key"))?;
    Ok((key.serialize_pem(), key.public_key_pem()))
}

fn leaf(
    ca: &Ca,
    what: &'static str,
    (cn, groups): (&str, &[&str]),
    sans: Vec<SanType>,
    usage: ExtendedKeyUsagePurpose,
    now: OffsetDateTime,
    valid: Duration,
) -> Result<Issued, ClusterError> {
    let e = cert_err(what);
    let key = KeyPair::generate().map_err(&e)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name(cn, groups);
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - BACKDATE;
    params.not_after = now + valid;
    let cert = params.signed_by(&key, &ca.issuer).map_err(&e)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A client identity (clientAuth) named `cn`.
pub fn client(ca: &Ca, cn: &str, now: OffsetDateTime) -> Result<Issued, ClusterError> {
    leaf(
        ca,
        "admin client certificate",
        (cn, &[]),
        Vec::new(),
        ExtendedKeyUsagePurpose::ClientAuth,
        now,
        Duration::days(LEAF_DAYS),
    )
}

/// A Kubernetes client identity: user `cn` in `groups`, valid for `valid`.
pub fn kube_client(
    ca: &Ca,
    cn: &str,
    groups: &[&str],
    now: OffsetDateTime,
    valid: Duration,
) -> Result<Issued, ClusterError> {
    leaf(
        ca,
        "Kubernetes client certificate",
        (cn, groups),
        Vec::new(),
        ExtendedKeyUsagePurpose::ClientAuth,
        now,
        valid,
    )
}

/// A node's API certificate (serverAuth): its hostname and addresses.
pub fn server(
    ca: &Ca,
    hostname: &str,
    addresses: &[IpAddr],
    now: OffsetDateTime,
) -> Result<Issued, ClusterError> {
    let e = cert_err("node certificate");
    let mut sans = vec![SanType::DnsName(hostname.try_into().map_err(&e)?)];
    sans.extend(addresses.iter().map(|a| SanType::IpAddress(*a)));
    leaf(
        ca,
        "node certificate",
        (hostname, &[]),
        sans,
        ExtendedKeyUsagePurpose::ServerAuth,
        now,
        Duration::days(LEAF_DAYS),
    )
}
