//! The API's TLS: TLS 1.3 only, ring's algorithms, the node's certificate
//! and key from `[api]`, and a client verifier that requires a certificate
//! chaining to `[api] client_ca` (webpki: validity, signature, and the
//! clientAuth extended key usage when present).

use std::sync::Arc;

use contract::config::Api;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use super::ApiError;

fn certs(key: &'static str, pem: &str) -> Result<Vec<CertificateDer<'static>>, ApiError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::Pem {
            key,
            what: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(ApiError::Missing { key });
    }
    Ok(certs)
}

pub fn server_config(api: &Api) -> Result<Arc<ServerConfig>, ApiError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in certs("client_ca", &api.client_ca)? {
        roots.add(ca).map_err(|e| ApiError::Pem {
            key: "client_ca",
            what: e.to_string(),
        })?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| ApiError::Verifier(e.to_string()))?;
    let chain = certs("certificate", &api.certificate)?;
    let key = PrivateKeyDer::from_pem_slice(api.key.expose().as_bytes()).map_err(|e| {
        // the key's text never goes into an error
        ApiError::Pem {
            key: "key",
            what: format!("not a PEM private key ({})", kind(&e)),
        }
    })?;
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(ApiError::Tls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(ApiError::Tls)?;
    Ok(Arc::new(config))
}

fn kind(e: &rustls::pki_types::pem::Error) -> &'static str {
    use rustls::pki_types::pem::Error;
    match e {
        Error::NoItemsFound => "no key found",
        _ => "malformed",
    }
}
