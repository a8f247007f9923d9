//! The certificates: the API CA, client identities and node (server)
//! certificates, all ECDSA P-256 keys made by rcgen with ring.

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

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "nodeimg");
    dn.push(DnType::CommonName, cn);
    dn
}

pub fn new_ca(now: OffsetDateTime) -> Result<Ca, ClusterError> {
    let e = cert_err("API CA");
    let key = KeyPair::generate().map_err(&e)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name("nodeimg API CA");
    // path length 0: it signs clients and nodes, never another CA
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

/// The CA from `DIR/api-ca.crt` and `DIR/api-ca.key`.
pub fn load_ca(cert: &Path, key: &Path) -> Result<Ca, ClusterError> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| ClusterError::Read {
            path: p.to_path_buf(),
            source,
        })
    };
    let (cert_pem, key_pem) = (read(cert)?, read(key)?);
    let pair = KeyPair::from_pem(&key_pem).map_err(|source| ClusterError::Ca {
        path: key.to_path_buf(),
        source,
    })?;
    let issuer = Issuer::from_ca_cert_pem(&cert_pem, pair).map_err(|source| ClusterError::Ca {
        path: cert.to_path_buf(),
        source,
    })?;
    Ok(Ca {
        cert_pem,
        key_pem,
        issuer,
    })
}

fn leaf(
    ca: &Ca,
    what: &'static str,
    cn: &str,
    sans: Vec<SanType>,
    usage: ExtendedKeyUsagePurpose,
    now: OffsetDateTime,
) -> Result<Issued, ClusterError> {
    let e = cert_err(what);
    let key = KeyPair::generate().map_err(&e)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name(cn);
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(LEAF_DAYS);
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
        cn,
        Vec::new(),
        ExtendedKeyUsagePurpose::ClientAuth,
        now,
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
        hostname,
        sans,
        ExtendedKeyUsagePurpose::ServerAuth,
        now,
    )
}
