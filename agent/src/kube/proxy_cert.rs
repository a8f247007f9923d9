//! kube-proxy's client certificate on a worker. A worker holds no CA key,
//! so its agent asks the cluster, with kubelet's own identity: a CSR for
//! `system:kube-proxy` to the `kubernetes.io/kube-apiserver-client` signer,
//! which a control-plane agent approves (kube/approver.rs: only that name,
//! only from a node) and kube-controller-manager signs. The key never
//! leaves the node.

use base64::Engine;
use serde_json::{json, Value};

use super::at;

pub const SIGNER: &str = "kubernetes.io/kube-apiserver-client";
pub const COMMON_NAME: &str = "system:kube-proxy";
/// The usages a kube-proxy CSR asks for (and the approver accepts).
pub const USAGES: [&str; 2] = ["digital signature", "client auth"];

/// A new key and the CSR object that asks for its certificate.
pub fn request(name: &str) -> Result<(Value, String), String> {
    let key = rcgen::KeyPair::generate().map_err(|e| format!("a key for kube-proxy: {e}"))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, COMMON_NAME);
    let pem = params
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(|e| format!("kube-proxy's CSR: {e}"))?;
    let object = json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": { "name": name },
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(pem.as_bytes()),
            "signerName": SIGNER,
            "usages": USAGES,
        },
    });
    Ok((object, key.serialize_pem()))
}

/// What became of a CSR: its certificate (PEM) once signed, or why not.
pub enum Outcome {
    Waiting,
    Issued(String),
    Refused(String),
}

pub fn outcome(csr: &Value) -> Outcome {
    for c in at(csr, "/status/conditions")
        .as_array()
        .into_iter()
        .flatten()
    {
        let kind = at(c, "/type").as_str().unwrap_or_default();
        if kind == "Denied" || kind == "Failed" {
            let why = at(c, "/message").as_str().unwrap_or_default();
            return Outcome::Refused(format!("{kind}: {why}"));
        }
    }
    let cert = at(csr, "/status/certificate")
        .as_str()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    match cert {
        Some(pem) if !pem.is_empty() => Outcome::Issued(pem),
        _ => Outcome::Waiting,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn the_request_names_kube_proxy_and_client_usage_only() {
        let (csr, key) = request("kube-proxy-worker-1-1").unwrap();
        assert!(key.contains("PRIVATE KEY"));
        assert_eq!(csr["spec"]["signerName"], SIGNER);
        let asked =
            super::super::approver::read_request(csr["spec"]["request"].as_str().unwrap()).unwrap();
        assert_eq!(asked.common_name.as_deref(), Some(COMMON_NAME));
        assert!(asked.organizations.is_empty() && asked.dns.is_empty() && asked.ips.is_empty());
        assert!(matches!(outcome(&csr), Outcome::Waiting));
        let mut done = csr.clone();
        done["status"] =
            json!({ "certificate": base64::engine::general_purpose::STANDARD.encode("PEM") });
        assert!(matches!(outcome(&done), Outcome::Issued(p) if p == "PEM"));
        done["status"]["conditions"] = json!([{ "type": "Denied", "message": "no" }]);
        assert!(matches!(outcome(&done), Outcome::Refused(_)));
    }
}
